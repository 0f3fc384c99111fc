// Exit::ToString: one line naming the kind and its fields, for every kind.

#include "gtest/gtest.h"
#include "sim/machine.h"

namespace vmi::sim {
namespace {

Exit Base(ExitKind kind) {
  Exit e;
  e.vcpu = VcpuId(1);
  e.view = View(2);
  e.kind = kind;
  e.rip = 0xffffffff80000010;
  return e;
}

TEST(ExitFormatTest, EveryKindNamesItsFields) {
  Exit m = Base(ExitKind::kMemoryAccess);
  m.gpa = Pa(0x7000);
  m.access = MemoryAccess::W();
  EXPECT_EQ(m.ToString(),
            "vcpu=1 view=2 memory_access rip=0xffffffff80000010 gpa=0x7000 gla=invalid access=-w-");
  m.gla = Va(0x401000);
  m.gla_valid = true;
  EXPECT_EQ(m.ToString(),
            "vcpu=1 view=2 memory_access rip=0xffffffff80000010 gpa=0x7000 gla=0x401000 access=-w-");
  Exit b = Base(ExitKind::kBreakpoint);
  b.gpa = Pa(0x1010);
  b.insn_length = 1;
  EXPECT_EQ(b.ToString(), "vcpu=1 view=2 breakpoint rip=0xffffffff80000010 gpa=0x1010 len=1");
  EXPECT_EQ(Base(ExitKind::kSingleStep).ToString(), "vcpu=1 view=2 singlestep rip=0xffffffff80000010");
  Exit cr = Base(ExitKind::kControlRegister);
  cr.cr = 3;
  cr.old_value = 0x10000;
  cr.new_value = 0x11000;
  EXPECT_EQ(cr.ToString(), "vcpu=1 view=2 cr_write rip=0xffffffff80000010 cr3 old=0x10000 new=0x11000");
  Exit msr = Base(ExitKind::kMsrWrite);
  msr.msr = 0xc0000082;
  EXPECT_EQ(msr.ToString(),
            "vcpu=1 view=2 msr_write rip=0xffffffff80000010 msr=0xc0000082 old=0x0 new=0x0");
  Exit cpuid = Base(ExitKind::kCpuid);
  cpuid.leaf = 7;
  EXPECT_EQ(cpuid.ToString(), "vcpu=1 view=2 cpuid rip=0xffffffff80000010 leaf=0x7 subleaf=0x0");
  Exit io = Base(ExitKind::kIo);
  io.port = 0xe9;
  io.io_size = 1;
  io.io_string = true;
  EXPECT_EQ(io.ToString(), "vcpu=1 view=2 io rip=0xffffffff80000010 port=0xe9 size=1 out string");
  EXPECT_EQ(Base(ExitKind::kVmcall).ToString(), "vcpu=1 view=2 vmcall rip=0xffffffff80000010");
  Exit d = Base(ExitKind::kDescriptorTable);
  d.descriptor_op = DescriptorOp::kLidt;
  EXPECT_EQ(d.ToString(), "vcpu=1 view=2 descriptor_table rip=0xffffffff80000010 op=lidt");
  Exit i = Base(ExitKind::kInterrupt);
  i.vector = 14;
  i.has_error_code = true;
  i.error_code = 2;
  EXPECT_EQ(i.ToString(), "vcpu=1 view=2 interrupt rip=0xffffffff80000010 vector=14 error_code=0x2");
}

}  // namespace
}  // namespace vmi::sim
