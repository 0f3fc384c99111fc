// One conformance suite for every driver: the cases for each capability are
// written once against the concepts and instantiated for every adapter whose
// driver has that capability (see adapters.h). The test log lists each case
// per driver; adapters that cannot run here (Xen without VMI_XEN_DOMAIN) skip
// every case with their reason.

#include <algorithm>
#include <vector>

#include "absl/strings/str_format.h"
#include "arch/amd64/amd64.h"
#include "core/driver.h"
#include "core/vmi_core.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/conformance/adapters.h"
#include "tests/conformance/type_filter.h"

namespace vmi::conformance {
namespace {

using ::testing::HasSubstr;

// Reads pages straight from a driver, for walks in the event cases.
template <typename D>
struct CoreReaderFor {
  explicit CoreReaderFor(D& d) : driver(&d) {}
  D* driver;
  absl::StatusOr<MappedPage> ReadPage(Gfn gfn) { return driver->ReadPage(gfn); }
};

template <typename D>
struct HasRead : std::bool_constant<VmiRead<D>> {};
template <typename D>
struct HasWrite : std::bool_constant<VmiWrite<D>> {};
template <typename D>
struct HasQueryRegisters : std::bool_constant<VmiQueryRegisters<D>> {};
template <typename D>
struct HasSetRegisters : std::bool_constant<VmiSetRegisters<D>> {};
template <typename D>
struct HasProtection : std::bool_constant<VmiProtection<D>> {};
template <typename D>
struct HasViews : std::bool_constant<VmiViewControl<D> && VmiProtection<D>> {};
// Hypervisor-style events: INT3 exits and EPT views.
template <typename D>
struct HasEvents : std::bool_constant<VmiEventControl<D> && VmiMemory<D> && VmiVmControl<D> &&
                                      VmiViewControl<D>> {};
// Events and pausing, whatever raises the events.
template <typename D>
struct HasPauseAndEvents : std::bool_constant<VmiEventControl<D> && VmiVmControl<D> &&
                                              VmiQueryRegisters<D>> {};
template <typename D>
struct HasVmControl : std::bool_constant<VmiVmControl<D> && VmiProtection<D>> {};

// Every adapter, whatever it can do.
#define VMI_CONFORMANCE_ADAPTERS StoreAdapter, SimAdapter, DumpAdapter, XenAdapter, QemuAdapter

template <typename A>
class Conformance : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::optional<std::string> reason = A::SkipReason()) GTEST_SKIP() << *reason;
    auto adapter = A::Make();
    ASSERT_TRUE(adapter.ok()) << adapter.status();
    adapter_ = *std::move(adapter);
  }
  typename A::Driver& driver() { return adapter_->driver(); }
  Gfn beyond_max() {
    auto info = driver().Info();
    EXPECT_TRUE(info.ok());
    return Gfn(info->max_gfn.value() + 1);
  }
  std::unique_ptr<A> adapter_;
};

// ---- VmiRead ----

template <typename A>
class ReadConformance : public Conformance<A> {};
using ReadAdapters = FilterAdapters<HasRead, VMI_CONFORMANCE_ADAPTERS>;
TYPED_TEST_SUITE(ReadConformance, ReadAdapters, AdapterName);

TYPED_TEST(ReadConformance, InfoDescribesPages) {
  auto info = this->driver().Info();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->page_size, 4096u);
  EXPECT_EQ(info->page_shift, 12);
  EXPECT_GT(info->max_gfn.value(), 0u);
}

TYPED_TEST(ReadConformance, KnownPageHasKnownBytes) {
  auto page = this->driver().ReadPage(this->adapter_->known_gfn());
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->size(), 4096u);
  EXPECT_EQ(page->gfn(), this->adapter_->known_gfn());
  const std::vector<uint8_t> expect = this->adapter_->known_bytes();
  EXPECT_TRUE(std::equal(expect.begin(), expect.end(), page->data()));
}

TYPED_TEST(ReadConformance, PagesOutlivePreviousHandles) {
  auto a = this->driver().ReadPage(this->adapter_->known_gfn());
  auto b = this->driver().ReadPage(this->adapter_->known_gfn());
  ASSERT_TRUE(a.ok() && b.ok());
  a = absl::StatusOr<MappedPage>(MappedPage());
  EXPECT_EQ(b->data()[0], this->adapter_->known_bytes()[0]);
}

TYPED_TEST(ReadConformance, GfnBeyondMaxIsAClearError) {
  const Gfn bad = this->beyond_max();
  auto page = this->driver().ReadPage(bad);
  ASSERT_FALSE(page.ok());
  EXPECT_THAT(std::string(page.status().message()), HasSubstr(bad.ToString()));
  EXPECT_FALSE(this->driver().ReadPage(Gfn(~uint64_t{0} >> 12)).ok());
}

// ---- VmiWrite ----

template <typename A>
class WriteConformance : public Conformance<A> {};
using WriteAdapters = FilterAdapters<HasWrite, VMI_CONFORMANCE_ADAPTERS>;
TYPED_TEST_SUITE(WriteConformance, WriteAdapters, AdapterName);

TYPED_TEST(WriteConformance, WritesAreReadBackAtEveryAllowedOffset) {
  const Gfn gfn = this->adapter_->writable_gfn();
  for (uint64_t offset : {uint64_t{0}, uint64_t{1}, uint64_t{0x7ff}, uint64_t{4095}}) {
    const std::vector<uint8_t> data(std::min<uint64_t>(16, 4096 - offset),
                                    static_cast<uint8_t>(0xa0 + offset));
    auto after = this->driver().WritePage(gfn, offset, data);
    ASSERT_TRUE(after.ok()) << after.status();
    EXPECT_EQ(after->data()[offset], data[0]);
    auto page = this->driver().ReadPage(gfn);
    ASSERT_TRUE(page.ok());
    EXPECT_TRUE(std::equal(data.begin(), data.end(), page->data() + offset)) << offset;
  }
  // A whole page.
  const std::vector<uint8_t> full(4096, 0x5c);
  ASSERT_TRUE(this->driver().WritePage(gfn, 0, full).ok());
  EXPECT_EQ(this->driver().ReadPage(gfn)->data()[4095], 0x5c);
}

TYPED_TEST(WriteConformance, WritesPastThePageEndOrMaxGfnAreRejected) {
  const Gfn gfn = this->adapter_->writable_gfn();
  const std::vector<uint8_t> data(16, 1);
  EXPECT_FALSE(this->driver().WritePage(gfn, 4090, data).ok());
  EXPECT_FALSE(this->driver().WritePage(gfn, 4096, absl::MakeConstSpan(data.data(), 1)).ok());
  auto bad = this->driver().WritePage(this->beyond_max(), 0, data);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr(this->beyond_max().ToString()));
  // A rejected write changed nothing.
  EXPECT_NE(this->driver().ReadPage(gfn)->data()[4090], 1);
}

// ---- VmiQueryRegisters ----

template <typename A>
class QueryRegistersConformance : public Conformance<A> {};
using QueryRegistersAdapters = FilterAdapters<HasQueryRegisters, VMI_CONFORMANCE_ADAPTERS>;
TYPED_TEST_SUITE(QueryRegistersConformance, QueryRegistersAdapters, AdapterName);

TYPED_TEST(QueryRegistersConformance, Vcpu0HasTheKnownState) {
  auto regs = this->driver().Registers(VcpuId(0));
  ASSERT_TRUE(regs.ok()) << regs.status();
  const amd64::Registers known = this->adapter_->known_registers();
  EXPECT_EQ(regs->rip, known.rip);
  EXPECT_EQ(regs->rsp, known.rsp);
  EXPECT_EQ(regs->cr3, known.cr3);
  EXPECT_EQ(regs->cr0, known.cr0);
  EXPECT_EQ(regs->cs.selector, known.cs.selector);
  EXPECT_EQ(Amd64::PagingModeOf(*regs), Amd64::PagingModeOf(known));
}

TYPED_TEST(QueryRegistersConformance, UnknownVcpuIsAClearError) {
  auto info = this->driver().Info();
  ASSERT_TRUE(info.ok());
  auto regs = this->driver().Registers(VcpuId(info->vcpus));
  ASSERT_FALSE(regs.ok());
  EXPECT_THAT(std::string(regs.status().message()), HasSubstr(absl::StrFormat("%u", info->vcpus)));
}

// ---- VmiSetRegisters ----

template <typename A>
class SetRegistersConformance : public Conformance<A> {};
using SetRegistersAdapters = FilterAdapters<HasSetRegisters, VMI_CONFORMANCE_ADAPTERS>;
TYPED_TEST_SUITE(SetRegistersConformance, SetRegistersAdapters, AdapterName);

TYPED_TEST(SetRegistersConformance, RoundTripOfGprsAndControlState) {
  auto regs = this->driver().Registers(VcpuId(0));
  ASSERT_TRUE(regs.ok());
  amd64::Registers changed = *regs;
  changed.rax = 0x1122334455667788;
  changed.r15 = 0xdeadbeef;
  changed.rflags |= 1 << 0;  // CF
  ASSERT_TRUE(this->driver().SetRegisters(VcpuId(0), changed).ok());
  auto back = this->driver().Registers(VcpuId(0));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->rax, changed.rax);
  EXPECT_EQ(back->r15, changed.r15);
  EXPECT_EQ(back->rflags & 1, 1u);
  EXPECT_EQ(back->cr3, regs->cr3);
  EXPECT_EQ(back->rip, regs->rip);
  ASSERT_TRUE(this->driver().SetRegisters(VcpuId(0), *regs).ok());
  EXPECT_FALSE(this->driver().SetRegisters(VcpuId(99), *regs).ok());
}

// ---- VmiQueryProtection + VmiSetProtection ----

template <typename A>
class ProtectionConformance : public Conformance<A> {};
using ProtectionAdapters = FilterAdapters<HasProtection, VMI_CONFORMANCE_ADAPTERS>;
TYPED_TEST_SUITE(ProtectionConformance, ProtectionAdapters, AdapterName);

TYPED_TEST(ProtectionConformance, EveryCombinationReadsBack) {
  const Gfn gfn = this->adapter_->writable_gfn();
  EXPECT_EQ(*this->driver().GetMemoryAccess(gfn, kDefaultView), MemoryAccess::RWX());
  for (MemoryAccess a : {MemoryAccess::R(), MemoryAccess::RX(), MemoryAccess::RW(),
                         MemoryAccess::X(), MemoryAccess::None(), MemoryAccess::RWX()}) {
    ASSERT_TRUE(this->driver().SetMemoryAccess(gfn, kDefaultView, a).ok()) << a;
    EXPECT_EQ(*this->driver().GetMemoryAccess(gfn, kDefaultView), a);
    auto with = this->driver().GetMemoryAccessWithOptions(gfn, kDefaultView);
    ASSERT_TRUE(with.ok());
    EXPECT_EQ(with->first, a);
    EXPECT_EQ(with->second, MemoryAccessOptions::None());
  }
}

TYPED_TEST(ProtectionConformance, IgnorePageWalkUpdatesOptionRoundTripsOrIsRefusedClearly) {
  const Gfn gfn = this->adapter_->writable_gfn();
  absl::Status s = this->driver().SetMemoryAccessWithOptions(
      gfn, kDefaultView, MemoryAccess::RX(), MemoryAccessOptions::IgnorePageWalkUpdates());
  if (absl::IsUnimplemented(s)) {
    // A hypervisor without the *_pw access types (Xen 4.17) must say so and change nothing.
    EXPECT_THAT(std::string(s.message()), HasSubstr("ignore_page_walk_updates"));
    EXPECT_EQ(*this->driver().GetMemoryAccess(gfn, kDefaultView), MemoryAccess::RWX());
    return;
  }
  ASSERT_TRUE(s.ok()) << s;
  auto with = this->driver().GetMemoryAccessWithOptions(gfn, kDefaultView);
  ASSERT_TRUE(with.ok());
  EXPECT_EQ(with->first, MemoryAccess::RX());
  EXPECT_EQ(with->second, MemoryAccessOptions::IgnorePageWalkUpdates());
  ASSERT_TRUE(this->driver().SetMemoryAccess(gfn, kDefaultView, MemoryAccess::RWX()).ok());
  EXPECT_EQ(this->driver().GetMemoryAccessWithOptions(gfn, kDefaultView)->second,
            MemoryAccessOptions::None());
}

TYPED_TEST(ProtectionConformance, BadGfnAndViewAreRejected) {
  EXPECT_FALSE(this->driver().SetMemoryAccess(this->beyond_max(), kDefaultView, MemoryAccess::R()).ok());
  EXPECT_FALSE(this->driver().GetMemoryAccess(this->beyond_max(), kDefaultView).ok());
  EXPECT_FALSE(
      this->driver().SetMemoryAccess(this->adapter_->writable_gfn(), View(60), MemoryAccess::R()).ok());
}

// ---- VmiViewControl ----

template <typename A>
class ViewConformance : public Conformance<A> {};
using ViewAdapters = FilterAdapters<HasViews, VMI_CONFORMANCE_ADAPTERS>;
TYPED_TEST_SUITE(ViewConformance, ViewAdapters, AdapterName);

TYPED_TEST(ViewConformance, PermissionsArePerView) {
  auto& d = this->driver();
  EXPECT_EQ(d.DefaultView(), kDefaultView);
  auto view = d.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_NE(*view, kDefaultView);
  const Gfn gfn = this->adapter_->writable_gfn();
  ASSERT_TRUE(d.SetMemoryAccess(gfn, *view, MemoryAccess::R()).ok());
  EXPECT_EQ(*d.GetMemoryAccess(gfn, *view), MemoryAccess::R());
  EXPECT_EQ(*d.GetMemoryAccess(gfn, kDefaultView), MemoryAccess::RWX());
  ASSERT_TRUE(d.ChangeViewGfn(*view, gfn, this->adapter_->known_gfn()).ok());
  ASSERT_TRUE(d.ResetViewGfn(*view, gfn).ok());
  ASSERT_TRUE(d.SwitchToView(*view).ok());
  ASSERT_TRUE(d.SwitchToView(kDefaultView).ok());
  ASSERT_TRUE(d.DestroyView(*view).ok());
  EXPECT_FALSE(d.SwitchToView(*view).ok());
  EXPECT_FALSE(d.DestroyView(*view).ok());
  EXPECT_FALSE(d.DestroyView(kDefaultView).ok());
}

TYPED_TEST(ViewConformance, DefaultAccessOfANewView) {
  auto& d = this->driver();
  auto view = d.CreateView(MemoryAccess::RX());
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(*d.GetMemoryAccess(this->adapter_->known_gfn(), *view), MemoryAccess::RX());
  EXPECT_TRUE(d.DestroyView(*view).ok());
}

// ---- VmiEventControl (with a guest that runs known code) ----

template <typename A>
class EventConformance : public Conformance<A> {
 protected:
  void SetUp() override {
    Conformance<A>::SetUp();
    if (this->IsSkipped() || this->HasFatalFailure()) return;
    target_ = this->adapter_->breakpoint_target();
    if (!target_) GTEST_SKIP() << A::Name() << " has no scripted guest to raise events";
  }
  std::optional<Va> target_;
};
using EventAdapters = FilterAdapters<HasEvents, VMI_CONFORMANCE_ADAPTERS>;
TYPED_TEST_SUITE(EventConformance, EventAdapters, AdapterName);

TYPED_TEST(EventConformance, BreakpointEventHasTheDocumentedFields) {
  auto& d = this->driver();
  const amd64::Registers regs = *d.Registers(VcpuId(0));
  CoreReaderFor<typename TypeParam::Driver> reader(d);
  auto pa = Amd64::Translate(
      reader, AddressContext(*this->target_, Amd64::TranslationRoot(regs)), Amd64::PagingModeOf(regs));
  ASSERT_TRUE(pa.ok()) << pa.status();
  const Gfn gfn(pa->pa.value() >> 12);
  const uint64_t offset = pa->pa.value() & 0xfff;
  const uint8_t original = d.ReadPage(gfn)->data()[offset];
  const uint8_t int3 = 0xcc;
  ASSERT_TRUE(d.WritePage(gfn, offset, absl::MakeConstSpan(&int3, 1)).ok());
  ASSERT_TRUE(d.MonitorEnable(amd64::MonitorInterrupt{3}).ok());
  int seen = 0;
  absl::Status s = d.WaitForEvent(absl::Seconds(5), [&](const VmiEvent<Amd64>& e) {
    ++seen;
    const auto* i = std::get_if<amd64::InterruptEvent>(&e.reason);
    EXPECT_NE(i, nullptr) << amd64::EventReasonToString(e.reason);
    if (i) {
      EXPECT_EQ(i->interrupt.vector, 3);
      EXPECT_EQ(i->interrupt.type, amd64::InterruptType::kSoftwareException);
      EXPECT_EQ(i->interrupt.instruction_length, 1);
    }
    EXPECT_EQ(e.registers.rip, this->target_->value());
    EXPECT_EQ(e.view, kDefaultView);
    EXPECT_TRUE(e.flags.vcpu_paused);
    // Put the byte back and let the vCPU re-execute the original instruction.
    EXPECT_TRUE(d.WritePage(gfn, offset, absl::MakeConstSpan(&original, 1)).ok());
    return VmiEventResponse<Amd64>::Continue();
  });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(seen, 1);
  EXPECT_EQ(d.EventsPending(), 0u);
  ASSERT_TRUE(d.ResetState().ok());
}

// The hidden-breakpoint technique: in a new view the code frame is remapped
// to a shadow copy carrying an INT3. Only a vCPU in that view hits it; the
// host view (and what the driver reads) keeps the original code.
TYPED_TEST(EventConformance, RemappedFrameIsSeenInItsViewOnly) {
  auto& d = this->driver();
  const amd64::Registers regs = *d.Registers(VcpuId(0));
  CoreReaderFor<typename TypeParam::Driver> reader(d);
  auto t = Amd64::Translate(reader, AddressContext(*this->target_, Amd64::TranslationRoot(regs)),
                            Amd64::PagingModeOf(regs));
  ASSERT_TRUE(t.ok()) << t.status();
  const Gfn code(t->pa.value() >> 12);
  const uint64_t offset = t->pa.value() & 0xfff;
  auto shadow = d.AllocateGfn();
  ASSERT_TRUE(shadow.ok()) << shadow.status();
  std::vector<uint8_t> copy(d.ReadPage(code)->data(), d.ReadPage(code)->data() + 4096);
  const uint8_t original = copy[offset];
  copy[offset] = 0xcc;
  ASSERT_TRUE(d.WritePage(*shadow, 0, copy).ok());
  auto view = d.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(view.ok()) << view.status();
  ASSERT_TRUE(d.ChangeViewGfn(*view, code, *shadow).ok());
  ASSERT_TRUE(d.MonitorEnable(amd64::MonitorInterrupt{3}).ok());
  ASSERT_TRUE(d.SwitchToView(*view).ok());
  // Every vCPU runs the same code: each hits the INT3 once in the view, is
  // sent back to the host view, and runs its remaining calls with no event.
  std::vector<std::string> seen;
  absl::Status s;
  for (int i = 0; i < 16 && (s = d.WaitForEvent(absl::Seconds(5), [&](const VmiEvent<Amd64>& e) {
                               seen.push_back(absl::StrFormat("vcpu=%s view=%s rip=%s", e.vcpu,
                                                              e.view, Va(e.registers.rip)));
                               return VmiEventResponse<Amd64>::Continue().WithView(kDefaultView);
                             })).ok();
       ++i) {
  }
  EXPECT_TRUE(absl::IsDeadlineExceeded(s)) << s;
  const uint16_t vcpus = d.Info()->vcpus;
  std::vector<std::string> want;
  for (uint16_t v = 0; v < vcpus; ++v) {
    want.push_back(absl::StrFormat("vcpu=%u view=%s rip=%s", v, *view, *this->target_));
  }
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, want);
  EXPECT_EQ(d.ReadPage(code)->data()[offset], original);  // the host view never saw the INT3
  ASSERT_TRUE(d.ResetState().ok());
  EXPECT_TRUE(d.FreeGfn(*shadow).ok());
}

// ---- VmiEventControl + VmiVmControl: a paused VM ----

template <typename A>
class PauseConformance : public Conformance<A> {};
using PauseAdapters = FilterAdapters<HasPauseAndEvents, VMI_CONFORMANCE_ADAPTERS>;
TYPED_TEST_SUITE(PauseConformance, PauseAdapters, AdapterName);

TYPED_TEST(PauseConformance, PausedVmRaisesNoEventsAndDoesNotRun) {
  auto& d = this->driver();
  ASSERT_TRUE(d.MonitorEnable(amd64::MonitorSingleStep{}).ok());
  const amd64::Registers before = *d.Registers(VcpuId(0));
  ASSERT_TRUE(d.Pause().ok());
  absl::Status paused = d.WaitForEvent(absl::Milliseconds(10), [](const VmiEvent<Amd64>&) {
    return VmiEventResponse<Amd64>::Continue();
  });
  EXPECT_TRUE(absl::IsDeadlineExceeded(paused)) << paused;
  EXPECT_EQ(d.Registers(VcpuId(0))->rip, before.rip);  // paused: nothing ran
  ASSERT_TRUE(d.Resume().ok());
  ASSERT_TRUE(d.ResetState().ok());
}

// ---- VmiVmControl ----

template <typename A>
class VmControlConformance : public Conformance<A> {};
using VmControlAdapters = FilterAdapters<HasVmControl, VMI_CONFORMANCE_ADAPTERS>;
TYPED_TEST_SUITE(VmControlConformance, VmControlAdapters, AdapterName);

TYPED_TEST(VmControlConformance, GfnAllocationAndFree) {
  auto& d = this->driver();
  const Gfn max = d.Info()->max_gfn;
  auto gfn = d.AllocateGfn();
  ASSERT_TRUE(gfn.ok()) << gfn.status();
  EXPECT_GT(*gfn, max);
  EXPECT_TRUE(d.ReadPage(*gfn).ok());
  ASSERT_TRUE(d.FreeGfn(*gfn).ok());
  EXPECT_FALSE(d.ReadPage(*gfn).ok());
  EXPECT_FALSE(d.FreeGfn(*gfn).ok());
}

TYPED_TEST(VmControlConformance, ResetStateLeavesNothingBehind) {
  auto& d = this->driver();
  const Gfn gfn = this->adapter_->writable_gfn();
  ASSERT_TRUE(d.SetMemoryAccess(gfn, kDefaultView, MemoryAccess::R()).ok());
  ASSERT_TRUE(d.MonitorEnable(amd64::MonitorInterrupt{3}).ok());
  auto view = d.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(view.ok());
  ASSERT_TRUE(d.SwitchToView(*view).ok());
  ASSERT_TRUE(d.ResetState().ok());
  EXPECT_EQ(*d.GetMemoryAccess(gfn, kDefaultView), MemoryAccess::RWX());
  EXPECT_FALSE(d.SwitchToView(*view).ok());
}

TYPED_TEST(VmControlConformance, PauseResumeAndInjection) {
  auto& d = this->driver();
  ASSERT_TRUE(d.Pause().ok());
  ASSERT_TRUE(d.Resume().ok());
  EXPECT_FALSE(d.InjectInterrupt(VcpuId(99), amd64::Interrupt::Breakpoint(1)).ok());
  EXPECT_TRUE(d.InjectInterrupt(VcpuId(0), amd64::Interrupt::External(0x40)).ok());
}

}  // namespace
}  // namespace vmi::conformance
