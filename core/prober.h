// VmiProber: gathers translation faults over several reads instead of
// stopping at the first, so a tool can page in everything it needs at once
// (inject one #PF per missing page, resume, retry).
//
//   VmiProber prober;
//   auto a = prober.Check(core.ReadU64(ctx_a));   // StatusOr<optional<T>>
//   auto b = prober.Check(core.ReadU64(ctx_b));
//   VMI_RETURN_IF_ERROR(prober.Error());          // all faults, if any
//
// Thread-safety: thread-compatible.

#ifndef VMI_CORE_PROBER_H_
#define VMI_CORE_PROBER_H_

#include <optional>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "core/address_context.h"
#include "core/error.h"

namespace vmi {

class VmiProber {
 public:
  // The value; nullopt for a translation fault (recorded); other errors pass
  // through unchanged.
  template <typename T>
  absl::StatusOr<std::optional<T>> Check(absl::StatusOr<T> result) {
    if (result.ok()) return std::optional<T>(*std::move(result));
    if (std::optional<AddressContext> fault = GetTranslationFault(result.status())) {
      Record(*fault);
      return std::optional<T>();
    }
    return result.status();
  }
  // The same for VmiCore's results: a compact fault is recorded without
  // building its status.
  template <typename T>
  absl::StatusOr<std::optional<T>> Check(FaultOr<T> result) {
    if (result.ok()) return std::optional<T>(*std::move(result));
    if (std::optional<AddressContext> fault = result.translation_fault()) {
      Record(*fault);
      return std::optional<T>();
    }
    return result.status();
  }
  absl::StatusOr<bool> Check(const FaultStatus& status) {
    if (status.ok()) return true;
    if (std::optional<AddressContext> fault = status.translation_fault()) {
      Record(*fault);
      return false;
    }
    return status.status();
  }
  // The same for a plain status: true when OK, false for a recorded fault.
  absl::StatusOr<bool> Check(const absl::Status& status) {
    if (status.ok()) return true;
    if (std::optional<AddressContext> fault = GetTranslationFault(status)) {
      Record(*fault);
      return false;
    }
    return status;
  }

  // Distinct faults in the order first seen.
  const std::vector<AddressContext>& faults() const { return faults_; }
  bool empty() const { return faults_.empty(); }

  // OK when nothing faulted; otherwise a translation fault for the first
  // address whose message lists them all.
  absl::Status Error() const {
    if (faults_.empty()) return absl::OkStatus();
    std::string list;
    for (const AddressContext& f : faults_) {
      absl::StrAppendFormat(&list, "%s[%s]", list.empty() ? "" : " ", f);
    }
    return TranslationFaultError(faults_.front(),
                                 absl::StrFormat("%u address(es) not present: %s", faults_.size(), list));
  }

 private:
  void Record(const AddressContext& ctx) {
    if (seen_.insert(ctx).second) faults_.push_back(ctx);
  }
  std::vector<AddressContext> faults_;
  absl::flat_hash_set<AddressContext> seen_;
};

}  // namespace vmi

#endif  // VMI_CORE_PROBER_H_
