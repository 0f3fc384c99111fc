// SymbolTable: the kernel's symbols (from kallsyms in memory or from a
// profile), looked up by name and by address.
//
// By name: the first symbol of that name in table order (kallsyms order, as
// the kernel's own kallsyms_lookup_name). By address: the symbol with the
// greatest address <= the query, as "name+0xoff", if the query lies before
// the next higher symbol address; absolute symbols (type 'A'/'a', e.g. the
// per-CPU offsets of CONFIG_KALLSYMS_ABSOLUTE_PERCPU) are found by name only,
// since their values are not addresses.
//
// Thread-safety: immutable after construction; thread-safe.

#ifndef VMI_OS_LINUX_SYMBOLS_H_
#define VMI_OS_LINUX_SYMBOLS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vmi::os_linux {

struct Symbol {
  uint64_t address = 0;
  char type = '?';  // the nm-style letter: T t D d B b R r A ...
  absl::string_view name;
};

// "name+0xoff" (or just "name" at offset 0).
struct SymbolOffset {
  absl::string_view name;
  uint64_t offset = 0;
  std::string ToString() const;
};

class SymbolTable {
 public:
  struct Entry {
    uint64_t address;
    char type;
    std::string name;
  };

  SymbolTable() = default;
  // Keeps the order given (kallsyms order).
  explicit SymbolTable(std::vector<Entry> entries);

  SymbolTable(SymbolTable&&) = default;
  SymbolTable& operator=(SymbolTable&&) = default;
  SymbolTable(const SymbolTable&) = delete;
  SymbolTable& operator=(const SymbolTable&) = delete;

  size_t size() const { return addresses_.size(); }
  bool empty() const { return addresses_.empty(); }
  Symbol operator[](size_t i) const {
    return {addresses_[i], types_[i], NameAt(i)};
  }

  // The address of the first symbol named `name`.
  std::optional<uint64_t> Address(absl::string_view name) const {
    auto it = by_name_.find(name);
    if (it == by_name_.end()) return std::nullopt;
    return addresses_[it->second];
  }
  // As Address, or NotFound naming the symbol.
  absl::StatusOr<uint64_t> Find(absl::string_view name) const;
  // The index of the first symbol named `name`.
  std::optional<size_t> IndexOf(absl::string_view name) const {
    auto it = by_name_.find(name);
    if (it == by_name_.end()) return std::nullopt;
    return it->second;
  }

  // The symbol covering `address`, see the file comment.
  std::optional<SymbolOffset> Symbolize(uint64_t address) const;

 private:
  absl::string_view NameAt(size_t i) const {
    return absl::string_view(arena_.data() + name_at_[i], name_len_[i]);
  }

  // All names, back to back. A vector, not a string: moving it keeps the
  // buffer (a short string's would move with SSO), so by_name_'s views stay
  // valid when the table moves.
  std::vector<char> arena_;
  std::vector<uint64_t> addresses_;
  std::vector<uint32_t> name_at_;
  std::vector<uint16_t> name_len_;
  std::vector<char> types_;
  absl::flat_hash_map<absl::string_view, uint32_t> by_name_;  // keys view arena_
  // Distinct addresses of non-absolute symbols, ascending, each with the
  // first symbol (in table order) at it; and every kFenceStride-th address,
  // a small first level that stays in L1 so a lookup touches only a few
  // cache lines of the big array.
  static constexpr size_t kFenceStride = 64;
  std::vector<uint64_t> sorted_addresses_;
  std::vector<uint32_t> sorted_index_;
  std::vector<uint64_t> fences_;
};

}  // namespace vmi::os_linux

#endif  // VMI_OS_LINUX_SYMBOLS_H_
