// Linux discovery on a real guest dump (the 4-level fixture's 512 MiB raw
// image, built by tools/setup.sh), each figure next to a baseline from the
// same run:
//   - the physical scan for "OSRELEASE=" over every frame, against memmem
//     and memchr over the same mapped bytes;
//   - full discovery (VMCOREINFO + kallsyms + BTF) and its parts;
//   - symbol lookup by name and by address.
//
//   bazel run --config=opt //benchmarks:linux_benchmark

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "core/vmi_core.h"
#include "drivers/dump/dump_driver.h"
#include "os/linux/btf_types.h"
#include "os/linux/discovery.h"
#include "os/linux/internal/scan.h"
#include "os/linux/kallsyms.h"
#include "os/linux/kernel_access.h"
#include "os/linux/maps.h"
#include "os/linux/processes.h"
#include "os/linux/testing/fixtures.h"

namespace vmi::os_linux {
namespace {

using Core = VmiCore<dump::DumpDriver>;

const testing::LinuxFixture& Fixture() {
  static const testing::LinuxFixture* fixture = [] {
    absl::StatusOr<testing::LinuxFixture> f = testing::FindLinuxFixture("l4");
    if (!f.ok()) {
      std::fprintf(stderr, "%s\n", std::string(f.status().message()).c_str());
      std::exit(1);
    }
    return new testing::LinuxFixture(*f);
  }();
  return *fixture;
}

std::unique_ptr<Core> OpenCore(const std::string& path) {
  absl::StatusOr<dump::DumpDriver> driver = dump::DumpDriver::Open(path);
  if (!driver.ok()) std::abort();
  return std::make_unique<Core>(*std::move(driver));
}

// The raw image mapped once and touched, like the driver's mapping after a
// first pass: the scans compare search speed, not page faults.
struct Mapped {
  const uint8_t* data = nullptr;
  size_t size = 0;
};
const Mapped& RawImage() {
  static const Mapped image = [] {
    Mapped m;
    const int fd = open(Fixture().raw_path().c_str(), O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) std::abort();
    m.size = st.st_size;
    void* p = mmap(nullptr, m.size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
    if (p == MAP_FAILED) std::abort();
    close(fd);
    m.data = static_cast<const uint8_t*>(p);
    return m;
  }();
  return image;
}

// Baselines: libc's searches over the same bytes.
void BM_MemmemWholeImage(benchmark::State& state) {
  const Mapped& m = RawImage();
  size_t hits = 0;
  for (auto _ : state) {
    hits = 0;
    const uint8_t* p = m.data;
    size_t left = m.size;
    while (const void* hit = memmem(p, left, "OSRELEASE=", 10)) {
      ++hits;
      const size_t skip = static_cast<const uint8_t*>(hit) - p + 1;
      p += skip;
      left -= skip;
    }
    benchmark::DoNotOptimize(hits);
  }
  state.counters["hits"] = hits;
  state.SetBytesProcessed(state.iterations() * m.size);
}
BENCHMARK(BM_MemmemWholeImage)->Unit(benchmark::kMillisecond);

void BM_MemchrWholeImage(benchmark::State& state) {
  // A byte that never occurs makes memchr read everything once.
  const Mapped& m = RawImage();
  for (auto _ : state) {
    size_t found = 0;
    for (size_t at = 0; at < m.size; at += 1 << 20) {
      found += memchr(m.data + at, 0x100 - 1 - 0x00, std::min<size_t>(1 << 20, m.size - at)) != nullptr;
    }
    benchmark::DoNotOptimize(found);
  }
  state.SetBytesProcessed(state.iterations() * m.size);
}
BENCHMARK(BM_MemchrWholeImage)->Unit(benchmark::kMillisecond);

// Our pattern search alone over the same mapped bytes.
void BM_FindPatternWholeImage(benchmark::State& state) {
  const Mapped& m = RawImage();
  size_t hits = 0;
  for (auto _ : state) {
    hits = 0;
    const absl::Span<const uint8_t> all(m.data, m.size);
    for (size_t at = 0; (at = os_linux_internal::FindPattern(all, "OSRELEASE=", at)) !=
                        os_linux_internal::kNotFound;
         ++at) {
      ++hits;
    }
    benchmark::DoNotOptimize(hits);
  }
  state.counters["hits"] = hits;
  state.SetBytesProcessed(state.iterations() * m.size);
}
BENCHMARK(BM_FindPatternWholeImage)->Unit(benchmark::kMillisecond);

// The discovery scan path: frame by frame through the DumpDriver (one
// ReadPage per frame), every hit counted, nothing stops it.
void BM_PhysicalScanWholeImage(benchmark::State& state) {
  std::unique_ptr<Core> core = OpenCore(Fixture().raw_path());
  CoreGuestMemory<dump::DumpDriver> memory(*core, core->Info()->max_gfn);
  ScanStats stats;
  for (auto _ : state) {
    stats = ScanStats();
    absl::Status s = os_linux_internal::ScanPhysicalMemory(
        memory, "OSRELEASE=", &stats, [](uint64_t) -> absl::StatusOr<bool> { return false; });
    if (!s.ok()) std::abort();
  }
  state.counters["hits"] = stats.candidates;
  state.counters["frames"] = stats.frames_scanned;
  state.SetBytesProcessed(state.iterations() * stats.frames_scanned * 4096);
}
BENCHMARK(BM_PhysicalScanWholeImage)->Unit(benchmark::kMillisecond);

// Full discovery as `vmi os` does it: open the dump, find VMCOREINFO by the
// scan, decode kallsyms, parse BTF. Open included; the file is in the page
// cache.
void BM_DiscoverLinuxRaw(benchmark::State& state) {
  ScanStats stats;
  size_t symbols = 0, types = 0;
  for (auto _ : state) {
    std::unique_ptr<Core> core = OpenCore(Fixture().raw_path());
    absl::StatusOr<LinuxKernel> k = DiscoverLinux(*core, {}, &stats);
    if (!k.ok() || !k->symbols_status.ok() || !k->types_status.ok()) std::abort();
    symbols = k->symbols.size();
    types = k->types->type_count();
  }
  state.counters["frames_scanned"] = stats.frames_scanned;
  state.counters["symbols"] = symbols;
  state.counters["types"] = types;
}
BENCHMARK(BM_DiscoverLinuxRaw)->Unit(benchmark::kMillisecond);

void BM_DiscoverLinuxElfNote(benchmark::State& state) {
  for (auto _ : state) {
    std::unique_ptr<Core> core = OpenCore(Fixture().elf_path());
    absl::StatusOr<LinuxKernel> k = DiscoverLinux(*core);
    if (!k.ok() || !k->types_status.ok()) std::abort();
  }
}
BENCHMARK(BM_DiscoverLinuxElfNote)->Unit(benchmark::kMillisecond);

// The parts: VMCOREINFO only, kallsyms decode, BTF parse.
void BM_DiscoverLayoutOnly(benchmark::State& state) {
  DiscoveryOptions options;
  options.load_symbols = options.load_types = false;
  for (auto _ : state) {
    std::unique_ptr<Core> core = OpenCore(Fixture().raw_path());
    absl::StatusOr<LinuxKernel> k = DiscoverLinux(*core, options);
    if (!k.ok()) std::abort();
  }
}
BENCHMARK(BM_DiscoverLayoutOnly)->Unit(benchmark::kMillisecond);

struct Discovered {
  std::unique_ptr<Core> core;
  LinuxKernel kernel;
};
Discovered& Kernel() {
  static Discovered* d = [] {
    auto* out = new Discovered;
    out->core = OpenCore(Fixture().raw_path());
    absl::StatusOr<LinuxKernel> k = DiscoverLinux(*out->core);
    if (!k.ok() || !k->types_status.ok()) std::abort();
    out->kernel = *std::move(k);
    return out;
  }();
  return *d;
}

void BM_KallsymsDecode(benchmark::State& state) {
  Discovered& d = Kernel();
  const KallsymsLocation location = *KallsymsLocation::FromVmcoreinfo(*d.kernel.vmcoreinfo);
  for (auto _ : state) {
    absl::StatusOr<SymbolTable> table =
        DecodeKallsyms(location, [&](uint64_t va, absl::Span<uint8_t> out) {
          d.core->SetPagingMode(d.kernel.paging);
          return d.core->Read(AccessContext::Virtual(Va(va), d.kernel.root), out);
        });
    if (!table.ok()) std::abort();
    benchmark::DoNotOptimize(table->size());
  }
}
BENCHMARK(BM_KallsymsDecode)->Unit(benchmark::kMillisecond);

void BM_BtfParse(benchmark::State& state) {
  Discovered& d = Kernel();
  const uint64_t start = *d.kernel.symbols.Address("__start_BTF");
  const uint64_t stop = *d.kernel.symbols.Address("__stop_BTF");
  std::vector<uint8_t> data(stop - start);
  if (!d.core->Read(AccessContext::Virtual(Va(start), d.kernel.root), absl::MakeSpan(data)).ok()) std::abort();
  for (auto _ : state) {
    auto types = BtfTypes::Parse(data, "bench");
    if (!types.ok()) std::abort();
    benchmark::DoNotOptimize(types->get());
  }
  state.SetBytesProcessed(state.iterations() * data.size());
}
BENCHMARK(BM_BtfParse)->Unit(benchmark::kMillisecond);

// Lookups: 4096 random symbols, precomputed.
void BM_SymbolByName(benchmark::State& state) {
  const SymbolTable& table = Kernel().kernel.symbols;
  std::mt19937 rng(3);
  std::vector<std::string> names;
  for (int i = 0; i < 4096; ++i) names.emplace_back(table[rng() % table.size()].name);
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(table.Address(names[i++ & 4095]));
  }
}
BENCHMARK(BM_SymbolByName);

void BM_SymbolByAddress(benchmark::State& state) {
  const SymbolTable& table = Kernel().kernel.symbols;
  std::mt19937 rng(4);
  std::vector<uint64_t> addresses;
  while (addresses.size() < 4096) {
    const Symbol s = table[rng() % table.size()];
    if (s.type != 'A' && s.type != 'a') addresses.push_back(s.address + rng() % 16);
  }
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(table.Symbolize(addresses[i++ & 4095]));
  }
}
BENCHMARK(BM_SymbolByAddress);

// `ps` without discovery: the process list from init_task.tasks (one
// ReadTask per process: ids, comm, creds, mm, pgd translated), caches warm
// after the first iteration.
void BM_ListProcesses(benchmark::State& state) {
  Discovered& d = Kernel();
  CoreGuestMemory<dump::DumpDriver> memory(*d.core, d.core->Info()->max_gfn);
  const KernelAccess access(memory, d.kernel);
  const absl::StatusOr<TaskLayout> layout = TaskLayout::Resolve(*d.kernel.types);
  if (!layout.ok()) std::abort();
  d.core->page_cache().ResetStats();
  d.core->v2p_cache().ResetStats();
  size_t tasks = 0;
  for (auto _ : state) {
    TaskList list = ListProcesses(access, *layout);
    if (!list.complete()) std::abort();
    tasks = list.tasks.size();
  }
  state.counters["tasks"] = tasks;
  state.counters["page_hit%"] = 100 * d.core->page_cache().stats().HitRate();
  state.counters["v2p_hit%"] = 100 * d.core->v2p_cache().stats().HitRate();
}
BENCHMARK(BM_ListProcesses)->Unit(benchmark::kMicrosecond);

// `vmi maps` of one process without discovery: fixture-threads' 17 maps
// from its maple tree, names and paths included; caches warm.
void BM_MapsOneProcess(benchmark::State& state) {
  Discovered& d = Kernel();
  CoreGuestMemory<dump::DumpDriver> memory(*d.core, d.core->Info()->max_gfn);
  const KernelAccess access(memory, d.kernel);
  const TaskLayout tasks = *TaskLayout::Resolve(*d.kernel.types);
  const absl::StatusOr<MapsLayout> layout = MapsLayout::Resolve(*d.kernel.types);
  if (!layout.ok()) std::abort();
  uint64_t mm = 0;
  for (const Task& t : ListProcesses(access, tasks).tasks) {
    if (t.comm == "fixture-threads") mm = t.mm;
  }
  if (mm == 0) std::abort();
  d.core->page_cache().ResetStats();
  d.core->v2p_cache().ResetStats();
  size_t maps = 0;
  for (auto _ : state) {
    MapList list = ListMaps(access, *layout, mm);
    if (!list.complete()) std::abort();
    maps = list.maps.size();
  }
  state.counters["maps"] = maps;
  state.counters["page_hit%"] = 100 * d.core->page_cache().stats().HitRate();
  state.counters["v2p_hit%"] = 100 * d.core->v2p_cache().stats().HitRate();
}
BENCHMARK(BM_MapsOneProcess)->Unit(benchmark::kMicrosecond);

// The real-workload cache table: the process list and every process's maps,
// each iteration from empty caches (as after resuming a live guest), with
// both caches at the capacity given (entries); 0 = both caches disabled.
void BM_PsAndAllMaps(benchmark::State& state) {
  Discovered& d = Kernel();
  const size_t capacity = state.range(0);
  CoreGuestMemory<dump::DumpDriver> memory(*d.core, d.core->Info()->max_gfn);
  const KernelAccess access(memory, d.kernel);
  const TaskLayout tasks = *TaskLayout::Resolve(*d.kernel.types);
  const MapsLayout maps_layout = *MapsLayout::Resolve(*d.kernel.types);
  PageCache& pages = d.core->page_cache();
  V2pCache& v2p = d.core->v2p_cache();
  pages.SetEnabled(capacity != 0);
  v2p.SetEnabled(capacity != 0);
  if (capacity != 0) {
    pages.Resize(capacity);
    v2p.Resize(capacity);
  }
  pages.ResetStats();
  v2p.ResetStats();
  size_t processes = 0, maps = 0;
  for (auto _ : state) {
    d.core->FlushPageCache();
    d.core->FlushV2pCache();
    TaskList list = ListProcesses(access, tasks);
    if (!list.complete()) std::abort();
    processes = list.tasks.size();
    maps = 0;
    for (const Task& t : list.tasks) {
      if (t.mm == 0) continue;
      MapList m = ListMaps(access, maps_layout, t.mm);
      if (!m.complete()) std::abort();
      maps += m.maps.size();
    }
  }
  state.counters["processes"] = processes;
  state.counters["maps"] = maps;
  state.counters["page_hit%"] = 100 * pages.stats().HitRate();
  state.counters["v2p_hit%"] = 100 * v2p.stats().HitRate();
  state.counters["page_lookups"] = benchmark::Counter(
      static_cast<double>(pages.stats().hits + pages.stats().misses), benchmark::Counter::kAvgIterations);
  // Back to the defaults for the benchmarks that follow.
  pages.SetEnabled(true);
  v2p.SetEnabled(true);
  pages.Resize(PageCache::kDefaultCapacity);
  v2p.Resize(V2pCache::kDefaultCapacity);
}
BENCHMARK(BM_PsAndAllMaps)
    ->Arg(0)
    ->Arg(16)
    ->Arg(64)
    ->Arg(256)
    ->Arg(1024)
    ->Arg(4096)
    ->Arg(16384)
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace vmi::os_linux
