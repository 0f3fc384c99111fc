// FakeXen: a scripted Xen hypervisor behind the XenApi table, for testing
// XenDriver's control flow without Xen. Guest RAM is a memfd, so foreign
// mappings are real shared mappings (live, coherent, and leak-checkable);
// the monitor ring is a real vm_event ring page whose front end the test
// drives; the event channel is a pipe the driver really polls.
//
// It models what the driver relies on, not Xen: permissions per view, altp2m
// state and views, monitors, pause count, max memory and populated frames,
// HVM CPU records, injected events, xenstore names. Any call can be made to
// fail with a chosen errno. Its table starts from AbortingXenApi(): a call
// it does not fake aborts the test instead of reaching the real library.
//
// Thread-safety: one FakeXen at a time per process (the XenApi entries are
// plain functions that find it through a global); thread-compatible.

#ifndef VMI_DRIVERS_XEN_INTERNAL_FAKE_XEN_H_
#define VMI_DRIVERS_XEN_INTERNAL_FAKE_XEN_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "drivers/xen/internal/xen_api.h"
#include "drivers/xen/internal/xen_headers.h"
#include "drivers/xen/xen_driver.h"

namespace vmi::xen::xen_internal {

class FakeXen {
 public:
  static constexpr uint64_t kRamPages = 512;  // gfns 0..511 can exist

  struct Injected {
    int vcpu;
    uint8_t vector, type;
    uint32_t error_code;
    uint8_t insn_len;
    uint64_t extra;
  };

  FakeXen();
  ~FakeXen();
  FakeXen(const FakeXen&) = delete;
  FakeXen& operator=(const FakeXen&) = delete;

  const XenApi* api() const { return &api_; }

  // ---- The domain (set before Open) ----
  bool xen_present = true;
  uint32_t domid = 5;
  std::string name = "guest";
  bool hvm = true;
  uint32_t max_vcpu_id = 1;
  uint64_t altp2m_param = XEN_ALTP2M_disabled;
  uint64_t max_pages = 256;

  // Populated frames (initially 0..255).
  std::set<uint64_t> populated;
  // Guest RAM bytes of `gfn` (for checks and setup).
  uint8_t* Ram(uint64_t gfn);

  // ---- Observed state ----
  int pause_count = 0;
  bool altp2m_enabled = false;
  std::set<uint16_t> views;                                        // besides 0
  uint16_t active_view = 0;                                        // set by switch_to_view
  std::map<uint16_t, std::map<uint64_t, xenmem_access_t>> access;  // view -> gfn -> access
  std::map<uint16_t, std::map<uint64_t, uint64_t>> remapped;       // view -> old -> new
  std::map<std::string, bool> monitors;  // "cr0", "msr:0xc0000082", "breakpoint", ...
  bool ring_enabled = false;
  int live_mappings = 0;  // foreign-mapped pages not yet unmapped
  int notifications = 0;  // xenevtchn_notify calls
  std::vector<Injected> injected;
  std::vector<hvm_hw_cpu> cpus;    // one per vCPU
  std::vector<std::string> calls;  // every call, by name
  // Responses on the ring when the driver disabled it.
  std::vector<vm_event_response_t> responses_at_disable;

  // Make `call` fail with `err` from now on (0 to stop).
  void FailCall(const std::string& call, int err) { failures_[call] = err; }

  // ---- The monitor ring, from Xen's side ----
  // Puts `request` on the ring (filling in the version) and signals the
  // event channel. Requires the ring to be enabled.
  void PushRequest(vm_event_request_t request, bool notify = true);
  // Responses the driver put on the ring since the last call.
  std::vector<vm_event_response_t> TakeResponses();

  // Entry points of the XenApi table.
  static FakeXen* current();
  bool ShouldFail(const char* call);
  int ram_fd() const { return ram_fd_; }
  void* ring_page() const { return ring_page_; }
  void set_ring_page(void* page) { ring_page_ = page; }
  int evtchn_read_fd() const { return pipe_[0]; }
  int evtchn_write_fd() const { return pipe_[1]; }
  vm_event_front_ring_t& front() { return front_; }
  bool& front_ready() { return front_ready_; }

 private:
  XenApi api_;
  std::map<std::string, int> failures_;
  int ram_fd_ = -1;
  uint8_t* ram_ = nullptr;
  void* ring_page_ = nullptr;
  int pipe_[2] = {-1, -1};
  vm_event_front_ring_t front_{};
  bool front_ready_ = false;
};

// Reaches XenDriver's private OpenWith.
struct XenDriverTestPeer {
  static absl::StatusOr<XenDriver> Open(const FakeXen& fake, uint32_t domid,
                                        XenDriverOptions options = {});
  static absl::StatusOr<XenDriver> Open(const FakeXen& fake, absl::string_view name_or_id,
                                        XenDriverOptions options = {});
  // Over any table of Xen calls (a SimulatedXen's).
  static absl::StatusOr<XenDriver> OpenWithApi(const XenApi* api, uint32_t domid,
                                               XenDriverOptions options = {});
};

// An HVM context as xc_domain_hvm_getcontext returns it: HEADER, one CPU
// record per vCPU (instance = index), END. Shared with SimulatedXen.
std::vector<uint8_t> HvmContextBlob(absl::Span<const hvm_hw_cpu> cpus);

}  // namespace vmi::xen::xen_internal

#endif  // VMI_DRIVERS_XEN_INTERNAL_FAKE_XEN_H_
