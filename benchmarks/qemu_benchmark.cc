// QemuDriver on a live Linux guest under QEMU TCG (booted by
// tools/qemu/start_guest.sh from the fixtures; needs tools/setup.sh):
//   BM_Load8                 8-byte loads from the guest's RAM file, mapped: the limit
//   BM_QemuReadU64Hot        VmiCore ReadU64 of kernel virtual addresses, QemuDriver
//   BM_DumpReadU64Hot        the same addresses through DumpDriver on the same RAM file
//   BM_QemuBreakpointRoundTrip  a stub breakpoint on __x64_sys_getpid, hit by the
//                            guest's syscall-loop: event -> handler -> resume
//   BM_QemuRegisters         one vCPU's registers (stub + QMP), guest paused
// Compare the round trip with sim_benchmark's BM_SimBreakpointRoundTrip run
// in the same session.
//
//   bazel run --config=opt //benchmarks:qemu_benchmark

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "core/vmi_core.h"
#include "drivers/dump/dump_driver.h"
#include "drivers/qemu/qemu_driver.h"
#include "drivers/qemu/testing/live_guest.h"
#include "os/linux/discovery.h"

namespace vmi {
namespace {

qemu::testing::LiveGuest* Guest() {
  static qemu::testing::LiveGuest* guest = [] {
    absl::StatusOr<qemu::testing::LiveGuest*> g = qemu::testing::SharedLiveGuest();
    if (!g.ok()) {
      std::fprintf(stderr, "%s\n", std::string(g.status().message()).c_str());
      std::exit(1);
    }
    return *g;
  }();
  return guest;
}

struct Sample {
  Pa root;
  amd64::PagingMode paging;
  std::vector<uint64_t> addresses;  // kernel virtual, 8-byte aligned
  std::vector<uint64_t> offsets;    // their offsets in the RAM file (for BM_Load8)
};

// 1,280 random addresses in the kernel image (~1,300 pages), translated once.
const Sample& Addresses() {
  static const Sample* sample = [] {
    auto* s = new Sample;
    VmiCore<qemu::QemuDriver> core(*qemu::QemuDriver::Open(Guest()->target()));
    absl::StatusOr<os_linux::LinuxKernel> k = os_linux::DiscoverLinux(core);
    if (!k.ok()) std::abort();
    s->root = k->root;
    s->paging = k->paging;
    const uint64_t text = *k->Symbol("_text"), end = *k->Symbol("_end");
    std::mt19937_64 rng(5);
    core.SetPagingMode(s->paging);
    while (s->addresses.size() < 1280) {
      const uint64_t va = (text + rng() % (end - text)) & ~uint64_t{7};
      absl::StatusOr<Pa> pa = core.Translate(AddressContext(Va(va), s->root));
      if (!pa.ok()) continue;
      s->addresses.push_back(va);
      s->offsets.push_back(pa->value());  // RAM below 3 GiB: file offset = gpa
    }
    return s;
  }();
  return *sample;
}

void BM_Load8(benchmark::State& state) {
  const Sample& s = Addresses();
  const int fd = open(Guest()->target().ram_file.c_str(), O_RDONLY);
  const off_t size = lseek(fd, 0, SEEK_END);
  auto* ram = static_cast<const uint8_t*>(mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0));
  close(fd);
  const size_t n = s.offsets.size();
  size_t i = 0;
  for (auto _ : state) {
    uint64_t v;
    std::memcpy(&v, ram + s.offsets[i], 8);
    // The value in a register: benchmark::DoNotOptimize(v) let GCC 12 drop
    // the copy and with it the load, and `i++ % n` cost a division per read
    // (the loop measured those alone).
    asm volatile("" : : "r"(v) : "memory");
    if (++i == n) i = 0;
  }
  munmap(const_cast<uint8_t*>(ram), size);
}
BENCHMARK(BM_Load8);

template <typename D>
void ReadHot(benchmark::State& state, VmiCore<D>& core) {
  const Sample& s = Addresses();
  core.SetPagingMode(s.paging);
  const size_t n = s.addresses.size();
  size_t i = 0;
  for (auto _ : state) {
    auto v = core.ReadU64(AccessContext::Virtual(Va(s.addresses[i]), s.root));
    benchmark::DoNotOptimize(v);
    if (++i == n) i = 0;  // no division per read (BM_Load8 has none)
  }
}

void BM_QemuReadU64Hot(benchmark::State& state) {
  VmiCore<qemu::QemuDriver> core(*qemu::QemuDriver::Open(Guest()->target()));
  ReadHot(state, core);
}
BENCHMARK(BM_QemuReadU64Hot);

void BM_DumpReadU64Hot(benchmark::State& state) {
  VmiCore<dump::DumpDriver> core(*dump::DumpDriver::Open(Guest()->target().ram_file));
  ReadHot(state, core);
}
BENCHMARK(BM_DumpReadU64Hot);

void BM_QemuBreakpointRoundTrip(benchmark::State& state) {
  qemu::QemuDriver d = *qemu::QemuDriver::Open(Guest()->target());
  VmiCore<qemu::QemuDriver> core(std::move(d));
  os_linux::DiscoveryOptions options;
  options.load_types = false;
  absl::StatusOr<os_linux::LinuxKernel> k = os_linux::DiscoverLinux(core, options);
  const Va getpid(*k->Symbol("__x64_sys_getpid"));
  if (!core.MonitorEnable(amd64::MonitorBreakpoint{getpid}).ok()) std::abort();
  auto handler = [](const VmiEvent<Amd64>&) { return VmiEventResponse<Amd64>::Continue(); };
  for (auto _ : state) {
    absl::Status s = core.WaitForEvent(absl::Seconds(10), handler);
    if (!s.ok()) state.SkipWithError(std::string(s.message()).c_str());
  }
  state.SetItemsProcessed(state.iterations());
  (void)core.MonitorDisable(amd64::MonitorBreakpoint{getpid});
}
BENCHMARK(BM_QemuBreakpointRoundTrip)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_QemuRegisters(benchmark::State& state) {
  qemu::QemuDriver d = *qemu::QemuDriver::Open(Guest()->target());
  (void)d.Pause();
  for (auto _ : state) {
    absl::StatusOr<amd64::Registers> r = d.Registers(VcpuId(0));
    benchmark::DoNotOptimize(r);
  }
  (void)d.Resume();
}
BENCHMARK(BM_QemuRegisters)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace
}  // namespace vmi

BENCHMARK_MAIN();
