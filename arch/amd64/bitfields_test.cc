#include "arch/amd64/bitfields.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <iterator>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"

namespace vmi::amd64 {
namespace {

TEST(Cr0Test, LinuxLongModeValue) {
  Cr0 cr0(0x80050033);
  EXPECT_TRUE(cr0.pe());
  EXPECT_TRUE(cr0.mp());
  EXPECT_FALSE(cr0.em());
  EXPECT_FALSE(cr0.ts());
  EXPECT_TRUE(cr0.et());
  EXPECT_TRUE(cr0.ne());
  EXPECT_TRUE(cr0.wp());
  EXPECT_TRUE(cr0.am());
  EXPECT_FALSE(cr0.nw());
  EXPECT_FALSE(cr0.cd());
  EXPECT_TRUE(cr0.pg());
  EXPECT_EQ(cr0.ToString(), "PE|MP|ET|NE|WP|AM|PG");
  EXPECT_EQ(absl::StrFormat("%s", cr0), "PE|MP|ET|NE|WP|AM|PG");
}

TEST(Cr0Test, WithSetsAndClearsBits) {
  constexpr Cr0 cr0 = Cr0().With(Cr0::kPe).With(Cr0::kPg);
  static_assert(cr0.value() == 0x80000001);
  EXPECT_EQ(cr0.With(Cr0::kPg, false), Cr0(1));
  EXPECT_EQ(Cr0(0).ToString(), "0");
}

TEST(Cr0Test, UnknownBitsAreShownInHex) {
  EXPECT_EQ(Cr0(0x80000001 | (uint64_t{1} << 40)).ToString(), "PE|PG|0x10000000000");
}

TEST(Cr3Test, AddressesPerPagingMode) {
  Cr3 cr3(0x8000'0001'2345'6018);  // NOFLUSH, address 0x123456000, PCD|PWT
  EXPECT_EQ(cr3.table_address_4level(), 0x1'2345'6000u);
  EXPECT_EQ(cr3.legacy_address(), 0x2345'6000u);
  EXPECT_EQ(cr3.pae_pdpt_address(), 0x2345'6000u);
  EXPECT_TRUE(cr3.pwt());
  EXPECT_TRUE(cr3.pcd());
  EXPECT_TRUE(cr3.noflush());
  EXPECT_EQ(cr3.pcid(), 0x18);
  // PAE's PDPT is only 32-byte aligned.
  EXPECT_EQ(Cr3(0x1ae0).pae_pdpt_address(), 0x1ae0u);
  EXPECT_EQ(Cr3(0x1ae0).legacy_address(), 0x1000u);
  // Bits above 51 (NOFLUSH, reserved) are not part of the address.
  EXPECT_EQ(Cr3(0xfff0'0000'0000'1000).table_address_4level(), 0x1000u);
}

TEST(Cr3Test, ToStringDependsOnPcide) {
  Cr3 cr3(0x1ad018);
  EXPECT_EQ(cr3.ToString(), "base=0x1ad000 PWT PCD");
  EXPECT_EQ(cr3.ToString(/*pcide=*/true), "base=0x1ad000 pcid=0x18");
  EXPECT_EQ(Cr3(0x8000'0000'001a'd005).ToString(true), "base=0x1ad000 pcid=0x5 NOFLUSH");
}

TEST(Cr4Test, Flags) {
  // A typical Linux guest CR4: PSE PAE MCE PGE OSFXSR OSXMMEXCPT FSGSBASE
  // PCIDE OSXSAVE SMEP SMAP... here a subset plus LA57.
  Cr4 cr4(0x3506f0 | Cr4::kLa57);
  EXPECT_TRUE(cr4.pse());
  EXPECT_TRUE(cr4.pae());
  EXPECT_TRUE(cr4.mce());
  EXPECT_TRUE(cr4.pge());
  EXPECT_FALSE(cr4.pce());
  EXPECT_TRUE(cr4.osfxsr());
  EXPECT_TRUE(cr4.osxmmexcpt());
  EXPECT_TRUE(cr4.la57());
  EXPECT_TRUE(cr4.fsgsbase());
  EXPECT_FALSE(cr4.pcide());
  EXPECT_TRUE(cr4.osxsave());
  EXPECT_TRUE(cr4.smep());
  EXPECT_TRUE(cr4.smap());
  EXPECT_FALSE(cr4.pke());
  EXPECT_EQ(cr4.ToString(), "PSE|PAE|MCE|PGE|OSFXSR|OSXMMEXCPT|LA57|FSGSBASE|OSXSAVE|SMEP|SMAP");
  EXPECT_EQ(Cr4::kPcide, uint64_t{1} << 17);
  EXPECT_EQ(Cr4::kCet, uint64_t{1} << 23);
  EXPECT_EQ(Cr4(Cr4::kVmxe | Cr4::kPks | Cr4::kCet).ToString(), "VMXE|CET|PKS");
}

TEST(EferTest, LongModeWithNx) {
  Efer efer(0xd01);
  EXPECT_TRUE(efer.sce());
  EXPECT_TRUE(efer.lme());
  EXPECT_TRUE(efer.lma());
  EXPECT_TRUE(efer.nxe());
  EXPECT_FALSE(efer.svme());
  EXPECT_FALSE(efer.ffxsr());
  EXPECT_EQ(efer.ToString(), "SCE|LME|LMA|NXE");
  EXPECT_EQ(Efer(Efer::kSvme | Efer::kTce).ToString(), "SVME|TCE");
}

TEST(RflagsTest, FlagsAndIopl) {
  Rflags rflags(0x246);  // reserved bit 1, PF, ZF, IF
  EXPECT_TRUE(rflags.pf());
  EXPECT_TRUE(rflags.zf());
  EXPECT_TRUE(rflags.if_());
  EXPECT_FALSE(rflags.cf());
  EXPECT_FALSE(rflags.tf());
  EXPECT_EQ(rflags.iopl(), 0);
  EXPECT_EQ(rflags.ToString(), "PF|ZF|IF");

  Rflags user(0x3202 | Rflags::kTf | Rflags::kId);
  EXPECT_EQ(user.iopl(), 3);
  EXPECT_TRUE(user.tf());
  EXPECT_TRUE(user.id());
  EXPECT_EQ(user.ToString(), "TF|IF|ID|IOPL=3");
  EXPECT_EQ(Rflags(0x2).ToString(), "0");
  EXPECT_EQ(Rflags(0x1002).ToString(), "IOPL=1");
}

TEST(SelectorTest, Fields) {
  Selector kernel_cs(0x10);
  EXPECT_EQ(kernel_cs.index(), 2);
  EXPECT_FALSE(kernel_cs.ti());
  EXPECT_EQ(kernel_cs.rpl(), 0);

  Selector user_cs(0x33);  // Linux __USER_CS
  EXPECT_EQ(user_cs.index(), 6);
  EXPECT_FALSE(user_cs.ti());
  EXPECT_EQ(user_cs.rpl(), 3);
  EXPECT_EQ(user_cs.ToString(), "0x33 (GDT[6] RPL=3)");

  constexpr Selector ldt(5, true, 1);
  static_assert(ldt.value() == 0x2d);
  EXPECT_EQ(ldt.ToString(), "0x2d (LDT[5] RPL=1)");
}

TEST(SegmentAccessTest, LongModeCodeSegment) {
  SegmentAccess cs(0xa09b);  // 64-bit kernel code: type 0xb, S, DPL 0, P, L, G
  EXPECT_EQ(cs.type(), 0xb);
  EXPECT_TRUE(cs.s());
  EXPECT_EQ(cs.dpl(), 0);
  EXPECT_TRUE(cs.present());
  EXPECT_FALSE(cs.avl());
  EXPECT_TRUE(cs.l());
  EXPECT_FALSE(cs.db());
  EXPECT_TRUE(cs.g());
  EXPECT_FALSE(cs.unusable());
  EXPECT_TRUE(cs.code());
  EXPECT_EQ(cs.ToString(), "type=0xb S DPL=0 P L G");

  SegmentAccess user_data(0xc0f3);  // 32-bit data, DPL 3
  EXPECT_EQ(user_data.dpl(), 3);
  EXPECT_TRUE(user_data.db());
  EXPECT_FALSE(user_data.l());
  EXPECT_FALSE(user_data.code());

  SegmentAccess unusable(0x1c000);
  EXPECT_TRUE(unusable.unusable());
  EXPECT_FALSE(unusable.present());
  EXPECT_EQ(unusable.ToString(), "type=0x0 DPL=0 DB G UNUSABLE");
}

// Linux's gate for #DE: asm_exc_divide_error at 0xffffffff81a00ab0, kernel
// CS 0x10, interrupt gate, DPL 0, present.
constexpr uint8_t kLinuxDivideErrorGate[16] = {0xb0, 0x0a, 0x10, 0x00, 0x00, 0x8e, 0xa0, 0x81,
                                               0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00};

TEST(IdtGateTest, DecodesLinuxGate) {
  IdtGate gate = IdtGate::Decode(kLinuxDivideErrorGate);
  EXPECT_EQ(gate.offset, 0xffffffff81a00ab0u);
  EXPECT_EQ(gate.selector, 0x10);
  EXPECT_EQ(gate.ist, 0);
  EXPECT_EQ(gate.type, IdtGate::kInterruptGate);
  EXPECT_TRUE(gate.is_interrupt_gate());
  EXPECT_FALSE(gate.is_trap_gate());
  EXPECT_EQ(gate.dpl, 0);
  EXPECT_TRUE(gate.present);
  EXPECT_EQ(gate.ToString(),
            "offset=0xffffffff81a00ab0 selector=0x10 ist=0 interrupt-gate dpl=0 P");
}

TEST(IdtGateTest, DecodesIstAndUserDpl) {
  // A Windows-style NMI gate on IST 3, and an INT3 gate callable from user mode.
  constexpr uint8_t nmi[16] = {0x78, 0x56, 0x10, 0x00, 0x03, 0x8e, 0x34, 0x12,
                               0x03, 0xf8, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00};
  IdtGate gate = IdtGate::Decode(nmi);
  EXPECT_EQ(gate.offset, 0xfffff80312345678u);
  EXPECT_EQ(gate.ist, 3);
  EXPECT_EQ(gate.dpl, 0);

  constexpr uint8_t bp[16] = {0x00, 0x10, 0x10, 0x00, 0x00, 0xef, 0x00, 0x00,
                              0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
  IdtGate trap = IdtGate::Decode(bp);
  EXPECT_EQ(trap.offset, 0x1000u);
  EXPECT_TRUE(trap.is_trap_gate());
  EXPECT_EQ(trap.dpl, 3);
  EXPECT_TRUE(trap.present);
}

TEST(IdtGateTest, EncodeRoundTrips) {
  IdtGate gate = IdtGate::Decode(kLinuxDivideErrorGate);
  std::array<uint8_t, 16> bytes = gate.Encode();
  EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), std::begin(kLinuxDivideErrorGate)));

  IdtGate custom{.offset = 0x0123456789abcdef,
                 .selector = 0x8,
                 .ist = 7,
                 .type = IdtGate::kTrapGate,
                 .dpl = 2,
                 .present = false};
  std::array<uint8_t, 16> encoded = custom.Encode();
  EXPECT_EQ(encoded[5], 0x4f);  // type 0xf, DPL 2, not present
  EXPECT_EQ(IdtGate::Decode(encoded.data()), custom);
  EXPECT_EQ(custom.ToString(), "offset=0x123456789abcdef selector=0x8 ist=7 trap-gate dpl=2 NP");
}

TEST(IdtGateTest, DecodeIgnoresReservedBits) {
  uint8_t bytes[16];
  std::copy(std::begin(kLinuxDivideErrorGate), std::end(kLinuxDivideErrorGate), bytes);
  bytes[4] |= 0xf8;  // reserved above IST
  bytes[5] |= 0x10;  // reserved zero bit
  bytes[12] = 0xff;  // reserved dword
  EXPECT_EQ(IdtGate::Decode(bytes), IdtGate::Decode(kLinuxDivideErrorGate));
}

TEST(IdtGateTest, DecodeIsConstexpr) {
  constexpr IdtGate gate = IdtGate::Decode(kLinuxDivideErrorGate);
  static_assert(gate.offset == 0xffffffff81a00ab0u);
  static_assert(gate.Encode()[5] == 0x8e);
  SUCCEED();
}

}  // namespace
}  // namespace vmi::amd64
