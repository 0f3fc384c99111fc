#include "sim/internal/hooks.h"

#include <algorithm>
#include <cstring>
#include <iterator>
#include <optional>
#include <utility>

#include "absl/strings/str_format.h"
#include "sim/internal/decode.h"
#include "sim/internal/machine_state.h"
#include "sim/internal/page_walk.h"

namespace vmi::sim {
namespace sim_internal {

std::vector<uint64_t> GlaCandidates(const MemoryOperand& op, absl::FunctionRef<uint64_t(int)> gpr,
                                    uint64_t fs_base, uint64_t gs_base, uint64_t rip) {
  constexpr int kRsp = 4, kRbp = 5, kRsi = 6, kRdi = 7;
  std::vector<uint64_t> candidates;
  switch (op.kind) {
    case MemoryOperand::Kind::kPush:
      candidates = {gpr(kRsp) - 8};
      break;
    case MemoryOperand::Kind::kPop:
      candidates = {gpr(kRsp), gpr(kRbp)};
      break;
    case MemoryOperand::Kind::kString:
      candidates = {gpr(kRdi), gpr(kRsi)};
      break;
    case MemoryOperand::Kind::kModrm: {
      uint64_t ea = static_cast<uint64_t>(op.disp);
      if (op.base >= 0) ea += gpr(op.base);
      if (op.index >= 0) ea += gpr(op.index) * op.scale;
      if (op.segment == 4) ea += fs_base;
      if (op.segment == 5) ea += gs_base;
      if (op.rip_relative) {
        // The end of the instruction depends on its immediate, which the
        // decoder does not size: try each possible immediate width.
        for (uint64_t imm : {0, 1, 2, 4}) candidates.push_back(rip + op.end + imm + ea);
      } else {
        candidates.push_back(op.address32 ? (ea & 0xffffffffu) : ea);
      }
      break;
    }
  }
  return candidates;
}

}  // namespace sim_internal

using sim_internal::DecodedInsn;
using sim_internal::InsnKind;
using sim_internal::kGprIds;
using sim_internal::kPageSize;
using sim_internal::ReadMsr;
using sim_internal::Reg;
using sim_internal::WalkResult;

std::optional<uint64_t> Machine::Impl::GlaFromInstruction(Vcpu& v, const PagingState& p,
                                                          uint64_t rip, uint64_t gpa) const {
  uint8_t insn[15];
  size_t n = sizeof(insn);
  // Near the end of a mapped page the instruction may be shorter than 15 bytes.
  while (n > 0 && !ReadVirt(v, rip, insn, n)) n = n > 8 ? 8 : n - 1;
  if (n == 0) return std::nullopt;
  const std::optional<sim_internal::MemoryOperand> op = sim_internal::DecodeMemoryOperand(insn, n);
  if (!op) return std::nullopt;
  uc_engine* uc = v.uc;
  const std::vector<uint64_t> candidates = sim_internal::GlaCandidates(
      *op, [uc](int gpr) { return Reg(uc, sim_internal::kGprIds[gpr]); },
      Reg(uc, UC_X86_REG_FS_BASE), Reg(uc, UC_X86_REG_GS_BASE), rip);
  // The access may start on the page before the faulting one (a split access).
  const uint64_t gfn = gpa / kPageSize;
  std::optional<uint64_t> found;
  for (uint64_t c : candidates) {
    for (uint64_t page : {c & ~(kPageSize - 1), (c & ~(kPageSize - 1)) + kPageSize}) {
      const uint64_t gla = page | (gpa & (kPageSize - 1));
      const sim_internal::WalkResult w = sim_internal::Walk(ram, options.ram_size, p, gla);
      if (w.present && w.pa / kPageSize == gfn) {
        if (found && *found != gla) return std::nullopt;  // ambiguous: let the search decide
        found = gla;
      }
    }
  }
  return found;
}

void Machine::Impl::HookCode(uc_engine* uc, uint64_t address, uint32_t size, void* user) {
  Vcpu* v = static_cast<Vcpu*>(user);
  Impl* m = v->m;
  if (v->book.skip_first_intercept) {
    v->book.skip_first_intercept = false;
    return;
  }
  uint8_t bytes[16] = {};
  const size_t n = std::min<uint32_t>(size == 0 ? 15 : size, 15);
  const uint64_t page = address & ~(kPageSize - 1);
  if (page == v->fetch_page && (address & (kPageSize - 1)) + n <= kPageSize) {
    std::memcpy(bytes, v->fetch_host + (address & (kPageSize - 1)), n);
  } else {
    if (!m->ReadVirt(*v, address, bytes, n)) return;
    const WalkResult w = sim_internal::Walk(m->ram, m->options.ram_size, m->Paging(*v), page);
    if (w.present && w.pa < m->options.ram_size) {
      v->fetch_page = page;
      v->fetch_host = m->ram + m->Backing(*v, w.pa);
    }
  }
  const DecodedInsn d = sim_internal::Decode(bytes, n);
  if (d.kind == InsnKind::kOther) return;
  if (d.kind == InsnKind::kMovToCr || d.kind == InsnKind::kInvlpg || d.kind == InsnKind::kLmsw ||
      d.kind == InsnKind::kClts) {
    v->fetch_page = ~0ull;  // the translation may change
    v->block_page = ~0ull;
    std::fill(std::begin(v->noted), std::end(v->noted), ~0ull);
  }
  std::optional<Exit> exit;
  auto make = [&](ExitKind kind) {
    exit = m->NewExit(*v, kind, address);
    exit->insn_length = static_cast<uint8_t>(size);
  };
  switch (d.kind) {
    case InsnKind::kMovToCr:
      if (d.cr < 5 && m->monitors.cr[d.cr]) {
        make(ExitKind::kControlRegister);
        exit->cr = d.cr;
        static constexpr int kCrIds[5] = {UC_X86_REG_CR0, UC_X86_REG_CR1, UC_X86_REG_CR2,
                                          UC_X86_REG_CR3, UC_X86_REG_CR4};
        exit->old_value = Reg(uc, kCrIds[d.cr]);
        exit->new_value = Reg(uc, kGprIds[d.gpr]);
      }
      break;
    case InsnKind::kClts:
    case InsnKind::kLmsw:
      if (m->monitors.cr[0]) {
        make(ExitKind::kControlRegister);
        exit->cr = 0;
        exit->old_value = Reg(uc, UC_X86_REG_CR0);
        exit->new_value = d.kind == InsnKind::kClts
                              ? exit->old_value & ~uint64_t{8}
                              : (exit->old_value & ~uint64_t{0xf}) |
                                    (Reg(uc, kGprIds[d.gpr]) & 0xf) | (exit->old_value & 1);
      }
      break;
    case InsnKind::kWrmsr:
      if (m->monitors.msr_all ||
          m->monitors.msr_indices.contains(static_cast<uint32_t>(Reg(uc, UC_X86_REG_RCX)))) {
        make(ExitKind::kMsrWrite);
        exit->msr = static_cast<uint32_t>(Reg(uc, UC_X86_REG_RCX));
        exit->old_value = ReadMsr(uc, exit->msr);
        exit->new_value = (Reg(uc, UC_X86_REG_RDX) << 32) | (Reg(uc, UC_X86_REG_RAX) & 0xffffffffu);
      }
      break;
    case InsnKind::kCpuid:
      if (m->monitors.cpuid) {
        make(ExitKind::kCpuid);
        exit->leaf = static_cast<uint32_t>(Reg(uc, UC_X86_REG_RAX));
        exit->subleaf = static_cast<uint32_t>(Reg(uc, UC_X86_REG_RCX));
      }
      break;
    case InsnKind::kIo:
      if (m->monitors.io) {
        make(ExitKind::kIo);
        exit->port =
            d.io_port_in_dx ? static_cast<uint16_t>(Reg(uc, UC_X86_REG_RDX)) : d.io_port_imm;
        exit->io_size = d.io_size;
        exit->io_in = d.io_in;
        exit->io_string = d.io_string;
      }
      break;
    case InsnKind::kLgdt:
    case InsnKind::kLidt:
    case InsnKind::kLldt:
    case InsnKind::kLtr:
    case InsnKind::kSgdt:
    case InsnKind::kSidt:
    case InsnKind::kSldt:
    case InsnKind::kStr:
      if (m->monitors.descriptor) {
        make(ExitKind::kDescriptorTable);
        static constexpr DescriptorOp kOps[] = {
            DescriptorOp::kLgdt, DescriptorOp::kLidt, DescriptorOp::kLldt, DescriptorOp::kLtr,
            DescriptorOp::kSgdt, DescriptorOp::kSidt, DescriptorOp::kSldt, DescriptorOp::kStr};
        exit->descriptor_op = kOps[static_cast<int>(d.kind) - static_cast<int>(InsnKind::kLgdt)];
      }
      break;
    default:
      break;
  }
  if (exit.has_value()) {
    v->hook_exit = std::move(exit);
    uc_emu_stop(uc);
  }
}

void Machine::Impl::HookBlock(uc_engine*, uint64_t address, uint32_t size, void* user) {
  Vcpu* v = static_cast<Vcpu*>(user);
  v->last_block_start = address;
  v->last_block_size = size;
  Impl* m = v->m;
  if (m->engine_count < 2) return;
  const uint64_t first = address / kPageSize;
  const uint64_t last = (address + std::max<uint32_t>(size, 1) - 1) / kPageSize;
  if (first == v->block_page && last == first) return;
  v->block_page = first;
  m->NoteCode(*v, address);
  if (last != first) m->NoteCode(*v, last * kPageSize);
}

void Machine::Impl::HookIntr(uc_engine* uc, uint32_t intno, void* user) {
  Vcpu* v = static_cast<Vcpu*>(user);
  v->exception_pending = true;
  v->exception_vector = intno;
  uc_emu_stop(uc);
}

bool Machine::Impl::HookInvalid(uc_engine*, void* user) {
  static_cast<Vcpu*>(user)->invalid_pending = true;
  return false;
}

Exit Machine::Impl::AccessExit(Vcpu& v, MemoryAccess access, uint64_t address) const {
  const uint64_t rip = Reg(v.uc, UC_X86_REG_RIP);
  Exit e = NewExit(v, ExitKind::kMemoryAccess, rip);
  e.gpa = Pa(address);
  e.access = access;
  // The linear address: for a fetch, from RIP when RIP's page is the frame;
  // otherwise the unique virtual page of the current address space that maps
  // the frame, if there is exactly one.
  const PagingState p = Paging(v);
  const uint64_t gfn = address / kPageSize;
  if (access.execute()) {
    for (uint64_t probe : {rip, rip + 15}) {
      const WalkResult w = sim_internal::Walk(ram, options.ram_size, p, probe);
      if (w.present && w.pa / kPageSize == gfn) {
        e.gla = Va((probe & ~(kPageSize - 1)) | (address & (kPageSize - 1)));
        e.gla_valid = true;
        break;
      }
    }
  }
  if (!e.gla_valid) {
    // As hardware does: from the faulting instruction's operand, accepted only
    // if that linear page really maps to the faulting frame.
    if (std::optional<uint64_t> gla = GlaFromInstruction(v, p, rip, address)) {
      e.gla = Va(*gla);
      e.gla_valid = true;
    }
  }
  if (!e.gla_valid) {
    const std::optional<std::vector<uint64_t>> vas =
        sim_internal::ReverseLookup(ram, options.ram_size, p, gfn, 2);
    if (vas.has_value() && vas->size() == 1) {
      e.gla = Va((*vas)[0] | (address & (kPageSize - 1)));
      e.gla_valid = true;
    }
  }
  return e;
}

bool Machine::Impl::HookProt(uc_engine*, uc_mem_type type, uint64_t address, int, int64_t,
                             void* user) {
  Vcpu* v = static_cast<Vcpu*>(user);
  // Unicorn fills the TLB entry before it checks the permission: drop it, so
  // nothing is left that a later access could hit without a check (engines
  // that restrict a frame take the slow path on every access anyway, see
  // Engine::mem_hook).
  v->active->tlb_dirty = true;
  v->hook_exit = v->m->AccessExit(*v,
                                  type == UC_MEM_WRITE_PROT   ? MemoryAccess::W()
                                  : type == UC_MEM_FETCH_PROT ? MemoryAccess::X()
                                                              : MemoryAccess::R(),
                                  address);
  return false;
}

void Machine::Impl::HookWrite(uc_engine* uc, uc_mem_type, uint64_t address, int size, int64_t,
                              void* user) {
  Vcpu* v = static_cast<Vcpu*>(user);
  Impl* m = v->m;
  const Engine& e = *v->active;
  if (v->hook_exit.has_value() || size <= 0) return;
  const uint64_t first = address / kPageSize;
  const uint64_t last = (address + static_cast<uint64_t>(size) - 1) / kPageSize;
  uint64_t fault = address;
  if (!e.pw_frames.contains(first)) {
    if (last == first || !e.pw_frames.contains(last)) return;
    fault = last * kPageSize;
  }
  // A store to a frame whose view denies write but lets page walks update it:
  // a write violation, as Unicorn's permission check would have raised. The
  // store itself still happens when this returns; Execute puts the bytes back
  // (the engine stops right after the store, before the instruction retires).
  v->hook_exit = m->AccessExit(*v, MemoryAccess::W(), fault);
  Vcpu::StoreUndo undo;
  undo.gpa = address;
  undo.size = static_cast<uint8_t>(std::min<int>(size, sizeof(undo.bytes)));
  for (uint8_t i = 0; i < undo.size; ++i) {
    const uint64_t pa = address + i;
    undo.bytes[i] = pa < m->options.ram_size ? m->ram[m->Backing(*v, pa)] : 0;
  }
  v->store_undo = undo;
  uc_emu_stop(uc);
}

bool Machine::Impl::HookUnmapped(uc_engine* uc, uc_mem_type type, uint64_t address, int size,
                                 int64_t, void* user) {
  Vcpu* v = static_cast<Vcpu*>(user);
  const char* kind = type == UC_MEM_WRITE_UNMAPPED   ? "write"
                     : type == UC_MEM_FETCH_UNMAPPED ? "fetch"
                                                     : "read";
  v->hook_error = absl::FailedPreconditionError(
      absl::StrFormat("run(vcpu=%u): guest %s of %d bytes at gpa 0x%x beyond RAM (rip=0x%x)",
                      v->index, kind, size, address, Reg(uc, UC_X86_REG_RIP)));
  return false;
}

void Machine::Impl::HookSyscall(uc_engine* uc, void* user) {
  static_cast<Vcpu*>(user)->syscall_pending = true;
  uc_emu_stop(uc);
}

uint32_t Machine::Impl::HookIn(uc_engine*, uint32_t, int size, void*) {
  // No devices: reads float high.
  return size >= 4 ? 0xffffffffu : ((1u << (8 * size)) - 1);
}

void Machine::Impl::HookOut(uc_engine*, uint32_t port, int, uint32_t value, void* user) {
  if (port == 0xe9) static_cast<Vcpu*>(user)->m->console.push_back(static_cast<char>(value));
}

}  // namespace vmi::sim
