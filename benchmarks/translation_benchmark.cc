// The translation fast path on a real workload: the Linux fixture dumps
// (tools/setup.sh; 512 MiB raw images of a Debian 6.1 guest, 4- and 5-level
// paging, KASLR on) read through DumpDriver, with ~2,000 addresses sampled
// across the kernel's regions (direct map, kernel image, modules, vmalloc,
// vmemmap, fixmap), the processes' user space and non-canonical space, about
// a third of them unmapped. Each figure stands next to the physical limit
// measured in the same run:
//   - BM_Load8: an 8-byte load from the same mapped dump at the same
//     physical addresses (what a read of a mapped address cannot beat);
//   - BM_Memcpy1MiB: memcpy of the same pages a bulk read copies.
//
//   bazel run --config=opt //benchmarks:translation_benchmark -- --benchmark_repetitions=5
//
// The argument of each benchmark is the fixture's paging depth (4 or 5).
// Every core here borrows one DumpDriver per fixture, so a fresh ("cold")
// core starts with empty caches but the dump's mapping is already faulted
// in: the cold figures are the core's own costs, not the host's.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "arch/amd64/amd64.h"
#include "benchmark/benchmark.h"
#include "core/vmi_core.h"
#include "drivers/dump/dump_driver.h"
#include "os/linux/discovery.h"
#include "os/linux/kernel_access.h"
#include "os/linux/processes.h"
#include "os/linux/testing/fixtures.h"

namespace vmi {
namespace {

using amd64::PageTableEntry;
using amd64::PagingMode;

// A driver that borrows a DumpDriver, so that each benchmark can build as
// many fresh cores as it likes over one mapping.
class BorrowedDump {
 public:
  using Architecture = Amd64;
  explicit BorrowedDump(dump::DumpDriver* driver) : driver_(driver) {}
  absl::StatusOr<VmiInfo> Info() const { return driver_->Info(); }
  absl::StatusOr<MappedPage> ReadPage(Gfn gfn) { return driver_->ReadPage(gfn); }

 private:
  dump::DumpDriver* driver_;
};
using Core = VmiCore<BorrowedDump>;

enum Region { kDirectMap, kImage, kModules, kVmalloc, kVmemmap, kFixmap, kUser, kNonCanonical };
constexpr const char* kRegionNames[] = {"direct map", "kernel image", "modules",
                                        "vmalloc",    "vmemmap",      "fixmap+cpu_entry_area",
                                        "user",       "non-canonical"};
// Addresses per region: mapped, unmapped. The fixmap's quota is split
// between its two ranges.
constexpr int kQuota[][2] = {{320, 100}, {240, 50}, {120, 90},  {200, 150},
                             {140, 50},  {15, 15},  {280, 130}, {0, 80}};

struct Leaf {
  uint64_t va;
  uint64_t size;
  Pa root;
};

struct Workload {
  std::unique_ptr<VmiCore<dump::DumpDriver>> owner;
  os_linux::LinuxKernel kernel;
  std::vector<AddressContext> mapped;       // shuffled
  std::vector<AddressContext> unmapped;     // shuffled
  std::vector<AddressContext> all;          // both, shuffled together
  std::vector<const uint8_t*> mapped_host;  // host address of each mapped sample in the dump
  int per_region[8][2] = {};
  // A 1 MiB direct-map range and its pages' host addresses.
  AccessContext bulk;
  std::vector<const uint8_t*> bulk_pages;

  BorrowedDump driver() { return BorrowedDump(&owner->driver()); }
  std::unique_ptr<Core> NewCore(VmiCoreOptions options = {}) {
    auto core = std::make_unique<Core>(driver(), options);
    core->SetPagingMode(kernel.paging);
    return core;
  }
};

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "translation_benchmark: %s\n", what.c_str());
  std::exit(1);
}

uint64_t SignExtend(uint64_t va, int levels) {
  const int bits = 12 + 9 * levels;
  return static_cast<uint64_t>(static_cast<int64_t>(va << (64 - bits)) >> (64 - bits));
}

// Every leaf mapping under `table` that overlaps [lo, hi), read straight
// from the dump (no core, so nothing is cached by the sampling).
void Enumerate(dump::DumpDriver& d, int levels, uint64_t table, int level, uint64_t base,
               uint64_t lo, uint64_t hi, Pa root, std::vector<Leaf>& out) {
  absl::StatusOr<MappedPage> page = d.ReadPage(Gfn(table >> 12));
  if (!page.ok()) return;
  const int shift = 12 + 9 * (level - 1);
  for (uint64_t i = 0; i < 512; ++i) {
    uint64_t raw;
    std::memcpy(&raw, page->data() + i * 8, 8);
    if (!(raw & PageTableEntry::kPresent)) continue;
    uint64_t va = base | (i << shift);
    if (level == levels) va = SignExtend(va, levels);
    const uint64_t size = uint64_t{1} << shift;
    if (va + size - 1 < lo || va >= hi) continue;
    const bool leaf =
        level == 1 || ((level == 2 || level == 3) && (raw & PageTableEntry::kPageSize));
    if (leaf) {
      out.push_back({va, size, root});
    } else {
      Enumerate(d, levels, raw & PageTableEntry::kFrameMask, level - 1, va, lo, hi, root, out);
    }
  }
}

// Picks the region's quota of mapped addresses (8-byte aligned, uniform over
// the mapped bytes of `leaves` clipped to [lo, hi)) and of unmapped ones: half anywhere in
// [lo, hi), half near a mapping (holes next to mapped memory fault deeper in
// the walk).
void SampleRegion(Workload& w, Core& probe, Region region, const std::vector<Leaf>& leaves,
                  uint64_t lo, uint64_t hi, std::mt19937_64& rng) {
  const int want_mapped = kQuota[region][0], want_unmapped = kQuota[region][1];
  std::vector<uint64_t> cumulative;
  uint64_t total = 0;
  for (const Leaf& l : leaves) {
    const uint64_t a = std::max(l.va, lo), b = std::min(l.va + l.size - 1, hi - 1);
    total += b - a + 1;
    cumulative.push_back(total);
  }
  auto clip_start = [&](const Leaf& l) { return std::max(l.va, lo); };
  int got = 0;
  for (int tries = 0; got < want_mapped && total > 0 && tries < want_mapped * 20; ++tries) {
    const uint64_t r = rng() % total;
    const size_t i = std::upper_bound(cumulative.begin(), cumulative.end(), r) - cumulative.begin();
    const uint64_t before = i == 0 ? 0 : cumulative[i - 1];
    const AddressContext ctx(Va((clip_start(leaves[i]) + (r - before)) & ~uint64_t{7}),
                             leaves[i].root);
    // Mapped means readable: a mapping of MMIO (the local APIC) has no bytes in the dump.
    if (!probe.ReadU64(ctx).ok()) continue;
    w.mapped.push_back(ctx);
    ++got;
  }
  w.per_region[region][0] += got;
  got = 0;
  const Pa any_root = leaves.empty() ? w.kernel.root : leaves[0].root;
  for (int tries = 0; got < want_unmapped && tries < want_unmapped * 200; ++tries) {
    uint64_t va;
    Pa root = any_root;
    if (tries % 2 == 0 || leaves.empty()) {
      va = lo + rng() % (hi - lo);
    } else {
      const Leaf& l = leaves[rng() % leaves.size()];
      root = l.root;
      va = l.va + (rng() % (8 << 20)) - (4 << 20);
      if (va < lo || va >= hi) continue;
    }
    const AddressContext ctx(Va(va & ~uint64_t{7}), root);
    if (probe.Translate(ctx).ok()) continue;
    w.unmapped.push_back(ctx);
    ++got;
  }
  w.per_region[region][1] += got;
}

Workload& Load(int levels) {
  static Workload* loaded[6] = {};
  if (loaded[levels] != nullptr) return *loaded[levels];
  auto fixture = os_linux::testing::FindLinuxFixture(levels == 5 ? "l5" : "l4");
  if (!fixture.ok()) Die(std::string(fixture.status().message()));
  auto driver = dump::DumpDriver::Open(fixture->raw_path());
  if (!driver.ok()) Die(std::string(driver.status().message()));
  auto* w = new Workload;
  w->owner = std::make_unique<VmiCore<dump::DumpDriver>>(*std::move(driver));
  auto kernel = os_linux::DiscoverLinux(*w->owner);
  if (!kernel.ok() || !kernel->symbols_status.ok() || !kernel->types_status.ok()) {
    Die("discovery failed on " + fixture->raw_path());
  }
  w->kernel = *std::move(kernel);
  const os_linux::LinuxKernel& k = w->kernel;
  dump::DumpDriver& d = w->owner->driver();
  auto probe = w->NewCore();
  std::mt19937_64 rng(2026);

  auto variable = [&](const char* name) {
    absl::StatusOr<uint64_t> v = w->owner->ReadU64(k.Kernel(Va(*k.Symbol(name))));
    if (!v.ok()) Die(absl::StrFormat("reading %s: %s", name, v.status().message()));
    return *v;
  };
  const uint64_t page_offset_base = variable("page_offset_base");
  const uint64_t vmalloc_base = variable("vmalloc_base");
  const uint64_t vmemmap_base = variable("vmemmap_base");
  const bool five = levels == 5;
  // Sizes from arch/x86/include/asm/pgtable_64_types.h and page_64_types.h.
  const uint64_t tib = uint64_t{1} << 40;
  struct Range {
    Region region;
    uint64_t lo, hi;
  };
  const Range ranges[] = {
      {kDirectMap, page_offset_base, page_offset_base + (five ? 32768 : 64) * tib},
      {kImage, 0xffffffff80000000ull, 0xffffffffc0000000ull},
      {kModules, 0xffffffffc0000000ull, 0xffffffffff000000ull},
      {kVmalloc, vmalloc_base, vmalloc_base + (five ? 12800 : 32) * tib},
      {kVmemmap, vmemmap_base, vmemmap_base + (five ? 512 : 1) * tib},
      {kFixmap, 0xffffffffff000000ull, 0xfffffffffffff000ull},
      // cpu_entry_area: per-CPU GDT, TSS and entry stacks, a fixmap of its own.
      {kFixmap, 0xfffffe0000000000ull, 0xfffffe8000000000ull},
  };
  for (const Range& r : ranges) {
    std::vector<Leaf> leaves;
    Enumerate(d, levels, k.root.value(), levels, 0, r.lo, r.hi, k.root, leaves);
    if (r.region == kImage) {
      // Kernel-image reads are reads of its symbols.
      std::vector<Leaf> symbols;
      for (int n = 0; symbols.size() < 4 * kQuota[kImage][0] && n < 100000; ++n) {
        const os_linux::Symbol s = k.symbols[rng() % k.symbols.size()];
        if (s.address >= r.lo && s.address < r.hi)
          symbols.push_back({s.address & ~uint64_t{7}, 8, k.root});
      }
      SampleRegion(*w, *probe, r.region, symbols, r.lo, r.hi, rng);
      continue;
    }
    SampleRegion(*w, *probe, r.region, leaves, r.lo, r.hi, rng);
  }
  // User space: every process with an address space, through its own root.
  {
    os_linux::CoreGuestMemory<dump::DumpDriver> memory(*w->owner, w->owner->Info()->max_gfn);
    const os_linux::KernelAccess access(memory, k);
    auto layout = os_linux::TaskLayout::Resolve(*k.types);
    if (!layout.ok()) Die("task layout: " + std::string(layout.status().message()));
    const os_linux::TaskList list = os_linux::ListProcesses(access, *layout);
    std::vector<Leaf> leaves;
    for (const os_linux::Task& t : list.tasks) {
      if (t.mm == 0 || !t.root) continue;
      Enumerate(d, levels, t.root->value(), levels, 0, 0x1000, five ? (1ull << 56) : (1ull << 47),
                *t.root, leaves);
    }
    if (leaves.empty()) Die("no user mappings found");
    SampleRegion(*w, *probe, kUser, leaves, 0x1000,
                 five ? (1ull << 56) - 0x1000 : (1ull << 47) - 0x1000, rng);
  }
  // Non-canonical: between the halves.
  {
    const uint64_t lo = five ? (1ull << 56) : (1ull << 47);
    const uint64_t hi = ~lo + 1;  // the first canonical kernel address
    int got = 0;
    while (got < kQuota[kNonCanonical][1]) {
      w->unmapped.push_back(AddressContext(Va((lo + rng() % (hi - lo)) & ~uint64_t{7}), k.root));
      ++got;
    }
    w->per_region[kNonCanonical][1] = got;
  }

  std::shuffle(w->mapped.begin(), w->mapped.end(), rng);
  std::shuffle(w->unmapped.begin(), w->unmapped.end(), rng);
  w->all = w->mapped;
  w->all.insert(w->all.end(), w->unmapped.begin(), w->unmapped.end());
  std::shuffle(w->all.begin(), w->all.end(), rng);

  // Host addresses in the dump's own mapping, for the physical limit.
  absl::flat_hash_map<uint64_t, const uint8_t*> host;  // gfn -> page
  for (const auto& range : d.MappedRanges()) {
    for (size_t off = 0; off < range.bytes.size(); off += 4096) {
      host[range.first.value() + off / 4096] = range.bytes.data() + off;
    }
  }
  auto host_of = [&](Pa pa) {
    auto it = host.find(pa.value() >> 12);
    if (it == host.end()) Die(absl::StrFormat("pa %s is not in the mapping", pa));
    return it->second + (pa.value() & 0xfff);
  };
  for (const AddressContext& ctx : w->mapped) {
    absl::StatusOr<Pa> pa = probe->Translate(ctx);
    if (!pa.ok()) Die("a mapped sample stopped translating");
    w->mapped_host.push_back(host_of(*pa));
  }
  // Bulk: 1 MiB of the direct map, 64 MiB into RAM.
  w->bulk = AccessContext::Virtual(Va(page_offset_base + (64 << 20)), k.root);
  for (uint64_t off = 0; off < (1 << 20); off += 4096) {
    absl::StatusOr<Pa> pa = probe->Translate(AddressContext(Va(w->bulk.address + off), k.root));
    if (!pa.ok()) Die("the bulk range is not mapped");
    w->bulk_pages.push_back(host_of(*pa));
  }

  std::fprintf(stderr, "%s: %zu mapped + %zu unmapped addresses (%.0f%% unmapped):",
               fixture->variant.c_str(), w->mapped.size(), w->unmapped.size(),
               100.0 * w->unmapped.size() / w->all.size());
  for (int r = 0; r < 8; ++r) {
    std::fprintf(stderr, " %s %d+%d%s", kRegionNames[r], w->per_region[r][0], w->per_region[r][1],
                 r == 7 ? "\n" : ",");
  }
  loaded[levels] = w;
  return *w;
}

void SetPerAddress(benchmark::State& state, size_t per_iteration) {
  state.SetItemsProcessed(state.iterations() * per_iteration);
}

// Keeps a loaded value alive in a register. benchmark::DoNotOptimize(v)
// cannot be used on a value just copied out of memory: its "+m,r" (and
// "r,m") operand lets GCC 12 hand the asm v's own stack slot and drop the
// copy (and with it the load) altogether, so the loop measured only the
// stream of host pointers.
inline void UseLoaded(uint64_t v) { asm volatile("" : : "r"(v) : "memory"); }

// The physical limit: an 8-byte load from the mapped dump at each mapped
// sample's physical address, in the same random order.
void BM_Load8(benchmark::State& state) {
  const Workload& w = Load(state.range(0));
  const size_t n = w.mapped_host.size();
  size_t i = 0;
  for (auto _ : state) {
    uint64_t v;
    std::memcpy(&v, w.mapped_host[i], 8);
    UseLoaded(v);
    if (++i == n) i = 0;
  }
}
BENCHMARK(BM_Load8)->Arg(4)->Arg(5);

// Warm: every sample translated once before timing; V2P hits.
void BM_TranslateWarmMapped(benchmark::State& state) {
  Workload& w = Load(state.range(0));
  auto core = w.NewCore();
  for (const AddressContext& c : w.mapped) {
    if (!core->Translate(c).ok()) std::abort();
  }
  core->v2p_cache().ResetStats();
  size_t i = 0;
  const size_t n = w.mapped.size();
  for (auto _ : state) {
    auto pa = core->Translate(w.mapped[i]);
    benchmark::DoNotOptimize(pa);
    if (++i == n) i = 0;
  }
  state.counters["v2p_hit%"] = 100 * core->v2p_cache().stats().HitRate();
}
BENCHMARK(BM_TranslateWarmMapped)->Arg(4)->Arg(5);

// Warm faults: the unmapped samples, each asked before (so their table
// pages are in the page cache); the caller only checks ok().
void BM_TranslateWarmUnmapped(benchmark::State& state) {
  Workload& w = Load(state.range(0));
  auto core = w.NewCore();
  for (const AddressContext& c : w.unmapped) {
    if (core->Translate(c).ok()) std::abort();
  }
  size_t i = 0;
  const size_t n = w.unmapped.size();
  for (auto _ : state) {
    auto pa = core->Translate(w.unmapped[i]);
    benchmark::DoNotOptimize(pa);
    if (++i == n) i = 0;
  }
}
BENCHMARK(BM_TranslateWarmUnmapped)->Arg(4)->Arg(5);

// A fresh core (construction included) translating every sample once, mapped
// and unmapped mixed; time per address.
void BM_TranslateCold(benchmark::State& state) {
  Workload& w = Load(state.range(0));
  for (auto _ : state) {
    auto core = w.NewCore();
    for (const AddressContext& c : w.all) {
      auto pa = core->Translate(c);
      benchmark::DoNotOptimize(pa);
    }
    state.PauseTiming();
    core.reset();
    state.ResumeTiming();
  }
  SetPerAddress(state, w.all.size());
  state.counters["per_addr"] = benchmark::Counter(
      static_cast<double>(w.all.size()),
      benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_TranslateCold)->Arg(4)->Arg(5)->Unit(benchmark::kMicrosecond);

// Construction and destruction of a core alone: what a cold pass pays
// before its first translation.
void BM_NewCore(benchmark::State& state) {
  Workload& w = Load(state.range(0));
  for (auto _ : state) {
    auto core = w.NewCore();
    benchmark::DoNotOptimize(core.get());
  }
}
BENCHMARK(BM_NewCore)->Arg(4)->Arg(5)->Unit(benchmark::kMicrosecond);

// The page-cache-warm walk of a mapped address (V2P cache off): what the
// cold pass is compared with.
void BM_WalkPageCacheWarm(benchmark::State& state) {
  Workload& w = Load(state.range(0));
  VmiCoreOptions options;
  options.v2p_cache_enabled = false;
  auto core = w.NewCore(options);
  for (const AddressContext& c : w.mapped) {
    if (!core->Translate(c).ok()) std::abort();
  }
  core->page_cache().ResetStats();
  size_t i = 0;
  const size_t n = w.mapped.size();
  for (auto _ : state) {
    auto pa = core->Translate(w.mapped[i]);
    benchmark::DoNotOptimize(pa);
    if (++i == n) i = 0;
  }
  state.counters["page_hit%"] = 100 * core->page_cache().stats().HitRate();
}
BENCHMARK(BM_WalkPageCacheWarm)->Arg(4)->Arg(5);

// Hot random ReadU64 over the mapped samples (~1,300 pages): compare with
// BM_Load8.
void BM_ReadU64Hot(benchmark::State& state) {
  Workload& w = Load(state.range(0));
  auto core = w.NewCore();
  for (const AddressContext& c : w.mapped) {
    if (!core->ReadU64(c).ok()) std::abort();
  }
  if constexpr (requires { core->tlb(); }) core->tlb().ResetStats();
  size_t i = 0;
  const size_t n = w.mapped.size();
  for (auto _ : state) {
    auto v = core->ReadU64(w.mapped[i]);
    benchmark::DoNotOptimize(v);
    if (++i == n) i = 0;
  }
  if constexpr (requires { core->tlb(); }) {
    const CacheStats tlb = core->tlb().stats();
    state.counters["tlb_hit%"] = 100.0 * tlb.hits / std::max<uint64_t>(1, tlb.hits + tlb.misses);
  }
}
BENCHMARK(BM_ReadU64Hot)->Arg(4)->Arg(5);

// The same reads consumed as a caller does: the result checked, the value
// used in a register. BM_ReadU64Hot hands the whole FaultOr to
// DoNotOptimize, which forces it to memory and makes its destructor test the
// state again after the asm: two stores, a load and a branch that inlined
// code checking ok() does not pay (the compiler knows the state on the hit
// path).
void BM_ReadU64HotChecked(benchmark::State& state) {
  Workload& w = Load(state.range(0));
  auto core = w.NewCore();
  for (const AddressContext& c : w.mapped) {
    if (!core->ReadU64(c).ok()) std::abort();
  }
  size_t i = 0;
  const size_t n = w.mapped.size();
  for (auto _ : state) {
    FaultOr<uint64_t> v = core->ReadU64(w.mapped[i]);
    if (!v.ok()) std::abort();
    UseLoaded(*v);
    if (++i == n) i = 0;
  }
}
BENCHMARK(BM_ReadU64HotChecked)->Arg(4)->Arg(5);

// The same two loops over the first `n` mapped samples only (second
// argument): how much of the gap to BM_Load8 is the probe's instructions
// (everything in L1 at 16) and how much the TLB line's miss in front of the
// data's (the full set).
void BM_Load8Subset(benchmark::State& state) {
  const Workload& w = Load(state.range(0));
  const size_t n = std::min<size_t>(state.range(1), w.mapped_host.size());
  size_t i = 0;
  for (auto _ : state) {
    uint64_t v;
    std::memcpy(&v, w.mapped_host[i], 8);
    UseLoaded(v);
    if (++i == n) i = 0;
  }
}
void BM_ReadU64HotSubset(benchmark::State& state) {
  Workload& w = Load(state.range(0));
  auto core = w.NewCore();
  const size_t n = std::min<size_t>(state.range(1), w.mapped.size());
  for (size_t j = 0; j < n; ++j) {
    if (!core->ReadU64(w.mapped[j]).ok()) std::abort();
  }
  size_t i = 0;
  for (auto _ : state) {
    auto v = core->ReadU64(w.mapped[i]);
    benchmark::DoNotOptimize(v);
    if (++i == n) i = 0;
  }
}
BENCHMARK(BM_Load8Subset)->ArgsProduct({{4}, {16, 128, 512}});
BENCHMARK(BM_ReadU64HotSubset)->ArgsProduct({{4}, {16, 128, 512}});

// ReadU64 of the unmapped samples, warm: what a scan that probes pays.
void BM_ReadU64Unmapped(benchmark::State& state) {
  Workload& w = Load(state.range(0));
  auto core = w.NewCore();
  for (const AddressContext& c : w.unmapped) {
    if (core->ReadU64(c).ok()) std::abort();
  }
  size_t i = 0;
  const size_t n = w.unmapped.size();
  for (auto _ : state) {
    auto v = core->ReadU64(w.unmapped[i]);
    benchmark::DoNotOptimize(v);
    if (++i == n) i = 0;
  }
}
BENCHMARK(BM_ReadU64Unmapped)->Arg(4)->Arg(5);

// The physical limit of a bulk read: memcpy of the same 256 pages.
void BM_Memcpy1MiB(benchmark::State& state) {
  Workload& w = Load(state.range(0));
  std::vector<uint8_t> out(1 << 20);
  for (auto _ : state) {
    for (size_t p = 0; p < w.bulk_pages.size(); ++p) {
      std::memcpy(out.data() + p * 4096, w.bulk_pages[p], 4096);
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * out.size());
}
BENCHMARK(BM_Memcpy1MiB)->Arg(4)->Arg(5);

void BM_ReadBulk1MiB(benchmark::State& state) {
  Workload& w = Load(state.range(0));
  auto core = w.NewCore();
  std::vector<uint8_t> out(1 << 20);
  if (!core->Read(w.bulk, absl::MakeSpan(out)).ok()) std::abort();
  for (auto _ : state) {
    auto s = core->Read(w.bulk, absl::MakeSpan(out));
    benchmark::DoNotOptimize(s);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * out.size());
}
BENCHMARK(BM_ReadBulk1MiB)->Arg(4)->Arg(5);

}  // namespace
}  // namespace vmi
