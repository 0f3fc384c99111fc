// The Xen 4.17 tools headers in the order they must be included, with C
// linkage (xenctrl.h and friends carry no extern "C" of their own).
// xen/vm_event.h needs __XEN_TOOLS__ (//third_party:xen defines it) and
// xenctrl.h before it. The headers use GNU extensions: sources including this
// file are compiled with -std=gnu++20.
//
// Thread-safety: declarations only.

#ifndef VMI_DRIVERS_XEN_INTERNAL_XEN_HEADERS_H_
#define VMI_DRIVERS_XEN_INTERNAL_XEN_HEADERS_H_

#ifndef __XEN_TOOLS__
#error "drivers/xen needs __XEN_TOOLS__; depend on //third_party:xen"
#endif

extern "C" {
#include <xenctrl.h>
#include <xendevicemodel.h>
#include <xenevtchn.h>
#include <xenforeignmemory.h>
#include <xenstore.h>
#include <xentoollog.h>
// Must come after xenctrl.h.
#include <xen/hvm/params.h>
#include <xen/hvm/save.h>
#include <xen/memory.h>
#include <xen/vm_event.h>
}

#endif  // VMI_DRIVERS_XEN_INTERNAL_XEN_HEADERS_H_
