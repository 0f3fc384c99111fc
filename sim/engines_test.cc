// One Unicorn engine per (vCPU, view): state left after errors, the special
// steps (emulate, fast singlestep), execute permission and translated code,
// code coherence across engines, snapshots across closed engines.
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sim/machine.h"
#include "sim/programs.h"
#include "sim/testing/test_machine.h"

namespace vmi::sim {
namespace {

using Fixture = testing::MemAccessGuest;
using testing::ReadQ;
using testing::RespondToVmcalls;

Fixture MakeFixture(uint16_t vcpus = 1) { return testing::NewMemAccessGuest(vcpus); }
uint64_t Sym(const Fixture& f, const char* name) { return testing::Sym(f.g, name); }
absl::StatusOr<RunResult> RunGuest(Machine& m) { return m.Run(1'000'000); }

// Machine code placed at `base`, written byte by byte.
struct Code {
  explicit Code(uint64_t base) : base(base) {}
  void Emit(std::initializer_list<uint8_t> b) { bytes.insert(bytes.end(), b); }
  void Call(uint64_t target) {  // call rel32
    const int32_t rel = static_cast<int32_t>(target - (base + bytes.size() + 5));
    bytes.push_back(0xe8);
    for (int i = 0; i < 4; ++i) bytes.push_back(static_cast<uint8_t>(rel >> (8 * i)));
  }
  uint64_t base;
  std::vector<uint8_t> bytes;
};
constexpr std::initializer_list<uint8_t> kVmcall = {0x0f, 0x01, 0xc1};

// An emulate step whose single instruction fails (here: a #PF that cannot be
// delivered) must not leave the view's restriction lifted on the engine.
TEST(EnginesTest, FailedEmulateStepKeepsViewEnforced) {
  Fixture f = MakeFixture();
  Machine& m = *f.m;
  View v = *m.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(m.SetMemoryAccess(v, f.data_gfn, MemoryAccess::RX()).ok());
  ASSERT_TRUE(m.SwitchView(v).ok());
  absl::StatusOr<RunResult> r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  ASSERT_EQ(r->exit->rip, Sym(f, "write_insn"));
  const amd64::GpRegisters good = m.GetRegisters(VcpuId(0))->gp();
  amd64::GpRegisters bad = good;
  bad.rsi = 0x00007ff000000000ull;  // unmapped: the write raises #PF
  bad.rsp = 0x00007ff000001000ull;  // unmapped: the #PF cannot be delivered
  ASSERT_TRUE(m.Respond({EventAction::kEmulate, std::nullopt, bad}).ok());
  r = RunGuest(m);
  ASSERT_FALSE(r.ok()) << "the emulated instruction was expected to fail";
  // The host repairs the registers and runs again: the write must fault again.
  ASSERT_TRUE(m.SetGpRegisters(VcpuId(0), good).ok());
  r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, RunStatus::kExit) << "view " << v << " no longer enforces RX on the frame";
  EXPECT_EQ(ReadQ(m, f.data_gfn.value() * 4096 + 8), 0u);
}

// An execute violation answered with emulate runs one instruction of the
// frame with execute allowed; the code translated for it must not let a later
// fetch from the frame run without an execute violation. (Also before the
// change: the emulate step adds and removes execute on the same engine.)
TEST(EnginesTest, EmulatedFetchDoesNotLeaveExecutableTranslation) {
  Fixture f = MakeFixture();
  Machine& m = *f.m;
  View v = *m.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(m.SetMemoryAccess(v, f.code_gfn, MemoryAccess::RW()).ok());
  ASSERT_TRUE(m.SwitchView(v).ok());
  absl::StatusOr<RunResult> r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  ASSERT_EQ(r->exit->rip, f.code_va);
  ASSERT_EQ(r->exit->access, MemoryAccess::X());
  ASSERT_TRUE(m.Respond({EventAction::kEmulate, std::nullopt, std::nullopt}).ok());
  // The next instruction (RET) faults too; answer by going back to the
  // function's first instruction, which must fault again.
  r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  ASSERT_EQ(r->exit->rip, f.code_va + 5) << r->exit->ToString();
  amd64::GpRegisters gp = m.GetRegisters(VcpuId(0))->gp();
  gp.rip = f.code_va;
  ASSERT_TRUE(m.Respond({EventAction::kContinue, std::nullopt, gp}).ok());
  r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit) << "no execute violation at the emulated instruction";
  EXPECT_EQ(r->exit->rip, f.code_va);
  EXPECT_EQ(r->exit->access, MemoryAccess::X());
}

// Execute taken away from a frame the engine already ran code from: the next
// fetch from it must raise an execute violation. Unicorn checks execute only
// when it translates; a protect-only change (the frame already has its own
// entry) keeps the translations, so the guest runs the frame again unchecked.
// (Also before the change; the emulate test above is the same mechanism.)
// `presplit`: the frame already has its own entry (RX) in the engine.
void ExecuteRemovedAfterCodeRan(bool presplit) {
  Fixture f = MakeFixture();
  Machine& m = *f.m;
  View v = *m.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(m.SetMemoryAccess(v, f.data_gfn, MemoryAccess::RX()).ok());
  if (presplit) {
    ASSERT_TRUE(m.SetMemoryAccess(v, f.code_gfn, MemoryAccess::RX()).ok());
  }
  ASSERT_TRUE(m.SwitchView(v).ok());
  absl::StatusOr<RunResult> r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  ASSERT_EQ(r->exit->rip, Sym(f, "write_insn"));
  ASSERT_TRUE(m.Respond({EventAction::kEmulate, std::nullopt, std::nullopt}).ok());
  r = RunGuest(m);  // runs watched_code, faults on the store after the call
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  ASSERT_EQ(r->exit->rip, Sym(f, "call_insn") + 5);
  ASSERT_TRUE(m.SetMemoryAccess(v, f.code_gfn, MemoryAccess::RW()).ok());
  amd64::GpRegisters gp = m.GetRegisters(VcpuId(0))->gp();
  gp.rip = Sym(f, "call_insn");
  ASSERT_TRUE(m.Respond({EventAction::kContinue, std::nullopt, gp}).ok());
  r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  EXPECT_EQ(r->exit->rip, f.code_va) << r->exit->ToString();
  EXPECT_EQ(r->exit->access, MemoryAccess::X());
}

TEST(EnginesTest, ExecuteRemovedAfterCodeRan) { ExecuteRemovedAfterCodeRan(false); }
TEST(EnginesTest, ExecuteRemovedAfterCodeRanPresplit) { ExecuteRemovedAfterCodeRan(true); }

// The same with a fast singlestep into a view that may execute the frame: the
// step runs on that view's engine, so nothing it translated is reachable from
// the restricting view afterwards.
TEST(EnginesTest, FastSingleStepFetchDoesNotLeaveExecutableTranslation) {
  Fixture f = MakeFixture();
  Machine& m = *f.m;
  View v = *m.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(m.SetMemoryAccess(v, f.code_gfn, MemoryAccess::RW()).ok());
  ASSERT_TRUE(m.SwitchView(v).ok());
  absl::StatusOr<RunResult> r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  ASSERT_EQ(r->exit->rip, f.code_va);
  ASSERT_TRUE(m.Respond({EventAction::kFastSingleStep, kDefaultView, std::nullopt}).ok());
  r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  ASSERT_EQ(r->exit->rip, f.code_va + 5) << r->exit->ToString();
  amd64::GpRegisters gp = m.GetRegisters(VcpuId(0))->gp();
  gp.rip = f.code_va;
  ASSERT_TRUE(m.Respond({EventAction::kContinue, std::nullopt, gp}).ok());
  r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  EXPECT_EQ(r->exit->rip, f.code_va);
  EXPECT_EQ(r->exit->access, MemoryAccess::X());
}

// A snapshot taken while the vCPU's state still sits in the engine of the
// view it is leaving, restored after that view was destroyed (its engine
// closed) and re-created by the restore.
TEST(EnginesTest, SnapshotAcrossClosedEngine) {
  Fixture f = MakeFixture();
  Machine& m = *f.m;
  View v = *m.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(m.SetMemoryAccess(v, f.data_gfn, MemoryAccess::RX()).ok());
  ASSERT_TRUE(m.SwitchView(v).ok());
  absl::StatusOr<RunResult> r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  ASSERT_EQ(r->exit->rip, Sym(f, "write_insn"));
  std::unique_ptr<Snapshot> snap = *m.TakeSnapshot();  // exit pending, in view v
  ASSERT_TRUE(m.Respond({EventAction::kContinue, kDefaultView, std::nullopt}).ok());
  r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kAllHalted);
  ASSERT_TRUE(m.DestroyView(v).ok());
  ASSERT_EQ(ReadQ(m, f.data_gfn.value() * 4096 + 8), 0x1112u);
  for (int round = 0; round < 2; ++round) {
    ASSERT_TRUE(m.RestoreSnapshot(*snap).ok());
    ASSERT_TRUE(m.views().Exists(v));
    EXPECT_EQ(ReadQ(m, f.data_gfn.value() * 4096 + 8), 0u);
    EXPECT_EQ(m.GetRegisters(VcpuId(0))->rip, Sym(f, "write_insn"));
    // Continue in v: the write faults again.
    ASSERT_TRUE(m.Respond({}).ok());
    r = RunGuest(m);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->status, RunStatus::kExit) << "round " << round;
    EXPECT_EQ(r->exit->rip, Sym(f, "write_insn"));
    EXPECT_EQ(r->exit->view, v);
    ASSERT_TRUE(m.Respond({EventAction::kContinue, kDefaultView, std::nullopt}).ok());
    r = RunGuest(m);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->status, RunStatus::kAllHalted);
    EXPECT_EQ(ReadQ(m, f.data_gfn.value() * 4096 + 8), 0x1112u);
    EXPECT_EQ(ReadQ(m, f.data_gfn.value() * 4096 + 16), 0x1234u);
  }
}

// Code-frame recording keys its once-per-quantum cache by virtual page. A
// guest that switches CR3 within a quantum and calls code at the same virtual
// address in both spaces (as two processes with the same layout do) runs a
// second frame the engine never records. Another engine then rewrites that
// frame, and the first engine runs its stale translation.
//   space A: code_va -> F1 "mov $0x1111, %eax; ret"
//   space B: code_va -> F2 "mov $0x2222, %eax; ret"
// The main code (program page, same frame in both spaces):
//   vmcall                 ; in view W: answer -> default view
//   call code_va ; r12d = eax        (A)
//   cr3 = B ; call code_va ; r13d = eax ; cr3 = A
//   vmcall                 ; answer -> W
//   cr3 = B ; movl $0x3333, code_va+1 ; cr3 = A    (rewrites F2 in view W)
//   vmcall                 ; answer -> default view
//   cr3 = B ; call code_va ; r14d = eax ; cr3 = A ; hlt
void RunCr3Aliasing(bool code_hook) {
  Fixture f = MakeFixture();
  Machine& m = *f.m;
  GuestBuilder& b = *f.g.builder;
  AddressSpace& a = *f.g.space;
  const uint64_t prog_va = f.g.program.base.value();
  const uint64_t prog_pa = f.g.program.pa.value();
  const uint64_t x = f.code_va;
  absl::StatusOr<Gfn> f2 = b.AllocateFrame();
  ASSERT_TRUE(f2.ok()) << f2.status();
  absl::StatusOr<AddressSpace*> bs = b.CreateAddressSpace(4);
  ASSERT_TRUE(bs.ok()) << bs.status();
  ASSERT_TRUE((*bs)->Map(Va(prog_va), Pa(prog_pa), 4096, page_flags::kWritable).ok());
  ASSERT_TRUE((*bs)->Map(Va(x), Pa(f2->value() * 4096), 4096, page_flags::kWritable).ok());
  for (int i = 1; i <= 4; ++i) {
    const uint64_t va = kStackTopVa - i * 4096ull;
    absl::StatusOr<Pa> pa = a.Translate(Va(va));
    ASSERT_TRUE(pa.ok()) << pa.status();
    ASSERT_TRUE((*bs)->Map(Va(va), *pa, 4096, page_flags::kWritable).ok());
  }
  const uint8_t f1_code[] = {0xb8, 0x11, 0x11, 0x00, 0x00, 0xc3};
  const uint8_t f2_code[] = {0xb8, 0x22, 0x22, 0x00, 0x00, 0xc3};
  ASSERT_TRUE(m.WritePhys(Pa(f.code_gfn.value() * 4096), absl::MakeConstSpan(f1_code)).ok());
  ASSERT_TRUE(m.WritePhys(Pa(f2->value() * 4096), absl::MakeConstSpan(f2_code)).ok());
  Code code(prog_va);
  const std::initializer_list<uint8_t> to_b = {0x0f, 0x22, 0xde};  // mov %rsi, %cr3
  const std::initializer_list<uint8_t> to_a = {0x0f, 0x22, 0xdf};  // mov %rdi, %cr3
  code.Emit(kVmcall);
  code.Call(x);
  code.Emit({0x41, 0x89, 0xc4});  // mov %eax, %r12d
  code.Emit(to_b);
  code.Call(x);
  code.Emit({0x41, 0x89, 0xc5});  // mov %eax, %r13d
  code.Emit(to_a);
  code.Emit(kVmcall);
  code.Emit(to_b);
  code.Emit({0xc7, 0x03, 0x33, 0x33, 0x00, 0x00});  // movl $0x3333, (%rbx)
  code.Emit(to_a);
  code.Emit(kVmcall);
  code.Emit(to_b);
  code.Call(x);
  code.Emit({0x41, 0x89, 0xc6});  // mov %eax, %r14d
  code.Emit(to_a);
  code.Emit({0xf4, 0xeb, 0xfd});  // hlt; jmp hlt
  ASSERT_TRUE(m.WritePhys(Pa(prog_pa), absl::MakeConstSpan(code.bytes)).ok());
  amd64::GpRegisters gp = m.GetRegisters(VcpuId(0))->gp();
  gp.rip = prog_va;
  gp.rsi = (*bs)->cr3();
  gp.rdi = a.cr3();
  gp.rbx = x + 1;
  ASSERT_TRUE(m.SetGpRegisters(VcpuId(0), gp).ok());
  ASSERT_TRUE(m.SetVmcallMonitor(true).ok());
  if (code_hook) {
    ASSERT_TRUE(m.SetCpuidMonitor(true).ok());  // installs the code hook
  }
  View w = *m.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(m.SwitchView(w).ok());
  ASSERT_NO_FATAL_FAILURE(RespondToVmcalls(m, {kDefaultView, w, kDefaultView}));
  absl::StatusOr<RunResult> r = m.Run(1'000'000);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kAllHalted);
  const amd64::Registers regs = *m.GetRegisters(VcpuId(0));
  EXPECT_EQ(regs.r12, 0x1111u);
  EXPECT_EQ(regs.r13, 0x2222u);
  EXPECT_EQ(regs.r14, 0x3333u) << "stale translation of a frame written in another view";
}

TEST(EnginesTest, CodeWrittenInOtherViewAfterCr3AliasWithCodeHook) { RunCr3Aliasing(true); }
TEST(EnginesTest, CodeWrittenInOtherViewAfterCr3Alias) { RunCr3Aliasing(false); }

// The recorded copy of a code frame is its content when first seen. An engine
// that rewrote the frame itself (and so retranslated it) keeps that first
// copy; if another engine then writes the original content back, the
// comparison finds no change and the engine runs its translation of the
// intermediate content.
//   code_va (F): "mov $0x1111, %eax; ret"
//   vmcall                         ; in view W: answer -> default view
//   call code_va ; r12d = eax      ; 0x1111, F recorded
//   movl $0x2222, code_va+1 ; call code_va ; r13d = eax   ; 0x2222
//   vmcall                         ; answer -> W
//   movl $0x1111, code_va+1        ; written back in view W
//   vmcall                         ; answer -> default view
//   call code_va ; r14d = eax ; hlt                       ; must be 0x1111
TEST(EnginesTest, CodeRestoredByOtherEngineAfterSelfModify) {
  Fixture f = MakeFixture();
  Machine& m = *f.m;
  const uint64_t prog_va = f.g.program.base.value();
  const uint64_t prog_pa = f.g.program.pa.value();
  const uint64_t x = f.code_va;
  const uint8_t f_code[] = {0xb8, 0x11, 0x11, 0x00, 0x00, 0xc3};
  ASSERT_TRUE(m.WritePhys(Pa(f.code_gfn.value() * 4096), absl::MakeConstSpan(f_code)).ok());
  Code code(prog_va);
  code.Emit(kVmcall);
  code.Call(x);
  code.Emit({0x41, 0x89, 0xc4});                    // mov %eax, %r12d
  code.Emit({0xc7, 0x03, 0x22, 0x22, 0x00, 0x00});  // movl $0x2222, (%rbx)
  code.Call(x);
  code.Emit({0x41, 0x89, 0xc5});                    // mov %eax, %r13d
  code.Emit(kVmcall);
  code.Emit({0xc7, 0x03, 0x11, 0x11, 0x00, 0x00});  // movl $0x1111, (%rbx)
  code.Emit(kVmcall);
  code.Call(x);
  code.Emit({0x41, 0x89, 0xc6});  // mov %eax, %r14d
  code.Emit({0xf4, 0xeb, 0xfd});  // hlt; jmp hlt
  ASSERT_TRUE(m.WritePhys(Pa(prog_pa), absl::MakeConstSpan(code.bytes)).ok());
  amd64::GpRegisters gp = m.GetRegisters(VcpuId(0))->gp();
  gp.rip = prog_va;
  gp.rbx = x + 1;
  ASSERT_TRUE(m.SetGpRegisters(VcpuId(0), gp).ok());
  ASSERT_TRUE(m.SetVmcallMonitor(true).ok());
  View w = *m.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(m.SwitchView(w).ok());
  ASSERT_NO_FATAL_FAILURE(RespondToVmcalls(m, {kDefaultView, w, kDefaultView}));
  absl::StatusOr<RunResult> r = m.Run(1'000'000);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kAllHalted);
  const amd64::Registers regs = *m.GetRegisters(VcpuId(0));
  EXPECT_EQ(regs.r12, 0x1111u);
  EXPECT_EQ(regs.r13, 0x2222u);
  EXPECT_EQ(regs.r14, 0x1111u) << "ran the translation of the intermediate code";
}

// A view that a pending fast singlestep will step in cannot be destroyed;
// cancelling the step releases it, and the vCPU resumes in its own view.
TEST(EnginesTest, FastSingleStepTargetViewIsKeptUntilCancelled) {
  Fixture f = MakeFixture();
  Machine& m = *f.m;
  View v = *m.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(m.SetMemoryAccess(v, f.data_gfn, MemoryAccess::RX()).ok());
  View w = *m.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(m.SwitchView(v).ok());
  absl::StatusOr<RunResult> r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  ASSERT_TRUE(m.Respond({EventAction::kFastSingleStep, w, std::nullopt}).ok());
  absl::Status destroyed = m.DestroyView(w);
  EXPECT_EQ(destroyed.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(destroyed.message(), ::testing::HasSubstr("fast singlestep"));
  EXPECT_TRUE(m.views().Exists(w));
  m.CancelFastSingleSteps();
  ASSERT_TRUE(m.DestroyView(w).ok());
  // Without the step the write faults again in v.
  r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  EXPECT_EQ(r->exit->rip, Sym(f, "write_insn"));
  EXPECT_EQ(r->exit->view, v);
}

}  // namespace
}  // namespace vmi::sim
