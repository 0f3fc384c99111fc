// Interceptor: software breakpoints hidden from the guest with shadow pages
// (the altp2m technique). A breakpoint at guest-physical address `pa` in a
// view gets:
//   - a shadow frame (AllocateGfn), a copy of the original page with an INT3
//     at the breakpoint's offset;
//   - a remap in that view, original frame -> shadow frame (ChangeViewGfn),
//     so code running in the view executes the INT3;
//   - execute-only access to the frame in that view, so a guest read or
//     write of the page raises a memory-access event instead of seeing the
//     INT3: the caller runs that one instruction in the default view, where
//     the original frame is mapped (a guest that checksums its own code sees
//     nothing). After a guest write the caller calls Refresh, which copies
//     the changed page into the shadow again.
// Breakpoints are reference-counted per offset. Removing the last one of an
// offset puts the original byte back in the shadow; removing the last one
// of a page resets the remap, restores the frame's previous access and frees
// the shadow frame (FreeGfn). Inserting again later starts from a fresh copy.
//
// Failure part-way: Insert undoes what it did before the failing step
// (frees the shadow, resets the remap, restores the access), so an error
// leaves no half-installed breakpoint. Remove keeps its bookkeeping until
// every step succeeded, so it can be called again after an error.
//
// Contains recognises the interceptor's own breakpoints in an event: an
// INT3 (vector 3, software exception) in the breakpoint's view whose RIP
// lies in one of its pages at one of its offsets. A breakpoint that is not
// ours is for the caller to reinject.
//
// Thread-safety: thread-compatible; uses the VmiCore it was given.

#ifndef VMI_UTILS_INTERCEPTOR_INTERCEPTOR_H_
#define VMI_UTILS_INTERCEPTOR_INTERCEPTOR_H_

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
concept InterceptorDriver = VmiMemory<D> && VmiViewControl<D> && VmiVmControl<D> &&
                            VmiProtection<D> && std::is_same_v<typename D::Architecture, Amd64>;

inline constexpr uint8_t kInt3 = 0xcc;

template <InterceptorDriver D>
class Interceptor {
 public:
  explicit Interceptor(VmiCore<D>& core) : core_(core) {}
  Interceptor(const Interceptor&) = delete;
  Interceptor& operator=(const Interceptor&) = delete;
  // Removes every breakpoint (best effort; call RemoveAll to see errors).
  ~Interceptor() { RemoveAll().IgnoreError(); }

  // Inserts a breakpoint at `pa` in `view`, or takes one more reference on
  // the one there. Returns the shadow frame.
  absl::StatusOr<Gfn> Insert(View view, Pa pa) {
    const Gfn gfn = Amd64::GfnFromPa(pa);
    const uint16_t offset = static_cast<uint16_t>(Amd64::PageOffset(pa.value()));
    auto it = pages_.find(Key(view, gfn));
    if (it == pages_.end()) {
      VMI_ASSIGN_OR_RETURN(Page page, ShadowPage(view, gfn, offset));
      const Gfn shadow = page.shadow;
      pages_.emplace(Key(view, gfn), std::move(page));
      return shadow;
    }
    Page& page = it->second;
    if (auto bp = page.breakpoints.find(offset); bp != page.breakpoints.end()) {
      ++bp->second.references;
      return page.shadow;
    }
    VMI_ASSIGN_OR_RETURN(uint8_t original, ShadowByte(page.shadow, offset));
    VMI_RETURN_IF_ERROR(WriteByte(page.shadow, offset, kInt3));
    page.breakpoints[offset] = Breakpoint{original, 1};
    return page.shadow;
  }

  // Drops one reference to the breakpoint at `pa` in `view`: true when it
  // is gone (the last reference). NotFound when there is none.
  absl::StatusOr<bool> Remove(View view, Pa pa) {
    const Gfn gfn = Amd64::GfnFromPa(pa);
    const uint16_t offset = static_cast<uint16_t>(Amd64::PageOffset(pa.value()));
    auto it = pages_.find(Key(view, gfn));
    if (it == pages_.end() || !it->second.breakpoints.contains(offset)) {
      return absl::NotFoundError(
          absl::StrFormat("interceptor: no breakpoint at pa %s in view %s", pa, view));
    }
    Page& page = it->second;
    auto bp = page.breakpoints.find(offset);
    if (bp->second.references > 1) {
      --bp->second.references;
      return false;
    }
    if (page.breakpoints.size() > 1) {
      VMI_RETURN_IF_ERROR(WriteByte(page.shadow, offset, bp->second.original));
      page.breakpoints.erase(bp);
      return true;
    }
    // The page's last breakpoint: the page goes back to how it was.
    VMI_RETURN_IF_ERROR(Unshadow(view, gfn, page));
    pages_.erase(it);
    return true;
  }

  // Removes every breakpoint in `view` (in every view when nullopt).
  absl::Status RemoveAll(std::optional<View> only = std::nullopt) {
    return controller_internal::UndoPages(
        pages_, only, [this](View view, Gfn gfn, Page& page) { return Unshadow(view, gfn, page); });
  }

  // Whether the INT3 at `offset` of guest frame `gfn` in `view` is ours.
  bool Contains(View view, Gfn gfn, uint64_t offset) const {
    auto it = pages_.find(Key(view, gfn));
    return it != pages_.end() && it->second.breakpoints.contains(static_cast<uint16_t>(offset));
  }
  // Whether `event` is one of our INT3s. `rip_gfn` is the guest frame of
  // the event's RIP (the guest's page tables say which).
  bool Contains(const VmiEvent<Amd64>& event, Gfn rip_gfn) const {
    const auto* i = std::get_if<amd64::InterruptEvent>(&event.reason);
    if (i == nullptr || i->interrupt.vector != amd64::exception::kBreakpoint ||
        i->interrupt.type != amd64::InterruptType::kSoftwareException) {
      return false;
    }
    return Contains(event.view, rip_gfn, Amd64::PageOffset(event.registers.rip));
  }
  // The same with the frame the event itself carries (`instruction_gfn`, as
  // Xen and the simulator report it); false when the event carries none, so a
  // caller on a driver that does not report it (QEMU) walks the page tables
  // and calls the overload above.
  bool Contains(const VmiEvent<Amd64>& event) const {
    const auto* i = std::get_if<amd64::InterruptEvent>(&event.reason);
    return i != nullptr && i->instruction_gfn.has_value() && Contains(event, *i->instruction_gfn);
  }

  // Whether guest frame `gfn` is shadowed in `view` (its reads and writes
  // there are intercepted).
  bool IsShadowed(View view, Gfn gfn) const { return pages_.contains(Key(view, gfn)); }

  // Copies the original page into the shadow again (after the guest wrote
  // it) and puts the INT3s back.
  absl::Status Refresh(View view, Gfn gfn) {
    auto it = pages_.find(Key(view, gfn));
    if (it == pages_.end()) return absl::OkStatus();
    Page& page = it->second;
    VMI_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, PageBytes(gfn));
    for (auto& [offset, bp] : page.breakpoints) {
      bp.original = bytes[offset];
      bytes[offset] = kInt3;
    }
    return core_.Write(AccessContext::Physical(Amd64::PaFromGfn(page.shadow)), bytes);
  }

  size_t pages() const { return pages_.size(); }
  size_t breakpoints() const {
    size_t n = 0;
    for (const auto& [key, page] : pages_) n += page.breakpoints.size();
    return n;
  }
  // The shadow frames in use (for leak checks).
  std::vector<Gfn> shadow_frames() const {
    std::vector<Gfn> out;
    for (const auto& [key, page] : pages_) out.push_back(page.shadow);
    return out;
  }

 private:
  struct Breakpoint {
    uint8_t original = 0;
    uint32_t references = 0;
  };
  struct Page {
    Gfn shadow;
    MemoryAccess saved_access;
    MemoryAccessOptions saved_options;
    std::map<uint16_t, Breakpoint> breakpoints;  // by offset
    // How far a teardown got (so that it can be repeated after an error).
    bool remap_reset = false, access_restored = false;
  };
  static controller_internal::PageKey Key(View view, Gfn gfn) { return controller_internal::KeyOf(view, gfn); }

  absl::StatusOr<std::vector<uint8_t>> PageBytes(Gfn gfn) {
    std::vector<uint8_t> bytes(Amd64::kPageSize);
    VMI_RETURN_IF_ERROR(core_.Read(AccessContext::Physical(Amd64::PaFromGfn(gfn)), absl::MakeSpan(bytes)));
    return bytes;
  }
  absl::StatusOr<uint8_t> ShadowByte(Gfn shadow, uint16_t offset) {
    return core_.ReadU8(AccessContext::Physical(Amd64::PaFromGfn(shadow) + offset));
  }
  absl::Status WriteByte(Gfn gfn, uint16_t offset, uint8_t value) {
    return core_.WriteU8(AccessContext::Physical(Amd64::PaFromGfn(gfn) + offset), value);
  }

  // A new shadowed page with one breakpoint, or nothing changed.
  absl::StatusOr<Page> ShadowPage(View view, Gfn gfn, uint16_t offset) {
    Page page;
    VMI_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, PageBytes(gfn));
    VMI_ASSIGN_OR_RETURN(auto access, core_.GetMemoryAccessWithOptions(gfn, view));
    page.saved_access = access.first;
    page.saved_options = access.second;
    page.breakpoints[offset] = Breakpoint{bytes[offset], 1};
    bytes[offset] = kInt3;
    VMI_ASSIGN_OR_RETURN(page.shadow, core_.AllocateGfn());
    absl::Status s = core_.Write(AccessContext::Physical(Amd64::PaFromGfn(page.shadow)), bytes);
    if (s.ok()) {
      s = core_.ChangeViewGfn(view, gfn, page.shadow);
      if (s.ok()) {
        s = core_.SetMemoryAccess(gfn, view, MemoryAccess::X());
        if (s.ok()) return page;
        core_.ResetViewGfn(view, gfn).IgnoreError();
      }
    }
    core_.FreeGfn(page.shadow).IgnoreError();
    return AnnotateStatus(s, absl::StrFormat("interceptor: shadowing gfn %s in view %s", gfn, view));
  }

  // Undoes ShadowPage: remap, access, shadow frame; each step once, so a
  // failed teardown can be repeated.
  absl::Status Unshadow(View view, Gfn gfn, Page& page) {
    const std::string what = absl::StrFormat("interceptor: unshadowing gfn %s in view %s", gfn, view);
    if (!page.remap_reset) {
      if (absl::Status s = core_.ResetViewGfn(view, gfn); !s.ok()) return AnnotateStatus(s, what);
      page.remap_reset = true;
    }
    if (!page.access_restored) {
      if (absl::Status s = core_.SetMemoryAccessWithOptions(gfn, view, page.saved_access, page.saved_options);
          !s.ok()) {
        return AnnotateStatus(s, what);
      }
      page.access_restored = true;
    }
    if (absl::Status s = core_.FreeGfn(page.shadow); !s.ok()) return AnnotateStatus(s, what);
    return absl::OkStatus();
  }

  VmiCore<D>& core_;
  absl::flat_hash_map<controller_internal::PageKey, Page> pages_;
};

}  // namespace vmi::utils

#endif  // VMI_UTILS_INTERCEPTOR_INTERCEPTOR_H_
