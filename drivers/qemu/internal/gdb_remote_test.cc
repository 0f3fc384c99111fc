#include "drivers/qemu/internal/gdb_remote.h"

#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmi::qemu_internal {
namespace {

using ::testing::HasSubstr;

TEST(PacketTest, EncodeEscapesAndChecksums) {
  EXPECT_EQ(EncodePacket("g"), "$g#67");
  // '$' ^ 0x20 = 0x04, '}' -> ']', '*' -> 0x0a, '#' -> 0x03.
  const std::string body = "x}\x04y}]z}\x0a}\x03";
  uint8_t sum = 0;
  for (char c : body) sum += static_cast<uint8_t>(c);
  EXPECT_EQ(EncodePacket("x$y}z*#"), absl::StrFormat("$%s#%02x", body, sum));
  EXPECT_EQ(DecodePacketData(body).value(), "x$y}z*#");
}

TEST(PacketTest, DecodeUndoesEscapesAndRunLength) {
  EXPECT_EQ(DecodePacketData("a}\x03" "b").value(), "a#b");
  EXPECT_EQ(DecodePacketData("0* ").value(), "0000");  // '*' + (' ' - 29 = 3) more
  EXPECT_FALSE(DecodePacketData("ab}").ok());
  EXPECT_FALSE(DecodePacketData("*x").ok());
  EXPECT_FALSE(DecodePacketData("a*\x01").ok());
}

TEST(PacketTest, HexRoundTrip) {
  EXPECT_EQ(HexEncode(std::string("\x01\xab", 2)), "01ab");
  EXPECT_EQ(HexDecode("01AB").value(), std::string("\x01\xab", 2));
  EXPECT_FALSE(HexDecode("0").ok());
  EXPECT_FALSE(HexDecode("zz").ok());
}

TEST(StopReplyTest, Kinds) {
  absl::StatusOr<StopReply> r = ParseStopReply("T05thread:p01.02;watch:ffffffff81000000;");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->signal, 5);
  EXPECT_EQ(r->thread, "p01.02");
  EXPECT_EQ(r->watch, StopReply::Watch::kWrite);
  EXPECT_EQ(r->watch_address, 0xffffffff81000000u);
  r = ParseStopReply("T02thread:01;");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->signal, 2);
  EXPECT_EQ(ParseStopReply("W00")->kind, StopReply::Kind::kExited);
  EXPECT_EQ(ParseStopReply("X09")->kind, StopReply::Kind::kTerminated);
  EXPECT_EQ(ParseStopReply("T05awatch:1000;")->watch, StopReply::Watch::kAccess);
  EXPECT_EQ(ParseStopReply("T05rwatch:1000;")->watch, StopReply::Watch::kRead);
  EXPECT_FALSE(ParseStopReply("OK").ok());
  EXPECT_FALSE(ParseStopReply("Tzz").ok());
  EXPECT_FALSE(ParseStopReply("T05watch:zz;").ok());
  EXPECT_FALSE(ParseStopReply("T05watch:11112222333344445;").ok());
}

// A scripted stub at the other end of a socketpair.
class FakeStub {
 public:
  FakeStub() {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    client_ = fds[0];
    server_ = fds[1];
  }
  ~FakeStub() {
    if (thread_.joinable()) thread_.join();
    if (server_ >= 0) close(server_);
  }
  GdbRemote Client(absl::Duration timeout = absl::Milliseconds(500)) {
    return GdbRemote::FromFd(client_, timeout);
  }
  // Closes without reading what the client sent: the client sees a reset
  // (ECONNRESET), as when QEMU exits with a request unread.
  void ResetAfter(absl::Duration delay) {
    thread_ = std::thread([this, delay] {
      absl::SleepFor(delay);
      close(server_);
      server_ = -1;
    });
  }
  // Sends `bytes` raw after the client's first request arrives.
  void ReplyRaw(std::string bytes, bool then_close = false) {
    thread_ = std::thread([this, bytes, then_close] {
      char buffer[4096];
      (void)read(server_, buffer, sizeof(buffer));
      (void)write(server_, bytes.data(), bytes.size());
      if (then_close) {
        close(server_);
        server_ = -1;
      }
    });
  }

 private:
  int client_ = -1, server_ = -1;
  std::thread thread_;
};

TEST(GdbRemoteTest, AReplyIsReadAcknowledgementsAndNoiseSkipped) {
  FakeStub stub;
  GdbRemote gdb = stub.Client();
  stub.ReplyRaw("+junk" + EncodePacket("OK"));
  EXPECT_EQ(gdb.Request("Hgp1.1").value(), "OK");
}

TEST(GdbRemoteTest, ABadChecksumIsDataLoss) {
  FakeStub stub;
  GdbRemote gdb = stub.Client();
  stub.ReplyRaw("$OK#00");
  absl::StatusOr<std::string> r = gdb.Request("g");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("bad checksum"));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("\"g\""));
}

TEST(GdbRemoteTest, ATruncatedReplyThenSilenceIsADeadlineNotAHang) {
  FakeStub stub;
  GdbRemote gdb = stub.Client(absl::Milliseconds(200));
  stub.ReplyRaw("$0011223");
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> r = gdb.Request("g");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST(GdbRemoteTest, AClosedConnectionIsUnavailable) {
  FakeStub stub;
  GdbRemote gdb = stub.Client();
  stub.ReplyRaw("$00", /*then_close=*/true);
  absl::StatusOr<std::string> r = gdb.Request("g");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("connection closed"));
  EXPECT_FALSE(gdb.connected());
  EXPECT_FALSE(gdb.Request("g").ok());
}

TEST(GdbRemoteTest, AResetConnectionIsUnavailableAndClosedToo) {
  FakeStub stub;
  GdbRemote gdb = stub.Client(absl::Seconds(5));
  stub.ResetAfter(absl::Milliseconds(100));
  absl::StatusOr<std::string> r = gdb.Request("g");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("connection closed"));
  EXPECT_FALSE(gdb.connected());
}

TEST(GdbRemoteTest, XferReadsEveryChunk) {
  // Two chunks: 'm' then 'l'.
  std::thread t;
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  GdbRemote client = GdbRemote::FromFd(fds[0], absl::Seconds(2));
  t = std::thread([server = fds[1]] {
    // Reads one request (skipping the client's acknowledgements).
    auto read_request = [server] {
      std::string in;
      char c;
      while (read(server, &c, 1) == 1) {
        in += c;
        const size_t hash = in.find('#');
        if (in.find('$') != std::string::npos && hash != std::string::npos && in.size() >= hash + 3) break;
      }
    };
    read_request();
    const std::string first = EncodePacket("m<target>");
    (void)write(server, first.data(), first.size());
    read_request();
    const std::string second = EncodePacket("l</target>");
    (void)write(server, second.data(), second.size());
    close(server);
  });
  absl::StatusOr<std::string> x = client.ReadXfer("features", "target.xml");
  t.join();
  ASSERT_TRUE(x.ok()) << x.status();
  EXPECT_EQ(*x, "<target></target>");
}

TEST(GdbRemoteTest, ConnectingToNothingNamesTheSocket) {
  absl::StatusOr<GdbRemote> gdb = GdbRemote::ConnectUnix("/nonexistent/gdb.sock");
  ASSERT_FALSE(gdb.ok());
  EXPECT_THAT(std::string(gdb.status().message()), HasSubstr("/nonexistent/gdb.sock"));
}

}  // namespace
}  // namespace vmi::qemu_internal
