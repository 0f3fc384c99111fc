// Event sources and responses against real guest code: exact traces.
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
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

using testing::Guest;
using testing::NewMachine;
using testing::Sym;

uint64_t SymPa(const StandardGuest& g, const char* name) {
  return g.program.SymbolPa(name)->value();
}

void SetGp(Machine& m, VcpuId vcpu, uint64_t amd64::GpRegisters::*field, uint64_t value) {
  amd64::GpRegisters r = m.GetRegisters(vcpu)->gp();
  r.*field = value;
  ASSERT_TRUE(m.SetGpRegisters(vcpu, r).ok());
}

uint64_t ReadQ(Machine& m, uint64_t pa) {
  uint64_t v = 0;
  EXPECT_TRUE(m.ReadPhys(Pa(pa), absl::MakeSpan(reinterpret_cast<uint8_t*>(&v), 8)).ok());
  return v;
}

// Runs until all vCPUs halt, answering every exit with `respond` and
// recording it. Fails the test after `max_exits`.
template <typename F>
std::vector<std::string> Trace(Machine& m, F respond, int max_exits = 200) {
  std::vector<std::string> trace;
  for (int i = 0; i <= max_exits; ++i) {
    absl::StatusOr<RunResult> r = m.Run(10'000'000);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok() || r->status != RunStatus::kExit) return trace;
    trace.push_back(r->exit->ToString());
    absl::Status s = m.Respond(respond(*r->exit));
    EXPECT_TRUE(s.ok()) << s;
  }
  ADD_FAILURE() << "too many exits";
  return trace;
}

Response Continue(const Exit&) { return {}; }

TEST(EventsTest, InstructionInterceptsWithExactFields) {
  auto m = NewMachine();
  StandardGuest g = Guest(*m, "instructions");
  ASSERT_TRUE(m->SetCpuidMonitor(true).ok());
  ASSERT_TRUE(m->SetIoMonitor(true).ok());
  ASSERT_TRUE(m->SetVmcallMonitor(true).ok());
  ASSERT_TRUE(m->SetMsrWriteMonitor(true).ok());
  ASSERT_TRUE(m->SetDescriptorTableMonitor(true).ok());
  ASSERT_TRUE(m->SetControlRegisterMonitor(4, true).ok());
  ASSERT_TRUE(m->SetControlRegisterMonitor(0, true).ok());
  const amd64::Registers start = *m->GetRegisters(VcpuId(0));
  std::vector<std::string> trace = Trace(*m, Continue);
  auto at = [&](const char* sym) { return absl::StrFormat("0x%x", Sym(g, sym)); };
  const std::string cr4 = absl::StrFormat("0x%x", start.cr4);
  const std::string cr0 = absl::StrFormat("0x%x", start.cr0);
  EXPECT_THAT(
      trace,
      ElementsAre("vcpu=0 view=0 cpuid rip=" + at("cpuid") + " leaf=0x1 subleaf=0x0",
                  HasSubstr("cpuid rip=0x"),  // leaf 7
                  "vcpu=0 view=0 io rip=" + at("in") + " port=0x60 size=1 in",
                  "vcpu=0 view=0 io rip=" + at("out") + " port=0x80 size=1 out",
                  "vcpu=0 view=0 vmcall rip=" + at("vmcall"),
                  "vcpu=0 view=0 msr_write rip=" + at("wrmsr") +
                      " msr=0xc0000102 old=0x0 new=0x5566778811223344",
                  HasSubstr("descriptor_table rip=0x"),  // sgdt
                  "vcpu=0 view=0 descriptor_table rip=" + at("lgdt") + " op=lgdt",
                  HasSubstr("op=sidt"), HasSubstr("op=lidt"), HasSubstr("op=sldt"),
                  HasSubstr("op=str"),
                  "vcpu=0 view=0 cr_write rip=" + at("mov_cr4") + " cr4 old=" + cr4 + " new=" + cr4,
                  "vcpu=0 view=0 cr_write rip=" + at("mov_cr0") + " cr0 old=" + cr0 + " new=" + cr0,
                  absl::StrFormat("vcpu=0 view=0 cr_write rip=0x%x cr0 old=%s new=%s",
                                  Sym(g, "mov_cr0") + 3, cr0, cr0),  // lmsw ax
                  absl::StrFormat("vcpu=0 view=0 cr_write rip=0x%x cr0 old=%s new=%s",
                                  Sym(g, "mov_cr0") + 6, cr0, cr0),  // clts
                  HasSubstr("port=0xe9 size=1 out"), HasSubstr("port=0xe9 size=1 out")));
  EXPECT_EQ(m->console(), "ok");
  amd64::Registers end = *m->GetRegisters(VcpuId(0));
  EXPECT_EQ(end.kernel_gs_base, 0x5566778811223344u);
  EXPECT_EQ(end.rip, Sym(g, "done") + 1);
  EXPECT_EQ(end.gdtr, start.gdtr);
}

TEST(EventsTest, DenySuppressesMsrWrite) {
  auto m = NewMachine();
  StandardGuest g = Guest(*m, "instructions");
  ASSERT_TRUE(m->SetMsrWriteMonitor(true).ok());
  std::vector<std::string> trace = Trace(*m, [](const Exit&) {
    return Response{EventAction::kDeny, std::nullopt, std::nullopt};
  });
  ASSERT_EQ(trace.size(), 1u);
  EXPECT_EQ(m->GetRegisters(VcpuId(0))->kernel_gs_base, 0u);
  EXPECT_EQ(m->console(), "ok");
}

TEST(EventsTest, VmcallWithoutMonitorIsUndefinedOpcodeInGuest) {
  // The guest's #UD handler skips the VMCALL.
  auto m = NewMachine();
  StandardGuest g = Guest(*m, "instructions");
  EXPECT_TRUE(Trace(*m, Continue).empty());
  EXPECT_EQ(m->console(), "ok");
}

TEST(EventsTest, Cr3WritesInContextSwitch) {
  auto m = NewMachine();
  GuestBuilder b(m.get());
  const GuestProgram* prog = *FindProgram("cr3_switch");
  AddressSpace* spaces[2] = {*b.CreateAddressSpace(4), *b.CreateAddressSpace(4)};
  absl::StatusOr<Pa> code = Pa(0);
  LoadedProgram loaded;
  const uint64_t probe = 0x400000;
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(b.MapSystemTables(*spaces[i]).ok());
    if (i == 0) {
      loaded = *LoadProgram(b, *spaces[0], *prog, Va(kProgramVa));
    } else {
      ASSERT_TRUE(spaces[1]->Map(Va(kProgramVa), loaded.pa, 4096, 0).ok());
    }
    Gfn frame = *b.AllocateFrame();
    const uint64_t value = i + 1;
    ASSERT_TRUE(m->WritePhys(Pa(frame.value() * 4096),
                             absl::MakeSpan(reinterpret_cast<const uint8_t*>(&value), 8))
                    .ok());
    ASSERT_TRUE(spaces[i]->Map(Va(probe), Pa(frame.value() * 4096), 4096, 0).ok());
  }
  ASSERT_TRUE(b.StartVcpu(VcpuId(0), *spaces[0], loaded.entry(), Va(0)).ok());
  amd64::GpRegisters gp = m->GetRegisters(VcpuId(0))->gp();
  gp.rdi = spaces[0]->cr3();
  gp.rsi = spaces[1]->cr3();
  gp.rcx = probe;
  gp.rdx = 3;
  ASSERT_TRUE(m->SetGpRegisters(VcpuId(0), gp).ok());
  ASSERT_TRUE(m->SetControlRegisterMonitor(3, true).ok());
  std::vector<std::string> trace = Trace(*m, Continue);
  const std::string a = absl::StrFormat("0x%x", spaces[0]->cr3());
  const std::string bb = absl::StrFormat("0x%x", spaces[1]->cr3());
  std::vector<std::string> want;
  for (int i = 0; i < 3; ++i) {
    want.push_back(absl::StrFormat("vcpu=0 view=0 cr_write rip=0x%x cr3 old=%s new=%s",
                                   kProgramVa + 6, a, bb));
    want.push_back(absl::StrFormat("vcpu=0 view=0 cr_write rip=0x%x cr3 old=%s new=%s",
                                   kProgramVa + 12, bb, a));
  }
  EXPECT_THAT(trace, ElementsAreArray(want));
  amd64::Registers end = *m->GetRegisters(VcpuId(0));
  EXPECT_EQ(end.r8, 6u);  // space 1 reads 2, three times
  EXPECT_EQ(end.r9, 3u);  // space 0 reads 1, three times
  EXPECT_EQ(end.cr3, spaces[0]->cr3());
}

TEST(EventsTest, DeniedCr0WritesKeepPagingOn) {
  auto m = NewMachine();
  StandardGuest g = Guest(*m, "instructions");
  ASSERT_TRUE(m->SetControlRegisterMonitor(0, true).ok());
  const uint64_t cr0 = m->GetRegisters(VcpuId(0))->cr0;
  // Deny the CR0 writes (MOV, LMSW, CLTS) after changing RAX to a value that
  // would disable paging: the guest must keep running.
  std::vector<std::string> trace = Trace(*m, [&](const Exit& e) {
    amd64::GpRegisters gp = m->GetRegisters(e.vcpu)->gp();
    gp.rax = 0x11;
    return Response{EventAction::kDeny, std::nullopt, gp};
  });
  ASSERT_EQ(trace.size(), 3u);
  EXPECT_EQ(m->GetRegisters(VcpuId(0))->cr0, cr0);
  EXPECT_EQ(m->console(), "ok");
}

TEST(EventsTest, SingleStepReportsEachInstruction) {
  auto m = NewMachine();
  StandardGuest g = Guest(*m, "loop_call");
  SetGp(*m, VcpuId(0), &amd64::GpRegisters::rdi, 1);
  ASSERT_TRUE(m->SetSingleStep(VcpuId(0), true).ok());
  std::vector<uint64_t> rips;
  for (int i = 0; i < 4; ++i) {
    absl::StatusOr<RunResult> r = m->Run(100);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->status, RunStatus::kExit);
    EXPECT_EQ(r->exit->kind, ExitKind::kSingleStep);
    rips.push_back(r->exit->rip);
    ASSERT_TRUE(m->Respond({}).ok());
  }
  const uint64_t entry = g.program.entry().value();
  // test rdi,rdi (3); jnz (2) skips mov edi,100 (5); xor ebx,ebx (2); call func.
  EXPECT_THAT(rips, ElementsAre(entry + 3, entry + 10, entry + 12, Sym(g, "func")));
  // Toggling single-step off through the response lets it run to the end.
  absl::StatusOr<RunResult> r = m->Run(100);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(m->Respond({EventAction::kSingleStep, std::nullopt, std::nullopt}).ok());
  r = m->Run(1'000'000);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, RunStatus::kAllHalted);
  EXPECT_EQ(m->GetRegisters(VcpuId(0))->rbx, 1u);
}

TEST(EventsTest, InjectedPageFaultIsServicedByGuestHandler) {
  auto m = NewMachine();
  StandardGuest g = Guest(*m, "demand_paging");
  const uint64_t region = 0x40000000;
  Pa pt = *g.space->PageTableFor(Va(region));
  ASSERT_TRUE(g.space->Map(Va(0xffffc00000000000ull), pt, 4096, page_flags::kWritable).ok());
  Pa pool = *g.builder->AllocateFrames(8);
  const uint64_t pf_data[2] = {0xffffc00000000000ull, pool.value()};
  ASSERT_TRUE(m->WritePhys(Pa(SymPa(g, "pf_data")),
                           absl::MakeSpan(reinterpret_cast<const uint8_t*>(pf_data), 16))
                  .ok());
  amd64::GpRegisters gp = m->GetRegisters(VcpuId(0))->gp();
  gp.rdi = region;
  gp.rsi = 4;
  ASSERT_TRUE(m->SetGpRegisters(VcpuId(0), gp).ok());
  // Inject a #PF (write, not present) for the third page before the guest runs.
  ASSERT_TRUE(m->InjectInterrupt(VcpuId(0), Interrupt{14, 2, region + 0x2000, 0}).ok());
  absl::StatusOr<RunResult> r = m->Run(1'000'000);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, RunStatus::kAllHalted);
  const uint64_t data = SymPa(g, "pf_data");
  EXPECT_EQ(ReadQ(*m, data + 16), 4u);               // 1 injected + 3 real faults
  EXPECT_EQ(ReadQ(*m, data + 24), 2u);               // last error code: write, not present
  EXPECT_EQ(ReadQ(*m, data + 32), region + 0x3000);  // last CR2
  // The injected fault mapped page 2 to the first pool frame.
  EXPECT_EQ(*g.space->Translate(Va(region + 0x2000)), pool);
  EXPECT_EQ(*g.space->Translate(Va(region)), pool + 0x1000);
  amd64::Registers end = *m->GetRegisters(VcpuId(0));
  EXPECT_EQ(end.r12, 4u + 3 + 2 + 1);
  EXPECT_EQ(end.rip, Sym(g, "done") + 1);
  EXPECT_EQ(end.cr2, region + 0x3000);
}

TEST(EventsTest, UserModeSyscallsAndReinjectedBreakpoint) {
  auto m = NewMachine();
  StandardGuest g =
      Guest(*m, "user_mode", {.program_flags = page_flags::kWritable | page_flags::kUser});
  Pa ustack = *g.builder->AllocateFrames(2);
  ASSERT_TRUE(g.space
                  ->Map(Va(kUserStackTopVa - 0x2000), ustack, 0x2000,
                        page_flags::kWritable | page_flags::kUser | page_flags::kNoExecute)
                  .ok());
  amd64::GpRegisters gp = m->GetRegisters(VcpuId(0))->gp();
  gp.rdi = 3;
  gp.rsi = kUserStackTopVa;
  ASSERT_TRUE(m->SetGpRegisters(VcpuId(0), gp).ok());
  ASSERT_TRUE(m->SetBreakpointMonitor(true).ok());
  uint16_t cs_at_bp = 0;
  std::vector<std::string> trace = Trace(*m, [&](const Exit& e) {
    cs_at_bp = m->GetRegisters(e.vcpu)->cs.selector;
    return Response{EventAction::kReinjectInterrupt, std::nullopt, std::nullopt};
  });
  EXPECT_THAT(trace, ElementsAre(absl::StrFormat("vcpu=0 view=0 breakpoint rip=0x%x gpa=0x%x len=1",
                                                 Sym(g, "bp_user"), SymPa(g, "bp_user"))));
  EXPECT_EQ(cs_at_bp, kUserCs);
  const uint64_t kdata = SymPa(g, "kdata");
  EXPECT_EQ(ReadQ(*m, kdata), 3u);       // system calls
  EXPECT_EQ(ReadQ(*m, kdata + 8), 1u);   // #BP delivered to the kernel
  EXPECT_EQ(ReadQ(*m, kdata + 16), 1u);  // the user VMCALL was a #UD
  amd64::Registers end = *m->GetRegisters(VcpuId(0));
  EXPECT_EQ(end.rip, Sym(g, "done") + 1);
  EXPECT_EQ(end.cs.selector, kKernelCs);
}

StandardGuest UserGuest(Machine& m) {
  StandardGuest g =
      Guest(m, "user_mode", {.program_flags = page_flags::kWritable | page_flags::kUser});
  Pa ustack = *g.builder->AllocateFrames(2);
  EXPECT_TRUE(g.space
                  ->Map(Va(kUserStackTopVa - 0x2000), ustack, 0x2000,
                        page_flags::kWritable | page_flags::kUser | page_flags::kNoExecute)
                  .ok());
  amd64::GpRegisters gp = m.GetRegisters(VcpuId(0))->gp();
  gp.rdi = 2;
  gp.rsi = kUserStackTopVa;
  EXPECT_TRUE(m.SetGpRegisters(VcpuId(0), gp).ok());
  return g;
}

TEST(EventsTest, UserVmcallNeedsAllowUser) {
  for (bool allow_user : {false, true}) {
    auto m = NewMachine();
    StandardGuest g = UserGuest(*m);
    ASSERT_TRUE(m->SetVmcallMonitor(true, allow_user).ok());
    std::vector<std::string> trace = Trace(*m, Continue);
    if (allow_user) {
      EXPECT_THAT(trace, ElementsAre(absl::StrFormat("vcpu=0 view=0 vmcall rip=0x%x",
                                                     Sym(g, "vmcall_user"))));
    } else {
      EXPECT_TRUE(trace.empty());
    }
    EXPECT_EQ(ReadQ(*m, SymPa(g, "kdata") + 16), allow_user ? 0u : 1u);
  }
}

TEST(EventsTest, MsrMonitorByIndex) {
  for (uint32_t index : {0xc0000082u, 0xc0000102u}) {
    auto m = NewMachine();
    StandardGuest g = Guest(*m, "instructions");
    ASSERT_TRUE(m->SetMsrWriteMonitor(index, true).ok());
    std::vector<std::string> trace = Trace(*m, Continue);
    EXPECT_EQ(trace.size(), index == 0xc0000102u ? 1u : 0u) << index;
  }
}

TEST(EventsTest, InterceptedPageFaultsReinjected) {
  auto m = NewMachine();
  StandardGuest g = Guest(*m, "demand_paging");
  const uint64_t region = 0x40000000;
  Pa pt = *g.space->PageTableFor(Va(region));
  ASSERT_TRUE(g.space->Map(Va(0xffffc00000000000ull), pt, 4096, page_flags::kWritable).ok());
  Pa pool = *g.builder->AllocateFrames(4);
  const uint64_t pf_data[2] = {0xffffc00000000000ull, pool.value()};
  ASSERT_TRUE(m->WritePhys(Pa(SymPa(g, "pf_data")),
                           absl::MakeSpan(reinterpret_cast<const uint8_t*>(pf_data), 16))
                  .ok());
  amd64::GpRegisters gp = m->GetRegisters(VcpuId(0))->gp();
  gp.rdi = region;
  gp.rsi = 2;
  ASSERT_TRUE(m->SetGpRegisters(VcpuId(0), gp).ok());
  ASSERT_TRUE(m->SetInterruptMonitor(14, true).ok());
  std::vector<uint64_t> cr2s;
  std::vector<std::string> trace = Trace(*m, [&](const Exit& e) {
    cr2s.push_back(m->GetRegisters(e.vcpu)->cr2);
    return Response{EventAction::kReinjectInterrupt, std::nullopt, std::nullopt};
  });
  // Each first write faults once (P=0, W=1) at `mov %rcx, (%rbx)`.
  const std::string fault = absl::StrFormat(
      "vcpu=0 view=0 interrupt rip=0x%x vector=14 error_code=0x2", g.program.entry().value() + 9);
  EXPECT_THAT(trace, ElementsAre(fault, fault));
  EXPECT_THAT(cr2s, ElementsAre(region, region + 0x1000));
  EXPECT_EQ(ReadQ(*m, SymPa(g, "pf_data") + 16), 2u);
  EXPECT_EQ(m->GetRegisters(VcpuId(0))->r12, 3u);
}

}  // namespace
}  // namespace vmi::sim
