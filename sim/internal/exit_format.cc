// Exit names and one-line descriptions (Exit::ToString), for traces and
// error messages.

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "sim/machine.h"

namespace vmi::sim {

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
                            access.ToString());
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


}  // namespace vmi::sim
