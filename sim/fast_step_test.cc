// Fast single steps whose instruction does not simply complete: it raises a
// guest exception (delivered, and the step ends at the handler), or an event
// in the step's view (the step stays under way until the instruction
// completes; each response's rule is in machine.h's Response comment).
#include <algorithm>
#include <cstdint>
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
using testing::Guest;
using testing::NewMachine;
using testing::ReadQ;
using testing::Sym;

uint64_t SymPa(const StandardGuest& g, const char* name) {
  return g.program.SymbolPa(name)->value();
}

absl::StatusOr<RunResult> RunGuest(Machine& m) { return m.Run(1'000'000); }

// ---------------------------------------------------------------------------
// A fast single step whose instruction takes a #PF (demand_paging).

constexpr uint64_t kRegion = 0x40000000;

struct PagingGuest {
  std::unique_ptr<Machine> m;
  StandardGuest g;
  View exec_view;  // the program's frame is not executable here
};

PagingGuest NewPagingGuest(uint64_t pages) {
  PagingGuest p;
  p.m = NewMachine();
  p.g = Guest(*p.m, "demand_paging");
  Pa pt = *p.g.space->PageTableFor(Va(kRegion));
  EXPECT_TRUE(p.g.space->Map(Va(0xffffc00000000000ull), pt, 4096, page_flags::kWritable).ok());
  Pa pool = *p.g.builder->AllocateFrames(pages);
  const uint64_t pf_data[2] = {0xffffc00000000000ull, pool.value()};
  EXPECT_TRUE(p.m->WritePhys(Pa(SymPa(p.g, "pf_data")),
                             absl::MakeSpan(reinterpret_cast<const uint8_t*>(pf_data), 16))
                  .ok());
  amd64::GpRegisters gp = p.m->GetRegisters(VcpuId(0))->gp();
  gp.rdi = kRegion;
  gp.rsi = pages;
  EXPECT_TRUE(p.m->SetGpRegisters(VcpuId(0), gp).ok());
  // An execute-controller breakpoint: every fetch from the program's frame
  // is an execute violation in exec_view, stepped in the default view.
  p.exec_view = *p.m->CreateView(MemoryAccess::RWX());
  EXPECT_TRUE(p.m->SetMemoryAccess(p.exec_view, Gfn(SymPa(p.g, "entry") / 4096),
                                   MemoryAccess::RW())
                  .ok());
  EXPECT_TRUE(p.m->SwitchView(p.exec_view).ok());
  return p;
}

TEST(FastStepTest, PageFaultOfTheSteppedInstructionReachesTheGuestHandler) {
  PagingGuest p = NewPagingGuest(2);
  Machine& m = *p.m;
  const uint64_t store = Sym(p.g, "entry") + 9;  // mov %rcx, (%rbx)
  const uint64_t handler = Sym(p.g, "pf_handler");
  std::vector<uint64_t> rips;
  bool checked_frame = false;
  for (int i = 0; i < 200; ++i) {
    absl::StatusOr<RunResult> r = RunGuest(m);
    ASSERT_TRUE(r.ok()) << r.status();
    if (r->status != RunStatus::kExit) break;
    const Exit& e = *r->exit;
    ASSERT_EQ(e.kind, ExitKind::kMemoryAccess) << e.ToString();
    ASSERT_EQ(e.view, p.exec_view) << e.ToString();
    ASSERT_EQ(e.access, MemoryAccess::X()) << e.ToString();
    if (!rips.empty() && rips.back() == store && e.rip == handler && !checked_frame) {
      // The step of the store ended with the #PF delivered: the vCPU is back
      // in its view at the handler, the exception frame pushed.
      checked_frame = true;
      EXPECT_EQ(*m.VcpuView(VcpuId(0)), p.exec_view);
      const amd64::Registers regs = *m.GetRegisters(VcpuId(0));
      const uint64_t frame = p.g.space->Translate(Va(regs.rsp))->value();
      EXPECT_EQ(ReadQ(m, frame), 2u);          // error code: write, not present
      EXPECT_EQ(ReadQ(m, frame + 8), store);   // return RIP: the store, retried
      EXPECT_EQ(regs.cr2, kRegion);
    }
    rips.push_back(e.rip);
    ASSERT_TRUE(m.Respond({EventAction::kFastSingleStep, kDefaultView, std::nullopt}).ok());
  }
  EXPECT_TRUE(checked_frame);
  // Two faults, each followed by the handler and the retried store.
  EXPECT_EQ(std::count(rips.begin(), rips.end(), handler), 2);
  EXPECT_EQ(std::count(rips.begin(), rips.end(), store), 4);
  EXPECT_EQ(ReadQ(m, SymPa(p.g, "pf_data") + 16), 2u);
  const amd64::Registers end = *m.GetRegisters(VcpuId(0));
  EXPECT_EQ(end.r12, 2u + 1);
  EXPECT_EQ(end.rip, Sym(p.g, "done") + 1);
  EXPECT_EQ(*m.VcpuView(VcpuId(0)), p.exec_view);
  EXPECT_TRUE(*m.Halted(VcpuId(0)));
}

// With #PF monitored, the fault of the stepped instruction is an exit in the
// step's view; reinjecting it ends the step at the handler, in the original
// view.
TEST(FastStepTest, MonitoredPageFaultDuringStepReinjectedEndsTheStep) {
  PagingGuest p = NewPagingGuest(1);
  Machine& m = *p.m;
  ASSERT_TRUE(m.SetInterruptMonitor(14, true).ok());
  const uint64_t store = Sym(p.g, "entry") + 9;
  std::vector<std::string> interrupts;
  for (int i = 0; i < 200; ++i) {
    absl::StatusOr<RunResult> r = RunGuest(m);
    ASSERT_TRUE(r.ok()) << r.status();
    if (r->status != RunStatus::kExit) break;
    if (r->exit->kind == ExitKind::kInterrupt) {
      interrupts.push_back(r->exit->ToString());
      EXPECT_EQ(*m.VcpuView(VcpuId(0)), kDefaultView);  // the step is under way
      ASSERT_TRUE(m.Respond({EventAction::kReinjectInterrupt, std::nullopt, std::nullopt}).ok());
      r = RunGuest(m);
      ASSERT_TRUE(r.ok()) << r.status();
      ASSERT_EQ(r->status, RunStatus::kExit);
      EXPECT_EQ(r->exit->ToString(),
                absl::StrFormat("vcpu=0 view=%s memory_access rip=0x%x gpa=0x%x gla=0x%x "
                                "access=--x",
                                p.exec_view, Sym(p.g, "pf_handler"), SymPa(p.g, "pf_handler"),
                                Sym(p.g, "pf_handler")));
    }
    ASSERT_TRUE(m.Respond({EventAction::kFastSingleStep, kDefaultView, std::nullopt}).ok());
  }
  EXPECT_THAT(interrupts, ElementsAre(absl::StrFormat(
                              "vcpu=0 view=0 interrupt rip=0x%x vector=14 error_code=0x2", store)));
  EXPECT_EQ(ReadQ(m, SymPa(p.g, "pf_data") + 16), 1u);
  EXPECT_EQ(m.GetRegisters(VcpuId(0))->r12, 1u);
  EXPECT_EQ(*m.VcpuView(VcpuId(0)), p.exec_view);
}

// Unicorn marks the #PF it uses for a fetch violation as in flight and
// never delivers it: the guest's next real #PF must not become a #DF (what
// lost the #PF of a fast step's instruction after an execute violation).
TEST(FastStepTest, PageFaultAfterAnExecuteViolationIsAPageFault) {
  auto m = NewMachine();
  StandardGuest g = Guest(*m, "demand_paging");
  constexpr uint64_t kPagedRegion = 0x40000000;
  Pa pt = *g.space->PageTableFor(Va(kPagedRegion));
  ASSERT_TRUE(g.space->Map(Va(0xffffc00000000000ull), pt, 4096, page_flags::kWritable).ok());
  Pa pool = *g.builder->AllocateFrames(1);
  const uint64_t pf_data[2] = {0xffffc00000000000ull, pool.value()};
  ASSERT_TRUE(m->WritePhys(Pa(SymPa(g, "pf_data")),
                           absl::MakeSpan(reinterpret_cast<const uint8_t*>(pf_data), 16))
                  .ok());
  amd64::GpRegisters gp = m->GetRegisters(VcpuId(0))->gp();
  gp.rdi = kPagedRegion;
  gp.rsi = 1;
  ASSERT_TRUE(m->SetGpRegisters(VcpuId(0), gp).ok());
  const Gfn code(SymPa(g, "entry") / 4096);
  ASSERT_TRUE(m->SetMemoryAccess(kDefaultView, code, MemoryAccess::RW()).ok());
  absl::StatusOr<RunResult> r = m->Run(1'000'000);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  EXPECT_EQ(r->exit->ToString(),
            absl::StrFormat("vcpu=0 view=0 memory_access rip=0x%x gpa=0x%x gla=0x%x access=--x",
                            Sym(g, "entry"), SymPa(g, "entry"), Sym(g, "entry")));
  ASSERT_TRUE(m->SetMemoryAccess(kDefaultView, code, MemoryAccess::RWX()).ok());
  ASSERT_TRUE(m->Respond({}).ok());
  r = m->Run(1'000'000);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, RunStatus::kAllHalted);
  EXPECT_EQ(ReadQ(*m, SymPa(g, "pf_data") + 16), 1u);  // one #PF reached the handler
  EXPECT_EQ(m->GetRegisters(VcpuId(0))->r12, 1u);
}

// ---------------------------------------------------------------------------
// A memory event raised by the instruction of a fast single step: a hidden
// INT3 (shadow frame, execute-only in the breakpoint view) on mem_access's
// write_insn, whose write the default view watches.

struct HiddenBreakpoint {
  testing::MemAccessGuest f;
  View bp_view;
  uint64_t write_insn = 0, data = 0;
};

HiddenBreakpoint NewHiddenBreakpoint() {
  HiddenBreakpoint h;
  h.f = testing::NewMemAccessGuest();
  Machine& m = *h.f.m;
  h.write_insn = Sym(h.f.g, "write_insn");
  h.data = h.f.data_gfn.value() * 4096;
  const uint64_t code_pa = SymPa(h.f.g, "write_insn") & ~uint64_t{4095};
  Pa shadow = *h.f.g.builder->AllocateFrames(1);
  std::vector<uint8_t> page(4096);
  EXPECT_TRUE(m.ReadPhys(Pa(code_pa), absl::MakeSpan(page)).ok());
  page[SymPa(h.f.g, "write_insn") - code_pa] = 0xcc;
  EXPECT_TRUE(m.WritePhys(shadow, page).ok());
  h.bp_view = *m.CreateView(MemoryAccess::RWX());
  EXPECT_TRUE(m.ChangeGfn(h.bp_view, Gfn(code_pa / 4096), Gfn(shadow.value() / 4096)).ok());
  EXPECT_TRUE(m.SetMemoryAccess(h.bp_view, Gfn(code_pa / 4096), MemoryAccess::X()).ok());
  EXPECT_TRUE(m.SetMemoryAccess(kDefaultView, h.f.data_gfn, MemoryAccess::RX()).ok());
  EXPECT_TRUE(m.SetBreakpointMonitor(true).ok());
  EXPECT_TRUE(m.SwitchView(h.bp_view).ok());
  return h;
}

std::string WriteEvent(const HiddenBreakpoint& h, View view) {
  return absl::StrFormat("vcpu=0 view=%s memory_access rip=0x%x gpa=0x%x gla=0x%x access=-w-",
                         view, h.write_insn, h.data + 8, h.f.data_va + 8);
}

// Runs to the breakpoint, answers it with a fast single step in the default
// view, and runs to the write event the step raises.
void RunToWriteEventInStep(HiddenBreakpoint& h) {
  Machine& m = *h.f.m;
  absl::StatusOr<RunResult> r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  ASSERT_EQ(r->exit->kind, ExitKind::kBreakpoint) << r->exit->ToString();
  ASSERT_EQ(r->exit->view, h.bp_view);
  ASSERT_EQ(r->exit->rip, h.write_insn);
  ASSERT_TRUE(m.Respond({EventAction::kFastSingleStep, kDefaultView, std::nullopt}).ok());
  r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  ASSERT_EQ(r->exit->ToString(), WriteEvent(h, kDefaultView));
  EXPECT_EQ(*m.VcpuView(VcpuId(0)), kDefaultView);
}

// Runs to the end, failing on any exit.
void RunToHalt(Machine& m) {
  absl::StatusOr<RunResult> r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, RunStatus::kAllHalted)
      << (r->exit.has_value() ? r->exit->ToString() : std::string());
}

void ExpectCompletedInBreakpointView(HiddenBreakpoint& h, uint64_t written = 0x1112) {
  Machine& m = *h.f.m;
  EXPECT_EQ(ReadQ(m, h.data + 8), written);
  EXPECT_EQ(ReadQ(m, h.data + 16), 0x1234u);
  EXPECT_EQ(*m.VcpuView(VcpuId(0)), h.bp_view);
  EXPECT_EQ(m.GetRegisters(VcpuId(0))->rip, Sym(h.f.g, "done") + 1);
}

TEST(FastStepEventTest, EmulateCompletesTheInstructionAndEndsTheStep) {
  HiddenBreakpoint h = NewHiddenBreakpoint();
  ASSERT_NO_FATAL_FAILURE(RunToWriteEventInStep(h));
  ASSERT_TRUE(h.f.m->Respond({EventAction::kEmulate, std::nullopt, std::nullopt}).ok());
  RunToHalt(*h.f.m);
  ExpectCompletedInBreakpointView(h);
}

TEST(FastStepEventTest, ContinueAfterLiftingThePermissionCompletesTheStep) {
  HiddenBreakpoint h = NewHiddenBreakpoint();
  ASSERT_NO_FATAL_FAILURE(RunToWriteEventInStep(h));
  ASSERT_TRUE(h.f.m->SetMemoryAccess(kDefaultView, h.f.data_gfn, MemoryAccess::RWX()).ok());
  ASSERT_TRUE(h.f.m->Respond({}).ok());
  RunToHalt(*h.f.m);
  ExpectCompletedInBreakpointView(h);
}

TEST(FastStepEventTest, ContinueWithoutLiftingFaultsAgainInTheStepView) {
  HiddenBreakpoint h = NewHiddenBreakpoint();
  Machine& m = *h.f.m;
  ASSERT_NO_FATAL_FAILURE(RunToWriteEventInStep(h));
  ASSERT_TRUE(m.Respond({}).ok());
  absl::StatusOr<RunResult> r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  EXPECT_EQ(r->exit->ToString(), WriteEvent(h, kDefaultView));
  EXPECT_EQ(ReadQ(m, h.data + 8), 0u);
  ASSERT_TRUE(m.Respond({EventAction::kEmulate, std::nullopt, std::nullopt}).ok());
  RunToHalt(m);
  ExpectCompletedInBreakpointView(h);
}

TEST(FastStepEventTest, FastSingleStepInAnotherViewReturnsToTheOriginalView) {
  HiddenBreakpoint h = NewHiddenBreakpoint();
  Machine& m = *h.f.m;
  View open = *m.CreateView(MemoryAccess::RWX());
  ASSERT_NO_FATAL_FAILURE(RunToWriteEventInStep(h));
  ASSERT_TRUE(m.Respond({EventAction::kFastSingleStep, open, std::nullopt}).ok());
  RunToHalt(m);
  ExpectCompletedInBreakpointView(h);
}

TEST(FastStepEventTest, ContinueWithAViewRetriesThereAndReturns) {
  HiddenBreakpoint h = NewHiddenBreakpoint();
  Machine& m = *h.f.m;
  View open = *m.CreateView(MemoryAccess::RWX());
  ASSERT_NO_FATAL_FAILURE(RunToWriteEventInStep(h));
  ASSERT_TRUE(m.Respond({EventAction::kContinue, open, std::nullopt}).ok());
  RunToHalt(m);
  ExpectCompletedInBreakpointView(h);
}

TEST(FastStepEventTest, SingleStepToggledOnReportsTheStepInTheOriginalView) {
  HiddenBreakpoint h = NewHiddenBreakpoint();
  Machine& m = *h.f.m;
  ASSERT_NO_FATAL_FAILURE(RunToWriteEventInStep(h));
  ASSERT_TRUE(m.SetMemoryAccess(kDefaultView, h.f.data_gfn, MemoryAccess::RWX()).ok());
  ASSERT_TRUE(m.Respond({EventAction::kSingleStep, std::nullopt, std::nullopt}).ok());
  absl::StatusOr<RunResult> r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  EXPECT_EQ(r->exit->ToString(), absl::StrFormat("vcpu=0 view=%s singlestep rip=0x%x", h.bp_view,
                                                 Sym(h.f.g, "call_insn")));
  EXPECT_EQ(ReadQ(m, h.data + 8), 0x1112u);
  ASSERT_TRUE(m.Respond({EventAction::kSingleStep, std::nullopt, std::nullopt}).ok());
  RunToHalt(m);
  ExpectCompletedInBreakpointView(h);
}

TEST(FastStepEventTest, NewRipStepsThatInstructionInstead) {
  HiddenBreakpoint h = NewHiddenBreakpoint();
  Machine& m = *h.f.m;
  ASSERT_NO_FATAL_FAILURE(RunToWriteEventInStep(h));
  amd64::GpRegisters regs = m.GetRegisters(VcpuId(0))->gp();
  regs.rip = Sym(h.f.g, "call_insn");  // the write is skipped
  ASSERT_TRUE(m.Respond({EventAction::kContinue, std::nullopt, regs}).ok());
  // The CALL is the step's instruction (in the default view); the vCPU is
  // back in the breakpoint view at the callee.
  RunToHalt(m);
  ExpectCompletedInBreakpointView(h, /*written=*/0);
}

TEST(FastStepEventTest, InvalidResponsesChangeNothing) {
  HiddenBreakpoint h = NewHiddenBreakpoint();
  Machine& m = *h.f.m;
  ASSERT_NO_FATAL_FAILURE(RunToWriteEventInStep(h));
  EXPECT_EQ(m.Respond({EventAction::kDeny, std::nullopt, std::nullopt}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m.Respond({EventAction::kReinjectInterrupt, std::nullopt, std::nullopt}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m.Respond({EventAction::kFastSingleStep, std::nullopt, std::nullopt}).code(),
            absl::StatusCode::kInvalidArgument);
  // The view the step returns to cannot go while the step is under way.
  EXPECT_EQ(m.DestroyView(h.bp_view).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(m.pending_exit().has_value());
  ASSERT_TRUE(m.Respond({EventAction::kEmulate, std::nullopt, std::nullopt}).ok());
  RunToHalt(m);
  ExpectCompletedInBreakpointView(h);
}

// CancelFastSingleSteps drops the step under way: the vCPU stays in the
// step's view, where the guest's next write to the watched frame traps.
TEST(FastStepEventTest, CancelledStepStaysInTheStepView) {
  HiddenBreakpoint h = NewHiddenBreakpoint();
  Machine& m = *h.f.m;
  ASSERT_NO_FATAL_FAILURE(RunToWriteEventInStep(h));
  m.CancelFastSingleSteps();
  ASSERT_TRUE(m.Respond({EventAction::kEmulate, std::nullopt, std::nullopt}).ok());
  absl::StatusOr<RunResult> r = RunGuest(m);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  EXPECT_EQ(r->exit->ToString(),
            absl::StrFormat("vcpu=0 view=0 memory_access rip=0x%x gpa=0x%x gla=0x%x access=-w-",
                            Sym(h.f.g, "call_insn") + 5, h.data + 16, h.f.data_va + 16));
  ASSERT_TRUE(m.Respond({EventAction::kEmulate, std::nullopt, std::nullopt}).ok());
  RunToHalt(m);
  EXPECT_EQ(ReadQ(m, h.data + 16), 0x1234u);
  EXPECT_EQ(*m.VcpuView(VcpuId(0)), kDefaultView);
  EXPECT_TRUE(m.DestroyView(h.bp_view).ok());
}

}  // namespace
}  // namespace vmi::sim
