// QemuDriver against a live Linux guest under QEMU TCG (the fixture kernel,
// booted by tools/qemu/start_guest.sh): memory, registers, pause and resume,
// breakpoints, watchpoints, single steps, and the end-to-end case: a
// breakpoint on the getpid syscall found through the Linux OS layer, hit by
// the guest's syscall-loop process, identified from the event.

#include "drivers/qemu/qemu_driver.h"

#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/time/clock.h"
#include "core/vmi_core.h"
#include "drivers/qemu/testing/live_guest.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "os/linux/linux_guest.h"
#include "os/linux/processes.h"
#include "os/linux/types.h"

namespace vmi::qemu {
namespace {

using ::testing::HasSubstr;
using testing::LiveGuest;
using testing::SharedLiveGuest;

class QemuDriverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<LiveGuest*> guest = SharedLiveGuest();
    ASSERT_TRUE(guest.ok()) << guest.status();
    guest_ = *guest;
    absl::StatusOr<QemuDriver> driver = QemuDriver::Open(guest_->target());
    ASSERT_TRUE(driver.ok()) << driver.status();
    core_ = std::make_unique<VmiCore<QemuDriver>>(*std::move(driver));
    auto linux_guest = os_linux::LinuxGuest<QemuDriver>::Discover(*core_);
    ASSERT_TRUE(linux_guest.ok()) << linux_guest.status();
    linux_ = *std::move(linux_guest);
  }

  QemuDriver& driver() { return core_->driver(); }
  uint64_t Symbol(const char* name) { return linux_->kernel().Symbol(name).value(); }
  uint64_t Jiffies() {
    return core_->ReadU64(AccessContext(linux_->kernel().Kernel(Va(Symbol("jiffies_64"))))).value();
  }
  // The task running on the vCPU of `regs`.
  absl::StatusOr<os_linux::Task> CurrentTask(const amd64::Registers& regs) {
    VMI_ASSIGN_OR_RETURN(uint64_t task, os_linux::CurrentTaskAt(
                                            linux_->access(), os_linux::PerCpuBaseFromRegisters(regs)));
    VMI_ASSIGN_OR_RETURN(const os_linux::TaskLayout* layout, linux_->task_layout());
    return os_linux::ReadTask(linux_->access(), *layout, task);
  }

  LiveGuest* guest_ = nullptr;
  std::unique_ptr<VmiCore<QemuDriver>> core_;
  std::unique_ptr<os_linux::LinuxGuest<QemuDriver>> linux_;
};

TEST_F(QemuDriverTest, OpensTheGuestRunningWithItsLayout) {
  EXPECT_TRUE(driver().running());
  absl::StatusOr<VmiInfo> info = driver().Info();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->vcpus, 2);
  EXPECT_EQ((info->max_gfn.value() + 1) * 4096, 256u << 20);  // 256 MiB, all below 4 GiB
  const std::vector<QemuDriver::RamRange> ranges = driver().ram_ranges();
  ASSERT_GE(ranges.size(), 2u);
  EXPECT_EQ(ranges.front().start, Pa(0));
  EXPECT_FALSE(driver().ReadPage(Gfn(info->max_gfn.value() + 1)).ok());
  // Linux was found in the live memory.
  EXPECT_EQ(linux_->kernel().paging.levels(), 4);
  EXPECT_THAT(linux_->kernel().banner, HasSubstr("Linux version 6.1"));
}

TEST_F(QemuDriverTest, MemoryIsLiveAndWritesReachTheGuest) {
  // jiffies moves while the guest runs: a live mapping, not a copy.
  const uint64_t before = Jiffies();
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_GT(Jiffies(), before);
  // A byte after init_task.comm's NUL ("swapper/0"): written, read back
  // through the page, restored.
  const uint64_t comm = Symbol("init_task") +
                        linux_->kernel().Types().value()->OffsetOf("task_struct", "comm").value();
  const AccessContext at(linux_->kernel().Kernel(Va(comm + 14)));
  const uint8_t old = core_->ReadU8(at).value();
  ASSERT_TRUE(core_->WriteU8(at, 0x5a).ok());
  EXPECT_EQ(core_->ReadU8(at).value(), 0x5a);
  ASSERT_TRUE(core_->WriteU8(at, old).ok());
  // Out of the page or of RAM: refused.
  EXPECT_EQ(driver().WritePage(Gfn(0x100), 4090, std::vector<uint8_t>(16)).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_FALSE(driver().WritePage(Gfn(1ull << 30), 0, std::vector<uint8_t>(1)).ok());
}

TEST_F(QemuDriverTest, PausedGuestDoesNotRunAndResumes) {
  ASSERT_TRUE(driver().Pause().ok());
  EXPECT_FALSE(driver().running());
  const uint64_t at_pause = Jiffies();
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(Jiffies(), at_pause);
  // Nested pauses.
  ASSERT_TRUE(driver().Pause().ok());
  ASSERT_TRUE(driver().Resume().ok());
  EXPECT_FALSE(driver().running());
  ASSERT_TRUE(driver().Resume().ok());
  EXPECT_TRUE(driver().running());
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_GT(Jiffies(), at_pause);
  EXPECT_EQ(driver().Resume().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(QemuDriverTest, RegistersOfBothVcpusAndARoundTrip) {
  ASSERT_TRUE(driver().Pause().ok());
  for (uint16_t v = 0; v < 2; ++v) {
    absl::StatusOr<amd64::Registers> regs = driver().Registers(VcpuId(v));
    ASSERT_TRUE(regs.ok()) << regs.status();
    EXPECT_EQ(Amd64::PagingModeOf(*regs).levels(), 4);
    // Linux's kernel (0x10) or 64-bit user (0x33) code segment.
    EXPECT_TRUE(regs->cs.selector == 0x10 || regs->cs.selector == 0x33) << regs->cs.selector;
    EXPECT_NE(regs->gdtr.base, 0u);                // from QMP
    EXPECT_NE(regs->idtr.base, 0u);
    EXPECT_TRUE(amd64::SegmentAccess(regs->cs.access).l() || (regs->cs.selector & 3) == 3);
    EXPECT_EQ(os_linux::PerCpuBaseFromRegisters(*regs), os_linux::PerCpuBases(linux_->access()).value()[v]);
  }
  const amd64::Registers original = driver().Registers(VcpuId(0)).value();
  amd64::Registers changed = original;
  changed.rax ^= 0x5a5a;
  changed.r15 = 0x1234;
  ASSERT_TRUE(driver().SetRegisters(VcpuId(0), changed).ok());
  const amd64::Registers back = driver().Registers(VcpuId(0)).value();
  EXPECT_EQ(back.rax, changed.rax);
  EXPECT_EQ(back.r15, 0x1234u);
  EXPECT_EQ(back.rip, original.rip);
  // What the stub cannot set is refused, and nothing is written.
  amd64::Registers bad = changed;
  bad.rax = 0x777;
  bad.gdtr.base ^= 0x1000;
  absl::Status refused = driver().SetRegisters(VcpuId(0), bad);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("gdtr"));
  EXPECT_EQ(driver().Registers(VcpuId(0))->rax, changed.rax);
  ASSERT_TRUE(driver().SetRegisters(VcpuId(0), original).ok());
  EXPECT_EQ(driver().Registers(VcpuId(0))->rax, original.rax);
  EXPECT_EQ(driver().Registers(VcpuId(2)).status().code(), absl::StatusCode::kOutOfRange);
  ASSERT_TRUE(driver().Resume().ok());
}

// The end-to-end case of the issue: break on the getpid syscall, see the
// guest's syscall-loop process call it, remove the breakpoint, and the guest
// goes on.
TEST_F(QemuDriverTest, BreakpointOnTheGetpidSyscallIdentifiesTheCaller) {
  const uint64_t getpid = Symbol("__x64_sys_getpid");
  const int loop_pid = guest_->processes().at("syscall-loop");
  ASSERT_TRUE(driver().MonitorEnable(amd64::MonitorBreakpoint{Va(getpid)}).ok());
  int hits = 0;
  for (int i = 0; i < 5; ++i) {
    absl::Status s = driver().WaitForEvent(absl::Seconds(20), [&](const VmiEvent<Amd64>& e) {
      const auto* bp = std::get_if<amd64::DebugBreakpointEvent>(&e.reason);
      EXPECT_NE(bp, nullptr) << amd64::EventReasonToString(e.reason);
      if (bp != nullptr) {
        EXPECT_EQ(bp->address, Va(getpid));
        EXPECT_EQ(e.registers.rip, getpid);
        absl::StatusOr<os_linux::Task> task = CurrentTask(e.registers);
        EXPECT_TRUE(task.ok()) << task.status();
        if (task.ok()) {
          EXPECT_EQ(task->pid, loop_pid);
          EXPECT_EQ(task->comm, "syscall-loop");
        }
        ++hits;
      }
      return VmiEventResponse<Amd64>::Continue();
    });
    ASSERT_TRUE(s.ok()) << s;
  }
  EXPECT_EQ(hits, 5);
  ASSERT_TRUE(driver().MonitorDisable(amd64::MonitorBreakpoint{Va(getpid)}).ok());
  // No more events; the guest is healthy: it runs, and the loop still calls.
  absl::Status quiet = driver().WaitForEvent(absl::Milliseconds(500), [](const VmiEvent<Amd64>&) {
    ADD_FAILURE() << "an event after the breakpoint was removed";
    return VmiEventResponse<Amd64>::Continue();
  });
  EXPECT_EQ(quiet.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(driver().running());
  const uint64_t j = Jiffies();
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_GT(Jiffies(), j);
}

TEST_F(QemuDriverTest, SingleStepAfterABreakpoint) {
  const uint64_t getpid = Symbol("__x64_sys_getpid");
  ASSERT_TRUE(driver().MonitorEnable(amd64::MonitorBreakpoint{Va(getpid)}).ok());
  ASSERT_TRUE(driver().MonitorEnable(amd64::MonitorSingleStep{}).ok());
  std::optional<VcpuId> vcpu;
  ASSERT_TRUE(driver()
                  .WaitForEvent(absl::Seconds(20),
                                [&](const VmiEvent<Amd64>& e) {
                                  vcpu = e.vcpu;
                                  return VmiEventResponse<Amd64>::ToggleSingleStep();
                                })
                  .ok());
  ASSERT_TRUE(driver().MonitorDisable(amd64::MonitorBreakpoint{Va(getpid)}).ok());
  uint64_t previous = getpid;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(driver()
                    .WaitForEvent(absl::Seconds(10),
                                  [&](const VmiEvent<Amd64>& e) {
                                    EXPECT_TRUE(std::holds_alternative<amd64::SingleStepEvent>(e.reason))
                                        << amd64::EventReasonToString(e.reason);
                                    // The stub reports no frame (qemu_driver.h).
                                    EXPECT_EQ(e.reason,
                                              amd64::EventReason(amd64::SingleStepEvent{}));
                                    EXPECT_EQ(e.vcpu, *vcpu);
                                    EXPECT_NE(e.registers.rip, previous);
                                    previous = e.registers.rip;
                                    return i == 2 ? VmiEventResponse<Amd64>::ToggleSingleStep()
                                                  : VmiEventResponse<Amd64>::Continue();
                                  })
                    .ok());
  }
  ASSERT_TRUE(driver().MonitorDisable(amd64::MonitorSingleStep{}).ok());
  EXPECT_EQ(driver()
                .WaitForEvent(absl::Milliseconds(300), [](const VmiEvent<Amd64>&) {
                  ADD_FAILURE() << "still stepping";
                  return VmiEventResponse<Amd64>::Continue();
                })
                .code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST_F(QemuDriverTest, WatchpointOnJiffies) {
  const Va jiffies(Symbol("jiffies_64"));
  const amd64::MonitorWatchpoint watch{jiffies, 8, MemoryAccess::W()};
  // Several rounds: the timer writes jiffies every few milliseconds, so a
  // hit can come between the resume and the removal (the stop that answers
  // the removal's interrupt is then a watch stop, kept while the guest is
  // stopped); a hit of a removed watchpoint must never be delivered.
  for (int round = 0; round < 8; ++round) {
    SCOPED_TRACE(round);
    ASSERT_TRUE(driver().MonitorEnable(watch).ok());
    ASSERT_TRUE(driver()
                    .WaitForEvent(absl::Seconds(20),
                                  [&](const VmiEvent<Amd64>& e) {
                                    const auto* w = std::get_if<amd64::DebugWatchpointEvent>(&e.reason);
                                    EXPECT_NE(w, nullptr) << amd64::EventReasonToString(e.reason);
                                    if (w) {
                                      EXPECT_EQ(w->address, jiffies);
                                      EXPECT_EQ(w->access, MemoryAccess::W());
                                    }
                                    return VmiEventResponse<Amd64>::Continue();
                                  })
                    .ok());
    // In odd rounds the next hit surely comes before the removal: its stop
    // reply is waiting when ResetState interrupts the guest.
    if (round % 2 == 1) absl::SleepFor(absl::Milliseconds(30));
    ASSERT_TRUE(driver().ResetState().ok());  // removes it
    absl::Status quiet = driver().WaitForEvent(absl::Milliseconds(300), [](const VmiEvent<Amd64>& e) {
      ADD_FAILURE() << "an event after ResetState: " << amd64::EventReasonToString(e.reason);
      return VmiEventResponse<Amd64>::Continue();
    });
    EXPECT_EQ(quiet.code(), absl::StatusCode::kDeadlineExceeded) << quiet;
  }
  // Kinds of watchpoint the stub cannot have.
  EXPECT_EQ(driver().MonitorEnable(amd64::MonitorWatchpoint{jiffies, 3, MemoryAccess::W()}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(driver().MonitorEnable(amd64::MonitorWatchpoint{jiffies, 8, MemoryAccess::X()}).code(),
            absl::StatusCode::kInvalidArgument);
}

// An NMI injected through QMP reaches the guest: the boot CPU's NMI count
// (per-CPU irq_stat.__nmi_count, the NMI line of /proc/interrupts,
// incremented first thing by the kernel's NMI entry) goes up. QEMU raises
// LINT1 on every vCPU's local APIC whichever vCPU is named; Linux masks LINT1
// on all but the boot CPU (the other vCPUs' counts are printed).
TEST_F(QemuDriverTest, InjectedNmiReachesTheGuest) {
  absl::StatusOr<const os_linux::KernelTypes*> types = linux_->kernel().Types();
  ASSERT_TRUE(types.ok()) << types.status();
  absl::StatusOr<uint64_t> nmi_count = (*types)->OffsetOf("irq_cpustat_t", "__nmi_count");
  ASSERT_TRUE(nmi_count.ok()) << nmi_count.status();
  absl::StatusOr<std::vector<uint64_t>> bases = os_linux::PerCpuBases(linux_->access());
  ASSERT_TRUE(bases.ok()) << bases.status();
  const uint32_t vcpus = driver().Info().value().vcpus;
  ASSERT_GE(bases->size(), vcpus);
  const uint64_t irq_stat = Symbol("irq_stat");
  auto counts = [&] {
    std::vector<uint32_t> c;
    for (uint32_t i = 0; i < vcpus; ++i) {
      c.push_back(core_->ReadU32(AccessContext(linux_->kernel().Kernel(Va((*bases)[i] + irq_stat + *nmi_count))))
                      .value());
    }
    return c;
  };
  const std::vector<uint32_t> before = counts();
  ASSERT_TRUE(driver().InjectInterrupt(VcpuId(vcpus - 1), amd64::Interrupt::Nmi()).ok());
  std::vector<uint32_t> after = counts();
  for (const absl::Time deadline = absl::Now() + absl::Seconds(20); after[0] == before[0] && absl::Now() < deadline;) {
    absl::SleepFor(absl::Milliseconds(20));
    after = counts();
  }
  EXPECT_GT(after[0], before[0]) << "the boot CPU saw no NMI";
  for (uint32_t i = 1; i < vcpus; ++i) {
    // Not asserted: another NMI source (a watchdog on a guest with a PMU)
    // would count here too.
    std::printf("vcpu %u NMI count %u -> %u\n", i, before[i], after[i]);
  }
  const uint64_t jiffies = Jiffies();
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_GT(Jiffies(), jiffies);  // the guest still runs
}

TEST_F(QemuDriverTest, WhatQemuCannotDoIsRefusedClearly) {
  EXPECT_EQ(driver().MonitorEnable(amd64::MonitorInterrupt{3}).code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(driver().MonitorEnable(amd64::MonitorControlRegister{amd64::ControlRegister::kCr3}).code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(driver().AllocateGfn().status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(driver().FreeGfn(Gfn(0x100)).code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(driver().InjectInterrupt(VcpuId(0), amd64::Interrupt::Breakpoint(1)).message()),
              HasSubstr("only NMIs"));
  // An unsupported response resumes the guest and says so.
  const uint64_t getpid = Symbol("__x64_sys_getpid");
  ASSERT_TRUE(driver().MonitorEnable(amd64::MonitorBreakpoint{Va(getpid)}).ok());
  absl::Status emulate = driver().WaitForEvent(absl::Seconds(20), [](const VmiEvent<Amd64>&) {
    return VmiEventResponse<Amd64>::Emulate();
  });
  EXPECT_EQ(emulate.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(emulate.message()), HasSubstr("the guest was resumed"));
  EXPECT_TRUE(driver().running());
  ASSERT_TRUE(driver().ResetState().ok());
}

TEST_F(QemuDriverTest, ClosingTheDriverLeavesTheGuestRunningWithoutBreakpoints) {
  const uint64_t getpid = Symbol("__x64_sys_getpid");
  ASSERT_TRUE(driver().MonitorEnable(amd64::MonitorBreakpoint{Va(getpid)}).ok());
  ASSERT_TRUE(driver().Pause().ok());
  linux_.reset();
  core_.reset();  // destroys the driver: breakpoint removed, detached, running
  absl::StatusOr<QemuDriver> again = QemuDriver::Open(guest_->target());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->running());
  // Nothing of the old breakpoint is left: no event comes.
  EXPECT_EQ(again->WaitForEvent(absl::Milliseconds(500), [](const VmiEvent<Amd64>&) {
                  return VmiEventResponse<Amd64>::Continue();
                }).code(),
            absl::StatusCode::kDeadlineExceeded);
}

// ---- Opening errors ----

TEST(QemuTargetTest, Specs) {
  absl::StatusOr<QemuTarget> dir = QemuTarget::Parse("/run/guest/");
  ASSERT_TRUE(dir.ok());
  EXPECT_EQ(dir->gdb_socket, "/run/guest/gdb.sock");
  EXPECT_EQ(dir->ram_file, "/run/guest/ram");
  EXPECT_EQ(dir->qmp_socket, "/run/guest/qmp.sock");
  absl::StatusOr<QemuTarget> parts = QemuTarget::Parse("/a/gdb,mem=/dev/shm/ram,qmp=/a/qmp");
  ASSERT_TRUE(parts.ok());
  EXPECT_EQ(parts->ram_file, "/dev/shm/ram");
  EXPECT_FALSE(QemuTarget::Parse("").ok());
  EXPECT_FALSE(QemuTarget::Parse("/a/gdb,mem=/x").ok());
  EXPECT_FALSE(QemuTarget::Parse("/a/gdb,mem=/x,qmp=/y,bogus=1").ok());
}

TEST(QemuOpenTest, MissingPiecesNameTheQemuOptionToAdd) {
  absl::StatusOr<QemuDriver> none = QemuDriver::Open(*QemuTarget::Parse("/nonexistent/dir"));
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("-qmp unix:/nonexistent/dir/qmp.sock"));
  // The right QMP, the wrong RAM file.
  absl::StatusOr<LiveGuest*> guest = SharedLiveGuest();
  ASSERT_TRUE(guest.ok()) << guest.status();
  QemuTarget wrong = (*guest)->target();
  wrong.ram_file = "/proc/self/exe";
  absl::StatusOr<QemuDriver> d = QemuDriver::Open(wrong);
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("not /proc/self/exe"));
  QemuTarget no_gdb = (*guest)->target();
  no_gdb.gdb_socket = "/nonexistent/gdb.sock";
  d = QemuDriver::Open(no_gdb);
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("-gdb unix:/nonexistent/gdb.sock"));
}

// Last (it kills the shared guest): QEMU exiting mid-session is a clear
// error, fast, and the driver's destruction does not hang.
TEST(QemuZzzExitTest, QemuExitingMidSessionIsAClearErrorWithoutAHang) {
  absl::StatusOr<LiveGuest*> guest = SharedLiveGuest();
  ASSERT_TRUE(guest.ok()) << guest.status();
  absl::StatusOr<QemuDriver> d = QemuDriver::Open((*guest)->target());
  ASSERT_TRUE(d.ok()) << d.status();
  (*guest)->Kill();
  const absl::Time start = absl::Now();
  absl::Status s = d->WaitForEvent(absl::Seconds(30), [](const VmiEvent<Amd64>&) {
    return VmiEventResponse<Amd64>::Continue();
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("connection closed"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(15));
  EXPECT_FALSE(d->Registers(VcpuId(0)).ok());
}

}  // namespace
}  // namespace vmi::qemu
