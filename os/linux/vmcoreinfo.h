// VMCOREINFO: the "KEY=VALUE\n" text block a Linux kernel (CONFIG_CRASH_CORE)
// keeps in its own memory for crash tools, and publishes as an ELF note in
// kdump and QEMU dumps. It names the kernel release and build id, the KASLR
// slide, phys_base, the kernel's page-table root, the paging depth, and (since
// 6.0) the addresses of the compressed kallsyms tables.
//
// ParseVmcoreinfo checks the syntax and the facts discovery needs; it cannot
// tell a genuine block from a well-formed forgery: discovery then checks the
// block against memory (the page-table root must translate the kernel's own
// addresses).
//
// Thread-safety: plain values and stateless functions; thread-safe.

#ifndef VMI_OS_LINUX_VMCOREINFO_H_
#define VMI_OS_LINUX_VMCOREINFO_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace vmi::os_linux {

// The kernel keeps the block in one page.
inline constexpr size_t kMaxVmcoreinfoBytes = 4096;

// The start of the x86-64 kernel image mapping (__START_KERNEL_map).
inline constexpr uint64_t kStartKernelMap = 0xffffffff80000000ull;

struct VmcoreInfo {
  // Every line, in order (key, value).
  std::vector<std::pair<std::string, std::string>> entries;

  // The facts ParseVmcoreinfo requires.
  std::string osrelease;    // OSRELEASE
  std::string build_id;     // BUILD-ID (hex; empty when absent)
  uint64_t page_size = 0;   // PAGESIZE
  uint64_t kernel_offset = 0;  // KERNELOFFSET: the KASLR slide
  int64_t phys_base = 0;    // NUMBER(phys_base), may be negative
  uint64_t top_pgt = 0;     // SYMBOL(init_top_pgt) (or swapper_pg_dir): runtime address
  bool five_level = false;  // NUMBER(pgtable_l5_enabled)=1

  // The raw value of `key`, e.g. Get("SYMBOL(init_uts_ns)").
  std::optional<absl::string_view> Get(absl::string_view key) const;
  // SYMBOL(name) as an address (hex in the block).
  std::optional<uint64_t> Symbol(absl::string_view name) const;
  // NUMBER(name), signed decimal.
  std::optional<int64_t> Number(absl::string_view name) const;
  // OFFSET(name) / SIZE(name) / LENGTH(name), decimal.
  std::optional<uint64_t> Offset(absl::string_view name) const;
  std::optional<uint64_t> Size(absl::string_view name) const;
  std::optional<uint64_t> Length(absl::string_view name) const;

  // Guest-physical address of a kernel-image address: va -
  // __START_KERNEL_map + phys_base. Only meaningful for addresses inside the
  // image (text, data, bss), not for the direct map or vmalloc space.
  uint64_t KernelImagePa(uint64_t va) const {
    return va - kStartKernelMap + static_cast<uint64_t>(phys_base);
  }
};

// Parses a block that starts at `bytes[0]` and ends at the first NUL or at
// the end of the span, whichever comes first, within kMaxVmcoreinfoBytes.
// InvalidArgument names the defect: a torn last line, a malformed line (and
// its number), a missing or malformed required key, the "OSRELEASE=%s"
// format-string copy the kernel also holds, a page size other than 4096, a
// page-table root outside the kernel image mapping.
absl::StatusOr<VmcoreInfo> ParseVmcoreinfo(absl::Span<const uint8_t> bytes);

}  // namespace vmi::os_linux

#endif  // VMI_OS_LINUX_VMCOREINFO_H_
