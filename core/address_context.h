// Where an access goes: AddressContext names a virtual address in the address
// space whose translation root (CR3 on x86) is `root`; AccessContext is an
// address plus how to reach it: directly (a guest-physical address) or through
// paging from a root.
//
// Thread-safety: plain values; thread-compatible.

#ifndef VMI_CORE_ADDRESS_CONTEXT_H_
#define VMI_CORE_ADDRESS_CONTEXT_H_

#include <cstdint>
#include <ostream>
#include <string>
#include <variant>

#include "absl/strings/str_format.h"
#include "core/types.h"

namespace vmi {

struct AddressContext {
  Va va;
  Pa root;

  AddressContext() = default;
  AddressContext(Va va, Pa root) : va(va), root(root) {}

  friend bool operator==(const AddressContext&, const AddressContext&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const AddressContext& c) {
    return H::combine(std::move(h), c.va, c.root);
  }
  std::string ToString() const { return absl::StrFormat("va=%s root=%s", va, root); }
  friend absl::FormatConvertResult<absl::FormatConversionCharSet::kString> AbslFormatConvert(
      const AddressContext& c, const absl::FormatConversionSpec&, absl::FormatSink* sink) {
    sink->Append(c.ToString());
    return {true};
  }
  friend std::ostream& operator<<(std::ostream& os, const AddressContext& c) {
    return os << c.ToString();
  }
};

// Translation mechanism of an AccessContext.
struct Direct {
  friend bool operator==(Direct, Direct) { return true; }
};
struct Paging {
  Pa root;
  friend bool operator==(Paging a, Paging b) { return a.root == b.root; }
};
using TranslationMechanism = std::variant<Direct, Paging>;

struct AccessContext {
  // A guest-physical address for Direct, a virtual address for Paging.
  uint64_t address = 0;
  TranslationMechanism mechanism = Direct{};

  AccessContext() = default;
  AccessContext(uint64_t address, TranslationMechanism mechanism)
      : address(address), mechanism(mechanism) {}
  // A physical access.
  AccessContext(Pa pa) : address(pa.value()), mechanism(Direct{}) {}  // NOLINT: implicit by design
  // A virtual access through `ctx.root`.
  AccessContext(AddressContext ctx)  // NOLINT: implicit by design
      : address(ctx.va.value()), mechanism(Paging{ctx.root}) {}

  static AccessContext Physical(Pa pa) { return AccessContext(pa); }
  static AccessContext Virtual(Va va, Pa root) { return AccessContext(AddressContext(va, root)); }

  bool is_physical() const { return std::holds_alternative<Direct>(mechanism); }
  bool is_virtual() const { return std::holds_alternative<Paging>(mechanism); }
  // The root of a virtual access (meaningless for a physical one).
  Pa root() const {
    const Paging* p = std::get_if<Paging>(&mechanism);
    return p ? p->root : Pa();
  }
  // This context moved by `n` bytes, same mechanism.
  AccessContext operator+(uint64_t n) const { return AccessContext(address + n, mechanism); }

  friend bool operator==(const AccessContext&, const AccessContext&) = default;
  std::string ToString() const {
    return is_physical() ? absl::StrFormat("pa=0x%x", address)
                         : absl::StrFormat("va=0x%x root=%s", address, root());
  }
  friend absl::FormatConvertResult<absl::FormatConversionCharSet::kString> AbslFormatConvert(
      const AccessContext& c, const absl::FormatConversionSpec&, absl::FormatSink* sink) {
    sink->Append(c.ToString());
    return {true};
  }
  friend std::ostream& operator<<(std::ostream& os, const AccessContext& c) {
    return os << c.ToString();
  }
};

}  // namespace vmi

#endif  // VMI_CORE_ADDRESS_CONTEXT_H_
