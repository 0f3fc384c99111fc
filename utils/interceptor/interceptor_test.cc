#include "utils/interceptor/interceptor.h"

#include <memory>
#include <string>
#include <vector>

#include "drivers/fault/fault_injecting_driver.h"
#include "drivers/recording/recording_driver.h"
#include "drivers/sim/sim_driver.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmi::utils {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// loop_call, calling `func` (inc %rbx; ret) practically forever.
absl::StatusOr<sim::SimDriver> BootLoop() {
  sim::MachineOptions m;
  m.ram_size = 16 << 20;
  sim::SimDriverOptions o;
  o.wait_instructions = 5'000'000;
  VMI_ASSIGN_OR_RETURN(sim::SimDriver d, sim::SimDriver::Boot("loop_call", m, {}, o));
  VMI_ASSIGN_OR_RETURN(amd64::Registers regs, d.Registers(VcpuId(0)));
  regs.rdi = uint64_t{1} << 62;
  VMI_RETURN_IF_ERROR(d.SetRegisters(VcpuId(0), regs));
  return d;
}

template <typename D>
Pa FuncPa(D& driver) {
  return *driver.guest()->program.SymbolPa("func");
}

class InterceptorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<sim::SimDriver> sim = BootLoop();
    ASSERT_TRUE(sim.ok()) << sim.status();
    func_pa_ = FuncPa(*sim);
    log_ = std::make_shared<CallLog>();
    core_ = std::make_unique<VmiCore<Driver>>(Driver(*std::move(sim), log_));
    absl::StatusOr<View> view = core_->CreateView(MemoryAccess::RWX());
    ASSERT_TRUE(view.ok());
    view_ = *view;
    interceptor_ = std::make_unique<Interceptor<Driver>>(*core_);
  }
  using Driver = RecordingDriver<sim::SimDriver>;

  std::shared_ptr<CallLog> log_;
  std::unique_ptr<VmiCore<Driver>> core_;
  std::unique_ptr<Interceptor<Driver>> interceptor_;
  Pa func_pa_;
  View view_;
};

TEST_F(InterceptorTest, AHiddenBreakpointFiresInItsViewAndTheGuestRunsOn) {
  const Gfn gfn = Amd64::GfnFromPa(func_pa_);
  const uint8_t original = core_->ReadU8(AccessContext::Physical(func_pa_)).value();
  log_->Clear();
  absl::StatusOr<Gfn> shadow = interceptor_->Insert(view_, func_pa_);
  ASSERT_TRUE(shadow.ok()) << shadow.status();
  // The exact steps: the page and its access read, a frame, the copy with
  // the INT3, the remap, execute-only.
  EXPECT_THAT(log_->calls,
              ElementsAre(absl::StrFormat("get_memory_access(gfn=%s view=%s) ok", gfn, view_),
                          absl::StrFormat("allocate_gfn() -> %s ok", *shadow),
                          absl::StrFormat("write_page(gfn=%s offset=0x0 len=4096) ok", *shadow),
                          absl::StrFormat("change_view_gfn(view=%s %s -> %s) ok", view_, gfn, *shadow),
                          absl::StrFormat("set_memory_access(gfn=%s view=%s --x) ok", gfn, view_)));
  EXPECT_EQ(core_->ReadU8(AccessContext::Physical(func_pa_)).value(), original);  // host view: untouched
  EXPECT_EQ(core_->ReadU8(AccessContext::Physical(Amd64::PaFromGfn(*shadow) + Amd64::PageOffset(func_pa_.value())))
                .value(),
            kInt3);

  ASSERT_TRUE(core_->MonitorEnable(amd64::MonitorInterrupt{3}).ok());
  ASSERT_TRUE(core_->SwitchToView(view_).ok());
  int hits = 0;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(core_->WaitForEvent(absl::Seconds(5), [&](const VmiEvent<Amd64>& e) {
                       EXPECT_TRUE(interceptor_->Contains(e, gfn));
                       EXPECT_TRUE(interceptor_->Contains(e));  // by the frame the sim reports
                       VmiEvent<Amd64> without = e;
                       std::get<amd64::InterruptEvent>(without.reason).instruction_gfn.reset();
                       EXPECT_FALSE(interceptor_->Contains(without));  // no frame: the caller walks
                       VmiEvent<Amd64> elsewhere = e;
                       std::get<amd64::InterruptEvent>(elsewhere.reason).instruction_gfn = Gfn(gfn.value() + 1);
                       EXPECT_FALSE(interceptor_->Contains(elsewhere));
                       EXPECT_EQ(e.view, view_);
                       ++hits;
                       // Run the original instruction where the original frame is mapped.
                       return VmiEventResponse<Amd64>::FastSingleStep(kDefaultView);
                     }).ok());
  }
  EXPECT_EQ(hits, 5);
  const uint64_t rbx = core_->GetRegisters(VcpuId(0))->rbx;
  EXPECT_GE(rbx, 4u);  // func ran: the hidden INT3 did not stop it

  // Removal: the remap, the access and the frame go; no more events.
  log_->Clear();
  ASSERT_TRUE(interceptor_->Remove(view_, func_pa_).value());
  EXPECT_THAT(log_->calls,
              ElementsAre(absl::StrFormat("reset_view_gfn(view=%s %s) ok", view_, gfn),
                          absl::StrFormat("set_memory_access(gfn=%s view=%s rwx) ok", gfn, view_),
                          absl::StrFormat("free_gfn(%s) ok", *shadow)));
  EXPECT_EQ(interceptor_->pages(), 0u);
  EXPECT_FALSE(core_->driver().ReadPage(*shadow).ok());  // freed
  EXPECT_EQ(core_->WaitForEvent(absl::Seconds(1), [](const VmiEvent<Amd64>&) {
              ADD_FAILURE() << "an event after removal";
              return VmiEventResponse<Amd64>::Continue();
            }).code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST_F(InterceptorTest, ReferencesPerOffsetAndPagesSharedByOffsets) {
  ASSERT_TRUE(interceptor_->Insert(view_, func_pa_).ok());
  ASSERT_TRUE(interceptor_->Insert(view_, func_pa_).ok());
  const Pa other = func_pa_ + 1;
  absl::StatusOr<Gfn> shadow = interceptor_->Insert(view_, other);
  ASSERT_TRUE(shadow.ok());
  EXPECT_EQ(interceptor_->pages(), 1u);
  EXPECT_EQ(interceptor_->breakpoints(), 2u);
  const Gfn gfn = Amd64::GfnFromPa(func_pa_);
  EXPECT_TRUE(interceptor_->Contains(view_, gfn, Amd64::PageOffset(other.value())));
  EXPECT_FALSE(interceptor_->Contains(kDefaultView, gfn, Amd64::PageOffset(other.value())));
  EXPECT_FALSE(interceptor_->Remove(view_, func_pa_).value());  // one reference left
  EXPECT_TRUE(interceptor_->Remove(view_, func_pa_).value());
  // The byte is back in the shadow, the other INT3 still there.
  const Pa in_shadow = Amd64::PaFromGfn(*shadow);
  EXPECT_EQ(core_->ReadU8(AccessContext::Physical(in_shadow + Amd64::PageOffset(func_pa_.value()))).value(),
            core_->ReadU8(AccessContext::Physical(func_pa_)).value());
  EXPECT_EQ(core_->ReadU8(AccessContext::Physical(in_shadow + Amd64::PageOffset(other.value()))).value(), kInt3);
  EXPECT_TRUE(interceptor_->Remove(view_, other).value());
  EXPECT_EQ(interceptor_->pages(), 0u);
  EXPECT_EQ(interceptor_->Remove(view_, other).status().code(), absl::StatusCode::kNotFound);
  // Inserting again starts from a fresh copy of the page.
  ASSERT_TRUE(core_->WriteU8(AccessContext::Physical(func_pa_ + 3), 0x90).ok());
  absl::StatusOr<Gfn> again = interceptor_->Insert(view_, func_pa_);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(core_->ReadU8(AccessContext::Physical(Amd64::PaFromGfn(*again) + Amd64::PageOffset(func_pa_.value()) + 3))
                .value(),
            0x90);
}

TEST_F(InterceptorTest, RefreshCopiesAGuestWriteIntoTheShadow) {
  absl::StatusOr<Gfn> shadow = interceptor_->Insert(view_, func_pa_);
  ASSERT_TRUE(shadow.ok());
  const Pa later = func_pa_ + 2;
  ASSERT_TRUE(core_->WriteU8(AccessContext::Physical(later), 0xf4).ok());  // as if the guest wrote it
  ASSERT_TRUE(interceptor_->Refresh(view_, Amd64::GfnFromPa(func_pa_)).ok());
  const Pa base = Amd64::PaFromGfn(*shadow);
  EXPECT_EQ(core_->ReadU8(AccessContext::Physical(base + Amd64::PageOffset(later.value()))).value(), 0xf4);
  EXPECT_EQ(core_->ReadU8(AccessContext::Physical(base + Amd64::PageOffset(func_pa_.value()))).value(), kInt3);
}

// Every driver call of an insertion and a removal fails once in turn:
// afterwards no shadow frame is left allocated, no remap stays, and the
// frame's access is what it was.
TEST(InterceptorFaultTest, AFailureAtAnyStepLeavesNothingBehind) {
  const DriverOp steps[] = {DriverOp::kGetMemoryAccessWithOptions, DriverOp::kAllocateGfn,
                            DriverOp::kWritePage,        DriverOp::kChangeViewGfn,
                            DriverOp::kSetMemoryAccess};
  for (DriverOp op : steps) {
    absl::StatusOr<sim::SimDriver> sim = BootLoop();
    ASSERT_TRUE(sim.ok());
    const Pa pa = FuncPa(*sim);
    const Gfn gfn = Amd64::GfnFromPa(pa);
    using Driver = FaultInjectingDriver<sim::SimDriver>;
    Driver driver(*std::move(sim));
    std::shared_ptr<FaultPlan> plan = driver.shared_plan();
    VmiCore<Driver> core(std::move(driver));
    const View view = *core.CreateView(MemoryAccess::RWX());
    const uint64_t max_before = core.Info()->max_gfn.value();
    Interceptor<Driver> interceptor(core);
    plan->FailNth(op, plan->calls(op) + 1, absl::UnavailableError("boom"));
    absl::StatusOr<Gfn> r = interceptor.Insert(view, pa);
    ASSERT_FALSE(r.ok()) << DriverOpName(op);
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("boom")) << DriverOpName(op);
    plan->ClearAll();
    EXPECT_EQ(interceptor.pages(), 0u) << DriverOpName(op);
    EXPECT_EQ(*core.GetMemoryAccess(gfn, view), MemoryAccess::RWX()) << DriverOpName(op);
    // Every frame that was allocated was freed (a failed AllocateGfn counts
    // as a call but allocated nothing).
    EXPECT_EQ(plan->calls(DriverOp::kAllocateGfn) - (op == DriverOp::kAllocateGfn ? 1 : 0),
              plan->calls(DriverOp::kFreeGfn))
        << DriverOpName(op);
    EXPECT_EQ(core.Info()->max_gfn.value(), max_before) << DriverOpName(op);
    // A later insertion works and tears down cleanly.
    ASSERT_TRUE(interceptor.Insert(view, pa).ok()) << DriverOpName(op);
    ASSERT_TRUE(interceptor.Remove(view, pa).ok()) << DriverOpName(op);
  }
  // A removal failing part-way can be repeated until it succeeds.
  for (DriverOp op : {DriverOp::kResetViewGfn, DriverOp::kSetMemoryAccessWithOptions, DriverOp::kFreeGfn}) {
    absl::StatusOr<sim::SimDriver> sim = BootLoop();
    ASSERT_TRUE(sim.ok());
    const Pa pa = FuncPa(*sim);
    using Driver = FaultInjectingDriver<sim::SimDriver>;
    Driver driver(*std::move(sim));
    std::shared_ptr<FaultPlan> plan = driver.shared_plan();
    VmiCore<Driver> core(std::move(driver));
    const View view = *core.CreateView(MemoryAccess::RWX());
    Interceptor<Driver> interceptor(core);
    ASSERT_TRUE(interceptor.Insert(view, pa).ok());
    plan->FailNth(op, plan->calls(op) + 1, absl::UnavailableError("boom"));
    EXPECT_FALSE(interceptor.Remove(view, pa).ok()) << DriverOpName(op);
    EXPECT_EQ(interceptor.pages(), 1u);
    ASSERT_TRUE(interceptor.Remove(view, pa).ok()) << DriverOpName(op);
    EXPECT_EQ(interceptor.pages(), 0u);
    EXPECT_EQ(plan->calls(DriverOp::kAllocateGfn), plan->calls(DriverOp::kFreeGfn) - (op == DriverOp::kFreeGfn ? 1 : 0));
    EXPECT_EQ(*core.GetMemoryAccess(Amd64::GfnFromPa(pa), view), MemoryAccess::RWX());
  }
}

}  // namespace
}  // namespace vmi::utils
