// The utilities (utils/) in the sim, on real guest code:
//   BM_SimBreakpointRoundTrip      the bare round trip: a visible INT3 ->
//                                  event -> handler -> response -> resume
//                                  (same as sim_benchmark's, for a same-run
//                                  baseline)
//   BM_HiddenBreakpointRoundTrip   a hidden breakpoint (interceptor shadow
//                                  page) hit through the reactor and the
//                                  breakpoint manager, stepped over in the
//                                  default view
//   BM_PageTableMonitorCycle       one dirty-entry cycle: the guest writes a
//                                  watched PTE (write violation), the write is
//                                  single-stepped in the default view, the
//                                  entry is re-read and a PageIn/PageOut
//                                  comes out
// next to BM_Memcpy8, the physical limit of moving the bytes of one entry.
//
//   bazel run -c opt //benchmarks:utils_benchmark

#include <cstdint>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "benchmark/benchmark.h"
#include "core/vmi_core.h"
#include "benchmarks/sim_baselines.h"
#include "drivers/sim/sim_driver.h"
#include "utils/reactor/reactor.h"
#include "utils/testing/scenario.h"

namespace vmi {
namespace {

using sim::SimDriver;

using bench::BootLoop;

void BM_Memcpy8(benchmark::State& state) { bench::Memcpy8(state); }
BENCHMARK(BM_Memcpy8);

void BM_SimBreakpointRoundTrip(benchmark::State& state) { bench::SimBreakpointRoundTrip(state); }
BENCHMARK(BM_SimBreakpointRoundTrip);

void BM_HiddenBreakpointRoundTrip(benchmark::State& state) {
  SimDriver d = BootLoop();
  const Va func = *d.guest()->program.Symbol("func");
  const Pa root = d.guest()->space->root();
  VmiCore<SimDriver> core(std::move(d));
  auto reactor = utils::Reactor<SimDriver>::Create(core);
  if (!reactor.ok()) {
    state.SkipWithError(std::string(reactor.status().message()).c_str());
    return;
  }
  uint64_t hits = 0;
  (*reactor)->OnBreakpoint([&hits](const auto& hit) { hits += hit.breakpoints.size(); });
  if (!(*reactor)->Insert({.key = 1, .root = root, .va = func}).ok()) {
    state.SkipWithError("insert");
    return;
  }
  for (auto _ : state) {
    absl::Status s = (*reactor)->Run(absl::Seconds(1));
    if (!s.ok()) state.SkipWithError(std::string(s.message()).c_str());
  }
  if (hits != state.iterations()) state.SkipWithError("an event that was not a hit");
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_HiddenBreakpointRoundTrip);

void BM_PageTableMonitorCycle(benchmark::State& state) {
  absl::StatusOr<utils::testing::Scenario> s = utils::testing::BootScenario("pte_flip");
  if (!s.ok()) {
    state.SkipWithError(std::string(s.status().message()).c_str());
    return;
  }
  constexpr uint64_t kTarget = 0x0000'5000'0000'0000ull, kWindow = 0xffff'c000'0000'0000ull;
  sim::GuestBuilder& b = *s->guest.builder;
  const Pa a = Amd64::PaFromGfn(*b.AllocateFrame()), bb = Amd64::PaFromGfn(*b.AllocateFrame());
  (void)s->guest.space->Map(Va(kTarget), a, 4096, sim::page_flags::kWritable);
  const Pa root = s->root();
  const Pa pte = *utils::testing::EntryAddress(s->machine(), root, 4, Va(kTarget), 1);
  (void)s->guest.space->Map(Va(kWindow), Pa(pte.value() & ~0xfffull), 4096, sim::page_flags::kWritable);
  const Pa ctl = *s->SymbolPa("ctl");
  (void)s->WriteQ(ctl, kWindow + (pte.value() & 0xfff));
  // Mapped to a; the guest writes b, then a, then b...: every write moves it.
  (void)s->WriteQ(ctl + 8, bb.value() | 3);
  (void)s->WriteQ(ctl + 16, a.value() | 3);
  VmiCore<SimDriver> core(std::move(*s->driver));
  auto reactor = utils::Reactor<SimDriver>::Create(core);
  if (!reactor.ok()) {
    state.SkipWithError(std::string(reactor.status().message()).c_str());
    return;
  }
  if (!(*reactor)->page_tables().Monitor((*reactor)->view(), AddressContext(Va(kTarget), root)).ok()) {
    state.SkipWithError("monitor");
    return;
  }
  uint64_t updates = 0;
  (*reactor)->OnUpdate([&updates](const utils::PageTableUpdate&) { ++updates; });
  // One cycle: the write violation, then the single step that re-reads.
  for (auto _ : state) {
    absl::Status s1 = (*reactor)->Run(absl::Seconds(1));
    absl::Status s2 = (*reactor)->Run(absl::Seconds(1));
    if (!s1.ok() || !s2.ok()) state.SkipWithError("run");
  }
  // Every write moves the page: a PageOut and a PageIn per cycle.
  if (updates != 2 * state.iterations()) state.SkipWithError("a cycle without its updates");
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PageTableMonitorCycle);

}  // namespace
}  // namespace vmi
