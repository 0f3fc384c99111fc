#include "sim/internal/cpu_registers.h"

#include <iterator>

#include "absl/strings/str_format.h"
#include "arch/amd64/bitfields.h"
#include "arch/amd64/events.h"
#include "core/error.h"
#include "sim/internal/delivery.h"
#include "sim/internal/machine_state.h"

namespace vmi::sim {
namespace sim_internal {

amd64::Segment SegmentFromQemu(const QemuSegment& s) {
  return amd64::Segment{static_cast<uint16_t>(s.selector), s.base, s.limit,
                        static_cast<uint16_t>(amd64::SegmentAccess::FromDescriptorFlags(s.flags).value())};
}

uint32_t QemuFlagsOf(const amd64::Segment& s) {
  return amd64::SegmentAccess(s.access).ToDescriptorFlags();
}

void RegistersFromHead(const QemuStateHead& h, amd64::Registers* r) {
  r->rax = h.regs[0];
  r->rcx = h.regs[1];
  r->rdx = h.regs[2];
  r->rbx = h.regs[3];
  r->rsp = h.regs[4];
  r->rbp = h.regs[5];
  r->rsi = h.regs[6];
  r->rdi = h.regs[7];
  r->r8 = h.regs[8];
  r->r9 = h.regs[9];
  r->r10 = h.regs[10];
  r->r11 = h.regs[11];
  r->r12 = h.regs[12];
  r->r13 = h.regs[13];
  r->r14 = h.regs[14];
  r->r15 = h.regs[15];
  r->rip = h.eip;
  r->cr0 = h.cr[0];
  r->cr2 = h.cr[2];
  r->cr3 = h.cr[3];
  r->cr4 = h.cr[4];
  r->fs_base = h.segs[kSegFs].base;
  r->gs_base = h.segs[kSegGs].base;
  r->es = SegmentFromQemu(h.segs[kSegEs]);
  r->cs = SegmentFromQemu(h.segs[kSegCs]);
  r->ss = SegmentFromQemu(h.segs[kSegSs]);
  r->ds = SegmentFromQemu(h.segs[kSegDs]);
  r->fs = SegmentFromQemu(h.segs[kSegFs]);
  r->gs = SegmentFromQemu(h.segs[kSegGs]);
  r->tr = SegmentFromQemu(h.tr);
  r->ldtr = SegmentFromQemu(h.ldt);
  r->gdtr = amd64::DescriptorTable{h.gdt.base, static_cast<uint16_t>(h.gdt.limit)};
  r->idtr = amd64::DescriptorTable{h.idt.base, static_cast<uint16_t>(h.idt.limit)};
}

const uint32_t kMarshalledMsrs[kMarshalledMsrCount] = {
    amd64::msr::kEfer,        amd64::msr::kStar,        amd64::msr::kLstar,
    amd64::msr::kCstar,       amd64::msr::kSfmask,      amd64::msr::kSysenterCs,
    amd64::msr::kSysenterEsp, amd64::msr::kSysenterEip, amd64::msr::kKernelGsBase,
    amd64::msr::kTscAux};

uint64_t* MarshalledMsrField(amd64::Registers& r, int i) {
  uint64_t* fields[kMarshalledMsrCount] = {&r.efer,         &r.star,         &r.lstar,
                                           &r.cstar,        &r.sfmask,       &r.sysenter_cs,
                                           &r.sysenter_esp, &r.sysenter_eip, &r.kernel_gs_base,
                                           &r.tsc_aux};
  return fields[i];
}

}  // namespace sim_internal

using sim_internal::kMarshalledMsrCount;
using sim_internal::kMarshalledMsrs;
using sim_internal::QemuStateHead;
using sim_internal::SetReg;
using sim_internal::UcError;
using sim_internal::WriteMsr;

absl::StatusOr<amd64::Registers> Machine::GetRegisters(VcpuId vcpu) {
  VMI_RETURN_IF_ERROR(impl_->CheckVcpu("get_registers", vcpu));
  Vcpu& v = *impl_->vcpus[vcpu.value()];
  // One copy of the CPU state for everything it holds verbatim.
  VMI_ASSIGN_OR_RETURN(CpuContext * ctx, impl_->SaveScratch(v));
  amd64::Registers r;
  sim_internal::RegistersFromHead(ctx->head(), &r);
  // The rest through the API, in one call: RFLAGS is computed from QEMU's
  // lazy flags, the MSRs live outside the head.
  uc_x86_msr msrs[kMarshalledMsrCount];
  for (int i = 0; i < kMarshalledMsrCount; ++i) msrs[i] = uc_x86_msr{kMarshalledMsrs[i], 0};
  int ids[7 + kMarshalledMsrCount] = {UC_X86_REG_RFLAGS, UC_X86_REG_DR0, UC_X86_REG_DR1,
                                      UC_X86_REG_DR2,    UC_X86_REG_DR3, UC_X86_REG_DR6,
                                      UC_X86_REG_DR7};
  void* vals[7 + kMarshalledMsrCount] = {&r.rflags, &r.dr0, &r.dr1, &r.dr2, &r.dr3, &r.dr6, &r.dr7};
  for (int i = 0; i < kMarshalledMsrCount; ++i) {
    ids[7 + i] = UC_X86_REG_MSR;
    vals[7 + i] = &msrs[i];
  }
  if (uc_err e = uc_reg_read_batch(v.uc, ids, vals, 7 + kMarshalledMsrCount); e != UC_ERR_OK) {
    return UcError(absl::StrFormat("get_registers(vcpu=%s): uc_reg_read_batch", vcpu), e);
  }
  for (int i = 0; i < kMarshalledMsrCount; ++i) {
    *sim_internal::MarshalledMsrField(r, i) = msrs[i].value;
  }
  return r;
}

absl::Status Machine::SetGpRegisters(VcpuId vcpu, const amd64::GpRegisters& g) {
  VMI_RETURN_IF_ERROR(impl_->CheckVcpu("set_registers", vcpu));
  uc_engine* uc = impl_->vcpus[vcpu.value()]->uc;
  int ids[] = {UC_X86_REG_RAX, UC_X86_REG_RBX, UC_X86_REG_RCX,    UC_X86_REG_RDX, UC_X86_REG_RSI,
               UC_X86_REG_RDI, UC_X86_REG_RBP, UC_X86_REG_RSP,    UC_X86_REG_R8,  UC_X86_REG_R9,
               UC_X86_REG_R10, UC_X86_REG_R11, UC_X86_REG_R12,    UC_X86_REG_R13, UC_X86_REG_R14,
               UC_X86_REG_R15, UC_X86_REG_RFLAGS, UC_X86_REG_RIP};
  const uint64_t* values[] = {&g.rax, &g.rbx, &g.rcx, &g.rdx, &g.rsi, &g.rdi,
                              &g.rbp, &g.rsp, &g.r8,  &g.r9,  &g.r10, &g.r11,
                              &g.r12, &g.r13, &g.r14, &g.r15, &g.rflags, &g.rip};
  static_assert(std::size(ids) == std::size(values));
  void* const* vals = const_cast<void* const*>(reinterpret_cast<const void* const*>(values));
  if (uc_err e = uc_reg_write_batch(uc, ids, vals, static_cast<int>(std::size(ids)));
      e != UC_ERR_OK) {
    return UcError(absl::StrFormat("set_registers(vcpu=%s): uc_reg_write_batch", vcpu), e);
  }
  return absl::OkStatus();
}

absl::Status Machine::SetRegisters(VcpuId vcpu, const amd64::Registers& r) {
  VMI_RETURN_IF_ERROR(impl_->CheckVcpu("set_registers", vcpu));
  uc_engine* uc = impl_->vcpus[vcpu.value()]->uc;
  // Control state first so the segment loads below see the final mode.
  WriteMsr(uc, amd64::msr::kEfer, r.efer);
  SetReg(uc, UC_X86_REG_CR4, r.cr4);
  SetReg(uc, UC_X86_REG_CR2, r.cr2);  // before CR3: see WriteCr2
  SetReg(uc, UC_X86_REG_CR3, r.cr3);
  SetReg(uc, UC_X86_REG_CR0, r.cr0);
  {
    VMI_ASSIGN_OR_RETURN(CpuContext ctx, CpuContext::Save(uc));
    QemuStateHead& h = ctx.head();
    h.gdt.base = r.gdtr.base;
    h.gdt.limit = r.gdtr.limit;
    h.idt.base = r.idtr.base;
    h.idt.limit = r.idtr.limit;
    auto load = [&](int seg, const amd64::Segment& s) {
      ctx.LoadSegment(seg, s.selector, s.base, s.limit, sim_internal::QemuFlagsOf(s));
    };
    load(sim_internal::kSegCs, r.cs);
    load(sim_internal::kSegSs, r.ss);
    load(sim_internal::kSegDs, r.ds);
    load(sim_internal::kSegEs, r.es);
    load(sim_internal::kSegFs, r.fs);
    load(sim_internal::kSegGs, r.gs);
    h.tr = sim_internal::QemuSegment{r.tr.selector, 0, r.tr.base, r.tr.limit,
                                     sim_internal::QemuFlagsOf(r.tr)};
    h.ldt = sim_internal::QemuSegment{r.ldtr.selector, 0, r.ldtr.base, r.ldtr.limit,
                                      sim_internal::QemuFlagsOf(r.ldtr)};
    VMI_RETURN_IF_ERROR(ctx.Restore(uc));
  }
  SetReg(uc, UC_X86_REG_DR0, r.dr0);
  SetReg(uc, UC_X86_REG_DR1, r.dr1);
  SetReg(uc, UC_X86_REG_DR2, r.dr2);
  SetReg(uc, UC_X86_REG_DR3, r.dr3);
  SetReg(uc, UC_X86_REG_DR6, r.dr6);
  SetReg(uc, UC_X86_REG_DR7, r.dr7);
  amd64::Registers copy = r;
  for (int i = 1; i < kMarshalledMsrCount; ++i) {  // EFER went first
    WriteMsr(uc, kMarshalledMsrs[i], *sim_internal::MarshalledMsrField(copy, i));
  }
  SetReg(uc, UC_X86_REG_FS_BASE, r.fs_base);
  SetReg(uc, UC_X86_REG_GS_BASE, r.gs_base);
  impl_->vcpus[vcpu.value()]->active->tlb_dirty = true;
  return SetGpRegisters(vcpu, r.gp());
}

absl::Status Machine::LoadSegmentFromGdt(VcpuId vcpu, int segment, uint16_t selector) {
  VMI_RETURN_IF_ERROR(impl_->CheckVcpu("load_segment", vcpu));
  if (segment < 0 || segment > 5) {
    return absl::InvalidArgumentError(
        absl::StrFormat("load_segment(vcpu=%s, segment=%d): segment must be 0..5", vcpu, segment));
  }
  Vcpu& v = *impl_->vcpus[vcpu.value()];
  // A null selector: no descriptor, only its RPL as the DPL.
  sim_internal::SegmentDescriptor d;
  d.flags = amd64::SegmentAccess((selector & 3u) << 5).ToDescriptorFlags();
  if ((selector & ~3u) != 0) {
    VMI_ASSIGN_OR_RETURN(uint64_t desc, impl_->GdtDescriptor(v, selector));
    d = sim_internal::DecodeSegmentDescriptor(desc);
    if (!amd64::SegmentAccess::FromDescriptorFlags(d.flags).present()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "load_segment(vcpu=%s, selector=0x%x): descriptor not present", vcpu, selector));
    }
  }
  VMI_ASSIGN_OR_RETURN(CpuContext ctx, CpuContext::Save(v.uc));
  ctx.LoadSegment(segment, selector, d.base, d.limit, d.flags);
  return ctx.Restore(v.uc);
}

}  // namespace vmi::sim
