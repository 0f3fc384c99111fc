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
  std::vector<uint32_t> order;
  for (uint32_t i = 0; i < addresses_.size(); ++i) {
    if (types_[i] != 'A' && types_[i] != 'a') order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](uint32_t a, uint32_t b) { return addresses_[a] < addresses_[b]; });
  for (uint32_t i : order) {
    if (!sorted_addresses_.empty() && sorted_addresses_.back() == addresses_[i]) continue;
    sorted_addresses_.push_back(addresses_[i]);
    sorted_index_.push_back(i);
  }
  for (size_t i = 0; i < sorted_addresses_.size(); i += kFenceStride) {
    fences_.push_back(sorted_addresses_[i]);
  }
}

absl::StatusOr<uint64_t> SymbolTable::Find(absl::string_view name) const {
  if (std::optional<uint64_t> a = Address(name)) return *a;
  return absl::NotFoundError(
      absl::StrFormat("symbol '%s' is not among the kernel's %u symbols", name, size()));
}

std::optional<SymbolOffset> SymbolTable::Symbolize(uint64_t address) const {
  // The last fence <= address picks a block of kFenceStride addresses.
  const size_t fence = std::upper_bound(fences_.begin(), fences_.end(), address) - fences_.begin();
  if (fence == 0) return std::nullopt;
  const size_t begin = (fence - 1) * kFenceStride;
  const size_t end = std::min(begin + kFenceStride, sorted_addresses_.size());
  const size_t last_le =
      (std::upper_bound(sorted_addresses_.begin() + begin, sorted_addresses_.begin() + end, address) -
       sorted_addresses_.begin()) - 1;
  // Past the last symbol nothing bounds its size: not symbolized.
  if (last_le + 1 == sorted_addresses_.size() && address != sorted_addresses_.back()) {
    return std::nullopt;
  }
  return SymbolOffset{NameAt(sorted_index_[last_le]), address - sorted_addresses_[last_le]};
}

}  // namespace vmi::os_linux
