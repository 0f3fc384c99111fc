#include "utils/testing/scenario.h"

#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "core/error.h"

#define UTILS_PROGRAM(prog)                              \
  extern "C" const uint8_t utils_prog_##prog##_begin[]; \
  extern "C" const uint8_t utils_prog_##prog##_end[];   \
  extern "C" const uint8_t utils_prog_##prog##_entry[];

UTILS_PROGRAM(remap_loop)
UTILS_PROGRAM(checksum)
UTILS_PROGRAM(two_roots)
UTILS_PROGRAM(pte_flip)

extern "C" const uint8_t utils_prog_remap_loop_done[], utils_prog_remap_loop_ctl[];
extern "C" const uint8_t utils_prog_checksum_func[], utils_prog_checksum_func2[],
    utils_prog_checksum_patched[], utils_prog_checksum_ctl[];
extern "C" const uint8_t utils_prog_two_roots_kfunc[], utils_prog_two_roots_ctl[];
extern "C" const uint8_t utils_prog_pte_flip_ctl[];

namespace vmi::utils::testing {
namespace {

const std::vector<sim::GuestProgram>& Table() {
#define IMAGE(prog) \
  absl::Span<const uint8_t>(utils_prog_##prog##_begin, utils_prog_##prog##_end - utils_prog_##prog##_begin)
#define OFF(prog, sym) static_cast<uint64_t>(utils_prog_##prog##_##sym - utils_prog_##prog##_begin)
#define SYM(prog, sym) sim::ProgramSymbol{#sym, OFF(prog, sym)}
  static const auto* table = new std::vector<sim::GuestProgram>{
      {"remap_loop", "unmaps, remaps and moves a function's page; a second vCPU calls it",
       IMAGE(remap_loop), OFF(remap_loop, entry), {SYM(remap_loop, done), SYM(remap_loop, ctl)}, {}},
      {"checksum", "sums its own code page, patches an instruction, calls two functions",
       IMAGE(checksum), OFF(checksum, entry),
       {SYM(checksum, func), SYM(checksum, func2), SYM(checksum, patched), SYM(checksum, ctl)}, {}},
      {"two_roots", "calls a kernel function under two CR3s in turn", IMAGE(two_roots), OFF(two_roots, entry),
       {SYM(two_roots, kfunc), SYM(two_roots, ctl)}, {}},
      {"pte_flip", "writes two values into a page-table entry in turn, forever", IMAGE(pte_flip),
       OFF(pte_flip, entry), {SYM(pte_flip, ctl)}, {}},
  };
#undef SYM
#undef OFF
#undef IMAGE
  return *table;
}

}  // namespace

absl::StatusOr<const sim::GuestProgram*> ScenarioProgram(absl::string_view name) {
  for (const sim::GuestProgram& p : Table()) {
    if (name == p.name) return &p;
  }
  return absl::NotFoundError(absl::StrFormat("scenario program %s: no such program", name));
}

absl::StatusOr<uint64_t> Scenario::ReadQ(Pa pa) {
  uint64_t v = 0;
  VMI_RETURN_IF_ERROR(machine().ReadPhys(pa, absl::MakeSpan(reinterpret_cast<uint8_t*>(&v), 8)));
  return v;
}

absl::Status Scenario::WriteQ(Pa pa, uint64_t value) {
  return machine().WritePhys(pa, absl::MakeSpan(reinterpret_cast<const uint8_t*>(&value), 8));
}

absl::Status Scenario::SetRdi(VcpuId vcpu, uint64_t rdi) {
  VMI_ASSIGN_OR_RETURN(amd64::Registers regs, machine().GetRegisters(vcpu));
  amd64::GpRegisters gp = regs.gp();
  gp.rdi = rdi;
  return machine().SetGpRegisters(vcpu, gp);
}

absl::StatusOr<Scenario> BootScenario(absl::string_view program, const ScenarioOptions& options) {
  VMI_ASSIGN_OR_RETURN(const sim::GuestProgram* p, ScenarioProgram(program));
  sim::MachineOptions m;
  m.ram_size = options.ram_size;
  m.vcpu_count = options.vcpus;
  m.shared_ram = options.shared_ram;
  VMI_ASSIGN_OR_RETURN(std::unique_ptr<sim::Machine> machine, sim::Machine::Create(m));
  sim::StandardGuest g;
  g.builder = std::make_unique<sim::GuestBuilder>(machine.get());
  VMI_ASSIGN_OR_RETURN(g.space, g.builder->CreateAddressSpace(options.paging_levels));
  VMI_RETURN_IF_ERROR(g.builder->MapSystemTables(*g.space));
  VMI_ASSIGN_OR_RETURN(g.program, sim::LoadProgram(*g.builder, *g.space, *p, Va(sim::kProgramVa)));
  for (uint16_t i = 0; i < machine->vcpu_count(); ++i) {
    VMI_ASSIGN_OR_RETURN(Va top, g.builder->MapStack(*g.space, Va(sim::kStackTopVa - i * 0x10000ull), 4));
    VMI_RETURN_IF_ERROR(g.builder->StartVcpu(VcpuId(i), *g.space, g.program.entry(), top));
  }
  Scenario s;
  s.guest = std::move(g);
  if (options.bare_machine) {
    s.bare_machine = std::move(machine);
    return s;
  }
  sim::SimDriverOptions o;
  o.wait_instructions = options.wait_instructions;
  VMI_ASSIGN_OR_RETURN(sim::SimDriver d, sim::SimDriver::Create(std::move(machine), o));
  s.driver = std::make_unique<sim::SimDriver>(std::move(d));
  return s;
}

absl::StatusOr<Pa> EntryAddress(sim::Machine& machine, Pa root, int levels, Va va, int level) {
  uint64_t table = root.value() & ~0xfffull;
  for (int l = levels; l >= 1; --l) {
    const uint64_t index = (va.value() >> (12 + 9 * (l - 1))) & 511;
    const Pa entry(table + index * 8);
    if (l == level) return entry;
    uint64_t raw = 0;
    VMI_RETURN_IF_ERROR(machine.ReadPhys(entry, absl::MakeSpan(reinterpret_cast<uint8_t*>(&raw), 8)));
    if (!(raw & 1) || (l <= 3 && (raw & 0x80))) {
      return absl::NotFoundError(absl::StrFormat("entry_address(%s, level %d): the walk ends at level %d", va,
                                                 level, l));
    }
    table = raw & 0x000ffffffffff000ull;
  }
  return absl::InvalidArgumentError(absl::StrFormat("entry_address(%s): no level %d", va, level));
}

}  // namespace vmi::utils::testing
