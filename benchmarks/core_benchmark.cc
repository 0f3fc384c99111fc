// VmiCore's hot path, measured: read -> V2P cache -> page cache -> memcpy,
// each figure next to a memcpy of the same bytes from the same run.
//
//   bazel run --config=opt //benchmarks:core_benchmark
//
// The guest is an in-memory page store with real 4-level x86-64 page tables
// (arch/amd64/testing); its pages are live (zero-copy) like Xen's or the
// simulator's. Virtual pages are mapped to shuffled physical frames so that
// nothing benefits from physical contiguity.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "arch/amd64/amd64.h"
#include "arch/amd64/testing/page_store.h"
#include "arch/amd64/testing/store_driver.h"
#include "benchmark/benchmark.h"
#include "core/vmi_core.h"

namespace vmi {
namespace {

using amd64::PagingMode;
using amd64::testing::MemoryPageStore;
using amd64::testing::PageTableBuilder;
using amd64::testing::StoreDriver;
using Core = VmiCore<StoreDriver>;

constexpr uint64_t kBase = 0xffff888000000000ull;  // a kernel direct-map-like range

struct Guest {
  // `pages` 4 KiB pages at kBase, backed by shuffled frames.
  explicit Guest(size_t pages, uint64_t seed = 1)
      : store(Gfn((1 << 20) - 1)), builder(store, PagingMode::FourLevel()) {
    std::vector<uint64_t> frames(pages);
    std::iota(frames.begin(), frames.end(), 0x10000);
    std::shuffle(frames.begin(), frames.end(), std::mt19937_64(seed));
    for (size_t i = 0; i < pages; ++i) {
      const absl::Status s = builder.Map(Va(kBase + i * 4096), Pa(frames[i] << 12), 4096, 0x3);
      if (!s.ok()) std::abort();
      uint8_t* p = store.MutablePage(Gfn(frames[i]));
      for (int b = 0; b < 4096; ++b) p[b] = static_cast<uint8_t>(i + b);
    }
  }
  MemoryPageStore store;
  PageTableBuilder builder;
};

// Random 8-byte-aligned offsets into [0, bytes), precomputed so the RNG is
// not measured.
std::vector<uint64_t> RandomOffsets(uint64_t bytes, size_t n, uint64_t seed = 7) {
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> out(n);
  for (auto& o : out) o = (rng() % bytes) & ~uint64_t{7};
  return out;
}

constexpr size_t kHotPages = 256;  // 1 MiB working set: fits both caches
constexpr size_t kOffsets = 1 << 16;

void BM_Memcpy8(benchmark::State& state) {
  std::vector<uint8_t> src(kHotPages * 4096, 1);
  const auto offsets = RandomOffsets(src.size(), kOffsets);
  size_t i = 0;
  uint64_t sink = 0;
  for (auto _ : state) {
    uint64_t v;
    std::memcpy(&v, src.data() + offsets[i++ & (kOffsets - 1)], 8);
    sink += v;
    benchmark::DoNotOptimize(sink);
  }
}
BENCHMARK(BM_Memcpy8);

void BM_V2pCacheHit(benchmark::State& state) {
  Guest guest(kHotPages);
  Core core{StoreDriver(&guest.store)};
  const Pa root = guest.builder.root();
  const auto offsets = RandomOffsets(kHotPages * 4096, kOffsets);
  for (uint64_t o : offsets) {
    if (!core.Translate(AddressContext(Va(kBase + o), root)).ok()) std::abort();
  }
  core.v2p_cache().ResetStats();
  size_t i = 0;
  for (auto _ : state) {
    auto pa = core.Translate(AddressContext(Va(kBase + offsets[i++ & (kOffsets - 1)]), root));
    benchmark::DoNotOptimize(pa);
  }
  state.counters["hit_rate"] = core.v2p_cache().stats().HitRate();
}
BENCHMARK(BM_V2pCacheHit);

void BM_ReadU64Hot(benchmark::State& state) {
  Guest guest(kHotPages);
  Core core{StoreDriver(&guest.store)};
  const Pa root = guest.builder.root();
  const auto offsets = RandomOffsets(kHotPages * 4096, kOffsets);
  for (uint64_t o : offsets) {
    if (!core.ReadU64(AccessContext::Virtual(Va(kBase + o), root)).ok()) std::abort();
  }
  core.page_cache().ResetStats();
  size_t i = 0;
  for (auto _ : state) {
    auto v = core.ReadU64(AccessContext::Virtual(Va(kBase + offsets[i++ & (kOffsets - 1)]), root));
    benchmark::DoNotOptimize(v);
  }
  state.counters["page_hit_rate"] = core.page_cache().stats().HitRate();
}
BENCHMARK(BM_ReadU64Hot);

void BM_Memcpy1MiB(benchmark::State& state) {
  // The same bytes as BM_ReadBulk1MiB: 256 scattered 4 KiB guest pages.
  Guest guest(kHotPages);
  std::vector<const uint8_t*> pages;
  for (size_t i = 0; i < kHotPages; ++i) {
    Core probe{StoreDriver(&guest.store)};
    auto pa = probe.Translate(AddressContext(Va(kBase + i * 4096), guest.builder.root()));
    pages.push_back(guest.store.MutablePage(Gfn(pa->value() >> 12)));
  }
  std::vector<uint8_t> out(kHotPages * 4096);
  for (auto _ : state) {
    for (size_t i = 0; i < kHotPages; ++i) std::memcpy(out.data() + i * 4096, pages[i], 4096);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * out.size());
}
BENCHMARK(BM_Memcpy1MiB);

void BM_ReadBulk1MiB(benchmark::State& state) {
  Guest guest(kHotPages);
  Core core{StoreDriver(&guest.store)};
  std::vector<uint8_t> out(kHotPages * 4096);
  const AccessContext ctx = AccessContext::Virtual(Va(kBase), guest.builder.root());
  if (!core.Read(ctx, absl::MakeSpan(out)).ok()) std::abort();
  for (auto _ : state) {
    auto s = core.Read(ctx, absl::MakeSpan(out));
    benchmark::DoNotOptimize(s);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * out.size());
}
BENCHMARK(BM_ReadBulk1MiB);

void BM_Walk4LevelPageCacheWarm(benchmark::State& state) {
  Guest guest(kHotPages);
  VmiCoreOptions options;
  options.v2p_cache_enabled = false;
  Core core(StoreDriver(&guest.store), options);
  const Pa root = guest.builder.root();
  const auto offsets = RandomOffsets(kHotPages * 4096, kOffsets);
  for (uint64_t o : offsets) {
    if (!core.Translate(AddressContext(Va(kBase + o), root)).ok()) std::abort();
  }
  core.page_cache().ResetStats();
  size_t i = 0;
  for (auto _ : state) {
    auto pa = core.Translate(AddressContext(Va(kBase + offsets[i++ & (kOffsets - 1)]), root));
    benchmark::DoNotOptimize(pa);
  }
  state.counters["page_hit_rate"] = core.page_cache().stats().HitRate();
}
BENCHMARK(BM_Walk4LevelPageCacheWarm);

// A ReadU64 whose data page always misses the page cache (capacity 64,
// cycling through 16384 frames): the driver call + cache insert + eviction.
void BM_PageCacheMiss(benchmark::State& state) {
  constexpr size_t kPages = 16384;
  Guest guest(kPages);
  VmiCoreOptions options;
  options.page_cache_capacity = 64;
  options.v2p_cache_capacity = kPages * 2;
  Core core(StoreDriver(&guest.store), options);
  const Pa root = guest.builder.root();
  std::vector<uint64_t> order(kPages);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937_64(3));
  for (uint64_t p : order) {
    if (!core.Translate(AddressContext(Va(kBase + p * 4096), root)).ok()) std::abort();
  }
  core.page_cache().ResetStats();
  size_t i = 0;
  for (auto _ : state) {
    auto v = core.ReadU64(AccessContext::Virtual(Va(kBase + order[i++ % kPages] * 4096), root));
    benchmark::DoNotOptimize(v);
  }
  state.counters["page_miss_rate"] = 1.0 - core.page_cache().stats().HitRate();
}
BENCHMARK(BM_PageCacheMiss);

// Hit rate and time against cache size: ReadU64 over a 16 MiB working set
// (4096 pages), 80% of accesses to a hot fifth of it. Both caches get the
// same capacity (the argument, in entries).
void BM_ReadU64CacheSize(benchmark::State& state) {
  constexpr size_t kPages = 4096;
  Guest guest(kPages);
  VmiCoreOptions options;
  options.page_cache_capacity = state.range(0);
  options.v2p_cache_capacity = state.range(0);
  Core core(StoreDriver(&guest.store), options);
  const Pa root = guest.builder.root();
  std::mt19937_64 rng(11);
  std::vector<uint64_t> addrs(kOffsets);
  for (auto& a : addrs) {
    const uint64_t page = (rng() % 10 < 8) ? rng() % (kPages / 5) : rng() % kPages;
    a = kBase + page * 4096 + ((rng() % 4096) & ~uint64_t{7});
  }
  for (uint64_t a : addrs) {
    if (!core.ReadU64(AccessContext::Virtual(Va(a), root)).ok()) std::abort();
  }
  core.page_cache().ResetStats();
  core.v2p_cache().ResetStats();
  size_t i = 0;
  for (auto _ : state) {
    auto v = core.ReadU64(AccessContext::Virtual(Va(addrs[i++ & (kOffsets - 1)]), root));
    benchmark::DoNotOptimize(v);
  }
  state.counters["v2p_hit_rate"] = core.v2p_cache().stats().HitRate();
  state.counters["page_hit_rate"] = core.page_cache().stats().HitRate();
  state.counters["cache_MiB"] =
      (core.page_cache().MemoryUsage() + core.v2p_cache().MemoryUsage()) / 1048576.0;
}
BENCHMARK(BM_ReadU64CacheSize)->Arg(64)->Arg(256)->Arg(1024)->Arg(4096)->Arg(8192);

}  // namespace
}  // namespace vmi
