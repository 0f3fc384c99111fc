#include "os/linux/symbols.h"

#include <algorithm>
#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace vmi::os_linux {

std::string SymbolOffset::ToString() const {
  if (offset == 0) return std::string(name);
  return absl::StrFormat("%s+0x%x", name, offset);
}

SymbolTable::SymbolTable(std::vector<Entry> entries) {
  size_t total = 0;
  for (const Entry& e : entries) total += e.name.size();
  arena_.reserve(total);
  addresses_.reserve(entries.size());
  name_at_.reserve(entries.size());
  name_len_.reserve(entries.size());
  types_.reserve(entries.size());
  for (const Entry& e : entries) {
    addresses_.push_back(e.address);
    name_at_.push_back(static_cast<uint32_t>(arena_.size()));
    const size_t len = std::min<size_t>(e.name.size(), UINT16_MAX);
    name_len_.push_back(static_cast<uint16_t>(len));
    types_.push_back(e.type);
    arena_.insert(arena_.end(), e.name.begin(), e.name.begin() + len);
  }
  // The arena no longer grows: views into it stay valid (a move keeps the
  // heap buffer, so they survive moves of the table too).
  by_name_.reserve(entries.size());
  for (uint32_t i = 0; i < addresses_.size(); ++i) {
    by_name_.try_emplace(NameAt(i), i);
  }
  for (uint32_t i = 0; i < addresses_.size(); ++i) {
    if (types_[i] != 'A' && types_[i] != 'a') sorted_index_.push_back(i);
  }
  std::stable_sort(sorted_index_.begin(), sorted_index_.end(),
                   [&](uint32_t a, uint32_t b) { return addresses_[a] < addresses_[b]; });
  sorted_addresses_.reserve(sorted_index_.size());
  for (uint32_t i : sorted_index_) sorted_addresses_.push_back(addresses_[i]);
}

absl::StatusOr<uint64_t> SymbolTable::Find(absl::string_view name) const {
  if (std::optional<uint64_t> a = Address(name)) return *a;
  return absl::NotFoundError(
      absl::StrFormat("symbol '%s' is not among the kernel's %u symbols", name, size()));
}

std::optional<SymbolOffset> SymbolTable::Symbolize(uint64_t address) const {
  auto it = std::upper_bound(sorted_addresses_.begin(), sorted_addresses_.end(), address);
  if (it == sorted_addresses_.begin()) return std::nullopt;
  // Past the last symbol nothing bounds the size: not symbolized.
  if (it == sorted_addresses_.end() && address != sorted_addresses_.back()) return std::nullopt;
  const size_t last_le = (it - sorted_addresses_.begin()) - 1;
  // The first symbol (in table order) at that address.
  const uint64_t at = sorted_addresses_[last_le];
  const size_t first = std::lower_bound(sorted_addresses_.begin(), sorted_addresses_.end(), at) -
                       sorted_addresses_.begin();
  const uint32_t index = sorted_index_[first];
  return SymbolOffset{NameAt(index), address - at};
}

}  // namespace vmi::os_linux
