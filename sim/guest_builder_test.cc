#include "sim/guest_builder.h"

#include <map>
#include <random>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sim/programs.h"

namespace vmi::sim {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<Machine> NewMachine(uint64_t ram = 16ull << 20) {
  return *Machine::Create({.ram_size = ram, .vcpu_count = 1, .quantum = 100000});
}

TEST(GuestBuilderTest, MapAndTranslateAllPageSizes) {
  auto m = NewMachine();
  GuestBuilder b(m.get());
  for (int levels : {4, 5}) {
    AddressSpace* as = *b.CreateAddressSpace(levels);
    ASSERT_TRUE(as->Map(Va(0xffff800000001000ull), Pa(0x5000), 0x2000, page_flags::kWritable).ok());
    ASSERT_TRUE(as->Map(Va(0x40000000), Pa(0x200000), 0x400000, 0, PageSize::k2M).ok());
    ASSERT_TRUE(as->Map(Va(0x80000000), Pa(0), 1ull << 30, 0, PageSize::k1G).ok());
    EXPECT_EQ(*as->Translate(Va(0xffff800000002123ull)), Pa(0x6123));
    EXPECT_EQ(*as->Translate(Va(0x40212345)), Pa(0x412345));
    EXPECT_EQ(*as->Translate(Va(0x80abcdef)), Pa(0xabcdef));
    EXPECT_FALSE(as->Translate(Va(0x1000)).ok());
  }
}

TEST(GuestBuilderTest, BadMappingsAreErrors) {
  auto m = NewMachine();
  GuestBuilder b(m.get());
  AddressSpace* as = *b.CreateAddressSpace(4);
  EXPECT_THAT(as->Map(Va(0x1001), Pa(0), 0x1000, 0).message(), HasSubstr("not aligned"));
  EXPECT_THAT(as->Map(Va(0x0001000000000000ull), Pa(0), 0x1000, 0).message(),
              HasSubstr("not canonical for 4-level"));
  EXPECT_EQ(as->Map(Va(0x1000), Pa(16ull << 20), 0x1000, 0).code(), absl::StatusCode::kOutOfRange);
  ASSERT_TRUE(as->Map(Va(0x200000), Pa(0x200000), 0x200000, 0, PageSize::k2M).ok());
  EXPECT_EQ(as->Map(Va(0x201000), Pa(0x1000), 0x1000, 0).code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(as->Map(Va(0x1000), Pa(0x1000), 0x1000, 0).ok());
  EXPECT_EQ(as->Map(Va(0x1000), Pa(0x2000), 0x1000, 0).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(b.CreateAddressSpace(3).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(b.AllocateFrames(1 << 20).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(b.StartVcpu(VcpuId(4), *as, Va(0), Va(0)).code(), absl::StatusCode::kOutOfRange);
}

TEST(GuestBuilderTest, FiveLevelGuestRuns) {
  auto m = NewMachine();
  absl::StatusOr<StandardGuest> g = BuildStandardGuest(*m, "loop_call", {.paging_levels = 5});
  ASSERT_TRUE(g.ok()) << g.status();
  absl::StatusOr<RunResult> r = m->Run(1'000'000);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, RunStatus::kAllHalted);
  amd64::Registers regs = *m->GetRegisters(VcpuId(0));
  EXPECT_EQ(regs.rbx, 100u);
  EXPECT_NE(regs.cr4 & (1u << 12), 0u);
}

TEST(GuestBuilderTest, GuestAccessBeyondRamIsACleanError) {
  auto m = NewMachine();
  GuestBuilder b(m.get());
  AddressSpace* as = *b.CreateAddressSpace(4);
  ASSERT_TRUE(b.MapSystemTables(*as).ok());
  LoadedProgram prog = *LoadProgram(b, *as, **FindProgram("probe_loads"), Va(kProgramVa));
  // A 1 GiB page over 16 MiB of RAM; the guest loads 512 MiB into it.
  ASSERT_TRUE(as->Map(Va(0x40000000), Pa(0), 1ull << 30, 0, PageSize::k1G).ok());
  Pa table = *b.AllocateFrames(1);
  const uint64_t target = 0x40000000 + (512ull << 20);
  ASSERT_TRUE(
      m->WritePhys(table, absl::MakeSpan(reinterpret_cast<const uint8_t*>(&target), 8)).ok());
  ASSERT_TRUE(as->Map(Va(0xffffd00000000000ull), table, 4096, 0).ok());
  ASSERT_TRUE(b.StartVcpu(VcpuId(0), *as, prog.entry(), Va(0)).ok());
  amd64::GpRegisters gp = m->GetRegisters(VcpuId(0))->gp();
  gp.rsi = 0xffffd00000000000ull;
  gp.rcx = 1;
  ASSERT_TRUE(m->SetGpRegisters(VcpuId(0), gp).ok());
  absl::StatusOr<RunResult> r = m->Run(1000);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(),
              HasSubstr("guest read of 8 bytes at gpa 0x20000000 beyond RAM"));
}

// The differential MMU test: random 4K/2M/1G mappings in 4- and 5-level
// tables; the guest loads from each virtual address, and the guest-physical
// address Unicorn's MMU actually reached (reported by the memory hook behind
// a read-protected view) must be the one the builder intended.
struct Probe {
  uint64_t va;
  uint64_t pa;
};

uint64_t SignExtend(uint64_t va, int levels) {
  const int bits = 12 + 9 * levels;
  return (va >> (bits - 1)) & 1 ? va | ~((1ull << bits) - 1) : va;
}

int RunDifferentialBatch(int levels, uint64_t seed, int count) {
  constexpr uint64_t kRam = 64ull << 20, kData = 32ull << 20;
  auto m = NewMachine(kRam);
  GuestBuilder b(m.get());
  AddressSpace* as = *b.CreateAddressSpace(levels);
  EXPECT_TRUE(b.MapSystemTables(*as).ok());
  LoadedProgram prog = *LoadProgram(b, *as, **FindProgram("probe_loads"), Va(kProgramVa));
  std::mt19937_64 rng(seed);
  const uint64_t region_count = 1ull << (9 * levels + 12 - 30);
  std::set<uint64_t> reserved = {(kProgramVa >> 30) & (region_count - 1),
                                 (kSystemTablesVa >> 30) & (region_count - 1),
                                 (kStackTopVa >> 30) & (region_count - 1)};
  auto fresh_region = [&] {
    while (true) {
      const uint64_t r = rng() % region_count;
      if (reserved.insert(r).second) return r;
    }
  };
  std::vector<uint64_t> pool;
  for (int i = 0; i < 24; ++i) pool.push_back(fresh_region());
  std::set<uint64_t> slots_2m_pages, slots_2m_split, pages_4k;
  std::vector<Probe> probes;
  while (static_cast<int>(probes.size()) < count) {
    const int kind = rng() % 20;
    uint64_t va, pa, size, offset;
    PageSize ps;
    if (kind == 0) {
      va = fresh_region() << 30;
      pa = 0;
      size = 1ull << 30;
      ps = PageSize::k1G;
      offset = kData + (rng() % (kRam - kData)) / 8 * 8;
    } else {
      const uint64_t region = pool[rng() % pool.size()];
      const uint64_t slot = (region << 9) | (rng() % 512);
      if (kind < 6) {
        if (slots_2m_pages.contains(slot) || slots_2m_split.contains(slot)) continue;
        slots_2m_pages.insert(slot);
        va = slot << 21;
        pa = kData + (rng() % ((kRam - kData) >> 21)) * (2ull << 20);
        size = 2ull << 20;
        ps = PageSize::k2M;
        offset = (rng() % size) / 8 * 8;
      } else {
        if (slots_2m_pages.contains(slot)) continue;
        const uint64_t page = (slot << 9) | (rng() % 512);
        if (!pages_4k.insert(page).second) continue;
        slots_2m_split.insert(slot);
        va = page << 12;
        pa = kData + (rng() % ((kRam - kData) >> 12)) * 4096;
        size = 4096;
        ps = PageSize::k4K;
        offset = (rng() % size) / 8 * 8;
      }
    }
    va = SignExtend(va, levels);
    absl::Status s = as->Map(Va(va), Pa(pa), size, rng() % 2 ? page_flags::kWritable : 0, ps);
    EXPECT_TRUE(s.ok()) << s;
    if (!s.ok()) return 0;
    probes.push_back({va + offset, pa + offset});
  }
  // The list of addresses, readable by the guest.
  const uint64_t table_bytes = (count * 8 + 4095) / 4096 * 4096;
  Pa table = *b.AllocateFrames(table_bytes / 4096);
  const uint64_t table_va = SignExtend(0xffffd00000000000ull, levels);
  EXPECT_TRUE(as->Map(Va(table_va), table, table_bytes, page_flags::kNoExecute).ok());
  for (int i = 0; i < count; ++i) {
    EXPECT_TRUE(m->WritePhys(table + i * 8,
                             absl::MakeSpan(reinterpret_cast<const uint8_t*>(&probes[i].va), 8))
                    .ok());
  }
  EXPECT_TRUE(b.StartVcpu(VcpuId(0), *as, prog.entry(), Va(0)).ok());
  amd64::GpRegisters gp = m->GetRegisters(VcpuId(0))->gp();
  gp.rsi = table_va;
  gp.rcx = count;
  EXPECT_TRUE(m->SetGpRegisters(VcpuId(0), gp).ok());
  // Nothing is readable in view 1 but the address list.
  View v = *m->CreateView(MemoryAccess::WX());
  for (uint64_t off = 0; off < table_bytes; off += 4096) {
    EXPECT_TRUE(m->SetMemoryAccess(v, Gfn((table.value() + off) / 4096), MemoryAccess::RWX()).ok());
  }
  EXPECT_TRUE(m->SwitchView(v).ok());
  const uint64_t probe_rip = prog.Symbol("probe_load")->value();
  int checked = 0;
  while (true) {
    absl::StatusOr<RunResult> r = m->Run(100'000'000);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok() || r->status != RunStatus::kExit) {
      EXPECT_EQ(r->status, RunStatus::kAllHalted);
      break;
    }
    const Exit& e = *r->exit;
    if (checked >= count || e.kind != ExitKind::kMemoryAccess || e.rip != probe_rip) {
      ADD_FAILURE() << "unexpected exit " << e.ToString();
      break;
    }
    EXPECT_EQ(e.gpa, Pa(probes[checked].pa))
        << "levels=" << levels << " va=" << Va(probes[checked].va);
    EXPECT_EQ(e.access, MemoryAccess::R());
    if (e.gla_valid) {
      EXPECT_EQ(e.gla, Va(probes[checked].va));
    }
    ++checked;
    EXPECT_TRUE(m->Respond({EventAction::kFastSingleStep, kDefaultView, std::nullopt}).ok());
  }
  return checked;
}

TEST(GuestBuilderTest, DifferentialMmuAgainstUnicorn) {
  int total = 0;
  total += RunDifferentialBatch(4, 1, 2600);
  total += RunDifferentialBatch(5, 2, 2600);
  total += RunDifferentialBatch(4, 3, 2600);
  total += RunDifferentialBatch(5, 4, 2600);
  EXPECT_EQ(total, 4 * 2600);
}

}  // namespace
}  // namespace vmi::sim
