#include "drivers/qemu/internal/monitor_text.h"

#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmi::qemu_internal {
namespace {

using ::testing::HasSubstr;

// Real output of QEMU 7.2 (pc machine, 512 MiB in backend "ram"), shortened.
constexpr char kMtree[] = R"(FlatView #0
 AS "cpu-smm-1", root: memory
 Root memory region: memory
  0000000000000000-00000000000c2fff (prio 0, ram): ram
  0000000000100000-000000001fffffff (prio 0, ram): ram @0000000000100000

FlatView #1
 AS "I/O", root: io
 Root memory region: io
  0000000000000000-0000000000000007 (prio 0, i/o): dma-chan

FlatView #2
 AS "memory", root: system
 AS "cpu-memory-0", root: system
 Root memory region: system
  0000000000000000-00000000000c2fff (prio 0, ram): ram
  00000000000c3000-00000000000e7fff (prio 0, rom): ram @00000000000c3000
  00000000000e8000-00000000000effff (prio 0, ram): ram @00000000000e8000
  00000000000f0000-00000000000fffff (prio 0, rom): ram @00000000000f0000
  0000000000100000-000000001fffffff (prio 0, ram): ram @0000000000100000 KVM
  00000000fec00000-00000000fec00fff (prio 0, i/o): ioapic
  00000000fffc0000-00000000ffffffff (prio 0, rom): pc.bios
  0000000100000000-000000011fffffff (prio 0, ram): ram @0000000020000000

FlatView #3
 AS "cpu-smm-0", root: memory
  0000000000000000-00000000000c2fff (prio 0, ram): ram
)";

TEST(MtreeTest, RangesOfTheMemoryAddressSpaceMappingTheBackend) {
  absl::StatusOr<std::vector<RamRange>> r = ParseMtreeRam(kMtree, "ram");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, (std::vector<RamRange>{
                    {0x0, 0xc3000, 0x0, false},
                    {0xc3000, 0x25000, 0xc3000, true},
                    {0xe8000, 0x8000, 0xe8000, false},
                    {0xf0000, 0x10000, 0xf0000, true},
                    {0x100000, 0x1ff00000, 0x100000, false},
                    {0x100000000, 0x20000000, 0x20000000, false},
                }));
  EXPECT_EQ(ParseMtreeRam(kMtree, "other").status().code(), absl::StatusCode::kNotFound);
}

TEST(MtreeTest, CarriageReturnsAsTheMonitorSendsThem) {
  std::string crlf;
  for (char c : std::string(kMtree)) {
    if (c == '\n') crlf += '\r';
    crlf += c;
  }
  absl::StatusOr<std::vector<RamRange>> r = ParseMtreeRam(crlf, "ram");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->size(), 6u);
  absl::StatusOr<std::vector<CpuDescriptors>> cpus = ParseInfoRegisters(
      "CPU#0\r\nCS =0010 0000000000000000 ffffffff 00af9b00 DPL=0 CS64 [-RA]\r\n"
      "GDT=     fffffe0000001000 0000007f\r\n");
  ASSERT_TRUE(cpus.ok()) << cpus.status();
  EXPECT_EQ((*cpus)[0].gdtr.limit, 0x7f);
}

TEST(MtreeTest, AdjacentRangesCoalesceAndBadLinesAreRefused) {
  const char adjacent[] =
      " AS \"memory\", root: system\n"
      "  0000000000000000-0000000000000fff (prio 0, ram): ram\n"
      "  0000000000001000-0000000000001fff (prio 0, ram): ram @0000000000001000\n";
  absl::StatusOr<std::vector<RamRange>> r = ParseMtreeRam(adjacent, "ram");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, (std::vector<RamRange>{{0, 0x2000, 0, false}}));
  const char bad_offset[] =
      " AS \"memory\", root: system\n  0000000000000000-0000000000000fff (prio 0, ram): ram @zz\n";
  EXPECT_THAT(std::string(ParseMtreeRam(bad_offset, "ram").status().message()), HasSubstr("bad offset"));
  const char overlap[] =
      " AS \"memory\", root: system\n"
      "  0000000000000000-0000000000001fff (prio 0, ram): ram\n"
      "  0000000000001000-0000000000002fff (prio 0, ram): ram @0000000000005000\n";
  EXPECT_THAT(std::string(ParseMtreeRam(overlap, "ram").status().message()), HasSubstr("overlap"));
  const char backwards[] =
      " AS \"memory\", root: system\n  0000000000002000-0000000000000fff (prio 0, ram): ram\n";
  EXPECT_THAT(std::string(ParseMtreeRam(backwards, "ram").status().message()), HasSubstr("bad range"));
}

constexpr char kInfoRegisters[] = R"(
CPU#0
RAX=000000000001ad40 RBX=0000000000000000 RCX=0000000000000001 RDX=4000000000000000
RIP=ffffffffa14592eb RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1
ES =0000 0000000000000000 00000000 00000000
CS =0010 0000000000000000 ffffffff 00af9b00 DPL=0 CS64 [-RA]
SS =0018 0000000000000000 ffffffff 00cf9300 DPL=0 DS   [-WA]
DS =0000 0000000000000000 00000000 00000000
FS =0000 0000000000000000 00000000 00000000
GS =0000 ffff89d55f400000 00000000 00000000
LDT=0000 0000000000000000 00000000 00008200 DPL=0 LDT
TR =0040 fffffe0000003000 00004087 00008900 DPL=0 TSS64-avl
GDT=     fffffe0000001000 0000007f
IDT=     fffffe0000000000 00000fff
CR0=80050033 CR2=00000000004f0215 CR3=0000000002c74000 CR4=00750ef0
DR0=0000000000000011 DR1=0000000000000022 DR2=0000000000000033 DR3=0000000000000044
DR6=00000000ffff0ff0 DR7=0000000000000400
EFER=0000000000000d01
CPU#1
CS =0010 0000000000000000 ffffffff 00af9b00 DPL=0 CS64 [-RA]
GDT=     fffffe000002f000 0000007f
IDT=     fffffe0000000000 00000fff
)";

TEST(InfoRegistersTest, DescriptorCachesTablesAndDebugRegistersPerCpu) {
  absl::StatusOr<std::vector<CpuDescriptors>> cpus = ParseInfoRegisters(kInfoRegisters);
  ASSERT_TRUE(cpus.ok()) << cpus.status();
  ASSERT_EQ(cpus->size(), 2u);
  const CpuDescriptors& c = (*cpus)[0];
  EXPECT_EQ(c.cs.selector, 0x10);
  EXPECT_EQ(c.cs.limit, 0xffffffffu);
  EXPECT_EQ(c.cs.access, 0xa09b);  // type 0xb, S, P, L, G
  EXPECT_EQ(c.ss.access, 0xc093);
  EXPECT_EQ(c.gs.base, 0xffff89d55f400000u);
  EXPECT_EQ(c.tr.selector, 0x40);
  EXPECT_EQ(c.tr.base, 0xfffffe0000003000u);
  EXPECT_EQ(c.tr.access, 0x89);
  EXPECT_EQ(c.gdtr.base, 0xfffffe0000001000u);
  EXPECT_EQ(c.gdtr.limit, 0x7f);
  EXPECT_EQ(c.idtr.limit, 0xfff);
  EXPECT_EQ(c.dr[0], 0x11u);
  EXPECT_EQ(c.dr[3], 0x44u);
  EXPECT_EQ(c.dr[6], 0xffff0ff0u);
  EXPECT_EQ(c.dr[7], 0x400u);
  EXPECT_EQ((*cpus)[1].gdtr.base, 0xfffffe000002f000u);
}

TEST(InfoRegistersTest, MalformedLinesAreRefused) {
  EXPECT_THAT(std::string(ParseInfoRegisters("CPU#0\nCS =xyz\n").status().message()),
              HasSubstr("bad segment line"));
  EXPECT_THAT(std::string(ParseInfoRegisters("CPU#0\nGDT=     12\n").status().message()),
              HasSubstr("bad table line"));
  EXPECT_FALSE(ParseInfoRegisters("").ok());
}

TEST(TargetDescriptionTest, RegistersInOrderWithOffsetsThroughIncludes) {
  const std::map<std::string, std::string> documents = {
      {"core.xml",
       R"(<feature name="core"><reg name="rax" bitsize="64" type="int64" regnum="0"/>
          <reg name="rbx" bitsize="64"/>
          <!-- <reg name="ss_base" bitsize="64" type="int64"/> -->
          <reg name="eflags" bitsize="32" type="x64_eflags"/>
          <reg name="st0" bitsize="80"/><reg name="cr0" bitsize="64" regnum="40"/>
          <reg name="cr3" bitsize="64"/></feature>)"},
  };
  auto read = [&](const std::string& name) -> absl::StatusOr<std::string> {
    auto it = documents.find(name);
    if (it == documents.end()) return absl::NotFoundError(name);
    return it->second;
  };
  absl::StatusOr<std::vector<GdbRegister>> regs = ParseTargetDescription(
      R"(<target><architecture>i386:x86-64</architecture><xi:include href="core.xml"/></target>)", read);
  ASSERT_TRUE(regs.ok()) << regs.status();
  ASSERT_EQ(regs->size(), 6u);
  EXPECT_EQ((*regs)[2].name, "eflags");
  EXPECT_EQ((*regs)[2].offset, 16u);
  EXPECT_EQ((*regs)[2].regnum, 2u);
  EXPECT_EQ((*regs)[3].offset, 20u);  // st0 after the 4-byte eflags
  EXPECT_EQ((*regs)[4].offset, 30u);  // after the 10-byte st0
  EXPECT_EQ((*regs)[4].regnum, 40u);
  EXPECT_EQ((*regs)[5].regnum, 41u);
  EXPECT_FALSE(ParseTargetDescription(R"(<target><xi:include href="missing.xml"/></target>)", read).ok());
  EXPECT_FALSE(ParseTargetDescription(R"(<reg name="x" bitsize="7"/>)", read).ok());
  EXPECT_FALSE(ParseTargetDescription("<target></target>", read).ok());
  // A document that includes itself is cut off.
  auto loop = [](const std::string&) -> absl::StatusOr<std::string> {
    return std::string(R"(<xi:include href="self.xml"/>)");
  };
  EXPECT_THAT(std::string(ParseTargetDescription(R"(<xi:include href="self.xml"/>)", loop).status().message()),
              HasSubstr("too many documents"));
}

}  // namespace
}  // namespace vmi::qemu_internal
