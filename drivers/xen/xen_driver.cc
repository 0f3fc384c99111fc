#include "drivers/xen/xen_driver.h"

#include <poll.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <variant>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/error.h"
#include "core/page_span.h"
#include "drivers/xen/convert.h"
#include "drivers/xen/internal/xen_api.h"
#include "drivers/xen/internal/vm_event_ring.h"
#include "drivers/xen/internal/xen_headers.h"

namespace vmi::xen {

namespace {

using xen_internal::XenApi;

constexpr size_t kPageSize = XC_PAGE_SIZE;

// A xentoollog logger that keeps the last error message instead of printing
// it, so that failures (notably "Could not obtain handle on privileged
// command interface") end up in the Status and not on stderr. Standard
// layout with the libxc logger first, as libxc hands back that pointer.
struct CapturingLogger {
  xentoollog_logger base;
  char last_error[512];
};

void CaptureMessage(xentoollog_logger* logger, xentoollog_level level, int errnoval,
                    const char* context, const char* format, va_list args) {
  if (level < XTL_ERROR) return;
  auto* self = reinterpret_cast<CapturingLogger*>(logger);
  char message[384];
  std::vsnprintf(message, sizeof(message), format, args);
  if (errnoval >= 0) {
    std::snprintf(self->last_error, sizeof(self->last_error), "%s%s%s: %s", context ? context : "",
                  context ? ": " : "", message, std::strerror(errnoval));
  } else {
    std::snprintf(self->last_error, sizeof(self->last_error), "%s%s%s", context ? context : "",
                  context ? ": " : "", message);
  }
}

void DestroyLogger(xentoollog_logger*) {}  // owned by a shared_ptr

std::shared_ptr<CapturingLogger> MakeLogger() {
  auto logger = std::make_shared<CapturingLogger>();
  std::memset(logger.get(), 0, sizeof(CapturingLogger));
  logger->base.vmessage = &CaptureMessage;
  logger->base.progress = nullptr;
  logger->base.destroy = &DestroyLogger;
  return logger;
}

xentoollog_logger* AsLogger(const std::shared_ptr<CapturingLogger>& logger) {
  return &logger->base;
}

// "<call>(domain N, <args>): <strerror> (errno=E)": what every libxc
// failure becomes.
absl::Status XenCallError(absl::string_view call, uint32_t domid, absl::string_view args, int err) {
  std::string op = args.empty() ? absl::StrFormat("%s(domain %u)", call, domid)
                                : absl::StrFormat("%s(domain %u, %s)", call, domid, args);
  return ErrnoError(op, err);
}

absl::Status XenUnavailable(absl::string_view call, int err, const CapturingLogger& logger) {
  std::string detail = logger.last_error[0] != '\0' ? std::string(logger.last_error)
                                                    : std::string(std::strerror(err));
  return absl::UnavailableError(absl::StrFormat(
      "Xen is not available on this host (%s failed: %s, errno=%d); XenDriver needs dom0 of a "
      "Xen host and root privileges",
      call, detail, err));
}

// One foreign mapping shared by the pages of a MapPages batch.
struct SharedMapping {
  const XenApi* api = nullptr;
  std::shared_ptr<xenforeignmemory_handle> fmem;
  void* base = nullptr;
  size_t pages = 0;
  ~SharedMapping() {
    if (base != nullptr) api->xenforeignmemory_unmap(fmem.get(), base, pages);
  }
};

std::string ViewArg(View view) { return absl::StrFormat("view=%u", view.value()); }

}  // namespace

struct XenDriver::Impl {
  const XenApi* api = nullptr;
  uint32_t domid = 0;
  XenDriverOptions options;
  std::shared_ptr<CapturingLogger> logger;
  xc_interface* xc = nullptr;
  std::shared_ptr<xenforeignmemory_handle> fmem;
  xendevicemodel_handle* dm = nullptr;
  bool closed = false;
  // Set once Open validated the domain: only then does teardown touch it.
  bool attached = false;

  // The monitor ring.
  void* ring_page = nullptr;
  xenevtchn_handle* evtchn = nullptr;
  evtchn_port_t local_port = 0;
  xen_internal::VmEventBackRing ring;
  absl::flat_hash_set<amd64::EventMonitor> monitors;
  absl::Duration overhead = absl::ZeroDuration();

  // altp2m.
  bool altp2m_active = false;
  bool altp2m_enabled_by_us = false;
  absl::flat_hash_set<uint16_t> views;

  // View-0 permissions as found, for the frames this driver changed.
  absl::flat_hash_map<uint64_t, xenmem_access_t> original_access;

  // vCPU ids are 0 .. vcpus-1 (max_vcpu_id + 1 at Open; fixed for a domain).
  uint16_t vcpus = 0;

  // VM control.
  int pause_depth = 0;
  std::optional<uint64_t> original_max_memkb;
  absl::flat_hash_set<uint64_t> allocated;

  ~Impl() { (void)Close(); }

  absl::Status Error(absl::string_view call, absl::string_view args = "") const {
    return XenCallError(call, domid, args, errno);
  }

  absl::StatusOr<xen_domctl_getdomaininfo_t> DomainInfo() const {
    xen_domctl_getdomaininfo_t info;
    std::memset(&info, 0, sizeof(info));
    int n = api->xc_domain_getinfolist(xc, domid, 1, &info);
    if (n < 0) return Error("xc_domain_getinfolist");
    if (n != 1 || info.domain != domid) {
      return absl::NotFoundError(absl::StrFormat("Xen domain %u does not exist", domid));
    }
    return info;
  }

  // ---- Ring ----

  absl::Status EnsureRing() {
    if (ring_page != nullptr) return absl::OkStatus();
    uint32_t remote_port = 0;
    void* page = api->xc_monitor_enable(xc, domid, &remote_port);
    if (page == nullptr) {
      const int err = errno;
      absl::Status status = XenCallError("xc_monitor_enable", domid, "", err);
      if (err == EBUSY) {
        return AnnotateStatus(status, "another introspection tool holds the domain's monitor ring");
      }
      return status;
    }
    xenevtchn_handle* ch = api->xenevtchn_open(AsLogger(logger), 0);
    if (ch == nullptr) {
      absl::Status status = Error("xenevtchn_open");
      api->xc_monitor_disable(xc, domid);
      munmap(page, kPageSize);
      return status;
    }
    xenevtchn_port_or_error_t port = api->xenevtchn_bind_interdomain(ch, domid, remote_port);
    if (port < 0) {
      absl::Status status =
          Error("xenevtchn_bind_interdomain", absl::StrFormat("remote_port=%u", remote_port));
      api->xenevtchn_close(ch);
      api->xc_monitor_disable(xc, domid);
      munmap(page, kPageSize);
      return status;
    }
    ring.Attach(page, kPageSize);
    ring_page = page;
    evtchn = ch;
    local_port = static_cast<evtchn_port_t>(port);
    return absl::OkStatus();
  }

  size_t Unconsumed() { return ring.Unconsumed(); }

  absl::Status SetMonitor(const amd64::EventMonitor& monitor, bool enable) {
    auto report = [this, &monitor, enable](int rc, const char* call) -> absl::Status {
      if (rc == 0) return absl::OkStatus();
      return XenCallError(
          call, domid,
          absl::StrCat(amd64::EventMonitorToString(monitor), enable ? ", enable" : ", disable"),
          errno);
    };
    return std::visit(
        [&](const auto& m) -> absl::Status {
          using M = std::decay_t<decltype(m)>;
          if constexpr (std::is_same_v<M, amd64::MonitorControlRegister>) {
            uint16_t index = VM_EVENT_X86_CR0;
            switch (m.reg) {
              case amd64::ControlRegister::kCr0:
                index = VM_EVENT_X86_CR0;
                break;
              case amd64::ControlRegister::kCr3:
                index = VM_EVENT_X86_CR3;
                break;
              case amd64::ControlRegister::kCr4:
                index = VM_EVENT_X86_CR4;
                break;
              case amd64::ControlRegister::kXcr0:
                index = VM_EVENT_X86_XCR0;
                break;
            }
            return report(
                api->xc_monitor_write_ctrlreg(xc, domid, index, enable, /*sync=*/true,
                                              /*bitmask=*/0, options.cr_writes_on_change_only),
                "xc_monitor_write_ctrlreg");
          } else if constexpr (std::is_same_v<M, amd64::MonitorMsr>) {
            return report(api->xc_monitor_mov_to_msr(xc, domid, m.index, enable,
                                                     /*onchangeonly=*/false),
                          "xc_monitor_mov_to_msr");
          } else if constexpr (std::is_same_v<M, amd64::MonitorInterrupt>) {
            if (m.vector == amd64::exception::kBreakpoint) {
              return report(api->xc_monitor_software_breakpoint(xc, domid, enable),
                            "xc_monitor_software_breakpoint");
            }
            if (m.vector == amd64::exception::kDebug) {
              return report(api->xc_monitor_debug_exceptions(xc, domid, enable, /*sync=*/true),
                            "xc_monitor_debug_exceptions");
            }
            return absl::UnimplementedError(absl::StrFormat(
                "monitor interrupt vector %u: Xen intercepts only #DB (1) and #BP (3)", m.vector));
          } else if constexpr (std::is_same_v<M, amd64::MonitorSingleStep>) {
            return report(api->xc_monitor_singlestep(xc, domid, enable), "xc_monitor_singlestep");
          } else if constexpr (std::is_same_v<M, amd64::MonitorHypercall>) {
            return report(
                api->xc_monitor_guest_request(xc, domid, enable, /*sync=*/true, m.allow_user),
                "xc_monitor_guest_request");
          } else if constexpr (std::is_same_v<M, amd64::MonitorCpuid>) {
            return report(api->xc_monitor_cpuid(xc, domid, enable), "xc_monitor_cpuid");
          } else if constexpr (std::is_same_v<M, amd64::MonitorIo>) {
#ifdef VM_EVENT_REASON_IO_INSTRUCTION
            return report(api->xc_monitor_io(xc, domid, enable), "xc_monitor_io");
#else
            return absl::UnimplementedError(
                "monitor io: I/O instruction events need Xen >= 4.18 (built against 4.17)");
#endif
          } else if constexpr (std::is_same_v<M, amd64::MonitorDescriptorAccess>) {
            return report(api->xc_monitor_descriptor_access(xc, domid, enable),
                          "xc_monitor_descriptor_access");
          } else {
            static_assert(std::is_same_v<M, amd64::MonitorBreakpoint> ||
                          std::is_same_v<M, amd64::MonitorWatchpoint>);
            return absl::UnimplementedError(absl::StrFormat(
                "monitor %s: Xen has no debug-stub breakpoints or watchpoints; use altp2m views "
                "and EPT permissions",
                amd64::EventMonitorToString(monitor)));
          }
        },
        monitor);
  }

  absl::Status DisableAllMonitors() {
    absl::Status first;
    std::vector<amd64::EventMonitor> enabled(monitors.begin(), monitors.end());
    for (const amd64::EventMonitor& m : enabled) {
      absl::Status s = SetMonitor(m, false);
      if (s.ok()) {
        monitors.erase(m);
      } else if (first.ok()) {
        first = s;
      }
    }
    return first;
  }

  // Answers every request still in the ring with "continue", so that no vCPU
  // stays paused when the ring goes away.
  void AnswerPending() {
    if (ring_page == nullptr) return;
    while (Unconsumed() > 0) {
      const vm_event_request_t req = ring.Take();
      absl::StatusOr<vm_event_response_t> rsp =
          ResponseFromEvent(req, VmiEventResponse<Amd64>::Continue());
      if (rsp.ok()) ring.Put(*rsp);
    }
    if (ring.unpublished() > 0) {
      ring.Publish();
      api->xenevtchn_notify(evtchn, local_port);
    }
  }

  // ---- altp2m ----

  absl::StatusOr<bool> Altp2mConfigured() {
    uint64_t mode = 0;
    if (api->xc_hvm_param_get(xc, domid, HVM_PARAM_ALTP2M, &mode) != 0) {
      return Error("xc_hvm_param_get", "HVM_PARAM_ALTP2M");
    }
    return mode != XEN_ALTP2M_disabled;
  }

  absl::Status EnsureAltp2m() {
    if (altp2m_active) return absl::OkStatus();
    absl::StatusOr<bool> configured = Altp2mConfigured();
    if (!configured.ok() || !*configured) {
      std::string why = configured.ok() ? "HVM_PARAM_ALTP2M is disabled"
                                        : std::string(configured.status().message());
      return absl::UnimplementedError(absl::StrFormat(
          "altp2m not available for domain %u (configure altp2m=\"external\" or \"mixed\" in "
          "the domain's xl.cfg and boot Xen with altp2m=1): %s",
          domid, why));
    }
    bool state = false;
    if (api->xc_altp2m_get_domain_state(xc, domid, &state) != 0) {
      return Error("xc_altp2m_get_domain_state");
    }
    if (!state) {
      if (api->xc_altp2m_set_domain_state(xc, domid, true) != 0) {
        return Error("xc_altp2m_set_domain_state", "true");
      }
      altp2m_enabled_by_us = true;
    }
    altp2m_active = true;
    return absl::OkStatus();
  }

  absl::Status DestroyOurViews() {
    absl::Status first;
    if (!altp2m_active) return first;
    if (api->xc_altp2m_switch_to_view(xc, domid, 0) != 0)
      first = Error("xc_altp2m_switch_to_view", "view=0");
    std::vector<uint16_t> ours(views.begin(), views.end());
    for (uint16_t v : ours) {
      if (api->xc_altp2m_destroy_view(xc, domid, v) != 0) {
        if (first.ok()) first = Error("xc_altp2m_destroy_view", ViewArg(View(v)));
      } else {
        views.erase(v);
      }
    }
    return first;
  }

  absl::Status RestoreAccess() {
    absl::Status first;
    for (auto it = original_access.begin(); it != original_access.end();) {
      if (api->xc_set_mem_access(xc, domid, it->second, it->first, 1) != 0) {
        if (first.ok()) first = Error("xc_set_mem_access", absl::StrFormat("gfn=0x%x", it->first));
        ++it;
      } else {
        original_access.erase(it++);
      }
    }
    return first;
  }

  // ---- Memory ----

  absl::StatusOr<MappedPage> MapOne(Gfn gfn, int prot, const char* op) {
    xen_pfn_t pfn = gfn.value();
    int err = 0;
    void* p = api->xenforeignmemory_map(fmem.get(), domid, prot, 1, &pfn, &err);
    const std::string args = absl::StrFormat("gfn=%s", gfn);
    if (p == nullptr) return AnnotateStatus(Error("xenforeignmemory_map", args), op);
    if (err != 0) {
      // Xen refused this one frame (not populated, beyond max_gpfn, not
      // mappable): the contract's bad GFN, whatever the errno.
      api->xenforeignmemory_unmap(fmem.get(), p, 1);
      const absl::Status cause = XenCallError("xenforeignmemory_map", domid, args, std::abs(err));
      return absl::NotFoundError(absl::StrFormat("%s(gfn=%s): frame not present (%s)", op, gfn,
                                                 cause.message()));
    }
    std::shared_ptr<xenforeignmemory_handle> handle = fmem;
    return MappedPage::Live(gfn, static_cast<uint8_t*>(p), kPageSize, [handle, p, api = api] {
      api->xenforeignmemory_unmap(handle.get(), p, 1);
    });
  }

  absl::Status Close() {
    if (closed) return absl::OkStatus();
    closed = true;
    absl::Status first;
    auto note = [&first](absl::Status s) {
      if (first.ok() && !s.ok()) first = std::move(s);
    };
    if (xc == nullptr) return first;
    if (!attached) {
      if (dm != nullptr) api->xendevicemodel_close(dm);
      dm = nullptr;
      api->xc_interface_close(xc);
      xc = nullptr;
      fmem.reset();
      return first;
    }

    // Keep the vCPUs still while monitors, permissions and views change.
    const bool paused = api->xc_domain_pause(xc, domid) == 0;
    if (!paused) note(Error("xc_domain_pause"));
    note(DisableAllMonitors());
    note(RestoreAccess());
    note(DestroyOurViews());
    if (altp2m_enabled_by_us) {
      if (api->xc_altp2m_set_domain_state(xc, domid, false) != 0) {
        note(Error("xc_altp2m_set_domain_state", "false"));
      }
      altp2m_enabled_by_us = false;
    }
    altp2m_active = false;
    if (ring_page != nullptr) {
      AnswerPending();
      if (api->xc_monitor_disable(xc, domid) != 0) note(Error("xc_monitor_disable"));
      ring.Detach();
      munmap(ring_page, kPageSize);
      ring_page = nullptr;
      api->xenevtchn_unbind(evtchn, local_port);
      api->xenevtchn_close(evtchn);
      evtchn = nullptr;
    }
    for (uint64_t gfn : std::vector<uint64_t>(allocated.begin(), allocated.end())) {
      xen_pfn_t pfn = gfn;
      if (api->xc_domain_decrease_reservation_exact(xc, domid, 1, 0, &pfn) != 0) {
        note(Error("xc_domain_decrease_reservation_exact", absl::StrFormat("gfn=0x%x", gfn)));
      }
    }
    allocated.clear();
    if (original_max_memkb.has_value()) {
      if (api->xc_domain_setmaxmem(xc, domid, *original_max_memkb) != 0) {
        note(Error("xc_domain_setmaxmem", absl::StrFormat("max_memkb=%u", *original_max_memkb)));
      }
      original_max_memkb.reset();
    }
    if (paused && api->xc_domain_unpause(xc, domid) != 0) note(Error("xc_domain_unpause"));
    for (; pause_depth > 0; --pause_depth) {
      if (api->xc_domain_unpause(xc, domid) != 0) note(Error("xc_domain_unpause"));
    }
    if (dm != nullptr) api->xendevicemodel_close(dm);
    dm = nullptr;
    api->xc_interface_close(xc);
    xc = nullptr;
    fmem.reset();  // closed when the last MappedPage is gone
    return first;
  }

  // The contract's unknown vCPU: OutOfRange, before any hypercall.
  absl::Status CheckVcpu(const char* op, VcpuId vcpu) const {
    if (vcpu.value() < vcpus) return absl::OkStatus();
    return absl::OutOfRangeError(absl::StrFormat("%s(domain %u, vcpu=%u): the domain has %u vCPUs",
                                                 op, domid, vcpu.value(), vcpus));
  }

  absl::Status CheckOpen() const {
    if (closed || xc == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrFormat("XenDriver for domain %u is closed", domid));
    }
    return absl::OkStatus();
  }
};

// ---- Opening ----

XenDriver::XenDriver(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
XenDriver::XenDriver(XenDriver&&) noexcept = default;
XenDriver& XenDriver::operator=(XenDriver&&) noexcept = default;
XenDriver::~XenDriver() = default;

absl::StatusOr<XenDriver> XenDriver::Open(uint32_t domid, XenDriverOptions options) {
  return OpenWith(&xen_internal::RealXenApi(), domid, options);
}

absl::StatusOr<XenDriver> XenDriver::Open(absl::string_view name_or_id, XenDriverOptions options) {
  return OpenWith(&xen_internal::RealXenApi(), name_or_id, options);
}

absl::StatusOr<XenDriver> XenDriver::OpenWith(const XenApi* api, uint32_t domid,
                                              XenDriverOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->api = api;
  impl->domid = domid;
  impl->options = options;
  impl->logger = MakeLogger();
  const std::string context = absl::StrFormat("XenDriver::Open(domain %u)", domid);

  impl->xc = impl->api->xc_interface_open(AsLogger(impl->logger), AsLogger(impl->logger), 0);
  if (impl->xc == nullptr) {
    return AnnotateStatus(XenUnavailable("xc_interface_open", errno, *impl->logger), context);
  }
  xenforeignmemory_handle* fmem = impl->api->xenforeignmemory_open(AsLogger(impl->logger), 0);
  if (fmem == nullptr) {
    return AnnotateStatus(XenUnavailable("xenforeignmemory_open", errno, *impl->logger), context);
  }
  std::shared_ptr<CapturingLogger> logger = impl->logger;
  impl->fmem = std::shared_ptr<xenforeignmemory_handle>(
      fmem,
      [logger, api = impl->api](xenforeignmemory_handle* h) { api->xenforeignmemory_close(h); });
  impl->dm = impl->api->xendevicemodel_open(AsLogger(impl->logger), 0);
  if (impl->dm == nullptr) {
    return AnnotateStatus(XenUnavailable("xendevicemodel_open", errno, *impl->logger), context);
  }

  absl::StatusOr<xen_domctl_getdomaininfo_t> info = impl->DomainInfo();
  if (!info.ok()) return AnnotateStatus(info.status(), context);
  if ((info->flags & XEN_DOMINF_hvm_guest) == 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s: domain %u is a PV guest; XenDriver needs an HVM guest (type=\"hvm\")",
                        context, domid));
  }
  if ((info->flags & XEN_DOMINF_dying) != 0) {
    return absl::FailedPreconditionError(absl::StrFormat("%s: domain %u is dying", context, domid));
  }
  impl->vcpus = info->max_vcpu_id == XEN_INVALID_MAX_VCPU_ID
                    ? 0
                    : static_cast<uint16_t>(info->max_vcpu_id + 1);
  impl->attached = true;
  return XenDriver(std::move(impl));
}

absl::StatusOr<XenDriver> XenDriver::OpenWith(const XenApi* api_ptr, absl::string_view name_or_id,
                                              XenDriverOptions options) {
  const XenApi& api = *api_ptr;
  uint32_t domid = 0;
  if (absl::SimpleAtoi(name_or_id, &domid)) return OpenWith(api_ptr, domid, options);
  const std::string context = absl::StrFormat("XenDriver::Open(\"%s\")", name_or_id);
  if (name_or_id.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(context, ": empty domain name"));
  }
  xs_handle* xs = api.xs_open(XS_OPEN_READONLY);
  if (xs == nullptr) {
    const int err = errno;
    return absl::UnavailableError(absl::StrFormat(
        "%s: Xen is not available on this host (xs_open failed: %s, errno=%d); resolving a "
        "domain name needs xenstore in dom0",
        context, std::strerror(err), err));
  }
  unsigned int count = 0;
  char** entries = api.xs_directory(xs, XBT_NULL, "/local/domain", &count);
  if (entries == nullptr) {
    absl::Status status = AnnotateStatus(ErrnoError("xs_directory(/local/domain)", errno), context);
    api.xs_close(xs);
    return status;
  }
  std::optional<uint32_t> found;
  for (unsigned int i = 0; i < count && !found; ++i) {
    uint32_t id = 0;
    if (!absl::SimpleAtoi(entries[i], &id)) continue;
    const std::string path = absl::StrCat("/local/domain/", id, "/name");
    unsigned int len = 0;
    char* name = static_cast<char*>(api.xs_read(xs, XBT_NULL, path.c_str(), &len));
    if (name != nullptr) {
      if (absl::string_view(name, len) == name_or_id) found = id;
      std::free(name);
    }
  }
  std::free(entries);
  api.xs_close(xs);
  if (!found) {
    return absl::NotFoundError(
        absl::StrFormat("%s: no Xen domain is named \"%s\"", context, name_or_id));
  }
  return OpenWith(api_ptr, *found, options);
}

absl::StatusOr<XenDriver> XenDriver::OpenFromEnvironment(XenDriverOptions options) {
  const char* value = std::getenv(kDomainEnvVar);
  if (value == nullptr || *value == '\0') {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s is not set: set it to the id or name of the Xen HVM domain to "
                        "introspect (e.g. %s=win10)",
                        kDomainEnvVar, kDomainEnvVar));
  }
  return Open(absl::string_view(value), options);
}

absl::Status XenDriver::Close() {
  if (impl_ == nullptr) return absl::OkStatus();
  return impl_->Close();
}

uint32_t XenDriver::domain_id() const { return impl_->domid; }

// ---- Info ----

absl::StatusOr<VmiInfo> XenDriver::Info() const {
  VMI_RETURN_IF_ERROR(impl_->CheckOpen());
  xen_pfn_t max_gpfn = 0;
  if (impl_->api->xc_domain_maximum_gpfn(impl_->xc, impl_->domid, &max_gpfn) < 0) {
    return impl_->Error("xc_domain_maximum_gpfn");
  }
  VMI_ASSIGN_OR_RETURN(xen_domctl_getdomaininfo_t info, impl_->DomainInfo());
  VmiInfo out;
  out.page_size = kPageSize;
  out.page_shift = XC_PAGE_SHIFT;
  out.max_gfn = Gfn(max_gpfn);
  out.vcpus =
      info.max_vcpu_id == XEN_INVALID_MAX_VCPU_ID ? 0 : static_cast<uint16_t>(info.max_vcpu_id + 1);
  return out;
}

// ---- Memory ----

absl::StatusOr<MappedPage> XenDriver::ReadPage(Gfn gfn) {
  VMI_RETURN_IF_ERROR(impl_->CheckOpen());
  return impl_->MapOne(gfn, PROT_READ, "read_page");
}

absl::StatusOr<MappedPage> XenDriver::WritePage(Gfn gfn, uint64_t offset,
                                                absl::Span<const uint8_t> content) {
  VMI_RETURN_IF_ERROR(impl_->CheckOpen());
  VMI_RETURN_IF_ERROR(CheckPageSpan("write_page", gfn, offset, content.size(), kPageSize));
  VMI_ASSIGN_OR_RETURN(MappedPage page, impl_->MapOne(gfn, PROT_READ | PROT_WRITE, "write_page"));
  if (!content.empty()) {
    std::memcpy(const_cast<uint8_t*>(page.data()) + offset, content.data(), content.size());
  }
  return page;
}

absl::StatusOr<std::vector<absl::StatusOr<MappedPage>>> XenDriver::MapPages(
    absl::Span<const Gfn> gfns) {
  VMI_RETURN_IF_ERROR(impl_->CheckOpen());
  std::vector<absl::StatusOr<MappedPage>> out;
  if (gfns.empty()) return out;
  std::vector<xen_pfn_t> pfns(gfns.size());
  for (size_t i = 0; i < gfns.size(); ++i) pfns[i] = gfns[i].value();
  std::vector<int> errs(gfns.size(), 0);
  void* base = impl_->api->xenforeignmemory_map(impl_->fmem.get(), impl_->domid, PROT_READ,
                                                pfns.size(), pfns.data(), errs.data());
  if (base == nullptr) {
    return impl_->Error("xenforeignmemory_map",
                        absl::StrFormat("%u frames from gfn=%s", gfns.size(), gfns[0]));
  }
  auto mapping = std::make_shared<SharedMapping>();
  mapping->api = impl_->api;
  mapping->fmem = impl_->fmem;
  mapping->base = base;
  mapping->pages = gfns.size();
  out.reserve(gfns.size());
  for (size_t i = 0; i < gfns.size(); ++i) {
    if (errs[i] != 0) {
      out.push_back(
          AnnotateStatus(XenCallError("xenforeignmemory_map", impl_->domid,
                                      absl::StrFormat("gfn=%s", gfns[i]), std::abs(errs[i])),
                         "map_pages"));
      continue;
    }
    out.push_back(MappedPage::Live(gfns[i], static_cast<uint8_t*>(base) + i * kPageSize, kPageSize,
                                   [mapping] {}));
  }
  return out;
}

// ---- Protection ----

absl::StatusOr<std::pair<MemoryAccess, MemoryAccessOptions>> XenDriver::GetMemoryAccessWithOptions(
    Gfn gfn, View view) {
  VMI_RETURN_IF_ERROR(impl_->CheckOpen());
  xenmem_access_t access = XENMEM_access_default;
  const std::string args = absl::StrFormat("gfn=%s", gfn);
  if (view == kDefaultView) {
    if (impl_->api->xc_get_mem_access(impl_->xc, impl_->domid, gfn.value(), &access) != 0) {
      return impl_->Error("xc_get_mem_access", args);
    }
  } else {
    VMI_RETURN_IF_ERROR(impl_->EnsureAltp2m());
    if (impl_->api->xc_altp2m_get_mem_access(impl_->xc, impl_->domid, view.value(), gfn.value(),
                                             &access) != 0) {
      return impl_->Error("xc_altp2m_get_mem_access", absl::StrCat(ViewArg(view), ", ", args));
    }
  }
  return AccessFromXen(access);
}

absl::StatusOr<MemoryAccess> XenDriver::GetMemoryAccess(Gfn gfn, View view) {
  VMI_ASSIGN_OR_RETURN(auto access, GetMemoryAccessWithOptions(gfn, view));
  return access.first;
}

absl::Status XenDriver::SetMemoryAccess(Gfn gfn, View view, MemoryAccess access) {
  return SetMemoryAccessWithOptions(gfn, view, access, MemoryAccessOptions::None());
}

absl::Status XenDriver::SetMemoryAccessWithOptions(Gfn gfn, View view, MemoryAccess access,
                                                   MemoryAccessOptions options) {
  VMI_RETURN_IF_ERROR(impl_->CheckOpen());
  const std::string args = absl::StrFormat("gfn=%s, access=%s", gfn, access);
  absl::StatusOr<xenmem_access_t> xa = XenAccessFrom(access, options);
  if (!xa.ok()) {
    return AnnotateStatus(xa.status(), absl::StrFormat("set_memory_access(%s)", args));
  }
  // Without a ring Xen resolves violations itself (restoring rwx), and the
  // event would be lost.
  if (access != MemoryAccess::RWX()) VMI_RETURN_IF_ERROR(impl_->EnsureRing());
  if (view == kDefaultView) {
    if (!impl_->original_access.contains(gfn.value())) {
      xenmem_access_t before = XENMEM_access_rwx;
      if (impl_->api->xc_get_mem_access(impl_->xc, impl_->domid, gfn.value(), &before) != 0) {
        return impl_->Error("xc_get_mem_access", absl::StrFormat("gfn=%s", gfn));
      }
      impl_->original_access[gfn.value()] = before;
    }
    if (impl_->api->xc_set_mem_access(impl_->xc, impl_->domid, *xa, gfn.value(), 1) != 0) {
      return impl_->Error("xc_set_mem_access", args);
    }
    return absl::OkStatus();
  }
  VMI_RETURN_IF_ERROR(impl_->EnsureAltp2m());
  if (impl_->api->xc_altp2m_set_mem_access(impl_->xc, impl_->domid, view.value(), gfn.value(),
                                           *xa) != 0) {
    return impl_->Error("xc_altp2m_set_mem_access", absl::StrCat(ViewArg(view), ", ", args));
  }
  return absl::OkStatus();
}

// ---- Registers ----

absl::StatusOr<amd64::Registers> XenDriver::Registers(VcpuId vcpu) {
  VMI_RETURN_IF_ERROR(impl_->CheckOpen());
  VMI_RETURN_IF_ERROR(impl_->CheckVcpu("registers", vcpu));
  hvm_hw_cpu cpu;
  std::memset(&cpu, 0, sizeof(cpu));
  if (impl_->api->xc_domain_hvm_getcontext_partial(impl_->xc, impl_->domid, HVM_SAVE_CODE(CPU),
                                                   vcpu.value(), &cpu, sizeof(cpu)) != 0) {
    return impl_->Error("xc_domain_hvm_getcontext_partial",
                        absl::StrFormat("CPU, vcpu=%u", vcpu.value()));
  }
  amd64::Registers regs = RegistersFromHvmCpu(cpu);
  // XCR0 lives in the XSAVE record, which exists only for guests using
  // XSAVE; without it XCR0 reads as 0.
  static thread_local uint8_t xsave[16384];
  if (impl_->api->xc_domain_hvm_getcontext_partial(impl_->xc, impl_->domid, CPU_XSAVE_CODE,
                                                   vcpu.value(), xsave, sizeof(xsave)) == 0) {
    hvm_hw_cpu_xsave head;
    std::memcpy(&head, xsave, offsetof(hvm_hw_cpu_xsave, save_area));
    regs.xcr0 = head.xcr0;
  }
  return regs;
}

absl::Status XenDriver::SetRegisters(VcpuId vcpu, const amd64::Registers& registers) {
  VMI_RETURN_IF_ERROR(impl_->CheckOpen());
  VMI_RETURN_IF_ERROR(impl_->CheckVcpu("set_registers", vcpu));
  xc_interface* xc = impl_->xc;
  const uint32_t domid = impl_->domid;
  // Paused so that the other records written back are not stale.
  if (impl_->api->xc_domain_pause(xc, domid) != 0) return impl_->Error("xc_domain_pause");
  auto status = [&]() -> absl::Status {
    int size = impl_->api->xc_domain_hvm_getcontext(xc, domid, nullptr, 0);
    if (size <= 0) return impl_->Error("xc_domain_hvm_getcontext", "size query");
    std::vector<uint8_t> context(static_cast<size_t>(size));
    int got = impl_->api->xc_domain_hvm_getcontext(xc, domid, context.data(), context.size());
    if (got <= 0) return impl_->Error("xc_domain_hvm_getcontext");
    context.resize(std::min<size_t>(context.size(), static_cast<size_t>(got)));
    VMI_RETURN_IF_ERROR(
        AnnotateStatus(PatchCpuRecordInContext(absl::MakeSpan(context), vcpu.value(), registers),
                       absl::StrFormat("set_registers(vcpu=%u)", vcpu.value())));
    if (impl_->api->xc_domain_hvm_setcontext(xc, domid, context.data(), context.size()) != 0) {
      return impl_->Error("xc_domain_hvm_setcontext", absl::StrFormat("vcpu=%u", vcpu.value()));
    }
    return absl::OkStatus();
  }();
  if (impl_->api->xc_domain_unpause(xc, domid) != 0 && status.ok()) {
    return impl_->Error("xc_domain_unpause");
  }
  return status;
}

// ---- Views ----

absl::StatusOr<bool> XenDriver::Altp2mAvailable() {
  VMI_RETURN_IF_ERROR(impl_->CheckOpen());
  return impl_->Altp2mConfigured();
}

absl::StatusOr<View> XenDriver::CreateView(MemoryAccess default_access) {
  VMI_RETURN_IF_ERROR(impl_->CheckOpen());
  VMI_ASSIGN_OR_RETURN(xenmem_access_t xa,
                       XenAccessFrom(default_access, MemoryAccessOptions::None()));
  VMI_RETURN_IF_ERROR(impl_->EnsureAltp2m());
  uint16_t id = 0;
  if (impl_->api->xc_altp2m_create_view(impl_->xc, impl_->domid, xa, &id) != 0) {
    return impl_->Error("xc_altp2m_create_view",
                        absl::StrFormat("default_access=%s", default_access));
  }
  impl_->views.insert(id);
  return View(id);
}

absl::Status XenDriver::DestroyView(View view) {
  VMI_RETURN_IF_ERROR(impl_->CheckOpen());
  if (view == kDefaultView) {
    return absl::InvalidArgumentError("destroy_view(view=0): the default view cannot be destroyed");
  }
  VMI_RETURN_IF_ERROR(impl_->EnsureAltp2m());
  if (impl_->api->xc_altp2m_destroy_view(impl_->xc, impl_->domid, view.value()) != 0) {
    const int err = errno;
    absl::Status status = XenCallError("xc_altp2m_destroy_view", impl_->domid, ViewArg(view), err);
    // Xen refuses a view some vCPU is still in with EBUSY: the contract's
    // "view in use", not an unavailable host.
    if (err == EBUSY) return absl::FailedPreconditionError(status.message());
    return status;
  }
  impl_->views.erase(view.value());
  return absl::OkStatus();
}

absl::Status XenDriver::SwitchToView(View view) {
  VMI_RETURN_IF_ERROR(impl_->CheckOpen());
  if (view == kDefaultView && !impl_->altp2m_active) return absl::OkStatus();
  VMI_RETURN_IF_ERROR(impl_->EnsureAltp2m());
  if (impl_->api->xc_altp2m_switch_to_view(impl_->xc, impl_->domid, view.value()) != 0) {
    return impl_->Error("xc_altp2m_switch_to_view", ViewArg(view));
  }
  return absl::OkStatus();
}

absl::Status XenDriver::ChangeViewGfn(View view, Gfn old_gfn, Gfn new_gfn) {
  VMI_RETURN_IF_ERROR(impl_->CheckOpen());
  VMI_RETURN_IF_ERROR(impl_->EnsureAltp2m());
  if (impl_->api->xc_altp2m_change_gfn(impl_->xc, impl_->domid, view.value(), old_gfn.value(),
                                       new_gfn.value()) != 0) {
    return impl_->Error("xc_altp2m_change_gfn", absl::StrFormat("%s, old_gfn=%s, new_gfn=%s",
                                                                ViewArg(view), old_gfn, new_gfn));
  }
  return absl::OkStatus();
}

absl::Status XenDriver::ResetViewGfn(View view, Gfn gfn) {
  VMI_RETURN_IF_ERROR(impl_->CheckOpen());
  VMI_RETURN_IF_ERROR(impl_->EnsureAltp2m());
  if (impl_->api->xc_altp2m_change_gfn(impl_->xc, impl_->domid, view.value(), gfn.value(),
                                       kInvalidGfn) != 0) {
    return impl_->Error("xc_altp2m_change_gfn",
                        absl::StrFormat("%s, old_gfn=%s, new_gfn=INVALID", ViewArg(view), gfn));
  }
  return absl::OkStatus();
}

// ---- Events ----

absl::Status XenDriver::MonitorEnable(const amd64::EventMonitor& monitor) {
  VMI_RETURN_IF_ERROR(impl_->CheckOpen());
  VMI_RETURN_IF_ERROR(impl_->EnsureRing());
  VMI_RETURN_IF_ERROR(impl_->SetMonitor(monitor, true));
  impl_->monitors.insert(monitor);
  return absl::OkStatus();
}

absl::Status XenDriver::MonitorDisable(const amd64::EventMonitor& monitor) {
  VMI_RETURN_IF_ERROR(impl_->CheckOpen());
  // Not enabled (or never could be): nothing to undo.
  if (impl_->ring_page == nullptr || !impl_->monitors.contains(monitor)) return absl::OkStatus();
  VMI_RETURN_IF_ERROR(impl_->SetMonitor(monitor, false));
  impl_->monitors.erase(monitor);
  return absl::OkStatus();
}

size_t XenDriver::EventsPending() {
  if (impl_ == nullptr || impl_->closed) return 0;
  return impl_->Unconsumed();
}

absl::Duration XenDriver::EventProcessingOverhead() {
  return impl_ == nullptr ? absl::ZeroDuration() : impl_->overhead;
}

absl::Status XenDriver::WaitForEventImpl(absl::Duration timeout, Handler handler) {
  VMI_RETURN_IF_ERROR(impl_->CheckOpen());
  Impl& x = *impl_;
  VMI_RETURN_IF_ERROR(x.EnsureRing());

  // Wait for the channel until the ring has requests: a notification can
  // arrive for requests an earlier batch already answered.
  const absl::Time deadline =
      timeout == absl::InfiniteDuration() ? absl::InfiniteFuture() : absl::Now() + timeout;
  while (x.Unconsumed() == 0) {
    int wait_ms = -1;
    if (deadline != absl::InfiniteFuture()) {
      const absl::Duration left = deadline - absl::Now();
      wait_ms = left <= absl::ZeroDuration()
                    ? 0
                    : static_cast<int>(std::min<int64_t>(
                          absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1))),
                          int64_t{1} << 30));
    }
    pollfd pfd{impl_->api->xenevtchn_fd(x.evtchn), POLLIN | POLLERR, 0};
    const int rc = impl_->api->poll(&pfd, 1, wait_ms);
    if (rc < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(absl::StrFormat("poll(event channel of domain %u)", x.domid), errno);
    }
    if (rc == 0) {
      if (x.Unconsumed() > 0) break;
      return absl::DeadlineExceededError(absl::StrFormat(
          "wait_for_event(domain %u): no event within %s", x.domid, absl::FormatDuration(timeout)));
    }
    const xenevtchn_port_or_error_t port = impl_->api->xenevtchn_pending(x.evtchn);
    if (port < 0) return x.Error("xenevtchn_pending");
    if (impl_->api->xenevtchn_unmask(x.evtchn, static_cast<evtchn_port_t>(port)) != 0) {
      return x.Error("xenevtchn_unmask");
    }
  }

  const absl::Time batch_start = absl::Now();
  absl::Duration in_handler = absl::ZeroDuration();
  absl::Status first_problem;
  size_t answered = 0;
  auto note = [&first_problem](const absl::Status& s) {
    if (first_problem.ok() && !s.ok()) first_problem = s;
  };
  while (x.Unconsumed() > 0) {
    const vm_event_request_t req = x.ring.Take();

    VmiEventResponse<Amd64> response = VmiEventResponse<Amd64>::Continue();
    absl::StatusOr<VmiEvent<Amd64>> event = EventFromRequest(req);
    if (event.ok()) {
      if (x.options.full_registers_in_events) {
        absl::StatusOr<amd64::Registers> full = Registers(event->vcpu);
        if (full.ok()) {
          event->registers = *full;
        } else {
          note(full.status());
        }
      }
      const absl::Time t0 = absl::Now();
      response = handler(*event);
      in_handler += absl::Now() - t0;
      if (response.action == EventAction::kReinjectInterrupt) {
        absl::StatusOr<amd64::Interrupt> interrupt = InterruptToReinject(req);
        if (interrupt.ok()) {
          note(InjectInterrupt(event->vcpu, *interrupt));
        } else {
          note(interrupt.status());
        }
      }
    } else {
      note(AnnotateStatus(event.status(), absl::StrFormat("vm_event request on vcpu %u answered "
                                                          "with continue",
                                                          req.vcpu_id)));
    }
    absl::StatusOr<vm_event_response_t> rsp = ResponseFromEvent(req, response);
    if (!rsp.ok()) {
      note(AnnotateStatus(rsp.status(), "answered with continue instead"));
      rsp = ResponseFromEvent(req, VmiEventResponse<Amd64>::Continue());
    }
    x.ring.Put(*rsp);
    ++answered;
  }
  x.ring.Publish();
  if (impl_->api->xenevtchn_notify(x.evtchn, x.local_port) != 0) note(x.Error("xenevtchn_notify"));

  if (answered > 0) x.overhead += absl::Now() - batch_start - in_handler;
  return AnnotateStatus(first_problem, absl::StrFormat("wait_for_event(domain %u)", x.domid));
}

// ---- VM control ----

absl::Status XenDriver::Pause() {
  VMI_RETURN_IF_ERROR(impl_->CheckOpen());
  if (impl_->api->xc_domain_pause(impl_->xc, impl_->domid) != 0)
    return impl_->Error("xc_domain_pause");
  ++impl_->pause_depth;
  return absl::OkStatus();
}

absl::Status XenDriver::Resume() {
  VMI_RETURN_IF_ERROR(impl_->CheckOpen());
  // Unpausing without our own pause could undo another tool's.
  if (impl_->pause_depth == 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("resume(domain %u): the domain is not paused by this driver", impl_->domid));
  }
  if (impl_->api->xc_domain_unpause(impl_->xc, impl_->domid) != 0)
    return impl_->Error("xc_domain_unpause");
  --impl_->pause_depth;
  return absl::OkStatus();
}

absl::StatusOr<Gfn> XenDriver::AllocateGfn() {
  VMI_RETURN_IF_ERROR(impl_->CheckOpen());
  xen_pfn_t max_gpfn = 0;
  if (impl_->api->xc_domain_maximum_gpfn(impl_->xc, impl_->domid, &max_gpfn) < 0) {
    return impl_->Error("xc_domain_maximum_gpfn");
  }
  const Gfn gfn(max_gpfn + 1);
  VMI_RETURN_IF_ERROR(AllocateGfnAt(gfn));
  return gfn;
}

absl::Status XenDriver::AllocateGfnAt(Gfn gfn) {
  VMI_RETURN_IF_ERROR(impl_->CheckOpen());
  Impl& x = *impl_;
  const std::string args = absl::StrFormat("gfn=%s", gfn);
  if (absl::StatusOr<MappedPage> present = x.MapOne(gfn, PROT_READ, "allocate_gfn"); present.ok()) {
    return absl::AlreadyExistsError(
        absl::StrFormat("allocate_gfn(domain %u, %s): the frame is populated", x.domid, args));
  }
  // One more page must fit under the domain's maximum.
  VMI_ASSIGN_OR_RETURN(xen_domctl_getdomaininfo_t info, x.DomainInfo());
  const uint64_t page_kb = kPageSize / 1024;
  const uint64_t max_kb = info.max_pages * page_kb;
  bool raised = false;
  if ((info.tot_pages + 1) * page_kb > max_kb) {
    if (impl_->api->xc_domain_setmaxmem(x.xc, x.domid, max_kb + page_kb) != 0) {
      return x.Error("xc_domain_setmaxmem", absl::StrFormat("max_memkb=%u", max_kb + page_kb));
    }
    if (!x.original_max_memkb.has_value()) x.original_max_memkb = max_kb;
    raised = true;
  }
  xen_pfn_t pfn = gfn.value();
  if (impl_->api->xc_domain_populate_physmap_exact(x.xc, x.domid, 1, 0, 0, &pfn) != 0) {
    absl::Status status = x.Error("xc_domain_populate_physmap_exact", args);
    if (raised) impl_->api->xc_domain_setmaxmem(x.xc, x.domid, max_kb);
    return status;
  }
  x.allocated.insert(gfn.value());
  return absl::OkStatus();
}

absl::Status XenDriver::FreeGfn(Gfn gfn) {
  VMI_RETURN_IF_ERROR(impl_->CheckOpen());
  Impl& x = *impl_;
  // An unpopulated frame is the contract's bad GFN (decrease_reservation
  // would report it with whatever errno, or not at all).
  VMI_RETURN_IF_ERROR(x.MapOne(gfn, PROT_READ, "free_gfn").status());
  xen_pfn_t pfn = gfn.value();
  if (impl_->api->xc_domain_decrease_reservation_exact(x.xc, x.domid, 1, 0, &pfn) != 0) {
    return x.Error("xc_domain_decrease_reservation_exact", absl::StrFormat("gfn=%s", gfn));
  }
  x.allocated.erase(gfn.value());
  if (x.allocated.empty() && x.original_max_memkb.has_value()) {
    if (impl_->api->xc_domain_setmaxmem(x.xc, x.domid, *x.original_max_memkb) != 0) {
      return x.Error("xc_domain_setmaxmem", absl::StrFormat("max_memkb=%u", *x.original_max_memkb));
    }
    x.original_max_memkb.reset();
  }
  return absl::OkStatus();
}

absl::Status XenDriver::InjectInterrupt(VcpuId vcpu, const amd64::Interrupt& interrupt) {
  VMI_RETURN_IF_ERROR(impl_->CheckOpen());
  VMI_RETURN_IF_ERROR(impl_->CheckVcpu("inject_interrupt", vcpu));
  const uint32_t error_code = interrupt.has_error_code ? interrupt.error_code : kNoErrorCode;
  if (impl_->api->xendevicemodel_inject_event(impl_->dm, static_cast<domid_t>(impl_->domid),
                                              vcpu.value(), interrupt.vector,
                                              static_cast<uint8_t>(interrupt.type), error_code,
                                              interrupt.instruction_length, interrupt.extra) != 0) {
    return impl_->Error("xendevicemodel_inject_event",
                        absl::StrFormat("vcpu=%u, %s", vcpu.value(), interrupt));
  }
  return absl::OkStatus();
}

absl::Status XenDriver::ResetState() {
  VMI_RETURN_IF_ERROR(impl_->CheckOpen());
  absl::Status first = impl_->DisableAllMonitors();
  absl::Status s = impl_->DestroyOurViews();
  if (first.ok()) first = s;
  s = impl_->RestoreAccess();
  if (first.ok()) first = s;
  return AnnotateStatus(first, absl::StrFormat("reset_state(domain %u)", impl_->domid));
}

}  // namespace vmi::xen
