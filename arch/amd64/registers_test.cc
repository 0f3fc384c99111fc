#include "arch/amd64/registers.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmi::amd64 {
namespace {

using ::testing::HasSubstr;

// A 64-bit Linux kernel at a syscall entry.
Registers KernelRegisters() {
  Registers r;
  r.rax = 0x3c;
  r.rsp = 0xffffc90000123f58;
  r.rbp = 0xffffc90000123f80;
  r.rip = 0xffffffff81000040;
  r.rflags = 0x246;
  r.cr0 = 0x80050033;
  r.cr3 = 0x10a4000;
  r.cr4 = 0x3506f0;
  r.efer = 0xd01;
  r.cs = {.selector = 0x10, .base = 0, .limit = 0xffffffff, .access = 0xa09b};
  r.ss = {.selector = 0x18, .base = 0, .limit = 0xffffffff, .access = 0xc093};
  r.idtr = {.base = 0xfffffe0000000000, .limit = 0xfff};
  r.lstar = 0xffffffff81000000;
  return r;
}

TEST(RegistersTest, PointersAndReturnValue) {
  Registers r = KernelRegisters();
  EXPECT_EQ(InstructionPointer(r), Va(0xffffffff81000040));
  EXPECT_EQ(StackPointer(r), Va(0xffffc90000123f58));
  EXPECT_EQ(FramePointer(r), Va(0xffffc90000123f80));
  EXPECT_EQ(ReturnValue(r), 0x3cu);
}

TEST(RegistersTest, AddressWidthFollowsLma) {
  Registers r = KernelRegisters();
  EXPECT_EQ(AddressWidth(r), 8);
  EXPECT_EQ(EffectiveAddressWidth(r), 8);

  // Compatibility mode: long mode active, 32-bit code segment (L clear).
  r.cs.access = 0xc0fb;
  EXPECT_EQ(AddressWidth(r), 8);
  EXPECT_EQ(EffectiveAddressWidth(r), 4);

  // Legacy protected mode: LMA clear, even if CS.L happens to be set.
  r = KernelRegisters();
  r.efer = 0;
  EXPECT_EQ(AddressWidth(r), 4);
  EXPECT_EQ(EffectiveAddressWidth(r), 4);
  // LME alone (before paging is on) is not long mode.
  r.efer = 0x100;
  EXPECT_EQ(AddressWidth(r), 4);
}

TEST(RegistersTest, IsUserMode) {
  Registers r = KernelRegisters();
  EXPECT_FALSE(IsUserMode(r));

  r.cs = {.selector = 0x33, .base = 0, .limit = 0xffffffff, .access = 0xa0fb};
  EXPECT_TRUE(IsUserMode(r));

  // Either indication suffices.
  r.cs.selector = 0x30;
  EXPECT_TRUE(IsUserMode(r));
  r.cs.selector = 0x33;
  r.cs.access = 0xa09b;
  EXPECT_TRUE(IsUserMode(r));
  // RPL 1/2 and DPL 0 are not user mode.
  r.cs.selector = 0x31;
  EXPECT_FALSE(IsUserMode(r));
}

TEST(RegistersTest, FormatRegistersNamesFlags) {
  Registers r = KernelRegisters();
  std::string dump = FormatRegisters(r);
  EXPECT_THAT(dump, HasSubstr("rax=000000000000003c rbx=0000000000000000"));
  EXPECT_THAT(dump, HasSubstr("r8 =0000000000000000 r9 =0000000000000000"));
  EXPECT_THAT(dump, HasSubstr("rip=ffffffff81000040 rflags=0000000000000246 [PF|ZF|IF]\n"));
  EXPECT_THAT(dump, HasSubstr("cr0=0000000080050033 [PE|MP|ET|NE|WP|AM|PG]\n"));
  EXPECT_THAT(dump, HasSubstr("cr3=00000000010a4000 [base=0x10a4000]\n"));
  EXPECT_THAT(dump, HasSubstr("efer=0000000000000d01 [SCE|LME|LMA|NXE]\n"));
  EXPECT_THAT(dump, HasSubstr("cs   sel=0010 base=0000000000000000 limit=ffffffff "
                              "type=0xb S DPL=0 P L G\n"));
  EXPECT_THAT(dump, HasSubstr("idtr base=fffffe0000000000 limit=0fff\n"));
  EXPECT_THAT(dump, HasSubstr("lstar=ffffffff81000000"));
  EXPECT_EQ(dump.back(), '\n');

  // With PCIDE the low CR3 bits print as a PCID.
  r.cr3 = 0x10a4005;
  r.cr4 |= 1 << 17;
  EXPECT_THAT(FormatRegisters(r), HasSubstr("cr3=00000000010a4005 [base=0x10a4000 pcid=0x5]\n"));
}

}  // namespace
}  // namespace vmi::amd64
