#include "sim/machine.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sim/testing/test_machine.h"
#include "sim/guest_builder.h"
#include "sim/programs.h"

namespace vmi::sim {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

using testing::Guest;
using testing::NewMachine;
using testing::Sym;


void SetReg(Machine& m, VcpuId vcpu, uint64_t amd64::Registers::*field, uint64_t value) {
  amd64::Registers r = *m.GetRegisters(vcpu);
  r.*field = value;
  ASSERT_TRUE(m.SetRegisters(vcpu, r).ok());
}

Interrupt VectorOnly(uint8_t vector) {
  Interrupt i;
  i.vector = vector;
  return i;
}

TEST(MachineTest, CreateRejectsBadOptions) {
  EXPECT_THAT(Machine::Create({.ram_size = 4095}).status().message(), HasSubstr("ram_size=0xfff"));
  EXPECT_THAT(Machine::Create({.vcpu_count = 9}).status().message(), HasSubstr("vcpu_count=9"));
  EXPECT_EQ(Machine::Create({.vcpu_count = 0}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MachineTest, PhysicalMemoryAndBadInput) {
  auto m = NewMachine();
  EXPECT_EQ(m->max_gfn(), Gfn(0xfff));
  const std::vector<uint8_t> bytes = {1, 2, 3, 4};
  ASSERT_TRUE(m->WritePhys(Pa(0x1ffe), bytes).ok());  // crosses a page
  std::vector<uint8_t> out(4);
  ASSERT_TRUE(m->ReadPhys(Pa(0x1ffe), absl::MakeSpan(out)).ok());
  EXPECT_EQ(out, bytes);
  EXPECT_EQ((*m->FramePointer(Gfn(2)))[0], 3);
  EXPECT_THAT(m->ReadPhys(Pa(0xfffffe), absl::MakeSpan(out)).message(),
              HasSubstr("read_phys(pa=0xfffffe, size=0x4)"));
  EXPECT_THAT(m->FramePointer(Gfn(0x1000)).status().message(), HasSubstr("gfn=0x1000"));
  EXPECT_THAT(m->GetRegisters(VcpuId(3)).status().message(), HasSubstr("vcpu=3"));
  EXPECT_EQ(m->SetSingleStep(VcpuId(1), true).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(m->SwitchView(View(4)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m->SetControlRegisterMonitor(8, true).code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(m->Respond({}).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(MachineTest, LoopRunsToHalt) {
  auto m = NewMachine();
  StandardGuest g = Guest(*m, "loop_call");
  absl::StatusOr<RunResult> r = m->Run(1'000'000);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, RunStatus::kAllHalted);
  amd64::Registers regs = *m->GetRegisters(VcpuId(0));
  EXPECT_EQ(regs.rbx, 100u);
  EXPECT_EQ(regs.rip, Sym(g, "done") + 1);
  EXPECT_EQ(regs.cs.selector, kKernelCs);
  EXPECT_EQ(regs.cs.access & 0x2000, 0x2000);  // L
  EXPECT_EQ(regs.efer, 0xd01u);
  EXPECT_EQ(*m->Halted(VcpuId(0)), true);
}

TEST(MachineTest, QuantumEndingAfterF4ByteIsNotHalt) {
  // A loop whose closing `jnz` is 75 f4; with a quantum of one iteration,
  // every slot ends right after a 0xf4 byte without executing HLT.
  auto m = NewMachine(1, 7);
  GuestBuilder b(m.get());
  AddressSpace* as = *b.CreateAddressSpace(4);
  ASSERT_TRUE(b.MapSystemTables(*as).ok());
  const std::vector<uint8_t> code = {
      0x48, 0xff, 0xc3,  // 1: inc rbx
      0x90,              //    nop
      0x90,              //    nop
      0x90,              //    nop
      0x48, 0xff, 0xc9,  //    dec rcx
      0x90,              //    nop
      0x75, 0xf4,        //    jnz 1b
      0xf4,              //    hlt
  };
  Pa pa = *b.AllocateFrames(1);
  ASSERT_TRUE(m->WritePhys(pa, code).ok());
  ASSERT_TRUE(as->Map(Va(kProgramVa), pa, 4096, 0).ok());
  ASSERT_TRUE(b.StartVcpu(VcpuId(0), *as, Va(kProgramVa), Va(0)).ok());
  SetReg(*m, VcpuId(0), &amd64::Registers::rcx, 50);
  // 50 iterations of 7 instructions: each slot ends right after the jnz.
  absl::StatusOr<RunResult> r = m->Run(7 * 49);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, RunStatus::kBudgetExhausted);
  EXPECT_FALSE(*m->Halted(VcpuId(0)));
  r = m->Run(1000);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, RunStatus::kAllHalted);
  EXPECT_EQ(m->GetRegisters(VcpuId(0))->rbx, 50u);
  EXPECT_EQ(m->GetRegisters(VcpuId(0))->rip, kProgramVa + 13);
}

TEST(MachineTest, BreakpointsHitAtExpectedRips) {
  auto m = NewMachine();
  StandardGuest g = Guest(*m, "loop_call");
  SetReg(*m, VcpuId(0), &amd64::Registers::rdi, 5);
  const Pa func = *g.program.SymbolPa("func");
  ASSERT_TRUE(m->WritePhys(func, std::vector<uint8_t>{0xcc}).ok());
  ASSERT_TRUE(m->SetBreakpointMonitor(true).ok());
  std::vector<std::string> trace;
  for (int i = 0; i < 10; ++i) {
    absl::StatusOr<RunResult> r = m->Run(1'000'000);
    ASSERT_TRUE(r.ok()) << r.status();
    if (r->status != RunStatus::kExit) break;
    trace.push_back(r->exit->ToString());
    EXPECT_EQ(r->exit->rip, Sym(g, "func"));
    EXPECT_EQ(r->exit->gpa, func);
    // Emulate the original instruction (inc rbx: 48 ff c3) by hand and skip it.
    amd64::GpRegisters gp = m->GetRegisters(VcpuId(0))->gp();
    gp.rbx += 1;
    gp.rip += 3;
    ASSERT_TRUE(m->Respond({EventAction::kContinue, std::nullopt, gp}).ok());
  }
  ASSERT_EQ(trace.size(), 5u);
  EXPECT_EQ(m->GetRegisters(VcpuId(0))->rbx, 5u);
}

// Two vCPUs run loop_call with a breakpoint on func; the handler emulates the
// replaced `inc rbx`. Optionally single-steps vCPU 1 for its first steps.
std::vector<std::string> BreakpointScenario(uint64_t quantum, int singlesteps,
                                            std::vector<uint64_t>* rbx_out = nullptr) {
  auto m = NewMachine(2, quantum);
  StandardGuest g = Guest(*m, "loop_call");
  for (uint16_t i = 0; i < 2; ++i) SetReg(*m, VcpuId(i), &amd64::Registers::rdi, 3 + i);
  EXPECT_TRUE(m->WritePhys(*g.program.SymbolPa("func"), std::vector<uint8_t>{0xcc}).ok());
  EXPECT_TRUE(m->SetBreakpointMonitor(true).ok());
  if (singlesteps > 0) {
    EXPECT_TRUE(m->SetSingleStep(VcpuId(1), true).ok());
  }
  std::vector<std::string> trace;
  int steps = 0;
  for (int i = 0; i < 1000; ++i) {
    absl::StatusOr<RunResult> r = m->Run(1'000'000);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok() || r->status != RunStatus::kExit) break;
    trace.push_back(r->exit->ToString());
    Response resp;
    if (r->exit->kind == ExitKind::kBreakpoint) {
      amd64::GpRegisters gp = m->GetRegisters(r->exit->vcpu)->gp();
      gp.rbx += 1;
      gp.rip += 3;
      resp.registers = gp;
    } else if (++steps == singlesteps) {
      resp.action = EventAction::kSingleStep;  // toggles it off
    }
    EXPECT_TRUE(m->Respond(resp).ok());
  }
  if (rbx_out != nullptr) {
    for (uint16_t i = 0; i < 2; ++i) rbx_out->push_back(m->GetRegisters(VcpuId(i))->rbx);
  }
  return trace;
}

TEST(MachineTest, MultiVcpuRoundRobinOrder) {
  std::vector<uint64_t> rbx;
  std::vector<std::string> trace = BreakpointScenario(1000, 0, &rbx);
  std::vector<std::string> vcpus;
  for (const std::string& t : trace) vcpus.push_back(t.substr(0, 6));
  // An exit ends the vCPU's slot: the vCPUs alternate until vCPU 0 is done.
  EXPECT_THAT(vcpus,
              ElementsAre("vcpu=0", "vcpu=1", "vcpu=0", "vcpu=1", "vcpu=0", "vcpu=1", "vcpu=1"));
  EXPECT_THAT(rbx, ElementsAre(3, 4));
}

TEST(MachineTest, SmallQuantaInterleaveDeterministically) {
  // Quantum 2: vCPU 0 gets two instructions, then vCPU 1, and so on.
  std::vector<std::string> a = BreakpointScenario(2, 0);
  std::vector<std::string> b = BreakpointScenario(2, 0);
  EXPECT_EQ(a, b);
  ASSERT_EQ(a.size(), 7u);
}

TEST(MachineTest, SameScenarioSameTrace) {
  std::vector<uint64_t> rbx_a, rbx_b;
  std::vector<std::string> a = BreakpointScenario(5, 6, &rbx_a);
  std::vector<std::string> b = BreakpointScenario(5, 6, &rbx_b);
  ASSERT_EQ(a.size(), 13u);  // 7 breakpoints + 6 single steps
  EXPECT_EQ(a, b);
  EXPECT_EQ(rbx_a, rbx_b);
}

TEST(MachineTest, SnapshotRestoreReplaysTheSameTrace) {
  auto m = NewMachine();
  StandardGuest g = Guest(*m, "loop_call");
  SetReg(*m, VcpuId(0), &amd64::Registers::rdi, 4);
  ASSERT_TRUE(m->WritePhys(*g.program.SymbolPa("func"), std::vector<uint8_t>{0xcc}).ok());
  ASSERT_TRUE(m->SetBreakpointMonitor(true).ok());
  absl::StatusOr<RunResult> first = m->Run(1'000'000);
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->status, RunStatus::kExit);
  std::unique_ptr<Snapshot> snap = *m->TakeSnapshot();
  const amd64::Registers at_snapshot = *m->GetRegisters(VcpuId(0));
  auto rest = [&] {
    std::vector<std::string> trace;
    while (true) {
      amd64::GpRegisters gp = m->GetRegisters(VcpuId(0))->gp();
      gp.rbx += 1;
      gp.rip += 3;
      EXPECT_TRUE(m->Respond({EventAction::kContinue, std::nullopt, gp}).ok());
      absl::StatusOr<RunResult> r = m->Run(1'000'000);
      EXPECT_TRUE(r.ok());
      if (!r.ok() || r->status != RunStatus::kExit) break;
      trace.push_back(r->exit->ToString());
    }
    return trace;
  };
  std::vector<std::string> a = rest();
  EXPECT_EQ(m->GetRegisters(VcpuId(0))->rbx, 4u);
  // Scribble over RAM and registers, then restore.
  ASSERT_TRUE(m->WritePhys(*g.program.SymbolPa("func"), std::vector<uint8_t>{0x90}).ok());
  ASSERT_TRUE(m->RestoreSnapshot(*snap).ok());
  EXPECT_EQ(*m->GetRegisters(VcpuId(0)), at_snapshot);
  ASSERT_TRUE(m->pending_exit().has_value());
  std::vector<std::string> b = rest();
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.size(), 3u);
  EXPECT_EQ(m->GetRegisters(VcpuId(0))->rbx, 4u);
}

TEST(MachineTest, RegistersRoundTrip) {
  auto m = NewMachine();
  StandardGuest g = Guest(*m, "loop_call");
  amd64::Registers r = *m->GetRegisters(VcpuId(0));
  EXPECT_EQ(r.ss.selector, kKernelSs);
  EXPECT_EQ(r.tr.selector, kFirstTss);
  EXPECT_EQ(r.gdtr.base, kSystemTablesVa);
  EXPECT_EQ(r.star, kStarValue);
  r.r13 = 0x1313;
  r.lstar = 0xffffffff81000000ull;
  r.fs_base = 0x7f0000001000ull;
  r.fs.base = r.fs_base;  // the same register; fs_base wins when they differ
  r.dr0 = 0x1234;
  ASSERT_TRUE(m->SetRegisters(VcpuId(0), r).ok());
  const amd64::Registers got = *m->GetRegisters(VcpuId(0));
  EXPECT_EQ(got.gp(), r.gp());
  EXPECT_EQ(got.cs, r.cs);
  EXPECT_EQ(got.ss, r.ss);
  EXPECT_EQ(got.ds, r.ds);
  EXPECT_EQ(got.es, r.es);
  EXPECT_EQ(got.fs.selector, r.fs.selector);
  EXPECT_EQ(got.tr, r.tr);
  EXPECT_EQ(got.ldtr, r.ldtr);
  EXPECT_EQ(got.gdtr, r.gdtr);
  EXPECT_EQ(got.idtr, r.idtr);
  EXPECT_EQ(got.cr0, r.cr0);
  EXPECT_EQ(got.cr3, r.cr3);
  EXPECT_EQ(got.cr4, r.cr4);
  EXPECT_EQ(got.efer, r.efer);
  EXPECT_EQ(got.lstar, r.lstar);
  EXPECT_EQ(got.fs_base, r.fs_base);
  EXPECT_EQ(got.dr0, r.dr0);
  EXPECT_EQ(got, r);
}

TEST(MachineTest, PauseStopsRunning) {
  auto m = NewMachine();
  StandardGuest g = Guest(*m, "loop_call");
  m->Pause();
  EXPECT_TRUE(m->paused());
  EXPECT_EQ(m->Run(1000)->status, RunStatus::kPaused);
  EXPECT_EQ(m->GetRegisters(VcpuId(0))->rip, g.program.entry().value());
  m->Resume();
  EXPECT_EQ(m->Run(1'000'000)->status, RunStatus::kAllHalted);
}

TEST(MachineTest, InjectionWakesHaltedVcpuAndBadInjectionFails) {
  auto m = NewMachine();
  StandardGuest g = Guest(*m, "loop_call");
  EXPECT_EQ(m->Run(1'000'000)->status, RunStatus::kAllHalted);
  EXPECT_EQ(m->InjectInterrupt(VcpuId(0), VectorOnly(14)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m->InjectInterrupt(VcpuId(2), VectorOnly(3)).code(), absl::StatusCode::kOutOfRange);
  // No handler for vector 32 in loop_call's IDT: the delivery fails cleanly.
  ASSERT_TRUE(m->InjectInterrupt(VcpuId(0), VectorOnly(32)).ok());
  absl::StatusOr<RunResult> r = m->Run(1000);
  EXPECT_THAT(r.status().message(), HasSubstr("vector=32): IDT gate not present"));
}

}  // namespace
}  // namespace vmi::sim
