#include "core/cache/v2p_cache.h"

#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "core/architecture.h"
#include "core/cache/internal/reference_clock.h"
#include "core/types.h"
#include "gtest/gtest.h"

namespace vmi {
namespace {

constexpr uint64_t k4K = 4096, k2M = 2 << 20, k1G = uint64_t{1} << 30;

// A translation whose walk read `tables` (root first).
PageTranslation Translation(uint64_t pa, uint64_t page_size, std::vector<uint64_t> tables,
                            PagePermissions perms = {true, false, true}) {
  PageTranslation t;
  t.pa = Pa(pa);
  t.page_size = page_size;
  t.permissions = perms;
  for (size_t i = 0; i < tables.size(); ++i) t.table_gfns[i] = Gfn(tables[i]);
  t.levels = static_cast<uint8_t>(tables.size());
  return t;
}

const Pa kRootA(0x1000), kRootB(0x2000);

TEST(V2pEntryTest, FromTranslation4K) {
  const Va va(0x7fff12345678);
  V2pEntry e = V2pEntry::FromTranslation(va, Translation(0xabc678, k4K, {1, 2, 3, 4}));
  EXPECT_EQ(e.page_pa, Pa(0xabc000));
  EXPECT_EQ(e.gfn(), Gfn(0xabc));
  EXPECT_EQ(e.page_size, k4K);
  EXPECT_EQ(e.levels, 4);
  EXPECT_EQ(e.table_gfns[3], Gfn(4));
  EXPECT_EQ(e.Apply(va), Pa(0xabc678));
  EXPECT_EQ(e.Apply(Va(0x7fff12345000)), Pa(0xabc000));
  EXPECT_EQ(e.permissions, (PagePermissions{true, false, true}));
  EXPECT_TRUE(e.UsesTableGfn(Gfn(3)));
  EXPECT_FALSE(e.UsesTableGfn(Gfn(5)));
  EXPECT_FALSE(e.UsesTableGfn(Gfn(0)));  // unused levels do not count
}

TEST(V2pEntryTest, FromTranslationLargePages) {
  // 2 MiB page at 0x40000000 mapping va 0x200000..; walk of va 0x2345678.
  const PageTranslation t2m = Translation(0x40145678, k2M, {1, 2, 3});
  V2pEntry e = V2pEntry::FromTranslation(Va(0x2345678), t2m);
  EXPECT_EQ(e.page_pa, Pa(0x40145000));
  EXPECT_EQ(e.page_size, k2M);
  EXPECT_EQ(e.Apply(Va(0x2345abc)), Pa(0x40145abc));
  // The same walk serves every 4 KiB piece of the 2 MiB page.
  V2pEntry other = V2pEntry::FromTranslation(Va(0x23ff123), t2m);
  EXPECT_EQ(other.page_pa, Pa(0x401ff000));
  EXPECT_EQ(other.Apply(Va(0x23ff123)), Pa(0x401ff123));

  const PageTranslation t1g = Translation(0x80000000 + 0x12345678, k1G, {1, 2});
  V2pEntry g = V2pEntry::FromTranslation(Va(0x4012345678), t1g);
  EXPECT_EQ(g.page_pa, Pa(0x92345000));
  EXPECT_EQ(V2pEntry::FromTranslation(Va(0x403fffffff), t1g).Apply(Va(0x403fffffff)),
            Pa(0xbfffffff));
}

TEST(V2pCacheTest, KeyedByRootAndFourKPage) {
  V2pCache cache(16);
  EXPECT_EQ(cache.capacity(), 16u);
  EXPECT_EQ(cache.Find(kRootA, Va(0x401000)), nullptr);
  const V2pEntry& stored = cache.Insert(kRootA, Va(0x401234), Translation(0x9234, k4K, {1, 2}));
  EXPECT_EQ(stored.page_pa, Pa(0x9000));
  const V2pEntry* hit = cache.Find(kRootA, Va(0x401ff8));  // same page, other offset
  ASSERT_NE(hit, nullptr);
  EXPECT_EQ(hit, &stored);
  EXPECT_EQ(hit->Apply(Va(0x401ff8)), Pa(0x9ff8));
  EXPECT_EQ(cache.Find(kRootA, Va(0x402000)), nullptr);  // next page
  EXPECT_EQ(cache.Find(kRootA, Va(0x400fff)), nullptr);  // previous page
  EXPECT_EQ(cache.Find(kRootB, Va(0x401234)), nullptr);  // other address space
  EXPECT_EQ(cache.stats(), (CacheStats{.hits = 1, .misses = 4, .inserts = 1}));
}

TEST(V2pCacheTest, DefaultCapacity) { EXPECT_EQ(V2pCache().capacity(), 16384u); }

TEST(V2pCacheTest, LargePageEntriesAreStillPerFourKPage) {
  V2pCache cache(16);
  const PageTranslation t = Translation(0x40145678, k2M, {1, 2, 3});
  cache.Insert(kRootA, Va(0x2345678), t);
  EXPECT_EQ(cache.Find(kRootA, Va(0x2346000)), nullptr);
  cache.Insert(kRootA, Va(0x2346000), t);
  const V2pEntry* e = cache.Find(kRootA, Va(0x2346010));
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->page_size, k2M);
  EXPECT_EQ(e->Apply(Va(0x2346010)), Pa(0x40146010));
  EXPECT_EQ(cache.TableGfnRefs(Gfn(3)), 2u);
  // Writing the PD frame drops both pieces.
  EXPECT_EQ(cache.InvalidateTableGfn(Gfn(3)), 2u);
  EXPECT_EQ(cache.size(), 0u);

  cache.Insert(kRootA, Va(0x4012345678), Translation(0x92345678, k1G, {1, 2}));
  ASSERT_NE(cache.Find(kRootA, Va(0x4012345000)), nullptr);
  EXPECT_EQ(cache.Find(kRootA, Va(0x4012345000))->page_size, k1G);
}

TEST(V2pCacheTest, EraseOneEntry) {
  V2pCache cache(16);
  cache.Insert(kRootA, Va(0x1000), Translation(0x5000, k4K, {1, 2}));
  cache.Insert(kRootA, Va(0x2000), Translation(0x6000, k4K, {1, 2}));
  ASSERT_NE(cache.Find(kRootA, Va(0x1000)), nullptr);
  EXPECT_TRUE(cache.Erase(kRootA, Va(0x1fff)));
  EXPECT_FALSE(cache.Erase(kRootA, Va(0x1000)));
  EXPECT_EQ(cache.Find(kRootA, Va(0x1000)), nullptr);
  EXPECT_NE(cache.Find(kRootA, Va(0x2000)), nullptr);
  EXPECT_EQ(cache.TableGfnRefs(Gfn(2)), 1u);
  EXPECT_EQ(cache.stats().invalidations, 1u);
}

TEST(V2pCacheTest, EraseRootRemovesOnlyThatAddressSpace) {
  V2pCache cache(64);
  for (uint64_t page = 0; page < 10; ++page) {
    cache.Insert(kRootA, Va(page << 12), Translation(0x100000 + (page << 12), k4K, {1, 10}));
    cache.Insert(kRootB, Va(page << 12), Translation(0x200000 + (page << 12), k4K, {2, 20}));
  }
  EXPECT_EQ(cache.EraseRoot(kRootA), 10u);
  EXPECT_EQ(cache.size(), 10u);
  for (uint64_t page = 0; page < 10; ++page) {
    EXPECT_FALSE(cache.Contains(kRootA, Va(page << 12)));
    const V2pEntry* e = cache.Find(kRootB, Va(page << 12));
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->page_pa, Pa(0x200000 + (page << 12)));
  }
  EXPECT_FALSE(cache.IsTableGfn(Gfn(1)));
  EXPECT_FALSE(cache.IsTableGfn(Gfn(10)));
  EXPECT_TRUE(cache.IsTableGfn(Gfn(20)));
  EXPECT_EQ(cache.EraseRoot(kRootA), 0u);
  EXPECT_EQ(cache.stats().invalidations, 10u);
  // Freed slots are usable: 54 more fit without eviction.
  for (uint64_t page = 100; page < 154; ++page) {
    cache.Insert(kRootA, Va(page << 12), Translation(page << 12, k4K, {1, 10}));
  }
  EXPECT_EQ(cache.stats().evictions, 0u);
  EXPECT_EQ(cache.size(), 64u);
}

TEST(V2pCacheTest, InvalidateTableGfnDropsExactlyTheWalksThatReadIt) {
  V2pCache cache(64);
  // Root table 1; two PDPTs 2 and 3; PDs 4 (under 2) and 5 (under 3); PTs.
  cache.Insert(kRootA, Va(0x0000), Translation(0xa000, k4K, {1, 2, 4, 6}));
  cache.Insert(kRootA, Va(0x1000), Translation(0xb000, k4K, {1, 2, 4, 6}));
  cache.Insert(kRootA, Va(0x200000), Translation(0xc000, k4K, {1, 2, 4, 7}));
  cache.Insert(kRootA, Va(0x8000000000), Translation(0xd000, k4K, {1, 3, 5, 8}));
  cache.Insert(kRootB, Va(0x0000), Translation(0xe000, k4K, {9, 3, 5, 8}));

  // A write to a data frame (even one a translation points at) drops nothing.
  EXPECT_FALSE(cache.IsTableGfn(Gfn(0xa)));
  EXPECT_EQ(cache.InvalidateTableGfn(Gfn(0xa)), 0u);
  EXPECT_EQ(cache.size(), 5u);

  EXPECT_EQ(cache.TableGfnRefs(Gfn(6)), 2u);
  EXPECT_EQ(cache.InvalidateTableGfn(Gfn(6)), 2u);
  EXPECT_FALSE(cache.Contains(kRootA, Va(0x0000)));
  EXPECT_FALSE(cache.Contains(kRootA, Va(0x1000)));
  EXPECT_TRUE(cache.Contains(kRootA, Va(0x200000)));
  EXPECT_FALSE(cache.IsTableGfn(Gfn(6)));
  EXPECT_EQ(cache.TableGfnRefs(Gfn(2)), 1u);
  EXPECT_EQ(cache.TableGfnRefs(Gfn(1)), 2u);

  // A table shared by two address spaces.
  EXPECT_EQ(cache.InvalidateTableGfn(Gfn(5)), 2u);
  EXPECT_TRUE(cache.Contains(kRootA, Va(0x200000)));
  EXPECT_EQ(cache.size(), 1u);

  // The root table: everything left under it.
  EXPECT_EQ(cache.InvalidateTableGfn(Gfn(1)), 1u);
  EXPECT_EQ(cache.size(), 0u);
  for (uint64_t g = 0; g < 16; ++g) EXPECT_FALSE(cache.IsTableGfn(Gfn(g))) << g;
  EXPECT_EQ(cache.stats().invalidations, 5u);
}

TEST(V2pCacheTest, SelfReferencingTableCountsOncePerEntry) {
  V2pCache cache(8);
  // Windows-style self map: the root frame is read at every level.
  cache.Insert(kRootA, Va(0xfffff6fb7dbed000), Translation(0x1000, k4K, {1, 1, 1, 1}));
  EXPECT_EQ(cache.TableGfnRefs(Gfn(1)), 1u);
  EXPECT_TRUE(cache.Erase(kRootA, Va(0xfffff6fb7dbed000)));
  EXPECT_FALSE(cache.IsTableGfn(Gfn(1)));
}

TEST(V2pCacheTest, ReplacingAnEntryMovesItsTableRefs) {
  V2pCache cache(8);
  cache.Insert(kRootA, Va(0x1000), Translation(0x5000, k4K, {1, 2}));
  cache.Insert(kRootA, Va(0x1000), Translation(0x6000, k4K, {1, 3}));
  EXPECT_FALSE(cache.IsTableGfn(Gfn(2)));
  EXPECT_EQ(cache.TableGfnRefs(Gfn(3)), 1u);
  EXPECT_EQ(cache.TableGfnRefs(Gfn(1)), 1u);
  EXPECT_EQ(cache.Find(kRootA, Va(0x1000))->page_pa, Pa(0x6000));
  EXPECT_EQ(cache.size(), 1u);
}

TEST(V2pCacheTest, CapacityZeroAndDisabled) {
  V2pCache cache(0);
  const V2pEntry& e = cache.Insert(kRootA, Va(0x1000), Translation(0x5000, k4K, {1, 2}));
  EXPECT_EQ(e.Apply(Va(0x1008)), Pa(0x5008));
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_FALSE(cache.IsTableGfn(Gfn(1)));
  EXPECT_EQ(cache.Find(kRootA, Va(0x1000)), nullptr);
  EXPECT_EQ(cache.stats(), (CacheStats{.misses = 1}));

  cache.Resize(4);
  cache.Insert(kRootA, Va(0x1000), Translation(0x5000, k4K, {1, 2}));
  EXPECT_TRUE(cache.IsTableGfn(Gfn(1)));
  cache.SetEnabled(false);
  EXPECT_FALSE(cache.IsTableGfn(Gfn(1)));
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.Find(kRootA, Va(0x1000)), nullptr);
  cache.Insert(kRootA, Va(0x1000), Translation(0x5000, k4K, {1, 2}));
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.stats(), (CacheStats{.misses = 1, .inserts = 1}));
  cache.SetEnabled(true);
  cache.Insert(kRootA, Va(0x1000), Translation(0x5000, k4K, {1, 2}));
  EXPECT_NE(cache.Find(kRootA, Va(0x1000)), nullptr);
}

TEST(V2pCacheTest, ClearDropsEntriesAndTableRefs) {
  V2pCache cache(8);
  cache.Insert(kRootA, Va(0x1000), Translation(0x5000, k4K, {1, 2}));
  cache.Clear();
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_FALSE(cache.IsTableGfn(Gfn(1)));
  EXPECT_EQ(cache.InvalidateTableGfn(Gfn(1)), 0u);
}

TEST(V2pCacheTest, NegativeEntriesFollowTheSameRules) {
  V2pCache cache(8);
  PageTranslation partial;  // the walk read two tables, then met a cleared entry
  partial.table_gfns = {Gfn(1), Gfn(2)};
  partial.levels = 2;
  FaultCause cause;
  cause.level = 2;
  cause.entry_address = Pa(0x2010);
  cause.entry = 0x0;
  const V2pEntry& stored = cache.InsertFault(kRootA, Va(0x7000), partial, cause);
  EXPECT_TRUE(stored.negative());
  EXPECT_EQ(cache.negative_size(), 1u);
  const V2pEntry* e = cache.Find(kRootA, Va(0x7abc));
  ASSERT_NE(e, nullptr);
  ASSERT_TRUE(e->negative());
  const TranslationFault f = e->FaultAt(AddressContext(Va(0x7abc), kRootA));
  EXPECT_EQ(f.ctx.va, Va(0x7abc));
  EXPECT_EQ(f.cause, cause);
  EXPECT_TRUE(cache.IsTableGfn(Gfn(2)));
  // A write to a table it read drops it, as for a translation.
  EXPECT_EQ(cache.InvalidateTableGfn(Gfn(2)), 1u);
  EXPECT_EQ(cache.negative_size(), 0u);
  cache.InsertFault(kRootA, Va(0x7000), partial, cause);
  cache.Insert(kRootA, Va(0x8000), Translation(0x5000, k4K, {1, 3}));
  EXPECT_EQ(cache.EraseNegative(), 1u);
  EXPECT_EQ(cache.size(), 1u);
  cache.InsertFault(kRootA, Va(0x7000), partial, cause);
  cache.Insert(kRootA, Va(0x7000), Translation(0x5000, k4K, {1, 2}));  // replaced by a translation
  EXPECT_EQ(cache.negative_size(), 0u);
  EXPECT_FALSE(cache.Find(kRootA, Va(0x7000))->negative());
  cache.InsertFault(kRootB, Va(0x7000), partial, cause);
  EXPECT_EQ(cache.EraseRoot(kRootB), 1u);
  cache.InsertFault(kRootB, Va(0x7000), partial, cause);
  cache.Clear();
  EXPECT_EQ(cache.negative_size(), 0u);
}

TEST(V2pCacheTest, MemoryUsagePerEntry) {
  V2pCache cache;
  EXPECT_LT(cache.MemoryUsage(), 1024u);  // nothing up front
  // Full, with the table frames shared as in a real address space.
  for (uint64_t p = 0; p < cache.capacity(); ++p) {
    cache.Insert(kRootA, Va(p << 12), Translation(p << 12, k4K, {1, 2, 3 + p / 512}));
  }
  const size_t full = cache.MemoryUsage();
  EXPECT_LT(full / cache.capacity(), 200u);
  EXPECT_GT(full / cache.capacity(), 128u);
  cache.Insert(kRootB, Va(0x1000), Translation(0x1000, k4K, {1, 2, 3}));  // an eviction
  EXPECT_EQ(cache.MemoryUsage(), full);
}

// Brute-force table-frame counts of what the cache holds, from the last
// value inserted for every key (the cache holds a subset of those keys).
std::map<uint64_t, size_t> BruteForceRefs(
    const V2pCache& cache, const std::map<std::pair<uint64_t, uint64_t>, V2pEntry>& inserted) {
  std::map<uint64_t, size_t> refs;
  for (const auto& [key, entry] : inserted) {
    if (!cache.Contains(Pa(key.first), Va(key.second << 12))) continue;
    for (uint64_t g = 0; g < 64; ++g) refs[g] += entry.UsesTableGfn(Gfn(g));
  }
  return refs;
}

PageTranslation RandomTranslation(std::mt19937& rng) {
  const uint8_t levels = 2 + rng() % 4;
  std::vector<uint64_t> tables;
  for (uint8_t i = 0; i < levels; ++i) tables.push_back(rng() % 48);  // duplicates happen
  static constexpr uint64_t kSizes[] = {k4K, k4K, k2M, k1G};
  return Translation((rng() % (1 << 20)) << 12, kSizes[rng() % 4], tables);
}

TEST(V2pCacheTest, TableRefsStayExactAcrossEviction) {
  for (uint32_t seed : {7u, 8u, 9u}) {
    SCOPED_TRACE(seed);
    std::mt19937 rng(seed);
    V2pCache cache(32);
    std::map<std::pair<uint64_t, uint64_t>, V2pEntry> inserted;
    for (int step = 0; step < 3000; ++step) {
      const uint64_t root = (1 + rng() % 3) << 12, vpn = rng() % 200;
      if (rng() % 8 == 0) {
        cache.Find(Pa(root), Va(vpn << 12));
        continue;
      }
      const V2pEntry& e = cache.Insert(Pa(root), Va(vpn << 12), RandomTranslation(rng));
      inserted[{root, vpn}] = e;
      if (step % 50 == 49) {
        const std::map<uint64_t, size_t> want = BruteForceRefs(cache, inserted);
        for (uint64_t g = 0; g < 64; ++g) {
          ASSERT_EQ(cache.TableGfnRefs(Gfn(g)), want.at(g)) << "gfn " << g << " step " << step;
          ASSERT_EQ(cache.IsTableGfn(Gfn(g)), want.at(g) > 0);
        }
      }
    }
    EXPECT_EQ(cache.size(), 32u);
    EXPECT_GT(cache.stats().evictions, 1000u);
  }
}

// Random operations against the naive model of the same policy, including
// the coherence operations.
TEST(V2pCacheTest, MatchesReferenceModel) {
  using Key = std::pair<uint64_t, uint64_t>;  // root, vpn
  for (uint32_t seed : {11u, 12u, 13u}) {
    SCOPED_TRACE(seed);
    std::mt19937 rng(seed);
    size_t capacity = 24;
    V2pCache cache(capacity);
    cache_internal::ReferenceClock<Key, V2pEntry> model(capacity);
    for (int step = 0; step < 20000; ++step) {
      const uint64_t root = (1 + rng() % 3) << 12, vpn = rng() % 48;
      const Va va((vpn << 12) | (rng() & 0xfff));
      const uint32_t op = rng() % 1000;
      if (op < 500) {
        std::optional<V2pEntry> want = model.Find({root, vpn});
        const V2pEntry* got = cache.Find(Pa(root), va);
        ASSERT_EQ(got != nullptr, want.has_value()) << "step " << step;
        if (got) {
          ASSERT_EQ(*got, *want);
        }
      } else if (op < 850) {
        const PageTranslation t = RandomTranslation(rng);
        model.Insert({root, vpn}, V2pEntry::FromTranslation(va, t));
        cache.Insert(Pa(root), va, t);
      } else if (op < 900) {
        ASSERT_EQ(cache.Erase(Pa(root), va), model.Erase({root, vpn}));
      } else if (op < 910) {
        ASSERT_EQ(cache.EraseRoot(Pa(root)),
                  model.EraseIf([&](const Key& k, const V2pEntry&) { return k.first == root; }));
      } else if (op < 980) {
        const Gfn gfn(rng() % 64);
        const size_t want =
            model.EraseIf([&](const Key&, const V2pEntry& e) { return e.UsesTableGfn(gfn); });
        ASSERT_EQ(cache.InvalidateTableGfn(gfn), want);
        ASSERT_FALSE(cache.IsTableGfn(gfn));
      } else if (op < 990) {
        capacity = rng() % 32;
        cache.Resize(capacity);
        model.Resize(capacity);
      } else if (op < 995) {
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
    absl::flat_hash_map<uint64_t, size_t> refs;
    model.ForEach([&](const Key& k, const V2pEntry& e) {
      EXPECT_TRUE(cache.Contains(Pa(k.first), Va(k.second << 12)));
      for (uint64_t g = 0; g < 64; ++g) refs[g] += e.UsesTableGfn(Gfn(g));
    });
    for (uint64_t g = 0; g < 64; ++g) EXPECT_EQ(cache.TableGfnRefs(Gfn(g)), refs[g]) << g;
  }
}

}  // namespace
}  // namespace vmi
