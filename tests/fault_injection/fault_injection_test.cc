// Fault injection over the simulator: for each scenario (a VmiCore
// operation, the event loop, the CLI's watch set-up), run it once to count
// the driver calls it makes, then again for every single call with that call
// failing. Each time the caller must get a clear error (or finish, when the
// failed call was not needed), nothing may crash or hang, no cache may hold
// data from the failed call, and state being changed must be rolled back.
// The number of injection points exercised is printed at the end.

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "core/event_loop.h"
#include "core/session.h"
#include "core/vmi_core.h"
#include "drivers/fault/fault_injecting_driver.h"
#include "drivers/sim/sim_driver.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "utils/watch/watch.h"

namespace vmi {
namespace {

using Driver = FaultInjectingDriver<sim::SimDriver>;
using Core = VmiCore<Driver>;

int g_points = 0;

std::unique_ptr<Core> Fresh(absl::string_view program = "loop_call") {
  sim::MachineOptions m;
  m.ram_size = 8 << 20;
  sim::SimDriverOptions o;
  o.wait_instructions = 1'000'000;
  auto d = sim::SimDriver::Boot(program, m, {}, o);
  EXPECT_TRUE(d.ok()) << d.status();
  auto core = std::make_unique<Core>(Driver(*std::move(d)));
  auto regs = core->driver().inner().Registers(VcpuId(0));
  core->SetPagingMode(Amd64::PagingModeOf(*regs));
  return core;
}

Pa Root(Core& core) { return Amd64::TranslationRoot(*core.driver().inner().Registers(VcpuId(0))); }
Va Sym(Core& core, absl::string_view s) { return *core.driver().inner().guest()->program.Symbol(s); }

// Runs `scenario` on a fresh machine with no faults, then once per driver
// call with that call failing; `check` sees the core after each failure.
void ForEveryCall(const std::string& name, absl::string_view program,
                  const std::function<absl::Status(Core&)>& scenario,
                  const std::function<void(Core&, const absl::Status&, DriverOp, uint64_t)>& check) {
  std::unique_ptr<Core> baseline = Fresh(program);
  ASSERT_TRUE(scenario(*baseline).ok()) << name << ": fails without faults";
  std::vector<std::pair<DriverOp, uint64_t>> counts;
  for (int op = 0; op < static_cast<int>(DriverOp::kCount); ++op) {
    // The boot itself is not part of the scenario.
    const uint64_t n = baseline->driver().plan().calls(static_cast<DriverOp>(op));
    if (n) counts.push_back({static_cast<DriverOp>(op), n});
  }
  for (const auto& [op, n] : counts) {
    for (uint64_t nth = 1; nth <= n; ++nth) {
      std::unique_ptr<Core> core = Fresh(program);
      core->driver().plan().FailNth(op, nth, absl::UnavailableError("injected failure"));
      absl::Status s = scenario(*core);
      SCOPED_TRACE(absl::StrFormat("%s: call %u of %s", name, nth, DriverOpName(op)));
      if (!s.ok()) {
        EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("injected"));
      }
      core->driver().plan().ClearAll();
      check(*core, s, op, nth);
      ++g_points;
    }
  }
}

TEST(FaultInjectionTest, VirtualReadsAcrossPages) {
  ForEveryCall(
      "read 3 pages", "mem_access",
      [](Core& core) {
        std::vector<uint8_t> out(3 * 4096);
        return core.Read(AccessContext::Virtual(Va(sim::kProgramVa), Root(core)), absl::MakeSpan(out));
      },
      [](Core& core, const absl::Status&, DriverOp, uint64_t) {
        // Whatever is cached is right: re-reading with no faults matches RAM.
        std::vector<uint8_t> out(3 * 4096), direct(3 * 4096);
        ASSERT_TRUE(core.Read(AccessContext::Virtual(Va(sim::kProgramVa), Root(core)),
                              absl::MakeSpan(out)).ok());
        const Pa pa = core.driver().inner().guest()->program.pa;
        ASSERT_TRUE(core.driver().inner().machine().ReadPhys(pa, absl::MakeSpan(direct)).ok());
        EXPECT_EQ(out, direct);
      });
}

TEST(FaultInjectionTest, MultiPageWriteIsAllOrNothing) {
  const Va at(sim::kProgramVa + 0x1ff0);  // straddles the 2nd and 3rd program pages
  ForEveryCall(
      "write 32 bytes over a page boundary", "mem_access",
      [at](Core& core) {
        std::vector<uint8_t> data(32, 0x5a);
        return core.Write(AccessContext::Virtual(at, Root(core)), data);
      },
      [at](Core& core, const absl::Status& s, DriverOp, uint64_t) {
        std::vector<uint8_t> now(32);
        ASSERT_TRUE(core.Read(AccessContext::Virtual(at, Root(core)), absl::MakeSpan(now)).ok());
        if (s.ok()) {
          EXPECT_EQ(now, std::vector<uint8_t>(32, 0x5a));
        } else {
          // Rolled back: no byte of the write is left.
          EXPECT_EQ(std::count(now.begin(), now.end(), 0x5a), 0);
        }
      });
}

TEST(FaultInjectionTest, TranslationIsNeverCachedFromAFailedWalk) {
  ForEveryCall(
      "translate", "loop_call",
      [](Core& core) {
        return core.Translate(AddressContext(Sym(core, "func"), Root(core))).status();
      },
      [](Core& core, const absl::Status& s, DriverOp, uint64_t) {
        if (!s.ok()) {
          EXPECT_EQ(core.v2p_cache().size(), 0u);
        }
        auto pa = core.Translate(AddressContext(Sym(core, "func"), Root(core)));
        ASSERT_TRUE(pa.ok());
        EXPECT_EQ(*pa, *core.driver().inner().guest()->space->Translate(Sym(core, "func")));
      });
}

struct StopAfter {
  using Output = int;
  int n = 0;
  VmiEventResponse<Amd64> HandleEvent(VmiContext<Driver>& ctx) {
    ++n;
    // Step over the INT3 by putting the original byte back.
    ctx.core().WriteU8(AccessContext::Physical(bp), original).IgnoreError();
    return VmiEventResponse<Amd64>::Continue();
  }
  std::optional<int> Poll() { return n >= 1 ? std::optional<int>(n) : std::nullopt; }
  Pa bp;
  uint8_t original = 0;
};

TEST(FaultInjectionTest, EventLoopWithABreakpoint) {
  ForEveryCall(
      "event loop", "loop_call",
      [](Core& core) -> absl::Status {
        VMI_ASSIGN_OR_RETURN(const Pa bp, core.Translate(AddressContext(Sym(core, "func"), Root(core))));
        VMI_ASSIGN_OR_RETURN(uint8_t original, core.ReadU8(AccessContext::Physical(bp)));
        VMI_RETURN_IF_ERROR(core.WriteU8(AccessContext::Physical(bp), 0xcc));
        VMI_RETURN_IF_ERROR(core.MonitorEnable(amd64::MonitorInterrupt{3}));
        StopAfter handler;
        handler.bp = bp;
        handler.original = original;
        VmiSession<Driver> session(core);
        auto r = RunEventLoop(session, handler);
        if (!r.ok()) return r.status();
        return absl::OkStatus();
      },
      [](Core& core, const absl::Status&, DriverOp op, uint64_t) {
        // Never left paused unless resuming itself failed; no monitor left.
        EXPECT_EQ(core.driver().inner().machine().paused(), op == DriverOp::kResume);
      });
}

TEST(FaultInjectionTest, WatchSetUpRollsBackWhatItArmed) {
  ForEveryCall(
      "watch arm", "mem_access",
      [](Core& core) -> absl::Status {
        watch::Options options;
        options.breakpoints = {Sym(core, "read_insn").value(), Sym(core, "call_insn").value()};
        options.write_watches = {Sym(core, "watched_data").value()};
        watch::Handler<Driver> handler(options);
        VMI_RETURN_IF_ERROR(handler.Arm(core));
        return handler.Disarm(core);
      },
      [](Core& core, const absl::Status&, DriverOp, uint64_t) {
        // Code bytes and permissions are as the guest had them.
        auto& sim = core.driver().inner();
        for (const char* s : {"read_insn", "call_insn"}) {
          const Pa pa = *sim.guest()->space->Translate(Sym(core, s));
          uint8_t b = 0;
          ASSERT_TRUE(sim.machine().ReadPhys(pa, absl::MakeSpan(&b, 1)).ok());
          EXPECT_NE(b, 0xcc) << s;
        }
        const Pa data = *sim.guest()->space->Translate(Sym(core, "watched_data"));
        EXPECT_EQ(*sim.GetMemoryAccess(Gfn(data.value() >> 12), kDefaultView), MemoryAccess::RWX());
      });
}

TEST(FaultInjectionTest, ViewCreationWithPermissionsLeavesNoViewOnFailure) {
  // A view is created and given permissions on three frames; if any step
  // fails, the view is destroyed again.
  auto make = [](Core& core) -> absl::Status {
    VMI_ASSIGN_OR_RETURN(View view, core.CreateView(MemoryAccess::RWX()));
    for (uint64_t g : {0x300, 0x301, 0x302}) {
      absl::Status s = core.SetMemoryAccess(Gfn(g), view, MemoryAccess::RX());
      if (!s.ok()) {
        core.DestroyView(view).IgnoreError();
        return s;
      }
    }
    return core.DestroyView(view);
  };
  ForEveryCall("view with permissions", "loop_call", make,
               [](Core& core, const absl::Status&, DriverOp op, uint64_t) {
                 // Only the default view is left, unless destroying failed (reported).
                 const size_t views = core.driver().inner().machine().views().Views().size();
                 EXPECT_EQ(views, op == DriverOp::kDestroyView ? 2u : 1u);
               });
}

TEST(FaultInjectionTest, Summary) {
  std::printf("fault-injection points exercised: %d\n", g_points);
  RecordProperty("fault_injection_points", g_points);
  EXPECT_GT(g_points, 20);
}

}  // namespace
}  // namespace vmi
