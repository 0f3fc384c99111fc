#include "os/linux/processes.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "core/error.h"

namespace vmi::os_linux {
namespace {

// include/linux/sched.h: PF_KTHREAD, and the state bits task_state_index()
// reports. These are #defines, absent from BTF; stable since 4.14.
constexpr uint32_t kPfKthread = 0x00200000;
constexpr uint32_t kTaskReport = 0x7f;  // INTERRUPTIBLE .. PARKED
constexpr uint32_t kTaskIdle = 0x402;   // UNINTERRUPTIBLE | NOLOAD
constexpr uint32_t kTaskRtlockWait = 0x1000;
constexpr size_t kMaxCpus = 8192;       // NR_CPUS upper bound

absl::StatusOr<uint64_t> Offset(const KernelTypes& types, absl::string_view type,
                                absl::string_view path) {
  return types.OffsetOf(type, path);
}

bool Has(const KernelTypes& types, absl::string_view type, absl::string_view path) {
  return types.Field(type, path).ok();
}

}  // namespace

char TaskStateLetter(uint32_t state, uint32_t exit_state) {
  static constexpr char kLetters[] = "RSDTtXZPI";
  uint32_t report = (state | exit_state) & kTaskReport;
  if ((state & kTaskIdle) == kTaskIdle) report = kTaskReport + 1;
  if (state & kTaskRtlockWait) report = 2;  // TASK_UNINTERRUPTIBLE
  const int index = report == 0 ? 0 : 32 - __builtin_clz(report);
  return index < 9 ? kLetters[index] : '?';
}

absl::StatusOr<TaskLayout> TaskLayout::Resolve(const KernelTypes& types) {
  TaskLayout l;
  VMI_ASSIGN_OR_RETURN(l.list.next, Offset(types, "list_head", "next"));
  VMI_ASSIGN_OR_RETURN(l.list.prev, Offset(types, "list_head", "prev"));
  VMI_ASSIGN_OR_RETURN(l.tasks, Offset(types, "task_struct", "tasks"));
  VMI_ASSIGN_OR_RETURN(l.pid, Offset(types, "task_struct", "pid"));
  VMI_ASSIGN_OR_RETURN(l.tgid, Offset(types, "task_struct", "tgid"));
  VMI_ASSIGN_OR_RETURN(FieldInfo comm, types.Field("task_struct", "comm"));
  l.comm = comm.offset;
  l.comm_size = comm.size;
  VMI_ASSIGN_OR_RETURN(l.real_parent, Offset(types, "task_struct", "real_parent"));
  VMI_ASSIGN_OR_RETURN(l.real_cred, Offset(types, "task_struct", "real_cred"));
  VMI_ASSIGN_OR_RETURN(l.mm, Offset(types, "task_struct", "mm"));
  VMI_ASSIGN_OR_RETURN(l.flags, Offset(types, "task_struct", "flags"));
  // 5.14 renamed task_struct.state (long) to __state (unsigned int).
  absl::StatusOr<FieldInfo> state = types.Field("task_struct", "__state");
  if (!state.ok()) state = types.Field("task_struct", "state");
  if (!state.ok()) return state.status();
  l.state = state->offset;
  l.state_size = state->size;
  VMI_ASSIGN_OR_RETURN(l.exit_state, Offset(types, "task_struct", "exit_state"));
  VMI_ASSIGN_OR_RETURN(l.start_time, Offset(types, "task_struct", "start_time"));
  VMI_ASSIGN_OR_RETURN(l.group_leader, Offset(types, "task_struct", "group_leader"));
  l.thread_group_list = Has(types, "task_struct", "thread_group");
  if (l.thread_group_list) {
    VMI_ASSIGN_OR_RETURN(l.thread_group, Offset(types, "task_struct", "thread_group"));
  } else {
    VMI_ASSIGN_OR_RETURN(l.signal, Offset(types, "task_struct", "signal"));
    VMI_ASSIGN_OR_RETURN(l.signal_thread_head, Offset(types, "signal_struct", "thread_head"));
    VMI_ASSIGN_OR_RETURN(l.thread_node, Offset(types, "task_struct", "thread_node"));
  }
  VMI_ASSIGN_OR_RETURN(l.cred_uid, Offset(types, "cred", "uid.val"));
  VMI_ASSIGN_OR_RETURN(l.cred_gid, Offset(types, "cred", "gid.val"));
  VMI_ASSIGN_OR_RETURN(l.cred_euid, Offset(types, "cred", "euid.val"));
  VMI_ASSIGN_OR_RETURN(l.cred_egid, Offset(types, "cred", "egid.val"));
  VMI_ASSIGN_OR_RETURN(l.mm_pgd, Offset(types, "mm_struct", "pgd"));
  VMI_ASSIGN_OR_RETURN(l.mm_arg_start, Offset(types, "mm_struct", "arg_start"));
  VMI_ASSIGN_OR_RETURN(l.mm_arg_end, Offset(types, "mm_struct", "arg_end"));
  return l;
}

absl::StatusOr<Task> ReadTask(const KernelAccess& access, const TaskLayout& l, uint64_t task) {
  auto annotate = [&](const absl::Status& s, const char* field) {
    return AnnotateStatus(s, absl::StrFormat("task_struct at 0x%x: %s", task, field));
  };
  Task t;
  t.address = task;
  absl::StatusOr<uint32_t> pid = access.U32(task + l.pid);
  if (!pid.ok()) return annotate(pid.status(), "pid");
  absl::StatusOr<uint32_t> tgid = access.U32(task + l.tgid);
  if (!tgid.ok()) return annotate(tgid.status(), "tgid");
  t.pid = static_cast<int32_t>(*pid);
  t.tgid = static_cast<int32_t>(*tgid);
  absl::StatusOr<std::string> comm = access.CharArray(task + l.comm, l.comm_size);
  if (!comm.ok()) return annotate(comm.status(), "comm");
  t.comm = *std::move(comm);
  absl::StatusOr<uint32_t> flags = access.U32(task + l.flags);
  if (!flags.ok()) return annotate(flags.status(), "flags");
  t.kernel_thread = *flags & kPfKthread;
  absl::StatusOr<uint64_t> state = access.Unsigned(task + l.state, l.state_size);
  if (!state.ok()) return annotate(state.status(), "state");
  absl::StatusOr<uint32_t> exit_state = access.U32(task + l.exit_state);
  if (!exit_state.ok()) return annotate(exit_state.status(), "exit_state");
  t.state = TaskStateLetter(static_cast<uint32_t>(*state), *exit_state);
  absl::StatusOr<uint64_t> start = access.U64(task + l.start_time);
  if (!start.ok()) return annotate(start.status(), "start_time");
  t.start_time_ns = *start;

  absl::StatusOr<uint64_t> parent = access.U64(task + l.real_parent);
  if (!parent.ok()) return annotate(parent.status(), "real_parent");
  if (!IsKernelAddress(*parent, access.kernel().paging)) {
    return absl::DataLossError(absl::StrFormat(
        "task_struct at 0x%x: real_parent 0x%x is not a kernel address", task, *parent));
  }
  absl::StatusOr<uint32_t> ppid = access.U32(*parent + l.tgid);
  if (!ppid.ok()) return annotate(ppid.status(), "real_parent->tgid");
  t.ppid = static_cast<int32_t>(*ppid);

  absl::StatusOr<uint64_t> cred = access.U64(task + l.real_cred);
  if (!cred.ok()) return annotate(cred.status(), "real_cred");
  for (auto [offset, out] : {std::pair{l.cred_uid, &t.uid}, std::pair{l.cred_gid, &t.gid},
                             std::pair{l.cred_euid, &t.euid}, std::pair{l.cred_egid, &t.egid}}) {
    absl::StatusOr<uint32_t> id = access.U32(*cred + offset);
    if (!id.ok()) return annotate(id.status(), "real_cred ids");
    *out = *id;
  }

  absl::StatusOr<uint64_t> mm = access.U64(task + l.mm);
  if (!mm.ok()) return annotate(mm.status(), "mm");
  t.mm = *mm;
  if (t.mm != 0) {
    absl::StatusOr<uint64_t> pgd = access.U64(t.mm + l.mm_pgd);
    if (!pgd.ok()) return annotate(pgd.status(), "mm->pgd");
    t.pgd = *pgd;
    // The root stays unknown if the pgd does not translate (a torn mm).
    if (absl::StatusOr<Pa> root = access.Translate(t.pgd); root.ok()) t.root = *root;
    absl::StatusOr<uint64_t> arg_start = access.U64(t.mm + l.mm_arg_start);
    absl::StatusOr<uint64_t> arg_end = access.U64(t.mm + l.mm_arg_end);
    if (arg_start.ok() && arg_end.ok()) {
      t.arg_start = *arg_start;
      t.arg_end = *arg_end;
    }
  }
  return t;
}

TaskList ListProcesses(const KernelAccess& access, const TaskLayout& l, size_t limit) {
  TaskList out;
  absl::StatusOr<uint64_t> init_task = access.kernel().Symbol("init_task");
  if (!init_task.ok()) {
    out.status = init_task.status();
    return out;
  }
  out.status = WalkList(access, l.list, *init_task + l.tasks, limit, "init_task.tasks",
                        [&](uint64_t node) -> absl::StatusOr<bool> {
                          VMI_ASSIGN_OR_RETURN(Task t, ReadTask(access, l, node - l.tasks));
                          out.tasks.push_back(std::move(t));
                          return true;
                        });
  return out;
}

TaskList ListThreads(const KernelAccess& access, const TaskLayout& l, const Task& leader,
                     size_t limit) {
  TaskList out;
  out.tasks.push_back(leader);
  if (l.thread_group_list) {
    // thread_group links the threads to each other, with no separate head:
    // walking from the leader's node visits the others.
    out.status = WalkList(access, l.list, leader.address + l.thread_group, limit,
                          absl::StrFormat("thread_group of pid %d", leader.pid),
                          [&](uint64_t node) -> absl::StatusOr<bool> {
                            VMI_ASSIGN_OR_RETURN(Task t, ReadTask(access, l, node - l.thread_group));
                            out.tasks.push_back(std::move(t));
                            return true;
                          });
    return out;
  }
  absl::StatusOr<uint64_t> signal = access.U64(leader.address + l.signal);
  if (!signal.ok()) {
    out.status = AnnotateStatus(signal.status(), absl::StrFormat("signal of pid %d", leader.pid));
    return out;
  }
  out.tasks.clear();
  out.status = WalkList(access, l.list, *signal + l.signal_thread_head, limit,
                        absl::StrFormat("signal->thread_head of pid %d", leader.pid),
                        [&](uint64_t node) -> absl::StatusOr<bool> {
                          VMI_ASSIGN_OR_RETURN(Task t, ReadTask(access, l, node - l.thread_node));
                          out.tasks.push_back(std::move(t));
                          return true;
                        });
  // The leader first, as /proc/PID/task lists it (even when a damaged list
  // lost it).
  auto it = std::find_if(out.tasks.begin(), out.tasks.end(),
                         [&](const Task& t) { return t.address == leader.address; });
  if (it == out.tasks.end()) {
    out.tasks.insert(out.tasks.begin(), leader);
  } else {
    std::rotate(out.tasks.begin(), it, it + 1);
  }
  return out;
}

absl::StatusOr<std::vector<uint64_t>> PerCpuBases(const KernelAccess& access) {
  const LinuxKernel& kernel = access.kernel();
  VMI_ASSIGN_OR_RETURN(uint64_t offsets, kernel.Symbol("__per_cpu_offset"));
  VMI_ASSIGN_OR_RETURN(uint64_t nr_cpu_ids_va, kernel.Symbol("nr_cpu_ids"));
  VMI_ASSIGN_OR_RETURN(uint32_t nr_cpu_ids, access.U32(nr_cpu_ids_va));
  if (nr_cpu_ids == 0 || nr_cpu_ids > kMaxCpus) {
    return absl::DataLossError(absl::StrFormat("nr_cpu_ids is %u (expected 1..%u)", nr_cpu_ids, kMaxCpus));
  }
  std::vector<uint64_t> bases(nr_cpu_ids);
  absl::Status s = access.Read(
      offsets, absl::MakeSpan(reinterpret_cast<uint8_t*>(bases.data()), bases.size() * 8));
  if (!s.ok()) return AnnotateStatus(s, absl::StrFormat("__per_cpu_offset[%u]", nr_cpu_ids));
  return bases;
}

uint64_t PerCpuBaseFromRegisters(const amd64::Registers& regs) {
  // In user mode the kernel's base waits in KERNEL_GS_BASE; in kernel mode it
  // is GS's, except between the entry and its SWAPGS (or the exit's SWAPGS
  // and SYSRET/IRET), where the two are still (already) swapped. Dumps fill
  // either the segment's hidden base or the MSR copy. The per-CPU base is
  // the candidate in the kernel half, preferring the one the mode names.
  const uint64_t gs = regs.gs.base != 0 ? regs.gs.base : regs.gs_base;
  const bool user = (regs.cs.selector & 3) != 0;
  const uint64_t first = user ? regs.kernel_gs_base : gs;
  const uint64_t second = user ? gs : regs.kernel_gs_base;
  auto kernel_half = [](uint64_t v) { return (v >> 63) != 0; };
  if (kernel_half(first) || !kernel_half(second)) return first;
  return second;
}

absl::StatusOr<uint64_t> CurrentTaskAt(const KernelAccess& access, uint64_t percpu_base) {
  const LinuxKernel& kernel = access.kernel();
  uint64_t offset;
  if (std::optional<uint64_t> current = kernel.symbols.Address("current_task")) {
    offset = *current;
  } else if (std::optional<uint64_t> hot = kernel.symbols.Address("pcpu_hot")) {
    VMI_ASSIGN_OR_RETURN(const KernelTypes* types, kernel.Types());
    VMI_ASSIGN_OR_RETURN(uint64_t in_hot, types->OffsetOf("pcpu_hot", "current_task"));
    offset = *hot + in_hot;
  } else {
    return absl::NotFoundError("the kernel has neither current_task nor pcpu_hot");
  }
  absl::StatusOr<uint64_t> task = access.U64(percpu_base + offset);
  if (!task.ok()) {
    return AnnotateStatus(task.status(),
                          absl::StrFormat("current task at per-CPU base 0x%x + 0x%x", percpu_base, offset));
  }
  return task;
}

}  // namespace vmi::os_linux
