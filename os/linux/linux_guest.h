// LinuxGuest: a discovered Linux kernel bound to the VmiCore it was found
// in, with the pieces OS code needs: the kernel facts, typed kernel access
// and the member layouts (resolved from the types on first use).
//
//   auto guest = os_linux::LinuxGuest<DumpDriver>::Discover(core);
//   os_linux::TaskList ps = os_linux::ListProcesses((*guest)->access(), *(*guest)->task_layout());
//
// Thread-safety: as the core (thread-compatible).

#ifndef VMI_OS_LINUX_LINUX_GUEST_H_
#define VMI_OS_LINUX_LINUX_GUEST_H_

#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "core/driver.h"
#include "core/error.h"
#include "core/vmi_core.h"
#include "os/linux/discovery.h"
#include "os/linux/guest_memory.h"
#include "os/linux/kernel_access.h"
#include "os/linux/linux_kernel.h"
#include "os/linux/maps.h"
#include "os/linux/modules.h"
#include "os/linux/processes.h"

namespace vmi::os_linux {

template <VmiRead D>
class LinuxGuest {
 public:
  static absl::StatusOr<std::unique_ptr<LinuxGuest>> Discover(VmiCore<D>& core,
                                                              const DiscoveryOptions& options = {}) {
    VMI_ASSIGN_OR_RETURN(const VmiInfo info, core.Info());
    auto guest = std::unique_ptr<LinuxGuest>(new LinuxGuest(core, info.max_gfn));
    VMI_ASSIGN_OR_RETURN(guest->kernel_, DiscoverLinux(guest->memory_, options));
    return guest;
  }

  LinuxGuest(const LinuxGuest&) = delete;
  LinuxGuest& operator=(const LinuxGuest&) = delete;

  VmiCore<D>& core() { return core_; }
  const LinuxKernel& kernel() const { return kernel_; }
  const KernelAccess& access() const { return access_; }

  // The layouts of the process, maps and module code; the types' error (a
  // member this kernel does not have, or no types at all) otherwise.
  absl::StatusOr<const TaskLayout*> task_layout() { return Layout(task_layout_); }
  absl::StatusOr<const MapsLayout*> maps_layout() { return Layout(maps_layout_); }
  absl::StatusOr<const ModuleLayout*> module_layout() { return Layout(module_layout_); }

 private:
  LinuxGuest(VmiCore<D>& core, Gfn max_gfn)
      : core_(core), memory_(core, max_gfn), access_(memory_, kernel_) {}

  // Resolves a layout on first use and keeps the outcome.
  template <typename L>
  absl::StatusOr<const L*> Layout(std::optional<absl::StatusOr<L>>& slot) {
    if (!slot) {
      absl::StatusOr<const KernelTypes*> types = kernel_.Types();
      slot = types.ok() ? L::Resolve(**types) : absl::StatusOr<L>(types.status());
    }
    if (!slot->ok()) return slot->status();
    return &**slot;
  }

  VmiCore<D>& core_;
  CoreGuestMemory<D> memory_;
  LinuxKernel kernel_;
  KernelAccess access_;
  std::optional<absl::StatusOr<TaskLayout>> task_layout_;
  std::optional<absl::StatusOr<MapsLayout>> maps_layout_;
  std::optional<absl::StatusOr<ModuleLayout>> module_layout_;
};

}  // namespace vmi::os_linux

#endif  // VMI_OS_LINUX_LINUX_GUEST_H_
