// Two parts. First, what a user without a Xen host sees: every way of
// opening a domain through the real libraries fails with a clear error
// instead of crashing or printing libxc noise. Second, the driver's contract
// against FakeXen, a scripted hypervisor behind the XenApi table: memory,
// permissions, altp2m probing, registers, the event ring, VM control and
// teardown. The capability tests against a live domain are the conformance
// suite's, which runs when VMI_XEN_DOMAIN is set.

#include "drivers/xen/xen_driver.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "core/driver.h"
#include "core/vmi_core.h"
#include "drivers/xen/convert.h"
#include "drivers/xen/internal/fake_xen.h"
#include "drivers/xen/internal/xen_api.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmi::xen {
namespace {

using ::testing::AnyOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using xen_internal::FakeXen;
using xen_internal::XenDriverTestPeer;

static_assert(VmiFullDriver<XenDriver>);
static_assert(std::is_same_v<XenDriver::Architecture, Amd64>);
static_assert(std::is_move_constructible_v<XenDriver>);
static_assert(std::is_move_assignable_v<XenDriver>);
static_assert(!std::is_copy_constructible_v<XenDriver>);
static_assert(!std::is_copy_assignable_v<XenDriver>);
// The core can be instantiated over it (compile-time check of the
// pass-throughs' requires clauses).
static_assert(std::is_constructible_v<VmiCore<XenDriver>, XenDriver>);

// True when this machine is a Xen dom0 (then the "no Xen" tests do not
// apply).
bool XenPresent() { return std::getenv("VMI_XEN_DOMAIN") != nullptr; }

TEST(XenDriverWithoutXen, OpenByIdSaysXenIsNotAvailable) {
  if (XenPresent()) GTEST_SKIP() << "VMI_XEN_DOMAIN is set: a Xen host";
  absl::StatusOr<XenDriver> driver = XenDriver::Open(0);
  ASSERT_FALSE(driver.ok());
  EXPECT_EQ(driver.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(driver.status().message(), HasSubstr("Xen is not available"));
  EXPECT_THAT(driver.status().message(), HasSubstr("domain 0"));
  EXPECT_THAT(driver.status().message(), HasSubstr("xc_interface_open"));
}

TEST(XenDriverWithoutXen, OpenByNameSaysXenIsNotAvailable) {
  if (XenPresent()) GTEST_SKIP() << "VMI_XEN_DOMAIN is set: a Xen host";
  absl::StatusOr<XenDriver> driver = XenDriver::Open("no-such-domain");
  ASSERT_FALSE(driver.ok());
  EXPECT_EQ(driver.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(driver.status().message(), HasSubstr("Xen is not available"));
  EXPECT_THAT(driver.status().message(), HasSubstr("no-such-domain"));
}

TEST(XenDriverWithoutXen, NumericNameIsADomainId) {
  if (XenPresent()) GTEST_SKIP() << "VMI_XEN_DOMAIN is set: a Xen host";
  absl::StatusOr<XenDriver> driver = XenDriver::Open(absl::string_view("7"));
  ASSERT_FALSE(driver.ok());
  EXPECT_THAT(driver.status().message(), HasSubstr("domain 7"));
  EXPECT_THAT(driver.status().message(), HasSubstr("xc_interface_open"));
}

TEST(XenDriverWithoutXen, EmptyNameIsRejected) {
  absl::StatusOr<XenDriver> driver = XenDriver::Open(absl::string_view(""));
  ASSERT_FALSE(driver.ok());
  EXPECT_EQ(driver.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(XenDriverFromEnvironment, UnsetVariableIsAClearError) {
  const char* saved = std::getenv(XenDriver::kDomainEnvVar);
  std::string saved_value = saved ? saved : "";
  ASSERT_EQ(unsetenv(XenDriver::kDomainEnvVar), 0);
  absl::StatusOr<XenDriver> driver = XenDriver::OpenFromEnvironment();
  ASSERT_FALSE(driver.ok());
  EXPECT_EQ(driver.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(driver.status().message(), HasSubstr("VMI_XEN_DOMAIN is not set"));

  ASSERT_EQ(setenv(XenDriver::kDomainEnvVar, "", 1), 0);
  driver = XenDriver::OpenFromEnvironment();
  EXPECT_EQ(driver.status().code(), absl::StatusCode::kFailedPrecondition);
  if (saved) {
    setenv(XenDriver::kDomainEnvVar, saved_value.c_str(), 1);
  } else {
    unsetenv(XenDriver::kDomainEnvVar);
  }
}

TEST(XenDriverFromEnvironment, SetVariableIsUsed) {
  if (XenPresent()) GTEST_SKIP() << "VMI_XEN_DOMAIN is set: a Xen host";
  ASSERT_EQ(setenv(XenDriver::kDomainEnvVar, "guest-from-env", 1), 0);
  absl::StatusOr<XenDriver> driver = XenDriver::OpenFromEnvironment();
  unsetenv(XenDriver::kDomainEnvVar);
  ASSERT_FALSE(driver.ok());
  EXPECT_THAT(driver.status().message(), HasSubstr("guest-from-env"));
  EXPECT_THAT(driver.status().code(),
              AnyOf(absl::StatusCode::kUnavailable, absl::StatusCode::kNotFound));
}

// ---- The table of Xen calls ----

TEST(XenApiTest, AnUnfakedCallAbortsNamingIt) {
  const xen_internal::XenApi api = xen_internal::AbortingXenApi();
  EXPECT_DEATH(api.xc_domain_pause(nullptr, 1), "XenApi call xc_domain_pause is not faked");
  EXPECT_DEATH(api.poll(nullptr, 0, 0), "XenApi call poll is not faked");
}

TEST(XenApiTest, TheRealTableCallsTheLibraries) {
  EXPECT_EQ(xen_internal::RealXenApi().xc_domain_pause, &::xc_domain_pause);
  EXPECT_EQ(xen_internal::RealXenApi().poll, &::poll);
}

// ---- Against the scripted hypervisor ----

class XenDriverFake : public ::testing::Test {
 protected:
  XenDriver Attach(XenDriverOptions options = {}) {
    absl::StatusOr<XenDriver> driver = XenDriverTestPeer::Open(fake_, fake_.domid, options);
    EXPECT_TRUE(driver.ok()) << driver.status();
    return *std::move(driver);
  }
  static vm_event_request_t Request(uint32_t reason, uint32_t vcpu = 0) {
    vm_event_request_t req;
    std::memset(&req, 0, sizeof(req));
    req.flags = VM_EVENT_FLAG_VCPU_PAUSED;
    req.reason = reason;
    req.vcpu_id = vcpu;
    return req;
  }

  FakeXen fake_;
};

TEST_F(XenDriverFake, NoXenGivesTheLibraryMessageNotStderr) {
  fake_.xen_present = false;
  absl::StatusOr<XenDriver> driver = XenDriverTestPeer::Open(fake_, 5);
  ASSERT_FALSE(driver.ok());
  EXPECT_EQ(driver.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(driver.status().message(),
              HasSubstr("Could not obtain handle on privileged command interface"));
  EXPECT_THAT(driver.status().message(), HasSubstr("domain 5"));
}

TEST_F(XenDriverFake, MissingAndPvDomainsAreRefusedWithoutTouchingThem) {
  absl::StatusOr<XenDriver> missing = XenDriverTestPeer::Open(fake_, 9);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("domain 9 does not exist"));
  fake_.hvm = false;
  absl::StatusOr<XenDriver> pv = XenDriverTestPeer::Open(fake_, 5);
  EXPECT_EQ(pv.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(pv.status().message(), HasSubstr("HVM"));
  EXPECT_EQ(fake_.pause_count, 0);
  EXPECT_THAT(fake_.calls, ::testing::Not(::testing::Contains("xc_domain_pause")));
}

TEST_F(XenDriverFake, OpenByNameResolvesThroughXenstore) {
  fake_.name = "win10";
  absl::StatusOr<XenDriver> driver = XenDriverTestPeer::Open(fake_, absl::string_view("win10"));
  ASSERT_TRUE(driver.ok()) << driver.status();
  EXPECT_EQ(driver->domain_id(), 5u);
  absl::StatusOr<XenDriver> other = XenDriverTestPeer::Open(fake_, absl::string_view("linux"));
  EXPECT_EQ(other.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(other.status().message(), HasSubstr("no Xen domain is named \"linux\""));
}

TEST_F(XenDriverFake, Info) {
  XenDriver driver = Attach();
  absl::StatusOr<VmiInfo> info = driver.Info();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->page_size, 4096u);
  EXPECT_EQ(info->page_shift, 12);
  EXPECT_EQ(info->max_gfn, Gfn(0xff));
  EXPECT_EQ(info->vcpus, 2);
}

TEST_F(XenDriverFake, ReadPageIsLiveAndUnmappedWhenDropped) {
  XenDriver driver = Attach();
  fake_.Ram(0x10)[5] = 0xab;
  {
    absl::StatusOr<MappedPage> page = driver.ReadPage(Gfn(0x10));
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_TRUE(page->is_live());
    EXPECT_EQ(page->gfn(), Gfn(0x10));
    EXPECT_EQ(page->size(), 4096u);
    EXPECT_EQ(page->data()[5], 0xab);
    fake_.Ram(0x10)[5] = 0xcd;  // the guest writes
    EXPECT_EQ(page->data()[5], 0xcd);
    EXPECT_EQ(fake_.live_mappings, 1);
  }
  EXPECT_EQ(fake_.live_mappings, 0);
}

TEST_F(XenDriverFake, PagesOutliveTheDriver) {
  MappedPage page;
  {
    XenDriver driver = Attach();
    fake_.Ram(3)[0] = 0x77;
    absl::StatusOr<MappedPage> p = driver.ReadPage(Gfn(3));
    ASSERT_TRUE(p.ok());
    page = *p;
  }
  EXPECT_EQ(page.data()[0], 0x77);
  EXPECT_EQ(fake_.live_mappings, 1);
  page = MappedPage();
  EXPECT_EQ(fake_.live_mappings, 0);
}

TEST_F(XenDriverFake, ReadOfUnpopulatedFrameNamesCallDomainAndErrno) {
  XenDriver driver = Attach();
  absl::StatusOr<MappedPage> page = driver.ReadPage(Gfn(0x1f0));
  ASSERT_FALSE(page.ok());
  EXPECT_EQ(page.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(page.status().message(), HasSubstr("read_page"));
  EXPECT_THAT(page.status().message(), HasSubstr("xenforeignmemory_map(domain 5, gfn=0x1f0)"));
  EXPECT_THAT(page.status().message(), HasSubstr("errno=2"));
  EXPECT_EQ(fake_.live_mappings, 0);
}

TEST_F(XenDriverFake, WritePageWritesGuestMemoryAndReturnsThePage) {
  XenDriver driver = Attach();
  const uint8_t bytes[] = {1, 2, 3};
  absl::StatusOr<MappedPage> page = driver.WritePage(Gfn(0x20), 4094 - 1, bytes);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(fake_.Ram(0x20)[4093], 1);
  EXPECT_EQ(fake_.Ram(0x20)[4095], 3);
  EXPECT_EQ(page->data()[4094], 2);
  EXPECT_EQ(driver.WritePage(Gfn(0x20), 4095, bytes).status().code(),
            absl::StatusCode::kOutOfRange);
}

TEST_F(XenDriverFake, MapPagesBatchesAndReportsPerFrameErrors) {
  XenDriver driver = Attach();
  fake_.Ram(1)[0] = 11;
  fake_.Ram(2)[0] = 22;
  const size_t maps_before =
      std::count(fake_.calls.begin(), fake_.calls.end(), std::string("xenforeignmemory_map"));
  const Gfn gfns[] = {Gfn(1), Gfn(0x1ff), Gfn(2)};
  absl::StatusOr<std::vector<absl::StatusOr<MappedPage>>> pages = driver.MapPages(gfns);
  ASSERT_TRUE(pages.ok()) << pages.status();
  EXPECT_EQ(std::count(fake_.calls.begin(), fake_.calls.end(), std::string("xenforeignmemory_map")),
            maps_before + 1);
  ASSERT_EQ(pages->size(), 3u);
  ASSERT_TRUE((*pages)[0].ok());
  EXPECT_EQ((*pages)[0]->data()[0], 11);
  EXPECT_FALSE((*pages)[1].ok());
  EXPECT_THAT((*pages)[1].status().message(), HasSubstr("gfn=0x1ff"));
  ASSERT_TRUE((*pages)[2].ok());
  EXPECT_EQ((*pages)[2]->data()[0], 22);
  EXPECT_EQ((*pages)[2]->gfn(), Gfn(2));
  MappedPage keep = *(*pages)[2];
  pages->clear();
  EXPECT_GT(fake_.live_mappings, 0);  // one page keeps the shared mapping
  keep = MappedPage();
  EXPECT_EQ(fake_.live_mappings, 0);
  auto empty = driver.MapPages({});
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST_F(XenDriverFake, ViewZeroPermissionsAreSetAndRestoredOnClose) {
  XenDriver driver = Attach();
  ASSERT_TRUE(driver.SetMemoryAccess(Gfn(0x10), kDefaultView, MemoryAccess::R()).ok());
  EXPECT_EQ(fake_.access[0][0x10], XENMEM_access_r);
  EXPECT_TRUE(fake_.ring_enabled);  // violations must reach a ring
  absl::StatusOr<MemoryAccess> access = driver.GetMemoryAccess(Gfn(0x10), kDefaultView);
  ASSERT_TRUE(access.ok());
  EXPECT_EQ(*access, MemoryAccess::R());
  ASSERT_TRUE(driver.SetMemoryAccess(Gfn(0x10), kDefaultView, MemoryAccess::RX()).ok());

  absl::Status options = driver.SetMemoryAccessWithOptions(
      Gfn(0x11), kDefaultView, MemoryAccess::R(), MemoryAccessOptions::IgnorePageWalkUpdates());
  EXPECT_EQ(options.code(), absl::StatusCode::kUnimplemented);
  EXPECT_FALSE(fake_.access[0].contains(0x11));

  ASSERT_TRUE(driver.Close().ok());
  EXPECT_EQ(fake_.access[0][0x10], XENMEM_access_rwx);  // as found
}

TEST_F(XenDriverFake, PermissionFailureNamesTheCall) {
  XenDriver driver = Attach();
  fake_.FailCall("xc_set_mem_access", EPERM);
  absl::Status status = driver.SetMemoryAccess(Gfn(0x10), kDefaultView, MemoryAccess::RW());
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(status.message(), HasSubstr("xc_set_mem_access(domain 5, gfn=0x10, access=rw-)"));
  EXPECT_THAT(status.message(), HasSubstr("errno=1"));
}

TEST_F(XenDriverFake, WithoutAltp2mViewsFailClearlyAndTheRestWorks) {
  XenDriver driver = Attach();
  absl::StatusOr<View> view = driver.CreateView(MemoryAccess::RWX());
  ASSERT_FALSE(view.ok());
  EXPECT_EQ(view.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(view.status().message(),
              HasSubstr("altp2m not available for domain 5 (configure altp2m="));
  EXPECT_FALSE(driver.SwitchToView(View(1)).ok());
  EXPECT_TRUE(driver.SwitchToView(kDefaultView).ok());
  EXPECT_FALSE(driver.GetMemoryAccess(Gfn(1), View(1)).ok());
  EXPECT_FALSE(fake_.altp2m_enabled);  // never forced
  // Everything else still works.
  EXPECT_TRUE(driver.ReadPage(Gfn(1)).ok());
  EXPECT_TRUE(driver.SetMemoryAccess(Gfn(1), kDefaultView, MemoryAccess::RX()).ok());
  EXPECT_TRUE(driver.Registers(VcpuId(0)).ok());
  EXPECT_TRUE(driver.MonitorEnable(amd64::MonitorCpuid{}).ok());
  absl::StatusOr<bool> available = driver.Altp2mAvailable();
  ASSERT_TRUE(available.ok());
  EXPECT_FALSE(*available);
}

TEST_F(XenDriverFake, Altp2mViewsAndTeardown) {
  fake_.altp2m_param = XEN_ALTP2M_external;
  {
    XenDriver driver = Attach();
    absl::StatusOr<View> view = driver.CreateView(MemoryAccess::RX());
    ASSERT_TRUE(view.ok()) << view.status();
    EXPECT_TRUE(fake_.altp2m_enabled);
    EXPECT_EQ(fake_.access[view->value()][0x30], XENMEM_access_rx);
    ASSERT_TRUE(driver.SetMemoryAccess(Gfn(0x30), *view, MemoryAccess::R()).ok());
    EXPECT_EQ(fake_.access[view->value()][0x30], XENMEM_access_r);
    absl::StatusOr<MemoryAccess> access = driver.GetMemoryAccess(Gfn(0x30), *view);
    ASSERT_TRUE(access.ok());
    EXPECT_EQ(*access, MemoryAccess::R());
    ASSERT_TRUE(driver.ChangeViewGfn(*view, Gfn(0x30), Gfn(0x40)).ok());
    EXPECT_EQ(fake_.remapped[view->value()][0x30], 0x40u);
    ASSERT_TRUE(driver.ResetViewGfn(*view, Gfn(0x30)).ok());
    EXPECT_FALSE(fake_.remapped[view->value()].contains(0x30));
    ASSERT_TRUE(driver.SwitchToView(*view).ok());
    EXPECT_EQ(fake_.active_view, view->value());
    EXPECT_FALSE(driver.DestroyView(kDefaultView).ok());
  }
  // Destroyed with the driver: view 0, views gone, altp2m off as found.
  EXPECT_EQ(fake_.active_view, 0);
  EXPECT_TRUE(fake_.views.empty());
  EXPECT_FALSE(fake_.altp2m_enabled);
}

TEST_F(XenDriverFake, Altp2mAlreadyOnIsLeftOn) {
  fake_.altp2m_param = XEN_ALTP2M_mixed;
  fake_.altp2m_enabled = true;
  {
    XenDriver driver = Attach();
    absl::StatusOr<View> view = driver.CreateView(MemoryAccess::RWX());
    ASSERT_TRUE(view.ok());
    ASSERT_TRUE(driver.DestroyView(*view).ok());
  }
  EXPECT_TRUE(fake_.altp2m_enabled);
}

TEST_F(XenDriverFake, RegistersReadAndWrittenThroughTheCpuRecord) {
  fake_.cpus[1].rip = 0x401000;
  fake_.cpus[1].cr3 = 0x1ab000;
  fake_.cpus[1].cs_arbytes = 0xa9b;
  fake_.cpus[1].tsc = 0x1234;
  XenDriver driver = Attach();
  absl::StatusOr<amd64::Registers> regs = driver.Registers(VcpuId(1));
  ASSERT_TRUE(regs.ok()) << regs.status();
  EXPECT_EQ(regs->rip, 0x401000u);
  EXPECT_EQ(regs->cr3, 0x1ab000u);
  EXPECT_EQ(regs->cs.access, 0xa09b);
  regs->rip += 2;
  regs->rax = 0x42;
  ASSERT_TRUE(driver.SetRegisters(VcpuId(1), *regs).ok());
  EXPECT_EQ(fake_.cpus[1].rip, 0x401002u);
  EXPECT_EQ(fake_.cpus[1].rax, 0x42u);
  EXPECT_EQ(fake_.cpus[1].tsc, 0x1234u);  // untouched
  EXPECT_EQ(fake_.cpus[0].rip, 0u);       // other vCPU untouched
  EXPECT_EQ(fake_.pause_count, 0);        // paused only around the update
  EXPECT_EQ(driver.Registers(VcpuId(7)).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(driver.SetRegisters(VcpuId(7), *regs).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(fake_.pause_count, 0);
}

TEST_F(XenDriverFake, MonitorsMapToTheirXenControls) {
  XenDriver driver = Attach();
  ASSERT_TRUE(
      driver.MonitorEnable(amd64::MonitorControlRegister{amd64::ControlRegister::kCr3}).ok());
  ASSERT_TRUE(driver.MonitorEnable(amd64::MonitorMsr{amd64::msr::kLstar}).ok());
  ASSERT_TRUE(driver.MonitorEnable(amd64::MonitorInterrupt{3}).ok());
  ASSERT_TRUE(driver.MonitorEnable(amd64::MonitorInterrupt{1}).ok());
  ASSERT_TRUE(driver.MonitorEnable(amd64::MonitorSingleStep{}).ok());
  ASSERT_TRUE(driver.MonitorEnable(amd64::MonitorHypercall{}).ok());
  ASSERT_TRUE(driver.MonitorEnable(amd64::MonitorDescriptorAccess{}).ok());
  EXPECT_TRUE(fake_.monitors["cr3"]);
  EXPECT_TRUE(fake_.monitors["msr:0xc0000082"]);
  EXPECT_TRUE(fake_.monitors["breakpoint"]);
  EXPECT_TRUE(fake_.monitors["debug"]);
  EXPECT_TRUE(fake_.monitors["singlestep"]);
  EXPECT_TRUE(fake_.monitors["guest_request"]);
  EXPECT_TRUE(fake_.monitors["descriptor"]);
  EXPECT_EQ(driver.MonitorEnable(amd64::MonitorInterrupt{14}).code(),
            absl::StatusCode::kUnimplemented);
#ifndef VM_EVENT_REASON_IO_INSTRUCTION
  EXPECT_EQ(driver.MonitorEnable(amd64::MonitorIo{}).code(), absl::StatusCode::kUnimplemented);
#endif
  ASSERT_TRUE(driver.MonitorDisable(amd64::MonitorInterrupt{3}).ok());
  EXPECT_FALSE(fake_.monitors["breakpoint"]);
  ASSERT_TRUE(driver.ResetState().ok());
  for (const auto& [name, on] : fake_.monitors) EXPECT_FALSE(on) << name;
  EXPECT_TRUE(fake_.ring_enabled);  // ResetState keeps the ring
}

TEST_F(XenDriverFake, AnotherMonitorHoldingTheRingIsNamed) {
  XenDriver driver = Attach();
  fake_.FailCall("xc_monitor_enable", EBUSY);
  absl::Status status = driver.MonitorEnable(amd64::MonitorCpuid{});
  EXPECT_THAT(status.message(), HasSubstr("another introspection tool"));
  EXPECT_THAT(status.message(), HasSubstr("xc_monitor_enable(domain 5)"));
}

TEST_F(XenDriverFake, WaitTimesOutWithDeadlineExceeded) {
  XenDriver driver = Attach();
  int calls = 0;
  absl::Status status = driver.WaitForEvent(absl::Milliseconds(1), [&](const VmiEvent<Amd64>&) {
    ++calls;
    return VmiEventResponse<Amd64>::Continue();
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(calls, 0);
}

TEST_F(XenDriverFake, OneBatchAnswersEveryRequestAndNotifiesOnce) {
  XenDriver driver = Attach();
  ASSERT_TRUE(driver.MonitorEnable(amd64::MonitorCpuid{}).ok());
  vm_event_request_t cpuid = Request(VM_EVENT_REASON_CPUID, 1);
  cpuid.u.cpuid.leaf = 1;
  cpuid.u.cpuid.insn_length = 2;
  cpuid.data.regs.x86.rip = 0x1000;
  vm_event_request_t cr = Request(VM_EVENT_REASON_WRITE_CTRLREG, 0);
  cr.u.write_ctrlreg.index = VM_EVENT_X86_CR3;
  cr.u.write_ctrlreg.new_value = 0x5000;
  vm_event_request_t mem = Request(VM_EVENT_REASON_MEM_ACCESS, 1);
  mem.flags |= VM_EVENT_FLAG_ALTERNATE_P2M;
  mem.altp2m_idx = 2;
  mem.u.mem_access.gfn = 0x10;
  mem.u.mem_access.flags = MEM_ACCESS_W;
  fake_.PushRequest(cpuid, /*notify=*/false);
  fake_.PushRequest(cr, /*notify=*/false);
  fake_.PushRequest(mem);
  EXPECT_EQ(driver.EventsPending(), 3u);

  std::vector<std::string> seen;
  absl::Status status = driver.WaitForEvent(absl::Seconds(5), [&](const VmiEvent<Amd64>& e) {
    seen.push_back(amd64::EventReasonToString(e.reason));
    if (std::holds_alternative<amd64::CpuidEvent>(e.reason)) {
      amd64::GpRegisters gp = e.registers.gp();
      gp.rip += std::get<amd64::CpuidEvent>(e.reason).instruction_length;
      return VmiEventResponse<Amd64>::Continue().WithRegisters(gp);
    }
    if (std::holds_alternative<amd64::ControlRegisterWriteEvent>(e.reason)) {
      return VmiEventResponse<Amd64>::Deny();
    }
    EXPECT_EQ(e.view, View(2));
    return VmiEventResponse<Amd64>::Emulate().WithView(View(0));
  });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(seen.size(), 3u);
  EXPECT_EQ(fake_.notifications, 1);
  EXPECT_EQ(driver.EventsPending(), 0u);
  std::vector<vm_event_response_t> rsp = fake_.TakeResponses();
  ASSERT_EQ(rsp.size(), 3u);
  EXPECT_EQ(rsp[0].vcpu_id, 1u);
  EXPECT_EQ(rsp[0].flags, uint32_t{VM_EVENT_FLAG_VCPU_PAUSED | VM_EVENT_FLAG_SET_REGISTERS});
  EXPECT_EQ(rsp[0].data.regs.x86.rip, 0x1002u);
  EXPECT_EQ(rsp[1].flags, uint32_t{VM_EVENT_FLAG_VCPU_PAUSED | VM_EVENT_FLAG_DENY});
  EXPECT_EQ(rsp[2].flags, uint32_t{VM_EVENT_FLAG_VCPU_PAUSED | VM_EVENT_FLAG_EMULATE |
                                   VM_EVENT_FLAG_ALTERNATE_P2M});
  EXPECT_EQ(rsp[2].altp2m_idx, 0);
}

TEST_F(XenDriverFake, ReinjectInjectsBeforeResponding) {
  XenDriver driver = Attach();
  ASSERT_TRUE(driver.MonitorEnable(amd64::MonitorInterrupt{3}).ok());
  vm_event_request_t bp = Request(VM_EVENT_REASON_SOFTWARE_BREAKPOINT, 1);
  bp.u.software_breakpoint.insn_length = 1;
  bp.u.software_breakpoint.type = 6;
  fake_.PushRequest(bp);
  ASSERT_TRUE(driver
                  .WaitForEvent(absl::Seconds(5),
                                [](const VmiEvent<Amd64>&) {
                                  return VmiEventResponse<Amd64>::ReinjectInterrupt();
                                })
                  .ok());
  ASSERT_EQ(fake_.injected.size(), 1u);
  EXPECT_EQ(fake_.injected[0].vcpu, 1);
  EXPECT_EQ(fake_.injected[0].vector, 3);
  EXPECT_EQ(fake_.injected[0].type, 6);
  EXPECT_EQ(fake_.injected[0].insn_len, 1);
  EXPECT_EQ(fake_.injected[0].error_code, kNoErrorCode);
  EXPECT_EQ(fake_.TakeResponses().size(), 1u);
}

TEST_F(XenDriverFake, UnsupportedRequestIsAnsweredAndReported) {
  XenDriver driver = Attach();
  ASSERT_TRUE(driver.MonitorEnable(amd64::MonitorCpuid{}).ok());
  fake_.PushRequest(Request(VM_EVENT_REASON_VMEXIT, 0), false);
  fake_.PushRequest(Request(VM_EVENT_REASON_CPUID, 1));
  int handled = 0;
  absl::Status status = driver.WaitForEvent(absl::Seconds(5), [&](const VmiEvent<Amd64>&) {
    ++handled;
    return VmiEventResponse<Amd64>::Deny();  // not valid for CPUID either
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(status.message(), HasSubstr("vmexit"));
  EXPECT_EQ(handled, 1);
  std::vector<vm_event_response_t> rsp = fake_.TakeResponses();
  ASSERT_EQ(rsp.size(), 2u);  // nobody stays paused
  EXPECT_EQ(rsp[0].flags, uint32_t{VM_EVENT_FLAG_VCPU_PAUSED});
  EXPECT_EQ(rsp[1].flags, uint32_t{VM_EVENT_FLAG_VCPU_PAUSED});
}

TEST_F(XenDriverFake, FullRegistersOption) {
  fake_.cpus[1].dr0 = 0x1234;
  fake_.cpus[1].idtr_base = 0xfffff80000006000;
  XenDriver driver = Attach({.full_registers_in_events = true});
  ASSERT_TRUE(driver.MonitorEnable(amd64::MonitorSingleStep{}).ok());
  fake_.PushRequest(Request(VM_EVENT_REASON_SINGLESTEP, 1));
  amd64::Registers seen;
  ASSERT_TRUE(driver
                  .WaitForEvent(absl::Seconds(5),
                                [&](const VmiEvent<Amd64>& e) {
                                  seen = e.registers;
                                  return VmiEventResponse<Amd64>::Continue();
                                })
                  .ok());
  EXPECT_EQ(seen.dr0, 0x1234u);
  EXPECT_EQ(seen.idtr.base, 0xfffff80000006000u);
}

TEST_F(XenDriverFake, AllocateAndFreeGfnRaiseAndRestoreMaxMemory) {
  XenDriver driver = Attach();
  ASSERT_EQ(fake_.max_pages, 256u);  // full: 256 frames populated
  absl::StatusOr<Gfn> gfn = driver.AllocateGfn();
  ASSERT_TRUE(gfn.ok()) << gfn.status();
  EXPECT_EQ(*gfn, Gfn(0x100));
  EXPECT_TRUE(fake_.populated.contains(0x100));
  EXPECT_EQ(fake_.max_pages, 257u);
  EXPECT_EQ(driver.AllocateGfnAt(Gfn(0x10)).code(), absl::StatusCode::kAlreadyExists);
  absl::StatusOr<VmiInfo> info = driver.Info();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->max_gfn, Gfn(0x100));
  ASSERT_TRUE(driver.FreeGfn(*gfn).ok());
  EXPECT_FALSE(fake_.populated.contains(0x100));
  EXPECT_EQ(fake_.max_pages, 256u);
}

// The contract: a Resume without this driver's Pause refuses and unpauses
// nothing, so it cannot undo another tool's pause.
TEST_F(XenDriverFake, ResumeWithoutPauseLeavesAnotherToolsPauseAlone) {
  XenDriver driver = Attach();
  fake_.pause_count = 1;  // another tool paused the domain
  const absl::Status s = driver.Resume();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(fake_.pause_count, 1);
  EXPECT_EQ(std::count(fake_.calls.begin(), fake_.calls.end(), "xc_domain_unpause"), 0);
  fake_.pause_count = 0;
}

TEST_F(XenDriverFake, ContractCodesForBadFramesAndVcpus) {
  XenDriver driver = Attach();
  EXPECT_EQ(driver.FreeGfn(Gfn(0x1f0)).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(std::count(fake_.calls.begin(), fake_.calls.end(),
                       "xc_domain_decrease_reservation_exact"),
            0);
  EXPECT_EQ(driver.ReadPage(Gfn(0x1f0)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(driver.Registers(VcpuId(2)).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(driver.InjectInterrupt(VcpuId(2), amd64::Interrupt::Nmi()).code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(fake_.injected.empty());
}

TEST_F(XenDriverFake, PauseResumeAndInjection) {
  XenDriver driver = Attach();
  ASSERT_TRUE(driver.Pause().ok());
  ASSERT_TRUE(driver.Pause().ok());
  EXPECT_EQ(fake_.pause_count, 2);
  ASSERT_TRUE(driver.Resume().ok());
  EXPECT_EQ(fake_.pause_count, 1);
  ASSERT_TRUE(driver.InjectInterrupt(VcpuId(0), amd64::Interrupt::PageFault(Va(0x7000), 2)).ok());
  ASSERT_EQ(fake_.injected.size(), 1u);
  EXPECT_EQ(fake_.injected[0].vector, 14);
  EXPECT_EQ(fake_.injected[0].type, 3);
  EXPECT_EQ(fake_.injected[0].error_code, 2u);
  EXPECT_EQ(fake_.injected[0].extra, 0x7000u);
  ASSERT_TRUE(driver.Close().ok());
  EXPECT_EQ(fake_.pause_count, 0);  // the outstanding Pause is undone
}

TEST_F(XenDriverFake, TeardownLeavesTheDomainAsFound) {
  const uint64_t max_pages = fake_.max_pages;
  {
    XenDriver driver = Attach();
    ASSERT_TRUE(driver.MonitorEnable(amd64::MonitorCpuid{}).ok());
    ASSERT_TRUE(driver.MonitorEnable(amd64::MonitorMsr{amd64::msr::kLstar}).ok());
    ASSERT_TRUE(driver.SetMemoryAccess(Gfn(0x10), kDefaultView, MemoryAccess::None()).ok());
    ASSERT_TRUE(driver.AllocateGfn().ok());
    ASSERT_TRUE(driver.Pause().ok());
    fake_.PushRequest(Request(VM_EVENT_REASON_CPUID, 1));  // never waited for
    XenDriver moved = std::move(driver);                   // ownership moves
  }
  for (const auto& [name, on] : fake_.monitors) EXPECT_FALSE(on) << name;
  EXPECT_FALSE(fake_.ring_enabled);
  EXPECT_EQ(fake_.access[0][0x10], XENMEM_access_rwx);
  EXPECT_FALSE(fake_.populated.contains(0x100));
  EXPECT_EQ(fake_.max_pages, max_pages);
  EXPECT_EQ(fake_.pause_count, 0);
  ASSERT_EQ(fake_.responses_at_disable.size(), 1u);  // the pending vCPU was released
  EXPECT_EQ(fake_.responses_at_disable[0].vcpu_id, 1u);
  EXPECT_EQ(fake_.live_mappings, 0);
  EXPECT_THAT(fake_.calls, ::testing::Contains("xenevtchn_close"));
  EXPECT_THAT(fake_.calls, ::testing::Contains("xc_interface_close"));
}

TEST_F(XenDriverFake, ClosedDriverRefusesWork) {
  XenDriver driver = Attach();
  ASSERT_TRUE(driver.Close().ok());
  EXPECT_EQ(driver.ReadPage(Gfn(1)).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(driver.Close().ok());
}

TEST_F(XenDriverFake, VmiCoreReadsThroughTheDriver) {
  XenDriver driver = Attach();
  const uint64_t value = 0x1122334455667788;
  std::memcpy(fake_.Ram(0x40) + 0xff8, &value, sizeof(value));
  std::memcpy(fake_.Ram(0x41), "tail", 4);
  VmiCore<XenDriver> core(std::move(driver));
  absl::StatusOr<uint64_t> read = core.ReadU64(AccessContext(Pa(0x40ff8)));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, value);
  uint8_t across[12];
  ASSERT_TRUE(core.Read(AccessContext(Pa(0x40ff8)), absl::MakeSpan(across)).ok());
  EXPECT_EQ(std::memcmp(across + 8, "tail", 4), 0);
}

}  // namespace
}  // namespace vmi::xen
