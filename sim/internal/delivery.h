// x86-64 interrupt and exception delivery and SYSCALL, which the machine
// carries out itself (Unicorn never delivers them): the IDT gate, the
// handler's code segment from the GDT, the stack (the current one, TSS.RSPn
// on a privilege change, an IST stack), the frame with the optional error
// code, and RFLAGS. Planned as pure functions over what the vCPU holds and
// what it can read at linear addresses, then applied by Machine::Impl
// (delivery.cc).
//
// Thread-safety: stateless functions; thread-safe.

#ifndef VMI_SIM_INTERNAL_DELIVERY_H_
#define VMI_SIM_INTERNAL_DELIVERY_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "arch/amd64/registers.h"

namespace vmi::sim::sim_internal {

// Offsets in the 64-bit TSS.
inline constexpr uint64_t kTssRsp0 = 0x04;  // RSP0, RSP1, RSP2: 8 bytes each
inline constexpr uint64_t kTssIst1 = 0x24;  // IST1 .. IST7: 8 bytes each

// Reads `n` bytes at guest-linear `va` into `out`; false when unmapped.
using LinearReader = absl::FunctionRef<bool(uint64_t va, void* out, size_t n)>;

// A GDT descriptor's base, limit (scaled by G) and flags (its high dword
// without the base bytes: type at bit 8 ... G at bit 23, as QEMU's segment
// cache keeps them).
struct SegmentDescriptor {
  uint64_t base = 0;
  uint32_t limit = 0;
  uint32_t flags = 0;
};
SegmentDescriptor DecodeSegmentDescriptor(uint64_t descriptor);

// The vCPU as delivery finds it.
struct DeliveryState {
  uint64_t return_rip = 0;  // where the handler's IRET returns
  uint64_t rflags = 0;
  uint64_t rsp = 0;
  uint16_t cs = 0, ss = 0;
  uint32_t cpl = 0;
  amd64::DescriptorTable idtr, gdtr;
  uint64_t tr_base = 0;
};

// What delivery changes.
struct DeliveryPlan {
  uint64_t rip = 0;  // the handler
  uint64_t rsp = 0;  // where the frame starts
  std::vector<uint64_t> frame;  // at rsp, lowest address first
  uint16_t cs = 0;
  SegmentDescriptor cs_descriptor;
  std::optional<uint16_t> ss;  // a null SS with RPL = the new CPL, on a privilege change
  uint32_t ss_flags = 0;
  uint64_t rflags = 0;
};

// Plans delivering `vector` (with `error_code` pushed when given).
// FailedPrecondition, naming `op` and the cause, when the guest would
// triple-fault (vector beyond the IDT, gate not present, the IDT, GDT, TSS
// unreadable, a gate selector outside the GDT).
absl::StatusOr<DeliveryPlan> PlanDelivery(const DeliveryState& state, uint8_t vector,
                                          std::optional<uint32_t> error_code, LinearReader read,
                                          absl::string_view op);

// What SYSCALL does (a #UD instead when EFER.SCE is clear).
struct SyscallPlan {
  bool invalid_opcode = false;
  uint64_t rip = 0, rcx = 0, r11 = 0, rflags = 0;
  uint16_t cs = 0, ss = 0;
  uint32_t cs_flags = 0, ss_flags = 0;
};
SyscallPlan PlanSyscall(uint64_t efer, uint64_t star, uint64_t lstar, uint64_t fmask,
                        uint64_t next_rip, uint64_t rflags);

}  // namespace vmi::sim::sim_internal

#endif  // VMI_SIM_INTERNAL_DELIVERY_H_
