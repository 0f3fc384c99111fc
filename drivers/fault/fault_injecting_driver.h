// FaultInjectingDriver<D>: wraps a driver, satisfies exactly the capability
// concepts D satisfies, forwards every call, and fails chosen calls: the Nth
// call of an operation, or every call from the Nth on, with a chosen status.
// Used to prove that VmiCore, the event loop and the tools give clear errors,
// never crash or hang, never cache data from a failed call, and roll back or
// report state that was being changed.
//
// The fault plan is shared (FaultPlan is held by shared_ptr), so a test keeps
// control after the wrapper has moved into a VmiCore.
//
// Thread-safety: thread-compatible, like the drivers it wraps.

#ifndef VMI_DRIVERS_FAULT_FAULT_INJECTING_DRIVER_H_
#define VMI_DRIVERS_FAULT_FAULT_INJECTING_DRIVER_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/driver.h"

namespace vmi {

enum class DriverOp : uint8_t {
  kInfo,
  kReadPage,
  kWritePage,
  kGetMemoryAccess,
  kGetMemoryAccessWithOptions,
  kSetMemoryAccess,
  kSetMemoryAccessWithOptions,
  kRegisters,
  kSetRegisters,
  kMonitorEnable,
  kMonitorDisable,
  kWaitForEvent,
  kCreateView,
  kDestroyView,
  kSwitchToView,
  kChangeViewGfn,
  kResetViewGfn,
  kPause,
  kResume,
  kAllocateGfn,
  kAllocateGfnAt,
  kFreeGfn,
  kInjectInterrupt,
  kResetState,
  kCount,
};

const char* DriverOpName(DriverOp op);

// Which calls fail. Counts every call per operation, failed or not.
class FaultPlan {
 public:
  // The `nth` call (1-based) of `op` fails with `status`; with `and_after`,
  // every later call too. Replaces any earlier rule for `op`.
  void FailNth(DriverOp op, uint64_t nth, absl::Status status, bool and_after = false) {
    rules_[Index(op)] = Rule{nth, and_after, std::move(status)};
  }
  void FailFrom(DriverOp op, uint64_t nth, absl::Status status) {
    FailNth(op, nth, std::move(status), /*and_after=*/true);
  }
  void Clear(DriverOp op) { rules_[Index(op)].reset(); }
  void ClearAll() {
    for (auto& r : rules_) r.reset();
  }
  void ResetCounts() { calls_.fill(0); }

  uint64_t calls(DriverOp op) const { return calls_[Index(op)]; }
  uint64_t failures() const { return failures_; }

  // Counts a call; the injected error, or OK to go on.
  absl::Status Tick(DriverOp op) {
    const uint64_t n = ++calls_[Index(op)];
    const std::optional<Rule>& rule = rules_[Index(op)];
    if (rule && (n == rule->nth || (rule->and_after && n > rule->nth))) {
      ++failures_;
      return absl::Status(rule->status.code(),
                          absl::StrFormat("%s (injected: call %u of %s)", rule->status.message(),
                                          n, DriverOpName(op)));
    }
    return absl::OkStatus();
  }

 private:
  struct Rule {
    uint64_t nth;
    bool and_after;
    absl::Status status;
  };
  static size_t Index(DriverOp op) { return static_cast<size_t>(op); }

  std::array<uint64_t, static_cast<size_t>(DriverOp::kCount)> calls_{};
  std::array<std::optional<Rule>, static_cast<size_t>(DriverOp::kCount)> rules_{};
  uint64_t failures_ = 0;
};

template <VmiDriver D>
class FaultInjectingDriver {
 public:
  using Architecture = typename D::Architecture;
  using Arch = Architecture;

  explicit FaultInjectingDriver(D inner, std::shared_ptr<FaultPlan> plan = nullptr)
      : inner_(std::move(inner)), plan_(plan ? std::move(plan) : std::make_shared<FaultPlan>()) {}

  D& inner() { return inner_; }
  const D& inner() const { return inner_; }
  FaultPlan& plan() const { return *plan_; }
  std::shared_ptr<FaultPlan> shared_plan() const { return plan_; }

  absl::StatusOr<VmiInfo> Info() const {
    if (absl::Status s = plan_->Tick(DriverOp::kInfo); !s.ok()) return s;
    return inner_.Info();
  }

#define VMI_FAULT_FORWARD(op, call) \
  if (absl::Status s = plan_->Tick(op); !s.ok()) return s; \
  return call

  absl::StatusOr<MappedPage> ReadPage(Gfn gfn) requires VmiRead<D> {
    VMI_FAULT_FORWARD(DriverOp::kReadPage, inner_.ReadPage(gfn));
  }
  absl::StatusOr<MappedPage> WritePage(Gfn gfn, uint64_t offset, absl::Span<const uint8_t> data)
    requires VmiWrite<D>
  {
    VMI_FAULT_FORWARD(DriverOp::kWritePage, inner_.WritePage(gfn, offset, data));
  }
  absl::StatusOr<MemoryAccess> GetMemoryAccess(Gfn gfn, View view) requires VmiQueryProtection<D> {
    VMI_FAULT_FORWARD(DriverOp::kGetMemoryAccess, inner_.GetMemoryAccess(gfn, view));
  }
  absl::StatusOr<std::pair<MemoryAccess, MemoryAccessOptions>> GetMemoryAccessWithOptions(
      Gfn gfn, View view) requires VmiQueryProtection<D> {
    VMI_FAULT_FORWARD(DriverOp::kGetMemoryAccessWithOptions,
                      inner_.GetMemoryAccessWithOptions(gfn, view));
  }
  absl::Status SetMemoryAccess(Gfn gfn, View view, MemoryAccess access) requires VmiSetProtection<D> {
    VMI_FAULT_FORWARD(DriverOp::kSetMemoryAccess, inner_.SetMemoryAccess(gfn, view, access));
  }
  absl::Status SetMemoryAccessWithOptions(Gfn gfn, View view, MemoryAccess access,
                                          MemoryAccessOptions options)
    requires VmiSetProtection<D>
  {
    VMI_FAULT_FORWARD(DriverOp::kSetMemoryAccessWithOptions,
                      inner_.SetMemoryAccessWithOptions(gfn, view, access, options));
  }
  absl::StatusOr<typename Arch::Registers> Registers(VcpuId vcpu) requires VmiQueryRegisters<D> {
    VMI_FAULT_FORWARD(DriverOp::kRegisters, inner_.Registers(vcpu));
  }
  absl::Status SetRegisters(VcpuId vcpu, const typename Arch::Registers& regs)
    requires VmiSetRegisters<D>
  {
    VMI_FAULT_FORWARD(DriverOp::kSetRegisters, inner_.SetRegisters(vcpu, regs));
  }
  absl::Status MonitorEnable(const typename Arch::EventMonitor& m) requires VmiEventControl<D> {
    VMI_FAULT_FORWARD(DriverOp::kMonitorEnable, inner_.MonitorEnable(m));
  }
  absl::Status MonitorDisable(const typename Arch::EventMonitor& m) requires VmiEventControl<D> {
    VMI_FAULT_FORWARD(DriverOp::kMonitorDisable, inner_.MonitorDisable(m));
  }
  size_t EventsPending() requires VmiEventControl<D> { return inner_.EventsPending(); }
  absl::Duration EventProcessingOverhead() requires VmiEventControl<D> {
    return inner_.EventProcessingOverhead();
  }
  template <typename Handler>
    requires VmiEventControl<D>
  absl::Status WaitForEvent(absl::Duration timeout, Handler&& handler) {
    VMI_FAULT_FORWARD(DriverOp::kWaitForEvent,
                      inner_.WaitForEvent(timeout, std::forward<Handler>(handler)));
  }
  View DefaultView() requires VmiViewControl<D> { return inner_.DefaultView(); }
  absl::StatusOr<View> CreateView(MemoryAccess access) requires VmiViewControl<D> {
    VMI_FAULT_FORWARD(DriverOp::kCreateView, inner_.CreateView(access));
  }
  absl::Status DestroyView(View view) requires VmiViewControl<D> {
    VMI_FAULT_FORWARD(DriverOp::kDestroyView, inner_.DestroyView(view));
  }
  absl::Status SwitchToView(View view) requires VmiViewControl<D> {
    VMI_FAULT_FORWARD(DriverOp::kSwitchToView, inner_.SwitchToView(view));
  }
  absl::Status ChangeViewGfn(View view, Gfn old_gfn, Gfn new_gfn) requires VmiViewControl<D> {
    VMI_FAULT_FORWARD(DriverOp::kChangeViewGfn, inner_.ChangeViewGfn(view, old_gfn, new_gfn));
  }
  absl::Status ResetViewGfn(View view, Gfn gfn) requires VmiViewControl<D> {
    VMI_FAULT_FORWARD(DriverOp::kResetViewGfn, inner_.ResetViewGfn(view, gfn));
  }
  absl::Status Pause() requires VmiVmControl<D> {
    VMI_FAULT_FORWARD(DriverOp::kPause, inner_.Pause());
  }
  absl::Status Resume() requires VmiVmControl<D> {
    VMI_FAULT_FORWARD(DriverOp::kResume, inner_.Resume());
  }
  absl::StatusOr<Gfn> AllocateGfn() requires VmiVmControl<D> {
    VMI_FAULT_FORWARD(DriverOp::kAllocateGfn, inner_.AllocateGfn());
  }
  absl::Status AllocateGfnAt(Gfn gfn) requires VmiVmControl<D> {
    VMI_FAULT_FORWARD(DriverOp::kAllocateGfnAt, inner_.AllocateGfnAt(gfn));
  }
  absl::Status FreeGfn(Gfn gfn) requires VmiVmControl<D> {
    VMI_FAULT_FORWARD(DriverOp::kFreeGfn, inner_.FreeGfn(gfn));
  }
  absl::Status InjectInterrupt(VcpuId vcpu, const typename Arch::Interrupt& interrupt)
    requires VmiVmControl<D>
  {
    VMI_FAULT_FORWARD(DriverOp::kInjectInterrupt, inner_.InjectInterrupt(vcpu, interrupt));
  }
  absl::Status ResetState() requires VmiVmControl<D> {
    VMI_FAULT_FORWARD(DriverOp::kResetState, inner_.ResetState());
  }

#undef VMI_FAULT_FORWARD

 private:
  D inner_;
  std::shared_ptr<FaultPlan> plan_;
};

}  // namespace vmi

#endif  // VMI_DRIVERS_FAULT_FAULT_INJECTING_DRIVER_H_
