// What sim_benchmark and utils_benchmark both run, so that each reports its
// figures next to baselines from the same run: the looping guest, the
// memcpy limit and the bare INT3 round trip.
//
// Thread-safety: single-threaded (benchmark bodies).

#ifndef VMI_BENCHMARKS_SIM_BASELINES_H_
#define VMI_BENCHMARKS_SIM_BASELINES_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "absl/types/span.h"
#include "benchmark/benchmark.h"
#include "drivers/sim/sim_driver.h"

namespace vmi::bench {

// loop_call in a 16 MiB machine, calling `func` (practically) forever.
inline sim::SimDriver BootLoop() {
  sim::MachineOptions m;
  m.ram_size = 16 << 20;
  sim::SimDriverOptions o;
  o.wait_instructions = 50'000'000;
  sim::SimDriver d = *sim::SimDriver::Boot("loop_call", m, {}, o);
  amd64::Registers regs = *d.Registers(VcpuId(0));
  regs.rdi = uint64_t{1} << 62;
  (void)d.SetRegisters(VcpuId(0), regs);
  return d;
}

// The physical limit of moving one 8-byte entry: a chain of dependent
// 8-byte loads within one page (each address comes from the value before,
// so the load cannot be dropped).
inline void Memcpy8(benchmark::State& state) {
  std::vector<uint8_t> src(4096, 1);
  uint64_t v = 0;
  for (auto _ : state) {
    std::memcpy(&v, src.data() + (v & 0xff8), 8);
    benchmark::DoNotOptimize(v);
  }
}

// A visible INT3 -> event -> handler -> response -> resume.
inline void SimBreakpointRoundTrip(benchmark::State& state) {
  sim::SimDriver d = BootLoop();
  const Va func = *d.guest()->program.Symbol("func");
  const Pa pa = *d.guest()->space->Translate(func);
  const uint8_t int3 = 0xcc;
  (void)d.WritePage(Gfn(pa.value() >> 12), pa.value() & 0xfff, absl::MakeConstSpan(&int3, 1));
  (void)d.MonitorEnable(amd64::MonitorInterrupt{3});
  // func is `48 ff c3 c3` (inc %rbx; ret); the INT3 replaces the REX byte, so
  // resuming one byte later executes `inc %ebx; ret`: the breakpoint stays armed.
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

}  // namespace vmi::bench

#endif  // VMI_BENCHMARKS_SIM_BASELINES_H_
