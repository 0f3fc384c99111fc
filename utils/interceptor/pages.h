// What the two breakpoint controllers (Interceptor, ExecuteController) share:
// their per-page records are keyed by (view, guest frame), and both undo
// every page of a view, or of all views, the same way.
//
// Thread-safety: none (helpers over the caller's map).

#ifndef VMI_UTILS_INTERCEPTOR_PAGES_H_
#define VMI_UTILS_INTERCEPTOR_PAGES_H_

#include <cstdint>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "core/types.h"

namespace vmi::utils::controller_internal {

using PageKey = std::pair<uint16_t, uint64_t>;

inline PageKey KeyOf(View view, Gfn gfn) { return {view.value(), gfn.value()}; }

// Undoes every page of view `only` (of every view when nullopt) with
// `undo(view, gfn, page)` and drops it from `pages`. A page whose undo fails
// stays, so a later call retries it; the first failure is returned.
template <typename Map, typename Undo>
absl::Status UndoPages(Map& pages, std::optional<View> only, Undo undo) {
  absl::Status first;
  for (auto it = pages.begin(); it != pages.end();) {
    const auto [view_value, gfn_value] = it->first;
    if (only && only->value() != view_value) {
      ++it;
      continue;
    }
    absl::Status s = undo(View(view_value), Gfn(gfn_value), it->second);
    if (s.ok()) {
      pages.erase(it++);
    } else {
      if (first.ok()) first = s;
      ++it;
    }
  }
  return first;
}

}  // namespace vmi::utils::controller_internal

#endif  // VMI_UTILS_INTERCEPTOR_PAGES_H_
