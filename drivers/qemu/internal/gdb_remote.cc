#include "drivers/qemu/internal/gdb_remote.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/error.h"
#include "drivers/qemu/internal/unix_socket.h"

namespace vmi::qemu_internal {
namespace {

constexpr size_t kMaxPacket = 1 << 20;  // no stub reply we read is larger

std::string Printable(absl::string_view s) {
  return absl::CHexEscape(s.substr(0, 80)) + (s.size() > 80 ? "..." : "");
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string EncodePacket(absl::string_view data) {
  std::string body;
  for (char c : data) {
    if (c == '$' || c == '#' || c == '}' || c == '*') {
      body.push_back('}');
      body.push_back(static_cast<char>(c ^ 0x20));
    } else {
      body.push_back(c);
    }
  }
  uint8_t sum = 0;
  for (char c : body) sum += static_cast<uint8_t>(c);
  return absl::StrFormat("$%s#%02x", body, sum);
}

absl::StatusOr<std::string> DecodePacketData(absl::string_view raw) {
  std::string out;
  for (size_t i = 0; i < raw.size(); ++i) {
    const char c = raw[i];
    if (c == '}') {
      if (i + 1 == raw.size()) return absl::DataLossError("packet ends inside an escape");
      out.push_back(static_cast<char>(raw[++i] ^ 0x20));
    } else if (c == '*') {
      // Run-length encoding: the previous character repeated (n - 29) more times.
      if (out.empty() || i + 1 == raw.size()) return absl::DataLossError("bad run-length encoding");
      const int n = static_cast<uint8_t>(raw[++i]) - 29;
      if (n < 3 || n > 97) return absl::DataLossError("bad run-length count");
      out.append(static_cast<size_t>(n), out.back());
    } else {
      out.push_back(c);
    }
    if (out.size() > kMaxPacket) return absl::DataLossError("packet too large");
  }
  return out;
}

std::string HexEncode(absl::string_view bytes) { return absl::BytesToHexString(bytes); }

absl::StatusOr<std::string> HexDecode(absl::string_view hex) {
  if (hex.size() % 2 != 0) return absl::DataLossError("odd number of hex digits");
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    const int hi = HexValue(hex[2 * i]), lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return absl::DataLossError(absl::StrFormat("not hex at %u: \"%s\"", 2 * i, Printable(hex)));
    }
    out[i] = static_cast<char>(hi << 4 | lo);
  }
  return out;
}

bool IsStopReply(absl::string_view p) {
  return !p.empty() && (p[0] == 'T' || p[0] == 'S' || p[0] == 'W' || p[0] == 'X');
}

absl::StatusOr<StopReply> ParseStopReply(absl::string_view p) {
  auto bad = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrFormat("stop reply \"%s\": %s", Printable(p), why));
  };
  if (p.size() < 3 || !IsStopReply(p)) return bad("not a stop reply");
  StopReply r;
  const int hi = HexValue(p[1]), lo = HexValue(p[2]);
  if (hi < 0 || lo < 0) return bad("no two-digit signal or status");
  r.signal = hi << 4 | lo;
  if (p[0] == 'W') r.kind = StopReply::Kind::kExited;
  if (p[0] == 'X') r.kind = StopReply::Kind::kTerminated;
  if (p[0] != 'T') return r;
  for (absl::string_view pair : absl::StrSplit(p.substr(3), ';', absl::SkipEmpty())) {
    const size_t colon = pair.find(':');
    const absl::string_view key = pair.substr(0, colon);
    const absl::string_view value = colon == absl::string_view::npos ? "" : pair.substr(colon + 1);
    if (key == "thread") {
      r.thread = std::string(value);
    } else if (key == "watch" || key == "rwatch" || key == "awatch") {
      r.watch = key == "watch" ? StopReply::Watch::kWrite
                : key == "rwatch" ? StopReply::Watch::kRead
                                  : StopReply::Watch::kAccess;
      if (value.empty() || value.size() > 16 || !absl::SimpleHexAtoi(value, &r.watch_address)) {
        return bad(absl::StrCat("bad ", key, " address"));
      }
    } else if (key == "swbreak") {
      r.swbreak = true;
    } else if (key == "hwbreak") {
      r.hwbreak = true;
    }
    // Registers (NN:value) and other keys are not needed.
  }
  return r;
}

absl::StatusOr<GdbRemote> GdbRemote::ConnectUnix(const std::string& path, absl::Duration timeout) {
  VMI_ASSIGN_OR_RETURN(const int fd, ConnectUnixSocket(path, "the gdb stub"));
  return GdbRemote(fd, timeout);
}

GdbRemote GdbRemote::FromFd(int fd, absl::Duration timeout) { return GdbRemote(fd, timeout); }

GdbRemote::GdbRemote(GdbRemote&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      timeout_(other.timeout_),
      ack_mode_(other.ack_mode_),
      buffer_(std::move(other.buffer_)) {}

GdbRemote& GdbRemote::operator=(GdbRemote&& other) noexcept {
  if (this != &other) {
    Close();
    fd_ = std::exchange(other.fd_, -1);
    timeout_ = other.timeout_;
    ack_mode_ = other.ack_mode_;
    buffer_ = std::move(other.buffer_);
  }
  return *this;
}

GdbRemote::~GdbRemote() { Close(); }

void GdbRemote::Close() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

absl::Status GdbRemote::SendPacket(absl::string_view data) {
  if (fd_ < 0) return absl::FailedPreconditionError("gdb stub: not connected");
  const std::string packet = EncodePacket(data);
  size_t done = 0;
  while (done < packet.size()) {
    const ssize_t n = send(fd_, packet.data() + done, packet.size() - done, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EPIPE || errno == ECONNRESET) {
        Close();
        return absl::UnavailableError(absl::StrFormat(
            "gdb stub: connection closed while sending \"%s\" (QEMU exited?)", Printable(data)));
      }
      return ErrnoError(absl::StrFormat("gdb stub: sending \"%s\"", Printable(data)), errno);
    }
    done += n;
  }
  return absl::OkStatus();
}

absl::Status GdbRemote::Fill(absl::Time deadline, absl::string_view context) {
  if (fd_ < 0) return absl::FailedPreconditionError("gdb stub: not connected");
  for (;;) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(absl::StrFormat("gdb stub: no reply to %s", context));
    }
    pollfd p{fd_, POLLIN, 0};
    const int r = poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("gdb stub: poll", errno);
    }
    if (r == 0) continue;
    char chunk[4096];
    const ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      if (errno != ECONNRESET) {
        return ErrnoError(absl::StrFormat("gdb stub: reading the reply to %s", context), errno);
      }
      // A peer that exits with unread data resets instead of closing.
    }
    if (n <= 0) {
      Close();
      return absl::UnavailableError(absl::StrFormat(
          "gdb stub: connection closed while waiting for the reply to %s (QEMU exited?)", context));
    }
    buffer_.append(chunk, n);
    if (buffer_.size() > 2 * kMaxPacket) {
      return absl::DataLossError(absl::StrFormat("gdb stub: reply to %s is too large", context));
    }
    return absl::OkStatus();
  }
}

absl::StatusOr<std::string> GdbRemote::ReadPacket(absl::Time deadline, absl::string_view context) {
  for (;;) {
    // Acknowledgements and noise before a packet are skipped.
    const size_t start = buffer_.find('$');
    if (start == std::string::npos) {
      buffer_.clear();
    } else {
      buffer_.erase(0, start);
      const size_t hash = buffer_.find('#');
      if (hash != std::string::npos && buffer_.size() >= hash + 3) {
        const std::string raw = buffer_.substr(1, hash - 1);
        const std::string sum_text = buffer_.substr(hash + 1, 2);
        buffer_.erase(0, hash + 3);
        uint8_t sum = 0;
        for (char c : raw) sum += static_cast<uint8_t>(c);
        uint32_t given;
        if (!absl::SimpleHexAtoi(sum_text, &given) || given != sum) {
          if (ack_mode_) (void)send(fd_, "-", 1, MSG_NOSIGNAL);
          return absl::DataLossError(absl::StrFormat(
              "gdb stub: reply to %s has a bad checksum (\"%s\", checksum %s, computed %02x)",
              context, Printable(raw), absl::CHexEscape(sum_text), sum));
        }
        if (ack_mode_) (void)send(fd_, "+", 1, MSG_NOSIGNAL);
        absl::StatusOr<std::string> data = DecodePacketData(raw);
        if (!data.ok()) return AnnotateStatus(data.status(), absl::StrCat("gdb stub: reply to ", context));
        return data;
      }
    }
    VMI_RETURN_IF_ERROR(Fill(deadline, context));
  }
}

absl::StatusOr<std::string> GdbRemote::Request(absl::string_view packet) {
  VMI_RETURN_IF_ERROR(SendPacket(packet));
  const std::string context = absl::StrFormat("\"%s\"", Printable(packet));
  return ReadPacket(absl::Now() + timeout_, context);
}

absl::Status GdbRemote::SendNoReply(absl::string_view packet) { return SendPacket(packet); }

absl::StatusOr<std::string> GdbRemote::NextStop(absl::Time deadline) {
  return ReadPacket(deadline, "a stop reply");
}

absl::Status GdbRemote::Interrupt() {
  if (fd_ < 0) return absl::FailedPreconditionError("gdb stub: not connected");
  if (send(fd_, "\x03", 1, MSG_NOSIGNAL) != 1) {
    if (errno == EPIPE || errno == ECONNRESET) {
      Close();
      return absl::UnavailableError("gdb stub: connection closed while interrupting (QEMU exited?)");
    }
    return ErrnoError("gdb stub: sending the interrupt", errno);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> GdbRemote::Handshake() {
  VMI_ASSIGN_OR_RETURN(std::string supported,
                       Request("qSupported:multiprocess+;swbreak+;hwbreak+;vContSupported+"));
  if (absl::StrContains(supported, "QStartNoAckMode+")) {
    VMI_ASSIGN_OR_RETURN(std::string ok, Request("QStartNoAckMode"));
    if (ok == "OK") ack_mode_ = false;
  }
  return supported;
}

absl::StatusOr<std::string> GdbRemote::ReadXfer(absl::string_view object, absl::string_view annex) {
  std::string out;
  for (int chunks = 0; chunks < 1024; ++chunks) {
    VMI_ASSIGN_OR_RETURN(std::string reply, Request(absl::StrFormat("qXfer:%s:read:%s:%x,%x", object,
                                                                    annex, out.size(), 0x800)));
    if (reply.empty() || (reply[0] != 'm' && reply[0] != 'l')) {
      return absl::DataLossError(absl::StrFormat("gdb stub: qXfer:%s:read:%s answered \"%s\"", object,
                                                 annex, Printable(reply)));
    }
    out.append(reply, 1, std::string::npos);
    if (reply[0] == 'l') return out;
  }
  return absl::DataLossError(absl::StrFormat("gdb stub: qXfer:%s:read:%s never ends", object, annex));
}

}  // namespace vmi::qemu_internal
