// Helpers shared by the simulator's tests: a machine, a standard guest
// around a built-in program, and a program symbol's address.
//
// Thread-safety: test-only; single-threaded.

#ifndef VMI_SIM_TESTING_TEST_MACHINE_H_
#define VMI_SIM_TESTING_TEST_MACHINE_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "sim/machine.h"
#include "sim/programs.h"

namespace vmi::sim::testing {

inline std::unique_ptr<Machine> NewMachine(uint16_t vcpus = 1, uint64_t quantum = 1000) {
  absl::StatusOr<std::unique_ptr<Machine>> m =
      Machine::Create({.ram_size = 16ull << 20, .vcpu_count = vcpus, .quantum = quantum});
  EXPECT_TRUE(m.ok()) << m.status();
  return std::move(*m);
}

inline StandardGuest Guest(Machine& m, const char* program, StandardGuestOptions options = {}) {
  absl::StatusOr<StandardGuest> g = BuildStandardGuest(m, program, options);
  EXPECT_TRUE(g.ok()) << g.status();
  return std::move(*g);
}

inline uint64_t Sym(const StandardGuest& g, const char* name) {
  absl::StatusOr<Va> va = g.program.Symbol(name);
  EXPECT_TRUE(va.ok()) << va.status();
  return va.ok() ? va->value() : 0;
}

}  // namespace vmi::sim::testing

#endif  // VMI_SIM_TESTING_TEST_MACHINE_H_
