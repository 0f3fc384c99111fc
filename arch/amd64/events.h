// Why an x86-64 vCPU stopped (EventReason) and what a driver can be asked to
// watch for (EventMonitor), plus the well-known MSR indices those events name.
// Memory-access events come from second-level (EPT/NPT) permissions set
// through the protection capabilities, so they have no monitor.
//
// Thread-safety: plain values and stateless functions; thread-safe.

#ifndef VMI_ARCH_AMD64_EVENTS_H_
#define VMI_ARCH_AMD64_EVENTS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>

#include "arch/amd64/interrupt.h"
#include "core/types.h"

namespace vmi::amd64 {

// Well-known MSR indices.
namespace msr {
inline constexpr uint32_t kTsc = 0x10;
inline constexpr uint32_t kApicBase = 0x1b;
inline constexpr uint32_t kSysenterCs = 0x174;
inline constexpr uint32_t kSysenterEsp = 0x175;
inline constexpr uint32_t kSysenterEip = 0x176;
inline constexpr uint32_t kPat = 0x277;
inline constexpr uint32_t kEfer = 0xc0000080;
inline constexpr uint32_t kStar = 0xc0000081;
inline constexpr uint32_t kLstar = 0xc0000082;
inline constexpr uint32_t kCstar = 0xc0000083;
inline constexpr uint32_t kSfmask = 0xc0000084;
inline constexpr uint32_t kFsBase = 0xc0000100;
inline constexpr uint32_t kGsBase = 0xc0000101;
inline constexpr uint32_t kKernelGsBase = 0xc0000102;
inline constexpr uint32_t kTscAux = 0xc0000103;
}  // namespace msr

// "IA32_LSTAR" for a well-known MSR, nullptr for any other index.
const char* MsrName(uint32_t index);
// "IA32_LSTAR(0xc0000082)" for a well-known MSR, "MSR(0x1234)" otherwise.
std::string MsrToString(uint32_t index);

enum class ControlRegister : uint8_t { kCr0, kCr3, kCr4, kXcr0 };
// "CR0", "CR3", "CR4", "XCR0".
const char* ControlRegisterName(ControlRegister reg);

enum class IoDirection : uint8_t { kIn, kOut };

enum class DescriptorTableKind : uint8_t { kGdtr, kIdtr, kLdtr, kTr };
// "GDTR", "IDTR", "LDTR", "TR".
const char* DescriptorTableKindName(DescriptorTableKind kind);

// A guest access violated the second-level permissions of a frame.
struct MemoryAccessEvent {
  Pa gpa{};
  Va gla{};  // the linear address, when gla_valid
  bool gla_valid = false;
  MemoryAccess access{};  // the kind of access that faulted
  // The fault was on the final translated address (true) or on a guest
  // page-table access during the walk (fault_in_gpt).
  bool fault_with_gla = false;
  bool fault_in_gpt = false;
  friend bool operator==(const MemoryAccessEvent&, const MemoryAccessEvent&) = default;
  std::string ToString() const;
};

// A write to a control register, reported before it takes effect (a Deny
// response suppresses it).
struct ControlRegisterWriteEvent {
  ControlRegister reg = ControlRegister::kCr0;
  uint64_t old_value = 0;
  uint64_t new_value = 0;
  friend bool operator==(const ControlRegisterWriteEvent&,
                         const ControlRegisterWriteEvent&) = default;
  std::string ToString() const;
};

// A WRMSR, reported before it takes effect.
struct MsrWriteEvent {
  uint32_t index = 0;
  uint64_t old_value = 0;
  uint64_t new_value = 0;
  friend bool operator==(const MsrWriteEvent&, const MsrWriteEvent&) = default;
  std::string ToString() const;
};

// An intercepted interrupt or exception (not yet delivered; a
// ReinjectInterrupt response delivers it).
struct InterruptEvent {
  Interrupt interrupt{};
  // #BP from a software breakpoint (INT3) only: the guest frame of the
  // breakpoint instruction, i.e. of RIP as the vCPU's own page tables
  // translate an instruction fetch at the event (Xen's
  // software_breakpoint.gfn). When a view remaps that frame (a shadow page),
  // this is still the guest's frame, not the one the view maps it to. A tool
  // recognises its own breakpoints by it without walking the page tables,
  // which the guest may have changed meanwhile. Empty for every other
  // interrupt, when the fetch does not translate, or when the driver cannot
  // know (see each driver).
  std::optional<Gfn> instruction_gfn = std::nullopt;
  friend bool operator==(const InterruptEvent&, const InterruptEvent&) = default;
  std::string ToString() const;
};

// The vCPU executed one instruction with single-stepping on.
struct SingleStepEvent {
  // The guest frame of the next instruction (RIP at the event) as the
  // vCPU's page tables translate an instruction fetch there (Xen's
  // singlestep.gfn); the same rules as InterruptEvent::instruction_gfn.
  std::optional<Gfn> instruction_gfn = std::nullopt;
  friend bool operator==(const SingleStepEvent&, const SingleStepEvent&) = default;
  std::string ToString() const;
};

// VMCALL.
struct HypercallEvent {
  uint8_t instruction_length = 0;
  friend bool operator==(const HypercallEvent&, const HypercallEvent&) = default;
  std::string ToString() const;
};

struct CpuidEvent {
  uint32_t leaf = 0;
  uint32_t subleaf = 0;
  uint8_t instruction_length = 0;
  friend bool operator==(const CpuidEvent&, const CpuidEvent&) = default;
  std::string ToString() const;
};

// IN/OUT (and INS/OUTS when `string`).
struct IoEvent {
  uint16_t port = 0;
  uint8_t size = 0;  // bytes per transfer: 1, 2 or 4
  IoDirection direction = IoDirection::kIn;
  bool string = false;
  uint8_t instruction_length = 0;
  friend bool operator==(const IoEvent&, const IoEvent&) = default;
  std::string ToString() const;
};

// LGDT/LIDT/LLDT/LTR (is_write) or SGDT/SIDT/SLDT/STR.
struct DescriptorAccessEvent {
  DescriptorTableKind table = DescriptorTableKind::kGdtr;
  bool is_write = false;
  uint8_t instruction_length = 0;
  friend bool operator==(const DescriptorAccessEvent&, const DescriptorAccessEvent&) = default;
  std::string ToString() const;
};

// A debugger breakpoint (MonitorBreakpoint) was hit: the vCPU stopped
// before executing the instruction at the linear address `address`. Unlike
// an INT3 the guest sees nothing: no byte of its memory changed and no #BP
// is raised, so there is nothing to reinject (targets with a debug stub:
// QEMU).
struct DebugBreakpointEvent {
  Va address{};
  friend bool operator==(const DebugBreakpointEvent&, const DebugBreakpointEvent&) = default;
  std::string ToString() const;
};

// A debugger watchpoint (MonitorWatchpoint) fired: the vCPU made an access
// of kind `access` (read or write) to the watched linear address `address`;
// the access has completed.
struct DebugWatchpointEvent {
  Va address{};
  MemoryAccess access{};
  friend bool operator==(const DebugWatchpointEvent&, const DebugWatchpointEvent&) = default;
  std::string ToString() const;
};

using EventReason =
    std::variant<MemoryAccessEvent, ControlRegisterWriteEvent, MsrWriteEvent, InterruptEvent,
                 SingleStepEvent, HypercallEvent, CpuidEvent, IoEvent, DescriptorAccessEvent,
                 DebugBreakpointEvent, DebugWatchpointEvent>;

// The alternative's ToString().
std::string EventReasonToString(const EventReason& reason);

namespace amd64_internal {
// Ends each monitor's hash expansion, so that monitors of different kinds
// never hash alike (an empty monitor would otherwise add nothing).
enum class MonitorTag : uint8_t {
  kControlRegister = 1,
  kMsr,
  kInterrupt,
  kSingleStep,
  kHypercall,
  kCpuid,
  kIo,
  kDescriptorAccess,
  kBreakpoint,
  kWatchpoint,
};
}  // namespace amd64_internal

// Writes to a control register.
struct MonitorControlRegister {
  ControlRegister reg = ControlRegister::kCr0;
  friend bool operator==(const MonitorControlRegister&, const MonitorControlRegister&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const MonitorControlRegister& m) {
    return H::combine(std::move(h), m.reg, amd64_internal::MonitorTag::kControlRegister);
  }
};

// Writes to an MSR.
struct MonitorMsr {
  uint32_t index = 0;
  friend bool operator==(const MonitorMsr&, const MonitorMsr&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const MonitorMsr& m) {
    return H::combine(std::move(h), m.index, amd64_internal::MonitorTag::kMsr);
  }
};

// Interrupts and exceptions on one vector.
struct MonitorInterrupt {
  uint8_t vector = 0;
  friend bool operator==(const MonitorInterrupt&, const MonitorInterrupt&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const MonitorInterrupt& m) {
    return H::combine(std::move(h), m.vector, amd64_internal::MonitorTag::kInterrupt);
  }
};

struct MonitorSingleStep {
  friend bool operator==(const MonitorSingleStep&, const MonitorSingleStep&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const MonitorSingleStep&) {
    return H::combine(std::move(h), amd64_internal::MonitorTag::kSingleStep);
  }
};

// VMCALL; from user mode (CPL 3) too when allow_user.
struct MonitorHypercall {
  bool allow_user = false;
  friend bool operator==(const MonitorHypercall&, const MonitorHypercall&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const MonitorHypercall& m) {
    return H::combine(std::move(h), m.allow_user, amd64_internal::MonitorTag::kHypercall);
  }
};

struct MonitorCpuid {
  friend bool operator==(const MonitorCpuid&, const MonitorCpuid&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const MonitorCpuid&) {
    return H::combine(std::move(h), amd64_internal::MonitorTag::kCpuid);
  }
};

struct MonitorIo {
  friend bool operator==(const MonitorIo&, const MonitorIo&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const MonitorIo&) {
    return H::combine(std::move(h), amd64_internal::MonitorTag::kIo);
  }
};

struct MonitorDescriptorAccess {
  friend bool operator==(const MonitorDescriptorAccess&, const MonitorDescriptorAccess&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const MonitorDescriptorAccess&) {
    return H::combine(std::move(h), amd64_internal::MonitorTag::kDescriptorAccess);
  }
};

// A debugger breakpoint at a linear address, in every address space: the
// vCPU stops before executing the instruction there (DebugBreakpointEvent).
// Invisible to the guest. Only targets with a debug stub (QEMU's GDB stub)
// have them; hypervisor drivers hide breakpoints with EPT instead.
struct MonitorBreakpoint {
  Va address{};
  friend bool operator==(const MonitorBreakpoint&, const MonitorBreakpoint&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const MonitorBreakpoint& m) {
    return H::combine(std::move(h), m.address, amd64_internal::MonitorTag::kBreakpoint);
  }
};

// A debugger watchpoint on `length` bytes (1, 2, 4 or 8) at a linear
// address: accesses of the kinds in `access` (read and/or write) raise a
// DebugWatchpointEvent. Targets with a debug stub only.
struct MonitorWatchpoint {
  Va address{};
  uint8_t length = 8;
  MemoryAccess access = MemoryAccess::W();
  friend bool operator==(const MonitorWatchpoint&, const MonitorWatchpoint&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const MonitorWatchpoint& m) {
    return H::combine(std::move(h), m.address, m.length, m.access,
                      amd64_internal::MonitorTag::kWatchpoint);
  }
};

using EventMonitor =
    std::variant<MonitorControlRegister, MonitorMsr, MonitorInterrupt, MonitorSingleStep,
                 MonitorHypercall, MonitorCpuid, MonitorIo, MonitorDescriptorAccess,
                 MonitorBreakpoint, MonitorWatchpoint>;

// absl::Hash<EventMonitor>: Debian's Abseil does not alias absl::variant to
// std::variant, so it cannot hash std::variant itself. Found by ADL through
// the alternatives' namespace. Hashes the alternative index, then the value.
template <typename H>
H AbslHashValue(H h, const EventMonitor& monitor) {
  h = H::combine(std::move(h), monitor.index());
  return std::visit([&h](const auto& m) { return H::combine(std::move(h), m); }, monitor);
}

// "cr_write(CR3)", "msr_write(IA32_LSTAR(0xc0000082))", "interrupt(3 #BP)",
// "singlestep", "hypercall(allow_user=false)", "cpuid", "io",
// "descriptor_access", "breakpoint(0xffffffff81000000)",
// "watchpoint(0x1000 len=8 -w-)".
std::string EventMonitorToString(const EventMonitor& monitor);

}  // namespace vmi::amd64

#endif  // VMI_ARCH_AMD64_EVENTS_H_
