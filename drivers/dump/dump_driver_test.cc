#include "drivers/dump/dump_driver.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "arch/amd64/amd64.h"
#include "arch/amd64/testing/page_store.h"
#include "core/vmi_core.h"
#include "drivers/dump/dump_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmi::dump {
namespace {

using ::testing::HasSubstr;

static_assert(VmiRead<DumpDriver>);
static_assert(VmiQueryRegisters<DumpDriver>);
static_assert(!VmiWrite<DumpDriver>);
static_assert(!VmiFullDriver<DumpDriver>);
static_assert(!std::is_copy_constructible_v<DumpDriver>);
static_assert(std::is_move_constructible_v<DumpDriver>);

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return absl::StrCat(dir ? dir : "/tmp", "/", name);
}

uint8_t PatternByte(Gfn gfn, size_t i) { return static_cast<uint8_t>(gfn.value() * 7 + i * 13); }

amd64::Registers VcpuRegisters(int v) {
  amd64::Registers r;
  r.rax = 0x1111 + v;
  r.rbx = 0x2222 + v;
  r.rsp = 0xffffc90000001000 + v;
  r.r15 = 0xf15 + v;
  r.rip = 0xffffffff81000000 + v;
  r.rflags = 0x246;
  r.cr0 = 0x80050033;
  r.cr3 = 0x1aa000 + 0x1000 * v;
  r.cr4 = 0x3506f0;
  r.cs = {0x10, 0, 0xffffffff, 0xa09b};
  r.ss = {0x18, 0, 0xffffffff, 0xc093};
  r.gs = {0, 0xffff888000000000 + v, 0xffffffff, 0xc093};
  r.gdtr = {0xfffffe0000001000, 0x7f};
  return r;
}

// Frames 0, 2-3 and 0x100-0x102; two vCPUs.
DumpSource PatternSource() {
  DumpSource source;
  source.ranges = {{Gfn(0), 1}, {Gfn(2), 2}, {Gfn(0x100), 3}};
  source.read_page = [](Gfn gfn, absl::Span<uint8_t> out) {
    for (size_t i = 0; i < out.size(); ++i) out[i] = PatternByte(gfn, i);
    return absl::OkStatus();
  };
  source.vcpus = {VcpuRegisters(0), VcpuRegisters(1)};
  return source;
}

class RoundTripTest : public ::testing::TestWithParam<DumpFormat> {};

TEST_P(RoundTripTest, PagesHolesAndRegistersSurviveWriteAndOpen) {
  const DumpFormat format = GetParam();
  const std::string path = TempPath("roundtrip." + DumpFormatName(format));
  ASSERT_TRUE(WriteDump(path, format, PatternSource()).ok());
  absl::StatusOr<DumpDriver> driver = DumpDriver::Open(path);
  ASSERT_TRUE(driver.ok()) << driver.status();
  EXPECT_EQ(driver->format(), format);  // detected from the content
  EXPECT_TRUE(driver->warnings().empty());

  const VmiInfo info = *driver->Info();
  EXPECT_EQ(info.page_size, 4096u);
  EXPECT_EQ(info.max_gfn, Gfn(0x102));
  const bool has_cpu = format == DumpFormat::kElfCore || format == DumpFormat::kXenCore;
  EXPECT_EQ(info.vcpus, has_cpu ? 2 : 0);

  for (const GfnRange& r : PatternSource().ranges) {
    for (uint64_t i = 0; i < r.count; ++i) {
      const Gfn gfn = r.first + i;
      absl::StatusOr<MappedPage> page = driver->ReadPage(gfn);
      ASSERT_TRUE(page.ok()) << gfn << ": " << page.status();
      EXPECT_TRUE(page->is_live());
      ASSERT_EQ(page->size(), 4096u);
      for (size_t b = 0; b < 4096; b += 511) ASSERT_EQ(page->data()[b], PatternByte(gfn, b));
    }
  }
  if (format == DumpFormat::kRaw) {
    // A raw image has no holes: unwritten frames are zeros.
    EXPECT_EQ(driver->ReadPage(Gfn(1))->data()[100], 0);
    EXPECT_EQ(driver->page_count(), 0x103u);
  } else {
    const absl::StatusOr<MappedPage> hole = driver->ReadPage(Gfn(1));
    EXPECT_TRUE(absl::IsNotFound(hole.status()));
    EXPECT_THAT(std::string(hole.status().message()),
                HasSubstr("read_page(gfn=0x1): not present in dump " + path));
    EXPECT_TRUE(absl::IsNotFound(driver->ReadPage(Gfn(0x50)).status()));
    EXPECT_EQ(driver->page_count(), 6u);
    EXPECT_EQ(driver->PresentRanges(),
              (std::vector<GfnRange>{{Gfn(0), 1}, {Gfn(2), 2}, {Gfn(0x100), 3}}));
  }
  const absl::StatusOr<MappedPage> beyond = driver->ReadPage(Gfn(0x103));
  EXPECT_TRUE(absl::IsNotFound(beyond.status()));
  EXPECT_THAT(std::string(beyond.status().message()), HasSubstr("not present in dump"));
  EXPECT_TRUE(absl::IsNotFound(driver->ReadPage(Gfn(~uint64_t{0})).status()));

  if (!has_cpu) {
    const absl::StatusOr<amd64::Registers> regs = driver->Registers(VcpuId(0));
    EXPECT_TRUE(absl::IsOutOfRange(regs.status()));
    EXPECT_THAT(std::string(regs.status().message()), HasSubstr("carries no CPU state"));
    return;
  }
  for (int v = 0; v < 2; ++v) {
    const absl::StatusOr<amd64::Registers> regs = driver->Registers(VcpuId(v));
    ASSERT_TRUE(regs.ok()) << regs.status();
    const amd64::Registers want = VcpuRegisters(v);
    EXPECT_EQ(regs->gp(), want.gp()) << "vcpu " << v;
    EXPECT_EQ(regs->cr0, want.cr0);
    EXPECT_EQ(regs->cr3, want.cr3);
    EXPECT_EQ(regs->cr4, want.cr4);
    EXPECT_EQ(regs->cs.selector, want.cs.selector);
    EXPECT_EQ(regs->gs.base, want.gs.base);
    // Long mode is inferred, so VmiCore picks 4-level paging.
    EXPECT_EQ(Amd64::PagingModeOf(*regs), amd64::PagingMode::FourLevel(true));
    if (format == DumpFormat::kElfCore) {
      EXPECT_EQ(regs->cs, want.cs);  // QEMU notes carry descriptors
      EXPECT_EQ(regs->gdtr, want.gdtr);
    }
  }
  EXPECT_TRUE(absl::IsOutOfRange(driver->Registers(VcpuId(2)).status()));
}

INSTANTIATE_TEST_SUITE_P(Formats, RoundTripTest,
                         ::testing::Values(DumpFormat::kRaw, DumpFormat::kLime,
                                           DumpFormat::kElfCore, DumpFormat::kXenCore),
                         [](const auto& info) { return DumpFormatName(info.param); });

TEST(DumpDriverTest, DetectionIgnoresTheFileName) {
  const std::string xen = TempPath("misleading.raw");
  ASSERT_TRUE(WriteXenCoreDump(xen, PatternSource()).ok());
  EXPECT_EQ(DumpDriver::Open(xen)->format(), DumpFormat::kXenCore);
  const std::string lime = TempPath("misleading.elf");
  ASSERT_TRUE(WriteLimeDump(lime, PatternSource()).ok());
  EXPECT_EQ(DumpDriver::Open(lime)->format(), DumpFormat::kLime);
}

TEST(DumpDriverTest, OverrideReadsAnElfFileAsARawImage) {
  const std::string path = TempPath("override.elf");
  ASSERT_TRUE(WriteElfCoreDump(path, PatternSource()).ok());
  OpenOptions options;
  options.format = DumpFormat::kRaw;
  absl::StatusOr<DumpDriver> driver = DumpDriver::Open(path, options);
  ASSERT_TRUE(driver.ok()) << driver.status();
  EXPECT_EQ(driver->format(), DumpFormat::kRaw);
  EXPECT_EQ(std::memcmp(driver->ReadPage(Gfn(0))->data(),
                        "\x7f"
                        "ELF",
                        4),
            0);
}

TEST(DumpDriverTest, OverrideWithTheWrongFormatFailsWithTheParsersReason) {
  const std::string path = TempPath("override.lime");
  ASSERT_TRUE(WriteLimeDump(path, PatternSource()).ok());
  OpenOptions options;
  options.format = DumpFormat::kElfCore;
  const absl::StatusOr<DumpDriver> driver = DumpDriver::Open(path, options);
  ASSERT_FALSE(driver.ok());
  EXPECT_THAT(std::string(driver.status().message()),
              HasSubstr("open(" + path + "): elf dump: wrong magic at offset 0"));
}

TEST(DumpDriverTest, SuppliedRegistersGiveARawDumpCpuState) {
  const std::string path = TempPath("supplied.raw");
  ASSERT_TRUE(WriteRawDump(path, PatternSource()).ok());
  absl::StatusOr<DumpDriver> driver = DumpDriver::Open(path, OpenOptions::WithCr3(0x5000));
  ASSERT_TRUE(driver.ok());
  EXPECT_EQ(driver->Info()->vcpus, 1);
  EXPECT_EQ(driver->Registers(VcpuId(0))->cr3, 0x5000u);
  EXPECT_EQ(Amd64::PagingModeOf(*driver->Registers(VcpuId(0))), amd64::PagingMode::FourLevel());
}

TEST(DumpDriverTest, SuppliedRegistersReplaceTheDumps) {
  const std::string path = TempPath("replace.elf");
  ASSERT_TRUE(WriteElfCoreDump(path, PatternSource()).ok());
  absl::StatusOr<DumpDriver> driver = DumpDriver::Open(path, OpenOptions::WithCr3(0x7000));
  ASSERT_TRUE(driver.ok());
  EXPECT_EQ(driver->Info()->vcpus, 1);
  EXPECT_EQ(driver->Registers(VcpuId(0))->cr3, 0x7000u);
}

TEST(DumpDriverTest, PagesOutliveTheDriverAndSurviveAMove) {
  const std::string path = TempPath("lifetime.lime");
  ASSERT_TRUE(WriteLimeDump(path, PatternSource()).ok());
  MappedPage page;
  {
    absl::StatusOr<DumpDriver> opened = DumpDriver::Open(path);
    ASSERT_TRUE(opened.ok());
    DumpDriver driver = *std::move(opened);
    DumpDriver moved = std::move(driver);
    page = *moved.ReadPage(Gfn(0x101));
  }
  // The mapping is still alive: the page handle owns a share of it.
  EXPECT_EQ(page.data()[4095], PatternByte(Gfn(0x101), 4095));
}

TEST(DumpDriverTest, UnopenableFilesSayWhy) {
  const absl::StatusOr<DumpDriver> missing = DumpDriver::Open(TempPath("does-not-exist"));
  EXPECT_TRUE(absl::IsNotFound(missing.status()));
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("open("));

  const std::string empty = TempPath("empty.bin");
  std::ofstream(empty).close();
  EXPECT_THAT(std::string(DumpDriver::Open(empty).status().message()), HasSubstr("file is empty"));

  EXPECT_THAT(std::string(DumpDriver::Open(::testing::TempDir()).status().message()),
              HasSubstr("not a regular file"));
}

TEST(DumpDriverTest, HostileCorpusFilesAreRejectedOrServedUpToTheDamage) {
  const std::string dir = "drivers/dump/testdata/";
  const absl::StatusOr<DumpDriver> overlap = DumpDriver::Open(dir + "elf_overlap.elf");
  ASSERT_FALSE(overlap.ok());
  EXPECT_THAT(std::string(overlap.status().message()),
              HasSubstr("open(" + dir +
                        "elf_overlap.elf): elf dump: PT_LOAD segment 1 and "
                        "PT_LOAD segment 2 overlap at gfn 0x0"));

  absl::StatusOr<DumpDriver> cut = DumpDriver::Open(dir + "elf_segment_beyond_eof.elf");
  ASSERT_TRUE(cut.ok()) << cut.status();
  ASSERT_EQ(cut->warnings().size(), 1u);
  EXPECT_THAT(cut->warnings()[0], HasSubstr("extends beyond end of file"));
  EXPECT_TRUE(cut->ReadPage(Gfn(0)).ok());
  EXPECT_TRUE(absl::IsNotFound(cut->ReadPage(Gfn(2)).status()));  // cut off
  EXPECT_EQ(cut->Info()->max_gfn, Gfn(0));

  const absl::StatusOr<DumpDriver> lime = DumpDriver::Open(dir + "lime_huge_end.lime");
  EXPECT_THAT(std::string(lime.status().message()),
              HasSubstr("range 0 at offset 0x0: end 0xffffffffffffffff"));
}

TEST(DumpDriverTest, ZeroFillOption) {
  const std::string file = "drivers/dump/testdata/elf_filesz_lt_memsz.elf";
  absl::StatusOr<DumpDriver> strict = DumpDriver::Open(file);
  ASSERT_TRUE(strict.ok());
  EXPECT_TRUE(absl::IsNotFound(strict->ReadPage(Gfn(4)).status()));
  OpenOptions options;
  options.zero_fill_elf_memsz = true;
  absl::StatusOr<DumpDriver> filled = DumpDriver::Open(file, options);
  ASSERT_TRUE(filled.ok());
  const absl::StatusOr<MappedPage> zero = filled->ReadPage(Gfn(5));
  ASSERT_TRUE(zero.ok());
  EXPECT_EQ(zero->data()[0] | zero->data()[4095], 0);
  EXPECT_EQ(filled->Info()->max_gfn, Gfn(5));
}

// A guest address space built with PageTableBuilder, dumped, and read back
// virtually through VmiCore<DumpDriver>.
class VirtualReadTest : public ::testing::TestWithParam<DumpFormat> {};

TEST_P(VirtualReadTest, VmiCoreTranslatesThroughPageTablesInTheDump) {
  amd64::testing::MemoryPageStore store(Gfn(0x3ff));
  amd64::testing::PageTableBuilder builder(store, amd64::PagingMode::FourLevel());
  constexpr uint64_t kLeaf = amd64::PageTableEntry::kPresent | amd64::PageTableEntry::kWrite;
  const Va va(0xffff888000123000);
  ASSERT_TRUE(builder.Map(va, Pa(0x300000), 4096, kLeaf).ok());
  ASSERT_TRUE(builder.Map(va + 0x1000, Pa(0x380000), 4096, kLeaf).ok());  // not dumped
  store.Write64(Pa(0x300000 + 0x18), 0x1122334455667788);
  std::memcpy(store.MutablePage(Gfn(0x300)) + 0x100, "hello from the dump", 20);

  DumpSource source;
  source.ranges = {{Gfn(0), 0x40}, {Gfn(0x300), 1}};  // the tables sit in the low frames
  source.read_page = [&store](Gfn gfn, absl::Span<uint8_t> out) {
    const absl::StatusOr<absl::Span<const uint8_t>> page = store.ReadPage(gfn);
    if (!page.ok()) return page.status();
    std::memcpy(out.data(), page->data(), out.size());
    return absl::OkStatus();
  };
  amd64::Registers regs = *DumpDriver::Open("drivers/dump/testdata/elf_valid.elf")
                               ->Registers(VcpuId(0));  // any long-mode state
  regs.cr0 = 0x80050033;
  regs.cr4 = 0x20;
  regs.cr3 = builder.root().value();
  source.vcpus = {regs};
  const std::string path = TempPath("virtual." + DumpFormatName(GetParam()));
  ASSERT_TRUE(WriteDump(path, GetParam(), source).ok());

  OpenOptions options;
  if (GetParam() == DumpFormat::kRaw || GetParam() == DumpFormat::kLime) {
    options = OpenOptions::WithCr3(builder.root().value());
  }
  absl::StatusOr<DumpDriver> driver = DumpDriver::Open(path, options);
  ASSERT_TRUE(driver.ok()) << driver.status();
  VmiCore<DumpDriver> core(*std::move(driver));
  const absl::StatusOr<amd64::Registers> vcpu = core.GetRegisters(VcpuId(0));
  ASSERT_TRUE(vcpu.ok()) << vcpu.status();
  core.SetPagingMode(Amd64::PagingModeOf(*vcpu));
  const Pa root = Amd64::TranslationRoot(*vcpu);
  EXPECT_EQ(root, builder.root());

  EXPECT_EQ(*core.ReadU64(AccessContext::Virtual(va + 0x18, root)), 0x1122334455667788u);
  EXPECT_EQ(*core.ReadString(AccessContext::Virtual(va + 0x100, root)), "hello from the dump");
  EXPECT_EQ(*core.Translate(AddressContext(va + 0x18, root)), Pa(0x300018));
  // Mapped by the guest but absent from the dump (or zeros in a raw image).
  const absl::StatusOr<uint64_t> absent = core.ReadU64(AccessContext::Virtual(va + 0x1000, root));
  if (GetParam() == DumpFormat::kRaw) {
    EXPECT_FALSE(absent.ok());  // 0x380 is past the end of the raw image
  } else {
    EXPECT_TRUE(absl::IsNotFound(absent.status()));
  }
  EXPECT_THAT(std::string(absent.status().message()), HasSubstr("gfn=0x380"));
}

INSTANTIATE_TEST_SUITE_P(Formats, VirtualReadTest,
                         ::testing::Values(DumpFormat::kRaw, DumpFormat::kLime,
                                           DumpFormat::kElfCore, DumpFormat::kXenCore),
                         [](const auto& info) { return DumpFormatName(info.param); });

TEST(DumpWriterTest, RejectsUnorderedRangesAndPropagatesCallbackErrors) {
  DumpSource source = PatternSource();
  source.ranges = {{Gfn(4), 1}, {Gfn(2), 1}};
  EXPECT_TRUE(absl::IsInvalidArgument(WriteLimeDump(TempPath("bad.lime"), source)));
  source = PatternSource();
  source.read_page = [](Gfn gfn, absl::Span<uint8_t>) {
    return gfn.value() == 3 ? absl::DataLossError("boom") : absl::OkStatus();
  };
  const std::string path = TempPath("failing.elf");
  const absl::Status status = WriteElfCoreDump(path, source);
  EXPECT_TRUE(absl::IsDataLoss(status));
  EXPECT_THAT(std::string(status.message()), HasSubstr("read_page(gfn=0x3)"));
  struct stat st;
  EXPECT_NE(stat(path.c_str(), &st), 0);  // no half-written dump left behind
  EXPECT_FALSE(WriteDump(TempPath("x"), DumpFormat::kAuto, PatternSource()).ok());
}

}  // namespace
}  // namespace vmi::dump

namespace vmi::dump {
namespace {

TEST(DumpDriverNotesTest, ElfNotesBesidesCpuStateAreKeptAndFoundByName) {
  DumpSource source = PatternSource();
  const std::string text = "OSRELEASE=6.1.0-test\nPAGESIZE=4096\n";
  source.notes.push_back({"VMCOREINFO", 0, std::vector<uint8_t>(text.begin(), text.end())});
  source.notes.push_back({"EXTRA", 7, {1, 2, 3}});
  const std::string path = TempPath("notes.elf");
  ASSERT_TRUE(WriteElfCoreDump(path, source).ok());
  absl::StatusOr<DumpDriver> driver = DumpDriver::Open(path);
  ASSERT_TRUE(driver.ok()) << driver.status();
  std::optional<absl::Span<const uint8_t>> note = driver->FindNote("VMCOREINFO");
  ASSERT_TRUE(note.has_value());
  EXPECT_EQ(std::string(note->begin(), note->end()), text);
  ASSERT_TRUE(driver->FindNote("EXTRA").has_value());
  EXPECT_EQ(driver->FindNote("EXTRA")->size(), 3u);
  EXPECT_FALSE(driver->FindNote("CORE").has_value());  // CPU state is not a kept note
  EXPECT_FALSE(driver->FindNote("NOPE").has_value());
  EXPECT_EQ(driver->Registers(VcpuId(1))->rax, VcpuRegisters(1).rax);

  // A raw dump has no notes.
  const std::string raw = TempPath("notes.raw");
  ASSERT_TRUE(WriteRawDump(raw, source).ok());
  EXPECT_FALSE(DumpDriver::Open(raw)->FindNote("VMCOREINFO").has_value());
}

TEST(DumpDriverNotesTest, AHostileNumberOrSizeOfNotesIsBounded) {
  DumpSource source = PatternSource();
  for (int i = 0; i < 40; ++i) source.notes.push_back({"MANY", 0, {1}});
  source.notes.push_back({"HUGE", 0, std::vector<uint8_t>(200 * 1024, 0xaa)});
  const std::string path = TempPath("many_notes.elf");
  ASSERT_TRUE(WriteElfCoreDump(path, source).ok());
  absl::StatusOr<DumpDriver> driver = DumpDriver::Open(path);
  ASSERT_TRUE(driver.ok()) << driver.status();
  EXPECT_TRUE(driver->FindNote("MANY").has_value());
  EXPECT_FALSE(driver->FindNote("HUGE").has_value());
  EXPECT_THAT(driver->warnings().back(), HasSubstr("not kept"));
}

}  // namespace
}  // namespace vmi::dump

namespace vmi::dump {
namespace {

TEST(DumpDriverMappedRangesTest, SpansCoverExactlyThePresentFramesZeroCopy) {
  for (DumpFormat format : {DumpFormat::kRaw, DumpFormat::kLime, DumpFormat::kElfCore, DumpFormat::kXenCore}) {
    const std::string path = TempPath("mapped_ranges." + DumpFormatName(format));
    ASSERT_TRUE(WriteDump(path, format, PatternSource()).ok());
    absl::StatusOr<DumpDriver> driver = DumpDriver::Open(path);
    ASSERT_TRUE(driver.ok()) << driver.status();
    uint64_t frames = 0;
    for (const DumpDriver::MappedRange& r : driver->MappedRanges()) {
      ASSERT_EQ(r.bytes.size() % 4096, 0u);
      for (uint64_t i = 0; i < r.bytes.size() / 4096; ++i) {
        const Gfn gfn(r.first.value() + i);
        absl::StatusOr<MappedPage> page = driver->ReadPage(gfn);
        ASSERT_TRUE(page.ok()) << gfn;
        EXPECT_EQ(page->data(), r.bytes.data() + i * 4096) << DumpFormatName(format) << " " << gfn;
        ++frames;
      }
    }
    // Raw dumps also hold the holes' frames (as zeros): at least the present ones.
    EXPECT_GE(frames, 6u) << DumpFormatName(format);
    EXPECT_EQ(frames, driver->page_count()) << DumpFormatName(format);
  }
}

}  // namespace
}  // namespace vmi::dump
