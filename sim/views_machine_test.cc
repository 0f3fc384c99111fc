// Views (the EPT analogue) enforced on real guest accesses.
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sim/machine.h"
#include "sim/programs.h"
#include "sim/testing/test_machine.h"

namespace vmi::sim {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

using Fixture = testing::MemAccessGuest;
using testing::ReadQ;
using testing::RespondToVmcalls;

Fixture MakeFixture(uint16_t vcpus = 1) { return testing::NewMemAccessGuest(vcpus); }
uint64_t Sym(const Fixture& f, const char* name) { return testing::Sym(f.g, name); }
absl::StatusOr<RunResult> RunGuest(Machine& m) { return m.Run(1'000'000); }

TEST(ViewsMachineTest, WriteViolationThenEmulateWritesOnce) {
  Fixture f = MakeFixture();
  Machine& m = *f.m;
  View v = *m.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(m.SetMemoryAccess(v, f.data_gfn, MemoryAccess::RX()).ok());
  EXPECT_EQ(*m.GetMemoryAccess(v, f.data_gfn), MemoryAccess::RX());
  EXPECT_EQ(*m.GetMemoryAccess(kDefaultView, f.data_gfn), MemoryAccess::RWX());
  ASSERT_TRUE(m.SwitchView(v).ok());
  absl::StatusOr<RunResult> r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  EXPECT_EQ(r->exit->ToString(),
            absl::StrFormat("vcpu=0 view=1 memory_access rip=0x%x gpa=0x%x gla=0x%x access=-w-",
                            Sym(f, "write_insn"), f.data_gfn.value() * 4096 + 8, f.data_va + 8));
  // Continue without changing anything: the write faults again, unperformed.
  ASSERT_TRUE(m.Respond({}).ok());
  r = RunGuest(m);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->status, RunStatus::kExit);
  EXPECT_EQ(r->exit->rip, Sym(f, "write_insn"));
  EXPECT_EQ(ReadQ(m, f.data_gfn.value() * 4096 + 8), 0u);
  // Emulate: performed once; the guest goes on to its next write to the frame.
  ASSERT_TRUE(m.Respond({EventAction::kEmulate, std::nullopt, std::nullopt}).ok());
  r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  EXPECT_EQ(r->exit->rip, Sym(f, "call_insn") + 5);
  EXPECT_EQ(ReadQ(m, f.data_gfn.value() * 4096 + 8), 0x1112u);
  EXPECT_EQ(ReadQ(m, f.data_gfn.value() * 4096 + 16), 0u);
}

// The frame is also mapped at a second linear address, so a search of the
// page tables cannot name the one the guest used; the faulting instruction
// can, as on hardware.
TEST(ViewsMachineTest, GlaOfAnAliasedFrameComesFromTheInstruction) {
  Fixture f = MakeFixture();
  Machine& m = *f.m;
  constexpr uint64_t kAlias = 0x7000000;
  ASSERT_TRUE(f.g.space->Map(Va(kAlias), Pa(f.data_gfn.value() * 4096), 4096,
                             page_flags::kWritable | page_flags::kNoExecute)
                  .ok());
  ASSERT_TRUE(m.SetMemoryAccess(kDefaultView, f.data_gfn, MemoryAccess::RX()).ok());
  absl::StatusOr<RunResult> r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  EXPECT_TRUE(r->exit->gla_valid);
  EXPECT_EQ(r->exit->gla, Va(f.data_va + 8));
  EXPECT_EQ(r->exit->rip, Sym(f, "write_insn"));
}

TEST(ViewsMachineTest, EveryWriteToProtectedFrameIsAnExit) {
  Fixture f = MakeFixture();
  Machine& m = *f.m;
  View v = *m.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(m.SetMemoryAccess(v, f.data_gfn, MemoryAccess::RX()).ok());
  ASSERT_TRUE(m.SwitchView(v).ok());
  std::vector<uint64_t> rips, gpas;
  for (int i = 0; i < 10; ++i) {
    absl::StatusOr<RunResult> r = RunGuest(m);
    ASSERT_TRUE(r.ok()) << r.status();
    if (r->status != RunStatus::kExit) break;
    rips.push_back(r->exit->rip);
    gpas.push_back(r->exit->gpa.value());
    ASSERT_TRUE(m.Respond({EventAction::kEmulate, std::nullopt, std::nullopt}).ok());
  }
  const uint64_t base = f.data_gfn.value() * 4096;
  EXPECT_THAT(rips, ElementsAre(Sym(f, "write_insn"), Sym(f, "call_insn") + 5));
  EXPECT_THAT(gpas, ElementsAre(base + 8, base + 16));
  EXPECT_EQ(ReadQ(m, base + 16), 0x1234u);
}

TEST(ViewsMachineTest, ReadAndExecuteViolations) {
  Fixture f = MakeFixture();
  Machine& m = *f.m;
  View v = *m.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(m.SetMemoryAccess(v, f.data_gfn, MemoryAccess::None()).ok());
  ASSERT_TRUE(m.SetMemoryAccess(v, f.code_gfn, MemoryAccess::RW()).ok());
  ASSERT_TRUE(m.SwitchVcpuView(VcpuId(0), v).ok());
  std::vector<std::string> trace;
  for (int i = 0; i < 10; ++i) {
    absl::StatusOr<RunResult> r = RunGuest(m);
    ASSERT_TRUE(r.ok()) << r.status();
    if (r->status != RunStatus::kExit) break;
    trace.push_back(r->exit->ToString());
    // Step the instruction in the host view, then come back to view v.
    ASSERT_TRUE(m.Respond({EventAction::kFastSingleStep, kDefaultView, std::nullopt}).ok());
  }
  const uint64_t data = f.data_gfn.value() * 4096, code = f.code_gfn.value() * 4096;
  EXPECT_THAT(
      trace,
      ElementsAre(
          absl::StrFormat("vcpu=0 view=1 memory_access rip=0x%x gpa=0x%x gla=0x%x access=r--",
                          Sym(f, "read_insn"), data, f.data_va),
          absl::StrFormat("vcpu=0 view=1 memory_access rip=0x%x gpa=0x%x gla=0x%x access=-w-",
                          Sym(f, "write_insn"), data + 8, f.data_va + 8),
          absl::StrFormat("vcpu=0 view=1 memory_access rip=0x%x gpa=0x%x gla=0x%x access=--x",
                          f.code_va, code, f.code_va),
          // The second instruction of the non-executable page (ret) faults too.
          absl::StrFormat("vcpu=0 view=1 memory_access rip=0x%x gpa=0x%x gla=0x%x access=--x",
                          f.code_va + 5, code + 5, f.code_va + 5),
          absl::StrFormat("vcpu=0 view=1 memory_access rip=0x%x gpa=0x%x gla=0x%x access=-w-",
                          Sym(f, "call_insn") + 5, data + 16, f.data_va + 16)));
  EXPECT_EQ(*m.VcpuView(VcpuId(0)), v);
  EXPECT_EQ(ReadQ(m, data + 16), 0x1234u);
}

TEST(ViewsMachineTest, ChangeGfnRemapsOnlyInThatView) {
  Fixture f = MakeFixture();
  Machine& m = *f.m;
  Gfn shadow = *f.g.builder->AllocateFrame();
  const uint64_t magic = 0x7777;
  ASSERT_TRUE(m.WritePhys(Pa(shadow.value() * 4096),
                          absl::MakeSpan(reinterpret_cast<const uint8_t*>(&magic), 8))
                  .ok());
  View v = *m.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(m.ChangeGfn(v, f.data_gfn, shadow).ok());
  std::unique_ptr<Snapshot> snap = *m.TakeSnapshot();
  // In view v the guest reads and writes the shadow frame.
  ASSERT_TRUE(m.SwitchView(v).ok());
  absl::StatusOr<RunResult> r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, RunStatus::kAllHalted);
  EXPECT_EQ(m.GetRegisters(VcpuId(0))->rax, 0x1234u);
  EXPECT_EQ(ReadQ(m, shadow.value() * 4096 + 8), 0x7778u);
  EXPECT_EQ(ReadQ(m, f.data_gfn.value() * 4096 + 8), 0u);
  // Same start in the host view reaches the original frame.
  ASSERT_TRUE(m.RestoreSnapshot(*snap).ok());
  EXPECT_EQ(*m.VcpuView(VcpuId(0)), kDefaultView);
  r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, RunStatus::kAllHalted);
  EXPECT_EQ(ReadQ(m, f.data_gfn.value() * 4096 + 8), 0x1112u);
  EXPECT_EQ(ReadQ(m, shadow.value() * 4096 + 8), 0u);
  // Reset the remap, destroy the view.
  ASSERT_TRUE(m.ResetGfn(v, f.data_gfn).ok());
  EXPECT_EQ(m.views().Lookup(v, f.data_gfn).backing, f.data_gfn);
  ASSERT_TRUE(m.DestroyView(v).ok());
  EXPECT_EQ(m.SwitchView(v).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ViewsMachineTest, DestroyingActiveViewFails) {
  Fixture f = MakeFixture();
  View v = *f.m->CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(f.m->SwitchVcpuView(VcpuId(0), v).ok());
  EXPECT_THAT(f.m->DestroyView(v).message(), HasSubstr("active on vcpu 0"));
  EXPECT_EQ(f.m->SetMemoryAccess(View(9), Gfn(1), MemoryAccess::R()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.m->SetMemoryAccess(v, Gfn(0x1000), MemoryAccess::R()).code(),
            absl::StatusCode::kNotFound);
}

TEST(ViewsMachineTest, PerVcpuViews) {
  Fixture f = MakeFixture(2);
  Machine& m = *f.m;
  View v = *m.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(m.SetMemoryAccess(v, f.data_gfn, MemoryAccess::RX()).ok());
  ASSERT_TRUE(m.SwitchVcpuView(VcpuId(1), v).ok());
  std::vector<std::string> trace;
  for (int i = 0; i < 10; ++i) {
    absl::StatusOr<RunResult> r = RunGuest(m);
    ASSERT_TRUE(r.ok()) << r.status();
    if (r->status != RunStatus::kExit) break;
    trace.push_back(r->exit->ToString());
    // Answer by moving the vCPU to the host view.
    ASSERT_TRUE(m.Respond({EventAction::kContinue, kDefaultView, std::nullopt}).ok());
  }
  // Only vCPU 1, in view 1, faults; vCPU 0 writes freely in the host view.
  EXPECT_THAT(trace, ElementsAre(absl::StrFormat(
                         "vcpu=1 view=1 memory_access rip=0x%x gpa=0x%x gla=0x%x access=-w-",
                         Sym(f, "write_insn"), f.data_gfn.value() * 4096 + 8, f.data_va + 8)));
  EXPECT_EQ(*m.VcpuView(VcpuId(0)), kDefaultView);
  EXPECT_EQ(*m.VcpuView(VcpuId(1)), kDefaultView);
  EXPECT_EQ(*m.Halted(VcpuId(0)), true);
  EXPECT_EQ(*m.Halted(VcpuId(1)), true);
}

TEST(ViewsMachineTest, HiddenBreakpointInExecuteView) {
  // The DRAKVUF pattern: the execute view maps the code frame to a shadow
  // copy carrying INT3; data reads of the code frame see the original.
  Fixture f = MakeFixture();
  Machine& m = *f.m;
  Gfn shadow = *f.g.builder->AllocateFrame();
  std::vector<uint8_t> page(4096);
  ASSERT_TRUE(m.ReadPhys(Pa(f.code_gfn.value() * 4096), absl::MakeSpan(page)).ok());
  page[0] = 0xcc;
  ASSERT_TRUE(m.WritePhys(Pa(shadow.value() * 4096), page).ok());
  View exec = *m.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(m.ChangeGfn(exec, f.code_gfn, shadow).ok());
  ASSERT_TRUE(m.SwitchView(exec).ok());
  ASSERT_TRUE(m.SetBreakpointMonitor(true).ok());
  absl::StatusOr<RunResult> r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  EXPECT_EQ(r->exit->kind, ExitKind::kBreakpoint);
  EXPECT_EQ(r->exit->rip, f.code_va);
  EXPECT_EQ(r->exit->view, exec);
  // Step the original instruction in the host view; no further exits.
  ASSERT_TRUE(m.Respond({EventAction::kFastSingleStep, kDefaultView, std::nullopt}).ok());
  r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, RunStatus::kAllHalted);
  EXPECT_EQ(ReadQ(m, f.data_gfn.value() * 4096 + 16), 0x1234u);
  EXPECT_EQ(*m.VcpuView(VcpuId(0)), exec);
}

TEST(ViewsMachineTest, ReadViolationAnsweredWithContinueFaultsAgain) {
  Fixture f = MakeFixture();
  Machine& m = *f.m;
  ASSERT_TRUE(m.SetMemoryAccess(kDefaultView, f.data_gfn, MemoryAccess::X()).ok());
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<RunResult> r = RunGuest(m);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->status, RunStatus::kExit) << "attempt " << i;
    EXPECT_EQ(r->exit->rip, Sym(f, "read_insn")) << "attempt " << i;
    EXPECT_EQ(r->exit->access, MemoryAccess::R());
    ASSERT_TRUE(m.Respond({}).ok());
  }
  // The load never happened: RAX was not loaded from the frame.
  EXPECT_NE(m.GetRegisters(VcpuId(0))->rax, 0x1111u);
}

TEST(ViewsMachineTest, RecreatedViewStartsFromItsOwnPermissions) {
  Fixture f = MakeFixture();
  Machine& m = *f.m;
  View v = *m.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(m.SetMemoryAccess(v, f.data_gfn, MemoryAccess::RX()).ok());
  ASSERT_TRUE(m.SwitchView(v).ok());
  absl::StatusOr<RunResult> r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  EXPECT_EQ(r->exit->rip, Sym(f, "write_insn"));
  // Leave the view (its engine still holds the vCPU until it runs again),
  // destroy it and create a new one, which gets the same number.
  ASSERT_TRUE(m.Respond({EventAction::kContinue, kDefaultView, std::nullopt}).ok());
  ASSERT_TRUE(m.DestroyView(v).ok());
  View again = *m.CreateView(MemoryAccess::RWX());
  ASSERT_EQ(again, v);
  ASSERT_TRUE(m.SwitchView(again).ok());
  r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, RunStatus::kAllHalted);
  EXPECT_EQ(ReadQ(m, f.data_gfn.value() * 4096 + 8), 0x1112u);
}

// Views run on separate engines. A guest code write made in one view must
// reach the code the other view's engine translated before.
struct SelfModify {
  std::unique_ptr<Machine> m;
  StandardGuest g;
};

SelfModify MakeSelfModify(uint16_t vcpus) {
  SelfModify s;
  s.m = *Machine::Create({.ram_size = 16ull << 20, .vcpu_count = vcpus, .quantum = 1000});
  absl::StatusOr<StandardGuest> g = BuildStandardGuest(*s.m, "self_modify");
  EXPECT_TRUE(g.ok()) << g.status();
  s.g = std::move(*g);
  EXPECT_TRUE(s.m->SetVmcallMonitor(true).ok());
  return s;
}

TEST(ViewsMachineTest, GuestCodeWriteInOneViewIsSeenInAnother) {
  SelfModify s = MakeSelfModify(1);
  Machine& m = *s.m;
  View other = *m.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(m.SwitchView(other).ok());
  // Translate `patched` in `other`, rewrite it in the host view, call it
  // again in `other`.
  ASSERT_NO_FATAL_FAILURE(RespondToVmcalls(m, {kDefaultView, other}));
  absl::StatusOr<RunResult> r = m.Run(1'000'000);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, RunStatus::kAllHalted);
  const amd64::Registers regs = *m.GetRegisters(VcpuId(0));
  EXPECT_EQ(regs.r12, 0x1111u);
  EXPECT_EQ(regs.r13, 0x2222u);
}

TEST(ViewsMachineTest, GuestCodeWriteByOneVcpuIsSeenByAnother) {
  SelfModify s = MakeSelfModify(2);
  Machine& m = *s.m;
  const uint64_t second_vmcall = s.g.program.Symbol("second_vmcall")->value();
  // vCPU 0 and vCPU 1 both translate `patched`; only vCPU 0 rewrites it
  // (vCPU 1 is moved past the write); then both call it again.
  std::vector<std::string> trace;
  for (int i = 0; i < 4; ++i) {
    absl::StatusOr<RunResult> r = m.Run(1'000'000);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->status, RunStatus::kExit);
    ASSERT_EQ(r->exit->kind, ExitKind::kVmcall);
    trace.push_back(absl::StrFormat("vcpu%s@0x%x", r->exit->vcpu, r->exit->rip));
    Response response;
    if (r->exit->vcpu == VcpuId(1) && r->exit->rip != second_vmcall) {
      amd64::GpRegisters gp = m.GetRegisters(VcpuId(1))->gp();
      gp.rip = second_vmcall;
      response.registers = gp;
    }
    ASSERT_TRUE(m.Respond(response).ok());
  }
  absl::StatusOr<RunResult> r = m.Run(1'000'000);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, RunStatus::kAllHalted);
  EXPECT_EQ(trace.size(), 4u);
  for (uint16_t vcpu : {0, 1}) {
    const amd64::Registers regs = *m.GetRegisters(VcpuId(vcpu));
    EXPECT_EQ(regs.r12, 0x1111u) << "vcpu " << vcpu;
    EXPECT_EQ(regs.r13, 0x2222u) << "vcpu " << vcpu;
  }
}

}  // namespace
}  // namespace vmi::sim
