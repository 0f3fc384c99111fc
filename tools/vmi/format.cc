#include "tools/vmi/format.h"

#include <unistd.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "arch/amd64/bitfields.h"
#include "arch/amd64/interrupt.h"

namespace vmi::cli {

absl::StatusOr<uint64_t> ParseNumber(absl::string_view text) {
  absl::string_view digits = absl::StripAsciiWhitespace(text);
  int base = 10;
  if (digits.size() > 2 && digits[0] == '0') {
    const char p = absl::ascii_tolower(digits[1]);
    if (p == 'x') base = 16;
    if (p == 'o') base = 8;
    if (p == 'b') base = 2;
    if (base != 10) digits.remove_prefix(2);
  }
  if (digits.empty()) return absl::InvalidArgumentError(absl::StrCat("not a number: '", text, "'"));
  uint64_t value = 0;
  for (char c : digits) {
    if (c == '_') continue;
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else {
      d = 99;
    }
    if (d >= base) {
      return absl::InvalidArgumentError(absl::StrCat("not a number: '", text, "'"));
    }
    if (value > (UINT64_MAX - d) / base) {
      return absl::OutOfRangeError(absl::StrCat("number too large: '", text, "'"));
    }
    value = value * base + d;
  }
  return value;
}

std::string Hex(uint64_t v) { return absl::StrFormat("0x%x", v); }

std::string HexDump(uint64_t address, absl::Span<const uint8_t> bytes) {
  std::string out;
  for (size_t line = 0; line < bytes.size(); line += 16) {
    absl::StrAppendFormat(&out, "%016x: ", address + line);
    std::string ascii;
    for (size_t i = 0; i < 16; ++i) {
      if (line + i < bytes.size()) {
        const uint8_t b = bytes[line + i];
        absl::StrAppendFormat(&out, "%02x", b);
        ascii.push_back(b >= 0x20 && b < 0x7f ? static_cast<char>(b) : '.');
      } else {
        out.append("  ");
      }
      if (i % 2 == 1) out.push_back(' ');
    }
    absl::StrAppend(&out, " ", ascii, "\n");
  }
  return out;
}

namespace {

nlohmann::json SegmentJson(const amd64::Segment& s) {
  return {{"selector", s.selector},
          {"base", Hex(s.base)},
          {"limit", Hex(s.limit)},
          {"access", Hex(s.access)},
          {"decoded", amd64::SegmentAccess(s.access).ToString()}};
}

}  // namespace

nlohmann::json RegistersToJson(const amd64::Registers& r) {
  nlohmann::json j;
  const std::pair<const char*, uint64_t> plain[] = {
      {"rax", r.rax},   {"rbx", r.rbx},       {"rcx", r.rcx},     {"rdx", r.rdx},
      {"rsi", r.rsi},   {"rdi", r.rdi},       {"rbp", r.rbp},     {"rsp", r.rsp},
      {"r8", r.r8},     {"r9", r.r9},         {"r10", r.r10},     {"r11", r.r11},
      {"r12", r.r12},   {"r13", r.r13},       {"r14", r.r14},     {"r15", r.r15},
      {"rip", r.rip},   {"rflags", r.rflags}, {"cr0", r.cr0},     {"cr2", r.cr2},
      {"cr3", r.cr3},   {"cr4", r.cr4},       {"xcr0", r.xcr0},   {"dr0", r.dr0},
      {"dr1", r.dr1},   {"dr2", r.dr2},       {"dr3", r.dr3},     {"dr6", r.dr6},
      {"dr7", r.dr7},   {"efer", r.efer},     {"star", r.star},   {"lstar", r.lstar},
      {"cstar", r.cstar}, {"sfmask", r.sfmask}, {"sysenter_cs", r.sysenter_cs},
      {"sysenter_esp", r.sysenter_esp}, {"sysenter_eip", r.sysenter_eip},
      {"fs_base", r.fs_base}, {"gs_base", r.gs_base}, {"kernel_gs_base", r.kernel_gs_base},
      {"tsc_aux", r.tsc_aux}};
  for (const auto& [name, value] : plain) j[name] = Hex(value);
  j["flags"] = {{"cr0", amd64::Cr0(r.cr0).ToString()},
                {"cr4", amd64::Cr4(r.cr4).ToString()},
                {"efer", amd64::Efer(r.efer).ToString()},
                {"rflags", amd64::Rflags(r.rflags).ToString()}};
  const std::pair<const char*, const amd64::Segment*> segs[] = {
      {"cs", &r.cs}, {"ds", &r.ds}, {"es", &r.es}, {"fs", &r.fs},
      {"gs", &r.gs}, {"ss", &r.ss}, {"tr", &r.tr}, {"ldtr", &r.ldtr}};
  for (const auto& [name, seg] : segs) j["segments"][name] = SegmentJson(*seg);
  j["gdtr"] = {{"base", Hex(r.gdtr.base)}, {"limit", Hex(r.gdtr.limit)}};
  j["idtr"] = {{"base", Hex(r.idtr.base)}, {"limit", Hex(r.idtr.limit)}};
  return j;
}

std::string RegistersToText(const amd64::Registers& r) { return amd64::FormatRegisters(r); }

nlohmann::json WalkToJson(const amd64::Walk& walk, const absl::Status& status) {
  nlohmann::json j;
  j["va"] = Hex(walk.ctx.va.value());
  j["root"] = Hex(walk.ctx.root.value());
  j["mode"] = walk.mode.ToString();
  j["levels"] = nlohmann::json::array();
  for (int i = 0; i < walk.count; ++i) {
    const amd64::WalkStep& s = walk.steps[i];
    j["levels"].push_back({{"table", amd64::TableName(walk.mode.kind, s.level)},
                           {"table_address", Hex(s.table.value())},
                           {"entry_address", Hex(s.entry_address.value())},
                           {"entry", Hex(s.entry.raw())},
                           {"flags", s.entry.ToString()}});
  }
  if (status.ok()) {
    const PageTranslation& t = walk.translation;
    j["pa"] = Hex(t.pa.value());
    j["page_size"] = t.page_size;
    j["permissions"] = {{"write", t.permissions.write},
                        {"user", t.permissions.user},
                        {"execute", t.permissions.execute}};
  } else {
    j["error"] = std::string(status.message());
    j["translation_fault"] = IsTranslationFault(status);
  }
  return j;
}

std::string WalkToText(const amd64::Walk& walk, const absl::Status& status) {
  std::string out = amd64::FormatWalk(walk);
  if (status.ok()) {
    const PageTranslation& t = walk.translation;
    const char* size = t.page_size == (1ull << 30) ? "1G"
                       : t.page_size == (1ull << 22) ? "4M"
                       : t.page_size == (1ull << 21) ? "2M"
                                                     : "4K";
    absl::StrAppendFormat(&out, "  => pa %s (%s page, %s%s%s)\n", t.pa, size,
                          t.permissions.write ? "rw" : "ro", t.permissions.user ? " user" : " kernel",
                          t.permissions.execute ? " exec" : " nx");
  } else {
    absl::StrAppendFormat(&out, "  => %s\n", status.message());
  }
  return out;
}

nlohmann::json IdtToJson(const std::vector<amd64::IdtEntry>& entries) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& e : entries) {
    j.push_back({{"vector", e.vector},
                 {"present", e.gate.present},
                 {"handler", Hex(e.gate.offset)},
                 {"selector", Hex(e.gate.selector)},
                 {"type", e.gate.is_interrupt_gate() ? "interrupt" : e.gate.is_trap_gate() ? "trap" : Hex(e.gate.type)},
                 {"dpl", e.gate.dpl},
                 {"ist", e.gate.ist}});
  }
  return j;
}

std::string IdtToText(const std::vector<amd64::IdtEntry>& entries) {
  std::string out = "vector  name         handler               sel     type       dpl ist\n";
  for (const auto& e : entries) {
    if (!e.gate.present) continue;
    absl::StrAppendFormat(&out, "%-7u %-12s 0x%016x  0x%04x  %-9s  %u   %u\n", e.vector,
                          amd64::ExceptionName(e.vector), e.gate.offset, e.gate.selector,
                          e.gate.is_interrupt_gate() ? "interrupt" : e.gate.is_trap_gate() ? "trap" : "other",
                          e.gate.dpl, e.gate.ist);
  }
  return out;
}

std::string HumanBytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  return absl::StrFormat(u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
}

ProgressBar::ProgressBar(uint64_t total, bool enabled)
    : total_(total), enabled_(enabled && isatty(STDERR_FILENO)), start_(absl::Now()),
      last_draw_(absl::InfinitePast()) {}

void ProgressBar::Update(uint64_t done) {
  if (!enabled_) return;
  const absl::Time now = absl::Now();
  if (now - last_draw_ < absl::Milliseconds(100) && done < total_) return;
  last_draw_ = now;
  const double secs = absl::ToDoubleSeconds(now - start_);
  const double rate = secs > 0 ? done / secs : 0;
  const double eta = rate > 0 ? (total_ - done) / rate : 0;
  const int width = 30;
  const int filled = total_ ? static_cast<int>(width * static_cast<double>(done) / total_) : width;
  std::fprintf(stderr, "\r[%s%s] %s / %s  %s/s  ETA %.0fs   ", std::string(filled, '#').c_str(),
               std::string(width - filled, ' ').c_str(), HumanBytes(done).c_str(),
               HumanBytes(total_).c_str(), HumanBytes(rate).c_str(), eta);
  std::fflush(stderr);
}

void ProgressBar::Finish() {
  if (!enabled_) return;
  Update(total_);
  std::fprintf(stderr, "\n");
}

}  // namespace vmi::cli
