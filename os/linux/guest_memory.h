// GuestMemory: what Linux discovery reads, as one small interface, so the
// discovery logic is compiled once rather than per driver. CoreGuestMemory
// adapts any VmiCore whose driver can read (dump, Xen, simulator); it is the
// only template in the discovery path.
//
// The physical scan reads frames straight from the driver (a full scan would
// only evict useful pages from the page cache); every other read goes
// through the core and its caches.
//
// Thread-safety: as the core (thread-compatible).

#ifndef VMI_OS_LINUX_GUEST_MEMORY_H_
#define VMI_OS_LINUX_GUEST_MEMORY_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "arch/amd64/amd64.h"
#include "core/address_context.h"
#include "core/driver.h"
#include "core/mapped_page.h"
#include "core/types.h"
#include "core/vmi_core.h"

namespace vmi::os_linux {

class GuestMemory {
 public:
  virtual ~GuestMemory() = default;

  // Highest guest frame number (inclusive).
  virtual Gfn max_gfn() const = 0;
  // One frame for the physical scan. Any error means the target does not
  // have the frame (a hole): the scan skips it.
  virtual absl::StatusOr<MappedPage> ScanFrame(Gfn gfn) = 0;
  // Reads guest-physical memory.
  virtual absl::Status ReadPhysical(Pa pa, absl::Span<uint8_t> out) = 0;
  // Reads guest-virtual memory through `root` in `mode`.
  virtual absl::Status ReadVirtual(Va va, Pa root, const amd64::PagingMode& mode,
                                   absl::Span<uint8_t> out) = 0;
  virtual absl::StatusOr<Pa> Translate(Va va, Pa root, const amd64::PagingMode& mode) = 0;
  // The VMCOREINFO note the target carries, if any (kdump and QEMU ELF
  // dumps of a guest with the vmcoreinfo device).
  virtual std::optional<std::string> VmcoreinfoNote() { return std::nullopt; }

  // Zero-copy views of all present memory, ascending, when the target can
  // give them (a mapped dump file): the scan then runs over whole ranges
  // instead of one ScanFrame call per frame. Empty otherwise.
  struct Run {
    Pa start;
    absl::Span<const uint8_t> bytes;  // a multiple of 4096 bytes
  };
  virtual std::vector<Run> MappedRuns() { return {}; }
};

// Drivers over a mapped file (DumpDriver) expose its present frames as spans:
// MappedRanges() -> ranges with .first (Gfn) and .bytes.
template <typename D>
concept HasMappedRanges = requires(const D& d) {
  { d.MappedRanges().front().first } -> std::convertible_to<Gfn>;
  { d.MappedRanges().front().bytes } -> std::convertible_to<absl::Span<const uint8_t>>;
};

// Drivers that carry ELF notes (DumpDriver) expose them as
// FindNote(name) -> std::optional<absl::Span<const uint8_t>>.
template <typename D>
concept HasNotes = requires(const D& d, absl::string_view name) {
  { d.FindNote(name) } -> std::convertible_to<std::optional<absl::Span<const uint8_t>>>;
};

template <VmiRead D>
class CoreGuestMemory final : public GuestMemory {
 public:
  // The core's paging mode is set to the mode of each virtual access.
  CoreGuestMemory(VmiCore<D>& core, Gfn max_gfn) : core_(core), max_gfn_(max_gfn) {}

  Gfn max_gfn() const override { return max_gfn_; }
  absl::StatusOr<MappedPage> ScanFrame(Gfn gfn) override { return core_.driver().ReadPage(gfn); }
  absl::Status ReadPhysical(Pa pa, absl::Span<uint8_t> out) override {
    return core_.Read(AccessContext::Physical(pa), out);
  }
  absl::Status ReadVirtual(Va va, Pa root, const amd64::PagingMode& mode,
                           absl::Span<uint8_t> out) override {
    core_.SetPagingMode(mode);
    return core_.Read(AccessContext::Virtual(va, root), out);
  }
  absl::StatusOr<Pa> Translate(Va va, Pa root, const amd64::PagingMode& mode) override {
    core_.SetPagingMode(mode);
    return core_.Translate(AddressContext(va, root));
  }
  std::optional<std::string> VmcoreinfoNote() override {
    if constexpr (HasNotes<D>) {
      std::optional<absl::Span<const uint8_t>> note = core_.driver().FindNote("VMCOREINFO");
      if (note) return std::string(note->begin(), note->end());
    }
    return std::nullopt;
  }
  std::vector<Run> MappedRuns() override {
    std::vector<Run> runs;
    if constexpr (HasMappedRanges<D>) {
      for (const auto& r : core_.driver().MappedRanges()) {
        runs.push_back({Pa(r.first.value() * Amd64::kPageSize), r.bytes});
      }
    }
    return runs;
  }

 private:
  VmiCore<D>& core_;
  Gfn max_gfn_;
};

}  // namespace vmi::os_linux

#endif  // VMI_OS_LINUX_GUEST_MEMORY_H_
