// The simulator's EPT analogue with Xen altp2m semantics: views, each with a
// default access, per-frame R/W/X overrides and per-frame remaps
// (change_gfn: in that view, accesses to the old frame reach the new one).
// View 0 is the host view: it always exists, cannot be destroyed or remapped,
// but takes access overrides like any other view.
//
// ViewTable is only the bookkeeping; Machine applies it to the vCPU engines.
// Errors follow the driver contract (core/driver.h): an unknown view is
// InvalidArgument, a frame beyond max_gfn NotFound.
//
// Thread-safety: thread-compatible.

#ifndef VMI_SIM_VIEWS_H_
#define VMI_SIM_VIEWS_H_

#include <cstdint>
#include <map>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/types.h"

namespace vmi::sim {

// How one guest frame looks in one view.
struct ViewEntry {
  Gfn backing;          // the frame accesses actually reach
  MemoryAccess access;  // what the view allows
  // IgnorePageWalkUpdates: the CPU's own accessed/dirty-bit updates of this
  // frame (a page-table frame) pass even where `access` lacks write.
  MemoryAccessOptions options;
  friend bool operator==(const ViewEntry&, const ViewEntry&) = default;
};

class ViewTable {
 public:
  static constexpr uint16_t kMaxViews = 64;

  explicit ViewTable(Gfn max_gfn);

  // A new view in which every frame has `default_access` and maps to itself.
  absl::StatusOr<View> Create(MemoryAccess default_access);
  absl::Status Destroy(View view);
  bool Exists(View view) const;

  // Sets the frame's access and options (a change of access without options
  // drops options set before, as Xen's set_mem_access does).
  absl::Status SetAccess(View view, Gfn gfn, MemoryAccess access,
                         MemoryAccessOptions options = MemoryAccessOptions::None());
  absl::StatusOr<MemoryAccess> GetAccess(View view, Gfn gfn) const;
  absl::StatusOr<MemoryAccessOptions> GetOptions(View view, Gfn gfn) const;
  absl::Status ChangeGfn(View view, Gfn old_gfn, Gfn new_gfn);
  absl::Status ResetGfn(View view, Gfn gfn);

  absl::StatusOr<MemoryAccess> DefaultAccess(View view) const;
  // The entry of `gfn` in `view` (which must exist and `gfn` be valid).
  ViewEntry Lookup(View view, Gfn gfn) const;
  // The frames whose entry in `view` differs from {itself, default access, no
  // options}.
  std::vector<Gfn> Overrides(View view) const;
  std::vector<View> Views() const;

  Gfn max_gfn() const { return max_gfn_; }

 private:
  struct ViewState {
    MemoryAccess default_access;
    absl::flat_hash_map<uint64_t, MemoryAccess> access;  // gfn -> access override
    absl::flat_hash_map<uint64_t, uint64_t> remap;       // gfn -> backing gfn
    absl::flat_hash_map<uint64_t, MemoryAccessOptions> options;  // gfn -> non-empty options
  };
  absl::Status Check(const char* op, View view, Gfn gfn) const;

  Gfn max_gfn_;
  std::map<uint16_t, ViewState> views_;
};

}  // namespace vmi::sim

#endif  // VMI_SIM_VIEWS_H_
