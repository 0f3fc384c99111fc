// x86-64 address translation: the paging modes (32-bit with PSE 4 MiB pages,
// PAE with 2 MiB pages, IA-32e 4-level and 5-level (LA57) with 2 MiB / 1 GiB
// pages), page-table entries, and one page walk templated on anything that
// reads a guest page by frame number (core's PageReader concept).
//
// The walk explains itself: it records the table, entry address and raw
// entry at every level, and the effective permissions (write = AND of RW,
// user = AND of US, execute = no NX anywhere when EFER.NXE).
// Errors: a not-present entry is a typed translation fault (core/error.h)
// carrying the (va, root); a non-canonical address is InvalidArgument;
// reserved bits (including PS where it is not allowed) are
// FailedPrecondition; a table the reader cannot supply (e.g. beyond guest
// memory) is the reader's error annotated with the level. The walk visits at
// most five tables, so self-referencing tables cannot make it loop.
//
// Thread-safety: stateless functions; thread-safe if the reader is.

#ifndef VMI_ARCH_AMD64_PAGING_H_
#define VMI_ARCH_AMD64_PAGING_H_

#include <array>
#include <cstdint>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "core/address_context.h"
#include "core/architecture.h"
#include "core/error.h"
#include "core/types.h"

namespace vmi::amd64 {

// How the CPU translates linear addresses; derived from CR0, CR4 and EFER by
// PagingModeOf (amd64.h).
struct PagingMode {
  enum class Kind : uint8_t { kDisabled, kLegacy32, kPae, kFourLevel, kFiveLevel };

  Kind kind = Kind::kFourLevel;
  bool nxe = true;  // EFER.NXE: bit 63 of PAE/IA-32e entries is NX (else reserved)
  bool pse = true;  // CR4.PSE: 4 MiB pages in 32-bit paging
  uint8_t max_phys_bits = 52;  // MAXPHYADDR: entry bits at and above it are reserved

  static constexpr PagingMode Disabled() { return {Kind::kDisabled, false, false, 52}; }
  static constexpr PagingMode Legacy32(bool pse = true) { return {Kind::kLegacy32, false, pse, 52}; }
  static constexpr PagingMode Pae(bool nxe = true) { return {Kind::kPae, nxe, true, 52}; }
  static constexpr PagingMode FourLevel(bool nxe = true) { return {Kind::kFourLevel, nxe, true, 52}; }
  static constexpr PagingMode FiveLevel(bool nxe = true) { return {Kind::kFiveLevel, nxe, true, 52}; }

  // Number of table levels walked (0 when paging is off).
  constexpr int levels() const {
    switch (kind) {
      case Kind::kDisabled: return 0;
      case Kind::kLegacy32: return 2;
      case Kind::kPae: return 3;
      case Kind::kFourLevel: return 4;
      case Kind::kFiveLevel: return 5;
    }
    return 0;
  }
  // Width in bytes of a table entry.
  constexpr int entry_size() const { return kind == Kind::kLegacy32 ? 4 : 8; }

  // The table address held in CR3 for this mode (PCID and flag bits masked).
  constexpr Pa RootFromCr3(uint64_t cr3) const {
    switch (kind) {
      case Kind::kLegacy32: return Pa(cr3 & 0xfffff000u);
      case Kind::kPae: return Pa(cr3 & 0xffffffe0u);
      default: return Pa(cr3 & 0x000ffffffffff000ull);
    }
  }

  std::string ToString() const;
  friend bool operator==(const PagingMode&, const PagingMode&) = default;
  friend absl::FormatConvertResult<absl::FormatConversionCharSet::kString> AbslFormatConvert(
      const PagingMode& m, const absl::FormatConversionSpec&, absl::FormatSink* sink) {
    sink->Append(m.ToString());
    return {true};
  }
};

// A page-table entry of any level and mode (32-bit entries zero-extended).
class PageTableEntry {
 public:
  static constexpr uint64_t kPresent = 1ull << 0, kWrite = 1ull << 1, kUser = 1ull << 2,
                            kPwt = 1ull << 3, kPcd = 1ull << 4, kAccessed = 1ull << 5,
                            kDirty = 1ull << 6, kPageSize = 1ull << 7, kGlobal = 1ull << 8,
                            kNx = 1ull << 63;
  static constexpr uint64_t kFrameMask = 0x000ffffffffff000ull;

  constexpr PageTableEntry() = default;
  constexpr explicit PageTableEntry(uint64_t raw) : raw_(raw) {}

  constexpr uint64_t raw() const { return raw_; }
  constexpr bool present() const { return raw_ & kPresent; }
  constexpr bool write() const { return raw_ & kWrite; }
  constexpr bool user() const { return raw_ & kUser; }
  constexpr bool pwt() const { return raw_ & kPwt; }
  constexpr bool pcd() const { return raw_ & kPcd; }
  constexpr bool accessed() const { return raw_ & kAccessed; }
  constexpr bool dirty() const { return raw_ & kDirty; }
  // PS in a PDE/PDPTE; in a PTE the same bit is PAT.
  constexpr bool page_size() const { return raw_ & kPageSize; }
  constexpr bool global() const { return raw_ & kGlobal; }
  // PAT bit of a large-page entry (bit 12); a 4 KiB PTE's PAT is bit 7.
  constexpr bool large_pat() const { return raw_ & (1ull << 12); }
  constexpr bool nx() const { return raw_ & kNx; }
  constexpr uint8_t protection_key() const { return (raw_ >> 59) & 0xf; }
  // Physical address bits 12..51 (for a large page, mask further by its size).
  constexpr Pa frame() const { return Pa(raw_ & kFrameMask); }
  constexpr Gfn gfn() const { return Gfn((raw_ & kFrameMask) >> 12); }

  // Flags by name, e.g. "P|RW|US|A|NX".
  std::string ToString() const;

 private:
  uint64_t raw_ = 0;
};

// One level of a walk. Levels are numbered like the SDM's tables: 5 = PML5,
// 4 = PML4, 3 = PDPT, 2 = PD, 1 = PT.
struct WalkStep {
  uint8_t level = 0;
  Pa table;          // base of the table read at this level
  Pa entry_address;  // guest-physical address of the entry
  PageTableEntry entry;
};

// Name of a table level ("PML4", "PDPT", ...) in `kind`.
const char* TableName(PagingMode::Kind kind, int level);

struct Walk {
  AddressContext ctx;
  PagingMode mode;
  std::array<WalkStep, 5> steps{};
  uint8_t count = 0;  // valid entries in steps, root first
  PageTranslation translation;
};

namespace paging_internal {

inline constexpr uint64_t kAddrMask = PageTableEntry::kFrameMask;

// Bits of an entry that must be zero at `level` given the mode and whether
// the entry maps a large page.
constexpr uint64_t ReservedBits(const PagingMode& mode, int level, bool large) {
  if (mode.kind == PagingMode::Kind::kLegacy32) {
    // 4 MiB PDE: bit 21 is reserved (bits 20:13 carry PA bits 39:32).
    return (level == 2 && large) ? (1ull << 21) : 0;
  }
  uint64_t r = 0;
  if (mode.max_phys_bits < 52) r |= kAddrMask & ~((1ull << mode.max_phys_bits) - 1);
  if (mode.kind == PagingMode::Kind::kPae && level == 3) {
    // PAE PDPTEs have no RW/US/A/D/PS/G/NX: bits 1,2,5..8 and 63 are reserved.
    return r | 0x1e6ull | PageTableEntry::kNx;
  }
  if (!mode.nxe) r |= PageTableEntry::kNx;
  if (level == 3 && large) r |= 0x3fffe000ull;  // 1 GiB page: bits 29:13
  if (level == 2 && large) r |= 0x1fe000ull;    // 2 MiB page: bits 20:13
  return r;
}

// The paging mode as the 32-bit code a FaultCause carries, and back.
constexpr uint32_t EncodeMode(const PagingMode& m) {
  return static_cast<uint32_t>(m.kind) | (uint32_t{m.nxe} << 8) | (uint32_t{m.pse} << 9) |
         (uint32_t{m.max_phys_bits} << 16);
}
constexpr PagingMode DecodeMode(uint32_t code) {
  return {static_cast<PagingMode::Kind>(code & 0xff), ((code >> 8) & 1) != 0,
          ((code >> 9) & 1) != 0, static_cast<uint8_t>(code >> 16)};
}

// Builds the status of a fault from this walk (the messages name the table
// level and the mode, as "PML4 entry not present (4-level+nx mode, ...)").
absl::Status DescribeFault(const TranslationFault& fault);

inline TranslationFault Fault(AddressContext ctx, const PagingMode& mode, FaultCause::Kind kind,
                              int level, uint64_t entry_address, uint64_t entry,
                              uint64_t detail = 0) {
  TranslationFault f;
  f.ctx = ctx;
  f.cause.kind = kind;
  f.cause.level = static_cast<uint8_t>(level);
  f.cause.mode = EncodeMode(mode);
  f.cause.entry_address = Pa(entry_address);
  f.cause.entry = entry;
  f.cause.detail = detail;
  f.cause.describe = &DescribeFault;
  return f;
}

absl::Status ReadFailed(AddressContext ctx, const PagingMode& mode, int level, Pa table,
                        const absl::Status& status);

// The walk. kRecord: also fill `walk`'s per-level steps (the explaining walk);
// the hot path (TranslateInto) leaves them out.
template <bool kRecord, PageReader R>
FaultStatus WalkImpl(R& reader, AddressContext ctx, const PagingMode& mode, PageTranslation& t,
                     Walk* walk) {
  t = PageTranslation();
  const uint64_t va = ctx.va.value();

  switch (mode.kind) {
    case PagingMode::Kind::kDisabled:
      t.pa = Pa(va);
      t.page_size = 4096;
      t.permissions = {true, true, true};
      return FaultStatus();
    case PagingMode::Kind::kLegacy32:
    case PagingMode::Kind::kPae:
      if (va >> 32) return Fault(ctx, mode, FaultCause::Kind::kBadAddress, 0, 0, 0);
      break;
    case PagingMode::Kind::kFourLevel:
      if (static_cast<uint64_t>(static_cast<int64_t>(va << 16) >> 16) != va) {
        return Fault(ctx, mode, FaultCause::Kind::kBadAddress, 0, 0, 0);
      }
      break;
    case PagingMode::Kind::kFiveLevel:
      if (static_cast<uint64_t>(static_cast<int64_t>(va << 7) >> 7) != va) {
        return Fault(ctx, mode, FaultCause::Kind::kBadAddress, 0, 0, 0);
      }
      break;
  }

  const bool legacy = mode.kind == PagingMode::Kind::kLegacy32;
  const bool pae = mode.kind == PagingMode::Kind::kPae;
  const int entry_size = legacy ? 4 : 8;
  bool write = true, user = true, execute = true;
  uint64_t table = mode.RootFromCr3(ctx.root.value()).value();

  for (int level = mode.levels(); level >= 1; --level) {
    uint64_t index;
    int shift;
    if (legacy) {
      shift = 12 + 10 * (level - 1);
      index = (va >> shift) & 1023;
    } else {
      shift = 12 + 9 * (level - 1);
      index = (va >> shift) & (pae && level == 3 ? 3 : 511);
    }
    const uint64_t entry_pa = table + index * entry_size;
    const Gfn gfn(entry_pa >> 12);
    auto page = reader.ReadPage(gfn);
    if (!page.ok()) return ReadFailed(ctx, mode, level, Pa(table), page.status());
    const uint64_t offset = entry_pa & 0xfff;
    if (page->size() < offset + entry_size) {
      return ReadFailed(ctx, mode, level, Pa(table),
                        absl::OutOfRangeError("page shorter than the entry offset"));
    }
    uint64_t raw = 0;
    std::memcpy(&raw, page->data() + offset, entry_size);  // little-endian host
    if constexpr (kRecord) {
      walk->steps[walk->count++] = {static_cast<uint8_t>(level), Pa(table), Pa(entry_pa),
                                    PageTableEntry(raw)};
    }
    t.table_gfns[t.levels++] = gfn;

    if (!(raw & PageTableEntry::kPresent)) {
      return Fault(ctx, mode, FaultCause::Kind::kNotPresent, level, entry_pa, raw);
    }

    const bool ps_allowed = legacy ? (level == 2 && mode.pse)
                                   : (level == 2 || (level == 3 && !pae));
    const bool large = ps_allowed && (raw & PageTableEntry::kPageSize);
    uint64_t reserved = ReservedBits(mode, level, large);
    // PS in a PML5E/PML4E is reserved (it is ignored in PTEs, where bit 7 is PAT).
    if (!legacy && !pae && level >= 4) reserved |= PageTableEntry::kPageSize;
    if (raw & reserved) {
      return Fault(ctx, mode, FaultCause::Kind::kMalformed, level, entry_pa, raw, raw & reserved);
    }

    if (!(pae && level == 3)) {
      write &= (raw & PageTableEntry::kWrite) != 0;
      user &= (raw & PageTableEntry::kUser) != 0;
      if (mode.nxe) execute &= (raw & PageTableEntry::kNx) == 0;
    }

    if (level == 1 || large) {
      const uint64_t size = uint64_t{1} << shift;
      uint64_t base;
      if (legacy && large) {
        // PSE-36: PA bits 39:32 come from entry bits 20:13.
        base = (raw & 0xffc00000ull) | (((raw >> 13) & 0xff) << 32);
      } else if (legacy) {
        base = raw & 0xfffff000ull;
      } else {
        base = raw & kAddrMask & ~(size - 1);
      }
      t.pa = Pa(base | (va & (size - 1)));
      t.page_size = size;
      t.permissions = {write, user, execute};
      return FaultStatus();
    }
    table = legacy ? (raw & 0xfffff000ull) : (raw & kAddrMask);
  }
  return absl::InternalError("page walk fell through");  // unreachable: level 1 is a leaf
}

}  // namespace paging_internal

// Walks the tables for `ctx` in `mode`, filling `walk` as far as it gets (so
// a failed walk still shows the levels read), and returns the status.
template <PageReader R>
absl::Status WalkInto(R& reader, AddressContext ctx, const PagingMode& mode, Walk& walk) {
  walk.ctx = ctx;
  walk.mode = mode;
  walk.count = 0;
  return paging_internal::WalkImpl<true>(reader, ctx, mode, walk.translation, &walk).status();
}

template <PageReader R>
absl::StatusOr<Walk> WalkPage(R& reader, AddressContext ctx, const PagingMode& mode) {
  Walk walk;
  absl::Status status = WalkInto(reader, ctx, mode, walk);
  if (!status.ok()) return status;
  return walk;
}

// The hot-path walk (no per-level record, failures as compact faults); on
// failure `t` holds the table frames read so far.
template <PageReader R>
FaultStatus TranslateInto(R& reader, AddressContext ctx, const PagingMode& mode,
                          PageTranslation& t) {
  return paging_internal::WalkImpl<false>(reader, ctx, mode, t, nullptr);
}

template <PageReader R>
FaultOr<PageTranslation> TranslatePage(R& reader, AddressContext ctx, const PagingMode& mode) {
  PageTranslation t;
  FaultStatus status = TranslateInto(reader, ctx, mode, t);
  if (!status.ok()) return status;
  return t;
}

// A human-readable rendering of a (possibly partial) walk, one line per level.
std::string FormatWalk(const Walk& walk);

}  // namespace vmi::amd64

#endif  // VMI_ARCH_AMD64_PAGING_H_
