// A PageReader over a simulated machine's RAM, and the instruction GFN the
// drivers built on the simulator (SimDriver, the simulated Xen) report in
// INT3 and single-step events. Both read guest frames as the guest wrote
// them: a view's remaps do not apply, as in Xen, whose walk for the gfn of
// RIP reads the guest's page tables through the host p2m.
//
// Thread-safety: thread-compatible, like the machine.

#ifndef VMI_DRIVERS_SIM_MACHINE_READER_H_
#define VMI_DRIVERS_SIM_MACHINE_READER_H_

#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "arch/amd64/instruction_gfn.h"
#include "arch/amd64/registers.h"
#include "core/types.h"
#include "sim/machine.h"

namespace vmi::sim {

class MachinePageReader {
 public:
  explicit MachinePageReader(Machine& machine) : machine_(&machine) {}

  // The frame's live bytes; OutOfRange beyond the machine's RAM.
  absl::StatusOr<absl::Span<const uint8_t>> ReadPage(Gfn gfn) {
    absl::StatusOr<uint8_t*> frame = machine_->FramePointer(gfn);
    if (!frame.ok()) return frame.status();
    return absl::Span<const uint8_t>(*frame, 4096);
  }

 private:
  Machine* machine_;
};

// The guest frame of the instruction at `regs`' RIP under its CR3 and paging
// mode (amd64::InstructionGfn over the machine's RAM): what an INT3 or
// single-step event carries as instruction_gfn. Empty when the fetch would
// fault.
inline std::optional<Gfn> InstructionGfn(Machine& machine, const amd64::Registers& regs) {
  MachinePageReader reader(machine);
  return amd64::InstructionGfn(reader, regs);
}

}  // namespace vmi::sim

#endif  // VMI_DRIVERS_SIM_MACHINE_READER_H_
