#include "drivers/sim/sim_dump.h"

#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "core/vmi_core.h"
#include "drivers/dump/dump_driver.h"
#include "gtest/gtest.h"

namespace vmi::sim {
namespace {

struct Case {
  int levels;
  dump::DumpFormat format;
};

class SimDumpTest : public ::testing::TestWithParam<Case> {};

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  return absl::StrFormat("%dlevel_%s", info.param.levels, dump::DumpFormatName(info.param.format));
}

TEST_P(SimDumpTest, DumpReadsBackExactlyWhatTheSimulatorHad) {
  const Case c = GetParam();
  MachineOptions m;
  m.ram_size = 8 << 20;
  m.vcpu_count = 2;
  StandardGuestOptions g;
  g.paging_levels = c.levels;
  SimDriverOptions o;
  o.wait_instructions = 100'000;
  auto booted = SimDriver::Boot("loop_call", m, g, o);
  ASSERT_TRUE(booted.ok()) << booted.status();
  VmiCore<SimDriver> sim(*std::move(booted));
  // Let the guest run a little so the state is not the boot state.
  (void)sim.WaitForEvent(absl::Seconds(1), [](const VmiEvent<Amd64>&) {
    return VmiEventResponse<Amd64>::Continue();
  });

  const std::string path = absl::StrFormat("%s/sim.%s", ::testing::TempDir(),
                                           dump::DumpFormatName(c.format));
  ASSERT_TRUE(WriteMachineDump(sim.driver(), path, c.format).ok());
  const amd64::Registers regs0 = *sim.GetRegisters(VcpuId(0));
  dump::OpenOptions options;
  const bool has_cpu_state =
      c.format == dump::DumpFormat::kElfCore || c.format == dump::DumpFormat::kXenCore;
  if (!has_cpu_state) options.registers = {regs0, *sim.GetRegisters(VcpuId(1))};
  auto opened = dump::DumpDriver::Open(path, options);
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(opened->format(), c.format);
  VmiCore<dump::DumpDriver> dump(*std::move(opened));

  // Every page.
  const VmiInfo info = *sim.Info();
  EXPECT_EQ(dump.Info()->max_gfn, info.max_gfn);
  for (uint64_t gfn = 0; gfn <= info.max_gfn.value(); ++gfn) {
    auto a = sim.driver().ReadPage(Gfn(gfn));
    auto b = dump.driver().ReadPage(Gfn(gfn));
    ASSERT_TRUE(a.ok() && b.ok()) << gfn;
    ASSERT_EQ(std::memcmp(a->data(), b->data(), 4096), 0) << "gfn " << gfn;
  }

  // Registers of every vCPU, as far as the format keeps them.
  for (uint16_t v = 0; v < 2; ++v) {
    const amd64::Registers want = *sim.GetRegisters(VcpuId(v));
    auto got = dump.GetRegisters(VcpuId(v));
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->rip, want.rip);
    EXPECT_EQ(got->rsp, want.rsp);
    EXPECT_EQ(got->rbx, want.rbx);
    EXPECT_EQ(got->rdi, want.rdi);
    EXPECT_EQ(got->rflags, want.rflags);
    EXPECT_EQ(got->cr0, want.cr0);
    EXPECT_EQ(got->cr3, want.cr3);
    EXPECT_EQ(got->cr4, want.cr4);
    EXPECT_EQ(got->cs.selector, want.cs.selector);
    EXPECT_EQ(Amd64::PagingModeOf(*got), Amd64::PagingModeOf(want));
  }

  // Translations through both, for the same root: equal results, equal faults.
  const Pa root = Amd64::TranslationRoot(regs0);
  sim.SetPagingMode(Amd64::PagingModeOf(regs0));
  dump.SetPagingMode(Amd64::PagingModeOf(*dump.GetRegisters(VcpuId(0))));
  std::mt19937_64 rng(c.levels * 10 + static_cast<int>(c.format));
  std::vector<uint64_t> vas = {kProgramVa, kStackTopVa - 8, kSystemTablesVa, kSystemTablesVa + 0x1000};
  for (int i = 0; i < 400; ++i) vas.push_back(kProgramVa + (rng() % (64 << 20)) - (32 << 20));
  int mapped = 0;
  for (uint64_t va : vas) {
    const AddressContext ctx(Va(va), root);
    auto a = sim.Translate(ctx);
    auto b = dump.Translate(ctx);
    ASSERT_EQ(a.ok(), b.ok()) << absl::StrFormat("va 0x%x: %s vs %s", va, a.status().ToString(),
                                                 b.status().ToString());
    if (a.ok()) {
      EXPECT_EQ(*a, *b);
      ++mapped;
    } else {
      EXPECT_EQ(GetTranslationFault(a.status()), GetTranslationFault(b.status()));
    }
  }
  EXPECT_GE(mapped, 4);
}

INSTANTIATE_TEST_SUITE_P(
    FormatsAndPagingModes, SimDumpTest,
    ::testing::Values(Case{4, dump::DumpFormat::kRaw}, Case{4, dump::DumpFormat::kLime},
                      Case{4, dump::DumpFormat::kElfCore}, Case{4, dump::DumpFormat::kXenCore},
                      Case{5, dump::DumpFormat::kRaw}, Case{5, dump::DumpFormat::kLime},
                      Case{5, dump::DumpFormat::kElfCore}, Case{5, dump::DumpFormat::kXenCore}),
    CaseName);

}  // namespace
}  // namespace vmi::sim
