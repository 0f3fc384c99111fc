#include "utils/bpm/breakpoint_manager.h"

#include <memory>
#include <string>
#include <vector>

#include "drivers/fault/fault_injecting_driver.h"
#include "drivers/sim/sim_driver.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sim/guest_builder.h"
#include "sim/programs.h"
#include "utils/interceptor/execute_controller.h"
#include "utils/interceptor/interceptor.h"

namespace vmi::utils {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr uint64_t kTarget = 0x0000'4000'0000'0000ull;
using Driver = FaultInjectingDriver<sim::SimDriver>;

// A booted guest with kTarget mapped to frame A, the PTM and a controller.
template <template <typename> class ControllerT>
class Fixture {
 public:
  using Controller = ControllerT<Driver>;
  Fixture() {
    sim::MachineOptions m;
    m.ram_size = 16 << 20;
    absl::StatusOr<sim::SimDriver> sim = sim::SimDriver::Boot("loop_call", m);
    EXPECT_TRUE(sim.ok());
    auto* space = sim->guest()->space;
    auto* builder = sim->guest()->builder.get();
    root = space->root();
    frame_a = Amd64::PaFromGfn(*builder->AllocateFrame());
    frame_b = Amd64::PaFromGfn(*builder->AllocateFrame());
    EXPECT_TRUE(space->Map(Va(kTarget), frame_a, 4096, sim::page_flags::kWritable).ok());
    Driver driver(*std::move(sim));
    plan = driver.shared_plan();
    core = std::make_unique<VmiCore<Driver>>(std::move(driver));
    view = *core->CreateView(MemoryAccess::RWX());
    ptm = std::make_unique<PageTableMonitor<Driver>>(*core);
    controller = std::make_unique<Controller>(*core);
    bpm = std::make_unique<BreakpointManager<Driver, Controller>>(*controller, *ptm);
    pte = core->Walk(AddressContext(Va(kTarget), root))->steps[3].entry_address;
  }
  ~Fixture() {
    bpm.reset();
    controller.reset();
    ptm.reset();
  }
  BreakpointSpec Spec(uint64_t key, uint64_t offset, bool global = false, uint64_t tag = 0) const {
    return {.key = key, .view = view, .root = root, .va = Va(kTarget + offset), .global = global, .tag = tag};
  }
  // The guest writes the target's PTE (as the reactor would see it).
  std::vector<PageTableUpdate> SetPte(uint64_t value) {
    EXPECT_TRUE(core->WriteU64(AccessContext::Physical(pte), value).ok());
    EXPECT_TRUE(ptm->MarkDirty(VcpuId(0), view, pte));
    auto updates = ptm->ProcessDirty(VcpuId(0));
    EXPECT_TRUE(updates.ok());
    EXPECT_TRUE(bpm->Apply(*updates).ok());
    return *updates;
  }

  Pa root, frame_a, frame_b, pte;
  std::shared_ptr<FaultPlan> plan;
  std::unique_ptr<VmiCore<Driver>> core;
  View view;
  std::unique_ptr<PageTableMonitor<Driver>> ptm;
  std::unique_ptr<Controller> controller;
  std::unique_ptr<BreakpointManager<Driver, Controller>> bpm;
};

TEST(BreakpointManagerTest, ActivePendingAndBackWithTheInterceptor) {
  Fixture<Interceptor> f;
  ASSERT_EQ(*f.bpm->Insert(f.Spec(1, 0x10, false, 11)), BreakpointState::kActive);
  ASSERT_EQ(*f.bpm->Insert(f.Spec(2, 0x10, false, 22)), BreakpointState::kActive);  // same address, other key
  EXPECT_EQ(f.bpm->Insert(f.Spec(1, 0x10)).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(f.controller->breakpoints(), 1u);  // one INT3, two references
  EXPECT_EQ(f.bpm->PlacedAt(1, f.view, f.root, Va(kTarget + 0x10)), f.frame_a + 0x10);
  EXPECT_THAT(f.bpm->HitsAt(f.view, f.frame_a + 0x10, f.root),
              ElementsAre(f.Spec(1, 0x10, false, 11), f.Spec(2, 0x10, false, 22)));
  EXPECT_THAT(f.bpm->HitsAt(f.view, f.frame_a + 0x10, Pa(0x1000)), IsEmpty());  // another root
  // Unmapped: pending; the shadow is gone.
  f.SetPte(0);
  EXPECT_EQ(f.bpm->State(1, f.view, f.root, Va(kTarget + 0x10)), BreakpointState::kPending);
  EXPECT_EQ(f.bpm->pending(), 2u);
  EXPECT_EQ(f.controller->pages(), 0u);
  EXPECT_FALSE(f.bpm->ActiveAt(f.view, f.frame_a + 0x10));
  // Mapped at another frame: active there.
  f.SetPte(f.frame_b.value() | 3);
  EXPECT_EQ(f.bpm->active(), 2u);
  EXPECT_EQ(f.bpm->PlacedAt(2, f.view, f.root, Va(kTarget + 0x10)), f.frame_b + 0x10);
  EXPECT_TRUE(f.controller->Contains(f.view, Amd64::GfnFromPa(f.frame_b), 0x10));
  // Removal by the event that hit them (under another root: nothing).
  ASSERT_TRUE(f.bpm->RemoveByEvent(f.view, f.frame_b + 0x10, Pa(0x1000)).ok());
  EXPECT_EQ(f.bpm->size(), 2u);
  ASSERT_TRUE(f.bpm->Insert(f.Spec(3, 0x20)).ok());
  ASSERT_TRUE(f.bpm->RemoveByEvent(f.view, f.frame_b + 0x20, f.root).ok());
  EXPECT_EQ(f.bpm->size(), 2u);
  EXPECT_FALSE(f.controller->Contains(f.view, Amd64::GfnFromPa(f.frame_b), 0x20));
  // Removal by key, then by address.
  ASSERT_TRUE(f.bpm->RemoveByKey(1).ok());
  EXPECT_EQ(f.controller->breakpoints(), 1u);
  ASSERT_TRUE(f.bpm->RemoveByAddress(f.view, Va(kTarget + 0x10)).ok());
  EXPECT_EQ(f.bpm->size(), 0u);
  EXPECT_EQ(f.controller->pages(), 0u);
  EXPECT_EQ(f.ptm->frames(), 0u);
  EXPECT_EQ(f.bpm->Remove(1, f.view, f.root, Va(kTarget + 0x10)).code(), absl::StatusCode::kNotFound);
}

TEST(BreakpointManagerTest, PendingFromTheStartAndGlobalHits) {
  Fixture<ExecuteController> f;
  // Not mapped yet.
  const BreakpointSpec later = {.key = 1, .view = f.view, .root = f.root, .va = Va(kTarget + 0x5008), .tag = 5};
  ASSERT_EQ(*f.bpm->Insert(later), BreakpointState::kPending);
  EXPECT_EQ(f.controller->pages(), 0u);
  const Pa pte5 = f.pte + 5 * 8;
  ASSERT_TRUE(f.core->WriteU64(AccessContext::Physical(pte5), f.frame_b.value() | 3).ok());
  ASSERT_TRUE(f.ptm->MarkDirty(VcpuId(1), f.view, pte5));
  auto updates = f.ptm->ProcessDirty(VcpuId(1));
  ASSERT_TRUE(updates.ok());
  ASSERT_TRUE(f.bpm->Apply(*updates).ok());
  EXPECT_EQ(f.bpm->PlacedAt(1, f.view, f.root, later.va), f.frame_b + 8);
  EXPECT_EQ(f.core->GetMemoryAccess(Amd64::GfnFromPa(f.frame_b), f.view).value(), MemoryAccess::RW());
  // A global breakpoint hits under any root; a per-root one only under its own.
  ASSERT_EQ(*f.bpm->Insert(f.Spec(2, 0x20, true, 6)), BreakpointState::kActive);
  EXPECT_THAT(f.bpm->HitsAt(f.view, f.frame_a + 0x20, Pa(0x5000)), ElementsAre(f.Spec(2, 0x20, true, 6)));
  EXPECT_THAT(f.bpm->HitsAt(f.view, f.frame_b + 8, Pa(0x5000)), IsEmpty());
  ASSERT_TRUE(f.bpm->RemoveByView(f.view).ok());
  EXPECT_EQ(f.controller->pages(), 0u);
  EXPECT_EQ(f.core->GetMemoryAccess(Amd64::GfnFromPa(f.frame_b), f.view).value(), MemoryAccess::RWX());
  EXPECT_EQ(f.ptm->frames(), 0u);
}

TEST(BreakpointManagerTest, FailuresChangeNothingOrCanBeRepeated) {
  // The controller failing at insertion: nothing watched, nothing placed.
  {
    Fixture<Interceptor> f;
    f.plan->FailNth(DriverOp::kChangeViewGfn, f.plan->calls(DriverOp::kChangeViewGfn) + 1,
                    absl::UnavailableError("boom"));
    absl::StatusOr<BreakpointState> r = f.bpm->Insert(f.Spec(1, 0));
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("boom"));
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("inserting breakpoint(key=1"));
    EXPECT_EQ(f.bpm->size(), 0u);
    EXPECT_EQ(f.ptm->frames(), 0u);
    EXPECT_EQ(f.controller->pages(), 0u);
    // The monitor failing: nothing either.
    f.plan->FailNth(DriverOp::kSetMemoryAccessWithOptions,
                    f.plan->calls(DriverOp::kSetMemoryAccessWithOptions) + 2, absl::UnavailableError("boom"));
    ASSERT_FALSE(f.bpm->Insert(f.Spec(1, 0)).ok());
    EXPECT_EQ(f.ptm->frames(), 0u);
    EXPECT_EQ(f.controller->pages(), 0u);
    ASSERT_TRUE(f.bpm->Insert(f.Spec(1, 0)).ok());
  }
  // The controller failing at removal: the breakpoint stays, the call can
  // be repeated.
  {
    Fixture<Interceptor> f;
    ASSERT_TRUE(f.bpm->Insert(f.Spec(1, 0)).ok());
    f.plan->FailNth(DriverOp::kResetViewGfn, f.plan->calls(DriverOp::kResetViewGfn) + 1,
                    absl::UnavailableError("boom"));
    EXPECT_FALSE(f.bpm->Remove(1, f.view, f.root, Va(kTarget)).ok());
    EXPECT_EQ(f.bpm->size(), 1u);
    EXPECT_EQ(f.bpm->State(1, f.view, f.root, Va(kTarget)), BreakpointState::kActive);
    ASSERT_TRUE(f.bpm->Remove(1, f.view, f.root, Va(kTarget)).ok());
    EXPECT_EQ(f.controller->pages(), 0u);
    EXPECT_EQ(f.ptm->frames(), 0u);
  }
  // A page-in whose placement fails: pending, with the error reported; the
  // next page-in places it.
  {
    Fixture<Interceptor> f;
    ASSERT_TRUE(f.bpm->Insert(f.Spec(1, 0)).ok());
    f.SetPte(0);
    ASSERT_TRUE(f.core->WriteU64(AccessContext::Physical(f.pte), f.frame_b.value() | 3).ok());
    ASSERT_TRUE(f.ptm->MarkDirty(VcpuId(0), f.view, f.pte));
    auto updates = f.ptm->ProcessDirty(VcpuId(0));
    ASSERT_TRUE(updates.ok());
    f.plan->FailNth(DriverOp::kAllocateGfn, f.plan->calls(DriverOp::kAllocateGfn) + 1,
                    absl::ResourceExhaustedError("no frames"));
    absl::Status s = f.bpm->Apply(*updates);
    EXPECT_THAT(std::string(s.message()), HasSubstr("activating breakpoint(key=1"));
    EXPECT_EQ(f.bpm->State(1, f.view, f.root, Va(kTarget)), BreakpointState::kPending);
    ASSERT_TRUE(f.bpm->Apply(*updates).ok());
    EXPECT_EQ(f.bpm->State(1, f.view, f.root, Va(kTarget)), BreakpointState::kActive);
  }
}

}  // namespace
}  // namespace vmi::utils
