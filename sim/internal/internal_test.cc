#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "sim/internal/decode.h"
#include "sim/internal/page_walk.h"
#include "sim/internal/qemu_state.h"

namespace vmi::sim::sim_internal {
namespace {

TEST(QemuLayoutTest, RecognisesInstalledUnicorn) {
  absl::StatusOr<QemuLayout> layout = GetQemuLayout();
  ASSERT_TRUE(layout.ok()) << layout.status();
}

DecodedInsn D(std::vector<uint8_t> b) { return Decode(b.data(), b.size()); }

TEST(DecodeTest, Intercepts) {
  DecodedInsn d = D({0x0f, 0x22, 0xd8});  // mov cr3, rax
  EXPECT_EQ(d.kind, InsnKind::kMovToCr);
  EXPECT_EQ(d.cr, 3);
  EXPECT_EQ(d.gpr, 0);
  d = D({0x41, 0x0f, 0x22, 0xe1});  // mov cr4, r9
  EXPECT_EQ(d.kind, InsnKind::kMovToCr);
  EXPECT_EQ(d.cr, 4);
  EXPECT_EQ(d.gpr, 9);
  EXPECT_EQ(D({0x0f, 0x30}).kind, InsnKind::kWrmsr);
  EXPECT_EQ(D({0x0f, 0xa2}).kind, InsnKind::kCpuid);
  EXPECT_EQ(D({0x0f, 0x01, 0xc1}).kind, InsnKind::kVmcall);
  EXPECT_EQ(D({0x0f, 0x01, 0x10}).kind, InsnKind::kLgdt);  // lgdt [rax]
  EXPECT_EQ(D({0x0f, 0x01, 0x1d, 0, 0, 0, 0}).kind, InsnKind::kLidt);
  EXPECT_EQ(D({0x0f, 0x01, 0x00}).kind, InsnKind::kSgdt);
  EXPECT_EQ(D({0x0f, 0x01, 0x38}).kind, InsnKind::kInvlpg);  // invlpg [rax]
  EXPECT_EQ(D({0x0f, 0x06}).kind, InsnKind::kClts);
  d = D({0x0f, 0x01, 0xf0});  // lmsw ax
  EXPECT_EQ(d.kind, InsnKind::kLmsw);
  EXPECT_EQ(d.gpr, 0);
  EXPECT_EQ(D({0x0f, 0x01, 0x30}).kind, InsnKind::kOther);  // lmsw [rax]: not intercepted
  EXPECT_EQ(D({0x0f, 0x00, 0xd8}).kind, InsnKind::kLtr);    // ltr ax
  EXPECT_EQ(D({0x0f, 0x00, 0xd0}).kind, InsnKind::kLldt);
  d = D({0x66, 0xe5, 0x60});  // in ax, 0x60
  EXPECT_EQ(d.kind, InsnKind::kIo);
  EXPECT_TRUE(d.io_in);
  EXPECT_EQ(d.io_size, 2);
  EXPECT_EQ(d.io_port_imm, 0x60);
  d = D({0xee});  // out dx, al
  EXPECT_FALSE(d.io_in);
  EXPECT_TRUE(d.io_port_in_dx);
  EXPECT_EQ(d.io_size, 1);
  EXPECT_EQ(D({0x48, 0x89, 0xc3}).kind, InsnKind::kOther);
  EXPECT_EQ(D({0x0f}).kind, InsnKind::kOther);
  EXPECT_EQ(D({}).kind, InsnKind::kOther);
}

TEST(PageWalkTest, FourLevelWithLargePagesAndReverse) {
  std::vector<uint8_t> ram(64 * 4096);
  auto put = [&](uint64_t pa, uint64_t v) { std::memcpy(ram.data() + pa, &v, 8); };
  // PML4 at 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000.
  const uint64_t va = 0xffff800000201000ull;
  put(0x1000 + ((va >> 39) & 511) * 8, 0x2000 | 7);
  put(0x2000 + ((va >> 30) & 511) * 8, 0x3000 | 3);
  put(0x3000 + ((va >> 21) & 511) * 8, 0x4000 | 7);
  put(0x4000 + ((va >> 12) & 511) * 8, 0x9000 | 7 | (1ull << 63));
  PagingState p{true, false, 0x1000};
  WalkResult w = Walk(ram.data(), ram.size(), p, va + 0x123);
  ASSERT_TRUE(w.present);
  EXPECT_EQ(w.pa, 0x9123u);
  EXPECT_FALSE(w.user);
  EXPECT_TRUE(w.writable);
  EXPECT_TRUE(w.no_execute);
  EXPECT_FALSE(Walk(ram.data(), ram.size(), p, va + 0x1000).present);
  std::optional<std::vector<uint64_t>> rev = ReverseLookup(ram.data(), ram.size(), p, 9, 4);
  ASSERT_TRUE(rev.has_value());
  ASSERT_EQ(rev->size(), 1u);
  EXPECT_EQ((*rev)[0], va);
  EXPECT_FALSE(ReverseLookup(ram.data(), ram.size(), p, 9, 4, 100).has_value());
  // A table pointer beyond RAM fails the walk instead of reading past it.
  put(0x3000 + ((va >> 21) & 511) * 8, (1ull << 40) | 7);
  EXPECT_FALSE(Walk(ram.data(), ram.size(), p, va).present);
}

}  // namespace
}  // namespace vmi::sim::sim_internal

namespace vmi::sim::sim_internal {
namespace {

std::optional<MemoryOperand> Op(std::initializer_list<uint8_t> bytes) {
  std::vector<uint8_t> b(bytes);
  return DecodeMemoryOperand(b.data(), b.size());
}

TEST(DecodeMemoryOperandTest, ModrmForms) {
  // incq (%r12): 49 ff 04 24 (SIB with base r12).
  auto m = Op({0x49, 0xff, 0x04, 0x24});
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->kind, MemoryOperand::Kind::kModrm);
  EXPECT_EQ(m->base, 12);
  EXPECT_EQ(m->index, -1);
  EXPECT_EQ(m->disp, 0);
  // mov %rax, 8(%rsi): 48 89 46 08.
  m = Op({0x48, 0x89, 0x46, 0x08});
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->base, 6);
  EXPECT_EQ(m->disp, 8);
  EXPECT_EQ(m->end, 4);
  // mov -0x10(%rbp,%rcx,8), %rdx: 48 8b 54 cd f0.
  m = Op({0x48, 0x8b, 0x54, 0xcd, 0xf0});
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->base, 5);
  EXPECT_EQ(m->index, 1);
  EXPECT_EQ(m->scale, 8);
  EXPECT_EQ(m->disp, -16);
  // mov 0x1000(%rip), %eax: 8b 05 00 10 00 00.
  m = Op({0x8b, 0x05, 0x00, 0x10, 0x00, 0x00});
  ASSERT_TRUE(m.has_value());
  EXPECT_TRUE(m->rip_relative);
  EXPECT_EQ(m->disp, 0x1000);
  EXPECT_EQ(m->end, 6);
  // mov %gs:0x28, %rax: 65 48 8b 04 25 28 00 00 00 (no base, no index).
  m = Op({0x65, 0x48, 0x8b, 0x04, 0x25, 0x28, 0x00, 0x00, 0x00});
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->segment, 5);
  EXPECT_EQ(m->base, -1);
  EXPECT_EQ(m->index, -1);
  EXPECT_EQ(m->disp, 0x28);
  // movzbl (%r8,%r9,2), %eax with REX.X and REX.B: 43 0f b6 04 48.
  m = Op({0x43, 0x0f, 0xb6, 0x04, 0x48});
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->base, 8);
  EXPECT_EQ(m->index, 9);
  EXPECT_EQ(m->scale, 2);
}

TEST(DecodeMemoryOperandTest, ImplicitAndUnknown) {
  EXPECT_EQ(Op({0x50})->kind, MemoryOperand::Kind::kPush);         // push %rax
  EXPECT_EQ(Op({0xe8, 0, 0, 0, 0})->kind, MemoryOperand::Kind::kPush);  // call
  EXPECT_EQ(Op({0xc3})->kind, MemoryOperand::Kind::kPop);          // ret
  EXPECT_EQ(Op({0xf3, 0x48, 0xab})->kind, MemoryOperand::Kind::kString);  // rep stosq
  EXPECT_EQ(Op({0xff, 0xd0})->kind, MemoryOperand::Kind::kPush);   // call *%rax
  EXPECT_FALSE(Op({0x48, 0x89, 0xc3}).has_value());                // mov %rax, %rbx
  EXPECT_FALSE(Op({0xc5, 0xf8, 0x10, 0x06}).has_value());          // VEX
  EXPECT_FALSE(Op({0x0f, 0xa2}).has_value());                      // cpuid
  EXPECT_FALSE(Op({0x48, 0x8b}).has_value());                      // truncated
  EXPECT_FALSE(Op({}).has_value());
}

}  // namespace
}  // namespace vmi::sim::sim_internal
