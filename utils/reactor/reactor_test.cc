// Scenario tests: the reactor (interceptor or execute controller + page-table
// monitor + breakpoint manager) on real guest code in the sim, with exact
// event traces.

#include "utils/reactor/reactor.h"

#include <cstring>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "drivers/fault/fault_injecting_driver.h"
#include "drivers/recording/recording_driver.h"
#include "drivers/sim/sim_driver.h"
#include "drivers/xen/testing/simulated_xen.h"
#include "drivers/xen/xen_driver.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "utils/testing/scenario.h"

namespace vmi::utils {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using testing::BootScenario;
using testing::Scenario;
using testing::ScenarioOptions;

using Driver = RecordingDriver<sim::SimDriver>;

// `lock incq (%rsi); ret`.
constexpr uint8_t kTargetCode[] = {0xf0, 0x48, 0xff, 0x06, 0xc3};
constexpr uint64_t kBaseVa = 0x0000'5000'0000'0000ull;  // 1 GiB aligned, its own PML4 slot
constexpr uint64_t kWindowVa = 0xffff'c000'0000'0000ull;  // where the guest sees the edited table

// ctl offsets of remap_loop.
constexpr uint64_t kEntryPtr = 0, kValueA = 8, kValueB = 16, kTargetPtr = 24, kRounds = 32, kCalls = 48,
                   kRoundsDone = 56, kCallerIterations = 64;

struct RemapGuest {
  Scenario s;
  Va target;
  Pa page_a, page_b;  // the target's 4K page in either mapping
  uint64_t offset = 0;  // of the target in its 4K page
  Pa ctl;
};

// remap_loop, with the target function's page mapped by an entry at
// `table_level` (1: 4K PTE, 2: 2M PDE, 3: 1G PDPTE) that the guest unmaps and
// remaps, moving it between two frames.
absl::StatusOr<RemapGuest> BootRemap(int levels, int table_level, uint16_t vcpus, uint64_t rounds,
                                     bool bare_machine = false) {
  ScenarioOptions o;
  o.shared_ram = o.bare_machine = bare_machine;
  o.paging_levels = levels;
  o.vcpus = vcpus;
  // A second 1 GiB frame needs more than 1 GiB of guest RAM (untouched
  // RAM costs the host nothing).
  if (table_level == 3) o.ram_size = (uint64_t{1} << 30) + (32ull << 20);
  VMI_ASSIGN_OR_RETURN(Scenario s, BootScenario("remap_loop", o));
  sim::GuestBuilder& b = *s.guest.builder;
  RemapGuest g;
  Pa a, bb;
  uint64_t in_page = 0;  // target offset from the start of the mapping
  uint64_t value_flags = 0x3;
  switch (table_level) {
    case 1: {
      VMI_ASSIGN_OR_RETURN(Gfn fa, b.AllocateFrame());
      VMI_ASSIGN_OR_RETURN(Gfn fb, b.AllocateFrame());
      a = Amd64::PaFromGfn(fa);
      bb = Amd64::PaFromGfn(fb);
      in_page = 0x100;
      VMI_RETURN_IF_ERROR(s.guest.space->Map(Va(kBaseVa), a, 4096, sim::page_flags::kWritable));
      break;
    }
    case 2: {
      VMI_ASSIGN_OR_RETURN(a, b.AllocateFrames(512, 2 << 20));
      VMI_ASSIGN_OR_RETURN(bb, b.AllocateFrames(512, 2 << 20));
      in_page = 0x1100;
      value_flags |= 0x80;
      VMI_RETURN_IF_ERROR(
          s.guest.space->Map(Va(kBaseVa), a, 2 << 20, sim::page_flags::kWritable, sim::PageSize::k2M));
      break;
    }
    case 3: {
      VMI_ASSIGN_OR_RETURN(Gfn f, b.AllocateFrame());
      a = Pa(0);
      bb = Pa(uint64_t{1} << 30);
      in_page = Amd64::PaFromGfn(f).value() + 0x100;
      value_flags |= 0x80;
      VMI_RETURN_IF_ERROR(
          s.guest.space->Map(Va(kBaseVa), a, uint64_t{1} << 30, sim::page_flags::kWritable, sim::PageSize::k1G));
      break;
    }
    default:
      return absl::InvalidArgumentError("table level");
  }
  VMI_RETURN_IF_ERROR(s.machine().WritePhys(a + in_page, kTargetCode));
  VMI_RETURN_IF_ERROR(s.machine().WritePhys(bb + in_page, kTargetCode));
  g.target = Va(kBaseVa + in_page);
  g.offset = in_page & 0xfff;
  g.page_a = Pa((a.value() + in_page) & ~0xfffull);
  g.page_b = Pa((bb.value() + in_page) & ~0xfffull);
  VMI_ASSIGN_OR_RETURN(Pa entry, testing::EntryAddress(s.machine(), s.root(), levels, g.target, table_level));
  VMI_RETURN_IF_ERROR(
      s.guest.space->Map(Va(kWindowVa), Pa(entry.value() & ~0xfffull), 4096, sim::page_flags::kWritable));
  VMI_ASSIGN_OR_RETURN(g.ctl, s.SymbolPa("ctl"));
  VMI_RETURN_IF_ERROR(s.WriteQ(g.ctl + kEntryPtr, kWindowVa + (entry.value() & 0xfff)));
  VMI_RETURN_IF_ERROR(s.WriteQ(g.ctl + kValueA, a.value() | value_flags));
  VMI_RETURN_IF_ERROR(s.WriteQ(g.ctl + kValueB, bb.value() | value_flags));
  VMI_RETURN_IF_ERROR(s.WriteQ(g.ctl + kTargetPtr, g.target.value()));
  VMI_RETURN_IF_ERROR(s.WriteQ(g.ctl + kRounds, rounds));
  for (uint16_t v = 0; v < vcpus; ++v) VMI_RETURN_IF_ERROR(s.SetRdi(VcpuId(v), v));
  g.s = std::move(s);
  return g;
}

template <typename Core>
uint64_t Q(Core& core, Pa pa) {
  return core.ReadU64(AccessContext::Physical(pa)).value();
}

// ---------------------------------------------------------------------------
// The breakpoint's page unmapped, remapped, moved: pending and back, with
// every call of the function reported.

using RemapParam = std::tuple<int, int, int, bool>;  // paging levels, table level, vCPUs, execute controller

class RemapTest : public ::testing::TestWithParam<RemapParam> {};

std::string RemapName(const ::testing::TestParamInfo<RemapParam>& info) {
  static const char* kLevel[] = {"", "Pt", "Pd2M", "Pdpt1G"};
  return absl::StrCat(std::get<0>(info.param), "Level", kLevel[std::get<1>(info.param)], std::get<2>(info.param),
                      "Vcpu", std::get<3>(info.param) ? "Execute" : "Int3");
}

constexpr uint64_t kRoundCount = 4;

// The remap trace on any driver over the remap_loop guest `g`: `inner` owns
// its machine; `views` says which views that machine still has.
template <typename Inner, bool kExecute>
void RunRemapOn(const RemapGuest* g, Inner inner, const sim::ViewTable& views, int levels, uint16_t vcpus,
                bool strip_instruction_gfn) {
  using D = RecordingDriver<Inner>;
  using Controller = std::conditional_t<kExecute, ExecuteController<D>, Interceptor<D>>;
  const Pa root = g->s.root();
  auto log = std::make_shared<CallLog>();
  VmiCore<D> core(D(std::move(inner), log));
  if (strip_instruction_gfn) {
    // A driver that does not say which frame an INT3 came from (QEMU): the
    // reactor walks the guest's tables at each hit instead.
    core.driver().SetEventRewriter([](VmiEvent<Amd64>& e) {
      if (auto* i = std::get_if<amd64::InterruptEvent>(&e.reason)) i->instruction_gfn.reset();
    });
  }
  absl::StatusOr<std::unique_ptr<Reactor<D, Controller>>> created = Reactor<D, Controller>::Create(core);
  ASSERT_TRUE(created.ok()) << created.status();
  auto& reactor = **created;
  const View view = reactor.view();
  EXPECT_EQ(core.paging_mode().levels(), levels);

  std::vector<std::string> trace;        // vCPU 0's hits and every update
  uint64_t hits = 0, vcpu1_hits = 0;
  std::optional<Pa> placed;              // where the breakpoint is, as the updates say
  reactor.OnBreakpoint([&](const auto& hit) {
    ++hits;
    EXPECT_EQ(hit.breakpoints.size(), 1u);
    EXPECT_EQ(hit.event.view, view);
    EXPECT_EQ(placed, Amd64::PaFromGfn(Amd64::GfnFromPa(hit.pa)));  // never a stale frame
    if (hit.event.vcpu == VcpuId(0)) {
      trace.push_back(absl::StrFormat("hit %s", hit.pa));
    } else {
      ++vcpu1_hits;
    }
  });
  reactor.OnUpdate([&](const PageTableUpdate& u) {
    trace.push_back(u.ToString());
    if (u.kind == PageTableUpdate::Kind::kPageIn) {
      placed = u.pa;
    } else {
      placed.reset();
    }
  });
  BreakpointSpec spec{.key = 7, .view = view, .root = root, .va = g->target, .tag = 1};
  absl::StatusOr<BreakpointState> st = reactor.Insert(spec);
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(*st, BreakpointState::kActive);
  placed = g->page_a;

  for (int i = 0; i < 100000 && Q(core, g->ctl + kRoundsDone) < kRoundCount; ++i) {
    absl::Status s = reactor.Run(absl::Seconds(10));
    ASSERT_TRUE(s.ok() || absl::IsDeadlineExceeded(s)) << s;
  }
  ASSERT_EQ(Q(core, g->ctl + kRoundsDone), kRoundCount);
  // Let in-flight steps finish.
  for (int i = 0; i < 10 && reactor.in_flight() > 0; ++i) ASSERT_TRUE(reactor.Run(absl::Seconds(10)).ok());
  EXPECT_TRUE(reactor.last_error().ok()) << reactor.last_error();

  // vCPU 0's exact trace: per round a hit, the page going, the page coming
  // back (on the other frame every other round), a hit there.
  std::vector<std::string> want;
  const AddressContext page(Va(g->target.value() & ~0xfffull), root);
  Pa at = g->page_a;
  for (uint64_t r = 0; r < kRoundCount; ++r) {
    const Pa next = (r % 2 == 0) ? g->page_b : g->page_a;
    want.push_back(absl::StrFormat("hit %s", at + g->offset));
    want.push_back(PageTableUpdate{PageTableUpdate::Kind::kPageOut, view, page, at}.ToString());
    want.push_back(PageTableUpdate{PageTableUpdate::Kind::kPageIn, view, page, next}.ToString());
    want.push_back(absl::StrFormat("hit %s", next + g->offset));
    at = next;
  }
  EXPECT_THAT(trace, ElementsAreArray(want));
  // Every call that ran was reported (a hit whose step is still to come
  // counts as reported but not yet run).
  const uint64_t calls = Q(core, g->ctl + kCalls);
  EXPECT_GE(hits, calls);
  EXPECT_LE(hits, calls + vcpus);
  if (vcpus > 1) {
    EXPECT_GT(vcpu1_hits, 0u);
  }
  EXPECT_EQ(reactor.stats().table_writes, 2 * kRoundCount);
  EXPECT_EQ(reactor.stats().foreign_breakpoints, 0u);
  // Xen 4.17 cannot express IgnorePageWalkUpdates: the monitor fell back to
  // plain read-only table frames there.
  EXPECT_EQ(reactor.page_tables().ignores_page_walk_updates(), (!std::is_same_v<Inner, xen::XenDriver>));
  if constexpr (!kExecute) {
    // The driver says which guest frame each INT3 came from; with that stripped
    // every hit was placed by a walk, and found all the same.
    EXPECT_EQ(reactor.stats().frames_from_event, strip_instruction_gfn ? 0u : reactor.stats().hits);
  } else {
    EXPECT_EQ(reactor.stats().frames_from_event, 0u);  // execute violations carry the gpa
  }

  // Teardown: nothing left.
  ASSERT_TRUE(reactor.Teardown().ok());
  EXPECT_EQ(reactor.page_tables().frames(), 0u);
  EXPECT_EQ(reactor.breakpoints().size(), 0u);
  EXPECT_EQ(log->With("allocate_gfn").size(), log->With("free_gfn").size()) << log->ToString();
  EXPECT_FALSE(views.Exists(view));
}

template <bool kExecute>
void RunRemap(int levels, int table_level, uint16_t vcpus, bool strip_instruction_gfn = false) {
  absl::StatusOr<RemapGuest> g = BootRemap(levels, table_level, vcpus, kRoundCount);
  ASSERT_TRUE(g.ok()) << g.status();
  sim::SimDriver& sim = *g->s.driver;
  const sim::ViewTable& views = sim.machine().views();
  RunRemapOn<sim::SimDriver, kExecute>(&*g, std::move(sim), views, levels, vcpus, strip_instruction_gfn);
}

// The same through XenDriver over SimulatedXen: Xen's event layout, its
// instruction frames, and no IgnorePageWalkUpdates (Xen 4.17 has no r_pw), so
// the monitor's table frames are plain read-only.
template <bool kExecute>
void RunRemapOnXen(int levels, int table_level, uint16_t vcpus) {
  absl::StatusOr<RemapGuest> g = BootRemap(levels, table_level, vcpus, kRoundCount, /*bare_machine=*/true);
  ASSERT_TRUE(g.ok()) << g.status();
  absl::StatusOr<std::unique_ptr<xen::xen_internal::SimulatedXen>> xen =
      xen::xen_internal::SimulatedXen::Create(std::move(g->s.bare_machine));
  ASSERT_TRUE(xen.ok()) << xen.status();
  absl::StatusOr<xen::XenDriver> driver = (*xen)->OpenDriver();
  ASSERT_TRUE(driver.ok()) << driver.status();
  RunRemapOn<xen::XenDriver, kExecute>(&*g, std::move(*driver), (*xen)->machine().views(), levels, vcpus,
                                        /*strip_instruction_gfn=*/false);
}

TEST(ReactorXenTest, TheBreakpointGoesPendingAndComesBackThroughXenDriver) {
  RunRemapOnXen<false>(4, 1, 1);
  RunRemapOnXen<false>(5, 2, 2);
  RunRemapOnXen<true>(4, 1, 2);
}

TEST_P(RemapTest, TheBreakpointGoesPendingAndComesBack) {
  const auto [levels, table_level, vcpus, execute] = GetParam();
  if (execute) {
    RunRemap<true>(levels, table_level, vcpus);
  } else {
    RunRemap<false>(levels, table_level, vcpus);
  }
}

TEST(ReactorTest, WithoutTheEventsFrameTheHitIsFoundByAWalk) {
  RunRemap<false>(4, 1, 2, /*strip_instruction_gfn=*/true);
  RunRemap<false>(5, 3, 1, /*strip_instruction_gfn=*/true);
}

INSTANTIATE_TEST_SUITE_P(
    Levels, RemapTest,
    ::testing::Combine(::testing::Values(4, 5), ::testing::Values(1, 2, 3), ::testing::Values(1, 2),
                       ::testing::Values(false, true)),
    RemapName);

// ---------------------------------------------------------------------------
// Two views, two CR3s: a global kernel breakpoint hit under both roots, a
// per-root one only under its own.

TEST(ReactorTest, GlobalBreakpointsUnderTwoRootsInTwoViews) {
  absl::StatusOr<Scenario> s = BootScenario("two_roots");
  ASSERT_TRUE(s.ok()) << s.status();
  const Pa root1 = s->root();
  // A second address space sharing everything below its top table, like a
  // process's kernel half.
  const Pa root2 = Amd64::PaFromGfn(*s->guest.builder->AllocateFrame());
  std::vector<uint8_t> top(4096);
  ASSERT_TRUE(s->machine().ReadPhys(root1, absl::MakeSpan(top)).ok());
  ASSERT_TRUE(s->machine().WritePhys(root2, top).ok());
  amd64::GpRegisters gp = s->machine().GetRegisters(VcpuId(0))->gp();
  gp.rsi = root1.value();
  gp.rdi = root2.value();
  ASSERT_TRUE(s->machine().SetGpRegisters(VcpuId(0), gp).ok());
  const Va kfunc = *s->Symbol("kfunc");
  VmiCore<sim::SimDriver> core(std::move(*s->driver));
  const View view_b = *core.CreateView(MemoryAccess::RWX());
  auto reactor = Reactor<sim::SimDriver>::Create(core);
  ASSERT_TRUE(reactor.ok()) << reactor.status();
  const View view_a = (*reactor)->view();
  auto& r = **reactor;
  for (View v : {view_a, view_b}) {
    ASSERT_EQ(*r.Insert({.key = 1, .view = v, .root = root1, .va = kfunc, .global = true, .tag = 100}),
              BreakpointState::kActive);
    ASSERT_EQ(*r.Insert({.key = 2, .view = v, .root = root2, .va = kfunc, .tag = 200}), BreakpointState::kActive);
  }
  EXPECT_EQ(r.controller().pages(), 2u);  // one shadow per view
  std::vector<std::string> trace;
  r.OnBreakpoint([&](const auto& hit) {
    std::string tags;
    for (const BreakpointSpec& b : hit.breakpoints) absl::StrAppend(&tags, " ", b.tag);
    trace.push_back(absl::StrFormat("view=%s root=%s%s", hit.event.view, hit.root == root1 ? "1" : "2", tags));
  });
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(r.Run(absl::Seconds(10)).ok());
  ASSERT_EQ(r.in_flight(), 0u);
  ASSERT_TRUE(core.SwitchToView(view_b).ok());
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(r.Run(absl::Seconds(10)).ok());
  const std::string a = absl::StrCat("view=", view_a.ToString()), b = absl::StrCat("view=", view_b.ToString());
  EXPECT_THAT(trace, ElementsAreArray({a + " root=1 100", a + " root=2 100 200", a + " root=1 100",
                                       a + " root=2 100 200", b + " root=1 100", b + " root=2 100 200",
                                       b + " root=1 100", b + " root=2 100 200"}));
  // Removing by view leaves the other view's breakpoints.
  ASSERT_TRUE(r.breakpoints().RemoveByView(view_a).ok());
  EXPECT_EQ(r.breakpoints().size(), 2u);
  EXPECT_EQ(r.controller().pages(), 1u);
  ASSERT_TRUE(core.SwitchToView(kDefaultView).ok());
  ASSERT_TRUE(r.Teardown().ok());
  EXPECT_EQ(r.controller().pages(), 0u);
  EXPECT_EQ(r.page_tables().frames(), 0u);
}



// A breakpoint removed from its own hit fires once; the guest goes on.
TEST(ReactorTest, ABreakpointRemovedByItsHitFiresOnce) {
  absl::StatusOr<Scenario> s = BootScenario("two_roots");
  ASSERT_TRUE(s.ok()) << s.status();
  const Pa root = s->root();
  amd64::GpRegisters gp = s->machine().GetRegisters(VcpuId(0))->gp();
  gp.rsi = gp.rdi = root.value();
  ASSERT_TRUE(s->machine().SetGpRegisters(VcpuId(0), gp).ok());
  const Va kfunc = *s->Symbol("kfunc");
  const Pa ctl = *s->SymbolPa("ctl");
  VmiCore<sim::SimDriver> core(std::move(*s->driver));
  auto r = Reactor<sim::SimDriver>::Create(core);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*r)->Insert({.key = 1, .root = root, .va = kfunc, .tag = 1}).ok());
  // Same page, in the padding after the code: never executed, keeps the
  // shadow in place.
  ASSERT_TRUE((*r)->Insert({.key = 2, .root = root, .va = kfunc + 0x100, .tag = 2}).ok());
  int hits = 0;
  (*r)->OnBreakpoint([&](const auto& hit) {
    ++hits;
    ASSERT_EQ(hit.breakpoints.size(), 1u);
    if (hit.breakpoints[0].tag == 1) {
      EXPECT_TRUE((*r)->RemoveHit(hit).ok());
    }
  });
  ASSERT_TRUE((*r)->Run(absl::Seconds(10)).ok());
  const uint64_t before = Q(core, ctl);
  // After the first hit nothing fires, and the guest runs on.
  EXPECT_EQ((*r)->Run(absl::Seconds(1)).code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(hits, 1);
  EXPECT_EQ((*r)->breakpoints().size(), 1u);
  EXPECT_EQ((*r)->controller().breakpoints(), 1u);
  EXPECT_GT(Q(core, ctl), before + 100);  // the guest kept running
}

// ---------------------------------------------------------------------------
// Every driver call of starting, inserting and tearing down failing in turn:
// the error is clear and, once the driver works again, a teardown leaves no
// shadow frame, no remap, no protection and no view behind.

TEST(ReactorTest, AFailingDriverCallAnywhereLeavesNothingBehind) {
  const DriverOp ops[] = {DriverOp::kRegisters,         DriverOp::kCreateView,
                          DriverOp::kMonitorEnable,     DriverOp::kSwitchToView,
                          DriverOp::kGetMemoryAccessWithOptions, DriverOp::kSetMemoryAccessWithOptions,
                          DriverOp::kSetMemoryAccess,   DriverOp::kAllocateGfn,
                          DriverOp::kWritePage,         DriverOp::kChangeViewGfn,
                          DriverOp::kResetViewGfn,      DriverOp::kFreeGfn,
                          DriverOp::kMonitorDisable,    DriverOp::kDestroyView};
  int failures_seen = 0;
  for (DriverOp op : ops) {
    for (uint64_t nth = 1; nth <= 6; ++nth) {
      absl::StatusOr<RemapGuest> g = BootRemap(4, 1, 1, 1);
      ASSERT_TRUE(g.ok());
      const Pa root = g->s.root();
      using FDriver = FaultInjectingDriver<sim::SimDriver>;
      FDriver driver(std::move(*g->s.driver));
      std::shared_ptr<FaultPlan> plan = driver.shared_plan();
      VmiCore<FDriver> core(std::move(driver));
      plan->FailNth(op, plan->calls(op) + nth, absl::UnavailableError("boom"));
      absl::Status first;
      std::optional<View> view;
      {
        auto created = Reactor<FDriver>::Create(core);
        if (!created.ok()) {
          first = created.status();
        } else {
          view = (*created)->view();
          absl::StatusOr<BreakpointState> st = (*created)->Insert({.key = 1, .root = root, .va = g->target});
          if (!st.ok()) first = st.status();
          absl::Status t = (*created)->Teardown();
          if (first.ok()) first = t;
          if (!t.ok()) {
            plan->ClearAll();
            absl::Status again = (*created)->Teardown();
            EXPECT_TRUE(again.ok()) << DriverOpName(op) << " " << nth << ": " << again << " (first: " << t << ")";
          }
          EXPECT_EQ((*created)->controller().pages(), 0u) << DriverOpName(op) << " " << nth;
        }
      }
      plan->ClearAll();
      if (!first.ok()) {
        ++failures_seen;
        EXPECT_THAT(std::string(first.message()), HasSubstr("boom")) << DriverOpName(op) << " " << nth;
      }
      // Nothing left: frames allocated were freed, no view but the default,
      // the default view untouched.
      auto succeeded = [&](DriverOp o) {
        return plan->calls(o) - ((o == op && plan->calls(o) >= nth) ? 1 : 0);
      };
      EXPECT_EQ(succeeded(DriverOp::kAllocateGfn), succeeded(DriverOp::kFreeGfn)) << DriverOpName(op) << " " << nth;
      const auto& views = core.driver().inner().machine().views();
      EXPECT_EQ(views.Views().size(), 1u) << DriverOpName(op) << " " << nth;
      EXPECT_EQ(core.GetMemoryAccess(Amd64::GfnFromPa(g->page_a), kDefaultView).value(), MemoryAccess::RWX());
    }
  }
  EXPECT_GT(failures_seen, 20);
}

// ---------------------------------------------------------------------------
// A guest that checksums its own code page while breakpoints on it fire,
// and patches an instruction on another breakpoint page.

TEST(ReactorTest, AGuestCheckingItsOwnCodeSeesNothing) {
  absl::StatusOr<Scenario> s = BootScenario("checksum");
  ASSERT_TRUE(s.ok()) << s.status();
  const Pa root = s->root();
  const Va func = *s->Symbol("func"), func2 = *s->Symbol("func2");
  const Pa ctl = *s->SymbolPa("ctl");
  VmiCore<sim::SimDriver> core(std::move(*s->driver));
  auto reactor = Reactor<sim::SimDriver>::Create(core);
  ASSERT_TRUE(reactor.ok()) << reactor.status();
  uint64_t func_hits = 0, func2_hits = 0;
  (*reactor)->OnBreakpoint([&](const auto& hit) {
    ASSERT_EQ(hit.breakpoints.size(), 1u);
    (hit.breakpoints[0].tag == 1 ? func_hits : func2_hits)++;
  });
  ASSERT_EQ(*(*reactor)->Insert({.key = 1, .root = root, .va = func, .tag = 1}), BreakpointState::kActive);
  ASSERT_EQ(*(*reactor)->Insert({.key = 1, .root = root, .va = func2, .tag = 2}), BreakpointState::kActive);
  EXPECT_EQ((*reactor)->controller().pages(), 2u);
  for (int i = 0; i < 20000 && Q(core, ctl + 24) < 6; ++i) ASSERT_TRUE((*reactor)->Run(absl::Seconds(10)).ok());
  for (int i = 0; i < 10 && (*reactor)->in_flight() > 0; ++i) ASSERT_TRUE((*reactor)->Run(absl::Seconds(10)).ok());
  const uint64_t iterations = Q(core, ctl + 24);
  ASSERT_GE(iterations, 6u);
  EXPECT_TRUE((*reactor)->last_error().ok()) << (*reactor)->last_error();
  EXPECT_EQ(Q(core, ctl + 16), 0u) << "the checksum changed";
  EXPECT_EQ(Q(core, ctl + 40), 0u) << "a patched instruction ran unpatched";
  // The sum is the one of the page without INT3s.
  std::vector<uint8_t> page(4096);
  ASSERT_TRUE(core.Read(AccessContext(func.value() & ~0xfffull, Paging{root}), absl::MakeSpan(page)).ok());
  uint64_t sum = 0;
  for (size_t i = 0; i < 4096; i += 8) {
    uint64_t q;
    std::memcpy(&q, page.data() + i, 8);
    sum += q;
  }
  EXPECT_EQ(Q(core, ctl + 0), sum);
  // Every call reported: func increments RBX, func2 R13.
  const amd64::Registers regs = *core.GetRegisters(VcpuId(0));
  EXPECT_LE(func_hits - regs.rbx, 1u);
  EXPECT_LE(func2_hits - regs.r13, 1u);
  EXPECT_GE(func_hits, iterations);
  const auto& stats = (*reactor)->stats();
  EXPECT_GE(stats.shadow_reads, 512 * iterations);  // one per quadword summed
  EXPECT_GE(stats.shadow_writes, iterations);       // one per patch
  EXPECT_EQ(stats.foreign_breakpoints, 0u);
  ASSERT_TRUE((*reactor)->Teardown().ok());
  EXPECT_EQ((*reactor)->controller().pages(), 0u);
}


// ---------------------------------------------------------------------------
// A pending breakpoint paged in by a #PF the reactor injects: the guest's own
// fault handler maps the page, the monitor sees the entry written, the
// breakpoint is placed.

TEST(ReactorTest, AnInjectedPageFaultBringsAPendingBreakpointIn) {
  sim::MachineOptions m;
  m.ram_size = 16 << 20;
  absl::StatusOr<sim::SimDriver> sim = sim::SimDriver::Boot("demand_paging", m);
  ASSERT_TRUE(sim.ok()) << sim.status();
  const sim::StandardGuest& g = *sim->guest();
  const uint64_t region = 0x40000000;
  const Pa pt = *g.space->PageTableFor(Va(region));
  ASSERT_TRUE(g.space->Map(Va(kWindowVa), pt, 4096, sim::page_flags::kWritable).ok());
  const Pa pool = *g.builder->AllocateFrames(8);
  const Pa pf_data = *g.program.SymbolPa("pf_data");
  const Va done = *g.program.Symbol("done");
  const Pa root = g.space->root();
  amd64::Registers regs = *sim->Registers(VcpuId(0));
  regs.rdi = region;
  regs.rsi = 4;  // the guest touches pages 0..3
  ASSERT_TRUE(sim->SetRegisters(VcpuId(0), regs).ok());
  VmiCore<sim::SimDriver> core(*std::move(sim));
  ASSERT_TRUE(core.WriteU64(AccessContext::Physical(pf_data), kWindowVa).ok());
  ASSERT_TRUE(core.WriteU64(AccessContext::Physical(pf_data + 8), pool.value()).ok());
  auto created = Reactor<sim::SimDriver>::Create(core);
  ASSERT_TRUE(created.ok()) << created.status();
  auto& r = **created;
  const Va later(region + 0x5010);
  ASSERT_EQ(*r.Insert({.key = 1, .root = root, .va = later, .tag = 1}), BreakpointState::kPending);
  ASSERT_EQ(*r.Insert({.key = 1, .root = root, .va = done, .tag = 2}), BreakpointState::kActive);
  int done_hits = 0;
  r.OnBreakpoint([&](const auto& hit) {
    ASSERT_EQ(hit.breakpoints.size(), 1u);
    EXPECT_EQ(hit.breakpoints[0].tag, 2u);
    if (++done_hits == 1) r.InjectPageFault(hit.event.vcpu, later, amd64::page_fault_error::kWrite);
  });
  std::vector<PageTableUpdate> updates;
  r.OnUpdate([&](const PageTableUpdate& u) { updates.push_back(u); });
  for (int i = 0; i < 200 && done_hits < 2; ++i) {
    absl::Status st = r.Run(absl::Seconds(10));
    ASSERT_TRUE(st.ok()) << st << " (done hit " << done_hits << " times)";
  }
  EXPECT_TRUE(r.last_error().ok()) << r.last_error();
  // The guest mapped pages 0..3 itself (writes in the watched table that
  // change nothing watched), then the injected fault mapped page 5 to the
  // fifth pool frame: the breakpoint is there; `done` fired again when the
  // guest came back from the fault.
  EXPECT_EQ(done_hits, 2);
  EXPECT_EQ(r.stats().page_faults_injected, 1u);
  EXPECT_EQ(r.stats().table_writes, 5u);
  const Pa frame = pool + 4 * 0x1000;
  EXPECT_THAT(updates, ElementsAreArray({PageTableUpdate{PageTableUpdate::Kind::kPageIn, r.view(),
                                                         AddressContext(Va(region + 0x5000), root), frame}}));
  EXPECT_EQ(r.breakpoints().State(1, r.view(), root, later), BreakpointState::kActive);
  EXPECT_EQ(r.breakpoints().PlacedAt(1, r.view(), root, later), frame + 0x10);
  ASSERT_TRUE(r.Teardown().ok());
}


}  // namespace
}  // namespace vmi::utils
