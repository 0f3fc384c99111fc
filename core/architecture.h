// The Architecture concept: what an instruction-set architecture must provide
// for the core and the drivers to be instantiated with it (x86-64 is
// arch/amd64). Also the PageReader concept the architecture's page walk is
// templated on, so that a page cache, a test fixture or a driver can stand
// behind the same walk.
//
// Thread-safety: concepts and plain values only.

#ifndef VMI_CORE_ARCHITECTURE_H_
#define VMI_CORE_ARCHITECTURE_H_

#include <array>
#include <concepts>
#include <cstdint>
#include <type_traits>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/address_context.h"
#include "core/error.h"
#include "core/types.h"

namespace vmi {

// Anything that reads a guest page by frame number. The result is a
// StatusOr of something with data()/size() (a MappedPage, or a Span into a
// cache); the page walk copies what it needs from it at once.
template <typename R>
concept PageReader = requires(R& reader, Gfn gfn) {
  { reader.ReadPage(gfn).ok() } -> std::convertible_to<bool>;
  { reader.ReadPage(gfn)->data() } -> std::convertible_to<const uint8_t*>;
  { reader.ReadPage(gfn)->size() } -> std::convertible_to<size_t>;
};

// Effective guest page-table permissions of a translation (not to be confused
// with the second-level MemoryAccess).
struct PagePermissions {
  bool write = false;
  bool user = false;
  bool execute = false;
  friend bool operator==(const PagePermissions&, const PagePermissions&) = default;
};

// The result of translating one virtual address: what the V2P cache stores.
// A failed walk fills table_gfns and levels as far as it got (the V2P cache
// keeps those for a cached failure).
struct PageTranslation {
  static constexpr int kMaxLevels = 5;

  Pa pa;                  // the translated address
  uint64_t page_size = 0; // size of the (possibly large) page mapping it
  PagePermissions permissions;
  // Frames of the page tables the walk read, root first: a write to any of
  // them invalidates this translation.
  std::array<Gfn, kMaxLevels> table_gfns{};
  uint8_t levels = 0;

  Pa page_base() const { return Pa(pa.value() & ~(page_size - 1)); }
};

namespace core_internal {
// A minimal PageReader used only to check the Architecture concept.
struct PageReaderArchetype {
  absl::StatusOr<absl::Span<const uint8_t>> ReadPage(Gfn);
};
}  // namespace core_internal

template <typename A>
concept Architecture = requires {
  typename A::Registers;
  typename A::GpRegisters;
  typename A::EventReason;
  typename A::EventMonitor;
  typename A::Interrupt;
  typename A::Walk;  // the per-level walk record returned by A::WalkPage
  // How virtual addresses are translated (x86: 32-bit, PAE, 4- or 5-level).
  // The root alone does not say; it comes from the registers.
  typename A::PagingMode;
  { A::kDefaultPagingMode } -> std::convertible_to<typename A::PagingMode>;
  { A::kPageSize } -> std::convertible_to<uint64_t>;
  { A::kPageShift } -> std::convertible_to<unsigned>;
} && std::is_trivially_copyable_v<typename A::Registers> &&
    std::is_trivially_copyable_v<typename A::GpRegisters> &&
    requires(Pa pa, Gfn gfn, Va va, const typename A::Registers& regs,
             core_internal::PageReaderArchetype& reader, AddressContext ctx,
             typename A::PagingMode mode, PageTranslation& translation) {
  { A::GfnFromPa(pa) } -> std::same_as<Gfn>;
  { A::PaFromGfn(gfn) } -> std::same_as<Pa>;
  { A::PageOffset(va.value()) } -> std::same_as<uint64_t>;
  { A::TranslationRoot(regs) } -> std::same_as<Pa>;
  { A::InstructionPointer(regs) } -> std::same_as<Va>;
  { A::StackPointer(regs) } -> std::same_as<Va>;
  { A::PagingModeOf(regs) } -> std::same_as<typename A::PagingMode>;
  // The hot-path walk: fills `translation` and returns OK, or returns why it
  // failed as a compact fault (no message built) or, when the reader fails,
  // the reader's status. Table frames read are recorded either way.
  { A::TranslateInto(reader, ctx, mode, translation) } -> std::same_as<FaultStatus>;
  { A::WalkPage(reader, ctx, mode) } -> std::same_as<absl::StatusOr<typename A::Walk>>;
};

}  // namespace vmi

#endif  // VMI_CORE_ARCHITECTURE_H_
