#include "drivers/qemu/testing/live_guest.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace vmi::qemu::testing {
namespace {

// Runs a command line, returning its output; an error with the output when
// it fails.
absl::StatusOr<std::string> Run(const std::string& command) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return absl::InternalError(absl::StrCat("popen: ", command));
  std::string output;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
  const int status = pclose(pipe);
  if (status != 0) {
    return absl::FailedPreconditionError(absl::StrFormat("%s failed: %s", command, output));
  }
  return output;
}

}  // namespace

std::string StartGuestScript() {
  const char* srcdir = getenv("TEST_SRCDIR");
  const char* workspace = getenv("TEST_WORKSPACE");
  if (srcdir != nullptr && workspace != nullptr) {
    return absl::StrCat(srcdir, "/", workspace, "/tools/qemu/start_guest.sh");
  }
  return "tools/qemu/start_guest.sh";
}

absl::StatusOr<std::unique_ptr<LiveGuest>> LiveGuest::Start(const std::string& variant) {
  char tmpl[] = "/tmp/vmi-live.XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp");
  std::unique_ptr<LiveGuest> guest(new LiveGuest(tmpl));
  absl::StatusOr<std::string> out =
      Run(absl::StrFormat("%s --dir %s --variant %s", StartGuestScript(), guest->dir_, variant));
  if (!out.ok()) return out.status();
  std::ifstream live(guest->dir_ + "/live.txt");
  std::stringstream text;
  text << live.rdbuf();
  for (absl::string_view item : absl::StrSplit(text.str(), absl::ByAnyChar(" \n"), absl::SkipEmpty())) {
    const size_t colon = item.rfind(':');
    int pid;
    if (colon != absl::string_view::npos && absl::SimpleAtoi(item.substr(colon + 1), &pid)) {
      guest->processes_[std::string(item.substr(0, colon))] = pid;
    }
  }
  if (!guest->processes_.contains("syscall-loop")) {
    return absl::FailedPreconditionError(
        absl::StrFormat("the live guest in %s did not name its processes: \"%s\"", guest->dir_, text.str()));
  }
  return guest;
}

int LiveGuest::qemu_pid() const {
  std::ifstream in(dir_ + "/qemu.pid");
  int pid = 0;
  in >> pid;
  return pid;
}

void LiveGuest::Kill() {
  const int pid = qemu_pid();
  if (pid > 0) kill(pid, SIGKILL);
  for (int i = 0; i < 100 && pid > 0 && kill(pid, 0) == 0; ++i) usleep(20000);
}

LiveGuest::~LiveGuest() {
  Run(absl::StrFormat("%s --stop %s", StartGuestScript(), dir_)).IgnoreError();
  Run(absl::StrFormat("rm -rf %s", dir_)).IgnoreError();
}

absl::StatusOr<LiveGuest*> SharedLiveGuest() {
  static absl::StatusOr<std::unique_ptr<LiveGuest>>* guest = [] {
    auto* g = new absl::StatusOr<std::unique_ptr<LiveGuest>>(LiveGuest::Start("l4"));
    std::atexit([] {
      if (guest->ok()) guest->value().reset();
    });
    return g;
  }();
  if (!guest->ok()) return guest->status();
  return guest->value().get();
}

}  // namespace vmi::qemu::testing
