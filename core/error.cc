#include "core/error.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vmi {
namespace {

constexpr absl::string_view kTranslationFaultUrl = "vmi/translation_fault";

void PutU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}

uint64_t GetU64(absl::string_view in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{static_cast<uint8_t>(in[i])} << (8 * i);
  return v;
}

}  // namespace

absl::Status TranslationFaultError(AddressContext ctx, absl::string_view detail) {
  absl::Status status(absl::StatusCode::kNotFound,
                      absl::StrCat("translation fault at ", ctx.ToString(), ": ", detail));
  std::string payload;
  PutU64(payload, ctx.va.value());
  PutU64(payload, ctx.root.value());
  status.SetPayload(kTranslationFaultUrl, absl::Cord(payload));
  return status;
}

std::optional<AddressContext> GetTranslationFault(const absl::Status& status) {
  if (status.ok()) return std::nullopt;
  absl::optional<absl::Cord> payload = status.GetPayload(kTranslationFaultUrl);
  if (!payload || payload->size() != 16) return std::nullopt;
  std::string flat(*payload);
  return AddressContext(Va(GetU64(flat)), Pa(GetU64(absl::string_view(flat).substr(8))));
}

absl::Status AnnotateStatus(const absl::Status& status, absl::string_view context) {
  if (status.ok()) return status;
  absl::Status out(status.code(), absl::StrCat(context, ": ", status.message()));
  status.ForEachPayload(
      [&out](absl::string_view url, const absl::Cord& payload) { out.SetPayload(url, payload); });
  return out;
}

absl::Status TranslationFault::ToStatus() const {
  if (cause.describe != nullptr) return cause.describe(*this);
  switch (cause.kind) {
    case FaultCause::Kind::kNotPresent:
      return TranslationFaultError(
          ctx, absl::StrFormat("level %u entry not present (entry 0x%x at pa %s)", cause.level,
                               cause.entry, cause.entry_address));
    case FaultCause::Kind::kBadAddress:
      return absl::InvalidArgumentError(
          absl::StrFormat("translate(%s): address outside the paging mode's range", ctx));
    case FaultCause::Kind::kMalformed:
      return absl::FailedPreconditionError(absl::StrFormat(
          "translate(%s): malformed page table: reserved bits 0x%x set in level %u entry 0x%x at "
          "pa %s",
          ctx, cause.detail, cause.level, cause.entry, cause.entry_address));
  }
  return absl::UnknownError(absl::StrFormat("translate(%s): unknown fault kind", ctx));
}

namespace error_internal {

void DieOnBadAccess(const absl::Status& status) {
  std::fprintf(stderr, "value() of a FaultOr without a value: %s\n", status.ToString().c_str());
  std::abort();
}

}  // namespace error_internal

absl::Status ErrnoError(absl::string_view op, int err) {
  return absl::ErrnoToStatus(err, absl::StrCat(op, " (errno=", err, ")"));
}

}  // namespace vmi
