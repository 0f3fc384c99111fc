// Register marshalling between amd64::Registers and the machine's CPU state:
// the head of QEMU's CPUX86State (GPRs, RIP, control registers, segment
// caches, descriptor tables), whose segment flags are a descriptor's high
// dword, and the MSRs and debug registers Unicorn's API reaches. The pure
// conversions are here; Machine::GetRegisters/SetRegisters (cpu_registers.cc)
// move the values in and out of the engine.
//
// Thread-safety: stateless functions; thread-safe.

#ifndef VMI_SIM_INTERNAL_CPU_REGISTERS_H_
#define VMI_SIM_INTERNAL_CPU_REGISTERS_H_

#include <cstdint>

#include "arch/amd64/registers.h"
#include "sim/internal/qemu_state.h"

namespace vmi::sim::sim_internal {

// A segment register from QEMU's segment cache (its flags are the
// descriptor's high dword; the access rights take the AR-byte layout).
amd64::Segment SegmentFromQemu(const QemuSegment& s);
// The descriptor flags QEMU keeps for `s`'s access rights.
uint32_t QemuFlagsOf(const amd64::Segment& s);

// Everything the head holds verbatim: GPRs, RIP, CR0/2/3/4, the six segment
// registers, TR, LDTR, GDTR, IDTR and the FS/GS bases. RFLAGS (kept lazily
// by QEMU), DR0-7 and the MSRs are not in the head.
void RegistersFromHead(const QemuStateHead& h, amd64::Registers* r);

// The MSRs GetRegisters reads and SetRegisters writes, in one order.
inline constexpr int kMarshalledMsrCount = 10;
extern const uint32_t kMarshalledMsrs[kMarshalledMsrCount];
// The fields of `r` holding those MSRs, in the same order.
uint64_t* MarshalledMsrField(amd64::Registers& r, int i);

}  // namespace vmi::sim::sim_internal

#endif  // VMI_SIM_INTERNAL_CPU_REGISTERS_H_
