#include "os/linux/linux_kernel.h"

#include "core/error.h"

namespace vmi::os_linux {

absl::StatusOr<uint64_t> LinuxKernel::Symbol(absl::string_view name) const {
  if (!symbols_status.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("no kernel symbols: ", symbols_status.message()));
  }
  return symbols.Find(name);
}

absl::StatusOr<const KernelTypes*> LinuxKernel::Types() const {
  if (!types_status.ok() || types == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("no kernel types: ", types_status.message()));
  }
  return types.get();
}

}  // namespace vmi::os_linux
