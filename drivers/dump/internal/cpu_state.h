// Byte layouts of the CPU state records dump files carry, and conversions
// between them and amd64::Registers, shared by the parsers and the writer:
//   - the x86-64 Linux `elf_prstatus` of an NT_PRSTATUS note (336 bytes,
//     pr_reg = user_regs_struct at offset 112),
//   - QEMU's `QEMUCPUState` (the "QEMU" note of dump-guest-memory, version 1:
//     432 bytes, 440 with kernel_gs_base),
//   - Xen's x86-64 `vcpu_guest_context` (5168 bytes) in `.xen_prstatus`.
// Offsets are pinned by cpu_state_test.cc (against /usr/include/xen for Xen).
//
// Thread-safety: stateless functions; thread-safe.

#ifndef VMI_DRIVERS_DUMP_INTERNAL_CPU_STATE_H_
#define VMI_DRIVERS_DUMP_INTERNAL_CPU_STATE_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "arch/amd64/bitfields.h"
#include "arch/amd64/registers.h"

namespace vmi::dump_internal {

// elf_prstatus (x86-64).
inline constexpr uint64_t kPrstatusSize = 336;
inline constexpr uint64_t kPrstatusPidOffset = 32;
inline constexpr uint64_t kPrstatusRegsOffset = 112;
inline constexpr uint64_t kPrstatusRegCount = 27;  // r15 ... gs

// QEMUCPUState.
inline constexpr uint32_t kQemuCpuStateVersion = 1;
inline constexpr uint64_t kQemuCpuStateSizeV1 = 432;  // up to cr[5]
inline constexpr uint64_t kQemuCpuStateSize = 440;    // with kernel_gs_base
inline constexpr uint64_t kQemuGprOffset = 8;         // rax, rbx, ..., r15, rip, rflags
inline constexpr uint64_t kQemuSegmentsOffset = 152;  // cs ds es fs gs ss ldt tr gdt idt
inline constexpr uint64_t kQemuSegmentSize = 24;      // selector limit flags pad (u32) base (u64)
inline constexpr uint64_t kQemuCrOffset = 392;        // cr[5]
inline constexpr uint64_t kQemuKernelGsBaseOffset = 432;

// vcpu_guest_context (x86-64).
inline constexpr uint64_t kXenContextSize = 5168;
inline constexpr uint64_t kXenUserRegsOffset = 520;
inline constexpr uint64_t kXenCtrlregOffset = 4984;
inline constexpr uint64_t kXenDebugregOffset = 5048;
inline constexpr uint64_t kXenFsBaseOffset = 5144;
inline constexpr uint64_t kXenGsBaseKernelOffset = 5152;
inline constexpr uint64_t kXenGsBaseUserOffset = 5160;
// Inside cpu_user_regs: r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi
// rdi (8 bytes each), error_code, entry_vector (4 each), then these.
inline constexpr uint64_t kXenRipOffset = 128;
inline constexpr uint64_t kXenCsOffset = 136;
inline constexpr uint64_t kXenRflagsOffset = 144;
inline constexpr uint64_t kXenRspOffset = 152;
inline constexpr uint64_t kXenSsOffset = 160;
inline constexpr uint64_t kXenEsOffset = 168;
inline constexpr uint64_t kXenDsOffset = 176;
inline constexpr uint64_t kXenFsOffset = 184;
inline constexpr uint64_t kXenGsOffset = 192;

// Each Decode reads only `bytes` (which must hold at least the record's
// size; callers check) and sets the fields the record carries.
void DecodePrstatus(absl::Span<const uint8_t> bytes, amd64::Registers* regs);
std::vector<uint8_t> EncodePrstatus(const amd64::Registers& regs, uint32_t pid);

// `bytes` holds at least kQemuCpuStateSizeV1; kernel_gs_base is read when
// it holds kQemuCpuStateSize and the record's own size field says so.
void DecodeQemuCpuState(absl::Span<const uint8_t> bytes, amd64::Registers* regs);
std::vector<uint8_t> EncodeQemuCpuState(const amd64::Registers& regs);

void DecodeXenContext(absl::Span<const uint8_t> bytes, amd64::Registers* regs);
std::vector<uint8_t> EncodeXenContext(const amd64::Registers& regs);

// QEMU's SegmentCache flags (descriptor high dword: type at bit 8 ... G at
// bit 23) <-> the VMX access-rights layout of amd64::Segment::access.
inline uint16_t AccessFromQemuFlags(uint32_t flags) {
  return static_cast<uint16_t>(amd64::SegmentAccess::FromDescriptorFlags(flags).value());
}
inline uint32_t QemuFlagsFromAccess(uint16_t access) {
  return amd64::SegmentAccess(access).ToDescriptorFlags();
}

}  // namespace vmi::dump_internal

#endif  // VMI_DRIVERS_DUMP_INTERNAL_CPU_STATE_H_
