#include "sim/internal/engines.h"

#include <algorithm>
#include <cstring>
#include <iterator>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "core/error.h"
#include "sim/internal/machine_state.h"

namespace vmi::sim {
namespace sim_internal {

absl::StatusOr<std::unique_ptr<Engine>> OpenEngine(View view, uint8_t* ram, uint64_t ram_size,
                                                   const std::string& op) {
  auto e = std::make_unique<Engine>();
  e->view = view;
  if (uc_err err = uc_open(UC_ARCH_X86, UC_MODE_64, &e->uc); err != UC_ERR_OK) {
    e->uc = nullptr;
    return UcError(op + ": uc_open", err);
  }
  uc_ctl_set_tcg_buffer_size(e->uc, kTcgBufferSize);
  if (uc_err err = uc_mem_map_ptr(e->uc, 0, ram_size, UC_PROT_ALL, ram); err != UC_ERR_OK) {
    return UcError(op + ": uc_mem_map_ptr", err);
  }
  return e;
}

bool WritesTrappedByHook(const ViewEntry& entry) {
  return !entry.access.write() && entry.options.ignore_page_walk_updates();
}

uint32_t EnginePerms(const ViewEntry& entry) {
  return UcPerms(WritesTrappedByHook(entry) ? entry.access | MemoryAccess::W() : entry.access);
}

absl::Status ApplyEntry(Engine& e, uint8_t* ram, Gfn gfn, ViewEntry want, const std::string& op) {
  ViewEntry cur{gfn, e.applied_default, MemoryAccessOptions::None()};
  if (auto it = e.applied.find(gfn.value()); it != e.applied.end()) cur = it->second;
  if (cur == want) return absl::OkStatus();
  const uint64_t gpa = gfn.value() * kPageSize;
  if (cur.backing != want.backing) {
    if (uc_err err = uc_mem_unmap(e.uc, gpa, kPageSize); err != UC_ERR_OK) {
      return UcError(absl::StrFormat("%s(gfn=%s): uc_mem_unmap", op, gfn), err);
    }
    if (uc_err err = uc_mem_map_ptr(e.uc, gpa, kPageSize, EnginePerms(want),
                                    ram + want.backing.value() * kPageSize);
        err != UC_ERR_OK) {
      return UcError(absl::StrFormat("%s(gfn=%s): uc_mem_map_ptr", op, gfn), err);
    }
    e.tb_dirty = true;
  } else if (EnginePerms(cur) != EnginePerms(want)) {
    if (uc_err err = uc_mem_protect(e.uc, gpa, kPageSize, EnginePerms(want));
        err != UC_ERR_OK) {
      return UcError(absl::StrFormat("%s(gfn=%s): uc_mem_protect", op, gfn), err);
    }
    // Unicorn checks execute permission only when it translates, so code
    // translated while the frame was executable would still run. Dropping it
    // also means no frame without execute has translations here, which is
    // what lets writes to it (Unicorn invalidates code on a write only where
    // the frame is executable) go unnoticed safely.
    if (cur.access.execute() && !want.access.execute()) e.tb_dirty = true;
  }
  if (want == ViewEntry{gfn, e.applied_default, MemoryAccessOptions::None()}) {
    e.applied.erase(gfn.value());
  } else {
    e.applied[gfn.value()] = want;
  }
  if (WritesTrappedByHook(want)) {
    e.pw_frames.insert(gfn.value());
  } else {
    e.pw_frames.erase(gfn.value());
  }
  e.tlb_dirty = true;
  return absl::OkStatus();
}

absl::Status ApplyView(Engine& e, uint8_t* ram, uint64_t ram_size, const ViewTable& views,
                       const std::string& op) {
  const View view = e.view;
  VMI_ASSIGN_OR_RETURN(MemoryAccess def, views.DefaultAccess(view));
  if (def != e.applied_default) {
    if (uc_err err = uc_mem_protect(e.uc, 0, ram_size, UcPerms(def)); err != UC_ERR_OK) {
      return UcError(absl::StrFormat("%s(view=%s): uc_mem_protect", op, view), err);
    }
    // See ApplyEntry.
    if (e.applied_default.execute() && !def.execute()) e.tb_dirty = true;
    e.applied_default = def;
    e.pw_frames.clear();
    for (auto it = e.applied.begin(); it != e.applied.end();) {
      it->second.access = def;
      it->second.options = MemoryAccessOptions::None();
      if (it->second.backing.value() == it->first) {
        e.applied.erase(it++);
      } else {
        ++it;
      }
    }
    e.tlb_dirty = true;
  }
  const std::vector<Gfn> targets = views.Overrides(view);
  std::set<uint64_t> target_set;
  for (Gfn g : targets) target_set.insert(g.value());
  std::vector<uint64_t> stale;
  for (const auto& [gfn, entry] : e.applied) {
    if (!target_set.contains(gfn)) stale.push_back(gfn);
  }
  std::sort(stale.begin(), stale.end());
  for (uint64_t gfn : stale) {
    VMI_RETURN_IF_ERROR(ApplyEntry(e, ram, Gfn(gfn), {Gfn(gfn), def, MemoryAccessOptions::None()}, op));
  }
  for (Gfn gfn : targets) VMI_RETURN_IF_ERROR(ApplyEntry(e, ram, gfn, views.Lookup(view, gfn), op));
  return absl::OkStatus();
}

void FlushEngine(Engine& e) {
  if (e.tb_dirty) {
    uc_ctl_flush_tb(e.uc);
    e.code.clear();
    e.tb_dirty = false;
    e.tlb_dirty = true;
  }
  if (e.tlb_dirty) {
    uc_ctl_flush_tlb(e.uc);
    e.tlb_dirty = false;
  }
}

void RecordCodeFrame(Engine& e, const uint8_t* ram, uint64_t frame) {
  auto [it, inserted] = e.code.try_emplace(frame);
  if (inserted) {
    it->second = std::make_unique<uint8_t[]>(kPageSize);
    std::memcpy(it->second.get(), ram + frame * kPageSize, kPageSize);
  }
}

bool CodeChanged(const Engine& e, const uint8_t* ram) {
  for (const auto& [frame, content] : e.code) {
    if (std::memcmp(ram + frame * kPageSize, content.get(), kPageSize) != 0) return true;
  }
  return false;
}

void RefreshCode(Engine& e, const uint8_t* ram) {
  for (auto& [frame, content] : e.code) {
    const uint8_t* now = ram + frame * kPageSize;
    if (std::memcmp(now, content.get(), kPageSize) != 0) std::memcpy(content.get(), now, kPageSize);
  }
}

}  // namespace sim_internal

// ---- The machine's engines ----

void Machine::Impl::MarkAllTranslationsDirty() {
  for (auto& v : vcpus) {
    for (auto& [id, e] : v->engines) {
      e->tb_dirty = true;
      e->tlb_dirty = true;
    }
  }
}

absl::StatusOr<Engine*> Machine::Impl::CreateEngine(Vcpu& v, View view) {
  const std::string op = absl::StrFormat("create_engine(vcpu=%u, view=%s)", v.index, view);
  VMI_ASSIGN_OR_RETURN(std::unique_ptr<Engine> e,
                       sim_internal::OpenEngine(view, ram, options.ram_size, op));
  struct HookSpec {
    int type;
    void* fn;
    int insn;
  };
  const HookSpec specs[] = {
      {UC_HOOK_INTR, reinterpret_cast<void*>(&Impl::HookIntr), -1},
      {UC_HOOK_INSN_INVALID, reinterpret_cast<void*>(&Impl::HookInvalid), -1},
      {UC_HOOK_MEM_PROT, reinterpret_cast<void*>(&Impl::HookProt), -1},
      {UC_HOOK_MEM_UNMAPPED, reinterpret_cast<void*>(&Impl::HookUnmapped), -1},
      {UC_HOOK_BLOCK, reinterpret_cast<void*>(&Impl::HookBlock), -1},
      {UC_HOOK_INSN, reinterpret_cast<void*>(&Impl::HookSyscall), UC_X86_INS_SYSCALL},
      {UC_HOOK_INSN, reinterpret_cast<void*>(&Impl::HookIn), UC_X86_INS_IN},
      {UC_HOOK_INSN, reinterpret_cast<void*>(&Impl::HookOut), UC_X86_INS_OUT},
  };
  for (const HookSpec& spec : specs) {
    uc_hook h;
    uc_err err = spec.insn < 0 ? uc_hook_add(e->uc, &h, spec.type, spec.fn, &v, 1, 0)
                               : uc_hook_add(e->uc, &h, spec.type, spec.fn, &v, 1, 0, spec.insn);
    if (err != UC_ERR_OK) return sim_internal::UcError(op + ": uc_hook_add", err);
  }
  Engine* raw = e.get();
  v.engines[view.value()] = std::move(e);
  if (++engine_count == 2) {
    // Code recording starts now: engines that ran alone so far recorded
    // nothing, so their translations go.
    for (auto& vc : vcpus) {
      for (auto& [id, other] : vc->engines) {
        if (other.get() != raw) other->tb_dirty = true;
      }
    }
  }
  return raw;
}

void Machine::Impl::CloseEngine(Vcpu& v, View view) {
  auto it = v.engines.find(view.value());
  if (it == v.engines.end() || it->second.get() == v.active) return;
  if (last_engine == it->second.get()) last_engine = nullptr;
  v.engines.erase(it);
  --engine_count;
}

absl::Status Machine::Impl::SwitchEngine(Vcpu& v, Engine& to) {
  if (absl::Status s = sim_internal::TransferCpuState(v.active->uc, to.uc, v.transfer); !s.ok()) {
    return AnnotateStatus(s, absl::StrFormat("switch_view(vcpu=%u, view %s -> %s)", v.index,
                                             v.active->view, to.view));
  }
  const View from = v.active->view;
  v.active = &to;
  v.uc = to.uc;
  to.tlb_dirty = true;  // its TLB is from before; CR3 and page tables may differ
  if (!views.Exists(from)) CloseEngine(v, from);
  return absl::OkStatus();
}

void Machine::Impl::NoteCode(Vcpu& v, uint64_t va) {
  using sim_internal::kPageSize;
  const uint64_t page = va & ~(kPageSize - 1);
  const size_t slot = (page / kPageSize) % std::size(v.noted);
  const uint64_t cr3 = sim_internal::Reg(v.uc, UC_X86_REG_CR3);
  if (v.noted[slot] == page && v.noted_cr3[slot] == cr3) return;
  v.noted[slot] = page;
  v.noted_cr3[slot] = cr3;
  const sim_internal::WalkResult w = sim_internal::Walk(ram, options.ram_size, Paging(v), page);
  if (!w.present || w.pa >= options.ram_size) return;
  sim_internal::RecordCodeFrame(*v.active, ram, Backing(v, w.pa) / kPageSize);
}

absl::Status Machine::Impl::UpdateCodeHook(Vcpu& v, Engine& e) {
  const bool want = monitors.AnyDecoded();
  if (want && e.code_hook == 0) {
    if (uc_err err = uc_hook_add(e.uc, &e.code_hook, UC_HOOK_CODE,
                                 reinterpret_cast<void*>(&Impl::HookCode), &v, 1, 0);
        err != UC_ERR_OK) {
      e.code_hook = 0;
      return sim_internal::UcError(
          absl::StrFormat("set_monitor(vcpu=%u): uc_hook_add(code)", v.index), err);
    }
    e.tb_dirty = true;
  } else if (!want && e.code_hook != 0) {
    uc_hook_del(e.uc, e.code_hook);
    e.code_hook = 0;
    e.tb_dirty = true;
  }
  return absl::OkStatus();
}

absl::Status Machine::Impl::UpdateMemoryHook(Vcpu& v, Engine& e) {
  bool restricts = e.applied_default != MemoryAccess::RWX();
  for (const auto& [gfn, entry] : e.applied) {
    if (restricts) break;
    restricts = entry.access != MemoryAccess::RWX();
  }
  if (!restricts) {
    if (e.mem_hook != 0) {
      uc_hook_del(e.uc, e.mem_hook);
      e.mem_hook = 0;
      e.tb_dirty = true;
      e.flush_after_run = true;
    }
    return absl::OkStatus();
  }
  // The hook's callback runs only for stores into its range: the frames whose
  // stores it must trap, or no address at all.
  uint64_t begin = ~0ull, end = ~0ull;
  if (!e.pw_frames.empty()) {
    uint64_t lo = ~0ull, hi = 0;
    for (uint64_t gfn : e.pw_frames) {
      lo = std::min(lo, gfn);
      hi = std::max(hi, gfn);
    }
    begin = lo * sim_internal::kPageSize;
    end = (hi + 1) * sim_internal::kPageSize - 1;
  }
  if (e.mem_hook != 0 && e.mem_hook_begin == begin && e.mem_hook_end == end) {
    return absl::OkStatus();
  }
  const bool had = e.mem_hook != 0;
  if (had) uc_hook_del(e.uc, e.mem_hook);
  e.mem_hook = 0;
  if (uc_err err = uc_hook_add(e.uc, &e.mem_hook, UC_HOOK_MEM_WRITE,
                               reinterpret_cast<void*>(&Impl::HookWrite), &v, begin, end);
      err != UC_ERR_OK) {
    e.mem_hook = 0;
    e.tb_dirty = true;
    return sim_internal::UcError(
        absl::StrFormat("apply_view(vcpu=%u, view=%s): uc_hook_add(mem_write)", v.index, e.view),
        err);
  }
  e.mem_hook_begin = begin;
  e.mem_hook_end = end;
  // Whether loads and stores take the slow path is decided when code is
  // translated: what was translated without the hook goes.
  if (!had) e.tb_dirty = true;
  return absl::OkStatus();
}

absl::Status Machine::Impl::DropStrayException(Vcpu& v) {
  VMI_ASSIGN_OR_RETURN(sim_internal::CpuContext * ctx, SaveScratch(v));
  if (!ctx->exception_in_flight()) return absl::OkStatus();
  ctx->clear_exception_in_flight();
  return ctx->Restore(v.uc);
}

absl::Status Machine::Impl::PrepareEngine(Vcpu& v) {
  if (!views.Exists(v.book.view)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("run(vcpu=%u): view %s does not exist", v.index, v.book.view));
  }
  Engine* e;
  if (auto it = v.engines.find(v.book.view.value()); it != v.engines.end()) {
    e = it->second.get();
  } else {
    VMI_ASSIGN_OR_RETURN(e, CreateEngine(v, v.book.view));
  }
  if (e != v.active) VMI_RETURN_IF_ERROR(SwitchEngine(v, *e));
  VMI_RETURN_IF_ERROR(UpdateCodeHook(v, *e));
  if (e->applied_epoch != views_epoch) {
    VMI_RETURN_IF_ERROR(sim_internal::ApplyView(*e, ram, options.ram_size, views,
                                                absl::StrFormat("apply_view(vcpu=%u)", v.index)));
    VMI_RETURN_IF_ERROR(DropStrayException(v));
    VMI_RETURN_IF_ERROR(UpdateMemoryHook(v, *e));
    e->applied_epoch = views_epoch;
  }
  if (last_engine != e) {
    // The engine that ran last saw its own guest writes (its recorded frames
    // are all executable in it, see ApplyEntry): its copies catch up.
    if (last_engine != nullptr) sim_internal::RefreshCode(*last_engine, ram);
    // Guest writes made by other engines since this one last ran.
    if (!e->tb_dirty && sim_internal::CodeChanged(*e, ram)) e->tb_dirty = true;
  }
  sim_internal::FlushEngine(*e);
  return absl::OkStatus();
}

}  // namespace vmi::sim
