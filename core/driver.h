// The driver capability interfaces as C++20 concepts: the same nine
// capabilities and six groups as vmi-rs's driver traits. A driver is a plain
// class that satisfies the concepts it can; dispatch is static (templates), so
// the hot path has no virtual calls. Pin what a driver satisfies with
// static_assert next to its definition.
//
// Capability methods are called on a non-const driver (drivers keep state such
// as mappings and event channels); Info() is const.
//
// Naming: the query/set protection methods are GetMemoryAccess /
// GetMemoryAccessWithOptions / SetMemoryAccess / SetMemoryAccessWithOptions,
// since a member named MemoryAccess would hide the vmi::MemoryAccess type.
//
// Thread-safety: concepts only.

#ifndef VMI_CORE_DRIVER_H_
#define VMI_CORE_DRIVER_H_

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/architecture.h"
#include "core/event.h"
#include "core/mapped_page.h"
#include "core/types.h"

namespace vmi {

template <typename D>
using ArchOf = typename D::Architecture;

// Anything WaitForEvent accepts as a handler: called with each event, returns
// the response.
template <typename H, typename Arch>
concept EventHandlerFn = std::invocable<H&, const VmiEvent<Arch>&> &&
    std::convertible_to<std::invoke_result_t<H&, const VmiEvent<Arch>&>, VmiEventResponse<Arch>>;

namespace core_internal {
// A handler type used only to check VmiEventControl.
template <typename Arch>
struct EventHandlerArchetype {
  VmiEventResponse<Arch> operator()(const VmiEvent<Arch>&) const;
};
}  // namespace core_internal

// Base: the architecture and the VM's geometry.
template <typename D>
concept VmiDriver = Architecture<typename D::Architecture> && requires(const D& d) {
  { d.Info() } -> std::same_as<absl::StatusOr<VmiInfo>>;
};

// Reads guest-physical pages.
template <typename D>
concept VmiRead = VmiDriver<D> && requires(D& d, Gfn gfn) {
  { d.ReadPage(gfn) } -> std::same_as<absl::StatusOr<MappedPage>>;
};

// Writes into guest-physical pages; returns the page after the write.
template <typename D>
concept VmiWrite = VmiDriver<D> && requires(D& d, Gfn gfn, uint64_t offset,
                                            absl::Span<const uint8_t> content) {
  { d.WritePage(gfn, offset, content) } -> std::same_as<absl::StatusOr<MappedPage>>;
};

// Queries second-level (EPT/NPT) permissions of a frame in a view.
template <typename D>
concept VmiQueryProtection = VmiDriver<D> && requires(D& d, Gfn gfn, View view) {
  { d.GetMemoryAccess(gfn, view) } -> std::same_as<absl::StatusOr<MemoryAccess>>;
  {
    d.GetMemoryAccessWithOptions(gfn, view)
    } -> std::same_as<absl::StatusOr<std::pair<MemoryAccess, MemoryAccessOptions>>>;
};

// Changes second-level permissions of a frame in a view.
template <typename D>
concept VmiSetProtection = VmiDriver<D> && requires(D& d, Gfn gfn, View view, MemoryAccess access,
                                                    MemoryAccessOptions options) {
  { d.SetMemoryAccess(gfn, view, access) } -> std::same_as<absl::Status>;
  { d.SetMemoryAccessWithOptions(gfn, view, access, options) } -> std::same_as<absl::Status>;
};

// Reads a vCPU's registers.
template <typename D>
concept VmiQueryRegisters = VmiDriver<D> && requires(D& d, VcpuId vcpu) {
  { d.Registers(vcpu) } -> std::same_as<absl::StatusOr<typename ArchOf<D>::Registers>>;
};

// Writes a vCPU's registers.
template <typename D>
concept VmiSetRegisters = VmiDriver<D> && requires(D& d, VcpuId vcpu,
                                                   const typename ArchOf<D>::Registers& regs) {
  { d.SetRegisters(vcpu, regs) } -> std::same_as<absl::Status>;
};

// Arms event sources and delivers events to a handler.
template <typename D>
concept VmiEventControl = VmiDriver<D> && requires(
    D& d, const typename ArchOf<D>::EventMonitor& monitor, absl::Duration timeout,
    core_internal::EventHandlerArchetype<ArchOf<D>>& handler) {
  { d.MonitorEnable(monitor) } -> std::same_as<absl::Status>;
  { d.MonitorDisable(monitor) } -> std::same_as<absl::Status>;
  { d.EventsPending() } -> std::same_as<size_t>;
  { d.EventProcessingOverhead() } -> std::same_as<absl::Duration>;
  { d.WaitForEvent(timeout, handler) } -> std::same_as<absl::Status>;
};

// Manages alternate second-level views (Xen altp2m).
template <typename D>
concept VmiViewControl = VmiDriver<D> && requires(D& d, MemoryAccess access, View view, Gfn gfn) {
  { d.DefaultView() } -> std::same_as<View>;
  { d.CreateView(access) } -> std::same_as<absl::StatusOr<View>>;
  { d.DestroyView(view) } -> std::same_as<absl::Status>;
  { d.SwitchToView(view) } -> std::same_as<absl::Status>;
  { d.ChangeViewGfn(view, gfn, gfn) } -> std::same_as<absl::Status>;
  { d.ResetViewGfn(view, gfn) } -> std::same_as<absl::Status>;
};

// VM lifecycle, GFN allocation, interrupt injection.
template <typename D>
concept VmiVmControl = VmiDriver<D> && requires(D& d, Gfn gfn, VcpuId vcpu,
                                                const typename ArchOf<D>::Interrupt& interrupt) {
  { d.Pause() } -> std::same_as<absl::Status>;
  { d.Resume() } -> std::same_as<absl::Status>;
  { d.AllocateGfn() } -> std::same_as<absl::StatusOr<Gfn>>;
  { d.AllocateGfnAt(gfn) } -> std::same_as<absl::Status>;
  { d.FreeGfn(gfn) } -> std::same_as<absl::Status>;
  { d.InjectInterrupt(vcpu, interrupt) } -> std::same_as<absl::Status>;
  { d.ResetState() } -> std::same_as<absl::Status>;
};

template <typename D>
concept VmiMemory = VmiRead<D> && VmiWrite<D>;

template <typename D>
concept VmiProtection = VmiQueryProtection<D> && VmiSetProtection<D>;

template <typename D>
concept VmiRegisters = VmiQueryRegisters<D> && VmiSetRegisters<D>;

template <typename D>
concept VmiReadAccess = VmiRead<D> && VmiQueryProtection<D> && VmiQueryRegisters<D>;

template <typename D>
concept VmiWriteAccess = VmiWrite<D> && VmiSetProtection<D> && VmiSetRegisters<D>;

template <typename D>
concept VmiFullDriver = VmiReadAccess<D> && VmiWriteAccess<D> && VmiEventControl<D> &&
    VmiViewControl<D> && VmiVmControl<D>;

}  // namespace vmi

#endif  // VMI_CORE_DRIVER_H_
