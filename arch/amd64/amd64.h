// Amd64: the x86-64 architecture as the core's Architecture concept sees it.
// Every driver is instantiated with it.
//
// Thread-safety: stateless; thread-safe.

#ifndef VMI_ARCH_AMD64_AMD64_H_
#define VMI_ARCH_AMD64_AMD64_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "arch/amd64/bitfields.h"
#include "arch/amd64/events.h"
#include "arch/amd64/interrupt.h"
#include "arch/amd64/paging.h"
#include "arch/amd64/registers.h"
#include "core/address_context.h"
#include "core/architecture.h"
#include "core/types.h"

namespace vmi {

struct Amd64 {
  using Registers = amd64::Registers;
  using GpRegisters = amd64::GpRegisters;
  using EventReason = amd64::EventReason;
  using EventMonitor = amd64::EventMonitor;
  using Interrupt = amd64::Interrupt;
  using PagingMode = amd64::PagingMode;
  using Walk = amd64::Walk;

  static constexpr uint64_t kPageSize = 4096;
  static constexpr unsigned kPageShift = 12;
  static constexpr PagingMode kDefaultPagingMode = PagingMode::FourLevel();

  static Gfn GfnFromPa(Pa pa) { return Gfn(pa.value() >> kPageShift); }
  static Pa PaFromGfn(Gfn gfn) { return Pa(gfn.value() << kPageShift); }
  static uint64_t PageOffset(uint64_t address) { return address & (kPageSize - 1); }

  // The paging mode the vCPU is in, from CR0.PG, CR4.PAE/PSE/LA57 and
  // EFER.LMA/NXE.
  static PagingMode PagingModeOf(const Registers& regs) {
    const amd64::Cr0 cr0(regs.cr0);
    const amd64::Cr4 cr4(regs.cr4);
    const amd64::Efer efer(regs.efer);
    if (!cr0.Has(amd64::Cr0::kPg)) return PagingMode::Disabled();
    const bool nxe = efer.Has(amd64::Efer::kNxe);
    if (efer.Has(amd64::Efer::kLma)) {
      return cr4.Has(amd64::Cr4::kLa57) ? PagingMode::FiveLevel(nxe) : PagingMode::FourLevel(nxe);
    }
    if (cr4.Has(amd64::Cr4::kPae)) return PagingMode::Pae(nxe);
    return PagingMode::Legacy32(cr4.Has(amd64::Cr4::kPse));
  }

  // The table address in CR3, with PCID and flag bits masked for the mode.
  static Pa TranslationRoot(const Registers& regs) {
    return PagingModeOf(regs).RootFromCr3(regs.cr3);
  }
  static Va InstructionPointer(const Registers& regs) { return amd64::InstructionPointer(regs); }
  static Va StackPointer(const Registers& regs) { return amd64::StackPointer(regs); }
  // Pointer width in bytes: 8 in long mode, 4 otherwise.
  static int AddressWidth(const Registers& regs) { return amd64::AddressWidth(regs); }

  template <PageReader R>
  static FaultOr<PageTranslation> Translate(R& reader, AddressContext ctx,
                                            PagingMode mode = kDefaultPagingMode) {
    return amd64::TranslatePage(reader, ctx, mode);
  }
  template <PageReader R>
  static FaultStatus TranslateInto(R& reader, AddressContext ctx, PagingMode mode,
                                   PageTranslation& translation) {
    return amd64::TranslateInto(reader, ctx, mode, translation);
  }
  template <PageReader R>
  static absl::StatusOr<Walk> WalkPage(R& reader, AddressContext ctx,
                                       PagingMode mode = kDefaultPagingMode) {
    return amd64::WalkPage(reader, ctx, mode);
  }
};

static_assert(Architecture<Amd64>);

}  // namespace vmi

#endif  // VMI_ARCH_AMD64_AMD64_H_
