// QemuDriver: a live guest under stock QEMU (TCG or KVM), no patched
// hypervisor. It needs three things QEMU is started with (see README.md and
// tools/qemu/start_guest.sh):
//   - guest RAM in a shared file: -object memory-backend-file,id=ram,
//     size=...,mem-path=FILE,share=on -machine memory-backend=ram
//     -> memory (VmiRead, VmiWrite) is a zero-copy shared mapping of FILE,
//        laid out as QMP's "info mtree -f" says (holes, the split at 4 GiB);
//   - the GDB stub: -gdb unix:SOCKET,server=on,wait=off
//     -> registers (one stub thread per vCPU), run control, breakpoints,
//        watchpoints and single steps;
//   - QMP: -qmp unix:SOCKET,server=on,wait=off
//     -> the memory layout, the backend's identity, what the stub lacks
//        (segment descriptor caches, GDTR/IDTR, DR0-7 from "info
//        registers"), NMI injection.
//
// Capabilities: VmiRead, VmiWrite, VmiQueryRegisters, VmiSetRegisters,
// VmiEventControl and VmiVmControl; no second-level permissions and no
// views (pinned below). Of VmiVmControl, frame allocation is Unimplemented
// (QEMU's RAM is a fixed backend) and InjectInterrupt takes NMIs only (QMP's
// inject-nmi, which QEMU raises on the LINT1 pin of every vCPU's local APIC,
// whichever vCPU is named, so each vCPU takes it as its guest configured
// LINT1: Linux unmasks it on the boot CPU only; other interrupts are
// Unimplemented). Errors follow the driver contract in core/driver.h.
//
// Events come from the stub: MonitorBreakpoint (stops before the
// instruction, invisible to the guest under TCG; under KVM QEMU patches an
// INT3 into guest memory), MonitorWatchpoint (after the access) and
// MonitorSingleStep with the ToggleSingleStep response. Other monitors are
// Unimplemented: QEMU's stub does not report guest exceptions, CR or MSR
// writes. A SingleStepEvent's instruction_gfn stays empty: the stub reports
// no frame, and the event's registers (the stub's) lack the CS descriptor
// cache that forming the fetch address needs; walk RIP under the event's CR3
// if a frame is needed. Responses: Continue and ToggleSingleStep, with registers; the rest
// (Deny, Emulate, reinjection, views) are InvalidArgument after the guest
// has been resumed.
//
// Run state: QEMU stops the VM while a GDB client attaches; Open resumes it
// if it was running. The stub answers only while the VM is stopped, so
// reading registers of a running VM stops it for the read. WaitForEvent
// lets the guest run until a stop (an event) or the timeout
// (DeadlineExceeded, the guest keeps running); Pause/Resume nest. Every
// wait is bounded by OpenOptions::timeout. Destruction removes breakpoints
// and watchpoints, detaches, and leaves the VM running (or paused, if it was
// paused when opened).
//
// Thread-safety: thread-compatible.

#ifndef VMI_DRIVERS_QEMU_QEMU_DRIVER_H_
#define VMI_DRIVERS_QEMU_QEMU_DRIVER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "arch/amd64/amd64.h"
#include "core/driver.h"
#include "core/event.h"
#include "core/mapped_page.h"
#include "core/types.h"

namespace vmi::qemu {

// Where the three pieces are.
struct QemuTarget {
  std::string gdb_socket;
  std::string ram_file;
  std::string qmp_socket;

  // "DIR" (holding gdb.sock, ram and qmp.sock) or
  // "GDB_SOCKET,mem=RAM_FILE,qmp=QMP_SOCKET".
  static absl::StatusOr<QemuTarget> Parse(absl::string_view spec);
};

struct OpenOptions {
  // Bounds every wait on QEMU (a reply, a stop after an interrupt).
  absl::Duration timeout = absl::Seconds(10);
};

class QemuDriver {
 public:
  using Architecture = Amd64;
  using Handler = absl::FunctionRef<VmiEventResponse<Amd64>(const VmiEvent<Amd64>&)>;

  // Checks that the RAM file is QEMU's shared memory backend (same path,
  // same size), reads the layout and the register description, and leaves
  // the guest running if it was. Errors say which piece is missing and what
  // QEMU option would provide it.
  [[nodiscard]] static absl::StatusOr<QemuDriver> Open(const QemuTarget& target,
                                                       OpenOptions options = {});

  QemuDriver(QemuDriver&&) noexcept;
  QemuDriver& operator=(QemuDriver&&) noexcept;
  QemuDriver(const QemuDriver&) = delete;
  QemuDriver& operator=(const QemuDriver&) = delete;
  ~QemuDriver();

  // page_size 4096, max_gfn = the end of the highest RAM range, vcpus.
  absl::StatusOr<VmiInfo> Info() const;

  // ---- memory ----
  // A live view of the frame in the shared RAM mapping; NotFound for a
  // frame in no RAM range.
  [[nodiscard]] absl::StatusOr<MappedPage> ReadPage(Gfn gfn);
  // Writes straight into guest RAM; PermissionDenied for a ROM view of RAM.
  [[nodiscard]] absl::StatusOr<MappedPage> WritePage(Gfn gfn, uint64_t offset,
                                                     absl::Span<const uint8_t> content);

  // ---- registers ----
  // GPRs, RIP, RFLAGS, selectors, FS/GS bases, KERNEL_GS_BASE, CR0-4, EFER
  // from the stub; descriptor caches, GDTR, IDTR, DR0-7 from QMP. XCR0 and
  // the SYSCALL/SYSENTER MSRs are not available from QEMU: zero.
  [[nodiscard]] absl::StatusOr<amd64::Registers> Registers(VcpuId vcpu);
  // Writes what differs from the current values. InvalidArgument, with
  // nothing written, when a field QEMU cannot set (descriptor caches,
  // GDTR/IDTR, DR0-7, XCR0, MSRs other than EFER and the FS/GS bases)
  // differs.
  [[nodiscard]] absl::Status SetRegisters(VcpuId vcpu, const amd64::Registers& regs);

  // ---- events ----
  [[nodiscard]] absl::Status MonitorEnable(const amd64::EventMonitor& monitor);
  [[nodiscard]] absl::Status MonitorDisable(const amd64::EventMonitor& monitor);
  size_t EventsPending();
  // Time spent in WaitForEvent outside the handler (stub round trips), in
  // total since Open.
  absl::Duration EventProcessingOverhead();
  [[nodiscard]] absl::Status WaitForEvent(absl::Duration timeout, Handler handler);

  // ---- VM control ----
  [[nodiscard]] absl::Status Pause();
  [[nodiscard]] absl::Status Resume();
  [[nodiscard]] absl::StatusOr<Gfn> AllocateGfn();
  [[nodiscard]] absl::Status AllocateGfnAt(Gfn gfn);
  [[nodiscard]] absl::Status FreeGfn(Gfn gfn);
  [[nodiscard]] absl::Status InjectInterrupt(VcpuId vcpu, const amd64::Interrupt& interrupt);
  // Removes every breakpoint and watchpoint and stops single-stepping.
  [[nodiscard]] absl::Status ResetState();

  const QemuTarget& target() const;
  // The guest-physical ranges backed by the RAM file, ascending.
  struct RamRange {
    Pa start;
    uint64_t size = 0;
    uint64_t file_offset = 0;
    bool read_only = false;
  };
  std::vector<RamRange> ram_ranges() const;
  // True while the guest runs (not stopped by the stub).
  bool running() const;

 private:
  struct State;
  explicit QemuDriver(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

static_assert(VmiRead<QemuDriver>);
static_assert(VmiWrite<QemuDriver>);
static_assert(VmiRegisters<QemuDriver>);
static_assert(VmiEventControl<QemuDriver>);
static_assert(VmiVmControl<QemuDriver>);
static_assert(!VmiQueryProtection<QemuDriver>);
static_assert(!VmiSetProtection<QemuDriver>);
static_assert(!VmiViewControl<QemuDriver>);
static_assert(!VmiFullDriver<QemuDriver>);

}  // namespace vmi::qemu

#endif  // VMI_DRIVERS_QEMU_QEMU_DRIVER_H_
