// Errors: absl::Status everywhere, plus one typed error, the translation
// fault, which carries the AddressContext whose page was not present so that
// callers can inject a #PF for it or park work until the guest pages it in.
//
// Messages name the operation and the operands, e.g.
//   "read_page(gfn=0x1a2): gfn beyond max_gfn 0xff".
//
// Thread-safety: stateless functions; thread-safe.

#ifndef VMI_CORE_ERROR_H_
#define VMI_CORE_ERROR_H_

#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/address_context.h"

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

}  // namespace vmi

#define VMI_INTERNAL_CONCAT_(a, b) a##b
#define VMI_INTERNAL_CONCAT(a, b) VMI_INTERNAL_CONCAT_(a, b)

// Returns the status of `expr` from the current function if it is not OK.
#define VMI_RETURN_IF_ERROR(expr)                     \
  do {                                                \
    if (::absl::Status vmi_status_ = (expr); !vmi_status_.ok()) { \
      return vmi_status_;                             \
    }                                                 \
  } while (0)

// `VMI_ASSIGN_OR_RETURN(auto x, F());` or `VMI_ASSIGN_OR_RETURN(x, F());`:
// evaluates the StatusOr `expr`, returns its status if not OK, else moves the
// value into `lhs`.
#define VMI_ASSIGN_OR_RETURN(lhs, expr) \
  VMI_INTERNAL_ASSIGN_OR_RETURN(VMI_INTERNAL_CONCAT(vmi_statusor_, __LINE__), lhs, expr)
#define VMI_INTERNAL_ASSIGN_OR_RETURN(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return std::move(tmp).status();      \
  lhs = *std::move(tmp)

#endif  // VMI_CORE_ERROR_H_
