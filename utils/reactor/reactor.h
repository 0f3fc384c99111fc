// Reactor: the event loop that makes breakpoints survive paging, wiring a
// breakpoint controller (the Interceptor's hidden INT3s, or the
// ExecuteController's execute permission), the PageTableMonitor and the
// BreakpointManager together. OS-agnostic: it knows page tables, not
// processes.
//
// What it answers, per event (each vCPU on its own):
//   - a write violation on a monitored page-table frame: the written
//     entries are marked dirty and the writing instruction is single-stepped
//     in the default view (where the frame is writable); on that single step
//     the dirty entries are re-read, the PageIn/PageOut updates go to the
//     breakpoint manager (pending breakpoints placed, gone ones parked) and
//     the vCPU returns to the view it came from;
//   - a read of a shadowed page (Interceptor): the instruction runs in the
//     default view, which maps the original frame (a guest reading its own
//     code sees no INT3); a write: single-stepped in the default view, then
//     the shadow is refreshed from the original;
//   - an INT3 at one of the interceptor's addresses (or an execute violation
//     at an ExecuteController breakpoint): the breakpoint handler is called
//     with the breakpoints that apply under the vCPU's root, then the
//     original instruction runs in the default view; an INT3 that is not
//     ours is reinjected into the guest;
//   - anything else goes to the event handler (default: reinject an
//     intercepted interrupt, continue otherwise).
// InjectPageFault(vcpu, va) delivers a #PF for va at that vCPU's next event
// (a pending breakpoint's page is then paged in by the guest and the
// monitor sees it); a breakpoint hit at that moment is not stepped over, so
// it fires again once the guest returns from the fault.
//
// Errors inside a handler cannot be returned to the driver: they are counted
// and the first one is kept (last_error()); the guest always resumes.
// Teardown (also on destruction) removes every breakpoint, releases every
// monitored frame, lifts every shadow, disables the monitors it enabled,
// puts the vCPUs back in the default view and destroys the view it created.
// Tear down with no single step in flight (between WaitForEvent calls, after
// in_flight() is 0).
//
// Thread-safety: thread-compatible; one event loop at a time.

#ifndef VMI_UTILS_REACTOR_REACTOR_H_
#define VMI_UTILS_REACTOR_REACTOR_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "arch/amd64/amd64.h"
#include "core/driver.h"
#include "core/error.h"
#include "core/event.h"
#include "core/vmi_core.h"
#include "utils/bpm/breakpoint_manager.h"
#include "utils/interceptor/execute_controller.h"
#include "utils/interceptor/interceptor.h"
#include "utils/ptm/page_table_monitor.h"

namespace vmi::utils {

template <typename D>
concept ReactorDriver = InterceptorDriver<D> && PageTableMonitorDriver<D> && VmiEventControl<D> &&
                        VmiQueryRegisters<D>;

template <ReactorDriver D, typename Controller = Interceptor<D>>
class Reactor {
 public:
  using Event = VmiEvent<Amd64>;
  using Response = VmiEventResponse<Amd64>;
  static constexpr bool kHiddenInt3 = std::is_same_v<Controller, Interceptor<D>>;

  // A breakpoint hit: where, and the breakpoints that apply under the
  // vCPU's root (empty when only other roots' breakpoints share the frame).
  struct Hit {
    const Event& event;
    Pa pa;
    Pa root;
    absl::Span<const BreakpointSpec> breakpoints;
  };
  using BreakpointHandler = std::function<void(const Hit&)>;
  using EventHandler = std::function<Response(const Event&)>;
  using UpdateHandler = std::function<void(const PageTableUpdate&)>;

  struct Options {
    // The breakpoint view; a new one (RWX) when not set.
    std::optional<View> view;
    // Take the paging mode (4- or 5-level) from vCPU 0's registers.
    bool paging_mode_from_vcpu0 = true;
  };

  struct Stats {
    uint64_t events = 0;
    uint64_t hits = 0;               // our breakpoints executed
    uint64_t foreign_breakpoints = 0;  // INT3s reinjected
    uint64_t frames_from_event = 0;  // INT3s placed by the event's instruction_gfn (no walk)
    uint64_t table_writes = 0;       // write violations on monitored tables
    uint64_t updates = 0;            // PageIn + PageOut
    uint64_t shadow_reads = 0, shadow_writes = 0;
    uint64_t page_faults_injected = 0;
    uint64_t errors = 0;
  };

  static absl::StatusOr<std::unique_ptr<Reactor>> Create(VmiCore<D>& core, Options options = {}) {
    std::unique_ptr<Reactor> r(new Reactor(core));
    if (options.paging_mode_from_vcpu0) {
      VMI_ASSIGN_OR_RETURN(amd64::Registers regs, core.GetRegisters(VcpuId(0)));
      core.SetPagingMode(Amd64::PagingModeOf(regs));
    }
    if (options.view) {
      r->view_ = *options.view;
    } else {
      VMI_ASSIGN_OR_RETURN(r->view_, core.CreateView(MemoryAccess::RWX()));
      r->owns_view_ = true;
    }
    r->started_ = true;  // from here on, Teardown undoes what was done
    if constexpr (kHiddenInt3) {
      VMI_RETURN_IF_ERROR(AnnotateStatus(core.MonitorEnable(amd64::MonitorInterrupt{3}), "reactor: start"));
      r->int3_monitor_ = true;
    }
    VMI_RETURN_IF_ERROR(AnnotateStatus(core.MonitorEnable(amd64::MonitorSingleStep{}), "reactor: start"));
    r->step_monitor_ = true;
    VMI_RETURN_IF_ERROR(AnnotateStatus(core.SwitchToView(r->view_), "reactor: start"));
    return r;
  }

  Reactor(const Reactor&) = delete;
  Reactor& operator=(const Reactor&) = delete;
  ~Reactor() { Teardown().IgnoreError(); }

  View view() const { return view_; }
  Controller& controller() { return controller_; }
  PageTableMonitor<D>& page_tables() { return ptm_; }
  BreakpointManager<D, Controller>& breakpoints() { return bpm_; }
  const Stats& stats() const { return stats_; }
  // The first error met while handling events (OK if none).
  const absl::Status& last_error() const { return first_error_; }
  // vCPUs in the middle of a single step the reactor started.
  size_t in_flight() const {
    size_t n = 0;
    for (const auto& [vcpu, st] : vcpus_) n += st.stepping ? 1 : 0;
    return n;
  }

  void OnBreakpoint(BreakpointHandler h) { on_hit_ = std::move(h); }
  void OnEvent(EventHandler h) { on_event_ = std::move(h); }
  void OnUpdate(UpdateHandler h) { on_update_ = std::move(h); }

  // A breakpoint in the reactor's view (spec.view is overridden when unset).
  absl::StatusOr<BreakpointState> Insert(BreakpointSpec spec) {
    if (spec.view == View()) spec.view = view_;
    return bpm_.Insert(spec);
  }

  // Removes the breakpoints a hit reported (from the breakpoint handler: the
  // original instruction still runs, and they never fire again).
  absl::Status RemoveHit(const Hit& hit) { return bpm_.RemoveByEvent(hit.event.view, hit.pa, hit.root); }

  // Delivers #PF(va) with `error_code` (amd64::page_fault_error bits) to
  // `vcpu` at its next event the reactor answers.
  void InjectPageFault(VcpuId vcpu, Va va, uint32_t error_code) {
    vcpus_[vcpu.value()].fault = amd64::Interrupt::PageFault(va, error_code);
  }

  // Waits up to `timeout` for one event and answers it.
  absl::Status Run(absl::Duration timeout) {
    return core_.WaitForEvent(timeout, [this](const Event& e) { return Handle(e); });
  }

  // The answer to one event (for callers running their own loop).
  Response Handle(const Event& e) {
    ++stats_.events;
    Response r = Dispatch(e);
    VcpuState& st = vcpus_[e.vcpu.value()];
    if (st.fault && !st.stepping &&
        (r.action == EventAction::kContinue || r.action == EventAction::kFastSingleStep)) {
      if (Keep(core_.InjectInterrupt(e.vcpu, *st.fault), "reactor: injecting a page fault")) {
        ++stats_.page_faults_injected;
        // The instruction is not run now: the guest takes the fault first
        // and comes back to it.
        if (r.action == EventAction::kFastSingleStep) r = Response::Continue();
      }
      st.fault.reset();
    }
    return r;
  }

  // Undoes everything; each step is done once, so after an error the call
  // can be repeated until it succeeds.
  absl::Status Teardown() {
    if (!started_) return absl::OkStatus();
    absl::Status first;
    auto keep = [&first](absl::Status s) {
      if (!s.ok() && first.ok()) first = std::move(s);
      return s.ok();
    };
    keep(bpm_.RemoveAll());
    keep(ptm_.UnmonitorAll());
    keep(controller_.RemoveAll());
    if (int3_monitor_ && keep(core_.MonitorDisable(amd64::MonitorInterrupt{3}))) int3_monitor_ = false;
    if (step_monitor_ && keep(core_.MonitorDisable(amd64::MonitorSingleStep{}))) step_monitor_ = false;
    const bool back = keep(core_.SwitchToView(kDefaultView));
    if (owns_view_ && back && keep(core_.DestroyView(view_))) owns_view_ = false;
    if (!first.ok()) return AnnotateStatus(first, "reactor: teardown");
    vcpus_.clear();
    started_ = false;
    return absl::OkStatus();
  }

 private:
  struct VcpuState {
    bool stepping = false;     // single-stepping in the default view for us
    View return_view;          // where to go back to afterwards
    std::optional<Gfn> refresh;  // a shadowed frame the step wrote
    std::optional<amd64::Interrupt> fault;  // a #PF to deliver
  };

  explicit Reactor(VmiCore<D>& core) : core_(core), controller_(core), ptm_(core), bpm_(controller_, ptm_) {}

  bool Keep(const absl::Status& s, absl::string_view what) {
    if (s.ok()) return true;
    ++stats_.errors;
    if (first_error_.ok()) first_error_ = AnnotateStatus(s, what);
    return false;
  }

  Response Dispatch(const Event& e) {
    if (const auto* m = std::get_if<amd64::MemoryAccessEvent>(&e.reason)) return OnMemoryAccess(e, *m);
    if (const auto* i = std::get_if<amd64::InterruptEvent>(&e.reason)) {
      if constexpr (kHiddenInt3) {
        if (i->interrupt.vector == amd64::exception::kBreakpoint &&
            i->interrupt.type == amd64::InterruptType::kSoftwareException) {
          return OnInt3(e);
        }
      }
    }
    if (std::holds_alternative<amd64::SingleStepEvent>(e.reason)) {
      VcpuState& st = vcpus_[e.vcpu.value()];
      if (st.stepping) return OnStepDone(e, st);
    }
    return Other(e);
  }

  Response Other(const Event& e) {
    if (on_event_) return on_event_(e);
    if (std::holds_alternative<amd64::InterruptEvent>(e.reason)) return Response::ReinjectInterrupt();
    return Response::Continue();
  }

  // Runs the access's instruction in the default view, with a single-step
  // event afterwards.
  Response StepInDefaultView(const Event& e, VcpuState& st) {
    st.stepping = true;
    st.return_view = e.view;
    return Response::ToggleSingleStep().WithView(kDefaultView);
  }

  Response OnMemoryAccess(const Event& e, const amd64::MemoryAccessEvent& m) {
    const Gfn gfn = Amd64::GfnFromPa(m.gpa);
    VcpuState& st = vcpus_[e.vcpu.value()];
    if (ptm_.IsMonitoredFrame(e.view, gfn)) {
      if (m.access.write()) {
        ptm_.MarkDirty(e.vcpu, e.view, m.gpa);
        ++stats_.table_writes;
        return StepInDefaultView(e, st);
      }
      return Response::FastSingleStep(kDefaultView);  // executing a table frame
    }
    if constexpr (kHiddenInt3) {
      if (controller_.IsShadowed(e.view, gfn)) {
        if (m.access.write()) {
          ++stats_.shadow_writes;
          st.refresh = gfn;
          return StepInDefaultView(e, st);
        }
        ++stats_.shadow_reads;
        return Response::FastSingleStep(kDefaultView);
      }
    } else {
      if (m.access.execute() && controller_.IsControlled(e.view, gfn)) {
        if (controller_.Contains(e.view, gfn, Amd64::PageOffset(m.gpa.value()))) {
          ReportHit(e, m.gpa, Amd64::TranslationRoot(e.registers));
        }
        return Response::FastSingleStep(kDefaultView);
      }
    }
    return Other(e);
  }

  Response OnInt3(const Event& e) {
    const Pa root = Amd64::TranslationRoot(e.registers);
    const uint64_t rip = Amd64::InstructionPointer(e.registers).value();
    std::optional<Pa> pa;
    if (const auto& gfn = std::get<amd64::InterruptEvent>(e.reason).instruction_gfn; gfn.has_value()) {
      // The driver says which guest frame the INT3 was fetched from (Xen,
      // the simulator): no page walk, and no race with the guest's tables.
      pa = Amd64::PaFromGfn(*gfn) + Amd64::PageOffset(rip);
      ++stats_.frames_from_event;
    } else {
      const AddressContext ctx(Va(rip), root);
      // The guest may have remapped the code since the core last looked.
      core_.FlushV2pEntry(ctx);
      FaultOr<Pa> walked = core_.Translate(ctx);
      if (walked.ok()) pa = *walked;
    }
    if (!pa.has_value() || !controller_.Contains(e.view, Amd64::GfnFromPa(*pa), Amd64::PageOffset(pa->value()))) {
      ++stats_.foreign_breakpoints;
      return Response::ReinjectInterrupt();
    }
    ReportHit(e, *pa, root);
    return Response::FastSingleStep(kDefaultView);
  }

  void ReportHit(const Event& e, Pa pa, Pa root) {
    ++stats_.hits;
    if (!on_hit_) return;
    hits_ = bpm_.HitsAt(e.view, pa, root);
    on_hit_(Hit{e, pa, root, hits_});
  }

  Response OnStepDone(const Event& e, VcpuState& st) {
    st.stepping = false;
    absl::StatusOr<std::vector<PageTableUpdate>> updates = ptm_.ProcessDirty(e.vcpu);
    if (Keep(updates.status(), "reactor: following the page tables")) {
      for (const PageTableUpdate& u : *updates) {
        ++stats_.updates;
        Keep(bpm_.Apply(u), "reactor: applying a page-table update");
        if (on_update_) on_update_(u);
      }
    }
    if constexpr (kHiddenInt3) {
      if (st.refresh) {
        Keep(controller_.Refresh(st.return_view, *st.refresh), "reactor: refreshing a shadow page");
        st.refresh.reset();
      }
    }
    return Response::ToggleSingleStep().WithView(st.return_view);
  }

  VmiCore<D>& core_;
  Controller controller_;
  PageTableMonitor<D> ptm_;
  BreakpointManager<D, Controller> bpm_;  // after what it uses: destroyed first
  View view_;
  bool owns_view_ = false, started_ = false, int3_monitor_ = false, step_monitor_ = false;
  absl::flat_hash_map<uint16_t, VcpuState> vcpus_;
  std::vector<BreakpointSpec> hits_;
  BreakpointHandler on_hit_;
  EventHandler on_event_;
  UpdateHandler on_update_;
  Stats stats_;
  absl::Status first_error_;
};

}  // namespace vmi::utils

#endif  // VMI_UTILS_REACTOR_REACTOR_H_
