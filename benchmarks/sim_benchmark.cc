// The simulator as a VMI target, through SimDriver (and VmiCore where a
// cache is involved):
//   BM_SimBreakpointRoundTrip     INT3 -> event -> handler -> response -> resume
//   BM_SimEptViolationSinglestep  write to a protected page -> event, switch to a
//                                 writable view + single-step -> step event, back
//   BM_SimGuestExecution          guest instructions per second, no monitors
//   BM_SimPageCacheMiss           VmiCore ReadU64 whose page always misses the cache
// next to BM_Memcpy8 / BM_Memcpy4K, the physical limit of moving the same bytes.
//
//   bazel run --config=opt //benchmarks:sim_benchmark

#include <cstdint>
#include <cstring>
#include <vector>

#include "absl/time/time.h"
#include "benchmark/benchmark.h"
#include "core/vmi_core.h"
#include "benchmarks/sim_baselines.h"
#include "drivers/sim/sim_driver.h"
#include "sim/demo_guest.h"

namespace vmi {
namespace {

using sim::SimDriver;

using bench::BootLoop;

void BM_Memcpy8(benchmark::State& state) { bench::Memcpy8(state); }
BENCHMARK(BM_Memcpy8);

void BM_Memcpy4K(benchmark::State& state) {
  std::vector<uint8_t> src(4096, 1), dst(4096);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), 4096);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * 4096);
}
BENCHMARK(BM_Memcpy4K);

void BM_SimBreakpointRoundTrip(benchmark::State& state) { bench::SimBreakpointRoundTrip(state); }
BENCHMARK(BM_SimBreakpointRoundTrip);

void BM_SimEptViolationSinglestep(benchmark::State& state) {
  absl::StatusOr<sim::DemoGuest> guest = sim::BuildDemoGuest();
  absl::StatusOr<SimDriver> d =
      guest.ok() ? SimDriver::Create(std::move(guest->machine)) : absl::StatusOr<SimDriver>(guest.status());
  if (!d.ok()) {
    state.SkipWithError("boot");
    return;
  }
  const sim::DemoLayout* g = &guest->layout;
  VmiCore<SimDriver> core(*std::move(d));
  const Pa counter = *core.Translate(AddressContext(g->counter, Pa(g->cr3_a)));
  const Gfn gfn(counter.value() >> 12);
  const View writable = *core.CreateView(MemoryAccess::RWX());
  (void)core.SetMemoryAccess(gfn, kDefaultView, MemoryAccess::RX());
  (void)core.MonitorEnable(amd64::MonitorSingleStep{});
  // Violation: step the write in the writable view; step: back to view 0.
  auto handler = [writable](const VmiEvent<Amd64>& e) {
    if (std::holds_alternative<amd64::MemoryAccessEvent>(e.reason)) {
      return VmiEventResponse<Amd64>::ToggleSingleStep().WithView(writable);
    }
    return VmiEventResponse<Amd64>::ToggleSingleStep().WithView(kDefaultView);
  };
  for (auto _ : state) {
    for (int i = 0; i < 2; ++i) {
      absl::Status s = core.WaitForEvent(absl::Seconds(1), handler);
      if (!s.ok()) state.SkipWithError(std::string(s.message()).c_str());
    }
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["guest_counter"] = static_cast<double>(
      *core.ReadU64(AccessContext::Virtual(g->counter, Pa(g->cr3_a))));
}
BENCHMARK(BM_SimEptViolationSinglestep);

void BM_SimGuestExecution(benchmark::State& state) {
  SimDriver d = BootLoop();
  d.options().wait_instructions = 10'000'000;
  uint64_t instructions = 0;
  for (auto _ : state) {
    const uint64_t before = d.machine().instructions_scheduled();
    absl::Status s = d.WaitForEvent(absl::Seconds(60), [](const VmiEvent<Amd64>&) {
      return VmiEventResponse<Amd64>::Continue();
    });
    benchmark::DoNotOptimize(s);
    instructions += d.machine().instructions_scheduled() - before;
  }
  state.SetItemsProcessed(instructions);
}
BENCHMARK(BM_SimGuestExecution)->Unit(benchmark::kMillisecond);

void BM_SimPageCacheMiss(benchmark::State& state) {
  sim::MachineOptions m;
  m.ram_size = 128 << 20;
  VmiCoreOptions options;
  options.page_cache_capacity = 64;
  VmiCore<SimDriver> core(*SimDriver::Boot("loop_call", m), options);
  const uint64_t frames = core.Info()->max_gfn.value() + 1;
  uint64_t g = 0;
  for (auto _ : state) {
    auto v = core.ReadU64(AccessContext::Physical(Pa(g << 12)));
    benchmark::DoNotOptimize(v);
    g = (g + 1) % frames;
  }
  state.counters["miss_rate"] = 1.0 - core.page_cache().stats().HitRate();
}
BENCHMARK(BM_SimPageCacheMiss);

}  // namespace
}  // namespace vmi
