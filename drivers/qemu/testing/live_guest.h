// Test-only: a live Linux guest under QEMU, started with
// tools/qemu/start_guest.sh (the fixture kernel; see that script) in a fresh
// directory under /tmp (Unix socket paths must stay short), stopped and
// removed by the destructor. Tests fail, never skip, when the fixtures are
// missing: the script says "run tools/setup.sh".
//
// Thread-safety: thread-compatible.

#ifndef VMI_DRIVERS_QEMU_TESTING_LIVE_GUEST_H_
#define VMI_DRIVERS_QEMU_TESTING_LIVE_GUEST_H_

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "drivers/qemu/qemu_driver.h"

namespace vmi::qemu::testing {

class LiveGuest {
 public:
  // Boots variant "l4" or "l5" (4- or 5-level paging).
  static absl::StatusOr<std::unique_ptr<LiveGuest>> Start(const std::string& variant = "l4");
  ~LiveGuest();

  const std::string& dir() const { return dir_; }
  QemuTarget target() const { return *QemuTarget::Parse(dir_); }
  // The processes the guest's init started: name -> pid ("syscall-loop",
  // "fixture-threads", "sleep", "shell", "shell-child").
  const std::map<std::string, int>& processes() const { return processes_; }
  // QEMU's process id.
  int qemu_pid() const;
  // Kills QEMU at once (the "QEMU exits mid-session" case).
  void Kill();

 private:
  explicit LiveGuest(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
  std::map<std::string, int> processes_;
};

// One guest shared by every test of a binary (booted on first use, stopped
// at exit).
absl::StatusOr<LiveGuest*> SharedLiveGuest();

// The path of tools/qemu/start_guest.sh in the runfiles.
std::string StartGuestScript();

}  // namespace vmi::qemu::testing

#endif  // VMI_DRIVERS_QEMU_TESTING_LIVE_GUEST_H_
