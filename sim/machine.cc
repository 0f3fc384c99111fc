#include "sim/machine.h"

#include <sys/mman.h>
#include <unistd.h>
#include <unicorn/unicorn.h>

#include <algorithm>
#include <bitset>
#include <cstring>
#include <deque>
#include <iterator>
#include <map>
#include <set>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/error.h"
#include "sim/internal/decode.h"
#include "sim/internal/page_walk.h"
#include "sim/internal/qemu_state.h"

namespace vmi::sim {

using sim_internal::CpuContext;
using sim_internal::DecodedInsn;
using sim_internal::InsnKind;
using sim_internal::PagingState;
using sim_internal::QemuStateHead;
using sim_internal::WalkResult;

namespace {

constexpr uint64_t kPageSize = 4096;
constexpr uint16_t kMaxVcpus = 8;
constexpr uint32_t kTcgBufferSize = 32u << 20;

constexpr uint32_t kMsrEfer = 0xc0000080, kMsrStar = 0xc0000081, kMsrLstar = 0xc0000082,
                   kMsrCstar = 0xc0000083, kMsrFmask = 0xc0000084, kMsrKernelGsBase = 0xc0000102,
                   kMsrTscAux = 0xc0000103, kMsrSysenterCs = 0x174, kMsrSysenterEsp = 0x175,
                   kMsrSysenterEip = 0x176;

constexpr uint32_t kDescG = 1u << 23, kDescB = 1u << 22, kDescL = 1u << 21, kDescP = 1u << 15,
                   kDescS = 1u << 12, kDescCode = 1u << 11, kDescRw = 1u << 9, kDescA = 1u << 8;

constexpr uint64_t kRflagsTf = 1u << 8, kRflagsIf = 1u << 9, kRflagsNt = 1u << 14,
                   kRflagsRf = 1u << 16, kRflagsVm = 1u << 17;

constexpr int kGprIds[16] = {UC_X86_REG_RAX, UC_X86_REG_RCX, UC_X86_REG_RDX, UC_X86_REG_RBX,
                             UC_X86_REG_RSP, UC_X86_REG_RBP, UC_X86_REG_RSI, UC_X86_REG_RDI,
                             UC_X86_REG_R8,  UC_X86_REG_R9,  UC_X86_REG_R10, UC_X86_REG_R11,
                             UC_X86_REG_R12, UC_X86_REG_R13, UC_X86_REG_R14, UC_X86_REG_R15};

absl::Status UcError(const std::string& op, uc_err err) {
  return absl::InternalError(absl::StrFormat("%s: %s", op, uc_strerror(err)));
}

uint32_t UcPerms(MemoryAccess a) {
  uint32_t p = UC_PROT_NONE;
  if (a.read()) p |= UC_PROT_READ;
  if (a.write()) p |= UC_PROT_WRITE;
  if (a.execute()) p |= UC_PROT_EXEC;
  return p;
}

bool HasErrorCode(uint8_t vector) {
  return vector == 8 || (vector >= 10 && vector <= 14) || vector == 17 || vector == 21 ||
         vector == 29 || vector == 30;
}

uint64_t Reg(uc_engine* uc, int id) {
  uint64_t v = 0;
  uc_reg_read(uc, id, &v);
  return v;
}

void SetReg(uc_engine* uc, int id, uint64_t v) { uc_reg_write(uc, id, &v); }

// Unicorn 2.1's CR2 write falls through to the CR3 update: keep CR3.
void WriteCr2(uc_engine* uc, uint64_t v) {
  const uint64_t cr3 = Reg(uc, UC_X86_REG_CR3);
  SetReg(uc, UC_X86_REG_CR2, v);
  SetReg(uc, UC_X86_REG_CR3, cr3);
}

uint64_t ReadMsr(uc_engine* uc, uint32_t index) {
  uc_x86_msr msr{index, 0};
  if (uc_reg_read(uc, UC_X86_REG_MSR, &msr) != UC_ERR_OK) return 0;
  return msr.value;
}

void WriteMsr(uc_engine* uc, uint32_t index, uint64_t value) {
  uc_x86_msr msr{index, value};
  uc_reg_write(uc, UC_X86_REG_MSR, &msr);
}

// What an Exit prints, for traces.
std::string AccessName(MemoryAccess a) { return a.ToString(); }

struct Monitors {
  std::bitset<256> interrupts;  // vector 3: breakpoints
  bool cr[5] = {false, false, false, false, false};
  bool msr_all = false;
  absl::flat_hash_set<uint32_t> msr_indices;
  bool cpuid = false;
  bool io = false;
  bool vmcall = false;
  bool vmcall_user = false;
  bool descriptor = false;
  bool AnyDecoded() const {
    return cr[0] || cr[3] || cr[4] || msr_all || !msr_indices.empty() || cpuid || io || descriptor;
  }
};

// A one-instruction step the vCPU takes before its next quantum.
struct SpecialStep {
  enum class Kind : uint8_t { kEmulate, kFastSingleStep } kind = Kind::kEmulate;
  Gfn gfn;               // kEmulate: the frame whose access is granted for one step
  MemoryAccess granted;  // kEmulate: what is granted on it
  View view;             // kFastSingleStep: the view to step in
};

// Per-vCPU state that belongs in a snapshot (besides the CPU context).
struct VcpuBook {
  View view = kDefaultView;
  bool singlestep = false;
  bool halted = false;
  std::deque<Interrupt> injections;
  bool skip_first_intercept = false;
  std::optional<SpecialStep> special;
};

}  // namespace

// One Unicorn engine: a vCPU as it runs in one view. Each engine applies its
// view's permissions and remaps once and keeps them, so a view switch moves
// the CPU state between engines (~0.1 us) instead of re-protecting guest
// memory (a write-permission change costs Unicorn ~8 us: it rebuilds QEMU's
// memory map).
struct Engine {
  uc_engine* uc = nullptr;
  View view;

  // What the engine enforces, and the view-table epoch it was synced to.
  MemoryAccess applied_default = MemoryAccess::RWX();
  absl::flat_hash_map<uint64_t, ViewEntry> applied;  // frames differing from {self, default}
  uint64_t applied_epoch = ~0ull;
  bool tb_dirty = false;
  bool tlb_dirty = false;
  uc_hook code_hook = 0;

  // The frames this engine has translated code from, each with its content
  // as of the end of this engine's last run (its own writes to them reach its
  // translated-code cache; another engine's do not). Before it runs after
  // another engine, a frame whose content changed drops its translations.
  // Recorded only while the machine has more than one engine.
  absl::flat_hash_map<uint64_t, std::unique_ptr<uint8_t[]>> code;

  Engine() = default;
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;
  ~Engine() {
    if (uc != nullptr) uc_close(uc);
  }
};

struct Vcpu {
  Machine::Impl* m = nullptr;
  uint16_t index = 0;
  // The engine holding this vCPU's state (the one for its view, once prepared).
  Engine* active = nullptr;
  uc_engine* uc = nullptr;  // == active->uc
  std::map<uint16_t, std::unique_ptr<Engine>> engines;  // by view
  uc_context* transfer = nullptr;                        // scratch for engine switches
  std::optional<CpuContext> scratch;                     // reused by GetRegisters
  VcpuBook book;

  // Recorded by hooks during one uc_emu_start.
  std::optional<Exit> hook_exit;
  std::optional<absl::Status> hook_error;
  bool exception_pending = false;
  uint32_t exception_vector = 0;
  bool syscall_pending = false;
  bool invalid_pending = false;
  uint64_t last_block_start = 0;
  uint64_t last_block_size = 0;

  // The code hook's one-entry instruction TLB: the virtual page it last read
  // instruction bytes from and where they are. Dropped at every
  // uc_emu_start, MOV to CR and INVLPG, like a hardware TLB.
  uint64_t fetch_page = ~0ull;
  const uint8_t* fetch_host = nullptr;

  // Code-frame recording: the virtual page of the last block, and the
  // (CR3, virtual page) pairs already recorded during this uc_emu_start
  // (reset at every start and at MOV to CR/INVLPG seen by the code hook).
  // Not seen within one quantum without the code hook: a virtual page that
  // page-table edits remap to another frame under the same CR3.
  uint64_t block_page = ~0ull;
  uint64_t noted[16];
  uint64_t noted_cr3[16] = {};

  ~Vcpu() {
    engines.clear();
    if (transfer != nullptr) uc_context_free(transfer);
  }
};

struct Machine::Impl {
  MachineOptions options;
  uint8_t* ram = nullptr;
  int ram_fd = -1;
  std::vector<std::unique_ptr<Vcpu>> vcpus;
  ViewTable views{Gfn(0)};
  Monitors monitors;
  std::optional<Exit> pending;
  size_t next_vcpu = 0;
  bool paused = false;
  std::string console;
  uint64_t scheduled = 0;
  // Bumped by every change to the view table; engines re-sync when it moved.
  uint64_t views_epoch = 0;
  // Engines alive, and the one that executed last.
  size_t engine_count = 0;
  Engine* last_engine = nullptr;

  ~Impl();

  // --- helpers ---
  absl::Status CheckVcpu(const char* op, VcpuId vcpu) const;
  PagingState Paging(Vcpu& v) const;
  // Host offset of guest-physical `pa` as vCPU `v` sees it through its view.
  uint64_t Backing(const Vcpu& v, uint64_t pa) const;
  // Reads/writes guest-virtual memory as `v` sees it (page tables are walked
  // in guest-physical terms; the leaf frame goes through the view's remap).
  bool ReadVirt(Vcpu& v, uint64_t va, uint8_t* out, size_t n) const;
  // The linear address of the data access at `gpa` made by the instruction at
  // `rip`, decoded from its memory operand (or RSP/RSI/RDI for implicit
  // operands) and verified by a forward walk; nullopt when that fails.
  std::optional<uint64_t> GlaFromInstruction(Vcpu& v, const PagingState& p, uint64_t rip,
                                             uint64_t gpa) const;
  bool WriteVirt(Vcpu& v, uint64_t va, const uint8_t* in, size_t n);
  void MarkAllTranslationsDirty();

  // --- engines and views ---
  absl::StatusOr<Engine*> CreateEngine(Vcpu& v, View view);
  void CloseEngine(Vcpu& v, View view);
  absl::Status SwitchEngine(Vcpu& v, Engine& to);
  absl::Status ApplyEntry(Vcpu& v, Engine& e, Gfn gfn, ViewEntry want);
  absl::Status ApplyView(Vcpu& v, Engine& e);
  absl::Status PrepareEngine(Vcpu& v);
  // Drops the engine's translated code and/or TLB where marked stale.
  void FlushEngine(Engine& e);
  absl::Status UpdateCodeHook(Vcpu& v, Engine& e);
  void NoteCode(Vcpu& v, uint64_t va);
  bool CodeChanged(const Engine& e) const;
  void RefreshCode(Engine& e);

  // --- execution ---
  absl::StatusOr<std::optional<Exit>> RunSlot(Vcpu& v, uint64_t* charged);
  absl::StatusOr<std::optional<Exit>> Execute(Vcpu& v, uint64_t count, bool report_step);
  absl::Status Deliver(Vcpu& v, uint8_t vector, std::optional<uint32_t> error_code,
                       uint64_t return_rip);
  absl::Status EmulateSyscall(Vcpu& v);
  // The vCPU's reusable copy of its CPU state, saved afresh.
  absl::StatusOr<CpuContext*> SaveScratch(Vcpu& v);
  absl::StatusOr<uint64_t> GdtDescriptor(Vcpu& v, uint16_t selector);
  Exit NewExit(Vcpu& v, ExitKind kind, uint64_t rip) const;

  // --- hooks ---
  static void HookCode(uc_engine* uc, uint64_t address, uint32_t size, void* user);
  static void HookBlock(uc_engine* uc, uint64_t address, uint32_t size, void* user);
  static void HookIntr(uc_engine* uc, uint32_t intno, void* user);
  static bool HookInvalid(uc_engine* uc, void* user);
  static bool HookProt(uc_engine* uc, uc_mem_type type, uint64_t address, int size, int64_t value,
                       void* user);
  static bool HookUnmapped(uc_engine* uc, uc_mem_type type, uint64_t address, int size,
                           int64_t value, void* user);
  static void HookSyscall(uc_engine* uc, void* user);
  static uint32_t HookIn(uc_engine* uc, uint32_t port, int size, void* user);
  static void HookOut(uc_engine* uc, uint32_t port, int size, uint32_t value, void* user);
};

struct Snapshot::Data {
  std::vector<uint8_t> ram;
  std::vector<CpuContext> cpus;
  std::vector<VcpuBook> books;
  ViewTable views{Gfn(0)};
  Monitors monitors;
  std::optional<Exit> pending;
  size_t next_vcpu = 0;
  bool paused = false;
  std::string console;
  uint64_t scheduled = 0;
};

Snapshot::Snapshot(std::unique_ptr<Data> data) : data_(std::move(data)) {}
Snapshot::~Snapshot() = default;

// ---------------------------------------------------------------------------
// Names and printing

const char* ExitKindName(ExitKind kind) {
  switch (kind) {
    case ExitKind::kMemoryAccess:
      return "memory_access";
    case ExitKind::kBreakpoint:
      return "breakpoint";
    case ExitKind::kSingleStep:
      return "singlestep";
    case ExitKind::kControlRegister:
      return "cr_write";
    case ExitKind::kMsrWrite:
      return "msr_write";
    case ExitKind::kCpuid:
      return "cpuid";
    case ExitKind::kIo:
      return "io";
    case ExitKind::kVmcall:
      return "vmcall";
    case ExitKind::kDescriptorTable:
      return "descriptor_table";
    case ExitKind::kInterrupt:
      return "interrupt";
  }
  return "?";
}

const char* DescriptorOpName(DescriptorOp op) {
  static constexpr const char* kNames[] = {"lgdt", "lidt", "lldt", "ltr",
                                           "sgdt", "sidt", "sldt", "str"};
  return kNames[static_cast<int>(op)];
}

std::string Exit::ToString() const {
  std::string s =
      absl::StrFormat("vcpu=%s view=%s %s rip=0x%x", vcpu, view, ExitKindName(kind), rip);
  switch (kind) {
    case ExitKind::kMemoryAccess:
      absl::StrAppendFormat(&s, " gpa=%s gla=%s access=%s", gpa,
                            gla_valid ? gla.ToString() : std::string("invalid"),
                            AccessName(access));
      break;
    case ExitKind::kBreakpoint:
      absl::StrAppendFormat(&s, " gpa=%s len=%u", gpa, insn_length);
      break;
    case ExitKind::kSingleStep:
      break;
    case ExitKind::kControlRegister:
      absl::StrAppendFormat(&s, " cr%u old=0x%x new=0x%x", cr, old_value, new_value);
      break;
    case ExitKind::kMsrWrite:
      absl::StrAppendFormat(&s, " msr=0x%x old=0x%x new=0x%x", msr, old_value, new_value);
      break;
    case ExitKind::kCpuid:
      absl::StrAppendFormat(&s, " leaf=0x%x subleaf=0x%x", leaf, subleaf);
      break;
    case ExitKind::kIo:
      absl::StrAppendFormat(&s, " port=0x%x size=%u %s%s", port, io_size, io_in ? "in" : "out",
                            io_string ? " string" : "");
      break;
    case ExitKind::kVmcall:
      break;
    case ExitKind::kDescriptorTable:
      absl::StrAppendFormat(&s, " op=%s", DescriptorOpName(descriptor_op));
      break;
    case ExitKind::kInterrupt:
      absl::StrAppendFormat(&s, " vector=%u", vector);
      if (has_error_code) absl::StrAppendFormat(&s, " error_code=0x%x", error_code);
      if (insn_length > 0) absl::StrAppendFormat(&s, " len=%u", insn_length);
      break;
  }
  return s;
}

// ---------------------------------------------------------------------------
// Creation

Machine::Impl::~Impl() {
  vcpus.clear();  // the engines map `ram`
  if (ram != nullptr) munmap(ram, options.ram_size);
  if (ram_fd >= 0) close(ram_fd);
}

Machine::Machine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Machine::~Machine() = default;

absl::StatusOr<std::unique_ptr<Machine>> Machine::Create(const MachineOptions& options) {
  if (options.ram_size == 0 || options.ram_size % kPageSize != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "create_machine(ram_size=0x%x): not a non-zero multiple of 4096", options.ram_size));
  }
  if (options.vcpu_count < 1 || options.vcpu_count > kMaxVcpus) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "create_machine(vcpu_count=%u): must be 1..%u", options.vcpu_count, kMaxVcpus));
  }
  if (options.quantum == 0) {
    return absl::InvalidArgumentError("create_machine(quantum=0): must be positive");
  }
  VMI_RETURN_IF_ERROR(sim_internal::GetQemuLayout().status());
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  void* ram = MAP_FAILED;
  if (options.shared_ram) {
    impl->ram_fd = memfd_create("vmi-sim-guest-ram", MFD_CLOEXEC);
    if (impl->ram_fd < 0 || ftruncate(impl->ram_fd, static_cast<off_t>(options.ram_size)) != 0) {
      return ErrnoError(absl::StrFormat("create_machine(ram_size=0x%x): memfd", options.ram_size),
                        errno);
    }
    ram = mmap(nullptr, options.ram_size, PROT_READ | PROT_WRITE, MAP_SHARED, impl->ram_fd, 0);
  } else {
    ram = mmap(nullptr, options.ram_size, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  }
  if (ram == MAP_FAILED) {
    return ErrnoError(absl::StrFormat("create_machine(ram_size=0x%x): mmap", options.ram_size),
                      errno);
  }
  impl->ram = static_cast<uint8_t*>(ram);
  impl->views = ViewTable(Gfn(options.ram_size / kPageSize - 1));
  for (uint16_t i = 0; i < options.vcpu_count; ++i) {
    auto v = std::make_unique<Vcpu>();
    v->m = impl.get();
    v->index = i;
    Vcpu& raw = *v;
    impl->vcpus.push_back(std::move(v));
    VMI_ASSIGN_OR_RETURN(Engine * e, impl->CreateEngine(raw, kDefaultView));
    raw.active = e;
    raw.uc = e->uc;
    if (uc_err err = uc_context_alloc(e->uc, &raw.transfer); err != UC_ERR_OK) {
      return UcError(absl::StrFormat("create_machine: vcpu %u: uc_context_alloc", i), err);
    }
  }
  return std::unique_ptr<Machine>(new Machine(std::move(impl)));
}

// ---------------------------------------------------------------------------
// Helpers

absl::Status Machine::Impl::CheckVcpu(const char* op, VcpuId vcpu) const {
  if (vcpu.value() >= vcpus.size()) {
    return absl::OutOfRangeError(
        absl::StrFormat("%s(vcpu=%s): no such vcpu (machine has %u)", op, vcpu, vcpus.size()));
  }
  return absl::OkStatus();
}

PagingState Machine::Impl::Paging(Vcpu& v) const {
  PagingState p;
  p.paging = (Reg(v.uc, UC_X86_REG_CR0) >> 31) & 1;
  p.la57 = (Reg(v.uc, UC_X86_REG_CR4) >> 12) & 1;
  p.cr3 = Reg(v.uc, UC_X86_REG_CR3);
  return p;
}

uint64_t Machine::Impl::Backing(const Vcpu& v, uint64_t pa) const {
  const Gfn gfn(pa / kPageSize);
  if (!views.Exists(v.book.view)) return pa;
  return views.Lookup(v.book.view, gfn).backing.value() * kPageSize + (pa % kPageSize);
}

bool Machine::Impl::ReadVirt(Vcpu& v, uint64_t va, uint8_t* out, size_t n) const {
  const PagingState p = Paging(v);
  while (n > 0) {
    const WalkResult w = sim_internal::Walk(ram, options.ram_size, p, va);
    if (!w.present || w.pa >= options.ram_size) return false;
    const size_t chunk = std::min<uint64_t>(n, kPageSize - (va & (kPageSize - 1)));
    std::memcpy(out, ram + Backing(v, w.pa), chunk);
    out += chunk;
    va += chunk;
    n -= chunk;
  }
  return true;
}

std::optional<uint64_t> Machine::Impl::GlaFromInstruction(Vcpu& v, const PagingState& p,
                                                          uint64_t rip, uint64_t gpa) const {
  static constexpr int kGpr[16] = {UC_X86_REG_RAX, UC_X86_REG_RCX, UC_X86_REG_RDX, UC_X86_REG_RBX,
                                   UC_X86_REG_RSP, UC_X86_REG_RBP, UC_X86_REG_RSI, UC_X86_REG_RDI,
                                   UC_X86_REG_R8,  UC_X86_REG_R9,  UC_X86_REG_R10, UC_X86_REG_R11,
                                   UC_X86_REG_R12, UC_X86_REG_R13, UC_X86_REG_R14, UC_X86_REG_R15};
  uint8_t insn[15];
  size_t n = sizeof(insn);
  // Near the end of a mapped page the instruction may be shorter than 15 bytes.
  while (n > 0 && !ReadVirt(v, rip, insn, n)) n = n > 8 ? 8 : n - 1;
  if (n == 0) return std::nullopt;
  const std::optional<sim_internal::MemoryOperand> op = sim_internal::DecodeMemoryOperand(insn, n);
  if (!op) return std::nullopt;
  uc_engine* uc = v.uc;
  std::vector<uint64_t> candidates;
  switch (op->kind) {
    case sim_internal::MemoryOperand::Kind::kPush:
      candidates = {Reg(uc, UC_X86_REG_RSP) - 8};
      break;
    case sim_internal::MemoryOperand::Kind::kPop:
      candidates = {Reg(uc, UC_X86_REG_RSP), Reg(uc, UC_X86_REG_RBP)};
      break;
    case sim_internal::MemoryOperand::Kind::kString:
      candidates = {Reg(uc, UC_X86_REG_RDI), Reg(uc, UC_X86_REG_RSI)};
      break;
    case sim_internal::MemoryOperand::Kind::kModrm: {
      uint64_t ea = static_cast<uint64_t>(op->disp);
      if (op->base >= 0) ea += Reg(uc, kGpr[op->base]);
      if (op->index >= 0) ea += Reg(uc, kGpr[op->index]) * op->scale;
      if (op->segment == 4) ea += Reg(uc, UC_X86_REG_FS_BASE);
      if (op->segment == 5) ea += Reg(uc, UC_X86_REG_GS_BASE);
      if (op->rip_relative) {
        // The end of the instruction depends on its immediate, which this
        // decoder does not size: try each possible immediate width.
        for (uint64_t imm : {0, 1, 2, 4}) candidates.push_back(rip + op->end + imm + ea);
      } else {
        candidates.push_back(op->address32 ? (ea & 0xffffffffu) : ea);
      }
      break;
    }
  }
  // The access may start on the page before the faulting one (a split access).
  const uint64_t gfn = gpa / kPageSize;
  std::optional<uint64_t> found;
  for (uint64_t c : candidates) {
    for (uint64_t page : {c & ~(kPageSize - 1), (c & ~(kPageSize - 1)) + kPageSize}) {
      const uint64_t gla = page | (gpa & (kPageSize - 1));
      const sim_internal::WalkResult w = sim_internal::Walk(ram, options.ram_size, p, gla);
      if (w.present && w.pa / kPageSize == gfn) {
        if (found && *found != gla) return std::nullopt;  // ambiguous: let the search decide
        found = gla;
      }
    }
  }
  return found;
}

bool Machine::Impl::WriteVirt(Vcpu& v, uint64_t va, const uint8_t* in, size_t n) {
  const PagingState p = Paging(v);
  while (n > 0) {
    const WalkResult w = sim_internal::Walk(ram, options.ram_size, p, va);
    if (!w.present || w.pa >= options.ram_size) return false;
    const size_t chunk = std::min<uint64_t>(n, kPageSize - (va & (kPageSize - 1)));
    std::memcpy(ram + Backing(v, w.pa), in, chunk);
    in += chunk;
    va += chunk;
    n -= chunk;
  }
  return true;
}

void Machine::Impl::MarkAllTranslationsDirty() {
  for (auto& v : vcpus) {
    for (auto& [id, e] : v->engines) {
      e->tb_dirty = true;
      e->tlb_dirty = true;
    }
  }
}

Exit Machine::Impl::NewExit(Vcpu& v, ExitKind kind, uint64_t rip) const {
  Exit e;
  e.vcpu = VcpuId(v.index);
  e.view = v.book.view;
  e.kind = kind;
  e.rip = rip;
  return e;
}

// ---------------------------------------------------------------------------
// Views on engines

absl::StatusOr<Engine*> Machine::Impl::CreateEngine(Vcpu& v, View view) {
  auto e = std::make_unique<Engine>();
  e->view = view;
  const std::string op = absl::StrFormat("create_engine(vcpu=%u, view=%s)", v.index, view);
  if (uc_err err = uc_open(UC_ARCH_X86, UC_MODE_64, &e->uc); err != UC_ERR_OK) {
    e->uc = nullptr;
    return UcError(op + ": uc_open", err);
  }
  // Unicorn's default translation buffer is 1 GiB, which costs ~150 ms
  // to set up per engine; guest programs here need far less.
  uc_ctl_set_tcg_buffer_size(e->uc, kTcgBufferSize);
  if (uc_err err = uc_mem_map_ptr(e->uc, 0, options.ram_size, UC_PROT_ALL, ram);
      err != UC_ERR_OK) {
    return UcError(op + ": uc_mem_map_ptr", err);
  }
  struct HookSpec {
    int type;
    void* fn;
    int insn;
  };
  const HookSpec specs[] = {
      {UC_HOOK_INTR, reinterpret_cast<void*>(&Impl::HookIntr), -1},
      {UC_HOOK_INSN_INVALID, reinterpret_cast<void*>(&Impl::HookInvalid), -1},
      {UC_HOOK_MEM_PROT, reinterpret_cast<void*>(&Impl::HookProt), -1},
      {UC_HOOK_MEM_UNMAPPED, reinterpret_cast<void*>(&Impl::HookUnmapped), -1},
      {UC_HOOK_BLOCK, reinterpret_cast<void*>(&Impl::HookBlock), -1},
      {UC_HOOK_INSN, reinterpret_cast<void*>(&Impl::HookSyscall), UC_X86_INS_SYSCALL},
      {UC_HOOK_INSN, reinterpret_cast<void*>(&Impl::HookIn), UC_X86_INS_IN},
      {UC_HOOK_INSN, reinterpret_cast<void*>(&Impl::HookOut), UC_X86_INS_OUT},
  };
  for (const HookSpec& spec : specs) {
    uc_hook h;
    uc_err err = spec.insn < 0 ? uc_hook_add(e->uc, &h, spec.type, spec.fn, &v, 1, 0)
                               : uc_hook_add(e->uc, &h, spec.type, spec.fn, &v, 1, 0, spec.insn);
    if (err != UC_ERR_OK) return UcError(op + ": uc_hook_add", err);
  }
  Engine* raw = e.get();
  v.engines[view.value()] = std::move(e);
  if (++engine_count == 2) {
    // Code recording starts now: engines that ran alone so far recorded
    // nothing, so their translations go.
    for (auto& vc : vcpus) {
      for (auto& [id, other] : vc->engines) {
        if (other.get() != raw) other->tb_dirty = true;
      }
    }
  }
  return raw;
}

void Machine::Impl::CloseEngine(Vcpu& v, View view) {
  auto it = v.engines.find(view.value());
  if (it == v.engines.end() || it->second.get() == v.active) return;
  if (last_engine == it->second.get()) last_engine = nullptr;
  v.engines.erase(it);
  --engine_count;
}

absl::Status Machine::Impl::SwitchEngine(Vcpu& v, Engine& to) {
  if (absl::Status s = sim_internal::TransferCpuState(v.active->uc, to.uc, v.transfer); !s.ok()) {
    return AnnotateStatus(s, absl::StrFormat("switch_view(vcpu=%u, view %s -> %s)", v.index,
                                             v.active->view, to.view));
  }
  const View from = v.active->view;
  v.active = &to;
  v.uc = to.uc;
  to.tlb_dirty = true;  // its TLB is from before; CR3 and page tables may differ
  if (!views.Exists(from)) CloseEngine(v, from);
  return absl::OkStatus();
}

void Machine::Impl::NoteCode(Vcpu& v, uint64_t va) {
  const uint64_t page = va & ~(kPageSize - 1);
  const size_t slot = (page / kPageSize) % std::size(v.noted);
  const uint64_t cr3 = Reg(v.uc, UC_X86_REG_CR3);
  if (v.noted[slot] == page && v.noted_cr3[slot] == cr3) return;
  v.noted[slot] = page;
  v.noted_cr3[slot] = cr3;
  const WalkResult w = sim_internal::Walk(ram, options.ram_size, Paging(v), page);
  if (!w.present || w.pa >= options.ram_size) return;
  const uint64_t frame = Backing(v, w.pa) / kPageSize;
  auto [it, inserted] = v.active->code.try_emplace(frame);
  if (inserted) {
    it->second = std::make_unique<uint8_t[]>(kPageSize);
    std::memcpy(it->second.get(), ram + frame * kPageSize, kPageSize);
  }
}

void Machine::Impl::RefreshCode(Engine& e) {
  for (auto& [frame, content] : e.code) {
    const uint8_t* now = ram + frame * kPageSize;
    if (std::memcmp(now, content.get(), kPageSize) != 0) std::memcpy(content.get(), now, kPageSize);
  }
}

bool Machine::Impl::CodeChanged(const Engine& e) const {
  for (const auto& [frame, content] : e.code) {
    if (std::memcmp(ram + frame * kPageSize, content.get(), kPageSize) != 0) return true;
  }
  return false;
}

absl::Status Machine::Impl::ApplyEntry(Vcpu& v, Engine& e, Gfn gfn, ViewEntry want) {
  ViewEntry cur{gfn, e.applied_default};
  if (auto it = e.applied.find(gfn.value()); it != e.applied.end()) cur = it->second;
  if (cur == want) return absl::OkStatus();
  const uint64_t gpa = gfn.value() * kPageSize;
  if (cur.backing != want.backing) {
    if (uc_err err = uc_mem_unmap(e.uc, gpa, kPageSize); err != UC_ERR_OK) {
      return UcError(absl::StrFormat("apply_view(vcpu=%u, gfn=%s): uc_mem_unmap", v.index, gfn),
                     err);
    }
    if (uc_err err = uc_mem_map_ptr(e.uc, gpa, kPageSize, UcPerms(want.access),
                                    ram + want.backing.value() * kPageSize);
        err != UC_ERR_OK) {
      return UcError(absl::StrFormat("apply_view(vcpu=%u, gfn=%s): uc_mem_map_ptr", v.index, gfn),
                     err);
    }
    e.tb_dirty = true;
  } else {
    if (uc_err err = uc_mem_protect(e.uc, gpa, kPageSize, UcPerms(want.access));
        err != UC_ERR_OK) {
      return UcError(absl::StrFormat("apply_view(vcpu=%u, gfn=%s): uc_mem_protect", v.index, gfn),
                     err);
    }
    // Unicorn checks execute permission only when it translates, so code
    // translated while the frame was executable would still run. Dropping it
    // also means no frame without execute has translations here, which is
    // what lets writes to it (Unicorn invalidates code on a write only where
    // the frame is executable) go unnoticed safely.
    if (cur.access.execute() && !want.access.execute()) e.tb_dirty = true;
  }
  if (want == ViewEntry{gfn, e.applied_default}) {
    e.applied.erase(gfn.value());
  } else {
    e.applied[gfn.value()] = want;
  }
  e.tlb_dirty = true;
  return absl::OkStatus();
}

absl::Status Machine::Impl::ApplyView(Vcpu& v, Engine& e) {
  const View view = e.view;
  VMI_ASSIGN_OR_RETURN(MemoryAccess def, views.DefaultAccess(view));
  if (def != e.applied_default) {
    if (uc_err err = uc_mem_protect(e.uc, 0, options.ram_size, UcPerms(def)); err != UC_ERR_OK) {
      return UcError(absl::StrFormat("apply_view(vcpu=%u, view=%s): uc_mem_protect", v.index, view),
                     err);
    }
    // See ApplyEntry.
    if (e.applied_default.execute() && !def.execute()) e.tb_dirty = true;
    e.applied_default = def;
    for (auto it = e.applied.begin(); it != e.applied.end();) {
      it->second.access = def;
      if (it->second.backing.value() == it->first) {
        e.applied.erase(it++);
      } else {
        ++it;
      }
    }
    e.tlb_dirty = true;
  }
  const std::vector<Gfn> targets = views.Overrides(view);
  const std::set<uint64_t> target_set = [&] {
    std::set<uint64_t> s;
    for (Gfn g : targets) s.insert(g.value());
    return s;
  }();
  std::vector<uint64_t> stale;
  for (const auto& [gfn, entry] : e.applied) {
    if (!target_set.contains(gfn)) stale.push_back(gfn);
  }
  std::sort(stale.begin(), stale.end());
  for (uint64_t gfn : stale) VMI_RETURN_IF_ERROR(ApplyEntry(v, e, Gfn(gfn), {Gfn(gfn), def}));
  for (Gfn gfn : targets) VMI_RETURN_IF_ERROR(ApplyEntry(v, e, gfn, views.Lookup(view, gfn)));
  return absl::OkStatus();
}

absl::Status Machine::Impl::UpdateCodeHook(Vcpu& v, Engine& e) {
  const bool want = monitors.AnyDecoded();
  if (want && e.code_hook == 0) {
    if (uc_err err = uc_hook_add(e.uc, &e.code_hook, UC_HOOK_CODE,
                                 reinterpret_cast<void*>(&Impl::HookCode), &v, 1, 0);
        err != UC_ERR_OK) {
      e.code_hook = 0;
      return UcError(absl::StrFormat("set_monitor(vcpu=%u): uc_hook_add(code)", v.index), err);
    }
    e.tb_dirty = true;
  } else if (!want && e.code_hook != 0) {
    uc_hook_del(e.uc, e.code_hook);
    e.code_hook = 0;
    e.tb_dirty = true;
  }
  return absl::OkStatus();
}

absl::Status Machine::Impl::PrepareEngine(Vcpu& v) {
  if (!views.Exists(v.book.view)) {
    return absl::NotFoundError(
        absl::StrFormat("run(vcpu=%u): view %s does not exist", v.index, v.book.view));
  }
  Engine* e;
  if (auto it = v.engines.find(v.book.view.value()); it != v.engines.end()) {
    e = it->second.get();
  } else {
    VMI_ASSIGN_OR_RETURN(e, CreateEngine(v, v.book.view));
  }
  if (e != v.active) VMI_RETURN_IF_ERROR(SwitchEngine(v, *e));
  VMI_RETURN_IF_ERROR(UpdateCodeHook(v, *e));
  if (e->applied_epoch != views_epoch) {
    VMI_RETURN_IF_ERROR(ApplyView(v, *e));
    e->applied_epoch = views_epoch;
  }
  if (last_engine != e) {
    // The engine that ran last saw its own guest writes (its recorded frames
    // are all executable in it, see ApplyEntry): its copies catch up.
    if (last_engine != nullptr) RefreshCode(*last_engine);
    // Guest writes made by other engines since this one last ran.
    if (!e->tb_dirty && CodeChanged(*e)) e->tb_dirty = true;
  }
  FlushEngine(*e);
  return absl::OkStatus();
}

void Machine::Impl::FlushEngine(Engine& e) {
  if (e.tb_dirty) {
    uc_ctl_flush_tb(e.uc);
    e.code.clear();
    e.tb_dirty = false;
    e.tlb_dirty = true;
  }
  if (e.tlb_dirty) {
    uc_ctl_flush_tlb(e.uc);
    e.tlb_dirty = false;
  }
}

// ---------------------------------------------------------------------------
// Hooks

void Machine::Impl::HookCode(uc_engine* uc, uint64_t address, uint32_t size, void* user) {
  Vcpu* v = static_cast<Vcpu*>(user);
  Impl* m = v->m;
  if (v->book.skip_first_intercept) {
    v->book.skip_first_intercept = false;
    return;
  }
  uint8_t bytes[16] = {};
  const size_t n = std::min<uint32_t>(size == 0 ? 15 : size, 15);
  const uint64_t page = address & ~(kPageSize - 1);
  if (page == v->fetch_page && (address & (kPageSize - 1)) + n <= kPageSize) {
    std::memcpy(bytes, v->fetch_host + (address & (kPageSize - 1)), n);
  } else {
    if (!m->ReadVirt(*v, address, bytes, n)) return;
    const WalkResult w = sim_internal::Walk(m->ram, m->options.ram_size, m->Paging(*v), page);
    if (w.present && w.pa < m->options.ram_size) {
      v->fetch_page = page;
      v->fetch_host = m->ram + m->Backing(*v, w.pa);
    }
  }
  const DecodedInsn d = sim_internal::Decode(bytes, n);
  if (d.kind == InsnKind::kOther) return;
  if (d.kind == InsnKind::kMovToCr || d.kind == InsnKind::kInvlpg || d.kind == InsnKind::kLmsw ||
      d.kind == InsnKind::kClts) {
    v->fetch_page = ~0ull;  // the translation may change
    v->block_page = ~0ull;
    std::fill(std::begin(v->noted), std::end(v->noted), ~0ull);
  }
  std::optional<Exit> exit;
  auto make = [&](ExitKind kind) {
    exit = m->NewExit(*v, kind, address);
    exit->insn_length = static_cast<uint8_t>(size);
  };
  switch (d.kind) {
    case InsnKind::kMovToCr:
      if (d.cr < 5 && m->monitors.cr[d.cr]) {
        make(ExitKind::kControlRegister);
        exit->cr = d.cr;
        static constexpr int kCrIds[5] = {UC_X86_REG_CR0, UC_X86_REG_CR1, UC_X86_REG_CR2,
                                          UC_X86_REG_CR3, UC_X86_REG_CR4};
        exit->old_value = Reg(uc, kCrIds[d.cr]);
        exit->new_value = Reg(uc, kGprIds[d.gpr]);
      }
      break;
    case InsnKind::kClts:
    case InsnKind::kLmsw:
      if (m->monitors.cr[0]) {
        make(ExitKind::kControlRegister);
        exit->cr = 0;
        exit->old_value = Reg(uc, UC_X86_REG_CR0);
        exit->new_value = d.kind == InsnKind::kClts
                              ? exit->old_value & ~uint64_t{8}
                              : (exit->old_value & ~uint64_t{0xf}) |
                                    (Reg(uc, kGprIds[d.gpr]) & 0xf) | (exit->old_value & 1);
      }
      break;
    case InsnKind::kWrmsr:
      if (m->monitors.msr_all ||
          m->monitors.msr_indices.contains(static_cast<uint32_t>(Reg(uc, UC_X86_REG_RCX)))) {
        make(ExitKind::kMsrWrite);
        exit->msr = static_cast<uint32_t>(Reg(uc, UC_X86_REG_RCX));
        exit->old_value = ReadMsr(uc, exit->msr);
        exit->new_value = (Reg(uc, UC_X86_REG_RDX) << 32) | (Reg(uc, UC_X86_REG_RAX) & 0xffffffffu);
      }
      break;
    case InsnKind::kCpuid:
      if (m->monitors.cpuid) {
        make(ExitKind::kCpuid);
        exit->leaf = static_cast<uint32_t>(Reg(uc, UC_X86_REG_RAX));
        exit->subleaf = static_cast<uint32_t>(Reg(uc, UC_X86_REG_RCX));
      }
      break;
    case InsnKind::kIo:
      if (m->monitors.io) {
        make(ExitKind::kIo);
        exit->port =
            d.io_port_in_dx ? static_cast<uint16_t>(Reg(uc, UC_X86_REG_RDX)) : d.io_port_imm;
        exit->io_size = d.io_size;
        exit->io_in = d.io_in;
        exit->io_string = d.io_string;
      }
      break;
    case InsnKind::kLgdt:
    case InsnKind::kLidt:
    case InsnKind::kLldt:
    case InsnKind::kLtr:
    case InsnKind::kSgdt:
    case InsnKind::kSidt:
    case InsnKind::kSldt:
    case InsnKind::kStr:
      if (m->monitors.descriptor) {
        make(ExitKind::kDescriptorTable);
        static constexpr DescriptorOp kOps[] = {
            DescriptorOp::kLgdt, DescriptorOp::kLidt, DescriptorOp::kLldt, DescriptorOp::kLtr,
            DescriptorOp::kSgdt, DescriptorOp::kSidt, DescriptorOp::kSldt, DescriptorOp::kStr};
        exit->descriptor_op = kOps[static_cast<int>(d.kind) - static_cast<int>(InsnKind::kLgdt)];
      }
      break;
    default:
      break;
  }
  if (exit.has_value()) {
    v->hook_exit = std::move(exit);
    uc_emu_stop(uc);
  }
}

void Machine::Impl::HookBlock(uc_engine*, uint64_t address, uint32_t size, void* user) {
  Vcpu* v = static_cast<Vcpu*>(user);
  v->last_block_start = address;
  v->last_block_size = size;
  Impl* m = v->m;
  if (m->engine_count < 2) return;
  const uint64_t first = address / kPageSize;
  const uint64_t last = (address + std::max<uint32_t>(size, 1) - 1) / kPageSize;
  if (first == v->block_page && last == first) return;
  v->block_page = first;
  m->NoteCode(*v, address);
  if (last != first) m->NoteCode(*v, last * kPageSize);
}

void Machine::Impl::HookIntr(uc_engine* uc, uint32_t intno, void* user) {
  Vcpu* v = static_cast<Vcpu*>(user);
  v->exception_pending = true;
  v->exception_vector = intno;
  uc_emu_stop(uc);
}

bool Machine::Impl::HookInvalid(uc_engine*, void* user) {
  static_cast<Vcpu*>(user)->invalid_pending = true;
  return false;
}

bool Machine::Impl::HookProt(uc_engine* uc, uc_mem_type type, uint64_t address, int, int64_t,
                             void* user) {
  Vcpu* v = static_cast<Vcpu*>(user);
  Impl* m = v->m;
  // Unicorn fills the TLB entry before it checks the permission, and a later
  // read through that entry is not checked again: drop it so the access
  // faults again if it is retried unchanged.
  v->active->tlb_dirty = true;
  const uint64_t rip = Reg(uc, UC_X86_REG_RIP);
  Exit e = m->NewExit(*v, ExitKind::kMemoryAccess, rip);
  e.gpa = Pa(address);
  e.access = type == UC_MEM_WRITE_PROT   ? MemoryAccess::W()
             : type == UC_MEM_FETCH_PROT ? MemoryAccess::X()
                                         : MemoryAccess::R();
  // The linear address: for a fetch, from RIP when RIP's page is the frame;
  // otherwise the unique virtual page of the current address space that maps
  // the frame, if there is exactly one.
  const PagingState p = m->Paging(*v);
  const uint64_t gfn = address / kPageSize;
  if (type == UC_MEM_FETCH_PROT) {
    for (uint64_t probe : {rip, rip + 15}) {
      const WalkResult w = sim_internal::Walk(m->ram, m->options.ram_size, p, probe);
      if (w.present && w.pa / kPageSize == gfn) {
        e.gla = Va((probe & ~(kPageSize - 1)) | (address & (kPageSize - 1)));
        e.gla_valid = true;
        break;
      }
    }
  }
  if (!e.gla_valid) {
    // As hardware does: from the faulting instruction's operand, accepted only
    // if that linear page really maps to the faulting frame.
    if (std::optional<uint64_t> gla = m->GlaFromInstruction(*v, p, rip, address)) {
      e.gla = Va(*gla);
      e.gla_valid = true;
    }
  }
  if (!e.gla_valid) {
    const std::optional<std::vector<uint64_t>> vas =
        sim_internal::ReverseLookup(m->ram, m->options.ram_size, p, gfn, 2);
    if (vas.has_value() && vas->size() == 1) {
      e.gla = Va((*vas)[0] | (address & (kPageSize - 1)));
      e.gla_valid = true;
    }
  }
  v->hook_exit = std::move(e);
  return false;
}

bool Machine::Impl::HookUnmapped(uc_engine* uc, uc_mem_type type, uint64_t address, int size,
                                 int64_t, void* user) {
  Vcpu* v = static_cast<Vcpu*>(user);
  const char* kind = type == UC_MEM_WRITE_UNMAPPED   ? "write"
                     : type == UC_MEM_FETCH_UNMAPPED ? "fetch"
                                                     : "read";
  v->hook_error = absl::FailedPreconditionError(
      absl::StrFormat("run(vcpu=%u): guest %s of %d bytes at gpa 0x%x beyond RAM (rip=0x%x)",
                      v->index, kind, size, address, Reg(uc, UC_X86_REG_RIP)));
  return false;
}

void Machine::Impl::HookSyscall(uc_engine* uc, void* user) {
  static_cast<Vcpu*>(user)->syscall_pending = true;
  uc_emu_stop(uc);
}

uint32_t Machine::Impl::HookIn(uc_engine*, uint32_t, int size, void*) {
  // No devices: reads float high.
  return size >= 4 ? 0xffffffffu : ((1u << (8 * size)) - 1);
}

void Machine::Impl::HookOut(uc_engine*, uint32_t port, int, uint32_t value, void* user) {
  if (port == 0xe9) static_cast<Vcpu*>(user)->m->console.push_back(static_cast<char>(value));
}

// ---------------------------------------------------------------------------
// Interrupt delivery and SYSCALL

absl::StatusOr<uint64_t> Machine::Impl::GdtDescriptor(Vcpu& v, uint16_t selector) {
  VMI_ASSIGN_OR_RETURN(CpuContext ctx, CpuContext::Save(v.uc));
  const QemuStateHead& h = ctx.head();
  const uint64_t index = selector & ~7u;
  if (selector & 4) {
    return absl::UnimplementedError(absl::StrFormat(
        "load_segment(vcpu=%u, selector=0x%x): LDT selectors not supported", v.index, selector));
  }
  if (index + 7 > h.gdt.limit) {
    return absl::OutOfRangeError(
        absl::StrFormat("load_segment(vcpu=%u, selector=0x%x): beyond GDT limit 0x%x", v.index,
                        selector, h.gdt.limit));
  }
  uint64_t desc;
  if (!ReadVirt(v, h.gdt.base + index, reinterpret_cast<uint8_t*>(&desc), 8)) {
    return absl::FailedPreconditionError(
        absl::StrFormat("load_segment(vcpu=%u, selector=0x%x): GDT at 0x%x not mapped", v.index,
                        selector, h.gdt.base));
  }
  return desc;
}

namespace {
void DecodeDescriptor(uint64_t desc, uint64_t* base, uint32_t* limit, uint32_t* flags) {
  const uint32_t lo = static_cast<uint32_t>(desc), hi = static_cast<uint32_t>(desc >> 32);
  *base = (lo >> 16) | ((hi & 0xff) << 16) | (hi & 0xff000000u);
  *limit = (lo & 0xffff) | (hi & 0xf0000);
  if (hi & kDescG) *limit = (*limit << 12) | 0xfff;
  *flags = hi & 0x00ffff00u;
}
}  // namespace

absl::Status Machine::Impl::Deliver(Vcpu& v, uint8_t vector, std::optional<uint32_t> error_code,
                                    uint64_t return_rip) {
  const std::string op = absl::StrFormat("deliver_interrupt(vcpu=%u, vector=%u)", v.index, vector);
  VMI_ASSIGN_OR_RETURN(CpuContext ctx, CpuContext::Save(v.uc));
  ctx.clear_exception_in_flight();
  QemuStateHead& h = ctx.head();
  if (static_cast<uint64_t>(vector) * 16 + 15 > h.idt.limit) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s: beyond IDT limit 0x%x (guest would triple-fault)", op, h.idt.limit));
  }
  uint32_t gate[4];
  if (!ReadVirt(v, h.idt.base + vector * 16ull, reinterpret_cast<uint8_t*>(gate), 16)) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s: IDT at 0x%x not mapped (guest would triple-fault)", op, h.idt.base));
  }
  if (!(gate[1] & (1u << 15))) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s: IDT gate not present (guest would triple-fault)", op));
  }
  const uint64_t target =
      (gate[0] & 0xffff) | (gate[1] & 0xffff0000u) | (static_cast<uint64_t>(gate[2]) << 32);
  const uint16_t selector = static_cast<uint16_t>(gate[0] >> 16);
  const uint32_t ist = gate[1] & 7;
  const uint32_t type = (gate[1] >> 8) & 0xf;
  const uint32_t cpl = h.hflags & sim_internal::kHfCplMask;

  // The target code segment.
  const uint64_t index = selector & ~7u;
  if (index == 0 || index + 7 > h.gdt.limit) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s: gate selector 0x%x not in GDT", op, selector));
  }
  uint64_t desc;
  if (!ReadVirt(v, h.gdt.base + index, reinterpret_cast<uint8_t*>(&desc), 8)) {
    return absl::FailedPreconditionError(absl::StrFormat("%s: GDT not mapped", op));
  }
  uint64_t cs_base;
  uint32_t cs_limit, cs_flags;
  DecodeDescriptor(desc, &cs_base, &cs_limit, &cs_flags);
  const uint32_t dpl = (cs_flags >> 13) & 3;

  const uint64_t rflags = Reg(v.uc, UC_X86_REG_RFLAGS);
  const uint64_t old_rsp = h.regs[4];
  const uint16_t old_cs = static_cast<uint16_t>(h.segs[sim_internal::kSegCs].selector);
  const uint16_t old_ss = static_cast<uint16_t>(h.segs[sim_internal::kSegSs].selector);
  uint64_t rsp = old_rsp;
  if (ist != 0 || dpl < cpl) {
    const uint64_t slot = ist != 0 ? 0x24 + (ist - 1) * 8ull : 4 + dpl * 8ull;
    if (!ReadVirt(v, h.tr.base + slot, reinterpret_cast<uint8_t*>(&rsp), 8)) {
      return absl::FailedPreconditionError(
          absl::StrFormat("%s: TSS at 0x%x not mapped", op, h.tr.base));
    }
  }
  rsp &= ~0xfull;
  uint64_t frame[6];
  int n = 0;
  if (error_code.has_value()) frame[n++] = *error_code;
  frame[n++] = return_rip;
  frame[n++] = old_cs;
  frame[n++] = rflags;
  frame[n++] = old_rsp;
  frame[n++] = old_ss;
  // frame[] is in push order reversed: lowest address first.
  rsp -= n * 8ull;
  if (!WriteVirt(v, rsp, reinterpret_cast<const uint8_t*>(frame), n * 8ull)) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s: stack at 0x%x not mapped (guest would triple-fault)", op, rsp));
  }
  if (dpl < cpl) {
    ctx.LoadSegment(sim_internal::kSegSs, static_cast<uint16_t>(dpl), 0, 0, dpl << 13);
  }
  ctx.LoadSegment(sim_internal::kSegCs, static_cast<uint16_t>((selector & ~3u) | dpl), cs_base,
                  cs_limit, cs_flags);
  h.regs[4] = rsp;
  h.eip = target;
  VMI_RETURN_IF_ERROR(ctx.Restore(v.uc));
  uint64_t new_flags = rflags & ~(kRflagsTf | kRflagsNt | kRflagsRf | kRflagsVm);
  if (type == 0xe) new_flags &= ~kRflagsIf;
  SetReg(v.uc, UC_X86_REG_RFLAGS, new_flags);
  SetReg(v.uc, UC_X86_REG_RSP, rsp);
  SetReg(v.uc, UC_X86_REG_RIP, target);
  v.book.halted = false;
  // The frame was written by the host: this engine's translated code is not
  // invalidated for it (a stack is assumed to hold no code); other engines'
  // is, through their recorded code frames.
  return absl::OkStatus();
}

absl::StatusOr<CpuContext*> Machine::Impl::SaveScratch(Vcpu& v) {
  if (v.scratch.has_value()) {
    VMI_RETURN_IF_ERROR(v.scratch->Resave(v.uc));
  } else {
    VMI_ASSIGN_OR_RETURN(CpuContext ctx, CpuContext::Save(v.uc));
    v.scratch.emplace(std::move(ctx));
  }
  return &*v.scratch;
}

absl::Status Machine::Impl::EmulateSyscall(Vcpu& v) {
  const uint64_t efer = ReadMsr(v.uc, kMsrEfer);
  if (!(efer & 1)) {
    return Deliver(v, 6, std::nullopt, Reg(v.uc, UC_X86_REG_RIP) - 2);
  }
  const uint64_t next = Reg(v.uc, UC_X86_REG_RIP);
  const uint64_t rflags = Reg(v.uc, UC_X86_REG_RFLAGS);
  const uint64_t star = ReadMsr(v.uc, kMsrStar);
  const uint64_t lstar = ReadMsr(v.uc, kMsrLstar);
  const uint64_t fmask = ReadMsr(v.uc, kMsrFmask);
  const uint16_t cs = static_cast<uint16_t>((star >> 32) & 0xfffc);
  VMI_ASSIGN_OR_RETURN(CpuContext ctx, CpuContext::Save(v.uc));
  ctx.LoadSegment(sim_internal::kSegCs, cs, 0, 0xffffffff,
                  kDescG | kDescP | kDescS | kDescCode | kDescRw | kDescA | kDescL);
  ctx.LoadSegment(sim_internal::kSegSs, static_cast<uint16_t>(cs + 8), 0, 0xffffffff,
                  kDescG | kDescB | kDescP | kDescS | kDescRw | kDescA);
  VMI_RETURN_IF_ERROR(ctx.Restore(v.uc));
  SetReg(v.uc, UC_X86_REG_RCX, next);
  SetReg(v.uc, UC_X86_REG_R11, rflags);
  SetReg(v.uc, UC_X86_REG_RFLAGS, rflags & ~fmask & ~kRflagsRf);
  SetReg(v.uc, UC_X86_REG_RIP, lstar);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Execution

absl::StatusOr<std::optional<Exit>> Machine::Impl::Execute(Vcpu& v, uint64_t count,
                                                           bool report_step) {
  v.hook_exit.reset();
  v.hook_error.reset();
  v.exception_pending = false;
  v.syscall_pending = false;
  v.invalid_pending = false;
  v.last_block_start = v.last_block_size = ~0ull;
  v.fetch_page = ~0ull;
  v.block_page = ~0ull;
  std::fill(std::begin(v.noted), std::end(v.noted), ~0ull);
  const uint64_t start = Reg(v.uc, UC_X86_REG_RIP);
  const uc_err err = uc_emu_start(v.uc, start, 0, 0, count);
  last_engine = v.active;
  v.book.skip_first_intercept = false;
  if (v.hook_error.has_value()) return *v.hook_error;
  if (v.hook_exit.has_value()) return v.hook_exit;
  const uint64_t rip = Reg(v.uc, UC_X86_REG_RIP);
  if (v.invalid_pending) {
    uint8_t bytes[15] = {};
    const bool readable = ReadVirt(v, rip, bytes, 3);
    if (readable && sim_internal::Decode(bytes, 3).kind == InsnKind::kVmcall) {
      const bool user = (Reg(v.uc, UC_X86_REG_CS) & 3) == 3;
      if (monitors.vmcall && (!user || monitors.vmcall_user)) {
        Exit e = NewExit(v, ExitKind::kVmcall, rip);
        e.insn_length = 3;
        return std::optional<Exit>(e);
      }
    }
    VMI_RETURN_IF_ERROR(Deliver(v, 6, std::nullopt, rip));
    return std::optional<Exit>();
  }
  if (err != UC_ERR_OK) {
    return UcError(absl::StrFormat("run(vcpu=%u): uc_emu_start at rip 0x%x", v.index, start), err);
  }
  if (v.exception_pending) {
    const uint8_t vector = static_cast<uint8_t>(v.exception_vector);
    VMI_ASSIGN_OR_RETURN(CpuContext * ctx, SaveScratch(v));
    const int32_t error_code = ctx->error_code();
    const bool is_int = ctx->exception_is_int();
    ctx->clear_exception_in_flight();
    VMI_RETURN_IF_ERROR(ctx->Restore(v.uc));
    if (vector == 3 && is_int) {
      uint8_t prev = 0;
      ReadVirt(v, rip - 1, &prev, 1);
      const uint8_t len = prev == 0xcc ? 1 : 2;
      if (monitors.interrupts[3]) {
        SetReg(v.uc, UC_X86_REG_RIP, rip - len);
        Exit e = NewExit(v, ExitKind::kBreakpoint, rip - len);
        e.insn_length = len;
        e.vector = 3;
        const WalkResult w = sim_internal::Walk(ram, options.ram_size, Paging(v), rip - len);
        e.gpa = Pa(w.pa);
        e.gla = Va(rip - len);
        e.gla_valid = true;
        return std::optional<Exit>(e);
      }
    }
    std::optional<uint32_t> code;
    if (!is_int && HasErrorCode(vector)) code = static_cast<uint32_t>(error_code);
    if (monitors.interrupts[vector] && !(vector == 3 && is_int)) {
      uint8_t len = 0;
      if (is_int) {  // INT n (CD nn), or the one-byte INT1/INTO
        uint8_t prev[2] = {};
        ReadVirt(v, rip - 2, prev, 2);
        len = prev[0] == 0xcd && prev[1] == vector ? 2 : 1;
        SetReg(v.uc, UC_X86_REG_RIP, rip - len);
      }
      Exit e = NewExit(v, ExitKind::kInterrupt, rip - len);
      e.insn_length = len;
      e.vector = vector;
      e.has_error_code = code.has_value();
      e.error_code = code.value_or(0);
      return std::optional<Exit>(e);
    }
    VMI_RETURN_IF_ERROR(Deliver(v, vector, code, rip));
    if (report_step)
      return std::optional<Exit>(NewExit(v, ExitKind::kSingleStep, Reg(v.uc, UC_X86_REG_RIP)));
    return std::optional<Exit>();
  }
  if (v.syscall_pending) {
    VMI_RETURN_IF_ERROR(EmulateSyscall(v));
  } else if (v.last_block_start + v.last_block_size == rip && rip != start) {
    uint8_t prev = 0;
    if (ReadVirt(v, rip - 1, &prev, 1) && prev == 0xf4) v.book.halted = true;
  }
  if (report_step) return std::optional<Exit>(NewExit(v, ExitKind::kSingleStep, rip));
  return std::optional<Exit>();
}

absl::StatusOr<std::optional<Exit>> Machine::Impl::RunSlot(Vcpu& v, uint64_t* charged) {
  VMI_RETURN_IF_ERROR(PrepareEngine(v));
  if (!v.book.injections.empty()) {
    const Interrupt irq = v.book.injections.front();
    v.book.injections.pop_front();
    if (irq.cr2.has_value()) WriteCr2(v.uc, *irq.cr2);
    const uint64_t rip = Reg(v.uc, UC_X86_REG_RIP) + irq.insn_length;
    VMI_RETURN_IF_ERROR(Deliver(v, irq.vector, irq.error_code, rip));
  }
  if (v.book.special.has_value()) {
    const SpecialStep step = *v.book.special;
    v.book.special.reset();
    *charged += 1;
    std::optional<Exit> exit;
    if (step.kind == SpecialStep::Kind::kEmulate) {
      Engine& e = *v.active;
      // Until the grant is taken back, the engine is out of sync with its
      // view: should anything below fail, the next PrepareEngine re-syncs it.
      const uint64_t synced = e.applied_epoch;
      e.applied_epoch = ~0ull;
      ViewEntry entry = views.Lookup(v.book.view, step.gfn);
      entry.access = entry.access | step.granted;
      VMI_RETURN_IF_ERROR(ApplyEntry(v, e, step.gfn, entry));
      FlushEngine(e);
      VMI_ASSIGN_OR_RETURN(exit, Execute(v, 1, false));
      VMI_RETURN_IF_ERROR(ApplyEntry(v, e, step.gfn, views.Lookup(v.book.view, step.gfn)));
      FlushEngine(e);
      e.applied_epoch = synced;
    } else {
      const View home = v.book.view;
      v.book.view = step.view;
      absl::StatusOr<std::optional<Exit>> stepped = [&]() -> absl::StatusOr<std::optional<Exit>> {
        VMI_RETURN_IF_ERROR(PrepareEngine(v));
        return Execute(v, 1, false);
      }();
      v.book.view = home;  // also when the step failed
      if (!stepped.ok()) return stepped.status();
      exit = *std::move(stepped);
      VMI_RETURN_IF_ERROR(PrepareEngine(v));
    }
    if (exit.has_value()) return exit;
    if (v.book.singlestep) {
      return std::optional<Exit>(NewExit(v, ExitKind::kSingleStep, Reg(v.uc, UC_X86_REG_RIP)));
    }
  }
  if (v.book.halted) return std::optional<Exit>();
  const uint64_t count = v.book.singlestep ? 1 : options.quantum;
  *charged += count;
  return Execute(v, count, v.book.singlestep);
}

absl::StatusOr<RunResult> Machine::Run(uint64_t instruction_budget) {
  Impl& m = *impl_;
  if (m.pending.has_value()) {
    return absl::FailedPreconditionError(
        absl::StrFormat("run(): exit pending, respond first: %s", m.pending->ToString()));
  }
  RunResult result;
  if (m.paused) {
    result.status = RunStatus::kPaused;
    return result;
  }
  uint64_t spent = 0;
  const size_t n = m.vcpus.size();
  while (spent < instruction_budget) {
    Vcpu* v = nullptr;
    for (size_t k = 0; k < n; ++k) {
      Vcpu* cand = m.vcpus[(m.next_vcpu + k) % n].get();
      if (!cand->book.halted || !cand->book.injections.empty()) {
        v = cand;
        m.next_vcpu = (m.next_vcpu + k + 1) % n;
        break;
      }
    }
    if (v == nullptr) {
      result.status = RunStatus::kAllHalted;
      return result;
    }
    uint64_t charged = 0;
    absl::StatusOr<std::optional<Exit>> exit = m.RunSlot(*v, &charged);
    spent += charged;
    m.scheduled += charged;
    if (!exit.ok()) return exit.status();
    if (exit->has_value()) {
      m.pending = **exit;
      result.status = RunStatus::kExit;
      result.exit = m.pending;
      return result;
    }
  }
  result.status = RunStatus::kBudgetExhausted;
  return result;
}

const std::optional<Exit>& Machine::pending_exit() const { return impl_->pending; }

absl::Status Machine::Respond(const Response& response) {
  Impl& m = *impl_;
  if (!m.pending.has_value()) {
    return absl::FailedPreconditionError("respond(): no exit pending");
  }
  const Exit e = *m.pending;
  Vcpu& v = *m.vcpus[e.vcpu.value()];
  auto op = [&] { return absl::StrFormat("respond(vcpu=%s, kind=%s, action=%d)", e.vcpu,
                                         ExitKindName(e.kind), static_cast<int>(response.action)); };
  if (response.view.has_value() && !m.views.Exists(*response.view)) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: no such view %s", op(), *response.view));
  }
  const bool intercept = e.kind == ExitKind::kControlRegister || e.kind == ExitKind::kMsrWrite ||
                         e.kind == ExitKind::kCpuid || e.kind == ExitKind::kIo ||
                         e.kind == ExitKind::kVmcall || e.kind == ExitKind::kDescriptorTable;
  switch (response.action) {
    case EventAction::kDeny:
      if (!intercept) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: deny applies to intercepted instructions only", op()));
      }
      break;
    case EventAction::kEmulate:
      if (e.kind != ExitKind::kMemoryAccess) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: emulate applies to memory access exits only", op()));
      }
      break;
    case EventAction::kReinjectInterrupt:
      if (e.kind != ExitKind::kBreakpoint && e.kind != ExitKind::kInterrupt) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: reinject applies to breakpoint and interrupt exits only", op()));
      }
      break;
    case EventAction::kFastSingleStep:
      if (!response.view.has_value()) {
        return absl::InvalidArgumentError(absl::StrFormat("%s: fast singlestep needs a view", op()));
      }
      break;
    default:
      break;
  }
  bool rip_changed = false;
  if (response.registers.has_value()) {
    VMI_RETURN_IF_ERROR(SetGpRegisters(e.vcpu, *response.registers));
    rip_changed = response.registers->rip != e.rip;
  }
  switch (response.action) {
    case EventAction::kContinue:
    case EventAction::kSingleStep:
    case EventAction::kFastSingleStep:
      if (intercept && !rip_changed) {
        if (e.kind == ExitKind::kVmcall) {
          SetReg(v.uc, UC_X86_REG_RIP, e.rip + e.insn_length);
        } else {
          v.book.skip_first_intercept = true;
        }
      }
      if (response.action == EventAction::kSingleStep) v.book.singlestep = !v.book.singlestep;
      if (response.action == EventAction::kFastSingleStep) {
        v.book.special = SpecialStep{SpecialStep::Kind::kFastSingleStep, Gfn(), MemoryAccess(), *response.view};
      }
      break;
    case EventAction::kDeny:
      if (!rip_changed) SetReg(v.uc, UC_X86_REG_RIP, e.rip + e.insn_length);
      break;
    case EventAction::kEmulate:
      // Grant what the violating kind of access needs: execute for a fetch,
      // read and write for data (a read-modify-write instruction needs both).
      v.book.special = SpecialStep{
          SpecialStep::Kind::kEmulate, Gfn(e.gpa.value() / kPageSize),
          e.access.execute() ? MemoryAccess::X() : MemoryAccess::RW(), View()};
      break;
    case EventAction::kReinjectInterrupt:
      v.book.injections.push_front(Interrupt{
          e.vector, e.has_error_code ? std::optional<uint32_t>(e.error_code) : std::nullopt,
          std::nullopt, e.insn_length});
      break;
  }
  if (response.view.has_value() && response.action != EventAction::kFastSingleStep) {
    v.book.view = *response.view;
  }
  m.pending.reset();
  return absl::OkStatus();
}

void Machine::Pause() { impl_->paused = true; }
void Machine::Resume() { impl_->paused = false; }
bool Machine::paused() const { return impl_->paused; }
const std::string& Machine::console() const { return impl_->console; }
uint64_t Machine::instructions_scheduled() const { return impl_->scheduled; }

absl::StatusOr<bool> Machine::Halted(VcpuId vcpu) const {
  VMI_RETURN_IF_ERROR(impl_->CheckVcpu("halted", vcpu));
  return impl_->vcpus[vcpu.value()]->book.halted;
}

absl::Status Machine::InjectInterrupt(VcpuId vcpu, const Interrupt& interrupt) {
  VMI_RETURN_IF_ERROR(impl_->CheckVcpu("inject_interrupt", vcpu));
  if (interrupt.vector < 32 && HasErrorCode(interrupt.vector) != interrupt.error_code.has_value() &&
      interrupt.insn_length == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("inject_interrupt(vcpu=%s, vector=%u): exception %s an error code", vcpu,
                        interrupt.vector, HasErrorCode(interrupt.vector) ? "needs" : "takes no"));
  }
  impl_->vcpus[vcpu.value()]->book.injections.push_back(interrupt);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Memory

uint64_t Machine::ram_size() const { return impl_->options.ram_size; }
Gfn Machine::max_gfn() const { return Gfn(impl_->options.ram_size / kPageSize - 1); }
uint16_t Machine::vcpu_count() const { return static_cast<uint16_t>(impl_->vcpus.size()); }
int Machine::ram_fd() const { return impl_->ram_fd; }

absl::Status Machine::ReadPhys(Pa pa, absl::Span<uint8_t> out) const {
  if (pa.value() > impl_->options.ram_size || out.size() > impl_->options.ram_size - pa.value()) {
    return absl::OutOfRangeError(
        absl::StrFormat("read_phys(pa=%s, size=0x%x): beyond RAM size 0x%x", pa, out.size(),
                        impl_->options.ram_size));
  }
  std::memcpy(out.data(), impl_->ram + pa.value(), out.size());
  return absl::OkStatus();
}

absl::Status Machine::WritePhys(Pa pa, absl::Span<const uint8_t> bytes) {
  if (pa.value() > impl_->options.ram_size || bytes.size() > impl_->options.ram_size - pa.value()) {
    return absl::OutOfRangeError(
        absl::StrFormat("write_phys(pa=%s, size=0x%x): beyond RAM size 0x%x", pa, bytes.size(),
                        impl_->options.ram_size));
  }
  std::memcpy(impl_->ram + pa.value(), bytes.data(), bytes.size());
  impl_->MarkAllTranslationsDirty();
  return absl::OkStatus();
}

absl::StatusOr<uint8_t*> Machine::FramePointer(Gfn gfn) {
  if (gfn > max_gfn()) {
    return absl::OutOfRangeError(
        absl::StrFormat("frame_pointer(gfn=%s): gfn beyond max_gfn %s", gfn, max_gfn()));
  }
  return impl_->ram + gfn.value() * kPageSize;
}

void Machine::InvalidateTranslations() { impl_->MarkAllTranslationsDirty(); }

// ---------------------------------------------------------------------------
// Registers

absl::StatusOr<amd64::Registers> Machine::GetRegisters(VcpuId vcpu) {
  VMI_RETURN_IF_ERROR(impl_->CheckVcpu("get_registers", vcpu));
  Vcpu& v = *impl_->vcpus[vcpu.value()];
  uc_engine* uc = v.uc;
  // One copy of the CPU state for everything it holds verbatim.
  VMI_ASSIGN_OR_RETURN(CpuContext * ctx, impl_->SaveScratch(v));
  const QemuStateHead& h = ctx->head();
  amd64::Registers r;
  r.rax = h.regs[0];
  r.rcx = h.regs[1];
  r.rdx = h.regs[2];
  r.rbx = h.regs[3];
  r.rsp = h.regs[4];
  r.rbp = h.regs[5];
  r.rsi = h.regs[6];
  r.rdi = h.regs[7];
  r.r8 = h.regs[8];
  r.r9 = h.regs[9];
  r.r10 = h.regs[10];
  r.r11 = h.regs[11];
  r.r12 = h.regs[12];
  r.r13 = h.regs[13];
  r.r14 = h.regs[14];
  r.r15 = h.regs[15];
  r.rip = h.eip;
  r.cr0 = h.cr[0];
  r.cr2 = h.cr[2];
  r.cr3 = h.cr[3];
  r.cr4 = h.cr[4];
  // The rest through the API, in one call: RFLAGS is computed from QEMU's
  // lazy flags, the MSRs live outside the head.
  uc_x86_msr msrs[] = {{kMsrEfer, 0},         {kMsrStar, 0},         {kMsrLstar, 0},
                       {kMsrCstar, 0},        {kMsrFmask, 0},        {kMsrSysenterCs, 0},
                       {kMsrSysenterEsp, 0},  {kMsrSysenterEip, 0},  {kMsrKernelGsBase, 0},
                       {kMsrTscAux, 0}};
  constexpr int kMsrCount = static_cast<int>(std::size(msrs));
  int ids[7 + kMsrCount] = {UC_X86_REG_RFLAGS, UC_X86_REG_DR0, UC_X86_REG_DR1, UC_X86_REG_DR2,
                            UC_X86_REG_DR3,    UC_X86_REG_DR6, UC_X86_REG_DR7};
  void* vals[7 + kMsrCount] = {&r.rflags, &r.dr0, &r.dr1, &r.dr2, &r.dr3, &r.dr6, &r.dr7};
  for (int i = 0; i < kMsrCount; ++i) {
    ids[7 + i] = UC_X86_REG_MSR;
    vals[7 + i] = &msrs[i];
  }
  if (uc_err e = uc_reg_read_batch(uc, ids, vals, 7 + kMsrCount); e != UC_ERR_OK) {
    return UcError(absl::StrFormat("get_registers(vcpu=%s): uc_reg_read_batch", vcpu), e);
  }
  r.efer = msrs[0].value;
  r.star = msrs[1].value;
  r.lstar = msrs[2].value;
  r.cstar = msrs[3].value;
  r.sfmask = msrs[4].value;
  r.sysenter_cs = msrs[5].value;
  r.sysenter_esp = msrs[6].value;
  r.sysenter_eip = msrs[7].value;
  r.kernel_gs_base = msrs[8].value;
  r.tsc_aux = msrs[9].value;
  r.fs_base = h.segs[sim_internal::kSegFs].base;
  r.gs_base = h.segs[sim_internal::kSegGs].base;
  auto seg = [](const sim_internal::QemuSegment& s) {
    return amd64::Segment{static_cast<uint16_t>(s.selector), s.base, s.limit,
                          static_cast<uint16_t>((s.flags >> 8) & 0xf0ff)};
  };
  r.es = seg(h.segs[sim_internal::kSegEs]);
  r.cs = seg(h.segs[sim_internal::kSegCs]);
  r.ss = seg(h.segs[sim_internal::kSegSs]);
  r.ds = seg(h.segs[sim_internal::kSegDs]);
  r.fs = seg(h.segs[sim_internal::kSegFs]);
  r.gs = seg(h.segs[sim_internal::kSegGs]);
  r.tr = seg(h.tr);
  r.ldtr = seg(h.ldt);
  r.gdtr = amd64::DescriptorTable{h.gdt.base, static_cast<uint16_t>(h.gdt.limit)};
  r.idtr = amd64::DescriptorTable{h.idt.base, static_cast<uint16_t>(h.idt.limit)};
  return r;
}

absl::Status Machine::SetGpRegisters(VcpuId vcpu, const amd64::GpRegisters& g) {
  VMI_RETURN_IF_ERROR(impl_->CheckVcpu("set_registers", vcpu));
  uc_engine* uc = impl_->vcpus[vcpu.value()]->uc;
  int ids[] = {UC_X86_REG_RAX, UC_X86_REG_RBX, UC_X86_REG_RCX,    UC_X86_REG_RDX, UC_X86_REG_RSI,
               UC_X86_REG_RDI, UC_X86_REG_RBP, UC_X86_REG_RSP,    UC_X86_REG_R8,  UC_X86_REG_R9,
               UC_X86_REG_R10, UC_X86_REG_R11, UC_X86_REG_R12,    UC_X86_REG_R13, UC_X86_REG_R14,
               UC_X86_REG_R15, UC_X86_REG_RFLAGS, UC_X86_REG_RIP};
  const uint64_t* values[] = {&g.rax, &g.rbx, &g.rcx, &g.rdx, &g.rsi, &g.rdi,
                              &g.rbp, &g.rsp, &g.r8,  &g.r9,  &g.r10, &g.r11,
                              &g.r12, &g.r13, &g.r14, &g.r15, &g.rflags, &g.rip};
  static_assert(std::size(ids) == std::size(values));
  void* const* vals = const_cast<void* const*>(reinterpret_cast<const void* const*>(values));
  if (uc_err e = uc_reg_write_batch(uc, ids, vals, static_cast<int>(std::size(ids)));
      e != UC_ERR_OK) {
    return UcError(absl::StrFormat("set_registers(vcpu=%s): uc_reg_write_batch", vcpu), e);
  }
  return absl::OkStatus();
}

absl::Status Machine::SetRegisters(VcpuId vcpu, const amd64::Registers& r) {
  VMI_RETURN_IF_ERROR(impl_->CheckVcpu("set_registers", vcpu));
  uc_engine* uc = impl_->vcpus[vcpu.value()]->uc;
  // Control state first so the segment loads below see the final mode.
  WriteMsr(uc, kMsrEfer, r.efer);
  SetReg(uc, UC_X86_REG_CR4, r.cr4);
  SetReg(uc, UC_X86_REG_CR2, r.cr2);  // before CR3: see WriteCr2
  SetReg(uc, UC_X86_REG_CR3, r.cr3);
  SetReg(uc, UC_X86_REG_CR0, r.cr0);
  {
    VMI_ASSIGN_OR_RETURN(CpuContext ctx, CpuContext::Save(uc));
    QemuStateHead& h = ctx.head();
    h.gdt.base = r.gdtr.base;
    h.gdt.limit = r.gdtr.limit;
    h.idt.base = r.idtr.base;
    h.idt.limit = r.idtr.limit;
    auto load = [&](int seg, const amd64::Segment& s) {
      ctx.LoadSegment(seg, s.selector, s.base, s.limit, static_cast<uint32_t>(s.access) << 8);
    };
    load(sim_internal::kSegCs, r.cs);
    load(sim_internal::kSegSs, r.ss);
    load(sim_internal::kSegDs, r.ds);
    load(sim_internal::kSegEs, r.es);
    load(sim_internal::kSegFs, r.fs);
    load(sim_internal::kSegGs, r.gs);
    h.tr = sim_internal::QemuSegment{r.tr.selector, 0, r.tr.base, r.tr.limit,
                                     static_cast<uint32_t>(r.tr.access) << 8};
    h.ldt = sim_internal::QemuSegment{r.ldtr.selector, 0, r.ldtr.base, r.ldtr.limit,
                                      static_cast<uint32_t>(r.ldtr.access) << 8};
    VMI_RETURN_IF_ERROR(ctx.Restore(uc));
  }
  SetReg(uc, UC_X86_REG_DR0, r.dr0);
  SetReg(uc, UC_X86_REG_DR1, r.dr1);
  SetReg(uc, UC_X86_REG_DR2, r.dr2);
  SetReg(uc, UC_X86_REG_DR3, r.dr3);
  SetReg(uc, UC_X86_REG_DR6, r.dr6);
  SetReg(uc, UC_X86_REG_DR7, r.dr7);
  WriteMsr(uc, kMsrStar, r.star);
  WriteMsr(uc, kMsrLstar, r.lstar);
  WriteMsr(uc, kMsrCstar, r.cstar);
  WriteMsr(uc, kMsrFmask, r.sfmask);
  WriteMsr(uc, kMsrSysenterCs, r.sysenter_cs);
  WriteMsr(uc, kMsrSysenterEsp, r.sysenter_esp);
  WriteMsr(uc, kMsrSysenterEip, r.sysenter_eip);
  WriteMsr(uc, kMsrKernelGsBase, r.kernel_gs_base);
  WriteMsr(uc, kMsrTscAux, r.tsc_aux);
  SetReg(uc, UC_X86_REG_FS_BASE, r.fs_base);
  SetReg(uc, UC_X86_REG_GS_BASE, r.gs_base);
  impl_->vcpus[vcpu.value()]->active->tlb_dirty = true;
  return SetGpRegisters(vcpu, r.gp());
}

absl::Status Machine::LoadSegmentFromGdt(VcpuId vcpu, int segment, uint16_t selector) {
  VMI_RETURN_IF_ERROR(impl_->CheckVcpu("load_segment", vcpu));
  if (segment < 0 || segment > 5) {
    return absl::InvalidArgumentError(
        absl::StrFormat("load_segment(vcpu=%s, segment=%d): segment must be 0..5", vcpu, segment));
  }
  Vcpu& v = *impl_->vcpus[vcpu.value()];
  uint64_t base = 0;
  uint32_t limit = 0, flags = (selector & 3u) << 13;
  if ((selector & ~3u) != 0) {
    VMI_ASSIGN_OR_RETURN(uint64_t desc, impl_->GdtDescriptor(v, selector));
    DecodeDescriptor(desc, &base, &limit, &flags);
    if (!(flags & kDescP)) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "load_segment(vcpu=%s, selector=0x%x): descriptor not present", vcpu, selector));
    }
  }
  VMI_ASSIGN_OR_RETURN(CpuContext ctx, CpuContext::Save(v.uc));
  ctx.LoadSegment(segment, selector, base, limit, flags);
  return ctx.Restore(v.uc);
}

// ---------------------------------------------------------------------------
// Monitors

absl::Status Machine::SetBreakpointMonitor(bool enabled) { return SetInterruptMonitor(3, enabled); }

absl::Status Machine::SetInterruptMonitor(uint8_t vector, bool enabled) {
  impl_->monitors.interrupts[vector] = enabled;
  return absl::OkStatus();
}

absl::Status Machine::SetControlRegisterMonitor(int cr, bool enabled) {
  if (cr != 0 && cr != 3 && cr != 4) {
    return absl::UnimplementedError(absl::StrFormat(
        "set_cr_monitor(cr=%d): only CR0, CR3 and CR4 writes can be monitored", cr));
  }
  impl_->monitors.cr[cr] = enabled;
  return absl::OkStatus();
}

absl::Status Machine::SetMsrWriteMonitor(bool enabled) {
  impl_->monitors.msr_all = enabled;
  return absl::OkStatus();
}

absl::Status Machine::SetMsrWriteMonitor(uint32_t index, bool enabled) {
  if (enabled) {
    impl_->monitors.msr_indices.insert(index);
  } else {
    impl_->monitors.msr_indices.erase(index);
  }
  return absl::OkStatus();
}

absl::Status Machine::SetCpuidMonitor(bool enabled) {
  impl_->monitors.cpuid = enabled;
  return absl::OkStatus();
}

absl::Status Machine::SetIoMonitor(bool enabled) {
  impl_->monitors.io = enabled;
  return absl::OkStatus();
}

absl::Status Machine::SetVmcallMonitor(bool enabled, bool allow_user) {
  impl_->monitors.vmcall = enabled;
  impl_->monitors.vmcall_user = allow_user;
  return absl::OkStatus();
}

absl::Status Machine::SetDescriptorTableMonitor(bool enabled) {
  impl_->monitors.descriptor = enabled;
  return absl::OkStatus();
}

absl::Status Machine::SetSingleStep(VcpuId vcpu, bool enabled) {
  VMI_RETURN_IF_ERROR(impl_->CheckVcpu("set_singlestep", vcpu));
  impl_->vcpus[vcpu.value()]->book.singlestep = enabled;
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Views

absl::StatusOr<View> Machine::CreateView(MemoryAccess default_access) {
  ++impl_->views_epoch;
  return impl_->views.Create(default_access);
}

absl::Status Machine::DestroyView(View view) {
  for (const auto& v : impl_->vcpus) {
    if (v->book.view == view && view != kDefaultView) {
      return absl::FailedPreconditionError(
          absl::StrFormat("destroy_view(view=%s): active on vcpu %u", view, v->index));
    }
    const std::optional<SpecialStep>& step = v->book.special;
    if (step.has_value() && step->kind == SpecialStep::Kind::kFastSingleStep &&
        step->view == view) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "destroy_view(view=%s): vcpu %u has a fast singlestep into it pending", view, v->index));
    }
  }
  VMI_RETURN_IF_ERROR(impl_->views.Destroy(view));
  ++impl_->views_epoch;
  // Engines of the view that no vCPU is in go now; one still holding a vCPU's
  // state goes when that vCPU moves to its view's engine.
  for (auto& v : impl_->vcpus) impl_->CloseEngine(*v, view);
  return absl::OkStatus();
}

void Machine::CancelFastSingleSteps() {
  for (auto& v : impl_->vcpus) {
    if (v->book.special.has_value() &&
        v->book.special->kind == SpecialStep::Kind::kFastSingleStep) {
      v->book.special.reset();
    }
  }
}

absl::Status Machine::SwitchView(View view) {
  if (!impl_->views.Exists(view)) {
    return absl::InvalidArgumentError(absl::StrFormat("switch_view(view=%s): no such view", view));
  }
  for (auto& v : impl_->vcpus) v->book.view = view;
  return absl::OkStatus();
}

absl::Status Machine::SwitchVcpuView(VcpuId vcpu, View view) {
  VMI_RETURN_IF_ERROR(impl_->CheckVcpu("switch_vcpu_view", vcpu));
  if (!impl_->views.Exists(view)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("switch_vcpu_view(vcpu=%s, view=%s): no such view", vcpu, view));
  }
  impl_->vcpus[vcpu.value()]->book.view = view;
  return absl::OkStatus();
}

absl::StatusOr<View> Machine::VcpuView(VcpuId vcpu) const {
  VMI_RETURN_IF_ERROR(impl_->CheckVcpu("vcpu_view", vcpu));
  return impl_->vcpus[vcpu.value()]->book.view;
}

absl::Status Machine::SetMemoryAccess(View view, Gfn gfn, MemoryAccess access) {
  ++impl_->views_epoch;
  return impl_->views.SetAccess(view, gfn, access);
}

absl::StatusOr<MemoryAccess> Machine::GetMemoryAccess(View view, Gfn gfn) const {
  return impl_->views.GetAccess(view, gfn);
}

absl::Status Machine::ChangeGfn(View view, Gfn old_gfn, Gfn new_gfn) {
  ++impl_->views_epoch;
  return impl_->views.ChangeGfn(view, old_gfn, new_gfn);
}

absl::Status Machine::ResetGfn(View view, Gfn gfn) {
  ++impl_->views_epoch;
  return impl_->views.ResetGfn(view, gfn);
}

const ViewTable& Machine::views() const { return impl_->views; }

// ---------------------------------------------------------------------------
// Snapshots

absl::StatusOr<std::unique_ptr<Snapshot>> Machine::TakeSnapshot() {
  Impl& m = *impl_;
  auto data = std::make_unique<Snapshot::Data>();
  data->ram.assign(m.ram, m.ram + m.options.ram_size);
  for (auto& v : m.vcpus) {
    VMI_ASSIGN_OR_RETURN(CpuContext ctx, CpuContext::Save(v->uc));
    data->cpus.push_back(std::move(ctx));
    data->books.push_back(v->book);
  }
  data->views = m.views;
  data->monitors = m.monitors;
  data->pending = m.pending;
  data->next_vcpu = m.next_vcpu;
  data->paused = m.paused;
  data->console = m.console;
  data->scheduled = m.scheduled;
  return std::unique_ptr<Snapshot>(new Snapshot(std::move(data)));
}

absl::Status Machine::RestoreSnapshot(const Snapshot& snapshot) {
  Impl& m = *impl_;
  const Snapshot::Data& d = *snapshot.data_;
  if (d.ram.size() != m.options.ram_size || d.cpus.size() != m.vcpus.size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("restore_snapshot(ram=0x%x, vcpus=%u): machine has ram=0x%x vcpus=%u",
                        d.ram.size(), d.cpus.size(), m.options.ram_size, m.vcpus.size()));
  }
  std::memcpy(m.ram, d.ram.data(), d.ram.size());
  for (size_t i = 0; i < m.vcpus.size(); ++i) {
    VMI_RETURN_IF_ERROR(d.cpus[i].Restore(m.vcpus[i]->uc));
    m.vcpus[i]->book = d.books[i];
  }
  m.views = d.views;
  ++m.views_epoch;
  for (auto& v : m.vcpus) {
    std::vector<View> gone;
    for (const auto& [id, e] : v->engines) {
      if (!m.views.Exists(e->view)) gone.push_back(e->view);
    }
    for (View view : gone) m.CloseEngine(*v, view);
  }
  m.monitors = d.monitors;
  m.pending = d.pending;
  m.next_vcpu = d.next_vcpu;
  m.paused = d.paused;
  m.console = d.console;
  m.scheduled = d.scheduled;
  m.MarkAllTranslationsDirty();
  return absl::OkStatus();
}

}  // namespace vmi::sim
