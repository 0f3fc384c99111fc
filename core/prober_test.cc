#include "core/prober.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmi {
namespace {

TEST(VmiProberTest, CollectsDistinctFaultsAndPassesOtherErrors) {
  VmiProber prober;
  const AddressContext a(Va(0x1000), Pa(0x5000)), b(Va(0x2000), Pa(0x5000));
  auto ok = prober.Check(absl::StatusOr<int>(7));
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->value(), 7);
  EXPECT_TRUE(prober.Error().ok());

  auto fa = prober.Check(absl::StatusOr<int>(TranslationFaultError(a, "x")));
  ASSERT_TRUE(fa.ok());
  EXPECT_FALSE(fa->has_value());
  ASSERT_TRUE(prober.Check(absl::StatusOr<int>(TranslationFaultError(b, "y"))).ok());
  ASSERT_TRUE(prober.Check(absl::StatusOr<int>(TranslationFaultError(a, "again"))).ok());
  EXPECT_EQ(prober.faults(), (std::vector<AddressContext>{a, b}));

  auto other = prober.Check(absl::StatusOr<int>(absl::DataLossError("broken")));
  EXPECT_EQ(other.status().code(), absl::StatusCode::kDataLoss);

  absl::StatusOr<bool> plain = prober.Check(absl::OkStatus());
  EXPECT_TRUE(*plain);

  absl::Status all = prober.Error();
  EXPECT_EQ(GetTranslationFault(all), a);
  EXPECT_THAT(all.message(), ::testing::HasSubstr("2 address(es) not present"));
  EXPECT_THAT(all.message(), ::testing::HasSubstr("va=0x2000 root=0x5000"));
}

TEST(VmiProberTest, RecordsCompactFaultsWithoutBuildingThem) {
  VmiProber prober;
  TranslationFault f;
  f.ctx = AddressContext(Va(0x1000), Pa(0x2000));
  auto r = prober.Check(FaultOr<int>(f));
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->has_value());
  EXPECT_EQ(*prober.Check(FaultOr<int>(5)), 5);
  EXPECT_FALSE(*prober.Check(FaultStatus(f)));
  EXPECT_TRUE(*prober.Check(FaultStatus()));
  f.cause.kind = FaultCause::Kind::kBadAddress;  // not a page fault: passed through
  EXPECT_EQ(prober.Check(FaultOr<int>(f)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(prober.faults(), std::vector<AddressContext>{AddressContext(Va(0x1000), Pa(0x2000))});
}

}  // namespace
}  // namespace vmi
