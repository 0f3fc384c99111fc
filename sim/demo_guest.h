// The embedded guest behind `--target sim` and `vmi demo`: two address
// spaces sharing a kernel half, a kernel loop worth breaking on (`tick`), a
// page worth watching (`counter`), CR3 switches, a user page at kUserVa
// whose contents differ between the two spaces, and an IDT whose 32
// exception gates point at a halting handler.
//
// Thread-safety: thread-compatible.

#ifndef VMI_TOOLS_VMI_DEMO_GUEST_H_
#define VMI_TOOLS_VMI_DEMO_GUEST_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "core/types.h"
#include "drivers/sim/sim_driver.h"

namespace vmi::cli {

struct DemoGuest {
  static constexpr uint64_t kUserVa = 0x400000;
  sim::SimDriver driver;
  Va tick;     // the function the loop calls
  Va counter;  // the quadword tick increments
  uint64_t cr3_a = 0, cr3_b = 0;
};

absl::StatusOr<DemoGuest> BootDemoGuest();

}  // namespace vmi::cli

#endif  // VMI_TOOLS_VMI_DEMO_GUEST_H_
