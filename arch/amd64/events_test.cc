#include "arch/amd64/events.h"

#include <variant>

#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/hash/hash_testing.h"
#include "absl/strings/str_format.h"
#include "arch/amd64/interrupt.h"
#include "gtest/gtest.h"

namespace vmi::amd64 {
namespace {

TEST(InterruptTest, PageFault) {
  Interrupt pf =
      Interrupt::PageFault(Va(0x7fff0000), page_fault_error::kWrite | page_fault_error::kUser);
  EXPECT_EQ(pf.vector, 14);
  EXPECT_EQ(pf.type, InterruptType::kHardwareException);
  EXPECT_TRUE(pf.has_error_code);
  EXPECT_EQ(pf.error_code, 6u);
  EXPECT_EQ(pf.instruction_length, 0);
  EXPECT_EQ(pf.extra, 0x7fff0000u);
  EXPECT_EQ(pf.ToString(), "#PF vector=14 hardware-exception error_code=0x6 cr2=0x7fff0000");
  EXPECT_EQ(absl::StrFormat("%s", pf), pf.ToString());
}

TEST(InterruptTest, BreakpointIsSoftwareException) {
  Interrupt bp = Interrupt::Breakpoint(1);
  EXPECT_EQ(bp.vector, exception::kBreakpoint);
  EXPECT_EQ(bp.type, InterruptType::kSoftwareException);
  EXPECT_FALSE(bp.has_error_code);
  EXPECT_EQ(bp.instruction_length, 1);
  EXPECT_EQ(bp.ToString(), "#BP vector=3 software-exception instruction_length=1");
  EXPECT_EQ(static_cast<int>(InterruptType::kSoftwareException), 6);
  EXPECT_EQ(static_cast<int>(InterruptType::kPrivilegedSoftwareException), 5);
}

TEST(InterruptTest, OtherConstructors) {
  Interrupt gp = Interrupt::GeneralProtection(0x10);
  EXPECT_EQ(gp.vector, 13);
  EXPECT_TRUE(gp.has_error_code);
  EXPECT_EQ(gp.error_code, 0x10u);
  EXPECT_EQ(gp.ToString(), "#GP vector=13 hardware-exception error_code=0x10");

  EXPECT_EQ(Interrupt::Exception(exception::kGeneralProtection, 0x10), gp);
  // A vector that pushes an error code always gets one.
  Interrupt df = Interrupt::Exception(exception::kDoubleFault);
  EXPECT_TRUE(df.has_error_code);
  EXPECT_EQ(df.error_code, 0u);
  Interrupt ud = Interrupt::Exception(exception::kInvalidOpcode);
  EXPECT_FALSE(ud.has_error_code);
  EXPECT_EQ(ud.ToString(), "#UD vector=6 hardware-exception");

  Interrupt timer = Interrupt::External(0xec);
  EXPECT_EQ(timer.type, InterruptType::kExternal);
  EXPECT_FALSE(timer.has_error_code);
  EXPECT_EQ(timer.ToString(), "vector=236 external");
  EXPECT_NE(timer, Interrupt::External(0xed));

  EXPECT_EQ(Interrupt::Nmi().ToString(), "NMI vector=2 nmi");
}

TEST(InterruptTest, ErrorCodeVectors) {
  for (int v = 0; v < 256; ++v) {
    bool expected = v == 8 || (v >= 10 && v <= 14) || v == 17 || v == 21;
    EXPECT_EQ(ExceptionHasErrorCode(static_cast<uint8_t>(v)), expected) << v;
  }
}

TEST(InterruptTest, ExceptionNames) {
  EXPECT_STREQ(ExceptionName(exception::kDivideError), "#DE");
  EXPECT_STREQ(ExceptionName(exception::kPageFault), "#PF");
  EXPECT_STREQ(ExceptionName(15), "reserved");
  EXPECT_STREQ(ExceptionName(exception::kX87FloatingPoint), "#MF");
  EXPECT_STREQ(ExceptionName(exception::kControlProtection), "#CP");
  EXPECT_STREQ(ExceptionName(22), "reserved");
  EXPECT_STREQ(ExceptionName(0x80), "interrupt");
  EXPECT_EQ(exception::kSimdFloatingPoint, 19);
  EXPECT_EQ(exception::kVirtualization, 20);
}

TEST(EventReasonTest, ToStrings) {
  EventReason mem = MemoryAccessEvent{.gpa = Pa(0x1a2000),
                                      .gla = Va(0xffffffff81000000),
                                      .gla_valid = true,
                                      .access = MemoryAccess::W(),
                                      .fault_with_gla = true,
                                      .fault_in_gpt = false};
  EXPECT_EQ(EventReasonToString(mem),
            "memory_access(gpa=0x1a2000 gla=0xffffffff81000000 access=-w- fault_with_gla)");
  EXPECT_EQ(EventReasonToString(MemoryAccessEvent{.gpa = Pa(0x1000), .access = MemoryAccess::X()}),
            "memory_access(gpa=0x1000 access=--x)");

  EXPECT_EQ(EventReasonToString(ControlRegisterWriteEvent{ControlRegister::kCr3, 0x1000, 0x2000}),
            "cr_write(CR3 0x1000 -> 0x2000)");
  EXPECT_EQ(EventReasonToString(MsrWriteEvent{msr::kLstar, 0, 0xffffffff81000000}),
            "msr_write(IA32_LSTAR(0xc0000082) 0x0 -> 0xffffffff81000000)");
  EXPECT_EQ(EventReasonToString(InterruptEvent{Interrupt::Breakpoint(1)}),
            "interrupt(#BP vector=3 software-exception instruction_length=1)");
  EXPECT_EQ(EventReasonToString(SingleStepEvent{}), "singlestep");
  EXPECT_EQ(EventReasonToString(HypercallEvent{3}), "hypercall(instruction_length=3)");
  EXPECT_EQ(
      EventReasonToString(CpuidEvent{.leaf = 0x40000000, .subleaf = 0, .instruction_length = 2}),
      "cpuid(leaf=0x40000000 subleaf=0x0 instruction_length=2)");
  EXPECT_EQ(EventReasonToString(IoEvent{.port = 0x3f8,
                                        .size = 1,
                                        .direction = IoDirection::kOut,
                                        .string = true,
                                        .instruction_length = 2}),
            "io(out string port=0x3f8 size=1 instruction_length=2)");
  EXPECT_EQ(EventReasonToString(IoEvent{.port = 0x60, .size = 4}),
            "io(in port=0x60 size=4 instruction_length=0)");
  EXPECT_EQ(EventReasonToString(DescriptorAccessEvent{DescriptorTableKind::kIdtr, true, 3}),
            "descriptor_access(IDTR load instruction_length=3)");
  EXPECT_EQ(EventReasonToString(DescriptorAccessEvent{DescriptorTableKind::kTr, false, 3}),
            "descriptor_access(TR store instruction_length=3)");
}

TEST(EventReasonTest, Equality) {
  EventReason a = ControlRegisterWriteEvent{ControlRegister::kCr4, 1, 2};
  EventReason b = ControlRegisterWriteEvent{ControlRegister::kCr4, 1, 2};
  EventReason c = ControlRegisterWriteEvent{ControlRegister::kCr4, 1, 3};
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(a, EventReason(MsrWriteEvent{0, 1, 2}));
  EXPECT_EQ(EventReason(InterruptEvent{Interrupt::PageFault(Va(0x1000), 2)}),
            EventReason(InterruptEvent{Interrupt::PageFault(Va(0x1000), 2)}));
  EXPECT_NE(InterruptEvent{Interrupt::PageFault(Va(0x1000), 2)},
            InterruptEvent{Interrupt::PageFault(Va(0x2000), 2)});
}

TEST(EventReasonTest, InstructionGfnIsShownWhenKnownAndCompared) {
  const InterruptEvent bp{Interrupt::Breakpoint(1), Gfn(0x1a2)};
  EXPECT_EQ(
      bp.ToString(),
      "interrupt(#BP vector=3 software-exception instruction_length=1 instruction_gfn=0x1a2)");
  EXPECT_EQ(EventReasonToString(SingleStepEvent{Gfn(0x7f)}), "singlestep(instruction_gfn=0x7f)");
  EXPECT_EQ(EventReasonToString(SingleStepEvent{Gfn(0)}), "singlestep(instruction_gfn=0x0)");

  // Unknown (empty) is neither frame 0 nor any other frame.
  EXPECT_NE(bp, (InterruptEvent{Interrupt::Breakpoint(1)}));
  EXPECT_NE(bp, (InterruptEvent{Interrupt::Breakpoint(1), Gfn(0x1a3)}));
  EXPECT_EQ(bp, (InterruptEvent{Interrupt::Breakpoint(1), Gfn(0x1a2)}));
  EXPECT_NE(SingleStepEvent{}, SingleStepEvent{Gfn(0)});
  EXPECT_EQ(SingleStepEvent{Gfn(5)}, SingleStepEvent{Gfn(5)});
  EXPECT_NE(EventReason(SingleStepEvent{Gfn(5)}), EventReason(SingleStepEvent{Gfn(6)}));
}

TEST(MsrTest, Names) {
  EXPECT_STREQ(MsrName(0xc0000080), "IA32_EFER");
  EXPECT_STREQ(MsrName(msr::kSysenterEip), "IA32_SYSENTER_EIP");
  EXPECT_EQ(msr::kSysenterCs, 0x174u);
  EXPECT_EQ(msr::kKernelGsBase, 0xc0000102u);
  EXPECT_STREQ(MsrName(msr::kTscAux), "IA32_TSC_AUX");
  EXPECT_EQ(MsrName(0x1234), nullptr);
  EXPECT_EQ(MsrToString(0x1234), "MSR(0x1234)");
  EXPECT_EQ(MsrToString(msr::kGsBase), "IA32_GS_BASE(0xc0000101)");
}

TEST(EventMonitorTest, ToStrings) {
  EXPECT_EQ(EventMonitorToString(MonitorControlRegister{ControlRegister::kXcr0}), "cr_write(XCR0)");
  EXPECT_EQ(EventMonitorToString(MonitorMsr{msr::kLstar}), "msr_write(IA32_LSTAR(0xc0000082))");
  EXPECT_EQ(EventMonitorToString(MonitorInterrupt{3}), "interrupt(3 #BP)");
  EXPECT_EQ(EventMonitorToString(MonitorSingleStep{}), "singlestep");
  EXPECT_EQ(EventMonitorToString(MonitorHypercall{true}), "hypercall(allow_user=true)");
  EXPECT_EQ(EventMonitorToString(MonitorCpuid{}), "cpuid");
  EXPECT_EQ(EventMonitorToString(MonitorIo{}), "io");
  EXPECT_EQ(EventMonitorToString(MonitorDescriptorAccess{}), "descriptor_access");
}

TEST(EventMonitorTest, SetOfEnabledMonitors) {
  absl::flat_hash_set<EventMonitor> enabled;
  EXPECT_TRUE(enabled.insert(MonitorControlRegister{ControlRegister::kCr3}).second);
  EXPECT_TRUE(enabled.insert(MonitorMsr{msr::kLstar}).second);
  EXPECT_TRUE(enabled.insert(MonitorInterrupt{3}).second);
  EXPECT_TRUE(enabled.insert(MonitorSingleStep{}).second);
  EXPECT_TRUE(enabled.insert(MonitorCpuid{}).second);
  EXPECT_TRUE(enabled.insert(MonitorIo{}).second);
  EXPECT_TRUE(enabled.insert(MonitorDescriptorAccess{}).second);
  EXPECT_TRUE(enabled.insert(MonitorHypercall{false}).second);
  // Same monitor again: no new entry; different parameters: a new one.
  EXPECT_FALSE(enabled.insert(MonitorControlRegister{ControlRegister::kCr3}).second);
  EXPECT_FALSE(enabled.insert(MonitorCpuid{}).second);
  EXPECT_TRUE(enabled.insert(MonitorControlRegister{ControlRegister::kCr4}).second);
  EXPECT_TRUE(enabled.insert(MonitorHypercall{true}).second);
  EXPECT_EQ(enabled.size(), 10u);

  EXPECT_TRUE(enabled.contains(MonitorMsr{msr::kLstar}));
  EXPECT_FALSE(enabled.contains(MonitorMsr{msr::kStar}));
  EXPECT_EQ(enabled.erase(MonitorInterrupt{3}), 1u);
  EXPECT_FALSE(enabled.contains(MonitorInterrupt{3}));
}

TEST(EventMonitorTest, HashesAreConsistentWithEquality) {
  EXPECT_TRUE(absl::VerifyTypeImplementsAbslHashCorrectly({
      EventMonitor(MonitorControlRegister{ControlRegister::kCr0}),
      EventMonitor(MonitorControlRegister{ControlRegister::kCr3}),
      EventMonitor(MonitorMsr{0}),
      EventMonitor(MonitorMsr{msr::kEfer}),
      EventMonitor(MonitorInterrupt{0}),
      EventMonitor(MonitorInterrupt{14}),
      EventMonitor(MonitorSingleStep{}),
      EventMonitor(MonitorHypercall{false}),
      EventMonitor(MonitorHypercall{true}),
      EventMonitor(MonitorCpuid{}),
      EventMonitor(MonitorIo{}),
      EventMonitor(MonitorDescriptorAccess{}),
  }));
}

}  // namespace
}  // namespace vmi::amd64
