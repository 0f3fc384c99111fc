// On-disk constants of LiME and Xen dump-core, and the physical address limit.
//
// Thread-safety: constants only.

#ifndef VMI_DRIVERS_DUMP_INTERNAL_CONSTANTS_H_
#define VMI_DRIVERS_DUMP_INTERNAL_CONSTANTS_H_

#include <cstdint>

namespace vmi::dump_internal {

// Each range: a 32-byte header {u32 magic, u32 version, u64 start, u64 end
// (inclusive), u8 reserved[8]}, then end - start + 1 bytes of memory.
inline constexpr uint32_t kLimeMagic = 0x4C694D45;  // "EMiL" in the file
inline constexpr uint32_t kLimeVersion = 1;
inline constexpr uint64_t kLimeHeaderSize = 32;

// Xen dump-core constants (tools/libs/ctrl/xc_core.h, public/elfnote.h).
inline constexpr uint32_t kXenElfnoteDumpcoreNone = 0x2000000;
inline constexpr uint32_t kXenElfnoteDumpcoreHeader = 0x2000001;
inline constexpr uint32_t kXenElfnoteDumpcoreFormatVersion = 0x2000003;
inline constexpr uint64_t kXenCoreMagic = 0xF00FEBED;
inline constexpr uint64_t kXenCoreMagicHvm = 0xF00FEBEE;
inline constexpr uint64_t kXenInvalidPfn = ~uint64_t{0};

// Guest-physical addresses beyond 52 bits do not exist on x86-64; ranges
// reaching past them are rejected as corrupt (and this keeps all frame
// arithmetic far from overflow).
inline constexpr uint64_t kMaxPhysicalAddress = uint64_t{1} << 52;

}  // namespace vmi::dump_internal

#endif  // VMI_DRIVERS_DUMP_INTERNAL_CONSTANTS_H_
