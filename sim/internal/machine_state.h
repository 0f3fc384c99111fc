// The machine's shared state, for the files that implement it (machine.cc
// and the concerns split out beside it in sim/internal/): the per-vCPU
// bookkeeping, the Unicorn engines, Machine::Impl, snapshot data, and the
// small Unicorn helpers they all use. Internal to sim/ and its tests.
//
// Thread-safety: thread-compatible, like Machine.

#ifndef VMI_SIM_INTERNAL_MACHINE_STATE_H_
#define VMI_SIM_INTERNAL_MACHINE_STATE_H_

#include <unicorn/unicorn.h>

#include <bitset>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "arch/amd64/amd64.h"
#include "sim/internal/page_walk.h"
#include "sim/internal/qemu_state.h"
#include "sim/machine.h"
#include "sim/views.h"

namespace vmi::sim {
namespace sim_internal {

inline constexpr uint64_t kPageSize = Amd64::kPageSize;

// GPR numbers (0 = RAX ... 15 = R15, the x86 encoding order) to Unicorn ids.
inline constexpr int kGprIds[16] = {UC_X86_REG_RAX, UC_X86_REG_RCX, UC_X86_REG_RDX, UC_X86_REG_RBX,
                                    UC_X86_REG_RSP, UC_X86_REG_RBP, UC_X86_REG_RSI, UC_X86_REG_RDI,
                                    UC_X86_REG_R8,  UC_X86_REG_R9,  UC_X86_REG_R10, UC_X86_REG_R11,
                                    UC_X86_REG_R12, UC_X86_REG_R13, UC_X86_REG_R14, UC_X86_REG_R15};

inline absl::Status UcError(const std::string& op, uc_err err) {
  return absl::InternalError(absl::StrFormat("%s: %s", op, uc_strerror(err)));
}

inline uint32_t UcPerms(MemoryAccess a) {
  uint32_t p = UC_PROT_NONE;
  if (a.read()) p |= UC_PROT_READ;
  if (a.write()) p |= UC_PROT_WRITE;
  if (a.execute()) p |= UC_PROT_EXEC;
  return p;
}

inline uint64_t Reg(uc_engine* uc, int id) {
  uint64_t v = 0;
  uc_reg_read(uc, id, &v);
  return v;
}

inline void SetReg(uc_engine* uc, int id, uint64_t v) { uc_reg_write(uc, id, &v); }

// Unicorn 2.1's CR2 write falls through to the CR3 update: keep CR3.
inline void WriteCr2(uc_engine* uc, uint64_t v) {
  const uint64_t cr3 = Reg(uc, UC_X86_REG_CR3);
  SetReg(uc, UC_X86_REG_CR2, v);
  SetReg(uc, UC_X86_REG_CR3, cr3);
}

inline uint64_t ReadMsr(uc_engine* uc, uint32_t index) {
  uc_x86_msr msr{index, 0};
  if (uc_reg_read(uc, UC_X86_REG_MSR, &msr) != UC_ERR_OK) return 0;
  return msr.value;
}

inline void WriteMsr(uc_engine* uc, uint32_t index, uint64_t value) {
  uc_x86_msr msr{index, value};
  uc_reg_write(uc, UC_X86_REG_MSR, &msr);
}

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
  // Set while a fast single step is under way (its instruction has not
  // completed: an exit it raised is pending or answered): the view the vCPU
  // returns to once the instruction completes. `view` is the step's view.
  std::optional<View> fast_step_return;
};

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

  // Restrictions on TLB hits. Unicorn checks a frame's permissions only on
  // its slow memory path, and its generated code takes the TLB fast path
  // unless a UC_HOOK_MEM_WRITE (or READ) hook exists when it translates. So
  // while the engine's view restricts any frame, it carries one write hook
  // (UpdateMemoryHook), and every guest load and store is checked; an engine
  // with nothing restricted has none and runs at full speed. The hook's range
  // covers the frames in `pw_frames` (or nothing).
  uc_hook mem_hook = 0;
  uint64_t mem_hook_begin = 0, mem_hook_end = 0;
  // A deleted hook stays on Unicorn's list (and code translated meanwhile
  // takes the slow path) until the next uc_emu_start ends: flush after it.
  bool flush_after_run = false;
  // Frames whose view denies write but lets page walks update them
  // (MemoryAccessOptions::IgnorePageWalkUpdates): writable in Unicorn, so the
  // walker's accessed/dirty-bit updates land, and guest stores to them are
  // turned into write violations by the write hook.
  absl::flat_hash_set<uint64_t> pw_frames;

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
  // A guest store the write hook turned into a violation: Unicorn performs
  // it after the hook returns, so its bytes are put back once the engine
  // stopped (before anything else can see them).
  struct StoreUndo {
    uint64_t gpa = 0;
    uint8_t size = 0;
    uint8_t bytes[16] = {};
  };
  std::optional<StoreUndo> store_undo;
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

}  // namespace sim_internal

using sim_internal::CpuContext;
using sim_internal::Engine;
using sim_internal::Monitors;
using sim_internal::PagingState;
using sim_internal::SpecialStep;
using sim_internal::Vcpu;
using sim_internal::VcpuBook;

struct Machine::Impl {
  MachineOptions options;
  uint8_t* ram = nullptr;
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
  // The memfd behind `ram` (MachineOptions::shared_ram), or -1. Kept last:
  // the fields above are read on every guest block.
  int ram_fd = -1;

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
  // Brings the vCPU's engine for its view up to date (creating it, moving
  // the CPU state to it, applying the view, dropping stale code) before it
  // runs.
  absl::Status PrepareEngine(Vcpu& v);
  absl::Status UpdateCodeHook(Vcpu& v, Engine& e);
  // Installs, moves or removes the engine's memory hook to match what its
  // view restricts now (see Engine::mem_hook).
  absl::Status UpdateMemoryHook(Vcpu& v, Engine& e);
  // Records the code frame of `va` for the vCPU's engine (see engines.h).
  void NoteCode(Vcpu& v, uint64_t va);

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
  // A kMemoryAccess exit for the access at `gpa` by the instruction at RIP,
  // with its guest-linear address where it can be derived.
  Exit AccessExit(Vcpu& v, MemoryAccess access, uint64_t gpa) const;
  // Ends the vCPU's fast single step: back to the view it came from.
  absl::Status EndFastStep(Vcpu& v);
  // Unicorn's region changes (a split by uc_mem_protect, uc_mem_unmap)
  // invalidate translated code by walking the range's addresses as virtual
  // ones; a walk that misses raises a #PF that goes nowhere but stays marked
  // in flight, and the guest's next real #PF would become a #DF. Called after
  // a view is applied (an emulation grant re-protects a frame that already is
  // a region of its own: no split, no walk).
  absl::Status DropStrayException(Vcpu& v);

  // --- hooks ---
  static void HookCode(uc_engine* uc, uint64_t address, uint32_t size, void* user);
  static void HookBlock(uc_engine* uc, uint64_t address, uint32_t size, void* user);
  static void HookIntr(uc_engine* uc, uint32_t intno, void* user);
  static bool HookInvalid(uc_engine* uc, void* user);
  static bool HookProt(uc_engine* uc, uc_mem_type type, uint64_t address, int size, int64_t value,
                       void* user);
  static void HookWrite(uc_engine* uc, uc_mem_type type, uint64_t address, int size,
                        int64_t value, void* user);
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


}  // namespace vmi::sim

#endif  // VMI_SIM_INTERNAL_MACHINE_STATE_H_
