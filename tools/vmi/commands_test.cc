// The subcommands against an in-memory x86-64 guest (no registers: the root
// is explicit), checking text, JSON and error paths.

#include "tools/vmi/commands.h"

#include <sstream>

#include "arch/amd64/testing/page_store.h"
#include "arch/amd64/testing/store_driver.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmi::cli {
namespace {

using amd64::testing::MemoryPageStore;
using amd64::testing::PageTableBuilder;
using amd64::testing::StoreDriver;
using ::testing::HasSubstr;

class CommandsTest : public ::testing::Test {
 protected:
  CommandsTest()
      : store_(Gfn(0xfff)), builder_(store_, amd64::PagingMode::FourLevel()),
        core_(StoreDriver(&store_)) {
    EXPECT_TRUE(builder_.Map(Va(0xffff800000001000), Pa(0x5000), 4096, 0x3).ok());
    std::memcpy(store_.MutablePage(Gfn(5)), "kernel\0", 7);
  }
  Io MakeIo(bool json) { return Io{out_, err_, json}; }
  AddressSpace Root() { return AddressSpace{builder_.root().value(), 0}; }

  MemoryPageStore store_;
  PageTableBuilder builder_;
  VmiCore<StoreDriver> core_;
  std::ostringstream out_, err_;
};

TEST_F(CommandsTest, InfoText) {
  EXPECT_EQ(CmdInfo(core_, "store", MakeIo(false)), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("max_gfn    0xfff"));
}

TEST_F(CommandsTest, TranslateShowsEveryLevelOrTheFault) {
  EXPECT_EQ(CmdTranslate(core_, 0xffff800000001234, Root(), MakeIo(false)), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("PML4"));
  EXPECT_THAT(out_.str(), HasSubstr("=> pa 0x5234 (4K page, rw kernel exec)"));
  out_.str("");
  EXPECT_EQ(CmdTranslate(core_, 0xffff800000002000, Root(), MakeIo(true)), kExitFailed);
  nlohmann::json j = nlohmann::json::parse(out_.str());
  EXPECT_TRUE(j["translation_fault"].get<bool>());
  EXPECT_EQ(j["levels"].size(), 4u);
  EXPECT_THAT(j["error"].get<std::string>(), HasSubstr("PT entry not present"));
}

TEST_F(CommandsTest, ReadAsHexStringAndIntegers) {
  EXPECT_EQ(CmdRead(core_, 0xffff800000001000, 16, false, Root(), ReadAs::kHex, MakeIo(false)),
            kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("ffff800000001000: 6b65 726e 656c 0000"));
  out_.str("");
  EXPECT_EQ(CmdRead(core_, 0x5000, 64, true, Root(), ReadAs::kString, MakeIo(true)), kExitOk);
  EXPECT_EQ(nlohmann::json::parse(out_.str())["string"], "kernel");
  out_.str("");
  EXPECT_EQ(CmdRead(core_, 0x5000, 2, true, Root(), ReadAs::kU16, MakeIo(true)), kExitOk);
  EXPECT_EQ(nlohmann::json::parse(out_.str())["values"][1], "0x6e72");
}

TEST_F(CommandsTest, ErrorsAreOneLineWithACode) {
  EXPECT_EQ(CmdRead(core_, 0xffff800000002000, 8, false, Root(), ReadAs::kHex, MakeIo(false)),
            kExitFailed);
  EXPECT_THAT(err_.str(), HasSubstr("vmi: read 0xffff800000002000: translation fault"));
  const std::string first = err_.str();
  EXPECT_EQ(std::count(first.begin(), first.end(), '\n'), 1);
  err_.str("");
  EXPECT_EQ(CmdRead(core_, 0x1000, 8, false, AddressSpace{}, ReadAs::kHex, MakeIo(false)),
            kExitFailed);
  EXPECT_THAT(err_.str(), HasSubstr("give the page-table root with --root CR3"));
  err_.str("");
  EXPECT_EQ(CmdRegs(core_, 0, MakeIo(false)), kExitUnsupported);
  EXPECT_EQ(CmdRead(core_, 0x1000000000, 8, true, Root(), ReadAs::kHex, MakeIo(false)), kExitFailed);
  EXPECT_THAT(err_.str(), HasSubstr("beyond max_gfn"));
}

}  // namespace
}  // namespace vmi::cli

namespace vmi::cli {
namespace {

TEST(PagingOptionTest, ParsesTheFourModesAndRejectsOthers) {
  EXPECT_EQ(ParsePagingMode("4").value(), amd64::PagingMode::FourLevel());
  EXPECT_EQ(ParsePagingMode("5").value(), amd64::PagingMode::FiveLevel());
  EXPECT_EQ(ParsePagingMode("pae").value(), amd64::PagingMode::Pae());
  EXPECT_EQ(ParsePagingMode("32").value(), amd64::PagingMode::Legacy32());
  EXPECT_EQ(ParsePagingMode("6").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PagingOptionTest, AFiveLevelRawGuestNeedsAndHonoursPaging5) {
  MemoryPageStore store(Gfn(0xfff));
  PageTableBuilder builder(store, amd64::PagingMode::FiveLevel());
  ASSERT_TRUE(builder.Map(Va(0xff11000000001000), Pa(0x7000), 4096, 0x3).ok());
  VmiCore<StoreDriver> core{StoreDriver(&store)};
  std::ostringstream out, err;
  Io io{out, err, false};
  AddressSpace space{builder.root().value(), 0, std::nullopt};
  // Walked as 4-level (the default) the address does not translate.
  EXPECT_EQ(CmdTranslate(core, 0xff11000000001234, space, io), kExitFailed);
  out.str("");
  space.paging = amd64::PagingMode::FiveLevel();
  EXPECT_EQ(CmdTranslate(core, 0xff11000000001234, space, io), kExitOk);
  EXPECT_THAT(out.str(), HasSubstr("PML5"));
  EXPECT_THAT(out.str(), HasSubstr("=> pa 0x7234"));
}

}  // namespace
}  // namespace vmi::cli
