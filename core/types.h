// Strong types for the quantities VMI code passes around: guest frame numbers,
// guest-physical and guest-virtual addresses, vCPU and view identifiers,
// second-level (EPT/NPT) access rights, and the VM's basic geometry.
//
// Thread-safety: plain values; thread-compatible.

#ifndef VMI_CORE_TYPES_H_
#define VMI_CORE_TYPES_H_

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>

#include "absl/strings/str_format.h"

namespace vmi {
namespace core_internal {

// Shared behaviour of the address-like types: a wrapped uint64_t with
// comparisons, hashing, hex formatting, and offset arithmetic (T + n, T - n,
// T - T). Multiplication and mixing different address kinds do not compile.
template <typename Derived>
class AddressLike {
 public:
  constexpr AddressLike() = default;
  constexpr explicit AddressLike(uint64_t value) : value_(value) {}

  constexpr uint64_t value() const { return value_; }

  friend constexpr Derived operator+(Derived a, uint64_t n) { return Derived(a.value_ + n); }
  friend constexpr Derived operator-(Derived a, uint64_t n) { return Derived(a.value_ - n); }
  friend constexpr uint64_t operator-(Derived a, Derived b) { return a.value_ - b.value_; }
  friend constexpr Derived operator&(Derived a, uint64_t mask) { return Derived(a.value_ & mask); }
  friend constexpr Derived operator|(Derived a, uint64_t bits) { return Derived(a.value_ | bits); }
  constexpr Derived& operator+=(uint64_t n) {
    value_ += n;
    return static_cast<Derived&>(*this);
  }
  constexpr Derived& operator-=(uint64_t n) {
    value_ -= n;
    return static_cast<Derived&>(*this);
  }
  constexpr Derived& operator++() {
    ++value_;
    return static_cast<Derived&>(*this);
  }

  friend constexpr bool operator==(Derived a, Derived b) { return a.value_ == b.value_; }
  friend constexpr auto operator<=>(Derived a, Derived b) { return a.value_ <=> b.value_; }

  template <typename H>
  friend H AbslHashValue(H h, Derived a) {
    return H::combine(std::move(h), a.value_);
  }
  std::string ToString() const { return absl::StrFormat("0x%x", value_); }
  // absl::StrFormat("%s", gfn) prints "0x1a2".
  friend absl::FormatConvertResult<absl::FormatConversionCharSet::kString> AbslFormatConvert(
      Derived a, const absl::FormatConversionSpec&, absl::FormatSink* sink) {
    sink->Append(a.ToString());
    return {true};
  }
  friend std::ostream& operator<<(std::ostream& os, Derived a) { return os << a.ToString(); }

 private:
  uint64_t value_ = 0;
};

}  // namespace core_internal

// Guest frame number: a guest-physical address divided by the page size.
class Gfn : public core_internal::AddressLike<Gfn> {
 public:
  using AddressLike::AddressLike;
};

// Guest-physical address.
class Pa : public core_internal::AddressLike<Pa> {
 public:
  using AddressLike::AddressLike;
};

// Guest-virtual (linear) address.
class Va : public core_internal::AddressLike<Va> {
 public:
  using AddressLike::AddressLike;
};

namespace core_internal {

// Small integer identifiers printed in decimal.
template <typename Derived, typename Rep>
class SmallId {
 public:
  constexpr SmallId() = default;
  constexpr explicit SmallId(Rep value) : value_(value) {}
  constexpr Rep value() const { return value_; }

  friend constexpr bool operator==(Derived a, Derived b) { return a.value_ == b.value_; }
  friend constexpr auto operator<=>(Derived a, Derived b) { return a.value_ <=> b.value_; }
  template <typename H>
  friend H AbslHashValue(H h, Derived a) {
    return H::combine(std::move(h), a.value_);
  }
  std::string ToString() const { return absl::StrFormat("%u", value_); }
  friend absl::FormatConvertResult<absl::FormatConversionCharSet::kString> AbslFormatConvert(
      Derived a, const absl::FormatConversionSpec&, absl::FormatSink* sink) {
    sink->Append(a.ToString());
    return {true};
  }
  friend std::ostream& operator<<(std::ostream& os, Derived a) { return os << a.ToString(); }

 private:
  Rep value_ = 0;
};

}  // namespace core_internal

// A virtual CPU of the guest, numbered from 0.
class VcpuId : public core_internal::SmallId<VcpuId, uint16_t> {
 public:
  using SmallId::SmallId;
};

// A second-level address-space view (Xen altp2m). View 0 is the default
// (host) view every guest starts in.
class View : public core_internal::SmallId<View, uint16_t> {
 public:
  using SmallId::SmallId;
};

inline constexpr View kDefaultView{0};

// Second-level (EPT/NPT) access rights of a guest frame: any combination of
// read, write and execute. Printed as "rwx" with '-' for a missing right.
class MemoryAccess {
 public:
  static constexpr uint8_t kR = 1, kW = 2, kX = 4;

  constexpr MemoryAccess() = default;
  constexpr explicit MemoryAccess(uint8_t bits) : bits_(bits & 7) {}

  static constexpr MemoryAccess None() { return MemoryAccess(0); }
  static constexpr MemoryAccess R() { return MemoryAccess(kR); }
  static constexpr MemoryAccess W() { return MemoryAccess(kW); }
  static constexpr MemoryAccess X() { return MemoryAccess(kX); }
  static constexpr MemoryAccess RW() { return MemoryAccess(kR | kW); }
  static constexpr MemoryAccess RX() { return MemoryAccess(kR | kX); }
  static constexpr MemoryAccess WX() { return MemoryAccess(kW | kX); }
  static constexpr MemoryAccess RWX() { return MemoryAccess(kR | kW | kX); }

  constexpr uint8_t bits() const { return bits_; }
  constexpr bool read() const { return bits_ & kR; }
  constexpr bool write() const { return bits_ & kW; }
  constexpr bool execute() const { return bits_ & kX; }
  constexpr bool empty() const { return bits_ == 0; }
  // True when every right in `other` is also in this.
  constexpr bool Contains(MemoryAccess other) const { return (bits_ & other.bits_) == other.bits_; }

  friend constexpr MemoryAccess operator|(MemoryAccess a, MemoryAccess b) {
    return MemoryAccess(a.bits_ | b.bits_);
  }
  friend constexpr MemoryAccess operator&(MemoryAccess a, MemoryAccess b) {
    return MemoryAccess(a.bits_ & b.bits_);
  }
  // Removes rights: RWX() - W() == RX().
  friend constexpr MemoryAccess operator-(MemoryAccess a, MemoryAccess b) {
    return MemoryAccess(a.bits_ & ~b.bits_);
  }
  friend constexpr bool operator==(MemoryAccess a, MemoryAccess b) { return a.bits_ == b.bits_; }

  std::string ToString() const {
    return {read() ? 'r' : '-', write() ? 'w' : '-', execute() ? 'x' : '-'};
  }
  template <typename H>
  friend H AbslHashValue(H h, MemoryAccess a) {
    return H::combine(std::move(h), a.bits_);
  }
  friend absl::FormatConvertResult<absl::FormatConversionCharSet::kString> AbslFormatConvert(
      MemoryAccess a, const absl::FormatConversionSpec&, absl::FormatSink* sink) {
    sink->Append(a.ToString());
    return {true};
  }
  friend std::ostream& operator<<(std::ostream& os, MemoryAccess a) { return os << a.ToString(); }

 private:
  uint8_t bits_ = 0;
};

// Modifiers of a permission change that plain R/W/X cannot express.
class MemoryAccessOptions {
 public:
  // Accesses made by the CPU's own page walk (setting A/D bits in guest page
  // tables) do not raise events (Xen: XENMEM_access_r_pw and friends).
  static constexpr uint8_t kIgnorePageWalkUpdates = 1;

  constexpr MemoryAccessOptions() = default;
  constexpr explicit MemoryAccessOptions(uint8_t bits) : bits_(bits) {}
  static constexpr MemoryAccessOptions None() { return MemoryAccessOptions(0); }
  static constexpr MemoryAccessOptions IgnorePageWalkUpdates() {
    return MemoryAccessOptions(kIgnorePageWalkUpdates);
  }

  constexpr uint8_t bits() const { return bits_; }
  constexpr bool ignore_page_walk_updates() const { return bits_ & kIgnorePageWalkUpdates; }
  constexpr bool empty() const { return bits_ == 0; }

  friend constexpr MemoryAccessOptions operator|(MemoryAccessOptions a, MemoryAccessOptions b) {
    return MemoryAccessOptions(a.bits_ | b.bits_);
  }
  friend constexpr bool operator==(MemoryAccessOptions a, MemoryAccessOptions b) {
    return a.bits_ == b.bits_;
  }
  std::string ToString() const { return ignore_page_walk_updates() ? "ignore_page_walk_updates" : "none"; }
  friend absl::FormatConvertResult<absl::FormatConversionCharSet::kString> AbslFormatConvert(
      MemoryAccessOptions o, const absl::FormatConversionSpec&, absl::FormatSink* sink) {
    sink->Append(o.ToString());
    return {true};
  }
  friend std::ostream& operator<<(std::ostream& os, MemoryAccessOptions o) { return os << o.ToString(); }

 private:
  uint8_t bits_ = 0;
};

// Basic geometry of the VM a driver is attached to.
struct VmiInfo {
  uint64_t page_size = 4096;
  uint8_t page_shift = 12;
  Gfn max_gfn;  // highest valid guest frame number (inclusive)
  uint16_t vcpus = 0;

  friend bool operator==(const VmiInfo&, const VmiInfo&) = default;
  std::string ToString() const {
    return absl::StrFormat("page_size=%u max_gfn=%s vcpus=%u", page_size, max_gfn, vcpus);
  }
};

}  // namespace vmi

template <>
struct std::hash<vmi::Gfn> {
  size_t operator()(vmi::Gfn v) const { return std::hash<uint64_t>()(v.value()); }
};
template <>
struct std::hash<vmi::Pa> {
  size_t operator()(vmi::Pa v) const { return std::hash<uint64_t>()(v.value()); }
};
template <>
struct std::hash<vmi::Va> {
  size_t operator()(vmi::Va v) const { return std::hash<uint64_t>()(v.value()); }
};
template <>
struct std::hash<vmi::VcpuId> {
  size_t operator()(vmi::VcpuId v) const { return std::hash<uint16_t>()(v.value()); }
};
template <>
struct std::hash<vmi::View> {
  size_t operator()(vmi::View v) const { return std::hash<uint16_t>()(v.value()); }
};

#endif  // VMI_CORE_TYPES_H_
