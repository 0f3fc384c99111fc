// Recognises the few x86-64 instructions the simulator intercepts before
// they execute (MOV to CR, WRMSR, CPUID, IN/OUT/INS/OUTS, VMCALL, descriptor
// table loads and stores). Everything else decodes as kOther.
//
// Thread-safety: stateless; thread-safe.

#ifndef VMI_SIM_INTERNAL_DECODE_H_
#define VMI_SIM_INTERNAL_DECODE_H_

#include <cstddef>
#include <cstdint>

namespace vmi::sim::sim_internal {

enum class InsnKind : uint8_t {
  kOther,
  kMovToCr,
  kWrmsr,
  kCpuid,
  kIo,
  kVmcall,
  kLgdt,
  kLidt,
  kLldt,
  kLtr,
  kSgdt,
  kSidt,
  kSldt,
  kStr,
  kInvlpg,
  kClts,  // writes CR0
  kLmsw,  // writes CR0 (register form only; gpr = source)
};

struct DecodedInsn {
  InsnKind kind = InsnKind::kOther;
  uint8_t length = 0;  // bytes up to the opcode/ModRM (enough to skip register forms)
  uint8_t cr = 0;      // kMovToCr: destination control register
  uint8_t gpr = 0;     // kMovToCr: source register (0=RAX .. 15=R15)
  // kIo
  bool io_in = false;
  bool io_string = false;
  bool io_port_in_dx = false;
  uint8_t io_size = 0;
  uint8_t io_port_imm = 0;
};

// `bytes` holds up to 15 bytes at RIP (fewer near the end of mapped memory).
DecodedInsn Decode(const uint8_t* bytes, size_t n);

}  // namespace vmi::sim::sim_internal

#endif  // VMI_SIM_INTERNAL_DECODE_H_
