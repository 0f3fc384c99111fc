#include "drivers/qemu/qemu_driver.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/error.h"
#include "core/page_span.h"
#include "drivers/qemu/internal/gdb_remote.h"
#include "drivers/qemu/internal/monitor_text.h"
#include "drivers/qemu/internal/qmp.h"

namespace vmi::qemu {

using qemu_internal::GdbRegister;
using qemu_internal::GdbRemote;
using qemu_internal::Qmp;
using qemu_internal::StopReply;

namespace {

constexpr uint64_t kPageSize = Amd64::kPageSize;

// The shared mapping of the RAM file; pages handed out keep it alive.
struct Mapping {
  uint8_t* data = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (data != nullptr) munmap(data, size);
  }
};

std::string QemuOptionsHint(const std::string& ram_file) {
  return absl::StrFormat(
      "start QEMU with -object memory-backend-file,id=ram,size=<RAM>,mem-path=%s,share=on "
      "-machine memory-backend=ram (see tools/qemu/start_guest.sh)",
      ram_file.empty() ? "<file>" : ram_file);
}

std::string RealPath(const std::string& path) {
  char buffer[PATH_MAX];
  if (realpath(path.c_str(), buffer) == nullptr) return path;
  return buffer;
}

uint64_t LoadLe(absl::string_view bytes, size_t offset, size_t size) {
  uint64_t v = 0;
  std::memcpy(&v, bytes.data() + offset, std::min<size_t>(size, 8));
  return v;
}

std::string StoreLe(uint64_t value, size_t size) {
  std::string out(size, '\0');
  std::memcpy(out.data(), &value, std::min<size_t>(size, 8));
  return out;
}

}  // namespace

absl::StatusOr<QemuTarget> QemuTarget::Parse(absl::string_view spec) {
  QemuTarget t;
  if (spec.empty()) {
    return absl::InvalidArgumentError(
        "qemu target: expected DIR or GDB_SOCKET,mem=RAM_FILE,qmp=QMP_SOCKET");
  }
  std::vector<std::string> parts = absl::StrSplit(spec, ',');
  if (parts.size() == 1) {
    const std::string dir(absl::StripSuffix(parts[0], "/"));
    t.gdb_socket = dir + "/gdb.sock";
    t.ram_file = dir + "/ram";
    t.qmp_socket = dir + "/qmp.sock";
    return t;
  }
  t.gdb_socket = parts[0];
  for (size_t i = 1; i < parts.size(); ++i) {
    absl::string_view p = parts[i];
    if (absl::ConsumePrefix(&p, "mem=")) {
      t.ram_file = std::string(p);
    } else if (absl::ConsumePrefix(&p, "qmp=")) {
      t.qmp_socket = std::string(p);
    } else {
      return absl::InvalidArgumentError(absl::StrFormat(
          "qemu target \"%s\": unknown part \"%s\" (expected mem=FILE or qmp=SOCKET)", spec, parts[i]));
    }
  }
  if (t.ram_file.empty() || t.qmp_socket.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "qemu target \"%s\": needs mem=<RAM file> and qmp=<QMP socket> besides the GDB socket", spec));
  }
  return t;
}

struct QemuDriver::State {
  QemuTarget target;
  OpenOptions options;
  GdbRemote gdb = GdbRemote::FromFd(-1);
  std::optional<Qmp> qmp;
  std::shared_ptr<Mapping> ram;
  std::vector<qemu_internal::RamRange> ranges;
  uint64_t max_gfn = 0;

  // vCPU i is stub thread threads[i].
  std::vector<std::string> threads;
  std::vector<GdbRegister> regs;
  size_t g_size = 0;
  absl::flat_hash_map<std::string, const GdbRegister*> by_name;
  std::string selected;  // the thread of the last Hg

  bool running = false;
  bool paused_at_open = false;
  int pause_depth = 0;
  // The last stop, when the vCPU stopped at one of our breakpoints: it must
  // step over it before the guest resumes (the stub would stop there again).
  std::optional<int> stopped_vcpu;
  std::optional<uint64_t> stopped_at_breakpoint;
  // A stop that came while stopping the guest for something else: the next
  // WaitForEvent delivers it.
  std::optional<std::string> pending_stop;

  absl::flat_hash_set<uint64_t> breakpoints;
  std::vector<amd64::MonitorWatchpoint> watchpoints;
  // Whether an enabled watchpoint covers the address a watch stop names.
  bool WatchpointCovers(uint64_t address) const {
    for (const amd64::MonitorWatchpoint& w : watchpoints) {
      if (address >= w.address.value() && address - w.address.value() < w.length) return true;
    }
    return false;
  }
  bool singlestep_monitor = false;
  absl::flat_hash_set<int> stepping;
  absl::Duration overhead;

  // ---- the stub ----

  absl::StatusOr<int> VcpuOfThread(absl::string_view thread) const {
    for (size_t i = 0; i < threads.size(); ++i) {
      if (threads[i] == thread) return static_cast<int>(i);
    }
    // Stubs may print thread ids with leading zeros ("p01.02").
    auto normal = [](absl::string_view t) {
      std::string out;
      for (absl::string_view part : absl::StrSplit(t, '.')) {
        absl::ConsumePrefix(&part, "p");
        while (part.size() > 1 && part[0] == '0') part.remove_prefix(1);
        absl::StrAppend(&out, out.empty() ? "" : ".", part);
      }
      return out;
    };
    for (size_t i = 0; i < threads.size(); ++i) {
      if (normal(threads[i]) == normal(thread)) return static_cast<int>(i);
    }
    return absl::DataLossError(absl::StrFormat("gdb stub: stop in unknown thread %s", thread));
  }

  absl::Status Select(int vcpu) {
    const std::string& thread = threads[vcpu];
    if (selected == thread) return absl::OkStatus();
    VMI_ASSIGN_OR_RETURN(std::string r, gdb.Request("Hg" + thread));
    if (r != "OK") {
      return absl::DataLossError(absl::StrFormat("gdb stub: Hg%s answered \"%s\"", thread, r));
    }
    selected = thread;
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> ReadAllRegisters(int vcpu) {
    VMI_RETURN_IF_ERROR(Select(vcpu));
    VMI_ASSIGN_OR_RETURN(std::string hex, gdb.Request("g"));
    if (!hex.empty() && hex[0] == 'E') {
      return absl::FailedPreconditionError(absl::StrFormat("gdb stub: 'g' of vcpu %d: %s", vcpu, hex));
    }
    VMI_ASSIGN_OR_RETURN(std::string bytes, qemu_internal::HexDecode(hex));
    if (bytes.size() < g_size) {
      return absl::DataLossError(absl::StrFormat(
          "gdb stub: 'g' of vcpu %d gave %u bytes, the target description needs %u", vcpu,
          bytes.size(), g_size));
    }
    return bytes;
  }

  uint64_t Value(absl::string_view all, absl::string_view name) const {
    auto it = by_name.find(name);
    if (it == by_name.end()) return 0;
    return LoadLe(all, it->second->offset, it->second->bits / 8);
  }

  // The registers the stub has (no descriptor caches).
  absl::StatusOr<amd64::Registers> StubRegisters(int vcpu) {
    VMI_ASSIGN_OR_RETURN(std::string all, ReadAllRegisters(vcpu));
    amd64::Registers r;
    r.rax = Value(all, "rax");
    r.rbx = Value(all, "rbx");
    r.rcx = Value(all, "rcx");
    r.rdx = Value(all, "rdx");
    r.rsi = Value(all, "rsi");
    r.rdi = Value(all, "rdi");
    r.rbp = Value(all, "rbp");
    r.rsp = Value(all, "rsp");
    r.r8 = Value(all, "r8");
    r.r9 = Value(all, "r9");
    r.r10 = Value(all, "r10");
    r.r11 = Value(all, "r11");
    r.r12 = Value(all, "r12");
    r.r13 = Value(all, "r13");
    r.r14 = Value(all, "r14");
    r.r15 = Value(all, "r15");
    r.rip = Value(all, "rip");
    r.rflags = Value(all, "eflags");
    r.cs.selector = static_cast<uint16_t>(Value(all, "cs"));
    r.ss.selector = static_cast<uint16_t>(Value(all, "ss"));
    r.ds.selector = static_cast<uint16_t>(Value(all, "ds"));
    r.es.selector = static_cast<uint16_t>(Value(all, "es"));
    r.fs.selector = static_cast<uint16_t>(Value(all, "fs"));
    r.gs.selector = static_cast<uint16_t>(Value(all, "gs"));
    r.fs_base = r.fs.base = Value(all, "fs_base");
    r.gs_base = r.gs.base = Value(all, "gs_base");
    r.kernel_gs_base = Value(all, "k_gs_base");
    r.cr0 = Value(all, "cr0");
    r.cr2 = Value(all, "cr2");
    r.cr3 = Value(all, "cr3");
    r.cr4 = Value(all, "cr4");
    r.efer = Value(all, "efer");
    return r;
  }

  absl::Status WriteRegister(int vcpu, absl::string_view name, uint64_t value) {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      return absl::FailedPreconditionError(
          absl::StrFormat("set_registers(vcpu=%d): the stub has no register %s", vcpu, name));
    }
    VMI_RETURN_IF_ERROR(Select(vcpu));
    const GdbRegister& r = *it->second;
    VMI_ASSIGN_OR_RETURN(std::string reply,
                         gdb.Request(absl::StrFormat("P%x=%s", r.regnum,
                                                     qemu_internal::HexEncode(StoreLe(value, r.bits / 8)))));
    if (reply != "OK") {
      return absl::FailedPreconditionError(absl::StrFormat(
          "set_registers(vcpu=%d): the stub refused %s=0x%x (\"%s\")", vcpu, name, value, reply));
    }
    return absl::OkStatus();
  }

  // ---- run control ----

  // Stops a running guest (the interrupt byte). A stop reply other than
  // the interrupt's is an event that raced with it: kept for WaitForEvent.
  // Returns whether the guest was running.
  absl::StatusOr<bool> StopGuest() {
    if (!running) return false;
    VMI_RETURN_IF_ERROR(gdb.Interrupt());
    VMI_ASSIGN_OR_RETURN(std::string stop, gdb.NextStop(absl::Now() + options.timeout));
    running = false;
    selected.clear();
    VMI_ASSIGN_OR_RETURN(StopReply r, qemu_internal::ParseStopReply(stop));
    if (r.kind != StopReply::Kind::kSignal) {
      return absl::UnavailableError("gdb stub: the guest exited");
    }
    if (r.signal != 2 /* SIGINT: our interrupt */) pending_stop = stop;
    return true;
  }

  // Resumes every vCPU: first steps the vCPU that stopped at a breakpoint
  // over it (with the breakpoint lifted), then continues, stepping the
  // vCPUs in single-step mode.
  absl::Status ContinueGuest() {
    if (running) return absl::OkStatus();
    if (stopped_vcpu && stopped_at_breakpoint && breakpoints.contains(*stopped_at_breakpoint)) {
      // QEMU gives a single step priority over a breakpoint at the same
      // address, so the step executes the instruction without lifting the
      // breakpoint (lifting and re-inserting it would flush QEMU's whole
      // translation cache twice per event).
      VMI_RETURN_IF_ERROR(gdb.SendNoReply(absl::StrCat("vCont;s:", threads[*stopped_vcpu])));
      VMI_ASSIGN_OR_RETURN(std::string step, gdb.NextStop(absl::Now() + options.timeout));
      VMI_ASSIGN_OR_RETURN(StopReply r, qemu_internal::ParseStopReply(step));
      if (r.kind != StopReply::Kind::kSignal) return absl::UnavailableError("gdb stub: the guest exited");
      stopped_at_breakpoint.reset();
      if (stepping.contains(*stopped_vcpu) || r.watch != StopReply::Watch::kNone) {
        // The step itself is an event (single-stepping, or a watched access).
        pending_stop = step;
        selected.clear();
        return absl::OkStatus();
      }
    }
    std::string packet = "vCont";
    for (int v : stepping) absl::StrAppend(&packet, ";s:", threads[v]);
    packet += ";c";
    VMI_RETURN_IF_ERROR(gdb.SendNoReply(packet));
    running = true;
    selected.clear();
    stopped_vcpu.reset();
    stopped_at_breakpoint.reset();
    return absl::OkStatus();
  }

  absl::Status BreakpointPacket(char z, uint64_t address) {
    VMI_ASSIGN_OR_RETURN(std::string r, gdb.Request(absl::StrFormat("%c0,%x,1", z, address)));
    if (r != "OK") {
      return absl::FailedPreconditionError(absl::StrFormat(
          "gdb stub: %s breakpoint at 0x%x refused (\"%s\")", z == 'Z' ? "inserting" : "removing",
          address, r));
    }
    return absl::OkStatus();
  }

  absl::Status WatchpointPacket(char z, const amd64::MonitorWatchpoint& w) {
    int type;
    if (w.access == MemoryAccess::W()) {
      type = 2;
    } else if (w.access == MemoryAccess::R()) {
      type = 3;
    } else if (w.access == MemoryAccess::RW()) {
      type = 4;
    } else {
      return absl::InvalidArgumentError(absl::StrFormat(
          "monitor %s: a watchpoint watches reads and/or writes, not %s",
          amd64::EventMonitorToString(w), w.access));
    }
    if (w.length != 1 && w.length != 2 && w.length != 4 && w.length != 8) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "monitor %s: length must be 1, 2, 4 or 8", amd64::EventMonitorToString(w)));
    }
    VMI_ASSIGN_OR_RETURN(std::string r, gdb.Request(absl::StrFormat("%c%d,%x,%x", z, type,
                                                                    w.address.value(), w.length)));
    if (r != "OK") {
      return absl::FailedPreconditionError(absl::StrFormat(
          "gdb stub: %s %s refused (\"%s\")", z == 'Z' ? "inserting" : "removing",
          amd64::EventMonitorToString(w), r));
    }
    return absl::OkStatus();
  }

  // Runs `f` with the guest stopped, and resumes it if it was running.
  template <typename F>
  auto Stopped(F&& f) -> decltype(f()) {
    VMI_ASSIGN_OR_RETURN(bool was_running, StopGuest());
    auto result = f();
    if (was_running && !pending_stop) {
      absl::Status s = ContinueGuest();
      if (!s.ok()) return s;
    }
    return result;
  }

  absl::Status RemoveAllStubState() {
    absl::Status first;
    auto keep = [&first](absl::Status s) {
      if (first.ok() && !s.ok()) first = s;
    };
    for (uint64_t b : breakpoints) keep(BreakpointPacket('z', b));
    breakpoints.clear();
    for (const amd64::MonitorWatchpoint& w : watchpoints) keep(WatchpointPacket('z', w));
    watchpoints.clear();
    stepping.clear();
    singlestep_monitor = false;
    return first;
  }
};

absl::StatusOr<QemuDriver> QemuDriver::Open(const QemuTarget& target, OpenOptions options) {
  auto state = std::make_unique<State>();
  state->target = target;
  state->options = options;
  const std::string where = absl::StrFormat("open qemu target (gdb %s, ram %s, qmp %s)", target.gdb_socket,
                                            target.ram_file, target.qmp_socket);

  // QMP: the run state, the memory backend and the layout.
  absl::StatusOr<Qmp> qmp = Qmp::ConnectUnix(target.qmp_socket, options.timeout);
  if (!qmp.ok()) {
    return AnnotateStatus(qmp.status(),
                          absl::StrFormat("%s: QMP (start QEMU with -qmp unix:%s,server=on,wait=off)",
                                          where, target.qmp_socket));
  }
  state->qmp = *std::move(qmp);
  VMI_ASSIGN_OR_RETURN(nlohmann::json status, state->qmp->Execute("query-status"));
  const bool was_running = status.is_object() && status.value("running", false);
  state->paused_at_open = !was_running;

  absl::StatusOr<nlohmann::json> backend_path =
      state->qmp->Execute("qom-get", {{"path", "/machine"}, {"property", "memory-backend"}});
  if (!backend_path.ok() || !backend_path->is_string() || backend_path->get<std::string>().empty()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: QEMU's RAM is not a memory backend object: %s", where, QemuOptionsHint(target.ram_file)));
  }
  const std::string backend = backend_path->get<std::string>();
  absl::StatusOr<nlohmann::json> mem_path =
      state->qmp->Execute("qom-get", {{"path", backend}, {"property", "mem-path"}});
  absl::StatusOr<nlohmann::json> share =
      state->qmp->Execute("qom-get", {{"path", backend}, {"property", "share"}});
  absl::StatusOr<nlohmann::json> size =
      state->qmp->Execute("qom-get", {{"path", backend}, {"property", "size"}});
  if (!mem_path.ok() || !mem_path->is_string()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: QEMU's RAM backend %s is not a file: %s", where, backend, QemuOptionsHint(target.ram_file)));
  }
  if (!share.ok() || !share->is_boolean() || !share->get<bool>()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: QEMU's RAM backend %s is not shared (share=on), so its file does not show guest "
        "memory: %s",
        where, backend, QemuOptionsHint(target.ram_file)));
  }
  if (RealPath(mem_path->get<std::string>()) != RealPath(target.ram_file)) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: QEMU's RAM is the file %s, not %s", where, mem_path->get<std::string>(), target.ram_file));
  }
  const uint64_t backend_size = size.ok() && size->is_number_unsigned() ? size->get<uint64_t>() : 0;

  // The file, mapped shared.
  const int fd = open(target.ram_file.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return ErrnoError(absl::StrFormat("%s: open(%s)", where, target.ram_file), errno);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    close(fd);
    return ErrnoError(absl::StrFormat("%s: fstat(%s)", where, target.ram_file), err);
  }
  if (static_cast<uint64_t>(st.st_size) != backend_size || backend_size == 0 ||
      backend_size % kPageSize != 0) {
    close(fd);
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: the RAM file %s is %u bytes, QEMU's backend %s is %u bytes", where, target.ram_file,
        st.st_size, backend, backend_size));
  }
  void* p = mmap(nullptr, backend_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int map_err = errno;
  close(fd);
  if (p == MAP_FAILED) return ErrnoError(absl::StrFormat("%s: mmap(%s)", where, target.ram_file), map_err);
  state->ram = std::make_shared<Mapping>();
  state->ram->data = static_cast<uint8_t*>(p);
  state->ram->size = backend_size;

  VMI_ASSIGN_OR_RETURN(std::string mtree, state->qmp->Human("info mtree -f"));
  const std::string backend_id(absl::StripPrefix(backend, "/objects/"));
  absl::StatusOr<std::vector<qemu_internal::RamRange>> ranges = qemu_internal::ParseMtreeRam(mtree, backend_id);
  if (!ranges.ok()) return AnnotateStatus(ranges.status(), where);
  for (const qemu_internal::RamRange& r : *ranges) {
    if (r.file_offset + r.size > backend_size || r.gpa % kPageSize || r.size % kPageSize ||
        r.file_offset % kPageSize) {
      return absl::DataLossError(absl::StrFormat(
          "%s: info mtree maps gpa 0x%x (+0x%x) to offset 0x%x: outside the %u-byte backend or not "
          "page-aligned",
          where, r.gpa, r.size, r.file_offset, backend_size));
    }
  }
  state->ranges = *std::move(ranges);
  state->max_gfn = (state->ranges.back().gpa + state->ranges.back().size) / kPageSize - 1;

  // The GDB stub. Attaching stops a running guest, with a stop reply of
  // its own.
  absl::StatusOr<GdbRemote> gdb = GdbRemote::ConnectUnix(target.gdb_socket, options.timeout);
  if (!gdb.ok()) {
    return AnnotateStatus(gdb.status(),
                          absl::StrFormat("%s: the GDB stub (start QEMU with -gdb unix:%s,server=on,wait=off)",
                                          where, target.gdb_socket));
  }
  state->gdb = *std::move(gdb);
  if (was_running) {
    absl::StatusOr<std::string> first = state->gdb.NextStop(absl::Now() + options.timeout);
    if (!first.ok() && !absl::IsDeadlineExceeded(first.status())) return AnnotateStatus(first.status(), where);
  }
  VMI_RETURN_IF_ERROR(state->gdb.Handshake().status());
  VMI_ASSIGN_OR_RETURN(std::string stop, state->gdb.Request("?"));
  if (!qemu_internal::IsStopReply(stop)) {
    return absl::DataLossError(absl::StrFormat("%s: the stub's '?' answered \"%s\"", where, stop));
  }
  VMI_ASSIGN_OR_RETURN(std::string xml, state->gdb.ReadXfer("features", "target.xml"));
  State* s = state.get();
  absl::StatusOr<std::vector<GdbRegister>> regs = qemu_internal::ParseTargetDescription(
      xml, [s](const std::string& name) { return s->gdb.ReadXfer("features", name); });
  if (!regs.ok()) return AnnotateStatus(regs.status(), where);
  state->regs = *std::move(regs);
  for (const GdbRegister& r : state->regs) {
    state->by_name[r.name] = &r;
    state->g_size = std::max<size_t>(state->g_size, r.offset + r.bits / 8);
  }
  for (const char* needed : {"rax", "rip", "eflags", "cr0", "cr3", "cr4", "efer", "gs_base", "k_gs_base"}) {
    if (!state->by_name.contains(needed)) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s: the stub's target description has no register %s (QEMU too old?)", where, needed));
    }
  }
  for (std::string packet = "qfThreadInfo";; packet = "qsThreadInfo") {
    VMI_ASSIGN_OR_RETURN(std::string reply, state->gdb.Request(packet));
    if (reply == "l") break;
    if (reply.empty() || reply[0] != 'm') {
      return absl::DataLossError(absl::StrFormat("%s: %s answered \"%s\"", where, packet, reply));
    }
    for (absl::string_view t : absl::StrSplit(absl::string_view(reply).substr(1), ',', absl::SkipEmpty())) {
      state->threads.emplace_back(t);
    }
    if (state->threads.size() > 4096) return absl::DataLossError(absl::StrFormat("%s: too many threads", where));
  }
  if (state->threads.empty()) return absl::DataLossError(absl::StrFormat("%s: the stub lists no threads", where));

  if (was_running) VMI_RETURN_IF_ERROR(state->ContinueGuest());
  return QemuDriver(std::move(state));
}

QemuDriver::QemuDriver(std::unique_ptr<State> state) : state_(std::move(state)) {}
QemuDriver::QemuDriver(QemuDriver&&) noexcept = default;
QemuDriver& QemuDriver::operator=(QemuDriver&&) noexcept = default;

QemuDriver::~QemuDriver() {
  if (!state_ || !state_->gdb.connected()) return;
  // Leave the guest as it was found: no stub state, running unless it was
  // paused at open. Best effort: QEMU may be gone.
  absl::StatusOr<bool> stopped = state_->StopGuest();
  if (stopped.ok()) {
    state_->RemoveAllStubState().IgnoreError();
    // Detach the process (multiprocess mode wants its pid): QEMU resumes
    // the guest when no process is attached any more.
    std::string pid = "1";
    if (!state_->threads.empty()) {
      absl::string_view t = state_->threads[0];
      if (absl::ConsumePrefix(&t, "p")) pid = std::string(t.substr(0, t.find('.')));
    }
    state_->gdb.Request("D;" + pid).IgnoreError();
  }
  state_->gdb.Close();
  if (state_->qmp) {
    state_->qmp->Execute(state_->paused_at_open ? "stop" : "cont").IgnoreError();
  }
}

absl::StatusOr<VmiInfo> QemuDriver::Info() const {
  if (!state_) return absl::FailedPreconditionError("info(): driver was moved from");
  return VmiInfo{kPageSize, 12, Gfn(state_->max_gfn), static_cast<uint16_t>(state_->threads.size())};
}

namespace {

const qemu_internal::RamRange* FindRange(const std::vector<qemu_internal::RamRange>& ranges, uint64_t gpa) {
  auto it = std::upper_bound(ranges.begin(), ranges.end(), gpa,
                             [](uint64_t a, const qemu_internal::RamRange& r) { return a < r.gpa; });
  if (it == ranges.begin()) return nullptr;
  --it;
  return gpa < it->gpa + it->size ? &*it : nullptr;
}

}  // namespace

absl::StatusOr<MappedPage> QemuDriver::ReadPage(Gfn gfn) {
  if (!state_) return absl::FailedPreconditionError("read_page(): driver was moved from");
  const uint64_t gpa = gfn.value() * kPageSize;
  const qemu_internal::RamRange* r = FindRange(state_->ranges, gpa);
  if (r == nullptr) {
    return absl::NotFoundError(absl::StrFormat("read_page(gfn=%s): not guest RAM (a hole or beyond max_gfn 0x%x)",
                                               gfn, state_->max_gfn));
  }
  uint8_t* data = state_->ram->data + r->file_offset + (gpa - r->gpa);
  return MappedPage::Live(gfn, data, kPageSize, [ram = state_->ram] {});
}

absl::StatusOr<MappedPage> QemuDriver::WritePage(Gfn gfn, uint64_t offset, absl::Span<const uint8_t> content) {
  if (!state_) return absl::FailedPreconditionError("write_page(): driver was moved from");
  if (absl::Status s = CheckPageSpan("write_page", gfn, offset, content.size(), kPageSize); !s.ok()) {
    return s;
  }
  const uint64_t gpa = gfn.value() * kPageSize;
  const qemu_internal::RamRange* r = FindRange(state_->ranges, gpa);
  if (r == nullptr) {
    return absl::NotFoundError(absl::StrFormat("write_page(gfn=%s): not guest RAM", gfn));
  }
  if (r->read_only) {
    return absl::PermissionDeniedError(
        absl::StrFormat("write_page(gfn=%s): a read-only (ROM) view of RAM", gfn));
  }
  uint8_t* data = state_->ram->data + r->file_offset + (gpa - r->gpa);
  std::memcpy(data + offset, content.data(), content.size());
  return MappedPage::Live(gfn, data, kPageSize, [ram = state_->ram] {});
}

absl::StatusOr<amd64::Registers> QemuDriver::Registers(VcpuId vcpu) {
  if (!state_) return absl::FailedPreconditionError("registers(): driver was moved from");
  if (vcpu.value() >= state_->threads.size()) {
    return absl::OutOfRangeError(
        absl::StrFormat("registers(vcpu=%s): the guest has %u vCPUs", vcpu, state_->threads.size()));
  }
  State& s = *state_;
  VMI_ASSIGN_OR_RETURN(amd64::Registers r, s.Stopped([&] { return s.StubRegisters(vcpu.value()); }));
  // What the stub lacks, from the monitor.
  absl::StatusOr<std::string> text = s.qmp->Human("info registers -a");
  if (!text.ok()) return AnnotateStatus(text.status(), absl::StrFormat("registers(vcpu=%s)", vcpu));
  absl::StatusOr<std::vector<qemu_internal::CpuDescriptors>> cpus = qemu_internal::ParseInfoRegisters(*text);
  if (!cpus.ok()) return AnnotateStatus(cpus.status(), absl::StrFormat("registers(vcpu=%s)", vcpu));
  if (vcpu.value() < cpus->size()) {
    const qemu_internal::CpuDescriptors& d = (*cpus)[vcpu.value()];
    auto with_selector = [](amd64::Segment seg, uint16_t selector) {
      seg.selector = selector;
      return seg;
    };
    r.es = with_selector(d.es, r.es.selector);
    r.cs = with_selector(d.cs, r.cs.selector);
    r.ss = with_selector(d.ss, r.ss.selector);
    r.ds = with_selector(d.ds, r.ds.selector);
    r.fs = with_selector(d.fs, r.fs.selector);
    r.gs = with_selector(d.gs, r.gs.selector);
    // The stub's bases are read with the guest stopped; keep them.
    r.fs.base = r.fs_base;
    r.gs.base = r.gs_base;
    r.ldtr = d.ldtr;
    r.tr = d.tr;
    r.gdtr = d.gdtr;
    r.idtr = d.idtr;
    r.dr0 = d.dr[0];
    r.dr1 = d.dr[1];
    r.dr2 = d.dr[2];
    r.dr3 = d.dr[3];
    r.dr6 = d.dr[6];
    r.dr7 = d.dr[7];
  }
  return r;
}

absl::Status QemuDriver::SetRegisters(VcpuId vcpu, const amd64::Registers& regs) {
  VMI_ASSIGN_OR_RETURN(const amd64::Registers now, Registers(vcpu));
  std::vector<std::string> fixed;
  auto check = [&](bool same, const char* name) {
    if (!same) fixed.push_back(name);
  };
  auto same_cache = [](const amd64::Segment& a, const amd64::Segment& b) {
    return a.base == b.base && a.limit == b.limit && a.access == b.access;
  };
  check(same_cache(regs.cs, now.cs) && same_cache(regs.ss, now.ss) && same_cache(regs.ds, now.ds) &&
            same_cache(regs.es, now.es),
        "segment descriptor caches");
  check(regs.ldtr == now.ldtr, "ldtr");
  check(regs.tr == now.tr, "tr");
  check(regs.gdtr == now.gdtr, "gdtr");
  check(regs.idtr == now.idtr, "idtr");
  check(regs.dr0 == now.dr0 && regs.dr1 == now.dr1 && regs.dr2 == now.dr2 && regs.dr3 == now.dr3 &&
            regs.dr6 == now.dr6 && regs.dr7 == now.dr7,
        "dr0-dr7");
  check(regs.xcr0 == now.xcr0, "xcr0");
  check(regs.star == now.star && regs.lstar == now.lstar && regs.cstar == now.cstar &&
            regs.sfmask == now.sfmask && regs.sysenter_cs == now.sysenter_cs &&
            regs.sysenter_esp == now.sysenter_esp && regs.sysenter_eip == now.sysenter_eip &&
            regs.tsc_aux == now.tsc_aux,
        "MSRs");
  if (!fixed.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "set_registers(vcpu=%s): QEMU's GDB stub cannot set %s; nothing was written", vcpu,
        absl::StrJoin(fixed, ", ")));
  }
  State& s = *state_;
  const int v = vcpu.value();
  return s.Stopped([&]() -> absl::Status {
    const std::pair<const char*, std::pair<uint64_t, uint64_t>> writes[] = {
        {"rax", {regs.rax, now.rax}},       {"rbx", {regs.rbx, now.rbx}},
        {"rcx", {regs.rcx, now.rcx}},       {"rdx", {regs.rdx, now.rdx}},
        {"rsi", {regs.rsi, now.rsi}},       {"rdi", {regs.rdi, now.rdi}},
        {"rbp", {regs.rbp, now.rbp}},       {"rsp", {regs.rsp, now.rsp}},
        {"r8", {regs.r8, now.r8}},          {"r9", {regs.r9, now.r9}},
        {"r10", {regs.r10, now.r10}},       {"r11", {regs.r11, now.r11}},
        {"r12", {regs.r12, now.r12}},       {"r13", {regs.r13, now.r13}},
        {"r14", {regs.r14, now.r14}},       {"r15", {regs.r15, now.r15}},
        {"rip", {regs.rip, now.rip}},       {"eflags", {regs.rflags, now.rflags}},
        {"cs", {regs.cs.selector, now.cs.selector}}, {"ss", {regs.ss.selector, now.ss.selector}},
        {"ds", {regs.ds.selector, now.ds.selector}}, {"es", {regs.es.selector, now.es.selector}},
        {"fs", {regs.fs.selector, now.fs.selector}}, {"gs", {regs.gs.selector, now.gs.selector}},
        {"fs_base", {regs.fs_base, now.fs_base}}, {"gs_base", {regs.gs_base, now.gs_base}},
        {"k_gs_base", {regs.kernel_gs_base, now.kernel_gs_base}},
        {"cr0", {regs.cr0, now.cr0}},       {"cr2", {regs.cr2, now.cr2}},
        {"cr3", {regs.cr3, now.cr3}},       {"cr4", {regs.cr4, now.cr4}},
        {"efer", {regs.efer, now.efer}},
    };
    for (const auto& [name, values] : writes) {
      if (values.first != values.second) VMI_RETURN_IF_ERROR(s.WriteRegister(v, name, values.first));
    }
    if (regs.rip != now.rip && s.stopped_vcpu == v) s.stopped_at_breakpoint.reset();
    return absl::OkStatus();
  });
}

absl::Status QemuDriver::MonitorEnable(const amd64::EventMonitor& monitor) {
  State& s = *state_;
  if (const auto* b = std::get_if<amd64::MonitorBreakpoint>(&monitor)) {
    if (s.breakpoints.contains(b->address.value())) return absl::OkStatus();
    return s.Stopped([&]() -> absl::Status {
      VMI_RETURN_IF_ERROR(s.BreakpointPacket('Z', b->address.value()));
      s.breakpoints.insert(b->address.value());
      return absl::OkStatus();
    });
  }
  if (const auto* w = std::get_if<amd64::MonitorWatchpoint>(&monitor)) {
    if (std::find(s.watchpoints.begin(), s.watchpoints.end(), *w) != s.watchpoints.end()) {
      return absl::OkStatus();
    }
    return s.Stopped([&]() -> absl::Status {
      VMI_RETURN_IF_ERROR(s.WatchpointPacket('Z', *w));
      s.watchpoints.push_back(*w);
      return absl::OkStatus();
    });
  }
  if (std::holds_alternative<amd64::MonitorSingleStep>(monitor)) {
    s.singlestep_monitor = true;
    return absl::OkStatus();
  }
  return absl::UnimplementedError(absl::StrFormat(
      "monitor %s: QEMU's GDB stub reports breakpoints, watchpoints and single steps only, not "
      "guest exceptions or register writes",
      amd64::EventMonitorToString(monitor)));
}

absl::Status QemuDriver::MonitorDisable(const amd64::EventMonitor& monitor) {
  State& s = *state_;
  if (const auto* b = std::get_if<amd64::MonitorBreakpoint>(&monitor)) {
    if (!s.breakpoints.contains(b->address.value())) return absl::OkStatus();
    return s.Stopped([&]() -> absl::Status {
      VMI_RETURN_IF_ERROR(s.BreakpointPacket('z', b->address.value()));
      s.breakpoints.erase(b->address.value());
      return absl::OkStatus();
    });
  }
  if (const auto* w = std::get_if<amd64::MonitorWatchpoint>(&monitor)) {
    auto it = std::find(s.watchpoints.begin(), s.watchpoints.end(), *w);
    if (it == s.watchpoints.end()) return absl::OkStatus();
    return s.Stopped([&]() -> absl::Status {
      VMI_RETURN_IF_ERROR(s.WatchpointPacket('z', *w));
      s.watchpoints.erase(std::find(s.watchpoints.begin(), s.watchpoints.end(), *w));
      return absl::OkStatus();
    });
  }
  if (std::holds_alternative<amd64::MonitorSingleStep>(monitor)) {
    s.singlestep_monitor = false;
    s.stepping.clear();
    return absl::OkStatus();
  }
  return absl::OkStatus();  // never enabled: nothing to undo
}

size_t QemuDriver::EventsPending() { return state_->pending_stop ? 1 : 0; }

absl::Duration QemuDriver::EventProcessingOverhead() { return state_->overhead; }

absl::Status QemuDriver::WaitForEvent(absl::Duration timeout, Handler handler) {
  State& s = *state_;
  if (s.pause_depth > 0 && !s.pending_stop) {
    return absl::DeadlineExceededError("wait_for_event: the VM is paused");
  }
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    const absl::Time t0 = absl::Now();
    std::string stop;
    if (s.pending_stop) {
      stop = *std::exchange(s.pending_stop, std::nullopt);
    } else {
      VMI_RETURN_IF_ERROR(s.ContinueGuest());
      if (s.pending_stop) continue;  // the step over a breakpoint was itself an event
      absl::StatusOr<std::string> next = s.gdb.NextStop(deadline);
      if (!next.ok()) {
        if (absl::IsDeadlineExceeded(next.status())) {
          return absl::DeadlineExceededError(absl::StrCat("wait_for_event: no event in ", absl::FormatDuration(timeout)));
        }
        return next.status();
      }
      stop = *std::move(next);
      s.running = false;
      s.selected.clear();
    }
    VMI_ASSIGN_OR_RETURN(StopReply r, qemu_internal::ParseStopReply(stop));
    if (r.kind != StopReply::Kind::kSignal) {
      return absl::UnavailableError(absl::StrFormat("wait_for_event: the guest exited (\"%s\")", stop));
    }
    if (!r.thread) return absl::DataLossError(absl::StrFormat("wait_for_event: a stop without a thread: \"%s\"", stop));
    VMI_ASSIGN_OR_RETURN(int vcpu, s.VcpuOfThread(*r.thread));
    VMI_ASSIGN_OR_RETURN(amd64::Registers regs, s.StubRegisters(vcpu));
    s.stopped_vcpu = vcpu;

    std::optional<amd64::EventReason> reason;
    if (r.watch != StopReply::Watch::kNone && s.WatchpointCovers(r.watch_address)) {
      const MemoryAccess access = r.watch == StopReply::Watch::kWrite  ? MemoryAccess::W()
                                  : r.watch == StopReply::Watch::kRead ? MemoryAccess::R()
                                                                       : MemoryAccess::RW();
      reason = amd64::DebugWatchpointEvent{Va(r.watch_address), access};
    } else if (r.signal == 5 && s.breakpoints.contains(regs.rip)) {
      s.stopped_at_breakpoint = regs.rip;
      reason = amd64::DebugBreakpointEvent{Va(regs.rip)};
    } else if (r.signal == 5 && s.stepping.contains(vcpu) && s.singlestep_monitor) {
      reason = amd64::SingleStepEvent{};
    }
    if (!reason) {
      // A stop that is no event of ours (a removed breakpoint or watchpoint:
      // a hit that raced with its removal, kept while the guest was stopped
      // for it; a stray interrupt): let the guest go on.
      s.overhead += absl::Now() - t0;
      if (absl::Now() >= deadline) {
        VMI_RETURN_IF_ERROR(s.ContinueGuest());
        return absl::DeadlineExceededError(absl::StrCat("wait_for_event: no event in ", absl::FormatDuration(timeout)));
      }
      continue;
    }

    VmiEvent<Amd64> event;
    event.vcpu = VcpuId(static_cast<uint16_t>(vcpu));
    event.view = kDefaultView;
    event.registers = regs;
    event.reason = *reason;
    const absl::Time before_handler = absl::Now();
    const VmiEventResponse<Amd64> response = handler(event);
    const absl::Time after_handler = absl::Now();

    absl::Status applied = absl::OkStatus();
    if (response.registers) {
      amd64::Registers next = regs;
      next.set_gp(*response.registers);
      const std::pair<const char*, std::pair<uint64_t, uint64_t>> writes[] = {
          {"rax", {next.rax, regs.rax}}, {"rbx", {next.rbx, regs.rbx}}, {"rcx", {next.rcx, regs.rcx}},
          {"rdx", {next.rdx, regs.rdx}}, {"rsi", {next.rsi, regs.rsi}}, {"rdi", {next.rdi, regs.rdi}},
          {"rbp", {next.rbp, regs.rbp}}, {"rsp", {next.rsp, regs.rsp}}, {"r8", {next.r8, regs.r8}},
          {"r9", {next.r9, regs.r9}},    {"r10", {next.r10, regs.r10}}, {"r11", {next.r11, regs.r11}},
          {"r12", {next.r12, regs.r12}}, {"r13", {next.r13, regs.r13}}, {"r14", {next.r14, regs.r14}},
          {"r15", {next.r15, regs.r15}}, {"rip", {next.rip, regs.rip}}, {"eflags", {next.rflags, regs.rflags}},
      };
      for (const auto& [name, values] : writes) {
        if (values.first != values.second && applied.ok()) applied = s.WriteRegister(vcpu, name, values.first);
      }
      if (next.rip != regs.rip) s.stopped_at_breakpoint.reset();
    }
    switch (response.action) {
      case EventAction::kContinue:
        break;
      case EventAction::kSingleStep:
        if (!s.singlestep_monitor) {
          applied.Update(absl::FailedPreconditionError(
              "wait_for_event: ToggleSingleStep needs MonitorSingleStep enabled"));
        } else if (!s.stepping.erase(vcpu)) {
          s.stepping.insert(vcpu);
        }
        break;
      default:
        applied.Update(absl::InvalidArgumentError(absl::StrFormat(
            "wait_for_event: response action %d is not possible through QEMU's GDB stub (only "
            "Continue and ToggleSingleStep); the guest was resumed",
            static_cast<int>(response.action))));
        break;
    }
    if (response.view && *response.view != kDefaultView) {
      applied.Update(absl::InvalidArgumentError("wait_for_event: QEMU has no views"));
    }
    absl::Status resumed = s.pause_depth > 0 ? absl::OkStatus() : s.ContinueGuest();
    s.overhead += (before_handler - t0) + (absl::Now() - after_handler);
    VMI_RETURN_IF_ERROR(resumed);
    return applied;
  }
}

absl::Status QemuDriver::Pause() {
  State& s = *state_;
  if (s.pause_depth == 0) {
    absl::StatusOr<bool> stopped = s.StopGuest();
    if (!stopped.ok()) return AnnotateStatus(stopped.status(), "pause");
  }
  ++s.pause_depth;
  return absl::OkStatus();
}

absl::Status QemuDriver::Resume() {
  State& s = *state_;
  if (s.pause_depth == 0) return absl::FailedPreconditionError("resume: the VM is not paused");
  if (--s.pause_depth == 0 && !s.pending_stop) {
    // With an event pending, the guest stays stopped until WaitForEvent
    // delivers it.
    return AnnotateStatus(s.ContinueGuest(), "resume");
  }
  return absl::OkStatus();
}

absl::StatusOr<Gfn> QemuDriver::AllocateGfn() {
  return absl::UnimplementedError(
      "allocate_gfn: not possible on QEMU: guest RAM is QEMU's fixed memory backend");
}

absl::Status QemuDriver::AllocateGfnAt(Gfn gfn) {
  return absl::UnimplementedError(absl::StrFormat(
      "allocate_gfn_at(gfn=%s): not possible on QEMU: guest RAM is QEMU's fixed memory backend", gfn));
}

absl::Status QemuDriver::FreeGfn(Gfn gfn) {
  return absl::UnimplementedError(absl::StrFormat(
      "free_gfn(gfn=%s): not possible on QEMU: guest RAM is QEMU's fixed memory backend", gfn));
}

absl::Status QemuDriver::InjectInterrupt(VcpuId vcpu, const amd64::Interrupt& interrupt) {
  if (vcpu.value() >= state_->threads.size()) {
    return absl::OutOfRangeError(absl::StrFormat("inject_interrupt(vcpu=%s): the guest has %u vCPUs",
                                                 vcpu, state_->threads.size()));
  }
  if (interrupt.vector != amd64::exception::kNmi) {
    return absl::UnimplementedError(absl::StrFormat(
        "inject_interrupt(vcpu=%s, vector=%u): QEMU can inject only NMIs (QMP inject-nmi)", vcpu,
        interrupt.vector));
  }
  return state_->qmp->Execute("inject-nmi").status();
}

absl::Status QemuDriver::ResetState() {
  State& s = *state_;
  return s.Stopped([&] { return s.RemoveAllStubState(); });
}

const QemuTarget& QemuDriver::target() const { return state_->target; }

std::vector<QemuDriver::RamRange> QemuDriver::ram_ranges() const {
  std::vector<RamRange> out;
  for (const qemu_internal::RamRange& r : state_->ranges) {
    out.push_back({Pa(r.gpa), r.size, r.file_offset, r.read_only});
  }
  return out;
}

bool QemuDriver::running() const { return state_->running; }

}  // namespace vmi::qemu
