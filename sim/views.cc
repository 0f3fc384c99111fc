#include "sim/views.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace vmi::sim {

ViewTable::ViewTable(Gfn max_gfn) : max_gfn_(max_gfn) {
  views_[0] = ViewState{MemoryAccess::RWX(), {}, {}, {}};
}

absl::StatusOr<View> ViewTable::Create(MemoryAccess default_access) {
  for (uint16_t id = 1; id < kMaxViews; ++id) {
    if (!views_.contains(id)) {
      views_[id] = ViewState{default_access, {}, {}, {}};
      return View(id);
    }
  }
  return absl::ResourceExhaustedError(absl::StrFormat(
      "create_view(default_access=%s): all %d views in use", default_access, kMaxViews));
}

absl::Status ViewTable::Destroy(View view) {
  if (view == kDefaultView) {
    return absl::InvalidArgumentError("destroy_view(view=0): the host view cannot be destroyed");
  }
  if (views_.erase(view.value()) == 0) {
    return absl::InvalidArgumentError(absl::StrFormat("destroy_view(view=%s): no such view", view));
  }
  return absl::OkStatus();
}

bool ViewTable::Exists(View view) const { return views_.contains(view.value()); }

absl::Status ViewTable::Check(const char* op, View view, Gfn gfn) const {
  if (!Exists(view)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s(view=%s, gfn=%s): no such view", op, view, gfn));
  }
  if (gfn > max_gfn_) {
    return absl::NotFoundError(
        absl::StrFormat("%s(view=%s, gfn=%s): gfn beyond max_gfn %s", op, view, gfn, max_gfn_));
  }
  return absl::OkStatus();
}

absl::Status ViewTable::SetAccess(View view, Gfn gfn, MemoryAccess access,
                                  MemoryAccessOptions options) {
  if (absl::Status s = Check("set_memory_access", view, gfn); !s.ok()) return s;
  ViewState& v = views_[view.value()];
  if (access == v.default_access) {
    v.access.erase(gfn.value());
  } else {
    v.access[gfn.value()] = access;
  }
  if (options.empty()) {
    v.options.erase(gfn.value());
  } else {
    v.options[gfn.value()] = options;
  }
  return absl::OkStatus();
}

absl::StatusOr<MemoryAccessOptions> ViewTable::GetOptions(View view, Gfn gfn) const {
  if (absl::Status s = Check("get_memory_access", view, gfn); !s.ok()) return s;
  return Lookup(view, gfn).options;
}

absl::StatusOr<MemoryAccess> ViewTable::GetAccess(View view, Gfn gfn) const {
  if (absl::Status s = Check("get_memory_access", view, gfn); !s.ok()) return s;
  return Lookup(view, gfn).access;
}

absl::Status ViewTable::ChangeGfn(View view, Gfn old_gfn, Gfn new_gfn) {
  if (absl::Status s = Check("change_gfn", view, old_gfn); !s.ok()) return s;
  if (view == kDefaultView) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "change_gfn(view=0, old_gfn=%s, new_gfn=%s): the host view cannot be remapped", old_gfn,
        new_gfn));
  }
  if (new_gfn > max_gfn_) {
    return absl::NotFoundError(
        absl::StrFormat("change_gfn(view=%s, old_gfn=%s, new_gfn=%s): new_gfn beyond max_gfn %s",
                        view, old_gfn, new_gfn, max_gfn_));
  }
  ViewState& v = views_[view.value()];
  if (new_gfn == old_gfn) {
    v.remap.erase(old_gfn.value());
  } else {
    v.remap[old_gfn.value()] = new_gfn.value();
  }
  return absl::OkStatus();
}

absl::Status ViewTable::ResetGfn(View view, Gfn gfn) {
  if (absl::Status s = Check("reset_gfn", view, gfn); !s.ok()) return s;
  views_[view.value()].remap.erase(gfn.value());
  return absl::OkStatus();
}

absl::StatusOr<MemoryAccess> ViewTable::DefaultAccess(View view) const {
  auto it = views_.find(view.value());
  if (it == views_.end()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("default_access(view=%s): no such view", view));
  }
  return it->second.default_access;
}

ViewEntry ViewTable::Lookup(View view, Gfn gfn) const {
  const ViewState& v = views_.at(view.value());
  ViewEntry e{gfn, v.default_access, MemoryAccessOptions::None()};
  if (auto it = v.access.find(gfn.value()); it != v.access.end()) e.access = it->second;
  if (auto it = v.remap.find(gfn.value()); it != v.remap.end()) e.backing = Gfn(it->second);
  if (auto it = v.options.find(gfn.value()); it != v.options.end()) e.options = it->second;
  return e;
}

std::vector<Gfn> ViewTable::Overrides(View view) const {
  std::vector<Gfn> out;
  auto it = views_.find(view.value());
  if (it == views_.end()) return out;
  for (const auto& [gfn, access] : it->second.access) out.push_back(Gfn(gfn));
  for (const auto& [gfn, backing] : it->second.remap) out.push_back(Gfn(gfn));
  for (const auto& [gfn, options] : it->second.options) out.push_back(Gfn(gfn));
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::vector<View> ViewTable::Views() const {
  std::vector<View> out;
  for (const auto& [id, state] : views_) out.push_back(View(id));
  return out;
}

}  // namespace vmi::sim
