#include "drivers/qemu/internal/unix_socket.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "core/error.h"

namespace vmi::qemu_internal {

absl::StatusOr<int> ConnectUnixSocket(const std::string& path, absl::string_view peer) {
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrFormat("%s socket path %s is longer than %u bytes", peer, path,
                                                      sizeof(addr.sun_path) - 1));
  }
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoError("socket(AF_UNIX)", errno);
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    close(fd);
    return ErrnoError(absl::StrFormat("connect(%s) to %s", path, peer), err);
  }
  return fd;
}

}  // namespace vmi::qemu_internal
