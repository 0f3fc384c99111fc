#include "drivers/dump/dump_format.h"

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace vmi::dump {

std::string DumpFormatName(DumpFormat format) {
  switch (format) {
    case DumpFormat::kAuto:
      return "auto";
    case DumpFormat::kRaw:
      return "raw";
    case DumpFormat::kLime:
      return "lime";
    case DumpFormat::kElfCore:
      return "elf";
    case DumpFormat::kXenCore:
      return "xen";
  }
  return "unknown";
}

absl::StatusOr<DumpFormat> ParseDumpFormat(absl::string_view name) {
  if (name == "auto") return DumpFormat::kAuto;
  if (name == "raw") return DumpFormat::kRaw;
  if (name == "lime") return DumpFormat::kLime;
  if (name == "elf" || name == "qemu-elf") return DumpFormat::kElfCore;
  if (name == "xen" || name == "xen-core") return DumpFormat::kXenCore;
  return absl::InvalidArgumentError(
      absl::StrFormat("unknown dump format \"%s\" (expected auto, raw, lime, elf or xen)", name));
}

}  // namespace vmi::dump
