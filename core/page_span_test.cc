#include "core/page_span.h"

#include <cstdint>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmi {
namespace {

using ::testing::HasSubstr;

TEST(CheckPageSpan, InsideThePageIsAccepted) {
  EXPECT_TRUE(CheckPageSpan("write_page", Gfn(1), 0, 4096).ok());
  EXPECT_TRUE(CheckPageSpan("write_page", Gfn(1), 4095, 1).ok());
  EXPECT_TRUE(CheckPageSpan("write_page", Gfn(1), 0x7ff, 0).ok());
  EXPECT_TRUE(CheckPageSpan("write_page", Gfn(1), 4080, 16).ok());
}

TEST(CheckPageSpan, PastTheEndIsOutOfRangeAndNamesTheOperands) {
  const absl::Status s = CheckPageSpan("write_page", Gfn(0x1a2), 0xff8, 16);
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("write_page(gfn=0x1a2, offset=0xff8, size=16): past the end"));
  EXPECT_EQ(CheckPageSpan("write_page", Gfn(1), 4096, 0).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(CheckPageSpan("write_page", Gfn(1), 4096, 1).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(CheckPageSpan("write_page", Gfn(1), 0, 4097).code(), absl::StatusCode::kOutOfRange);
}

// offset + size wraps to a small number; the check must not be fooled.
TEST(CheckPageSpan, HugeOperandsNeverWrapIntoRange) {
  const uint64_t huge = ~uint64_t{0} - 7;
  EXPECT_EQ(CheckPageSpan("write_page", Gfn(1), huge, 16).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(CheckPageSpan("write_page", Gfn(1), 16, huge).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(CheckPageSpan("write_page", Gfn(1), 8, ~uint64_t{0}).code(),
            absl::StatusCode::kOutOfRange);
}

TEST(CheckPageSpan, OtherPageSizes) {
  EXPECT_TRUE(CheckPageSpan("write_page", Gfn(1), 0x1000, 0x1000, 0x200000).ok());
  EXPECT_EQ(CheckPageSpan("write_page", Gfn(1), 0x1ff000, 0x1001, 0x200000).code(),
            absl::StatusCode::kOutOfRange);
}

}  // namespace
}  // namespace vmi
