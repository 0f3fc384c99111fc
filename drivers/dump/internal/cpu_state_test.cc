// Pins the byte layouts of the CPU state records: Xen's against the
// installed public headers, QEMU's and Linux's against structs written from
// their documented definitions.

#include "drivers/dump/internal/cpu_state.h"

#define __XEN_TOOLS__ 1
#include <xen/xen.h>

#include <cstddef>
#include <cstdint>

#include "gtest/gtest.h"

namespace vmi::dump_internal {
namespace {

static_assert(sizeof(vcpu_guest_context) == kXenContextSize);
static_assert(offsetof(vcpu_guest_context, user_regs) == kXenUserRegsOffset);
static_assert(offsetof(vcpu_guest_context, ctrlreg) == kXenCtrlregOffset);
static_assert(offsetof(vcpu_guest_context, debugreg) == kXenDebugregOffset);
static_assert(offsetof(vcpu_guest_context, fs_base) == kXenFsBaseOffset);
static_assert(offsetof(vcpu_guest_context, gs_base_kernel) == kXenGsBaseKernelOffset);
static_assert(offsetof(vcpu_guest_context, gs_base_user) == kXenGsBaseUserOffset);
static_assert(offsetof(cpu_user_regs, rip) == kXenRipOffset);
static_assert(offsetof(cpu_user_regs, cs) == kXenCsOffset);
static_assert(offsetof(cpu_user_regs, rflags) == kXenRflagsOffset);
static_assert(offsetof(cpu_user_regs, rsp) == kXenRspOffset);
static_assert(offsetof(cpu_user_regs, ss) == kXenSsOffset);
static_assert(offsetof(cpu_user_regs, es) == kXenEsOffset);
static_assert(offsetof(cpu_user_regs, ds) == kXenDsOffset);
static_assert(offsetof(cpu_user_regs, fs) == kXenFsOffset);
static_assert(offsetof(cpu_user_regs, gs) == kXenGsOffset);
static_assert(offsetof(cpu_user_regs, r15) == 0 && offsetof(cpu_user_regs, rax) == 80 &&
              offsetof(cpu_user_regs, rdi) == 112);

// QEMU's target/i386/arch_dump.c, as documented.
struct QemuSegment {
  uint32_t selector, limit, flags, pad;
  uint64_t base;
};
struct QemuCpuState {
  uint32_t version, size;
  uint64_t rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp;
  uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
  uint64_t rip, rflags;
  QemuSegment cs, ds, es, fs, gs, ss, ldt, tr, gdt, idt;
  uint64_t cr[5];
  uint64_t kernel_gs_base;
};
static_assert(sizeof(QemuSegment) == kQemuSegmentSize);
static_assert(offsetof(QemuCpuState, rax) == kQemuGprOffset);
static_assert(offsetof(QemuCpuState, cs) == kQemuSegmentsOffset);
static_assert(offsetof(QemuCpuState, cr) == kQemuCrOffset);
static_assert(offsetof(QemuCpuState, kernel_gs_base) == kQemuKernelGsBaseOffset);
static_assert(sizeof(QemuCpuState) == kQemuCpuStateSize);

// Linux x86-64 elf_prstatus: pr_reg (27 longs) at 112, then pr_fpvalid + pad.
static_assert(kPrstatusRegsOffset + kPrstatusRegCount * 8 + 8 == kPrstatusSize);

amd64::Registers Sample() {
  amd64::Registers r;
  uint64_t v = 0x1000;
  for (uint64_t* f : {&r.rax, &r.rbx, &r.rcx, &r.rdx, &r.rsi, &r.rdi, &r.rbp, &r.rsp, &r.r8, &r.r9,
                      &r.r10, &r.r11, &r.r12, &r.r13, &r.r14, &r.r15, &r.rip, &r.rflags}) {
    *f = v++;
  }
  r.cr0 = 0x80050033;
  r.cr2 = 0x7777;
  r.cr3 = 0x1aa000;
  r.cr4 = 0x3506f8;
  r.cs = {0x10, 0, 0xffffffff, 0xa09b};
  r.ss = {0x18, 0, 0xffffffff, 0xc093};
  r.ds = {0x2b, 0, 0xffffffff, 0xc0f3};
  r.es = r.ds;
  r.fs = {0x0, 0x7f0000001000, 0xffffffff, 0xc0f3};
  r.gs = {0x0, 0xffff888000000000, 0xffffffff, 0xc0f3};
  r.fs_base = r.fs.base;
  r.gs_base = r.gs.base;
  r.kernel_gs_base = 0x7f0000002000;
  r.tr = {0x40, 0xfffffe0000003000, 0x4087, 0x8b};
  r.ldtr = {0, 0, 0, 0x10000 & 0xffff};
  r.gdtr = {0xfffffe0000001000, 0x7f};
  r.idtr = {0xfffffe0000000000, 0xfff};
  return r;
}

TEST(CpuStateTest, PrstatusRoundTripKeepsGprsAndSelectors) {
  const amd64::Registers in = Sample();
  const std::vector<uint8_t> bytes = EncodePrstatus(in, 1);
  ASSERT_EQ(bytes.size(), kPrstatusSize);
  // rip is slot 16 of user_regs_struct.
  uint64_t rip;
  std::memcpy(&rip, bytes.data() + kPrstatusRegsOffset + 16 * 8, 8);
  EXPECT_EQ(rip, in.rip);
  amd64::Registers out;
  DecodePrstatus(bytes, &out);
  EXPECT_EQ(out.gp(), in.gp());
  EXPECT_EQ(out.cs.selector, 0x10);
  EXPECT_EQ(out.ds.selector, 0x2b);
  EXPECT_EQ(out.fs_base, in.fs.base);
  EXPECT_EQ(out.gs_base, in.gs.base);
}

TEST(CpuStateTest, QemuCpuStateRoundTripKeepsControlSegmentAndDescriptorState) {
  const amd64::Registers in = Sample();
  const std::vector<uint8_t> bytes = EncodeQemuCpuState(in);
  QemuCpuState s;
  std::memcpy(&s, bytes.data(), sizeof(s));
  EXPECT_EQ(s.version, 1u);
  EXPECT_EQ(s.size, kQemuCpuStateSize);
  EXPECT_EQ(s.cr[3], in.cr3);
  EXPECT_EQ(s.rsp, in.rsp);
  EXPECT_EQ(s.cs.flags, 0xa09bu << 8);  // DESC_L | DESC_P | type in descriptor-high layout
  amd64::Registers out;
  DecodeQemuCpuState(bytes, &out);
  EXPECT_EQ(out.gp(), in.gp());
  EXPECT_EQ(out.cr0, in.cr0);
  EXPECT_EQ(out.cr2, in.cr2);
  EXPECT_EQ(out.cr3, in.cr3);
  EXPECT_EQ(out.cr4, in.cr4);
  EXPECT_EQ(out.cs, in.cs);
  EXPECT_EQ(out.ss, in.ss);
  EXPECT_EQ(out.fs, in.fs);
  EXPECT_EQ(out.gs, in.gs);
  EXPECT_EQ(out.tr, in.tr);
  EXPECT_EQ(out.gdtr, in.gdtr);
  EXPECT_EQ(out.idtr, in.idtr);
  EXPECT_EQ(out.kernel_gs_base, in.kernel_gs_base);
}

TEST(CpuStateTest, QemuCpuStateVersion1WithoutKernelGsBase) {
  amd64::Registers in = Sample();
  std::vector<uint8_t> bytes = EncodeQemuCpuState(in);
  const uint32_t old_size = kQemuCpuStateSizeV1;
  std::memcpy(bytes.data() + 4, &old_size, 4);
  amd64::Registers out;
  DecodeQemuCpuState(bytes, &out);
  EXPECT_EQ(out.kernel_gs_base, 0u);
  EXPECT_EQ(out.cr3, in.cr3);
}

TEST(CpuStateTest, XenContextRoundTrip) {
  const amd64::Registers in = Sample();
  const std::vector<uint8_t> bytes = EncodeXenContext(in);
  vcpu_guest_context ctx;
  ASSERT_EQ(bytes.size(), sizeof(ctx));
  std::memcpy(&ctx, bytes.data(), sizeof(ctx));
  EXPECT_EQ(ctx.user_regs.rip, in.rip);
  EXPECT_EQ(ctx.user_regs.rax, in.rax);
  EXPECT_EQ(ctx.user_regs.r15, in.r15);
  EXPECT_EQ(ctx.user_regs.cs, in.cs.selector);
  EXPECT_EQ(ctx.ctrlreg[3], in.cr3);
  EXPECT_EQ(ctx.gs_base_kernel, in.kernel_gs_base);
  amd64::Registers out;
  DecodeXenContext(bytes, &out);
  EXPECT_EQ(out.gp(), in.gp());
  EXPECT_EQ(out.cr3, in.cr3);
  EXPECT_EQ(out.cr4, in.cr4);
  EXPECT_EQ(out.ss.selector, in.ss.selector);
  EXPECT_EQ(out.fs_base, in.fs.base);
  EXPECT_EQ(out.gs_base, in.gs.base);
}

TEST(CpuStateTest, SegmentFlagConversionIsAnInverse) {
  for (uint16_t access : {0xa09b, 0xc093, 0x008b, 0x10000 & 0xffff}) {
    EXPECT_EQ(AccessFromQemuFlags(QemuFlagsFromAccess(access)), access & 0xf0ff);
  }
  EXPECT_EQ(AccessFromQemuFlags(0x00af9b00), 0xa09b);  // a 64-bit kernel CS descriptor
}

}  // namespace
}  // namespace vmi::dump_internal
