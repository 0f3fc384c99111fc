// One conformance suite for every driver: the cases for each capability are
// written once against the concepts and instantiated for every adapter whose
// driver has that capability (see adapters.h). The test log lists each case
// per driver; adapters that cannot run here (Xen without VMI_XEN_DOMAIN) skip
// every case with their reason.

#include <algorithm>
#include <vector>

#include "absl/strings/str_format.h"
#include "core/driver.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/conformance/adapters.h"
#include "tests/conformance/type_filter.h"

namespace vmi::conformance {
namespace {

using ::testing::HasSubstr;

template <typename D>
struct HasRead : std::bool_constant<VmiRead<D>> {};
template <typename D>
struct HasWrite : std::bool_constant<VmiWrite<D>> {};

// Every adapter, whatever it can do.
#define VMI_CONFORMANCE_ADAPTERS StoreAdapter

template <typename A>
class Conformance : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::optional<std::string> reason = A::SkipReason()) GTEST_SKIP() << *reason;
    auto adapter = A::Make();
    ASSERT_TRUE(adapter.ok()) << adapter.status();
    adapter_ = *std::move(adapter);
  }
  typename A::Driver& driver() { return adapter_->driver(); }
  Gfn beyond_max() {
    auto info = driver().Info();
    EXPECT_TRUE(info.ok());
    return Gfn(info->max_gfn.value() + 1);
  }
  std::unique_ptr<A> adapter_;
};

// ---- VmiRead ----

template <typename A>
class ReadConformance : public Conformance<A> {};
using ReadAdapters = FilterAdapters<HasRead, VMI_CONFORMANCE_ADAPTERS>;
TYPED_TEST_SUITE(ReadConformance, ReadAdapters, AdapterName);

TYPED_TEST(ReadConformance, InfoDescribesPages) {
  auto info = this->driver().Info();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->page_size, 4096u);
  EXPECT_EQ(info->page_shift, 12);
  EXPECT_GT(info->max_gfn.value(), 0u);
}

TYPED_TEST(ReadConformance, KnownPageHasKnownBytes) {
  auto page = this->driver().ReadPage(this->adapter_->known_gfn());
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->size(), 4096u);
  EXPECT_EQ(page->gfn(), this->adapter_->known_gfn());
  const std::vector<uint8_t> expect = this->adapter_->known_bytes();
  EXPECT_TRUE(std::equal(expect.begin(), expect.end(), page->data()));
}

TYPED_TEST(ReadConformance, PagesOutlivePreviousHandles) {
  auto a = this->driver().ReadPage(this->adapter_->known_gfn());
  auto b = this->driver().ReadPage(this->adapter_->known_gfn());
  ASSERT_TRUE(a.ok() && b.ok());
  a = absl::StatusOr<MappedPage>(MappedPage());
  EXPECT_EQ(b->data()[0], this->adapter_->known_bytes()[0]);
}

TYPED_TEST(ReadConformance, GfnBeyondMaxIsAClearError) {
  const Gfn bad = this->beyond_max();
  auto page = this->driver().ReadPage(bad);
  ASSERT_FALSE(page.ok());
  EXPECT_THAT(std::string(page.status().message()), HasSubstr(bad.ToString()));
  EXPECT_FALSE(this->driver().ReadPage(Gfn(~uint64_t{0} >> 12)).ok());
}

// ---- VmiWrite ----

template <typename A>
class WriteConformance : public Conformance<A> {};
using WriteAdapters = FilterAdapters<HasWrite, VMI_CONFORMANCE_ADAPTERS>;
TYPED_TEST_SUITE(WriteConformance, WriteAdapters, AdapterName);

TYPED_TEST(WriteConformance, WritesAreReadBackAtEveryAllowedOffset) {
  const Gfn gfn = this->adapter_->writable_gfn();
  for (uint64_t offset : {uint64_t{0}, uint64_t{1}, uint64_t{0x7ff}, uint64_t{4095}}) {
    const std::vector<uint8_t> data(std::min<uint64_t>(16, 4096 - offset),
                                    static_cast<uint8_t>(0xa0 + offset));
    auto after = this->driver().WritePage(gfn, offset, data);
    ASSERT_TRUE(after.ok()) << after.status();
    EXPECT_EQ(after->data()[offset], data[0]);
    auto page = this->driver().ReadPage(gfn);
    ASSERT_TRUE(page.ok());
    EXPECT_TRUE(std::equal(data.begin(), data.end(), page->data() + offset)) << offset;
  }
  // A whole page.
  const std::vector<uint8_t> full(4096, 0x5c);
  ASSERT_TRUE(this->driver().WritePage(gfn, 0, full).ok());
  EXPECT_EQ(this->driver().ReadPage(gfn)->data()[4095], 0x5c);
}

TYPED_TEST(WriteConformance, WritesPastThePageEndOrMaxGfnAreRejected) {
  const Gfn gfn = this->adapter_->writable_gfn();
  const std::vector<uint8_t> data(16, 1);
  EXPECT_FALSE(this->driver().WritePage(gfn, 4090, data).ok());
  EXPECT_FALSE(this->driver().WritePage(gfn, 4096, absl::MakeConstSpan(data.data(), 1)).ok());
  auto bad = this->driver().WritePage(this->beyond_max(), 0, data);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr(this->beyond_max().ToString()));
  // A rejected write changed nothing.
  EXPECT_NE(this->driver().ReadPage(gfn)->data()[4090], 1);
}

}  // namespace
}  // namespace vmi::conformance
