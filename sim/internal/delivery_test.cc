// PlanDelivery and PlanSyscall on hand-built descriptor tables in a fake
// linear address space: the handler, the stack (current, TSS.RSPn, IST), the
// frame, RFLAGS, and every triple-fault cause.

#include "sim/internal/delivery.h"

#include <cstring>
#include <map>
#include <vector>

#include "arch/amd64/bitfields.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmi::sim::sim_internal {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr uint64_t kIdt = 0xffff0000'00001000, kGdt = 0xffff0000'00002000, kTss = 0xffff0000'00003000;

// Guest-linear memory: whole pages that exist.
class FakeLinear {
 public:
  uint8_t* Page(uint64_t va) {
    auto& p = pages_[va & ~0xfffull];
    p.resize(4096);
    return p.data() + (va & 0xfff);
  }
  bool Read(uint64_t va, void* out, size_t n) {
    auto it = pages_.find(va & ~0xfffull);
    if (it == pages_.end() || (va & 0xfff) + n > 4096) return false;
    std::memcpy(out, it->second.data() + (va & 0xfff), n);
    return true;
  }
  template <typename T>
  void Put(uint64_t va, T value) {
    std::memcpy(Page(va), &value, sizeof(value));
  }

 private:
  std::map<uint64_t, std::vector<uint8_t>> pages_;
};

class DeliveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mem_.Page(kIdt);
    mem_.Put<uint64_t>(kGdt + 0x10, 0x00af9b000000ffffull);  // kernel code64
    mem_.Put<uint64_t>(kGdt + 0x33 - 3, 0x00affb000000ffffull);  // user code64 (0x30)
    mem_.Put<uint64_t>(kTss + kTssRsp0, 0xffffc900'00010000);
    mem_.Put<uint64_t>(kTss + kTssIst1 + 8, 0xffffc900'00020008);  // IST2, unaligned
  }
  void Gate(uint8_t vector, uint64_t handler, uint8_t type, uint8_t ist = 0, bool present = true) {
    amd64::IdtGate g;
    g.offset = handler;
    g.selector = 0x10;
    g.ist = ist;
    g.type = type;
    g.present = present;
    const auto bytes = g.Encode();
    std::memcpy(mem_.Page(kIdt + vector * 16), bytes.data(), bytes.size());
  }
  DeliveryState Kernel() {
    DeliveryState s;
    s.return_rip = 0xffffffff80001234;
    s.rflags = amd64::Rflags::kReserved1 | amd64::Rflags::kIf | amd64::Rflags::kTf;
    s.rsp = 0xffffc900'00008008;
    s.cs = 0x10;
    s.ss = 0x18;
    s.cpl = 0;
    s.idtr = {kIdt, 0xfff};
    s.gdtr = {kGdt, 0x7f};
    s.tr_base = kTss;
    return s;
  }
  absl::StatusOr<DeliveryPlan> Plan(const DeliveryState& s, uint8_t vector,
                                    std::optional<uint32_t> error_code = std::nullopt) {
    return PlanDelivery(
        s, vector, error_code,
        [this](uint64_t va, void* out, size_t n) { return mem_.Read(va, out, n); }, "deliver");
  }
  FakeLinear mem_;
};

TEST_F(DeliveryTest, SamePrivilegeInterruptGate) {
  Gate(0x40, 0xffffffff80000800, amd64::IdtGate::kInterruptGate);
  auto plan = Plan(Kernel(), 0x40);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->rip, 0xffffffff80000800u);
  // The stack is aligned down to 16 bytes, then the 5-slot frame is pushed.
  EXPECT_EQ(plan->rsp, 0xffffc900'00008000u - 5 * 8);
  EXPECT_THAT(plan->frame, ElementsAre(0xffffffff80001234u, 0x10u, Kernel().rflags,
                                       0xffffc900'00008008u, 0x18u));
  EXPECT_EQ(plan->cs, 0x10);
  EXPECT_FALSE(plan->ss.has_value());
  EXPECT_TRUE(amd64::SegmentAccess::FromDescriptorFlags(plan->cs_descriptor.flags).l());
  // An interrupt gate clears IF; TF always goes.
  EXPECT_EQ(plan->rflags, amd64::Rflags::kReserved1);
}

TEST_F(DeliveryTest, TrapGateKeepsInterruptsAndPushesTheErrorCode) {
  Gate(13, 0xffffffff80000900, amd64::IdtGate::kTrapGate);
  auto plan = Plan(Kernel(), 13, 0x2a);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->frame.size(), 6u);
  EXPECT_EQ(plan->frame[0], 0x2au);
  EXPECT_EQ(plan->rflags, amd64::Rflags::kReserved1 | amd64::Rflags::kIf);
}

TEST_F(DeliveryTest, FromUserModeTheStackComesFromTssRsp0) {
  Gate(0x80, 0xffffffff80000a00, amd64::IdtGate::kInterruptGate);
  DeliveryState user = Kernel();
  user.cpl = 3;
  user.cs = 0x33;
  user.ss = 0x2b;
  user.rsp = 0x7fff0000;
  auto plan = Plan(user, 0x80);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->rsp, 0xffffc900'00010000u - 5 * 8);
  EXPECT_THAT(plan->frame, ElementsAre(user.return_rip, 0x33u, user.rflags, 0x7fff0000u, 0x2bu));
  ASSERT_TRUE(plan->ss.has_value());
  EXPECT_EQ(*plan->ss, 0);  // a null SS with RPL = the new CPL
  EXPECT_EQ(amd64::SegmentAccess::FromDescriptorFlags(plan->ss_flags).dpl(), 0);
  EXPECT_EQ(plan->cs, 0x10);
}

TEST_F(DeliveryTest, AnIstGateSwitchesToItsStackEvenWithoutAPrivilegeChange) {
  Gate(2, 0xffffffff80000b00, amd64::IdtGate::kInterruptGate, /*ist=*/2);
  auto plan = Plan(Kernel(), 2);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->rsp, 0xffffc900'00020000u - 5 * 8);
}

TEST_F(DeliveryTest, EveryTripleFaultCauseIsNamed) {
  Gate(5, 0xffffffff80000c00, amd64::IdtGate::kInterruptGate, 0, /*present=*/false);
  EXPECT_THAT(std::string(Plan(Kernel(), 5).status().message()), HasSubstr("gate not present"));
  DeliveryState small = Kernel();
  small.idtr.limit = 0x3f;  // four gates
  EXPECT_THAT(std::string(Plan(small, 4).status().message()), HasSubstr("beyond IDT limit 0x3f"));
  DeliveryState no_idt = Kernel();
  no_idt.idtr.base = 0x5000;
  EXPECT_THAT(std::string(Plan(no_idt, 1).status().message()), HasSubstr("IDT at 0x5000 not mapped"));
  amd64::IdtGate bad;
  bad.offset = 0x1000;
  bad.selector = 0x200;  // beyond the GDT limit
  bad.type = amd64::IdtGate::kInterruptGate;
  bad.present = true;
  const auto bytes = bad.Encode();
  std::memcpy(mem_.Page(kIdt + 7 * 16), bytes.data(), bytes.size());
  const absl::Status s = Plan(Kernel(), 7).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("gate selector 0x200 not in GDT"));
}

TEST(SegmentDescriptorTest, DecodesBaseLimitAndGranularity) {
  const SegmentDescriptor flat = DecodeSegmentDescriptor(0x00cf93000000ffffull);
  EXPECT_EQ(flat.base, 0u);
  EXPECT_EQ(flat.limit, 0xffffffffu);  // G: 4 KiB units
  EXPECT_EQ(flat.flags, 0x00cf9300u);
  const SegmentDescriptor tss = DecodeSegmentDescriptor(0xfe008b0020000067ull);
  EXPECT_EQ(tss.base, 0xfe002000u);
  EXPECT_EQ(tss.limit, 0x67u);
}

TEST(SyscallTest, LoadsFlatSegmentsFromStarAndMasksRflags) {
  const uint64_t star = (uint64_t{0x23} << 48) | (uint64_t{0x10} << 32);
  const SyscallPlan p = PlanSyscall(amd64::Efer::kSce | amd64::Efer::kLma, star,
                                    0xffffffff81000000, amd64::Rflags::kIf | amd64::Rflags::kTf,
                                    0x401002, 0x246 | amd64::Rflags::kTf | amd64::Rflags::kRf);
  EXPECT_FALSE(p.invalid_opcode);
  EXPECT_EQ(p.rip, 0xffffffff81000000u);
  EXPECT_EQ(p.rcx, 0x401002u);
  EXPECT_EQ(p.r11, 0x246u | amd64::Rflags::kTf | amd64::Rflags::kRf);
  EXPECT_EQ(p.rflags, 0x246u & ~amd64::Rflags::kIf);
  EXPECT_EQ(p.cs, 0x10);
  EXPECT_EQ(p.ss, 0x18);
  EXPECT_TRUE(amd64::SegmentAccess::FromDescriptorFlags(p.cs_flags).code());
  EXPECT_TRUE(amd64::SegmentAccess::FromDescriptorFlags(p.cs_flags).l());
  EXPECT_TRUE(amd64::SegmentAccess::FromDescriptorFlags(p.ss_flags).db());
  EXPECT_TRUE(PlanSyscall(0, star, 0, 0, 0, 0).invalid_opcode);  // EFER.SCE clear: #UD
}

}  // namespace
}  // namespace vmi::sim::sim_internal
