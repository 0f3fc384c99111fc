// Guest programs and machines for the utils/ scenario tests: real x86-64
// code (scenario_programs.S) in the sim's standard long-mode guest.
//
//   remap_loop  unmaps and remaps (and moves) the page holding a function
//               through a page-table entry the test chooses, at any level;
//               a second vCPU calls the function under a guest spinlock;
//   checksum    sums its own code page while breakpoints sit on it, and
//               patches an instruction on another breakpoint page;
//   two_roots   calls one kernel function under two CR3s in turn;
//   pte_flip    writes two values into one page-table entry in turn.
//
// Thread-safety: the program table is immutable; the rest is test setup.

#ifndef VMI_UTILS_TESTING_SCENARIO_H_
#define VMI_UTILS_TESTING_SCENARIO_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/types.h"
#include "drivers/sim/sim_driver.h"
#include "sim/guest_builder.h"
#include "sim/machine.h"
#include "sim/programs.h"

namespace vmi::utils::testing {

// "remap_loop", "checksum", "two_roots", "pte_flip".
absl::StatusOr<const sim::GuestProgram*> ScenarioProgram(absl::string_view name);

// A booted scenario: the driver owns the machine; the guest (builder,
// address space, loaded program) stays usable for further setup.
struct Scenario {
  std::unique_ptr<sim::SimDriver> driver;
  // Instead of `driver` when ScenarioOptions::bare_machine: the machine, for
  // another driver to own (XenDriver over SimulatedXen).
  std::unique_ptr<sim::Machine> bare_machine;
  sim::StandardGuest guest;

  sim::Machine& machine() { return driver != nullptr ? driver->machine() : *bare_machine; }
  Pa root() const { return guest.space->root(); }
  absl::StatusOr<Va> Symbol(absl::string_view name) const { return guest.program.Symbol(name); }
  absl::StatusOr<Pa> SymbolPa(absl::string_view name) const { return guest.program.SymbolPa(name); }
  // Guest-physical quadword access (test setup and checks).
  absl::StatusOr<uint64_t> ReadQ(Pa pa);
  absl::Status WriteQ(Pa pa, uint64_t value);
  absl::Status SetRdi(VcpuId vcpu, uint64_t rdi);
};

struct ScenarioOptions {
  uint64_t ram_size = 32ull << 20;
  uint16_t vcpus = 1;
  int paging_levels = 4;
  uint64_t wait_instructions = 20'000'000;
  // RAM in a memfd (MachineOptions::shared_ram), as SimulatedXen needs.
  bool shared_ram = false;
  // Leave the machine in Scenario::bare_machine, with no SimDriver.
  bool bare_machine = false;
};

// The program in the standard guest (system tables, the program at
// sim::kProgramVa, a stack per vCPU, every vCPU at the entry).
absl::StatusOr<Scenario> BootScenario(absl::string_view program, const ScenarioOptions& options = {});

// The guest-physical address of the level-`level` entry (1 = PT) in the
// walk of `va` from `root`, by a software walk of guest memory.
absl::StatusOr<Pa> EntryAddress(sim::Machine& machine, Pa root, int levels, Va va, int level);

}  // namespace vmi::utils::testing

#endif  // VMI_UTILS_TESTING_SCENARIO_H_
