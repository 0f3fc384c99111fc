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

}  // namespace
}  // namespace vmi
