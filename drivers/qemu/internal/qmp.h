// A QMP (QEMU Machine Protocol) client over a Unix socket: the greeting,
// capabilities negotiation, commands and their replies (asynchronous events
// in between are skipped), and HMP commands through human-monitor-command.
// Every wait has a deadline; errors name the command.
//
// Thread-safety: thread-compatible.

#ifndef VMI_DRIVERS_QEMU_INTERNAL_QMP_H_
#define VMI_DRIVERS_QEMU_INTERNAL_QMP_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace vmi::qemu_internal {

class Qmp {
 public:
  static absl::StatusOr<Qmp> ConnectUnix(const std::string& path,
                                         absl::Duration timeout = absl::Seconds(10));
  static absl::StatusOr<Qmp> FromFd(int fd, absl::Duration timeout = absl::Seconds(10));

  Qmp(Qmp&& other) noexcept;
  Qmp& operator=(Qmp&& other) noexcept;
  Qmp(const Qmp&) = delete;
  Qmp& operator=(const Qmp&) = delete;
  ~Qmp();

  // The command's "return" value; its "error" as an error.
  absl::StatusOr<nlohmann::json> Execute(absl::string_view command,
                                         const nlohmann::json& arguments = nullptr);
  // An HMP command line ("info registers -a"): its text output.
  absl::StatusOr<std::string> Human(absl::string_view command_line);

 private:
  Qmp(int fd, absl::Duration timeout) : fd_(fd), timeout_(timeout) {}
  absl::StatusOr<nlohmann::json> ReadMessage(absl::Time deadline, absl::string_view context);
  absl::Status Negotiate();

  int fd_ = -1;
  absl::Duration timeout_;
  std::string buffer_;
};

}  // namespace vmi::qemu_internal

#endif  // VMI_DRIVERS_QEMU_INTERNAL_QMP_H_
