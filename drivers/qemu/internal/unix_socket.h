// A connected AF_UNIX stream socket, for the GDB stub and QMP clients.
//
// Thread-safety: thread-safe (no state).

#ifndef VMI_DRIVERS_QEMU_INTERNAL_UNIX_SOCKET_H_
#define VMI_DRIVERS_QEMU_INTERNAL_UNIX_SOCKET_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vmi::qemu_internal {

// The file descriptor (close-on-exec) of a socket connected to `path`.
// `peer` names what listens there in errors ("the gdb stub", "QMP").
absl::StatusOr<int> ConnectUnixSocket(const std::string& path, absl::string_view peer);

}  // namespace vmi::qemu_internal

#endif  // VMI_DRIVERS_QEMU_INTERNAL_UNIX_SOCKET_H_
