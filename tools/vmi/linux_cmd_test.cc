// The Linux subcommands on a live (pausable) target: the VM is paused for
// the walk and resumed on every exit path, including failures.

#include "tools/vmi/linux_cmd.h"

#include <sstream>

#include "drivers/fault/fault_injecting_driver.h"
#include "drivers/sim/sim_driver.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmi::cli {
namespace {

using ::testing::HasSubstr;
using Driver = FaultInjectingDriver<sim::SimDriver>;

class LiveTargetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<sim::SimDriver> sim = sim::SimDriver::Boot("loop_call");
    ASSERT_TRUE(sim.ok()) << sim.status();
    Driver driver(*std::move(sim));
    plan_ = driver.shared_plan();
    core_ = std::make_unique<VmiCore<Driver>>(std::move(driver));
  }
  Io MakeIo() { return Io{out_, err_, false}; }

  std::shared_ptr<FaultPlan> plan_;
  std::unique_ptr<VmiCore<Driver>> core_;
  std::ostringstream out_, err_;
};

static_assert(VmiVmControl<Driver>);

TEST_F(LiveTargetTest, EachWalkPausesAndResumesEvenWhenNoLinuxIsFound) {
  // The simulator's guest is not Linux: discovery fails inside the pause.
  EXPECT_EQ(CmdPs(*core_, PsOptions{}, LinuxOptions{}, MakeIo()), kExitFailed);
  EXPECT_EQ(CmdModules(*core_, LinuxOptions{}, MakeIo()), kExitFailed);
  EXPECT_EQ(CmdMaps(*core_, 1, LinuxOptions{}, MakeIo()), kExitFailed);
  EXPECT_THAT(err_.str(), HasSubstr("no valid VMCOREINFO"));
  EXPECT_EQ(plan_->calls(DriverOp::kPause), 3u);
  EXPECT_EQ(plan_->calls(DriverOp::kResume), 3u);
}

TEST_F(LiveTargetTest, AFailedReadMidWalkStillResumes) {
  plan_->FailFrom(DriverOp::kReadPage, 5, absl::UnavailableError("the guest went away"));
  EXPECT_EQ(CmdPs(*core_, PsOptions{}, LinuxOptions{}, MakeIo()), kExitFailed);
  EXPECT_EQ(plan_->calls(DriverOp::kPause), 1u);
  EXPECT_EQ(plan_->calls(DriverOp::kResume), 1u);
}

TEST_F(LiveTargetTest, APauseThatFailsIsReportedAndNothingIsResumed) {
  plan_->FailNth(DriverOp::kPause, 1, absl::FailedPreconditionError("no"));
  EXPECT_EQ(CmdPs(*core_, PsOptions{}, LinuxOptions{}, MakeIo()), kExitFailed);
  EXPECT_THAT(err_.str(), HasSubstr("ps: pause"));
  EXPECT_EQ(plan_->calls(DriverOp::kResume), 0u);
}

}  // namespace
}  // namespace vmi::cli
