// Helpers shared by the simulator's tests: a machine, a standard guest
// around a built-in program, a program symbol's address, the mem_access guest
// with its watched frames, and answering VMCALL exits with view switches.
//
// Thread-safety: test-only; single-threaded.

#ifndef VMI_SIM_TESTING_TEST_MACHINE_H_
#define VMI_SIM_TESTING_TEST_MACHINE_H_

#include <cstdint>
#include <initializer_list>
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

// The mem_access guest and the frames and addresses it watches.
struct MemAccessGuest {
  std::unique_ptr<Machine> m;
  StandardGuest g;
  Gfn data_gfn, code_gfn;
  uint64_t data_va = 0, code_va = 0;
};

inline MemAccessGuest NewMemAccessGuest(uint16_t vcpus = 1) {
  MemAccessGuest f;
  f.m = NewMachine(vcpus);
  f.g = Guest(*f.m, "mem_access");
  f.data_gfn = Gfn(f.g.program.SymbolPa("watched_data")->value() / 4096);
  f.code_gfn = Gfn(f.g.program.SymbolPa("watched_code")->value() / 4096);
  f.data_va = Sym(f.g, "watched_data");
  f.code_va = Sym(f.g, "watched_code");
  return f;
}

inline uint64_t ReadQ(Machine& m, uint64_t pa) {
  uint64_t v = 0;
  EXPECT_TRUE(m.ReadPhys(Pa(pa), absl::MakeSpan(reinterpret_cast<uint8_t*>(&v), 8)).ok());
  return v;
}

// Runs to one VMCALL exit per entry of `views` and answers each by moving
// the vCPU to that view.
inline void RespondToVmcalls(Machine& m, std::initializer_list<View> views) {
  for (View next : views) {
    absl::StatusOr<RunResult> r = m.Run(1'000'000);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->status, RunStatus::kExit);
    ASSERT_EQ(r->exit->kind, ExitKind::kVmcall) << r->exit->ToString();
    ASSERT_TRUE(m.Respond({EventAction::kContinue, next, std::nullopt}).ok());
  }
}

}  // namespace vmi::sim::testing

#endif  // VMI_SIM_TESTING_TEST_MACHINE_H_
