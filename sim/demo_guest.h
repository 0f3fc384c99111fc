// The embedded guest behind `vmi --target sim` and `vmi demo`, also used by
// tests and benchmarks: two address spaces sharing a kernel half, a kernel
// loop worth breaking on (`tick`), a page worth watching (`counter`), CR3
// switches, a user page at kUserVa whose contents differ between the two
// spaces, and an IDT whose 32 exception gates point at a halting handler.
//
// Thread-safety: thread-compatible.

#ifndef VMI_SIM_DEMO_GUEST_H_
#define VMI_SIM_DEMO_GUEST_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "core/types.h"
#include "sim/machine.h"

namespace vmi::sim {

// Where things are in the demo guest.
struct DemoLayout {
  static constexpr uint64_t kUserVa = 0x400000;
  Va tick;     // the function the loop calls
  Va counter;  // the quadword tick increments
  uint64_t cr3_a = 0, cr3_b = 0;
};

struct DemoGuest {
  std::unique_ptr<Machine> machine;
  DemoLayout layout;
};

// A fresh machine (32 MiB, one vCPU) running the demo guest.
absl::StatusOr<DemoGuest> BuildDemoGuest();

}  // namespace vmi::sim

#endif  // VMI_SIM_DEMO_GUEST_H_
