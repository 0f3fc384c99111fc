#include "tools/vmi/format.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmi::cli {
namespace {

TEST(ParseNumberTest, HexDecimalAndErrors) {
  EXPECT_EQ(*ParseNumber("0x1a2"), 0x1a2u);
  EXPECT_EQ(*ParseNumber("0XFFFF888000000000"), 0xffff888000000000u);
  EXPECT_EQ(*ParseNumber("418"), 418u);
  EXPECT_EQ(*ParseNumber("0b101"), 5u);
  EXPECT_EQ(*ParseNumber("0xffff_8880_0000_0000"), 0xffff888000000000u);
  EXPECT_EQ(ParseNumber("12z").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseNumber("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseNumber("0x10000000000000000").status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(ParseNumber("bogus").status().message(), ::testing::HasSubstr("'bogus'"));
}

TEST(HexDumpTest, XxdLayout) {
  const std::string text = "Hello, world!\n\x01\x02\xff";
  const std::string dump = HexDump(0x1000, absl::MakeConstSpan(
                                               reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  EXPECT_EQ(dump,
            "0000000000001000: 4865 6c6c 6f2c 2077 6f72 6c64 210a 0102  Hello, world!...\n"
            "0000000000001010: ff                                       .\n");
}

TEST(RegistersJsonTest, DecodesFlags) {
  amd64::Registers r;
  r.cr0 = 0x80000011;
  r.efer = 0x500;
  r.rip = 0x401000;
  nlohmann::json j = RegistersToJson(r);
  EXPECT_EQ(j["rip"], "0x401000");
  EXPECT_EQ(j["flags"]["cr0"], "PE|ET|PG");
  EXPECT_THAT(j["flags"]["efer"].get<std::string>(), ::testing::HasSubstr("LMA"));
  EXPECT_TRUE(j["segments"].contains("cs"));
}

TEST(HumanBytesTest, Units) {
  EXPECT_EQ(HumanBytes(512), "512 B");
  EXPECT_EQ(HumanBytes(1536), "1.5 KiB");
  EXPECT_EQ(HumanBytes(64.0 * 1048576), "64.0 MiB");
}

}  // namespace
}  // namespace vmi::cli
