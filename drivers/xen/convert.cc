#include "drivers/xen/convert.h"

#include <cstring>

#include "absl/strings/str_format.h"
#include "arch/amd64/events.h"
#include "arch/amd64/interrupt.h"
#include "arch/amd64/registers.h"
#include "core/error.h"

namespace vmi::xen {
namespace {

using amd64::ControlRegister;
using amd64::DescriptorTableKind;
using amd64::Interrupt;
using amd64::InterruptType;
using amd64::Registers;
using amd64::Segment;

// Bit 11 of the 12-bit arbytes form: limit granularity.
constexpr uint32_t kArbytesG = 1u << 11;

// A segment from a vm_event selector block: 20-bit limit, stored >> 12 when
// G is set.
Segment EventSegment(uint16_t selector, uint64_t base, const vm_event_x86_selector_reg& reg) {
  Segment s;
  s.selector = selector;
  s.base = base;
  s.access = AccessFromArbytes(reg.ar);
  s.limit = (reg.ar & kArbytesG) ? ((uint32_t{reg.limit} << 12) | 0xfff) : reg.limit;
  return s;
}

Segment CpuSegment(uint32_t sel, uint64_t base, uint32_t limit, uint32_t arbytes) {
  return Segment{static_cast<uint16_t>(sel), base, limit, AccessFromArbytes(arbytes)};
}

void PatchSegment(const Segment& s, uint32_t* sel, uint64_t* base, uint32_t* limit,
                  uint32_t* arbytes) {
  *sel = s.selector;
  *base = s.base;
  *limit = s.limit;
  *arbytes = ArbytesFromAccess(s.access);
}

// Of two representations of one value, the one that was edited relative to
// `current` (the first when both or neither were).
uint64_t Edited(uint64_t a, uint64_t b, uint64_t current) {
  if (a != current) return a;
  return b;
}

absl::StatusOr<ControlRegister> ControlRegisterFromIndex(uint32_t index) {
  switch (index) {
    case VM_EVENT_X86_CR0:
      return ControlRegister::kCr0;
    case VM_EVENT_X86_CR3:
      return ControlRegister::kCr3;
    case VM_EVENT_X86_CR4:
      return ControlRegister::kCr4;
    case VM_EVENT_X86_XCR0:
      return ControlRegister::kXcr0;
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("write_ctrlreg event with unknown control register index %u", index));
}

absl::StatusOr<DescriptorTableKind> DescriptorFromXen(uint8_t descriptor) {
  switch (descriptor) {
    case VM_EVENT_DESC_IDTR:
      return DescriptorTableKind::kIdtr;
    case VM_EVENT_DESC_GDTR:
      return DescriptorTableKind::kGdtr;
    case VM_EVENT_DESC_LDTR:
      return DescriptorTableKind::kLdtr;
    case VM_EVENT_DESC_TR:
      return DescriptorTableKind::kTr;
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("descriptor_access event with unknown descriptor %u", descriptor));
}

Interrupt DebugInterrupt(uint8_t vector, const vm_event_debug& debug) {
  Interrupt i;
  i.vector = vector;
  i.type = static_cast<InterruptType>(debug.type & 7);
  i.instruction_length = static_cast<uint8_t>(debug.insn_length);
  // xendevicemodel_inject_event takes pending_dbg as the #DB extra.
  i.extra = vector == amd64::exception::kDebug ? debug.pending_dbg : 0;
  return i;
}

Interrupt InterruptFromRequest(const vm_event_interrupt_x86& x86) {
  Interrupt i;
  i.vector = static_cast<uint8_t>(x86.vector);
  i.type = static_cast<InterruptType>(x86.type & 7);
  i.has_error_code = x86.error_code != kNoErrorCode;
  i.error_code = i.has_error_code ? x86.error_code : 0;
  i.extra = i.vector == amd64::exception::kPageFault ? x86.cr2 : 0;
  return i;
}

// Xen's gfn_of_rip gives INVALID_GFN when RIP does not translate.
std::optional<Gfn> InstructionGfnFromRequest(uint64_t gfn) {
  if (gfn == kInvalidGfn) return std::nullopt;
  return Gfn(gfn);
}

absl::StatusOr<amd64::EventReason> ReasonFromRequest(const vm_event_request_t& req) {
  switch (req.reason) {
    case VM_EVENT_REASON_MEM_ACCESS: {
      const vm_event_mem_access& m = req.u.mem_access;
      amd64::MemoryAccessEvent e;
      e.gpa = Pa((m.gfn << Amd64::kPageShift) + (m.offset & (Amd64::kPageSize - 1)));
      e.gla_valid = (m.flags & MEM_ACCESS_GLA_VALID) != 0;
      e.gla = e.gla_valid ? Va(m.gla) : Va(0);
      e.access = MemoryAccess(static_cast<uint8_t>(m.flags & MEM_ACCESS_RWX));
      e.fault_with_gla = (m.flags & MEM_ACCESS_FAULT_WITH_GLA) != 0;
      e.fault_in_gpt = (m.flags & MEM_ACCESS_FAULT_IN_GPT) != 0;
      return e;
    }
    case VM_EVENT_REASON_WRITE_CTRLREG: {
      VMI_ASSIGN_OR_RETURN(ControlRegister reg,
                           ControlRegisterFromIndex(req.u.write_ctrlreg.index));
      return amd64::ControlRegisterWriteEvent{reg, req.u.write_ctrlreg.old_value,
                                              req.u.write_ctrlreg.new_value};
    }
    case VM_EVENT_REASON_MOV_TO_MSR:
      return amd64::MsrWriteEvent{static_cast<uint32_t>(req.u.mov_to_msr.msr),
                                  req.u.mov_to_msr.old_value, req.u.mov_to_msr.new_value};
    case VM_EVENT_REASON_SOFTWARE_BREAKPOINT:
      return amd64::InterruptEvent{
          .interrupt = DebugInterrupt(amd64::exception::kBreakpoint, req.u.software_breakpoint),
          .instruction_gfn = InstructionGfnFromRequest(req.u.software_breakpoint.gfn)};
    case VM_EVENT_REASON_DEBUG_EXCEPTION:
      return amd64::InterruptEvent{
          .interrupt = DebugInterrupt(amd64::exception::kDebug, req.u.debug_exception)};
    case VM_EVENT_REASON_INTERRUPT:
      return amd64::InterruptEvent{.interrupt = InterruptFromRequest(req.u.interrupt.x86)};
    case VM_EVENT_REASON_SINGLESTEP:
      return amd64::SingleStepEvent{.instruction_gfn =
                                        InstructionGfnFromRequest(req.u.singlestep.gfn)};
    case VM_EVENT_REASON_GUEST_REQUEST:
      return amd64::HypercallEvent{kVmcallLength};
    case VM_EVENT_REASON_CPUID:
      return amd64::CpuidEvent{req.u.cpuid.leaf, req.u.cpuid.subleaf,
                               static_cast<uint8_t>(req.u.cpuid.insn_length)};
    case VM_EVENT_REASON_DESCRIPTOR_ACCESS: {
      VMI_ASSIGN_OR_RETURN(DescriptorTableKind table,
                           DescriptorFromXen(req.u.desc_access.descriptor));
      // The request carries no instruction length.
      return amd64::DescriptorAccessEvent{table, req.u.desc_access.is_write != 0, 0};
    }
#ifdef VM_EVENT_REASON_IO_INSTRUCTION
    // Xen >= 4.18 headers.
    case VM_EVENT_REASON_IO_INSTRUCTION: {
      amd64::IoEvent e;
      e.port = req.u.io.port;
      e.size = static_cast<uint8_t>(req.u.io.bytes);
      e.direction = req.u.io.in ? amd64::IoDirection::kIn : amd64::IoDirection::kOut;
      e.string = req.u.io.str != 0;
      return e;
    }
#endif
  }
  return absl::UnimplementedError(absl::StrFormat("vm_event reason %u (%s) has no EventReason",
                                                  req.reason, VmEventReasonName(req.reason)));
}

bool IsInterruptReason(uint32_t reason) {
  return reason == VM_EVENT_REASON_SOFTWARE_BREAKPOINT ||
         reason == VM_EVENT_REASON_DEBUG_EXCEPTION || reason == VM_EVENT_REASON_INTERRUPT;
}

void SetGpRegisters(const amd64::GpRegisters& g, vm_event_regs_x86* r) {
  r->rax = g.rax, r->rbx = g.rbx, r->rcx = g.rcx, r->rdx = g.rdx;
  r->rsi = g.rsi, r->rdi = g.rdi, r->rbp = g.rbp, r->rsp = g.rsp;
  r->r8 = g.r8, r->r9 = g.r9, r->r10 = g.r10, r->r11 = g.r11;
  r->r12 = g.r12, r->r13 = g.r13, r->r14 = g.r14, r->r15 = g.r15;
  r->rip = g.rip, r->rflags = g.rflags;
}

}  // namespace

const char* VmEventReasonName(uint32_t reason) {
  switch (reason) {
    case VM_EVENT_REASON_UNKNOWN:
      return "unknown";
    case VM_EVENT_REASON_MEM_ACCESS:
      return "mem_access";
    case VM_EVENT_REASON_MEM_SHARING:
      return "mem_sharing";
    case VM_EVENT_REASON_MEM_PAGING:
      return "mem_paging";
    case VM_EVENT_REASON_WRITE_CTRLREG:
      return "write_ctrlreg";
    case VM_EVENT_REASON_MOV_TO_MSR:
      return "mov_to_msr";
    case VM_EVENT_REASON_SOFTWARE_BREAKPOINT:
      return "software_breakpoint";
    case VM_EVENT_REASON_SINGLESTEP:
      return "singlestep";
    case VM_EVENT_REASON_GUEST_REQUEST:
      return "guest_request";
    case VM_EVENT_REASON_DEBUG_EXCEPTION:
      return "debug_exception";
    case VM_EVENT_REASON_CPUID:
      return "cpuid";
    case VM_EVENT_REASON_PRIVILEGED_CALL:
      return "privileged_call";
    case VM_EVENT_REASON_INTERRUPT:
      return "interrupt";
    case VM_EVENT_REASON_DESCRIPTOR_ACCESS:
      return "descriptor_access";
    case VM_EVENT_REASON_EMUL_UNIMPLEMENTED:
      return "emul_unimplemented";
    case VM_EVENT_REASON_VMEXIT:
      return "vmexit";
#ifdef VM_EVENT_REASON_IO_INSTRUCTION
    case VM_EVENT_REASON_IO_INSTRUCTION:
      return "io_instruction";
#endif
  }
  return "unrecognised";
}

uint16_t AccessFromArbytes(uint32_t arbytes) {
  return static_cast<uint16_t>((arbytes & 0xff) | ((arbytes & 0xf00) << 4));
}

uint32_t ArbytesFromAccess(uint16_t access) { return (access & 0xffu) | ((access >> 4) & 0xf00u); }

Registers RegistersFromEventRegs(const vm_event_regs_x86& x) {
  Registers r;
  r.rax = x.rax, r.rbx = x.rbx, r.rcx = x.rcx, r.rdx = x.rdx;
  r.rsi = x.rsi, r.rdi = x.rdi, r.rbp = x.rbp, r.rsp = x.rsp;
  r.r8 = x.r8, r.r9 = x.r9, r.r10 = x.r10, r.r11 = x.r11;
  r.r12 = x.r12, r.r13 = x.r13, r.r14 = x.r14, r.r15 = x.r15;
  r.rip = x.rip, r.rflags = x.rflags;
  r.cr0 = x.cr0, r.cr2 = x.cr2, r.cr3 = x.cr3, r.cr4 = x.cr4;
  r.dr6 = x.dr6, r.dr7 = x.dr7;
  r.efer = x.msr_efer, r.star = x.msr_star, r.lstar = x.msr_lstar;
  r.sysenter_cs = x.sysenter_cs, r.sysenter_esp = x.sysenter_esp, r.sysenter_eip = x.sysenter_eip;
  r.fs_base = x.fs_base, r.gs_base = x.gs_base, r.kernel_gs_base = x.shadow_gs;
  r.cs = EventSegment(x.cs_sel, x.cs_base, x.cs);
  r.ss = EventSegment(x.ss_sel, x.ss_base, x.ss);
  r.ds = EventSegment(x.ds_sel, x.ds_base, x.ds);
  r.es = EventSegment(x.es_sel, x.es_base, x.es);
  r.fs = EventSegment(x.fs_sel, x.fs_base, x.fs);
  r.gs = EventSegment(x.gs_sel, x.gs_base, x.gs);
  r.gdtr = amd64::DescriptorTable{x.gdtr_base, x.gdtr_limit};
  return r;
}

Registers RegistersFromHvmCpu(const hvm_hw_cpu& c) {
  Registers r;
  r.rax = c.rax, r.rbx = c.rbx, r.rcx = c.rcx, r.rdx = c.rdx;
  r.rsi = c.rsi, r.rdi = c.rdi, r.rbp = c.rbp, r.rsp = c.rsp;
  r.r8 = c.r8, r.r9 = c.r9, r.r10 = c.r10, r.r11 = c.r11;
  r.r12 = c.r12, r.r13 = c.r13, r.r14 = c.r14, r.r15 = c.r15;
  r.rip = c.rip, r.rflags = c.rflags;
  r.cr0 = c.cr0, r.cr2 = c.cr2, r.cr3 = c.cr3, r.cr4 = c.cr4;
  r.dr0 = c.dr0, r.dr1 = c.dr1, r.dr2 = c.dr2, r.dr3 = c.dr3, r.dr6 = c.dr6, r.dr7 = c.dr7;
  r.efer = c.msr_efer;
  r.star = c.msr_star, r.lstar = c.msr_lstar, r.cstar = c.msr_cstar;
  r.sfmask = c.msr_syscall_mask;
  r.sysenter_cs = c.sysenter_cs, r.sysenter_esp = c.sysenter_esp;
  r.sysenter_eip = c.sysenter_eip;
  r.fs_base = c.fs_base, r.gs_base = c.gs_base, r.kernel_gs_base = c.shadow_gs;
  r.tsc_aux = c.msr_tsc_aux;
  r.cs = CpuSegment(c.cs_sel, c.cs_base, c.cs_limit, c.cs_arbytes);
  r.ds = CpuSegment(c.ds_sel, c.ds_base, c.ds_limit, c.ds_arbytes);
  r.es = CpuSegment(c.es_sel, c.es_base, c.es_limit, c.es_arbytes);
  r.fs = CpuSegment(c.fs_sel, c.fs_base, c.fs_limit, c.fs_arbytes);
  r.gs = CpuSegment(c.gs_sel, c.gs_base, c.gs_limit, c.gs_arbytes);
  r.ss = CpuSegment(c.ss_sel, c.ss_base, c.ss_limit, c.ss_arbytes);
  r.tr = CpuSegment(c.tr_sel, c.tr_base, c.tr_limit, c.tr_arbytes);
  r.ldtr = CpuSegment(c.ldtr_sel, c.ldtr_base, c.ldtr_limit, c.ldtr_arbytes);
  r.gdtr = amd64::DescriptorTable{c.gdtr_base, static_cast<uint16_t>(c.gdtr_limit)};
  r.idtr = amd64::DescriptorTable{c.idtr_base, static_cast<uint16_t>(c.idtr_limit)};
  return r;
}

void PatchHvmCpu(const Registers& r, hvm_hw_cpu* c) {
  const uint64_t fs_base = Edited(r.fs_base, r.fs.base, c->fs_base);
  const uint64_t gs_base = Edited(r.gs_base, r.gs.base, c->gs_base);
  c->rax = r.rax, c->rbx = r.rbx, c->rcx = r.rcx, c->rdx = r.rdx;
  c->rsi = r.rsi, c->rdi = r.rdi, c->rbp = r.rbp, c->rsp = r.rsp;
  c->r8 = r.r8, c->r9 = r.r9, c->r10 = r.r10, c->r11 = r.r11;
  c->r12 = r.r12, c->r13 = r.r13, c->r14 = r.r14, c->r15 = r.r15;
  c->rip = r.rip, c->rflags = r.rflags;
  c->cr0 = r.cr0, c->cr2 = r.cr2, c->cr3 = r.cr3, c->cr4 = r.cr4;
  c->dr0 = r.dr0, c->dr1 = r.dr1, c->dr2 = r.dr2, c->dr3 = r.dr3, c->dr6 = r.dr6, c->dr7 = r.dr7;
  c->msr_efer = r.efer;
  c->msr_star = r.star, c->msr_lstar = r.lstar, c->msr_cstar = r.cstar;
  c->msr_syscall_mask = r.sfmask;
  c->sysenter_cs = r.sysenter_cs, c->sysenter_esp = r.sysenter_esp;
  c->sysenter_eip = r.sysenter_eip;
  c->shadow_gs = r.kernel_gs_base;
  c->msr_tsc_aux = r.tsc_aux;
  PatchSegment(r.cs, &c->cs_sel, &c->cs_base, &c->cs_limit, &c->cs_arbytes);
  PatchSegment(r.ds, &c->ds_sel, &c->ds_base, &c->ds_limit, &c->ds_arbytes);
  PatchSegment(r.es, &c->es_sel, &c->es_base, &c->es_limit, &c->es_arbytes);
  PatchSegment(r.fs, &c->fs_sel, &c->fs_base, &c->fs_limit, &c->fs_arbytes);
  PatchSegment(r.gs, &c->gs_sel, &c->gs_base, &c->gs_limit, &c->gs_arbytes);
  PatchSegment(r.ss, &c->ss_sel, &c->ss_base, &c->ss_limit, &c->ss_arbytes);
  PatchSegment(r.tr, &c->tr_sel, &c->tr_base, &c->tr_limit, &c->tr_arbytes);
  PatchSegment(r.ldtr, &c->ldtr_sel, &c->ldtr_base, &c->ldtr_limit, &c->ldtr_arbytes);
  c->fs_base = fs_base;
  c->gs_base = gs_base;
  c->gdtr_base = r.gdtr.base, c->gdtr_limit = r.gdtr.limit;
  c->idtr_base = r.idtr.base, c->idtr_limit = r.idtr.limit;
}

absl::Status PatchCpuRecordInContext(absl::Span<uint8_t> context, uint16_t vcpu,
                                     const Registers& regs) {
  const uint16_t cpu_code = HVM_SAVE_CODE(CPU);
  size_t off = 0;
  while (off + sizeof(hvm_save_descriptor) <= context.size()) {
    hvm_save_descriptor desc;
    std::memcpy(&desc, context.data() + off, sizeof(desc));
    off += sizeof(desc);
    if (desc.typecode == 0) break;  // END
    if (desc.length > context.size() - off) {
      return absl::DataLossError(absl::StrFormat(
          "HVM context: record type %u instance %u at offset %u claims %u bytes, %u left",
          desc.typecode, desc.instance, off - sizeof(desc), desc.length, context.size() - off));
    }
    if (desc.typecode == cpu_code && desc.instance == vcpu) {
      if (desc.length < sizeof(hvm_hw_cpu)) {
        return absl::DataLossError(
            absl::StrFormat("HVM context: CPU record of vcpu %u is %u bytes, expected %u", vcpu,
                            desc.length, sizeof(hvm_hw_cpu)));
      }
      hvm_hw_cpu cpu;
      std::memcpy(&cpu, context.data() + off, sizeof(cpu));
      PatchHvmCpu(regs, &cpu);
      std::memcpy(context.data() + off, &cpu, sizeof(cpu));
      return absl::OkStatus();
    }
    off += desc.length;
  }
  return absl::NotFoundError(absl::StrFormat("HVM context has no CPU record for vcpu %u", vcpu));
}

absl::StatusOr<xenmem_access_t> XenAccessFrom(MemoryAccess access, MemoryAccessOptions options) {
  if (options.ignore_page_walk_updates()) {
    return absl::UnimplementedError(absl::StrFormat(
        "memory access %s with option ignore_page_walk_updates cannot be expressed with the Xen "
        "4.17 interface (it needs XENMEM_access_r_pw, a later extension, for r-- only)",
        access.ToString()));
  }
  if (!options.empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("unknown memory access options 0x%x", options.bits()));
  }
  switch (access.bits()) {
    case 0:
      return XENMEM_access_n;
    case MemoryAccess::kR:
      return XENMEM_access_r;
    case MemoryAccess::kW:
      return XENMEM_access_w;
    case MemoryAccess::kR | MemoryAccess::kW:
      return XENMEM_access_rw;
    case MemoryAccess::kX:
      return XENMEM_access_x;
    case MemoryAccess::kR | MemoryAccess::kX:
      return XENMEM_access_rx;
    case MemoryAccess::kW | MemoryAccess::kX:
      return XENMEM_access_wx;
    default:
      return XENMEM_access_rwx;
  }
}

absl::StatusOr<std::pair<MemoryAccess, MemoryAccessOptions>> AccessFromXen(xenmem_access_t access) {
  auto plain = [](MemoryAccess a) { return std::make_pair(a, MemoryAccessOptions::None()); };
  switch (access) {
    case XENMEM_access_n:
      return plain(MemoryAccess::None());
    case XENMEM_access_r:
      return plain(MemoryAccess::R());
    case XENMEM_access_w:
      return plain(MemoryAccess::W());
    case XENMEM_access_rw:
      return plain(MemoryAccess::RW());
    case XENMEM_access_x:
      return plain(MemoryAccess::X());
    case XENMEM_access_rx:
      return plain(MemoryAccess::RX());
    case XENMEM_access_wx:
      return plain(MemoryAccess::WX());
    case XENMEM_access_rwx:
      return plain(MemoryAccess::RWX());
    case XENMEM_access_rx2rw:
      return plain(MemoryAccess::RX());
    case XENMEM_access_n2rwx:
      return plain(MemoryAccess::None());
    case XENMEM_access_default:
      break;
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "xenmem_access_t %d is not a concrete access (default, or newer than Xen 4.17)",
      static_cast<int>(access)));
}

absl::StatusOr<VmiEvent<Amd64>> EventFromRequest(const vm_event_request_t& req) {
  if (req.version != VM_EVENT_INTERFACE_VERSION) {
    return absl::FailedPreconditionError(
        absl::StrFormat("vm_event request of interface version %u, this build speaks %u",
                        req.version, VM_EVENT_INTERFACE_VERSION));
  }
  VMI_ASSIGN_OR_RETURN(amd64::EventReason reason, ReasonFromRequest(req));
  VmiEvent<Amd64> event;
  event.vcpu = VcpuId(static_cast<uint16_t>(req.vcpu_id));
  event.view = (req.flags & VM_EVENT_FLAG_ALTERNATE_P2M) ? View(req.altp2m_idx) : kDefaultView;
  event.registers = RegistersFromEventRegs(req.data.regs.x86);
  event.reason = reason;
  event.flags.vcpu_paused = (req.flags & VM_EVENT_FLAG_VCPU_PAUSED) != 0;
  return event;
}

absl::StatusOr<vm_event_response_t> ResponseFromEvent(const vm_event_request_t& req,
                                                      const VmiEventResponse<Amd64>& response) {
  vm_event_response_t rsp;
  std::memset(&rsp, 0, sizeof(rsp));
  rsp.version = VM_EVENT_INTERFACE_VERSION;
  rsp.vcpu_id = req.vcpu_id;
  rsp.reason = req.reason;
  rsp.altp2m_idx = req.altp2m_idx;
  rsp.u = req.u;
  rsp.flags = req.flags & VM_EVENT_FLAG_VCPU_PAUSED;

  const View current =
      (req.flags & VM_EVENT_FLAG_ALTERNATE_P2M) ? View(req.altp2m_idx) : kDefaultView;
  auto invalid = [&req](const char* what) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "response to a %s event on vcpu %u: %s", VmEventReasonName(req.reason), req.vcpu_id, what));
  };

  switch (response.action) {
    case EventAction::kContinue:
      break;
    case EventAction::kDeny:
      if (req.reason == VM_EVENT_REASON_WRITE_CTRLREG || req.reason == VM_EVENT_REASON_MOV_TO_MSR) {
        rsp.flags |= VM_EVENT_FLAG_DENY;
      } else if (req.reason == VM_EVENT_REASON_MEM_ACCESS) {
        // Xen cannot refuse a memory access outright: it emulates the
        // instruction with its writes discarded.
        rsp.flags |= VM_EVENT_FLAG_EMULATE | VM_EVENT_FLAG_EMULATE_NOWRITE;
      } else {
        return invalid("deny applies to CR/MSR writes and memory accesses only");
      }
      break;
    case EventAction::kReinjectInterrupt:
      if (!IsInterruptReason(req.reason)) {
        return invalid("reinject applies to breakpoint, debug and interrupt events only");
      }
      break;  // the driver injects before it responds
    case EventAction::kSingleStep:
      rsp.flags |= VM_EVENT_FLAG_TOGGLE_SINGLESTEP;
      break;
    case EventAction::kFastSingleStep:
      if (!response.view.has_value()) return invalid("fast single-step needs a view to step in");
      break;
    case EventAction::kEmulate:
      rsp.flags |= VM_EVENT_FLAG_EMULATE;
      break;
  }

  if (response.view.has_value()) {
    rsp.flags |= VM_EVENT_FLAG_ALTERNATE_P2M;
    rsp.altp2m_idx = response.view->value();
  }
  if (response.action == EventAction::kFastSingleStep) {
    // Step in `view` (ALTERNATE_P2M above), then Xen switches to p2midx and
    // turns single-stepping off by itself.
    rsp.flags |= VM_EVENT_FLAG_FAST_SINGLESTEP;
    std::memset(&rsp.u, 0, sizeof(rsp.u));
    rsp.u.fast_singlestep.p2midx = current.value();
  }
  if (response.registers.has_value()) {
    rsp.flags |= VM_EVENT_FLAG_SET_REGISTERS;
    rsp.data.regs.x86 = req.data.regs.x86;
    SetGpRegisters(*response.registers, &rsp.data.regs.x86);
  }
  return rsp;
}

absl::StatusOr<Interrupt> InterruptToReinject(const vm_event_request_t& req) {
  switch (req.reason) {
    case VM_EVENT_REASON_SOFTWARE_BREAKPOINT:
      return DebugInterrupt(amd64::exception::kBreakpoint, req.u.software_breakpoint);
    case VM_EVENT_REASON_DEBUG_EXCEPTION:
      return DebugInterrupt(amd64::exception::kDebug, req.u.debug_exception);
    case VM_EVENT_REASON_INTERRUPT:
      return InterruptFromRequest(req.u.interrupt.x86);
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("a %s event has no interrupt to reinject", VmEventReasonName(req.reason)));
}

}  // namespace vmi::xen
