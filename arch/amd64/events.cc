#include "arch/amd64/events.h"

#include <cstdint>
#include <string>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vmi::amd64 {

const char* MsrName(uint32_t index) {
  switch (index) {
    case msr::kTsc:
      return "IA32_TIME_STAMP_COUNTER";
    case msr::kApicBase:
      return "IA32_APIC_BASE";
    case msr::kSysenterCs:
      return "IA32_SYSENTER_CS";
    case msr::kSysenterEsp:
      return "IA32_SYSENTER_ESP";
    case msr::kSysenterEip:
      return "IA32_SYSENTER_EIP";
    case msr::kPat:
      return "IA32_PAT";
    case msr::kEfer:
      return "IA32_EFER";
    case msr::kStar:
      return "IA32_STAR";
    case msr::kLstar:
      return "IA32_LSTAR";
    case msr::kCstar:
      return "IA32_CSTAR";
    case msr::kSfmask:
      return "IA32_FMASK";
    case msr::kFsBase:
      return "IA32_FS_BASE";
    case msr::kGsBase:
      return "IA32_GS_BASE";
    case msr::kKernelGsBase:
      return "IA32_KERNEL_GS_BASE";
    case msr::kTscAux:
      return "IA32_TSC_AUX";
  }
  return nullptr;
}

std::string MsrToString(uint32_t index) {
  const char* name = MsrName(index);
  return absl::StrFormat("%s(0x%x)", name != nullptr ? name : "MSR", index);
}

const char* ControlRegisterName(ControlRegister reg) {
  switch (reg) {
    case ControlRegister::kCr0:
      return "CR0";
    case ControlRegister::kCr3:
      return "CR3";
    case ControlRegister::kCr4:
      return "CR4";
    case ControlRegister::kXcr0:
      return "XCR0";
  }
  return "CR?";
}

const char* DescriptorTableKindName(DescriptorTableKind kind) {
  switch (kind) {
    case DescriptorTableKind::kGdtr:
      return "GDTR";
    case DescriptorTableKind::kIdtr:
      return "IDTR";
    case DescriptorTableKind::kLdtr:
      return "LDTR";
    case DescriptorTableKind::kTr:
      return "TR";
  }
  return "?";
}

std::string MemoryAccessEvent::ToString() const {
  std::string out = absl::StrFormat("memory_access(gpa=%s", gpa);
  if (gla_valid) absl::StrAppend(&out, " gla=", gla.ToString());
  absl::StrAppend(&out, " access=", access.ToString());
  if (fault_with_gla) out += " fault_with_gla";
  if (fault_in_gpt) out += " fault_in_gpt";
  out += ')';
  return out;
}

std::string ControlRegisterWriteEvent::ToString() const {
  return absl::StrFormat("cr_write(%s 0x%x -> 0x%x)", ControlRegisterName(reg), old_value,
                         new_value);
}

std::string MsrWriteEvent::ToString() const {
  return absl::StrFormat("msr_write(%s 0x%x -> 0x%x)", MsrToString(index), old_value, new_value);
}

std::string InterruptEvent::ToString() const {
  if (!instruction_gfn) return absl::StrCat("interrupt(", interrupt.ToString(), ")");
  return absl::StrCat("interrupt(", interrupt.ToString(),
                      " instruction_gfn=", instruction_gfn->ToString(), ")");
}

std::string SingleStepEvent::ToString() const {
  if (!instruction_gfn) return "singlestep";
  return absl::StrCat("singlestep(instruction_gfn=", instruction_gfn->ToString(), ")");
}

std::string HypercallEvent::ToString() const {
  return absl::StrCat("hypercall(instruction_length=", instruction_length, ")");
}

std::string CpuidEvent::ToString() const {
  return absl::StrFormat("cpuid(leaf=0x%x subleaf=0x%x instruction_length=%u)", leaf, subleaf,
                         instruction_length);
}

std::string IoEvent::ToString() const {
  return absl::StrFormat("io(%s%s port=0x%x size=%u instruction_length=%u)",
                         direction == IoDirection::kIn ? "in" : "out", string ? " string" : "",
                         port, size, instruction_length);
}

std::string DescriptorAccessEvent::ToString() const {
  return absl::StrFormat("descriptor_access(%s %s instruction_length=%u)",
                         DescriptorTableKindName(table), is_write ? "load" : "store",
                         instruction_length);
}

std::string DebugBreakpointEvent::ToString() const {
  return absl::StrCat("breakpoint(", address.ToString(), ")");
}

std::string DebugWatchpointEvent::ToString() const {
  return absl::StrCat("watchpoint(", address.ToString(), " ", access.ToString(), ")");
}

std::string EventReasonToString(const EventReason& reason) {
  return std::visit([](const auto& r) { return r.ToString(); }, reason);
}

namespace {

struct MonitorPrinter {
  std::string operator()(const MonitorControlRegister& m) const {
    return absl::StrCat("cr_write(", ControlRegisterName(m.reg), ")");
  }
  std::string operator()(const MonitorMsr& m) const {
    return absl::StrCat("msr_write(", MsrToString(m.index), ")");
  }
  std::string operator()(const MonitorInterrupt& m) const {
    return absl::StrCat("interrupt(", m.vector, " ", ExceptionName(m.vector), ")");
  }
  std::string operator()(const MonitorSingleStep&) const { return "singlestep"; }
  std::string operator()(const MonitorHypercall& m) const {
    return absl::StrCat("hypercall(allow_user=", m.allow_user ? "true" : "false", ")");
  }
  std::string operator()(const MonitorCpuid&) const { return "cpuid"; }
  std::string operator()(const MonitorIo&) const { return "io"; }
  std::string operator()(const MonitorDescriptorAccess&) const { return "descriptor_access"; }
  std::string operator()(const MonitorBreakpoint& m) const {
    return absl::StrCat("breakpoint(", m.address.ToString(), ")");
  }
  std::string operator()(const MonitorWatchpoint& m) const {
    return absl::StrFormat("watchpoint(%s len=%u %s)", m.address, m.length, m.access);
  }
};

}  // namespace

std::string EventMonitorToString(const EventMonitor& monitor) {
  return std::visit(MonitorPrinter{}, monitor);
}

}  // namespace vmi::amd64
