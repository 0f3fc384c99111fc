// Named views of x86-64 control and status words: CR0, CR3, CR4, EFER,
// RFLAGS, segment selectors, segment access rights (VMX AR-byte layout) and
// long-mode IDT gate descriptors. Each wraps the raw value, exposes the
// architectural fields by name, and prints the set flags by name ("PE|WP|PG")
// for logs and the CLI.
//
// Thread-safety: plain values; thread-compatible.

#ifndef VMI_ARCH_AMD64_BITFIELDS_H_
#define VMI_ARCH_AMD64_BITFIELDS_H_

#include <array>
#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vmi::amd64 {
namespace amd64_internal {

struct FlagName {
  uint64_t mask;
  const char* name;
};

// "A|B|C" for the flags of `names` set in `value`; bits set in `value` but
// covered by neither `names` nor `ignored` are appended as one hex number, so
// that nothing set is silently dropped. "0" when nothing is printed.
inline std::string FlagsToString(uint64_t value, std::initializer_list<FlagName> names,
                                 uint64_t ignored = 0) {
  std::string out;
  uint64_t known = ignored;
  for (const FlagName& f : names) {
    known |= f.mask;
    if ((value & f.mask) != 0) {
      if (!out.empty()) out += '|';
      out += f.name;
    }
  }
  if (uint64_t rest = value & ~known; rest != 0) {
    if (!out.empty()) out += '|';
    absl::StrAppend(&out, "0x", absl::Hex(rest));
  }
  return out.empty() ? "0" : out;
}

// Shared behaviour of the register views: the raw value, bit tests,
// functional updates, equality and printing through Derived::ToString().
template <typename Derived, typename Rep>
class Bitfield {
 public:
  constexpr Bitfield() = default;
  constexpr explicit Bitfield(Rep value) : value_(value) {}

  constexpr Rep value() const { return value_; }
  // True when every bit of `mask` is set.
  constexpr bool Has(Rep mask) const { return (value_ & mask) == mask; }
  // A copy with the bits of `mask` set (on) or cleared (off).
  constexpr Derived With(Rep mask, bool on = true) const {
    return Derived(on ? (value_ | mask) : (value_ & ~mask));
  }

  friend constexpr bool operator==(Derived a, Derived b) { return a.value_ == b.value_; }

  friend absl::FormatConvertResult<absl::FormatConversionCharSet::kString> AbslFormatConvert(
      Derived d, const absl::FormatConversionSpec&, absl::FormatSink* sink) {
    sink->Append(d.ToString());
    return {true};
  }
  friend std::ostream& operator<<(std::ostream& os, Derived d) { return os << d.ToString(); }

 private:
  Rep value_ = 0;
};

constexpr uint64_t Bit(unsigned n) { return uint64_t{1} << n; }
constexpr uint64_t Bits(uint64_t value, unsigned lo, unsigned count) {
  return (value >> lo) & ((uint64_t{1} << count) - 1);
}

}  // namespace amd64_internal

// CR0: protection, paging and FPU control.
class Cr0 : public amd64_internal::Bitfield<Cr0, uint64_t> {
 public:
  using Bitfield::Bitfield;
  static constexpr uint64_t kPe = amd64_internal::Bit(0);   // protected mode
  static constexpr uint64_t kMp = amd64_internal::Bit(1);   // monitor coprocessor
  static constexpr uint64_t kEm = amd64_internal::Bit(2);   // x87 emulation
  static constexpr uint64_t kTs = amd64_internal::Bit(3);   // task switched
  static constexpr uint64_t kEt = amd64_internal::Bit(4);   // extension type
  static constexpr uint64_t kNe = amd64_internal::Bit(5);   // numeric error
  static constexpr uint64_t kWp = amd64_internal::Bit(16);  // supervisor write protect
  static constexpr uint64_t kAm = amd64_internal::Bit(18);  // alignment mask
  static constexpr uint64_t kNw = amd64_internal::Bit(29);  // not write-through
  static constexpr uint64_t kCd = amd64_internal::Bit(30);  // cache disable
  static constexpr uint64_t kPg = amd64_internal::Bit(31);  // paging

  constexpr bool pe() const { return Has(kPe); }
  constexpr bool mp() const { return Has(kMp); }
  constexpr bool em() const { return Has(kEm); }
  constexpr bool ts() const { return Has(kTs); }
  constexpr bool et() const { return Has(kEt); }
  constexpr bool ne() const { return Has(kNe); }
  constexpr bool wp() const { return Has(kWp); }
  constexpr bool am() const { return Has(kAm); }
  constexpr bool nw() const { return Has(kNw); }
  constexpr bool cd() const { return Has(kCd); }
  constexpr bool pg() const { return Has(kPg); }

  std::string ToString() const {
    return amd64_internal::FlagsToString(value(), {{kPe, "PE"},
                                                   {kMp, "MP"},
                                                   {kEm, "EM"},
                                                   {kTs, "TS"},
                                                   {kEt, "ET"},
                                                   {kNe, "NE"},
                                                   {kWp, "WP"},
                                                   {kAm, "AM"},
                                                   {kNw, "NW"},
                                                   {kCd, "CD"},
                                                   {kPg, "PG"}});
  }
};

// CR3: the paging root. Which bits form the table address depends on the
// paging mode, and whether the low 12 bits are a PCID or the PWT/PCD flags
// depends on CR4.PCIDE; the caller picks the matching accessor.
class Cr3 : public amd64_internal::Bitfield<Cr3, uint64_t> {
 public:
  using Bitfield::Bitfield;
  static constexpr uint64_t kPwt = amd64_internal::Bit(3);
  static constexpr uint64_t kPcd = amd64_internal::Bit(4);
  // On a MOV to CR3 with CR4.PCIDE: do not flush the PCID's TLB entries.
  static constexpr uint64_t kNoFlush = amd64_internal::Bit(63);

  constexpr bool pwt() const { return Has(kPwt); }
  constexpr bool pcd() const { return Has(kPcd); }
  // Process-context identifier (meaningful only when CR4.PCIDE is set).
  constexpr uint16_t pcid() const { return static_cast<uint16_t>(value() & 0xfff); }
  constexpr bool noflush() const { return Has(kNoFlush); }
  // PML4 / PML5 table address (4- and 5-level paging): bits 51:12.
  constexpr uint64_t table_address_4level() const { return value() & 0x000f'ffff'ffff'f000; }
  // PAE page-directory-pointer table address: bits 31:5.
  constexpr uint64_t pae_pdpt_address() const { return value() & 0xffff'ffe0; }
  // 32-bit (non-PAE) page directory address: bits 31:12.
  constexpr uint64_t legacy_address() const { return value() & 0xffff'f000; }

  // "base=0x1ad000 PWT" or, with `pcide`, "base=0x1ad000 pcid=0x5 NOFLUSH".
  std::string ToString(bool pcide = false) const {
    std::string out = absl::StrCat("base=0x", absl::Hex(table_address_4level()));
    if (pcide) {
      absl::StrAppend(&out, " pcid=0x", absl::Hex(pcid()));
    } else {
      if (pwt()) out += " PWT";
      if (pcd()) out += " PCD";
    }
    if (noflush()) out += " NOFLUSH";
    return out;
  }
};

// CR4: architectural extensions.
class Cr4 : public amd64_internal::Bitfield<Cr4, uint64_t> {
 public:
  using Bitfield::Bitfield;
  static constexpr uint64_t kVme = amd64_internal::Bit(0);
  static constexpr uint64_t kPvi = amd64_internal::Bit(1);
  static constexpr uint64_t kTsd = amd64_internal::Bit(2);
  static constexpr uint64_t kDe = amd64_internal::Bit(3);
  static constexpr uint64_t kPse = amd64_internal::Bit(4);
  static constexpr uint64_t kPae = amd64_internal::Bit(5);
  static constexpr uint64_t kMce = amd64_internal::Bit(6);
  static constexpr uint64_t kPge = amd64_internal::Bit(7);
  static constexpr uint64_t kPce = amd64_internal::Bit(8);
  static constexpr uint64_t kOsfxsr = amd64_internal::Bit(9);
  static constexpr uint64_t kOsxmmexcpt = amd64_internal::Bit(10);
  static constexpr uint64_t kUmip = amd64_internal::Bit(11);
  static constexpr uint64_t kLa57 = amd64_internal::Bit(12);  // 5-level paging
  static constexpr uint64_t kVmxe = amd64_internal::Bit(13);
  static constexpr uint64_t kSmxe = amd64_internal::Bit(14);
  static constexpr uint64_t kFsgsbase = amd64_internal::Bit(16);
  static constexpr uint64_t kPcide = amd64_internal::Bit(17);
  static constexpr uint64_t kOsxsave = amd64_internal::Bit(18);
  static constexpr uint64_t kSmep = amd64_internal::Bit(20);
  static constexpr uint64_t kSmap = amd64_internal::Bit(21);
  static constexpr uint64_t kPke = amd64_internal::Bit(22);
  static constexpr uint64_t kCet = amd64_internal::Bit(23);
  static constexpr uint64_t kPks = amd64_internal::Bit(24);

  constexpr bool vme() const { return Has(kVme); }
  constexpr bool pvi() const { return Has(kPvi); }
  constexpr bool tsd() const { return Has(kTsd); }
  constexpr bool de() const { return Has(kDe); }
  constexpr bool pse() const { return Has(kPse); }
  constexpr bool pae() const { return Has(kPae); }
  constexpr bool mce() const { return Has(kMce); }
  constexpr bool pge() const { return Has(kPge); }
  constexpr bool pce() const { return Has(kPce); }
  constexpr bool osfxsr() const { return Has(kOsfxsr); }
  constexpr bool osxmmexcpt() const { return Has(kOsxmmexcpt); }
  constexpr bool umip() const { return Has(kUmip); }
  constexpr bool la57() const { return Has(kLa57); }
  constexpr bool vmxe() const { return Has(kVmxe); }
  constexpr bool smxe() const { return Has(kSmxe); }
  constexpr bool fsgsbase() const { return Has(kFsgsbase); }
  constexpr bool pcide() const { return Has(kPcide); }
  constexpr bool osxsave() const { return Has(kOsxsave); }
  constexpr bool smep() const { return Has(kSmep); }
  constexpr bool smap() const { return Has(kSmap); }
  constexpr bool pke() const { return Has(kPke); }
  constexpr bool cet() const { return Has(kCet); }
  constexpr bool pks() const { return Has(kPks); }

  std::string ToString() const {
    return amd64_internal::FlagsToString(value(), {{kVme, "VME"},
                                                   {kPvi, "PVI"},
                                                   {kTsd, "TSD"},
                                                   {kDe, "DE"},
                                                   {kPse, "PSE"},
                                                   {kPae, "PAE"},
                                                   {kMce, "MCE"},
                                                   {kPge, "PGE"},
                                                   {kPce, "PCE"},
                                                   {kOsfxsr, "OSFXSR"},
                                                   {kOsxmmexcpt, "OSXMMEXCPT"},
                                                   {kUmip, "UMIP"},
                                                   {kLa57, "LA57"},
                                                   {kVmxe, "VMXE"},
                                                   {kSmxe, "SMXE"},
                                                   {kFsgsbase, "FSGSBASE"},
                                                   {kPcide, "PCIDE"},
                                                   {kOsxsave, "OSXSAVE"},
                                                   {kSmep, "SMEP"},
                                                   {kSmap, "SMAP"},
                                                   {kPke, "PKE"},
                                                   {kCet, "CET"},
                                                   {kPks, "PKS"}});
  }
};

// IA32_EFER (MSR 0xC0000080).
class Efer : public amd64_internal::Bitfield<Efer, uint64_t> {
 public:
  using Bitfield::Bitfield;
  static constexpr uint64_t kSce = amd64_internal::Bit(0);     // SYSCALL enable
  static constexpr uint64_t kLme = amd64_internal::Bit(8);     // long mode enable
  static constexpr uint64_t kLma = amd64_internal::Bit(10);    // long mode active
  static constexpr uint64_t kNxe = amd64_internal::Bit(11);    // no-execute enable
  static constexpr uint64_t kSvme = amd64_internal::Bit(12);   // SVM enable (AMD)
  static constexpr uint64_t kLmsle = amd64_internal::Bit(13);  // long-mode segment limits
  static constexpr uint64_t kFfxsr = amd64_internal::Bit(14);  // fast FXSAVE/FXRSTOR
  static constexpr uint64_t kTce = amd64_internal::Bit(15);    // translation cache extension

  constexpr bool sce() const { return Has(kSce); }
  constexpr bool lme() const { return Has(kLme); }
  constexpr bool lma() const { return Has(kLma); }
  constexpr bool nxe() const { return Has(kNxe); }
  constexpr bool svme() const { return Has(kSvme); }
  constexpr bool lmsle() const { return Has(kLmsle); }
  constexpr bool ffxsr() const { return Has(kFfxsr); }
  constexpr bool tce() const { return Has(kTce); }

  std::string ToString() const {
    return amd64_internal::FlagsToString(value(), {{kSce, "SCE"},
                                                   {kLme, "LME"},
                                                   {kLma, "LMA"},
                                                   {kNxe, "NXE"},
                                                   {kSvme, "SVME"},
                                                   {kLmsle, "LMSLE"},
                                                   {kFfxsr, "FFXSR"},
                                                   {kTce, "TCE"}});
  }
};

// RFLAGS. Bit 1 is reserved and always reads as 1; ToString() leaves it out.
class Rflags : public amd64_internal::Bitfield<Rflags, uint64_t> {
 public:
  using Bitfield::Bitfield;
  static constexpr uint64_t kReserved1 = amd64_internal::Bit(1);
  static constexpr uint64_t kCf = amd64_internal::Bit(0);
  static constexpr uint64_t kPf = amd64_internal::Bit(2);
  static constexpr uint64_t kAf = amd64_internal::Bit(4);
  static constexpr uint64_t kZf = amd64_internal::Bit(6);
  static constexpr uint64_t kSf = amd64_internal::Bit(7);
  static constexpr uint64_t kTf = amd64_internal::Bit(8);
  static constexpr uint64_t kIf = amd64_internal::Bit(9);
  static constexpr uint64_t kDf = amd64_internal::Bit(10);
  static constexpr uint64_t kOf = amd64_internal::Bit(11);
  static constexpr uint64_t kIoplMask = uint64_t{3} << 12;
  static constexpr uint64_t kNt = amd64_internal::Bit(14);
  static constexpr uint64_t kRf = amd64_internal::Bit(16);
  static constexpr uint64_t kVm = amd64_internal::Bit(17);
  static constexpr uint64_t kAc = amd64_internal::Bit(18);
  static constexpr uint64_t kVif = amd64_internal::Bit(19);
  static constexpr uint64_t kVip = amd64_internal::Bit(20);
  static constexpr uint64_t kId = amd64_internal::Bit(21);

  constexpr bool cf() const { return Has(kCf); }
  constexpr bool pf() const { return Has(kPf); }
  constexpr bool af() const { return Has(kAf); }
  constexpr bool zf() const { return Has(kZf); }
  constexpr bool sf() const { return Has(kSf); }
  constexpr bool tf() const { return Has(kTf); }
  // Named if_ because `if` is a keyword.
  constexpr bool if_() const { return Has(kIf); }
  constexpr bool df() const { return Has(kDf); }
  constexpr bool of() const { return Has(kOf); }
  constexpr uint8_t iopl() const {
    return static_cast<uint8_t>(amd64_internal::Bits(value(), 12, 2));
  }
  constexpr bool nt() const { return Has(kNt); }
  constexpr bool rf() const { return Has(kRf); }
  constexpr bool vm() const { return Has(kVm); }
  constexpr bool ac() const { return Has(kAc); }
  constexpr bool vif() const { return Has(kVif); }
  constexpr bool vip() const { return Has(kVip); }
  constexpr bool id() const { return Has(kId); }

  // "ZF|IF|IOPL=3"; "0" when only the reserved bit is set.
  std::string ToString() const {
    std::string flags = amd64_internal::FlagsToString(value(),
                                                      {{kCf, "CF"},
                                                       {kPf, "PF"},
                                                       {kAf, "AF"},
                                                       {kZf, "ZF"},
                                                       {kSf, "SF"},
                                                       {kTf, "TF"},
                                                       {kIf, "IF"},
                                                       {kDf, "DF"},
                                                       {kOf, "OF"},
                                                       {kNt, "NT"},
                                                       {kRf, "RF"},
                                                       {kVm, "VM"},
                                                       {kAc, "AC"},
                                                       {kVif, "VIF"},
                                                       {kVip, "VIP"},
                                                       {kId, "ID"}},
                                                      kReserved1 | kIoplMask);
    if (iopl() == 0) return flags;
    std::string iopl_text = absl::StrCat("IOPL=", iopl());
    return flags == "0" ? iopl_text : absl::StrCat(flags, "|", iopl_text);
  }
};

// A segment selector: descriptor index, table indicator (0 GDT, 1 LDT) and
// requested privilege level.
class Selector : public amd64_internal::Bitfield<Selector, uint16_t> {
 public:
  using Bitfield::Bitfield;
  constexpr Selector(uint16_t index, bool ti, uint8_t rpl)
      : Bitfield(static_cast<uint16_t>((index << 3) | (ti ? 4 : 0) | (rpl & 3))) {}

  constexpr uint16_t index() const { return value() >> 3; }
  constexpr bool ti() const { return (value() & 4) != 0; }
  constexpr uint8_t rpl() const { return value() & 3; }

  // "0x10 (GDT[2] RPL=0)".
  std::string ToString() const {
    return absl::StrFormat("0x%x (%s[%u] RPL=%u)", value(), ti() ? "LDT" : "GDT", index(), rpl());
  }
};

// Segment access rights in the VMX "AR bytes" layout (see Segment in
// registers.h): bits 0-3 type, 4 S, 5-6 DPL, 7 P, 12 AVL, 13 L, 14 D/B,
// 15 G, 16 unusable.
class SegmentAccess : public amd64_internal::Bitfield<SegmentAccess, uint32_t> {
 public:
  using Bitfield::Bitfield;
  static constexpr uint32_t kS = 1u << 4;  // code/data (1) vs system (0)
  static constexpr uint32_t kPresent = 1u << 7;
  static constexpr uint32_t kAvl = 1u << 12;
  static constexpr uint32_t kL = 1u << 13;   // 64-bit code segment
  static constexpr uint32_t kDb = 1u << 14;  // default operand size 32-bit
  static constexpr uint32_t kG = 1u << 15;   // limit in 4 KiB units
  static constexpr uint32_t kUnusable = 1u << 16;

  // Code/data or system type (for code/data: bit 3 code, bit 1 readable or
  // writable, bit 0 accessed).
  constexpr uint8_t type() const { return value() & 0xf; }
  constexpr bool s() const { return Has(kS); }
  constexpr uint8_t dpl() const { return (value() >> 5) & 3; }
  constexpr bool present() const { return Has(kPresent); }
  constexpr bool avl() const { return Has(kAvl); }
  constexpr bool l() const { return Has(kL); }
  constexpr bool db() const { return Has(kDb); }
  constexpr bool g() const { return Has(kG); }
  constexpr bool unusable() const { return Has(kUnusable); }
  // A code segment (S set and type bit 3 set).
  constexpr bool code() const { return s() && (type() & 8) != 0; }

  // From and to the flags of a descriptor's high dword (type at bit 8 ... G
  // at bit 23), as QEMU's segment cache, its dumps and its monitor keep them.
  static constexpr SegmentAccess FromDescriptorFlags(uint32_t flags) {
    return SegmentAccess((flags >> 8) & 0xf0ff);
  }
  constexpr uint32_t ToDescriptorFlags() const { return (value() & 0xf0ffu) << 8; }

  // "type=0xb S DPL=0 P L G".
  std::string ToString() const {
    std::string out = absl::StrFormat("type=0x%x", type());
    if (s()) out += " S";
    absl::StrAppend(&out, " DPL=", dpl());
    if (present()) out += " P";
    if (avl()) out += " AVL";
    if (l()) out += " L";
    if (db()) out += " DB";
    if (g()) out += " G";
    if (unusable()) out += " UNUSABLE";
    return out;
  }
};

// One 16-byte long-mode IDT gate descriptor, decoded.
struct IdtGate {
  static constexpr uint8_t kInterruptGate = 0xe;  // clears IF on entry
  static constexpr uint8_t kTrapGate = 0xf;
  static constexpr size_t kSize = 16;

  uint64_t offset = 0;    // handler address, assembled from bits 15:0, 31:16, 63:32
  uint16_t selector = 0;  // code segment of the handler
  uint8_t ist = 0;        // interrupt stack table index (0: no stack switch)
  uint8_t type = 0;
  uint8_t dpl = 0;  // lowest CPL allowed to use INT n on this vector
  bool present = false;

  // Decodes the 16 bytes at `bytes`. Reserved bits are ignored.
  static constexpr IdtGate Decode(const uint8_t bytes[kSize]) {
    auto le = [&](int at, int n) {
      uint64_t v = 0;
      for (int i = n - 1; i >= 0; --i) v = (v << 8) | bytes[at + i];
      return v;
    };
    IdtGate g;
    g.offset = le(0, 2) | (le(6, 2) << 16) | (le(8, 4) << 32);
    g.selector = static_cast<uint16_t>(le(2, 2));
    g.ist = bytes[4] & 7;
    g.type = bytes[5] & 0xf;
    g.dpl = (bytes[5] >> 5) & 3;
    g.present = (bytes[5] & 0x80) != 0;
    return g;
  }

  // The 16-byte descriptor; reserved bits are zero.
  constexpr std::array<uint8_t, kSize> Encode() const {
    std::array<uint8_t, kSize> b{};
    auto put = [&](int at, int n, uint64_t v) {
      for (int i = 0; i < n; ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
    };
    put(0, 2, offset & 0xffff);
    put(2, 2, selector);
    b[4] = ist & 7;
    b[5] = static_cast<uint8_t>((type & 0xf) | ((dpl & 3) << 5) | (present ? 0x80 : 0));
    put(6, 2, (offset >> 16) & 0xffff);
    put(8, 4, offset >> 32);
    return b;
  }

  constexpr bool is_interrupt_gate() const { return type == kInterruptGate; }
  constexpr bool is_trap_gate() const { return type == kTrapGate; }

  friend constexpr bool operator==(const IdtGate&, const IdtGate&) = default;

  // "offset=0xffffffff81a00ab0 selector=0x10 ist=0 interrupt-gate dpl=0 P".
  std::string ToString() const {
    const char* kind = is_interrupt_gate() ? "interrupt-gate"
                       : is_trap_gate()    ? "trap-gate"
                                           : nullptr;
    std::string type_text = kind != nullptr ? kind : absl::StrFormat("type=0x%x", type);
    return absl::StrFormat("offset=0x%x selector=0x%x ist=%u %s dpl=%u%s", offset, selector, ist,
                           type_text, dpl, present ? " P" : " NP");
  }
  friend absl::FormatConvertResult<absl::FormatConversionCharSet::kString> AbslFormatConvert(
      const IdtGate& g, const absl::FormatConversionSpec&, absl::FormatSink* sink) {
    sink->Append(g.ToString());
    return {true};
  }
  friend std::ostream& operator<<(std::ostream& os, const IdtGate& g) { return os << g.ToString(); }
};

}  // namespace vmi::amd64

#endif  // VMI_ARCH_AMD64_BITFIELDS_H_
