// SimulatedXen: a Xen hypervisor whose one HVM domain is a simulated x86-64
// machine (sim/Machine), behind the XenApi table. XenDriver runs over it
// unchanged, events included, so the driver conformance suite runs the Xen
// driver end to end in CI: foreign mappings are shared mappings of the
// machine's RAM (a memfd), the HVM CPU records are the machine's registers,
// altp2m views and their permissions and remaps are the machine's views,
// monitors are the machine's event sources, and the monitor ring is a real
// vm_event ring whose front end this class drives.
//
// The guest runs only while the driver waits on the event channel: the
// poll() entry runs the machine for up to Options::run_budget guest
// instructions and returns at once, either with a request on the ring (the
// vCPU stays stopped until its response arrives with the driver's
// notification) or with "no event", so a wait's timeout is simulated time
// and every run is deterministic. A paused domain does not run.
//
// Where it simplifies Xen (each documented where XenDriver relies on it):
//  * one request at a time on the ring (the machine stops at one event);
//  * EMULATE_NOWRITE is carried out as EMULATE;
//  * the CPUID, I/O and XSAVE parts of Xen's interface are absent (CPUID
//    events follow the simulator: RIP is advanced by the instruction itself;
//    XCR0 reads as 0; xc_monitor_io does not exist in Xen 4.17).
//
// Like FakeXen its table starts from AbortingXenApi(): a call it does not
// implement aborts the test naming the call.
//
// The header includes no Xen header: users compile with plain -std=c++20.
//
// Thread-safety: one SimulatedXen (or FakeXen) at a time per process; the
// XenApi entries find it through a global. Thread-compatible.

#ifndef VMI_DRIVERS_XEN_TESTING_SIMULATED_XEN_H_
#define VMI_DRIVERS_XEN_TESTING_SIMULATED_XEN_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "drivers/xen/xen_driver.h"
#include "sim/machine.h"

namespace vmi::xen::xen_internal {

struct XenApi;

class SimulatedXen {
 public:
  struct Options {
    uint32_t domid = 3;
    std::string name = "simulated";
    // Whether the domain is configured with altp2m (HVM_PARAM_ALTP2M
    // external) or without (disabled).
    bool altp2m = true;
    // Frames at the top of the machine's RAM left unpopulated, for
    // AllocateGfn (Xen's populate_physmap).
    uint64_t reserve_frames = 64;
    // Guest instructions one poll of the event channel may run.
    uint64_t run_budget = 5'000'000;
  };

  // `machine` must have been created with MachineOptions::shared_ram.
  static absl::StatusOr<std::unique_ptr<SimulatedXen>> Create(std::unique_ptr<sim::Machine> machine,
                                                              Options options);
  static absl::StatusOr<std::unique_ptr<SimulatedXen>> Create(std::unique_ptr<sim::Machine> machine) {
    return Create(std::move(machine), Options());
  }
  ~SimulatedXen();
  SimulatedXen(const SimulatedXen&) = delete;
  SimulatedXen& operator=(const SimulatedXen&) = delete;

  const XenApi* api() const;
  sim::Machine& machine();

  // XenDriver::Open over this hypervisor.
  absl::StatusOr<XenDriver> OpenDriver(XenDriverOptions driver_options = {}) const;

  // ---- Observed state ----
  int pause_count() const;
  bool ring_enabled() const;
  // Requests put on the ring, and injections through the device model.
  uint64_t requests() const;
  uint64_t injections() const;

  // The hypervisor's state and its XenApi entries (in the .cc file).
  struct State;

 private:
  explicit SimulatedXen(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace vmi::xen::xen_internal

#endif  // VMI_DRIVERS_XEN_TESTING_SIMULATED_XEN_H_
