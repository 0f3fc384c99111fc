#include "drivers/xen/internal/xen_api.h"

#include <cstdio>
#include <cstdlib>

namespace vmi::xen::xen_internal {
namespace {

constexpr const char* kCallNames[] = {
#define VMI_XEN_API_NAME(name) #name,
    VMI_XEN_API_CALLS(VMI_XEN_API_NAME)
#undef VMI_XEN_API_NAME
};

enum CallIndex : int {
#define VMI_XEN_API_INDEX(name) kIndex_##name,
  VMI_XEN_API_CALLS(VMI_XEN_API_INDEX)
#undef VMI_XEN_API_INDEX
};

[[noreturn]] void AbortUnfaked(const char* call) {
  std::fprintf(stderr, "XenApi call %s is not faked: the fake must install an entry for it\n",
               call);
  std::fflush(stderr);
  std::abort();
}

// One function per (signature, call): aborts naming the call.
template <typename F, int kIndex>
struct Unfaked;
template <typename R, typename... A, int kIndex>
struct Unfaked<R (*)(A...), kIndex> {
  static R Call(A...) { AbortUnfaked(kCallNames[kIndex]); }
};
template <typename R, typename... A, int kIndex>
struct Unfaked<R (*)(A...) noexcept, kIndex> {
  static R Call(A...) noexcept { AbortUnfaked(kCallNames[kIndex]); }
};

}  // namespace

const XenApi& RealXenApi() {
  static const XenApi api;
  return api;
}

XenApi AbortingXenApi() {
  XenApi api;
#define VMI_XEN_API_ABORTING(name) \
  api.name = &Unfaked<decltype(&::name), kIndex_##name>::Call;
  VMI_XEN_API_CALLS(VMI_XEN_API_ABORTING)
#undef VMI_XEN_API_ABORTING
#ifdef VM_EVENT_REASON_IO_INSTRUCTION
  api.xc_monitor_io = nullptr;  // newer than the list; never faked
#endif
  return api;
}

}  // namespace vmi::xen::xen_internal
