// The Unicorn hooks of a vCPU's engines (what stops a run: intercepted
// instructions, exceptions, EPT-like permission faults, SYSCALL, port I/O)
// and the derivation of a violating access's guest-linear address, which
// Unicorn does not report (its memory hooks see guest-physical addresses).
//
// Thread-safety: stateless functions; the hooks run on the thread that runs
// the engine.

#ifndef VMI_SIM_INTERNAL_HOOKS_H_
#define VMI_SIM_INTERNAL_HOOKS_H_

#include <cstdint>
#include <vector>

#include "absl/functional/function_ref.h"
#include "sim/internal/decode.h"

namespace vmi::sim::sim_internal {

// The linear addresses the memory operand `op` of the instruction at `rip`
// may access, given its registers (`gpr(n)`: GPR n in x86 encoding order)
// and the FS/GS bases: the effective address, RSP-8/RSP/RBP for implicit
// stack operands, RDI/RSI for string operands, and for RIP-relative operands
// one candidate per possible immediate width (the decoder does not size
// immediates). The caller keeps the candidate whose page maps the faulting
// frame.
std::vector<uint64_t> GlaCandidates(const MemoryOperand& op, absl::FunctionRef<uint64_t(int)> gpr,
                                    uint64_t fs_base, uint64_t gs_base, uint64_t rip);

}  // namespace vmi::sim::sim_internal

#endif  // VMI_SIM_INTERNAL_HOOKS_H_
