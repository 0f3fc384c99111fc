// XenApi: the Xen tools library calls XenDriver makes (and the poll() on its
// event channel), as a table of function pointers. Production code uses
// RealXenApi(), whose entries are the real libxenctrl & co. functions; tests
// substitute a scripted hypervisor so that the driver's control flow (ring
// handling, teardown, altp2m probing) runs without Xen. A fake starts from
// AbortingXenApi(), generated from the same list, so a call it does not fake
// aborts the test naming the call instead of reaching the real library with
// a bogus handle.
//
// Thread-safety: the table is immutable; the functions' own rules apply.

#ifndef VMI_DRIVERS_XEN_INTERNAL_XEN_API_H_
#define VMI_DRIVERS_XEN_INTERNAL_XEN_API_H_

#include <poll.h>

#include "drivers/xen/internal/xen_headers.h"

namespace vmi::xen::xen_internal {

// X(name) for every call; each becomes a member `name` of XenApi with the
// real function's type.
#define VMI_XEN_API_CALLS(X)              \
  X(xc_interface_open)                    \
  X(xc_interface_close)                   \
  X(xc_domain_getinfolist)                \
  X(xc_domain_maximum_gpfn)               \
  X(xc_domain_pause)                      \
  X(xc_domain_unpause)                    \
  X(xc_domain_setmaxmem)                  \
  X(xc_domain_populate_physmap_exact)     \
  X(xc_domain_decrease_reservation_exact) \
  X(xc_domain_hvm_getcontext)             \
  X(xc_domain_hvm_getcontext_partial)     \
  X(xc_domain_hvm_setcontext)             \
  X(xc_hvm_param_get)                     \
  X(xc_set_mem_access)                    \
  X(xc_get_mem_access)                    \
  X(xc_altp2m_get_domain_state)           \
  X(xc_altp2m_set_domain_state)           \
  X(xc_altp2m_create_view)                \
  X(xc_altp2m_destroy_view)               \
  X(xc_altp2m_switch_to_view)             \
  X(xc_altp2m_change_gfn)                 \
  X(xc_altp2m_set_mem_access)             \
  X(xc_altp2m_get_mem_access)             \
  X(xc_monitor_enable)                    \
  X(xc_monitor_disable)                   \
  X(xc_monitor_write_ctrlreg)             \
  X(xc_monitor_mov_to_msr)                \
  X(xc_monitor_singlestep)                \
  X(xc_monitor_software_breakpoint)       \
  X(xc_monitor_debug_exceptions)          \
  X(xc_monitor_guest_request)             \
  X(xc_monitor_cpuid)                     \
  X(xc_monitor_descriptor_access)         \
  X(xenforeignmemory_open)                \
  X(xenforeignmemory_close)               \
  X(xenforeignmemory_map)                 \
  X(xenforeignmemory_unmap)               \
  X(xenevtchn_open)                       \
  X(xenevtchn_close)                      \
  X(xenevtchn_bind_interdomain)           \
  X(xenevtchn_unbind)                     \
  X(xenevtchn_fd)                         \
  X(xenevtchn_pending)                    \
  X(xenevtchn_unmask)                     \
  X(xenevtchn_notify)                     \
  X(xendevicemodel_open)                  \
  X(xendevicemodel_close)                 \
  X(xendevicemodel_inject_event)          \
  X(xs_open)                              \
  X(xs_close)                             \
  X(xs_directory)                         \
  X(xs_read)                              \
  X(poll)

struct XenApi {
#define VMI_XEN_API_MEMBER(name) decltype(&::name) name = &::name;
  VMI_XEN_API_CALLS(VMI_XEN_API_MEMBER)
#undef VMI_XEN_API_MEMBER
#ifdef VM_EVENT_REASON_IO_INSTRUCTION
  decltype(&::xc_monitor_io) xc_monitor_io = &::xc_monitor_io;
#endif
};

// The real libraries.
const XenApi& RealXenApi();

// Every entry aborts the process with "XenApi call <name> is not faked": the
// table a fake starts from before it installs its own entries.
XenApi AbortingXenApi();

}  // namespace vmi::xen::xen_internal

#endif  // VMI_DRIVERS_XEN_INTERNAL_XEN_API_H_
