#include "sim/machine.h"

#include <sys/mman.h>
#include <unistd.h>
#include <unicorn/unicorn.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <utility>

#include "absl/strings/str_format.h"
#include "arch/amd64/interrupt.h"
#include "core/error.h"
#include "sim/internal/decode.h"
#include "sim/internal/engines.h"
#include "sim/internal/machine_state.h"
#include "sim/internal/page_walk.h"
#include "sim/internal/qemu_state.h"

// The facade: creation, the run/respond cycle, injection, memory, monitors,
// views and snapshots. The other concerns live beside it in sim/internal/:
// engines.cc (per-view engines and code coherence), hooks.cc (Unicorn hooks
// and guest-linear address derivation), delivery.cc (interrupt, exception
// and SYSCALL delivery), cpu_registers.cc (register marshalling) and
// exit_format.cc (exit printing).

namespace vmi::sim {

using amd64::ExceptionHasErrorCode;
using sim_internal::DecodedInsn;
using sim_internal::InsnKind;
using sim_internal::kPageSize;
using sim_internal::QemuStateHead;
using sim_internal::Reg;
using sim_internal::SetReg;
using sim_internal::UcError;
using sim_internal::WriteCr2;
using sim_internal::WalkResult;

namespace {
constexpr uint16_t kMaxVcpus = 8;
}  // namespace

Snapshot::Snapshot(std::unique_ptr<Data> data) : data_(std::move(data)) {}
Snapshot::~Snapshot() = default;

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


Exit Machine::Impl::NewExit(Vcpu& v, ExitKind kind, uint64_t rip) const {
  Exit e;
  e.vcpu = VcpuId(v.index);
  e.view = v.book.view;
  e.kind = kind;
  e.rip = rip;
  return e;
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
  if (v.active->flush_after_run) {
    v.active->flush_after_run = false;
    v.active->tb_dirty = true;
  }
  if (v.store_undo.has_value()) {
    // The store the write hook turned into a violation did happen: undo it,
    // and stand before the instruction (Unicorn leaves RIP at the start of
    // the block when an engine stops without an error).
    const Vcpu::StoreUndo& u = *v.store_undo;
    for (uint8_t i = 0; i < u.size; ++i) {
      if (u.gpa + i < options.ram_size) ram[Backing(v, u.gpa + i)] = u.bytes[i];
    }
    v.store_undo.reset();
    if (v.hook_exit.has_value()) SetReg(v.uc, UC_X86_REG_RIP, v.hook_exit->rip);
  }
  if (v.hook_error.has_value()) return *v.hook_error;
  if (err == UC_ERR_FETCH_PROT) {
    // Unicorn raises a fetch violation as a #PF it never delivers, and leaves
    // it marked in flight: the guest's next #PF would become a #DF.
    VMI_ASSIGN_OR_RETURN(CpuContext * ctx, SaveScratch(v));
    ctx->clear_exception_in_flight();
    VMI_RETURN_IF_ERROR(ctx->Restore(v.uc));
  }
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
    if (!is_int && ExceptionHasErrorCode(vector)) code = static_cast<uint32_t>(error_code);
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

absl::Status Machine::Impl::EndFastStep(Vcpu& v) {
  if (!v.book.fast_step_return.has_value()) return absl::OkStatus();
  v.book.view = *v.book.fast_step_return;
  v.book.fast_step_return.reset();
  return PrepareEngine(v);
}

absl::StatusOr<std::optional<Exit>> Machine::Impl::RunSlot(Vcpu& v, uint64_t* charged) {
  VMI_RETURN_IF_ERROR(PrepareEngine(v));
  std::optional<SpecialStep> step = v.book.special;
  v.book.special.reset();
  if (!v.book.injections.empty()) {
    const Interrupt irq = v.book.injections.front();
    v.book.injections.pop_front();
    if (irq.cr2.has_value()) WriteCr2(v.uc, *irq.cr2);
    const uint64_t rip = Reg(v.uc, UC_X86_REG_RIP) + irq.insn_length;
    VMI_RETURN_IF_ERROR(Deliver(v, irq.vector, irq.error_code, rip));
    // Like the monitor trap flag, a fast single step ends once an event is
    // delivered: the vCPU goes back to its view at the handler's entry.
    if (v.book.fast_step_return.has_value() ||
        (step.has_value() && step->kind == SpecialStep::Kind::kFastSingleStep)) {
      step.reset();
      VMI_RETURN_IF_ERROR(EndFastStep(v));
    }
  }
  if (step.has_value() && step->kind == SpecialStep::Kind::kFastSingleStep) {
    // A step already under way (an exit its instruction raised was answered
    // with another fast single step) keeps the view it returns to.
    if (!v.book.fast_step_return.has_value()) v.book.fast_step_return = v.book.view;
    v.book.view = step->view;
    if (absl::Status s = PrepareEngine(v); !s.ok()) {
      v.book.view = *v.book.fast_step_return;
      v.book.fast_step_return.reset();
      return s;
    }
  }
  if (step.has_value() || v.book.fast_step_return.has_value()) {
    // One instruction alone: an emulated access, or the instruction of a fast
    // single step, in the view the vCPU is in now.
    *charged += 1;
    std::optional<Exit> exit;
    if (step.has_value() && step->kind == SpecialStep::Kind::kEmulate) {
      Engine& e = *v.active;
      // Until the grant is taken back, the engine is out of sync with its
      // view: should anything below fail, the next PrepareEngine re-syncs it.
      const uint64_t synced = e.applied_epoch;
      e.applied_epoch = ~0ull;
      ViewEntry entry = views.Lookup(v.book.view, step->gfn);
      entry.access = entry.access | step->granted;
      const std::string op = absl::StrFormat("emulate(vcpu=%u)", v.index);
      VMI_RETURN_IF_ERROR(sim_internal::ApplyEntry(e, ram, step->gfn, entry, op));
      sim_internal::FlushEngine(e);
      VMI_ASSIGN_OR_RETURN(exit, Execute(v, 1, false));
      VMI_RETURN_IF_ERROR(
          sim_internal::ApplyEntry(e, ram, step->gfn, views.Lookup(v.book.view, step->gfn), op));
      sim_internal::FlushEngine(e);
      e.applied_epoch = synced;
    } else {
      absl::StatusOr<std::optional<Exit>> stepped = Execute(v, 1, false);
      if (!stepped.ok()) {
        (void)EndFastStep(v);
        return stepped.status();
      }
      exit = *std::move(stepped);
    }
    // An exit raised by the instruction leaves a fast step under way: the
    // vCPU stays in the step's view until the instruction completes.
    if (exit.has_value()) return exit;
    VMI_RETURN_IF_ERROR(EndFastStep(v));
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
  // An instruction skipped (denied, or VMCALL answered) completes a fast
  // single step under way.
  if (v.book.fast_step_return.has_value() && intercept && !rip_changed &&
      (response.action == EventAction::kDeny || e.kind == ExitKind::kVmcall)) {
    v.book.view = *v.book.fast_step_return;
    v.book.fast_step_return.reset();
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
  if (interrupt.vector < 32 && ExceptionHasErrorCode(interrupt.vector) != interrupt.error_code.has_value() &&
      interrupt.insn_length == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("inject_interrupt(vcpu=%s, vector=%u): exception %s an error code", vcpu,
                        interrupt.vector, ExceptionHasErrorCode(interrupt.vector) ? "needs" : "takes no"));
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
    if (v->book.fast_step_return == view) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "destroy_view(view=%s): vcpu %u returns to it after its fast singlestep", view,
          v->index));
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
    v->book.fast_step_return.reset();
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

absl::Status Machine::SetMemoryAccess(View view, Gfn gfn, MemoryAccess access,
                                      MemoryAccessOptions options) {
  ++impl_->views_epoch;
  return impl_->views.SetAccess(view, gfn, access, options);
}

absl::StatusOr<MemoryAccess> Machine::GetMemoryAccess(View view, Gfn gfn) const {
  return impl_->views.GetAccess(view, gfn);
}

absl::StatusOr<MemoryAccessOptions> Machine::GetMemoryAccessOptions(View view, Gfn gfn) const {
  return impl_->views.GetOptions(view, gfn);
}

absl::StatusOr<bool> Machine::ChecksEveryAccess(VcpuId vcpu, View view) const {
  VMI_RETURN_IF_ERROR(impl_->CheckVcpu("checks_every_access", vcpu));
  const Vcpu& v = *impl_->vcpus[vcpu.value()];
  auto it = v.engines.find(view.value());
  return it != v.engines.end() && it->second->mem_hook != 0;
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