#include "drivers/xen/internal/vm_event_ring.h"

#include <cstring>

namespace vmi::xen::xen_internal {

void VmEventBackRing::Attach(void* page, size_t size) {
  auto* sring = static_cast<vm_event_sring_t*>(page);
  SHARED_RING_INIT(sring);
  BACK_RING_INIT(&ring_, sring, size);
  page_ = page;
  rsp_prod_pvt_delta_ = 0;
}

void VmEventBackRing::Detach() {
  page_ = nullptr;
  ring_ = vm_event_back_ring_t{};
  rsp_prod_pvt_delta_ = 0;
}

size_t VmEventBackRing::Unconsumed() {
  if (page_ == nullptr) return 0;
  // The count (RING_HAS_UNCONSUMED_REQUESTS may be configured as a bool).
  const size_t n = XEN_RING_NR_UNCONSUMED_REQUESTS(&ring_);
  xen_rmb();  // read requests only after seeing req_prod
  return n;
}

vm_event_request_t VmEventBackRing::Take() {
  vm_event_request_t request;
  RING_COPY_REQUEST(&ring_, ring_.req_cons, &request);
  ++ring_.req_cons;
  // Ask for a notification for the next request, and make that visible
  // before req_prod is read again (Xen's producer checks req_event).
  ring_.sring->req_event = ring_.req_cons + 1;
  xen_mb();
  return request;
}

void VmEventBackRing::Put(const vm_event_response_t& response) {
  *RING_GET_RESPONSE(&ring_, ring_.rsp_prod_pvt) = response;
  ++ring_.rsp_prod_pvt;
  ++rsp_prod_pvt_delta_;
}

void VmEventBackRing::Publish() {
  RING_PUSH_RESPONSES(&ring_);  // write barrier, then rsp_prod
  rsp_prod_pvt_delta_ = 0;
}

}  // namespace vmi::xen::xen_internal
