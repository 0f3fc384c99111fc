// VmEventBackRing against a front end in the same process, on a real page:
// what Xen produces is taken in order, counted, never before it is
// published; responses become visible to Xen only when published; the
// indices wrap around the ring many times; a full ring is drained whole.

#include "drivers/xen/internal/vm_event_ring.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace vmi::xen::xen_internal {
namespace {

constexpr size_t kPage = XC_PAGE_SIZE;

class VmEventRingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    page_ = mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(page_, MAP_FAILED);
    back_.Attach(page_, kPage);
    FRONT_RING_INIT(&front_, static_cast<vm_event_sring_t*>(page_), kPage);
  }
  void TearDown() override { munmap(page_, kPage); }

  // Xen's side: a request on vCPU `vcpu`, published or only queued.
  void Produce(uint32_t vcpu, bool publish = true) {
    vm_event_request_t r;
    std::memset(&r, 0, sizeof(r));
    r.version = VM_EVENT_INTERFACE_VERSION;
    r.vcpu_id = vcpu;
    r.reason = VM_EVENT_REASON_SOFTWARE_BREAKPOINT;
    *RING_GET_REQUEST(&front_, front_.req_prod_pvt) = r;
    ++front_.req_prod_pvt;
    if (publish) RING_PUSH_REQUESTS(&front_);
  }
  // Xen's side: the responses it can see.
  std::vector<uint32_t> Consume() {
    std::vector<uint32_t> out;
    while (front_.rsp_cons != front_.sring->rsp_prod) {
      out.push_back(RING_GET_RESPONSE(&front_, front_.rsp_cons)->vcpu_id);
      ++front_.rsp_cons;
    }
    return out;
  }
  void Answer(const vm_event_request_t& request) {
    vm_event_response_t rsp;
    std::memset(&rsp, 0, sizeof(rsp));
    rsp.vcpu_id = request.vcpu_id;
    back_.Put(rsp);
  }

  void* page_ = nullptr;
  VmEventBackRing back_;
  vm_event_front_ring_t front_{};
};

TEST_F(VmEventRingTest, EmptyUntilXenPublishes) {
  EXPECT_TRUE(back_.attached());
  EXPECT_EQ(back_.Unconsumed(), 0u);
  Produce(1, /*publish=*/false);
  EXPECT_EQ(back_.Unconsumed(), 0u);  // queued on Xen's side only
  RING_PUSH_REQUESTS(&front_);
  EXPECT_EQ(back_.Unconsumed(), 1u);
}

TEST_F(VmEventRingTest, RequestsAreTakenInOrderAndAskForTheNextNotification) {
  Produce(0);
  Produce(1);
  Produce(2);
  ASSERT_EQ(back_.Unconsumed(), 3u);
  EXPECT_EQ(back_.Take().vcpu_id, 0u);
  EXPECT_EQ(front_.sring->req_event, 2u);  // notify when request 2 is produced
  EXPECT_EQ(back_.Unconsumed(), 2u);
  EXPECT_EQ(back_.Take().vcpu_id, 1u);
  EXPECT_EQ(back_.Take().vcpu_id, 2u);
  EXPECT_EQ(back_.Unconsumed(), 0u);
  EXPECT_EQ(front_.sring->req_event, 4u);
}

TEST_F(VmEventRingTest, ResponsesAreInvisibleUntilPublished) {
  Produce(5);
  Answer(back_.Take());
  EXPECT_EQ(back_.unpublished(), 1u);
  EXPECT_TRUE(Consume().empty());
  back_.Publish();
  EXPECT_EQ(back_.unpublished(), 0u);
  EXPECT_EQ(Consume(), std::vector<uint32_t>{5});
}

TEST_F(VmEventRingTest, IndicesWrapAroundTheRingManyTimes) {
  const size_t size = RING_SIZE(&front_);
  ASSERT_GE(size, 2u);
  uint32_t next = 0, expect = 0;
  for (int batch = 0; batch < 50; ++batch) {
    const size_t n = 1 + batch % size;
    for (size_t i = 0; i < n; ++i) Produce(next++);
    ASSERT_EQ(back_.Unconsumed(), n);
    std::vector<uint32_t> want;
    while (back_.Unconsumed() > 0) {
      vm_event_request_t r = back_.Take();
      ASSERT_EQ(r.vcpu_id, expect++);
      want.push_back(r.vcpu_id);
      Answer(r);
    }
    back_.Publish();
    EXPECT_EQ(Consume(), want);
  }
  EXPECT_GT(front_.req_prod_pvt, 10 * size);  // wrapped
}

TEST_F(VmEventRingTest, AFullRingIsDrainedWhole) {
  const size_t size = RING_SIZE(&front_);
  for (size_t i = 0; i < size; ++i) Produce(static_cast<uint32_t>(i));
  EXPECT_TRUE(RING_FULL(&front_));
  EXPECT_EQ(back_.Unconsumed(), size);
  for (size_t i = 0; i < size; ++i) Answer(back_.Take());
  back_.Publish();
  EXPECT_EQ(Consume().size(), size);
  EXPECT_FALSE(RING_FULL(&front_));
}

TEST_F(VmEventRingTest, DetachForgetsThePage) {
  Produce(1);
  back_.Detach();
  EXPECT_FALSE(back_.attached());
  EXPECT_EQ(back_.Unconsumed(), 0u);
}

}  // namespace
}  // namespace vmi::xen::xen_internal
