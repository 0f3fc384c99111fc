// The engine functions on their own, over a bare Unicorn engine and a RAM
// buffer: what ApplyEntry/ApplyView record as enforced, when they mark the
// translated code and the TLB stale, what FlushEngine drops, the code-frame
// record that detects other engines' writes, and that a frame without
// execute really stops a fetch once flushed.

#include "sim/internal/engines.h"

#include <sys/mman.h>

#include <cstring>
#include <memory>

#include "gtest/gtest.h"
#include "sim/views.h"

namespace vmi::sim::sim_internal {
namespace {

constexpr uint64_t kFrames = 16;

class EnginesUnitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    void* p = mmap(nullptr, kFrames * kPageSize, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(p, MAP_FAILED);
    ram_ = static_cast<uint8_t*>(p);
    auto e = OpenEngine(View(1), ram_, kFrames * kPageSize, "test");
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = *std::move(e);
  }
  void TearDown() override {
    engine_.reset();
    munmap(ram_, kFrames * kPageSize);
  }
  absl::Status Apply(uint64_t gfn, uint64_t backing, MemoryAccess access) {
    return ApplyEntry(*engine_, ram_, Gfn(gfn), ViewEntry{Gfn(backing), access, MemoryAccessOptions::None()}, "test");
  }
  uint8_t* ram_ = nullptr;
  std::unique_ptr<Engine> engine_;
};

TEST_F(EnginesUnitTest, ProtectionChangesAreRecordedAndDropTheTlb) {
  Engine& e = *engine_;
  ASSERT_TRUE(Apply(3, 3, MemoryAccess::RX()).ok());
  ASSERT_EQ(e.applied.count(3), 1u);
  EXPECT_EQ(e.applied[3].access, MemoryAccess::RX());
  EXPECT_TRUE(e.tlb_dirty);
  EXPECT_FALSE(e.tb_dirty);  // execute kept: translations stay valid
  FlushEngine(e);
  EXPECT_FALSE(e.tlb_dirty);
  ASSERT_TRUE(Apply(3, 3, MemoryAccess::R()).ok());
  EXPECT_TRUE(e.tb_dirty);  // execute lost: translated code must go
  FlushEngine(e);
  ASSERT_TRUE(Apply(3, 3, MemoryAccess::RWX()).ok());
  EXPECT_EQ(e.applied.count(3), 0u);  // back to the default: nothing to remember
}

TEST_F(EnginesUnitTest, RemapsDropTranslatedCode) {
  Engine& e = *engine_;
  ASSERT_TRUE(Apply(4, 9, MemoryAccess::RWX()).ok());
  EXPECT_EQ(e.applied[4].backing, Gfn(9));
  EXPECT_TRUE(e.tb_dirty);
  FlushEngine(e);
  EXPECT_FALSE(e.tb_dirty);
  ASSERT_TRUE(Apply(4, 4, MemoryAccess::RWX()).ok());
  EXPECT_EQ(e.applied.count(4), 0u);
  EXPECT_TRUE(e.tb_dirty);
}

TEST_F(EnginesUnitTest, ApplyViewEnforcesTheTableAndForgetsStaleEntries) {
  ViewTable views(Gfn(kFrames - 1));
  auto view = views.Create(MemoryAccess::R());
  ASSERT_TRUE(view.ok());
  ASSERT_EQ(*view, View(1));
  ASSERT_TRUE(views.SetAccess(*view, Gfn(2), MemoryAccess::RW()).ok());
  ASSERT_TRUE(views.ChangeGfn(*view, Gfn(5), Gfn(6)).ok());
  ASSERT_TRUE(Apply(3, 3, MemoryAccess::X()).ok());  // something the view no longer has
  ASSERT_TRUE(ApplyView(*engine_, ram_, kFrames * kPageSize, views, "test").ok());
  Engine& e = *engine_;
  EXPECT_EQ(e.applied_default, MemoryAccess::R());
  EXPECT_EQ(e.applied.size(), 2u);
  EXPECT_EQ(e.applied[2].access, MemoryAccess::RW());
  EXPECT_EQ(e.applied[5].backing, Gfn(6));
  EXPECT_EQ(e.applied.count(3), 0u);
  EXPECT_TRUE(e.tb_dirty);  // the default lost execute
}

TEST_F(EnginesUnitTest, CodeFramesDetectWritesByOthers) {
  Engine& e = *engine_;
  ram_[7 * kPageSize + 10] = 0x90;
  RecordCodeFrame(e, ram_, 7);
  EXPECT_FALSE(CodeChanged(e, ram_));
  ram_[7 * kPageSize + 10] = 0xcc;  // another engine patches the code
  EXPECT_TRUE(CodeChanged(e, ram_));
  RecordCodeFrame(e, ram_, 7);  // recorded already: the old copy stays
  EXPECT_TRUE(CodeChanged(e, ram_));
  RefreshCode(e, ram_);  // this engine's own write: its cache saw it
  EXPECT_FALSE(CodeChanged(e, ram_));
  e.tb_dirty = true;
  FlushEngine(e);
  EXPECT_TRUE(e.code.empty());  // no translations left, nothing to compare
}

TEST_F(EnginesUnitTest, AFrameWithoutExecuteStopsTheFetchOnceFlushed) {
  Engine& e = *engine_;
  std::memset(ram_ + kPageSize, 0x90, 16);  // NOPs at gpa 0x1000
  ASSERT_EQ(uc_emu_start(e.uc, 0x1000, 0x1004, 0, 0), UC_ERR_OK);
  ASSERT_TRUE(Apply(1, 1, MemoryAccess::RW()).ok());
  FlushEngine(e);
  EXPECT_EQ(uc_emu_start(e.uc, 0x1000, 0x1004, 0, 0), UC_ERR_FETCH_PROT);
}

}  // namespace
}  // namespace vmi::sim::sim_internal
