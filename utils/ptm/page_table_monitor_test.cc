#include "utils/ptm/page_table_monitor.h"

#include <memory>
#include <string>
#include <vector>

#include "drivers/fault/fault_injecting_driver.h"
#include "drivers/recording/recording_driver.h"
#include "drivers/sim/sim_driver.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sim/guest_builder.h"
#include "sim/programs.h"

namespace vmi::utils {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Update = PageTableUpdate;

constexpr uint64_t kTarget = 0x0000'4000'0000'0000ull;  // its own PML4 slot

absl::StatusOr<sim::SimDriver> Boot(int levels) {
  sim::MachineOptions m;
  m.ram_size = 16 << 20;
  sim::StandardGuestOptions g;
  g.paging_levels = levels;
  return sim::SimDriver::Boot("loop_call", m, g);
}

// The guest-physical address of the entry at `level` in the walk of `va`.
template <typename D>
Pa EntryPa(VmiCore<D>& core, Pa root, Va va, int level) {
  absl::StatusOr<amd64::Walk> walk = core.Walk(AddressContext(va, root));
  if (walk.ok()) {
    for (int i = 0; i < walk->count; ++i) {
      if (walk->steps[i].level == level) return walk->steps[i].entry_address;
    }
  }
  ADD_FAILURE() << "no level " << level << " entry for " << va;
  return Pa(0);
}

template <typename D>
void WriteEntry(VmiCore<D>& core, Pa entry, uint64_t value) {
  ASSERT_TRUE(core.WriteU64(AccessContext::Physical(entry), value).ok());
}

class PageTableMonitorTest : public ::testing::TestWithParam<int> {
 protected:
  using Driver = RecordingDriver<sim::SimDriver>;
  void SetUp() override {
    absl::StatusOr<sim::SimDriver> sim = Boot(GetParam());
    ASSERT_TRUE(sim.ok()) << sim.status();
    space_ = sim->guest()->space;
    builder_ = sim->guest()->builder.get();
    root_ = space_->root();
    // Two data frames; the target maps to the first.
    frame_a_ = Amd64::PaFromGfn(*builder_->AllocateFrame());
    frame_b_ = Amd64::PaFromGfn(*builder_->AllocateFrame());
    ASSERT_TRUE(space_->Map(Va(kTarget), frame_a_, 4096, sim::page_flags::kWritable).ok());
    log_ = std::make_shared<CallLog>();
    core_ = std::make_unique<VmiCore<Driver>>(Driver(*std::move(sim), log_));
    if (GetParam() == 5) core_->SetPagingMode(amd64::PagingMode::FiveLevel());
    view_ = *core_->CreateView(MemoryAccess::RWX());
    ptm_ = std::make_unique<PageTableMonitor<Driver>>(*core_);
  }
  AddressContext Target(uint64_t offset = 0) const { return AddressContext(Va(kTarget + offset), root_); }
  Pa Leaf() { return EntryPa(*core_, root_, Va(kTarget), 1); }

  sim::AddressSpace* space_ = nullptr;
  sim::GuestBuilder* builder_ = nullptr;
  Pa root_, frame_a_, frame_b_;
  std::shared_ptr<CallLog> log_;
  std::unique_ptr<VmiCore<Driver>> core_;
  View view_;
  std::unique_ptr<PageTableMonitor<Driver>> ptm_;
};

TEST_P(PageTableMonitorTest, WatchingProtectsEveryTableOfTheWalkReadOnly) {
  log_->Clear();
  absl::StatusOr<std::optional<Pa>> pa = ptm_->Monitor(view_, Target(0x123));
  ASSERT_TRUE(pa.ok()) << pa.status();
  EXPECT_EQ(*pa, frame_a_);
  const int levels = GetParam();
  EXPECT_EQ(ptm_->frames(), static_cast<size_t>(levels));
  EXPECT_EQ(ptm_->entries(), static_cast<size_t>(levels));
  EXPECT_EQ(log_->With("set_memory_access").size(), static_cast<size_t>(levels));
  for (int level = levels; level >= 1; --level) {
    const Gfn table = Amd64::GfnFromPa(EntryPa(*core_, root_, Va(kTarget), level));
    EXPECT_TRUE(ptm_->IsMonitoredFrame(view_, table));
    EXPECT_FALSE(ptm_->IsMonitoredFrame(kDefaultView, table));
    auto access = core_->GetMemoryAccessWithOptions(table, view_);
    ASSERT_TRUE(access.ok());
    EXPECT_EQ(access->first, MemoryAccess::R());
    EXPECT_EQ(access->second, MemoryAccessOptions::IgnorePageWalkUpdates());
  }
  // A second reference changes nothing; the last one restores everything.
  log_->Clear();
  ASSERT_TRUE(ptm_->Monitor(view_, Target()).ok());
  EXPECT_TRUE(log_->calls.empty()) << log_->ToString();
  ASSERT_TRUE(ptm_->Unmonitor(view_, Target()).ok());
  EXPECT_EQ(ptm_->frames(), static_cast<size_t>(levels));
  ASSERT_TRUE(ptm_->Unmonitor(view_, Target()).ok());
  EXPECT_EQ(ptm_->frames(), 0u);
  EXPECT_EQ(ptm_->watches(), 0u);
  EXPECT_EQ(log_->With("set_memory_access").size(), static_cast<size_t>(levels));
  for (const std::string& call : log_->With("set_memory_access")) EXPECT_THAT(call, HasSubstr(" rwx) ok"));
  EXPECT_EQ(ptm_->Unmonitor(view_, Target()).code(), absl::StatusCode::kNotFound);
}

TEST_P(PageTableMonitorTest, UnmapMoveAndRemapOfTheLeaf) {
  ASSERT_TRUE(ptm_->Monitor(view_, Target()).ok());
  const Pa pte = Leaf();
  const uint64_t flags = amd64::PageTableEntry::kPresent | amd64::PageTableEntry::kWrite;
  // A write that changes nothing: no update.
  EXPECT_TRUE(ptm_->MarkDirty(VcpuId(0), view_, pte));
  EXPECT_THAT(*ptm_->ProcessDirty(VcpuId(0)), ElementsAre());
  // Unmapped.
  WriteEntry(*core_, pte, 0);
  EXPECT_TRUE(ptm_->MarkDirty(VcpuId(0), view_, pte));
  EXPECT_TRUE(ptm_->HasDirty(VcpuId(0)));
  EXPECT_FALSE(ptm_->HasDirty(VcpuId(1)));
  EXPECT_THAT(*ptm_->ProcessDirty(VcpuId(0)),
              ElementsAre(Update{Update::Kind::kPageOut, view_, Target(), frame_a_}));
  EXPECT_EQ(*ptm_->Translation(view_, Target()), std::nullopt);
  // Mapped to another frame.
  WriteEntry(*core_, pte, frame_b_.value() | flags);
  EXPECT_TRUE(ptm_->MarkDirty(VcpuId(1), view_, pte + 3));  // any byte of the entry
  EXPECT_THAT(*ptm_->ProcessDirty(VcpuId(1)),
              ElementsAre(Update{Update::Kind::kPageIn, view_, Target(), frame_b_}));
  // Moved in one write: out, then in.
  WriteEntry(*core_, pte, frame_a_.value() | flags);
  EXPECT_TRUE(ptm_->MarkDirty(VcpuId(0), view_, pte));
  EXPECT_THAT(*ptm_->ProcessDirty(VcpuId(0)),
              ElementsAre(Update{Update::Kind::kPageOut, view_, Target(), frame_b_},
                          Update{Update::Kind::kPageIn, view_, Target(), frame_a_}));
  // A write elsewhere in a monitored frame is ours but dirties nothing; a
  // frame that is not monitored is not ours.
  EXPECT_TRUE(ptm_->MarkDirty(VcpuId(0), view_, pte + 64));
  EXPECT_FALSE(ptm_->HasDirty(VcpuId(0)));
  EXPECT_FALSE(ptm_->MarkDirty(VcpuId(0), view_, frame_a_));
  EXPECT_FALSE(ptm_->MarkDirty(VcpuId(0), kDefaultView, pte));
}

TEST_P(PageTableMonitorTest, AHigherLevelGoingAwayAndComingBack) {
  ASSERT_TRUE(ptm_->Monitor(view_, Target()).ok());
  const int levels = GetParam();
  // The PDPT entry (a table pointer) cleared: the walk stops there, and the
  // PD and PT frames are no longer needed.
  const Pa pdpte = EntryPa(*core_, root_, Va(kTarget), 3);
  const Gfn pd = Amd64::GfnFromPa(EntryPa(*core_, root_, Va(kTarget), 2));
  const uint64_t saved = *core_->ReadU64(AccessContext::Physical(pdpte));
  WriteEntry(*core_, pdpte, 0);
  EXPECT_TRUE(ptm_->MarkDirty(VcpuId(0), view_, pdpte));
  EXPECT_THAT(*ptm_->ProcessDirty(VcpuId(0)),
              ElementsAre(Update{Update::Kind::kPageOut, view_, Target(), frame_a_}));
  EXPECT_EQ(ptm_->frames(), static_cast<size_t>(levels - 2));
  EXPECT_FALSE(ptm_->IsMonitoredFrame(view_, pd));
  EXPECT_EQ(core_->GetMemoryAccess(pd, view_).value(), MemoryAccess::RWX());
  // Back: the lower tables are watched again.
  WriteEntry(*core_, pdpte, saved);
  EXPECT_TRUE(ptm_->MarkDirty(VcpuId(0), view_, pdpte));
  EXPECT_THAT(*ptm_->ProcessDirty(VcpuId(0)),
              ElementsAre(Update{Update::Kind::kPageIn, view_, Target(), frame_a_}));
  EXPECT_EQ(ptm_->frames(), static_cast<size_t>(levels));
  EXPECT_TRUE(ptm_->IsMonitoredFrame(view_, pd));
}

TEST_P(PageTableMonitorTest, LargePagesAtPdAndPdptLevel) {
  // 2 MiB: a PD leaf.
  const uint64_t va2m = kTarget + (uint64_t{1} << 30);
  const Pa big = *builder_->AllocateFrames(512, 2 << 20);
  ASSERT_TRUE(space_->Map(Va(va2m), big, 2 << 20, sim::page_flags::kWritable, sim::PageSize::k2M).ok());
  absl::StatusOr<std::optional<Pa>> pa = ptm_->Monitor(view_, AddressContext(Va(va2m + 0x5000), root_));
  ASSERT_TRUE(pa.ok()) << pa.status();
  EXPECT_EQ(*pa, big + 0x5000);
  const int levels = GetParam();
  EXPECT_EQ(ptm_->entries(), static_cast<size_t>(levels - 1));
  const Pa pde = EntryPa(*core_, root_, Va(va2m), 2);
  WriteEntry(*core_, pde, 0);
  EXPECT_TRUE(ptm_->MarkDirty(VcpuId(0), view_, pde));
  EXPECT_THAT(*ptm_->ProcessDirty(VcpuId(0)),
              ElementsAre(Update{Update::Kind::kPageOut, view_, AddressContext(Va(va2m + 0x5000), root_),
                                 big + 0x5000}));
  // 1 GiB: a PDPT leaf at frame 0 (the machine's RAM is inside it).
  const uint64_t va1g = kTarget + (uint64_t{4} << 30);
  ASSERT_TRUE(space_->Map(Va(va1g), Pa(0), uint64_t{1} << 30, sim::page_flags::kWritable, sim::PageSize::k1G).ok());
  pa = ptm_->Monitor(view_, AddressContext(Va(va1g + 0x345000), root_));
  ASSERT_TRUE(pa.ok());
  EXPECT_EQ(*pa, Pa(0x345000));
  const Pa pdpte = EntryPa(*core_, root_, Va(va1g), 3);
  const uint64_t saved = *core_->ReadU64(AccessContext::Physical(pdpte));
  WriteEntry(*core_, pdpte, 0);
  EXPECT_TRUE(ptm_->MarkDirty(VcpuId(0), view_, pdpte));
  WriteEntry(*core_, pdpte, saved);
  // Both changes between two looks: nothing to report.
  EXPECT_THAT(*ptm_->ProcessDirty(VcpuId(0)), ElementsAre());
}

TEST_P(PageTableMonitorTest, TablesSharedBetweenAddressesAndRootsAreProtectedOnce) {
  // A neighbour page in the same PT, and a second root sharing the tables
  // below its top level (like a kernel half in every process).
  ASSERT_TRUE(space_->Map(Va(kTarget + 0x1000), frame_b_, 4096, sim::page_flags::kWritable).ok());
  const int levels = GetParam();
  ASSERT_TRUE(ptm_->Monitor(view_, Target()).ok());
  ASSERT_TRUE(ptm_->Monitor(view_, Target(0x1000)).ok());
  EXPECT_EQ(ptm_->frames(), static_cast<size_t>(levels));
  EXPECT_EQ(ptm_->entries(), static_cast<size_t>(levels + 1));  // two PTEs
  const Pa other_root = Amd64::PaFromGfn(*builder_->AllocateFrame());
  std::vector<uint8_t> top(4096);
  ASSERT_TRUE(core_->Read(AccessContext::Physical(root_), absl::MakeSpan(top)).ok());
  ASSERT_TRUE(core_->Write(AccessContext::Physical(other_root), top).ok());
  ASSERT_TRUE(ptm_->Monitor(view_, AddressContext(Va(kTarget), other_root)).ok());
  EXPECT_EQ(ptm_->frames(), static_cast<size_t>(levels + 1));
  EXPECT_EQ(ptm_->watches(), 3u);
  // The shared PTE changes for both roots.
  const Pa pte = Leaf();
  WriteEntry(*core_, pte, 0);
  EXPECT_TRUE(ptm_->MarkDirty(VcpuId(0), view_, pte));
  EXPECT_THAT(*ptm_->ProcessDirty(VcpuId(0)),
              ::testing::UnorderedElementsAre(Update{Update::Kind::kPageOut, view_, Target(), frame_a_},
                                              Update{Update::Kind::kPageOut, view_,
                                                     AddressContext(Va(kTarget), other_root), frame_a_}));
  // The tables stay protected until the last watch goes.
  ASSERT_TRUE(ptm_->Unmonitor(view_, Target()).ok());
  ASSERT_TRUE(ptm_->Unmonitor(view_, AddressContext(Va(kTarget), other_root)).ok());
  EXPECT_EQ(ptm_->frames(), static_cast<size_t>(levels));
  ASSERT_TRUE(ptm_->UnmonitorAll().ok());
  EXPECT_EQ(ptm_->frames(), 0u);
  EXPECT_EQ(core_->GetMemoryAccess(Amd64::GfnFromPa(root_), view_).value(), MemoryAccess::RWX());
}

TEST_P(PageTableMonitorTest, HostileTables) {
  const int levels = GetParam();
  // Not present: watched up to the missing entry, reported when it appears.
  const AddressContext absent(Va(kTarget + 0x7000), root_);
  absl::StatusOr<std::optional<Pa>> pa = ptm_->Monitor(view_, absent);
  ASSERT_TRUE(pa.ok());
  EXPECT_EQ(*pa, std::nullopt);
  EXPECT_EQ(ptm_->entries(), static_cast<size_t>(levels));
  // A PTE pointing beyond guest memory is still a translation (the frame is
  // the guest's business).
  const Pa far(uint64_t{1} << 40);
  const Pa pte = Leaf() + 7 * 8;
  WriteEntry(*core_, pte, far.value() | amd64::PageTableEntry::kPresent);
  EXPECT_TRUE(ptm_->MarkDirty(VcpuId(0), view_, pte));
  EXPECT_THAT(*ptm_->ProcessDirty(VcpuId(0)), ElementsAre(Update{Update::Kind::kPageIn, view_, absent, far}));
  // A 2 MiB PDE with reserved bits: does not translate, and the PT is no
  // longer part of the walk.
  const Pa pde = EntryPa(*core_, root_, Va(kTarget), 2);
  const uint64_t saved_pde = *core_->ReadU64(AccessContext::Physical(pde));
  WriteEntry(*core_, pde, (4u << 20) | (1u << 13) | amd64::PageTableEntry::kPageSize | 3);
  EXPECT_TRUE(ptm_->MarkDirty(VcpuId(0), view_, pde));
  EXPECT_THAT(*ptm_->ProcessDirty(VcpuId(0)), ElementsAre(Update{Update::Kind::kPageOut, view_, absent, far}));
  EXPECT_EQ(ptm_->frames(), static_cast<size_t>(levels - 1));
  // A PDE pointing at a table outside guest memory: still nothing.
  WriteEntry(*core_, pde, far.value() | 3);
  EXPECT_TRUE(ptm_->MarkDirty(VcpuId(0), view_, pde));
  EXPECT_THAT(*ptm_->ProcessDirty(VcpuId(0)), ElementsAre());
  EXPECT_EQ(ptm_->frames(), static_cast<size_t>(levels - 1));
  WriteEntry(*core_, pde, saved_pde);
  EXPECT_TRUE(ptm_->MarkDirty(VcpuId(0), view_, pde));
  EXPECT_THAT(*ptm_->ProcessDirty(VcpuId(0)), ElementsAre(Update{Update::Kind::kPageIn, view_, absent, far}));
  EXPECT_EQ(ptm_->frames(), static_cast<size_t>(levels));
  // The PDE of kTarget (index 0) pointing at its own table: the PT-level
  // read of index 0 is the same entry. It is watched once, nothing loops,
  // and the references come out even.
  ASSERT_TRUE(ptm_->Monitor(view_, Target()).ok());
  const Pa pd_table(pde.value() & ~0xfffull);
  WriteEntry(*core_, pde, pd_table.value() | 3);
  EXPECT_TRUE(ptm_->MarkDirty(VcpuId(0), view_, pde));
  ASSERT_TRUE(ptm_->ProcessDirty(VcpuId(0)).ok());
  EXPECT_EQ(*ptm_->Translation(view_, Target()), pd_table);
  WriteEntry(*core_, pde, saved_pde);
  EXPECT_TRUE(ptm_->MarkDirty(VcpuId(0), view_, pde));
  ASSERT_TRUE(ptm_->ProcessDirty(VcpuId(0)).ok());
  EXPECT_EQ(*ptm_->Translation(view_, Target()), frame_a_);
  ASSERT_TRUE(ptm_->UnmonitorAll().ok());
  EXPECT_EQ(ptm_->frames(), 0u);
  EXPECT_EQ(ptm_->entries(), 0u);
  EXPECT_EQ(core_->GetMemoryAccess(Amd64::GfnFromPa(pd_table), view_).value(), MemoryAccess::RWX());
  // Non-canonical addresses are refused; an unreadable root too.
  EXPECT_EQ(ptm_->Monitor(view_, AddressContext(Va(uint64_t{1} << 62), root_)).status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::optional<Pa>> bad_root = ptm_->Monitor(view_, AddressContext(Va(kTarget), far));
  EXPECT_EQ(bad_root.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(bad_root.status().message()), HasSubstr("root table"));
  EXPECT_EQ(ptm_->frames(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Levels, PageTableMonitorTest, ::testing::Values(4, 5),
                         [](const auto& info) { return absl::StrCat(info.param, "Level"); });

// A 4-level guest behind a FaultInjectingDriver, a fresh view, a monitor:
// what each fault case starts from. `code` is the program's entry.
struct FaultySetup {
  using Driver = FaultInjectingDriver<sim::SimDriver>;
  Pa root;
  Va code;
  std::shared_ptr<FaultPlan> plan;
  std::unique_ptr<VmiCore<Driver>> core;
  View view;
  std::unique_ptr<PageTableMonitor<Driver>> ptm;

  // `page_cache` false: every walk reads through the driver.
  static FaultySetup Make(bool page_cache = true) {
    absl::StatusOr<sim::SimDriver> sim = Boot(4);
    EXPECT_TRUE(sim.ok()) << sim.status();
    FaultySetup f;
    f.root = sim->guest()->space->root();
    f.code = sim->guest()->program.entry();
    Driver driver(*std::move(sim));
    f.plan = driver.shared_plan();
    f.core = std::make_unique<VmiCore<Driver>>(std::move(driver));
    if (!page_cache) f.core->page_cache().SetEnabled(false);
    f.view = *f.core->CreateView(MemoryAccess::RWX());
    f.ptm = std::make_unique<PageTableMonitor<Driver>>(*f.core);
    return f;
  }
};

// Every protection call failing in turn: Monitor fails with the driver's
// error and nothing stays protected; a failing restore is retried.
TEST(PageTableMonitorFaultTest, NothingStaysProtectedAfterAFailure) {
  for (uint64_t nth = 1; nth <= 8; ++nth) {
    for (DriverOp op : {DriverOp::kGetMemoryAccessWithOptions, DriverOp::kSetMemoryAccessWithOptions}) {
      FaultySetup f = FaultySetup::Make();
      auto& [root, code, plan, core_ptr, view, ptm_ptr] = f;
      VmiCore<FaultySetup::Driver>& core = *core_ptr;
      PageTableMonitor<FaultySetup::Driver>& ptm = *ptm_ptr;
      plan->FailNth(op, plan->calls(op) + nth, absl::UnavailableError("boom"));
      absl::StatusOr<std::optional<Pa>> r = ptm.Monitor(view, AddressContext(code, root));
      if (nth > 4 && op == DriverOp::kGetMemoryAccessWithOptions) {
        ASSERT_TRUE(r.ok());  // only four frames to protect
        continue;
      }
      if (r.ok()) continue;  // the failure landed in the restore of a rollback: covered below
      EXPECT_THAT(std::string(r.status().message()), HasSubstr("boom"));
      plan->ClearAll();
      EXPECT_EQ(ptm.frames(), 0u) << DriverOpName(op) << " " << nth;
      EXPECT_EQ(ptm.watches(), 0u);
      absl::StatusOr<amd64::Walk> walk = core.Walk(AddressContext(code, root));
      ASSERT_TRUE(walk.ok());
      for (int i = 0; i < walk->count; ++i) {
        EXPECT_EQ(core.GetMemoryAccess(Amd64::GfnFromPa(walk->steps[i].table), view).value(), MemoryAccess::RWX())
            << DriverOpName(op) << " " << nth << " level " << int{walk->steps[i].level};
      }
    }
  }
  // A driver failing to read a table is an error, not "does not translate":
  // Monitor changes nothing, ProcessDirty keeps the watch and its dirt.
  {
    FaultySetup f = FaultySetup::Make(/*page_cache=*/false);  // every walk reads through the driver
    auto& [root, code, plan, core_ptr, view, ptm_ptr] = f;
    VmiCore<FaultySetup::Driver>& core = *core_ptr;
    PageTableMonitor<FaultySetup::Driver>& ptm = *ptm_ptr;
    plan->FailNth(DriverOp::kReadPage, plan->calls(DriverOp::kReadPage) + 2, absl::UnavailableError("boom"));
    absl::StatusOr<std::optional<Pa>> r = ptm.Monitor(view, AddressContext(code, root));
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("boom"));
    EXPECT_EQ(ptm.frames(), 0u);
    ASSERT_TRUE(ptm.Monitor(view, AddressContext(code, root)).ok());
    const Pa pte = core.Walk(AddressContext(code, root))->steps[3].entry_address;
    EXPECT_TRUE(ptm.MarkDirty(VcpuId(0), view, pte));
    plan->FailNth(DriverOp::kReadPage, plan->calls(DriverOp::kReadPage) + 3, absl::UnavailableError("boom"));
    absl::StatusOr<std::vector<PageTableUpdate>> u = ptm.ProcessDirty(VcpuId(0));
    EXPECT_THAT(std::string(u.status().message()), HasSubstr("boom"));
    EXPECT_TRUE(ptm.HasDirty(VcpuId(0)));
    EXPECT_NE(*ptm.Translation(view, AddressContext(code, root)), std::nullopt);
    u = ptm.ProcessDirty(VcpuId(0));
    ASSERT_TRUE(u.ok());
    EXPECT_TRUE(u->empty());
  }
  // A restore that fails is retried by the next call.
  FaultySetup f = FaultySetup::Make();
  auto& [root, code, plan, core_ptr, view, ptm_ptr] = f;
  VmiCore<FaultySetup::Driver>& core = *core_ptr;
  PageTableMonitor<FaultySetup::Driver>& ptm = *ptm_ptr;
  ASSERT_TRUE(ptm.Monitor(view, AddressContext(code, root)).ok());
  plan->FailNth(DriverOp::kSetMemoryAccessWithOptions, plan->calls(DriverOp::kSetMemoryAccessWithOptions) + 2,
                absl::UnavailableError("boom"));
  absl::Status s = ptm.Unmonitor(view, AddressContext(code, root));
  EXPECT_THAT(std::string(s.message()), HasSubstr("restoring the access"));
  EXPECT_EQ(ptm.watches(), 0u);
  ASSERT_TRUE(ptm.UnmonitorAll().ok());
  absl::StatusOr<amd64::Walk> walk = core.Walk(AddressContext(code, root));
  ASSERT_TRUE(walk.ok());
  for (int i = 0; i < walk->count; ++i) {
    EXPECT_EQ(core.GetMemoryAccess(Amd64::GfnFromPa(walk->steps[i].table), view).value(), MemoryAccess::RWX());
  }
}

}  // namespace
}  // namespace vmi::utils
