#include "sim/internal/decode.h"

#include <cstring>

namespace vmi::sim::sim_internal {

DecodedInsn Decode(const uint8_t* bytes, size_t n) {
  DecodedInsn d;
  size_t i = 0;
  bool opsize16 = false;
  uint8_t rex = 0;
  for (; i < n && i < 14; ++i) {
    const uint8_t b = bytes[i];
    if (b == 0x66) {
      opsize16 = true;
    } else if (b == 0x67 || b == 0xf0 || b == 0xf2 || b == 0xf3 || b == 0x2e || b == 0x36 ||
               b == 0x3e || b == 0x26 || b == 0x64 || b == 0x65) {
      // other prefixes
    } else {
      break;
    }
    rex = 0;
  }
  if (i < n && (bytes[i] & 0xf0) == 0x40) rex = bytes[i++];
  if (i >= n) return d;
  const uint8_t op = bytes[i];
  auto io = [&](bool in, bool dx, bool str, bool byte) {
    d.kind = InsnKind::kIo;
    d.io_in = in;
    d.io_port_in_dx = dx;
    d.io_string = str;
    d.io_size = byte ? 1 : (opsize16 ? 2 : 4);
    d.length = static_cast<uint8_t>(i + 1 + ((!dx && !str) ? 1 : 0));
    if (!dx && !str && i + 1 < n) d.io_port_imm = bytes[i + 1];
  };
  switch (op) {
    case 0xe4:
      io(true, false, false, true);
      return d;
    case 0xe5:
      io(true, false, false, false);
      return d;
    case 0xe6:
      io(false, false, false, true);
      return d;
    case 0xe7:
      io(false, false, false, false);
      return d;
    case 0xec:
      io(true, true, false, true);
      return d;
    case 0xed:
      io(true, true, false, false);
      return d;
    case 0xee:
      io(false, true, false, true);
      return d;
    case 0xef:
      io(false, true, false, false);
      return d;
    case 0x6c:
      io(true, true, true, true);
      return d;
    case 0x6d:
      io(true, true, true, false);
      return d;
    case 0x6e:
      io(false, true, true, true);
      return d;
    case 0x6f:
      io(false, true, true, false);
      return d;
    default:
      break;
  }
  if (op != 0x0f || i + 1 >= n) return d;
  const uint8_t op2 = bytes[i + 1];
  const size_t modrm_at = i + 2;
  switch (op2) {
    case 0x30:
      d.kind = InsnKind::kWrmsr;
      d.length = static_cast<uint8_t>(i + 2);
      return d;
    case 0x06:
      d.kind = InsnKind::kClts;
      d.length = static_cast<uint8_t>(i + 2);
      return d;
    case 0xa2:
      d.kind = InsnKind::kCpuid;
      d.length = static_cast<uint8_t>(i + 2);
      return d;
    case 0x22: {
      if (modrm_at >= n) return d;
      const uint8_t modrm = bytes[modrm_at];
      d.kind = InsnKind::kMovToCr;
      d.cr = static_cast<uint8_t>(((modrm >> 3) & 7) | ((rex & 4) ? 8 : 0));
      d.gpr = static_cast<uint8_t>((modrm & 7) | ((rex & 1) ? 8 : 0));
      d.length = static_cast<uint8_t>(modrm_at + 1);
      return d;
    }
    case 0x01: {
      if (modrm_at >= n) return d;
      const uint8_t modrm = bytes[modrm_at];
      if (modrm == 0xc1 || modrm == 0xd9) {  // VMCALL, VMMCALL
        d.kind = InsnKind::kVmcall;
        d.length = static_cast<uint8_t>(modrm_at + 1);
        return d;
      }
      if ((modrm >> 6) == 3) {
        if (((modrm >> 3) & 7) == 6) {
          d.kind = InsnKind::kLmsw;
          d.gpr = static_cast<uint8_t>((modrm & 7) | ((rex & 1) ? 8 : 0));
        }
        return d;
      }
      if (((modrm >> 3) & 7) == 7) {
        d.kind = InsnKind::kInvlpg;
        return d;
      }
      static constexpr InsnKind kOps[4] = {InsnKind::kSgdt, InsnKind::kSidt, InsnKind::kLgdt,
                                           InsnKind::kLidt};
      const int reg = (modrm >> 3) & 7;
      if (reg < 4) d.kind = kOps[reg];
      return d;
    }
    case 0x00: {
      if (modrm_at >= n) return d;
      static constexpr InsnKind kOps[4] = {InsnKind::kSldt, InsnKind::kStr, InsnKind::kLldt,
                                           InsnKind::kLtr};
      const int reg = (bytes[modrm_at] >> 3) & 7;
      if (reg < 4) d.kind = kOps[reg];
      return d;
    }
    default:
      return d;
  }
}

}  // namespace vmi::sim::sim_internal

namespace vmi::sim::sim_internal {
namespace {

// One-byte opcodes followed by a ModRM byte (64-bit mode).
bool OneByteHasModrm(uint8_t op) {
  if (op < 0x40) return (op & 7) < 4;  // ALU r/m forms: 00-03, 08-0b, ...
  switch (op) {
    case 0x63: case 0x69: case 0x6b: case 0xc0: case 0xc1: case 0xc6: case 0xc7:
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: case 0xf6: case 0xf7: case 0xfe: case 0xff:
      return true;
    default:
      return (op >= 0x80 && op <= 0x8f) || (op >= 0xd8 && op <= 0xdf);
  }
}

// Two-byte (0F xx) opcodes without a ModRM byte.
bool TwoByteHasModrm(uint8_t op) {
  if ((op >= 0x30 && op <= 0x37) || (op >= 0x80 && op <= 0x8f) || (op >= 0xc8 && op <= 0xcf)) {
    return false;
  }
  switch (op) {
    case 0x05: case 0x06: case 0x07: case 0x08: case 0x09: case 0x0b: case 0x0e: case 0x77:
    case 0xa0: case 0xa1: case 0xa2: case 0xa8: case 0xa9: case 0xaa:
      return false;
    default:
      return true;
  }
}

}  // namespace

std::optional<MemoryOperand> DecodeMemoryOperand(const uint8_t* bytes, size_t n) {
  MemoryOperand m;
  size_t i = 0;
  for (; i < n; ++i) {
    const uint8_t b = bytes[i];
    if (b == 0x64 || b == 0x65) {
      m.segment = b == 0x64 ? 4 : 5;
    } else if (b == 0x67) {
      m.address32 = true;
    } else if (!(b == 0x26 || b == 0x2e || b == 0x36 || b == 0x3e || b == 0x66 || b == 0xf0 ||
                 b == 0xf2 || b == 0xf3)) {
      break;
    }
  }
  uint8_t rex = 0;
  if (i < n && (bytes[i] & 0xf0) == 0x40) rex = bytes[i++];
  if (i >= n) return std::nullopt;
  const uint8_t op = bytes[i++];
  bool has_modrm;
  if (op == 0x0f) {
    if (i >= n) return std::nullopt;
    const uint8_t op2 = bytes[i++];
    if (op2 == 0x38 || op2 == 0x3a) {
      if (i >= n) return std::nullopt;
      ++i;
      has_modrm = true;
    } else {
      has_modrm = TwoByteHasModrm(op2);
    }
  } else if (op == 0xc4 || op == 0xc5 || op == 0x62) {
    return std::nullopt;  // VEX / EVEX
  } else {
    if ((op >= 0x50 && op <= 0x57) || op == 0x68 || op == 0x6a || op == 0x9c || op == 0xe8 ||
        op == 0xc8) {
      m.kind = MemoryOperand::Kind::kPush;
      return m;
    }
    if ((op >= 0x58 && op <= 0x5f) || op == 0x9d || op == 0xc2 || op == 0xc3 || op == 0xc9) {
      m.kind = MemoryOperand::Kind::kPop;
      return m;
    }
    if ((op >= 0xa4 && op <= 0xa7) || (op >= 0xaa && op <= 0xaf) || (op >= 0x6c && op <= 0x6f)) {
      m.kind = MemoryOperand::Kind::kString;
      return m;
    }
    has_modrm = OneByteHasModrm(op);
  }
  if (!has_modrm || i >= n) return std::nullopt;
  const uint8_t modrm = bytes[i++];
  const uint8_t mod = modrm >> 6, rm = modrm & 7;
  if (mod == 3) {
    // A register operand: FF /2 (call) and FF /6 (push) still touch the stack.
    if (op == 0xff && (((modrm >> 3) & 7) == 2 || ((modrm >> 3) & 7) == 6)) {
      m.kind = MemoryOperand::Kind::kPush;
      return m;
    }
    return std::nullopt;
  }
  int disp_size = mod == 1 ? 1 : mod == 2 ? 4 : 0;
  if (rm == 4) {
    if (i >= n) return std::nullopt;
    const uint8_t sib = bytes[i++];
    m.scale = static_cast<uint8_t>(1u << (sib >> 6));
    const int index = ((sib >> 3) & 7) | ((rex & 2) << 2);
    if (index != 4) m.index = index;
    if ((sib & 7) == 5 && mod == 0) {
      disp_size = 4;  // no base
    } else {
      m.base = (sib & 7) | ((rex & 1) << 3);
    }
  } else if (rm == 5 && mod == 0) {
    m.rip_relative = true;
    disp_size = 4;
  } else {
    m.base = rm | ((rex & 1) << 3);
  }
  if (i + disp_size > n) return std::nullopt;
  if (disp_size == 1) {
    m.disp = static_cast<int8_t>(bytes[i]);
  } else if (disp_size == 4) {
    int32_t d;
    std::memcpy(&d, bytes + i, 4);
    m.disp = d;
  }
  i += disp_size;
  m.end = static_cast<uint8_t>(i);
  return m;
}

}  // namespace vmi::sim::sim_internal
