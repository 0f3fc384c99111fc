// Discovery on the real Linux guest fixtures (tools/linux_fixture): every
// variant, from the raw image (physical scan) and from the ELF core (note),
// against what the guest itself printed.

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "core/vmi_core.h"
#include "drivers/dump/dump_driver.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "os/linux/btf_types.h"
#include "os/linux/discovery.h"
#include "os/linux/isf.h"
#include "os/linux/testing/fixtures.h"

namespace vmi::os_linux {
namespace {

using ::testing::HasSubstr;
using testing::FindLinuxFixture;
using testing::LinuxFixture;

struct Case {
  std::string variant;
  bool elf;
};

class LinuxFixtureTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    absl::StatusOr<LinuxFixture> f = FindLinuxFixture(GetParam().variant);
    ASSERT_TRUE(f.ok()) << f.status();
    fixture_ = *f;
    const std::string path = GetParam().elf ? fixture_.elf_path() : fixture_.raw_path();
    absl::StatusOr<dump::DumpDriver> driver = dump::DumpDriver::Open(path);
    ASSERT_TRUE(driver.ok()) << driver.status();
    core_ = std::make_unique<VmiCore<dump::DumpDriver>>(*std::move(driver));
    absl::StatusOr<LinuxKernel> kernel = DiscoverLinux(*core_);
    ASSERT_TRUE(kernel.ok()) << kernel.status();
    kernel_ = std::make_unique<LinuxKernel>(*std::move(kernel));
  }

  LinuxFixture fixture_;
  std::unique_ptr<VmiCore<dump::DumpDriver>> core_;
  std::unique_ptr<LinuxKernel> kernel_;
};

TEST_P(LinuxFixtureTest, LayoutMatchesTheGuest) {
  const LinuxKernel& k = *kernel_;
  EXPECT_EQ(k.release, fixture_.release);
  EXPECT_EQ(k.kaslr_slide, fixture_.kaslr_slide);
  EXPECT_NE(k.kaslr_slide, 0u);
  EXPECT_EQ(k.paging.levels(), fixture_.paging_levels);
  EXPECT_THAT(k.layout_source, HasSubstr(GetParam().elf ? "ELF note" : "scan of physical memory"));
  absl::StatusOr<std::string> version = fixture_.ReadGuestFile("version.txt");
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(k.banner, *version);  // /proc/version prints linux_banner
}

TEST_P(LinuxFixtureTest, SymbolsEqualTheGuestsProcKallsyms) {
  ASSERT_TRUE(kernel_->symbols_status.ok()) << kernel_->symbols_status;
  absl::StatusOr<std::string> text = fixture_.ReadGuestFile("kallsyms.txt");
  ASSERT_TRUE(text.ok()) << text.status();
  absl::StatusOr<std::vector<testing::KallsymsLine>> lines = testing::ParseProcKallsyms(*text);
  ASSERT_TRUE(lines.ok()) << lines.status();
  std::vector<testing::KallsymsLine> vmlinux;
  for (testing::KallsymsLine& l : *lines) {
    if (l.module.empty()) vmlinux.push_back(std::move(l));
  }
  const SymbolTable& table = kernel_->symbols;
  ASSERT_EQ(table.size(), vmlinux.size());
  size_t mismatches = 0;
  for (size_t i = 0; i < vmlinux.size(); ++i) {
    if (table[i].address != vmlinux[i].address || table[i].type != vmlinux[i].type ||
        table[i].name != vmlinux[i].name) {
      if (++mismatches <= 5) {
        ADD_FAILURE() << "symbol " << i << ": decoded " << std::hex << table[i].address << " "
                      << table[i].type << " " << table[i].name << ", guest " << vmlinux[i].address
                      << " " << vmlinux[i].type << " " << vmlinux[i].name;
      }
    }
  }
  EXPECT_EQ(mismatches, 0u);
  // Both directions of lookup on a few well-known symbols.
  const uint64_t init_task = table.Address("init_task").value();
  EXPECT_EQ(table.Symbolize(init_task + 0x10)->ToString(), "init_task+0x10");
  EXPECT_GT(table.size(), 90000u);
}

TEST_P(LinuxFixtureTest, TypeOffsetsAgreeWithTheKernelsOwnVmcoreinfo) {
  ASSERT_TRUE(kernel_->types_status.ok()) << kernel_->types_status;
  const KernelTypes& types = *kernel_->Types().value();
  EXPECT_GT(types.type_count(), 50000u);
  ASSERT_TRUE(kernel_->vmcoreinfo.has_value());
  int checked = 0;
  for (const auto& [key, value] : kernel_->vmcoreinfo->entries) {
    uint64_t expected;
    if (!absl::SimpleAtoi(value, &expected)) continue;
    if (absl::StartsWith(key, "OFFSET(") && absl::EndsWith(key, ")")) {
      const std::string inner = key.substr(7, key.size() - 8);
      const size_t dot = inner.find('.');
      ASSERT_NE(dot, std::string::npos) << key;
      absl::StatusOr<uint64_t> offset = types.OffsetOf(inner.substr(0, dot), inner.substr(dot + 1));
      ASSERT_TRUE(offset.ok()) << key << ": " << offset.status();
      EXPECT_EQ(*offset, expected) << key;
      ++checked;
    } else if (absl::StartsWith(key, "SIZE(") && absl::EndsWith(key, ")")) {
      const std::string name = key.substr(5, key.size() - 6);
      absl::StatusOr<uint64_t> size = types.SizeOf(name);
      ASSERT_TRUE(size.ok()) << key << ": " << size.status();
      EXPECT_EQ(*size, expected) << key;
      ++checked;
    }
  }
  EXPECT_GT(checked, 40);
}

TEST_P(LinuxFixtureTest, InitTaskIsTheSwapperThroughTheTypes) {
  const KernelTypes& types = *kernel_->Types().value();
  absl::StatusOr<FieldInfo> comm = types.Field("task_struct", "comm");
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_EQ(comm->size, 16u);
  const uint64_t init_task = kernel_->Symbol("init_task").value();
  absl::StatusOr<std::string> name =
      core_->ReadString(AccessContext(kernel_->Kernel(Va(init_task + comm->offset))), comm->size);
  ASSERT_TRUE(name.ok()) << name.status();
  EXPECT_EQ(*name, "swapper/0");
  // A bitfield and a member inside anonymous unions resolve as well.
  EXPECT_TRUE(types.Field("task_struct", "sched_reset_on_fork")->is_bitfield());
  EXPECT_TRUE(types.Field("page", "compound_head").ok());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, LinuxFixtureTest,
                         ::testing::Values(Case{"l4", false}, Case{"l4", true}, Case{"l5", false},
                                           Case{"l5", true}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.variant + (info.param.elf ? "_elf" : "_raw");
                         });

}  // namespace
}  // namespace vmi::os_linux

namespace vmi::os_linux {
namespace {

// The ISF export of one fixture locates the kernel in the other without
// VMCOREINFO: the banner, the root and the slide from the page tables.
TEST(LinuxFixtureProfileTest, AnExportedProfileLocatesTheKernelWithoutVmcoreinfo) {
  absl::StatusOr<LinuxFixture> l4 = FindLinuxFixture("l4");
  absl::StatusOr<LinuxFixture> l5 = FindLinuxFixture("l5");
  ASSERT_TRUE(l4.ok()) << l4.status();
  ASSERT_TRUE(l5.ok()) << l5.status();
  std::string json;
  {
    VmiCore<dump::DumpDriver> core(*dump::DumpDriver::Open(l4->raw_path()));
    absl::StatusOr<LinuxKernel> k = DiscoverLinux(core);
    ASSERT_TRUE(k.ok()) << k.status();
    IsfExportInput input;
    input.symbols = &k->symbols;
    input.kaslr_slide = k->kaslr_slide;
    input.types = dynamic_cast<const BtfTypes*>(k->types.get());
    input.banner = k->banner + std::string(1, '\0');
    absl::StatusOr<std::string> exported = ExportIsf(input);
    ASSERT_TRUE(exported.ok()) << exported.status();
    json = *std::move(exported);
  }
  absl::StatusOr<IsfProfile> profile = IsfProfile::Parse(json, "ISF profile l4.json");
  ASSERT_TRUE(profile.ok()) << profile.status();
  for (const std::string& path : {l5->raw_path(), l5->elf_path()}) {
    VmiCore<dump::DumpDriver> core(*dump::DumpDriver::Open(path));
    DiscoveryOptions options;
    options.use_note = false;
    options.scan_memory = false;
    options.profile = std::make_shared<const IsfProfile>(*profile);
    absl::StatusOr<LinuxKernel> k = DiscoverLinux(core, options);
    ASSERT_TRUE(k.ok()) << k.status();
    EXPECT_EQ(k->kaslr_slide, l5->kaslr_slide) << path;
    EXPECT_EQ(k->paging.levels(), 5) << path;
    EXPECT_EQ(k->release, l5->release);
    EXPECT_THAT(k->layout_source, HasSubstr("linux_banner of ISF profile l4.json"));
    // The profile's types read the guest as BTF's do.
    const uint64_t init_task = k->Symbol("init_task").value();
    const uint64_t comm = k->Types().value()->OffsetOf("task_struct", "comm").value();
    EXPECT_EQ(core.ReadString(AccessContext(k->Kernel(Va(init_task + comm))), 16).value(), "swapper/0");
  }
}

}  // namespace
}  // namespace vmi::os_linux
