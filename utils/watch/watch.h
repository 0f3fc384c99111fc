// Watching a guest: breakpoints, write watches (EPT write permission
// removed) and CR3-write monitoring, one line per event (text or JSON),
// everything restored on exit including on an interrupt. Written once
// against the capability concepts; the `vmi watch` command, `vmi demo`,
// tests and benchmarks use it.
//
// Breakpoints are hidden by default (drivers with views, protection and
// events: utils::Reactor): an INT3 in a shadow copy of the page, mapped in a
// breakpoint view the vCPUs run in, so guest reads of its code see the
// original bytes, and the breakpoint follows the page through the guest's
// page tables. A breakpoint is translated under vCPU 0's CR3 and hits under
// any CR3 (as an INT3 in memory would). With `pending`, an address that does not translate yet is
// accepted and armed when the guest maps it (a "page-in" line says where);
// a page going away parks it again ("page-out").
//
// Visible breakpoints (hidden = false; drivers without views) follow the
// classic protocol: the INT3 event reports RIP at the INT3; the handler puts
// the original byte back and single-steps the vCPU over the original
// instruction; the single-step event re-arms the INT3 and turns
// single-stepping off.
//
// A write to a watched page is reported and then performed once by
// emulation; the page stays watched (in the breakpoint view too).
//
// Thread-safety: single-threaded; the interrupt flag may be set from a
// signal handler.

#ifndef VMI_UTILS_WATCH_WATCH_H_
#define VMI_UTILS_WATCH_WATCH_H_

#include <atomic>
#include <memory>
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
#include "utils/reactor/reactor.h"

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
  // Hidden breakpoints (shadow pages) where the driver can; else INT3 in
  // guest memory.
  bool hidden = true;
  // Accept breakpoints whose address does not translate yet (hidden only).
  bool pending = false;

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
  std::vector<std::string> paging;  // page-in/page-out lines of breakpoint pages
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
    if (options_.pending && !(kCanHide && options_.hidden)) {
      return absl::InvalidArgumentError(
          kCanHide ? "pending breakpoints are hidden ones: they cannot be INT3s in guest memory (drop --int3)"
                   : "pending breakpoints need a target with views and memory permissions (hidden "
                     "breakpoints); this one has none");
    }
    absl::Status status = kCanHide && options_.hidden ? ArmHidden(core, root) : ArmInt3(core, root);
    if (status.ok()) status = ArmWatches(core, root);
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
      if (w.armed_in_view && retry([&] { return core.SetMemoryAccess(w.gfn, *w.view, w.original_in_view); })) {
        w.armed_in_view = false;
      }
    }
    if constexpr (kCanHide) {
      if (reactor_ != nullptr && retry([&] { return reactor_->Teardown(); })) reactor_.reset();
    }
    return first.ok() ? absl::OkStatus() : AnnotateStatus(first, "disarm");
  }

  VmiEventResponse<Arch> HandleEvent(VmiContext<D>& ctx) {
    if constexpr (kCanHide) {
      if (reactor_ != nullptr) {
        // The reactor answers its own events (steps, page tables, shadow
        // accesses) silently; only reported ones count.
        context_ = &ctx;
        const size_t before = summary_.lines.size();
        VmiEventResponse<Arch> r = reactor_->Handle(ctx.event());
        context_ = nullptr;
        summary_.events += summary_.lines.size() - before;
        return r;
      }
    }
    ++summary_.events;
    return Dispatch(ctx);
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
    // In the breakpoint view (hidden breakpoints), where the vCPUs run.
    std::optional<View> view;
    MemoryAccess original_in_view;
    bool armed_in_view = false;
  };
  static constexpr bool kCanHide = utils::ReactorDriver<D>;

  VmiEventResponse<Arch> Dispatch(VmiContext<D>& ctx) {
    const amd64::Registers& regs = ctx.registers();
    return std::visit(
        [&](const auto& reason) -> VmiEventResponse<Arch> { return On(ctx, regs, reason); },
        ctx.reason());
  }

  // Hidden breakpoints through a reactor.
  absl::Status ArmHidden(VmiCore<D>& core, Pa root) {
    if constexpr (kCanHide) {
      if (!options_.breakpoints.empty()) {
        VMI_ASSIGN_OR_RETURN(reactor_, utils::Reactor<D>::Create(core));
        reactor_->OnBreakpoint([this](const auto& hit) {
          for (const utils::BreakpointSpec& b : hit.breakpoints) {
            ++summary_.breakpoint_hits;
            const std::string address = watch_internal::Hex(b.va.value());
            Line(*context_, "breakpoint", {{"address", address}, {"pa", watch_internal::Hex(hit.pa.value())}},
                 absl::StrFormat("address=%s pa=%s", address, watch_internal::Hex(hit.pa.value())));
          }
        });
        reactor_->OnUpdate([this](const utils::PageTableUpdate& u) { Paging(u); });
        // Events that are not the reactor's: write watches, CR3, others.
        reactor_->OnEvent([this](const VmiEvent<Arch>&) { return Dispatch(*context_); });
        for (uint64_t va : options_.breakpoints) {
          absl::StatusOr<utils::BreakpointState> st =
              reactor_->Insert({.key = 0, .root = root, .va = Va(va), .global = true, .tag = va});
          if (!st.ok()) return AnnotateStatus(st.status(), absl::StrFormat("breakpoint at %s", watch_internal::Hex(va)));
          if (*st == utils::BreakpointState::kPending && !options_.pending) {
            return absl::FailedPreconditionError(absl::StrFormat(
                "breakpoint at %s: the address does not translate under CR3 %s (not mapped yet? "
                "--pending arms it when the guest maps it)",
                watch_internal::Hex(va), root));
          }
        }
      }
      return absl::OkStatus();
    } else {
      return ArmInt3(core, root);
    }
  }

  // A line for a breakpoint page coming or going (not an event of its own).
  void Paging(const utils::PageTableUpdate& u) {
    const bool in = u.kind == utils::PageTableUpdate::Kind::kPageIn;
    const char* reason = in ? "page-in" : "page-out";
    nlohmann::json j = {{"vcpu", context_->vcpu().value()},
                        {"reason", reason},
                        {"page", watch_internal::Hex(u.ctx.va.value())},
                        {"pa", watch_internal::Hex(u.pa.value())}};
    const std::string line =
        options_.json ? j.dump()
                      : absl::StrFormat("vcpu=%u %-10s page=%s pa=%s", context_->vcpu().value(), reason,
                                        watch_internal::Hex(u.ctx.va.value()), watch_internal::Hex(u.pa.value()));
    summary_.paging.push_back(line);
    if (options_.out != nullptr) *options_.out << line << std::endl;
  }

  // Breakpoints as INT3s written into guest memory.
  absl::Status ArmInt3(VmiCore<D>& core, Pa root) {
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
    return absl::OkStatus();
  }

  // Write watches (in the default view, and in the breakpoint view where the
  // vCPUs run when breakpoints are hidden) and the CR3 monitor.
  absl::Status ArmWatches(VmiCore<D>& core, Pa root) {
    for (uint64_t va : options_.write_watches) {
      VMI_ASSIGN_OR_RETURN(Pa pa, core.Translate(AddressContext(Va(va), root)));
      const Gfn gfn = Amd64::GfnFromPa(pa);
      VMI_ASSIGN_OR_RETURN(MemoryAccess original, core.GetMemoryAccess(gfn, kDefaultView));
      watches_.push_back({Va(va), gfn, original, false, std::nullopt, MemoryAccess(), false});
      VMI_RETURN_IF_ERROR(core.SetMemoryAccess(gfn, kDefaultView, original - MemoryAccess::W()));
      watches_.back().armed = true;
      if constexpr (kCanHide) {
        if (reactor_ != nullptr) {
          const View view = reactor_->view();
          VMI_ASSIGN_OR_RETURN(MemoryAccess in_view, core.GetMemoryAccess(gfn, view));
          watches_.back().view = view;
          watches_.back().original_in_view = in_view;
          VMI_RETURN_IF_ERROR(core.SetMemoryAccess(gfn, view, in_view - MemoryAccess::W()));
          watches_.back().armed_in_view = true;
        }
      }
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
  std::unique_ptr<utils::Reactor<D>> reactor_;    // hidden breakpoints
  VmiContext<D>* context_ = nullptr;              // the event the reactor is handling
  Summary summary_;
  absl::Status cleanup_status_;
};

// Arms, runs the event loop, disarms. The summary, or an error.
template <VmiFullDriver D>
absl::StatusOr<Summary> Run(VmiCore<D>& core, const Options& options) {
  if (!options.HasEventSource()) {
    return absl::InvalidArgumentError(
        "nothing to watch (no breakpoint, write watch or CR3 monitor): no event could ever "
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

#endif  // VMI_UTILS_WATCH_WATCH_H_
