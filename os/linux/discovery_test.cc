#include "os/linux/discovery.h"

#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "arch/amd64/amd64.h"
#include "core/vmi_core.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "os/linux/btf_types.h"
#include "os/linux/isf.h"
#include "os/linux/testing/fake_kernel.h"

namespace vmi::os_linux {
namespace {

using ::testing::HasSubstr;
using testing::FakeKernel;
using testing::FakeKernelOptions;

// The fake kernel's memory, with an optional ELF note and absent frames.
class TestDriver {
 public:
  using Architecture = Amd64;

  explicit TestDriver(FakeKernel* kernel) : kernel_(kernel), inner_(kernel->driver()) {}

  absl::StatusOr<VmiInfo> Info() const { return inner_.Info(); }
  absl::StatusOr<MappedPage> ReadPage(Gfn gfn) {
    if (holes_.contains(gfn.value())) {
      return absl::NotFoundError(absl::StrFormat("read_page(gfn=%s): a hole", gfn));
    }
    return inner_.ReadPage(gfn);
  }
  std::optional<absl::Span<const uint8_t>> FindNote(absl::string_view name) const {
    if (name != "VMCOREINFO" || !note_) return std::nullopt;
    return absl::MakeConstSpan(*note_);
  }

  void SetNote(const std::string& text) { note_ = std::vector<uint8_t>(text.begin(), text.end()); }
  void AddHole(uint64_t gfn) { holes_.insert(gfn); }

 private:
  FakeKernel* kernel_;
  amd64::testing::StoreDriver inner_;
  std::optional<std::vector<uint8_t>> note_;
  absl::flat_hash_set<uint64_t> holes_;
};

static_assert(HasNotes<TestDriver>);
static_assert(!HasNotes<amd64::testing::StoreDriver>);

absl::StatusOr<LinuxKernel> Discover(TestDriver driver, ScanStats* stats = nullptr,
                                     DiscoveryOptions options = {}) {
  VmiCore<TestDriver> core(std::move(driver));
  return DiscoverLinux(core, options, stats);
}

void ExpectLayout(const LinuxKernel& k, const FakeKernel& fake) {
  EXPECT_EQ(k.release, fake.options().release);
  EXPECT_EQ(k.build_id, "0123456789abcdef0123456789abcdef01234567");
  EXPECT_EQ(k.kaslr_slide, fake.options().kaslr);
  EXPECT_EQ(k.phys_base, fake.options().phys_base);
  EXPECT_EQ(k.root, Pa(fake.root_pa()));
  EXPECT_EQ(k.root_va, Va(fake.VaOf(fake.root_pa())));
  EXPECT_EQ(k.paging, fake.paging());
}

TEST(DiscoveryTest, FindsTheKernelByScanningPhysicalMemory) {
  for (bool five_level : {false, true}) {
    FakeKernel fake(FakeKernelOptions{.five_level = five_level});
    ScanStats stats;
    absl::StatusOr<LinuxKernel> k = Discover(TestDriver(&fake), &stats);
    ASSERT_TRUE(k.ok()) << k.status();
    ExpectLayout(*k, fake);
    EXPECT_THAT(k->layout_source, HasSubstr("scan of physical memory"));
    EXPECT_THAT(k->layout_source, HasSubstr("0x1800000"));
    // The format-string copy came first and was rejected; the scan stopped
    // at the real block.
    EXPECT_EQ(stats.candidates, 2u);
    EXPECT_EQ(stats.frames_scanned, 0x1800000u / 4096 + 1);

    ASSERT_TRUE(k->symbols_status.ok()) << k->symbols_status;
    ASSERT_EQ(k->symbols.size(), fake.symbols().size());
    for (size_t i = 0; i < fake.symbols().size(); ++i) {
      EXPECT_EQ(k->symbols[i].address, fake.symbols()[i].address) << i;
      EXPECT_EQ(k->symbols[i].name, fake.symbols()[i].name) << i;
      EXPECT_EQ(k->symbols[i].type, fake.symbols()[i].type) << i;
    }
    EXPECT_EQ(k->Symbol("init_task").value(), fake.Symbol("init_task"));
    EXPECT_EQ(k->banner, fake.banner());

    ASSERT_TRUE(k->types_status.ok()) << k->types_status;
    const KernelTypes& types = *k->Types().value();
    EXPECT_EQ(types.OffsetOf("task_struct", "comm").value(), FakeKernel::kCommOffset);
    EXPECT_EQ(types.OffsetOf("task_struct", "tasks.prev").value(), FakeKernel::kTasksOffset + 8);
    EXPECT_THAT(k->types_source, HasSubstr("BTF in guest memory"));
  }
}

TEST(DiscoveryTest, TheElfNoteComesFirst) {
  FakeKernel fake;
  TestDriver driver(&fake);
  driver.SetNote(fake.vmcoreinfo_text());
  ScanStats stats;
  absl::StatusOr<LinuxKernel> k = Discover(std::move(driver), &stats);
  ASSERT_TRUE(k.ok()) << k.status();
  ExpectLayout(*k, fake);
  EXPECT_EQ(k->layout_source, "VMCOREINFO from the dump's ELF note");
  EXPECT_EQ(stats.frames_scanned, 0u);
  EXPECT_TRUE(k->symbols_status.ok());
}

TEST(DiscoveryTest, AForgedNoteFallsBackToTheScan) {
  FakeKernel fake;
  TestDriver driver(&fake);
  // A different phys_base moves the root: its tables do not map the kernel.
  driver.SetNote(absl::StrReplaceAll(fake.vmcoreinfo_text(), {{"phys_base)=-50331648", "phys_base)=-46137344"}}));
  absl::StatusOr<LinuxKernel> k = Discover(std::move(driver));
  ASSERT_TRUE(k.ok()) << k.status();
  ExpectLayout(*k, fake);
  EXPECT_THAT(k->layout_source, HasSubstr("scan"));
}

TEST(DiscoveryTest, ABlockStraddlingTwoFramesIsFound) {
  FakeKernel fake(FakeKernelOptions{.vmcoreinfo_pa = 0x1800000 - 4});
  ScanStats stats;
  absl::StatusOr<LinuxKernel> k = Discover(TestDriver(&fake), &stats);
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_THAT(k->layout_source, HasSubstr("0x17ffffc"));
}

TEST(DiscoveryTest, AbsentFramesAreSkipped) {
  FakeKernel fake;
  TestDriver driver(&fake);
  for (uint64_t g = 0x1000; g < 0x1100; ++g) driver.AddHole(g);
  ScanStats stats;
  absl::StatusOr<LinuxKernel> k = Discover(std::move(driver), &stats);
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_EQ(stats.frames_absent, 0x100u);
}

TEST(DiscoveryTest, NonLinuxMemoryIsABoundedClearError) {
  FakeKernel fake(FakeKernelOptions{.vmcoreinfo = false, .format_string_copy = false});
  ScanStats stats;
  absl::StatusOr<LinuxKernel> k = Discover(TestDriver(&fake), &stats);
  ASSERT_FALSE(k.ok());
  EXPECT_EQ(k.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(k.status().message()),
              HasSubstr("no valid VMCOREINFO: no VMCOREINFO note; scanned 8192 frames (0 absent)"));
  EXPECT_THAT(std::string(k.status().message()), HasSubstr("no candidate blocks"));
  EXPECT_EQ(stats.frames_scanned, 8192u);
}

TEST(DiscoveryTest, OnlyTheFormatStringCopyIsRejectedWithItsReason) {
  FakeKernel fake(FakeKernelOptions{.vmcoreinfo = false});
  absl::StatusOr<LinuxKernel> k = Discover(TestDriver(&fake));
  ASSERT_FALSE(k.ok());
  EXPECT_THAT(std::string(k.status().message()), HasSubstr("1 candidate block rejected (pa 0xb0013e"));
  EXPECT_THAT(std::string(k.status().message()), HasSubstr("format string"));
}

struct Forgery {
  const char* name;
  std::vector<std::pair<std::string, std::string>> replace;
  const char* reason;
};

TEST(DiscoveryTest, ForgedOrTornBlocksAreRejectedWithTheirReasons) {
  FakeKernel reference;
  const std::vector<Forgery> forgeries = {
      {"wrong phys_base", {{"phys_base)=-50331648", "phys_base)=-46137344"}}, "do not map init_top_pgt"},
      {"root beyond memory", {{"phys_base)=-50331648", "phys_base)=1073741824"}}, "beyond guest memory"},
      {"wrong paging depth", {{"l5_enabled)=0", "l5_enabled)=1"}}, "5-level"},
      {"release differs from init_uts_ns", {{"OSRELEASE=6.1.0-fake-amd64", "OSRELEASE=6.1.0-evil-amd64"}},
       "init_uts_ns says release \"6.1.0-fake-amd64\""},
      {"torn", {{"KERNELOFFSET=2a00000\n", "KERNELOFF"}}, "torn block"},
  };
  for (const Forgery& f : forgeries) {
    FakeKernel fake(FakeKernelOptions{.vmcoreinfo = false, .format_string_copy = false});
    std::string text = reference.vmcoreinfo_text();
    for (const auto& [from, to] : f.replace) {
      ASSERT_NE(text.find(from), std::string::npos) << f.name << ": " << from;
      text = absl::StrReplaceAll(text, {{from, to}});
    }
    fake.WriteString(0x1800000, text + std::string(1, '\0'));
    absl::StatusOr<LinuxKernel> k = Discover(TestDriver(&fake));
    ASSERT_FALSE(k.ok()) << f.name;
    EXPECT_EQ(k.status().code(), absl::StatusCode::kNotFound) << f.name;
    EXPECT_THAT(std::string(k.status().message()), HasSubstr(f.reason)) << f.name << ": " << k.status();
    EXPECT_THAT(std::string(k.status().message()), HasSubstr("pa 0x1800000")) << f.name;
  }
}

TEST(DiscoveryTest, AFloodOfCandidatesIsBounded) {
  FakeKernel fake(FakeKernelOptions{.vmcoreinfo = false, .format_string_copy = false});
  std::string flood;
  while (flood.size() < 64 * 4096) flood += "OSRELEASE=";
  fake.WriteString(0x100000, flood);
  ScanStats stats;
  DiscoveryOptions options;
  options.max_candidates = 100;
  absl::StatusOr<LinuxKernel> k = Discover(TestDriver(&fake), &stats, options);
  ASSERT_FALSE(k.ok());
  EXPECT_EQ(k.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(k.status().message()), HasSubstr("gave up after 100"));
  EXPECT_EQ(stats.candidates, 101u);
}

TEST(DiscoveryTest, KernelWithoutKallsymsLinesHasALayoutButNoSymbols) {
  FakeKernel fake(FakeKernelOptions{.kallsyms_lines = false});
  absl::StatusOr<LinuxKernel> k = Discover(TestDriver(&fake));
  ASSERT_TRUE(k.ok()) << k.status();
  ExpectLayout(*k, fake);
  EXPECT_EQ(k->symbols_status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(k->symbols_status.message()), HasSubstr("ISF profile"));
  EXPECT_EQ(k->Symbol("init_task").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(k->types_status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(k->Types().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(DiscoveryTest, GarbageKallsymsAreReportedAndTheLayoutStands) {
  FakeKernel fake;
  // Every token number of the first entries points at a control-character
  // token: the names decode to garbage.
  std::string junk(64, '\x05');
  fake.WriteString(fake.kallsyms_names_pa() + 1, junk);
  absl::StatusOr<LinuxKernel> k = Discover(TestDriver(&fake));
  ASSERT_TRUE(k.ok()) << k.status();
  ExpectLayout(*k, fake);
  EXPECT_FALSE(k->symbols_status.ok());
  EXPECT_THAT(std::string(k->symbols_status.message()), HasSubstr("not kallsyms"));
}

TEST(DiscoveryTest, KallsymsThatDisagreeWithVmcoreinfoAreRefused) {
  FakeKernel fake;
  TestDriver driver(&fake);
  driver.SetNote(absl::StrReplaceAll(
      fake.vmcoreinfo_text(),
      {{absl::StrFormat("SYMBOL(_stext)=%x", fake.Symbol("_stext")),
        absl::StrFormat("SYMBOL(_stext)=%x", fake.Symbol("_stext") + 0x1000)}}));
  absl::StatusOr<LinuxKernel> k = Discover(std::move(driver));
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_EQ(k->symbols_status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(k->symbols_status.message()), HasSubstr("_stext"));
}

TEST(DiscoveryTest, MissingOrTruncatedBtf) {
  {
    FakeKernel fake(FakeKernelOptions{.btf = false});
    absl::StatusOr<LinuxKernel> k = Discover(TestDriver(&fake));
    ASSERT_TRUE(k.ok()) << k.status();
    EXPECT_TRUE(k->symbols_status.ok());
    EXPECT_EQ(k->types_status.code(), absl::StatusCode::kNotFound);
    EXPECT_THAT(std::string(k->types_status.message()), HasSubstr("CONFIG_DEBUG_INFO_BTF"));
  }
  {
    FakeKernel fake;
    // Damage the BTF header's type section length: libbpf refuses it.
    const uint32_t huge = 0x7fffffff;
    fake.WritePa(FakeKernel::kBtfPa + 12, &huge, 4);
    absl::StatusOr<LinuxKernel> k = Discover(TestDriver(&fake));
    ASSERT_TRUE(k.ok()) << k.status();
    EXPECT_EQ(k->types_status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(k->types_status.message()), HasSubstr("does not parse"));
  }
}

TEST(DiscoveryTest, CheckVmcoreinfoLeavesTheKernelUntouchedOnFailure) {
  FakeKernel fake;
  VmiCore<TestDriver> core{TestDriver(&fake)};
  CoreGuestMemory<TestDriver> memory(core, Gfn(fake.options().frames - 1));
  absl::StatusOr<VmcoreInfo> info = ParseVmcoreinfo(absl::MakeConstSpan(
      reinterpret_cast<const uint8_t*>(fake.vmcoreinfo_text().data()), fake.vmcoreinfo_text().size()));
  ASSERT_TRUE(info.ok());
  info->phys_base += 0x400000;
  LinuxKernel kernel;
  EXPECT_FALSE(os_linux_internal::CheckVmcoreinfo(*info, memory, &kernel).ok());
  EXPECT_TRUE(kernel.release.empty());
  EXPECT_EQ(kernel.root, Pa());
}

}  // namespace
}  // namespace vmi::os_linux

namespace vmi::os_linux {
namespace {

// Memory given only as runs (like a mapped dump), for the scan's run path.
class RunMemory final : public GuestMemory {
 public:
  RunMemory(uint64_t frames, std::vector<std::pair<uint64_t, std::vector<uint8_t>>> runs)
      : frames_(frames), runs_(std::move(runs)) {}
  Gfn max_gfn() const override { return Gfn(frames_ - 1); }
  absl::StatusOr<MappedPage> ScanFrame(Gfn) override {
    return absl::InternalError("the run path must not read frames");
  }
  absl::Status ReadPhysical(Pa, absl::Span<uint8_t>) override { return absl::UnimplementedError("n/a"); }
  absl::Status ReadVirtual(Va, Pa, const amd64::PagingMode&, absl::Span<uint8_t>) override {
    return absl::UnimplementedError("n/a");
  }
  absl::StatusOr<Pa> Translate(Va, Pa, const amd64::PagingMode&) override {
    return absl::UnimplementedError("n/a");
  }
  std::vector<Run> MappedRuns() override {
    std::vector<Run> out;
    for (const auto& [pa, bytes] : runs_) out.push_back({Pa(pa), absl::MakeConstSpan(bytes)});
    return out;
  }

 private:
  uint64_t frames_;
  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> runs_;
};

std::vector<uint8_t> Pages(size_t n, std::vector<std::pair<size_t, std::string>> writes) {
  std::vector<uint8_t> bytes(n * 4096, 0);
  for (const auto& [at, text] : writes) std::copy(text.begin(), text.end(), bytes.begin() + at);
  return bytes;
}

TEST(ScanPhysicalMemoryTest, RunsAreScannedWholeAndSeamsOnlyWhereTheyTouch) {
  // Run A: frames 0-1; run B: frames 2-3 (touching A); run C: frames 8-9
  // (after a gap). "OSREL" ends A and "EASE=" starts B: a match across the
  // seam. "OSREL" ends B and "EASE=" starts C: no match across the gap.
  RunMemory memory(16, {{0x0000, Pages(2, {{100, "OSRELEASE="}, {8192 - 5, "OSREL"}})},
                        {0x2000, Pages(2, {{0, "EASE="}, {8192 - 5, "OSREL"}})},
                        {0x8000, Pages(2, {{0, "EASE="}, {4096, "OSRELEASE="}})}});
  std::vector<uint64_t> hits;
  ScanStats stats;
  ASSERT_TRUE(os_linux_internal::ScanPhysicalMemory(memory, "OSRELEASE=", &stats,
                                                    [&](uint64_t pa) -> absl::StatusOr<bool> {
                                                      hits.push_back(pa);
                                                      return false;
                                                    })
                  .ok());
  EXPECT_EQ(hits, (std::vector<uint64_t>{100, 0x2000 - 5, 0x9000}));
  EXPECT_EQ(stats.frames_scanned, 6u);
  EXPECT_EQ(stats.frames_absent, 10u);
  EXPECT_EQ(stats.candidates, 3u);

  // Stopping early counts the frames scanned so far.
  stats = ScanStats();
  ASSERT_TRUE(os_linux_internal::ScanPhysicalMemory(memory, "OSRELEASE=", &stats,
                                                    [&](uint64_t pa) -> absl::StatusOr<bool> {
                                                      return pa == 0x9000;
                                                    })
                  .ok());
  EXPECT_EQ(stats.frames_scanned, 6u);
  // An error from the callback ends the scan with it.
  absl::Status error = os_linux_internal::ScanPhysicalMemory(
      memory, "OSRELEASE=", &stats,
      [&](uint64_t) -> absl::StatusOr<bool> { return absl::AbortedError("enough"); });
  EXPECT_EQ(error.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(os_linux_internal::ScanPhysicalMemory(memory, "O", &stats, [](uint64_t) { return false; })
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vmi::os_linux

namespace vmi::os_linux {
namespace {

// A profile of the fake kernel, as ExportIsf writes it from what discovery
// found (link-time addresses: the slide taken off).
std::shared_ptr<const IsfProfile> ProfileOf(const FakeKernel& fake, const std::string& banner_override = "") {
  FakeKernel copy(fake.options());
  absl::StatusOr<LinuxKernel> k = Discover(TestDriver(&copy));
  EXPECT_TRUE(k.ok()) << k.status();
  IsfExportInput input;
  input.symbols = &k->symbols;
  input.kaslr_slide = k->kaslr_slide;
  input.types = dynamic_cast<const BtfTypes*>(k->types.get());
  input.banner = banner_override.empty() ? k->banner + std::string(1, '\0') : banner_override;
  input.osrelease = k->release;
  absl::StatusOr<std::string> json = ExportIsf(input);
  EXPECT_TRUE(json.ok()) << json.status();
  absl::StatusOr<IsfProfile> profile = IsfProfile::Parse(*json, "ISF profile fake.json");
  EXPECT_TRUE(profile.ok()) << profile.status();
  return std::make_shared<const IsfProfile>(*std::move(profile));
}

DiscoveryOptions WithProfile(std::shared_ptr<const IsfProfile> profile) {
  DiscoveryOptions options;
  options.profile = std::move(profile);
  return options;
}

TEST(DiscoveryProfileTest, WithoutVmcoreinfoTheBannerLocatesTheKernel) {
  for (bool five_level : {false, true}) {
    FakeKernel reference(FakeKernelOptions{.five_level = five_level});
    std::shared_ptr<const IsfProfile> profile = ProfileOf(reference);
    // The same kernel, booted with another slide, without VMCOREINFO.
    FakeKernel fake(FakeKernelOptions{.five_level = five_level, .kaslr = 0x3c00000,
                                      .phys_base = -0x4200000, .vmcoreinfo = false});
    absl::StatusOr<LinuxKernel> k = Discover(TestDriver(&fake), nullptr, WithProfile(profile));
    ASSERT_TRUE(k.ok()) << k.status();
    EXPECT_EQ(k->kaslr_slide, 0x3c00000u);
    EXPECT_EQ(k->phys_base, -0x4200000);
    EXPECT_EQ(k->root, Pa(fake.root_pa()));
    EXPECT_EQ(k->paging, fake.paging());
    EXPECT_EQ(k->release, fake.options().release);
    EXPECT_THAT(k->layout_source, HasSubstr("linux_banner of ISF profile fake.json found at pa"));
    ASSERT_TRUE(k->symbols_status.ok());
    EXPECT_EQ(k->Symbol("init_task").value(), fake.Symbol("init_task"));
    EXPECT_THAT(k->symbols_source, HasSubstr("ISF profile fake.json"));
    EXPECT_EQ(k->Types().value()->OffsetOf("task_struct", "comm").value(), FakeKernel::kCommOffset);
    EXPECT_EQ(k->banner, fake.banner());
  }
}

TEST(DiscoveryProfileTest, WithVmcoreinfoTheProfileIsCheckedAndItsSymbolsUsed) {
  FakeKernel fake;
  absl::StatusOr<LinuxKernel> k = Discover(TestDriver(&fake), nullptr, WithProfile(ProfileOf(fake)));
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_THAT(k->layout_source, HasSubstr("VMCOREINFO"));
  EXPECT_THAT(k->symbols_source, HasSubstr("ISF profile"));
  EXPECT_EQ(k->Symbol("init_task").value(), fake.Symbol("init_task"));
}

TEST(DiscoveryProfileTest, AProfileOfAnotherKernelIsRefused) {
  FakeKernel fake;
  const std::string other = "Linux version 6.1.0-other (x@y) #2 SMP\n";
  std::shared_ptr<const IsfProfile> profile = ProfileOf(fake, other + std::string(1, '\0'));
  // With VMCOREINFO: the banner at the profile's linux_banner differs.
  absl::StatusOr<LinuxKernel> k = Discover(TestDriver(&fake), nullptr, WithProfile(profile));
  ASSERT_FALSE(k.ok());
  EXPECT_EQ(k.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(k.status().message()), HasSubstr("is for another kernel"));
  EXPECT_THAT(std::string(k.status().message()), HasSubstr("6.1.0-other"));
  EXPECT_THAT(std::string(k.status().message()), HasSubstr("6.1.0-fake-amd64"));
  // Without: no banner in memory fits.
  FakeKernel bare(FakeKernelOptions{.vmcoreinfo = false});
  k = Discover(TestDriver(&bare), nullptr, WithProfile(profile));
  ASSERT_FALSE(k.ok());
  EXPECT_EQ(k.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(k.status().message()), HasSubstr("which is not in memory: memory holds"));
}

TEST(DiscoveryProfileTest, AProfileWithoutTheNeededSymbolsIsRefused) {
  FakeKernel bare(FakeKernelOptions{.vmcoreinfo = false});
  absl::StatusOr<IsfProfile> empty = IsfProfile::Parse(R"({"user_types": {}, "symbols": {}})", "ISF profile empty.json");
  ASSERT_TRUE(empty.ok()) << empty.status();
  absl::StatusOr<LinuxKernel> k =
      Discover(TestDriver(&bare), nullptr, WithProfile(std::make_shared<const IsfProfile>(*std::move(empty))));
  ASSERT_FALSE(k.ok());
  EXPECT_THAT(std::string(k.status().message()), HasSubstr("has no linux_banner symbol"));
}

}  // namespace
}  // namespace vmi::os_linux
