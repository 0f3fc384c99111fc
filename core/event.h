// Synchronous events and the responses to them, generic over the
// architecture (which supplies the register set and the event reasons).
//
// Thread-safety: plain values; thread-compatible.

#ifndef VMI_CORE_EVENT_H_
#define VMI_CORE_EVENT_H_

#include <cstdint>
#include <optional>

#include "core/types.h"

namespace vmi {

// Flags of a delivered event.
struct VmiEventFlags {
  // The vCPU is paused until the response is given (always true for
  // synchronous events; asynchronous notifications leave it running).
  bool vcpu_paused = true;
  friend bool operator==(const VmiEventFlags&, const VmiEventFlags&) = default;
};

template <typename Arch>
struct VmiEvent {
  VcpuId vcpu;
  View view;  // the view the vCPU was in when the event happened
  typename Arch::Registers registers;
  typename Arch::EventReason reason;
  VmiEventFlags flags;
};

// What the vCPU does when the handler returns.
enum class EventAction : uint8_t {
  kContinue,           // resume normally (the access/instruction is retried or completed)
  kDeny,               // the write (CR/MSR/memory) does not happen
  kReinjectInterrupt,  // deliver the intercepted interrupt/exception to the guest
  kSingleStep,         // toggle single-stepping of this vCPU
  kFastSingleStep,     // step one instruction in `view`, then return to the current view
  kEmulate,            // emulate the faulting instruction (bypassing the access check)
};

template <typename Arch>
struct VmiEventResponse {
  EventAction action = EventAction::kContinue;
  // Switch the vCPU to this view (for kFastSingleStep: the view to step in).
  std::optional<View> view;
  // Replace the vCPU's general-purpose registers before it resumes.
  std::optional<typename Arch::GpRegisters> registers;

  static VmiEventResponse Continue() { return {}; }
  static VmiEventResponse Deny() { return {EventAction::kDeny, {}, {}}; }
  static VmiEventResponse ReinjectInterrupt() { return {EventAction::kReinjectInterrupt, {}, {}}; }
  static VmiEventResponse ToggleSingleStep() { return {EventAction::kSingleStep, {}, {}}; }
  static VmiEventResponse FastSingleStep(View v) { return {EventAction::kFastSingleStep, v, {}}; }
  static VmiEventResponse Emulate() { return {EventAction::kEmulate, {}, {}}; }

  VmiEventResponse&& WithView(View v) && {
    view = v;
    return std::move(*this);
  }
  VmiEventResponse&& WithRegisters(const typename Arch::GpRegisters& r) && {
    registers = r;
    return std::move(*this);
  }
};

}  // namespace vmi

#endif  // VMI_CORE_EVENT_H_
