#include "core/error.h"

#include <cerrno>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"

namespace vmi {
namespace {

TEST(TranslationFaultTest, CarriesItsContext) {
  AddressContext ctx(Va(0xffff800000001000), Pa(0x1234000));
  absl::Status fault = TranslationFaultError(ctx, "PML4 entry not present");
  EXPECT_EQ(fault.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(fault.message(),
            "translation fault at va=0xffff800000001000 root=0x1234000: PML4 entry not present");
  ASSERT_TRUE(GetTranslationFault(fault).has_value());
  EXPECT_EQ(*GetTranslationFault(fault), ctx);
  EXPECT_TRUE(IsTranslationFault(fault));
}

TEST(TranslationFaultTest, OtherStatusesAreNotFaults) {
  EXPECT_FALSE(GetTranslationFault(absl::OkStatus()).has_value());
  EXPECT_FALSE(IsTranslationFault(absl::NotFoundError("gfn 0x5 not present")));
}

TEST(AnnotateStatusTest, PrefixesAndKeepsPayload) {
  AddressContext ctx(Va(0x1000), Pa(0x2000));
  absl::Status s = AnnotateStatus(TranslationFaultError(ctx, "x"), "read(va=0x1000)");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "read(va=0x1000): translation fault at va=0x1000 root=0x2000: x");
  EXPECT_EQ(GetTranslationFault(s), ctx);
  EXPECT_TRUE(AnnotateStatus(absl::OkStatus(), "op").ok());
}

TEST(ErrnoErrorTest, NamesOpAndErrno) {
  absl::Status s = ErrnoError("xenforeignmemory_map(gfn=0x10)", ENOENT);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.message().find("xenforeignmemory_map(gfn=0x10) (errno=2)"), std::string::npos);
}

absl::StatusOr<int> Half(int x) {
  if (x % 2) return absl::InvalidArgumentError("odd");
  return x / 2;
}

absl::StatusOr<int> Quarter(int x) {
  VMI_ASSIGN_OR_RETURN(int h, Half(x));
  VMI_ASSIGN_OR_RETURN(h, Half(h));
  return h;
}

absl::Status CheckEven(int x) {
  VMI_RETURN_IF_ERROR(Half(x).status());
  return absl::OkStatus();
}

TEST(MacrosTest, PropagateErrorsAndValues) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(Quarter(6).status().message(), "odd");
  EXPECT_EQ(Quarter(3).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(CheckEven(2).ok());
  EXPECT_FALSE(CheckEven(1).ok());
}

}  // namespace
}  // namespace vmi
