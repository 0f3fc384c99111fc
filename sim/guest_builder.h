// Builds a long-mode guest inside a Machine: a bump frame allocator, address
// spaces with real page tables in guest RAM (4- or 5-level, 4K/2M/1G pages,
// W/U/NX), the GDT (64-bit kernel and user segments, one TSS per vCPU), an IDT
// whose handlers are guest code, per-vCPU stacks, and the long-mode entry
// state of each vCPU.
//
// Segment layout (Linux-compatible, so SYSCALL/SYSRET work with
// STAR = kStarValue): 0x10 kernel code64, 0x18 kernel data, 0x23 user
// code32, 0x2b user data, 0x33 user code64, 0x40 + 16*i TSS of vCPU i.
//
// Thread-safety: thread-compatible; uses the Machine it was given.

#ifndef VMI_SIM_GUEST_BUILDER_H_
#define VMI_SIM_GUEST_BUILDER_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/types.h"
#include "sim/machine.h"

namespace vmi::sim {

// Leaf permissions for AddressSpace::Map (present is implied).
namespace page_flags {
inline constexpr uint32_t kWritable = 1;
inline constexpr uint32_t kUser = 2;
inline constexpr uint32_t kNoExecute = 4;
}  // namespace page_flags

enum class PageSize : uint64_t { k4K = 1ull << 12, k2M = 1ull << 21, k1G = 1ull << 30 };

inline constexpr uint16_t kKernelCs = 0x10, kKernelSs = 0x18, kUserCs32 = 0x23, kUserDs = 0x2b,
                          kUserCs = 0x33, kFirstTss = 0x40;
inline constexpr uint64_t kStarValue = (uint64_t{0x23} << 48) | (uint64_t{kKernelCs} << 32);

// Where the builder puts the system tables in every address space it maps
// them into: GDT, IDT, then the TSS page.
inline constexpr uint64_t kSystemTablesVa = 0xfffffe0000000000ull;

class GuestBuilder;

class AddressSpace {
 public:
  Pa root() const { return root_; }
  int levels() const { return levels_; }
  // CR3 value for this space.
  uint64_t cr3() const { return root_.value(); }

  // Maps [va, va+size) to [pa, pa+size) with pages of `page_size`; va, pa and
  // size must be aligned to it. Overlapping an existing mapping is an error.
  absl::Status Map(Va va, Pa pa, uint64_t size, uint32_t flags, PageSize page_size = PageSize::k4K);
  // The page-table page (level 1) covering `va`, created if missing: what a
  // guest demand-paging handler edits.
  absl::StatusOr<Pa> PageTableFor(Va va);
  // Software walk of this space (no A/D updates).
  absl::StatusOr<Pa> Translate(Va va) const;

 private:
  friend class GuestBuilder;
  AddressSpace(GuestBuilder* builder, Pa root, int levels)
      : builder_(builder), root_(root), levels_(levels) {}
  absl::StatusOr<uint64_t*> Entry(uint64_t table_pa, uint64_t index);
  absl::Status MapOne(uint64_t va, uint64_t pa, uint32_t flags, PageSize size);

  GuestBuilder* builder_;
  Pa root_;
  int levels_;
};

class GuestBuilder {
 public:
  // Allocates frames from `first_free` upwards (frame 0 is never handed out).
  explicit GuestBuilder(Machine* machine, Gfn first_free = Gfn(0x10));

  Machine& machine() { return *machine_; }

  // A zeroed frame.
  absl::StatusOr<Gfn> AllocateFrame();
  // `count` zeroed, contiguous frames, the first aligned to `align` bytes.
  absl::StatusOr<Pa> AllocateFrames(uint64_t count, uint64_t align = 4096);

  absl::StatusOr<AddressSpace*> CreateAddressSpace(int levels = 4);

  // Creates GDT, IDT and TSSs (once) and maps them at kSystemTablesVa in `as`.
  absl::Status MapSystemTables(AddressSpace& as);
  // A 64-bit interrupt gate (type 0xE) to `handler` in kernel CS.
  absl::Status SetInterruptGate(uint8_t vector, Va handler, uint8_t ist = 0, uint8_t dpl = 0);
  Va gdt_va() const { return Va(kSystemTablesVa); }
  Va idt_va() const { return Va(kSystemTablesVa + 0x1000); }

  // Maps `pages` fresh RW NX frames ending at `top` in `as`; returns `top`.
  absl::StatusOr<Va> MapStack(AddressSpace& as, Va top, uint64_t pages);

  // Long-mode state for `vcpu`: CR0.PG|PE|WP, CR4.PAE (+LA57 for 5-level),
  // EFER.LME|LMA|NXE|SCE, kernel CS/SS/DS/ES, GDTR/IDTR/TR, STAR, RIP, RSP,
  // RFLAGS=0x2, TSS.RSP0 = `kernel_stack_top` (defaults to `rsp`).
  absl::Status StartVcpu(VcpuId vcpu, const AddressSpace& as, Va rip, Va rsp,
                         Va kernel_stack_top = Va(0));

 private:
  friend class AddressSpace;
  absl::Status EnsureSystemTables();

  Machine* machine_;
  uint64_t next_gfn_;
  std::vector<std::unique_ptr<AddressSpace>> spaces_;
  bool tables_built_ = false;
  Pa gdt_pa_, idt_pa_, tss_pa_;
};

}  // namespace vmi::sim

#endif  // VMI_SIM_GUEST_BUILDER_H_
