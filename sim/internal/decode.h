// Recognises the few x86-64 instructions the simulator intercepts before
// they execute (MOV to CR, WRMSR, CPUID, IN/OUT/INS/OUTS, VMCALL, descriptor
// table loads and stores). Everything else decodes as kOther.
//
// Thread-safety: stateless; thread-safe.

#ifndef VMI_SIM_INTERNAL_DECODE_H_
#define VMI_SIM_INTERNAL_DECODE_H_

#include <cstddef>
#include <cstdint>
#include <optional>

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

// Where an instruction's data access goes, for deriving the guest-linear
// address of a memory-access violation the way hardware reports it (from
// the instruction, not from a search of the page tables).
struct MemoryOperand {
  enum class Kind : uint8_t {
    kModrm,    // base + index * scale + disp (+ FS/GS base); RIP-relative if rip_relative
    kPush,     // implicit store below RSP (PUSH, CALL, PUSHF, ENTER)
    kPop,      // implicit load at RSP (POP, RET, POPF, LEAVE reads at RBP)
    kString,   // MOVS/CMPS/STOS/LODS/SCAS/INS/OUTS: at RSI and/or RDI
  };
  Kind kind = Kind::kModrm;
  int base = -1;   // GPR number 0..15 (RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15), -1 none
  int index = -1;  // GPR number, -1 none
  uint8_t scale = 1;
  int64_t disp = 0;
  bool rip_relative = false;
  uint8_t end = 0;         // bytes up to and including the displacement
  int segment = -1;        // 4 = FS, 5 = GS override, -1 none
  bool address32 = false;  // 0x67: the address is truncated to 32 bits
};

// The memory operand of the instruction at `bytes`, or nullopt when it has
// none this decoder knows (register forms, VEX/EVEX encodings, ...).
std::optional<MemoryOperand> DecodeMemoryOperand(const uint8_t* bytes, size_t n);

}  // namespace vmi::sim::sim_internal

#endif  // VMI_SIM_INTERNAL_DECODE_H_
