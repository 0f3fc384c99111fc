// PageTableMonitor: follows the guest page-table entries that translate a
// set of (view, root, va) and reports when a page comes or goes:
// PageIn(view, ctx, pa) when ctx.va starts translating (or translates to a
// new frame), PageOut(view, ctx, pa) when it stops translating to pa.
//
// How: for every watched address the monitor walks the tables (4-level or
// 5-level, whatever the VmiCore's paging mode is) and write-protects, in the
// watch's view, every frame holding an entry of the walk, including the
// entry that was not present. The protection is read-only with
// MemoryAccessOptions::IgnorePageWalkUpdates, so the CPU's own accessed /
// dirty updates during a walk do not raise events (Xen: r_pw) while guest
// instructions writing an entry raise a write violation (a driver that
// cannot express the option gets plain read-only frames, see
// ignores_page_walk_updates()). The event loop
// (utils/reactor) then:
//   1. MarkDirty(vcpu, view, gpa): records the watched entries the write
//      may touch, per vCPU;
//   2. runs the writing instruction in a view where the frame is writable
//      (single step in the default view);
//   3. ProcessDirty(vcpu): re-reads the dirty entries' tables (caches for
//      those frames invalidated first), re-walks every watched address that
//      depends on them, highest table level first, and returns the updates.
// Frames shared by several addresses, roots or levels are protected once,
// with a reference count per (view, frame); a frame's previous access is
// restored when its last watched entry goes. Large pages (2M/1G leaves)
// work like 4K ones: the leaf is the last entry of the walk.
//
// A monitored frame is read-only in its view: a guest that executes or
// writes it there gets an event the caller answers by running the access in
// the default view. The monitor owns the access of the frames it protects
// until they are released; do not change it behind its back.
//
// Guest tables are hostile: a walk reads at most five tables; a table
// outside guest memory, a reserved bit or a missing entry all mean "does not
// translate" (the entries read so far stay watched); a non-canonical address
// is refused. A driver failing to read a table is an error, never "does not
// translate".
//
// Thread-safety: thread-compatible; uses the VmiCore it was given.

#ifndef VMI_UTILS_PTM_PAGE_TABLE_MONITOR_H_
#define VMI_UTILS_PTM_PAGE_TABLE_MONITOR_H_

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "arch/amd64/amd64.h"
#include "core/driver.h"
#include "core/error.h"
#include "core/vmi_core.h"

namespace vmi::utils {

template <typename D>
concept PageTableMonitorDriver = VmiRead<D> && VmiQueryProtection<D> && VmiSetProtection<D> &&
                                 std::is_same_v<typename D::Architecture, Amd64>;

struct PageTableUpdate {
  enum class Kind : uint8_t { kPageIn, kPageOut };
  Kind kind = Kind::kPageIn;
  View view;
  AddressContext ctx;  // the watched page (va page-aligned) and its root
  Pa pa;               // PageIn: where ctx.va translates now; PageOut: where it did

  friend bool operator==(const PageTableUpdate&, const PageTableUpdate&) = default;
  // "page_in(view=1 va=0x... root=0x... pa=0x...)".
  std::string ToString() const {
    return absl::StrFormat("%s(view=%s %s pa=%s)", kind == Kind::kPageIn ? "page_in" : "page_out",
                           view, ctx, pa);
  }
  friend std::ostream& operator<<(std::ostream& os, const PageTableUpdate& u) {
    return os << u.ToString();
  }
};

template <PageTableMonitorDriver D>
class PageTableMonitor {
 public:
  // What monitored frames are set to in their view.
  static constexpr MemoryAccess kProtectedAccess = MemoryAccess::R();

  explicit PageTableMonitor(VmiCore<D>& core) : core_(core) {}
  PageTableMonitor(const PageTableMonitor&) = delete;
  PageTableMonitor& operator=(const PageTableMonitor&) = delete;
  // Releases every frame (best effort; call UnmonitorAll to see errors).
  ~PageTableMonitor() { UnmonitorAll().IgnoreError(); }

  // Starts watching the translation of the page holding ctx.va under
  // ctx.root in `view`, or takes one more reference on the watch. Returns
  // where the page translates now (nullopt: it does not). On error nothing
  // changed.
  absl::StatusOr<std::optional<Pa>> Monitor(View view, AddressContext ctx) {
    const WatchKey key = KeyOf(view, ctx);
    if (auto it = watches_.find(key); it != watches_.end()) {
      ++it->second.refs;
      return it->second.pa;
    }
    if (!IsCanonical(ctx.va)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("page-table monitor: watching %s in view %s: non-canonical address", ctx, view));
    }
    Watch watch;
    watch.view = view;
    watch.ctx = AddressContext(PageOf(ctx.va), ctx.root);
    VMI_RETURN_IF_ERROR(AnnotateStatus(WalkFor(watch),
                                       absl::StrFormat("page-table monitor: watching %s in view %s", ctx, view)));
    if (watch.count == 0) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "page-table monitor: watching %s in view %s: the root table %s cannot be read", ctx, view, ctx.root));
    }
    VMI_RETURN_IF_ERROR(AnnotateStatus(Reference(key, watch, 0),
                                       absl::StrFormat("page-table monitor: watching %s in view %s", ctx, view)));
    watch.refs = 1;
    const std::optional<Pa> pa = watch.pa;
    watches_.emplace(key, std::move(watch));
    return pa;
  }

  // Drops one reference to the watch (the last one releases its entries and
  // restores frames no other watch needs). NotFound when not watched.
  absl::Status Unmonitor(View view, AddressContext ctx) {
    auto it = watches_.find(KeyOf(view, ctx));
    if (it == watches_.end()) {
      return absl::NotFoundError(
          absl::StrFormat("page-table monitor: %s is not watched in view %s", ctx, view));
    }
    if (--it->second.refs > 0) return absl::OkStatus();
    Watch watch = std::move(it->second);
    watches_.erase(it);
    Unreference(it_key(watch), watch, 0);
    return RestoreReleased();
  }

  // Stops watching everything in `view` (everywhere when nullopt) and
  // restores the frames; frames whose restore failed are retried by the
  // next call.
  absl::Status UnmonitorAll(std::optional<View> only = std::nullopt) {
    std::vector<WatchKey> keys;
    for (const auto& [key, watch] : watches_) {
      if (!only || watch.view == *only) keys.push_back(key);
    }
    for (const WatchKey& key : keys) {
      auto it = watches_.find(key);
      Watch watch = std::move(it->second);
      watches_.erase(it);
      Unreference(key, watch, 0);
    }
    if (!only) dirty_.clear();
    return RestoreReleased();
  }

  // Where the watched page translates (nullopt: it does not); NotFound when
  // it is not watched.
  absl::StatusOr<std::optional<Pa>> Translation(View view, AddressContext ctx) const {
    auto it = watches_.find(KeyOf(view, ctx));
    if (it == watches_.end()) {
      return absl::NotFoundError(
          absl::StrFormat("page-table monitor: %s is not watched in view %s", ctx, view));
    }
    return it->second.pa;
  }

  // A write violation at `gpa` in `view` by `vcpu`: true when the frame is
  // one the monitor protects in that view (the caller runs the write in the
  // default view, then calls ProcessDirty). The watched entries the write
  // may reach (16 bytes from gpa's 8-byte entry: any store up to 16 bytes)
  // are recorded as dirty for the vCPU.
  bool MarkDirty(VcpuId vcpu, View view, Pa gpa) {
    if (!frames_.contains(FrameKey{view.value(), Amd64::GfnFromPa(gpa).value()})) return false;
    const uint64_t first = gpa.value() & ~uint64_t{7};
    const uint64_t page_end = (gpa.value() | (Amd64::kPageSize - 1)) + 1;
    for (uint64_t entry = first; entry < first + 16 && entry < page_end; entry += 8) {
      if (entries_.contains(entry)) AddDirty(vcpu, entry);
    }
    return true;
  }

  // Whether `gfn` is protected by the monitor in `view`.
  // Whether the driver lets the CPU's own page-walk updates through the
  // protected frames (MemoryAccessOptions::IgnorePageWalkUpdates, Xen's
  // r_pw). A driver that cannot express the option (Xen 4.17: Unimplemented)
  // gets plain read-only frames instead: a walk that sets an accessed or
  // dirty bit in a watched table is then a write violation too, which the
  // event loop handles like a guest write (step, re-read: nothing changed).
  // False from the first refusal on.
  bool ignores_page_walk_updates() const { return ignore_pw_; }

  bool IsMonitoredFrame(View view, Gfn gfn) const {
    return frames_.contains(FrameKey{view.value(), gfn.value()});
  }
  bool HasDirty(VcpuId vcpu) const {
    auto it = dirty_.find(vcpu.value());
    return it != dirty_.end() && !it->second.empty();
  }

  // Re-reads the entries `vcpu` dirtied and returns what changed, in the
  // order found (the watches depending on the highest-level dirty entry
  // first; for each watch a PageOut before its PageIn). Entries that did not
  // change give nothing. On an error (a frame that cannot be protected) the
  // affected watch keeps its previous state and its entries stay dirty, so
  // the call can be repeated.
  absl::StatusOr<std::vector<PageTableUpdate>> ProcessDirty(VcpuId vcpu) {
    std::vector<PageTableUpdate> updates;
    auto dit = dirty_.find(vcpu.value());
    if (dit == dirty_.end() || dit->second.empty()) return updates;
    std::vector<uint64_t> dirty(dit->second.begin(), dit->second.end());
    dit->second.clear();
    // Highest level first (then by address, for a stable order).
    std::vector<std::pair<int, uint64_t>> order;
    for (uint64_t entry : dirty) {
      auto e = entries_.find(entry);
      if (e == entries_.end()) continue;  // released since
      order.emplace_back(-static_cast<int>(e->second.level), entry);
    }
    std::sort(order.begin(), order.end());
    // The tables changed behind the caches' back.
    for (const auto& [neg_level, entry] : order) {
      const Gfn gfn = Amd64::GfnFromPa(Pa(entry));
      core_.FlushPageCacheEntry(gfn);
      core_.v2p_cache().InvalidateTableGfn(gfn);
    }
    std::vector<WatchKey> affected;
    absl::flat_hash_set<WatchKey> seen;
    for (const auto& [neg_level, entry] : order) {
      auto e = entries_.find(entry);
      if (e == entries_.end()) continue;
      for (const WatchKey& key : e->second.dependents) {
        if (seen.insert(key).second) affected.push_back(key);
      }
    }
    absl::Status first_error;
    for (const WatchKey& key : affected) {
      auto it = watches_.find(key);
      if (it == watches_.end()) continue;
      absl::Status s = Rewalk(key, it->second, updates);
      if (!s.ok()) {
        if (first_error.ok()) first_error = s;
        for (uint8_t i = 0; i < it->second.count; ++i) AddDirty(vcpu, it->second.entries[i]);
      }
    }
    if (absl::Status s = RestoreReleased(); !s.ok() && first_error.ok()) first_error = s;
    if (!first_error.ok()) return first_error;
    return updates;
  }

  // Number of watched pages, of protected (view, frame) pairs, and of
  // distinct watched entries.
  size_t watches() const { return watches_.size(); }
  size_t frames() const { return frames_.size(); }
  size_t entries() const { return entries_.size(); }

 private:
  // (view, root, va page).
  using WatchKey = std::tuple<uint16_t, uint64_t, uint64_t>;
  struct FrameKey {
    uint16_t view;
    uint64_t gfn;
    friend bool operator==(const FrameKey&, const FrameKey&) = default;
    template <typename H>
    friend H AbslHashValue(H h, const FrameKey& k) {
      return H::combine(std::move(h), k.view, k.gfn);
    }
  };
  struct Watch {
    View view;
    AddressContext ctx;  // page-aligned va
    uint32_t refs = 0;
    std::optional<Pa> pa;
    // The entries the last walk read, root first.
    std::array<uint64_t, 5> entries{};
    std::array<uint8_t, 5> levels{};
    uint8_t count = 0;
  };
  struct Entry {
    uint8_t level = 0;
    std::vector<WatchKey> dependents;
  };
  struct Frame {
    uint32_t refs = 0;  // (watch, entry) references in this view
    MemoryAccess saved_access;
    MemoryAccessOptions saved_options;
  };

  static Va PageOf(Va va) { return Va(va.value() & ~(Amd64::kPageSize - 1)); }
  static WatchKey KeyOf(View view, AddressContext ctx) {
    return {view.value(), ctx.root.value(), PageOf(ctx.va).value()};
  }
  static WatchKey it_key(const Watch& w) { return KeyOf(w.view, w.ctx); }
  bool IsCanonical(Va va) const {
    const int bits = core_.paging_mode().kind == amd64::PagingMode::Kind::kFiveLevel ? 57 : 48;
    const int shift = 64 - bits;
    return static_cast<uint64_t>(static_cast<int64_t>(va.value() << shift) >> shift) == va.value();
  }

  // Reads guest tables through the VmiCore (its page cache).
  struct Reader {
    VmiCore<D>* core;
    absl::StatusOr<MappedPage> ReadPage(Gfn gfn) { return core->ReadPage(gfn); }
  };

  // Walks watch.ctx and fills entries/levels/count/pa. What the guest's
  // tables say (a missing entry, reserved bits, a table outside guest
  // memory: NotFound / FailedPrecondition / OutOfRange / InvalidArgument)
  // means "does not translate", and the entries read so far are what to
  // watch; any other failure is the driver's and is returned (the watch is
  // then not changed). An entry read twice (self-referencing tables) is kept
  // once.
  absl::Status WalkFor(Watch& watch) {
    Reader reader{&core_};
    amd64::Walk walk;
    absl::Status s = amd64::WalkInto(reader, watch.ctx, core_.paging_mode(), walk);
    if (!s.ok() && !absl::IsNotFound(s) && !absl::IsFailedPrecondition(s) && !absl::IsOutOfRange(s) &&
        !absl::IsInvalidArgument(s)) {
      return s;
    }
    watch.count = 0;
    for (uint8_t i = 0; i < walk.count; ++i) {
      const uint64_t entry = walk.steps[i].entry_address.value();
      if (Holds(watch, entry)) continue;
      watch.entries[watch.count] = entry;
      watch.levels[watch.count++] = walk.steps[i].level;
    }
    watch.pa = s.ok() ? std::optional<Pa>(walk.translation.pa) : std::nullopt;
    return absl::OkStatus();
  }

  void AddDirty(VcpuId vcpu, uint64_t entry) { dirty_[vcpu.value()].insert(entry); }

  // References watch.entries[from..count) for `key`, protecting frames that
  // become watched; on failure undoes its own references.
  absl::Status Reference(const WatchKey& key, const Watch& watch, uint8_t from) {
    for (uint8_t i = from; i < watch.count; ++i) {
      if (absl::Status s = ReferenceEntry(key, watch.view, watch.entries[i], watch.levels[i]); !s.ok()) {
        for (uint8_t j = from; j < i; ++j) UnreferenceEntry(key, watch.view, watch.entries[j]);
        RestoreReleased().IgnoreError();
        return s;
      }
    }
    return absl::OkStatus();
  }
  absl::Status Protect(Gfn gfn, View view) {
    if (ignore_pw_) {
      absl::Status s = core_.SetMemoryAccessWithOptions(gfn, view, kProtectedAccess,
                                                        MemoryAccessOptions::IgnorePageWalkUpdates());
      if (!absl::IsUnimplemented(s)) return s;
      ignore_pw_ = false;
    }
    return core_.SetMemoryAccessWithOptions(gfn, view, kProtectedAccess, MemoryAccessOptions::None());
  }

  void Unreference(const WatchKey& key, const Watch& watch, uint8_t from) {
    for (uint8_t i = from; i < watch.count; ++i) UnreferenceEntry(key, watch.view, watch.entries[i]);
  }

  absl::Status ReferenceEntry(const WatchKey& key, View view, uint64_t entry, uint8_t level) {
    const FrameKey fk{view.value(), Amd64::GfnFromPa(Pa(entry)).value()};
    auto fit = frames_.find(fk);
    if (fit == frames_.end()) {
      auto released = released_.find(fk);
      if (released != released_.end()) {
        // Still protected (its restore failed earlier): take it back.
        fit = frames_.emplace(fk, released->second).first;
        released_.erase(released);
      } else {
        const Gfn gfn(fk.gfn);
        VMI_ASSIGN_OR_RETURN(auto access, core_.GetMemoryAccessWithOptions(gfn, view));
        VMI_RETURN_IF_ERROR(Protect(gfn, view));
        fit = frames_.emplace(fk, Frame{0, access.first, access.second}).first;
      }
    }
    ++fit->second.refs;
    Entry& e = entries_[entry];
    e.level = level;
    e.dependents.push_back(key);
    return absl::OkStatus();
  }

  // Never fails: a frame whose last reference goes moves to released_, and
  // RestoreReleased gives it its access back.
  void UnreferenceEntry(const WatchKey& key, View view, uint64_t entry) {
    if (auto e = entries_.find(entry); e != entries_.end()) {
      auto& deps = e->second.dependents;
      if (auto d = std::find(deps.begin(), deps.end(), key); d != deps.end()) deps.erase(d);
      if (deps.empty()) entries_.erase(e);
    }
    const FrameKey fk{view.value(), Amd64::GfnFromPa(Pa(entry)).value()};
    auto fit = frames_.find(fk);
    if (fit == frames_.end()) return;
    if (--fit->second.refs == 0) {
      released_.emplace(fk, fit->second);
      frames_.erase(fit);
    }
  }

  absl::Status RestoreReleased() {
    absl::Status first;
    for (auto it = released_.begin(); it != released_.end();) {
      const Gfn gfn(it->first.gfn);
      const View view(it->first.view);
      absl::Status s =
          core_.SetMemoryAccessWithOptions(gfn, view, it->second.saved_access, it->second.saved_options);
      if (s.ok()) {
        released_.erase(it++);
      } else {
        if (first.ok()) {
          first = AnnotateStatus(
              s, absl::StrFormat("page-table monitor: restoring the access of gfn %s in view %s", gfn, view));
        }
        ++it;
      }
    }
    return first;
  }

  // Walks a watch again, references its new entries before dropping the old
  // ones, and appends the PageOut/PageIn its translation change means.
  absl::Status Rewalk(const WatchKey& key, Watch& watch, std::vector<PageTableUpdate>& updates) {
    Watch fresh = watch;
    VMI_RETURN_IF_ERROR(AnnotateStatus(
        WalkFor(fresh), absl::StrFormat("page-table monitor: following %s in view %s", watch.ctx, watch.view)));
    // Entries both walks read keep their reference; new ones are taken
    // first, so a failure leaves the watch as it was.
    Watch added = fresh;
    added.count = 0;
    for (uint8_t i = 0; i < fresh.count; ++i) {
      if (!Holds(watch, fresh.entries[i])) {
        added.entries[added.count] = fresh.entries[i];
        added.levels[added.count++] = fresh.levels[i];
      }
    }
    VMI_RETURN_IF_ERROR(AnnotateStatus(
        Reference(key, added, 0),
        absl::StrFormat("page-table monitor: following %s in view %s", watch.ctx, watch.view)));
    for (uint8_t i = 0; i < watch.count; ++i) {
      if (!Holds(fresh, watch.entries[i])) UnreferenceEntry(key, watch.view, watch.entries[i]);
    }
    if (watch.pa != fresh.pa) {
      if (watch.pa) updates.push_back({PageTableUpdate::Kind::kPageOut, watch.view, watch.ctx, *watch.pa});
      if (fresh.pa) updates.push_back({PageTableUpdate::Kind::kPageIn, watch.view, watch.ctx, *fresh.pa});
    }
    fresh.refs = watch.refs;
    watch = fresh;
    return absl::OkStatus();
  }
  static bool Holds(const Watch& w, uint64_t entry) {
    for (uint8_t i = 0; i < w.count; ++i) {
      if (w.entries[i] == entry) return true;
    }
    return false;
  }

  VmiCore<D>& core_;
  bool ignore_pw_ = true;  // see ignores_page_walk_updates()
  absl::flat_hash_map<WatchKey, Watch> watches_;
  absl::flat_hash_map<uint64_t, Entry> entries_;  // by entry guest-physical address
  absl::flat_hash_map<FrameKey, Frame> frames_;
  absl::flat_hash_map<FrameKey, Frame> released_;  // access not yet restored
  absl::flat_hash_map<uint16_t, absl::flat_hash_set<uint64_t>> dirty_;  // by vCPU
};

}  // namespace vmi::utils

#endif  // VMI_UTILS_PTM_PAGE_TABLE_MONITOR_H_
