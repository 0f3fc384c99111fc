#include "core/mapped_page.h"

#include <vector>

#include "gtest/gtest.h"

namespace vmi {
namespace {

TEST(MappedPageTest, OwnedCopyIsIndependentOfItsSource) {
  std::vector<uint8_t> src(4096, 0xab);
  MappedPage page = MappedPage::Owned(Gfn(3), absl::MakeConstSpan(src));
  src[0] = 0;
  EXPECT_TRUE(page.valid());
  EXPECT_TRUE(page.is_owned());
  EXPECT_FALSE(page.is_live());
  EXPECT_EQ(page.gfn(), Gfn(3));
  ASSERT_EQ(page.size(), 4096u);
  EXPECT_EQ(page.data()[0], 0xab);
}

TEST(MappedPageTest, LiveViewSeesChangesAndReleasesOnce) {
  std::vector<uint8_t> ram(4096, 0);
  int releases = 0;
  {
    MappedPage page = MappedPage::Live(Gfn(9), ram.data(), ram.size(), [&] { ++releases; });
    EXPECT_TRUE(page.is_live());
    MappedPage copy = page;
    EXPECT_EQ(page.use_count(), 2);
    ram[5] = 0x42;
    EXPECT_EQ(copy.bytes()[5], 0x42);
    page = MappedPage();
    EXPECT_EQ(releases, 0);
    EXPECT_EQ(copy.data(), ram.data());
  }
  EXPECT_EQ(releases, 1);
}

TEST(MappedPageTest, EmptyHandle) {
  MappedPage page;
  EXPECT_FALSE(page.valid());
  EXPECT_EQ(page.size(), 0u);
  EXPECT_EQ(page.data(), nullptr);
}

}  // namespace
}  // namespace vmi
