// RecordingDriver<D>: wraps a driver, satisfies exactly the capability
// concepts D satisfies, forwards every call and logs it, with its arguments
// and outcome, as one line ("set_memory_access(gfn=0x1a2 view=1 --x) ok").
// Tests assert exact call sequences with it: what a utility asked of the
// driver, in which order, and that a teardown undid every change.
//
// The log is shared (held by shared_ptr), so a test keeps reading it after
// the wrapper has moved into a VmiCore. Reads (ReadPage, Registers, Info,
// EventsPending) are logged only when `log_reads` is set: they are
// incidental to most sequences and VmiCore's caches change their number.
//
// Thread-safety: thread-compatible, like the drivers it wraps.

#ifndef VMI_DRIVERS_RECORDING_RECORDING_DRIVER_H_
#define VMI_DRIVERS_RECORDING_RECORDING_DRIVER_H_

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/driver.h"

namespace vmi {

struct CallLog {
  std::vector<std::string> calls;
  bool log_reads = false;

  void Clear() { calls.clear(); }
  // The calls whose text starts with `prefix` ("free_gfn").
  std::vector<std::string> With(absl::string_view prefix) const {
    std::vector<std::string> out;
    for (const std::string& c : calls) {
      if (absl::StartsWith(c, prefix)) out.push_back(c);
    }
    return out;
  }
  std::string ToString() const { return absl::StrJoin(calls, "\n"); }
};

template <VmiDriver D>
class RecordingDriver {
 public:
  using Architecture = typename D::Architecture;
  using Arch = Architecture;

  explicit RecordingDriver(D inner, std::shared_ptr<CallLog> log = nullptr)
      : inner_(std::move(inner)), log_(log ? std::move(log) : std::make_shared<CallLog>()) {}

  D& inner() { return inner_; }
  CallLog& log() const { return *log_; }
  std::shared_ptr<CallLog> shared_log() const { return log_; }

  absl::StatusOr<VmiInfo> Info() const { return inner_.Info(); }

  absl::StatusOr<MappedPage> ReadPage(Gfn gfn) requires VmiRead<D> {
    auto r = inner_.ReadPage(gfn);
    if (log_->log_reads) Log(absl::StrFormat("read_page(gfn=%s)", gfn), r.status()).IgnoreError();
    return r;
  }
  absl::StatusOr<MappedPage> WritePage(Gfn gfn, uint64_t offset, absl::Span<const uint8_t> data)
    requires VmiWrite<D>
  {
    auto r = inner_.WritePage(gfn, offset, data);
    Log(absl::StrFormat("write_page(gfn=%s offset=0x%x len=%u)", gfn, offset, data.size()), r.status()).IgnoreError();
    return r;
  }
  absl::StatusOr<MemoryAccess> GetMemoryAccess(Gfn gfn, View view) requires VmiQueryProtection<D> {
    auto r = inner_.GetMemoryAccess(gfn, view);
    Log(absl::StrFormat("get_memory_access(gfn=%s view=%s)", gfn, view), r.status()).IgnoreError();
    return r;
  }
  absl::StatusOr<std::pair<MemoryAccess, MemoryAccessOptions>> GetMemoryAccessWithOptions(
      Gfn gfn, View view) requires VmiQueryProtection<D> {
    auto r = inner_.GetMemoryAccessWithOptions(gfn, view);
    Log(absl::StrFormat("get_memory_access(gfn=%s view=%s)", gfn, view), r.status()).IgnoreError();
    return r;
  }
  absl::Status SetMemoryAccess(Gfn gfn, View view, MemoryAccess access) requires VmiSetProtection<D> {
    return Log(absl::StrFormat("set_memory_access(gfn=%s view=%s %s)", gfn, view, access),
               inner_.SetMemoryAccess(gfn, view, access));
  }
  absl::Status SetMemoryAccessWithOptions(Gfn gfn, View view, MemoryAccess access,
                                          MemoryAccessOptions options)
    requires VmiSetProtection<D>
  {
    return Log(absl::StrFormat("set_memory_access(gfn=%s view=%s %s%s)", gfn, view, access,
                               options.empty() ? "" : absl::StrCat(" ", options.ToString())),
               inner_.SetMemoryAccessWithOptions(gfn, view, access, options));
  }
  absl::StatusOr<typename Arch::Registers> Registers(VcpuId vcpu) requires VmiQueryRegisters<D> {
    auto r = inner_.Registers(vcpu);
    if (log_->log_reads) Log(absl::StrFormat("registers(vcpu=%s)", vcpu), r.status()).IgnoreError();
    return r;
  }
  absl::Status SetRegisters(VcpuId vcpu, const typename Arch::Registers& regs)
    requires VmiSetRegisters<D>
  {
    return Log(absl::StrFormat("set_registers(vcpu=%s)", vcpu), inner_.SetRegisters(vcpu, regs));
  }
  absl::Status MonitorEnable(const typename Arch::EventMonitor& m) requires VmiEventControl<D> {
    return Log(absl::StrFormat("monitor_enable(%s)", Describe(m)), inner_.MonitorEnable(m));
  }
  absl::Status MonitorDisable(const typename Arch::EventMonitor& m) requires VmiEventControl<D> {
    return Log(absl::StrFormat("monitor_disable(%s)", Describe(m)), inner_.MonitorDisable(m));
  }
  size_t EventsPending() requires VmiEventControl<D> { return inner_.EventsPending(); }
  absl::Duration EventProcessingOverhead() requires VmiEventControl<D> {
    return inner_.EventProcessingOverhead();
  }
  template <typename Handler>
    requires VmiEventControl<D>
  absl::Status WaitForEvent(absl::Duration timeout, Handler&& handler) {
    if (!rewrite_event_) return inner_.WaitForEvent(timeout, std::forward<Handler>(handler));
    return inner_.WaitForEvent(timeout, [&](const VmiEvent<Arch>& event) {
      VmiEvent<Arch> copy = event;
      rewrite_event_(copy);
      return handler(copy);
    });
  }
  // Every event passes through `rewrite` before the handler sees it: a test
  // plays a driver that reports less (an event without instruction_gfn, as
  // QEMU's). The response still goes to the inner driver unchanged.
  void SetEventRewriter(std::function<void(VmiEvent<Arch>&)> rewrite) requires VmiEventControl<D> {
    rewrite_event_ = std::move(rewrite);
  }
  View DefaultView() requires VmiViewControl<D> { return inner_.DefaultView(); }
  absl::StatusOr<View> CreateView(MemoryAccess access) requires VmiViewControl<D> {
    auto r = inner_.CreateView(access);
    Log(absl::StrFormat("create_view(%s)%s", access, r.ok() ? absl::StrCat(" -> ", r->ToString()) : ""),
        r.status())
        .IgnoreError();
    return r;
  }
  absl::Status DestroyView(View view) requires VmiViewControl<D> {
    return Log(absl::StrFormat("destroy_view(%s)", view), inner_.DestroyView(view));
  }
  absl::Status SwitchToView(View view) requires VmiViewControl<D> {
    return Log(absl::StrFormat("switch_to_view(%s)", view), inner_.SwitchToView(view));
  }
  absl::Status ChangeViewGfn(View view, Gfn old_gfn, Gfn new_gfn) requires VmiViewControl<D> {
    return Log(absl::StrFormat("change_view_gfn(view=%s %s -> %s)", view, old_gfn, new_gfn),
               inner_.ChangeViewGfn(view, old_gfn, new_gfn));
  }
  absl::Status ResetViewGfn(View view, Gfn gfn) requires VmiViewControl<D> {
    return Log(absl::StrFormat("reset_view_gfn(view=%s %s)", view, gfn), inner_.ResetViewGfn(view, gfn));
  }
  absl::Status Pause() requires VmiVmControl<D> { return Log("pause()", inner_.Pause()); }
  absl::Status Resume() requires VmiVmControl<D> { return Log("resume()", inner_.Resume()); }
  absl::StatusOr<Gfn> AllocateGfn() requires VmiVmControl<D> {
    auto r = inner_.AllocateGfn();
    Log(absl::StrFormat("allocate_gfn()%s", r.ok() ? absl::StrCat(" -> ", r->ToString()) : ""), r.status()).IgnoreError();
    return r;
  }
  absl::Status AllocateGfnAt(Gfn gfn) requires VmiVmControl<D> {
    return Log(absl::StrFormat("allocate_gfn_at(%s)", gfn), inner_.AllocateGfnAt(gfn));
  }
  absl::Status FreeGfn(Gfn gfn) requires VmiVmControl<D> {
    return Log(absl::StrFormat("free_gfn(%s)", gfn), inner_.FreeGfn(gfn));
  }
  absl::Status InjectInterrupt(VcpuId vcpu, const typename Arch::Interrupt& interrupt)
    requires VmiVmControl<D>
  {
    return Log(absl::StrFormat("inject_interrupt(vcpu=%s vector=%u)", vcpu, interrupt.vector),
               inner_.InjectInterrupt(vcpu, interrupt));
  }
  absl::Status ResetState() requires VmiVmControl<D> { return Log("reset_state()", inner_.ResetState()); }

 private:
  template <typename M>
  static std::string Describe(const M& monitor) {
    if constexpr (requires { EventMonitorToString(monitor); }) {
      return EventMonitorToString(monitor);
    } else {
      return "monitor";
    }
  }
  absl::Status Log(std::string call, absl::Status status) {
    log_->calls.push_back(status.ok() ? call + " ok" : absl::StrCat(call, " failed: ", status.message()));
    return status;
  }

  D inner_;
  std::function<void(VmiEvent<Arch>&)> rewrite_event_;
  std::shared_ptr<CallLog> log_;
};

}  // namespace vmi

#endif  // VMI_DRIVERS_RECORDING_RECORDING_DRIVER_H_
