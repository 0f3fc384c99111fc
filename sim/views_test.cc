#include "sim/views.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmi::sim {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ViewTableTest, HostViewIsRwxIdentity) {
  ViewTable t(Gfn(0xff));
  EXPECT_TRUE(t.Exists(kDefaultView));
  EXPECT_EQ(t.Lookup(kDefaultView, Gfn(5)), (ViewEntry{Gfn(5), MemoryAccess::RWX(), MemoryAccessOptions::None()}));
  EXPECT_TRUE(t.Overrides(kDefaultView).empty());
}

TEST(ViewTableTest, CreateSetRemapResetDestroy) {
  ViewTable t(Gfn(0xff));
  absl::StatusOr<View> v = t.Create(MemoryAccess::RX());
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, View(1));
  EXPECT_EQ(*t.GetAccess(*v, Gfn(3)), MemoryAccess::RX());
  ASSERT_TRUE(t.SetAccess(*v, Gfn(3), MemoryAccess::R()).ok());
  ASSERT_TRUE(t.ChangeGfn(*v, Gfn(4), Gfn(9)).ok());
  EXPECT_EQ(t.Lookup(*v, Gfn(3)), (ViewEntry{Gfn(3), MemoryAccess::R(), MemoryAccessOptions::None()}));
  EXPECT_EQ(t.Lookup(*v, Gfn(4)), (ViewEntry{Gfn(9), MemoryAccess::RX(), MemoryAccessOptions::None()}));
  EXPECT_THAT(t.Overrides(*v), ElementsAre(Gfn(3), Gfn(4)));
  // Other views are untouched.
  EXPECT_EQ(t.Lookup(kDefaultView, Gfn(4)), (ViewEntry{Gfn(4), MemoryAccess::RWX(), MemoryAccessOptions::None()}));
  ASSERT_TRUE(t.ResetGfn(*v, Gfn(4)).ok());
  EXPECT_EQ(t.Lookup(*v, Gfn(4)), (ViewEntry{Gfn(4), MemoryAccess::RX(), MemoryAccessOptions::None()}));
  // Setting the default access again drops the override.
  ASSERT_TRUE(t.SetAccess(*v, Gfn(3), MemoryAccess::RX()).ok());
  EXPECT_TRUE(t.Overrides(*v).empty());
  ASSERT_TRUE(t.Destroy(*v).ok());
  EXPECT_FALSE(t.Exists(*v));
}

TEST(ViewTableTest, OptionsArePerFrameAndDroppedByAPlainSetAccess) {
  ViewTable t(Gfn(0xff));
  absl::StatusOr<View> v = t.Create(MemoryAccess::RWX());
  ASSERT_TRUE(v.ok());
  const MemoryAccessOptions pw = MemoryAccessOptions::IgnorePageWalkUpdates();
  ASSERT_TRUE(t.SetAccess(*v, Gfn(3), MemoryAccess::R(), pw).ok());
  EXPECT_EQ(t.Lookup(*v, Gfn(3)), (ViewEntry{Gfn(3), MemoryAccess::R(), pw}));
  EXPECT_EQ(*t.GetOptions(*v, Gfn(3)), pw);
  EXPECT_EQ(*t.GetOptions(kDefaultView, Gfn(3)), MemoryAccessOptions::None());
  // Options alone (with the default access) still make an override.
  ASSERT_TRUE(t.SetAccess(*v, Gfn(4), MemoryAccess::RWX(), pw).ok());
  EXPECT_THAT(t.Overrides(*v), ElementsAre(Gfn(3), Gfn(4)));
  ASSERT_TRUE(t.SetAccess(*v, Gfn(3), MemoryAccess::R()).ok());
  EXPECT_EQ(*t.GetOptions(*v, Gfn(3)), MemoryAccessOptions::None());
  ASSERT_TRUE(t.SetAccess(*v, Gfn(4), MemoryAccess::RWX()).ok());
  EXPECT_THAT(t.Overrides(*v), ElementsAre(Gfn(3)));
  EXPECT_EQ(t.GetOptions(View(9), Gfn(3)).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ViewTableTest, BadInputNamesOperationAndOperands) {
  ViewTable t(Gfn(0xff));
  absl::Status s = t.SetAccess(View(7), Gfn(1), MemoryAccess::R());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("set_memory_access(view=7, gfn=0x1): no such view"));
  s = t.SetAccess(kDefaultView, Gfn(0x100), MemoryAccess::R());
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("gfn=0x100"));
  EXPECT_EQ(t.Destroy(kDefaultView).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.ChangeGfn(kDefaultView, Gfn(1), Gfn(2)).code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<View> v = t.Create(MemoryAccess::RWX());
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(t.ChangeGfn(*v, Gfn(1), Gfn(0x1000)).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(t.Destroy(View(9)).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ViewTableTest, RunsOutOfViews) {
  ViewTable t(Gfn(0xff));
  for (int i = 1; i < ViewTable::kMaxViews; ++i) ASSERT_TRUE(t.Create(MemoryAccess::RWX()).ok());
  EXPECT_EQ(t.Create(MemoryAccess::RWX()).status().code(), absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace vmi::sim
