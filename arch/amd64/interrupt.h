// x86-64 interrupts and exceptions as VMI sees them: intercepted by an event
// monitor, or injected into the guest (a #PF to page in memory, a #BP
// reinjected after a breakpoint that was not ours). The type encoding is
// VMX's (VM-entry interruption information), which Xen's vm_event and
// xc_hvm_inject_trap use as well.
//
// Thread-safety: plain values and stateless functions; thread-safe.

#ifndef VMI_ARCH_AMD64_INTERRUPT_H_
#define VMI_ARCH_AMD64_INTERRUPT_H_

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <type_traits>

#include "absl/strings/str_format.h"
#include "core/types.h"

namespace vmi::amd64 {

// How an event is delivered (VMX interruption-information bits 10:8).
enum class InterruptType : uint8_t {
  kExternal = 0,
  kNmi = 2,
  kHardwareException = 3,
  kSoftwareInterrupt = 4,            // INT n
  kPrivilegedSoftwareException = 5,  // INT1 (ICEBP)
  kSoftwareException = 6,            // INT3, INTO
};

// "external", "nmi", "hardware-exception", ...; "unknown" otherwise.
const char* InterruptTypeName(InterruptType type);

// The architectural exception vectors (Intel SDM vol. 3, table 6-1).
namespace exception {
inline constexpr uint8_t kDivideError = 0;         // #DE
inline constexpr uint8_t kDebug = 1;               // #DB
inline constexpr uint8_t kNmi = 2;                 // NMI
inline constexpr uint8_t kBreakpoint = 3;          // #BP
inline constexpr uint8_t kOverflow = 4;            // #OF
inline constexpr uint8_t kBoundRange = 5;          // #BR
inline constexpr uint8_t kInvalidOpcode = 6;       // #UD
inline constexpr uint8_t kDeviceNotAvailable = 7;  // #NM
inline constexpr uint8_t kDoubleFault = 8;         // #DF
inline constexpr uint8_t kCoprocessorSegmentOverrun = 9;
inline constexpr uint8_t kInvalidTss = 10;         // #TS
inline constexpr uint8_t kSegmentNotPresent = 11;  // #NP
inline constexpr uint8_t kStackSegmentFault = 12;  // #SS
inline constexpr uint8_t kGeneralProtection = 13;  // #GP
inline constexpr uint8_t kPageFault = 14;          // #PF
// 15 is reserved.
inline constexpr uint8_t kX87FloatingPoint = 16;   // #MF
inline constexpr uint8_t kAlignmentCheck = 17;     // #AC
inline constexpr uint8_t kMachineCheck = 18;       // #MC
inline constexpr uint8_t kSimdFloatingPoint = 19;  // #XM
inline constexpr uint8_t kVirtualization = 20;     // #VE
inline constexpr uint8_t kControlProtection = 21;  // #CP
}  // namespace exception

// Bits of the #PF error code.
namespace page_fault_error {
inline constexpr uint32_t kPresent = 1u << 0;      // P: protection violation, not a missing page
inline constexpr uint32_t kWrite = 1u << 1;        // W/R: the access was a write
inline constexpr uint32_t kUser = 1u << 2;         // U/S: the access was from CPL 3
inline constexpr uint32_t kReservedBit = 1u << 3;  // RSVD: a reserved bit was set
inline constexpr uint32_t kInstructionFetch = 1u << 4;  // I/D
inline constexpr uint32_t kProtectionKey = 1u << 5;     // PK
inline constexpr uint32_t kShadowStack = 1u << 6;       // SS
inline constexpr uint32_t kSgx = 1u << 15;              // SGX
}  // namespace page_fault_error

// True for the exceptions that push an error code: #DF, #TS, #NP, #SS, #GP,
// #PF, #AC and #CP.
constexpr bool ExceptionHasErrorCode(uint8_t vector) {
  return vector == exception::kDoubleFault ||
         (vector >= exception::kInvalidTss && vector <= exception::kPageFault) ||
         vector == exception::kAlignmentCheck || vector == exception::kControlProtection;
}

// "#PF", "#GP", "NMI", ...; "reserved" for 15 and 22-31, "interrupt" for
// 32-255.
const char* ExceptionName(uint8_t vector);

// An interrupt or exception: what an interrupt event reports and what
// injection delivers.
struct Interrupt {
  uint8_t vector = 0;
  InterruptType type = InterruptType::kExternal;
  bool has_error_code = false;
  uint32_t error_code = 0;
  // Length of the instruction that raised it (INT3, INT n): the guest's RIP
  // advances by this much on delivery. 0 for faults and external interrupts.
  uint8_t instruction_length = 0;
  // Vector-specific: the faulting address (CR2) for #PF, else 0.
  uint64_t extra = 0;

  // A #PF at `va` (CR2 = va), with the page_fault_error bits in `error_code`.
  static constexpr Interrupt PageFault(Va va, uint32_t error_code) {
    return {
        exception::kPageFault, InterruptType::kHardwareException, true, error_code, 0, va.value()};
  }
  // An INT3 (#BP) as the instruction raises it: a software exception whose
  // delivery moves RIP past the `instruction_length`-byte instruction.
  static constexpr Interrupt Breakpoint(uint8_t instruction_length) {
    return {
        exception::kBreakpoint, InterruptType::kSoftwareException, false, 0, instruction_length, 0};
  }
  static constexpr Interrupt GeneralProtection(uint32_t error_code) {
    return {
        exception::kGeneralProtection, InterruptType::kHardwareException, true, error_code, 0, 0};
  }
  // A hardware exception. Vectors that architecturally push an error code
  // always get one (0 when `error_code` is not given), since the CPU refuses
  // to deliver them without; other vectors get one only when it is given.
  static constexpr Interrupt Exception(uint8_t vector,
                                       std::optional<uint32_t> error_code = std::nullopt) {
    bool has = error_code.has_value() || ExceptionHasErrorCode(vector);
    return {vector, InterruptType::kHardwareException, has, error_code.value_or(0), 0, 0};
  }
  static constexpr Interrupt External(uint8_t vector) {
    return {vector, InterruptType::kExternal, false, 0, 0, 0};
  }
  static constexpr Interrupt Nmi() {
    return {exception::kNmi, InterruptType::kNmi, false, 0, 0, 0};
  }

  friend constexpr bool operator==(const Interrupt&, const Interrupt&) = default;

  // "#PF vector=14 hardware-exception error_code=0x2 cr2=0x7ff000".
  std::string ToString() const;
  friend absl::FormatConvertResult<absl::FormatConversionCharSet::kString> AbslFormatConvert(
      const Interrupt& i, const absl::FormatConversionSpec&, absl::FormatSink* sink) {
    sink->Append(i.ToString());
    return {true};
  }
  friend std::ostream& operator<<(std::ostream& os, const Interrupt& i) {
    return os << i.ToString();
  }
  template <typename H>
  friend H AbslHashValue(H h, const Interrupt& i) {
    return H::combine(std::move(h), i.vector, i.type, i.has_error_code, i.error_code,
                      i.instruction_length, i.extra);
  }
};

static_assert(std::is_trivially_copyable_v<Interrupt>);

}  // namespace vmi::amd64

#endif  // VMI_ARCH_AMD64_INTERRUPT_H_
