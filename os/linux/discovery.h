// Linux kernel discovery from guest memory alone: no profile, no CR3, no
// registers, so raw and LiME dumps work as well as ELF dumps, Xen and the
// simulator.
//
// 1. VMCOREINFO: the ELF note when the target carries one, else a scan of
//    physical memory for "OSRELEASE=" that stops at the first block that
//    parses (vmcoreinfo.h) and checks out against memory: the page-table
//    root it implies (init_top_pgt - __START_KERNEL_map + phys_base) must
//    translate init_top_pgt to itself, and init_uts_ns must hold the same
//    release. The kernel's "OSRELEASE=%s" format string and forged or torn
//    blocks are rejected and the scan goes on.
// 2. Symbols: the kallsyms tables VMCOREINFO points at (kernels >= 6.0),
//    cross-checked against VMCOREINFO's own symbol addresses.
// 3. Types: BTF between __start_BTF and __stop_BTF, parsed by libbpf.
// With a profile (DiscoveryOptions::profile), its symbols and types are used
// instead, after checking that it describes this kernel: its linux_banner
// must be the banner in memory. Without VMCOREINFO, the layout comes from
// the banner: its physical address P and link-time address V give
// phys_base + slide = P - (V - __START_KERNEL_map), hence the root
// (init_top_pgt's physical address); the slide is the one (in 2 MiB steps,
// CONFIG_PHYSICAL_ALIGN, up to the 1 GiB image area) for which the root's
// tables, walked 4- or 5-level, map the banner's runtime address to P.
//
// Bounded: the scan reads each frame once and examines at most
// max_candidates blocks; kallsyms and BTF reads have hard size limits.
// Failure to find VMCOREINFO is an error naming what was scanned and why
// each candidate was rejected; missing symbols or types are not errors of
// discovery (LinuxKernel says why they are missing).
//
// Thread-safety: uses the core; thread-compatible.

#ifndef VMI_OS_LINUX_DISCOVERY_H_
#define VMI_OS_LINUX_DISCOVERY_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/driver.h"
#include "core/error.h"
#include "core/vmi_core.h"
#include "os/linux/guest_memory.h"
#include "os/linux/isf.h"
#include "os/linux/linux_kernel.h"

namespace vmi::os_linux {

inline constexpr uint64_t kMaxBtfBytes = 64u << 20;

struct DiscoveryOptions {
  bool use_note = true;     // take an ELF VMCOREINFO note when the target has one
  bool scan_memory = true;  // else scan physical memory for the block
  bool load_symbols = true;
  bool load_types = true;
  size_t max_candidates = 1024;  // "OSRELEASE=" (or banner) hits examined before giving up
  // An ISF profile (isf.h): its symbols and types replace kallsyms and BTF.
  // Without a valid VMCOREINFO the layout then comes from the profile too:
  // linux_banner is searched in physical memory, and the page-table root
  // and KASLR slide follow from where it lies (see DiscoverLinux). A profile
  // of another kernel is refused (FailedPrecondition naming both banners).
  std::shared_ptr<const IsfProfile> profile;
};

// What the scan saw, for messages and benchmarks.
struct ScanStats {
  uint64_t frames_scanned = 0;
  uint64_t frames_absent = 0;
  uint64_t candidates = 0;
};

absl::StatusOr<LinuxKernel> DiscoverLinux(GuestMemory& memory, const DiscoveryOptions& options = {},
                                          ScanStats* stats = nullptr);

// Any VmiCore whose driver can read. Leaves the core in the kernel's paging
// mode.
template <VmiRead D>
absl::StatusOr<LinuxKernel> DiscoverLinux(VmiCore<D>& core, const DiscoveryOptions& options = {},
                                          ScanStats* stats = nullptr) {
  VMI_ASSIGN_OR_RETURN(const VmiInfo info, core.Info());
  CoreGuestMemory<D> memory(core, info.max_gfn);
  return DiscoverLinux(static_cast<GuestMemory&>(memory), options, stats);
}

}  // namespace vmi::os_linux

namespace vmi::os_linux_internal {

// Checks a parsed block against memory (see the file comment); on success
// fills the layout part of `kernel`.
absl::Status CheckVmcoreinfo(const os_linux::VmcoreInfo& info, os_linux::GuestMemory& memory,
                             os_linux::LinuxKernel* kernel);

// Every occurrence of `pattern` (2..64 bytes) in physical memory, frame by
// frame (absent frames skipped, matches across two present frames found),
// in address order; `on_match` returns true to stop. Counts into `stats`.
absl::Status ScanPhysicalMemory(os_linux::GuestMemory& memory, absl::string_view pattern,
                                os_linux::ScanStats* stats,
                                absl::FunctionRef<absl::StatusOr<bool>(uint64_t pa)> on_match);

}  // namespace vmi::os_linux_internal

#endif  // VMI_OS_LINUX_DISCOVERY_H_
