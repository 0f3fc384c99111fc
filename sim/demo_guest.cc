#include "sim/demo_guest.h"

#include <cstring>
#include <string>

#include "core/error.h"
#include "sim/guest_builder.h"
#include "sim/machine.h"
#include "sim/programs.h"

extern "C" const uint8_t vmi_demo_begin[], vmi_demo_entry[], vmi_demo_tick[], vmi_demo_counter[],
    vmi_demo_exception[], vmi_demo_end[];

namespace vmi::sim {
namespace {

uint64_t Offset(const uint8_t* symbol) { return static_cast<uint64_t>(symbol - vmi_demo_begin); }

absl::Status WriteString(Machine& m, Pa pa, const std::string& s) {
  return m.WritePhys(pa, absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.c_str()), s.size() + 1));
}

}  // namespace

absl::StatusOr<DemoGuest> BuildDemoGuest() {
  static const GuestProgram kProgram{
      "demo",
      "vmi demo: a kernel loop calling tick, a watched counter, CR3 switches, user pages",
      absl::Span<const uint8_t>(vmi_demo_begin, vmi_demo_end - vmi_demo_begin),
      Offset(vmi_demo_entry),
      {{"tick", Offset(vmi_demo_tick)}, {"counter", Offset(vmi_demo_counter)}},
      {}};

  MachineOptions options;
  options.ram_size = 32ull << 20;
  VMI_ASSIGN_OR_RETURN(std::unique_ptr<Machine> machine, Machine::Create(options));
  GuestBuilder b(machine.get());
  VMI_ASSIGN_OR_RETURN(AddressSpace * a, b.CreateAddressSpace(4));
  VMI_ASSIGN_OR_RETURN(AddressSpace * c, b.CreateAddressSpace(4));
  VMI_RETURN_IF_ERROR(b.MapSystemTables(*a));
  VMI_RETURN_IF_ERROR(b.MapSystemTables(*c));
  VMI_ASSIGN_OR_RETURN(LoadedProgram loaded,
                       LoadProgram(b, *a, kProgram, Va(kProgramVa)));
  VMI_RETURN_IF_ERROR(c->Map(Va(kProgramVa), loaded.pa, kProgram.image.size(),
                             page_flags::kWritable));
  for (uint8_t vector = 0; vector < 32; ++vector) {
    VMI_RETURN_IF_ERROR(b.SetInterruptGate(vector, loaded.base + Offset(vmi_demo_exception)));
  }
  // One kernel stack, mapped in both spaces.
  constexpr uint64_t kStackPages = 4;
  const Va top(kStackTopVa);
  VMI_RETURN_IF_ERROR(b.MapStack(*a, top, kStackPages).status());
  for (uint64_t i = 1; i <= kStackPages; ++i) {
    VMI_ASSIGN_OR_RETURN(Pa pa, a->Translate(top - i * 4096));
    VMI_RETURN_IF_ERROR(c->Map(top - i * 4096, pa, 4096,
                               page_flags::kWritable | page_flags::kNoExecute));
  }
  // A different user page at the same address in each space.
  const uint32_t user = page_flags::kUser | page_flags::kWritable | page_flags::kNoExecute;
  VMI_ASSIGN_OR_RETURN(Gfn ua, b.AllocateFrame());
  VMI_ASSIGN_OR_RETURN(Gfn uc, b.AllocateFrame());
  VMI_RETURN_IF_ERROR(WriteString(*machine, Pa(ua.value() << 12), "hello from user space A"));
  VMI_RETURN_IF_ERROR(WriteString(*machine, Pa(uc.value() << 12), "hello from user space B"));
  VMI_RETURN_IF_ERROR(a->Map(Va(DemoLayout::kUserVa), Pa(ua.value() << 12), 4096, user));
  VMI_RETURN_IF_ERROR(c->Map(Va(DemoLayout::kUserVa), Pa(uc.value() << 12), 4096, user));

  VMI_RETURN_IF_ERROR(b.StartVcpu(VcpuId(0), *a, loaded.entry(), top));
  VMI_ASSIGN_OR_RETURN(amd64::Registers regs, machine->GetRegisters(VcpuId(0)));
  amd64::GpRegisters gp = regs.gp();
  gp.rsi = a->cr3();
  gp.rdi = c->cr3();
  VMI_RETURN_IF_ERROR(machine->SetGpRegisters(VcpuId(0), gp));

  DemoLayout layout{loaded.base + Offset(vmi_demo_tick), loaded.base + Offset(vmi_demo_counter),
                    a->cr3(), c->cr3()};
  return DemoGuest{std::move(machine), layout};
}

}  // namespace vmi::sim
