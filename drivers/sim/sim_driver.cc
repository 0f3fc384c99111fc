#include "drivers/sim/sim_driver.h"

#include <cstring>
#include <variant>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/error.h"
#include "core/page_span.h"
#include "drivers/sim/machine_reader.h"

namespace vmi::sim {
namespace {

constexpr uint64_t kPageSize = Amd64::kPageSize;

absl::Status NoSuchMonitor(const amd64::EventMonitor& monitor, absl::string_view why) {
  return absl::UnimplementedError(absl::StrFormat("monitor_enable(%s): %s",
                                                  amd64::EventMonitorToString(monitor), why));
}

}  // namespace

SimDriver::SimDriver(SimDriver&&) noexcept = default;
SimDriver& SimDriver::operator=(SimDriver&&) noexcept = default;
SimDriver::~SimDriver() = default;

absl::StatusOr<SimDriver> SimDriver::Create(std::unique_ptr<Machine> machine,
                                            SimDriverOptions options) {
  if (machine == nullptr) return absl::InvalidArgumentError("SimDriver::Create: no machine");
  const uint64_t frames = machine->max_gfn().value() + 1;
  if (options.reserve_frames >= frames) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "SimDriver::Create: reserve_frames %u leaves no RAM of %u frames", options.reserve_frames,
        frames));
  }
  auto state = std::make_unique<State>();
  state->visible_max = Gfn(frames - 1 - options.reserve_frames);
  state->machine = std::move(machine);
  state->options = options;
  return SimDriver(std::move(state));
}

absl::StatusOr<SimDriver> SimDriver::Boot(absl::string_view program,
                                          const MachineOptions& machine_options,
                                          const StandardGuestOptions& guest_options,
                                          SimDriverOptions options) {
  VMI_ASSIGN_OR_RETURN(std::unique_ptr<Machine> machine, Machine::Create(machine_options));
  absl::StatusOr<StandardGuest> guest = BuildStandardGuest(*machine, program, guest_options);
  if (!guest.ok()) return AnnotateStatus(guest.status(), absl::StrFormat("boot %s", program));
  VMI_ASSIGN_OR_RETURN(SimDriver driver, Create(std::move(machine), options));
  driver.state_->guest = *std::move(guest);
  return driver;
}

absl::Status SimDriver::CheckPopulated(const char* op, Gfn gfn) const {
  const bool reserve = gfn > state_->visible_max;
  if (gfn > state_->machine->max_gfn() ||
      (reserve && !state_->allocated.contains(gfn.value())) ||
      state_->freed.contains(gfn.value())) {
    return absl::NotFoundError(absl::StrFormat("%s(gfn=%s): frame not populated (max_gfn %s)", op,
                                               gfn, state_->visible_max));
  }
  return absl::OkStatus();
}

absl::StatusOr<VmiInfo> SimDriver::Info() const {
  Gfn max = state_->visible_max;
  for (uint64_t g : state_->allocated) max = std::max(max, Gfn(g));
  return VmiInfo{kPageSize, 12, max, state_->machine->vcpu_count()};
}

absl::StatusOr<MappedPage> SimDriver::ReadPage(Gfn gfn) {
  VMI_RETURN_IF_ERROR(CheckPopulated("read_page", gfn));
  VMI_ASSIGN_OR_RETURN(uint8_t* frame, state_->machine->FramePointer(gfn));
  return MappedPage::Live(gfn, frame, kPageSize);
}

absl::StatusOr<MappedPage> SimDriver::WritePage(Gfn gfn, uint64_t offset,
                                                absl::Span<const uint8_t> data) {
  VMI_RETURN_IF_ERROR(CheckPopulated("write_page", gfn));
  VMI_RETURN_IF_ERROR(CheckPageSpan("write_page", gfn, offset, data.size(), kPageSize));
  VMI_RETURN_IF_ERROR(state_->machine->WritePhys(Pa(gfn.value() * kPageSize + offset), data));
  return ReadPage(gfn);
}

absl::StatusOr<MemoryAccess> SimDriver::GetMemoryAccess(Gfn gfn, View view) {
  VMI_RETURN_IF_ERROR(CheckPopulated("memory_access", gfn));
  return state_->machine->GetMemoryAccess(view, gfn);
}

absl::StatusOr<std::pair<MemoryAccess, MemoryAccessOptions>> SimDriver::GetMemoryAccessWithOptions(
    Gfn gfn, View view) {
  VMI_ASSIGN_OR_RETURN(MemoryAccess access, GetMemoryAccess(gfn, view));
  VMI_ASSIGN_OR_RETURN(MemoryAccessOptions options,
                       state_->machine->GetMemoryAccessOptions(view, gfn));
  return std::make_pair(access, options);
}

absl::Status SimDriver::SetMemoryAccess(Gfn gfn, View view, MemoryAccess access) {
  return SetMemoryAccessWithOptions(gfn, view, access, MemoryAccessOptions::None());
}

absl::Status SimDriver::SetMemoryAccessWithOptions(Gfn gfn, View view, MemoryAccess access,
                                                   MemoryAccessOptions options) {
  VMI_RETURN_IF_ERROR(CheckPopulated("set_memory_access", gfn));
  // The machine acts on kIgnorePageWalkUpdates (walk A/D updates pass, guest
  // writes trap); without it a walk's update to a write-protected table frame
  // is dropped without an event (sim/machine.h says why).
  return state_->machine->SetMemoryAccess(view, gfn, access, options);
}

absl::StatusOr<amd64::Registers> SimDriver::Registers(VcpuId vcpu) {
  return state_->machine->GetRegisters(vcpu);
}

absl::Status SimDriver::SetRegisters(VcpuId vcpu, const amd64::Registers& regs) {
  return state_->machine->SetRegisters(vcpu, regs);
}

namespace {

// Applies `on` to the machine monitor a monitor variant names.
absl::Status SetMonitor(Machine& m, const amd64::EventMonitor& monitor, bool on,
                        absl::flat_hash_set<uint32_t>& msrs, absl::flat_hash_set<uint8_t>& vectors,
                        bool& singlestep) {
  struct Visitor {
    Machine& m;
    const amd64::EventMonitor& monitor;
    bool on;
    absl::flat_hash_set<uint32_t>& msrs;
    absl::flat_hash_set<uint8_t>& vectors;
    bool& singlestep;
    absl::Status operator()(const amd64::MonitorControlRegister& c) {
      switch (c.reg) {
        case amd64::ControlRegister::kCr0: return m.SetControlRegisterMonitor(0, on);
        case amd64::ControlRegister::kCr3: return m.SetControlRegisterMonitor(3, on);
        case amd64::ControlRegister::kCr4: return m.SetControlRegisterMonitor(4, on);
        case amd64::ControlRegister::kXcr0: break;
      }
      return NoSuchMonitor(monitor, "the simulator does not intercept XSETBV");
    }
    absl::Status operator()(const amd64::MonitorMsr& msr) {
      VMI_RETURN_IF_ERROR(m.SetMsrWriteMonitor(msr.index, on));
      if (on) {
        msrs.insert(msr.index);
      } else {
        msrs.erase(msr.index);
      }
      return absl::OkStatus();
    }
    absl::Status operator()(const amd64::MonitorInterrupt& i) {
      VMI_RETURN_IF_ERROR(m.SetInterruptMonitor(i.vector, on));
      if (on) {
        vectors.insert(i.vector);
      } else {
        vectors.erase(i.vector);
      }
      return absl::OkStatus();
    }
    absl::Status operator()(const amd64::MonitorSingleStep&) {
      singlestep = on;
      if (!on) {
        for (uint16_t v = 0; v < m.vcpu_count(); ++v) {
          VMI_RETURN_IF_ERROR(m.SetSingleStep(VcpuId(v), false));
        }
      }
      return absl::OkStatus();
    }
    absl::Status operator()(const amd64::MonitorHypercall& h) {
      return m.SetVmcallMonitor(on, h.allow_user);
    }
    absl::Status operator()(const amd64::MonitorCpuid&) { return m.SetCpuidMonitor(on); }
    absl::Status operator()(const amd64::MonitorIo&) { return m.SetIoMonitor(on); }
    absl::Status operator()(const amd64::MonitorDescriptorAccess&) {
      return m.SetDescriptorTableMonitor(on);
    }
    absl::Status operator()(const amd64::MonitorBreakpoint& b) {
      return absl::UnimplementedError(absl::StrFormat(
          "monitor %s: the simulator has no debug stub; hide a breakpoint with a view instead",
          amd64::EventMonitorToString(b)));
    }
    absl::Status operator()(const amd64::MonitorWatchpoint& w) {
      return absl::UnimplementedError(absl::StrFormat(
          "monitor %s: the simulator has no debug stub; watch a page with its permissions instead",
          amd64::EventMonitorToString(w)));
    }
  };
  return std::visit(Visitor{m, monitor, on, msrs, vectors, singlestep}, monitor);
}

}  // namespace

absl::Status SimDriver::MonitorEnable(const amd64::EventMonitor& monitor) {
  return SetMonitor(*state_->machine, monitor, true, state_->msrs, state_->vectors,
                    state_->singlestep_monitor);
}

absl::Status SimDriver::MonitorDisable(const amd64::EventMonitor& monitor) {
  absl::Status s = SetMonitor(*state_->machine, monitor, false, state_->msrs, state_->vectors,
                              state_->singlestep_monitor);
  return absl::IsUnimplemented(s) ? absl::OkStatus() : s;  // never enabled: nothing to undo
}

size_t SimDriver::EventsPending() { return state_->machine->pending_exit().has_value() ? 1 : 0; }

absl::Duration SimDriver::EventProcessingOverhead() { return state_->overhead; }

amd64::EventReason SimDriver::ReasonFromExit(const Exit& e, const amd64::Registers& regs,
                                             std::optional<Gfn> instruction_gfn) {
  switch (e.kind) {
    case ExitKind::kInterrupt: {
      amd64::Interrupt i;
      i.vector = e.vector;
      i.type = e.insn_length > 0 ? amd64::InterruptType::kSoftwareInterrupt
                                 : amd64::InterruptType::kHardwareException;
      i.has_error_code = e.has_error_code;
      i.error_code = e.error_code;
      i.instruction_length = e.insn_length;
      i.extra = e.vector == 14 ? regs.cr2 : 0;
      return amd64::InterruptEvent{i};
    }
    case ExitKind::kMemoryAccess:
      return amd64::MemoryAccessEvent{e.gpa, e.gla, e.gla_valid, e.access, e.gla_valid, false};
    case ExitKind::kBreakpoint:
      return amd64::InterruptEvent{amd64::Interrupt::Breakpoint(e.insn_length), instruction_gfn};
    case ExitKind::kSingleStep:
      return amd64::SingleStepEvent{instruction_gfn};
    case ExitKind::kControlRegister: {
      const amd64::ControlRegister reg = e.cr == 0   ? amd64::ControlRegister::kCr0
                                         : e.cr == 3 ? amd64::ControlRegister::kCr3
                                                     : amd64::ControlRegister::kCr4;
      return amd64::ControlRegisterWriteEvent{reg, e.old_value, e.new_value};
    }
    case ExitKind::kMsrWrite:
      return amd64::MsrWriteEvent{e.msr, e.old_value, e.new_value};
    case ExitKind::kCpuid:
      return amd64::CpuidEvent{e.leaf, e.subleaf, e.insn_length};
    case ExitKind::kIo:
      return amd64::IoEvent{e.port, e.io_size,
                            e.io_in ? amd64::IoDirection::kIn : amd64::IoDirection::kOut,
                            e.io_string, e.insn_length};
    case ExitKind::kVmcall:
      return amd64::HypercallEvent{e.insn_length};
    case ExitKind::kDescriptorTable: {
      amd64::DescriptorTableKind table = amd64::DescriptorTableKind::kGdtr;
      bool load = false;
      switch (e.descriptor_op) {
        case DescriptorOp::kLgdt: load = true; [[fallthrough]];
        case DescriptorOp::kSgdt: table = amd64::DescriptorTableKind::kGdtr; break;
        case DescriptorOp::kLidt: load = true; [[fallthrough]];
        case DescriptorOp::kSidt: table = amd64::DescriptorTableKind::kIdtr; break;
        case DescriptorOp::kLldt: load = true; [[fallthrough]];
        case DescriptorOp::kSldt: table = amd64::DescriptorTableKind::kLdtr; break;
        case DescriptorOp::kLtr: load = true; [[fallthrough]];
        case DescriptorOp::kStr: table = amd64::DescriptorTableKind::kTr; break;
      }
      return amd64::DescriptorAccessEvent{table, load, e.insn_length};
    }
  }
  return amd64::SingleStepEvent{};
}

Response SimDriver::ResponseFor(const VmiEventResponse<Amd64>& r) {
  return Response{r.action, r.view, r.registers};
}

absl::Status SimDriver::WaitForEventImpl(absl::Duration timeout, Handler handler) {
  Machine& m = *state_->machine;
  const bool by_instructions = state_->options.wait_instructions != 0;
  // Clock reads cost tens of ns each on an event path of ~2 us: the deadline
  // is only computed once a first slice ran without an event.
  std::optional<absl::Time> deadline;
  uint64_t budget_left = state_->options.wait_instructions;
  bool first = true;
  while (true) {
    if (!m.pending_exit()) {
      if (m.paused()) {
        return absl::DeadlineExceededError("wait_for_event: the VM is paused");
      }
      uint64_t slice = state_->options.run_slice;
      if (by_instructions) {
        if (budget_left == 0) break;
        slice = std::min(slice, budget_left);
      } else if (!first) {
        if (!deadline) deadline = absl::Now() + timeout;  // approximate: from the 2nd slice
        if (absl::Now() >= *deadline) break;
      }
      first = false;
      const uint64_t before = m.instructions_scheduled();
      VMI_ASSIGN_OR_RETURN(RunResult run, m.Run(slice));
      const uint64_t ran = m.instructions_scheduled() - before;
      budget_left -= std::min(budget_left, std::max<uint64_t>(ran, 1));
      if (run.status == RunStatus::kAllHalted) {
        return absl::DeadlineExceededError("wait_for_event: every vCPU has halted");
      }
      if (run.status != RunStatus::kExit) continue;
    }
    const Exit exit = *m.pending_exit();
    const absl::Time start = absl::Now();
    VmiEvent<Amd64> event;
    event.vcpu = exit.vcpu;
    event.view = exit.view;
    VMI_ASSIGN_OR_RETURN(event.registers, m.GetRegisters(exit.vcpu));
    std::optional<Gfn> instruction_gfn;
    if (exit.kind == ExitKind::kBreakpoint || exit.kind == ExitKind::kSingleStep) {
      instruction_gfn = InstructionGfn(m, event.registers);
    }
    event.reason = ReasonFromExit(exit, event.registers, instruction_gfn);
    event.flags.vcpu_paused = true;
    const absl::Time handler_start = absl::Now();
    const VmiEventResponse<Amd64> response = handler(event);
    const absl::Time handler_end = absl::Now();
    absl::Status s = m.Respond(ResponseFor(response));
    state_->overhead += (handler_start - start) + (absl::Now() - handler_end);
    if (!s.ok()) {
      // Never leave the vCPU stuck on an event the handler answered badly.
      m.Respond(Response{}).IgnoreError();
      return AnnotateStatus(s, absl::StrFormat("wait_for_event: response to %s", exit.ToString()));
    }
    return absl::OkStatus();
  }
  return absl::DeadlineExceededError(absl::StrFormat(
      "wait_for_event: no event within %s",
      by_instructions ? absl::StrFormat("%u guest instructions", state_->options.wait_instructions)
                      : absl::FormatDuration(timeout)));
}

absl::StatusOr<View> SimDriver::CreateView(MemoryAccess default_access) {
  return state_->machine->CreateView(default_access);
}

absl::Status SimDriver::DestroyView(View view) { return state_->machine->DestroyView(view); }

absl::Status SimDriver::SwitchToView(View view) { return state_->machine->SwitchView(view); }

absl::Status SimDriver::ChangeViewGfn(View view, Gfn old_gfn, Gfn new_gfn) {
  VMI_RETURN_IF_ERROR(CheckPopulated("change_view_gfn", old_gfn));
  VMI_RETURN_IF_ERROR(CheckPopulated("change_view_gfn", new_gfn));
  return state_->machine->ChangeGfn(view, old_gfn, new_gfn);
}

absl::Status SimDriver::ResetViewGfn(View view, Gfn gfn) {
  VMI_RETURN_IF_ERROR(CheckPopulated("reset_view_gfn", gfn));
  return state_->machine->ResetGfn(view, gfn);
}

absl::Status SimDriver::Pause() {
  if (state_->pause_depth++ == 0) state_->machine->Pause();
  return absl::OkStatus();
}

absl::Status SimDriver::Resume() {
  if (state_->pause_depth == 0) {
    return absl::FailedPreconditionError("resume: the VM is not paused");
  }
  if (--state_->pause_depth == 0) state_->machine->Resume();
  return absl::OkStatus();
}

absl::StatusOr<Gfn> SimDriver::AllocateGfn() {
  for (uint64_t g = state_->visible_max.value() + 1; g <= state_->machine->max_gfn().value(); ++g) {
    if (!state_->allocated.contains(g)) {
      VMI_RETURN_IF_ERROR(AllocateGfnAt(Gfn(g)));
      return Gfn(g);
    }
  }
  return absl::ResourceExhaustedError(absl::StrFormat(
      "allocate_gfn: all %u reserve frames are populated", state_->options.reserve_frames));
}

absl::Status SimDriver::AllocateGfnAt(Gfn gfn) {
  if (gfn > state_->machine->max_gfn()) {
    return absl::OutOfRangeError(absl::StrFormat(
        "allocate_gfn_at(gfn=%s): beyond the machine's RAM (last frame %s)", gfn,
        state_->machine->max_gfn()));
  }
  const bool reserve = gfn > state_->visible_max;
  if ((reserve && state_->allocated.contains(gfn.value())) ||
      (!reserve && !state_->freed.contains(gfn.value()))) {
    return absl::AlreadyExistsError(
        absl::StrFormat("allocate_gfn_at(gfn=%s): frame already populated", gfn));
  }
  std::vector<uint8_t> zero(kPageSize, 0);
  VMI_RETURN_IF_ERROR(state_->machine->WritePhys(Pa(gfn.value() * kPageSize), zero));
  if (reserve) {
    state_->allocated.insert(gfn.value());
  } else {
    state_->freed.erase(gfn.value());
  }
  return absl::OkStatus();
}

absl::Status SimDriver::FreeGfn(Gfn gfn) {
  VMI_RETURN_IF_ERROR(CheckPopulated("free_gfn", gfn));
  if (gfn > state_->visible_max) {
    state_->allocated.erase(gfn.value());
  } else {
    state_->freed.insert(gfn.value());
  }
  return absl::OkStatus();
}

absl::Status SimDriver::InjectInterrupt(VcpuId vcpu, const amd64::Interrupt& interrupt) {
  Interrupt i;
  i.vector = interrupt.vector;
  if (interrupt.has_error_code) i.error_code = interrupt.error_code;
  if (interrupt.vector == 14) i.cr2 = interrupt.extra;
  i.insn_length = interrupt.instruction_length;
  return state_->machine->InjectInterrupt(vcpu, i);
}

absl::Status SimDriver::ResetState() {
  Machine& m = *state_->machine;
  absl::Status first;
  auto keep = [&first](absl::Status s) {
    if (first.ok() && !s.ok()) first = s;
  };
  keep(m.SetBreakpointMonitor(false));
  for (uint8_t v : state_->vectors) keep(m.SetInterruptMonitor(v, false));
  for (uint32_t msr : state_->msrs) keep(m.SetMsrWriteMonitor(msr, false));
  state_->vectors.clear();
  for (int cr : {0, 3, 4}) keep(m.SetControlRegisterMonitor(cr, false));
  keep(m.SetMsrWriteMonitor(false));
  keep(m.SetCpuidMonitor(false));
  keep(m.SetIoMonitor(false));
  keep(m.SetVmcallMonitor(false, false));
  keep(m.SetDescriptorTableMonitor(false));
  for (uint16_t v = 0; v < m.vcpu_count(); ++v) keep(m.SetSingleStep(VcpuId(v), false));
  state_->msrs.clear();
  state_->singlestep_monitor = false;
  keep(m.SwitchView(kDefaultView));
  m.CancelFastSingleSteps();  // they would step in views about to go
  for (View v : m.views().Views()) {
    if (v != kDefaultView) keep(m.DestroyView(v));
  }
  for (Gfn g : m.views().Overrides(kDefaultView)) {
    keep(m.SetMemoryAccess(kDefaultView, g, MemoryAccess::RWX()));
  }
  return first.ok() ? absl::OkStatus() : AnnotateStatus(first, "reset_state");
}

}  // namespace vmi::sim
