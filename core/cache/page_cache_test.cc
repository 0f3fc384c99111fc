#include "core/cache/page_cache.h"

#include <cstdint>
#include <optional>
#include <random>
#include <vector>

#include "core/cache/internal/reference_clock.h"
#include "core/mapped_page.h"
#include "core/types.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmi {
namespace {

MappedPage OwnedPage(uint64_t gfn, uint8_t fill = 0xab, size_t size = 4096) {
  return MappedPage::Owned(Gfn(gfn), std::vector<uint8_t>(size, fill));
}

// Live pages over one static buffer: `tag` picks the byte a page starts at, so
// a test can tell which page it got back without allocating page copies.
uint8_t g_ram[1 << 16];
MappedPage LivePage(uint64_t gfn, uint32_t tag) {
  return MappedPage::Live(Gfn(gfn), g_ram + (tag % sizeof(g_ram)), 1);
}

// The keys among `keys` that the cache holds.
std::vector<uint64_t> Held(const PageCache& cache, std::vector<uint64_t> keys) {
  std::vector<uint64_t> held;
  for (uint64_t k : keys) {
    if (cache.Contains(Gfn(k))) held.push_back(k);
  }
  return held;
}

TEST(PageCacheTest, MissInsertHitAccounting) {
  PageCache cache(4);
  EXPECT_EQ(cache.Find(Gfn(1)), nullptr);
  const MappedPage& stored = cache.Insert(Gfn(1), OwnedPage(1, 0x11));
  EXPECT_TRUE(stored.valid());
  EXPECT_EQ(stored.gfn(), Gfn(1));
  const MappedPage* hit = cache.Find(Gfn(1));
  ASSERT_NE(hit, nullptr);
  EXPECT_EQ(hit, &stored);
  EXPECT_EQ(hit->data()[0], 0x11);
  EXPECT_NE(cache.Find(Gfn(1)), nullptr);  // the memo path
  EXPECT_EQ(cache.Find(Gfn(2)), nullptr);
  EXPECT_EQ(cache.stats(), (CacheStats{.hits = 2, .misses = 2, .inserts = 1}));
  EXPECT_DOUBLE_EQ(cache.stats().HitRate(), 0.5);
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_EQ(cache.capacity(), 4u);
  cache.ResetStats();
  EXPECT_EQ(cache.stats(), CacheStats());
}

TEST(PageCacheTest, DefaultCapacity) {
  PageCache cache;
  EXPECT_EQ(cache.capacity(), 8192u);
  EXPECT_TRUE(cache.enabled());
}

TEST(PageCacheTest, HitPointersSurviveOtherFinds) {
  PageCache cache(4);
  cache.Insert(Gfn(1), LivePage(1, 1));
  cache.Insert(Gfn(2), LivePage(2, 2));
  const MappedPage* a = cache.Find(Gfn(1));
  const MappedPage* b = cache.Find(Gfn(2));
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(a->gfn(), Gfn(1));
  EXPECT_EQ(b->gfn(), Gfn(2));
  EXPECT_EQ(a->data(), g_ram + 1);
}

// Scripted CLOCK trace, with the victims the policy in bounded_cache.h
// dictates. Where exact LRU would differ it says so.
TEST(PageCacheTest, ClockEvictionOrder) {
  const std::vector<uint64_t> all = {1, 2, 3, 4, 5, 6, 7, 8};
  PageCache cache(3);
  cache.Insert(Gfn(1), LivePage(1, 1));  // slot 1
  cache.Insert(Gfn(2), LivePage(2, 2));  // slot 2
  cache.Insert(Gfn(3), LivePage(3, 3));  // slot 3; hand at slot 1
  ASSERT_NE(cache.Find(Gfn(1)), nullptr);

  // 1 is referenced: second chance. 2 goes.
  cache.Insert(Gfn(4), LivePage(4, 4));
  EXPECT_THAT(Held(cache, all), ::testing::ElementsAre(1, 3, 4));
  // The hand is past 4's slot, at 3.
  cache.Insert(Gfn(5), LivePage(5, 5));
  EXPECT_THAT(Held(cache, all), ::testing::ElementsAre(1, 4, 5));
  ASSERT_NE(cache.Find(Gfn(4)), nullptr);
  ASSERT_NE(cache.Find(Gfn(5)), nullptr);
  // 1 used its second chance already.
  cache.Insert(Gfn(6), LivePage(6, 6));
  EXPECT_THAT(Held(cache, all), ::testing::ElementsAre(4, 5, 6));
  // 4 and 5 referenced, 6 new: 6 goes (LRU would evict 4).
  cache.Insert(Gfn(7), LivePage(7, 7));
  EXPECT_THAT(Held(cache, all), ::testing::ElementsAre(4, 5, 7));
  // The sweep cleared 4 and 5; the hand is at 4.
  cache.Insert(Gfn(8), LivePage(8, 8));
  EXPECT_THAT(Held(cache, all), ::testing::ElementsAre(5, 7, 8));
  EXPECT_EQ(cache.stats().evictions, 5u);
  EXPECT_EQ(cache.stats().inserts, 8u);
  EXPECT_EQ(cache.size(), 3u);
}

TEST(PageCacheTest, FreedSlotIsReusedBeforeEvicting) {
  PageCache cache(3);
  for (uint64_t g : {1, 2, 3}) cache.Insert(Gfn(g), LivePage(g, g));
  EXPECT_TRUE(cache.Erase(Gfn(2)));
  cache.Insert(Gfn(4), LivePage(4, 4));  // into 2's slot, no eviction
  EXPECT_EQ(cache.stats().evictions, 0u);
  EXPECT_THAT(Held(cache, {1, 2, 3, 4, 5}), ::testing::ElementsAre(1, 3, 4));
  cache.Insert(Gfn(5), LivePage(5, 5));  // hand at slot 1
  EXPECT_THAT(Held(cache, {1, 2, 3, 4, 5}), ::testing::ElementsAre(3, 4, 5));
}

TEST(PageCacheTest, ReplaceKeepsOneEntryAndReleasesTheOldPage) {
  PageCache cache(2);
  MappedPage first = OwnedPage(1, 0x01);
  cache.Insert(Gfn(1), first);
  EXPECT_EQ(first.use_count(), 2);
  cache.Insert(Gfn(1), OwnedPage(1, 0x02));
  EXPECT_EQ(first.use_count(), 1);
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_EQ(cache.stats().inserts, 2u);
  ASSERT_NE(cache.Find(Gfn(1)), nullptr);
  EXPECT_EQ(cache.Find(Gfn(1))->data()[0], 0x02);
}

TEST(PageCacheTest, ReplacementCountsAsUse) {
  PageCache cache(2);
  cache.Insert(Gfn(1), LivePage(1, 1));
  cache.Insert(Gfn(2), LivePage(2, 2));
  cache.Insert(Gfn(1), LivePage(1, 11));  // referenced again
  cache.Insert(Gfn(3), LivePage(3, 3));
  EXPECT_THAT(Held(cache, {1, 2, 3}), ::testing::ElementsAre(1, 3));
}

TEST(PageCacheTest, EraseReleasesThePage) {
  PageCache cache(4);
  MappedPage page = OwnedPage(7);
  cache.Insert(Gfn(7), page);
  ASSERT_NE(cache.Find(Gfn(7)), nullptr);  // the memo now points at it
  EXPECT_TRUE(cache.Erase(Gfn(7)));
  EXPECT_FALSE(cache.Erase(Gfn(7)));
  EXPECT_EQ(page.use_count(), 1);
  EXPECT_EQ(cache.Find(Gfn(7)), nullptr);
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.stats().invalidations, 1u);
  EXPECT_EQ(cache.stats().evictions, 0u);
}

// The memo remembers a slot; a slot reused by another key must not answer
// for the old one.
TEST(PageCacheTest, MemoNeverServesAReusedSlot) {
  PageCache cache(1);
  cache.Insert(Gfn(1), LivePage(1, 1));
  ASSERT_NE(cache.Find(Gfn(1)), nullptr);
  cache.Insert(Gfn(2), LivePage(2, 2));  // evicts 1 from the only slot
  EXPECT_EQ(cache.Find(Gfn(1)), nullptr);
  ASSERT_NE(cache.Find(Gfn(2)), nullptr);
  EXPECT_EQ(cache.Find(Gfn(2))->gfn(), Gfn(2));
  EXPECT_TRUE(cache.Erase(Gfn(2)));
  EXPECT_EQ(cache.Find(Gfn(2)), nullptr);
}

TEST(PageCacheTest, ResizeDownEvictsByPolicyThenKeepsClockOrder) {
  PageCache cache(4);
  for (uint64_t g : {1, 2, 3, 4}) cache.Insert(Gfn(g), LivePage(g, g));
  ASSERT_NE(cache.Find(Gfn(2)), nullptr);
  ASSERT_NE(cache.Find(Gfn(4)), nullptr);
  cache.Resize(2);
  // Sweep from slot 1: 1 goes, 2 loses its bit, 3 goes.
  EXPECT_THAT(Held(cache, {1, 2, 3, 4}), ::testing::ElementsAre(2, 4));
  EXPECT_EQ(cache.capacity(), 2u);
  EXPECT_EQ(cache.stats().evictions, 2u);
  // Packed from the hand (at 4): 4 (still referenced), then 2 (cleared).
  cache.Insert(Gfn(5), LivePage(5, 5));
  EXPECT_THAT(Held(cache, {1, 2, 3, 4, 5}), ::testing::ElementsAre(4, 5));
}

TEST(PageCacheTest, ResizeUpKeepsEntries) {
  PageCache cache(2);
  cache.Insert(Gfn(1), LivePage(1, 1));
  cache.Insert(Gfn(2), LivePage(2, 2));
  cache.Resize(5);
  EXPECT_EQ(cache.capacity(), 5u);
  for (uint64_t g : {3, 4, 5}) cache.Insert(Gfn(g), LivePage(g, g));
  EXPECT_EQ(cache.stats().evictions, 0u);
  EXPECT_EQ(cache.size(), 5u);
  EXPECT_THAT(Held(cache, {1, 2, 3, 4, 5}), ::testing::ElementsAre(1, 2, 3, 4, 5));
  ASSERT_NE(cache.Find(Gfn(1)), nullptr);
  EXPECT_EQ(cache.Find(Gfn(1))->data(), g_ram + 1);
}

TEST(PageCacheTest, ResizeToZeroAndBack) {
  PageCache cache(3);
  MappedPage page = OwnedPage(1);
  cache.Insert(Gfn(1), page);
  cache.Resize(0);
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(page.use_count(), 1);
  EXPECT_EQ(cache.stats().evictions, 1u);
  cache.Resize(3);
  cache.Insert(Gfn(1), page);
  EXPECT_TRUE(cache.Contains(Gfn(1)));
}

TEST(PageCacheTest, CapacityZeroCachesNothingButReturnsAUsablePage) {
  PageCache cache(0);
  EXPECT_EQ(cache.Find(Gfn(1)), nullptr);
  MappedPage page = OwnedPage(1, 0x5a);
  const MappedPage& returned = cache.Insert(Gfn(1), page);
  EXPECT_EQ(returned.data()[0], 0x5a);
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_FALSE(cache.Contains(Gfn(1)));
  EXPECT_EQ(cache.Find(Gfn(1)), nullptr);
  EXPECT_EQ(cache.stats(), (CacheStats{.misses = 2}));
  // The parked page goes with the next insert.
  cache.Insert(Gfn(2), OwnedPage(2));
  EXPECT_EQ(page.use_count(), 1);
}

TEST(PageCacheTest, DisableClearsAndStopsCountingEnableRestores) {
  PageCache cache(4);
  MappedPage page = OwnedPage(1);
  cache.Insert(Gfn(1), page);
  cache.SetEnabled(false);
  EXPECT_FALSE(cache.enabled());
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(page.use_count(), 1);
  EXPECT_EQ(cache.Find(Gfn(1)), nullptr);
  const MappedPage& returned = cache.Insert(Gfn(1), page);
  EXPECT_EQ(returned.data(), page.data());
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.Find(Gfn(1)), nullptr);
  EXPECT_EQ(cache.stats(), (CacheStats{.inserts = 1}));
  cache.SetEnabled(true);
  EXPECT_EQ(page.use_count(), 1);  // the parked page was released
  cache.Insert(Gfn(1), page);
  EXPECT_NE(cache.Find(Gfn(1)), nullptr);
  EXPECT_EQ(cache.stats(), (CacheStats{.hits = 1, .inserts = 2}));
}

TEST(PageCacheTest, ClearDropsEverything) {
  PageCache cache(4);
  for (uint64_t g : {1, 2, 3}) cache.Insert(Gfn(g), OwnedPage(g));
  cache.Clear();
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.Find(Gfn(1)), nullptr);
  EXPECT_EQ(cache.MemoryUsage(), cache.OverheadBytes());
  // Full capacity is usable again, in slot order.
  for (uint64_t g : {4, 5, 6, 7}) cache.Insert(Gfn(g), LivePage(g, g));
  EXPECT_EQ(cache.stats().evictions, 0u);
}

TEST(PageCacheTest, InvalidPageIsNeverStored) {
  PageCache cache(4);
  cache.Insert(Gfn(1), OwnedPage(1));
  const MappedPage& returned = cache.Insert(Gfn(1), MappedPage());
  EXPECT_FALSE(returned.valid());
  EXPECT_FALSE(cache.Contains(Gfn(1)));
  cache.Insert(Gfn(2), MappedPage());
  EXPECT_EQ(cache.size(), 0u);
}

TEST(PageCacheTest, StorageGrowsWithUseUpToTheCapacity) {
  PageCache cache(8192);
  // Nothing up front: a cold start pays only for what it uses.
  EXPECT_LT(cache.OverheadBytes(), 1024u);
  for (uint64_t g = 0; g < 100; ++g) cache.Insert(Gfn(g), LivePage(g, g));
  const size_t hundred = cache.OverheadBytes();
  for (uint64_t g = 100; g < 8192; ++g) cache.Insert(Gfn(g), LivePage(g, g));
  // Full: the per-entry figure promised in page_cache.h.
  const size_t full = cache.OverheadBytes();
  EXPECT_LT(hundred, full / 10);
  EXPECT_LT(full / 8192, 100u);
  EXPECT_GT(full / 8192, 48u);
  cache.Insert(Gfn(9000), LivePage(9000, 1));  // an eviction
  EXPECT_EQ(cache.OverheadBytes(), full);
}

TEST(PageCacheTest, MemoryUsageCountsOwnedBytesNotLivePages) {
  PageCache cache(4);
  for (uint64_t g = 10; g < 14; ++g) cache.Insert(Gfn(g), LivePage(g, g));  // grown to capacity
  const size_t overhead = cache.OverheadBytes();
  EXPECT_EQ(cache.MemoryUsage(), overhead);
  cache.Insert(Gfn(1), OwnedPage(1, 0, 4096));
  cache.Insert(Gfn(2), LivePage(2, 2));
  EXPECT_EQ(cache.MemoryUsage(), overhead + 4096);
  cache.Insert(Gfn(1), OwnedPage(1, 0, 100));  // replaced
  EXPECT_EQ(cache.MemoryUsage(), overhead + 100);
  cache.Erase(Gfn(1));
  EXPECT_EQ(cache.MemoryUsage(), overhead);
  EXPECT_EQ(cache.OverheadBytes(), overhead);  // no growth from use once full
}

TEST(PageCacheTest, NoGrowthUnderChurn) {
  PageCache cache(64);
  for (uint64_t g = 0; g < 64; ++g) cache.Insert(Gfn(100000 + g), LivePage(g, g));
  const size_t overhead = cache.OverheadBytes();
  for (uint64_t g = 0; g < 10000; ++g) {
    cache.Insert(Gfn(g), LivePage(g, g));
    if (g % 3 == 0) cache.Erase(Gfn(g - 1));
  }
  EXPECT_EQ(cache.OverheadBytes(), overhead);
  EXPECT_LE(cache.size(), 64u);
}

// Random operations against the naive model of the same policy.
TEST(PageCacheTest, MatchesReferenceModel) {
  for (uint32_t seed : {1u, 2u, 3u, 42u}) {
    SCOPED_TRACE(seed);
    std::mt19937 rng(seed);
    size_t capacity = 16;
    PageCache cache(capacity);
    cache_internal::ReferenceClock<uint64_t, uint32_t> model(capacity);
    uint32_t next_tag = 0;
    for (int step = 0; step < 20000; ++step) {
      const uint64_t gfn = rng() % 40;
      const uint32_t op = rng() % 100;
      if (op < 55) {
        std::optional<uint32_t> want = model.Find(gfn);
        const MappedPage* got = cache.Find(Gfn(gfn));
        ASSERT_EQ(got != nullptr, want.has_value()) << "step " << step;
        if (got) {
          ASSERT_EQ(got->data(), g_ram + *want % sizeof(g_ram));
        }
      } else if (op < 90) {
        const uint32_t tag = ++next_tag;
        model.Insert(gfn, tag);
        const MappedPage& stored = cache.Insert(Gfn(gfn), LivePage(gfn, tag));
        ASSERT_EQ(stored.data(), g_ram + tag % sizeof(g_ram));
      } else if (op < 96) {
        ASSERT_EQ(cache.Erase(Gfn(gfn)), model.Erase(gfn));
      } else if (op < 98) {
        capacity = rng() % 24;
        cache.Resize(capacity);
        model.Resize(capacity);
      } else if (op < 99) {
        const bool enabled = rng() % 4 != 0;
        cache.SetEnabled(enabled);
        model.SetEnabled(enabled);
      } else {
        cache.Clear();
        model.Clear();
      }
      ASSERT_EQ(cache.size(), model.size()) << "step " << step;
      ASSERT_EQ(cache.stats(), model.stats()) << "step " << step;
    }
    model.ForEach([&](uint64_t gfn, uint32_t) { EXPECT_TRUE(cache.Contains(Gfn(gfn))); });
  }
}

TEST(PageCacheTest, PagesUsedThroughAnAttachedTlbAreSparedOnce) {
  for (bool hit_through_tlb : {false, true}) {
    SCOPED_TRACE(hit_through_tlb);
    SoftTlb tlb(16);
    PageCache cache(2);
    cache.AttachTlb(&tlb);
    cache.Insert(Gfn(1), LivePage(1, 1));
    cache.Insert(Gfn(2), LivePage(2, 2));
    tlb.Insert(Pa(0x1000), Va(0x5000), Gfn(1), cache.Find(Gfn(1))->data(), {});
    cache.ResetStats();
    if (hit_through_tlb) EXPECT_NE(tlb.Find(Pa(0x1000), Va(0x5000)), nullptr);
    // The hand passes slot 1 (frame 1) and 2 (frame 2) once each (the Find
    // above set frame 1's own bit; the sweep clears it first).
    cache.Insert(Gfn(3), LivePage(3, 3));
    cache.Insert(Gfn(4), LivePage(4, 4));
    EXPECT_EQ(cache.Contains(Gfn(1)), hit_through_tlb);
    // Evicted, the frame leaves the TLB too.
    EXPECT_EQ(tlb.Peek(Pa(0x1000), Va(0x5000)), hit_through_tlb);
    EXPECT_EQ(cache.stats().hits, hit_through_tlb ? 1u : 0u);  // the TLB's hit counts here
  }
}

TEST(PageCacheTest, AnAttachedTlbLosesEveryLivePageTheCacheDrops) {
  SoftTlb tlb(16);
  PageCache cache(4);
  cache.AttachTlb(&tlb);
  auto enter = [&](uint64_t gfn, uint64_t vpn) {
    tlb.Insert(Pa(0x1000), Va(vpn << 12), Gfn(gfn), cache.Find(Gfn(gfn))->data(), {});
  };
  for (uint64_t g = 1; g <= 3; ++g) cache.Insert(Gfn(g), LivePage(g, g));
  enter(1, 10);
  enter(1, 11);  // an alias
  enter(2, 12);
  enter(3, 13);
  cache.Erase(Gfn(1));
  EXPECT_EQ(tlb.size(), 2u);
  cache.Insert(Gfn(2), LivePage(2, 7));  // replaced
  EXPECT_FALSE(tlb.Peek(Pa(0x1000), Va(12 << 12)));
  cache.Clear();
  EXPECT_EQ(tlb.size(), 0u);
  cache.Insert(Gfn(3), LivePage(3, 3));
  enter(3, 13);
  cache.SetEnabled(false);
  EXPECT_EQ(tlb.size(), 0u);
}

}  // namespace
}  // namespace vmi
