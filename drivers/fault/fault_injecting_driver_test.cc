#include "drivers/fault/fault_injecting_driver.h"

#include "core/event_loop.h"
#include "core/session.h"
#include "core/testing/memory_driver.h"
#include "core/testing/test_page_tables.h"
#include "core/vmi_core.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmi {
namespace {

using testing::MemoryDriver;
using testing::TestArch;
using ::testing::HasSubstr;
using Wrapped = FaultInjectingDriver<MemoryDriver>;

class ReadOnly {
 public:
  using Architecture = TestArch;
  absl::StatusOr<VmiInfo> Info() const { return VmiInfo{}; }
  absl::StatusOr<MappedPage> ReadPage(Gfn) { return absl::NotFoundError("none"); }
  absl::StatusOr<TestArch::Registers> Registers(VcpuId) { return TestArch::Registers{}; }
};

// Exactly the wrapped driver's capabilities.
static_assert(VmiFullDriver<Wrapped>);
static_assert(VmiRead<FaultInjectingDriver<ReadOnly>>);
static_assert(VmiQueryRegisters<FaultInjectingDriver<ReadOnly>>);
static_assert(!VmiWrite<FaultInjectingDriver<ReadOnly>>);
static_assert(!VmiEventControl<FaultInjectingDriver<ReadOnly>>);
static_assert(!VmiVmControl<FaultInjectingDriver<ReadOnly>>);

TEST(FaultInjectingDriverTest, FailsTheNthCallOnlyOrFromThenOn) {
  Wrapped d(MemoryDriver(16));
  d.plan().FailNth(DriverOp::kReadPage, 2, absl::UnavailableError("EIO"));
  EXPECT_TRUE(d.ReadPage(Gfn(1)).ok());
  absl::Status s = d.ReadPage(Gfn(1)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(s.message(), "EIO (injected: call 2 of read_page)");
  EXPECT_TRUE(d.ReadPage(Gfn(1)).ok());
  d.plan().FailFrom(DriverOp::kPause, 1, absl::InternalError("gone"));
  EXPECT_FALSE(d.Pause().ok());
  EXPECT_FALSE(d.Pause().ok());
  EXPECT_EQ(d.plan().calls(DriverOp::kPause), 2u);
  EXPECT_EQ(d.plan().failures(), 3u);
  d.plan().ClearAll();
  EXPECT_TRUE(d.Pause().ok());
  // Failed calls do not reach the inner driver.
  EXPECT_EQ(d.inner().shared()->paused, 1);
}

TEST(FaultInjectingDriverTest, EveryReadPageFailureInACoreReadIsCleanAndUncached) {
  // Fail each driver call of a virtual ReadU64 in turn: root, leaf table, data.
  for (uint64_t nth = 1; nth <= 3; ++nth) {
    MemoryDriver inner(64);
    auto shared = inner.shared();
    testing::TestPageTables tables(*shared, 40);
    tables.Map(Va(0x400000), Gfn(5));
    VmiCore<Wrapped> core{Wrapped(std::move(inner))};
    core.driver().plan().FailNth(DriverOp::kReadPage, nth, absl::DataLossError("bad frame"));
    auto r = core.ReadU64(AccessContext::Virtual(Va(0x400000), tables.root()));
    ASSERT_FALSE(r.ok()) << nth;
    EXPECT_THAT(r.status().message(), HasSubstr("injected: call " + std::to_string(nth)));
    // Only what came from successful calls is cached: the translation once
    // both tables were read, the table pages read before the failure.
    EXPECT_EQ(core.v2p_cache().size(), nth == 3 ? 1u : 0u);
    EXPECT_EQ(core.page_cache().size(), nth - 1);
    EXPECT_FALSE(core.page_cache().Contains(nth == 3 ? Gfn(5) : Gfn(40 + nth - 1)));
    EXPECT_TRUE(core.ReadU64(AccessContext::Virtual(Va(0x400000), tables.root())).ok());
  }
}

struct CountingHandler {
  using Output = int;
  int n = 0;
  VmiEventResponse<TestArch> HandleEvent(VmiContext<Wrapped>&) {
    ++n;
    return VmiEventResponse<TestArch>::Continue();
  }
  std::optional<int> Poll() { return n >= 2 ? std::optional<int>(n) : std::nullopt; }
};

TEST(FaultInjectingDriverTest, EventLoopSurvivesEachTeardownFailure) {
  for (DriverOp op : {DriverOp::kPause, DriverOp::kResetState, DriverOp::kResume}) {
    MemoryDriver inner(8);
    auto shared = inner.shared();
    for (int i = 0; i < 3; ++i) shared->events.push_back(VmiEvent<TestArch>{});
    VmiCore<Wrapped> core{Wrapped(std::move(inner))};
    core.driver().plan().FailNth(op, 1, absl::InternalError("hypercall failed"));
    VmiSession<Wrapped> session(core);
    CountingHandler handler;
    auto result = RunEventLoop(session, handler);
    ASSERT_FALSE(result.ok()) << DriverOpName(op);
    EXPECT_THAT(result.status().message(), HasSubstr("event loop teardown"));
    EXPECT_THAT(result.status().message(), HasSubstr(DriverOpName(op)));
    // The pending event was still drained; the VM is left paused only when
    // the resume itself failed, and that is what the error says.
    EXPECT_TRUE(shared->events.empty());
    EXPECT_EQ(shared->paused, op == DriverOp::kResume ? 1 : 0) << DriverOpName(op);
  }
}

}  // namespace
}  // namespace vmi
