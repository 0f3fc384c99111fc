#include "drivers/xen/internal/fake_xen.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_format.h"

namespace vmi::xen::xen_internal {
namespace {

constexpr size_t kPage = XC_PAGE_SIZE;
constexpr evtchn_port_t kLocalPort = 42;
constexpr uint32_t kRemotePort = 7;

FakeXen* g_fake = nullptr;

template <typename T>
T* Handle() {
  return reinterpret_cast<T*>(g_fake);
}

// Returns -1 with errno set when the test made `call` fail, or when the
// domain is not the fake's.
#define FAKE_CALL(call, dom)          \
  FakeXen* f = FakeXen::current();    \
  f->calls.push_back(call);           \
  if (f->ShouldFail(call)) return -1; \
  if ((dom) != f->domid) {            \
    errno = ESRCH;                    \
    return -1;                        \
  }

xc_interface* InterfaceOpen(xentoollog_logger* logger, xentoollog_logger*, unsigned) {
  FakeXen* f = FakeXen::current();
  f->calls.push_back("xc_interface_open");
  if (!f->xen_present) {
    xtl_log(logger, XTL_ERROR, ENOENT, "xencall",
            "Could not obtain handle on privileged command interface");
    errno = ENOENT;
    return nullptr;
  }
  return Handle<xc_interface>();
}
int InterfaceClose(xc_interface*) {
  FakeXen::current()->calls.push_back("xc_interface_close");
  return 0;
}

int GetInfoList(xc_interface*, uint32_t first, unsigned int max, xc_domaininfo_t* info) {
  FakeXen* f = FakeXen::current();
  f->calls.push_back("xc_domain_getinfolist");
  if (f->ShouldFail("xc_domain_getinfolist")) return -1;
  if (max < 1 || first > f->domid) return 0;
  std::memset(info, 0, sizeof(*info));
  info->domain = static_cast<domid_t>(f->domid);
  info->flags = f->hvm ? XEN_DOMINF_hvm_guest : 0;
  info->tot_pages = f->populated.size();
  info->max_pages = f->max_pages;
  info->max_vcpu_id = f->max_vcpu_id;
  return 1;
}

int MaximumGpfn(xc_interface*, uint32_t dom, xen_pfn_t* gpfns) {
  FAKE_CALL("xc_domain_maximum_gpfn", dom);
  *gpfns = f->populated.empty() ? 0 : *f->populated.rbegin();
  return 0;
}
int Pause(xc_interface*, uint32_t dom) {
  FAKE_CALL("xc_domain_pause", dom);
  ++f->pause_count;
  return 0;
}
int Unpause(xc_interface*, uint32_t dom) {
  FAKE_CALL("xc_domain_unpause", dom);
  if (f->pause_count == 0) {
    errno = EINVAL;
    return -1;
  }
  --f->pause_count;
  return 0;
}
int SetMaxMem(xc_interface*, uint32_t dom, uint64_t max_memkb) {
  FAKE_CALL("xc_domain_setmaxmem", dom);
  f->max_pages = max_memkb / (kPage / 1024);
  return 0;
}
int Populate(xc_interface*, uint32_t dom, unsigned long nr, unsigned int order, unsigned int,
             xen_pfn_t* extents) {
  FAKE_CALL("xc_domain_populate_physmap_exact", dom);
  if (nr != 1 || order != 0 || extents[0] >= FakeXen::kRamPages) {
    errno = EINVAL;
    return -1;
  }
  if (f->populated.size() + 1 > f->max_pages) {
    errno = ENOMEM;
    return -1;
  }
  f->populated.insert(extents[0]);
  std::memset(f->Ram(extents[0]), 0, kPage);
  return 0;
}
int Decrease(xc_interface*, uint32_t dom, unsigned long nr, unsigned int, xen_pfn_t* extents) {
  FAKE_CALL("xc_domain_decrease_reservation_exact", dom);
  if (nr != 1 || f->populated.erase(extents[0]) == 0) {
    errno = EINVAL;
    return -1;
  }
  return 0;
}


int GetContext(xc_interface*, uint32_t dom, uint8_t* buf, uint32_t size) {
  FAKE_CALL("xc_domain_hvm_getcontext", dom);
  std::vector<uint8_t> ctx = HvmContextBlob(f->cpus);
  if (buf == nullptr) return static_cast<int>(ctx.size());
  if (size < ctx.size()) {
    errno = ENOBUFS;
    return -1;
  }
  std::memcpy(buf, ctx.data(), ctx.size());
  return static_cast<int>(ctx.size());
}
int GetContextPartial(xc_interface*, uint32_t dom, uint16_t type, uint16_t instance, void* buf,
                      uint32_t size) {
  FAKE_CALL("xc_domain_hvm_getcontext_partial", dom);
  if (type != HVM_SAVE_CODE(CPU) || instance >= f->cpus.size()) {
    errno = ENOENT;
    return -1;
  }
  if (size < sizeof(hvm_hw_cpu)) {
    errno = ENOBUFS;
    return -1;
  }
  std::memcpy(buf, &f->cpus[instance], sizeof(hvm_hw_cpu));
  return 0;
}
int SetContext(xc_interface*, uint32_t dom, uint8_t* buf, uint32_t size) {
  FAKE_CALL("xc_domain_hvm_setcontext", dom);
  if (f->pause_count == 0) {  // the driver promises to pause around it
    errno = EBUSY;
    return -1;
  }
  size_t off = 0;
  while (off + sizeof(hvm_save_descriptor) <= size) {
    hvm_save_descriptor d;
    std::memcpy(&d, buf + off, sizeof(d));
    off += sizeof(d);
    if (d.typecode == 0) return 0;
    if (d.typecode == HVM_SAVE_CODE(CPU) && d.instance < f->cpus.size()) {
      std::memcpy(&f->cpus[d.instance], buf + off, sizeof(hvm_hw_cpu));
    }
    off += d.length;
  }
  errno = EINVAL;
  return -1;
}

int ParamGet(xc_interface*, uint32_t dom, uint32_t param, uint64_t* value) {
  FAKE_CALL("xc_hvm_param_get", dom);
  if (param != HVM_PARAM_ALTP2M) {
    errno = EINVAL;
    return -1;
  }
  *value = f->altp2m_param;
  return 0;
}

bool ValidGfn(FakeXen* f, uint64_t gfn) { return f->populated.contains(gfn); }

int SetMemAccess(xc_interface*, uint32_t dom, xenmem_access_t a, uint64_t first, uint32_t nr) {
  FAKE_CALL("xc_set_mem_access", dom);
  for (uint64_t g = first; g < first + nr; ++g) {
    if (!ValidGfn(f, g)) {
      errno = ESRCH;
      return -1;
    }
    f->access[0][g] = a;
  }
  return 0;
}
int GetMemAccess(xc_interface*, uint32_t dom, uint64_t pfn, xenmem_access_t* a) {
  FAKE_CALL("xc_get_mem_access", dom);
  if (!ValidGfn(f, pfn)) {
    errno = ESRCH;
    return -1;
  }
  auto it = f->access[0].find(pfn);
  *a = it == f->access[0].end() ? XENMEM_access_rwx : it->second;
  return 0;
}

bool Altp2mUsable(FakeXen* f) {
  if (f->altp2m_param == XEN_ALTP2M_disabled || !f->altp2m_enabled) {
    errno = EOPNOTSUPP;
    return false;
  }
  return true;
}
bool ViewExists(FakeXen* f, uint16_t view) {
  if (view != 0 && !f->views.contains(view)) {
    errno = EINVAL;
    return false;
  }
  return true;
}

int Altp2mGetState(xc_interface*, uint32_t dom, bool* state) {
  FAKE_CALL("xc_altp2m_get_domain_state", dom);
  if (f->altp2m_param == XEN_ALTP2M_disabled) {
    errno = EOPNOTSUPP;
    return -1;
  }
  *state = f->altp2m_enabled;
  return 0;
}
int Altp2mSetState(xc_interface*, uint32_t dom, bool state) {
  FAKE_CALL("xc_altp2m_set_domain_state", dom);
  if (f->altp2m_param == XEN_ALTP2M_disabled) {
    errno = EOPNOTSUPP;
    return -1;
  }
  f->altp2m_enabled = state;
  if (!state) {
    f->views.clear();
    f->active_view = 0;
  }
  return 0;
}
int Altp2mCreate(xc_interface*, uint32_t dom, xenmem_access_t a, uint16_t* view) {
  FAKE_CALL("xc_altp2m_create_view", dom);
  if (!Altp2mUsable(f)) return -1;
  uint16_t id = 1;
  while (f->views.contains(id)) ++id;
  f->views.insert(id);
  for (uint64_t g : f->populated) f->access[id][g] = a;
  *view = id;
  return 0;
}
int Altp2mDestroy(xc_interface*, uint32_t dom, uint16_t view) {
  FAKE_CALL("xc_altp2m_destroy_view", dom);
  if (!Altp2mUsable(f)) return -1;
  if (view == 0 || !f->views.contains(view)) {
    errno = EINVAL;
    return -1;
  }
  if (f->active_view == view) {
    errno = EBUSY;
    return -1;
  }
  f->views.erase(view);
  f->access.erase(view);
  f->remapped.erase(view);
  return 0;
}
int Altp2mSwitch(xc_interface*, uint32_t dom, uint16_t view) {
  FAKE_CALL("xc_altp2m_switch_to_view", dom);
  if (!Altp2mUsable(f) || !ViewExists(f, view)) return -1;
  f->active_view = view;
  return 0;
}
int Altp2mChangeGfn(xc_interface*, uint32_t dom, uint16_t view, xen_pfn_t old_gfn,
                    xen_pfn_t new_gfn) {
  FAKE_CALL("xc_altp2m_change_gfn", dom);
  if (!Altp2mUsable(f) || !ViewExists(f, view)) return -1;
  if (new_gfn == ~xen_pfn_t{0}) {
    f->remapped[view].erase(old_gfn);
  } else {
    f->remapped[view][old_gfn] = new_gfn;
  }
  return 0;
}
int Altp2mSetAccess(xc_interface*, uint32_t dom, uint16_t view, xen_pfn_t gfn, xenmem_access_t a) {
  FAKE_CALL("xc_altp2m_set_mem_access", dom);
  if (!Altp2mUsable(f) || !ViewExists(f, view)) return -1;
  f->access[view][gfn] = a;
  return 0;
}
int Altp2mGetAccess(xc_interface*, uint32_t dom, uint16_t view, xen_pfn_t gfn, xenmem_access_t* a) {
  FAKE_CALL("xc_altp2m_get_mem_access", dom);
  if (!Altp2mUsable(f) || !ViewExists(f, view)) return -1;
  auto it = f->access[view].find(gfn);
  *a = it == f->access[view].end() ? XENMEM_access_rwx : it->second;
  return 0;
}

void* MonitorEnable(xc_interface*, uint32_t dom, uint32_t* port) {
  FakeXen* f = FakeXen::current();
  f->calls.push_back("xc_monitor_enable");
  if (f->ShouldFail("xc_monitor_enable")) return nullptr;
  if (dom != f->domid || f->ring_enabled) {
    errno = dom != f->domid ? ESRCH : EBUSY;
    return nullptr;
  }
  void* page = mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (page == MAP_FAILED) return nullptr;
  f->set_ring_page(page);
  f->front_ready() = false;
  f->ring_enabled = true;
  *port = kRemotePort;
  return page;
}
int MonitorDisable(xc_interface*, uint32_t dom) {
  FAKE_CALL("xc_monitor_disable", dom);
  if (!f->ring_enabled) {
    errno = EINVAL;
    return -1;
  }
  f->responses_at_disable = f->TakeResponses();
  f->ring_enabled = false;
  f->set_ring_page(nullptr);  // the driver unmaps it
  return 0;
}

int SetMonitorFlag(FakeXen* f, const std::string& name, bool enable) {
  if (!f->ring_enabled) {
    errno = EINVAL;
    return -1;
  }
  f->monitors[name] = enable;
  return 0;
}

int MonitorCtrlreg(xc_interface*, uint32_t dom, uint16_t index, bool enable, bool, uint64_t, bool) {
  FAKE_CALL("xc_monitor_write_ctrlreg", dom);
  const char* names[] = {"cr0", "cr3", "cr4", "xcr0"};
  if (index > 3) {
    errno = EINVAL;
    return -1;
  }
  return SetMonitorFlag(f, names[index], enable);
}
int MonitorMsr(xc_interface*, uint32_t dom, uint32_t msr, bool enable, bool) {
  FAKE_CALL("xc_monitor_mov_to_msr", dom);
  return SetMonitorFlag(f, absl::StrFormat("msr:0x%x", msr), enable);
}
int MonitorSinglestep(xc_interface*, uint32_t dom, bool enable) {
  FAKE_CALL("xc_monitor_singlestep", dom);
  return SetMonitorFlag(f, "singlestep", enable);
}
int MonitorBreakpoint(xc_interface*, uint32_t dom, bool enable) {
  FAKE_CALL("xc_monitor_software_breakpoint", dom);
  return SetMonitorFlag(f, "breakpoint", enable);
}
int MonitorDebug(xc_interface*, uint32_t dom, bool enable, bool) {
  FAKE_CALL("xc_monitor_debug_exceptions", dom);
  return SetMonitorFlag(f, "debug", enable);
}
int MonitorGuestRequest(xc_interface*, uint32_t dom, bool enable, bool, bool) {
  FAKE_CALL("xc_monitor_guest_request", dom);
  return SetMonitorFlag(f, "guest_request", enable);
}
int MonitorCpuid(xc_interface*, uint32_t dom, bool enable) {
  FAKE_CALL("xc_monitor_cpuid", dom);
  return SetMonitorFlag(f, "cpuid", enable);
}
int MonitorDescriptor(xc_interface*, uint32_t dom, bool enable) {
  FAKE_CALL("xc_monitor_descriptor_access", dom);
  return SetMonitorFlag(f, "descriptor", enable);
}

xenforeignmemory_handle* FmemOpen(xentoollog_logger*, unsigned) {
  FakeXen::current()->calls.push_back("xenforeignmemory_open");
  return Handle<xenforeignmemory_handle>();
}
int FmemClose(xenforeignmemory_handle*) {
  FakeXen::current()->calls.push_back("xenforeignmemory_close");
  return 0;
}
void* FmemMap(xenforeignmemory_handle*, uint32_t dom, int prot, size_t pages, const xen_pfn_t* arr,
              int* err) {
  FakeXen* f = FakeXen::current();
  f->calls.push_back("xenforeignmemory_map");
  if (f->ShouldFail("xenforeignmemory_map")) return nullptr;
  if (dom != f->domid) {
    errno = ESRCH;
    return nullptr;
  }
  void* base = mmap(nullptr, pages * kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) return nullptr;
  bool any_error = false;
  for (size_t i = 0; i < pages; ++i) {
    int e = 0;
    if (!f->populated.contains(arr[i])) {
      e = -ENOENT;
    } else if (mmap(static_cast<uint8_t*>(base) + i * kPage, kPage, prot, MAP_SHARED | MAP_FIXED,
                    f->ram_fd(), static_cast<off_t>(arr[i] * kPage)) == MAP_FAILED) {
      e = -errno;
    }
    if (err != nullptr) err[i] = e;
    any_error |= e != 0;
  }
  if (any_error && err == nullptr) {
    munmap(base, pages * kPage);
    errno = ENOENT;
    return nullptr;
  }
  f->live_mappings += static_cast<int>(pages);
  return base;
}
int FmemUnmap(xenforeignmemory_handle*, void* addr, size_t pages) {
  FakeXen* f = FakeXen::current();
  f->calls.push_back("xenforeignmemory_unmap");
  f->live_mappings -= static_cast<int>(pages);
  return munmap(addr, pages * kPage);
}

xenevtchn_handle* EvtchnOpen(xentoollog_logger*, unsigned int) {
  FakeXen* f = FakeXen::current();
  f->calls.push_back("xenevtchn_open");
  if (f->ShouldFail("xenevtchn_open")) return nullptr;
  return Handle<xenevtchn_handle>();
}
int EvtchnClose(xenevtchn_handle*) {
  FakeXen::current()->calls.push_back("xenevtchn_close");
  return 0;
}
xenevtchn_port_or_error_t EvtchnBind(xenevtchn_handle*, uint32_t dom, evtchn_port_t remote) {
  FAKE_CALL("xenevtchn_bind_interdomain", dom);
  if (remote != kRemotePort) {
    errno = EINVAL;
    return -1;
  }
  return kLocalPort;
}
int EvtchnUnbind(xenevtchn_handle*, evtchn_port_t port) {
  FakeXen* f = FakeXen::current();
  f->calls.push_back("xenevtchn_unbind");
  return port == kLocalPort ? 0 : -1;
}
int EvtchnFd(xenevtchn_handle*) { return FakeXen::current()->evtchn_read_fd(); }
xenevtchn_port_or_error_t EvtchnPending(xenevtchn_handle*) {
  FakeXen* f = FakeXen::current();
  char byte;
  if (read(f->evtchn_read_fd(), &byte, 1) != 1) {
    errno = EAGAIN;
    return -1;
  }
  return kLocalPort;
}
int EvtchnUnmask(xenevtchn_handle*, evtchn_port_t port) { return port == kLocalPort ? 0 : -1; }
int EvtchnNotify(xenevtchn_handle*, evtchn_port_t port) {
  FakeXen* f = FakeXen::current();
  f->calls.push_back("xenevtchn_notify");
  if (port != kLocalPort) {
    errno = EINVAL;
    return -1;
  }
  ++f->notifications;
  return 0;
}

xendevicemodel_handle* DmOpen(xentoollog_logger*, unsigned int) {
  FakeXen::current()->calls.push_back("xendevicemodel_open");
  return Handle<xendevicemodel_handle>();
}
int DmClose(xendevicemodel_handle*) {
  FakeXen::current()->calls.push_back("xendevicemodel_close");
  return 0;
}
int DmInject(xendevicemodel_handle*, domid_t dom, int vcpu, uint8_t vector, uint8_t type,
             uint32_t error_code, uint8_t insn_len, uint64_t extra) {
  FAKE_CALL("xendevicemodel_inject_event", dom);
  f->injected.push_back({vcpu, vector, type, error_code, insn_len, extra});
  return 0;
}

xs_handle* XsOpen(unsigned long) {
  FakeXen* f = FakeXen::current();
  f->calls.push_back("xs_open");
  if (!f->xen_present) {
    errno = ENOENT;
    return nullptr;
  }
  return Handle<xs_handle>();
}
void XsClose(xs_handle*) { FakeXen::current()->calls.push_back("xs_close"); }
char** XsDirectory(xs_handle*, xs_transaction_t, const char* path, unsigned int* num) {
  FakeXen* f = FakeXen::current();
  if (std::strcmp(path, "/local/domain") != 0) {
    errno = ENOENT;
    return nullptr;
  }
  // One block: the pointer array, then the strings (xs_directory's layout;
  // the caller frees the block).
  const std::string ids[] = {"0", std::to_string(f->domid)};
  size_t size = 2 * sizeof(char*);
  for (const auto& id : ids) size += id.size() + 1;
  char** out = static_cast<char**>(std::malloc(size));
  char* strings = reinterpret_cast<char*>(out + 2);
  for (int i = 0; i < 2; ++i) {
    out[i] = strings;
    std::memcpy(strings, ids[i].c_str(), ids[i].size() + 1);
    strings += ids[i].size() + 1;
  }
  *num = 2;
  return out;
}
void* XsRead(xs_handle*, xs_transaction_t, const char* path, unsigned int* len) {
  FakeXen* f = FakeXen::current();
  std::string value;
  if (path == absl::StrFormat("/local/domain/%u/name", f->domid)) {
    value = f->name;
  } else if (std::strcmp(path, "/local/domain/0/name") == 0) {
    value = "Domain-0";
  } else {
    errno = ENOENT;
    return nullptr;
  }
  char* out = static_cast<char*>(std::malloc(value.size() + 1));
  std::memcpy(out, value.c_str(), value.size() + 1);
  *len = static_cast<unsigned int>(value.size());
  return out;
}

#undef FAKE_CALL

}  // namespace

FakeXen::FakeXen() {
  g_fake = this;
  ram_fd_ = memfd_create("fake-xen-guest-ram", 0);
  if (ram_fd_ < 0 || ftruncate(ram_fd_, kRamPages * kPage) != 0) std::abort();
  void* ram = mmap(nullptr, kRamPages * kPage, PROT_READ | PROT_WRITE, MAP_SHARED, ram_fd_, 0);
  if (ram == MAP_FAILED) std::abort();
  ram_ = static_cast<uint8_t*>(ram);
  if (pipe2(pipe_, O_NONBLOCK | O_CLOEXEC) != 0) std::abort();
  for (uint64_t g = 0; g < 256; ++g) populated.insert(g);
  cpus.resize(max_vcpu_id + 1);
  for (hvm_hw_cpu& c : cpus) std::memset(&c, 0, sizeof(c));

  // Every entry this fake does not install aborts, naming the call.
  api_ = AbortingXenApi();
  api_.poll = &::poll;  // the event channel is a real pipe
  api_.xc_interface_open = &InterfaceOpen;
  api_.xc_interface_close = &InterfaceClose;
  api_.xc_domain_getinfolist = &GetInfoList;
  api_.xc_domain_maximum_gpfn = &MaximumGpfn;
  api_.xc_domain_pause = &Pause;
  api_.xc_domain_unpause = &Unpause;
  api_.xc_domain_setmaxmem = &SetMaxMem;
  api_.xc_domain_populate_physmap_exact = &Populate;
  api_.xc_domain_decrease_reservation_exact = &Decrease;
  api_.xc_domain_hvm_getcontext = &GetContext;
  api_.xc_domain_hvm_getcontext_partial = &GetContextPartial;
  api_.xc_domain_hvm_setcontext = &SetContext;
  api_.xc_hvm_param_get = &ParamGet;
  api_.xc_set_mem_access = &SetMemAccess;
  api_.xc_get_mem_access = &GetMemAccess;
  api_.xc_altp2m_get_domain_state = &Altp2mGetState;
  api_.xc_altp2m_set_domain_state = &Altp2mSetState;
  api_.xc_altp2m_create_view = &Altp2mCreate;
  api_.xc_altp2m_destroy_view = &Altp2mDestroy;
  api_.xc_altp2m_switch_to_view = &Altp2mSwitch;
  api_.xc_altp2m_change_gfn = &Altp2mChangeGfn;
  api_.xc_altp2m_set_mem_access = &Altp2mSetAccess;
  api_.xc_altp2m_get_mem_access = &Altp2mGetAccess;
  api_.xc_monitor_enable = &MonitorEnable;
  api_.xc_monitor_disable = &MonitorDisable;
  api_.xc_monitor_write_ctrlreg = &MonitorCtrlreg;
  api_.xc_monitor_mov_to_msr = &MonitorMsr;
  api_.xc_monitor_singlestep = &MonitorSinglestep;
  api_.xc_monitor_software_breakpoint = &MonitorBreakpoint;
  api_.xc_monitor_debug_exceptions = &MonitorDebug;
  api_.xc_monitor_guest_request = &MonitorGuestRequest;
  api_.xc_monitor_cpuid = &MonitorCpuid;
  api_.xc_monitor_descriptor_access = &MonitorDescriptor;
  api_.xenforeignmemory_open = &FmemOpen;
  api_.xenforeignmemory_close = &FmemClose;
  api_.xenforeignmemory_map = &FmemMap;
  api_.xenforeignmemory_unmap = &FmemUnmap;
  api_.xenevtchn_open = &EvtchnOpen;
  api_.xenevtchn_close = &EvtchnClose;
  api_.xenevtchn_bind_interdomain = &EvtchnBind;
  api_.xenevtchn_unbind = &EvtchnUnbind;
  api_.xenevtchn_fd = &EvtchnFd;
  api_.xenevtchn_pending = &EvtchnPending;
  api_.xenevtchn_unmask = &EvtchnUnmask;
  api_.xenevtchn_notify = &EvtchnNotify;
  api_.xendevicemodel_open = &DmOpen;
  api_.xendevicemodel_close = &DmClose;
  api_.xendevicemodel_inject_event = &DmInject;
  api_.xs_open = &XsOpen;
  api_.xs_close = &XsClose;
  api_.xs_directory = &XsDirectory;
  api_.xs_read = &XsRead;
}

FakeXen::~FakeXen() {
  munmap(ram_, kRamPages * kPage);
  close(ram_fd_);
  close(pipe_[0]);
  close(pipe_[1]);
  if (g_fake == this) g_fake = nullptr;
}

FakeXen* FakeXen::current() { return g_fake; }

uint8_t* FakeXen::Ram(uint64_t gfn) { return ram_ + gfn * kPage; }

bool FakeXen::ShouldFail(const char* call) {
  auto it = failures_.find(call);
  if (it == failures_.end() || it->second == 0) return false;
  errno = it->second;
  return true;
}

void FakeXen::PushRequest(vm_event_request_t request, bool notify) {
  if (ring_page_ == nullptr) std::abort();
  if (!front_ready_) {
    FRONT_RING_INIT(&front_, static_cast<vm_event_sring_t*>(ring_page_), kPage);
    front_ready_ = true;
  }
  request.version = VM_EVENT_INTERFACE_VERSION;
  *RING_GET_REQUEST(&front_, front_.req_prod_pvt) = request;
  ++front_.req_prod_pvt;
  RING_PUSH_REQUESTS(&front_);
  if (notify) {
    const char byte = 1;
    if (write(pipe_[1], &byte, 1) != 1) std::abort();
  }
}

std::vector<vm_event_response_t> FakeXen::TakeResponses() {
  std::vector<vm_event_response_t> out;
  if (!front_ready_ || ring_page_ == nullptr) return out;
  while (front_.rsp_cons != front_.sring->rsp_prod) {
    out.push_back(*RING_GET_RESPONSE(&front_, front_.rsp_cons));
    ++front_.rsp_cons;
  }
  return out;
}

absl::StatusOr<XenDriver> XenDriverTestPeer::Open(const FakeXen& fake, uint32_t domid,
                                                  XenDriverOptions options) {
  return XenDriver::OpenWith(fake.api(), domid, options);
}

absl::StatusOr<XenDriver> XenDriverTestPeer::OpenWithApi(const XenApi* api, uint32_t domid,
                                                         XenDriverOptions options) {
  return XenDriver::OpenWith(api, domid, options);
}

absl::StatusOr<XenDriver> XenDriverTestPeer::Open(const FakeXen& fake, absl::string_view name_or_id,
                                                  XenDriverOptions options) {
  return XenDriver::OpenWith(fake.api(), name_or_id, options);
}

std::vector<uint8_t> HvmContextBlob(absl::Span<const hvm_hw_cpu> cpus) {
  std::vector<uint8_t> out;
  auto put = [&out](uint16_t type, uint16_t instance, const void* data, uint32_t length) {
    hvm_save_descriptor d{type, instance, length};
    const auto* p = reinterpret_cast<const uint8_t*>(&d);
    out.insert(out.end(), p, p + sizeof(d));
    const auto* q = static_cast<const uint8_t*>(data);
    if (length > 0) out.insert(out.end(), q, q + length);
  };
  hvm_save_header header{};
  header.magic = HVM_FILE_MAGIC;
  header.version = HVM_FILE_VERSION;
  put(HVM_SAVE_CODE(HEADER), 0, &header, sizeof(header));
  for (size_t i = 0; i < cpus.size(); ++i) {
    put(HVM_SAVE_CODE(CPU), static_cast<uint16_t>(i), &cpus[i], sizeof(hvm_hw_cpu));
  }
  put(0, 0, nullptr, 0);
  return out;
}

}  // namespace vmi::xen::xen_internal
