// Speed of the emulated machine: guest instructions per second with no
// monitors, and the breakpoint round trip (exit + response + resume).
// A plain binary (not a test): `bazel run -c opt //sim:machine_benchmark`.
#include <chrono>
#include <cstdio>
#include <string>

#include "sim/machine.h"
#include "sim/programs.h"

namespace vmi::sim {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int Main(bool violations_only) {
  double t0, t1;
  if (violations_only) goto violations;
  for (int i = 0; i < 3; ++i) {
    double a = Now();
    auto mm = *Machine::Create({.ram_size = 16ull << 20, .vcpu_count = 1, .quantum = 1000});
    StandardGuest gg = *BuildStandardGuest(*mm, "loop_call");
    double b = Now();
    (void)mm->Run(1'000'000);
    double c = Now();
    mm.reset();
    double d = Now();
    std::printf("small machine: setup %.2f ms, run %.2f ms, destroy %.2f ms\n", (b - a) * 1e3,
                (c - b) * 1e3, (d - c) * 1e3);
  }
  t0 = Now();
  {
    auto m = *Machine::Create({.ram_size = 64ull << 20, .vcpu_count = 1, .quantum = 100000});
    t1 = Now();
    absl::StatusOr<StandardGuest> g = BuildStandardGuest(*m, "loop_call");
    if (!g.ok()) {
      std::printf("%s\n", g.status().ToString().c_str());
      return 1;
    }
    double t2 = Now();
    std::printf("create machine: %.2f ms, build guest: %.2f ms\n", (t1 - t0) * 1e3,
                (t2 - t1) * 1e3);
    // loop_call: 3 instructions per iteration in the loop + 2 in func.
    const uint64_t iterations = 20'000'000;
    amd64::GpRegisters gp = m->GetRegisters(VcpuId(0))->gp();
    gp.rdi = iterations;
    (void)m->SetGpRegisters(VcpuId(0), gp);
    t0 = Now();
    absl::StatusOr<RunResult> r = m->Run(~0ull);
    t1 = Now();
    std::printf("run to halt: %s, %.3f s, %.1f M guest instructions/s\n",
                r.ok() ? "ok" : r.status().ToString().c_str(), t1 - t0,
                5.0 * iterations / (t1 - t0) / 1e6);

    // The same in a view that restricts one frame the guest never touches:
    // its engine checks every load and store (Unicorn's slow memory path).
    {
      auto m5 = *Machine::Create({.ram_size = 64ull << 20, .vcpu_count = 1, .quantum = 100000});
      StandardGuest g5 = *BuildStandardGuest(*m5, "loop_call");
      amd64::GpRegisters gp5 = m5->GetRegisters(VcpuId(0))->gp();
      gp5.rdi = iterations / 4;
      (void)m5->SetGpRegisters(VcpuId(0), gp5);
      View restricting = *m5->CreateView(MemoryAccess::RWX());
      (void)m5->SetMemoryAccess(restricting, m5->max_gfn(), MemoryAccess::R());
      (void)m5->SwitchView(restricting);
      t0 = Now();
      absl::StatusOr<RunResult> r5 = m5->Run(~0ull);
      t1 = Now();
      std::printf("run to halt in a restricting view: %s, %.1f M guest instructions/s (checks "
                  "every access: %s)\n",
                  r5.ok() ? "ok" : r5.status().ToString().c_str(),
                  5.0 * (iterations / 4) / (t1 - t0) / 1e6,
                  *m5->ChecksEveryAccess(VcpuId(0), restricting) ? "yes" : "no");
    }

    // The same with the instruction-decoding monitors on (CR/MSR/CPUID/IO/...):
    // every instruction goes through the code hook.
    {
      auto m3 = *Machine::Create({.ram_size = 64ull << 20, .vcpu_count = 1, .quantum = 100000});
      StandardGuest g3 = *BuildStandardGuest(*m3, "loop_call");
      amd64::GpRegisters gp3 = m3->GetRegisters(VcpuId(0))->gp();
      gp3.rdi = iterations / 10;
      (void)m3->SetGpRegisters(VcpuId(0), gp3);
      (void)m3->SetControlRegisterMonitor(3, true);
      (void)m3->SetCpuidMonitor(true);
      t0 = Now();
      absl::StatusOr<RunResult> r3 = m3->Run(~0ull);
      t1 = Now();
      std::printf("run to halt with decoding monitors: %s, %.1f M guest instructions/s\n",
                  r3.ok() ? "ok" : r3.status().ToString().c_str(),
                  5.0 * (iterations / 10) / (t1 - t0) / 1e6);
    }

    // Breakpoint round trip: INT3 at func, the handler emulates `inc rbx`.
    auto m2 = *Machine::Create({.ram_size = 64ull << 20, .vcpu_count = 1, .quantum = 100000});
    StandardGuest g2 = *BuildStandardGuest(*m2, "loop_call");
    const int hits = 200000;
    gp = m2->GetRegisters(VcpuId(0))->gp();
    gp.rdi = hits;
    (void)m2->SetGpRegisters(VcpuId(0), gp);
    (void)m2->WritePhys(*g2.program.SymbolPa("func"), std::vector<uint8_t>{0xcc});
    (void)m2->SetBreakpointMonitor(true);
    int seen = 0;
    t0 = Now();
    while (true) {
      absl::StatusOr<RunResult> rr = m2->Run(~0ull);
      if (!rr.ok() || rr->status != RunStatus::kExit) break;
      ++seen;
      amd64::GpRegisters regs = m2->GetRegisters(VcpuId(0))->gp();
      regs.rbx += 1;
      regs.rip += 3;
      (void)m2->Respond({EventAction::kContinue, std::nullopt, regs});
    }
    t1 = Now();
    std::printf("breakpoint round trip: %d hits, %.2f us each (incl. register get/set)\n", seen,
                (t1 - t0) / seen * 1e6);
  }
violations:
  // Memory-violation round trip: the stack frame is read-only in view 1, so
  // every CALL faults; the response steps it in the host view (fast
  // single-step: two view switches per event).
  {
    auto m4 = *Machine::Create({.ram_size = 64ull << 20, .vcpu_count = 1, .quantum = 100000});
    StandardGuest g4 = *BuildStandardGuest(*m4, "loop_call");
    const int calls = 20000;
    amd64::GpRegisters gp4 = m4->GetRegisters(VcpuId(0))->gp();
    gp4.rdi = calls;
    (void)m4->SetGpRegisters(VcpuId(0), gp4);
    const Gfn stack(g4.space->Translate(Va(gp4.rsp - 8))->value() / 4096);
    View v = *m4->CreateView(MemoryAccess::RWX());
    (void)m4->SetMemoryAccess(v, stack, MemoryAccess::RX());
    (void)m4->SwitchView(v);
    int violations = 0;
    t0 = Now();
    while (true) {
      absl::StatusOr<RunResult> rr = m4->Run(~0ull);
      if (!rr.ok() || rr->status != RunStatus::kExit) break;
      ++violations;
      (void)m4->Respond({EventAction::kFastSingleStep, kDefaultView, std::nullopt});
    }
    t1 = Now();
    std::printf("write violation + fast single-step round trip: %d events, %.2f us each\n",
                violations, (t1 - t0) / violations * 1e6);
  }
  return 0;
}

}  // namespace
}  // namespace vmi::sim

int main(int argc, char** argv) {
  return vmi::sim::Main(argc > 1 && std::string(argv[1]) == "violations");
}
