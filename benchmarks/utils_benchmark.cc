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
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "benchmark/benchmark.h"
#include "core/vmi_core.h"
#include "drivers/sim/sim_driver.h"
#include "utils/reactor/reactor.h"
#include "utils/testing/scenario.h"

namespace vmi {
namespace {

using sim::SimDriver;

SimDriver BootLoop() {
  sim::MachineOptions m;
  m.ram_size = 16 << 20;
  sim::SimDriverOptions o;
  o.wait_instructions = 50'000'000;
  SimDriver d = *SimDriver::Boot("loop_call", m, {}, o);
  amd64::Registers regs = *d.Registers(VcpuId(0));
  regs.rdi = uint64_t{1} << 62;  // loop (practically) forever
  (void)d.SetRegisters(VcpuId(0), regs);
  return d;
}

void BM_Memcpy8(benchmark::State& state) {
  std::vector<uint8_t> src(4096, 1);
  uint64_t v = 0;
  for (auto _ : state) {
    std::memcpy(&v, src.data() + (v & 0xff8), 8);
    benchmark::DoNotOptimize(v);
  }
}
BENCHMARK(BM_Memcpy8);

void BM_SimBreakpointRoundTrip(benchmark::State& state) {
  SimDriver d = BootLoop();
  const Va func = *d.guest()->program.Symbol("func");
  const Pa pa = *d.guest()->space->Translate(func);
  const uint8_t int3 = 0xcc;
  (void)d.WritePage(Gfn(pa.value() >> 12), pa.value() & 0xfff, absl::MakeConstSpan(&int3, 1));
  (void)d.MonitorEnable(amd64::MonitorInterrupt{3});
  // func is `48 ff c3 c3`; the INT3 replaces the REX byte, so resuming one
  // byte later runs `inc %ebx; ret` and the breakpoint stays armed.
  auto handler = [](const VmiEvent<Amd64>& e) {
    amd64::GpRegisters gp = e.registers.gp();
    gp.rip += 1;
    return VmiEventResponse<Amd64>::Continue().WithRegisters(gp);
  };
  for (auto _ : state) {
    absl::Status s = d.WaitForEvent(absl::Seconds(1), handler);
    if (!s.ok()) state.SkipWithError(std::string(s.message()).c_str());
  }
  state.SetItemsProcessed(state.iterations());
}
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
