// XenDriver: the driver capability interfaces over a running Xen HVM domain,
// through Xen 4.17's tools libraries (libxenctrl, libxenforeignmemory,
// libxenevtchn, libxendevicemodel, libxenstore). Satisfies VmiFullDriver for
// Amd64.
//
//  * Memory: foreign mappings, zero-copy and coherent (MappedPage::Live),
//    unmapped when the last handle drops. MapPages maps a batch in one call.
//  * Protection: xc_{set,get}_mem_access for view 0, xc_altp2m_*_mem_access
//    for other views.
//  * Registers: the HVM CPU save record of one vCPU; writes patch that record
//    in the full context, with the domain paused around get and set.
//  * Views: altp2m, probed (HVM_PARAM_ALTP2M), never forced. A domain without
//    altp2m works for everything else; view operations then fail with
//    Unimplemented, "altp2m not available for domain N (configure altp2m=...)".
//  * Errors follow the driver contract in core/driver.h.
//  * Events: the vm_event monitor ring and its event channel, set up the first
//    time anything needs them (a monitor, a restrictive permission, a wait).
//  * Teardown (destructor or Close) leaves the domain as it was found:
//    monitors off, permissions of view 0 restored, views destroyed, altp2m
//    switched back off if this driver switched it on, pending events answered,
//    ring and event channel released, allocated frames freed, max memory
//    restored, pauses undone.
//
// The header includes no Xen header: users compile with plain -std=c++20.
//
// Thread-safety: thread-compatible. One thread at a time; MappedPages it
// returns may be dropped on any thread, even after the driver is gone.

#ifndef VMI_DRIVERS_XEN_XEN_DRIVER_H_
#define VMI_DRIVERS_XEN_XEN_DRIVER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
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

namespace vmi::xen {
namespace xen_internal {
struct XenApi;
struct XenDriverTestPeer;
}  // namespace xen_internal

struct XenDriverOptions {
  // vm_event requests carry a subset of the registers (no DR0-3, XCR0,
  // CSTAR, SFMASK, TSC_AUX, TR, LDTR, IDTR). When set, every event's
  // registers are read in full from the HVM CPU record instead: one more
  // hypercall per event.
  bool full_registers_in_events = false;
  // Report control-register writes only when the value changes (Xen's
  // onchangeonly). Off: every write is reported.
  bool cr_writes_on_change_only = false;
};

class XenDriver {
 public:
  using Architecture = Amd64;
  using Handler = absl::FunctionRef<VmiEventResponse<Amd64>(const VmiEvent<Amd64>&)>;

  // The environment variable OpenFromEnvironment reads: a domain id or name.
  static constexpr const char kDomainEnvVar[] = "VMI_XEN_DOMAIN";

  // Attaches to HVM domain `domid`. Unavailable when this host runs no Xen
  // (or the caller lacks privileges), NotFound when the domain does not
  // exist, FailedPrecondition for a PV domain.
  static absl::StatusOr<XenDriver> Open(uint32_t domid, XenDriverOptions options = {});
  // A decimal domain id, or a domain name looked up in xenstore.
  static absl::StatusOr<XenDriver> Open(absl::string_view name_or_id,
                                        XenDriverOptions options = {});
  // Open($VMI_XEN_DOMAIN); FailedPrecondition when it is unset or empty.
  static absl::StatusOr<XenDriver> OpenFromEnvironment(XenDriverOptions options = {});

  XenDriver(XenDriver&&) noexcept;
  XenDriver& operator=(XenDriver&&) noexcept;
  XenDriver(const XenDriver&) = delete;
  XenDriver& operator=(const XenDriver&) = delete;
  ~XenDriver();

  // Tears down now (see the file comment) and reports the first failure; the
  // driver is unusable afterwards. The destructor does the same, silently.
  absl::Status Close();

  uint32_t domain_id() const;

  // ---- VmiDriver ----
  // max_gfn from xc_domain_maximum_gpfn, vCPUs from max_vcpu_id + 1.
  absl::StatusOr<VmiInfo> Info() const;

  // ---- VmiRead / VmiWrite ----
  absl::StatusOr<MappedPage> ReadPage(Gfn gfn);
  // Maps the frame writable, copies `content` at `offset` and returns the
  // (live) page after the write.
  absl::StatusOr<MappedPage> WritePage(Gfn gfn, uint64_t offset, absl::Span<const uint8_t> content);

  // Maps many frames with one xenforeignmemory_map call. A foreign map plus
  // its munmap costs several microseconds per call (an ioctl into privcmd, a
  // hypercall that walks the p2m and installs PTEs, and on munmap a TLB
  // shootdown across the host CPUs); one call for N frames pays that fixed
  // part once, leaving only the per-PTE work. The pages share one mapping,
  // released when the last of them is dropped. One entry per gfn, in order:
  // a frame Xen refused (not populated, not mappable) gets its own error.
  // An empty span gives an empty vector; a failure of the whole call an error.
  absl::StatusOr<std::vector<absl::StatusOr<MappedPage>>> MapPages(absl::Span<const Gfn> gfns);

  // ---- VmiQueryProtection / VmiSetProtection ----
  absl::StatusOr<MemoryAccess> GetMemoryAccess(Gfn gfn, View view);
  absl::StatusOr<std::pair<MemoryAccess, MemoryAccessOptions>> GetMemoryAccessWithOptions(
      Gfn gfn, View view);
  absl::Status SetMemoryAccess(Gfn gfn, View view, MemoryAccess access);
  // Options other than none cannot be expressed with Xen 4.17 (see
  // convert.h) and give an error without changing anything.
  absl::Status SetMemoryAccessWithOptions(Gfn gfn, View view, MemoryAccess access,
                                          MemoryAccessOptions options);

  // ---- VmiQueryRegisters / VmiSetRegisters ----
  absl::StatusOr<amd64::Registers> Registers(VcpuId vcpu);
  // XCR0 is not written (it is not part of the CPU record).
  absl::Status SetRegisters(VcpuId vcpu, const amd64::Registers& registers);

  // ---- VmiViewControl (altp2m) ----
  View DefaultView() const { return kDefaultView; }
  absl::StatusOr<View> CreateView(MemoryAccess default_access);
  absl::Status DestroyView(View view);
  // Switches every vCPU. Switching to view 0 without altp2m is a no-op.
  absl::Status SwitchToView(View view);
  absl::Status ChangeViewGfn(View view, Gfn old_gfn, Gfn new_gfn);
  absl::Status ResetViewGfn(View view, Gfn gfn);
  // Whether the domain was configured with altp2m (HVM_PARAM_ALTP2M).
  absl::StatusOr<bool> Altp2mAvailable();

  // ---- VmiEventControl ----
  // Unimplemented for monitors Xen 4.17 has no control for: interrupt
  // vectors other than 1 (#DB) and 3 (#BP), and I/O (Xen >= 4.18).
  absl::Status MonitorEnable(const amd64::EventMonitor& monitor);
  absl::Status MonitorDisable(const amd64::EventMonitor& monitor);
  // Requests waiting in the ring.
  size_t EventsPending();
  // Time the driver itself spent on events (conversion, ring and
  // event-channel work, excluding the handlers), summed since Open.
  absl::Duration EventProcessingOverhead();

  // Waits up to `timeout` for the event channel; DeadlineExceeded when
  // nothing arrived. Then answers every request in the ring: converts it,
  // calls `handler`, injects the interrupt for kReinjectInterrupt, converts
  // and queues the response; notifies Xen once for the batch. A request that
  // cannot be converted, or a response that cannot be expressed, is answered
  // with "continue" (the vCPU must not stay paused) and the first such
  // problem is returned after the whole batch was answered.
  template <typename H>
  requires EventHandlerFn<H, Amd64> absl::Status WaitForEvent(absl::Duration timeout, H&& handler) {
    return WaitForEventImpl(timeout, Handler([&handler](const VmiEvent<Amd64>& event) {
                              return VmiEventResponse<Amd64>(handler(event));
                            }));
  }

  // ---- VmiVmControl ----
  // Nested: every Pause needs a Resume; teardown undoes outstanding pauses.
  // Resume without this driver's Pause is FailedPrecondition and unpauses
  // nothing (it could undo another tool's pause).
  absl::Status Pause();
  absl::Status Resume();
  // Populates the frame after the current maximum GFN (xc_domain_maximum_gpfn
  // + 1), raising the domain's maximum memory by one page when it is full.
  absl::StatusOr<Gfn> AllocateGfn();
  // Populates `gfn`; AlreadyExists when it is mapped already.
  absl::Status AllocateGfnAt(Gfn gfn);
  // Returns a populated frame to Xen (decrease_reservation); NotFound for
  // one that is not populated.
  absl::Status FreeGfn(Gfn gfn);
  absl::Status InjectInterrupt(VcpuId vcpu, const amd64::Interrupt& interrupt);
  // Every monitor off, every vCPU in view 0, this driver's views destroyed,
  // view-0 permissions it changed restored. The ring stays up.
  absl::Status ResetState();

 private:
  friend struct xen_internal::XenDriverTestPeer;
  struct Impl;
  explicit XenDriver(std::unique_ptr<Impl> impl);
  // Open and Open(name) over a given table of Xen calls (tests script one).
  static absl::StatusOr<XenDriver> OpenWith(const xen_internal::XenApi* api, uint32_t domid,
                                            XenDriverOptions options);
  static absl::StatusOr<XenDriver> OpenWith(const xen_internal::XenApi* api,
                                            absl::string_view name_or_id, XenDriverOptions options);
  absl::Status WaitForEventImpl(absl::Duration timeout, Handler handler);

  std::unique_ptr<Impl> impl_;
};

static_assert(VmiFullDriver<XenDriver>);

}  // namespace vmi::xen

#endif  // VMI_DRIVERS_XEN_XEN_DRIVER_H_
