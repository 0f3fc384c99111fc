// BreakpointManager: breakpoints on virtual addresses that survive paging.
//
// A breakpoint is identified by (key, view, root, va): `key` is the caller's
// grouping (a process, a hook), `root` the address space whose tables
// translate `va`, `view` the view it lives in; it carries a `tag` for the
// caller. When inserted, its page is watched with the PageTableMonitor:
//   - if va translates, the breakpoint is placed at the physical address
//     through the controller (the Interceptor's hidden INT3, or the
//     ExecuteController's execute permission): active;
//   - if not, it is pending;
//   - Apply(PageIn) places the pending breakpoints of that page at the new
//     frame, Apply(PageOut) lifts the active ones (pending again).
// Several breakpoints at one physical address share the controller's
// reference count. A global breakpoint (a kernel address mapped alike in
// every address space) is translated under its root but hits under any
// root; HitsAt filters the others by the event's root. Remove by identity,
// by key, by address, by the event that hit them, by view, or all.
//
// Failures: Insert either fully succeeds or changes nothing; Remove keeps
// the breakpoint when the controller cannot lift it (repeat the call); Apply
// goes on with the other breakpoints of the page and reports the first
// error (a breakpoint that could not be placed stays pending).
//
// Thread-safety: thread-compatible; uses the controller and monitor it was
// given.

#ifndef VMI_UTILS_BPM_BREAKPOINT_MANAGER_H_
#define VMI_UTILS_BPM_BREAKPOINT_MANAGER_H_

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "arch/amd64/amd64.h"
#include "core/error.h"
#include "core/vmi_core.h"
#include "utils/ptm/page_table_monitor.h"

namespace vmi::utils {

// What the manager needs from a breakpoint controller (Interceptor,
// ExecuteController).
template <typename C>
concept BreakpointController = requires(C& c, const C& cc, View view, Pa pa, Gfn gfn, uint64_t offset) {
  { c.Insert(view, pa).ok() } -> std::convertible_to<bool>;
  { c.Remove(view, pa).ok() } -> std::convertible_to<bool>;
  { cc.Contains(view, gfn, offset) } -> std::convertible_to<bool>;
};

struct BreakpointSpec {
  uint64_t key = 0;  // the caller's grouping (process, hook, ...)
  View view;
  Pa root;  // the address space whose tables translate va
  Va va;
  bool global = false;  // hits under any root (kernel addresses)
  uint64_t tag = 0;     // the caller's

  friend bool operator==(const BreakpointSpec&, const BreakpointSpec&) = default;
  std::string ToString() const {
    return absl::StrFormat("breakpoint(key=%u view=%s root=%s va=%s%s tag=%u)", key, view, root, va,
                           global ? " global" : "", tag);
  }
};

enum class BreakpointState : uint8_t { kPending, kActive };

template <typename D, BreakpointController Controller>
class BreakpointManager {
 public:
  BreakpointManager(Controller& controller, PageTableMonitor<D>& ptm) : controller_(controller), ptm_(ptm) {}
  BreakpointManager(const BreakpointManager&) = delete;
  BreakpointManager& operator=(const BreakpointManager&) = delete;
  ~BreakpointManager() { RemoveAll().IgnoreError(); }

  // Inserts a breakpoint: active when its address translates now, pending
  // otherwise. AlreadyExists for the same (key, view, root, va).
  absl::StatusOr<BreakpointState> Insert(const BreakpointSpec& spec) {
    const Id id = IdOf(spec);
    const std::string what = spec.ToString();
    if (bps_.contains(id)) return absl::AlreadyExistsError(absl::StrCat(what, " already exists"));
    const AddressContext ctx(spec.va, spec.root);
    absl::StatusOr<std::optional<Pa>> page = ptm_.Monitor(spec.view, ctx);
    if (!page.ok()) return AnnotateStatus(page.status(), absl::StrCat("inserting ", what));
    Bp bp{spec, std::nullopt};
    if (*page) {
      const Pa pa = **page + Amd64::PageOffset(spec.va.value());
      if (auto r = controller_.Insert(spec.view, pa); !r.ok()) {
        ptm_.Unmonitor(spec.view, ctx).IgnoreError();
        return AnnotateStatus(r.status(), absl::StrFormat("inserting %s at pa %s", what, pa));
      }
      bp.pa = pa;
      at_[PaKey(spec.view, pa)].push_back(id);
    }
    by_page_[PageKeyOf(spec.view, spec.root, spec.va)].push_back(id);
    const BreakpointState state = bp.pa ? BreakpointState::kActive : BreakpointState::kPending;
    bps_.emplace(id, std::move(bp));
    return state;
  }

  // Removes one breakpoint. NotFound when there is none.
  absl::Status Remove(uint64_t key, View view, Pa root, Va va) {
    auto it = bps_.find(Id{key, view.value(), root.value(), va.value()});
    if (it == bps_.end()) {
      return absl::NotFoundError(absl::StrFormat("no breakpoint (key=%u view=%s root=%s va=%s)", key, view,
                                                 root, va));
    }
    return RemoveIt(it);
  }
  // Every breakpoint with this key / at this address (any key and root) /
  // in this view / at all; the first error is reported, the rest go on.
  absl::Status RemoveByKey(uint64_t key) {
    return RemoveIf([key](const BreakpointSpec& s) { return s.key == key; });
  }
  absl::Status RemoveByAddress(View view, Va va) {
    return RemoveIf([view, va](const BreakpointSpec& s) { return s.view == view && s.va == va; });
  }
  absl::Status RemoveByView(View view) {
    return RemoveIf([view](const BreakpointSpec& s) { return s.view == view; });
  }
  // The breakpoints an event hit: those active at (view, pa) that apply
  // under `root` (what HitsAt returns).
  absl::Status RemoveByEvent(View view, Pa pa, Pa root) {
    std::vector<BreakpointSpec> hits = HitsAt(view, pa, root);
    return RemoveIf([&hits](const BreakpointSpec& s) { return std::find(hits.begin(), hits.end(), s) != hits.end(); });
  }
  absl::Status RemoveAll() {
    return RemoveIf([](const BreakpointSpec&) { return true; });
  }

  // A PageIn places the page's pending breakpoints at the new frame; a
  // PageOut lifts its active ones.
  absl::Status Apply(const PageTableUpdate& update) {
    auto page = by_page_.find(PageKeyOf(update.view, update.ctx.root, update.ctx.va));
    if (page == by_page_.end()) return absl::OkStatus();
    absl::Status first;
    for (const Id& id : page->second) {
      Bp& bp = bps_.at(id);
      const uint64_t offset = Amd64::PageOffset(bp.spec.va.value());
      if (update.kind == PageTableUpdate::Kind::kPageIn && !bp.pa) {
        const Pa pa = update.pa + offset;
        if (auto r = controller_.Insert(bp.spec.view, pa); !r.ok()) {
          if (first.ok()) first = AnnotateStatus(r.status(), absl::StrFormat("activating %s at pa %s", bp.spec.ToString(), pa));
          continue;
        }
        bp.pa = pa;
        at_[PaKey(bp.spec.view, pa)].push_back(id);
      } else if (update.kind == PageTableUpdate::Kind::kPageOut && bp.pa && *bp.pa == update.pa + offset) {
        if (auto r = controller_.Remove(bp.spec.view, *bp.pa); !r.ok() && !absl::IsNotFound(r.status())) {
          if (first.ok()) first = AnnotateStatus(r.status(), absl::StrFormat("parking %s", bp.spec.ToString()));
          continue;
        }
        Unlink(id, bp);
        bp.pa.reset();
      }
    }
    return first;
  }
  absl::Status Apply(absl::Span<const PageTableUpdate> updates) {
    absl::Status first;
    for (const PageTableUpdate& u : updates) {
      if (absl::Status s = Apply(u); !s.ok() && first.ok()) first = s;
    }
    return first;
  }

  // The breakpoints active at (view, pa) that apply under `root` (their own
  // root, or any root when global).
  std::vector<BreakpointSpec> HitsAt(View view, Pa pa, Pa root) const {
    std::vector<BreakpointSpec> out;
    auto it = at_.find(PaKey(view, pa));
    if (it == at_.end()) return out;
    for (const Id& id : it->second) {
      const BreakpointSpec& s = bps_.at(id).spec;
      if (s.global || s.root == root) out.push_back(s);
    }
    return out;
  }
  // Whether any breakpoint is active at (view, pa), whatever its root.
  bool ActiveAt(View view, Pa pa) const { return at_.contains(PaKey(view, pa)); }

  std::optional<BreakpointState> State(uint64_t key, View view, Pa root, Va va) const {
    auto it = bps_.find(Id{key, view.value(), root.value(), va.value()});
    if (it == bps_.end()) return std::nullopt;
    return it->second.pa ? BreakpointState::kActive : BreakpointState::kPending;
  }
  // Where an active breakpoint is placed.
  std::optional<Pa> PlacedAt(uint64_t key, View view, Pa root, Va va) const {
    auto it = bps_.find(Id{key, view.value(), root.value(), va.value()});
    return it == bps_.end() ? std::nullopt : it->second.pa;
  }

  size_t size() const { return bps_.size(); }
  size_t active() const {
    return static_cast<size_t>(std::count_if(bps_.begin(), bps_.end(), [](const auto& e) { return e.second.pa.has_value(); }));
  }
  size_t pending() const { return size() - active(); }

 private:
  // (key, view, root, va)
  using Id = std::tuple<uint64_t, uint16_t, uint64_t, uint64_t>;
  using PageKey = std::tuple<uint16_t, uint64_t, uint64_t>;  // (view, root, va page)
  using PaKeyT = std::pair<uint16_t, uint64_t>;              // (view, pa)
  struct Bp {
    BreakpointSpec spec;
    std::optional<Pa> pa;  // where it is placed (active)
  };
  static Id IdOf(const BreakpointSpec& s) { return {s.key, s.view.value(), s.root.value(), s.va.value()}; }
  static PageKey PageKeyOf(View view, Pa root, Va va) {
    return {view.value(), root.value(), va.value() & ~(Amd64::kPageSize - 1)};
  }
  static PaKeyT PaKey(View view, Pa pa) { return {view.value(), pa.value()}; }

  void Unlink(const Id& id, const Bp& bp) {
    auto at = at_.find(PaKey(bp.spec.view, *bp.pa));
    if (at == at_.end()) return;
    auto& ids = at->second;
    ids.erase(std::remove(ids.begin(), ids.end(), id), ids.end());
    if (ids.empty()) at_.erase(at);
  }

  template <typename It>
  absl::Status RemoveIt(It it) {
    const Id id = it->first;
    Bp& bp = it->second;
    if (bp.pa) {
      // NotFound: the controller lost it already (its RemoveAll ran).
      if (auto r = controller_.Remove(bp.spec.view, *bp.pa); !r.ok() && !absl::IsNotFound(r.status())) {
        return AnnotateStatus(r.status(), absl::StrCat("removing ", bp.spec.ToString()));
      }
      Unlink(id, bp);
    }
    const BreakpointSpec spec = bp.spec;
    auto page = by_page_.find(PageKeyOf(spec.view, spec.root, spec.va));
    if (page != by_page_.end()) {
      auto& ids = page->second;
      ids.erase(std::remove(ids.begin(), ids.end(), id), ids.end());
      if (ids.empty()) by_page_.erase(page);
    }
    bps_.erase(it);
    // The monitor drops the watch even when a restore fails (it retries
    // those itself), so the breakpoint is gone either way; NotFound: the
    // monitor let go of everything already (its UnmonitorAll ran).
    absl::Status s = ptm_.Unmonitor(spec.view, AddressContext(spec.va, spec.root));
    if (absl::IsNotFound(s)) return absl::OkStatus();
    return AnnotateStatus(s, absl::StrCat("removing ", spec.ToString()));
  }

  template <typename Pred>
  absl::Status RemoveIf(Pred pred) {
    std::vector<Id> ids;
    for (const auto& [id, bp] : bps_) {
      if (pred(bp.spec)) ids.push_back(id);
    }
    std::sort(ids.begin(), ids.end());
    absl::Status first;
    for (const Id& id : ids) {
      auto it = bps_.find(id);
      if (it == bps_.end()) continue;
      if (absl::Status s = RemoveIt(it); !s.ok() && first.ok()) first = s;
    }
    return first;
  }

  Controller& controller_;
  PageTableMonitor<D>& ptm_;
  absl::flat_hash_map<Id, Bp> bps_;
  absl::flat_hash_map<PageKey, std::vector<Id>> by_page_;
  absl::flat_hash_map<PaKeyT, std::vector<Id>> at_;
};

}  // namespace vmi::utils

#endif  // VMI_UTILS_BPM_BREAKPOINT_MANAGER_H_
