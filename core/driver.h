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
// ---------------------------------------------------------------------------
// The contract. The concepts fix signatures; every driver also keeps this
// behaviour, and tests/conformance asserts it for every driver that has the
// capability (status codes compared across drivers, effects observed through
// the driver, known state written at set-up and read back).
//
// Failures and their codes. A message names the operation and its operands
// ("write_page(gfn=0x1a2, offset=0xff8, size=16): ..."); OS and hypervisor
// failures add errno and the failing call.
//
//   failure                                   code                 after it
//   ----------------------------------------  -------------------  ----------------
//   bad GFN: a frame the guest does not have  kNotFound            nothing changed
//     (> Info().max_gfn, a hole, unpopulated,
//     freed), in any method taking a Gfn
//   span past the page: WritePage with        kOutOfRange          nothing written
//     offset >= page_size or
//     size > page_size - offset (never wraps;
//     CheckPageSpan in core/page_span.h)
//   unknown vCPU: id >= Info().vcpus          kOutOfRange          nothing changed
//   unknown view: never created or destroyed  kInvalidArgument     nothing changed
//     (destroying the default view too)
//   view in use: DestroyView of a view a      kFailedPrecondition  nothing changed
//     vCPU is in or will step in
//   capability missing on this host/driver:   kUnimplemented       nothing changed
//     a monitor it cannot arm (debug-stub
//     MonitorBreakpoint/MonitorWatchpoint on a
//     hypervisor, an interrupt vector Xen
//     cannot intercept), altp2m not configured,
//     options the hypervisor cannot express,
//     frame allocation on a fixed-RAM backend,
//     an interrupt type it cannot inject
//   resume without pause                      kFailedPrecondition  still running,
//                                                                  nothing unpaused
//   AllocateGfnAt of a populated frame        kAlreadyExists       nothing changed
//   WaitForEvent: no event within the         kDeadlineExceeded    (a paused VM
//     timeout                                                      delivers none)
//   WaitForEvent: a response the driver       kInvalidArgument     the vCPU resumed
//     cannot carry out                                             as with Continue
//
// Refusals particular to one driver (a read-only RAM range of QEMU, a field
// QEMU's SetRegisters cannot write) are documented in its header with their
// code.
//
// A translation fault is not a driver error: VmiCore reports it as kNotFound
// with its AddressContext attached (core/error.h), and no driver attaches
// one. Callers tell the two apart by that payload (IsTranslationFault), and
// an unknown view never shares the code of either.
//
// Idempotence: MonitorEnable of an enabled monitor and MonitorDisable of one
// that is not enabled (even one the driver cannot arm) are OK and change
// nothing. Pause nests: every Pause needs its Resume, and the VM runs again
// after the last one.
//
// What the figures mean:
//   Info().page_size/page_shift  4096 / 12 on x86-64.
//   Info().max_gfn   the highest frame the guest has; ReadPage(max_gfn)
//                    succeeds and every frame above it is a bad GFN. Frames
//                    below may be holes. AllocateGfn may raise it.
//   Info().vcpus     vCPU ids are 0 .. vcpus-1 (0 vCPUs: no CPU state).
//   EventsPending()  requests raised and not yet handed to a handler.
//   EventProcessingOverhead()  the driver's own time spent on events outside
//                    the handlers (conversion, ring and channel work, register
//                    reads, resuming), summed since the driver was opened:
//                    zero before the first event, never decreasing.
//   GetMemoryAccess  what the view allows now; a new view's frames have the
//                    default access CreateView was given.
//
// Effects the suite observes: a write is read back at once, by ReadPage and
// by the guest; a view's remap is what a vCPU in that view executes and
// reads, while ReadPage keeps reading the frame itself; a paused VM executes
// nothing and raises no events; an injected interrupt is delivered through
// the guest's IDT before the vCPU executes anything else; ResetState leaves
// every monitor off, every vCPU in the default view, no view but the default,
// and the default view's permissions as the driver found them.
// ---------------------------------------------------------------------------
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
