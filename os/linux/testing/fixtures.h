// Test-only: the real Linux guest fixtures that tools/setup.sh builds (see
// tools/linux_fixture/README.md): for each variant ("l4": 4-level paging,
// "l5": 5-level, both with KASLR) a raw image and an ELF core of a Debian
// kernel's guest, and the guest's own view of itself (guest/*.txt).
//
// They live outside the repository, in $VMI_FIXTURE_DIR or
// /var/cache/vmi/linux-fixtures. A missing fixture is an error that says
// to run tools/setup.sh: tests that need one fail, they never skip.
//
// Thread-safety: plain values; thread-compatible.

#ifndef VMI_OS_LINUX_TESTING_FIXTURES_H_
#define VMI_OS_LINUX_TESTING_FIXTURES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vmi::os_linux::testing {

struct LinuxFixture {
  std::string variant;  // "l4" or "l5"
  std::string dir;      // <cache>/current/<variant>
  std::string release;  // uname -r
  int paging_levels = 0;
  uint64_t kaslr_slide = 0;
  uint64_t ram_bytes = 0;

  std::string raw_path() const { return dir + "/mem.raw"; }
  std::string elf_path() const { return dir + "/mem.elf"; }
  std::string guest_path(absl::string_view file) const;
  // A capture of the guest (guest/<file>), e.g. "kallsyms.txt".
  absl::StatusOr<std::string> ReadGuestFile(absl::string_view file) const;
};

inline constexpr const char* kLinuxFixtureVariants[] = {"l4", "l5"};

// The fixture of `variant`; NotFound (with "run tools/setup.sh") when it is
// missing or incomplete.
absl::StatusOr<LinuxFixture> FindLinuxFixture(absl::string_view variant);

// One line of /proc/kallsyms.
struct KallsymsLine {
  uint64_t address;
  char type;
  std::string name;
  std::string module;  // empty for the kernel proper
};
absl::StatusOr<std::vector<KallsymsLine>> ParseProcKallsyms(absl::string_view text);

}  // namespace vmi::os_linux::testing

#endif  // VMI_OS_LINUX_TESTING_FIXTURES_H_
