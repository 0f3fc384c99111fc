#include "core/vmi_core.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/testing/memory_driver.h"
#include "core/testing/test_page_tables.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmi {
namespace {

using testing::MemoryDriver;
using testing::TestArch;
using testing::TestPageTables;
using ::testing::HasSubstr;
using Op = MemoryDriver::Op;
using Core = VmiCore<MemoryDriver>;

constexpr uint64_t kFrames = 256;

class VmiCoreTest : public ::testing::Test {
 protected:
  explicit VmiCoreTest(MemoryDriver::PageMode mode = MemoryDriver::PageMode::kLive,
                       VmiCoreOptions options = {})
      : core_(MakeDriver(mode), options),
        s_(core_.driver().shared()),
        tables_(*s_, /*first_table_gfn=*/200) {}

  static MemoryDriver MakeDriver(MemoryDriver::PageMode mode) {
    MemoryDriver d(kFrames, 2);
    d.shared()->page_mode = mode;
    return d;
  }
  uint8_t* Frame(uint64_t gfn) { return s_->ram.data() + gfn * 4096; }
  void Fill(uint64_t gfn, uint8_t seed) {
    for (int i = 0; i < 4096; ++i) Frame(gfn)[i] = static_cast<uint8_t>(seed + i);
  }
  AccessContext V(uint64_t va) { return AccessContext::Virtual(Va(va), tables_.root()); }

  Core core_;
  std::shared_ptr<MemoryDriver::Shared> s_;
  TestPageTables tables_;
};

TEST_F(VmiCoreTest, PhysicalReadsOfEveryWidth) {
  const uint64_t v = 0x1122334455667788;
  std::memcpy(Frame(3) + 0x10, &v, 8);
  EXPECT_EQ(*core_.ReadU64(Pa(0x3010)), v);
  EXPECT_EQ(*core_.ReadU32(Pa(0x3010)), 0x55667788u);
  EXPECT_EQ(*core_.ReadU16(Pa(0x3012)), 0x5566u);
  EXPECT_EQ(*core_.ReadU8(Pa(0x3017)), 0x11u);
  EXPECT_EQ(*core_.ReadAddress(Pa(0x3010), 4), 0x55667788u);
  EXPECT_EQ(*core_.ReadAddress(Pa(0x3010), 8), v);
  EXPECT_EQ(*core_.ReadVa(Pa(0x3010)), Va(v));
  EXPECT_EQ(core_.ReadAddress(Pa(0x3010), 3).status().code(), absl::StatusCode::kInvalidArgument);
  struct Pair {
    uint32_t lo, hi;
  };
  auto pair = core_.ReadStruct<Pair>(Pa(0x3010));
  ASSERT_TRUE(pair.ok());
  EXPECT_EQ(pair->hi, 0x11223344u);
}

TEST_F(VmiCoreTest, VirtualReadAcrossPhysicallyScatteredPages) {
  Fill(10, 0);
  Fill(50, 100);
  Fill(7, 200);
  tables_.Map(Va(0x400000), Gfn(10));
  tables_.Map(Va(0x401000), Gfn(50));
  tables_.Map(Va(0x402000), Gfn(7));
  std::vector<uint8_t> out(4096 + 32);
  ASSERT_TRUE(core_.Read(V(0x400ff0), absl::MakeSpan(out)).ok());
  EXPECT_EQ(out[0], static_cast<uint8_t>(0xff0));
  EXPECT_EQ(out[16], static_cast<uint8_t>(100));
  EXPECT_EQ(out[16 + 4096], static_cast<uint8_t>(200));
  EXPECT_EQ(out.back(), static_cast<uint8_t>(200 + 15));
  // One translation per page: three V2P misses, no more.
  EXPECT_EQ(core_.v2p_cache().stats().misses, 3u);
  EXPECT_EQ(core_.v2p_cache().size(), 3u);
  // A u64 straddling two pages.
  uint64_t expect;
  std::memcpy(&expect, out.data() + 12, 8);
  EXPECT_EQ(*core_.ReadU64(V(0x400ffc)), expect);
}

TEST_F(VmiCoreTest, TranslationFaultPartWayNamesThePageThatFailed) {
  tables_.Map(Va(0x400000), Gfn(10));
  std::vector<uint8_t> out(64);
  absl::Status s = core_.Read(V(0x400fe0), absl::MakeSpan(out));
  ASSERT_FALSE(s.ok());
  auto fault = GetTranslationFault(s);
  ASSERT_TRUE(fault.has_value()) << s;
  EXPECT_EQ(fault->va, Va(0x401000));
  EXPECT_EQ(fault->root, tables_.root());
  // The failed walk is cached like a translation: a mapping the guest makes
  // (behind the core's back) is seen once the V2P cache is flushed, as the
  // event loop does per event.
  EXPECT_EQ(core_.v2p_cache().negative_size(), 1u);
  tables_.Map(Va(0x401000), Gfn(11));
  EXPECT_TRUE(IsTranslationFault(core_.Read(V(0x400fe0), absl::MakeSpan(out))));
  core_.FlushV2pRoot(tables_.root());
  EXPECT_TRUE(core_.Read(V(0x400fe0), absl::MakeSpan(out)).ok());
}

TEST_F(VmiCoreTest, FaultsAreCompactUntilAskedFor) {
  tables_.Map(Va(0x400000), Gfn(10));
  FaultOr<uint64_t> r = core_.ReadU64(V(0x401008));
  ASSERT_FALSE(r.ok());
  const TranslationFault* f = r.fault();
  ASSERT_NE(f, nullptr);
  EXPECT_TRUE(f->is_page_fault());
  EXPECT_EQ(f->ctx, AddressContext(Va(0x401008), tables_.root()));
  EXPECT_EQ(f->cause.level, 2);  // TestArch's leaf level (1 + its index)
  EXPECT_EQ(f->cause.entry, 0u);
  EXPECT_EQ(f->cause.entry_address, tables_.PteAddress(Va(0x401000)));
  EXPECT_EQ(r.translation_fault(), AddressContext(Va(0x401008), tables_.root()));
  // The status, built on request, is the typed translation fault.
  EXPECT_EQ(GetTranslationFault(r.status()), AddressContext(Va(0x401008), tables_.root()));
  EXPECT_THAT(r.status().message(), HasSubstr("level 1 entry not present"));
  absl::StatusOr<uint64_t> as_absl = core_.ReadU64(V(0x401010));
  EXPECT_TRUE(IsTranslationFault(as_absl.status()));
  // The cached fault is served with the exact address asked for.
  EXPECT_EQ(core_.Translate(AddressContext(Va(0x401ff8), tables_.root())).fault()->ctx.va,
            Va(0x401ff8));
  EXPECT_EQ(core_.v2p_cache().negative_size(), 1u);
}

TEST_F(VmiCoreTest, NegativeEntryDroppedByAWriteToItsTable) {
  Fill(11, 42);
  tables_.Map(Va(0x400000), Gfn(10));
  EXPECT_TRUE(IsTranslationFault(core_.ReadU8(V(0x401000)).status()));
  ASSERT_EQ(core_.v2p_cache().negative_size(), 1u);
  // Mapping the page by a write through the core needs no flush.
  ASSERT_TRUE(core_.WriteU64(tables_.PteAddress(Va(0x401000)), (11ull << 12) | TestArch::kPresent).ok());
  EXPECT_EQ(core_.v2p_cache().negative_size(), 0u);
  EXPECT_EQ(*core_.ReadU8(V(0x401000)), 42);
}

TEST_F(VmiCoreTest, FaultCachingCanBeTurnedOff) {
  tables_.Map(Va(0x400000), Gfn(10));
  EXPECT_FALSE(core_.ReadU8(V(0x401000)).ok());
  EXPECT_EQ(core_.v2p_cache().negative_size(), 1u);
  core_.SetCacheTranslationFaults(false);
  EXPECT_EQ(core_.v2p_cache().negative_size(), 0u);
  EXPECT_FALSE(core_.ReadU8(V(0x401000)).ok());
  EXPECT_EQ(core_.v2p_cache().negative_size(), 0u);
  // Nothing about a failure is cached now: a mapping made behind the core's
  // back is seen at once.
  tables_.Map(Va(0x401000), Gfn(11));
  EXPECT_TRUE(core_.ReadU8(V(0x401000)).ok());
}

TEST_F(VmiCoreTest, HotVirtualReadsHitTheTlb) {
  Fill(10, 3);
  tables_.Map(Va(0x400000), Gfn(10));
  EXPECT_EQ(*core_.ReadU8(V(0x400000)), 3);
  // The first read walked and fetched: a page enters the TLB on the first
  // read that finds it in both caches.
  EXPECT_EQ(core_.tlb().size(), 0u);
  EXPECT_EQ(*core_.ReadU8(V(0x400000)), 3);
  EXPECT_EQ(core_.tlb().size(), 1u);
  SoftTlb::View view;
  ASSERT_TRUE(core_.tlb().Peek(tables_.root(), Va(0x400abc), &view));
  EXPECT_EQ(view.gfn, Gfn(10));
  EXPECT_EQ(view.page, Frame(10));
  EXPECT_TRUE(view.permissions.write);
  core_.tlb().ResetStats();
  const uint64_t reads = core_.driver().calls(Op::kReadPage);
  const uint64_t v2p_hits = core_.v2p_cache().stats().hits;
  for (int i = 0; i < 5; ++i) EXPECT_EQ(*core_.ReadU8(V(0x400000 + i)), 3 + i);
  EXPECT_EQ(core_.tlb().stats().hits, 5u);
  EXPECT_EQ(core_.v2p_cache().stats().hits, v2p_hits + 5);  // a TLB hit is a hit of both caches
  EXPECT_EQ(core_.driver().calls(Op::kReadPage), reads);
  // A guest write to the live page is seen through the TLB.
  Frame(10)[7] = 0x99;
  EXPECT_EQ(*core_.ReadU8(V(0x400007)), 0x99);
}

TEST_F(VmiCoreTest, TlbEntryGoesWithAPageTableWrite) {
  Fill(10, 1);
  Fill(20, 77);
  tables_.Map(Va(0x400000), Gfn(10));
  EXPECT_EQ(*core_.ReadU8(V(0x400000)), 1);
  EXPECT_EQ(*core_.ReadU8(V(0x400000)), 1);
  ASSERT_TRUE(core_.tlb().Peek(tables_.root(), Va(0x400000)));
  ASSERT_TRUE(core_.WriteU64(tables_.PteAddress(Va(0x400000)), (20ull << 12) | TestArch::kPresent).ok());
  EXPECT_FALSE(core_.tlb().Peek(tables_.root(), Va(0x400000)));
  EXPECT_EQ(*core_.ReadU8(V(0x400000)), 77);
  ASSERT_TRUE(core_.WriteU64(tables_.PteAddress(Va(0x400000)), 0).ok());
  EXPECT_TRUE(IsTranslationFault(core_.ReadU8(V(0x400000)).status()));
}

TEST_F(VmiCoreTest, TlbFollowsEveryFlush) {
  Fill(10, 1);
  Fill(11, 2);
  Fill(12, 3);
  tables_.Map(Va(0x400000), Gfn(10));
  // Two reads: the second enters the page in the TLB (or hits it).
  auto read = [&] {
    const uint8_t first = *core_.ReadU8(V(0x400000));
    EXPECT_EQ(*core_.ReadU8(V(0x400000)), first);
    return first;
  };
  auto remap = [&](uint64_t gfn) { tables_.Map(Va(0x400000), Gfn(gfn)); };  // as the guest would
  EXPECT_EQ(read(), 1);

  remap(11);
  EXPECT_EQ(read(), 1);  // not flushed yet: the guest's change is not seen (documented)
  core_.FlushV2pRoot(tables_.root());
  EXPECT_EQ(core_.tlb().size(), 0u);
  EXPECT_EQ(read(), 2);

  remap(12);
  EXPECT_TRUE(core_.FlushV2pEntry(AddressContext(Va(0x400123), tables_.root())));
  EXPECT_EQ(read(), 3);

  remap(10);
  core_.FlushV2pCache();
  EXPECT_EQ(read(), 1);

  // A page-cache flush drops the frame's TLB entries; the page is fetched again.
  const uint64_t reads = core_.driver().calls(Op::kReadPage);
  core_.FlushPageCacheEntry(Gfn(10));
  EXPECT_EQ(core_.tlb().size(), 0u);
  EXPECT_EQ(read(), 1);
  EXPECT_EQ(core_.driver().calls(Op::kReadPage), reads + 1);
  core_.FlushPageCache();
  EXPECT_EQ(core_.tlb().size(), 0u);
  EXPECT_EQ(read(), 1);
  EXPECT_EQ(core_.tlb().size(), 1u);
}

TEST_F(VmiCoreTest, TlbFollowsDisableAndReenable) {
  Fill(10, 1);
  Fill(11, 2);
  tables_.Map(Va(0x400000), Gfn(10));
  auto read = [&] {
    const uint8_t first = *core_.ReadU8(V(0x400000));
    EXPECT_EQ(*core_.ReadU8(V(0x400000)), first);
    return first;
  };
  EXPECT_EQ(read(), 1);

  core_.v2p_cache().SetEnabled(false);
  EXPECT_EQ(core_.tlb().size(), 0u);
  tables_.Map(Va(0x400000), Gfn(11));
  EXPECT_EQ(read(), 2);  // every read walks now
  EXPECT_EQ(core_.tlb().size(), 0u);
  core_.v2p_cache().SetEnabled(true);
  EXPECT_EQ(read(), 2);
  EXPECT_EQ(core_.tlb().size(), 1u);

  core_.page_cache().SetEnabled(false);
  EXPECT_EQ(core_.tlb().size(), 0u);
  EXPECT_EQ(read(), 2);
  EXPECT_EQ(core_.tlb().size(), 0u);
  core_.page_cache().SetEnabled(true);
  EXPECT_EQ(read(), 2);
  EXPECT_EQ(core_.tlb().size(), 1u);

  core_.tlb().SetEnabled(false);
  EXPECT_EQ(core_.tlb().size(), 0u);
  EXPECT_EQ(read(), 2);
  EXPECT_EQ(core_.tlb().size(), 0u);
  core_.tlb().SetEnabled(true);
  EXPECT_EQ(read(), 2);
  EXPECT_EQ(core_.tlb().size(), 1u);

  core_.page_cache().Resize(0);  // a cache of capacity 0 holds nothing, so neither may the TLB
  EXPECT_EQ(core_.tlb().size(), 0u);
  EXPECT_EQ(read(), 2);
  EXPECT_EQ(core_.tlb().size(), 0u);
}

TEST_F(VmiCoreTest, TlbEntriesLeaveWithEvictions) {
  core_.page_cache().Resize(3);  // two table pages + one data page
  for (uint64_t i = 0; i < 4; ++i) {
    Fill(10 + i, static_cast<uint8_t>(i));
    tables_.Map(Va(0x400000 + i * 4096), Gfn(10 + i));
  }
  for (uint64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(*core_.ReadU8(V(0x400000 + i * 4096)), i);
    // Only pages the page cache holds may be in the TLB.
    for (uint64_t j = 0; j < 4; ++j) {
      if (core_.tlb().Peek(tables_.root(), Va(0x400000 + j * 4096))) {
        EXPECT_TRUE(core_.page_cache().Contains(Gfn(10 + j))) << j;
      }
    }
  }
  core_.v2p_cache().Resize(1);
  EXPECT_LE(core_.tlb().size(), 1u);
  for (uint64_t i = 0; i < 4; ++i) EXPECT_EQ(*core_.ReadU8(V(0x400000 + i * 4096)), i);
}

TEST_F(VmiCoreTest, PhysicalReadsDoNotUseTheTlb) {
  Fill(5, 9);
  EXPECT_EQ(*core_.ReadU8(Pa(0x5000)), 9);
  EXPECT_EQ(core_.tlb().size(), 0u);
}

TEST_F(VmiCoreTest, CachesCountHitsAndMisses) {
  tables_.Map(Va(0x400000), Gfn(10));
  ASSERT_TRUE(core_.ReadU64(V(0x400008)).ok());
  // Miss: one V2P miss; page-cache misses for the two table pages and the data page.
  EXPECT_EQ(core_.v2p_cache().stats().misses, 1u);
  EXPECT_EQ(core_.page_cache().stats().misses, 3u);
  const uint64_t reads = core_.driver().calls(Op::kReadPage);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(core_.ReadU64(V(0x400010 + 8 * i)).ok());
  EXPECT_EQ(core_.v2p_cache().stats().hits, 10u);
  EXPECT_EQ(core_.driver().calls(Op::kReadPage), reads);  // all from the page cache
  EXPECT_EQ(*core_.Translate(AddressContext(Va(0x400123), tables_.root())), Pa(0xa123));
}

TEST_F(VmiCoreTest, StringsWithLimitsAndAcrossPages) {
  tables_.Map(Va(0x400000), Gfn(10));
  tables_.Map(Va(0x401000), Gfn(11));
  std::memcpy(Frame(10) + 4090, "hello,", 6);
  std::memcpy(Frame(11), " world", 7);
  EXPECT_EQ(*core_.ReadString(V(0x400000 + 4090)), "hello, world");
  EXPECT_EQ(*core_.ReadString(V(0x400000 + 4090), 5), "hello");
  EXPECT_EQ(*core_.ReadString(V(0x400000 + 4090), 0), "");
  // A string ending before an unmapped page does not fault.
  std::memcpy(Frame(11) + 4090, "end", 4);
  EXPECT_EQ(*core_.ReadString(V(0x401000 + 4090)), "end");
  // Running into the unmapped page does.
  std::memcpy(Frame(11) + 4090, "endless", 6);
  EXPECT_TRUE(IsTranslationFault(core_.ReadString(V(0x401000 + 4090)).status()));

  const char16_t text[] = u"p\u00e9\U0001F600!";  // 5 code units + NUL
  std::memcpy(Frame(10) + 4092, text, sizeof(text));  // straddles the page end
  std::memcpy(Frame(11), reinterpret_cast<const uint8_t*>(text) + 4, sizeof(text) - 4);
  EXPECT_EQ(*core_.ReadWString(V(0x400000 + 4092)), "p\xc3\xa9\xf0\x9f\x98\x80!");
  EXPECT_EQ(*core_.ReadWString(V(0x400000 + 4092), 2), "p\xc3\xa9");
}

TEST_F(VmiCoreTest, WritesPhysicalAndVirtualAcrossPages) {
  tables_.Map(Va(0x400000), Gfn(10));
  tables_.Map(Va(0x401000), Gfn(30));
  ASSERT_TRUE(core_.WriteU64(Pa(0x5008), 0xdeadbeef).ok());
  EXPECT_EQ(*core_.ReadU64(Pa(0x5008)), 0xdeadbeefu);
  std::vector<uint8_t> data(100, 0xab);
  ASSERT_TRUE(core_.Write(V(0x400fd0), data).ok());
  EXPECT_EQ(Frame(10)[4095], 0xab);
  EXPECT_EQ(Frame(30)[100 - 0x30 - 1], 0xab);
  EXPECT_EQ(Frame(30)[100 - 0x30], 0x00);
  EXPECT_EQ(*core_.ReadU8(V(0x401000)), 0xab);
  ASSERT_TRUE(core_.WriteAddress(V(0x400000), 4, 0x1234567890).ok());
  EXPECT_EQ(*core_.ReadU64(V(0x400000)), 0x34567890u);
}

TEST_F(VmiCoreTest, WriteWithTranslationFaultWritesNothing) {
  tables_.Map(Va(0x400000), Gfn(10));
  std::vector<uint8_t> data(64, 0xcd);
  absl::Status s = core_.Write(V(0x400fe0), data);
  EXPECT_EQ(GetTranslationFault(s), AddressContext(Va(0x401000), tables_.root()));
  EXPECT_EQ(Frame(10)[0xfe0], 0);
  EXPECT_EQ(core_.driver().calls(Op::kWritePage), 0u);
}

TEST_F(VmiCoreTest, DriverFailingMidWriteRestoresEarlierPages) {
  tables_.Map(Va(0x400000), Gfn(10));
  tables_.Map(Va(0x401000), Gfn(11));
  Fill(10, 1);
  std::vector<uint8_t> before(Frame(10), Frame(10) + 4096);
  core_.driver().FailNth(Op::kWritePage, 2, absl::UnavailableError("xc_map_foreign: EIO"));
  std::vector<uint8_t> data(64, 0xcd);
  absl::Status s = core_.Write(V(0x400fe0), data);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("page 2 of 2"));
  EXPECT_THAT(s.message(), HasSubstr("xc_map_foreign: EIO"));
  EXPECT_EQ(std::vector<uint8_t>(Frame(10), Frame(10) + 4096), before);
  EXPECT_EQ(*core_.ReadU8(V(0x400fe0)), before[0xfe0]);
}

TEST_F(VmiCoreTest, WritingAPteThroughTheCoreIsSeenByTheNextRead) {
  Fill(10, 1);
  Fill(20, 77);
  tables_.Map(Va(0x400000), Gfn(10));
  EXPECT_EQ(*core_.ReadU8(V(0x400000)), 1);
  EXPECT_EQ(core_.v2p_cache().size(), 1u);
  // Remap the page by writing its PTE through the core.
  const Pa pte = tables_.PteAddress(Va(0x400000));
  ASSERT_TRUE(core_.WriteU64(pte, (20ull << 12) | TestArch::kPresent).ok());
  EXPECT_EQ(core_.v2p_cache().size(), 0u);
  EXPECT_EQ(*core_.ReadU8(V(0x400000)), 77);
  // Unmapping by a write is seen too.
  ASSERT_TRUE(core_.WriteU64(pte, 0).ok());
  EXPECT_TRUE(IsTranslationFault(core_.ReadU8(V(0x400000)).status()));
}

TEST_F(VmiCoreTest, WritingAnOrdinaryFrameKeepsTranslations) {
  tables_.Map(Va(0x400000), Gfn(10));
  ASSERT_TRUE(core_.ReadU8(V(0x400000)).ok());
  ASSERT_TRUE(core_.WriteU8(V(0x400000), 9).ok());
  EXPECT_EQ(core_.v2p_cache().size(), 1u);
  EXPECT_EQ(core_.v2p_cache().stats().invalidations, 0u);
  EXPECT_EQ(*core_.ReadU8(V(0x400000)), 9);
}

TEST_F(VmiCoreTest, FailedReadIsNeverCached) {
  core_.driver().FailNth(Op::kReadPage, 1, absl::UnavailableError("map failed"));
  absl::StatusOr<uint64_t> r = core_.ReadU64(Pa(0x4000));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("map failed"));
  EXPECT_FALSE(core_.page_cache().Contains(Gfn(4)));
  std::memcpy(Frame(4), "\x2a", 1);
  EXPECT_EQ(*core_.ReadU8(Pa(0x4000)), 0x2a);
  EXPECT_TRUE(core_.page_cache().Contains(Gfn(4)));
}

TEST_F(VmiCoreTest, DriverFailingDuringAWalkPoisonsNothing) {
  tables_.Map(Va(0x400000), Gfn(10));
  // Call 1 reads the root, call 2 the leaf table: fail that one.
  core_.driver().FailNth(Op::kReadPage, 2, absl::UnavailableError("EIO"));
  auto r = core_.ReadU8(V(0x400000));
  ASSERT_FALSE(r.ok());
  EXPECT_FALSE(IsTranslationFault(r.status()));
  EXPECT_THAT(r.status().message(), HasSubstr("walk level 1"));
  EXPECT_EQ(core_.v2p_cache().size(), 0u);
  EXPECT_TRUE(core_.ReadU8(V(0x400000)).ok());
}

TEST_F(VmiCoreTest, BadGfnIsAClearError) {
  auto r = core_.ReadU8(Pa(kFrames << 12));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(r.status().message(), HasSubstr("read_page(gfn=0x100)"));
}

TEST_F(VmiCoreTest, FlushVariants) {
  TestPageTables other(*s_, 180);
  tables_.Map(Va(0x400000), Gfn(10));
  tables_.Map(Va(0x401000), Gfn(11));
  other.Map(Va(0x400000), Gfn(12));
  ASSERT_TRUE(core_.ReadU8(V(0x400000)).ok());
  ASSERT_TRUE(core_.ReadU8(V(0x401000)).ok());
  ASSERT_TRUE(core_.ReadU8(AccessContext::Virtual(Va(0x400000), other.root())).ok());
  EXPECT_EQ(core_.v2p_cache().size(), 3u);
  EXPECT_TRUE(core_.FlushV2pEntry(AddressContext(Va(0x401abc), tables_.root())));
  EXPECT_EQ(core_.v2p_cache().size(), 2u);
  EXPECT_EQ(core_.FlushV2pRoot(other.root()), 1u);
  EXPECT_EQ(core_.v2p_cache().size(), 1u);
  core_.FlushV2pCache();
  EXPECT_EQ(core_.v2p_cache().size(), 0u);
  EXPECT_GT(core_.page_cache().size(), 0u);
  core_.FlushPageCacheEntry(Gfn(10));
  EXPECT_FALSE(core_.page_cache().Contains(Gfn(10)));
  core_.FlushPageCache();
  EXPECT_EQ(core_.page_cache().size(), 0u);
}

TEST_F(VmiCoreTest, SmallPageCacheEvicts) {
  core_.page_cache().Resize(2);
  for (uint64_t g = 1; g <= 5; ++g) ASSERT_TRUE(core_.ReadU8(Pa(g << 12)).ok());
  EXPECT_EQ(core_.page_cache().size(), 2u);
  EXPECT_EQ(core_.page_cache().stats().evictions, 3u);
}

TEST_F(VmiCoreTest, DisabledCachesStillRead) {
  core_.page_cache().SetEnabled(false);
  core_.v2p_cache().SetEnabled(false);
  Fill(10, 5);
  tables_.Map(Va(0x400000), Gfn(10));
  std::vector<uint8_t> out(8192);
  tables_.Map(Va(0x401000), Gfn(10));
  ASSERT_TRUE(core_.Read(V(0x400000), absl::MakeSpan(out)).ok());
  EXPECT_EQ(out[4096], 5);
  EXPECT_EQ(core_.page_cache().size(), 0u);
  EXPECT_EQ(core_.v2p_cache().size(), 0u);
  // Each page: two table reads plus the data page.
  EXPECT_EQ(core_.driver().calls(Op::kReadPage), 6u);
}

TEST_F(VmiCoreTest, WalkOnRequestBypassesTheV2pCache) {
  tables_.Map(Va(0x400000), Gfn(10));
  auto walk = core_.Walk(AddressContext(Va(0x400010), tables_.root()));
  ASSERT_TRUE(walk.ok());
  EXPECT_EQ(walk->count, 2);
  EXPECT_EQ(walk->translation.pa, Pa(0xa010));
  EXPECT_EQ(core_.v2p_cache().size(), 0u);
  auto t = core_.TranslatePage(AddressContext(Va(0x400010), tables_.root()));
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(t->permissions.write);
  EXPECT_FALSE(t->permissions.user);
}

TEST_F(VmiCoreTest, PauseGuardResumesOnceAndMoves) {
  {
    auto guard = core_.PauseScoped();
    ASSERT_TRUE(guard.ok());
    EXPECT_EQ(s_->paused, 1);
    Core::PauseGuard moved = *std::move(guard);
    EXPECT_TRUE(moved.active());
    EXPECT_EQ(s_->paused, 1);
  }
  EXPECT_EQ(s_->paused, 0);
  auto guard = core_.PauseScoped();
  ASSERT_TRUE(guard.ok());
  EXPECT_TRUE(guard->Release().ok());
  EXPECT_FALSE(guard->active());
  EXPECT_EQ(s_->paused, 0);
  core_.driver().FailNth(Op::kPause, 3, absl::FailedPreconditionError("domain gone"));
  EXPECT_EQ(core_.PauseScoped().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s_->paused, 0);
}

TEST_F(VmiCoreTest, PassThroughs) {
  ASSERT_TRUE(core_.SetMemoryAccess(Gfn(3), View(0), MemoryAccess::RX()).ok());
  EXPECT_EQ(*core_.GetMemoryAccess(Gfn(3), View(0)), MemoryAccess::RX());
  TestArch::Registers regs{};
  regs.root = 0x1234000;
  ASSERT_TRUE(core_.SetRegisters(VcpuId(1), regs).ok());
  EXPECT_EQ(core_.GetRegisters(VcpuId(1))->root, 0x1234000u);
  EXPECT_EQ(core_.GetRegisters(VcpuId(7)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(core_.Info()->vcpus, 2);
  ASSERT_TRUE(core_.FreeGfn(Gfn(3)).ok());
}

class OwnedPagesTest : public VmiCoreTest {
 protected:
  OwnedPagesTest() : VmiCoreTest(MemoryDriver::PageMode::kOwned) {}
};

TEST_F(OwnedPagesTest, WriteThroughCoreUpdatesTheCachedCopy) {
  EXPECT_EQ(*core_.ReadU8(Pa(0x3000)), 0);
  ASSERT_TRUE(core_.page_cache().Contains(Gfn(3)));
  ASSERT_TRUE(core_.WriteU8(Pa(0x3000), 0x5a).ok());
  EXPECT_EQ(*core_.ReadU8(Pa(0x3000)), 0x5a);
  // A change behind the core's back (the guest) is not seen by an owned copy
  // until the entry is flushed: that is what the per-event flush is for.
  Frame(3)[0] = 0x77;
  EXPECT_EQ(*core_.ReadU8(Pa(0x3000)), 0x5a);
  core_.FlushPageCacheEntry(Gfn(3));
  EXPECT_EQ(*core_.ReadU8(Pa(0x3000)), 0x77);
}

TEST_F(OwnedPagesTest, OwnedCopiesAreNeverInTheTlb) {
  Fill(10, 1);
  tables_.Map(Va(0x400000), Gfn(10));
  EXPECT_EQ(*core_.ReadU8(V(0x400000)), 1);
  EXPECT_EQ(*core_.ReadU8(V(0x400000)), 1);
  EXPECT_EQ(core_.tlb().size(), 0u);
  EXPECT_EQ(core_.tlb().stats().hits, 0u);
  // A write through the core replaces the copy; the next read sees it.
  ASSERT_TRUE(core_.WriteU8(V(0x400000), 5).ok());
  EXPECT_EQ(*core_.ReadU8(V(0x400000)), 5);
  // A guest write is seen after the page is flushed.
  Frame(10)[0] = 6;
  core_.FlushPageCacheEntry(Gfn(10));
  EXPECT_EQ(*core_.ReadU8(V(0x400000)), 6);
}

TEST_F(OwnedPagesTest, PteWriteWithOwnedTablePages) {
  Fill(10, 1);
  Fill(20, 77);
  tables_.Map(Va(0x400000), Gfn(10));
  EXPECT_EQ(*core_.ReadU8(V(0x400000)), 1);
  ASSERT_TRUE(core_.WriteU64(tables_.PteAddress(Va(0x400000)), (20ull << 12) | 1).ok());
  EXPECT_EQ(*core_.ReadU8(V(0x400000)), 77);
}

// Random reads, writes through the core, guest changes (each followed by the
// flush the coherence rules ask for), flushes, toggles and resizes, against
// the truth read straight from guest RAM: no read may ever be stale.
class CoherenceTest : public VmiCoreTest,
                      public ::testing::WithParamInterface<MemoryDriver::PageMode> {
 protected:
  CoherenceTest() : VmiCoreTest(GetParam()) {}

  // What a read of `va` must give: the byte, or nullopt for a fault.
  std::optional<uint8_t> Truth(uint64_t va) {
    const uint64_t pde = tables_.Get(tables_.root() + ((va >> 21) & 511) * 8);
    if (!(pde & TestArch::kPresent)) return std::nullopt;
    const uint64_t pte = tables_.Get(Pa(pde & TestArch::kFrameMask) + ((va >> 12) & 511) * 8);
    if (!(pte & TestArch::kPresent)) return std::nullopt;
    return s_->ram[(pte & TestArch::kFrameMask) + (va & 0xfff)];
  }
};

TEST_P(CoherenceTest, NoStaleReadUnderRandomOperations) {
  const bool owned = GetParam() == MemoryDriver::PageMode::kOwned;
  constexpr int kPages = 12;
  auto va_of = [](int i) { return 0x400000 + uint64_t(i) * 4096; };
  std::mt19937 rng(7);
  for (int i = 0; i < kPages; ++i) {
    Fill(10 + i, static_cast<uint8_t>(i * 16));
    tables_.Map(Va(va_of(i)), Gfn(10 + i));
  }
  core_.page_cache().Resize(5);
  core_.v2p_cache().Resize(4);
  int reads = 0;
  for (int step = 0; step < 20000; ++step) {
    const int i = rng() % kPages;
    const uint64_t va = va_of(i) + (rng() % 4096);
    switch (rng() % 12) {
      case 0: {  // remap or unmap through the core: no flush needed
        const uint64_t pte = rng() % 4 == 0 ? 0 : ((10 + rng() % 30) << 12) | TestArch::kPresent;
        ASSERT_TRUE(core_.WriteU64(tables_.PteAddress(Va(va)), pte).ok());
        break;
      }
      case 1: {  // a data write through the core
        const uint8_t b = static_cast<uint8_t>(rng());
        const absl::Status w = core_.WriteU8(V(va), b);
        ASSERT_EQ(w.ok(), Truth(va).has_value()) << w;
        break;
      }
      case 2: {  // the guest writes data; owned copies need the page flushed
        const uint64_t gfn = 10 + rng() % 30;
        Frame(gfn)[rng() % 4096] = static_cast<uint8_t>(rng());
        if (owned) core_.FlushPageCacheEntry(Gfn(gfn));
        break;
      }
      case 3: {  // the guest remaps a page, then the V2P flush the rules ask for
        if (rng() % 3 == 0) {
          tables_.Unmap(Va(va));
        } else {
          tables_.Map(Va(va), Gfn(10 + rng() % 30));
        }
        switch (rng() % 3) {
          case 0: core_.FlushV2pCache(); break;
          case 1: core_.FlushV2pRoot(tables_.root()); break;
          case 2: core_.FlushV2pEntry(AddressContext(Va(va), tables_.root())); break;
        }
        if (owned) core_.FlushPageCacheEntry(Gfn(tables_.PteAddress(Va(va)).value() >> 12));
        break;
      }
      case 4:
        if (rng() % 2) {
          core_.FlushPageCache();
        } else {
          core_.FlushPageCacheEntry(Gfn(10 + rng() % 30));
        }
        break;
      case 5: {
        const int which = rng() % 4;
        const bool on = rng() % 3 != 0;
        if (which == 0) core_.page_cache().SetEnabled(on);
        if (which == 1) core_.v2p_cache().SetEnabled(on);
        if (which == 2) core_.tlb().SetEnabled(on);
        if (which == 3) core_.SetCacheTranslationFaults(on);
        break;
      }
      case 6:
        if (rng() % 2) {
          core_.page_cache().Resize(2 + rng() % 6);
        } else {
          core_.v2p_cache().Resize(rng() % 6);
        }
        break;
      default: {
        ++reads;
        const std::optional<uint8_t> truth = Truth(va);
        FaultOr<uint8_t> got = core_.ReadU8(V(va));
        ASSERT_EQ(got.ok(), truth.has_value()) << "step " << step << " va " << std::hex << va;
        if (truth) {
          ASSERT_EQ(*got, *truth) << "step " << step << " va " << std::hex << va;
        } else {
          ASSERT_TRUE(got.is_translation_fault());
        }
        break;
      }
    }
  }
  EXPECT_GT(reads, 5000);
  EXPECT_GT(core_.v2p_cache().stats().evictions, 0u);
  EXPECT_GT(core_.page_cache().stats().evictions, 0u);
  if (!owned) {
    EXPECT_GT(core_.tlb().stats().hits, 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(BothPageKinds, CoherenceTest,
                         ::testing::Values(MemoryDriver::PageMode::kLive,
                                           MemoryDriver::PageMode::kOwned));

// A driver whose pages are live mappings that are really unmapped when their
// last handle goes, like Xen's foreign mappings: guest RAM is a memfd, each
// ReadPage maps the frame afresh and the release munmaps it. A stale pointer
// into a released page faults (SIGSEGV) instead of reading on.
class MappingDriver {
 public:
  using Architecture = TestArch;
  struct Shared {
    int fd = -1;
    uint8_t* ram = nullptr;  // the test's own view of all frames
    uint64_t frames = 0;
    int mapped = 0;          // pages handed out and not yet released
    ~Shared() {
      if (ram != nullptr) munmap(ram, frames * 4096);
      if (fd >= 0) close(fd);
    }
  };
  explicit MappingDriver(uint64_t frames) : s_(std::make_shared<Shared>()) {
    s_->frames = frames;
    s_->fd = memfd_create("vmi-core-test-ram", 0);
    if (s_->fd < 0 || ftruncate(s_->fd, frames * 4096) != 0) std::abort();
    void* p = mmap(nullptr, frames * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, s_->fd, 0);
    if (p == MAP_FAILED) std::abort();
    s_->ram = static_cast<uint8_t*>(p);
  }
  std::shared_ptr<Shared> shared() const { return s_; }
  absl::StatusOr<VmiInfo> Info() const { return VmiInfo{4096, 12, Gfn(s_->frames - 1), 1}; }
  absl::StatusOr<MappedPage> ReadPage(Gfn gfn) {
    if (gfn.value() >= s_->frames) return absl::OutOfRangeError("read_page: beyond RAM");
    void* p = mmap(nullptr, 4096, PROT_READ, MAP_SHARED, s_->fd, gfn.value() * 4096);
    if (p == MAP_FAILED) return absl::InternalError("read_page: mmap failed");
    ++s_->mapped;
    std::shared_ptr<Shared> s = s_;
    return MappedPage::Live(gfn, static_cast<uint8_t*>(p), 4096, [s, p] {
      munmap(p, 4096);
      --s->mapped;
    });
  }

 private:
  std::shared_ptr<Shared> s_;
};

TEST(MappedPagesTest, EvictionUnderATlbEntryNeverServesAReleasedMapping) {
  MappingDriver driver(64);
  std::shared_ptr<MappingDriver::Shared> s = driver.shared();
  auto set = [&](uint64_t pa, uint64_t v) { std::memcpy(s->ram + pa, &v, 8); };
  // Root table at frame 40, one leaf table at 41, data frames 10..13 at
  // va 0x400000 + i * 4096.
  set(40 * 4096 + 2 * 8, (41ull << 12) | TestArch::kPresent | TestArch::kWrite);
  for (uint64_t i = 0; i < 4; ++i) {
    set(41 * 4096 + i * 8, ((10 + i) << 12) | TestArch::kPresent);
    s->ram[(10 + i) * 4096] = static_cast<uint8_t>(0x10 + i);
  }
  VmiCoreOptions options;
  options.page_cache_capacity = 3;  // the two tables and one data page
  VmiCore<MappingDriver> core(std::move(driver), options);
  const Pa root(40 * 4096);
  auto v = [&](uint64_t i) { return AccessContext::Virtual(Va(0x400000 + i * 4096), root); };

  EXPECT_EQ(*core.ReadU8(v(0)), 0x10);
  EXPECT_EQ(*core.ReadU8(v(0)), 0x10);
  ASSERT_TRUE(core.tlb().Peek(root, Va(0x400000)));
  for (uint64_t i = 1; i < 4; ++i) EXPECT_EQ(*core.ReadU8(v(i)), 0x10 + i);
  // Frame 10's page was evicted and its mapping released: the TLB entry went
  // with it.
  EXPECT_FALSE(core.page_cache().Contains(Gfn(10)));
  EXPECT_FALSE(core.tlb().Peek(root, Va(0x400000)));
  EXPECT_LE(s->mapped, 3);
  s->ram[10 * 4096] = 0x42;
  EXPECT_EQ(*core.ReadU8(v(0)), 0x42);  // a stale pointer would have faulted here
  // The same through a page-cache flush of that frame.
  core.FlushPageCacheEntry(Gfn(10));
  s->ram[10 * 4096] = 0x43;
  EXPECT_EQ(*core.ReadU8(v(0)), 0x43);
  // And through a resize that drops it.
  core.page_cache().Resize(0);
  EXPECT_EQ(s->mapped, 0);
  EXPECT_EQ(core.tlb().size(), 0u);
  EXPECT_EQ(*core.ReadU8(v(0)), 0x43);
}

// Capabilities gate the API at compile time.
class ReadOnly {
 public:
  using Architecture = TestArch;
  absl::StatusOr<VmiInfo> Info() const { return VmiInfo{}; }
  absl::StatusOr<MappedPage> ReadPage(Gfn) { return absl::NotFoundError("none"); }
};
template <typename C>
concept CanWrite = requires(C& c) { c.WriteU8(AccessContext(Pa(0)), uint8_t{0}); };
template <typename C>
concept CanPause = requires(C& c) { c.Pause(); };
static_assert(!CanWrite<VmiCore<ReadOnly>>);
static_assert(!CanPause<VmiCore<ReadOnly>>);
static_assert(CanWrite<Core>);
static_assert(CanPause<Core>);

}  // namespace
}  // namespace vmi
