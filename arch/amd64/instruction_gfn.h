// The guest frame of the instruction at RIP, as the vCPU's own page tables
// translate an instruction fetch there: what Xen puts in the gfn of
// software-breakpoint and single-step vm_event requests (its gfn_of_rip), and
// what drivers report as InterruptEvent / SingleStepEvent::instruction_gfn.
//
// Like Xen's walk, the fetch is checked as the CPU would check it: the linear
// address is CS.base + RIP outside 64-bit mode; NX (when EFER.NXE), U/S at
// CPL 3 (IsUserMode) and SMEP below CPL 3 make it fail, as do a missing or malformed entry
// and a table the reader cannot supply. The reader supplies guest frames as
// the guest put them (no view remaps), so with a view that remaps the code
// frame the result is still the guest's frame.
//
// Thread-safety: stateless; thread-safe if the reader is.

#ifndef VMI_ARCH_AMD64_INSTRUCTION_GFN_H_
#define VMI_ARCH_AMD64_INSTRUCTION_GFN_H_

#include <cstdint>
#include <optional>

#include "arch/amd64/amd64.h"
#include "arch/amd64/bitfields.h"
#include "arch/amd64/paging.h"
#include "arch/amd64/registers.h"
#include "core/address_context.h"
#include "core/architecture.h"
#include "core/types.h"

namespace vmi::amd64 {

// The linear address of the instruction at RIP.
inline Va InstructionLinearAddress(const Registers& regs) {
  if (EffectiveAddressWidth(regs) == 8) return Va(regs.rip);
  return Va((regs.cs.base + regs.rip) & 0xffffffffull);
}

// Empty when an instruction fetch at RIP would fault (see the file comment).
template <PageReader R>
std::optional<Gfn> InstructionGfn(R& reader, const Registers& regs) {
  const PagingMode mode = Amd64::PagingModeOf(regs);
  PageTranslation t;
  const AddressContext ctx(InstructionLinearAddress(regs), mode.RootFromCr3(regs.cr3));
  if (!TranslateInto(reader, ctx, mode, t).ok()) return std::nullopt;
  if (mode.kind != PagingMode::Kind::kDisabled) {
    if (!t.permissions.execute) return std::nullopt;  // NX (only computed when EFER.NXE)
    if (IsUserMode(regs)) {
      if (!t.permissions.user) return std::nullopt;
    } else if (t.permissions.user && Cr4(regs.cr4).smep()) {
      return std::nullopt;
    }
  }
  return Amd64::GfnFromPa(t.pa);
}

}  // namespace vmi::amd64

#endif  // VMI_ARCH_AMD64_INSTRUCTION_GFN_H_
