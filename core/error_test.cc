#include "core/error.h"

#include <cerrno>
#include <string>

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

TranslationFault SampleFault() {
  TranslationFault f;
  f.ctx = AddressContext(Va(0x7000), Pa(0x1000));
  f.cause.kind = FaultCause::Kind::kNotPresent;
  f.cause.level = 1;
  f.cause.entry_address = Pa(0x2038);
  f.cause.entry = 0x6;
  return f;
}

TEST(TranslationFaultTest, GenericMessagesWithoutADescriber) {
  TranslationFault f = SampleFault();
  absl::Status s = f.ToStatus();
  EXPECT_EQ(GetTranslationFault(s), f.ctx);
  EXPECT_EQ(s.message(),
            "translation fault at va=0x7000 root=0x1000: level 1 entry not present (entry 0x6 at "
            "pa 0x2038)");
  f.cause.kind = FaultCause::Kind::kBadAddress;
  EXPECT_EQ(f.ToStatus().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(IsTranslationFault(f.ToStatus()));
  f.cause.kind = FaultCause::Kind::kMalformed;
  f.cause.detail = 0x80;
  EXPECT_EQ(f.ToStatus().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(f.ToStatus().message().find("reserved bits 0x80"), std::string::npos);
}

absl::Status Describe(const TranslationFault& f) { return TranslationFaultError(f.ctx, "custom"); }

TEST(FaultStatusTest, KeepsTheFaultCompactAndBuildsOnRequest) {
  TranslationFault f = SampleFault();
  f.cause.describe = &Describe;
  FaultStatus fs = f;
  EXPECT_FALSE(fs.ok());
  ASSERT_NE(fs.fault(), nullptr);
  EXPECT_EQ(*fs.fault(), f);
  EXPECT_EQ(fs.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(fs.translation_fault(), f.ctx);
  EXPECT_TRUE(IsTranslationFault(fs));
  absl::Status s = fs;  // converts, building the status
  EXPECT_EQ(s.message(), "translation fault at va=0x7000 root=0x1000: custom");
  absl::StatusOr<int> as_statusor = fs;
  EXPECT_EQ(as_statusor.status(), s);

  FaultStatus ok;
  EXPECT_TRUE(ok.ok());
  EXPECT_TRUE(static_cast<absl::Status>(ok).ok());
  FaultStatus other = absl::DataLossError("torn");
  EXPECT_EQ(other.fault(), nullptr);
  EXPECT_FALSE(other.is_translation_fault());
  EXPECT_EQ(other.status().message(), "torn");
  FaultStatus wrapped = TranslationFaultError(f.ctx, "as a status");
  EXPECT_EQ(wrapped.fault(), nullptr);
  EXPECT_EQ(wrapped.translation_fault(), f.ctx);  // a fault held as a status is still one
}

TEST(FaultOrTest, ValueFaultOrStatus) {
  FaultOr<std::string> v = std::string("hello");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, "hello");
  EXPECT_EQ(v->size(), 5u);
  EXPECT_EQ(v.value(), "hello");
  EXPECT_TRUE(v.status().ok());
  EXPECT_TRUE(v.error().ok());

  FaultOr<std::string> f = SampleFault();
  EXPECT_FALSE(f.ok());
  EXPECT_EQ(f.fault()->cause.entry, 0x6u);
  EXPECT_TRUE(f.is_translation_fault());
  EXPECT_EQ(f.value_or("none"), "none");
  EXPECT_EQ(GetTranslationFault(f.status()), SampleFault().ctx);
  ASSERT_NE(f.error().fault(), nullptr);

  FaultOr<std::string> e = absl::UnavailableError("gone");
  EXPECT_EQ(e.fault(), nullptr);
  EXPECT_EQ(e.status().code(), absl::StatusCode::kUnavailable);
  FaultOr<std::string> from_ok = absl::OkStatus();
  EXPECT_EQ(from_ok.status().code(), absl::StatusCode::kInternal);

  // Copies and moves keep the alternative.
  FaultOr<std::string> copy = f;
  EXPECT_EQ(copy.fault()->ctx, SampleFault().ctx);
  copy = v;
  EXPECT_EQ(*copy, "hello");
  FaultOr<std::string> moved = std::move(e);
  EXPECT_EQ(moved.status().message(), "gone");
  moved = std::move(copy);
  EXPECT_EQ(*moved, "hello");
}

TEST(FaultOrTest, ConvertsToAndFromAbslTypes) {
  FaultOr<uint32_t> narrow = uint32_t{7};
  FaultOr<uint64_t> wide = narrow;
  EXPECT_EQ(*wide, 7u);
  absl::StatusOr<uint64_t> as_absl = FaultOr<uint32_t>(uint32_t{9});
  EXPECT_EQ(*as_absl, 9u);
  absl::StatusOr<int> fault = FaultOr<int>(SampleFault());
  EXPECT_TRUE(IsTranslationFault(fault.status()));
  FaultOr<int> back = absl::StatusOr<int>(3);
  EXPECT_EQ(*back, 3);
  FaultOr<int> back_error = absl::StatusOr<int>(absl::NotFoundError("x"));
  EXPECT_EQ(back_error.status().message(), "x");
}

FaultOr<int> HalfOrFault(int x) {
  if (x % 2) return SampleFault();
  return x / 2;
}
FaultOr<int> QuarterOrFault(int x) {
  VMI_FAULT_ASSIGN_OR_RETURN(int h, HalfOrFault(x));
  VMI_FAULT_ASSIGN_OR_RETURN(h, HalfOrFault(h));
  return h;
}
FaultStatus EvenOrFault(int x) {
  VMI_FAULT_RETURN_IF_ERROR(HalfOrFault(x).error());
  return FaultStatus();
}
absl::Status EvenOrStatus(int x) {
  VMI_RETURN_IF_ERROR(EvenOrFault(x));
  return absl::OkStatus();
}
absl::StatusOr<int> QuarterOrStatus(int x) {
  VMI_ASSIGN_OR_RETURN(int q, QuarterOrFault(x));
  return q;
}

TEST(MacrosTest, FaultMacrosPassTheFaultOnCompact) {
  EXPECT_EQ(*QuarterOrFault(8), 2);
  ASSERT_NE(QuarterOrFault(6).fault(), nullptr);  // still the compact value two calls up
  EXPECT_TRUE(EvenOrFault(2).ok());
  ASSERT_NE(EvenOrFault(3).fault(), nullptr);
  // The plain macros build the status where the function returns absl types.
  EXPECT_TRUE(IsTranslationFault(EvenOrStatus(3)));
  EXPECT_TRUE(IsTranslationFault(QuarterOrStatus(6).status()));
  EXPECT_EQ(*QuarterOrStatus(8), 2);
}

}  // namespace
}  // namespace vmi
