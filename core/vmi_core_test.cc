#include "core/vmi_core.h"

#include <cstring>
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
  // Nothing about the failure is cached: mapping the page makes it work.
  tables_.Map(Va(0x401000), Gfn(11));
  EXPECT_TRUE(core_.Read(V(0x400fe0), absl::MakeSpan(out)).ok());
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

TEST_F(OwnedPagesTest, PteWriteWithOwnedTablePages) {
  Fill(10, 1);
  Fill(20, 77);
  tables_.Map(Va(0x400000), Gfn(10));
  EXPECT_EQ(*core_.ReadU8(V(0x400000)), 1);
  ASSERT_TRUE(core_.WriteU64(tables_.PteAddress(Va(0x400000)), (20ull << 12) | 1).ok());
  EXPECT_EQ(*core_.ReadU8(V(0x400000)), 77);
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
