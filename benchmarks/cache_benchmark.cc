// Microbenchmarks of VmiCore's caches (core/cache) against the physical limit
// measured in the same binary: a memcpy of the same bytes. The hit paths are
// what every guest read pays: V2P lookup, page lookup, memcpy.
//
//   bazel run --config=opt //benchmarks:cache_benchmark

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "core/architecture.h"
#include "core/cache/page_cache.h"
#include "core/cache/v2p_cache.h"
#include "core/mapped_page.h"
#include "core/types.h"

namespace vmi {
namespace {

constexpr size_t kHotPages = 8192;  // the largest hot set: fits both default caches
constexpr size_t kSteps = 4096;     // precomputed random accesses, cycled

// Guest "RAM" for live pages, so that no benchmark copies pages around.
std::vector<uint8_t>& Ram() {
  static auto* ram = new std::vector<uint8_t>(kHotPages * 4096, 0x5a);
  return *ram;
}

std::vector<uint64_t> RandomIndices(size_t range, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> v(kSteps);
  for (auto& x : v) x = rng() % range;
  return v;
}

PageTranslation TranslationFor(uint64_t page) {
  PageTranslation t;
  t.pa = Pa(page << 12);
  t.page_size = 4096;
  t.permissions = {true, true, false};
  t.table_gfns = {Gfn(1), Gfn(2 + page / 512 / 512), Gfn(100 + page / 512), Gfn(1000 + page),
                  Gfn()};
  t.levels = 4;
  return t;
}

// Baselines: 8 bytes from a random page's random aligned offset; a whole page.
void BM_Memcpy8(benchmark::State& state) {
  const std::vector<uint64_t> pages = RandomIndices(state.range(0), 1);
  const std::vector<uint64_t> offsets = RandomIndices(512, 2);
  const uint8_t* ram = Ram().data();
  size_t i = 0;
  for (auto _ : state) {
    uint64_t value;
    std::memcpy(&value, ram + pages[i] * 4096 + offsets[i] * 8, 8);
    // The value in a register: benchmark::DoNotOptimize(value) let GCC 12
    // drop the copy, and with it the load (the loop measured the address
    // arithmetic alone).
    asm volatile("" : : "r"(value) : "memory");
    i = (i + 1) % kSteps;
  }
}
BENCHMARK(BM_Memcpy8)->Arg(64)->Arg(1024)->Arg(8192);

void BM_Memcpy4K(benchmark::State& state) {
  const std::vector<uint64_t> pages = RandomIndices(kHotPages, 1);
  const uint8_t* ram = Ram().data();
  std::vector<uint8_t> out(4096);
  size_t i = 0;
  for (auto _ : state) {
    std::memcpy(out.data(), ram + pages[i] * 4096, 4096);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
    i = (i + 1) % kSteps;
  }
  state.SetBytesProcessed(state.iterations() * 4096);
}
BENCHMARK(BM_Memcpy4K);

PageCache& FilledPageCache() {
  static PageCache* cache = [] {
    auto* c = new PageCache();
    for (uint64_t g = 0; g < kHotPages; ++g) {
      c->Insert(Gfn(g), MappedPage::Live(Gfn(g), Ram().data() + g * 4096, 4096));
    }
    return c;
  }();
  return *cache;
}

// Random pages of a hot set of state.range(0) pages (default capacity 8192).
void BM_PageCacheHit(benchmark::State& state) {
  PageCache& cache = FilledPageCache();
  const std::vector<uint64_t> pages = RandomIndices(state.range(0), 1);
  size_t i = 0;
  for (auto _ : state) {
    const MappedPage* page = cache.Find(Gfn(pages[i]));
    benchmark::DoNotOptimize(page);
    i = (i + 1) % kSteps;
  }
}
BENCHMARK(BM_PageCacheHit)->Arg(64)->Arg(1024)->Arg(8192);

// The same page again (reading a structure field by field): the memo path.
void BM_PageCacheHitSamePage(benchmark::State& state) {
  PageCache& cache = FilledPageCache();
  Gfn gfn(7);
  for (auto _ : state) {
    benchmark::DoNotOptimize(gfn);
    const MappedPage* page = cache.Find(gfn);
    benchmark::DoNotOptimize(page);
  }
}
BENCHMARK(BM_PageCacheHitSamePage);

// A full cache taking new pages: eviction every time.
void BM_PageCacheMissInsert(benchmark::State& state) {
  PageCache cache(1024);
  uint64_t gfn = 0;
  MappedPage page = MappedPage::Live(Gfn(0), Ram().data(), 4096);
  for (auto _ : state) {
    const MappedPage* hit = cache.Find(Gfn(gfn));
    if (hit == nullptr) hit = &cache.Insert(Gfn(gfn), page);
    benchmark::DoNotOptimize(hit);
    ++gfn;
  }
}
BENCHMARK(BM_PageCacheMissInsert);

constexpr Pa kRoot(0x1000);

V2pCache& FilledV2pCache() {
  static V2pCache* cache = [] {
    auto* c = new V2pCache();
    for (uint64_t p = 0; p < kHotPages; ++p) c->Insert(kRoot, Va(p << 12), TranslationFor(p));
    return c;
  }();
  return *cache;
}

// Random pages of a hot set of state.range(0) pages (default capacity 16384).
void BM_V2pCacheFindHit(benchmark::State& state) {
  V2pCache& cache = FilledV2pCache();
  const std::vector<uint64_t> pages = RandomIndices(state.range(0), 3);
  const std::vector<uint64_t> offsets = RandomIndices(4096, 4);
  size_t i = 0;
  for (auto _ : state) {
    const V2pEntry* e = cache.Find(kRoot, Va((pages[i] << 12) | offsets[i]));
    benchmark::DoNotOptimize(e);
    i = (i + 1) % kSteps;
  }
}
BENCHMARK(BM_V2pCacheFindHit)->Arg(64)->Arg(1024)->Arg(8192);

void BM_V2pCacheFindHitSamePage(benchmark::State& state) {
  V2pCache& cache = FilledV2pCache();
  Va va(0x7123);
  for (auto _ : state) {
    benchmark::DoNotOptimize(va);
    const V2pEntry* e = cache.Find(kRoot, va);
    benchmark::DoNotOptimize(e);
  }
}
BENCHMARK(BM_V2pCacheFindHitSamePage);

// A full cache taking new translations: eviction (and table refcounting)
// every time. The walk itself is not included.
void BM_V2pCacheMissInsert(benchmark::State& state) {
  V2pCache cache(1024);
  uint64_t page = 0;
  for (auto _ : state) {
    const Va va(page << 12);
    const V2pEntry* e = cache.Find(kRoot, va);
    if (e == nullptr) e = &cache.Insert(kRoot, va, TranslationFor(page));
    benchmark::DoNotOptimize(e);
    ++page;
  }
}
BENCHMARK(BM_V2pCacheMissInsert);

// What VmiCore's hot ReadU64 does with both caches hot: V2P hit, page hit,
// 8-byte memcpy, over a hot set of state.range(0) pages. Compare with
// BM_Memcpy8 of the same argument.
void BM_HotReadU64(benchmark::State& state) {
  V2pCache& v2p = FilledV2pCache();
  PageCache& pages = FilledPageCache();
  const std::vector<uint64_t> vpns = RandomIndices(state.range(0), 1);
  const std::vector<uint64_t> offsets = RandomIndices(512, 2);
  size_t i = 0;
  for (auto _ : state) {
    const Va va((vpns[i] << 12) | (offsets[i] * 8));
    const V2pEntry* e = v2p.Find(kRoot, va);
    const MappedPage* page = pages.Find(e->gfn());
    uint64_t value;
    std::memcpy(&value, page->data() + (va.value() & 0xfff), 8);
    benchmark::DoNotOptimize(value);
    i = (i + 1) % kSteps;
  }
}
BENCHMARK(BM_HotReadU64)->Arg(64)->Arg(1024)->Arg(8192);

// The same on one page (a structure read field by field): both memos hit.
void BM_HotReadU64SamePage(benchmark::State& state) {
  V2pCache& v2p = FilledV2pCache();
  PageCache& pages = FilledPageCache();
  const std::vector<uint64_t> offsets = RandomIndices(512, 2);
  size_t i = 0;
  for (auto _ : state) {
    const Va va(0x7000 | (offsets[i] * 8));
    const V2pEntry* e = v2p.Find(kRoot, va);
    const MappedPage* page = pages.Find(e->gfn());
    uint64_t value;
    std::memcpy(&value, page->data() + (va.value() & 0xfff), 8);
    benchmark::DoNotOptimize(value);
    i = (i + 1) % kSteps;
  }
}
BENCHMARK(BM_HotReadU64SamePage);

// A write to an ordinary frame: the coherence check VmiCore makes per write.
void BM_V2pInvalidateOrdinaryFrame(benchmark::State& state) {
  V2pCache& cache = FilledV2pCache();
  uint64_t gfn = 1 << 20;
  for (auto _ : state) {
    benchmark::DoNotOptimize(cache.InvalidateTableGfn(Gfn(gfn)));
    ++gfn;
  }
}
BENCHMARK(BM_V2pInvalidateOrdinaryFrame);

}  // namespace
}  // namespace vmi
