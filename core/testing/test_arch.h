// TestArch: a deliberately tiny architecture for the core's own tests, so that
// core never depends on arch/. 4 KiB pages, a two-level table (512 entries of
// 8 bytes per level, 30-bit virtual addresses): entry bit 0 = present,
// bit 1 = writable, bit 2 = user, bit 63 = no-execute, bits 12..51 = frame.
//
// Thread-safety: stateless; thread-safe.

#ifndef VMI_CORE_TESTING_TEST_ARCH_H_
#define VMI_CORE_TESTING_TEST_ARCH_H_

#include <cstdint>
#include <cstring>
#include <variant>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "core/address_context.h"
#include "core/architecture.h"
#include "core/error.h"
#include "core/types.h"

namespace vmi::testing {

struct TestArch {
  static constexpr uint64_t kPageSize = 4096;
  static constexpr unsigned kPageShift = 12;
  static constexpr uint64_t kPresent = 1, kWrite = 2, kUser = 4, kNx = uint64_t{1} << 63;
  static constexpr uint64_t kFrameMask = 0x000ffffffffff000;

  struct GpRegisters {
    uint64_t gpr[4];
    uint64_t ip;
    uint64_t sp;
  };
  struct Registers {
    GpRegisters gp;
    uint64_t root;
  };
  struct EventReason {
    uint64_t code;
  };
  struct EventMonitor {
    uint64_t code;
  };
  struct Interrupt {
    uint8_t vector;
  };
  enum class PagingMode { kTwoLevel };
  static constexpr PagingMode kDefaultPagingMode = PagingMode::kTwoLevel;

  struct WalkLevel {
    Pa entry_address;
    uint64_t entry;
  };
  struct Walk {
    WalkLevel levels[2];
    int count = 0;
    PageTranslation translation;
  };

  static Gfn GfnFromPa(Pa pa) { return Gfn(pa.value() >> kPageShift); }
  static Pa PaFromGfn(Gfn gfn) { return Pa(gfn.value() << kPageShift); }
  static uint64_t PageOffset(uint64_t address) { return address & (kPageSize - 1); }
  static Pa TranslationRoot(const Registers& r) { return Pa(r.root & kFrameMask); }
  static Va InstructionPointer(const Registers& r) { return Va(r.gp.ip); }
  static Va StackPointer(const Registers& r) { return Va(r.gp.sp); }
  static PagingMode PagingModeOf(const Registers&) { return PagingMode::kTwoLevel; }

  // Messages: "level N entry not present" for a cleared entry, "address
  // beyond the 30-bit space" for an address with bits above 29 (a page
  // fault too, at level 0).
  static absl::Status DescribeFault(const TranslationFault& fault) {
    if (fault.cause.kind != FaultCause::Kind::kNotPresent) {
      return absl::InternalError("TestArch walks fail only with not-present faults");
    }
    if (fault.cause.level == 0) return TranslationFaultError(fault.ctx, "address beyond the 30-bit space");
    return TranslationFaultError(
        fault.ctx, absl::StrFormat("level %d entry not present", fault.cause.level - 1));
  }

  // The walk, recording each level in `walk` when it is given.
  template <PageReader R>
  static FaultStatus WalkImpl(R& reader, AddressContext ctx, PageTranslation& t, Walk* walk) {
    t = PageTranslation();
    auto fault = [&](int level, uint64_t entry_address, uint64_t entry) {
      TranslationFault f;
      f.ctx = ctx;
      f.cause.kind = FaultCause::Kind::kNotPresent;
      f.cause.level = static_cast<uint8_t>(level);  // 1 + the index below; 0 = bad address
      f.cause.entry_address = Pa(entry_address);
      f.cause.entry = entry;
      f.cause.describe = &DescribeFault;
      return f;
    };
    if (ctx.va.value() >> 30) return fault(0, 0, 0);
    t.permissions = {true, true, true};
    Pa table(ctx.root.value() & kFrameMask);
    const uint64_t index[2] = {(ctx.va.value() >> 21) & 511, (ctx.va.value() >> 12) & 511};
    for (int level = 0; level < 2; ++level) {
      auto page = reader.ReadPage(GfnFromPa(table));
      if (!page.ok()) {
        return AnnotateStatus(page.status(), absl::StrFormat("walk level %d of %s", level, ctx));
      }
      uint64_t entry;
      std::memcpy(&entry, page->data() + index[level] * 8, 8);
      if (walk != nullptr) {
        walk->levels[level] = {table + index[level] * 8, entry};
        walk->count = level + 1;
      }
      t.table_gfns[level] = GfnFromPa(table);
      t.levels = level + 1;
      if (!(entry & kPresent)) return fault(level + 1, (table + index[level] * 8).value(), entry);
      t.permissions.write &= (entry & kWrite) != 0;
      t.permissions.user &= (entry & kUser) != 0;
      t.permissions.execute &= (entry & kNx) == 0;
      table = Pa(entry & kFrameMask);
    }
    t.page_size = kPageSize;
    t.pa = table + PageOffset(ctx.va.value());
    return FaultStatus();
  }

  template <PageReader R>
  static absl::StatusOr<Walk> WalkPage(R& reader, AddressContext ctx, PagingMode = kDefaultPagingMode) {
    Walk walk;
    FaultStatus status = WalkImpl(reader, ctx, walk.translation, &walk);
    if (!status.ok()) return status.status();
    return walk;
  }

  template <PageReader R>
  static FaultStatus TranslateInto(R& reader, AddressContext ctx, PagingMode,
                                   PageTranslation& translation) {
    return WalkImpl(reader, ctx, translation, nullptr);
  }

  template <PageReader R>
  static FaultOr<PageTranslation> Translate(R& reader, AddressContext ctx,
                                            PagingMode = kDefaultPagingMode) {
    PageTranslation t;
    FaultStatus status = WalkImpl(reader, ctx, t, nullptr);
    if (!status.ok()) return status;
    return t;
  }
};

static_assert(Architecture<TestArch>);

}  // namespace vmi::testing

#endif  // VMI_CORE_TESTING_TEST_ARCH_H_
