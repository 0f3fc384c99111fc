// The back end of a Xen vm_event ring: the shared page Xen puts requests on
// and takes responses from (xen/io/ring.h's protocol over vm_event_request_t
// and vm_event_response_t). XenDriver owns one for the monitor ring; the
// hypervisor side (or a test) is the front end.
//
// Memory ordering follows the ring protocol: requests are read only after
// req_prod was seen (read barrier), the request after the one being taken
// asks for a notification (req_event) made visible before req_prod is read
// again (full barrier), and responses are published with a write barrier
// before rsp_prod moves.
//
// Thread-safety: thread-compatible; one consumer. The page is shared with
// the producer by design.

#ifndef VMI_DRIVERS_XEN_INTERNAL_VM_EVENT_RING_H_
#define VMI_DRIVERS_XEN_INTERNAL_VM_EVENT_RING_H_

#include <cstddef>
#include <cstring>

#include "drivers/xen/internal/xen_headers.h"

namespace vmi::xen::xen_internal {

class VmEventBackRing {
 public:
  // Initialises the shared ring in `page` (`size` bytes, normally one page)
  // as a fresh ring and attaches to it as the consumer.
  void Attach(void* page, size_t size);
  // Forgets the page (which the caller unmaps); nothing is published.
  void Detach();
  bool attached() const { return page_ != nullptr; }
  void* page() const { return page_; }

  // Requests Xen has produced and this end has not taken.
  size_t Unconsumed();
  // The next request (Unconsumed() must be > 0), copied out of the ring.
  vm_event_request_t Take();
  // Queues a response; invisible to Xen until Publish().
  void Put(const vm_event_response_t& response);
  // Responses put since the last Publish.
  size_t unpublished() const { return rsp_prod_pvt_delta_; }
  // Makes the queued responses visible to Xen.
  void Publish();

 private:
  void* page_ = nullptr;
  vm_event_back_ring_t ring_{};
  size_t rsp_prod_pvt_delta_ = 0;
};

}  // namespace vmi::xen::xen_internal

#endif  // VMI_DRIVERS_XEN_INTERNAL_VM_EVENT_RING_H_
