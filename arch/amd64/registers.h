// The x86-64 vCPU register set as VMI sees it, and the general-purpose subset
// an event response may set.
//
// Thread-safety: plain values; thread-compatible.

#ifndef VMI_ARCH_AMD64_REGISTERS_H_
#define VMI_ARCH_AMD64_REGISTERS_H_

#include <cstdint>
#include <string>
#include <type_traits>

#include "core/types.h"

namespace vmi::amd64 {

// A segment register with its hidden descriptor part. `access` holds the
// access-rights byte and flags in the VMX "AR bytes" layout: bits 0-3 type,
// 4 S, 5-6 DPL, 7 P, 12 AVL, 13 L, 14 D/B, 15 G (see SegmentAccess).
struct Segment {
  uint16_t selector = 0;
  uint64_t base = 0;
  uint32_t limit = 0;
  uint16_t access = 0;
  friend bool operator==(const Segment&, const Segment&) = default;
};

// GDTR / IDTR.
struct DescriptorTable {
  uint64_t base = 0;
  uint16_t limit = 0;
  friend bool operator==(const DescriptorTable&, const DescriptorTable&) = default;
};

// What an event response may set: the 16 GPRs, RIP and RFLAGS.
struct GpRegisters {
  uint64_t rax = 0, rbx = 0, rcx = 0, rdx = 0, rsi = 0, rdi = 0, rbp = 0, rsp = 0;
  uint64_t r8 = 0, r9 = 0, r10 = 0, r11 = 0, r12 = 0, r13 = 0, r14 = 0, r15 = 0;
  uint64_t rip = 0, rflags = 0;
  friend bool operator==(const GpRegisters&, const GpRegisters&) = default;
};

struct Registers {
  uint64_t rax = 0, rbx = 0, rcx = 0, rdx = 0, rsi = 0, rdi = 0, rbp = 0, rsp = 0;
  uint64_t r8 = 0, r9 = 0, r10 = 0, r11 = 0, r12 = 0, r13 = 0, r14 = 0, r15 = 0;
  uint64_t rip = 0, rflags = 0;

  uint64_t cr0 = 0, cr2 = 0, cr3 = 0, cr4 = 0, xcr0 = 0;
  uint64_t dr0 = 0, dr1 = 0, dr2 = 0, dr3 = 0, dr6 = 0, dr7 = 0;

  uint64_t efer = 0;
  uint64_t star = 0, lstar = 0, cstar = 0, sfmask = 0;
  uint64_t sysenter_cs = 0, sysenter_esp = 0, sysenter_eip = 0;
  uint64_t fs_base = 0, gs_base = 0, kernel_gs_base = 0;
  uint64_t tsc_aux = 0;

  Segment cs, ds, es, fs, gs, ss, tr, ldtr;
  DescriptorTable gdtr, idtr;

  friend bool operator==(const Registers&, const Registers&) = default;

  GpRegisters gp() const {
    return {rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8,
            r9,  r10, r11, r12, r13, r14, r15, rip, rflags};
  }
  void set_gp(const GpRegisters& g) {
    rax = g.rax, rbx = g.rbx, rcx = g.rcx, rdx = g.rdx, rsi = g.rsi, rdi = g.rdi;
    rbp = g.rbp, rsp = g.rsp, r8 = g.r8, r9 = g.r9, r10 = g.r10, r11 = g.r11;
    r12 = g.r12, r13 = g.r13, r14 = g.r14, r15 = g.r15, rip = g.rip, rflags = g.rflags;
  }
};

static_assert(std::is_trivially_copyable_v<Registers>);
static_assert(std::is_trivially_copyable_v<GpRegisters>);

// RIP, RSP and RBP as addresses.
Va InstructionPointer(const Registers& regs);
Va StackPointer(const Registers& regs);
Va FramePointer(const Registers& regs);
// RAX, where the System V and Windows x64 ABIs put a function's result.
uint64_t ReturnValue(const Registers& regs);

// Width in bytes of a guest pointer in kernel data structures: 8 when
// EFER.LMA (long mode), else 4.
int AddressWidth(const Registers& regs);
// Width in bytes of addresses the current code uses: 8 in 64-bit mode
// (EFER.LMA and CS.L), 4 in compatibility mode and legacy modes.
int EffectiveAddressWidth(const Registers& regs);
// True when the vCPU runs user code: CS's RPL or its DPL is 3.
bool IsUserMode(const Registers& regs);

// A readable multi-line dump of every register, with control registers,
// EFER, RFLAGS and segment attributes decoded by flag name. Each line ends in
// a newline.
std::string FormatRegisters(const Registers& regs);

}  // namespace vmi::amd64

#endif  // VMI_ARCH_AMD64_REGISTERS_H_
