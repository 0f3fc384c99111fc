// ExecuteController: breakpoints without touching guest memory. The frame
// holding a breakpoint loses execute permission in the breakpoint's view, so
// every instruction fetched from it raises an execute violation; the one at
// a breakpoint's address is a hit, the others are run in the default view
// and the guest goes on (utils/reactor does both). Slower than the
// Interceptor's INT3 on a busy page, but nothing in the guest's memory
// changes, not even in a shadow.
//
// Same shape as the Interceptor (Insert/Remove with references per offset,
// Contains), so the BreakpointManager and the Reactor take either. Removing
// the last breakpoint of a frame restores its previous access; a failure
// leaves the frame as it was.
//
// Thread-safety: thread-compatible; uses the VmiCore it was given.

#ifndef VMI_UTILS_INTERCEPTOR_EXECUTE_CONTROLLER_H_
#define VMI_UTILS_INTERCEPTOR_EXECUTE_CONTROLLER_H_

#include <cstdint>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "arch/amd64/amd64.h"
#include "core/driver.h"
#include "core/error.h"
#include "core/event.h"
#include "core/vmi_core.h"
#include "utils/interceptor/pages.h"

namespace vmi::utils {

template <typename D>
concept ExecuteControllerDriver = VmiQueryProtection<D> && VmiSetProtection<D> &&
                                  std::is_same_v<typename D::Architecture, Amd64>;

template <ExecuteControllerDriver D>
class ExecuteController {
 public:
  explicit ExecuteController(VmiCore<D>& core) : core_(core) {}
  ExecuteController(const ExecuteController&) = delete;
  ExecuteController& operator=(const ExecuteController&) = delete;
  ~ExecuteController() { RemoveAll().IgnoreError(); }

  // Inserts a breakpoint at `pa` in `view` (or one more reference on it).
  // Returns the frame.
  absl::StatusOr<Gfn> Insert(View view, Pa pa) {
    const Gfn gfn = Amd64::GfnFromPa(pa);
    const uint16_t offset = static_cast<uint16_t>(Amd64::PageOffset(pa.value()));
    auto it = pages_.find(Key(view, gfn));
    if (it == pages_.end()) {
      const std::string what = absl::StrFormat("execute controller: breakpoint at pa %s in view %s", pa, view);
      auto access = core_.GetMemoryAccessWithOptions(gfn, view);
      if (!access.ok()) return AnnotateStatus(access.status(), what);
      if (!access->first.execute()) {
        return absl::FailedPreconditionError(
            absl::StrFormat("%s: the frame is not executable in the view (%s)", what, access->first));
      }
      if (absl::Status s = core_.SetMemoryAccessWithOptions(gfn, view, access->first - MemoryAccess::X(),
                                                           access->second);
          !s.ok()) {
        return AnnotateStatus(s, what);
      }
      it = pages_.emplace(Key(view, gfn), Page{access->first, access->second, {}}).first;
    }
    ++it->second.references[offset];
    return gfn;
  }

  // Drops one reference: true when the breakpoint is gone. NotFound when
  // there is none.
  absl::StatusOr<bool> Remove(View view, Pa pa) {
    const Gfn gfn = Amd64::GfnFromPa(pa);
    const uint16_t offset = static_cast<uint16_t>(Amd64::PageOffset(pa.value()));
    auto it = pages_.find(Key(view, gfn));
    if (it == pages_.end() || !it->second.references.contains(offset)) {
      return absl::NotFoundError(
          absl::StrFormat("execute controller: no breakpoint at pa %s in view %s", pa, view));
    }
    Page& page = it->second;
    auto ref = page.references.find(offset);
    if (ref->second > 1) {
      --ref->second;
      return false;
    }
    if (page.references.size() == 1) {
      VMI_RETURN_IF_ERROR(Restore(view, gfn, page));
      pages_.erase(it);
      return true;
    }
    page.references.erase(ref);
    return true;
  }

  absl::Status RemoveAll(std::optional<View> only = std::nullopt) {
    return controller_internal::UndoPages(
        pages_, only, [this](View view, Gfn gfn, Page& page) { return Restore(view, gfn, page); });
  }

  bool Contains(View view, Gfn gfn, uint64_t offset) const {
    auto it = pages_.find(Key(view, gfn));
    return it != pages_.end() && it->second.references.contains(static_cast<uint16_t>(offset));
  }
  // Whether `gfn` has breakpoints in `view` (its instructions fault there).
  bool IsControlled(View view, Gfn gfn) const { return pages_.contains(Key(view, gfn)); }

  size_t pages() const { return pages_.size(); }
  size_t breakpoints() const {
    size_t n = 0;
    for (const auto& [key, page] : pages_) n += page.references.size();
    return n;
  }

 private:
  struct Page {
    MemoryAccess saved_access;
    MemoryAccessOptions saved_options;
    std::map<uint16_t, uint32_t> references;  // by offset
  };
  static controller_internal::PageKey Key(View view, Gfn gfn) { return controller_internal::KeyOf(view, gfn); }

  absl::Status Restore(View view, Gfn gfn, const Page& page) {
    return AnnotateStatus(core_.SetMemoryAccessWithOptions(gfn, view, page.saved_access, page.saved_options),
                          absl::StrFormat("execute controller: restoring gfn %s in view %s", gfn, view));
  }

  VmiCore<D>& core_;
  absl::flat_hash_map<controller_internal::PageKey, Page> pages_;
};

}  // namespace vmi::utils

#endif  // VMI_UTILS_INTERCEPTOR_EXECUTE_CONTROLLER_H_
