// Errors: absl::Status everywhere, plus one typed error, the translation
// fault, which carries the AddressContext whose page was not present so that
// callers can inject a #PF for it or park work until the guest pages it in.
//
// Messages name the operation and the operands, e.g.
//   "read_page(gfn=0x1a2): gfn beyond max_gfn 0xff".
//
// Translation failures are common in real VMI work (scans, KASLR probing,
// pending breakpoints, paged-out user memory), so on the hot path they are
// not statuses but compact values: a TranslationFault (the address, the
// level and entry where the walk stopped) inside a FaultStatus or FaultOr<T>.
// Those build no message and allocate nothing; the absl::Status, with the
// same message and payload as TranslationFaultError, is built only when
// someone asks for it (status(), or a conversion to absl::Status /
// absl::StatusOr<T>, which both types do implicitly, so code written against
// absl types keeps working unchanged).
//
// Thread-safety: stateless functions and plain values; thread-compatible.

#ifndef VMI_CORE_ERROR_H_
#define VMI_CORE_ERROR_H_

#include <cstdint>
#include <new>
#include <optional>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/address_context.h"
#include "core/types.h"

namespace vmi {

// A translation fault for `ctx`: no valid mapping at some level of the walk.
// `detail` says which (e.g. "PML4 entry not present"). Code: kNotFound.
absl::Status TranslationFaultError(AddressContext ctx, absl::string_view detail);

// The AddressContext of a translation fault, or nullopt for any other status
// (including OK). Survives AnnotateStatus.
std::optional<AddressContext> GetTranslationFault(const absl::Status& status);
inline bool IsTranslationFault(const absl::Status& status) {
  return GetTranslationFault(status).has_value();
}

// `status` with "<context>: " put in front of its message; code and payloads
// (and thus the translation fault) are kept. OK stays OK.
absl::Status AnnotateStatus(const absl::Status& status, absl::string_view context);

// "<op>: <strerror(err)> (errno=<err>)" as an error whose code follows errno.
absl::Status ErrnoError(absl::string_view op, int err);

struct TranslationFault;
// Builds the status of a fault; supplied by the architecture whose walk
// produced it (it knows how to name the mode and the table level).
using FaultDescriber = absl::Status (*)(const TranslationFault& fault);

// Why a page walk stopped, without the address: what a V2P cache keeps for a
// cached failure.
struct FaultCause {
  enum class Kind : uint8_t {
    // An entry without its present bit: the typed translation fault (a #PF;
    // IsTranslationFault), code kNotFound.
    kNotPresent,
    // An address the mode cannot translate (non-canonical, beyond 32 bits):
    // InvalidArgument. No table was read.
    kBadAddress,
    // Reserved bits set in an entry (malformed tables): FailedPrecondition.
    kMalformed,
  };
  Kind kind = Kind::kNotPresent;
  uint8_t level = 0;     // the entry's table level, in the architecture's numbering
  uint32_t mode = 0;     // the paging mode, as the architecture encodes it
  Pa entry_address;      // where the entry that stopped the walk lies
  uint64_t entry = 0;    // that entry, raw
  uint64_t detail = 0;   // kMalformed: the reserved bits that were set
  FaultDescriber describe = nullptr;  // null: a generic message

  friend bool operator==(const FaultCause&, const FaultCause&) = default;
};

// A failed translation as a compact value: (va, root) and why.
struct TranslationFault {
  AddressContext ctx;
  FaultCause cause;

  // A #PF-like fault (the page is not present), as opposed to a bad address
  // or malformed tables.
  bool is_page_fault() const { return cause.kind == FaultCause::Kind::kNotPresent; }
  // The status this fault stands for; formats the message (and, for a page
  // fault, attaches the payload GetTranslationFault reads).
  absl::Status ToStatus() const;

  friend bool operator==(const TranslationFault&, const TranslationFault&) = default;
};

namespace error_internal {
[[noreturn]] void DieOnBadAccess(const absl::Status& status);
}  // namespace error_internal

// OK, a compact TranslationFault, or any other error as an absl::Status.
// Converts implicitly to absl::Status and absl::StatusOr<T> (building the
// status of a fault then), and is constructed implicitly from both an
// absl::Status and a TranslationFault.
class [[nodiscard]] FaultStatus {
 public:
  FaultStatus() : state_(State::kOk) {}
  FaultStatus(const TranslationFault& fault)  // NOLINT: implicit by design
      : state_(State::kFault), fault_(fault) {}
  FaultStatus(absl::Status status)  // NOLINT: implicit by design
      : state_(status.ok() ? State::kOk : State::kStatus), status_(std::move(status)) {}

  bool ok() const { return state_ == State::kOk; }
  // The compact fault, or null (OK, or an error held as a status).
  const TranslationFault* fault() const { return state_ == State::kFault ? &fault_ : nullptr; }
  // The AddressContext of a translation fault (compact, or a status
  // carrying one), else nullopt; builds nothing.
  std::optional<AddressContext> translation_fault() const {
    if (state_ == State::kFault) {
      return fault_.is_page_fault() ? std::optional<AddressContext>(fault_.ctx) : std::nullopt;
    }
    return state_ == State::kStatus ? GetTranslationFault(status_) : std::nullopt;
  }
  bool is_translation_fault() const { return translation_fault().has_value(); }
  absl::StatusCode code() const {
    switch (state_) {
      case State::kOk: return absl::StatusCode::kOk;
      case State::kFault: return CodeOf(fault_.cause.kind);
      case State::kStatus: return status_.code();
    }
    return absl::StatusCode::kUnknown;
  }

  absl::Status status() const {
    return state_ == State::kFault ? fault_.ToStatus() : status_;
  }
  operator absl::Status() const { return status(); }  // NOLINT: implicit by design
  template <typename T>
  operator absl::StatusOr<T>() const {  // NOLINT: implicit by design
    return absl::StatusOr<T>(status());
  }
  void IgnoreError() const {}

  static absl::StatusCode CodeOf(FaultCause::Kind kind) {
    switch (kind) {
      case FaultCause::Kind::kNotPresent: return absl::StatusCode::kNotFound;
      case FaultCause::Kind::kBadAddress: return absl::StatusCode::kInvalidArgument;
      case FaultCause::Kind::kMalformed: return absl::StatusCode::kFailedPrecondition;
    }
    return absl::StatusCode::kUnknown;
  }

 private:
  enum class State : uint8_t { kOk, kFault, kStatus };
  State state_;
  union {
    TranslationFault fault_;
  };
  absl::Status status_;  // OK unless kStatus (an OK absl::Status is one word, no allocation)
};

// A T, a compact TranslationFault, or any other error as an absl::Status:
// absl::StatusOr<T> whose translation faults cost no allocation. Same
// accessors as absl::StatusOr (ok, status, operator*, operator->, value,
// value_or), plus fault() / translation_fault(); converts implicitly to
// absl::StatusOr<U> for any U constructible from T.
template <typename T>
class [[nodiscard]] FaultOr {
 public:
  using value_type = T;

  FaultOr(const T& value) : state_(State::kValue) { new (&value_) T(value); }  // NOLINT
  FaultOr(T&& value) : state_(State::kValue) { new (&value_) T(std::move(value)); }  // NOLINT
  FaultOr(const TranslationFault& fault) : state_(State::kFault) {  // NOLINT
    new (&fault_) TranslationFault(fault);
  }
  // An OK status is an error here (as in absl::StatusOr): kInternal.
  FaultOr(absl::Status status) : state_(State::kStatus) {  // NOLINT
    if (status.ok()) status = absl::InternalError("FaultOr constructed from an OK status");
    new (&status_) absl::Status(std::move(status));
  }
  // `error` must not be OK (as above).
  FaultOr(const FaultStatus& error) : FaultOr(FromError(error)) {}  // NOLINT
  template <typename U>
    requires std::is_constructible_v<T, U&&>
  FaultOr(absl::StatusOr<U>&& other)  // NOLINT
      : FaultOr(other.ok() ? FaultOr(T(*std::move(other))) : FaultOr(std::move(other).status())) {}
  template <typename U>
    requires std::is_constructible_v<T, const U&>
  FaultOr(const absl::StatusOr<U>& other)  // NOLINT
      : FaultOr(other.ok() ? FaultOr(T(*other)) : FaultOr(other.status())) {}
  template <typename U>
    requires(!std::is_same_v<U, T>) && std::is_constructible_v<T, const U&>
  FaultOr(const FaultOr<U>& other)  // NOLINT
      : FaultOr(other.ok() ? FaultOr(T(*other)) : FaultOr(other.error())) {}

  FaultOr(const FaultOr& other) : state_(other.state_) { CopyFrom(other); }
  FaultOr(FaultOr&& other) noexcept : state_(other.state_) { MoveFrom(std::move(other)); }
  FaultOr& operator=(const FaultOr& other) {
    if (this != &other) {
      Destroy();
      state_ = other.state_;
      CopyFrom(other);
    }
    return *this;
  }
  FaultOr& operator=(FaultOr&& other) noexcept {
    if (this != &other) {
      Destroy();
      state_ = other.state_;
      MoveFrom(std::move(other));
    }
    return *this;
  }
  ~FaultOr() { Destroy(); }

  bool ok() const { return state_ == State::kValue; }
  const TranslationFault* fault() const { return state_ == State::kFault ? &fault_ : nullptr; }
  std::optional<AddressContext> translation_fault() const {
    if (state_ == State::kFault) {
      return fault_.is_page_fault() ? std::optional<AddressContext>(fault_.ctx) : std::nullopt;
    }
    return state_ == State::kStatus ? GetTranslationFault(status_) : std::nullopt;
  }
  bool is_translation_fault() const { return translation_fault().has_value(); }

  // OK, or the error (a fault's status is built here).
  absl::Status status() const {
    switch (state_) {
      case State::kValue: return absl::OkStatus();
      case State::kFault: return fault_.ToStatus();
      case State::kStatus: return status_;
    }
    return absl::OkStatus();
  }
  // The error without building anything (OK when there is a value).
  FaultStatus error() const& {
    switch (state_) {
      case State::kValue: return FaultStatus();
      case State::kFault: return FaultStatus(fault_);
      case State::kStatus: return FaultStatus(status_);
    }
    return FaultStatus();
  }
  FaultStatus error() && {
    if (state_ == State::kStatus) return FaultStatus(std::move(status_));
    return static_cast<const FaultOr&>(*this).error();
  }

  const T& operator*() const& { return value_; }
  T& operator*() & { return value_; }
  T&& operator*() && { return std::move(value_); }
  const T* operator->() const { return &value_; }
  T* operator->() { return &value_; }
  // The value; aborts with the error's message when there is none.
  const T& value() const& {
    if (!ok()) error_internal::DieOnBadAccess(status());
    return value_;
  }
  T& value() & {
    if (!ok()) error_internal::DieOnBadAccess(status());
    return value_;
  }
  T&& value() && {
    if (!ok()) error_internal::DieOnBadAccess(status());
    return std::move(value_);
  }
  template <typename U>
  T value_or(U&& fallback) const& {
    return ok() ? value_ : static_cast<T>(std::forward<U>(fallback));
  }
  template <typename U>
  T value_or(U&& fallback) && {
    return ok() ? std::move(value_) : static_cast<T>(std::forward<U>(fallback));
  }
  void IgnoreError() const {}

  template <typename U>
    requires std::is_constructible_v<U, const T&>
  operator absl::StatusOr<U>() const& {  // NOLINT: implicit by design
    if (ok()) return absl::StatusOr<U>(U(value_));
    return absl::StatusOr<U>(status());
  }
  template <typename U>
    requires std::is_constructible_v<U, T&&>
  operator absl::StatusOr<U>() && {  // NOLINT: implicit by design
    if (ok()) return absl::StatusOr<U>(U(std::move(value_)));
    return absl::StatusOr<U>(status());
  }

 private:
  enum class State : uint8_t { kValue, kFault, kStatus };

  static FaultOr FromError(const FaultStatus& error) {
    if (const TranslationFault* f = error.fault()) return FaultOr(*f);
    return FaultOr(error.status());
  }
  void CopyFrom(const FaultOr& other) {
    switch (state_) {
      case State::kValue: new (&value_) T(other.value_); break;
      case State::kFault: new (&fault_) TranslationFault(other.fault_); break;
      case State::kStatus: new (&status_) absl::Status(other.status_); break;
    }
  }
  void MoveFrom(FaultOr&& other) {
    switch (state_) {
      case State::kValue: new (&value_) T(std::move(other.value_)); break;
      case State::kFault: new (&fault_) TranslationFault(other.fault_); break;
      case State::kStatus: new (&status_) absl::Status(std::move(other.status_)); break;
    }
  }
  void Destroy() {
    switch (state_) {
      case State::kValue: value_.~T(); break;
      case State::kFault: break;  // trivially destructible
      case State::kStatus: status_.~Status(); break;
    }
  }

  State state_;
  union {
    T value_;
    TranslationFault fault_;
    absl::Status status_;
  };
};

// The fault-aware twins of the absl-only helpers above.
inline std::optional<AddressContext> GetTranslationFault(const FaultStatus& status) {
  return status.translation_fault();
}
inline bool IsTranslationFault(const FaultStatus& status) { return status.is_translation_fault(); }

namespace error_internal {
// The error of a result, kept compact when it is a fault.
inline absl::Status ErrorOf(absl::Status&& s) { return std::move(s); }
inline FaultStatus ErrorOf(FaultStatus&& s) { return std::move(s); }
template <typename T>
absl::Status ErrorOf(absl::StatusOr<T>&& s) {
  return std::move(s).status();
}
template <typename T>
FaultStatus ErrorOf(FaultOr<T>&& s) {
  return std::move(s).error();
}
}  // namespace error_internal

}  // namespace vmi

#define VMI_INTERNAL_CONCAT_(a, b) a##b
#define VMI_INTERNAL_CONCAT(a, b) VMI_INTERNAL_CONCAT_(a, b)

// Returns the status of `expr` from the current function if it is not OK.
// The function returns an absl::Status (a compact fault is built into one).
#define VMI_RETURN_IF_ERROR(expr)                     \
  do {                                                \
    if (::absl::Status vmi_status_ = (expr); !vmi_status_.ok()) { \
      return vmi_status_;                             \
    }                                                 \
  } while (0)

// `VMI_ASSIGN_OR_RETURN(auto x, F());` or `VMI_ASSIGN_OR_RETURN(x, F());`:
// evaluates the StatusOr (or FaultOr) `expr`, returns its status if not OK,
// else moves the value into `lhs`.
#define VMI_ASSIGN_OR_RETURN(lhs, expr) \
  VMI_INTERNAL_ASSIGN_OR_RETURN(VMI_INTERNAL_CONCAT(vmi_statusor_, __LINE__), lhs, expr)
#define VMI_INTERNAL_ASSIGN_OR_RETURN(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return std::move(tmp).status();      \
  lhs = *std::move(tmp)

// The same two for functions that return FaultStatus or FaultOr<T>: a
// compact fault is passed on as it is, nothing is built.
#define VMI_FAULT_RETURN_IF_ERROR(expr)                                      \
  do {                                                                       \
    if (auto vmi_status_ = (expr); !vmi_status_.ok()) {                      \
      return ::vmi::error_internal::ErrorOf(std::move(vmi_status_));         \
    }                                                                        \
  } while (0)
#define VMI_FAULT_ASSIGN_OR_RETURN(lhs, expr) \
  VMI_INTERNAL_FAULT_ASSIGN_OR_RETURN(VMI_INTERNAL_CONCAT(vmi_faultor_, __LINE__), lhs, expr)
#define VMI_INTERNAL_FAULT_ASSIGN_OR_RETURN(tmp, lhs, expr)                     \
  auto tmp = (expr);                                                            \
  if (!tmp.ok()) return ::vmi::error_internal::ErrorOf(std::move(tmp));         \
  lhs = *std::move(tmp)

#endif  // VMI_CORE_ERROR_H_
