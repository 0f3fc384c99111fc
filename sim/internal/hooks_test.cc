// The guest-linear address candidates of a violating access, from its
// decoded memory operand and registers.

#include "sim/internal/hooks.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sim/internal/decode.h"

namespace vmi::sim::sim_internal {
namespace {

using ::testing::ElementsAre;

uint64_t Gpr(int n) { return 0x1000 * (n + 1); }  // RAX=0x1000, RCX=0x2000, ...

TEST(GlaCandidatesTest, ModrmBaseIndexScaleDisplacement) {
  MemoryOperand op;
  op.base = 3;   // RBX = 0x4000
  op.index = 1;  // RCX = 0x2000
  op.scale = 8;
  op.disp = -0x10;
  EXPECT_THAT(GlaCandidates(op, Gpr, 0, 0, 0), ElementsAre(0x4000u + 0x10000u - 0x10u));
}

TEST(GlaCandidatesTest, SegmentOverridesAndAddressSize) {
  MemoryOperand op;
  op.base = 0;
  op.segment = 5;  // GS
  EXPECT_THAT(GlaCandidates(op, Gpr, 0x7000, 0xffff888000000000, 0),
              ElementsAre(0xffff888000001000u));
  op.segment = 4;  // FS
  EXPECT_THAT(GlaCandidates(op, Gpr, 0x7000, 0, 0), ElementsAre(0x8000u));
  MemoryOperand wide;
  wide.disp = -1;
  wide.address32 = true;  // 0x67: truncated to 32 bits
  EXPECT_THAT(GlaCandidates(wide, Gpr, 0, 0, 0), ElementsAre(0xffffffffu));
}

TEST(GlaCandidatesTest, RipRelativeTriesEveryImmediateWidth) {
  MemoryOperand op;
  op.rip_relative = true;
  op.disp = 0x100;
  op.end = 6;
  EXPECT_THAT(GlaCandidates(op, Gpr, 0, 0, 0x401000),
              ElementsAre(0x401106u, 0x401107u, 0x401108u, 0x40110au));
}

TEST(GlaCandidatesTest, ImplicitStackAndStringOperands) {
  MemoryOperand push;
  push.kind = MemoryOperand::Kind::kPush;
  EXPECT_THAT(GlaCandidates(push, Gpr, 0, 0, 0), ElementsAre(0x5000u - 8));  // RSP - 8
  MemoryOperand pop;
  pop.kind = MemoryOperand::Kind::kPop;
  EXPECT_THAT(GlaCandidates(pop, Gpr, 0, 0, 0), ElementsAre(0x5000u, 0x6000u));  // RSP, RBP
  MemoryOperand string;
  string.kind = MemoryOperand::Kind::kString;
  EXPECT_THAT(GlaCandidates(string, Gpr, 0, 0, 0), ElementsAre(0x8000u, 0x7000u));  // RDI, RSI
}

}  // namespace
}  // namespace vmi::sim::sim_internal
