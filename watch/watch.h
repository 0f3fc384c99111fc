// Watching a guest: breakpoints (INT3 written into guest code), write
// watches (EPT write permission removed in the default view) and CR3-write
// monitoring, one line per event (text or JSON), everything restored on exit
// including on an interrupt. Written once against the capability concepts;
// the `vmi watch` command, `vmi demo`, tests and benchmarks use it.
//
// Breakpoint protocol (as on Xen): the INT3 event reports RIP at the INT3;
// the handler puts the original byte back and single-steps the vCPU over the
// original instruction; the single-step event re-arms the INT3 and turns
// single-stepping off. A write to a watched page is reported and then
// performed once by emulation; the page stays watched.
//
// Thread-safety: single-threaded; the interrupt flag may be set from a
// signal handler.

#ifndef VMI_WATCH_WATCH_H_
#define VMI_WATCH_WATCH_H_

#include <atomic>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "arch/amd64/amd64.h"
#include "arch/amd64/events.h"
#include "core/error.h"
#include "core/event_loop.h"
#include "core/session.h"
#include "core/vmi_core.h"
#include "nlohmann/json.hpp"

namespace vmi::watch {

struct Options {
  std::vector<uint64_t> breakpoints;    // virtual addresses in vCPU 0's address space
  std::vector<uint64_t> write_watches;  // virtual addresses; the whole page is watched
  bool cr3 = false;
  std::optional<uint64_t> count;           // stop after this many events
  std::optional<absl::Duration> duration;  // stop after this much wall time
  absl::Duration wait_timeout = absl::Milliseconds(50);
  const std::atomic<bool>* interrupted = nullptr;
  std::ostream* out = nullptr;  // per-event lines go here when set
  bool json = false;            // JSON lines instead of text

  // True when at least one event source is armed (a watch with none would
  // wait for events that can never come).
  bool HasEventSource() const { return !breakpoints.empty() || !write_watches.empty() || cr3; }
};

struct Summary {
  uint64_t events = 0;
  uint64_t breakpoint_hits = 0;
  uint64_t write_hits = 0;
  uint64_t cr3_writes = 0;
  uint64_t other = 0;
  std::vector<std::string> lines;  // the per-event lines, in order
};

namespace watch_internal {
inline std::string Hex(uint64_t v) { return absl::StrFormat("0x%x", v); }
}  // namespace watch_internal

template <VmiFullDriver D>
class Handler {
 public:
  using Output = Summary;
  using Arch = Amd64;

  explicit Handler(const Options& options) : options_(options) { start_ = absl::Now(); }
  // Arms everything; on failure disarms what was armed and returns the error.
  absl::Status Arm(VmiCore<D>& core) {
    VMI_ASSIGN_OR_RETURN(amd64::Registers regs, core.GetRegisters(VcpuId(0)));
    core.SetPagingMode(Amd64::PagingModeOf(regs));
    const Pa root = Amd64::TranslationRoot(regs);
    absl::Status status = ArmAll(core, root);
    if (!status.ok()) {
      absl::Status undo = Disarm(core);
      if (!undo.ok()) return AnnotateStatus(status, std::string(undo.message()));
    }
    return status;
  }

  // Puts every byte and permission back (idempotent). Each restore is tried
  // twice; what still fails stays marked armed and is reported.
  absl::Status Disarm(VmiCore<D>& core) {
    absl::Status first;
    auto retry = [&first](auto&& op) {
      absl::Status s = op();
      if (!s.ok()) s = op();
      if (!s.ok() && first.ok()) first = s;
      return s.ok();
    };
    for (Breakpoint& bp : breakpoints_) {
      if (bp.armed && retry([&] { return core.WriteU8(AccessContext::Physical(bp.pa), bp.original); })) {
        bp.armed = false;
      }
    }
    for (WriteWatch& w : watches_) {
      if (w.armed && retry([&] { return core.SetMemoryAccess(w.gfn, kDefaultView, w.original); })) {
        w.armed = false;
      }
    }
    return first.ok() ? absl::OkStatus() : AnnotateStatus(first, "watch: disarm");
  }

  VmiEventResponse<Arch> HandleEvent(VmiContext<D>& ctx) {
    ++summary_.events;
    const amd64::Registers& regs = ctx.registers();
    return std::visit(
        [&](const auto& reason) -> VmiEventResponse<Arch> { return On(ctx, regs, reason); },
        ctx.reason());
  }

  std::optional<Summary> Poll() {
    if (options_.count && summary_.events >= *options_.count) return summary_;
    if (options_.duration && absl::Now() - start_ >= *options_.duration) return summary_;
    return std::nullopt;
  }

  void Cleanup(const VmiSession<D>& session) { cleanup_status_ = Disarm(session.core()); }
  // What Cleanup could not restore, if anything.
  const absl::Status& cleanup_status() const { return cleanup_status_; }

  const Summary& summary() const { return summary_; }

 private:
  struct Breakpoint {
    Va va;
    Pa pa;
    uint8_t original = 0;
    bool armed = false;
  };
  struct WriteWatch {
    Va va;
    Gfn gfn;
    MemoryAccess original;
    bool armed = false;
  };

  absl::Status ArmAll(VmiCore<D>& core, Pa root) {
    for (uint64_t va : options_.breakpoints) {
      VMI_ASSIGN_OR_RETURN(Pa pa, core.Translate(AddressContext(Va(va), root)));
      VMI_ASSIGN_OR_RETURN(uint8_t original, core.ReadU8(AccessContext::Physical(pa)));
      breakpoints_.push_back({Va(va), pa, original, false});
      VMI_RETURN_IF_ERROR(core.WriteU8(AccessContext::Physical(pa), 0xcc));
      breakpoints_.back().armed = true;
    }
    if (!options_.breakpoints.empty()) {
      VMI_RETURN_IF_ERROR(core.MonitorEnable(amd64::MonitorInterrupt{3}));
      VMI_RETURN_IF_ERROR(core.MonitorEnable(amd64::MonitorSingleStep{}));
    }
    for (uint64_t va : options_.write_watches) {
      VMI_ASSIGN_OR_RETURN(Pa pa, core.Translate(AddressContext(Va(va), root)));
      const Gfn gfn = Amd64::GfnFromPa(pa);
      VMI_ASSIGN_OR_RETURN(MemoryAccess original, core.GetMemoryAccess(gfn, kDefaultView));
      watches_.push_back({Va(va), gfn, original, false});
      VMI_RETURN_IF_ERROR(core.SetMemoryAccess(gfn, kDefaultView, original - MemoryAccess::W()));
      watches_.back().armed = true;
    }
    if (options_.cr3) {
      VMI_RETURN_IF_ERROR(core.MonitorEnable(amd64::MonitorControlRegister{amd64::ControlRegister::kCr3}));
    }
    return absl::OkStatus();
  }

  void Line(VmiContext<D>& ctx, const char* reason, const nlohmann::json& extra,
            const std::string& text) {
    nlohmann::json j = {{"vcpu", ctx.vcpu().value()}, {"reason", reason}, {"rip", watch_internal::Hex(ctx.registers().rip)}};
    j.update(extra);
    const std::string line = options_.json ? j.dump()
                                      : absl::StrFormat("vcpu=%u %-10s rip=%s %s", ctx.vcpu().value(),
                                                        reason, watch_internal::Hex(ctx.registers().rip), text);
    summary_.lines.push_back(line);
    if (options_.out != nullptr) *options_.out << line << std::endl;
  }

  VmiEventResponse<Arch> On(VmiContext<D>& ctx, const amd64::Registers& regs,
                            const amd64::InterruptEvent& e) {
    if (e.interrupt.vector == 3) {
      for (size_t i = 0; i < breakpoints_.size(); ++i) {
        Breakpoint& bp = breakpoints_[i];
        if (bp.va.value() != regs.rip || !bp.armed) continue;
        ++summary_.breakpoint_hits;
        Line(ctx, "breakpoint", {{"address", watch_internal::Hex(bp.va.value())}}, "address=" + watch_internal::Hex(bp.va.value()));
        // Step over the original instruction, then re-arm.
        if (ctx.core().WriteU8(AccessContext::Physical(bp.pa), bp.original).ok()) bp.armed = false;
        rearm_[ctx.vcpu().value()] = i;
        return VmiEventResponse<Arch>::ToggleSingleStep();
      }
    }
    ++summary_.other;
    Line(ctx, "interrupt", {{"vector", e.interrupt.vector}}, e.interrupt.ToString());
    return VmiEventResponse<Arch>::ReinjectInterrupt();
  }

  VmiEventResponse<Arch> On(VmiContext<D>& ctx, const amd64::Registers&,
                            const amd64::SingleStepEvent&) {
    auto it = rearm_.find(ctx.vcpu().value());
    if (it == rearm_.end()) {
      ++summary_.other;
      return VmiEventResponse<Arch>::Continue();
    }
    Breakpoint& bp = breakpoints_[it->second];
    rearm_.erase(it);
    if (ctx.core().WriteU8(AccessContext::Physical(bp.pa), 0xcc).ok()) bp.armed = true;
    --summary_.events;  // the step is part of the breakpoint, not an event of its own
    return VmiEventResponse<Arch>::ToggleSingleStep();
  }

  VmiEventResponse<Arch> On(VmiContext<D>& ctx, const amd64::Registers&,
                            const amd64::MemoryAccessEvent& e) {
    ++summary_.write_hits;
    uint64_t value = 0;
    if (e.gla_valid) value = ctx.ReadU64(e.gla).value_or(0);
    Line(ctx, "write",
         {{"gpa", watch_internal::Hex(e.gpa.value())}, {"gla", e.gla_valid ? watch_internal::Hex(e.gla.value()) : "unknown"},
          {"access", e.access.ToString()}, {"value_before", watch_internal::Hex(value)}},
         absl::StrFormat("address=%s gpa=%s access=%s value_before=%s",
                         e.gla_valid ? watch_internal::Hex(e.gla.value()) : "?", watch_internal::Hex(e.gpa.value()),
                         e.access.ToString(), watch_internal::Hex(value)));
    return VmiEventResponse<Arch>::Emulate();
  }

  VmiEventResponse<Arch> On(VmiContext<D>& ctx, const amd64::Registers&,
                            const amd64::ControlRegisterWriteEvent& e) {
    if (e.reg == amd64::ControlRegister::kCr3) ++summary_.cr3_writes; else ++summary_.other;
    Line(ctx, "cr-write",
         {{"register", amd64::ControlRegisterName(e.reg)}, {"old", watch_internal::Hex(e.old_value)}, {"new", watch_internal::Hex(e.new_value)}},
         absl::StrFormat("%s %s -> %s", amd64::ControlRegisterName(e.reg), watch_internal::Hex(e.old_value),
                         watch_internal::Hex(e.new_value)));
    return VmiEventResponse<Arch>::Continue();
  }

  template <typename Other>
  VmiEventResponse<Arch> On(VmiContext<D>& ctx, const amd64::Registers&, const Other& e) {
    ++summary_.other;
    Line(ctx, "other", {{"detail", e.ToString()}}, e.ToString());
    return VmiEventResponse<Arch>::Continue();
  }

  Options options_;
  absl::Time start_;
  std::vector<Breakpoint> breakpoints_;
  std::vector<WriteWatch> watches_;
  absl::flat_hash_map<uint16_t, size_t> rearm_;  // vCPU -> breakpoint to re-arm after its step
  Summary summary_;
  absl::Status cleanup_status_;
};

// Arms, runs the event loop, disarms. The summary, or an error.
template <VmiFullDriver D>
absl::StatusOr<Summary> Run(VmiCore<D>& core, const Options& options) {
  if (!options.HasEventSource()) {
    return absl::InvalidArgumentError(
        "watch: nothing to watch (no breakpoint, write watch or CR3 monitor): no event could ever "
        "come");
  }
  Handler<D> handler(options);
  {
    VMI_ASSIGN_OR_RETURN(auto guard, core.PauseScoped());
    VMI_RETURN_IF_ERROR(handler.Arm(core));
  }
  VmiSession<D> session(core);
  VmiEventLoopOptions loop;
  loop.wait_timeout = options.wait_timeout;
  loop.interrupted = options.interrupted;
  VMI_ASSIGN_OR_RETURN(std::optional<Summary> result, RunEventLoop(session, handler, loop));
  VMI_RETURN_IF_ERROR(handler.cleanup_status());
  return result ? *result : handler.summary();
}

}  // namespace vmi::watch

#endif  // VMI_WATCH_WATCH_H_
