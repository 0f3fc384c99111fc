#include "drivers/qemu/internal/qmp.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"
#include "core/error.h"
#include "drivers/qemu/internal/unix_socket.h"

namespace vmi::qemu_internal {
namespace {
constexpr size_t kMaxMessage = 16 << 20;
}  // namespace

absl::StatusOr<Qmp> Qmp::ConnectUnix(const std::string& path, absl::Duration timeout) {
  VMI_ASSIGN_OR_RETURN(const int fd, ConnectUnixSocket(path, "QMP"));
  return FromFd(fd, timeout);
}

absl::StatusOr<Qmp> Qmp::FromFd(int fd, absl::Duration timeout) {
  Qmp qmp(fd, timeout);
  VMI_RETURN_IF_ERROR(qmp.Negotiate());
  return qmp;
}

Qmp::Qmp(Qmp&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), timeout_(other.timeout_), buffer_(std::move(other.buffer_)) {}

Qmp& Qmp::operator=(Qmp&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    timeout_ = other.timeout_;
    buffer_ = std::move(other.buffer_);
  }
  return *this;
}

Qmp::~Qmp() {
  if (fd_ >= 0) close(fd_);
}

absl::StatusOr<nlohmann::json> Qmp::ReadMessage(absl::Time deadline, absl::string_view context) {
  for (;;) {
    const size_t newline = buffer_.find('\n');
    if (newline != std::string::npos) {
      const std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      if (line.find_first_not_of(" \r\t") == std::string::npos) continue;
      nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded() || !j.is_object()) {
        return absl::DataLossError(absl::StrFormat("QMP: %s: a reply that is not a JSON object: %s",
                                                   context, line.substr(0, 120)));
      }
      return j;
    }
    if (fd_ < 0) return absl::FailedPreconditionError("QMP: not connected");
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(absl::StrFormat("QMP: no reply to %s", context));
    }
    pollfd p{fd_, POLLIN, 0};
    const int r = poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
    if (r < 0 && errno != EINTR) return ErrnoError("QMP: poll", errno);
    if (r <= 0) continue;
    char chunk[8192];
    const ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      if (errno != ECONNRESET) return ErrnoError(absl::StrFormat("QMP: reading the reply to %s", context), errno);
      // A peer that exits with unread data resets instead of closing.
    }
    if (n <= 0) {
      close(fd_);
      fd_ = -1;
      return absl::UnavailableError(
          absl::StrFormat("QMP: connection closed while waiting for %s (QEMU exited?)", context));
    }
    buffer_.append(chunk, n);
    if (buffer_.size() > kMaxMessage) {
      return absl::DataLossError(absl::StrFormat("QMP: reply to %s is too large", context));
    }
  }
}

absl::Status Qmp::Negotiate() {
  const absl::Time deadline = absl::Now() + timeout_;
  VMI_ASSIGN_OR_RETURN(nlohmann::json greeting, ReadMessage(deadline, "the greeting"));
  if (!greeting.contains("QMP")) {
    return absl::DataLossError(
        absl::StrFormat("QMP: the greeting has no \"QMP\" member: %s", greeting.dump().substr(0, 120)));
  }
  return Execute("qmp_capabilities").status();
}

absl::StatusOr<nlohmann::json> Qmp::Execute(absl::string_view command, const nlohmann::json& arguments) {
  if (fd_ < 0) return absl::FailedPreconditionError("QMP: not connected");
  nlohmann::json request = {{"execute", std::string(command)}};
  if (!arguments.is_null()) request["arguments"] = arguments;
  const std::string text = request.dump() + "\n";
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = send(fd_, text.data() + done, text.size() - done, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EPIPE || errno == ECONNRESET) {
        close(fd_);
        fd_ = -1;
        return absl::UnavailableError(
            absl::StrFormat("QMP: connection closed while sending %s (QEMU exited?)", command));
      }
      return ErrnoError(absl::StrFormat("QMP: sending %s", command), errno);
    }
    done += n;
  }
  const absl::Time deadline = absl::Now() + timeout_;
  for (;;) {
    VMI_ASSIGN_OR_RETURN(nlohmann::json reply, ReadMessage(deadline, command));
    if (reply.contains("event")) continue;  // asynchronous
    if (reply.contains("error")) {
      const nlohmann::json& e = reply["error"];
      const std::string desc = e.is_object() && e.contains("desc") && e["desc"].is_string()
                                   ? e["desc"].get<std::string>()
                                   : e.dump();
      return absl::FailedPreconditionError(absl::StrFormat("QMP %s: %s", command, desc));
    }
    if (!reply.contains("return")) {
      return absl::DataLossError(
          absl::StrFormat("QMP %s: a reply without \"return\": %s", command, reply.dump().substr(0, 120)));
    }
    return reply["return"];
  }
}

absl::StatusOr<std::string> Qmp::Human(absl::string_view command_line) {
  VMI_ASSIGN_OR_RETURN(nlohmann::json r,
                       Execute("human-monitor-command", {{"command-line", std::string(command_line)}}));
  if (!r.is_string()) {
    return absl::DataLossError(absl::StrFormat("QMP human-monitor-command \"%s\": not text", command_line));
  }
  return r.get<std::string>();
}

}  // namespace vmi::qemu_internal
