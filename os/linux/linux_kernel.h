// LinuxKernel: what discovery learned about the kernel in a guest, and where
// each fact came from. The layout (release, KASLR slide, phys_base, the
// kernel's page-table root and paging mode) is always present; symbols and
// types may be missing (an old kernel, a kernel without BTF), in which case
// their status says why and what to do about it (a profile).
//
// Thread-safety: immutable after discovery; thread-safe.

#ifndef VMI_OS_LINUX_LINUX_KERNEL_H_
#define VMI_OS_LINUX_LINUX_KERNEL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "arch/amd64/paging.h"
#include "core/address_context.h"
#include "core/types.h"
#include "os/linux/symbols.h"
#include "os/linux/types.h"
#include "os/linux/vmcoreinfo.h"

namespace vmi::os_linux {

struct LinuxKernel {
  // Identity.
  std::string release;   // e.g. "6.1.0-57-amd64"
  std::string build_id;  // hex, when VMCOREINFO gave one
  std::string banner;    // linux_banner ("Linux version ..."), when symbols located it

  // Layout.
  uint64_t kaslr_slide = 0;  // runtime minus link-time address of kernel text
  int64_t phys_base = 0;     // kernel-image va -> pa: va - 0xffffffff80000000 + phys_base
  Va root_va;                // init_top_pgt
  Pa root;                   // its guest-physical address: the kernel's page-table root
  amd64::PagingMode paging = amd64::PagingMode::FourLevel();

  // Sources, in words, for `vmi os`.
  std::string layout_source;    // e.g. "VMCOREINFO (ELF note)"
  std::string symbols_source;   // e.g. "kallsyms in guest memory (94,512 symbols)"
  std::string types_source;

  std::optional<VmcoreInfo> vmcoreinfo;

  // Symbols: empty when symbols_status is not OK.
  SymbolTable symbols;
  absl::Status symbols_status = absl::OkStatus();
  // Types: null when types_status is not OK.
  std::shared_ptr<const KernelTypes> types;
  absl::Status types_status = absl::OkStatus();

  // A kernel virtual address in the kernel's own address space.
  AddressContext Kernel(Va va) const { return AddressContext(va, root); }

  // A symbol's runtime address. FailedPrecondition (with the reason symbols
  // are missing) when there are none; NotFound for an unknown name.
  absl::StatusOr<uint64_t> Symbol(absl::string_view name) const;
  // The types, or FailedPrecondition with the reason they are missing.
  absl::StatusOr<const KernelTypes*> Types() const;
};

}  // namespace vmi::os_linux

#endif  // VMI_OS_LINUX_LINUX_KERNEL_H_
