// A client for the GDB remote serial protocol over a connected socket, as
// QEMU's GDB stub speaks it (all-stop mode): packets ($data#checksum, escapes,
// run-length encoding), acknowledgements until QStartNoAckMode, requests and
// their replies, stop replies that arrive while the target runs, the
// interrupt byte, and qXfer reads.
//
// Every wait has a deadline; a closed connection, a bad checksum or a reply
// that does not parse is an error naming the request. Nothing here knows
// x86 or VMI: gdb_stub.h builds on it.
//
// Thread-safety: thread-compatible (one request at a time).

#ifndef VMI_DRIVERS_QEMU_INTERNAL_GDB_REMOTE_H_
#define VMI_DRIVERS_QEMU_INTERNAL_GDB_REMOTE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace vmi::qemu_internal {

// "$data#cs" with '#', '$', '}' and '*' escaped.
std::string EncodePacket(absl::string_view data);
// Undoes escapes and run-length encoding of a packet's data.
absl::StatusOr<std::string> DecodePacketData(absl::string_view raw);

// Hex helpers for register and memory payloads.
std::string HexEncode(absl::string_view bytes);
absl::StatusOr<std::string> HexDecode(absl::string_view hex);

// A parsed stop reply ("T05thread:p01.02;watch:ffffffff81000000;").
struct StopReply {
  enum class Kind : uint8_t { kSignal, kExited, kTerminated };
  Kind kind = Kind::kSignal;
  int signal = 0;                // T/S: the signal; W/X: the status or signal
  std::optional<std::string> thread;  // "p1.2" as given
  // watch/rwatch/awatch with their address.
  enum class Watch : uint8_t { kNone, kWrite, kRead, kAccess };
  Watch watch = Watch::kNone;
  uint64_t watch_address = 0;
  bool swbreak = false, hwbreak = false;
};
absl::StatusOr<StopReply> ParseStopReply(absl::string_view packet);
// Whether a reply is a stop reply (T, S, W, X) rather than an answer.
bool IsStopReply(absl::string_view packet);

class GdbRemote {
 public:
  // Connects to a Unix socket. `timeout` bounds every later wait too.
  static absl::StatusOr<GdbRemote> ConnectUnix(const std::string& path,
                                               absl::Duration timeout = absl::Seconds(10));
  // Takes a connected descriptor (tests: one end of a socketpair).
  static GdbRemote FromFd(int fd, absl::Duration timeout = absl::Seconds(10));

  GdbRemote(GdbRemote&& other) noexcept;
  GdbRemote& operator=(GdbRemote&& other) noexcept;
  GdbRemote(const GdbRemote&) = delete;
  GdbRemote& operator=(const GdbRemote&) = delete;
  ~GdbRemote();

  // qSupported, then QStartNoAckMode when offered. Returns the stub's
  // qSupported answer.
  absl::StatusOr<std::string> Handshake();

  // Sends a request and returns its reply (in all-stop mode requests are
  // made while the target is stopped, so the next packet is the reply).
  absl::StatusOr<std::string> Request(absl::string_view packet);
  // Sends a packet whose reply comes when the target stops (vCont;c,
  // vCont;s): read it with NextStop.
  absl::Status SendNoReply(absl::string_view packet);
  // The next packet, expected to be a stop reply, read before `deadline`.
  // DeadlineExceeded when none came (the target is still running).
  absl::StatusOr<std::string> NextStop(absl::Time deadline);
  // The interrupt byte (0x03): a running target stops and sends a stop reply.
  absl::Status Interrupt();

  // qXfer:<object>:read:<annex> in full.
  absl::StatusOr<std::string> ReadXfer(absl::string_view object, absl::string_view annex);

  absl::Duration timeout() const { return timeout_; }
  bool connected() const { return fd_ >= 0; }
  // Closes the connection (QEMU resumes a guest it stopped for us only on
  // 'D'; callers send that first when they can).
  void Close();

 private:
  GdbRemote(int fd, absl::Duration timeout) : fd_(fd), timeout_(timeout) {}
  absl::Status SendPacket(absl::string_view data);
  // The next packet's data, before `deadline`.
  absl::StatusOr<std::string> ReadPacket(absl::Time deadline, absl::string_view context);
  absl::Status Fill(absl::Time deadline, absl::string_view context);

  int fd_ = -1;
  absl::Duration timeout_;
  bool ack_mode_ = true;
  std::string buffer_;
};

}  // namespace vmi::qemu_internal

#endif  // VMI_DRIVERS_QEMU_INTERNAL_GDB_REMOTE_H_
