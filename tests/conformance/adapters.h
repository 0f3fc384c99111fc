// Fixture adapters for the driver conformance suite. An adapter prepares a
// known guest state for one driver and says what the suite may expect:
//
//   using Driver = ...;
//   static const char* Name();
//   static std::optional<std::string> SkipReason();   // set: every case skips with it
//   static absl::StatusOr<std::unique_ptr<Adapter>> Make();
//   Driver& driver();
//   Gfn known_gfn();  std::vector<uint8_t> known_bytes();   // a page with known bytes
//   Gfn writable_gfn();                                     // (VmiWrite / VmiSetProtection)
//   amd64::Registers known_registers();                     // vCPU 0 (VmiQueryRegisters)
//   std::optional<Va> breakpoint_target();                  // (VmiEventControl) code the
//       guest executes repeatedly, for the event cases; nullopt when the adapter
//       cannot promise one (a real Xen guest)
//
// Adapters:
//   Store: the in-memory page store (VmiRead + VmiWrite), the reference.
//   Sim:   the simulator running `loop_call` (everything).
//   Dump:  an ELF core written from that same simulated guest (VmiRead +
//          VmiQueryRegisters): the simulator writes dumps, the dump driver
//          must read back exactly what the simulator had.
//   Xen:   the domain named by VMI_XEN_DOMAIN (everything); skipped with that
//          reason when it is not set. It expects an HVM guest that is running;
//          the "known" page is gfn 0x100 as read at set-up.
//   Qemu:  a live Linux fixture guest under QEMU TCG (drivers/qemu), shared by
//          every case of the binary; each case pauses it for its whole run
//          (so state read at set-up stays true), and the page it writes is
//          restored before the guest resumes. Memory, registers, pause and
//          stub events; no protection or views.
//
// Thread-safety: test-only; single-threaded.

#ifndef VMI_TESTS_CONFORMANCE_ADAPTERS_H_
#define VMI_TESTS_CONFORMANCE_ADAPTERS_H_

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "arch/amd64/amd64.h"
#include "arch/amd64/testing/page_store.h"
#include "arch/amd64/testing/store_driver.h"
#include "core/error.h"
#include "core/types.h"
#include "drivers/dump/dump_driver.h"
#include "drivers/dump/dump_source.h"
#include "drivers/dump/dump_writer.h"
#include "drivers/qemu/qemu_driver.h"
#include "drivers/qemu/testing/live_guest.h"
#include "drivers/sim/sim_driver.h"
#include "drivers/xen/xen_driver.h"

namespace vmi::conformance {

class StoreAdapter {
 public:
  using Driver = amd64::testing::StoreDriver;
  static const char* Name() { return "Store"; }
  static std::optional<std::string> SkipReason() { return std::nullopt; }
  static absl::StatusOr<std::unique_ptr<StoreAdapter>> Make() {
    return std::unique_ptr<StoreAdapter>(new StoreAdapter());
  }

  Driver& driver() { return driver_; }
  Gfn known_gfn() { return Gfn(0x42); }
  std::vector<uint8_t> known_bytes() { return bytes_; }
  Gfn writable_gfn() { return Gfn(0x43); }

 private:
  StoreAdapter() : store_(Gfn(0xff)), driver_(&store_), bytes_(4096) {
    for (size_t i = 0; i < bytes_.size(); ++i) bytes_[i] = static_cast<uint8_t>(i * 7 + 3);
    std::copy(bytes_.begin(), bytes_.end(), store_.MutablePage(known_gfn()));
  }
  amd64::testing::MemoryPageStore store_;
  Driver driver_;
  std::vector<uint8_t> bytes_;
};

// The simulated guest every simulator-backed adapter starts from.
inline absl::StatusOr<sim::SimDriver> BootReferenceGuest() {
  sim::MachineOptions machine;
  machine.ram_size = 16 << 20;
  machine.vcpu_count = 2;
  sim::SimDriverOptions options;
  options.wait_instructions = 5'000'000;
  return sim::SimDriver::Boot("loop_call", machine, {}, options);
}

class SimAdapter {
 public:
  using Driver = sim::SimDriver;
  static const char* Name() { return "Sim"; }
  static std::optional<std::string> SkipReason() { return std::nullopt; }
  static absl::StatusOr<std::unique_ptr<SimAdapter>> Make() {
    VMI_ASSIGN_OR_RETURN(sim::SimDriver driver, BootReferenceGuest());
    return std::unique_ptr<SimAdapter>(new SimAdapter(std::move(driver)));
  }

  Driver& driver() { return driver_; }
  Gfn known_gfn() { return Gfn(driver_.guest()->program.pa.value() >> 12); }
  std::vector<uint8_t> known_bytes() {
    absl::Span<const uint8_t> image = driver_.guest()->program.program->image;
    return std::vector<uint8_t>(image.begin(), image.begin() + 4096);
  }
  Gfn writable_gfn() { return Gfn(0x700); }
  amd64::Registers known_registers() { return registers_; }
  std::optional<Va> breakpoint_target() { return *driver_.guest()->program.Symbol("func"); }

 private:
  explicit SimAdapter(sim::SimDriver driver) : driver_(std::move(driver)) {
    registers_ = *driver_.Registers(VcpuId(0));
  }
  Driver driver_;
  amd64::Registers registers_;
};

class DumpAdapter {
 public:
  using Driver = dump::DumpDriver;
  static const char* Name() { return "Dump"; }
  static std::optional<std::string> SkipReason() { return std::nullopt; }
  static absl::StatusOr<std::unique_ptr<DumpAdapter>> Make() {
    VMI_ASSIGN_OR_RETURN(sim::SimDriver sim, BootReferenceGuest());
    const char* tmp = std::getenv("TEST_TMPDIR");
    const std::string path =
        absl::StrFormat("%s/conformance-%d-%d.elf", tmp ? tmp : "/tmp", getpid(), counter_++);
    VMI_ASSIGN_OR_RETURN(dump::DumpSource source, dump::DumpSourceFor(sim));
    VMI_RETURN_IF_ERROR(dump::WriteElfCoreDump(path, source));
    absl::StatusOr<dump::DumpDriver> driver = dump::DumpDriver::Open(path);
    std::remove(path.c_str());  // the mapping stays valid
    if (!driver.ok()) return driver.status();
    auto adapter = std::unique_ptr<DumpAdapter>(new DumpAdapter(*std::move(driver)));
    adapter->known_gfn_ = Gfn(sim.guest()->program.pa.value() >> 12);
    absl::Span<const uint8_t> image = sim.guest()->program.program->image;
    adapter->known_bytes_.assign(image.begin(), image.begin() + 4096);
    adapter->registers_ = source.vcpus[0];
    return adapter;
  }

  Driver& driver() { return driver_; }
  Gfn known_gfn() { return known_gfn_; }
  std::vector<uint8_t> known_bytes() { return known_bytes_; }
  amd64::Registers known_registers() { return registers_; }

 private:
  explicit DumpAdapter(dump::DumpDriver driver) : driver_(std::move(driver)) {}
  static inline int counter_ = 0;
  Driver driver_;
  Gfn known_gfn_;
  std::vector<uint8_t> known_bytes_;
  amd64::Registers registers_;
};

class XenAdapter {
 public:
  using Driver = xen::XenDriver;
  static const char* Name() { return "Xen"; }
  static std::optional<std::string> SkipReason() {
    if (std::getenv("VMI_XEN_DOMAIN") == nullptr) {
      return std::string(
          "VMI_XEN_DOMAIN is not set: run on a Xen host with "
          "VMI_XEN_DOMAIN=<domid|name> of a running HVM guest");
    }
    return std::nullopt;
  }
  static absl::StatusOr<std::unique_ptr<XenAdapter>> Make() {
    VMI_ASSIGN_OR_RETURN(xen::XenDriver driver, xen::XenDriver::OpenFromEnvironment());
    auto adapter = std::unique_ptr<XenAdapter>(new XenAdapter(std::move(driver)));
    VMI_ASSIGN_OR_RETURN(MappedPage page, adapter->driver_.ReadPage(adapter->known_gfn()));
    adapter->known_bytes_.assign(page.data(), page.data() + page.size());
    VMI_ASSIGN_OR_RETURN(Gfn writable, adapter->driver_.AllocateGfn());
    adapter->writable_ = writable;
    VMI_ASSIGN_OR_RETURN(adapter->registers_, adapter->driver_.Registers(VcpuId(0)));
    return adapter;
  }
  ~XenAdapter() {
    if (writable_) driver_.FreeGfn(*writable_).IgnoreError();
  }

  Driver& driver() { return driver_; }
  Gfn known_gfn() { return Gfn(0x100); }
  std::vector<uint8_t> known_bytes() { return known_bytes_; }
  Gfn writable_gfn() { return *writable_; }
  amd64::Registers known_registers() { return registers_; }
  std::optional<Va> breakpoint_target() { return std::nullopt; }

 private:
  explicit XenAdapter(xen::XenDriver driver) : driver_(std::move(driver)) {}
  Driver driver_;
  std::vector<uint8_t> known_bytes_;
  std::optional<Gfn> writable_;  // allocated at Make, freed on destruction
  amd64::Registers registers_;
};

class QemuAdapter {
 public:
  using Driver = qemu::QemuDriver;
  static const char* Name() { return "Qemu"; }
  static std::optional<std::string> SkipReason() { return std::nullopt; }
  static absl::StatusOr<std::unique_ptr<QemuAdapter>> Make() {
    VMI_ASSIGN_OR_RETURN(qemu::testing::LiveGuest * guest, qemu::testing::SharedLiveGuest());
    VMI_ASSIGN_OR_RETURN(qemu::QemuDriver driver, qemu::QemuDriver::Open(guest->target()));
    auto adapter = std::unique_ptr<QemuAdapter>(new QemuAdapter(std::move(driver)));
    Driver& d = adapter->driver_;
    VMI_RETURN_IF_ERROR(d.Pause());
    adapter->paused_ = true;
    VMI_ASSIGN_OR_RETURN(MappedPage known, d.ReadPage(adapter->known_gfn()));
    adapter->known_bytes_.assign(known.data(), known.data() + known.size());
    // A frame whose byte 4090 is not 1 (a case checks that a rejected write
    // of ones changed nothing), saved to be restored.
    for (uint64_t g = 0x200;; ++g) {
      VMI_ASSIGN_OR_RETURN(MappedPage page, d.ReadPage(Gfn(g)));
      if (page.data()[4090] != 1) {
        adapter->writable_ = Gfn(g);
        adapter->saved_.assign(page.data(), page.data() + page.size());
        break;
      }
    }
    VMI_ASSIGN_OR_RETURN(adapter->registers_, d.Registers(VcpuId(0)));
    return adapter;
  }
  ~QemuAdapter() {
    if (!saved_.empty()) driver_.WritePage(writable_, 0, saved_).IgnoreError();
    if (paused_) driver_.Resume().IgnoreError();
  }

  Driver& driver() { return driver_; }
  Gfn known_gfn() { return Gfn(0x100); }
  std::vector<uint8_t> known_bytes() { return known_bytes_; }
  Gfn writable_gfn() { return writable_; }
  amd64::Registers known_registers() { return registers_; }
  std::optional<Va> breakpoint_target() { return std::nullopt; }

 private:
  explicit QemuAdapter(qemu::QemuDriver driver) : driver_(std::move(driver)) {}
  Driver driver_;
  bool paused_ = false;
  std::vector<uint8_t> known_bytes_;
  Gfn writable_;
  std::vector<uint8_t> saved_;
  amd64::Registers registers_;
};

}  // namespace vmi::conformance

#endif  // VMI_TESTS_CONFORMANCE_ADAPTERS_H_
