#include "arch/amd64/paging.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace vmi::amd64 {

std::string PagingMode::ToString() const {
  const char* name = "?";
  switch (kind) {
    case Kind::kDisabled: name = "paging-disabled"; break;
    case Kind::kLegacy32: name = pse ? "32-bit(pse)" : "32-bit"; break;
    case Kind::kPae: name = "pae"; break;
    case Kind::kFourLevel: name = "4-level"; break;
    case Kind::kFiveLevel: name = "5-level"; break;
  }
  return absl::StrCat(name, nxe ? "+nx" : "");
}

std::string PageTableEntry::ToString() const {
  std::vector<const char*> flags;
  if (present()) flags.push_back("P");
  if (write()) flags.push_back("RW");
  if (user()) flags.push_back("US");
  if (pwt()) flags.push_back("PWT");
  if (pcd()) flags.push_back("PCD");
  if (accessed()) flags.push_back("A");
  if (dirty()) flags.push_back("D");
  if (page_size()) flags.push_back("PS");
  if (global()) flags.push_back("G");
  if (nx()) flags.push_back("NX");
  std::string out = flags.empty() ? "-" : absl::StrJoin(flags, "|");
  if (protection_key() != 0) absl::StrAppend(&out, " pkey=", protection_key());
  return out;
}

const char* TableName(PagingMode::Kind kind, int level) {
  if (kind == PagingMode::Kind::kLegacy32) return level == 2 ? "PD" : "PT";
  switch (level) {
    case 5: return "PML5";
    case 4: return "PML4";
    case 3: return "PDPT";
    case 2: return "PD";
    case 1: return "PT";
  }
  return "?";
}

namespace paging_internal {

absl::Status DescribeFault(const TranslationFault& fault) {
  const PagingMode mode = DecodeMode(fault.cause.mode);
  const FaultCause& c = fault.cause;
  switch (c.kind) {
    case FaultCause::Kind::kNotPresent:
      return TranslationFaultError(
          fault.ctx, absl::StrFormat("%s entry not present (%s mode, entry 0x%x at pa %s)",
                                     TableName(mode.kind, c.level), mode, c.entry,
                                     c.entry_address));
    case FaultCause::Kind::kMalformed:
      return absl::FailedPreconditionError(absl::StrFormat(
          "translate(%s, %s): malformed page table: reserved bits 0x%x set in %s entry 0x%x at "
          "pa %s",
          fault.ctx, mode, c.detail, TableName(mode.kind, c.level), c.entry, c.entry_address));
    case FaultCause::Kind::kBadAddress:
      return absl::InvalidArgumentError(absl::StrFormat(
          "translate(%s): address is not %s in %s mode", fault.ctx,
          mode.kind == PagingMode::Kind::kFourLevel || mode.kind == PagingMode::Kind::kFiveLevel
              ? "canonical"
              : "32-bit",
          mode));
  }
  return absl::UnknownError(absl::StrFormat("translate(%s): unknown fault kind", fault.ctx));
}

absl::Status ReadFailed(AddressContext ctx, const PagingMode& mode, int level, Pa table,
                        const absl::Status& status) {
  return AnnotateStatus(status, absl::StrFormat("translate(%s, %s): reading the %s at pa %s", ctx,
                                                mode, TableName(mode.kind, level), table));
}

}  // namespace paging_internal

std::string FormatWalk(const Walk& walk) {
  std::string out = absl::StrFormat("%s mode=%s\n", walk.ctx, walk.mode);
  for (int i = 0; i < walk.count; ++i) {
    const WalkStep& s = walk.steps[i];
    absl::StrAppendFormat(&out, "  %-4s table=%s entry@%s = 0x%016x  %s\n",
                          TableName(walk.mode.kind, s.level), s.table, s.entry_address,
                          s.entry.raw(), s.entry.ToString());
  }
  return out;
}

}  // namespace vmi::amd64
