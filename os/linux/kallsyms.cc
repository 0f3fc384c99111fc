#include "os/linux/kallsyms.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "core/error.h"

namespace vmi::os_linux {
namespace {

constexpr uint64_t kPage = 4096;
constexpr size_t kChunk = 64 * 1024;
constexpr size_t kMaxTokenLength = 256;

// Sequential reads of an untrusted stream: 64 KiB at a time, falling back to
// the rest of the page when a chunk crosses into unmapped memory.
class StreamReader {
 public:
  StreamReader(VirtualReadFn read, uint64_t start, uint64_t limit)
      : read_(read), start_(start), limit_(limit) {}

  // The byte at stream position `pos`.
  absl::StatusOr<uint8_t> At(uint64_t pos) {
    if (pos >= limit_) {
      return absl::OutOfRangeError(
          absl::StrFormat("ran past %u bytes without finishing the table", limit_));
    }
    if (pos < buffer_start_ || pos >= buffer_start_ + buffer_.size()) {
      VMI_RETURN_IF_ERROR(Fill(pos));
    }
    return buffer_[pos - buffer_start_];
  }

 private:
  absl::Status Fill(uint64_t pos) {
    const uint64_t va = start_ + pos;
    const uint64_t to_page_end = kPage - (va & (kPage - 1));
    if (!page_by_page_) {
      buffer_.resize(std::min<uint64_t>(kChunk - (kPage - to_page_end), limit_ - pos));
      if (read_(va, absl::MakeSpan(buffer_)).ok()) {
        buffer_start_ = pos;
        return absl::OkStatus();
      }
      // Maybe only a later page is unmapped: the end of the mapping is near,
      // go on page by page.
      page_by_page_ = true;
    }
    buffer_.resize(std::min<uint64_t>(to_page_end, limit_ - pos));
    if (absl::Status s = read_(va, absl::MakeSpan(buffer_)); !s.ok()) {
      buffer_.clear();
      return AnnotateStatus(s, absl::StrFormat("reading 0x%x", va));
    }
    buffer_start_ = pos;
    return absl::OkStatus();
  }

  VirtualReadFn read_;
  uint64_t start_, limit_;
  uint64_t buffer_start_ = 0;
  std::vector<uint8_t> buffer_;
  bool page_by_page_ = false;
};

template <typename T>
absl::StatusOr<std::vector<T>> ReadArray(VirtualReadFn read, uint64_t va, size_t count,
                                         const char* table) {
  std::vector<T> out(count);
  absl::Status s = read(va, absl::MakeSpan(reinterpret_cast<uint8_t*>(out.data()), count * sizeof(T)));
  if (!s.ok()) {
    return AnnotateStatus(s, absl::StrFormat("%s at 0x%x (%u entries)", table, va, count));
  }
  return out;
}

// The 256 tokens, each checked to be a bounded NUL-terminated string.
absl::StatusOr<std::vector<std::string>> ReadTokens(const KallsymsLocation& loc, VirtualReadFn read) {
  VMI_ASSIGN_OR_RETURN(std::vector<uint16_t> index,
                       ReadArray<uint16_t>(read, loc.token_index, 256, "kallsyms_token_index"));
  const uint64_t max_start = *std::max_element(index.begin(), index.end());
  StreamReader table(read, loc.token_table, max_start + kMaxTokenLength + 1);
  std::vector<std::string> tokens(256);
  for (int t = 0; t < 256; ++t) {
    std::string& token = tokens[t];
    for (uint64_t pos = index[t];; ++pos) {
      absl::StatusOr<uint8_t> c = table.At(pos);
      if (!c.ok()) {
        return AnnotateStatus(c.status(), absl::StrFormat("kallsyms_token_table at 0x%x, token %d",
                                                          loc.token_table, t));
      }
      if (*c == 0) break;
      if (token.size() == kMaxTokenLength) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "kallsyms_token_table at 0x%x: token %d is not NUL-terminated within %u bytes: the "
            "tables are not kallsyms",
            loc.token_table, t, kMaxTokenLength));
      }
      token.push_back(static_cast<char>(*c));
    }
  }
  return tokens;
}

absl::Status Garbage(uint64_t names, uint32_t index, uint64_t pos, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrFormat(
      "kallsyms_names at 0x%x: symbol %u (table offset 0x%x) %s: the tables are not kallsyms", names,
      index, pos, what));
}

}  // namespace

std::optional<KallsymsLocation> KallsymsLocation::FromVmcoreinfo(const VmcoreInfo& info) {
  KallsymsLocation loc;
  auto names = info.Symbol("kallsyms_names");
  auto num = info.Symbol("kallsyms_num_syms");
  auto table = info.Symbol("kallsyms_token_table");
  auto index = info.Symbol("kallsyms_token_index");
  if (!names || !num || !table || !index) return std::nullopt;
  loc.names = *names;
  loc.num_syms = *num;
  loc.token_table = *table;
  loc.token_index = *index;
  auto offsets = info.Symbol("kallsyms_offsets");
  auto base = info.Symbol("kallsyms_relative_base");
  auto addresses = info.Symbol("kallsyms_addresses");
  if (offsets && base) {
    loc.offsets = *offsets;
    loc.relative_base = *base;
  } else if (addresses) {
    loc.addresses = *addresses;
  } else {
    return std::nullopt;
  }
  return loc;
}

absl::StatusOr<SymbolTable> DecodeKallsyms(const KallsymsLocation& loc, VirtualReadFn read) {
  uint32_t count;
  if (absl::Status s = read(loc.num_syms, absl::MakeSpan(reinterpret_cast<uint8_t*>(&count), 4));
      !s.ok()) {
    return AnnotateStatus(s, absl::StrFormat("kallsyms_num_syms at 0x%x", loc.num_syms));
  }
  if (count == 0 || count > kMaxKallsyms) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "kallsyms_num_syms at 0x%x is %u (expected 1..%u): the tables are not kallsyms",
        loc.num_syms, count, kMaxKallsyms));
  }
  VMI_ASSIGN_OR_RETURN(std::vector<std::string> tokens, ReadTokens(loc, read));

  // Addresses first: they are fixed-size and cheap to check.
  std::vector<uint64_t> addresses(count);
  if (loc.offsets != 0) {
    VMI_ASSIGN_OR_RETURN(std::vector<int32_t> offsets,
                         ReadArray<int32_t>(read, loc.offsets, count, "kallsyms_offsets"));
    uint64_t base;
    if (absl::Status s = read(loc.relative_base, absl::MakeSpan(reinterpret_cast<uint8_t*>(&base), 8));
        !s.ok()) {
      return AnnotateStatus(s, absl::StrFormat("kallsyms_relative_base at 0x%x", loc.relative_base));
    }
    const bool absolute_percpu =
        std::any_of(offsets.begin(), offsets.end(), [](int32_t o) { return o < 0; });
    for (uint32_t i = 0; i < count; ++i) {
      const int32_t o = offsets[i];
      if (!absolute_percpu) {
        addresses[i] = base + static_cast<uint32_t>(o);
      } else if (o >= 0) {
        addresses[i] = static_cast<uint64_t>(o);
      } else {
        addresses[i] = base - 1 - static_cast<int64_t>(o);
      }
    }
  } else {
    VMI_ASSIGN_OR_RETURN(addresses,
                         ReadArray<uint64_t>(read, loc.addresses, count, "kallsyms_addresses"));
  }
  for (uint32_t i = 1; i < count; ++i) {
    if (addresses[i] < addresses[i - 1]) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "kallsyms addresses are not sorted (symbol %u at 0x%x follows 0x%x): the tables are "
          "not kallsyms",
          i, addresses[i], addresses[i - 1]));
    }
  }

  std::vector<SymbolTable::Entry> entries;
  entries.reserve(count);
  StreamReader names(read, loc.names, kMaxKallsymsNamesBytes);
  uint64_t pos = 0;
  std::string expanded;
  for (uint32_t i = 0; i < count; ++i) {
    const uint64_t entry_pos = pos;
    auto at = [&](uint64_t p) -> absl::StatusOr<uint8_t> {
      absl::StatusOr<uint8_t> c = names.At(p);
      if (!c.ok()) {
        return AnnotateStatus(c.status(),
                              absl::StrFormat("kallsyms_names at 0x%x, symbol %u", loc.names, i));
      }
      return c;
    };
    VMI_ASSIGN_OR_RETURN(uint8_t b0, at(pos++));
    uint32_t length = b0;
    if (b0 & 0x80) {
      VMI_ASSIGN_OR_RETURN(uint8_t b1, at(pos++));
      length = (b0 & 0x7f) | (static_cast<uint32_t>(b1) << 7);
    }
    if (length == 0) return Garbage(loc.names, i, entry_pos, "has length 0");
    expanded.clear();
    for (uint32_t t = 0; t < length; ++t) {
      VMI_ASSIGN_OR_RETURN(uint8_t token, at(pos++));
      expanded += tokens[token];
      if (expanded.size() > kMaxSymbolNameLength + 1) {
        return Garbage(loc.names, i, entry_pos,
                       absl::StrFormat("expands beyond %u characters", kMaxSymbolNameLength));
      }
    }
    if (expanded.size() < 2 || !absl::ascii_isalpha(static_cast<unsigned char>(expanded[0]))) {
      return Garbage(loc.names, i, entry_pos,
                     absl::StrFormat("decodes to \"%s\", which has no type letter and name",
                                     absl::CHexEscape(expanded.substr(0, 32))));
    }
    for (size_t c = 1; c < expanded.size(); ++c) {
      const unsigned char ch = static_cast<unsigned char>(expanded[c]);
      if (ch < 0x21 || ch > 0x7e) {
        return Garbage(loc.names, i, entry_pos,
                       absl::StrFormat("decodes to \"%s\", which has a non-printable byte",
                                       absl::CHexEscape(expanded.substr(0, 64))));
      }
    }
    entries.push_back({addresses[i], expanded[0], expanded.substr(1)});
  }
  return SymbolTable(std::move(entries));
}

}  // namespace vmi::os_linux
