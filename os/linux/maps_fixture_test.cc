// Memory maps and modules on the real fixtures, line for line against what
// the guest printed about itself (/proc/PID/maps, /proc/modules).

#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "core/vmi_core.h"
#include "drivers/dump/dump_driver.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "os/linux/linux_guest.h"
#include "os/linux/maps.h"
#include "os/linux/modules.h"
#include "os/linux/processes.h"
#include "os/linux/testing/fixtures.h"

namespace vmi::os_linux {
namespace {

using ::testing::ElementsAreArray;
using testing::FindLinuxFixture;
using testing::LinuxFixture;

struct Case {
  std::string variant;
  bool elf;
};

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

class MapsFixtureTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    absl::StatusOr<LinuxFixture> f = FindLinuxFixture(GetParam().variant);
    ASSERT_TRUE(f.ok()) << f.status();
    fixture_ = *f;
    absl::StatusOr<dump::DumpDriver> driver =
        dump::DumpDriver::Open(GetParam().elf ? fixture_.elf_path() : fixture_.raw_path());
    ASSERT_TRUE(driver.ok()) << driver.status();
    core_ = std::make_unique<VmiCore<dump::DumpDriver>>(*std::move(driver));
    auto guest = LinuxGuest<dump::DumpDriver>::Discover(*core_);
    ASSERT_TRUE(guest.ok()) << guest.status();
    guest_ = *std::move(guest);
    absl::StatusOr<const KernelTypes*> types = guest_->kernel().Types();
    ASSERT_TRUE(types.ok()) << types.status();
    types_ = *types;
  }

  LinuxFixture fixture_;
  std::unique_ptr<VmiCore<dump::DumpDriver>> core_;
  std::unique_ptr<LinuxGuest<dump::DumpDriver>> guest_;
  const KernelTypes* types_ = nullptr;
};

TEST_P(MapsFixtureTest, MapsOfEveryKnownProcessEqualProcPidMaps) {
  absl::StatusOr<const TaskLayout*> task_layout = guest_->task_layout();
  ASSERT_TRUE(task_layout.ok()) << task_layout.status();
  absl::StatusOr<MapsLayout> layout = MapsLayout::Resolve(*types_);
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_TRUE(layout->maple_tree);  // 6.1

  TaskList processes = ListProcesses(guest_->access(), **task_layout);
  ASSERT_TRUE(processes.complete()) << processes.status;
  std::map<int, const Task*> by_pid;
  for (const Task& t : processes.tasks) by_pid[t.pid] = &t;

  int checked = 0;
  for (const std::string& line : Lines(fixture_.ReadGuestFile("known.txt").value())) {
    std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    int pid;
    ASSERT_TRUE(f.size() == 2 && absl::SimpleAtoi(f[1], &pid)) << line;
    SCOPED_TRACE(line);
    auto it = by_pid.find(pid);
    ASSERT_NE(it, by_pid.end());
    ASSERT_NE(it->second->mm, 0u);
    MapList maps = ListMaps(guest_->access(), *layout, it->second->mm);
    ASSERT_TRUE(maps.complete()) << maps.status;
    std::vector<std::string> ours;
    for (const MemoryMap& m : maps.maps) ours.push_back(m.ToProcLine());
    const std::vector<std::string> guest =
        Lines(fixture_.ReadGuestFile("maps_" + f[0] + ".txt").value());
    ASSERT_GE(guest.size(), 5u);
    EXPECT_THAT(ours, ElementsAreArray(guest));
    ++checked;
  }
  EXPECT_EQ(checked, 4);
}

TEST_P(MapsFixtureTest, EveryUserProcessHasWholeMaps) {
  absl::StatusOr<const TaskLayout*> task_layout = guest_->task_layout();
  ASSERT_TRUE(task_layout.ok()) << task_layout.status();
  absl::StatusOr<MapsLayout> layout = MapsLayout::Resolve(*types_);
  ASSERT_TRUE(layout.ok()) << layout.status();
  TaskList processes = ListProcesses(guest_->access(), **task_layout);
  ASSERT_TRUE(processes.complete()) << processes.status;
  int user_processes = 0;
  for (const Task& t : processes.tasks) {
    if (t.mm == 0) continue;
    ++user_processes;
    MapList maps = ListMaps(guest_->access(), *layout, t.mm);
    ASSERT_TRUE(maps.complete()) << t.pid << ": " << maps.status;
    std::map<std::string, int> names;
    for (const MemoryMap& m : maps.maps) ++names[m.name];
    EXPECT_EQ(names["[stack]"], 1) << t.pid;
    EXPECT_EQ(names["[vdso]"], 1) << t.pid;
    EXPECT_EQ(names["[vvar]"], 1) << t.pid;
    EXPECT_GE(maps.maps.size(), 5u) << t.pid;
  }
  EXPECT_GE(user_processes, 5);
}

TEST_P(MapsFixtureTest, ModulesEqualProcModules) {
  absl::StatusOr<ModuleLayout> layout = ModuleLayout::Resolve(*types_);
  ASSERT_TRUE(layout.ok()) << layout.status();
  ModuleList modules = ListModules(guest_->access(), *layout);
  ASSERT_TRUE(modules.complete()) << modules.status;
  std::vector<std::string> ours;
  for (const Module& m : modules.modules) ours.push_back(m.ToProcLine());
  const std::vector<std::string> guest = Lines(fixture_.ReadGuestFile("modules.txt").value());
  ASSERT_GE(guest.size(), 2u);
  EXPECT_THAT(ours, ElementsAreArray(guest));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, MapsFixtureTest,
                         ::testing::Values(Case{"l4", false}, Case{"l4", true}, Case{"l5", false},
                                           Case{"l5", true}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.variant + (info.param.elf ? "_elf" : "_raw");
                         });

}  // namespace
}  // namespace vmi::os_linux
