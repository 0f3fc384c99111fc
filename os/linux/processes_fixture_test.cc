// Processes, threads and current tasks on the real fixtures, against what
// the guest printed about itself (ps, /proc/PID/status, /proc/PID/task).

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/vmi_core.h"
#include "drivers/dump/dump_driver.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "os/linux/linux_guest.h"
#include "os/linux/processes.h"
#include "os/linux/testing/fixtures.h"

namespace vmi::os_linux {
namespace {

using testing::FindLinuxFixture;
using testing::LinuxFixture;

struct Case {
  std::string variant;
  bool elf;
};

struct GuestProcess {
  int pid, ppid;
  std::string comm;
};

// ps -o pid,ppid,comm
std::vector<GuestProcess> ParsePs(const std::string& text) {
  std::vector<GuestProcess> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    GuestProcess p;
    if (f.size() < 3 || !absl::SimpleAtoi(f[0], &p.pid) || !absl::SimpleAtoi(f[1], &p.ppid)) continue;
    p.comm = std::string(f[2]);
    out.push_back(p);
  }
  return out;
}

// /proc/PID/status: pid -> (key -> value)
std::map<int, std::map<std::string, std::string>> ParseStatus(const std::string& text) {
  std::map<int, std::map<std::string, std::string>> out;
  int pid = -1;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (absl::ConsumePrefix(&line, "==> /proc/")) {
      pid = -1;
      absl::SimpleAtoi(line.substr(0, line.find('/')), &pid);
      continue;
    }
    const size_t colon = line.find(':');
    if (pid < 0 || colon == absl::string_view::npos) continue;
    out[pid][std::string(line.substr(0, colon))] =
        std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
  }
  return out;
}

// The kernel shows a workqueue worker's comm with the queue's name appended
// ("kworker/0:1-events"), cut to 15 characters by ps.
bool SameComm(const std::string& ours, const std::string& guest) {
  return ours == guest || (absl::StartsWith(guest, ours) && guest.size() > ours.size() &&
                           guest[ours.size()] == '-' && absl::StartsWith(ours, "kworker/"));
}

class ProcessesFixtureTest : public ::testing::TestWithParam<Case> {
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
    auto layout = guest_->task_layout();
    ASSERT_TRUE(layout.ok()) << layout.status();
    layout_ = *layout;
  }

  LinuxFixture fixture_;
  std::unique_ptr<VmiCore<dump::DumpDriver>> core_;
  std::unique_ptr<LinuxGuest<dump::DumpDriver>> guest_;
  const TaskLayout* layout_ = nullptr;
};

TEST_P(ProcessesFixtureTest, EveryProcessTheGuestListed) {
  TaskList list = ListProcesses(guest_->access(), *layout_);
  ASSERT_TRUE(list.complete()) << list.status;
  std::map<int, const Task*> by_pid;
  for (const Task& t : list.tasks) {
    EXPECT_EQ(t.pid, t.tgid) << t.comm;
    EXPECT_TRUE(by_pid.emplace(t.pid, &t).second) << "pid " << t.pid << " twice";
  }
  const std::vector<GuestProcess> guest = ParsePs(fixture_.ReadGuestFile("ps.txt").value());
  ASSERT_GT(guest.size(), 50u);
  for (const GuestProcess& g : guest) {
    if (g.comm == "ps") continue;  // it had exited when the dump was taken
    auto it = by_pid.find(g.pid);
    ASSERT_NE(it, by_pid.end()) << "pid " << g.pid << " (" << g.comm << ") missing";
    EXPECT_EQ(it->second->ppid, g.ppid) << "pid " << g.pid;
    EXPECT_TRUE(SameComm(it->second->comm, g.comm)) << it->second->comm << " vs " << g.comm;
  }
  // Nothing beyond what the guest listed (ps itself gone).
  EXPECT_EQ(list.tasks.size() + 1, guest.size());
  EXPECT_EQ(list.tasks.front().pid, 1);
  EXPECT_EQ(list.tasks.front().comm, "init");
}

TEST_P(ProcessesFixtureTest, IdsStatesAndRootsAgreeWithProcStatus) {
  TaskList list = ListProcesses(guest_->access(), *layout_);
  ASSERT_TRUE(list.complete()) << list.status;
  const auto status = ParseStatus(fixture_.ReadGuestFile("status.txt").value());
  int user_processes = 0;
  for (const Task& t : list.tasks) {
    auto it = status.find(t.pid);
    if (it == status.end()) continue;
    const auto& s = it->second;
    EXPECT_EQ(s.at("Uid"), absl::StrFormat("%u\t%u\t%u\t%u", t.uid, t.euid, t.uid, t.uid)) << t.pid;
    EXPECT_EQ(s.at("Gid").substr(0, s.at("Gid").find('\t')), std::to_string(t.gid)) << t.pid;
    EXPECT_EQ(s.at("PPid"), std::to_string(t.ppid)) << t.pid;
    EXPECT_EQ(t.kernel_thread, t.mm == 0) << t.pid;
    if (!t.kernel_thread) {
      ++user_processes;
      ASSERT_TRUE(t.root.has_value()) << t.pid;
      // The root is a page table: its kernel half maps the kernel like init_top_pgt does.
      absl::StatusOr<Pa> via_process =
          core_->Translate(AddressContext(guest_->kernel().root_va, *t.root));
      ASSERT_TRUE(via_process.ok()) << t.pid << ": " << via_process.status();
      EXPECT_EQ(*via_process, guest_->kernel().root);
      EXPECT_GT(t.arg_end, t.arg_start) << t.pid;
    }
    // Sleeping tasks stay asleep across the dump; init was running the
    // capture when it read its own status.
    if (t.state == 'S' && t.pid != 1) EXPECT_EQ(s.at("State")[0], 'S') << t.pid;
  }
  EXPECT_GE(user_processes, 5);
}

TEST_P(ProcessesFixtureTest, ThreadsOfEveryProcess) {
  TaskList list = ListProcesses(guest_->access(), *layout_);
  ASSERT_TRUE(list.complete()) << list.status;
  std::map<int, std::vector<int>> guest_threads;
  for (absl::string_view line :
       absl::StrSplit(fixture_.ReadGuestFile("threads.txt").value(), '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> f = absl::StrSplit(line, absl::ByAnyChar(": "), absl::SkipEmpty());
    int pid;
    if (f.empty() || !absl::SimpleAtoi(f[0], &pid)) continue;
    for (size_t i = 1; i < f.size(); ++i) {
      int tid;
      if (absl::SimpleAtoi(f[i], &tid)) guest_threads[pid].push_back(tid);
    }
  }
  int multithreaded = 0;
  for (const Task& p : list.tasks) {
    auto it = guest_threads.find(p.pid);
    if (it == guest_threads.end()) continue;
    TaskList threads = ListThreads(guest_->access(), *layout_, p);
    ASSERT_TRUE(threads.complete()) << threads.status;
    std::vector<int> tids;
    for (const Task& t : threads.tasks) {
      tids.push_back(t.pid);
      EXPECT_EQ(t.tgid, p.pid);
    }
    std::vector<int> want = it->second;
    std::sort(want.begin(), want.end());
    std::sort(tids.begin(), tids.end());
    EXPECT_EQ(tids, want) << "pid " << p.pid;
    EXPECT_EQ(threads.tasks.front().pid, p.pid);
    if (tids.size() > 1) ++multithreaded;
  }
  EXPECT_GE(multithreaded, 1);  // fixture-threads: 4 tasks
}

TEST_P(ProcessesFixtureTest, CurrentTaskOfEachCpu) {
  absl::StatusOr<std::vector<uint64_t>> bases = PerCpuBases(guest_->access());
  ASSERT_TRUE(bases.ok()) << bases.status();
  EXPECT_EQ(bases->size(), 2u);  // the fixture has 2 vCPUs
  for (size_t cpu = 0; cpu < bases->size(); ++cpu) {
    absl::StatusOr<uint64_t> task = CurrentTaskAt(guest_->access(), (*bases)[cpu]);
    ASSERT_TRUE(task.ok()) << task.status();
    absl::StatusOr<Task> t = ReadTask(guest_->access(), *layout_, *task);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_FALSE(t->comm.empty());
    if (GetParam().elf) {
      // The registers say the same: GS base in kernel mode, else KERNEL_GS_BASE.
      absl::StatusOr<amd64::Registers> regs = core_->GetRegisters(VcpuId(cpu));
      ASSERT_TRUE(regs.ok()) << regs.status();
      EXPECT_EQ(PerCpuBaseFromRegisters(*regs), (*bases)[cpu]) << "cpu " << cpu;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ProcessesFixtureTest,
                         ::testing::Values(Case{"l4", false}, Case{"l4", true}, Case{"l5", false},
                                           Case{"l5", true}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.variant + (info.param.elf ? "_elf" : "_raw");
                         });

}  // namespace
}  // namespace vmi::os_linux
