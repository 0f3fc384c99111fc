#include "drivers/sim/sim_driver.h"

#include <string>
#include <vector>

#include "core/event_loop.h"
#include "core/session.h"
#include "core/vmi_core.h"
#include "drivers/sim/machine_reader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmi::sim {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Core = VmiCore<SimDriver>;

SimDriver Boot(absl::string_view program, uint16_t vcpus = 1, int levels = 4) {
  MachineOptions m;
  m.ram_size = 16 << 20;
  m.vcpu_count = vcpus;
  StandardGuestOptions g;
  g.paging_levels = levels;
  SimDriverOptions o;
  o.wait_instructions = 2'000'000;  // deterministic timeouts
  absl::StatusOr<SimDriver> d = SimDriver::Boot(program, m, g, o);
  EXPECT_TRUE(d.ok()) << d.status();
  return *std::move(d);
}

Va Symbol(SimDriver& d, absl::string_view name) {
  absl::StatusOr<Va> va = d.guest()->program.Symbol(name);
  EXPECT_TRUE(va.ok()) << va.status();
  return *va;
}

TEST(SimDriverTest, InfoRegistersAndTranslationAgreeWithTheBuilder) {
  for (int levels : {4, 5}) {
    Core core(Boot("loop_call", 2, levels));
    auto info = core.Info();
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->vcpus, 2);
    EXPECT_EQ(info->page_size, 4096u);
    auto regs = core.GetRegisters(VcpuId(1));
    ASSERT_TRUE(regs.ok()) << regs.status();
    EXPECT_EQ(Amd64::PagingModeOf(*regs).levels(), levels);
    core.SetPagingMode(Amd64::PagingModeOf(*regs));
    const Va entry = core.driver().guest()->program.entry();
    EXPECT_EQ(regs->rip, entry.value());
    auto pa = core.Translate(AddressContext(entry, Amd64::TranslationRoot(*regs)));
    ASSERT_TRUE(pa.ok()) << pa.status();
    EXPECT_EQ(*pa, *core.driver().guest()->space->Translate(entry));
    EXPECT_EQ(*pa, core.driver().guest()->program.pa);
  }
}

TEST(SimDriverTest, PagesAreLiveAndWritesReachTheGuest) {
  SimDriver d = Boot("mem_access");
  const Pa data = *d.guest()->program.SymbolPa("watched_data");
  const Gfn gfn(data.value() >> 12);
  auto page = d.ReadPage(gfn);
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->is_live());
  uint64_t v;
  std::memcpy(&v, page->data() + (data.value() & 0xfff), 8);
  EXPECT_EQ(v, 0x1111u);
  const uint64_t forty_one = 41;
  ASSERT_TRUE(d.WritePage(gfn, data.value() & 0xfff,
                          absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(&forty_one), 8))
                  .ok());
  // The guest reads 41, adds one and stores it at +8.
  EXPECT_TRUE(absl::IsDeadlineExceeded(
      d.WaitForEvent(absl::Seconds(1), [](const VmiEvent<Amd64>&) {
        return VmiEventResponse<Amd64>::Continue();
      })));
  std::memcpy(&v, page->data() + (data.value() & 0xfff) + 8, 8);
  EXPECT_EQ(v, 42u);
  EXPECT_FALSE(d.WritePage(gfn, 4090, std::vector<uint8_t>(8, 0)).ok());
}

// Breakpoint on `func`, stepped over with single-step and re-armed: exact
// trace of the first hits, then RBX proves the guest ran every call.
struct BreakpointHandler {
  using Output = int;
  Pa bp_pa;
  Va bp_va;
  int hits = 0;
  int steps = 0;
  std::vector<std::string> trace;

  VmiEventResponse<Amd64> HandleEvent(VmiContext<SimDriver>& ctx) {
    if (const auto* i = std::get_if<amd64::InterruptEvent>(&ctx.reason())) {
      EXPECT_EQ(i->interrupt.vector, 3);
      EXPECT_EQ(ctx.registers().rip, bp_va.value());
      ++hits;
      if (trace.size() < 4) trace.push_back(absl::StrFormat("bp rbx=%u", ctx.registers().rbx));
      EXPECT_TRUE(ctx.core().WriteU8(AccessContext::Physical(bp_pa), original).ok());
      return VmiEventResponse<Amd64>::ToggleSingleStep();
    }
    if (std::holds_alternative<amd64::SingleStepEvent>(ctx.reason())) {
      ++steps;
      if (trace.size() < 4) trace.push_back("step");
      EXPECT_TRUE(ctx.core().WriteU8(AccessContext::Physical(bp_pa), 0xcc).ok());
      return VmiEventResponse<Amd64>::ToggleSingleStep();
    }
    ADD_FAILURE() << amd64::EventReasonToString(ctx.reason());
    return VmiEventResponse<Amd64>::Continue();
  }
  std::optional<int> Poll() { return hits >= 25 ? std::optional<int>(hits) : std::nullopt; }
  uint8_t original = 0;
};

TEST(SimDriverTest, BreakpointRoundTripsThroughTheEventLoop) {
  Core core(Boot("loop_call"));
  const Va func = Symbol(core.driver(), "func");
  const Pa pa = *core.driver().guest()->space->Translate(func);
  BreakpointHandler h;
  h.bp_pa = pa;
  h.bp_va = func;
  h.original = *core.ReadU8(AccessContext::Physical(pa));
  ASSERT_TRUE(core.WriteU8(AccessContext::Physical(pa), 0xcc).ok());
  ASSERT_TRUE(core.MonitorEnable(amd64::MonitorInterrupt{3}).ok());
  ASSERT_TRUE(core.MonitorEnable(amd64::MonitorSingleStep{}).ok());
  VmiSession<SimDriver> session(core);
  auto result = RunEventLoop(session, h);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(**result, 25);
  EXPECT_EQ(h.steps, 24);
  EXPECT_THAT(h.trace, ElementsAre("bp rbx=0", "step", "bp rbx=1", "step"));
  // The loop teardown reset the monitors; put the byte back and finish.
  ASSERT_TRUE(core.WriteU8(AccessContext::Physical(pa), h.original).ok());
  EXPECT_TRUE(absl::IsDeadlineExceeded(core.WaitForEvent(absl::Seconds(1), [](const auto&) {
    return VmiEventResponse<Amd64>::Continue();
  })));
  EXPECT_EQ(core.GetRegisters(VcpuId(0))->rbx, 100u);
}

// The guest frame of RIP by the guest builder's own translation (an oracle
// independent of the driver's walk).
std::optional<Gfn> FrameOf(SimDriver& d, uint64_t rip) {
  absl::StatusOr<Pa> pa = d.guest()->space->Translate(Va(rip));
  if (!pa.ok()) return std::nullopt;
  return Gfn(pa->value() >> 12);
}

TEST(SimDriverTest, Int3AndSingleStepCarryTheGuestFrameOfRip) {
  for (int levels : {4, 5}) {
    SimDriver d = Boot("loop_call", 1, levels);
    const Va func = Symbol(d, "func");
    const Pa pa = *d.guest()->space->Translate(func);
    const Gfn frame(pa.value() >> 12);
    const uint8_t original = d.ReadPage(frame)->data()[pa.value() & 0xfff];
    const uint8_t int3 = 0xcc;
    ASSERT_TRUE(d.WritePage(frame, pa.value() & 0xfff, absl::MakeConstSpan(&int3, 1)).ok());
    ASSERT_TRUE(d.MonitorEnable(amd64::MonitorInterrupt{3}).ok());
    ASSERT_TRUE(d.MonitorEnable(amd64::MonitorSingleStep{}).ok());

    std::vector<std::string> trace;
    ASSERT_TRUE(
        d.WaitForEvent(absl::Seconds(1), [&](const VmiEvent<Amd64>& e) {
           trace.push_back(amd64::EventReasonToString(e.reason));
           const auto* bp = std::get_if<amd64::InterruptEvent>(&e.reason);
           EXPECT_NE(bp, nullptr);
           if (bp != nullptr) {
             EXPECT_EQ(bp->instruction_gfn, frame);
           }
           EXPECT_TRUE(
               d.WritePage(frame, pa.value() & 0xfff, absl::MakeConstSpan(&original, 1)).ok());
           return VmiEventResponse<Amd64>::ToggleSingleStep();
         }).ok());
    // Three steps from func on: each event names the frame of the next
    // instruction (RIP after the step).
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(d.WaitForEvent(absl::Seconds(1), [&](const VmiEvent<Amd64>& e) {
                     const auto* step = std::get_if<amd64::SingleStepEvent>(&e.reason);
                     EXPECT_NE(step, nullptr) << amd64::EventReasonToString(e.reason);
                     if (step != nullptr) {
                       EXPECT_TRUE(step->instruction_gfn.has_value());
                       EXPECT_EQ(step->instruction_gfn, FrameOf(d, e.registers.rip));
                     }
                     return i == 2 ? VmiEventResponse<Amd64>::ToggleSingleStep()
                                   : VmiEventResponse<Amd64>::Continue();
                   }).ok());
    }
    EXPECT_EQ(trace, std::vector<std::string>{absl::StrFormat(
                         "interrupt(#BP vector=3 software-exception instruction_length=1 "
                         "instruction_gfn=%s)",
                         frame.ToString())})
        << levels;
  }
}

// A hidden breakpoint: the INT3 is in a shadow copy the view maps in place of
// the code frame. The event names the guest's frame, not the shadow.
TEST(SimDriverTest, Int3InAShadowFrameCarriesTheGuestFrame) {
  SimDriver d = Boot("loop_call");
  const Va func = Symbol(d, "func");
  const Pa pa = *d.guest()->space->Translate(func);
  const Gfn frame(pa.value() >> 12);
  absl::StatusOr<Gfn> shadow = d.AllocateGfn();
  ASSERT_TRUE(shadow.ok()) << shadow.status();
  ASSERT_NE(*shadow, frame);
  const MappedPage code = *d.ReadPage(frame);
  ASSERT_TRUE(d.WritePage(*shadow, 0, absl::MakeConstSpan(code.data(), code.size())).ok());
  const uint8_t int3 = 0xcc;
  ASSERT_TRUE(d.WritePage(*shadow, pa.value() & 0xfff, absl::MakeConstSpan(&int3, 1)).ok());
  absl::StatusOr<View> view = d.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(view.ok()) << view.status();
  ASSERT_TRUE(d.ChangeViewGfn(*view, frame, *shadow).ok());
  ASSERT_TRUE(d.SwitchToView(*view).ok());
  ASSERT_TRUE(d.MonitorEnable(amd64::MonitorInterrupt{3}).ok());

  int hits = 0;
  ASSERT_TRUE(d.WaitForEvent(absl::Seconds(1), [&](const VmiEvent<Amd64>& e) {
                 ++hits;
                 EXPECT_EQ(e.view, *view);
                 EXPECT_EQ(e.registers.rip, func.value());
                 const auto* bp = std::get_if<amd64::InterruptEvent>(&e.reason);
                 EXPECT_NE(bp, nullptr);
                 if (bp != nullptr) {
                   EXPECT_EQ(bp->instruction_gfn, frame);
                 }
                 // Run on in the default view, where the original code is.
                 return VmiEventResponse<Amd64>::Continue().WithView(kDefaultView);
               }).ok());
  EXPECT_EQ(hits, 1);
  ASSERT_TRUE(d.ResetState().ok());
}

TEST(SimDriverTest, InstructionGfnIsEmptyWhereRipDoesNotTranslate) {
  SimDriver d = Boot("loop_call");
  amd64::Registers regs = *d.Registers(VcpuId(0));
  EXPECT_EQ(InstructionGfn(d.machine(), regs), FrameOf(d, regs.rip));
  EXPECT_TRUE(InstructionGfn(d.machine(), regs).has_value());
  regs.rip = 0x7fff12345000;  // nothing mapped there
  ASSERT_FALSE(FrameOf(d, regs.rip).has_value());
  EXPECT_EQ(InstructionGfn(d.machine(), regs), std::nullopt);
  // ReasonFromExit passes what it is given, to breakpoints and steps only.
  Exit step;
  step.kind = ExitKind::kSingleStep;
  EXPECT_EQ(SimDriver::ReasonFromExit(step, regs, std::nullopt),
            amd64::EventReason(amd64::SingleStepEvent{}));
  EXPECT_EQ(SimDriver::ReasonFromExit(step, regs, Gfn(9)),
            amd64::EventReason(amd64::SingleStepEvent{Gfn(9)}));
  Exit cpuid;
  cpuid.kind = ExitKind::kCpuid;
  EXPECT_EQ(SimDriver::ReasonFromExit(cpuid, regs, Gfn(9)),
            amd64::EventReason(amd64::CpuidEvent{}));
  // A page reader over the machine's RAM ends where the RAM does.
  MachinePageReader reader(d.machine());
  EXPECT_TRUE(reader.ReadPage(d.machine().max_gfn()).ok());
  EXPECT_EQ(reader.ReadPage(d.machine().max_gfn() + 1).status().code(),
            absl::StatusCode::kOutOfRange);
}

TEST(SimDriverTest, WriteWatchWithEmulatePerformsTheWriteOnce) {
  Core core(Boot("mem_access"));
  SimDriver& d = core.driver();
  const Va data = Symbol(d, "watched_data");
  const Gfn gfn(d.guest()->space->Translate(data)->value() >> 12);
  ASSERT_TRUE(core.SetMemoryAccess(gfn, kDefaultView, MemoryAccess::RX()).ok());
  std::vector<std::string> trace;
  for (int i = 0; i < 4; ++i) {
    absl::Status s = core.WaitForEvent(absl::Seconds(1), [&](const VmiEvent<Amd64>& e) {
      const auto& m = std::get<amd64::MemoryAccessEvent>(e.reason);
      trace.push_back(absl::StrFormat("%s gla=%s rip=%s", m.access.ToString(),
                                      m.gla_valid ? m.gla.ToString() : "?", Va(e.registers.rip).ToString()));
      return VmiEventResponse<Amd64>::Emulate();
    });
    if (absl::IsDeadlineExceeded(s)) break;
    ASSERT_TRUE(s.ok()) << s;
  }
  const Va write_insn = Symbol(d, "write_insn");
  // Two writes (data+8, data+16), each reported once, then the guest halts.
  EXPECT_THAT(trace, ElementsAre(absl::StrFormat("-w- gla=%s rip=%s", (data + 8).ToString(),
                                                 write_insn.ToString()),
                                 ::testing::StartsWith("-w- gla=" + (data + 16).ToString())));
  EXPECT_EQ(*core.ReadU64(AccessContext::Virtual(data + 8, Pa(core.GetRegisters(VcpuId(0))->cr3))),
            0x1112u);
  EXPECT_EQ(*core.GetMemoryAccess(gfn, kDefaultView), MemoryAccess::RX());
}

TEST(SimDriverTest, GfnAllocationPastTheMaximumAndFree) {
  SimDriver d = Boot("loop_call");
  const Gfn max = d.Info()->max_gfn;
  auto g = d.AllocateGfn();
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(*g, max + 1);
  EXPECT_EQ(d.Info()->max_gfn, max + 1);
  EXPECT_TRUE(d.ReadPage(*g).ok());
  EXPECT_FALSE(d.ReadPage(max + 2).ok());
  ASSERT_TRUE(d.FreeGfn(*g).ok());
  auto gone = d.ReadPage(*g);
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(gone.status().message(), HasSubstr("not populated"));
  EXPECT_FALSE(d.SetMemoryAccess(*g, kDefaultView, MemoryAccess::R()).ok());
  EXPECT_TRUE(d.AllocateGfnAt(*g).ok());
  EXPECT_EQ(d.AllocateGfnAt(*g).code(), absl::StatusCode::kAlreadyExists);
  // An ordinary frame can be freed and re-populated too.
  ASSERT_TRUE(d.FreeGfn(Gfn(0x300)).ok());
  EXPECT_FALSE(d.ReadPage(Gfn(0x300)).ok());
  EXPECT_TRUE(d.AllocateGfnAt(Gfn(0x300)).ok());
}

TEST(SimDriverTest, ResetStateLeavesNoMonitorViewOrPermission) {
  SimDriver d = Boot("loop_call");
  ASSERT_TRUE(d.MonitorEnable(amd64::MonitorInterrupt{3}).ok());
  ASSERT_TRUE(d.MonitorEnable(amd64::MonitorCpuid{}).ok());
  auto view = d.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(view.ok()) << view.status();
  ASSERT_TRUE(d.SwitchToView(*view).ok());
  ASSERT_TRUE(d.SetMemoryAccess(Gfn(0x20), kDefaultView, MemoryAccess::R()).ok());
  ASSERT_TRUE(d.SetMemoryAccessWithOptions(Gfn(0x21), kDefaultView, MemoryAccess::RX(),
                                           MemoryAccessOptions::IgnorePageWalkUpdates())
                  .ok());
  EXPECT_EQ(d.GetMemoryAccessWithOptions(Gfn(0x21), kDefaultView)->second,
            MemoryAccessOptions::IgnorePageWalkUpdates());
  ASSERT_TRUE(d.ResetState().ok());
  EXPECT_EQ(*d.GetMemoryAccess(Gfn(0x20), kDefaultView), MemoryAccess::RWX());
  EXPECT_EQ(d.GetMemoryAccessWithOptions(Gfn(0x21), kDefaultView)->second,
            MemoryAccessOptions::None());
  EXPECT_FALSE(d.DestroyView(*view).ok());  // already gone
  EXPECT_EQ(*d.machine().VcpuView(VcpuId(0)), kDefaultView);
  // With the breakpoint monitor off the guest runs to its end with no event.
  EXPECT_TRUE(absl::IsDeadlineExceeded(d.WaitForEvent(absl::Seconds(1), [](const auto&) {
    ADD_FAILURE() << "unexpected event";
    return VmiEventResponse<Amd64>::Continue();
  })));
}

// A fast singlestep answered but not yet run would step in a view that
// ResetState destroys: the reset cancels it and the guest resumes in view 0.
TEST(SimDriverTest, ResetStateCancelsAPendingFastSingleStep) {
  SimDriver d = Boot("mem_access");
  const Pa data = *d.guest()->program.SymbolPa("watched_data");
  auto step_view = d.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(step_view.ok()) << step_view.status();
  ASSERT_TRUE(d.SetMemoryAccess(Gfn(data.value() >> 12), kDefaultView, MemoryAccess::RX()).ok());
  int events = 0;
  ASSERT_TRUE(d.WaitForEvent(absl::Seconds(1), [&](const VmiEvent<Amd64>&) {
                 ++events;
                 return VmiEventResponse<Amd64>::FastSingleStep(*step_view);
               }).ok());
  ASSERT_EQ(events, 1);
  ASSERT_TRUE(d.ResetState().ok());
  EXPECT_FALSE(d.machine().views().Exists(*step_view));
  // The write is retried in view 0, now writable: no event, and it lands.
  EXPECT_TRUE(absl::IsDeadlineExceeded(d.WaitForEvent(absl::Seconds(1), [](const auto&) {
    ADD_FAILURE() << "unexpected event";
    return VmiEventResponse<Amd64>::Continue();
  })));
  uint64_t v = 0;
  ASSERT_TRUE(d.machine().ReadPhys(Pa(data.value() + 8), absl::MakeSpan(reinterpret_cast<uint8_t*>(&v), 8)).ok());
  EXPECT_EQ(v, 0x1112u);
}

TEST(SimDriverTest, PauseNestsAndPausedWaitsTimeOut) {
  SimDriver d = Boot("loop_call");
  ASSERT_TRUE(d.Pause().ok());
  ASSERT_TRUE(d.Pause().ok());
  ASSERT_TRUE(d.Resume().ok());
  EXPECT_TRUE(d.machine().paused());
  EXPECT_TRUE(absl::IsDeadlineExceeded(
      d.WaitForEvent(absl::Seconds(5), [](const auto&) { return VmiEventResponse<Amd64>::Continue(); })));
  ASSERT_TRUE(d.Resume().ok());
  EXPECT_FALSE(d.machine().paused());
  EXPECT_EQ(d.Resume().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(SimDriverTest, BadOperandsAreClearErrors) {
  SimDriver d = Boot("loop_call");
  EXPECT_FALSE(d.Registers(VcpuId(7)).ok());
  EXPECT_FALSE(d.ReadPage(Gfn(1ull << 40)).ok());
  EXPECT_FALSE(d.SwitchToView(View(9)).ok());
  EXPECT_FALSE(d.SetMemoryAccess(Gfn(1), View(9), MemoryAccess::R()).ok());
  absl::Status xcr0 = d.MonitorEnable(amd64::MonitorControlRegister{amd64::ControlRegister::kXcr0});
  EXPECT_EQ(xcr0.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(xcr0.message(), HasSubstr("XSETBV"));
  EXPECT_TRUE(d.MonitorEnable(amd64::MonitorInterrupt{14}).ok());  // more than Xen can
  EXPECT_TRUE(d.ResetState().ok());
}

TEST(SimDriverTest, SameScenarioTwiceGivesTheSameTrace) {
  auto run = [] {
    SimDriver d = Boot("instructions");
    EXPECT_TRUE(d.MonitorEnable(amd64::MonitorCpuid{}).ok());
    EXPECT_TRUE(d.MonitorEnable(amd64::MonitorIo{}).ok());
    EXPECT_TRUE(d.MonitorEnable(amd64::MonitorHypercall{}).ok());
    EXPECT_TRUE(d.MonitorEnable(amd64::MonitorMsr{0xc0000082}).ok());
    EXPECT_TRUE(d.MonitorEnable(amd64::MonitorDescriptorAccess{}).ok());
    EXPECT_TRUE(d.MonitorEnable(amd64::MonitorControlRegister{amd64::ControlRegister::kCr4}).ok());
    std::vector<std::string> trace;
    for (int i = 0; i < 40; ++i) {
      absl::Status s = d.WaitForEvent(absl::Seconds(1), [&](const VmiEvent<Amd64>& e) {
        trace.push_back(absl::StrFormat("%s @%x", amd64::EventReasonToString(e.reason), e.registers.rip));
        return VmiEventResponse<Amd64>::Continue();
      });
      if (!s.ok()) break;
    }
    return trace;
  };
  const std::vector<std::string> first = run();
  EXPECT_GE(first.size(), 6u);
  EXPECT_EQ(first, run());
}

}  // namespace
}  // namespace vmi::sim
