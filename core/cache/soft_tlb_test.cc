#include "core/cache/soft_tlb.h"

#include <cstdint>
#include <random>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "core/architecture.h"
#include "core/types.h"
#include "gtest/gtest.h"

namespace vmi {
namespace {

uint8_t g_ram[64 * 4096];
const uint8_t* PageOf(uint64_t gfn) { return g_ram + (gfn % 64) * 4096; }
constexpr PagePermissions kRw{true, false, false};
const Pa kRootA(0x1000), kRootB(0x2000);

TEST(SoftTlbTest, MissFillHit) {
  SoftTlb tlb(16);
  EXPECT_EQ(tlb.Find(kRootA, Va(0x5123)), nullptr);
  EXPECT_EQ(tlb.MemoryUsage(), sizeof(SoftTlb));  // nothing mapped before the first fill
  tlb.Insert(kRootA, Va(0x5000), Gfn(7), PageOf(7), kRw);
  EXPECT_EQ(tlb.Find(kRootA, Va(0x5fff)), PageOf(7));
  EXPECT_EQ(tlb.Find(kRootB, Va(0x5000)), nullptr);  // another address space
  EXPECT_EQ(tlb.Find(kRootA, Va(0x6000)), nullptr);
  SoftTlb::View view;
  ASSERT_TRUE(tlb.Peek(kRootA, Va(0x5000), &view));
  EXPECT_EQ(view.gfn, Gfn(7));
  EXPECT_EQ(view.permissions, kRw);
  EXPECT_EQ(tlb.size(), 1u);
  EXPECT_EQ(tlb.stats().hits, 1u);
  EXPECT_EQ(tlb.stats().misses, 3u);
  EXPECT_EQ(tlb.stats().inserts, 1u);
}

TEST(SoftTlbTest, PageZeroAndTheTopPageAreOrdinaryKeys) {
  SoftTlb tlb(16);
  tlb.Insert(Pa(0), Va(0), Gfn(1), PageOf(1), kRw);
  tlb.Insert(Pa(0), Va(0xfffffffffffff000), Gfn(2), PageOf(2), kRw);
  EXPECT_EQ(tlb.Find(Pa(0), Va(0x10)), PageOf(1));
  EXPECT_EQ(tlb.Find(Pa(0), Va(0xffffffffffffffff)), PageOf(2));
}

// A lookup compares a key that folds the root into the page number, and then
// the root: pages of two roots whose keys are equal (here roots 0x1000 and
// 0x2000, pages 2^44 and 2^45 apart in both directions) must never be
// returned for one another. They share a set, so the later fill replaces the
// earlier one.
TEST(SoftTlbTest, KeysThatCollideAcrossRootsNeverAlias) {
  SoftTlb tlb(16);
  const Va a(0x5000), b(0x5000 ^ (uint64_t{3} << 44));
  tlb.Insert(kRootA, a, Gfn(7), PageOf(7), kRw);
  EXPECT_EQ(tlb.Find(kRootB, b), nullptr);
  tlb.Insert(kRootB, b, Gfn(8), PageOf(8), kRw);
  EXPECT_EQ(tlb.size(), 1u);
  EXPECT_EQ(tlb.Find(kRootA, a), nullptr);
  EXPECT_EQ(tlb.Find(kRootB, b), PageOf(8));
  EXPECT_FALSE(tlb.Peek(kRootA, a));
  EXPECT_EQ(tlb.Erase(kRootA, a), 0u);
  EXPECT_FALSE(tlb.TakeReference(kRootA.value(), a.value() >> 12, SoftTlb::kV2pRef));
  EXPECT_EQ(tlb.EraseGfn(Gfn(7)), 0u);
  EXPECT_EQ(tlb.Erase(kRootB, b), 1u);
  EXPECT_EQ(tlb.size(), 0u);
  EXPECT_EQ(tlb.Find(kRootB, b), nullptr);
}

TEST(SoftTlbTest, EraseByKeyAndByFrame) {
  SoftTlb tlb(64);
  // Frame 7 mapped at three virtual pages in two address spaces.
  tlb.Insert(kRootA, Va(0x5000), Gfn(7), PageOf(7), kRw);
  tlb.Insert(kRootA, Va(0x9000), Gfn(7), PageOf(7), kRw);
  tlb.Insert(kRootB, Va(0x5000), Gfn(7), PageOf(7), kRw);
  tlb.Insert(kRootA, Va(0x6000), Gfn(8), PageOf(8), kRw);
  EXPECT_EQ(tlb.Erase(kRootA, Va(0x9abc)), 1u);
  EXPECT_EQ(tlb.Erase(kRootA, Va(0x9abc)), 0u);
  EXPECT_EQ(tlb.EraseGfn(Gfn(7)), 2u);
  EXPECT_EQ(tlb.Find(kRootA, Va(0x5000)), nullptr);
  EXPECT_EQ(tlb.Find(kRootB, Va(0x5000)), nullptr);
  EXPECT_EQ(tlb.Find(kRootA, Va(0x6000)), PageOf(8));
  EXPECT_EQ(tlb.EraseGfn(Gfn(7)), 0u);
  EXPECT_EQ(tlb.size(), 1u);
  EXPECT_EQ(tlb.stats().invalidations, 3u);
  tlb.Clear();
  EXPECT_EQ(tlb.size(), 0u);
  EXPECT_EQ(tlb.Find(kRootA, Va(0x6000)), nullptr);
}

TEST(SoftTlbTest, RefillingAKeyReplacesItsFrame) {
  SoftTlb tlb(16);
  tlb.Insert(kRootA, Va(0x5000), Gfn(7), PageOf(7), kRw);
  tlb.Insert(kRootA, Va(0x5000), Gfn(8), PageOf(8), kRw);
  EXPECT_EQ(tlb.size(), 1u);
  EXPECT_EQ(tlb.EraseGfn(Gfn(7)), 0u);
  EXPECT_EQ(tlb.Find(kRootA, Va(0x5000)), PageOf(8));
  EXPECT_EQ(tlb.EraseGfn(Gfn(8)), 1u);
}

TEST(SoftTlbTest, ReferenceBitsAreTakenOnce) {
  SoftTlb tlb(16);
  tlb.Insert(kRootA, Va(0x5000), Gfn(7), PageOf(7), kRw);
  const uint64_t vpn = 5;
  EXPECT_FALSE(tlb.TakeReference(kRootA.value(), vpn, SoftTlb::kV2pRef));  // filled, not yet hit
  EXPECT_FALSE(tlb.TakeGfnReference(Gfn(7), SoftTlb::kPageRef));
  ASSERT_NE(tlb.Find(kRootA, Va(0x5000)), nullptr);
  EXPECT_TRUE(tlb.TakeReference(kRootA.value(), vpn, SoftTlb::kV2pRef));
  EXPECT_FALSE(tlb.TakeReference(kRootA.value(), vpn, SoftTlb::kV2pRef));
  EXPECT_TRUE(tlb.TakeGfnReference(Gfn(7), SoftTlb::kPageRef));  // its own bit
  EXPECT_FALSE(tlb.TakeGfnReference(Gfn(7), SoftTlb::kPageRef));
}

TEST(SoftTlbTest, DisabledOrZeroSizedStoresNothing) {
  SoftTlb none(0);
  none.Insert(kRootA, Va(0x5000), Gfn(7), PageOf(7), kRw);
  EXPECT_EQ(none.Find(kRootA, Va(0x5000)), nullptr);
  EXPECT_FALSE(none.enabled());
  none.SetEnabled(true);
  EXPECT_FALSE(none.enabled());

  SoftTlb tlb(16);
  tlb.Insert(kRootA, Va(0x5000), Gfn(7), PageOf(7), kRw);
  tlb.SetEnabled(false);
  EXPECT_EQ(tlb.size(), 0u);
  EXPECT_EQ(tlb.Find(kRootA, Va(0x5000)), nullptr);
  tlb.Insert(kRootA, Va(0x5000), Gfn(7), PageOf(7), kRw);
  EXPECT_EQ(tlb.size(), 0u);
  EXPECT_EQ(tlb.stats().misses, 0u);  // not counted while disabled
  tlb.SetEnabled(true);
  tlb.Insert(kRootA, Va(0x5000), Gfn(7), PageOf(7), kRw);
  EXPECT_EQ(tlb.Find(kRootA, Va(0x5000)), PageOf(7));
}

struct ModelKey {
  uint64_t root, vpn;
  bool operator==(const ModelKey&) const = default;
  template <typename H>
  friend H AbslHashValue(H h, const ModelKey& k) {
    return H::combine(std::move(h), k.root, k.vpn);
  }
};

// Random fills, erasures and clears against a map of what must be there: a
// present key must give its frame's page; the TLB may have dropped a key
// (set conflicts), but never keep one that was erased.
TEST(SoftTlbTest, MatchesAModelUnderRandomOperations) {
  SoftTlb tlb(32);  // small: many set conflicts
  using Key = ModelKey;
  absl::flat_hash_map<Key, uint64_t> model;  // key -> gfn, a superset of the TLB
  std::mt19937 rng(3);
  for (int step = 0; step < 200000; ++step) {
    const Key k{0x1000ull * (1 + rng() % 3), rng() % 64};
    const uint64_t gfn = rng() % 40;
    switch (rng() % 8) {
      case 0:
      case 1:
      case 2:
        tlb.Insert(Pa(k.root), Va(k.vpn << 12), Gfn(gfn), PageOf(gfn), kRw);
        model[k] = gfn;
        break;
      case 3:
        tlb.Erase(Pa(k.root), Va(k.vpn << 12));
        model.erase(k);
        break;
      case 4: {
        tlb.EraseGfn(Gfn(gfn));
        absl::erase_if(model, [gfn](const auto& kv) { return kv.second == gfn; });
        break;
      }
      case 5:
        if (rng() % 100 == 0) {
          tlb.Clear();
          model.clear();
        }
        break;
      default: {
        const uint8_t* page = tlb.Find(Pa(k.root), Va(k.vpn << 12));
        auto it = model.find(k);
        if (it == model.end()) {
          ASSERT_EQ(page, nullptr) << step;
        } else if (page != nullptr) {
          ASSERT_EQ(page, PageOf(it->second)) << step;
        }
        break;
      }
    }
  }
  size_t present = 0;
  for (const auto& [k, gfn] : model) present += tlb.Peek(Pa(k.root), Va(k.vpn << 12));
  EXPECT_EQ(tlb.size(), present);
}

}  // namespace
}  // namespace vmi
