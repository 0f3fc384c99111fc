#include "sim/internal/delivery.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"
#include "arch/amd64/bitfields.h"
#include "arch/amd64/events.h"
#include "arch/amd64/interrupt.h"
#include "core/error.h"
#include "sim/internal/machine_state.h"

namespace vmi::sim {
namespace sim_internal {
namespace {

using amd64::Efer;
using amd64::IdtGate;
using amd64::Rflags;
using amd64::SegmentAccess;

// The descriptor flags of segment access rights (AR-byte layout).
constexpr uint32_t Flags(uint32_t access) { return SegmentAccess(access).ToDescriptorFlags(); }

// A data segment's flags holding only a DPL (a null SS after a privilege
// change keeps the new CPL there).
constexpr uint32_t DplFlags(uint32_t dpl) { return Flags(dpl << 5); }

}  // namespace

SegmentDescriptor DecodeSegmentDescriptor(uint64_t desc) {
  const uint32_t lo = static_cast<uint32_t>(desc), hi = static_cast<uint32_t>(desc >> 32);
  SegmentDescriptor d;
  d.base = (lo >> 16) | ((hi & 0xff) << 16) | (hi & 0xff000000u);
  d.limit = (lo & 0xffff) | (hi & 0xf0000);
  if (SegmentAccess::FromDescriptorFlags(hi).g()) d.limit = (d.limit << 12) | 0xfff;
  d.flags = hi & 0x00ffff00u;
  return d;
}

absl::StatusOr<DeliveryPlan> PlanDelivery(const DeliveryState& s, uint8_t vector,
                                          std::optional<uint32_t> error_code, LinearReader read,
                                          absl::string_view op) {
  if (static_cast<uint64_t>(vector) * IdtGate::kSize + IdtGate::kSize - 1 > s.idtr.limit) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: beyond IDT limit 0x%x (guest would triple-fault)", op, s.idtr.limit));
  }
  uint8_t bytes[IdtGate::kSize];
  if (!read(s.idtr.base + vector * uint64_t{IdtGate::kSize}, bytes, sizeof(bytes))) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s: IDT at 0x%x not mapped (guest would triple-fault)", op, s.idtr.base));
  }
  const IdtGate gate = IdtGate::Decode(bytes);
  if (!gate.present) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s: IDT gate not present (guest would triple-fault)", op));
  }
  // The handler's code segment.
  const uint64_t index = gate.selector & ~7u;
  if (index == 0 || index + 7 > s.gdtr.limit) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s: gate selector 0x%x not in GDT", op, gate.selector));
  }
  uint64_t raw = 0;
  if (!read(s.gdtr.base + index, &raw, sizeof(raw))) {
    return absl::FailedPreconditionError(absl::StrFormat("%s: GDT not mapped", op));
  }
  DeliveryPlan plan;
  plan.cs_descriptor = DecodeSegmentDescriptor(raw);
  const uint32_t dpl = SegmentAccess::FromDescriptorFlags(plan.cs_descriptor.flags).dpl();

  uint64_t rsp = s.rsp;
  if (gate.ist != 0 || dpl < s.cpl) {
    const uint64_t slot = gate.ist != 0 ? kTssIst1 + (gate.ist - 1) * 8ull : kTssRsp0 + dpl * 8ull;
    if (!read(s.tr_base + slot, &rsp, sizeof(rsp))) {
      return absl::FailedPreconditionError(
          absl::StrFormat("%s: TSS at 0x%x not mapped", op, s.tr_base));
    }
  }
  rsp &= ~0xfull;
  if (error_code.has_value()) plan.frame.push_back(*error_code);
  plan.frame.push_back(s.return_rip);
  plan.frame.push_back(s.cs);
  plan.frame.push_back(s.rflags);
  plan.frame.push_back(s.rsp);
  plan.frame.push_back(s.ss);
  plan.rsp = rsp - plan.frame.size() * 8;
  if (dpl < s.cpl) {
    plan.ss = static_cast<uint16_t>(dpl);
    plan.ss_flags = DplFlags(dpl);
  }
  plan.cs = static_cast<uint16_t>((gate.selector & ~3u) | dpl);
  plan.rip = gate.offset;
  plan.rflags = s.rflags & ~(Rflags::kTf | Rflags::kNt | Rflags::kRf | Rflags::kVm);
  if (gate.is_interrupt_gate()) plan.rflags &= ~Rflags::kIf;
  return plan;
}

SyscallPlan PlanSyscall(uint64_t efer, uint64_t star, uint64_t lstar, uint64_t fmask,
                        uint64_t next_rip, uint64_t rflags) {
  SyscallPlan plan;
  if (!Efer(efer).sce()) {
    plan.invalid_opcode = true;
    return plan;
  }
  plan.cs = static_cast<uint16_t>((star >> 32) & 0xfffc);
  plan.ss = static_cast<uint16_t>(plan.cs + 8);
  // Flat 64-bit code (type execute/read, accessed) and data (read/write,
  // accessed) segments, as SYSCALL loads them.
  plan.cs_flags = Flags(0xb | SegmentAccess::kS | SegmentAccess::kPresent | SegmentAccess::kL |
                        SegmentAccess::kG);
  plan.ss_flags = Flags(0x3 | SegmentAccess::kS | SegmentAccess::kPresent | SegmentAccess::kDb |
                        SegmentAccess::kG);
  plan.rcx = next_rip;
  plan.r11 = rflags;
  plan.rflags = rflags & ~fmask & ~Rflags::kRf;
  plan.rip = lstar;
  return plan;
}

}  // namespace sim_internal

using sim_internal::kHfCplMask;
using sim_internal::kSegCs;
using sim_internal::kSegSs;
using sim_internal::QemuStateHead;
using sim_internal::Reg;
using sim_internal::SetReg;

absl::StatusOr<uint64_t> Machine::Impl::GdtDescriptor(Vcpu& v, uint16_t selector) {
  VMI_ASSIGN_OR_RETURN(CpuContext ctx, CpuContext::Save(v.uc));
  const QemuStateHead& h = ctx.head();
  const uint64_t index = selector & ~7u;
  if (selector & 4) {
    return absl::UnimplementedError(absl::StrFormat(
        "load_segment(vcpu=%u, selector=0x%x): LDT selectors not supported", v.index, selector));
  }
  if (index + 7 > h.gdt.limit) {
    return absl::OutOfRangeError(
        absl::StrFormat("load_segment(vcpu=%u, selector=0x%x): beyond GDT limit 0x%x", v.index,
                        selector, h.gdt.limit));
  }
  uint64_t desc;
  if (!ReadVirt(v, h.gdt.base + index, reinterpret_cast<uint8_t*>(&desc), 8)) {
    return absl::FailedPreconditionError(
        absl::StrFormat("load_segment(vcpu=%u, selector=0x%x): GDT at 0x%x not mapped", v.index,
                        selector, h.gdt.base));
  }
  return desc;
}

absl::Status Machine::Impl::Deliver(Vcpu& v, uint8_t vector, std::optional<uint32_t> error_code,
                                    uint64_t return_rip) {
  const std::string op = absl::StrFormat("deliver_interrupt(vcpu=%u, vector=%u)", v.index, vector);
  VMI_ASSIGN_OR_RETURN(CpuContext ctx, CpuContext::Save(v.uc));
  ctx.clear_exception_in_flight();
  QemuStateHead& h = ctx.head();
  sim_internal::DeliveryState state;
  state.return_rip = return_rip;
  state.rflags = Reg(v.uc, UC_X86_REG_RFLAGS);
  state.rsp = h.regs[4];
  state.cs = static_cast<uint16_t>(h.segs[kSegCs].selector);
  state.ss = static_cast<uint16_t>(h.segs[kSegSs].selector);
  state.cpl = h.hflags & kHfCplMask;
  state.idtr = amd64::DescriptorTable{h.idt.base, static_cast<uint16_t>(h.idt.limit)};
  state.gdtr = amd64::DescriptorTable{h.gdt.base, static_cast<uint16_t>(h.gdt.limit)};
  state.tr_base = h.tr.base;
  VMI_ASSIGN_OR_RETURN(
      const sim_internal::DeliveryPlan plan,
      sim_internal::PlanDelivery(
          state, vector, error_code,
          [&](uint64_t va, void* out, size_t n) {
            return ReadVirt(v, va, static_cast<uint8_t*>(out), n);
          },
          op));
  if (!WriteVirt(v, plan.rsp, reinterpret_cast<const uint8_t*>(plan.frame.data()),
                 plan.frame.size() * 8)) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s: stack at 0x%x not mapped (guest would triple-fault)", op, plan.rsp));
  }
  if (plan.ss) ctx.LoadSegment(kSegSs, *plan.ss, 0, 0, plan.ss_flags);
  ctx.LoadSegment(kSegCs, plan.cs, plan.cs_descriptor.base, plan.cs_descriptor.limit,
                  plan.cs_descriptor.flags);
  h.regs[4] = plan.rsp;
  h.eip = plan.rip;
  VMI_RETURN_IF_ERROR(ctx.Restore(v.uc));
  SetReg(v.uc, UC_X86_REG_RFLAGS, plan.rflags);
  SetReg(v.uc, UC_X86_REG_RSP, plan.rsp);
  SetReg(v.uc, UC_X86_REG_RIP, plan.rip);
  v.book.halted = false;
  // The frame was written by the host: this engine's translated code is not
  // invalidated for it (a stack is assumed to hold no code); other engines'
  // is, through their recorded code frames.
  return absl::OkStatus();
}

absl::StatusOr<CpuContext*> Machine::Impl::SaveScratch(Vcpu& v) {
  if (v.scratch.has_value()) {
    VMI_RETURN_IF_ERROR(v.scratch->Resave(v.uc));
  } else {
    VMI_ASSIGN_OR_RETURN(CpuContext ctx, CpuContext::Save(v.uc));
    v.scratch.emplace(std::move(ctx));
  }
  return &*v.scratch;
}

absl::Status Machine::Impl::EmulateSyscall(Vcpu& v) {
  using sim_internal::ReadMsr;
  const sim_internal::SyscallPlan plan = sim_internal::PlanSyscall(
      ReadMsr(v.uc, amd64::msr::kEfer), ReadMsr(v.uc, amd64::msr::kStar),
      ReadMsr(v.uc, amd64::msr::kLstar), ReadMsr(v.uc, amd64::msr::kSfmask),
      Reg(v.uc, UC_X86_REG_RIP), Reg(v.uc, UC_X86_REG_RFLAGS));
  if (plan.invalid_opcode) {
    return Deliver(v, amd64::exception::kInvalidOpcode, std::nullopt, Reg(v.uc, UC_X86_REG_RIP) - 2);
  }
  VMI_ASSIGN_OR_RETURN(CpuContext ctx, CpuContext::Save(v.uc));
  ctx.LoadSegment(kSegCs, plan.cs, 0, 0xffffffff, plan.cs_flags);
  ctx.LoadSegment(kSegSs, plan.ss, 0, 0xffffffff, plan.ss_flags);
  VMI_RETURN_IF_ERROR(ctx.Restore(v.uc));
  SetReg(v.uc, UC_X86_REG_RCX, plan.rcx);
  SetReg(v.uc, UC_X86_REG_R11, plan.r11);
  SetReg(v.uc, UC_X86_REG_RFLAGS, plan.rflags);
  SetReg(v.uc, UC_X86_REG_RIP, plan.rip);
  return absl::OkStatus();
}

}  // namespace vmi::sim
