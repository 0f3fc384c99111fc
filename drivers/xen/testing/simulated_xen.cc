#include "drivers/xen/testing/simulated_xen.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "drivers/sim/machine_reader.h"
#include "drivers/xen/convert.h"
#include "drivers/xen/internal/fake_xen.h"
#include "drivers/xen/internal/xen_api.h"
#include "drivers/xen/internal/xen_headers.h"

namespace vmi::xen::xen_internal {
namespace {

constexpr size_t kPage = XC_PAGE_SIZE;
constexpr evtchn_port_t kLocalPort = 43;
constexpr uint32_t kRemotePort = 9;

SimulatedXen::State* g_xen = nullptr;

template <typename T>
T* Handle() {
  return reinterpret_cast<T*>(g_xen);
}

// A machine error as the errno Xen would give.
int ErrnoFor(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
      return EINVAL;
    case absl::StatusCode::kFailedPrecondition:
      return EBUSY;
    case absl::StatusCode::kNotFound:
      return ESRCH;
    case absl::StatusCode::kOutOfRange:
      return EINVAL;
    case absl::StatusCode::kResourceExhausted:
      return ENOMEM;
    case absl::StatusCode::kUnimplemented:
      return EOPNOTSUPP;
    default:
      return EIO;
  }
}

int Fail(int err) {
  errno = err;
  return -1;
}

int Result(const absl::Status& s) { return s.ok() ? 0 : Fail(ErrnoFor(s)); }

void FillSegment(const amd64::Segment& s, vm_event_x86_selector_reg* reg) {
  const amd64::SegmentAccess access(s.access);
  reg->ar = ArbytesFromAccess(s.access) & 0xfff;
  reg->limit = (access.g() ? (s.limit >> 12) : s.limit) & 0xfffff;
}

// The registers a vm_event request carries (the subset Xen puts there).
void FillEventRegs(const amd64::Registers& r, vm_event_regs_x86* x) {
  x->rax = r.rax, x->rbx = r.rbx, x->rcx = r.rcx, x->rdx = r.rdx;
  x->rsi = r.rsi, x->rdi = r.rdi, x->rbp = r.rbp, x->rsp = r.rsp;
  x->r8 = r.r8, x->r9 = r.r9, x->r10 = r.r10, x->r11 = r.r11;
  x->r12 = r.r12, x->r13 = r.r13, x->r14 = r.r14, x->r15 = r.r15;
  x->rip = r.rip, x->rflags = r.rflags;
  x->cr0 = r.cr0, x->cr2 = r.cr2, x->cr3 = r.cr3, x->cr4 = r.cr4;
  x->dr6 = r.dr6, x->dr7 = r.dr7;
  x->msr_efer = r.efer, x->msr_star = r.star, x->msr_lstar = r.lstar;
  x->sysenter_cs = r.sysenter_cs, x->sysenter_esp = r.sysenter_esp;
  x->sysenter_eip = r.sysenter_eip;
  x->fs_base = r.fs_base, x->gs_base = r.gs_base, x->shadow_gs = r.kernel_gs_base;
  x->cs_base = static_cast<uint32_t>(r.cs.base), x->ss_base = static_cast<uint32_t>(r.ss.base);
  x->ds_base = static_cast<uint32_t>(r.ds.base), x->es_base = static_cast<uint32_t>(r.es.base);
  FillSegment(r.cs, &x->cs);
  FillSegment(r.ss, &x->ss);
  FillSegment(r.ds, &x->ds);
  FillSegment(r.es, &x->es);
  FillSegment(r.fs, &x->fs);
  FillSegment(r.gs, &x->gs);
  x->cs_sel = r.cs.selector, x->ss_sel = r.ss.selector, x->ds_sel = r.ds.selector;
  x->es_sel = r.es.selector, x->fs_sel = r.fs.selector, x->gs_sel = r.gs.selector;
  x->gdtr_base = r.gdtr.base, x->gdtr_limit = r.gdtr.limit;
}

amd64::GpRegisters GpFromEventRegs(const vm_event_regs_x86& x) {
  amd64::GpRegisters g;
  g.rax = x.rax, g.rbx = x.rbx, g.rcx = x.rcx, g.rdx = x.rdx;
  g.rsi = x.rsi, g.rdi = x.rdi, g.rbp = x.rbp, g.rsp = x.rsp;
  g.r8 = x.r8, g.r9 = x.r9, g.r10 = x.r10, g.r11 = x.r11;
  g.r12 = x.r12, g.r13 = x.r13, g.r14 = x.r14, g.r15 = x.r15;
  g.rip = x.rip, g.rflags = x.rflags;
  return g;
}

hvm_hw_cpu CpuRecord(const amd64::Registers& regs) {
  hvm_hw_cpu c;
  std::memset(&c, 0, sizeof(c));
  PatchHvmCpu(regs, &c);
  return c;
}

uint8_t DescriptorOf(sim::DescriptorOp op) {
  switch (op) {
    case sim::DescriptorOp::kLgdt:
    case sim::DescriptorOp::kSgdt:
      return VM_EVENT_DESC_GDTR;
    case sim::DescriptorOp::kLidt:
    case sim::DescriptorOp::kSidt:
      return VM_EVENT_DESC_IDTR;
    case sim::DescriptorOp::kLldt:
    case sim::DescriptorOp::kSldt:
      return VM_EVENT_DESC_LDTR;
    case sim::DescriptorOp::kLtr:
    case sim::DescriptorOp::kStr:
      return VM_EVENT_DESC_TR;
  }
  return VM_EVENT_DESC_GDTR;
}

}  // namespace

struct SimulatedXen::State {
  std::unique_ptr<sim::Machine> machine_;
  Options options_;
  XenApi api_;
  std::set<uint64_t> populated_;
  uint64_t max_pages_ = 0;
  int pause_count_ = 0;
  bool altp2m_enabled_ = false;
  bool singlestep_monitor_ = false;
  void* ring_page_ = nullptr;
  vm_event_front_ring_t front_{};
  int pipe_[2] = {-1, -1};
  uint64_t bytes_in_pipe_ = 0;
  bool awaiting_response_ = false;
  uint64_t requests_ = 0;
  uint64_t injections_ = 0;
  int live_mappings_ = 0;
  std::set<const void*> writable_mappings_;
};

namespace {

struct Impl {
  using SimState = SimulatedXen::State;
  static SimState* X() { return g_xen; }

  // Xen's gfn_of_rip for the gfn of breakpoint and single-step requests:
  // RIP translated as an instruction fetch by the guest's tables, read from
  // guest frames (the host p2m, no altp2m remap); INVALID_GFN when it faults.
  // The same walk SimDriver does for its events.
  static uint64_t GfnOfRip(sim::Machine& m, const amd64::Registers& regs) {
    const std::optional<Gfn> gfn = sim::InstructionGfn(m, regs);
    return gfn ? gfn->value() : kInvalidGfn;
  }

  // Xen's request for a machine exit.
  static vm_event_request_t RequestFor(sim::Machine& m, const sim::Exit& e,
                                       const amd64::Registers& regs) {
    vm_event_request_t r;
    std::memset(&r, 0, sizeof(r));
    r.version = VM_EVENT_INTERFACE_VERSION;
    r.flags = VM_EVENT_FLAG_VCPU_PAUSED;
    r.vcpu_id = e.vcpu.value();
    if (e.view != kDefaultView) {
      r.flags |= VM_EVENT_FLAG_ALTERNATE_P2M;
      r.altp2m_idx = e.view.value();
    }
    FillEventRegs(regs, &r.data.regs.x86);
    switch (e.kind) {
      case sim::ExitKind::kBreakpoint:
        r.reason = VM_EVENT_REASON_SOFTWARE_BREAKPOINT;
        r.u.software_breakpoint.gfn = GfnOfRip(m, regs);
        r.u.software_breakpoint.insn_length = e.insn_length;
        r.u.software_breakpoint.type = static_cast<uint8_t>(amd64::InterruptType::kSoftwareException);
        break;
      case sim::ExitKind::kInterrupt:
        if (e.vector == amd64::exception::kDebug) {
          r.reason = VM_EVENT_REASON_DEBUG_EXCEPTION;
          r.u.debug_exception.insn_length = e.insn_length;
          r.u.debug_exception.type =
              static_cast<uint8_t>(e.insn_length > 0 ? amd64::InterruptType::kPrivilegedSoftwareException
                                                     : amd64::InterruptType::kHardwareException);
        } else {
          r.reason = VM_EVENT_REASON_INTERRUPT;
          r.u.interrupt.x86.vector = e.vector;
          r.u.interrupt.x86.type = static_cast<uint32_t>(
              e.insn_length > 0 ? amd64::InterruptType::kSoftwareInterrupt
                                : amd64::InterruptType::kHardwareException);
          r.u.interrupt.x86.error_code = e.has_error_code ? e.error_code : kNoErrorCode;
          r.u.interrupt.x86.cr2 = regs.cr2;
        }
        break;
      case sim::ExitKind::kMemoryAccess: {
        r.reason = VM_EVENT_REASON_MEM_ACCESS;
        r.u.mem_access.gfn = e.gpa.value() / kPage;
        r.u.mem_access.offset = e.gpa.value() % kPage;
        r.u.mem_access.gla = e.gla.value();
        uint32_t flags = e.access.bits() & MEM_ACCESS_RWX;
        if (e.gla_valid) flags |= MEM_ACCESS_GLA_VALID | MEM_ACCESS_FAULT_WITH_GLA;
        r.u.mem_access.flags = flags;
        break;
      }
      case sim::ExitKind::kSingleStep:
        r.reason = VM_EVENT_REASON_SINGLESTEP;
        r.u.singlestep.gfn = GfnOfRip(m, regs);
        break;
      case sim::ExitKind::kControlRegister:
        r.reason = VM_EVENT_REASON_WRITE_CTRLREG;
        r.u.write_ctrlreg.index = e.cr == 0 ? VM_EVENT_X86_CR0 : e.cr == 3 ? VM_EVENT_X86_CR3
                                                                         : VM_EVENT_X86_CR4;
        r.u.write_ctrlreg.old_value = e.old_value;
        r.u.write_ctrlreg.new_value = e.new_value;
        break;
      case sim::ExitKind::kMsrWrite:
        r.reason = VM_EVENT_REASON_MOV_TO_MSR;
        r.u.mov_to_msr.msr = e.msr;
        r.u.mov_to_msr.old_value = e.old_value;
        r.u.mov_to_msr.new_value = e.new_value;
        break;
      case sim::ExitKind::kCpuid:
        r.reason = VM_EVENT_REASON_CPUID;
        r.u.cpuid.insn_length = e.insn_length;
        r.u.cpuid.leaf = e.leaf;
        r.u.cpuid.subleaf = e.subleaf;
        break;
      case sim::ExitKind::kVmcall:
        r.reason = VM_EVENT_REASON_GUEST_REQUEST;
        break;
      case sim::ExitKind::kDescriptorTable:
        r.reason = VM_EVENT_REASON_DESCRIPTOR_ACCESS;
        r.u.desc_access.descriptor = DescriptorOf(e.descriptor_op);
        r.u.desc_access.is_write =
            e.descriptor_op == sim::DescriptorOp::kLgdt || e.descriptor_op == sim::DescriptorOp::kLidt ||
            e.descriptor_op == sim::DescriptorOp::kLldt || e.descriptor_op == sim::DescriptorOp::kLtr;
        break;
      case sim::ExitKind::kIo:
        r.reason = VM_EVENT_REASON_UNKNOWN;  // Xen 4.17 has no I/O events
        break;
    }
    return r;
  }

  // What the machine does for Xen's response.
  static sim::Response ResponseFor(const vm_event_response_t& rsp) {
    sim::Response r;
    if (rsp.flags & VM_EVENT_FLAG_DENY) {
      r.action = EventAction::kDeny;
    } else if (rsp.flags & VM_EVENT_FLAG_EMULATE) {
      r.action = EventAction::kEmulate;
    } else if (rsp.flags & VM_EVENT_FLAG_TOGGLE_SINGLESTEP) {
      r.action = EventAction::kSingleStep;
    } else if (rsp.flags & VM_EVENT_FLAG_FAST_SINGLESTEP) {
      r.action = EventAction::kFastSingleStep;
    }
    if (rsp.flags & VM_EVENT_FLAG_ALTERNATE_P2M) r.view = View(rsp.altp2m_idx);
    if (rsp.flags & VM_EVENT_FLAG_SET_REGISTERS) r.registers = GpFromEventRegs(rsp.data.regs.x86);
    return r;
  }

  // The driver's responses on the ring, carried out (at its notification).
  static void ApplyResponses() {
    SimState* x = X();
    if (x->ring_page_ == nullptr || x->front_.sring == nullptr) return;
    while (x->front_.rsp_cons != x->front_.sring->rsp_prod) {
      const vm_event_response_t rsp = *RING_GET_RESPONSE(&x->front_, x->front_.rsp_cons);
      ++x->front_.rsp_cons;
      sim::Machine& m = *x->machine_;
      if (!m.pending_exit() || m.pending_exit()->vcpu.value() != rsp.vcpu_id) continue;
      // A response the machine refuses still resumes the vCPU, as Xen would.
      if (!m.Respond(ResponseFor(rsp)).ok()) m.Respond(sim::Response{}).IgnoreError();
      x->awaiting_response_ = false;
    }
  }

  // Runs the guest until it raises an event (put on the ring) or the budget
  // is spent. True when a request was produced.
  static bool RunGuest() {
    SimState* x = X();
    sim::Machine& m = *x->machine_;
    if (x->ring_page_ == nullptr || x->awaiting_response_ || x->pause_count_ > 0) return false;
    absl::StatusOr<sim::RunResult> run = m.Run(x->options_.run_budget);
    if (!run.ok() || run->status != sim::RunStatus::kExit) return false;
    const sim::Exit exit = *m.pending_exit();
    absl::StatusOr<amd64::Registers> regs = m.GetRegisters(exit.vcpu);
    if (!regs.ok()) return false;
    // The driver initialised the shared ring when it enabled the monitor.
    if (x->front_.sring == nullptr) {
      FRONT_RING_INIT(&x->front_, static_cast<vm_event_sring_t*>(x->ring_page_), kPage);
    }
    *RING_GET_REQUEST(&x->front_, x->front_.req_prod_pvt) = RequestFor(m, exit, *regs);
    ++x->front_.req_prod_pvt;
    RING_PUSH_REQUESTS(&x->front_);
    ++x->requests_;
    x->awaiting_response_ = true;
    const char byte = 1;
    if (write(x->pipe_[1], &byte, 1) != 1) std::abort();
    ++x->bytes_in_pipe_;
    return true;
  }

  // ---- xc ----
  static xc_interface* InterfaceOpen(xentoollog_logger*, xentoollog_logger*, unsigned) {
    return Handle<xc_interface>();
  }
  static int InterfaceClose(xc_interface*) { return 0; }
  static int GetInfoList(xc_interface*, uint32_t first, unsigned int max, xc_domaininfo_t* info) {
    SimState* x = X();
    if (max < 1 || first > x->options_.domid) return 0;
    std::memset(info, 0, sizeof(*info));
    info->domain = static_cast<domid_t>(x->options_.domid);
    info->flags = XEN_DOMINF_hvm_guest;
    info->tot_pages = x->populated_.size();
    info->max_pages = x->max_pages_;
    info->max_vcpu_id = x->machine_->vcpu_count() - 1u;
    return 1;
  }
  static bool Ours(uint32_t dom) {
    if (dom == X()->options_.domid) return true;
    errno = ESRCH;
    return false;
  }
  static int MaximumGpfn(xc_interface*, uint32_t dom, xen_pfn_t* gpfns) {
    if (!Ours(dom)) return -1;
    *gpfns = X()->populated_.empty() ? 0 : *X()->populated_.rbegin();
    return 0;
  }
  static int Pause(xc_interface*, uint32_t dom) {
    if (!Ours(dom)) return -1;
    if (X()->pause_count_++ == 0) X()->machine_->Pause();
    return 0;
  }
  static int Unpause(xc_interface*, uint32_t dom) {
    if (!Ours(dom)) return -1;
    if (X()->pause_count_ == 0) return Fail(EINVAL);
    if (--X()->pause_count_ == 0) X()->machine_->Resume();
    return 0;
  }
  static int SetMaxMem(xc_interface*, uint32_t dom, uint64_t max_memkb) {
    if (!Ours(dom)) return -1;
    X()->max_pages_ = max_memkb / (kPage / 1024);
    return 0;
  }
  static int Populate(xc_interface*, uint32_t dom, unsigned long nr, unsigned int order,
                      unsigned int, xen_pfn_t* extents) {
    if (!Ours(dom)) return -1;
    SimState* x = X();
    if (nr != 1 || order != 0 || extents[0] > x->machine_->max_gfn().value()) return Fail(EINVAL);
    if (x->populated_.contains(extents[0])) return Fail(EEXIST);
    if (x->populated_.size() + 1 > x->max_pages_) return Fail(ENOMEM);
    const std::vector<uint8_t> zero(kPage, 0);
    if (!x->machine_->WritePhys(Pa(extents[0] * kPage), zero).ok()) return Fail(EIO);
    x->populated_.insert(extents[0]);
    return 0;
  }
  static int Decrease(xc_interface*, uint32_t dom, unsigned long nr, unsigned int,
                      xen_pfn_t* extents) {
    if (!Ours(dom)) return -1;
    if (nr != 1 || X()->populated_.erase(extents[0]) == 0) return Fail(EINVAL);
    return 0;
  }
  static int GetContext(xc_interface*, uint32_t dom, uint8_t* buf, uint32_t size) {
    if (!Ours(dom)) return -1;
    sim::Machine& m = *X()->machine_;
    std::vector<hvm_hw_cpu> cpus;
    for (uint16_t v = 0; v < m.vcpu_count(); ++v) {
      absl::StatusOr<amd64::Registers> regs = m.GetRegisters(VcpuId(v));
      if (!regs.ok()) return Fail(EIO);
      cpus.push_back(CpuRecord(*regs));
    }
    const std::vector<uint8_t> out = HvmContextBlob(cpus);
    if (buf == nullptr) return static_cast<int>(out.size());
    if (size < out.size()) return Fail(ENOBUFS);
    std::memcpy(buf, out.data(), out.size());
    return static_cast<int>(out.size());
  }
  static int GetContextPartial(xc_interface*, uint32_t dom, uint16_t type, uint16_t instance,
                               void* buf, uint32_t size) {
    if (!Ours(dom)) return -1;
    sim::Machine& m = *X()->machine_;
    if (type != HVM_SAVE_CODE(CPU) || instance >= m.vcpu_count()) return Fail(ENOENT);
    if (size < sizeof(hvm_hw_cpu)) return Fail(ENOBUFS);
    absl::StatusOr<amd64::Registers> regs = m.GetRegisters(VcpuId(instance));
    if (!regs.ok()) return Fail(EIO);
    const hvm_hw_cpu cpu = CpuRecord(*regs);
    std::memcpy(buf, &cpu, sizeof(cpu));
    return 0;
  }
  static int SetContext(xc_interface*, uint32_t dom, uint8_t* buf, uint32_t size) {
    if (!Ours(dom)) return -1;
    if (X()->pause_count_ == 0) return Fail(EBUSY);  // XenDriver pauses around it
    sim::Machine& m = *X()->machine_;
    size_t off = 0;
    while (off + sizeof(hvm_save_descriptor) <= size) {
      hvm_save_descriptor d;
      std::memcpy(&d, buf + off, sizeof(d));
      off += sizeof(d);
      if (d.typecode == 0) return 0;
      if (d.typecode == HVM_SAVE_CODE(CPU) && d.instance < m.vcpu_count() &&
          d.length >= sizeof(hvm_hw_cpu)) {
        hvm_hw_cpu cpu;
        std::memcpy(&cpu, buf + off, sizeof(cpu));
        if (!m.SetRegisters(VcpuId(d.instance), RegistersFromHvmCpu(cpu)).ok()) return Fail(EINVAL);
      }
      off += d.length;
    }
    return Fail(EINVAL);
  }
  static int ParamGet(xc_interface*, uint32_t dom, uint32_t param, uint64_t* value) {
    if (!Ours(dom)) return -1;
    if (param != HVM_PARAM_ALTP2M) return Fail(EINVAL);
    *value = X()->options_.altp2m ? XEN_ALTP2M_external : XEN_ALTP2M_disabled;
    return 0;
  }

  // ---- permissions and altp2m ----
  static bool Populated(uint64_t gfn) {
    if (X()->populated_.contains(gfn)) return true;
    errno = ESRCH;
    return false;
  }
  static int SetAccess(View view, uint64_t gfn, xenmem_access_t xa) {
    if (!Populated(gfn)) return -1;
    absl::StatusOr<std::pair<MemoryAccess, MemoryAccessOptions>> a = AccessFromXen(xa);
    if (!a.ok()) return Fail(EINVAL);
    return Result(X()->machine_->SetMemoryAccess(view, Gfn(gfn), a->first));
  }
  static int GetAccess(View view, uint64_t gfn, xenmem_access_t* xa) {
    if (!Populated(gfn)) return -1;
    absl::StatusOr<MemoryAccess> a = X()->machine_->GetMemoryAccess(view, Gfn(gfn));
    if (!a.ok()) return Result(a.status());
    *xa = *XenAccessFrom(*a, MemoryAccessOptions::None());
    return 0;
  }
  static int SetMemAccess(xc_interface*, uint32_t dom, xenmem_access_t a, uint64_t first,
                          uint32_t nr) {
    if (!Ours(dom)) return -1;
    for (uint64_t g = first; g < first + nr; ++g) {
      if (SetAccess(kDefaultView, g, a) != 0) return -1;
    }
    return 0;
  }
  static int GetMemAccess(xc_interface*, uint32_t dom, uint64_t pfn, xenmem_access_t* a) {
    if (!Ours(dom)) return -1;
    return GetAccess(kDefaultView, pfn, a);
  }
  static bool Altp2mUsable() {
    if (X()->options_.altp2m && X()->altp2m_enabled_) return true;
    errno = EOPNOTSUPP;
    return false;
  }
  static int Altp2mGetState(xc_interface*, uint32_t dom, bool* state) {
    if (!Ours(dom)) return -1;
    if (!X()->options_.altp2m) return Fail(EOPNOTSUPP);
    *state = X()->altp2m_enabled_;
    return 0;
  }
  static int Altp2mSetState(xc_interface*, uint32_t dom, bool state) {
    if (!Ours(dom)) return -1;
    SimState* x = X();
    if (!x->options_.altp2m) return Fail(EOPNOTSUPP);
    if (!state) {
      sim::Machine& m = *x->machine_;
      if (!m.SwitchView(kDefaultView).ok()) return Fail(EBUSY);
      for (View v : m.views().Views()) {
        if (v != kDefaultView && !m.DestroyView(v).ok()) return Fail(EBUSY);
      }
    }
    x->altp2m_enabled_ = state;
    return 0;
  }
  static int Altp2mCreate(xc_interface*, uint32_t dom, xenmem_access_t a, uint16_t* view) {
    if (!Ours(dom) || !Altp2mUsable()) return -1;
    absl::StatusOr<std::pair<MemoryAccess, MemoryAccessOptions>> access = AccessFromXen(a);
    if (!access.ok()) return Fail(EINVAL);
    absl::StatusOr<View> v = X()->machine_->CreateView(access->first);
    if (!v.ok()) return Result(v.status());
    *view = v->value();
    return 0;
  }
  static int Altp2mDestroy(xc_interface*, uint32_t dom, uint16_t view) {
    if (!Ours(dom) || !Altp2mUsable()) return -1;
    if (view == 0) return Fail(EINVAL);
    return Result(X()->machine_->DestroyView(View(view)));
  }
  static int Altp2mSwitch(xc_interface*, uint32_t dom, uint16_t view) {
    if (!Ours(dom) || !Altp2mUsable()) return -1;
    return Result(X()->machine_->SwitchView(View(view)));
  }
  static int Altp2mChangeGfn(xc_interface*, uint32_t dom, uint16_t view, xen_pfn_t old_gfn,
                             xen_pfn_t new_gfn) {
    if (!Ours(dom) || !Altp2mUsable()) return -1;
    if (view == 0) return Fail(EINVAL);
    if (!Populated(old_gfn)) return -1;
    sim::Machine& m = *X()->machine_;
    if (new_gfn == ~xen_pfn_t{0}) return Result(m.ResetGfn(View(view), Gfn(old_gfn)));
    if (!Populated(new_gfn)) return -1;
    return Result(m.ChangeGfn(View(view), Gfn(old_gfn), Gfn(new_gfn)));
  }
  static int Altp2mSetAccess(xc_interface*, uint32_t dom, uint16_t view, xen_pfn_t gfn,
                             xenmem_access_t a) {
    if (!Ours(dom) || !Altp2mUsable()) return -1;
    if (!X()->machine_->views().Exists(View(view))) return Fail(EINVAL);
    return SetAccess(View(view), gfn, a);
  }
  static int Altp2mGetAccess(xc_interface*, uint32_t dom, uint16_t view, xen_pfn_t gfn,
                             xenmem_access_t* a) {
    if (!Ours(dom) || !Altp2mUsable()) return -1;
    if (!X()->machine_->views().Exists(View(view))) return Fail(EINVAL);
    return GetAccess(View(view), gfn, a);
  }

  // ---- monitors and the ring ----
  static void* MonitorEnable(xc_interface*, uint32_t dom, uint32_t* port) {
    SimState* x = X();
    if (!Ours(dom)) return nullptr;
    if (x->ring_page_ != nullptr) {
      errno = EBUSY;
      return nullptr;
    }
    void* page = mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) return nullptr;
    // The driver initialises the shared ring; the front end attaches to it
    // when the first request goes out (see FrontReady).
    x->ring_page_ = page;
    x->front_ = vm_event_front_ring_t{};
    *port = kRemotePort;
    return page;
  }
  static int MonitorDisable(xc_interface*, uint32_t dom) {
    if (!Ours(dom)) return -1;
    SimState* x = X();
    if (x->ring_page_ == nullptr) return Fail(EINVAL);
    ApplyResponses();
    if (x->awaiting_response_) {
      x->machine_->Respond(sim::Response{}).IgnoreError();  // Xen unpauses on teardown
      x->awaiting_response_ = false;
    }
    x->ring_page_ = nullptr;  // the driver unmaps it
    return 0;
  }
  static int Monitor(absl::Status s) {
    if (X()->ring_page_ == nullptr) return Fail(EINVAL);
    return Result(s);
  }
  static int MonitorCtrlreg(xc_interface*, uint32_t dom, uint16_t index, bool enable, bool,
                            uint64_t, bool) {
    if (!Ours(dom)) return -1;
    if (X()->ring_page_ == nullptr) return Fail(EINVAL);
    const int cr = index == VM_EVENT_X86_CR0 ? 0 : index == VM_EVENT_X86_CR3 ? 3
                                               : index == VM_EVENT_X86_CR4   ? 4
                                                                             : -1;
    if (cr < 0) return Fail(EOPNOTSUPP);
    return Monitor(X()->machine_->SetControlRegisterMonitor(cr, enable));
  }
  static int MonitorMsr(xc_interface*, uint32_t dom, uint32_t msr, bool enable, bool) {
    if (!Ours(dom)) return -1;
    return Monitor(X()->machine_->SetMsrWriteMonitor(msr, enable));
  }
  static int MonitorSinglestep(xc_interface*, uint32_t dom, bool enable) {
    if (!Ours(dom)) return -1;
    if (X()->ring_page_ == nullptr) return Fail(EINVAL);
    X()->singlestep_monitor_ = enable;
    sim::Machine& m = *X()->machine_;
    if (!enable) {
      for (uint16_t v = 0; v < m.vcpu_count(); ++v) m.SetSingleStep(VcpuId(v), false).IgnoreError();
    }
    return 0;
  }
  static int MonitorBreakpoint(xc_interface*, uint32_t dom, bool enable) {
    if (!Ours(dom)) return -1;
    return Monitor(X()->machine_->SetBreakpointMonitor(enable));
  }
  static int MonitorDebug(xc_interface*, uint32_t dom, bool enable, bool) {
    if (!Ours(dom)) return -1;
    return Monitor(X()->machine_->SetInterruptMonitor(amd64::exception::kDebug, enable));
  }
  static int MonitorGuestRequest(xc_interface*, uint32_t dom, bool enable, bool, bool allow_user) {
    if (!Ours(dom)) return -1;
    return Monitor(X()->machine_->SetVmcallMonitor(enable, allow_user));
  }
  static int MonitorCpuid(xc_interface*, uint32_t dom, bool enable) {
    if (!Ours(dom)) return -1;
    return Monitor(X()->machine_->SetCpuidMonitor(enable));
  }
  static int MonitorDescriptor(xc_interface*, uint32_t dom, bool enable) {
    if (!Ours(dom)) return -1;
    return Monitor(X()->machine_->SetDescriptorTableMonitor(enable));
  }

  // ---- foreign memory ----
  static xenforeignmemory_handle* FmemOpen(xentoollog_logger*, unsigned) {
    return Handle<xenforeignmemory_handle>();
  }
  static int FmemClose(xenforeignmemory_handle*) { return 0; }
  static void* FmemMap(xenforeignmemory_handle*, uint32_t dom, int prot, size_t pages,
                       const xen_pfn_t* arr, int* err) {
    SimState* x = X();
    if (!Ours(dom)) return nullptr;
    void* base = mmap(nullptr, pages * kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) return nullptr;
    bool any_error = false;
    for (size_t i = 0; i < pages; ++i) {
      int e = 0;
      if (!x->populated_.contains(arr[i])) {
        e = -ENOENT;
      } else if (mmap(static_cast<uint8_t*>(base) + i * kPage, kPage, prot, MAP_SHARED | MAP_FIXED,
                      x->machine_->ram_fd(), static_cast<off_t>(arr[i] * kPage)) == MAP_FAILED) {
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
    x->live_mappings_ += static_cast<int>(pages);
    // Host writes through a writable foreign mapping must reach code the
    // vCPUs translated (the guest does not run between map and write).
    if (prot & PROT_WRITE) {
      x->machine_->InvalidateTranslations();
      x->writable_mappings_.insert(base);
    }
    return base;
  }
  static int FmemUnmap(xenforeignmemory_handle*, void* addr, size_t pages) {
    if (g_xen != nullptr) {
      g_xen->live_mappings_ -= static_cast<int>(pages);
      if (g_xen->writable_mappings_.erase(addr) > 0) g_xen->machine_->InvalidateTranslations();
    }
    return munmap(addr, pages * kPage);
  }

  // ---- event channel ----
  static xenevtchn_handle* EvtchnOpen(xentoollog_logger*, unsigned int) {
    return Handle<xenevtchn_handle>();
  }
  static int EvtchnClose(xenevtchn_handle*) { return 0; }
  static xenevtchn_port_or_error_t EvtchnBind(xenevtchn_handle*, uint32_t dom,
                                              evtchn_port_t remote) {
    if (!Ours(dom)) return -1;
    if (remote != kRemotePort) return Fail(EINVAL);
    return kLocalPort;
  }
  static int EvtchnUnbind(xenevtchn_handle*, evtchn_port_t port) {
    return port == kLocalPort ? 0 : Fail(EINVAL);
  }
  static int EvtchnFd(xenevtchn_handle*) { return X()->pipe_[0]; }
  static xenevtchn_port_or_error_t EvtchnPending(xenevtchn_handle*) {
    SimState* x = X();
    char byte;
    if (read(x->pipe_[0], &byte, 1) != 1) return Fail(EAGAIN);
    --x->bytes_in_pipe_;
    return kLocalPort;
  }
  static int EvtchnUnmask(xenevtchn_handle*, evtchn_port_t port) {
    return port == kLocalPort ? 0 : Fail(EINVAL);
  }
  static int EvtchnNotify(xenevtchn_handle*, evtchn_port_t port) {
    if (port != kLocalPort) return Fail(EINVAL);
    ApplyResponses();
    return 0;
  }
  // The driver waits on the event channel: the guest runs now.
  static int Poll(pollfd* fds, nfds_t n, int timeout) {
    SimState* x = X();
    if (n != 1 || fds[0].fd != x->pipe_[0]) return ::poll(fds, n, timeout);
    if (x->bytes_in_pipe_ == 0 && !RunGuest()) {
      fds[0].revents = 0;
      return 0;  // no event within the run budget: the wait's timeout
    }
    fds[0].revents = POLLIN;
    return 1;
  }

  // ---- device model ----
  static xendevicemodel_handle* DmOpen(xentoollog_logger*, unsigned int) {
    return Handle<xendevicemodel_handle>();
  }
  static int DmClose(xendevicemodel_handle*) { return 0; }
  static int DmInject(xendevicemodel_handle*, domid_t dom, int vcpu, uint8_t vector, uint8_t,
                      uint32_t error_code, uint8_t insn_len, uint64_t extra) {
    if (!Ours(dom)) return -1;
    sim::Interrupt i;
    i.vector = vector;
    if (error_code != kNoErrorCode) i.error_code = error_code;
    if (vector == amd64::exception::kPageFault) i.cr2 = extra;
    i.insn_length = insn_len;
    const int rc = Result(X()->machine_->InjectInterrupt(VcpuId(static_cast<uint16_t>(vcpu)), i));
    if (rc == 0) ++X()->injections_;
    return rc;
  }

  // ---- xenstore: the domain's name ----
  static xs_handle* XsOpen(unsigned long) { return Handle<xs_handle>(); }
  static void XsClose(xs_handle*) {}
  static char** XsDirectory(xs_handle*, xs_transaction_t, const char* path, unsigned int* num) {
    if (std::strcmp(path, "/local/domain") != 0) {
      errno = ENOENT;
      return nullptr;
    }
    const std::string id = std::to_string(X()->options_.domid);
    char** out = static_cast<char**>(std::malloc(sizeof(char*) + id.size() + 1));
    out[0] = reinterpret_cast<char*>(out + 1);
    std::memcpy(out[0], id.c_str(), id.size() + 1);
    *num = 1;
    return out;
  }
  static void* XsRead(xs_handle*, xs_transaction_t, const char* path, unsigned int* len) {
    if (path != absl::StrFormat("/local/domain/%u/name", X()->options_.domid)) {
      errno = ENOENT;
      return nullptr;
    }
    const std::string& value = X()->options_.name;
    char* out = static_cast<char*>(std::malloc(value.size() + 1));
    std::memcpy(out, value.c_str(), value.size() + 1);
    *len = static_cast<unsigned int>(value.size());
    return out;
  }
};

}  // namespace

SimulatedXen::SimulatedXen(std::unique_ptr<State> state) : state_(std::move(state)) {}

absl::StatusOr<std::unique_ptr<SimulatedXen>> SimulatedXen::Create(
    std::unique_ptr<sim::Machine> machine, Options options) {
  if (machine == nullptr || machine->ram_fd() < 0) {
    return absl::InvalidArgumentError(
        "SimulatedXen: the machine needs MachineOptions::shared_ram (its RAM is foreign-mapped)");
  }
  if (g_xen != nullptr) return absl::FailedPreconditionError("SimulatedXen: one at a time");
  const uint64_t frames = machine->max_gfn().value() + 1;
  if (options.reserve_frames >= frames) {
    return absl::InvalidArgumentError("SimulatedXen: reserve_frames leaves no RAM");
  }
  auto state = std::make_unique<State>();
  State* x = state.get();
  x->machine_ = std::move(machine);
  x->options_ = std::move(options);
  for (uint64_t g = 0; g < frames - x->options_.reserve_frames; ++g) x->populated_.insert(g);
  x->max_pages_ = x->populated_.size();
  if (pipe2(x->pipe_, O_NONBLOCK | O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrFormat("SimulatedXen: pipe2: %s", std::strerror(errno)));
  }
  g_xen = x;
  XenApi& api = x->api_;
  api = AbortingXenApi();
  api.xc_interface_open = &Impl::InterfaceOpen;
  api.xc_interface_close = &Impl::InterfaceClose;
  api.xc_domain_getinfolist = &Impl::GetInfoList;
  api.xc_domain_maximum_gpfn = &Impl::MaximumGpfn;
  api.xc_domain_pause = &Impl::Pause;
  api.xc_domain_unpause = &Impl::Unpause;
  api.xc_domain_setmaxmem = &Impl::SetMaxMem;
  api.xc_domain_populate_physmap_exact = &Impl::Populate;
  api.xc_domain_decrease_reservation_exact = &Impl::Decrease;
  api.xc_domain_hvm_getcontext = &Impl::GetContext;
  api.xc_domain_hvm_getcontext_partial = &Impl::GetContextPartial;
  api.xc_domain_hvm_setcontext = &Impl::SetContext;
  api.xc_hvm_param_get = &Impl::ParamGet;
  api.xc_set_mem_access = &Impl::SetMemAccess;
  api.xc_get_mem_access = &Impl::GetMemAccess;
  api.xc_altp2m_get_domain_state = &Impl::Altp2mGetState;
  api.xc_altp2m_set_domain_state = &Impl::Altp2mSetState;
  api.xc_altp2m_create_view = &Impl::Altp2mCreate;
  api.xc_altp2m_destroy_view = &Impl::Altp2mDestroy;
  api.xc_altp2m_switch_to_view = &Impl::Altp2mSwitch;
  api.xc_altp2m_change_gfn = &Impl::Altp2mChangeGfn;
  api.xc_altp2m_set_mem_access = &Impl::Altp2mSetAccess;
  api.xc_altp2m_get_mem_access = &Impl::Altp2mGetAccess;
  api.xc_monitor_enable = &Impl::MonitorEnable;
  api.xc_monitor_disable = &Impl::MonitorDisable;
  api.xc_monitor_write_ctrlreg = &Impl::MonitorCtrlreg;
  api.xc_monitor_mov_to_msr = &Impl::MonitorMsr;
  api.xc_monitor_singlestep = &Impl::MonitorSinglestep;
  api.xc_monitor_software_breakpoint = &Impl::MonitorBreakpoint;
  api.xc_monitor_debug_exceptions = &Impl::MonitorDebug;
  api.xc_monitor_guest_request = &Impl::MonitorGuestRequest;
  api.xc_monitor_cpuid = &Impl::MonitorCpuid;
  api.xc_monitor_descriptor_access = &Impl::MonitorDescriptor;
  api.xenforeignmemory_open = &Impl::FmemOpen;
  api.xenforeignmemory_close = &Impl::FmemClose;
  api.xenforeignmemory_map = &Impl::FmemMap;
  api.xenforeignmemory_unmap = &Impl::FmemUnmap;
  api.xenevtchn_open = &Impl::EvtchnOpen;
  api.xenevtchn_close = &Impl::EvtchnClose;
  api.xenevtchn_bind_interdomain = &Impl::EvtchnBind;
  api.xenevtchn_unbind = &Impl::EvtchnUnbind;
  api.xenevtchn_fd = &Impl::EvtchnFd;
  api.xenevtchn_pending = &Impl::EvtchnPending;
  api.xenevtchn_unmask = &Impl::EvtchnUnmask;
  api.xenevtchn_notify = &Impl::EvtchnNotify;
  api.xendevicemodel_open = &Impl::DmOpen;
  api.xendevicemodel_close = &Impl::DmClose;
  api.xendevicemodel_inject_event = &Impl::DmInject;
  api.xs_open = &Impl::XsOpen;
  api.xs_close = &Impl::XsClose;
  api.xs_directory = &Impl::XsDirectory;
  api.xs_read = &Impl::XsRead;
  api.poll = &Impl::Poll;
  return std::unique_ptr<SimulatedXen>(new SimulatedXen(std::move(state)));
}

SimulatedXen::~SimulatedXen() {
  close(state_->pipe_[0]);
  close(state_->pipe_[1]);
  if (g_xen == state_.get()) g_xen = nullptr;
}

const XenApi* SimulatedXen::api() const { return &state_->api_; }
sim::Machine& SimulatedXen::machine() { return *state_->machine_; }
int SimulatedXen::pause_count() const { return state_->pause_count_; }
bool SimulatedXen::ring_enabled() const { return state_->ring_page_ != nullptr; }
uint64_t SimulatedXen::requests() const { return state_->requests_; }
uint64_t SimulatedXen::injections() const { return state_->injections_; }

absl::StatusOr<XenDriver> SimulatedXen::OpenDriver(XenDriverOptions driver_options) const {
  return XenDriverTestPeer::OpenWithApi(&state_->api_, state_->options_.domid, driver_options);
}

}  // namespace vmi::xen::xen_internal
