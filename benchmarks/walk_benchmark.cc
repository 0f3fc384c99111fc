// The x86-64 page walk alone, over an in-memory page store (a hash map from
// frame to page, no caches): ns per translation for 4- and 5-level tables
// with 4 KiB and 2 MiB leaves.
//
//   bazel run --config=opt //benchmarks:walk_benchmark

#include <cstdint>
#include <random>
#include <vector>

#include "arch/amd64/paging.h"
#include "arch/amd64/testing/page_store.h"
#include "absl/strings/str_format.h"
#include "benchmark/benchmark.h"

namespace vmi::amd64 {
namespace {

using testing::MemoryPageStore;
using testing::PageTableBuilder;

// Arguments: levels (4 or 5), leaf size in KiB (4 or 2048).
void BM_Walk(benchmark::State& state) {
  const PagingMode mode = state.range(0) == 5 ? PagingMode::FiveLevel() : PagingMode::FourLevel();
  const uint64_t page = state.range(1) * 1024;
  MemoryPageStore store(Gfn((1ull << 36) - 1));
  PageTableBuilder builder(store, mode);
  constexpr size_t kMappings = 1024;
  std::mt19937_64 rng(5);
  std::vector<uint64_t> vas;
  for (size_t i = 0; vas.size() < kMappings; ++i) {
    // Spread over the lower half so every walk touches several tables.
    const uint64_t va = (rng() & ((1ull << (mode.levels() == 5 ? 56 : 47)) - 1)) & ~(page - 1);
    if (builder.Map(Va(va), Pa((0x100000 + i) * page), page, 0x3).ok()) vas.push_back(va);
  }
  std::vector<Va> probes(1 << 14);
  for (auto& p : probes) p = Va(vas[rng() % vas.size()] + (rng() % page));
  size_t i = 0;
  for (auto _ : state) {
    auto t = TranslatePage(store, AddressContext(probes[i++ & (probes.size() - 1)], builder.root()), mode);
    benchmark::DoNotOptimize(t);
  }
  state.SetLabel(absl::StrFormat("%s %s", mode.ToString(), page == 4096 ? "4K" : "2M"));
}
BENCHMARK(BM_Walk)->Args({4, 4})->Args({4, 2048})->Args({5, 4})->Args({5, 2048});

}  // namespace
}  // namespace vmi::amd64
