// Fixture adapters for the driver conformance suite. An adapter writes known
// state into one driver's guest at set-up (a page of known bytes, known
// general-purpose registers, an interrupt gate) and tells the suite what it
// wrote; the suite reads it back through the driver under test and never
// takes an "expected" value from that driver.
//
//   using Driver = ...;
//   static const char* Name();
//   static std::optional<std::string> SkipReason();   // set: every case skips with it
//   static absl::StatusOr<std::unique_ptr<Adapter>> Make();
//   Driver& driver();
//   Gfn known_gfn();  std::vector<uint8_t> known_bytes();   // written at set-up
//   Gfn writable_gfn();                                     // (VmiWrite / VmiSetProtection)
//   KnownRegisters known_registers();                       // vCPU 0 (VmiQueryRegisters)
//   std::optional<Va> breakpoint_target();                  // (VmiEventControl) code every
//       vCPU executes repeatedly; nullopt when the adapter cannot promise one
//   std::optional<InjectionProbe> injection();              // an interrupt the guest's IDT
//       handles and its handler's address
//   absl::Duration quiet_wait();   // how long to wait before concluding no event comes
//   void Release(); void Hold();   // a live guest held paused for the case: restore what
//       set-up wrote and let it run / pause it again (no-ops for the others)
//
// Adapters:
//   Store:   the in-memory page store (VmiRead + VmiWrite), the reference.
//   Sim:     the simulator running `loop_call` on two vCPUs (everything).
//   Dump:    an ELF core written from that same simulated guest (VmiRead +
//            VmiQueryRegisters): what the simulator had, read back.
//   FakeXen: XenDriver over SimulatedXen, a Xen whose domain is that same
//            simulated guest (everything, events included): the Xen driver
//            end to end, in CI.
//   Xen:     the domain named by VMI_XEN_DOMAIN on a Xen host; skipped with
//            that reason elsewhere. Held paused for each case, with what it
//            wrote restored before it runs again.
//   Qemu:    a live Linux fixture guest under QEMU TCG (drivers/qemu), shared
//            by every case of the binary and held paused like Xen's.
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
#include "absl/time/time.h"
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
#include "drivers/xen/testing/simulated_xen.h"
#include "drivers/xen/xen_driver.h"
#include "sim/guest_builder.h"
#include "sim/machine.h"
#include "sim/programs.h"

namespace vmi::conformance {

// What set-up wrote into vCPU 0: its general-purpose registers (RSP, RIP and
// RFLAGS keep the guest's), and its CR3 where set-up chose it.
struct KnownRegisters {
  amd64::GpRegisters gp;
  std::optional<uint64_t> cr3;
};

// An interrupt whose IDT gate set-up knows, and where it leads.
struct InjectionProbe {
  amd64::Interrupt interrupt;
  Va handler;
  bool broadcast = false;  // delivered to every vCPU, not just the one named
};

// 4096 known bytes, different for each `seed`.
inline std::vector<uint8_t> KnownPattern(uint8_t seed) {
  std::vector<uint8_t> bytes(4096);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 7 + seed);
  return bytes;
}

// `base` with every GPR but RSP replaced by a known value. RDI is loop_call's
// call count: 2^40 keeps the loop going for the whole test.
inline amd64::GpRegisters WithKnownGprs(amd64::GpRegisters g) {
  g.rax = 0x1111'2222'3333'4444;
  g.rbx = 0x0000'0000'0000'0007;
  g.rcx = 0x5555'6666'7777'8888;
  g.rdx = 0x0123'4567'89ab'cdef;
  g.rsi = 0xfedc'ba98'7654'3210;
  g.rdi = uint64_t{1} << 40;
  g.rbp = 0x0bad'f00d'0000'0001;
  g.r8 = 0x8888'0000'0000'0008;
  g.r9 = 0x9999'0000'0000'0009;
  g.r10 = 0x1010'1010'1010'1010;
  g.r11 = 0x1111'1111'1111'1111;
  g.r12 = 0x1212'1212'1212'1212;
  g.r13 = 0x1313'1313'1313'1313;
  g.r14 = 0x1414'1414'1414'1414;
  g.r15 = 0xdead'beef'0000'0015;
  return g;
}

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
  std::vector<uint8_t> known_bytes() { return KnownPattern(3); }
  Gfn writable_gfn() { return Gfn(0x43); }
  void Release() {}
  void Hold() {}

 private:
  StoreAdapter() : store_(Gfn(0xff)), driver_(&store_) {
    const std::vector<uint8_t> bytes = known_bytes();
    std::copy(bytes.begin(), bytes.end(), store_.MutablePage(known_gfn()));
  }
  amd64::testing::MemoryPageStore store_;
  Driver driver_;
};

// The simulated guest behind the Sim, Dump and FakeXen adapters, with its
// known state written: `loop_call` on two vCPUs whose GPRs are known (RDI
// keeps the loop running), a page of known bytes in a frame of its own, and
// an IDT gate for vector 0x40 leading to the program's halt loop.
struct ReferenceGuest {
  static constexpr uint8_t kVector = 0x40;
  std::unique_ptr<sim::Machine> machine;
  Gfn known_gfn;
  KnownRegisters registers;
  Va func;     // called on every iteration of every vCPU
  Va handler;  // vector 0x40's handler
};

inline absl::StatusOr<ReferenceGuest> BuildReferenceGuest(bool shared_ram) {
  sim::MachineOptions options;
  options.ram_size = 16 << 20;
  options.vcpu_count = 2;
  options.shared_ram = shared_ram;
  ReferenceGuest g;
  VMI_ASSIGN_OR_RETURN(g.machine, sim::Machine::Create(options));
  VMI_ASSIGN_OR_RETURN(sim::StandardGuest guest, sim::BuildStandardGuest(*g.machine, "loop_call"));
  VMI_ASSIGN_OR_RETURN(g.func, guest.program.Symbol("func"));
  VMI_ASSIGN_OR_RETURN(g.handler, guest.program.Symbol("done"));
  VMI_RETURN_IF_ERROR(guest.builder->SetInterruptGate(ReferenceGuest::kVector, g.handler));
  VMI_ASSIGN_OR_RETURN(g.known_gfn, guest.builder->AllocateFrame());
  VMI_RETURN_IF_ERROR(g.machine->WritePhys(Pa(g.known_gfn.value() << 12), KnownPattern(11)));
  for (uint16_t v = 0; v < options.vcpu_count; ++v) {
    VMI_ASSIGN_OR_RETURN(amd64::Registers regs, g.machine->GetRegisters(VcpuId(v)));
    const amd64::GpRegisters known = WithKnownGprs(regs.gp());
    VMI_RETURN_IF_ERROR(g.machine->SetGpRegisters(VcpuId(v), known));
    if (v == 0) g.registers = KnownRegisters{known, guest.space->cr3()};
  }
  return g;
}

class SimAdapter {
 public:
  using Driver = sim::SimDriver;
  static const char* Name() { return "Sim"; }
  static std::optional<std::string> SkipReason() { return std::nullopt; }
  static absl::StatusOr<std::unique_ptr<SimAdapter>> Make() {
    VMI_ASSIGN_OR_RETURN(ReferenceGuest guest, BuildReferenceGuest(/*shared_ram=*/false));
    auto adapter = std::unique_ptr<SimAdapter>(new SimAdapter());
    adapter->known_gfn_ = guest.known_gfn;
    adapter->registers_ = guest.registers;
    adapter->func_ = guest.func;
    adapter->handler_ = guest.handler;
    sim::SimDriverOptions options;
    options.wait_instructions = 5'000'000;
    VMI_ASSIGN_OR_RETURN(sim::SimDriver driver,
                         sim::SimDriver::Create(std::move(guest.machine), options));
    adapter->driver_.emplace(std::move(driver));
    return adapter;
  }

  Driver& driver() { return *driver_; }
  Gfn known_gfn() { return known_gfn_; }
  std::vector<uint8_t> known_bytes() { return KnownPattern(11); }
  Gfn writable_gfn() { return Gfn(0x700); }
  KnownRegisters known_registers() { return registers_; }
  std::optional<Va> breakpoint_target() { return func_; }
  std::optional<InjectionProbe> injection() {
    return InjectionProbe{amd64::Interrupt::External(ReferenceGuest::kVector), handler_};
  }
  absl::Duration quiet_wait() { return absl::Seconds(5); }  // 5M guest instructions
  void Release() {}
  void Hold() {}

 private:
  SimAdapter() = default;
  std::optional<Driver> driver_;
  Gfn known_gfn_;
  KnownRegisters registers_;
  Va func_, handler_;
};

class DumpAdapter {
 public:
  using Driver = dump::DumpDriver;
  static const char* Name() { return "Dump"; }
  static std::optional<std::string> SkipReason() { return std::nullopt; }
  static absl::StatusOr<std::unique_ptr<DumpAdapter>> Make() {
    VMI_ASSIGN_OR_RETURN(ReferenceGuest guest, BuildReferenceGuest(/*shared_ram=*/false));
    const Gfn known = guest.known_gfn;
    const KnownRegisters registers = guest.registers;
    VMI_ASSIGN_OR_RETURN(sim::SimDriver sim, sim::SimDriver::Create(std::move(guest.machine)));
    const char* tmp = std::getenv("TEST_TMPDIR");
    const std::string path =
        absl::StrFormat("%s/conformance-%d-%d.elf", tmp ? tmp : "/tmp", getpid(), counter_++);
    VMI_ASSIGN_OR_RETURN(dump::DumpSource source, dump::DumpSourceFor(sim));
    VMI_RETURN_IF_ERROR(dump::WriteElfCoreDump(path, source));
    absl::StatusOr<dump::DumpDriver> driver = dump::DumpDriver::Open(path);
    std::remove(path.c_str());  // the mapping stays valid
    if (!driver.ok()) return driver.status();
    auto adapter = std::unique_ptr<DumpAdapter>(new DumpAdapter(*std::move(driver)));
    adapter->known_gfn_ = known;
    adapter->registers_ = registers;
    return adapter;
  }

  Driver& driver() { return driver_; }
  Gfn known_gfn() { return known_gfn_; }
  std::vector<uint8_t> known_bytes() { return KnownPattern(11); }
  KnownRegisters known_registers() { return registers_; }
  void Release() {}
  void Hold() {}

 private:
  explicit DumpAdapter(dump::DumpDriver driver) : driver_(std::move(driver)) {}
  static inline int counter_ = 0;
  Driver driver_;
  Gfn known_gfn_;
  KnownRegisters registers_;
};

class FakeXenAdapter {
 public:
  using Driver = xen::XenDriver;
  static const char* Name() { return "FakeXen"; }
  static std::optional<std::string> SkipReason() { return std::nullopt; }
  static absl::StatusOr<std::unique_ptr<FakeXenAdapter>> Make() {
    VMI_ASSIGN_OR_RETURN(ReferenceGuest guest, BuildReferenceGuest(/*shared_ram=*/true));
    auto adapter = std::unique_ptr<FakeXenAdapter>(new FakeXenAdapter());
    adapter->known_gfn_ = guest.known_gfn;
    adapter->registers_ = guest.registers;
    adapter->func_ = guest.func;
    adapter->handler_ = guest.handler;
    VMI_ASSIGN_OR_RETURN(adapter->xen_,
                         xen::xen_internal::SimulatedXen::Create(std::move(guest.machine)));
    VMI_ASSIGN_OR_RETURN(xen::XenDriver driver, adapter->xen_->OpenDriver());
    adapter->driver_.emplace(std::move(driver));
    return adapter;
  }
  ~FakeXenAdapter() { driver_.reset(); }  // before the hypervisor it talks to

  Driver& driver() { return *driver_; }
  Gfn known_gfn() { return known_gfn_; }
  std::vector<uint8_t> known_bytes() { return KnownPattern(11); }
  Gfn writable_gfn() { return Gfn(0x700); }
  KnownRegisters known_registers() { return registers_; }
  std::optional<Va> breakpoint_target() { return func_; }
  std::optional<InjectionProbe> injection() {
    return InjectionProbe{amd64::Interrupt::External(ReferenceGuest::kVector), handler_};
  }
  absl::Duration quiet_wait() { return absl::Seconds(5); }  // a run budget, simulated
  void Release() {}
  void Hold() {}

 private:
  FakeXenAdapter() = default;
  std::unique_ptr<xen::xen_internal::SimulatedXen> xen_;
  std::optional<Driver> driver_;
  Gfn known_gfn_;
  KnownRegisters registers_;
  Va func_, handler_;
};

// A live guest (a real Xen domain, a QEMU guest) held paused for a case:
// set-up saves what it overwrites (two frames, vCPU 0's registers) and
// Release puts it back before the guest runs again.
template <typename D>
class LiveHold {
 public:
  absl::Status Start(D& driver, Gfn known, Gfn writable) {
    driver_ = &driver;
    VMI_RETURN_IF_ERROR(driver.Pause());
    held_ = true;
    known_ = known;
    writable_ = writable;
    for (Gfn g : {known, writable}) {
      VMI_ASSIGN_OR_RETURN(MappedPage page, driver.ReadPage(g));
      saved_pages_.emplace_back(page.data(), page.data() + page.size());
    }
    VMI_ASSIGN_OR_RETURN(saved_registers_, driver.Registers(VcpuId(0)));
    VMI_RETURN_IF_ERROR(driver.WritePage(known, 0, KnownPattern(23)).status());
    amd64::Registers regs = saved_registers_;
    regs.set_gp(WithKnownGprs(regs.gp()));
    VMI_RETURN_IF_ERROR(driver.SetRegisters(VcpuId(0), regs));
    known_gp_ = regs.gp();
    return absl::OkStatus();
  }
  void Release() {
    if (!held_) return;
    if (!restored_) {
      driver_->SetRegisters(VcpuId(0), saved_registers_).IgnoreError();
      driver_->WritePage(known_, 0, saved_pages_[0]).IgnoreError();
      driver_->WritePage(writable_, 0, saved_pages_[1]).IgnoreError();
      restored_ = true;
    }
    driver_->Resume().IgnoreError();
    held_ = false;
  }
  void Hold() {
    if (!held_ && driver_->Pause().ok()) held_ = true;
  }
  ~LiveHold() {
    if (driver_ != nullptr) Release();
  }
  KnownRegisters known() const { return KnownRegisters{known_gp_, std::nullopt}; }

 private:
  D* driver_ = nullptr;
  bool held_ = false, restored_ = false;
  Gfn known_, writable_;
  std::vector<std::vector<uint8_t>> saved_pages_;
  amd64::Registers saved_registers_;
  amd64::GpRegisters known_gp_;
};

class XenAdapter {
 public:
  using Driver = xen::XenDriver;
  static const char* Name() { return "Xen"; }
  static std::optional<std::string> SkipReason() {
    if (std::getenv("VMI_XEN_DOMAIN") == nullptr) {
      return std::string(
          "VMI_XEN_DOMAIN is not set: run on a Xen host with "
          "VMI_XEN_DOMAIN=<domid|name> of a running HVM guest (the FakeXen cases run the same "
          "driver over a simulated domain here)");
    }
    return std::nullopt;
  }
  static absl::StatusOr<std::unique_ptr<XenAdapter>> Make() {
    VMI_ASSIGN_OR_RETURN(xen::XenDriver driver, xen::XenDriver::OpenFromEnvironment());
    auto adapter = std::unique_ptr<XenAdapter>(new XenAdapter(std::move(driver)));
    VMI_ASSIGN_OR_RETURN(adapter->known_, adapter->driver_.AllocateGfn());
    VMI_ASSIGN_OR_RETURN(adapter->writable_, adapter->driver_.AllocateGfn());
    VMI_RETURN_IF_ERROR(adapter->hold_.Start(adapter->driver_, adapter->known_, adapter->writable_));
    return adapter;
  }

  Driver& driver() { return driver_; }
  Gfn known_gfn() { return known_; }
  std::vector<uint8_t> known_bytes() { return KnownPattern(23); }
  Gfn writable_gfn() { return writable_; }
  KnownRegisters known_registers() { return hold_.known(); }
  std::optional<Va> breakpoint_target() { return std::nullopt; }
  std::optional<InjectionProbe> injection() { return std::nullopt; }
  absl::Duration quiet_wait() { return absl::Seconds(2); }
  void Release() { hold_.Release(); }
  void Hold() { hold_.Hold(); }

 private:
  explicit XenAdapter(xen::XenDriver driver) : driver_(std::move(driver)) {}
  Driver driver_;  // frees the frames it allocated on teardown
  Gfn known_, writable_;
  LiveHold<xen::XenDriver> hold_;
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
    VMI_RETURN_IF_ERROR(adapter->hold_.Start(adapter->driver_, kKnown, kWritable));
    return adapter;
  }

  Driver& driver() { return driver_; }
  Gfn known_gfn() { return kKnown; }
  std::vector<uint8_t> known_bytes() { return KnownPattern(23); }
  Gfn writable_gfn() { return kWritable; }
  KnownRegisters known_registers() { return hold_.known(); }
  std::optional<Va> breakpoint_target() { return std::nullopt; }
  std::optional<InjectionProbe> injection() { return std::nullopt; }
  absl::Duration quiet_wait() { return absl::Seconds(2); }
  void Release() { hold_.Release(); }
  void Hold() { hold_.Hold(); }

 private:
  // Two frames of the guest's RAM, overwritten while it is held and restored.
  static constexpr Gfn kKnown{0x210}, kWritable{0x211};
  explicit QemuAdapter(qemu::QemuDriver driver) : driver_(std::move(driver)) {}
  Driver driver_;
  LiveHold<qemu::QemuDriver> hold_;  // declared last: restores before the driver goes
};

}  // namespace vmi::conformance

#endif  // VMI_TESTS_CONFORMANCE_ADAPTERS_H_
