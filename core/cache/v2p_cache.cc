#include "core/cache/v2p_cache.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_format.h"

namespace vmi {
namespace {

// Calls fn once per distinct frame among the entry's table frames (a
// self-referencing table can appear at several levels).
template <typename Fn>
void ForEachDistinctTableGfn(const V2pEntry& entry, Fn fn) {
  for (uint8_t i = 0; i < entry.levels; ++i) {
    bool seen = false;
    for (uint8_t j = 0; j < i; ++j) seen |= entry.table_gfns[j] == entry.table_gfns[i];
    if (!seen) fn(entry.table_gfns[i]);
  }
}

}  // namespace

V2pEntry V2pEntry::FromTranslation(Va va, const PageTranslation& translation) {
  V2pEntry entry;
  const uint64_t size = translation.page_size;
  if (size >= (uint64_t{1} << kPageShift) && (size & (size - 1)) == 0) {
    // The 4 KiB piece of the mapping page that holds `va`.
    entry.page_pa =
        Pa((translation.pa.value() & ~(size - 1)) | (va.value() & (size - 1) & ~kOffsetMask));
  } else {
    entry.page_pa = Pa(translation.pa.value() & ~kOffsetMask);
  }
  entry.page_size = translation.page_size;
  entry.permissions = translation.permissions;
  entry.levels = std::min<uint8_t>(translation.levels, PageTranslation::kMaxLevels);
  for (uint8_t i = 0; i < entry.levels; ++i) entry.table_gfns[i] = translation.table_gfns[i];
  return entry;
}

V2pEntry V2pEntry::FromFault(const PageTranslation& partial, const FaultCause& cause) {
  V2pEntry entry;
  entry.levels = std::min<uint8_t>(partial.levels, PageTranslation::kMaxLevels);
  for (uint8_t i = 0; i < entry.levels; ++i) entry.table_gfns[i] = partial.table_gfns[i];
  entry.fault = cause;
  return entry;
}

std::string V2pEntry::ToString() const {
  std::string tables;
  for (uint8_t i = 0; i < levels; ++i) {
    absl::StrAppendFormat(&tables, "%s%s", i == 0 ? "" : ",", table_gfns[i]);
  }
  if (negative()) {
    return absl::StrFormat("fault(kind=%d level=%u entry=0x%x at %s) tables=[%s]",
                           static_cast<int>(fault.kind), fault.level, fault.entry,
                           fault.entry_address, tables);
  }
  return absl::StrFormat("page_pa=%s page_size=0x%x perms=%c%c%c tables=[%s]", page_pa, page_size,
                         permissions.write ? 'w' : '-', permissions.user ? 'u' : '-',
                         permissions.execute ? 'x' : '-', tables);
}

void V2pCache::TableRefs::OnInsert(const Key&, const V2pEntry& entry) {
  ForEachDistinctTableGfn(entry, [this](Gfn gfn) { ++refs[gfn]; });
  negatives += entry.negative();
}

void V2pCache::TableRefs::OnRemove(const Key& key, const V2pEntry& entry) {
  ForEachDistinctTableGfn(entry, [this](Gfn gfn) {
    auto it = refs.find(gfn);
    if (--it->second == 0) refs.erase(it);
  });
  if (entry.negative()) {
    --negatives;
  } else if (tlb != nullptr) {
    tlb->EraseKey(key.root, key.vpn);
  }
}

V2pCache::V2pCache(size_t capacity) : cache_(capacity) {}

const V2pEntry& V2pCache::Insert(Pa root, Va va, const V2pEntry& entry) {
  return cache_.Insert(KeyOf(root, va), entry);
}

bool V2pCache::Erase(Pa root, Va va) { return cache_.Erase(KeyOf(root, va)); }

size_t V2pCache::EraseRoot(Pa root) {
  if (cache_.size() == 0) return 0;
  return cache_.EraseIf(
      [r = root.value()](const Key& key, const V2pEntry&) { return key.root == r; });
}

size_t V2pCache::EraseNegative() {
  if (negative_size() == 0) return 0;
  return cache_.EraseIf([](const Key&, const V2pEntry& entry) { return entry.negative(); });
}

size_t V2pCache::InvalidateTableGfn(Gfn gfn) {
  if (!IsTableGfn(gfn)) return 0;
  return cache_.EraseIf(
      [gfn](const Key&, const V2pEntry& entry) { return entry.UsesTableGfn(gfn); });
}

size_t V2pCache::TableGfnRefs(Gfn gfn) const {
  auto it = cache_.listener().refs.find(gfn);
  return it == cache_.listener().refs.end() ? 0 : it->second;
}

size_t V2pCache::MemoryUsage() const {
  const auto& refs = cache_.listener().refs;
  return cache_.MemoryUsage() + refs.bucket_count() * (sizeof(std::pair<Gfn, uint32_t>) + 1);
}

}  // namespace vmi
