// Processes and threads of a Linux guest, read through the kernel's own
// structures with offsets from its types (BTF or a profile): the process
// list from init_task.tasks, each process's threads, the task a vCPU is
// running, and each process's page-table root as a physical address.
//
// Walks are bounded (kMaxTasks), cycle- and tear-checked (WalkList). A walk
// that breaks part-way returns what it read with the reason it stopped
// (TaskList::status), never a hang or an unbounded allocation.
//
// Thread-safety: stateless functions over a KernelAccess; thread-compatible.

#ifndef VMI_OS_LINUX_PROCESSES_H_
#define VMI_OS_LINUX_PROCESSES_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "arch/amd64/registers.h"
#include "core/types.h"
#include "os/linux/kernel_access.h"
#include "os/linux/types.h"

namespace vmi::os_linux {

// PID_MAX_LIMIT: no kernel has more tasks than this.
inline constexpr size_t kMaxTasks = 4 * 1024 * 1024;

// Offsets of what the process code reads, resolved once from the types.
// Alternatives are chosen by which members the kernel has.
struct TaskLayout {
  ListHeadLayout list;
  uint64_t tasks = 0, pid = 0, tgid = 0, comm = 0, comm_size = 16, real_parent = 0, real_cred = 0,
           mm = 0, flags = 0, state = 0, state_size = 4, exit_state = 0, start_time = 0,
           group_leader = 0;
  // Threads: task_struct.thread_group (up to 6.6), else
  // signal_struct.thread_head with task_struct.thread_node.
  bool thread_group_list = true;
  uint64_t thread_group = 0, signal = 0, signal_thread_head = 0, thread_node = 0;
  uint64_t cred_uid = 0, cred_gid = 0, cred_euid = 0, cred_egid = 0;
  uint64_t mm_pgd = 0, mm_arg_start = 0, mm_arg_end = 0;

  static absl::StatusOr<TaskLayout> Resolve(const KernelTypes& types);
};

struct Task {
  uint64_t address = 0;  // the task_struct
  int32_t pid = 0;       // thread id (= tgid for a process)
  int32_t tgid = 0;
  int32_t ppid = 0;      // tgid of real_parent
  std::string comm;
  uint32_t uid = 0, gid = 0, euid = 0, egid = 0;
  char state = '?';      // ps's letter: R S D T t X Z P I
  bool kernel_thread = false;
  uint64_t start_time_ns = 0;  // since boot (CLOCK_MONOTONIC)
  uint64_t mm = 0;             // mm_struct, 0 for kernel threads
  uint64_t pgd = 0;            // mm->pgd (kernel virtual)
  std::optional<Pa> root;      // its guest-physical address: the process's page-table root
  uint64_t arg_start = 0, arg_end = 0;
};

// A list and, when the walk stopped early, why (what came before is valid).
struct TaskList {
  std::vector<Task> tasks;
  absl::Status status = absl::OkStatus();
  bool complete() const { return status.ok(); }
};

// One task_struct.
absl::StatusOr<Task> ReadTask(const KernelAccess& access, const TaskLayout& layout, uint64_t task);

// Every process (thread-group leader) on init_task.tasks, in list order
// (pid 1 first); init_task itself (pid 0, the boot CPU's idle task) is not
// listed, as ps does not list it.
TaskList ListProcesses(const KernelAccess& access, const TaskLayout& layout,
                       size_t limit = kMaxTasks);

// The threads of the process led by `leader`, the leader first.
TaskList ListThreads(const KernelAccess& access, const TaskLayout& layout, const Task& leader,
                     size_t limit = kMaxTasks);

// The per-CPU area base of each possible CPU: __per_cpu_offset[0..nr_cpu_ids).
absl::StatusOr<std::vector<uint64_t>> PerCpuBases(const KernelAccess& access);

// The task running on the CPU whose per-CPU area starts at `percpu_base`
// (GS base in kernel mode, or __per_cpu_offset[cpu]): current_task (6.1),
// or pcpu_hot.current_task (6.2+), chosen by which symbol the kernel has.
absl::StatusOr<uint64_t> CurrentTaskAt(const KernelAccess& access, uint64_t percpu_base);

// The per-CPU area base from a vCPU's registers: the GS base in kernel mode
// (CPL 0), else KERNEL_GS_BASE, where SWAPGS keeps the kernel's while user
// code runs. A vCPU stopped in kernel mode between an entry and its SWAPGS
// still has the two swapped: whichever of them is a kernel-half address is
// taken (the mode's choice when both or neither are).
uint64_t PerCpuBaseFromRegisters(const amd64::Registers& regs);

// The ps state letter for task_struct.__state and exit_state.
char TaskStateLetter(uint32_t state, uint32_t exit_state);

}  // namespace vmi::os_linux

#endif  // VMI_OS_LINUX_PROCESSES_H_
