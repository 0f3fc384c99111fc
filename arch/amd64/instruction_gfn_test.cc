#include "arch/amd64/instruction_gfn.h"

#include <optional>

#include "arch/amd64/bitfields.h"
#include "arch/amd64/paging.h"
#include "arch/amd64/registers.h"
#include "arch/amd64/testing/page_store.h"
#include "gtest/gtest.h"

namespace vmi::amd64 {
namespace {

using testing::MemoryPageStore;
using testing::PageTableBuilder;

constexpr uint64_t kP = PageTableEntry::kPresent, kRW = PageTableEntry::kWrite,
                   kUS = PageTableEntry::kUser, kNX = PageTableEntry::kNx;
constexpr uint64_t k4K = 1ull << 12, k2M = 1ull << 21;
constexpr uint16_t kCode64 = 0xb | SegmentAccess::kS | SegmentAccess::kPresent | SegmentAccess::kL;
constexpr uint16_t kCode32 = 0xb | SegmentAccess::kS | SegmentAccess::kPresent | SegmentAccess::kDb;

// A vCPU in 64-bit mode (4- or 5-level paging, NXE) at CPL 0 on `root`.
Registers LongMode(Pa root, bool five_level = false) {
  Registers r;
  r.cr0 = Cr0::kPe | Cr0::kPg;
  r.cr4 = Cr4::kPae | (five_level ? Cr4::kLa57 : 0);
  r.efer = Efer::kLme | Efer::kLma | Efer::kNxe;
  r.cr3 = root.value();
  r.cs = Segment{0x8, 0, 0xffffffff, kCode64};
  return r;
}

TEST(InstructionGfnTest, TheFrameRipTranslatesToIn4And5LevelPaging) {
  for (bool five : {false, true}) {
    MemoryPageStore store(Gfn(0xfffff));
    PageTableBuilder tables(store, five ? PagingMode::FiveLevel() : PagingMode::FourLevel());
    ASSERT_TRUE(tables.Map(Va(0xffffffff81000000), Pa(0x345000), k4K, kP).ok());
    ASSERT_TRUE(tables.Map(Va(0x400000), Pa(0x800000), k2M, kP | kUS).ok());
    Registers regs = LongMode(tables.root(), five);
    regs.rip = 0xffffffff81000ffe;
    EXPECT_EQ(InstructionGfn(store, regs), Gfn(0x345)) << five;
    // A 2 MiB page: the 4 KiB frame inside it.
    regs.rip = 0x4a3010;
    EXPECT_EQ(InstructionGfn(store, regs), Gfn(0x8a3)) << five;
    // PCID and flag bits in CR3 do not matter.
    regs.cr3 |= 0x8000000000000018ull;
    EXPECT_EQ(InstructionGfn(store, regs), Gfn(0x8a3)) << five;
  }
}

TEST(InstructionGfnTest, EmptyWhereAFetchWouldFault) {
  MemoryPageStore store(Gfn(0xfff));
  PageTableBuilder tables(store, PagingMode::FourLevel());
  ASSERT_TRUE(tables.Map(Va(0x1000), Pa(0x5000), k4K, kP | kNX).ok());        // NX
  ASSERT_TRUE(tables.Map(Va(0x2000), Pa(0x6000), k4K, kP).ok());              // supervisor
  ASSERT_TRUE(tables.Map(Va(0x3000), Pa(0x7000), k4K, kP | kRW | kUS).ok());  // user
  ASSERT_TRUE(tables.Map(Va(0x4000), Pa(0x2000000), k4K, kP | kUS).ok());     // beyond RAM: a leaf
  Registers regs = LongMode(tables.root());

  regs.rip = 0x1000;
  EXPECT_EQ(InstructionGfn(store, regs), std::nullopt);
  regs.efer &= ~Efer::kNxe;  // without NXE bit 63 is reserved: the walk itself fails
  EXPECT_EQ(InstructionGfn(store, regs), std::nullopt);
  regs.efer |= Efer::kNxe;

  regs.rip = 0x9000;  // not mapped
  EXPECT_EQ(InstructionGfn(store, regs), std::nullopt);
  regs.rip = 0x8000000000001000;  // not canonical
  EXPECT_EQ(InstructionGfn(store, regs), std::nullopt);

  // Supervisor page: fine at CPL 0, not at CPL 3.
  regs.rip = 0x2000;
  EXPECT_EQ(InstructionGfn(store, regs), Gfn(0x6));
  Registers user = regs;
  user.cs.selector = 0x33;
  user.cs.access = kCode64 | (3 << 5);
  EXPECT_EQ(InstructionGfn(store, user), std::nullopt);
  user.rip = 0x3000;
  EXPECT_EQ(InstructionGfn(store, user), Gfn(0x7));

  // User page at CPL 0: fine unless SMEP.
  regs.rip = 0x3000;
  EXPECT_EQ(InstructionGfn(store, regs), Gfn(0x7));
  regs.cr4 |= Cr4::kSmep;
  EXPECT_EQ(InstructionGfn(store, regs), std::nullopt);

  // The leaf names a frame; whether RAM backs it is not the walk's business.
  regs.rip = 0x4000;
  regs.cr4 &= ~Cr4::kSmep;
  EXPECT_EQ(InstructionGfn(store, regs), Gfn(0x2000));

  // A table beyond what the reader has: no frame, no error.
  ASSERT_TRUE(tables.Map(Va(0x40000000), Pa(0x8000), k4K, kP).ok());
  absl::StatusOr<Pa> pde = tables.EntryAddress(Va(0x40000000), 2);
  ASSERT_TRUE(pde.ok());
  store.Write64(*pde, 0x7fff000 | kP | kRW);
  regs.rip = 0x40000000;
  EXPECT_EQ(InstructionGfn(store, regs), std::nullopt);
}

TEST(InstructionGfnTest, OutsideLongModeCsBaseCountsAndPagingMayBeOff) {
  MemoryPageStore store(Gfn(0xfff));
  Registers regs;
  regs.cr0 = Cr0::kPe;  // protected mode, no paging: linear = physical
  regs.cs = Segment{0x8, 0x10000, 0xffffffff, kCode32};
  regs.rip = 0x2345;
  EXPECT_EQ(InstructionLinearAddress(regs), Va(0x12345));
  EXPECT_EQ(InstructionGfn(store, regs), Gfn(0x12));

  PageTableBuilder tables(store, PagingMode::Pae());
  ASSERT_TRUE(tables.Map(Va(0x12000), Pa(0x77000), k4K, kP).ok());
  regs.cr0 |= Cr0::kPg;
  regs.cr4 = Cr4::kPae;
  regs.cr3 = tables.root().value();
  EXPECT_EQ(InstructionGfn(store, regs), Gfn(0x77));
  // In 64-bit mode the CS base is ignored.
  EXPECT_EQ(InstructionLinearAddress(LongMode(Pa(0)) /* rip 0 */), Va(0));
  Registers long_mode = LongMode(Pa(0));
  long_mode.cs.base = 0x10000;
  long_mode.rip = 0x2345;
  EXPECT_EQ(InstructionLinearAddress(long_mode), Va(0x2345));
}

}  // namespace
}  // namespace vmi::amd64
