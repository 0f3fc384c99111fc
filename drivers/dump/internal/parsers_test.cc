// The parsers against the crafted corpus (testdata/, written by
// make_corpus): each hostile case is rejected with an error naming what is
// wrong and where, or served up to the damage with a warning.

#include "drivers/dump/internal/parsers.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmi::dump_internal {
namespace {

using ::testing::HasSubstr;

std::vector<uint8_t> ReadCorpus(const std::string& name) {
  std::ifstream in("drivers/dump/testdata/" + name, std::ios::binary);
  EXPECT_TRUE(in.good()) << name;
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
}

struct Case {
  const char* file;
  dump::DumpFormat detected;
  // Empty: parses; else a substring of the error.
  const char* error;
  // For a file that parses: a substring of some warning ("" = no warning),
  // and the number of pages served.
  const char* warning;
  uint64_t pages;
};

std::string Warnings(const DumpLayout& layout) {
  std::string all;
  for (const std::string& w : layout.warnings) all += w + "\n";
  return all;
}

class CorpusTest : public ::testing::TestWithParam<Case> {};

TEST_P(CorpusTest, ParsesOrRejectsAsExpected) {
  const Case& c = GetParam();
  const std::vector<uint8_t> bytes = ReadCorpus(c.file);
  ASSERT_FALSE(bytes.empty());
  EXPECT_EQ(DetectFormat(bytes), c.detected) << c.file;
  const absl::StatusOr<DumpLayout> layout = Parse(bytes, dump::DumpFormat::kAuto);
  if (c.error[0] != '\0') {
    ASSERT_FALSE(layout.ok()) << c.file << " parsed; warnings: " << Warnings(*layout);
    EXPECT_THAT(std::string(layout.status().message()), HasSubstr(c.error)) << c.file;
    return;
  }
  ASSERT_TRUE(layout.ok()) << c.file << ": " << layout.status();
  CheckLayoutOrDie(*layout, bytes);
  EXPECT_EQ(layout->page_count, c.pages) << c.file;
  if (c.warning[0] == '\0') {
    EXPECT_TRUE(layout->warnings.empty()) << c.file << ": " << Warnings(*layout);
  } else {
    EXPECT_THAT(Warnings(*layout), HasSubstr(c.warning)) << c.file;
  }
}

Case Parsed(const char* file, dump::DumpFormat detected, const char* warning, uint64_t pages) {
  return Case{file, detected, "", warning, pages};
}
Case Rejected(const char* file, dump::DumpFormat detected, const char* error) {
  return Case{file, detected, error, "", 0};
}

using F = dump::DumpFormat;
constexpr F kRaw = F::kRaw, kLime = F::kLime, kElf = F::kElfCore, kXen = F::kXenCore;

const Case kCases[] = {
    Parsed("raw_valid.bin", kRaw, "", 4),
    Parsed("raw_partial_tail.bin", kRaw, "trailing partial page of 100 bytes", 4),
    Rejected("raw_too_small.bin", kRaw, "smaller than one 4 KiB page"),
    Parsed("lime_valid.lime", kLime, "", 3),
    Parsed("lime_truncated_data.lime", kLime, "range 1 at offset 0x1020: data", 1),
    Rejected("lime_truncated_header.lime", kLime, "truncated LiME header at offset 0"),
    Rejected("lime_header_only.lime", kLime, "no complete 4 KiB page"),
    Parsed("lime_bad_magic.lime", kRaw, "trailing partial page of 64 bytes",
           3),  // no magic: it is a raw image
    Parsed("lime_bad_second_magic.lime", kLime, "range 1: wrong magic 0x12345678", 1),
    Rejected("lime_bad_version.lime", kLime, "unsupported LiME version 7"),
    Rejected("lime_end_before_start.lime", kLime,
             "range 1 at offset 0x1020: end 0x0 is below start 0x2000"),
    Rejected("lime_huge_end.lime", kLime, "beyond the 52-bit physical address space"),
    Rejected("lime_overlap.lime", kLime, "LiME range 0 and LiME range 1 overlap at gfn 0x0"),
    Parsed("lime_trailing_garbage.lime", kLime, "10 trailing bytes", 3),
    Parsed("elf_valid.elf", kElf, "", 3),
    Rejected("elf_truncated_header.elf", kElf, "truncated ELF header"),
    Rejected("elf_truncated_phdrs.elf", kElf, "program header table at offset 0x40"),
    Parsed("elf_segment_beyond_eof.elf", kElf, "PT_LOAD segment 2: data", 1),
    Parsed("elf_bad_magic.elf", kRaw, "", 4),  // no ELF magic: raw
    Rejected("elf_class32.elf", kElf, "unsupported ELF class 1"),
    Rejected("elf_big_endian.elf", kElf, "only little-endian"),
    Rejected("elf_not_core.elf", kElf, "is not ET_CORE"),
    Rejected("elf_wrong_machine.elf", kElf, "ELF machine 183"),
    Rejected("elf_huge_phnum.elf", kElf, "(60000 entries of 56 bytes) extends beyond end"),
    Rejected("elf_zero_phnum.elf", kElf, "no program headers"),
    Rejected("elf_small_phentsize.elf", kElf, "e_phentsize 8"),
    Rejected("elf_phoff_overflow.elf", kElf, "program header table at offset 0xfffffffffffffff7"),
    Rejected("elf_overlap.elf", kElf, "PT_LOAD segment 1 and PT_LOAD segment 2 overlap"),
    Rejected("elf_offset_overflow.elf", kElf, "PT_LOAD segment 1 (header at offset 0x78)"),
    Rejected("elf_paddr_overflow.elf", kElf, "beyond the 52-bit physical address space"),
    Rejected("elf_filesz_gt_memsz.elf", kElf, "p_filesz 0x2000 exceeds p_memsz 0x1000"),
    Parsed("elf_filesz_lt_memsz.elf", kElf, "", 3),
    Parsed("elf_unaligned_paddr.elf", kElf, "", 2),
    Parsed("elf_note_huge_descsz.elf", kElf, "runs past the end of its region", 3),
    Parsed("elf_note_huge_namesz.elf", kElf, "runs past the end of its region", 3),
    Parsed("elf_note_segment_beyond_eof.elf", kElf, "extend beyond end of file", 3),
    Parsed("elf_note_offset_beyond_eof.elf", kElf, "extend beyond end of file", 3),
    Parsed("elf_qemu_note_bad_version.elf", kElf, "version 9 not understood", 3),
    Parsed("elf_xnum.elf", kElf, "", 3),
    Rejected("elf_xnum_shoff_beyond_eof.elf", kElf, "section header 0 at offset"),
    Rejected("elf_xnum_huge_count.elf", kElf, "(4294967295 entries"),
    Parsed("xen_valid.xen", kXen, "", 3),
    Rejected("xen_truncated.xen", kXen, "section name table (section 1)"),
    Rejected("xen_truncated_pages.xen", kXen, "section name table (section 1)"),
    Rejected("xen_huge_shnum.xen", kXen, "(60000 entries of 64 bytes) extends beyond end"),
    Rejected("xen_shoff_overflow.xen", kXen, "section header table at offset 0xfffffffffffffff7"),
    Rejected("xen_bad_shstrndx.xen", kXen, "section name table index 99"),
    Rejected("xen_strtab_beyond_eof.xen", kXen, "section name table (section 1)"),
    Rejected("xen_bad_name_offset.xen", kXen, "no .xen_pages section"),
    Rejected("xen_bad_magic.xen", kXen, "wrong magic 0x1234 in dump-core header note"),
    Rejected("xen_page_size.xen", kXen, "page size 8192"),
    Parsed("xen_huge_vcpus.xen", kXen, "but .xen_prstatus holds 1 contexts", 3),
    Parsed("xen_huge_pages.xen", kXen, "3 served", 3),
    Rejected("xen_no_header_note.xen", kXen, "no complete dump-core header note"),
    Rejected("xen_note_huge_descsz.xen", kXen, "no complete dump-core header note"),
    Rejected("xen_dup_pfn.xen", kXen, ".xen_pfn entry 0 and .xen_pfn entry 2 overlap at gfn 0x0"),
    Rejected("xen_pfn_huge.xen", kXen, ".xen_pfn entry 1 (offset"),
    Parsed("xen_invalid_pfn.xen", kXen, "", 2),
    Rejected("xen_pages_offset_overflow.xen", kXen,
             "no complete 4 KiB page of guest memory; section .xen_pages (4)"),
    Rejected("xen_pfn_offset_beyond_eof.xen", kXen,
             "no complete 4 KiB page of guest memory; section .xen_pfn (5)"),
    Parsed("xen_prstatus_small_entsize.xen", kXen, "entry size 64", 3),
    Parsed("xen_prstatus_beyond_eof.xen", kXen, "section .xen_prstatus (3)", 3)};

INSTANTIATE_TEST_SUITE_P(Corpus, CorpusTest, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           std::string name = info.param.file;
                           for (char& ch : name) {
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return name;
                         });

TEST(ParsersTest, EveryCorpusFileHasAnExpectation) {
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator("drivers/dump/testdata")) {
    const std::string name = entry.path().filename().string();
    bool found = false;
    for (const Case& c : kCases) found = found || name == c.file;
    EXPECT_TRUE(found) << name << " has no expectation in kCases";
    ++files;
  }
  EXPECT_EQ(files, std::size(kCases));
}

TEST(ParsersTest, ZeroFillServesMemszBeyondFileszAsZeroExtent) {
  const std::vector<uint8_t> bytes = ReadCorpus("elf_filesz_lt_memsz.elf");
  ParseOptions options;
  options.zero_fill_elf_memsz = true;
  const absl::StatusOr<DumpLayout> layout = ParseElfCore(bytes, options);
  ASSERT_TRUE(layout.ok()) << layout.status();
  // Segment 2 holds gfns 2-3 in the file and 4-5 as zeros.
  EXPECT_EQ(layout->page_count, 5u);
  const Extent* e = layout->Find(5);
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(e->zero);
  EXPECT_EQ(layout->Find(6), nullptr);
  // Without the option those frames are missing.
  const absl::StatusOr<DumpLayout> strict = ParseElfCore(bytes);
  ASSERT_TRUE(strict.ok());
  EXPECT_EQ(strict->Find(4), nullptr);
}

TEST(ParsersTest, FindRejectsHolesAndFramesPastTheEnd) {
  const std::vector<uint8_t> bytes = ReadCorpus("lime_valid.lime");
  const absl::StatusOr<DumpLayout> layout = ParseLime(bytes);
  ASSERT_TRUE(layout.ok());
  EXPECT_NE(layout->Find(0), nullptr);
  EXPECT_EQ(layout->Find(1), nullptr);  // the hole
  EXPECT_NE(layout->Find(3), nullptr);
  EXPECT_EQ(layout->Find(4), nullptr);
  EXPECT_EQ(layout->Find(~uint64_t{0}), nullptr);
  EXPECT_EQ(layout->max_gfn, 3u);
}

TEST(ParsersTest, EmptyInputIsRejectedByEveryParser) {
  const absl::Span<const uint8_t> empty;
  EXPECT_FALSE(ParseRaw(empty).ok());
  EXPECT_FALSE(ParseLime(empty).ok());
  EXPECT_FALSE(ParseElfCore(empty).ok());
  EXPECT_FALSE(ParseXenCore(empty).ok());
  EXPECT_EQ(DetectFormat(empty), dump::DumpFormat::kRaw);
}

}  // namespace
}  // namespace vmi::dump_internal
