// ListProcesses, ListThreads and WalkList on task lists built by hand in
// fake memory, with the fixture kernel's real offsets: the normal shapes and
// the broken ones (cycles, torn links, unmapped pointers, lists far longer
// than any kernel has), each reported with what was read before it.

#include "os/linux/processes.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "os/linux/kernel_access.h"
#include "os/linux/testing/fake_memory.h"

namespace vmi::os_linux {
namespace {

using ::testing::ElementsAre;
using testing::FakeMemory;
using ::testing::HasSubstr;
using testing::KernelObjects;

constexpr uint32_t kPfKthread = 0x00200000;
constexpr uint32_t kTaskInterruptible = 1;

std::string Hex(uint64_t v) { return absl::StrFormat("0x%x", v); }

class ProcessesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::shared_ptr<const KernelTypes>> types = testing::FixtureKernelTypes();
    ASSERT_TRUE(types.ok()) << types.status();
    objects_ = std::make_unique<KernelObjects>(memory_, **types);
    cred_ = New("cred");
    for (const char* id : {"uid.val", "gid.val", "euid.val", "egid.val"})
      Set(cred_, "cred", id, 1000);
    init_task_ = NewTask(0, "swapper/0", 0);
    Set(init_task_, "task_struct", "flags", kPfKthread);
    objects_->LinkList(init_task_ + Off("task_struct", "tasks"), {});
    absl::StatusOr<LinuxKernel> kernel = testing::FakeLinuxKernel({{init_task_, 'D', "init_task"}});
    ASSERT_TRUE(kernel.ok()) << kernel.status();
    kernel_ = std::make_unique<LinuxKernel>(*std::move(kernel));
    access_ = std::make_unique<KernelAccess>(memory_, *kernel_);
    absl::StatusOr<TaskLayout> layout = TaskLayout::Resolve(**types);
    ASSERT_TRUE(layout.ok()) << layout.status();
    layout_ = *layout;
    ASSERT_TRUE(layout_.thread_group_list);  // 6.1
  }

  uint64_t New(absl::string_view type) { return objects_->New(type); }
  void Set(uint64_t object, absl::string_view type, absl::string_view path, uint64_t value) {
    objects_->Set(object, type, path, value);
  }
  uint64_t Off(absl::string_view type, absl::string_view path) {
    return objects_->OffsetOf(type, path);
  }

  // A process (or, with `leader`, a thread of it), child of `parent`
  // (init_task when 0), sleeping, with the shared credentials.
  uint64_t NewTask(int pid, absl::string_view comm, uint64_t parent, uint64_t leader = 0,
                   uint64_t align = 64) {
    const uint64_t t = objects_->New("task_struct", align);
    Set(t, "task_struct", "pid", pid);
    Set(t, "task_struct", "tgid", leader == 0 ? pid : Tgid(leader));
    objects_->SetChars(t, "task_struct", "comm", comm);
    Set(t, "task_struct", "__state", kTaskInterruptible);
    Set(t, "task_struct", "real_parent", parent == 0 ? (init_task_ == 0 ? t : init_task_) : parent);
    Set(t, "task_struct", "real_cred", cred_);
    Set(t, "task_struct", "group_leader", leader == 0 ? t : leader);
    return t;
  }
  int Tgid(uint64_t task) {
    uint32_t tgid = 0;
    EXPECT_TRUE(memory_
                    .Read(task + Off("task_struct", "tgid"),
                          absl::MakeSpan(reinterpret_cast<uint8_t*>(&tgid), 4))
                    .ok());
    return static_cast<int>(tgid);
  }
  uint64_t TasksNode(uint64_t task) { return task + layout_.tasks; }
  void LinkProcesses(const std::vector<uint64_t>& tasks) {
    std::vector<uint64_t> nodes;
    for (uint64_t t : tasks) nodes.push_back(TasksNode(t));
    objects_->LinkList(TasksNode(init_task_), nodes);
  }

  static std::vector<int> Pids(const TaskList& list) {
    std::vector<int> pids;
    for (const Task& t : list.tasks) pids.push_back(t.pid);
    return pids;
  }

  FakeMemory memory_;
  std::unique_ptr<KernelObjects> objects_;
  std::unique_ptr<LinuxKernel> kernel_;
  std::unique_ptr<KernelAccess> access_;
  TaskLayout layout_;
  uint64_t cred_ = 0, init_task_ = 0;
};

TEST_F(ProcessesTest, ListsProcessesInListOrder) {
  const uint64_t init = NewTask(1, "init", 0);
  const uint64_t kthreadd = NewTask(2, "kthreadd", 0);
  Set(kthreadd, "task_struct", "flags", kPfKthread);
  const uint64_t shell = NewTask(98, "sh", init);
  LinkProcesses({init, kthreadd, shell});
  TaskList list = ListProcesses(*access_, layout_);
  ASSERT_TRUE(list.complete()) << list.status;
  EXPECT_THAT(Pids(list), ElementsAre(1, 2, 98));
  EXPECT_EQ(list.tasks[0].comm, "init");
  EXPECT_EQ(list.tasks[0].address, init);
  EXPECT_EQ(list.tasks[0].ppid, 0);
  EXPECT_EQ(list.tasks[2].ppid, 1);
  EXPECT_EQ(list.tasks[2].uid, 1000u);
  EXPECT_EQ(list.tasks[2].state, 'S');
  EXPECT_TRUE(list.tasks[1].kernel_thread);
  EXPECT_FALSE(list.tasks[2].kernel_thread);
}

TEST_F(ProcessesTest, EmptyList) {
  TaskList list = ListProcesses(*access_, layout_);
  EXPECT_TRUE(list.complete()) << list.status;
  EXPECT_TRUE(list.tasks.empty());
}

TEST_F(ProcessesTest, ThreadsLeaderFirst) {
  const uint64_t leader = NewTask(96, "fixture-threads", 0);
  const uint64_t t1 = NewTask(101, "worker", 0, leader), t2 = NewTask(102, "worker", 0, leader);
  const uint64_t group = Off("task_struct", "thread_group");
  // thread_group has no separate head: the threads link to each other.
  objects_->LinkList(leader + group, {t1 + group, t2 + group});
  LinkProcesses({leader});
  TaskList processes = ListProcesses(*access_, layout_);
  ASSERT_TRUE(processes.complete()) << processes.status;
  ASSERT_EQ(processes.tasks.size(), 1u);
  TaskList threads = ListThreads(*access_, layout_, processes.tasks[0]);
  ASSERT_TRUE(threads.complete()) << threads.status;
  EXPECT_THAT(Pids(threads), ElementsAre(96, 101, 102));
  for (const Task& t : threads.tasks) EXPECT_EQ(t.tgid, 96);
}

TEST_F(ProcessesTest, CycleNotThroughTheHead) {
  const uint64_t a = NewTask(1, "a", 0), b = NewTask(2, "b", 0), c = NewTask(3, "c", 0);
  LinkProcesses({a, b, c});
  memory_.WriteU64(TasksNode(c) + layout_.list.next,
                   TasksNode(b));  // c -> b, never back to the head
  TaskList list = ListProcesses(*access_, layout_);
  EXPECT_EQ(list.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(list.status.message(),
              HasSubstr("init_task.tasks: entry " + Hex(TasksNode(b)) + " comes round again"));
  EXPECT_THAT(Pids(list), ElementsAre(1, 2, 3));
}

TEST_F(ProcessesTest, TornLink) {
  const uint64_t a = NewTask(1, "a", 0), b = NewTask(2, "b", 0), c = NewTask(3, "c", 0);
  LinkProcesses({a, b, c});
  memory_.WriteU64(TasksNode(b) + layout_.list.prev, TasksNode(c));  // b's prev is not a
  TaskList list = ListProcesses(*access_, layout_);
  EXPECT_EQ(list.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(list.status.message(), HasSubstr("torn at " + Hex(TasksNode(b))));
  EXPECT_THAT(Pids(list), ElementsAre(1));
}

TEST_F(ProcessesTest, PointerIntoUnmappedMemoryMidList) {
  const uint64_t a = NewTask(1, "a", 0), b = NewTask(2, "b", 0), c = NewTask(3, "c", 0);
  LinkProcesses({a, b, c});
  const uint64_t nowhere = memory_.Reserve(1 << 16);
  memory_.WriteU64(TasksNode(b) + layout_.list.next, nowhere);
  TaskList list = ListProcesses(*access_, layout_);
  EXPECT_EQ(list.status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(list.status.message(), HasSubstr("reading entry " + Hex(nowhere)));
  EXPECT_THAT(list.status.message(), HasSubstr("is not mapped"));
  EXPECT_THAT(Pids(list), ElementsAre(1, 2));  // the tasks before it

  // A whole task unmapped after the list was built (alone on its pages).
  const uint64_t lost = NewTask(4, "lost", 0, 0, FakeMemory::kPageSize);
  LinkProcesses({a, lost, c});
  memory_.Unmap(lost, objects_->SizeOf("task_struct"));
  list = ListProcesses(*access_, layout_);
  EXPECT_EQ(list.status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(list.status.message(), HasSubstr("reading entry " + Hex(TasksNode(lost))));
  EXPECT_THAT(Pids(list), ElementsAre(1));
}

TEST_F(ProcessesTest, TaskWhoseRealCredIsUnmapped) {
  const uint64_t a = NewTask(1, "a", 0), b = NewTask(2, "b", 0);
  const uint64_t nowhere = memory_.Reserve(4096);
  Set(b, "task_struct", "real_cred", nowhere);
  LinkProcesses({a, b});
  TaskList list = ListProcesses(*access_, layout_);
  EXPECT_EQ(list.status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(list.status.message(), HasSubstr("task_struct at " + Hex(b) + ": real_cred"));
  EXPECT_THAT(list.status.message(),
              HasSubstr(Hex(nowhere + Off("cred", "uid.val")) + " is not mapped"));
  EXPECT_THAT(Pids(list), ElementsAre(1));
}

TEST_F(ProcessesTest, TornThreadGroup) {
  const uint64_t leader = NewTask(10, "l", 0);
  const uint64_t t1 = NewTask(11, "t", 0, leader), t2 = NewTask(12, "t", 0, leader);
  const uint64_t group = Off("task_struct", "thread_group");
  objects_->LinkList(leader + group, {t1 + group, t2 + group});
  memory_.WriteU64(t2 + group + layout_.list.prev, leader + group);
  absl::StatusOr<Task> l = ReadTask(*access_, layout_, leader);
  ASSERT_TRUE(l.ok()) << l.status();
  TaskList threads = ListThreads(*access_, layout_, *l);
  EXPECT_EQ(threads.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(threads.status.message(),
              HasSubstr("thread_group of pid 10: torn at " + Hex(t2 + group)));
  EXPECT_THAT(Pids(threads), ElementsAre(10, 11));
}

// A ring of `count` tasks generated on demand (nothing stored per task):
// each a copy of one real task with its own pid and links. `base` is far
// from anything allocated.
class TaskRing {
 public:
  static constexpr uint64_t kBase = 0xffffc90000000000ull;

  TaskRing(FakeMemory& memory, const TaskLayout& layout, uint64_t head, uint64_t template_task,
           uint64_t task_size, uint64_t count)
      : layout_(layout), head_(head), count_(count), template_(task_size) {
    stride_ = (task_size + 0xfff) & ~uint64_t{0xfff};
    EXPECT_TRUE(memory.Read(template_task, absl::MakeSpan(template_)).ok());
    memory.AddGenerated(kBase, stride_ * count,
                        [this](uint64_t va, absl::Span<uint8_t> out) { Fill(va, out); });
    memory.WriteU64(head + layout.list.next, Node(0));
    memory.WriteU64(head + layout.list.prev, Node(count - 1));
  }

  uint64_t Node(uint64_t i) const { return kBase + i * stride_ + layout_.tasks; }

 private:
  void Fill(uint64_t va, absl::Span<uint8_t> out) const {
    size_t done = 0;
    while (done < out.size()) {
      const uint64_t at = va + done - kBase;
      const uint64_t i = at / stride_, offset = at % stride_;
      const size_t n = std::min<uint64_t>(out.size() - done, stride_ - offset);
      uint8_t* dst = out.data() + done;
      for (size_t k = 0; k < n; ++k)
        dst[k] = offset + k < template_.size() ? template_[offset + k] : 0;
      const uint64_t next = i + 1 < count_ ? Node(i + 1) : head_;
      const uint64_t prev = i > 0 ? Node(i - 1) : head_;
      const uint32_t pid = static_cast<uint32_t>(i + 1);
      Patch(offset, n, dst, layout_.tasks + layout_.list.next, &next, 8);
      Patch(offset, n, dst, layout_.tasks + layout_.list.prev, &prev, 8);
      Patch(offset, n, dst, layout_.pid, &pid, 4);
      Patch(offset, n, dst, layout_.tgid, &pid, 4);
      done += n;
    }
  }
  // Copies the part of the field [field, field + size) that falls in the
  // window [offset, offset + n) of the task.
  static void Patch(uint64_t offset, size_t n, uint8_t* dst, uint64_t field, const void* value,
                    size_t size) {
    const uint64_t from = std::max(offset, field), to = std::min(offset + n, field + size);
    if (from < to)
      std::memcpy(dst + (from - offset), static_cast<const uint8_t*>(value) + (from - field),
                  to - from);
  }

  const TaskLayout& layout_;
  uint64_t head_, count_, stride_;
  std::vector<uint8_t> template_;
};

TEST_F(ProcessesTest, TenMillionEntryListIsCutAtTheLimit) {
  const uint64_t model = NewTask(0, "t", 0);
  TaskRing ring(memory_, layout_, TasksNode(init_task_), model, objects_->SizeOf("task_struct"),
                10'000'000);
  const size_t pages = memory_.mapped_pages();
  TaskList list = ListProcesses(*access_, layout_, /*limit=*/1000);
  EXPECT_EQ(list.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(list.status.message(), HasSubstr("more than 1000 entries"));
  ASSERT_EQ(list.tasks.size(), 1000u);
  EXPECT_EQ(list.tasks.back().pid, 1000);
  EXPECT_LT(memory_.reads(), 1000u * 40);  // it read only what it returned
  EXPECT_EQ(memory_.mapped_pages(), pages);

  // The generated ring is whole: the bound, not a broken link, stopped it.
  absl::Status walked = WalkList(*access_, layout_.list, TasksNode(init_task_), 100'000, "ring",
                                 [&](uint64_t) -> absl::StatusOr<bool> { return true; });
  EXPECT_EQ(walked.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(walked.message(), HasSubstr("ring: more than 100000 entries"));
}

TEST_F(ProcessesTest, GeneratedRingIsWellFormed) {
  const uint64_t model = NewTask(0, "t", 0);
  TaskRing ring(memory_, layout_, TasksNode(init_task_), model, objects_->SizeOf("task_struct"),
                3000);
  TaskList list = ListProcesses(*access_, layout_);
  ASSERT_TRUE(list.complete()) << list.status;
  ASSERT_EQ(list.tasks.size(), 3000u);
  EXPECT_EQ(list.tasks.front().pid, 1);
  EXPECT_EQ(list.tasks.back().pid, 3000);
  EXPECT_EQ(list.tasks.back().address, ring.Node(2999) - layout_.tasks);
}

TEST_F(ProcessesTest, WalkListStopsWhenAskedAndPassesErrorsOn) {
  const uint64_t a = NewTask(1, "a", 0), b = NewTask(2, "b", 0), c = NewTask(3, "c", 0);
  LinkProcesses({a, b, c});
  std::vector<uint64_t> seen;
  absl::Status s = WalkList(*access_, layout_.list, TasksNode(init_task_), 10, "tasks",
                            [&](uint64_t node) -> absl::StatusOr<bool> {
                              seen.push_back(node);
                              return seen.size() < 2;
                            });
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_THAT(seen, ElementsAre(TasksNode(a), TasksNode(b)));

  s = WalkList(
      *access_, layout_.list, TasksNode(init_task_), 10, "tasks",
      [&](uint64_t) -> absl::StatusOr<bool> { return absl::InternalError("from the callback"); });
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);

  const uint64_t nowhere = memory_.Reserve(4096);
  s = WalkList(*access_, layout_.list, nowhere, 10, "nothing",
               [&](uint64_t) -> absl::StatusOr<bool> { return true; });
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("nothing: reading the head at " + Hex(nowhere)));
}


TEST(PerCpuBaseTest, TheKernelHalfCandidateAcrossSwapgs) {
  constexpr uint64_t kBase = 0xffff88803fc00000ull, kUserGs = 0x7f0012345000ull;
  amd64::Registers kernel;
  kernel.cs.selector = 0x10;
  kernel.gs.base = kBase;
  kernel.kernel_gs_base = kUserGs;
  EXPECT_EQ(PerCpuBaseFromRegisters(kernel), kBase);
  amd64::Registers user;
  user.cs.selector = 0x33;
  user.gs.base = kUserGs;
  user.kernel_gs_base = kBase;
  EXPECT_EQ(PerCpuBaseFromRegisters(user), kBase);
  // Kernel mode before the entry's SWAPGS: GS still the user's (here 0).
  amd64::Registers entry = kernel;
  entry.gs.base = 0;
  entry.gs_base = 0;
  entry.kernel_gs_base = kBase;
  EXPECT_EQ(PerCpuBaseFromRegisters(entry), kBase);
  entry.gs.base = kUserGs;
  EXPECT_EQ(PerCpuBaseFromRegisters(entry), kBase);
  // A dump that filled only the MSR copy.
  amd64::Registers dump = kernel;
  dump.gs.base = 0;
  dump.gs_base = kBase;
  EXPECT_EQ(PerCpuBaseFromRegisters(dump), kBase);
  // Neither in the kernel half: the mode's choice.
  amd64::Registers none = kernel;
  none.gs.base = 0x1000;
  none.kernel_gs_base = 0x2000;
  EXPECT_EQ(PerCpuBaseFromRegisters(none), 0x1000u);
}

}  // namespace
}  // namespace vmi::os_linux
