#include "os/linux/vmcoreinfo.h"

#include <string>
#include <vector>

#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmi::os_linux {
namespace {

using ::testing::HasSubstr;

// An excerpt of a real block (Debian 6.1, 4-level, KASLR on).
constexpr char kBlock[] =
    "OSRELEASE=6.1.0-57-amd64\n"
    "BUILD-ID=6a2b4ac77585b8cf102cba771300e573c8489b69\n"
    "PAGESIZE=4096\n"
    "SYMBOL(init_uts_ns)=ffffffff8dffb000\n"
    "OFFSET(uts_namespace.name)=0\n"
    "SYMBOL(swapper_pg_dir)=ffffffff8de10000\n"
    "SIZE(list_head)=16\n"
    "LENGTH(zone.free_area)=11\n"
    "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129\n"
    "SYMBOL(kallsyms_names)=ffffffff8d5bdac0\n"
    "NUMBER(phys_base)=-56623104\n"
    "SYMBOL(init_top_pgt)=ffffffff8de10000\n"
    "NUMBER(pgtable_l5_enabled)=0\n"
    "KERNELOFFSET=b400000\n";

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

TEST(VmcoreinfoTest, ParsesTheFactsOfARealBlock) {
  absl::StatusOr<VmcoreInfo> info = ParseVmcoreinfo(Bytes(kBlock));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->osrelease, "6.1.0-57-amd64");
  EXPECT_EQ(info->build_id, "6a2b4ac77585b8cf102cba771300e573c8489b69");
  EXPECT_EQ(info->page_size, 4096u);
  EXPECT_EQ(info->kernel_offset, 0xb400000u);
  EXPECT_EQ(info->phys_base, -56623104);
  EXPECT_EQ(info->top_pgt, 0xffffffff8de10000u);
  EXPECT_FALSE(info->five_level);
  EXPECT_EQ(info->Symbol("kallsyms_names"), 0xffffffff8d5bdac0u);
  EXPECT_EQ(info->Symbol("nonexistent"), std::nullopt);
  EXPECT_EQ(info->Offset("uts_namespace.name"), 0u);
  EXPECT_EQ(info->Size("list_head"), 16u);
  EXPECT_EQ(info->Length("zone.free_area"), 11u);
  EXPECT_EQ(info->Number("PAGE_BUDDY_MAPCOUNT_VALUE"), -129);
  EXPECT_EQ(info->entries.size(), 14u);
  // Image address -> physical: va - 0xffffffff80000000 + phys_base.
  EXPECT_EQ(info->KernelImagePa(0xffffffff8de10000u), 0xde10000u - 56623104u);
}

TEST(VmcoreinfoTest, StopsAtTheFirstNul) {
  std::string page(kBlock);
  page.append(4096 - page.size(), '\0');
  page.replace(page.size() - 10, 5, "junk!");
  absl::StatusOr<VmcoreInfo> info = ParseVmcoreinfo(Bytes(page));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->entries.size(), 14u);
}

TEST(VmcoreinfoTest, FiveLevel) {
  const std::string block =
      absl::StrReplaceAll(kBlock, {{"pgtable_l5_enabled)=0", "pgtable_l5_enabled)=1"}});
  absl::StatusOr<VmcoreInfo> info = ParseVmcoreinfo(Bytes(block));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->five_level);
}

TEST(VmcoreinfoTest, SwapperPgDirStandsInForInitTopPgt) {
  const std::string block = absl::StrReplaceAll(
      kBlock, {{"SYMBOL(init_top_pgt)=ffffffff8de10000\n", ""}});
  absl::StatusOr<VmcoreInfo> info = ParseVmcoreinfo(Bytes(block));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->top_pgt, 0xffffffff8de10000u);
}

struct BadCase {
  const char* name;
  std::string block;
  const char* error;
};

TEST(VmcoreinfoTest, RejectsBadBlocksNamingTheDefect) {
  const std::string good(kBlock);
  const std::vector<BadCase> cases = {
      {"format string copy", "OSRELEASE=%s\nPAGESIZE=%ld\n", "format string"},
      {"torn", good.substr(0, good.size() - 4), "torn block"},
      {"empty", "", "empty block"},
      {"not key=value", "OSRELEASE=6.1\nGARBAGE\n", "line 2"},
      {"bad key", "OSRELEASE=6.1\nSYM BOL=1\n", "key"},
      {"control byte", "OSRELEASE=6.1\x01\n", "non-printable"},
      {"no OSRELEASE", absl::StrReplaceAll(good, {{"OSRELEASE=", "OSRELEASX="}}), "OSRELEASE"},
      {"no KERNELOFFSET", absl::StrReplaceAll(good, {{"KERNELOFFSET=b400000\n", ""}}),
       "KERNELOFFSET"},
      {"bad KERNELOFFSET", absl::StrReplaceAll(good, {{"KERNELOFFSET=b400000", "KERNELOFFSET=xyz"}}),
       "KERNELOFFSET"},
      {"no phys_base", absl::StrReplaceAll(good, {{"NUMBER(phys_base)=-56623104\n", ""}}),
       "phys_base"},
      {"page size", absl::StrReplaceAll(good, {{"PAGESIZE=4096", "PAGESIZE=65536"}}), "PAGESIZE=65536"},
      {"no root", absl::StrReplaceAll(good, {{"SYMBOL(init_top_pgt)=ffffffff8de10000\n", ""},
                                             {"SYMBOL(swapper_pg_dir)=ffffffff8de10000\n", ""}}),
       "init_top_pgt"},
      {"root outside the image",
       absl::StrReplaceAll(good, {{"init_top_pgt)=ffffffff8de10000", "init_top_pgt)=ffff888000001000"}}),
       "kernel image mapping"},
      {"unaligned root",
       absl::StrReplaceAll(good, {{"init_top_pgt)=ffffffff8de10000", "init_top_pgt)=ffffffff8de10008"}}),
       "page-aligned"},
      {"conflicting duplicate", good + "KERNELOFFSET=c000000\n", "twice"},
      {"l5 flag", absl::StrReplaceAll(good, {{"l5_enabled)=0", "l5_enabled)=2"}}), "neither 0 nor 1"},
      {"unterminated page", "OSRELEASE=6.1\n" + std::string(5000, 'A'), "no terminator"},
  };
  for (const BadCase& c : cases) {
    absl::StatusOr<VmcoreInfo> info = ParseVmcoreinfo(Bytes(c.block));
    ASSERT_FALSE(info.ok()) << c.name;
    EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(std::string(info.status().message()), HasSubstr(c.error)) << c.name;
  }
}

TEST(VmcoreinfoTest, ADuplicateWithTheSameValueIsHarmless) {
  absl::StatusOr<VmcoreInfo> info = ParseVmcoreinfo(Bytes(std::string(kBlock) + "PAGESIZE=4096\n"));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->entries.size(), 14u);
}

}  // namespace
}  // namespace vmi::os_linux
