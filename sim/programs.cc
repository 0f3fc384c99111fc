#include "sim/programs.h"

#include <cstring>

#include "absl/strings/str_format.h"
#include "arch/amd64/amd64.h"
#include "core/error.h"

#define SIM_PROGRAM_SYMBOLS(prog, ...)                \
  extern "C" const uint8_t sim_prog_##prog##_begin[]; \
  extern "C" const uint8_t sim_prog_##prog##_end[];   \
  extern "C" const uint8_t sim_prog_##prog##_entry[];

SIM_PROGRAM_SYMBOLS(loop_call)
SIM_PROGRAM_SYMBOLS(mem_access)
SIM_PROGRAM_SYMBOLS(cr3_switch)
SIM_PROGRAM_SYMBOLS(instructions)
SIM_PROGRAM_SYMBOLS(demand_paging)
SIM_PROGRAM_SYMBOLS(user_mode)
SIM_PROGRAM_SYMBOLS(probe_loads)
SIM_PROGRAM_SYMBOLS(self_modify)
SIM_PROGRAM_SYMBOLS(self_read)
SIM_PROGRAM_SYMBOLS(table_write)

extern "C" const uint8_t sim_prog_loop_call_func[], sim_prog_loop_call_done[];
extern "C" const uint8_t sim_prog_mem_access_read_insn[], sim_prog_mem_access_write_insn[],
    sim_prog_mem_access_call_insn[], sim_prog_mem_access_done[], sim_prog_mem_access_watched_code[],
    sim_prog_mem_access_watched_data[];
extern "C" const uint8_t sim_prog_cr3_switch_done[];
extern "C" const uint8_t sim_prog_instructions_cpuid[], sim_prog_instructions_in[],
    sim_prog_instructions_out[], sim_prog_instructions_vmcall[], sim_prog_instructions_wrmsr[],
    sim_prog_instructions_lgdt[], sim_prog_instructions_mov_cr4[], sim_prog_instructions_mov_cr0[],
    sim_prog_instructions_done[], sim_prog_instructions_ud_handler[];
extern "C" const uint8_t sim_prog_demand_paging_done[], sim_prog_demand_paging_pf_handler[],
    sim_prog_demand_paging_pf_data[];
extern "C" const uint8_t sim_prog_user_mode_syscall_entry[], sim_prog_user_mode_user_code[],
    sim_prog_user_mode_bp_user[], sim_prog_user_mode_bp_handler[], sim_prog_user_mode_done[],
    sim_prog_user_mode_kdata[], sim_prog_user_mode_vmcall_user[], sim_prog_user_mode_ud_handler[];
extern "C" const uint8_t sim_prog_probe_loads_probe_load[], sim_prog_probe_loads_done[];
extern "C" const uint8_t sim_prog_self_modify_patched[], sim_prog_self_modify_done[],
    sim_prog_self_modify_second_vmcall[];
extern "C" const uint8_t sim_prog_self_read_read_insn[], sim_prog_self_read_data_read[],
    sim_prog_self_read_data_write[], sim_prog_self_read_done[], sim_prog_self_read_data[];
extern "C" const uint8_t sim_prog_table_write_read_insn[], sim_prog_table_write_write_insn[],
    sim_prog_table_write_done[];

namespace vmi::sim {
namespace {

constexpr uint64_t kPage = Amd64::kPageSize;

std::vector<GuestProgram>* BuildTable() {
  auto* t = new std::vector<GuestProgram>();
#define IMAGE(prog)                                  \
  absl::Span<const uint8_t>(sim_prog_##prog##_begin, \
                            sim_prog_##prog##_end - sim_prog_##prog##_begin)
#define OFF(prog, sym) static_cast<uint64_t>(sim_prog_##prog##_##sym - sim_prog_##prog##_begin)
#define SYM(prog, sym) ProgramSymbol{#sym, OFF(prog, sym)}
  t->push_back(GuestProgram{"loop_call",
                            "calls func RDI times (default 100), counting in RBX, then halts",
                            IMAGE(loop_call),
                            OFF(loop_call, entry),
                            {SYM(loop_call, func), SYM(loop_call, done)},
                            {}});
  t->push_back(GuestProgram{
      "mem_access",
      "reads, writes and executes watched pages, then halts",
      IMAGE(mem_access),
      OFF(mem_access, entry),
      {SYM(mem_access, read_insn), SYM(mem_access, write_insn), SYM(mem_access, call_insn),
       SYM(mem_access, done), SYM(mem_access, watched_code), SYM(mem_access, watched_data)},
      {}});
  t->push_back(GuestProgram{"cr3_switch",
                            "RDX times: CR3=RSI, read [RCX]; CR3=RDI, read [RCX]; then halts",
                            IMAGE(cr3_switch),
                            OFF(cr3_switch, entry),
                            {SYM(cr3_switch, done)},
                            {}});
  t->push_back(GuestProgram{
      "instructions",
      "CPUID, IN, OUT, VMCALL, WRMSR, SGDT/LGDT/SIDT/LIDT, MOV CR4, MOV CR0",
      IMAGE(instructions),
      OFF(instructions, entry),
      {SYM(instructions, cpuid), SYM(instructions, in), SYM(instructions, out),
       SYM(instructions, vmcall), SYM(instructions, wrmsr), SYM(instructions, lgdt),
       SYM(instructions, mov_cr4), SYM(instructions, mov_cr0), SYM(instructions, done)},
      {{6, OFF(instructions, ud_handler)}}});
  t->push_back(GuestProgram{
      "demand_paging",
      "touches RSI pages from RDI; the #PF handler maps each on first touch",
      IMAGE(demand_paging),
      OFF(demand_paging, entry),
      {SYM(demand_paging, done), SYM(demand_paging, pf_handler), SYM(demand_paging, pf_data)},
      {{14, OFF(demand_paging, pf_handler)}}});
  t->push_back(GuestProgram{
      "user_mode",
      "IRETQ to user mode, RDI SYSCALLs, one VMCALL, one INT3, exit SYSCALL; kernel halts",
      IMAGE(user_mode),
      OFF(user_mode, entry),
      {SYM(user_mode, syscall_entry), SYM(user_mode, user_code), SYM(user_mode, bp_user),
       SYM(user_mode, bp_handler), SYM(user_mode, done), SYM(user_mode, kdata),
       SYM(user_mode, vmcall_user), SYM(user_mode, ud_handler)},
      {{3, OFF(user_mode, bp_handler)}, {6, OFF(user_mode, ud_handler)}}});
  t->push_back(GuestProgram{"probe_loads",
                            "loads one quadword from each of the RCX addresses listed at RSI",
                            IMAGE(probe_loads),
                            OFF(probe_loads, entry),
                            {SYM(probe_loads, probe_load), SYM(probe_loads, done)},
                            {}});
  t->push_back(GuestProgram{"self_modify",
                            "rewrites the code of a function it called, between two VMCALLs",
                            IMAGE(self_modify),
                            OFF(self_modify, entry),
                            {SYM(self_modify, patched), SYM(self_modify, second_vmcall), SYM(self_modify, done)},
                            {}});
  t->push_back(GuestProgram{
      "self_read",
      "RDI times adds its own code page's first quadword to RBX; increments `data`; halts",
      IMAGE(self_read),
      OFF(self_read, entry),
      {SYM(self_read, read_insn), SYM(self_read, data_read), SYM(self_read, data_write),
       SYM(self_read, done), SYM(self_read, data)},
      {}});
  t->push_back(GuestProgram{"table_write",
                            "loads the quadword at RDI, stores RDX at RSI, then halts",
                            IMAGE(table_write),
                            OFF(table_write, entry),
                            {SYM(table_write, read_insn), SYM(table_write, write_insn),
                             SYM(table_write, done)},
                            {}});
#undef SYM
#undef OFF
#undef IMAGE
  return t;
}

}  // namespace

absl::StatusOr<uint64_t> GuestProgram::Offset(absl::string_view symbol) const {
  for (const ProgramSymbol& s : symbols) {
    if (symbol == s.name) return s.offset;
  }
  if (symbol == "entry") return entry;
  return absl::NotFoundError(
      absl::StrFormat("program %s: no symbol %s", name, std::string(symbol)));
}

absl::Span<const GuestProgram> AllPrograms() {
  static const std::vector<GuestProgram>* table = BuildTable();
  return *table;
}

absl::StatusOr<const GuestProgram*> FindProgram(absl::string_view name) {
  for (const GuestProgram& p : AllPrograms()) {
    if (name == p.name) return &p;
  }
  return absl::NotFoundError(
      absl::StrFormat("find_program(%s): no such program", std::string(name)));
}

absl::StatusOr<Va> LoadedProgram::Symbol(absl::string_view name) const {
  VMI_ASSIGN_OR_RETURN(uint64_t off, program->Offset(name));
  return base + off;
}

absl::StatusOr<Pa> LoadedProgram::SymbolPa(absl::string_view name) const {
  VMI_ASSIGN_OR_RETURN(uint64_t off, program->Offset(name));
  return pa + off;
}

absl::StatusOr<LoadedProgram> LoadProgram(GuestBuilder& builder, AddressSpace& as,
                                          const GuestProgram& program, Va base, uint32_t flags) {
  const uint64_t size = (program.image.size() + kPage - 1) / kPage * kPage;
  VMI_ASSIGN_OR_RETURN(Pa pa, builder.AllocateFrames(size / kPage));
  VMI_RETURN_IF_ERROR(builder.machine().WritePhys(pa, program.image));
  VMI_RETURN_IF_ERROR(as.Map(base, pa, size, flags));
  for (const ProgramHandler& h : program.handlers) {
    VMI_RETURN_IF_ERROR(builder.SetInterruptGate(h.vector, base + h.offset, 0, 3));
  }
  return LoadedProgram{&program, base, pa};
}

absl::StatusOr<StandardGuest> BuildStandardGuest(Machine& machine, absl::string_view name,
                                                 const StandardGuestOptions& options) {
  VMI_ASSIGN_OR_RETURN(const GuestProgram* program, FindProgram(name));
  StandardGuest g;
  g.builder = std::make_unique<GuestBuilder>(&machine);
  VMI_ASSIGN_OR_RETURN(g.space, g.builder->CreateAddressSpace(options.paging_levels));
  VMI_RETURN_IF_ERROR(g.builder->MapSystemTables(*g.space));
  VMI_ASSIGN_OR_RETURN(g.program, LoadProgram(*g.builder, *g.space, *program, Va(kProgramVa),
                                              options.program_flags));
  for (uint16_t i = 0; i < machine.vcpu_count(); ++i) {
    VMI_ASSIGN_OR_RETURN(Va top, g.builder->MapStack(*g.space, Va(kStackTopVa - i * 0x10000ull),
                                                     options.stack_pages));
    VMI_RETURN_IF_ERROR(g.builder->StartVcpu(VcpuId(i), *g.space, g.program.entry(), top));
  }
  return g;
}

}  // namespace vmi::sim
