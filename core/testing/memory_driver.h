// MemoryDriver: a test-only driver over TestArch with every capability, for
// the core's own tests. Guest RAM is a host buffer; pages are handed out live
// (zero-copy, like Xen or the simulator) or as owned copies (like a driver
// that copies), chosen per test. Any operation can be made to fail on its Nth
// call, or on every call from the Nth, with a chosen status. Events are
// scripted: WaitForEvent delivers queued events one per call and records the
// responses; with none queued it returns DeadlineExceeded (a timeout).
//
// Thread-safety: thread-compatible.

#ifndef VMI_CORE_TESTING_MEMORY_DRIVER_H_
#define VMI_CORE_TESTING_MEMORY_DRIVER_H_

#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/driver.h"
#include "core/event.h"
#include "core/mapped_page.h"
#include "core/page_span.h"
#include "core/testing/test_arch.h"
#include "core/types.h"

namespace vmi::testing {

class MemoryDriver {
 public:
  using Architecture = TestArch;
  enum class Op { kReadPage, kWritePage, kRegisters, kWaitForEvent, kPause, kResume, kResetState };
  enum class PageMode { kLive, kOwned };

  struct Shared {
    std::vector<uint8_t> ram;
    Gfn max_gfn;
    PageMode page_mode = PageMode::kLive;
    absl::flat_hash_map<int, uint64_t> calls;  // Op -> count
    struct Fault {
      uint64_t nth;
      bool and_after;
      absl::Status status;
    };
    absl::flat_hash_map<int, Fault> faults;
    std::vector<TestArch::Registers> regs;
    absl::flat_hash_map<std::pair<uint64_t, uint16_t>, MemoryAccess> access;
    std::deque<VmiEvent<TestArch>> events;
    std::vector<VmiEventResponse<TestArch>> responses;
    std::vector<std::string> log;  // control operations, in order
    int paused = 0;
    absl::flat_hash_set<uint64_t> monitors;
  };

  explicit MemoryDriver(uint64_t frames, uint16_t vcpus = 1) : s_(std::make_shared<Shared>()) {
    s_->ram.assign(frames * 4096, 0);
    s_->max_gfn = Gfn(frames - 1);
    s_->regs.resize(vcpus);
  }

  // The test keeps a handle to the state after the driver moves into VmiCore.
  std::shared_ptr<Shared> shared() const { return s_; }

  absl::StatusOr<VmiInfo> Info() const {
    return VmiInfo{4096, 12, s_->max_gfn, static_cast<uint16_t>(s_->regs.size())};
  }

  absl::StatusOr<MappedPage> ReadPage(Gfn gfn) {
    if (absl::Status f = Tick(Op::kReadPage); !f.ok()) return f;
    if (gfn > s_->max_gfn) return BadGfn("read_page", gfn);
    uint8_t* p = s_->ram.data() + gfn.value() * 4096;
    if (s_->page_mode == PageMode::kLive) return MappedPage::Live(gfn, p, 4096);
    return MappedPage::Owned(gfn, absl::MakeConstSpan(p, 4096));
  }

  absl::StatusOr<MappedPage> WritePage(Gfn gfn, uint64_t offset, absl::Span<const uint8_t> data) {
    if (absl::Status f = Tick(Op::kWritePage); !f.ok()) return f;
    if (gfn > s_->max_gfn) return BadGfn("write_page", gfn);
    if (absl::Status s = CheckPageSpan("write_page", gfn, offset, data.size()); !s.ok()) return s;
    std::memcpy(s_->ram.data() + gfn.value() * 4096 + offset, data.data(), data.size());
    --s_->calls[static_cast<int>(Op::kReadPage)];  // the read below is not the caller's
    return ReadPage(gfn);
  }

  absl::StatusOr<MemoryAccess> GetMemoryAccess(Gfn gfn, View view) {
    auto it = s_->access.find({gfn.value(), view.value()});
    return it == s_->access.end() ? MemoryAccess::RWX() : it->second;
  }
  absl::StatusOr<std::pair<MemoryAccess, MemoryAccessOptions>> GetMemoryAccessWithOptions(
      Gfn gfn, View view) {
    auto a = GetMemoryAccess(gfn, view);
    if (!a.ok()) return a.status();
    return std::make_pair(*a, MemoryAccessOptions::None());
  }
  absl::Status SetMemoryAccess(Gfn gfn, View view, MemoryAccess access) {
    if (gfn > s_->max_gfn) return BadGfn("set_memory_access", gfn);
    s_->access[{gfn.value(), view.value()}] = access;
    return absl::OkStatus();
  }
  absl::Status SetMemoryAccessWithOptions(Gfn gfn, View view, MemoryAccess access,
                                          MemoryAccessOptions) {
    return SetMemoryAccess(gfn, view, access);
  }

  absl::StatusOr<TestArch::Registers> Registers(VcpuId vcpu) {
    if (absl::Status f = Tick(Op::kRegisters); !f.ok()) return f;
    if (vcpu.value() >= s_->regs.size()) {
      return absl::InvalidArgumentError(absl::StrFormat("registers(vcpu=%s): no such vCPU", vcpu));
    }
    return s_->regs[vcpu.value()];
  }
  absl::Status SetRegisters(VcpuId vcpu, const TestArch::Registers& regs) {
    if (vcpu.value() >= s_->regs.size()) {
      return absl::InvalidArgumentError(absl::StrFormat("set_registers(vcpu=%s): no such vCPU", vcpu));
    }
    s_->regs[vcpu.value()] = regs;
    return absl::OkStatus();
  }

  absl::Status MonitorEnable(const TestArch::EventMonitor& m) {
    s_->monitors.insert(m.code);
    s_->log.push_back(absl::StrFormat("monitor_enable(%u)", m.code));
    return absl::OkStatus();
  }
  absl::Status MonitorDisable(const TestArch::EventMonitor& m) {
    s_->monitors.erase(m.code);
    s_->log.push_back(absl::StrFormat("monitor_disable(%u)", m.code));
    return absl::OkStatus();
  }
  size_t EventsPending() { return s_->events.size(); }
  absl::Duration EventProcessingOverhead() { return absl::ZeroDuration(); }

  template <typename Handler>
  absl::Status WaitForEvent(absl::Duration timeout, Handler&& handler) {
    if (absl::Status f = Tick(Op::kWaitForEvent); !f.ok()) return f;
    if (s_->events.empty()) {
      s_->log.push_back("timeout");
      return absl::DeadlineExceededError(
          absl::StrFormat("wait_for_event(timeout=%s): no event", absl::FormatDuration(timeout)));
    }
    VmiEvent<TestArch> event = s_->events.front();
    s_->events.pop_front();
    s_->log.push_back(absl::StrFormat("event(%u)", event.reason.code));
    s_->responses.push_back(handler(event));
    return absl::OkStatus();
  }

  View DefaultView() { return kDefaultView; }
  absl::StatusOr<View> CreateView(MemoryAccess) { return View(1); }
  absl::Status DestroyView(View) { return absl::OkStatus(); }
  absl::Status SwitchToView(View) { return absl::OkStatus(); }
  absl::Status ChangeViewGfn(View, Gfn, Gfn) { return absl::OkStatus(); }
  absl::Status ResetViewGfn(View, Gfn) { return absl::OkStatus(); }

  absl::Status Pause() {
    if (absl::Status f = Tick(Op::kPause); !f.ok()) return f;
    ++s_->paused;
    s_->log.push_back("pause");
    return absl::OkStatus();
  }
  absl::Status Resume() {
    if (absl::Status f = Tick(Op::kResume); !f.ok()) return f;
    --s_->paused;
    s_->log.push_back("resume");
    return absl::OkStatus();
  }
  absl::StatusOr<Gfn> AllocateGfn() { return Gfn(s_->max_gfn.value() + 1); }
  absl::Status AllocateGfnAt(Gfn) { return absl::OkStatus(); }
  absl::Status FreeGfn(Gfn gfn) {
    s_->log.push_back(absl::StrFormat("free_gfn(%s)", gfn));
    return absl::OkStatus();
  }
  absl::Status InjectInterrupt(VcpuId, const TestArch::Interrupt&) { return absl::OkStatus(); }
  absl::Status ResetState() {
    if (absl::Status f = Tick(Op::kResetState); !f.ok()) return f;
    s_->monitors.clear();
    s_->log.push_back("reset_state");
    return absl::OkStatus();
  }

  // ---- test controls ----
  void FailNth(Op op, uint64_t nth, absl::Status status, bool and_after = false) {
    s_->faults[static_cast<int>(op)] = {nth, and_after, std::move(status)};
  }
  uint64_t calls(Op op) const {
    auto it = s_->calls.find(static_cast<int>(op));
    return it == s_->calls.end() ? 0 : it->second;
  }

 private:
  absl::Status Tick(Op op) {
    const uint64_t n = ++s_->calls[static_cast<int>(op)];
    auto it = s_->faults.find(static_cast<int>(op));
    if (it != s_->faults.end() && (n == it->second.nth || (it->second.and_after && n > it->second.nth))) {
      return it->second.status;
    }
    return absl::OkStatus();
  }
  static absl::Status BadGfn(const char* op, Gfn gfn) {
    return absl::OutOfRangeError(absl::StrFormat("%s(gfn=%s): beyond guest memory", op, gfn));
  }

  std::shared_ptr<Shared> s_;
};

static_assert(VmiFullDriver<MemoryDriver>);

}  // namespace vmi::testing

#endif  // VMI_CORE_TESTING_MEMORY_DRIVER_H_
