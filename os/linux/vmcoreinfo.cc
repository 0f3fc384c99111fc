#include "os/linux/vmcoreinfo.h"

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace vmi::os_linux {
namespace {

bool IsKeyChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '(' || c == ')' ||
         c == '.' || c == '-';
}

bool ParseHex(absl::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 16) return false;
  for (char c : s) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return absl::SimpleHexAtoi(s, out);
}

bool ParseDecimal(absl::string_view s, int64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  return absl::SimpleAtoi(s, out);
}

std::optional<uint64_t> Unsigned(const VmcoreInfo& info, absl::string_view key) {
  std::optional<absl::string_view> v = info.Get(key);
  uint64_t out;
  if (!v || v->empty() || !absl::SimpleAtoi(*v, &out)) return std::nullopt;
  return out;
}

}  // namespace

std::optional<absl::string_view> VmcoreInfo::Get(absl::string_view key) const {
  for (const auto& [k, v] : entries) {
    if (k == key) return absl::string_view(v);
  }
  return std::nullopt;
}

std::optional<uint64_t> VmcoreInfo::Symbol(absl::string_view name) const {
  std::optional<absl::string_view> v = Get(absl::StrCat("SYMBOL(", name, ")"));
  uint64_t out;
  if (!v || !ParseHex(*v, &out)) return std::nullopt;
  return out;
}

std::optional<int64_t> VmcoreInfo::Number(absl::string_view name) const {
  std::optional<absl::string_view> v = Get(absl::StrCat("NUMBER(", name, ")"));
  int64_t out;
  if (!v || !ParseDecimal(*v, &out)) return std::nullopt;
  return out;
}

std::optional<uint64_t> VmcoreInfo::Offset(absl::string_view name) const {
  return Unsigned(*this, absl::StrCat("OFFSET(", name, ")"));
}
std::optional<uint64_t> VmcoreInfo::Size(absl::string_view name) const {
  return Unsigned(*this, absl::StrCat("SIZE(", name, ")"));
}
std::optional<uint64_t> VmcoreInfo::Length(absl::string_view name) const {
  return Unsigned(*this, absl::StrCat("LENGTH(", name, ")"));
}

absl::StatusOr<VmcoreInfo> ParseVmcoreinfo(absl::Span<const uint8_t> bytes) {
  const size_t window = std::min(bytes.size(), kMaxVmcoreinfoBytes + 1);
  const void* nul = std::memchr(bytes.data(), 0, window);
  size_t length = nul ? static_cast<const uint8_t*>(nul) - bytes.data() : bytes.size();
  if (length > kMaxVmcoreinfoBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("no terminator within %u bytes (the kernel's block fits one page)",
                        kMaxVmcoreinfoBytes));
  }
  const absl::string_view text(reinterpret_cast<const char*>(bytes.data()), length);
  if (text.empty()) return absl::InvalidArgumentError("empty block");
  if (text.back() != '\n') {
    const size_t start = text.rfind('\n') == absl::string_view::npos ? 0 : text.rfind('\n') + 1;
    return absl::InvalidArgumentError(absl::StrFormat(
        "torn block: the last line \"%s\" (at byte %u) has no newline",
        absl::CHexEscape(text.substr(start, 64)), start));
  }

  VmcoreInfo info;
  size_t line_no = 0, at = 0;
  for (absl::string_view line : absl::StrSplit(text.substr(0, text.size() - 1), '\n')) {
    ++line_no;
    const size_t eq = line.find('=');
    if (eq == absl::string_view::npos || eq == 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "line %u (byte %u) \"%s\" is not KEY=VALUE", line_no, at, absl::CHexEscape(line.substr(0, 64))));
    }
    const absl::string_view key = line.substr(0, eq), value = line.substr(eq + 1);
    for (char c : key) {
      if (!IsKeyChar(c)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "line %u (byte %u): key \"%s\" has a character outside [A-Za-z0-9_().-]", line_no, at,
            absl::CHexEscape(key.substr(0, 64))));
      }
    }
    for (char c : value) {
      if (c < 0x20 || c > 0x7e) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "line %u (byte %u): value of %s has a non-printable byte", line_no, at, key));
      }
    }
    if (std::optional<absl::string_view> previous = info.Get(key)) {
      if (*previous != value) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "line %u: %s given twice with different values (\"%s\", then \"%s\")", line_no, key,
            *previous, value));
      }
    } else {
      info.entries.emplace_back(std::string(key), std::string(value));
    }
    at += line.size() + 1;
  }

  // The required facts.
  std::optional<absl::string_view> release = info.Get("OSRELEASE");
  if (!release || release->empty()) return absl::InvalidArgumentError("no OSRELEASE line");
  if (absl::StrContains(*release, '%')) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "OSRELEASE=\"%s\" is the kernel's format string, not a filled-in block", *release));
  }
  info.osrelease = std::string(*release);
  if (std::optional<absl::string_view> id = info.Get("BUILD-ID")) info.build_id = std::string(*id);

  std::optional<absl::string_view> page_size = info.Get("PAGESIZE");
  if (!page_size || !absl::SimpleAtoi(*page_size, &info.page_size)) {
    return absl::InvalidArgumentError("no PAGESIZE line with a decimal number");
  }
  if (info.page_size != 4096) {
    return absl::InvalidArgumentError(
        absl::StrFormat("PAGESIZE=%u: only 4096-byte pages are supported on x86-64", info.page_size));
  }

  std::optional<absl::string_view> offset = info.Get("KERNELOFFSET");
  if (!offset || !ParseHex(*offset, &info.kernel_offset)) {
    return absl::InvalidArgumentError("no KERNELOFFSET line with a hex number");
  }
  std::optional<int64_t> phys_base = info.Number("phys_base");
  if (!phys_base) return absl::InvalidArgumentError("no NUMBER(phys_base) line with a decimal number");
  info.phys_base = *phys_base;

  std::optional<uint64_t> top = info.Symbol("init_top_pgt");
  if (!top) top = info.Symbol("swapper_pg_dir");
  if (!top) {
    return absl::InvalidArgumentError(
        "no SYMBOL(init_top_pgt) or SYMBOL(swapper_pg_dir) line with a hex address");
  }
  if (*top < kStartKernelMap || (*top & 0xfff) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "page-table root symbol 0x%x is not a page-aligned address in the kernel image mapping "
        "(0x%x and up)",
        *top, kStartKernelMap));
  }
  info.top_pgt = *top;

  if (std::optional<absl::string_view> l5 = info.Get("NUMBER(pgtable_l5_enabled)")) {
    if (*l5 != "0" && *l5 != "1") {
      return absl::InvalidArgumentError(
          absl::StrFormat("NUMBER(pgtable_l5_enabled)=%s is neither 0 nor 1", *l5));
    }
    info.five_level = *l5 == "1";
  }
  return info;
}

}  // namespace vmi::os_linux
