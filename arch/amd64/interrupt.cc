#include "arch/amd64/interrupt.h"

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vmi::amd64 {

const char* InterruptTypeName(InterruptType type) {
  switch (type) {
    case InterruptType::kExternal:
      return "external";
    case InterruptType::kNmi:
      return "nmi";
    case InterruptType::kHardwareException:
      return "hardware-exception";
    case InterruptType::kSoftwareInterrupt:
      return "software-interrupt";
    case InterruptType::kPrivilegedSoftwareException:
      return "privileged-software-exception";
    case InterruptType::kSoftwareException:
      return "software-exception";
  }
  return "unknown";
}

const char* ExceptionName(uint8_t vector) {
  static constexpr const char* kNames[] = {
      "#DE", "#DB", "NMI", "#BP", "#OF",      "#BR", "#UD", "#NM", "#DF", "CSO", "#TS",
      "#NP", "#SS", "#GP", "#PF", "reserved", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
  };
  if (vector < sizeof(kNames) / sizeof(kNames[0])) return kNames[vector];
  if (vector < 32) return "reserved";
  return "interrupt";
}

std::string Interrupt::ToString() const {
  std::string out =
      absl::StrFormat("%s vector=%u %s", ExceptionName(vector), vector, InterruptTypeName(type));
  // Vectors below 32 name exceptions only when delivered as such.
  if (type == InterruptType::kExternal || type == InterruptType::kSoftwareInterrupt) {
    out = absl::StrFormat("vector=%u %s", vector, InterruptTypeName(type));
  }
  if (has_error_code) absl::StrAppend(&out, " error_code=0x", absl::Hex(error_code));
  if (instruction_length != 0) absl::StrAppend(&out, " instruction_length=", instruction_length);
  if (vector == exception::kPageFault && type == InterruptType::kHardwareException) {
    absl::StrAppend(&out, " cr2=0x", absl::Hex(extra));
  } else if (extra != 0) {
    absl::StrAppend(&out, " extra=0x", absl::Hex(extra));
  }
  return out;
}

}  // namespace vmi::amd64
