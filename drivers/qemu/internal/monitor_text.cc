#include "drivers/qemu/internal/monitor_text.h"

#include <algorithm>
#include <functional>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "arch/amd64/bitfields.h"
#include "core/error.h"

namespace vmi::qemu_internal {
namespace {

constexpr int kMaxDocuments = 16;
constexpr size_t kMaxRegisters = 1024;

// The value of attribute `name` in a tag's text, or empty.
std::string Attribute(absl::string_view tag, absl::string_view name) {
  const std::string key = absl::StrCat(" ", name, "=\"");
  const size_t at = tag.find(key);
  if (at == absl::string_view::npos) return "";
  const size_t start = at + key.size();
  const size_t end = tag.find('"', start);
  if (end == absl::string_view::npos) return "";
  return std::string(tag.substr(start, end - start));
}

absl::Status CollectRegisters(
    absl::string_view xml, int depth, int* documents,
    const std::function<absl::StatusOr<std::string>(const std::string&)>& read_include,
    std::vector<GdbRegister>* out) {
  if (++*documents > kMaxDocuments || depth > 4) {
    return absl::DataLossError("target description includes too many documents");
  }
  for (size_t at = 0; (at = xml.find('<', at)) != absl::string_view::npos;) {
    if (xml.substr(at, 4) == "<!--") {
      // Comments may hold register tags (QEMU comments some out).
      const size_t close = xml.find("-->", at + 4);
      if (close == absl::string_view::npos) return absl::DataLossError("target description: an unclosed comment");
      at = close + 3;
      continue;
    }
    const size_t end = xml.find('>', at);
    if (end == absl::string_view::npos) return absl::DataLossError("target description: an unclosed tag");
    const absl::string_view tag = xml.substr(at, end - at + 1);
    at = end + 1;
    if (absl::StartsWith(tag, "<xi:include")) {
      const std::string href = Attribute(tag, "href");
      if (href.empty()) return absl::DataLossError("target description: an include without href");
      VMI_ASSIGN_OR_RETURN(std::string included, read_include(href));
      VMI_RETURN_IF_ERROR(CollectRegisters(included, depth + 1, documents, read_include, out));
    } else if (absl::StartsWith(tag, "<reg ")) {
      GdbRegister r;
      r.name = Attribute(tag, "name");
      const std::string bits = Attribute(tag, "bitsize");
      const std::string regnum = Attribute(tag, "regnum");
      if (r.name.empty() || !absl::SimpleAtoi(bits, &r.bits) || r.bits == 0 || r.bits > 512 ||
          r.bits % 8 != 0) {
        return absl::DataLossError(absl::StrFormat("target description: bad register tag %s", tag));
      }
      if (!regnum.empty()) {
        if (!absl::SimpleAtoi(regnum, &r.regnum)) {
          return absl::DataLossError(absl::StrFormat("target description: bad regnum in %s", tag));
        }
      } else {
        r.regnum = out->empty() ? 0 : out->back().regnum + 1;
      }
      r.offset = out->empty() ? 0 : out->back().offset + out->back().bits / 8;
      if (out->size() == kMaxRegisters) return absl::DataLossError("target description: too many registers");
      out->push_back(std::move(r));
    }
  }
  return absl::OkStatus();
}

bool ParseHex64(absl::string_view s, uint64_t* out) {
  return !s.empty() && s.size() <= 16 && absl::SimpleHexAtoi(s, out);
}

}  // namespace

absl::StatusOr<std::vector<GdbRegister>> ParseTargetDescription(
    absl::string_view target_xml,
    const std::function<absl::StatusOr<std::string>(const std::string&)>& read_include) {
  std::vector<GdbRegister> out;
  int documents = 0;
  VMI_RETURN_IF_ERROR(CollectRegisters(target_xml, 0, &documents, read_include, &out));
  if (out.empty()) return absl::DataLossError("target description lists no registers");
  return out;
}

absl::StatusOr<std::vector<RamRange>> ParseMtreeRam(absl::string_view text, absl::string_view backend) {
  std::vector<RamRange> ranges;
  bool in_memory_view = false, saw_view = false;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    // The monitor ends its lines with "\r\n".
    const absl::string_view trimmed = absl::StripAsciiWhitespace(line);
    if (absl::StartsWith(trimmed, "FlatView #")) {
      if (saw_view && in_memory_view) break;  // the view we wanted is done
      in_memory_view = false;
      continue;
    }
    if (absl::StartsWith(trimmed, "AS \"memory\"")) {
      in_memory_view = saw_view = true;
      continue;
    }
    if (!in_memory_view) continue;
    // "0000000000100000-000000001fffffff (prio 0, ram): ram @0000000000100000 KVM"
    const size_t dash = trimmed.find('-');
    const size_t open = trimmed.find(" (");
    const size_t close = trimmed.find("): ");
    if (dash == absl::string_view::npos || open == absl::string_view::npos ||
        close == absl::string_view::npos || dash > open || open > close) {
      continue;  // headers and other lines of the view
    }
    uint64_t start, last;
    if (!ParseHex64(trimmed.substr(0, dash), &start) ||
        !ParseHex64(trimmed.substr(dash + 1, open - dash - 1), &last) || last < start) {
      return absl::DataLossError(absl::StrFormat("info mtree: bad range in \"%s\"", trimmed));
    }
    const absl::string_view kind = trimmed.substr(open + 2, close - open - 2);
    const bool ram = absl::EndsWith(kind, ", ram"), rom = absl::EndsWith(kind, ", rom");
    if (!ram && !rom) continue;
    std::vector<absl::string_view> rest = absl::StrSplit(trimmed.substr(close + 3), ' ', absl::SkipEmpty());
    if (rest.empty() || rest[0] != backend) continue;
    uint64_t offset = 0;
    if (rest.size() > 1 && absl::StartsWith(rest[1], "@")) {
      if (!ParseHex64(rest[1].substr(1), &offset)) {
        return absl::DataLossError(absl::StrFormat("info mtree: bad offset in \"%s\"", trimmed));
      }
    }
    ranges.push_back({start, last - start + 1, offset, rom});
  }
  if (ranges.empty()) {
    return absl::NotFoundError(absl::StrFormat(
        "info mtree -f: no range of address space \"memory\" maps memory region \"%s\"", backend));
  }
  std::sort(ranges.begin(), ranges.end(), [](const RamRange& a, const RamRange& b) { return a.gpa < b.gpa; });
  std::vector<RamRange> merged;
  for (const RamRange& r : ranges) {
    if (!merged.empty()) {
      RamRange& m = merged.back();
      if (r.gpa < m.gpa + m.size) {
        return absl::DataLossError(absl::StrFormat("info mtree: ranges at 0x%x and 0x%x overlap", m.gpa, r.gpa));
      }
      if (m.gpa + m.size == r.gpa && m.file_offset + m.size == r.file_offset && m.read_only == r.read_only) {
        m.size += r.size;
        continue;
      }
    }
    merged.push_back(r);
  }
  return merged;
}

absl::StatusOr<std::vector<CpuDescriptors>> ParseInfoRegisters(absl::string_view text) {
  std::vector<CpuDescriptors> cpus;
  CpuDescriptors* cpu = nullptr;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    line = absl::StripTrailingAsciiWhitespace(line);
    if (absl::StartsWith(line, "CPU#")) {
      cpus.emplace_back();
      cpu = &cpus.back();
      continue;
    }
    if (cpu == nullptr && !line.empty()) {
      // "info registers" of one CPU has no header.
      cpus.emplace_back();
      cpu = &cpus.back();
    }
    if (cpu == nullptr) continue;
    const size_t eq = line.find('=');
    if (eq == absl::string_view::npos) continue;
    const absl::string_view name = absl::StripTrailingAsciiWhitespace(line.substr(0, eq));
    std::vector<absl::string_view> f = absl::StrSplit(line.substr(eq + 1), ' ', absl::SkipEmpty());
    amd64::Segment* seg = name == "ES"   ? &cpu->es
                          : name == "CS" ? &cpu->cs
                          : name == "SS" ? &cpu->ss
                          : name == "DS" ? &cpu->ds
                          : name == "FS" ? &cpu->fs
                          : name == "GS" ? &cpu->gs
                          : name == "LDT" ? &cpu->ldtr
                          : name == "TR"  ? &cpu->tr
                                          : nullptr;
    if (seg != nullptr) {
      // "CS =0010 0000000000000000 ffffffff 00af9b00 DPL=0 CS64 [-RA]"
      uint64_t selector, base, limit, flags;
      if (f.size() < 4 || !ParseHex64(f[0], &selector) || !ParseHex64(f[1], &base) ||
          !ParseHex64(f[2], &limit) || !ParseHex64(f[3], &flags) || selector > 0xffff ||
          limit > 0xffffffff || flags > 0xffffffff) {
        return absl::DataLossError(absl::StrFormat("info registers: bad segment line \"%s\"", line));
      }
      seg->selector = static_cast<uint16_t>(selector);
      seg->base = base;
      seg->limit = static_cast<uint32_t>(limit);
      seg->access = static_cast<uint16_t>(
          amd64::SegmentAccess::FromDescriptorFlags(static_cast<uint32_t>(flags)).value());
      continue;
    }
    if (name == "GDT" || name == "IDT") {
      uint64_t base, limit;
      if (f.size() < 2 || !ParseHex64(f[0], &base) || !ParseHex64(f[1], &limit) || limit > 0xffff) {
        return absl::DataLossError(absl::StrFormat("info registers: bad table line \"%s\"", line));
      }
      amd64::DescriptorTable& t = name == "GDT" ? cpu->gdtr : cpu->idtr;
      t.base = base;
      t.limit = static_cast<uint16_t>(limit);
      continue;
    }
    if (absl::StartsWith(name, "DR0")) {
      // "DR0=... DR1=... DR2=... DR3=..." and "DR6=... DR7=..."
      for (absl::string_view item : absl::StrSplit(line, ' ', absl::SkipEmpty())) {
        if (item.size() < 5 || item[0] != 'D' || item[1] != 'R' || item[3] != '=') continue;
        const int n = item[2] - '0';
        uint64_t v;
        if (n >= 0 && n < 8 && ParseHex64(item.substr(4), &v)) cpu->dr[n] = v;
      }
    } else if (absl::StartsWith(name, "DR6")) {
      for (absl::string_view item : absl::StrSplit(line, ' ', absl::SkipEmpty())) {
        if (item.size() < 5 || item[3] != '=') continue;
        const int n = item[2] - '0';
        uint64_t v;
        if (n >= 0 && n < 8 && ParseHex64(item.substr(4), &v)) cpu->dr[n] = v;
      }
    }
  }
  if (cpus.empty()) return absl::DataLossError("info registers: no CPU in the output");
  return cpus;
}

}  // namespace vmi::qemu_internal
