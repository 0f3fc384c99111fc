#include "arch/amd64/paging.h"

#include <random>
#include <vector>

#include "arch/amd64/testing/page_store.h"
#include "core/error.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmi::amd64 {
namespace {

using testing::MemoryPageStore;
using testing::PageTableBuilder;
using ::testing::HasSubstr;

constexpr uint64_t kP = PageTableEntry::kPresent, kRW = PageTableEntry::kWrite,
                   kUS = PageTableEntry::kUser, kNX = PageTableEntry::kNx;
constexpr uint64_t k4K = 1ull << 12, k2M = 1ull << 21, k4M = 1ull << 22, k1G = 1ull << 30;

struct Fixture {
  explicit Fixture(PagingMode mode, uint64_t max_gfn = (1ull << 40) - 1)
      : store(Gfn(max_gfn)), builder(store, mode), mode(mode) {}
  absl::StatusOr<PageTranslation> Translate(Va va) {
    return TranslatePage(store, AddressContext(va, builder.root()), mode);
  }
  MemoryPageStore store;
  PageTableBuilder builder;
  PagingMode mode;
};

TEST(PagingModeTest, RootMasksPcidAndFlags) {
  EXPECT_EQ(PagingMode::FourLevel().RootFromCr3(0x8000000012345fffull), Pa(0x12345000));
  EXPECT_EQ(PagingMode::FiveLevel().RootFromCr3(0x12345018), Pa(0x12345000));
  EXPECT_EQ(PagingMode::Pae().RootFromCr3(0x1234507f), Pa(0x12345060));
  EXPECT_EQ(PagingMode::Legacy32().RootFromCr3(0x12345018), Pa(0x12345000));
  EXPECT_EQ(PagingMode::FiveLevel().levels(), 5);
  EXPECT_EQ(PagingMode::Legacy32().entry_size(), 4);
  EXPECT_EQ(PagingMode::FourLevel().ToString(), "4-level+nx");
}

TEST(PageTableEntryTest, Accessors) {
  PageTableEntry e(0x8000000012345067ull | (3ull << 59));
  EXPECT_TRUE(e.present());
  EXPECT_TRUE(e.write());
  EXPECT_TRUE(e.user());
  EXPECT_TRUE(e.accessed());
  EXPECT_TRUE(e.dirty());
  EXPECT_FALSE(e.page_size());
  EXPECT_TRUE(e.nx());
  EXPECT_EQ(e.protection_key(), 3);
  EXPECT_EQ(e.frame(), Pa(0x12345000));
  EXPECT_EQ(e.gfn(), Gfn(0x12345));
  EXPECT_EQ(e.ToString(), "P|RW|US|A|D|NX pkey=3");
  EXPECT_EQ(PageTableEntry(0).ToString(), "-");
}

struct ModeCase {
  PagingMode mode;
  std::vector<uint64_t> sizes;
};

class WalkAllModesTest : public ::testing::TestWithParam<int> {};

ModeCase CaseFor(int i) {
  switch (i) {
    case 0: return {PagingMode::Legacy32(), {k4K, k4M}};
    case 1: return {PagingMode::Pae(), {k4K, k2M}};
    case 2: return {PagingMode::FourLevel(), {k4K, k2M, k1G}};
    default: return {PagingMode::FiveLevel(), {k4K, k2M, k1G}};
  }
}

// Random mappings of every legal page size; every mapped address must
// translate to base + offset with the right size and permissions, and every
// address in a gap must be a translation fault carrying its context.
TEST_P(WalkAllModesTest, RandomMappingsMatchExpectations) {
  const ModeCase c = CaseFor(GetParam());
  Fixture f(c.mode);
  std::mt19937_64 rng(1234 + GetParam());
  const bool narrow = c.mode.levels() <= 3;
  const int va_bits = narrow ? 32 : (c.mode.levels() == 4 ? 48 : 57);
  const uint64_t pa_limit = narrow && c.mode.kind == PagingMode::Kind::kLegacy32 ? (1ull << 40)
                                                                                 : (1ull << 46);
  struct Mapping {
    Va va;
    Pa pa;
    uint64_t size;
    uint64_t flags;
  };
  std::vector<Mapping> maps;
  int size_counts[3] = {0, 0, 0};
  for (int i = 0; maps.size() < 600 && i < 20000; ++i) {
    const int si = rng() % c.sizes.size();
    const uint64_t size = c.sizes[si];
    uint64_t va = (rng() & ((1ull << va_bits) - 1)) & ~(size - 1);
    if (!narrow) va = static_cast<uint64_t>(static_cast<int64_t>(va << (64 - va_bits)) >> (64 - va_bits));
    uint64_t pa = (rng() % pa_limit) & ~(size - 1);
    if (c.mode.kind == PagingMode::Kind::kLegacy32 && size == k4K) pa &= 0xffffffffull;
    uint64_t flags = kP;
    if (rng() & 1) flags |= kRW;
    if (rng() & 1) flags |= kUS;
    if (c.mode.nxe && c.mode.kind != PagingMode::Kind::kLegacy32 && (rng() & 1)) flags |= kNX;
    if (f.builder.Map(Va(va), Pa(pa), size, flags).ok()) {
      maps.push_back({Va(va), Pa(pa), size, flags});
      ++size_counts[si];
    }
  }
  ASSERT_GE(maps.size(), 300u);
  for (size_t si = 0; si < c.sizes.size(); ++si) EXPECT_GT(size_counts[si], 10) << si;

  int checked = 0;
  for (const Mapping& m : maps) {
    for (int k = 0; k < 8; ++k) {
      const uint64_t off = k == 0 ? 0 : (k == 1 ? m.size - 1 : rng() % m.size);
      auto t = f.Translate(m.va + off);
      ASSERT_TRUE(t.ok()) << t.status();
      EXPECT_EQ(t->pa, m.pa + off);
      EXPECT_EQ(t->page_size, m.size);
      EXPECT_EQ(t->permissions.write, (m.flags & kRW) != 0);
      EXPECT_EQ(t->permissions.user, (m.flags & kUS) != 0);
      EXPECT_EQ(t->permissions.execute, (m.flags & kNX) == 0);
      EXPECT_EQ(t->page_base(), m.pa);
      ++checked;
    }
  }
  EXPECT_GE(checked, 2400);

  // Addresses outside every mapping fault with their own context.
  int faults = 0;
  for (int i = 0; i < 2000; ++i) {
    uint64_t va = rng() & ((1ull << va_bits) - 1);
    if (!narrow) va = static_cast<uint64_t>(static_cast<int64_t>(va << (64 - va_bits)) >> (64 - va_bits));
    bool mapped = false;
    for (const Mapping& m : maps) mapped |= va >= m.va.value() && va - m.va.value() < m.size;
    if (mapped) continue;
    auto t = f.Translate(Va(va));
    ASSERT_FALSE(t.ok());
    auto ctx = GetTranslationFault(t.status());
    ASSERT_TRUE(ctx.has_value()) << t.status();
    EXPECT_EQ(ctx->va, Va(va));
    EXPECT_EQ(ctx->root, f.builder.root());
    ++faults;
  }
  EXPECT_GT(faults, 1000);
}

std::string ModeName(const ::testing::TestParamInfo<int>& info) {
  static const char* const kNames[] = {"Legacy32", "Pae", "FourLevel", "FiveLevel"};
  return kNames[info.param];
}

INSTANTIATE_TEST_SUITE_P(AllModes, WalkAllModesTest, ::testing::Range(0, 4), ModeName);

TEST(WalkTest, RecordsEveryLevel) {
  Fixture f(PagingMode::FiveLevel());
  const Va va(0xff00123456789000ull);
  ASSERT_TRUE(f.builder.Map(va, Pa(0x7777000), k4K, kRW).ok());
  auto walk = WalkPage(f.store, AddressContext(va + 0x123, f.builder.root()), f.mode);
  ASSERT_TRUE(walk.ok()) << walk.status();
  ASSERT_EQ(walk->count, 5);
  EXPECT_EQ(walk->steps[0].level, 5);
  EXPECT_EQ(walk->steps[0].table, f.builder.root());
  for (int i = 0; i < 5; ++i) {
    auto addr = f.builder.EntryAddress(va, 5 - i);
    ASSERT_TRUE(addr.ok());
    EXPECT_EQ(walk->steps[i].entry_address, *addr);
    EXPECT_EQ(walk->steps[i].entry.raw(), f.store.Read64(*addr));
    EXPECT_EQ(walk->translation.table_gfns[i], Gfn(addr->value() >> 12));
  }
  EXPECT_EQ(walk->translation.levels, 5);
  EXPECT_EQ(walk->translation.pa, Pa(0x7777123));
  // User bit missing at the leaf: not user-accessible; no NX: executable.
  EXPECT_FALSE(walk->translation.permissions.user);
  EXPECT_TRUE(walk->translation.permissions.write);
  EXPECT_TRUE(walk->translation.permissions.execute);
  std::string text = FormatWalk(*walk);
  EXPECT_THAT(text, HasSubstr("PML5"));
  EXPECT_THAT(text, HasSubstr("PT   table="));
}

TEST(WalkTest, EffectivePermissionsAreTheAndOfAllLevels) {
  Fixture f(PagingMode::FourLevel());
  // Intermediate tables read-only and supervisor; leaf RW|US.
  ASSERT_TRUE(f.builder.Map(Va(0x400000), Pa(0x9000), k4K, kRW | kUS, kP).ok());
  auto t = f.Translate(Va(0x400000));
  ASSERT_TRUE(t.ok());
  EXPECT_FALSE(t->permissions.write);
  EXPECT_FALSE(t->permissions.user);
  // NX at the PML4 level makes the whole range non-executable.
  ASSERT_TRUE(f.builder.Map(Va(0x800000000000ull - 0x1000), Pa(0xa000), k4K, kRW, kP | kRW | kNX).ok());
  t = f.Translate(Va(0x800000000000ull - 0x1000));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_FALSE(t->permissions.execute);
  EXPECT_TRUE(t->permissions.write);
}

TEST(WalkTest, NxIgnoredAndReservedWithoutNxe) {
  Fixture f(PagingMode::FourLevel(/*nxe=*/false));
  ASSERT_TRUE(f.builder.Map(Va(0x1000), Pa(0x5000), k4K, kRW).ok());
  auto t = f.Translate(Va(0x1000));
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(t->permissions.execute);
  ASSERT_TRUE(f.builder.Map(Va(0x2000), Pa(0x6000), k4K, kRW | kNX).ok());
  t = f.Translate(Va(0x2000));
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(t.status().message(), HasSubstr("reserved bits 0x8000000000000000 set in PT entry"));
}

TEST(WalkTest, NotPresentNamesTheLevel) {
  Fixture f(PagingMode::FourLevel());
  ASSERT_TRUE(f.builder.Map(Va(0x200000), Pa(0x5000), k4K, kRW).ok());
  // Same PD, other PT index: the PT entry is missing.
  auto t = f.Translate(Va(0x201000));
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), HasSubstr("PT entry not present"));
  EXPECT_EQ(GetTranslationFault(t.status()), AddressContext(Va(0x201000), f.builder.root()));
  t = f.Translate(Va(0x7f0000000000ull));
  EXPECT_THAT(t.status().message(), HasSubstr("PML4 entry not present"));
  // A partial walk still shows what was read.
  Walk walk;
  absl::Status s = WalkInto(f.store, AddressContext(Va(0x201000), f.builder.root()), f.mode, walk);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(walk.count, 4);
  EXPECT_FALSE(walk.steps[3].entry.present());
}

TEST(WalkTest, FailuresAreCompactFaultsWithTheirCause) {
  Fixture f(PagingMode::FiveLevel());
  ASSERT_TRUE(f.builder.Map(Va(0x200000), Pa(0x5000), k4K, kRW).ok());
  const AddressContext ctx(Va(0x201008), f.builder.root());
  PageTranslation t;
  FaultStatus s = TranslateInto(f.store, ctx, f.mode, t);
  ASSERT_NE(s.fault(), nullptr);
  const TranslationFault& fault = *s.fault();
  EXPECT_TRUE(fault.is_page_fault());
  EXPECT_EQ(fault.ctx, ctx);
  EXPECT_EQ(fault.cause.level, 1);  // the PT
  EXPECT_EQ(fault.cause.entry, 0u);
  EXPECT_EQ(paging_internal::DecodeMode(fault.cause.mode), f.mode);
  EXPECT_EQ(t.levels, 5);  // tables read, for a negative V2P entry
  // The status built from it is the one the explaining walk gives.
  Walk walk;
  const absl::Status explained = WalkInto(f.store, ctx, f.mode, walk);
  EXPECT_EQ(fault.cause.entry_address, walk.steps[4].entry_address);
  EXPECT_EQ(s.status(), explained);
  EXPECT_THAT(s.status().message(), HasSubstr("PT entry not present (5-level+nx mode"));

  // Bad address and malformed table: their own kinds and codes.
  s = TranslateInto(f.store, AddressContext(Va(0x0100000000000000ull), f.builder.root()), f.mode, t);
  ASSERT_NE(s.fault(), nullptr);
  EXPECT_EQ(s.fault()->cause.kind, FaultCause::Kind::kBadAddress);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.levels, 0);
  Fixture g(PagingMode::FourLevel(/*nxe=*/false));
  ASSERT_TRUE(g.builder.Map(Va(0x2000), Pa(0x6000), k4K, kRW | kNX).ok());
  s = TranslateInto(g.store, AddressContext(Va(0x2000), g.builder.root()), g.mode, t);
  ASSERT_NE(s.fault(), nullptr);
  EXPECT_EQ(s.fault()->cause.kind, FaultCause::Kind::kMalformed);
  EXPECT_EQ(s.fault()->cause.detail, kNX);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
}

TEST(WalkTest, NonCanonicalAddresses) {
  Fixture four(PagingMode::FourLevel());
  auto t = four.Translate(Va(0x0000800000000000ull));
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr("not canonical"));
  EXPECT_FALSE(IsTranslationFault(t.status()));
  // Canonical in 5-level paging, not in 4-level.
  Fixture five(PagingMode::FiveLevel());
  ASSERT_TRUE(five.builder.Map(Va(0x0000800000000000ull), Pa(0x3000), k4K, kRW).ok());
  EXPECT_TRUE(five.Translate(Va(0x0000800000000000ull)).ok());
  EXPECT_EQ(five.Translate(Va(0x0100000000000000ull)).status().code(),
            absl::StatusCode::kInvalidArgument);
  Fixture pae(PagingMode::Pae());
  EXPECT_EQ(pae.Translate(Va(0x100000000ull)).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(WalkTest, PageSizeWhereNotAllowedIsReserved) {
  Fixture f(PagingMode::FourLevel());
  ASSERT_TRUE(f.builder.Map(Va(0x1000), Pa(0x5000), k4K, kRW).ok());
  auto pml4e = f.builder.EntryAddress(Va(0x1000), 4);
  ASSERT_TRUE(pml4e.ok());
  f.store.Write64(*pml4e, f.store.Read64(*pml4e) | PageTableEntry::kPageSize);
  auto t = f.Translate(Va(0x1000));
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(t.status().message(), HasSubstr("PML4 entry"));
}

TEST(WalkTest, ReservedBitsInLargePages) {
  Fixture f(PagingMode::FourLevel());
  ASSERT_TRUE(f.builder.Map(Va(0x40000000), Pa(0x80000000), k1G, kRW).ok());
  ASSERT_TRUE(f.builder.Map(Va(0x200000), Pa(0x400000), k2M, kRW).ok());
  auto pdpte = f.builder.EntryAddress(Va(0x40000000), 3);
  auto pde = f.builder.EntryAddress(Va(0x200000), 2);
  ASSERT_TRUE(pdpte.ok() && pde.ok());
  f.store.Write64(*pdpte, f.store.Read64(*pdpte) | (1ull << 20));
  f.store.Write64(*pde, f.store.Read64(*pde) | (1ull << 13));
  EXPECT_THAT(f.Translate(Va(0x40000000)).status().message(), HasSubstr("reserved bits 0x100000"));
  EXPECT_THAT(f.Translate(Va(0x200000)).status().message(), HasSubstr("reserved bits 0x2000"));
}

TEST(WalkTest, FrameBitsBeyondMaxPhysAreReserved) {
  PagingMode mode = PagingMode::FourLevel();
  mode.max_phys_bits = 39;
  Fixture f(mode);
  ASSERT_TRUE(f.builder.Map(Va(0x1000), Pa(0x8000000000ull), k4K, kRW).ok());
  auto t = f.Translate(Va(0x1000));
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), HasSubstr("reserved bits 0x8000000000"));
}

TEST(WalkTest, TableBeyondGuestMemory) {
  Fixture f(PagingMode::FourLevel(), /*max_gfn=*/0xfff);
  ASSERT_TRUE(f.builder.Map(Va(0x1000), Pa(0x5000), k4K, kRW).ok());
  auto pde = f.builder.EntryAddress(Va(0x1000), 2);
  ASSERT_TRUE(pde.ok());
  f.store.Write64(*pde, 0x123456000ull | kP | kRW);  // PT at gfn 0x123456 > max_gfn
  auto t = f.Translate(Va(0x1000));
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(t.status().message(), HasSubstr("reading the PT at pa 0x123456000"));
  EXPECT_THAT(t.status().message(), HasSubstr("beyond max_gfn"));
}

TEST(WalkTest, RootWithPcidAndFlagBitsIsMasked) {
  Fixture f(PagingMode::FourLevel());
  ASSERT_TRUE(f.builder.Map(Va(0x1000), Pa(0x5000), k4K, kRW).ok());
  const Pa cr3 = f.builder.root() | 0x123 | 0x18;  // PCID 0x123, PWT|PCD
  auto t = TranslatePage(f.store, AddressContext(Va(0x1000), cr3), f.mode);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->pa, Pa(0x5000));
  // PAE: the PDPT sits 0x60 bytes into its frame; low flag bits are masked.
  Fixture pae(PagingMode::Pae());
  ASSERT_TRUE(pae.builder.Map(Va(0xc0001000), Pa(0x7000), k4K, kRW).ok());
  t = TranslatePage(pae.store, AddressContext(Va(0xc0001000), pae.builder.root() | 0x18), pae.mode);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->pa, Pa(0x7000));
}

TEST(WalkTest, SelfReferencingTableTerminates) {
  Fixture f(PagingMode::FourLevel());
  const Pa root = f.builder.root();
  f.store.Write64(root + 511 * 8, root.value() | kP | kRW);
  // 511 at every level: every level reads the PML4 itself; the page is the PML4.
  const Va va(0xfffffffffffff000ull);
  auto walk = WalkPage(f.store, AddressContext(va + 0x10, root), f.mode);
  ASSERT_TRUE(walk.ok()) << walk.status();
  EXPECT_EQ(walk->translation.pa, root + 0x10);
  EXPECT_EQ(walk->count, 4);
}

TEST(WalkTest, SharedTablesBetweenAddressSpaces) {
  MemoryPageStore store(Gfn(0xfffff));
  PageTableBuilder a(store, PagingMode::FourLevel());
  PageTableBuilder b(store, PagingMode::FourLevel());
  ASSERT_TRUE(a.Map(Va(0xffff800000000000ull), Pa(0x200000), k2M, kRW).ok());
  // b's kernel half points at a's PDPT.
  auto a_pml4e = a.EntryAddress(Va(0xffff800000000000ull), 4);
  auto b_pml4e = b.EntryAddress(Va(0xffff800000000000ull), 4);
  ASSERT_TRUE(a_pml4e.ok() && b_pml4e.ok());
  store.Write64(*b_pml4e, store.Read64(*a_pml4e));
  auto ta = TranslatePage(store, AddressContext(Va(0xffff800000001234ull), a.root()),
                          PagingMode::FourLevel());
  auto tb = TranslatePage(store, AddressContext(Va(0xffff800000001234ull), b.root()),
                          PagingMode::FourLevel());
  ASSERT_TRUE(ta.ok() && tb.ok());
  EXPECT_EQ(ta->pa, Pa(0x201234));
  EXPECT_EQ(tb->pa, Pa(0x201234));
  EXPECT_NE(ta->table_gfns[0], tb->table_gfns[0]);
  EXPECT_EQ(ta->table_gfns[1], tb->table_gfns[1]);
}

TEST(WalkTest, Legacy32Pse36AndPseOff) {
  Fixture f(PagingMode::Legacy32(/*pse=*/true));
  ASSERT_TRUE(f.builder.Map(Va(0x80000000), Pa(0x3400000000ull), k4M, kRW).ok());
  auto t = f.Translate(Va(0x80123456));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->pa, Pa(0x3400123456ull));
  EXPECT_EQ(t->page_size, k4M);
  EXPECT_TRUE(t->permissions.execute);
  // With CR4.PSE clear the PS bit is ignored: the PDE points at a page table.
  MemoryPageStore store(Gfn(0xfffff));
  PageTableBuilder b(store, PagingMode::Legacy32(true));
  ASSERT_TRUE(b.Map(Va(0x00400000), Pa(0x00800000), k4M, kRW).ok());
  store.Write32(Pa(0x00800000), 0x9000 | kP | kRW);  // entry 0 of the "page table"
  auto no_pse = TranslatePage(store, AddressContext(Va(0x00400000), b.root()),
                              PagingMode::Legacy32(/*pse=*/false));
  ASSERT_TRUE(no_pse.ok()) << no_pse.status();
  EXPECT_EQ(no_pse->page_size, k4K);
  EXPECT_EQ(no_pse->pa, Pa(0x9000));
}

TEST(WalkTest, PagingDisabledIsIdentity) {
  MemoryPageStore store(Gfn(0xff));
  auto t = TranslatePage(store, AddressContext(Va(0x1234), Pa(0)), PagingMode::Disabled());
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->pa, Pa(0x1234));
  EXPECT_EQ(store.reads(), 0u);
}

}  // namespace
}  // namespace vmi::amd64
