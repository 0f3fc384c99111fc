// The parsed shape of a dump file: which guest frames it holds and where
// their bytes are in the file, the vCPU state it carries, and what damage the
// parser found and worked around. Parsers (internal/parsers.h) produce it from
// a byte span; DumpDriver serves pages from it over an mmap of the file.
//
// Every offset in a DumpLayout has been checked against the span it was
// parsed from: for each extent, [file_offset, file_offset + pages * 4096) lies
// inside it. Fuzz targets verify exactly that.
//
// Thread-safety: immutable after parsing; thread-safe for readers.

#ifndef VMI_DRIVERS_DUMP_INTERNAL_LAYOUT_H_
#define VMI_DRIVERS_DUMP_INTERNAL_LAYOUT_H_

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "arch/amd64/amd64.h"
#include "arch/amd64/registers.h"
#include "drivers/dump/dump_format.h"

namespace vmi::dump_internal {

inline constexpr uint64_t kPageSize = Amd64::kPageSize;
inline constexpr unsigned kPageShift = Amd64::kPageShift;

// Frames [first_gfn, first_gfn + pages) whose bytes start at file_offset, or,
// for a zero extent, read as zeros (ELF p_filesz < p_memsz with zero fill on).
struct Extent {
  uint64_t first_gfn = 0;
  uint64_t pages = 0;
  uint64_t file_offset = 0;
  bool zero = false;
  // Index of the segment / range / table entry that produced it (for errors).
  uint64_t source = 0;
  uint64_t end_gfn() const { return first_gfn + pages; }
};

// An ELF note other than the CPU-state ones, copied out of the file (e.g. the
// guest kernel's VMCOREINFO).
struct DumpNote {
  std::string name;
  uint32_t type = 0;
  std::vector<uint8_t> desc;
};

// Notes kept per dump and bytes kept per note: bounds on what a hostile file
// can make Open copy.
inline constexpr size_t kMaxKeptNotes = 16;
inline constexpr size_t kMaxKeptNoteBytes = 64 * 1024;

struct DumpLayout {
  dump::DumpFormat format = dump::DumpFormat::kAuto;
  // What `source` indexes, for messages: "PT_LOAD segment", "LiME range", ...
  std::string source_kind;
  // Sorted by first_gfn, non-overlapping, none empty (after Finalize).
  std::vector<Extent> extents;
  // One entry per vCPU the dump describes; empty without CPU state.
  std::vector<amd64::Registers> registers;
  // Other notes (ELF cores), at most kMaxKeptNotes of at most
  // kMaxKeptNoteBytes each.
  std::vector<DumpNote> notes;
  // Damage the parser worked around (served up to it, rest missing).
  std::vector<std::string> warnings;
  uint64_t max_gfn = 0;  // highest present frame (valid after Finalize)
  uint64_t page_count = 0;

  // Sorts extents, rejects overlaps (naming both sources) and empty dumps,
  // and computes max_gfn and page_count.
  absl::Status Finalize();
  // The extent holding `gfn`, or nullptr for a hole / beyond the end.
  const Extent* Find(uint64_t gfn) const;
  // The present frames, coalesced.
  std::vector<dump::GfnRange> PresentRanges() const;
};

// ---- Bounds-checked access to an untrusted byte span. ----

// True when [offset, offset + length) lies inside a buffer of `size` bytes;
// immune to overflow.
inline bool InBounds(uint64_t size, uint64_t offset, uint64_t length) {
  return offset <= size && length <= size - offset;
}

// *sum = a + b, false on overflow.
inline bool CheckedAdd(uint64_t a, uint64_t b, uint64_t* sum) {
  return !__builtin_add_overflow(a, b, sum);
}
inline bool CheckedMul(uint64_t a, uint64_t b, uint64_t* product) {
  return !__builtin_mul_overflow(a, b, product);
}

// A little-endian T at `offset`, or nullopt when it would not fit.
template <typename T>
std::optional<T> Load(absl::Span<const uint8_t> bytes, uint64_t offset) {
  if (!InBounds(bytes.size(), offset, sizeof(T))) return std::nullopt;
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

// Like Load, for fields inside an already bounds-checked record: the caller
// guarantees offset + sizeof(T) <= bytes.size().
template <typename T>
T LoadUnchecked(absl::Span<const uint8_t> bytes, uint64_t offset) {
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

// Whole pages of [gpa, gpa + length) that lie at [file_offset, ...): the
// first page-aligned frame at or after gpa up to the last frame that ends at
// or before gpa + length. Appends an extent when there is at least one page.
// Caller guarantees gpa + length and file_offset + length do not overflow.
void AddWholePages(uint64_t gpa, uint64_t length, uint64_t file_offset, bool zero, uint64_t source,
                   std::vector<Extent>* extents);

// If long mode is evident (CR0.PG and CR4.PAE on a 64-bit dump), sets
// EFER.LME|LMA|NXE, which no dump format records.
void InferEfer(amd64::Registers* regs);

}  // namespace vmi::dump_internal

#endif  // VMI_DRIVERS_DUMP_INTERNAL_LAYOUT_H_
