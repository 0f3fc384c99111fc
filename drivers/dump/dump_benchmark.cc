// DumpDriver costs: Open of a 1 GiB sparse raw image and of ELF cores with
// many PT_LOAD segments (Open must cost headers, not a scan of the data),
// and ReadPage / VmiCore::ReadU64, hot (same page) and cold (first touch of
// each page of the mapping), against an 8-byte memcpy from the mapping.
// The dump files are created in /tmp at start (the raw one sparse, with
// ftruncate) and deleted at exit.
//
//   bazel run -c opt //drivers/dump:dump_benchmark

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include "absl/strings/str_format.h"
#include "benchmark/benchmark.h"
#include "core/vmi_core.h"
#include "drivers/dump/dump_driver.h"
#include "drivers/dump/dump_writer.h"

namespace vmi::dump {
namespace {

constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr uint64_t kPages = kGiB / 4096;

// Benchmark input files, removed when the process exits.
class Files {
 public:
  ~Files() {
    for (const auto& [key, path] : paths_) unlink(path.c_str());
  }
  const std::string& SparseRaw() {
    auto it = paths_.find("raw");
    if (it != paths_.end()) return it->second;
    const std::string path = absl::StrFormat("/tmp/vmi_dump_bench_%d.raw", getpid());
    const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, kGiB) != 0) std::abort();
    close(fd);
    return paths_["raw"] = path;
  }
  const std::string& Elf(int segments) {
    const std::string key = absl::StrFormat("elf%d", segments);
    auto it = paths_.find(key);
    if (it != paths_.end()) return it->second;
    const std::string path = absl::StrFormat("/tmp/vmi_dump_bench_%d_%d.elf", getpid(), segments);
    DumpSource source;
    for (int i = 0; i < segments; ++i) source.ranges.push_back({Gfn(2 * i), 1});  // holes between
    source.read_page = [](Gfn, absl::Span<uint8_t>) { return absl::OkStatus(); };
    source.vcpus.resize(4);
    if (!WriteElfCoreDump(path, source).ok()) std::abort();
    return paths_[key] = path;
  }

 private:
  std::map<std::string, std::string> paths_;
};
Files files;

void BM_OpenSparseRaw1GiB(benchmark::State& state) {
  const std::string& path = files.SparseRaw();
  for (auto _ : state) {
    absl::StatusOr<DumpDriver> driver = DumpDriver::Open(path);
    if (!driver.ok()) state.SkipWithError("open failed");
    benchmark::DoNotOptimize(driver);
  }
}
BENCHMARK(BM_OpenSparseRaw1GiB);

void BM_OpenElfSegments(benchmark::State& state) {
  const std::string& path = files.Elf(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    absl::StatusOr<DumpDriver> driver = DumpDriver::Open(path);
    if (!driver.ok()) state.SkipWithError("open failed");
    benchmark::DoNotOptimize(driver);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_OpenElfSegments)->Arg(16)->Arg(1024)->Arg(16384);

void BM_ReadPageHot(benchmark::State& state) {
  DumpDriver driver = *DumpDriver::Open(files.SparseRaw());
  for (auto _ : state) benchmark::DoNotOptimize(driver.ReadPage(Gfn(0x1234)));
}
BENCHMARK(BM_ReadPageHot);

void BM_ReadPageElfSegmentsHot(benchmark::State& state) {
  DumpDriver driver = *DumpDriver::Open(files.Elf(16384));
  uint64_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(driver.ReadPage(Gfn(2 * (i++ % 16384))));
}
BENCHMARK(BM_ReadPageElfSegmentsHot);

// Each iteration reads a page of the mapping never touched before (a minor
// fault: the data is in the OS page cache, or is a hole of the sparse file).
void BM_ReadPageCold(benchmark::State& state) {
  auto driver = std::make_unique<DumpDriver>(*DumpDriver::Open(files.SparseRaw()));
  uint64_t gfn = 0;
  for (auto _ : state) {
    if (gfn == kPages) {
      state.PauseTiming();
      driver = std::make_unique<DumpDriver>(*DumpDriver::Open(files.SparseRaw()));
      gfn = 0;
      state.ResumeTiming();
    }
    absl::StatusOr<MappedPage> page = driver->ReadPage(Gfn(gfn++));
    benchmark::DoNotOptimize(page->data()[8]);
  }
}
BENCHMARK(BM_ReadPageCold);

void BM_Memcpy8Reference(benchmark::State& state) {
  DumpDriver driver = *DumpDriver::Open(files.SparseRaw());
  const MappedPage page = *driver.ReadPage(Gfn(0x1234));
  uint64_t value;
  for (auto _ : state) {
    std::memcpy(&value, page.data() + 0x18, 8);
    benchmark::DoNotOptimize(value);
  }
}
BENCHMARK(BM_Memcpy8Reference);

void BM_ReadU64Hot(benchmark::State& state) {
  VmiCore<DumpDriver> core(*DumpDriver::Open(files.SparseRaw()));
  const AccessContext ctx = AccessContext::Physical(Pa(0x1234018));
  for (auto _ : state) benchmark::DoNotOptimize(core.ReadU64(ctx));
}
BENCHMARK(BM_ReadU64Hot);

// Every read is on a new page: a VmiCore page-cache miss, a driver ReadPage
// and, on the first pass over the GiB, a first touch of the mapping.
void BM_ReadU64Cold(benchmark::State& state) {
  auto core = std::make_unique<VmiCore<DumpDriver>>(*DumpDriver::Open(files.SparseRaw()));
  uint64_t gfn = 0;
  for (auto _ : state) {
    if (gfn == kPages) {
      state.PauseTiming();
      core = std::make_unique<VmiCore<DumpDriver>>(*DumpDriver::Open(files.SparseRaw()));
      gfn = 0;
      state.ResumeTiming();
    }
    benchmark::DoNotOptimize(core->ReadU64(AccessContext::Physical(Pa((gfn++ << 12) | 0x18))));
  }
}
BENCHMARK(BM_ReadU64Cold);

}  // namespace
}  // namespace vmi::dump
