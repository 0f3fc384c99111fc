// Register marshalling between QEMU's CPU state head and amd64::Registers.

#include "sim/internal/cpu_registers.h"

#include <set>

#include "arch/amd64/bitfields.h"
#include "arch/amd64/events.h"
#include "gtest/gtest.h"

namespace vmi::sim::sim_internal {
namespace {

TEST(CpuRegistersTest, SegmentFlagsConvertBothWays) {
  // A 64-bit kernel code segment as QEMU caches it (descriptor high dword).
  const QemuSegment cs{0x10, 0, 0, 0xffffffff, 0x00af9b00};
  const amd64::Segment s = SegmentFromQemu(cs);
  EXPECT_EQ(s.selector, 0x10);
  EXPECT_EQ(s.limit, 0xffffffffu);
  EXPECT_EQ(s.access, 0xa09b);  // AR bytes: type 0xb, S, P, L, G
  EXPECT_TRUE(amd64::SegmentAccess(s.access).l());
  EXPECT_EQ(QemuFlagsOf(s), 0x00a09b00u);  // the limit nibble is not access rights
  EXPECT_EQ(SegmentFromQemu(QemuSegment{0x10, 0, 0, 0xffffffff, QemuFlagsOf(s)}).access, s.access);
}

TEST(CpuRegistersTest, TheHeadHoldsGprsInEncodingOrder) {
  QemuStateHead h{};
  for (int i = 0; i < 16; ++i) h.regs[i] = 0x100 + i;
  h.eip = 0xffffffff80000000;
  h.cr[0] = 0x80010033;
  h.cr[3] = 0x10000;
  h.cr[4] = 0x620;
  h.segs[kSegFs] = QemuSegment{0, 0, 0x7f0000001000, 0xffff, 0x00f300};
  h.gdt = QemuSegment{0, 0, 0xfffffe0000000000, 0x7f, 0};
  h.idt = QemuSegment{0, 0, 0xfffffe0000001000, 0xfff, 0};
  amd64::Registers r;
  RegistersFromHead(h, &r);
  EXPECT_EQ(r.rax, 0x100u);
  EXPECT_EQ(r.rcx, 0x101u);
  EXPECT_EQ(r.rdx, 0x102u);
  EXPECT_EQ(r.rbx, 0x103u);
  EXPECT_EQ(r.rsp, 0x104u);
  EXPECT_EQ(r.rdi, 0x107u);
  EXPECT_EQ(r.r15, 0x10fu);
  EXPECT_EQ(r.rip, 0xffffffff80000000u);
  EXPECT_EQ(r.cr3, 0x10000u);
  EXPECT_EQ(r.fs_base, 0x7f0000001000u);
  EXPECT_EQ(r.fs.base, 0x7f0000001000u);
  EXPECT_EQ(r.gdtr.limit, 0x7f);
  EXPECT_EQ(r.idtr.base, 0xfffffe0000001000u);
}

TEST(CpuRegistersTest, EveryMarshalledMsrHasItsOwnField) {
  amd64::Registers r;
  std::set<uint64_t*> fields;
  std::set<uint32_t> msrs;
  for (int i = 0; i < kMarshalledMsrCount; ++i) {
    fields.insert(MarshalledMsrField(r, i));
    msrs.insert(kMarshalledMsrs[i]);
  }
  EXPECT_EQ(fields.size(), static_cast<size_t>(kMarshalledMsrCount));
  EXPECT_EQ(msrs.size(), static_cast<size_t>(kMarshalledMsrCount));
  EXPECT_EQ(kMarshalledMsrs[0], amd64::msr::kEfer);  // written first: the mode the rest needs
  EXPECT_EQ(MarshalledMsrField(r, 0), &r.efer);
}

}  // namespace
}  // namespace vmi::sim::sim_internal
