#include "sim/internal/decode.h"

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
