#include "core/cache/page_cache.h"

#include <utility>

namespace vmi {

PageCache::PageCache(size_t capacity) : cache_(capacity) {}

const MappedPage& PageCache::Insert(Gfn gfn, MappedPage page) {
  if (!page.valid()) {
    static const MappedPage* const kEmpty = new MappedPage();
    cache_.Erase(gfn);
    return *kEmpty;
  }
  return cache_.Insert(gfn, std::move(page));
}

bool PageCache::Erase(Gfn gfn) { return cache_.Erase(gfn); }

}  // namespace vmi
