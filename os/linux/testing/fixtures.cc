#include "os/linux/testing/fixtures.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace vmi::os_linux::testing {
namespace {

std::string CacheDir() {
  const char* dir = std::getenv("VMI_FIXTURE_DIR");
  return dir && *dir ? dir : "/var/cache/vmi/linux-fixtures";
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrFormat("cannot read %s", path));
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

absl::Status Missing(const std::string& what) {
  return absl::NotFoundError(absl::StrFormat(
      "Linux guest fixture missing: %s. Run tools/setup.sh (it builds the fixtures into %s; "
      "set VMI_FIXTURE_DIR to use another place)",
      what, CacheDir()));
}

}  // namespace

std::string LinuxFixture::guest_path(absl::string_view file) const {
  return absl::StrCat(dir, "/guest/", file);
}

absl::StatusOr<std::string> LinuxFixture::ReadGuestFile(absl::string_view file) const {
  absl::StatusOr<std::string> text = ReadFile(guest_path(file));
  if (!text.ok()) return Missing(guest_path(file));
  return text;
}

absl::StatusOr<LinuxFixture> FindLinuxFixture(absl::string_view variant) {
  const std::string current = CacheDir() + "/current";
  if (!ReadFile(current + "/COMPLETE").ok()) return Missing(current + "/COMPLETE");
  LinuxFixture f;
  f.variant = std::string(variant);
  f.dir = absl::StrCat(current, "/", variant);
  absl::StatusOr<std::string> meta_text = ReadFile(f.dir + "/meta.json");
  if (!meta_text.ok()) return Missing(f.dir + "/meta.json");
  const nlohmann::json meta = nlohmann::json::parse(*meta_text, nullptr, /*allow_exceptions=*/false);
  if (!meta.is_object() || !meta.contains("uname_r") || !meta["uname_r"].is_string() ||
      !meta.contains("paging_levels") || !meta["paging_levels"].is_number_integer() ||
      !meta.contains("kaslr_slide") || !meta["kaslr_slide"].is_string() ||
      !meta.contains("ram_bytes") || !meta["ram_bytes"].is_number_unsigned()) {
    return Missing(f.dir + "/meta.json with uname_r, paging_levels, kaslr_slide, ram_bytes");
  }
  f.release = meta["uname_r"].get<std::string>();
  f.paging_levels = meta["paging_levels"].get<int>();
  f.ram_bytes = meta["ram_bytes"].get<uint64_t>();
  absl::string_view slide = meta["kaslr_slide"].get_ref<const std::string&>();
  if (!absl::ConsumePrefix(&slide, "0x") || !absl::SimpleHexAtoi(slide, &f.kaslr_slide)) {
    return Missing(f.dir + "/meta.json with a hex kaslr_slide");
  }
  for (const char* file : {"/mem.raw", "/mem.elf"}) {
    if (!std::ifstream(f.dir + file)) return Missing(f.dir + file);
  }
  return f;
}

absl::StatusOr<std::vector<KallsymsLine>> ParseProcKallsyms(absl::string_view text) {
  std::vector<KallsymsLine> out;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    ++line_no;
    std::vector<absl::string_view> parts = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    KallsymsLine k;
    if (parts.size() < 3 || parts[1].size() != 1 || !absl::SimpleHexAtoi(parts[0], &k.address)) {
      return absl::InvalidArgumentError(absl::StrFormat("kallsyms line %d: \"%s\"", line_no, line));
    }
    k.type = parts[1][0];
    k.name = std::string(parts[2]);
    if (parts.size() > 3) {
      absl::string_view module = parts[3];
      absl::ConsumePrefix(&module, "[");
      absl::ConsumeSuffix(&module, "]");
      k.module = std::string(module);
    }
    out.push_back(std::move(k));
  }
  return out;
}

}  // namespace vmi::os_linux::testing
