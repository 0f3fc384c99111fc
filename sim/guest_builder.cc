#include "sim/guest_builder.h"

#include <array>
#include <cstring>

#include "absl/strings/str_format.h"
#include "arch/amd64/amd64.h"
#include "arch/amd64/bitfields.h"
#include "arch/amd64/paging.h"
#include "core/error.h"
#include "sim/internal/delivery.h"
#include "sim/internal/page_walk.h"

namespace vmi::sim {
namespace {

constexpr uint64_t kPage = Amd64::kPageSize;
using amd64::PageTableEntry;
constexpr uint64_t kP = PageTableEntry::kPresent, kRw = PageTableEntry::kWrite,
                   kUs = PageTableEntry::kUser, kPs = PageTableEntry::kPageSize,
                   kNx = PageTableEntry::kNx;
constexpr uint64_t kAddrMask = PageTableEntry::kFrameMask;

int LeafLevel(PageSize size) {
  switch (size) {
    case PageSize::k4K:
      return 1;
    case PageSize::k2M:
      return 2;
    case PageSize::k1G:
      return 3;
  }
  return 1;
}

bool Canonical(uint64_t va, int levels) {
  const int bits = 12 + 9 * levels;
  const uint64_t top = va >> (bits - 1);
  return top == 0 || top == (~0ull >> (bits - 1));
}

}  // namespace

// ---------------------------------------------------------------------------
// AddressSpace

absl::StatusOr<uint64_t*> AddressSpace::Entry(uint64_t table_pa, uint64_t index) {
  VMI_ASSIGN_OR_RETURN(uint8_t * frame, builder_->machine_->FramePointer(Gfn(table_pa / kPage)));
  return reinterpret_cast<uint64_t*>(frame) + index;
}

absl::Status AddressSpace::MapOne(uint64_t va, uint64_t pa, uint32_t flags, PageSize size) {
  const int leaf = LeafLevel(size);
  uint64_t table = root_.value();
  for (int level = levels_; level > leaf; --level) {
    const int shift = 12 + 9 * (level - 1);
    VMI_ASSIGN_OR_RETURN(uint64_t * e, Entry(table, (va >> shift) & 511));
    if (!(*e & kP)) {
      VMI_ASSIGN_OR_RETURN(Gfn frame, builder_->AllocateFrame());
      *e = (frame.value() * kPage) | kP | kRw | kUs;
    } else if (*e & kPs) {
      return absl::AlreadyExistsError(
          absl::StrFormat("map(va=0x%x): overlaps a large page at level %d", va, level));
    }
    table = *e & kAddrMask;
  }
  const int shift = 12 + 9 * (leaf - 1);
  VMI_ASSIGN_OR_RETURN(uint64_t * e, Entry(table, (va >> shift) & 511));
  if (*e & kP) {
    return absl::AlreadyExistsError(absl::StrFormat("map(va=0x%x): already mapped", va));
  }
  uint64_t v = pa | kP;
  if (flags & page_flags::kWritable) v |= kRw;
  if (flags & page_flags::kUser) v |= kUs;
  if (flags & page_flags::kNoExecute) v |= kNx;
  if (leaf > 1) v |= kPs;
  *e = v;
  return absl::OkStatus();
}

absl::Status AddressSpace::Map(Va va, Pa pa, uint64_t size, uint32_t flags, PageSize page_size) {
  const uint64_t ps = static_cast<uint64_t>(page_size);
  const std::string op =
      absl::StrFormat("map(va=%s, pa=%s, size=0x%x, page_size=0x%x)", va, pa, size, ps);
  if (va.value() % ps != 0 || pa.value() % ps != 0 || size % ps != 0 || size == 0) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: not aligned to the page size", op));
  }
  if (!Canonical(va.value(), levels_) || !Canonical(va.value() + size - 1, levels_)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: not canonical for %d-level paging", op, levels_));
  }
  // A large page may extend past the end of RAM (as over an MMIO hole), but
  // must start inside it.
  if (pa.value() >= builder_->machine_->ram_size() ||
      (page_size == PageSize::k4K && pa.value() + size > builder_->machine_->ram_size())) {
    return absl::OutOfRangeError(absl::StrFormat("%s: beyond RAM", op));
  }
  for (uint64_t off = 0; off < size; off += ps) {
    if (absl::Status s = MapOne(va.value() + off, pa.value() + off, flags, page_size); !s.ok()) {
      return AnnotateStatus(s, op);
    }
  }
  builder_->machine_->InvalidateTranslations();
  return absl::OkStatus();
}

absl::StatusOr<Pa> AddressSpace::PageTableFor(Va va) {
  uint64_t table = root_.value();
  for (int level = levels_; level > 1; --level) {
    const int shift = 12 + 9 * (level - 1);
    VMI_ASSIGN_OR_RETURN(uint64_t * e, Entry(table, (va.value() >> shift) & 511));
    if (!(*e & kP)) {
      VMI_ASSIGN_OR_RETURN(Gfn frame, builder_->AllocateFrame());
      *e = (frame.value() * kPage) | kP | kRw | kUs;
    } else if (*e & kPs) {
      return absl::AlreadyExistsError(
          absl::StrFormat("page_table_for(va=%s): covered by a large page", va));
    }
    table = *e & kAddrMask;
  }
  return Pa(table);
}

absl::StatusOr<Pa> AddressSpace::Translate(Va va) const {
  VMI_ASSIGN_OR_RETURN(uint8_t * ram, builder_->machine_->FramePointer(Gfn(0)));
  sim_internal::PagingState p{true, levels_ == 5, root_.value()};
  const sim_internal::WalkResult w =
      sim_internal::Walk(ram, builder_->machine_->ram_size(), p, va.value());
  if (!w.present) {
    return TranslationFaultError(AddressContext{va, root_}, "not mapped");
  }
  return Pa(w.pa);
}

// ---------------------------------------------------------------------------
// GuestBuilder

GuestBuilder::GuestBuilder(Machine* machine, Gfn first_free)
    : machine_(machine), next_gfn_(std::max<uint64_t>(first_free.value(), 1)) {}

absl::StatusOr<Gfn> GuestBuilder::AllocateFrame() {
  VMI_ASSIGN_OR_RETURN(Pa pa, AllocateFrames(1));
  return Gfn(pa.value() / kPage);
}

absl::StatusOr<Pa> GuestBuilder::AllocateFrames(uint64_t count, uint64_t align) {
  const uint64_t align_frames = std::max<uint64_t>(align / kPage, 1);
  const uint64_t first = (next_gfn_ + align_frames - 1) / align_frames * align_frames;
  if (count == 0 || first + count > machine_->max_gfn().value() + 1) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "allocate_frames(count=%u, align=0x%x): guest RAM exhausted (next free gfn 0x%x)", count,
        align, next_gfn_));
  }
  next_gfn_ = first + count;
  VMI_ASSIGN_OR_RETURN(uint8_t * p, machine_->FramePointer(Gfn(first)));
  std::memset(p, 0, count * kPage);
  return Pa(first * kPage);
}

absl::StatusOr<AddressSpace*> GuestBuilder::CreateAddressSpace(int levels) {
  if (levels != 4 && levels != 5) {
    return absl::InvalidArgumentError(
        absl::StrFormat("create_address_space(levels=%d): must be 4 or 5", levels));
  }
  VMI_ASSIGN_OR_RETURN(Gfn root, AllocateFrame());
  spaces_.push_back(
      std::unique_ptr<AddressSpace>(new AddressSpace(this, Pa(root.value() * kPage), levels)));
  return spaces_.back().get();
}

absl::Status GuestBuilder::EnsureSystemTables() {
  if (tables_built_) return absl::OkStatus();
  VMI_ASSIGN_OR_RETURN(gdt_pa_, AllocateFrames(1));
  VMI_ASSIGN_OR_RETURN(idt_pa_, AllocateFrames(1));
  VMI_ASSIGN_OR_RETURN(tss_pa_, AllocateFrames(1));
  VMI_ASSIGN_OR_RETURN(uint8_t * g, machine_->FramePointer(Gfn(gdt_pa_.value() / kPage)));
  uint64_t* gdt = reinterpret_cast<uint64_t*>(g);
  gdt[1] = 0x00cf9b000000ffffull;  // kernel code32
  gdt[2] = 0x00af9b000000ffffull;  // kernel code64
  gdt[3] = 0x00cf93000000ffffull;  // kernel data
  gdt[4] = 0x00cffb000000ffffull;  // user code32
  gdt[5] = 0x00cff3000000ffffull;  // user data
  gdt[6] = 0x00affb000000ffffull;  // user code64
  for (uint16_t i = 0; i < machine_->vcpu_count(); ++i) {
    const uint64_t base = kSystemTablesVa + 0x2000 + i * 0x80ull;
    const uint64_t limit = 0x67;
    // 64-bit TSS, busy (type 0xB), present.
    gdt[8 + 2 * i] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x8bull << 40) |
                     ((base >> 24) & 0xff) << 56;
    gdt[9 + 2 * i] = base >> 32;
  }
  tables_built_ = true;
  return absl::OkStatus();
}

absl::Status GuestBuilder::MapSystemTables(AddressSpace& as) {
  VMI_RETURN_IF_ERROR(EnsureSystemTables());
  VMI_RETURN_IF_ERROR(as.Map(Va(kSystemTablesVa), gdt_pa_, kPage, page_flags::kNoExecute));
  VMI_RETURN_IF_ERROR(as.Map(Va(kSystemTablesVa + 0x1000), idt_pa_, kPage, page_flags::kNoExecute));
  return as.Map(Va(kSystemTablesVa + 0x2000), tss_pa_, kPage,
                page_flags::kWritable | page_flags::kNoExecute);
}

absl::Status GuestBuilder::SetInterruptGate(uint8_t vector, Va handler, uint8_t ist, uint8_t dpl) {
  VMI_RETURN_IF_ERROR(EnsureSystemTables());
  if (ist > 7 || dpl > 3) {
    return absl::InvalidArgumentError(
        absl::StrFormat("set_interrupt_gate(vector=%u, ist=%u, dpl=%u): ist must be 0..7, dpl 0..3",
                        vector, ist, dpl));
  }
  VMI_ASSIGN_OR_RETURN(uint8_t * p, machine_->FramePointer(Gfn(idt_pa_.value() / kPage)));
  amd64::IdtGate gate;
  gate.offset = handler.value();
  gate.selector = kKernelCs;
  gate.ist = ist;
  gate.type = amd64::IdtGate::kInterruptGate;
  gate.dpl = dpl;
  gate.present = true;
  const std::array<uint8_t, amd64::IdtGate::kSize> bytes = gate.Encode();
  std::memcpy(p + vector * amd64::IdtGate::kSize, bytes.data(), bytes.size());
  machine_->InvalidateTranslations();
  return absl::OkStatus();
}

absl::StatusOr<Va> GuestBuilder::MapStack(AddressSpace& as, Va top, uint64_t pages) {
  VMI_ASSIGN_OR_RETURN(Pa frames, AllocateFrames(pages));
  VMI_RETURN_IF_ERROR(as.Map(top - pages * kPage, frames, pages * kPage,
                             page_flags::kWritable | page_flags::kNoExecute));
  return top;
}

absl::Status GuestBuilder::StartVcpu(VcpuId vcpu, const AddressSpace& as, Va rip, Va rsp,
                                     Va kernel_stack_top) {
  VMI_RETURN_IF_ERROR(EnsureSystemTables());
  if (vcpu.value() >= machine_->vcpu_count()) {
    return absl::OutOfRangeError(absl::StrFormat("start_vcpu(vcpu=%s): no such vcpu", vcpu));
  }
  // TSS.RSP0 and IST1 of this vCPU.
  VMI_ASSIGN_OR_RETURN(uint8_t * tss_page, machine_->FramePointer(Gfn(tss_pa_.value() / kPage)));
  uint8_t* tss = tss_page + vcpu.value() * 0x80;
  const uint64_t rsp0 = kernel_stack_top.value() != 0 ? kernel_stack_top.value() : rsp.value();
  std::memcpy(tss + sim_internal::kTssRsp0, &rsp0, 8);
  std::memcpy(tss + sim_internal::kTssIst1, &rsp0, 8);
  const uint16_t iomap = 0x68;
  std::memcpy(tss + 0x66, &iomap, 2);

  VMI_ASSIGN_OR_RETURN(amd64::Registers r, machine_->GetRegisters(vcpu));
  r.efer = amd64::Efer::kSce | amd64::Efer::kLme | amd64::Efer::kLma | amd64::Efer::kNxe;
  r.cr4 = amd64::Cr4::kPae | amd64::Cr4::kOsfxsr | (as.levels() == 5 ? amd64::Cr4::kLa57 : 0);
  r.cr3 = as.cr3();
  r.cr0 = amd64::Cr0::kPg | amd64::Cr0::kWp | amd64::Cr0::kNe | amd64::Cr0::kEt |
          amd64::Cr0::kMp | amd64::Cr0::kPe;
  r.gdtr = amd64::DescriptorTable{kSystemTablesVa,
                                  static_cast<uint16_t>((8 + 2 * machine_->vcpu_count()) * 8 - 1)};
  r.idtr = amd64::DescriptorTable{kSystemTablesVa + 0x1000, 0xfff};
  r.tr = amd64::Segment{static_cast<uint16_t>(kFirstTss + 16 * vcpu.value()),
                        kSystemTablesVa + 0x2000 + vcpu.value() * 0x80ull, 0x67, 0x8b};
  r.star = kStarValue;
  // TF, IF, DF, IOPL, NT and AC cleared on SYSCALL.
  r.sfmask = amd64::Rflags::kTf | amd64::Rflags::kIf | amd64::Rflags::kDf |
             amd64::Rflags::kIoplMask | amd64::Rflags::kNt | amd64::Rflags::kAc;
  r.rip = rip.value();
  r.rsp = rsp.value();
  r.rflags = amd64::Rflags::kReserved1;
  VMI_RETURN_IF_ERROR(machine_->SetRegisters(vcpu, r));
  VMI_RETURN_IF_ERROR(machine_->LoadSegmentFromGdt(vcpu, 1, kKernelCs));
  VMI_RETURN_IF_ERROR(machine_->LoadSegmentFromGdt(vcpu, 2, kKernelSs));
  VMI_RETURN_IF_ERROR(machine_->LoadSegmentFromGdt(vcpu, 3, kKernelSs));
  VMI_RETURN_IF_ERROR(machine_->LoadSegmentFromGdt(vcpu, 0, kKernelSs));
  VMI_RETURN_IF_ERROR(machine_->LoadSegmentFromGdt(vcpu, 4, 0));
  VMI_RETURN_IF_ERROR(machine_->LoadSegmentFromGdt(vcpu, 5, 0));
  machine_->InvalidateTranslations();
  return absl::OkStatus();
}

}  // namespace vmi::sim
