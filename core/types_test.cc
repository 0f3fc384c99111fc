#include "core/types.h"

#include <sstream>
#include <unordered_set>

#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash_testing.h"
#include "absl/strings/str_cat.h"
#include "core/address_context.h"
#include "gtest/gtest.h"

namespace vmi {
namespace {

TEST(AddressTypesTest, ArithmeticAndComparison) {
  Va va(0x1000);
  EXPECT_EQ(va + 0x10, Va(0x1010));
  EXPECT_EQ(va - 0x10, Va(0xff0));
  EXPECT_EQ(Va(0x3000) - va, 0x2000u);
  EXPECT_EQ(Va(0x1234) & ~uint64_t{0xfff}, Va(0x1000));
  EXPECT_LT(Pa(1), Pa(2));
  EXPECT_GE(Gfn(5), Gfn(5));
  Gfn g(7);
  ++g;
  g += 2;
  EXPECT_EQ(g, Gfn(10));
  EXPECT_EQ(g.value(), 10u);
}

TEST(AddressTypesTest, DistinctTypesDoNotMix) {
  static_assert(!std::is_convertible_v<Va, Pa>);
  static_assert(!std::is_convertible_v<uint64_t, Gfn>);
  static_assert(!std::is_invocable_v<std::equal_to<>, Va, Pa>);
}

TEST(AddressTypesTest, HexFormatting) {
  EXPECT_EQ(Gfn(0x1a2).ToString(), "0x1a2");
  EXPECT_EQ(absl::StrFormat("%s", Va(0xffff800000000000)), "0xffff800000000000");
  std::ostringstream os;
  os << Pa(0xdead);
  EXPECT_EQ(os.str(), "0xdead");
  EXPECT_EQ(absl::StrFormat("%s/%s", VcpuId(3), View(2)), "3/2");
}

TEST(AddressTypesTest, Hashing) {
  EXPECT_TRUE(absl::VerifyTypeImplementsAbslHashCorrectly({Gfn(0), Gfn(1), Gfn(~uint64_t{0})}));
  EXPECT_TRUE(absl::VerifyTypeImplementsAbslHashCorrectly({View(0), View(1)}));
  std::unordered_set<Va> std_set{Va(1), Va(2), Va(1)};
  EXPECT_EQ(std_set.size(), 2u);
  absl::flat_hash_set<Pa> absl_set{Pa(1), Pa(1)};
  EXPECT_EQ(absl_set.size(), 1u);
}

TEST(MemoryAccessTest, FlagsAndPrinting) {
  EXPECT_EQ(MemoryAccess::RWX().ToString(), "rwx");
  EXPECT_EQ(MemoryAccess::RX().ToString(), "r-x");
  EXPECT_EQ(MemoryAccess::None().ToString(), "---");
  EXPECT_EQ(absl::StrFormat("%s", MemoryAccess::W()), "-w-");
  EXPECT_EQ(MemoryAccess::R() | MemoryAccess::W(), MemoryAccess::RW());
  EXPECT_EQ(MemoryAccess::RWX() - MemoryAccess::W(), MemoryAccess::RX());
  EXPECT_EQ(MemoryAccess::RW() & MemoryAccess::WX(), MemoryAccess::W());
  EXPECT_TRUE(MemoryAccess::RWX().Contains(MemoryAccess::RX()));
  EXPECT_FALSE(MemoryAccess::RX().Contains(MemoryAccess::W()));
  EXPECT_TRUE(MemoryAccess::None().empty());
  // Bits beyond R/W/X are dropped.
  EXPECT_EQ(MemoryAccess(0xff), MemoryAccess::RWX());
}

TEST(MemoryAccessOptionsTest, Flags) {
  EXPECT_TRUE(MemoryAccessOptions::None().empty());
  EXPECT_TRUE(MemoryAccessOptions::IgnorePageWalkUpdates().ignore_page_walk_updates());
  EXPECT_EQ(absl::StrFormat("%s", MemoryAccessOptions::IgnorePageWalkUpdates()),
            "ignore_page_walk_updates");
}

TEST(VmiInfoTest, Defaults) {
  VmiInfo info;
  info.max_gfn = Gfn(0xff);
  info.vcpus = 2;
  EXPECT_EQ(info.ToString(), "page_size=4096 max_gfn=0xff vcpus=2");
}

TEST(AccessContextTest, Conversions) {
  AccessContext phys = Pa(0x1000);
  EXPECT_TRUE(phys.is_physical());
  EXPECT_EQ(phys.address, 0x1000u);
  EXPECT_EQ(phys.ToString(), "pa=0x1000");

  AccessContext virt = AddressContext(Va(0x401000), Pa(0x5000));
  EXPECT_TRUE(virt.is_virtual());
  EXPECT_EQ(virt.root(), Pa(0x5000));
  EXPECT_EQ(absl::StrFormat("%s", virt), "va=0x401000 root=0x5000");
  EXPECT_EQ(virt + 8, AccessContext::Virtual(Va(0x401008), Pa(0x5000)));
  EXPECT_NE(virt, AccessContext::Virtual(Va(0x401000), Pa(0x6000)));
  EXPECT_EQ(AddressContext(Va(1), Pa(2)).ToString(), "va=0x1 root=0x2");
}

}  // namespace
}  // namespace vmi
