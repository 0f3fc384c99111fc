#include "core/event_loop.h"

#include <atomic>
#include <string>
#include <vector>

#include "core/session.h"
#include "core/testing/memory_driver.h"
#include "core/testing/test_page_tables.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmi {
namespace {

using testing::MemoryDriver;
using testing::TestArch;
using testing::TestPageTables;
using ::testing::ElementsAre;
using Session = VmiSession<MemoryDriver>;
using Context = VmiContext<MemoryDriver>;

VmiEvent<TestArch> Event(uint64_t code, uint64_t root = 0) {
  VmiEvent<TestArch> e{};
  e.vcpu = VcpuId(0);
  e.reason.code = code;
  e.registers.root = root;
  return e;
}

// Reads a u64 at 0x400000 in the event's address space for every event,
// answers events with code 2 with Deny, stops after `stop_after` events.
struct RecordingHandler {
  using Output = std::string;
  std::vector<std::string>* log;
  int stop_after = 3;
  int seen = 0;
  int timeouts = 0;
  size_t v2p_size_at_event = 99;

  VmiEventResponse<TestArch> HandleEvent(Context& ctx) {
    ++seen;
    v2p_size_at_event = ctx.core().v2p_cache().size();
    auto v = ctx.ReadU64(Va(0x400000));
    log->push_back(v.ok() ? "read " + std::to_string(*v) : "read failed");
    if (ctx.reason().code == 2) return VmiEventResponse<TestArch>::Deny();
    return VmiEventResponse<TestArch>::Continue();
  }
  std::optional<std::string> Poll() {
    if (seen >= stop_after) return "done after " + std::to_string(seen);
    return std::nullopt;
  }
  void HandleTimeout(const Session&) {
    ++timeouts;
    log->push_back("timeout hook");
    if (timeouts >= 2) stop_after = seen;  // give up
  }
  void HandleInterrupted(const Session&) { log->push_back("interrupted hook"); }
  void Cleanup(const Session& s) {
    log->push_back("cleanup, paused=" + std::to_string(s.core().driver().shared()->paused));
  }
};

class EventLoopTest : public ::testing::Test {
 protected:
  EventLoopTest() : core_(MemoryDriver(64)), s_(core_.driver().shared()), tables_(*s_, 40) {
    tables_.Map(Va(0x400000), Gfn(5));
    uint64_t v = 42;
    std::memcpy(s_->ram.data() + 5 * 4096, &v, 8);
  }
  VmiCore<MemoryDriver> core_;
  std::shared_ptr<MemoryDriver::Shared> s_;
  TestPageTables tables_;
};

TEST_F(EventLoopTest, HandlesEventsUntilPollEndsThenTearsDown) {
  for (uint64_t c : {1, 2, 3, 4, 5}) s_->events.push_back(Event(c, tables_.root().value()));
  std::vector<std::string> log;
  RecordingHandler handler{&log};
  Session session(core_);
  auto result = RunEventLoop(session, handler);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(**result, "done after 3");
  EXPECT_THAT(log, ElementsAre("read 42", "read 42", "read 42", "cleanup, paused=1"));
  // Events 4 and 5 were still pending: drained with Continue while paused.
  EXPECT_THAT(s_->log, ElementsAre("event(1)", "event(2)", "event(3)", "pause", "reset_state",
                                   "event(4)", "event(5)", "resume"));
  ASSERT_EQ(s_->responses.size(), 5u);
  EXPECT_EQ(s_->responses[1].action, EventAction::kDeny);
  EXPECT_EQ(s_->responses[3].action, EventAction::kContinue);
  EXPECT_EQ(s_->paused, 0);
}

TEST_F(EventLoopTest, V2pCacheIsFlushedPerEventUnlessDisabled) {
  s_->events.push_back(Event(1, tables_.root().value()));
  s_->events.push_back(Event(1, tables_.root().value()));
  std::vector<std::string> log;
  RecordingHandler handler{&log, 2};
  Session session(core_);
  ASSERT_TRUE(RunEventLoop(session, handler).ok());
  EXPECT_EQ(handler.v2p_size_at_event, 0u);  // the first event's translation was dropped

  s_->events.push_back(Event(1, tables_.root().value()));
  s_->events.push_back(Event(1, tables_.root().value()));
  RecordingHandler keep{&log, 2};
  VmiEventLoopOptions options;
  options.flush_v2p_cache_per_event = false;
  ASSERT_TRUE(RunEventLoop(session, keep, options).ok());
  EXPECT_EQ(keep.v2p_size_at_event, 1u);
}

TEST_F(EventLoopTest, TimeoutsReachTheHandler) {
  std::vector<std::string> log;
  RecordingHandler handler{&log};
  Session session(core_);
  auto result = RunEventLoop(session, handler);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(**result, "done after 0");
  EXPECT_THAT(log, ElementsAre("timeout hook", "timeout hook", "cleanup, paused=1"));
}

TEST_F(EventLoopTest, InterruptionEndsWithoutAResult) {
  s_->events.push_back(Event(1));
  std::atomic<bool> stop{true};
  std::vector<std::string> log;
  RecordingHandler handler{&log};
  VmiEventLoopOptions options;
  options.interrupted = &stop;
  Session session(core_);
  auto result = RunEventLoop(session, handler, options);
  ASSERT_TRUE(result.ok());
  EXPECT_FALSE(result->has_value());
  EXPECT_THAT(log, ElementsAre("interrupted hook", "cleanup, paused=1"));
  EXPECT_THAT(s_->log, ElementsAre("pause", "reset_state", "event(1)", "resume"));
}

TEST_F(EventLoopTest, DriverFailureIsReportedAfterTeardown) {
  s_->events.push_back(Event(1, tables_.root().value()));
  core_.driver().FailNth(MemoryDriver::Op::kWaitForEvent, 2,
                         absl::InternalError("xenevtchn_pending: EBADF"));
  std::vector<std::string> log;
  RecordingHandler handler{&log, 10};
  Session session(core_);
  auto result = RunEventLoop(session, handler);
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(result.status().message(), ::testing::HasSubstr("event loop: xenevtchn_pending"));
  EXPECT_THAT(log, ElementsAre("read 42", "cleanup, paused=1"));
  EXPECT_EQ(s_->paused, 0);
}

TEST_F(EventLoopTest, StateUsesTheRegistersRootImplicitly) {
  Session session(core_);
  TestArch::Registers regs{};
  regs.root = tables_.root().value() | 0x7;  // flag bits are masked by the arch
  VmiState<MemoryDriver> state(session, regs);
  EXPECT_EQ(state.translation_root(), tables_.root());
  EXPECT_EQ(*state.ReadU64(Va(0x400000)), 42u);
  EXPECT_EQ(*state.ReadU64In(AccessContext(Pa(5 * 4096))), 42u);
  EXPECT_EQ(*state.Translate(Va(0x400008)), Pa(5 * 4096 + 8));
  ASSERT_TRUE(state.WriteU64(Va(0x400008), 7).ok());
  EXPECT_EQ(*state.ReadU64In(AccessContext(Pa(5 * 4096 + 8))), 7u);
  EXPECT_EQ(state.address_width(), 8);
}

}  // namespace
}  // namespace vmi
