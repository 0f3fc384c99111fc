// The handler-driven event loop: WaitForEvent -> handler -> response, with a
// wait timeout, interruption (e.g. from a Ctrl-C handler), and teardown.
//
// A handler is any class with
//   using Output = ...;                                      // the loop's result
//   VmiEventResponse<Arch> HandleEvent(VmiContext<Driver, Os>&);
// and optionally
//   std::optional<Output> Poll();          // checked before every wait; a value ends the loop
//   void HandleTimeout(const VmiSession<Driver, Os>&);     // a wait timed out
//   void HandleInterrupted(const VmiSession<Driver, Os>&); // the interrupt flag was seen
//   void Cleanup(const VmiSession<Driver, Os>&);           // on every exit, VM paused
//
// Drivers report a wait with no event as DeadlineExceeded. Before each event
// reaches the handler the V2P cache is flushed (the guest may have changed
// its page tables since the last event); configurable, as is flushing the
// page cache for drivers whose pages are owned copies.
//
// On exit, whatever the reason: pause the VM, run Cleanup, reset the
// driver's state (monitors off, views gone), answer every pending event with
// Continue, resume.
//
// Thread-safety: runs on the calling thread; `interrupted` may be set from
// any thread or a signal handler.

#ifndef VMI_CORE_EVENT_LOOP_H_
#define VMI_CORE_EVENT_LOOP_H_

#include <atomic>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/session.h"

namespace vmi {

struct VmiEventLoopOptions {
  absl::Duration wait_timeout = absl::Milliseconds(100);
  bool flush_v2p_cache_per_event = true;
  bool flush_page_cache_per_event = false;
  const std::atomic<bool>* interrupted = nullptr;
  // Upper bound on events answered while draining at exit.
  size_t max_drain_events = 1 << 16;
};

template <typename H, typename Driver, typename Os>
concept VmiHandlerFor = requires(H& h, VmiContext<Driver, Os>& ctx) {
  typename H::Output;
  {
    h.HandleEvent(ctx)
    } -> std::convertible_to<VmiEventResponse<typename Driver::Architecture>>;
};

// Runs `handler` until Poll returns a value (the result), the interrupt flag
// is set (nullopt), or the driver fails (its error, after teardown).
template <VmiDriver Driver, typename Os, typename Handler>
  requires VmiEventControl<Driver> && VmiVmControl<Driver> && VmiHandlerFor<Handler, Driver, Os>
absl::StatusOr<std::optional<typename Handler::Output>> RunEventLoop(
    const VmiSession<Driver, Os>& session, Handler& handler,
    const VmiEventLoopOptions& options = {}) {
  using Arch = typename Driver::Architecture;
  VmiCore<Driver>& core = session.core();
  std::optional<typename Handler::Output> output;
  absl::Status failure;

  while (true) {
    if (options.interrupted != nullptr && options.interrupted->load()) {
      if constexpr (requires { handler.HandleInterrupted(session); }) {
        handler.HandleInterrupted(session);
      }
      break;
    }
    if constexpr (requires { handler.Poll(); }) {
      if (auto result = handler.Poll()) {
        output = std::move(result);
        break;
      }
    }
    absl::Status s = core.WaitForEvent(options.wait_timeout, [&](const VmiEvent<Arch>& event) {
      if (options.flush_v2p_cache_per_event) core.FlushV2pCache();
      if (options.flush_page_cache_per_event) core.FlushPageCache();
      VmiContext<Driver, Os> ctx(session, event);
      return VmiEventResponse<Arch>(handler.HandleEvent(ctx));
    });
    if (absl::IsDeadlineExceeded(s)) {
      if constexpr (requires { handler.HandleTimeout(session); }) {
        handler.HandleTimeout(session);
      }
      continue;
    }
    if (!s.ok()) {
      failure = AnnotateStatus(s, "event loop");
      break;
    }
  }

  // Teardown, paused. Every step runs even if an earlier one fails; the first
  // error is reported (after a loop failure, that failure wins).
  absl::Status teardown = core.Pause();
  const bool paused = teardown.ok();
  if constexpr (requires { handler.Cleanup(session); }) {
    handler.Cleanup(session);
  }
  if (absl::Status s = core.ResetState(); !s.ok() && teardown.ok()) teardown = s;
  for (size_t i = 0; i < options.max_drain_events && core.EventsPending() > 0; ++i) {
    absl::Status s = core.WaitForEvent(absl::ZeroDuration(), [](const VmiEvent<Arch>&) {
      return VmiEventResponse<Arch>::Continue();
    });
    if (!s.ok()) {
      if (!absl::IsDeadlineExceeded(s) && teardown.ok()) teardown = s;
      break;
    }
  }
  if (paused) {
    if (absl::Status s = core.Resume(); !s.ok() && teardown.ok()) teardown = s;
  }
  if (!failure.ok()) return failure;
  if (!teardown.ok()) return AnnotateStatus(teardown, "event loop teardown");
  return output;
}

}  // namespace vmi

#endif  // VMI_CORE_EVENT_LOOP_H_
