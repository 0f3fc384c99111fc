// The layers above VmiCore, as in vmi-rs:
//   VmiSession<Driver, Os>: the core plus an OS-awareness object (NoOs when
//     there is none);
//   VmiState:   session + a vCPU's registers; virtual accesses use the
//     registers' translation root and paging mode implicitly; the *In twins
//     take an explicit AccessContext;
//   VmiContext: state + the event being handled.
// All three are cheap, non-owning views: create them freely, keep them no
// longer than the core, the OS object, the registers and the event.
//
// Thread-safety: as VmiCore (thread-compatible).

#ifndef VMI_CORE_SESSION_H_
#define VMI_CORE_SESSION_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/address_context.h"
#include "core/error.h"
#include "core/event.h"
#include "core/vmi_core.h"

namespace vmi {

// The OS object of a session without OS awareness.
struct NoOs {};

template <VmiDriver Driver, typename Os = NoOs>
class VmiSession {
 public:
  using Arch = typename Driver::Architecture;

  explicit VmiSession(VmiCore<Driver>& core) requires std::is_same_v<Os, NoOs>
      : core_(&core), os_(&NoOsInstance()) {}
  VmiSession(VmiCore<Driver>& core, Os& os) : core_(&core), os_(&os) {}

  VmiCore<Driver>& core() const { return *core_; }
  Os& os() const { return *os_; }

 private:
  static Os& NoOsInstance() {
    static Os instance;
    return instance;
  }
  VmiCore<Driver>* core_;
  Os* os_;
};

template <VmiDriver Driver, typename Os = NoOs>
class VmiState {
 public:
  using Arch = typename Driver::Architecture;
  using Registers = typename Arch::Registers;

  // Sets the core's paging mode from `registers` (a no-op when unchanged).
  VmiState(const VmiSession<Driver, Os>& session, const Registers& registers)
      : session_(&session), registers_(&registers), root_(Arch::TranslationRoot(registers)) {
    session.core().SetPagingMode(Arch::PagingModeOf(registers));
  }

  const VmiSession<Driver, Os>& session() const { return *session_; }
  VmiCore<Driver>& core() const { return session_->core(); }
  Os& os() const { return session_->os(); }
  const Registers& registers() const { return *registers_; }
  Pa translation_root() const { return root_; }
  // `va` in this vCPU's address space.
  AccessContext Virtual(Va va) const { return AccessContext::Virtual(va, root_); }
  AddressContext Address(Va va) const { return AddressContext(va, root_); }
  // Pointer width of the vCPU (8 unless the architecture says otherwise).
  int address_width() const {
    if constexpr (requires { Arch::AddressWidth(*registers_); }) {
      return Arch::AddressWidth(*registers_);
    } else {
      return 8;
    }
  }

  FaultOr<Pa> Translate(Va va) const { return core().Translate(Address(va)); }

  FaultStatus Read(Va va, absl::Span<uint8_t> out) const { return ReadIn(Virtual(va), out); }
  FaultStatus ReadIn(const AccessContext& ctx, absl::Span<uint8_t> out) const {
    return core().Read(ctx, out);
  }
  FaultOr<uint8_t> ReadU8(Va va) const { return core().ReadU8(Virtual(va)); }
  FaultOr<uint16_t> ReadU16(Va va) const { return core().ReadU16(Virtual(va)); }
  FaultOr<uint32_t> ReadU32(Va va) const { return core().ReadU32(Virtual(va)); }
  FaultOr<uint64_t> ReadU64(Va va) const { return core().ReadU64(Virtual(va)); }
  FaultOr<uint8_t> ReadU8In(const AccessContext& c) const { return core().ReadU8(c); }
  FaultOr<uint16_t> ReadU16In(const AccessContext& c) const { return core().ReadU16(c); }
  FaultOr<uint32_t> ReadU32In(const AccessContext& c) const { return core().ReadU32(c); }
  FaultOr<uint64_t> ReadU64In(const AccessContext& c) const { return core().ReadU64(c); }
  // A pointer of the vCPU's width.
  FaultOr<Va> ReadVa(Va va) const { return core().ReadVa(Virtual(va), address_width()); }
  FaultOr<Va> ReadVaIn(const AccessContext& c) const {
    return core().ReadVa(c, address_width());
  }
  FaultOr<std::string> ReadString(Va va, size_t limit = 4096) const {
    return core().ReadString(Virtual(va), limit);
  }
  FaultOr<std::string> ReadStringIn(const AccessContext& c, size_t limit = 4096) const {
    return core().ReadString(c, limit);
  }
  FaultOr<std::string> ReadWString(Va va, size_t limit = 4096) const {
    return core().ReadWString(Virtual(va), limit);
  }
  FaultOr<std::string> ReadWStringIn(const AccessContext& c, size_t limit = 4096) const {
    return core().ReadWString(c, limit);
  }
  template <typename T>
  FaultOr<T> ReadStruct(Va va) const {
    return core().template ReadStruct<T>(Virtual(va));
  }
  template <typename T>
  FaultOr<T> ReadStructIn(const AccessContext& c) const {
    return core().template ReadStruct<T>(c);
  }

  absl::Status Write(Va va, absl::Span<const uint8_t> data) const
    requires VmiMemory<Driver>
  {
    return core().Write(Virtual(va), data);
  }
  absl::Status WriteIn(const AccessContext& c, absl::Span<const uint8_t> data) const
    requires VmiMemory<Driver>
  {
    return core().Write(c, data);
  }
  absl::Status WriteU64(Va va, uint64_t v) const requires VmiMemory<Driver> {
    return core().WriteU64(Virtual(va), v);
  }
  absl::Status WriteU32(Va va, uint32_t v) const requires VmiMemory<Driver> {
    return core().WriteU32(Virtual(va), v);
  }
  absl::Status WriteU8(Va va, uint8_t v) const requires VmiMemory<Driver> {
    return core().WriteU8(Virtual(va), v);
  }

 private:
  const VmiSession<Driver, Os>* session_;
  const Registers* registers_;
  Pa root_;
};

template <VmiDriver Driver, typename Os = NoOs>
class VmiContext : public VmiState<Driver, Os> {
 public:
  using Arch = typename Driver::Architecture;

  VmiContext(const VmiSession<Driver, Os>& session, const VmiEvent<Arch>& event)
      : VmiState<Driver, Os>(session, event.registers), event_(&event) {}

  const VmiEvent<Arch>& event() const { return *event_; }
  VcpuId vcpu() const { return event_->vcpu; }
  View view() const { return event_->view; }
  const typename Arch::EventReason& reason() const { return event_->reason; }

 private:
  const VmiEvent<Arch>* event_;
};

}  // namespace vmi

#endif  // VMI_CORE_SESSION_H_
