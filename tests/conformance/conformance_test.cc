// One conformance suite for every driver: the driver contract of
// core/driver.h, asserted against each adapter whose driver has the
// capability (see adapters.h). Every failure clause of the contract has a
// case here that feeds the bad input to each such driver and checks the
// status code (the same for all of them) and that nothing changed; effects
// are observed through the driver (a remap seen by the guest in its view, a
// paused VM that executes nothing, an injected interrupt that arrives at its
// handler); expected values are what set-up wrote, never what the driver
// under test reported. Adapters that cannot run here (Xen without
// VMI_XEN_DOMAIN) skip every case with their reason.

#include <algorithm>
#include <string>
#include <variant>
#include <vector>

#include "absl/strings/str_format.h"
#include "arch/amd64/amd64.h"
#include "core/driver.h"
#include "core/error.h"
#include "core/vmi_core.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/conformance/adapters.h"
#include "tests/conformance/type_filter.h"

namespace vmi::conformance {
namespace {

using ::testing::HasSubstr;

// Reads pages straight from a driver, for walks.
template <typename D>
struct PageReader {
  explicit PageReader(D& d) : driver(&d) {}
  D* driver;
  absl::StatusOr<MappedPage> ReadPage(Gfn gfn) { return driver->ReadPage(gfn); }
};

// The frame of `regs`' RIP by the suite's own walk over the driver's pages
// (never the driver's event path).
template <typename D>
std::optional<Gfn> WalkedFrameOfRip(D& d, const amd64::Registers& regs) {
  PageReader<D> reader(d);
  const FaultOr<PageTranslation> t =
      Amd64::Translate(reader, AddressContext(Va(regs.rip), Amd64::TranslationRoot(regs)),
                       Amd64::PagingModeOf(regs));
  if (!t.ok()) return std::nullopt;
  return Gfn(t->pa.value() >> 12);
}

// The instruction_gfn an INT3 or single-step event carries, "none" when it
// has none, "other" for any other event.
std::string InstructionGfnOf(const VmiEvent<Amd64>& e) {
  std::optional<Gfn> gfn;
  if (const auto* i = std::get_if<amd64::InterruptEvent>(&e.reason)) {
    gfn = i->instruction_gfn;
  } else if (const auto* s = std::get_if<amd64::SingleStepEvent>(&e.reason)) {
    gfn = s->instruction_gfn;
  } else {
    return "other";
  }
  return gfn ? gfn->ToString() : "none";
}

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
struct HasPauseAndEvents
    : std::bool_constant<VmiEventControl<D> && VmiVmControl<D> && VmiQueryRegisters<D>> {};
template <typename D>
struct HasVmControl : std::bool_constant<VmiVmControl<D> && VmiRead<D>> {};
template <typename D>
struct HasTranslation : std::bool_constant<VmiRead<D> && VmiQueryRegisters<D>> {};

// Every adapter, whatever it can do.
#define VMI_CONFORMANCE_ADAPTERS \
  StoreAdapter, SimAdapter, DumpAdapter, FakeXenAdapter, XenAdapter, QemuAdapter

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
  std::vector<uint8_t> PageBytes(Gfn gfn) {
    auto page = driver().ReadPage(gfn);
    EXPECT_TRUE(page.ok()) << page.status();
    if (!page.ok()) return {};
    return std::vector<uint8_t>(page->data(), page->data() + page->size());
  }
  std::unique_ptr<A> adapter_;
};

// ---- VmiRead ----

template <typename A>
class ReadConformance : public Conformance<A> {};
using ReadAdapters = FilterAdapters<HasRead, VMI_CONFORMANCE_ADAPTERS>;
TYPED_TEST_SUITE(ReadConformance, ReadAdapters, AdapterName);

TYPED_TEST(ReadConformance, InfoDescribesPagesAndMaxGfnIsReadable) {
  auto info = this->driver().Info();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->page_size, 4096u);
  EXPECT_EQ(info->page_shift, 12);
  EXPECT_GT(info->max_gfn.value(), 0u);
  EXPECT_TRUE(this->driver().ReadPage(info->max_gfn).ok());
}

TYPED_TEST(ReadConformance, KnownPageHasTheBytesWrittenAtSetUp) {
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

// Contract: a bad GFN is NotFound, and the message names it.
TYPED_TEST(ReadConformance, BadGfnIsNotFound) {
  const Gfn bad = this->beyond_max();
  auto page = this->driver().ReadPage(bad);
  ASSERT_FALSE(page.ok());
  EXPECT_EQ(page.status().code(), absl::StatusCode::kNotFound) << page.status();
  EXPECT_THAT(std::string(page.status().message()), HasSubstr(bad.ToString()));
  EXPECT_EQ(this->driver().ReadPage(Gfn(~uint64_t{0} >> 12)).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_FALSE(IsTranslationFault(page.status()));
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
  const std::vector<uint8_t> full(4096, 0x5c);
  ASSERT_TRUE(this->driver().WritePage(gfn, 0, full).ok());
  EXPECT_EQ(this->driver().ReadPage(gfn)->data()[4095], 0x5c);
}

// Contract: a span past the page is OutOfRange (never wrapping into range)
// and writes nothing.
TYPED_TEST(WriteConformance, SpanPastThePageIsOutOfRangeAndWritesNothing) {
  const Gfn gfn = this->adapter_->writable_gfn();
  ASSERT_TRUE(this->driver().WritePage(gfn, 0, std::vector<uint8_t>(4096, 0x33)).ok());
  const std::vector<uint8_t> before = this->PageBytes(gfn);
  const std::vector<uint8_t> data(16, 1);
  struct Span {
    uint64_t offset;
    size_t size;
  };
  for (const Span s : {Span{4090, 16}, Span{4096, 1}, Span{4096, 0}, Span{0x10000, 4},
                       Span{~uint64_t{0} - 7, 16}}) {
    const absl::Status st =
        this->driver().WritePage(gfn, s.offset, absl::MakeConstSpan(data.data(), s.size)).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kOutOfRange)
        << "offset=" << s.offset << " size=" << s.size << ": " << st;
  }
  EXPECT_EQ(this->PageBytes(gfn), before);
}

TYPED_TEST(WriteConformance, WriteToABadGfnIsNotFound) {
  const std::vector<uint8_t> data(16, 1);
  auto bad = this->driver().WritePage(this->beyond_max(), 0, data);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kNotFound) << bad.status();
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr(this->beyond_max().ToString()));
}

// ---- VmiQueryRegisters ----

template <typename A>
class QueryRegistersConformance : public Conformance<A> {};
using QueryRegistersAdapters = FilterAdapters<HasQueryRegisters, VMI_CONFORMANCE_ADAPTERS>;
TYPED_TEST_SUITE(QueryRegistersConformance, QueryRegistersAdapters, AdapterName);

TYPED_TEST(QueryRegistersConformance, Vcpu0HasTheStateWrittenAtSetUp) {
  auto regs = this->driver().Registers(VcpuId(0));
  ASSERT_TRUE(regs.ok()) << regs.status();
  const KnownRegisters known = this->adapter_->known_registers();
  amd64::GpRegisters expect = known.gp;
  // RSP, RIP and RFLAGS are the guest's own: not part of what set-up wrote.
  amd64::GpRegisters got = regs->gp();
  expect.rsp = got.rsp, expect.rip = got.rip, expect.rflags = got.rflags;
  EXPECT_EQ(got, expect);
  if (known.cr3) EXPECT_EQ(regs->cr3, *known.cr3);
}

// Contract: an unknown vCPU is OutOfRange.
TYPED_TEST(QueryRegistersConformance, UnknownVcpuIsOutOfRange) {
  auto info = this->driver().Info();
  ASSERT_TRUE(info.ok());
  auto regs = this->driver().Registers(VcpuId(info->vcpus));
  ASSERT_FALSE(regs.ok());
  EXPECT_EQ(regs.status().code(), absl::StatusCode::kOutOfRange) << regs.status();
  EXPECT_THAT(std::string(regs.status().message()), HasSubstr(absl::StrFormat("%u", info->vcpus)));
  EXPECT_EQ(this->driver().Registers(VcpuId(0xffff)).status().code(), absl::StatusCode::kOutOfRange);
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
}

TYPED_TEST(SetRegistersConformance, UnknownVcpuIsOutOfRangeAndChangesNothing) {
  auto regs = this->driver().Registers(VcpuId(0));
  ASSERT_TRUE(regs.ok());
  amd64::Registers changed = *regs;
  changed.rax = ~regs->rax;
  const uint16_t vcpus = this->driver().Info()->vcpus;
  EXPECT_EQ(this->driver().SetRegisters(VcpuId(vcpus), changed).code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(this->driver().Registers(VcpuId(0))->rax, regs->rax);
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

// Contract: options the hypervisor cannot express are a missing capability
// (Unimplemented) and change nothing.
TYPED_TEST(ProtectionConformance, IgnorePageWalkUpdatesRoundTripsOrIsUnimplemented) {
  const Gfn gfn = this->adapter_->writable_gfn();
  absl::Status s = this->driver().SetMemoryAccessWithOptions(
      gfn, kDefaultView, MemoryAccess::RX(), MemoryAccessOptions::IgnorePageWalkUpdates());
  if (absl::IsUnimplemented(s)) {
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

// Contract: a bad GFN is NotFound, an unknown view InvalidArgument (never the
// NotFound of a translation fault); neither changes anything.
TYPED_TEST(ProtectionConformance, BadGfnIsNotFoundAndUnknownViewIsInvalidArgument) {
  auto& d = this->driver();
  const Gfn gfn = this->adapter_->writable_gfn();
  EXPECT_EQ(d.SetMemoryAccess(this->beyond_max(), kDefaultView, MemoryAccess::R()).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(d.GetMemoryAccess(this->beyond_max(), kDefaultView).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(d.GetMemoryAccessWithOptions(this->beyond_max(), kDefaultView).status().code(),
            absl::StatusCode::kNotFound);
  if constexpr (VmiViewControl<typename TypeParam::Driver>) {
    // A view index no driver hands out (Xen has at most 10, the simulator 64).
    const View unknown(60);
    EXPECT_EQ(d.SetMemoryAccess(gfn, unknown, MemoryAccess::R()).code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(d.GetMemoryAccess(gfn, unknown).status().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(*d.GetMemoryAccess(gfn, kDefaultView), MemoryAccess::RWX());
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
}

TYPED_TEST(ViewConformance, DefaultAccessOfANewView) {
  auto& d = this->driver();
  auto view = d.CreateView(MemoryAccess::RX());
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(*d.GetMemoryAccess(this->adapter_->known_gfn(), *view), MemoryAccess::RX());
  EXPECT_TRUE(d.DestroyView(*view).ok());
}

// Contract: an unknown view (destroyed, never created, or the default view
// where only alternate views go) is InvalidArgument everywhere.
TYPED_TEST(ViewConformance, UnknownViewIsInvalidArgument) {
  auto& d = this->driver();
  auto view = d.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(view.ok()) << view.status();
  ASSERT_TRUE(d.DestroyView(*view).ok());
  const Gfn gfn = this->adapter_->writable_gfn();
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(d.SwitchToView(*view).code(), kInvalid);
  EXPECT_EQ(d.DestroyView(*view).code(), kInvalid);
  EXPECT_EQ(d.ChangeViewGfn(*view, gfn, this->adapter_->known_gfn()).code(), kInvalid);
  EXPECT_EQ(d.ResetViewGfn(*view, gfn).code(), kInvalid);
  EXPECT_EQ(d.SetMemoryAccess(gfn, *view, MemoryAccess::R()).code(), kInvalid);
  EXPECT_EQ(d.DestroyView(kDefaultView).code(), kInvalid);
  EXPECT_EQ(d.ChangeViewGfn(kDefaultView, gfn, this->adapter_->known_gfn()).code(), kInvalid);
}

// Contract: a view a vCPU is in cannot be destroyed (FailedPrecondition) and
// stays usable.
TYPED_TEST(ViewConformance, DestroyingAViewInUseIsFailedPrecondition) {
  auto& d = this->driver();
  auto view = d.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(view.ok()) << view.status();
  ASSERT_TRUE(d.SwitchToView(*view).ok());
  EXPECT_EQ(d.DestroyView(*view).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(d.SetMemoryAccess(this->adapter_->writable_gfn(), *view, MemoryAccess::R()).ok());
  ASSERT_TRUE(d.SwitchToView(kDefaultView).ok());
  EXPECT_TRUE(d.DestroyView(*view).ok());
}

TYPED_TEST(ViewConformance, RemapOfABadGfnIsNotFound) {
  auto& d = this->driver();
  auto view = d.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(view.ok()) << view.status();
  const Gfn gfn = this->adapter_->writable_gfn();
  EXPECT_EQ(d.ChangeViewGfn(*view, gfn, this->beyond_max()).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(d.ChangeViewGfn(*view, this->beyond_max(), gfn).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(d.DestroyView(*view).ok());
}

// ---- VmiEventControl (with a guest that runs known code) ----

// A breakpoint at `va` the driver can raise: a debug-stub breakpoint where
// the driver has one, else an INT3 written into guest code.
template <typename D>
class Breakpoint {
 public:
  static absl::StatusOr<Breakpoint> Arm(D& d, Va va) {
    Breakpoint b(d, va);
    absl::Status stub = d.MonitorEnable(amd64::MonitorBreakpoint{va});
    if (stub.ok()) {
      b.stub_ = true;
      return b;
    }
    if (!absl::IsUnimplemented(stub)) return stub;
    if constexpr (VmiWrite<D>) {
      VMI_ASSIGN_OR_RETURN(const amd64::Registers regs, d.Registers(VcpuId(0)));
      PageReader<D> reader(d);
      const FaultOr<PageTranslation> t = Amd64::Translate(
          reader, AddressContext(va, Amd64::TranslationRoot(regs)), Amd64::PagingModeOf(regs));
      if (!t.ok()) return t.status();
      b.gfn_ = Gfn(t->pa.value() >> 12);
      b.offset_ = t->pa.value() & 0xfff;
      VMI_ASSIGN_OR_RETURN(MappedPage page, d.ReadPage(b.gfn_));
      b.original_ = page.data()[b.offset_];
      const uint8_t int3 = 0xcc;
      VMI_RETURN_IF_ERROR(d.WritePage(b.gfn_, b.offset_, absl::MakeConstSpan(&int3, 1)).status());
      VMI_RETURN_IF_ERROR(d.MonitorEnable(amd64::MonitorInterrupt{3}));
      return b;
    }
    return stub;
  }
  // True for the event this breakpoint raises.
  bool Hit(const VmiEvent<Amd64>& e) const {
    if (e.registers.rip != va_.value()) return false;
    if (const auto* i = std::get_if<amd64::InterruptEvent>(&e.reason)) return i->interrupt.vector == 3;
    return std::holds_alternative<amd64::DebugBreakpointEvent>(e.reason);
  }
  // Takes the INT3 out again (the stub's breakpoint goes with ResetState).
  absl::Status Remove() {
    if (stub_) return d_->MonitorDisable(amd64::MonitorBreakpoint{va_});
    if constexpr (VmiWrite<D>) {
      return d_->WritePage(gfn_, offset_, absl::MakeConstSpan(&original_, 1)).status();
    }
    return absl::OkStatus();
  }

 private:
  Breakpoint(D& d, Va va) : d_(&d), va_(va) {}
  D* d_;
  Va va_;
  bool stub_ = false;
  Gfn gfn_;
  uint64_t offset_ = 0;
  uint8_t original_ = 0;
};

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
  auto bp = Breakpoint<typename TypeParam::Driver>::Arm(d, *this->target_);
  ASSERT_TRUE(bp.ok()) << bp.status();
  EXPECT_EQ(d.EventProcessingOverhead(), absl::ZeroDuration());  // no event yet
  int seen = 0;
  absl::Status s = d.WaitForEvent(this->adapter_->quiet_wait(), [&](const VmiEvent<Amd64>& e) {
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
    EXPECT_TRUE(bp->Remove().ok());
    return VmiEventResponse<Amd64>::Continue();
  });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(seen, 1);
  EXPECT_EQ(d.EventsPending(), 0u);
  ASSERT_TRUE(d.ResetState().ok());
}

// INT3 and single-step events carry the guest frame of RIP
// (instruction_gfn), so a tool recognises its breakpoints without walking the
// guest's tables. Every driver with INT3 events reports it (QEMU, whose
// breakpoints and steps come from its debug stub, documents in qemu_driver.h
// why its SingleStepEvent has none); the expected frame is the suite's own
// walk of RIP through the driver's pages.
TYPED_TEST(EventConformance, Int3AndSingleStepEventsCarryTheGuestFrameOfRip) {
  auto& d = this->driver();
  auto bp = Breakpoint<typename TypeParam::Driver>::Arm(d, *this->target_);
  ASSERT_TRUE(bp.ok()) << bp.status();
  ASSERT_TRUE(d.MonitorEnable(amd64::MonitorSingleStep{}).ok());
  std::vector<std::string> seen, want;
  std::optional<VcpuId> stepping;
  auto record = [&](const VmiEvent<Amd64>& e) {
    const char* kind = std::holds_alternative<amd64::SingleStepEvent>(e.reason) ? "step"
                       : bp->Hit(e)                                             ? "int3"
                                                                                : "other";
    seen.push_back(absl::StrFormat("%s gfn=%s", kind, InstructionGfnOf(e)));
    const std::optional<Gfn> walked = WalkedFrameOfRip(d, e.registers);
    want.push_back(absl::StrFormat("%s gfn=%s", kind, walked ? walked->ToString() : "none"));
    if (!stepping) {
      // The INT3: put the byte back and step the original code.
      stepping = e.vcpu;
      EXPECT_TRUE(bp->Remove().ok());
      return VmiEventResponse<Amd64>::ToggleSingleStep();
    }
    EXPECT_EQ(e.vcpu, *stepping);
    return seen.size() == 4 ? VmiEventResponse<Amd64>::ToggleSingleStep()
                            : VmiEventResponse<Amd64>::Continue();
  };
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(d.WaitForEvent(this->adapter_->quiet_wait(), record).ok());
  }
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_THAT(seen[0], ::testing::StartsWith("int3 "));
  for (int i = 1; i < 4; ++i) EXPECT_THAT(seen[i], ::testing::StartsWith("step "));
  EXPECT_EQ(seen, want);
  for (const std::string& w : want) EXPECT_THAT(w, ::testing::Not(HasSubstr("none")));
  ASSERT_TRUE(d.ResetState().ok());
}

// Contract: EventProcessingOverhead is a running total: zero before the
// first event, then never decreasing.
TYPED_TEST(EventConformance, EventProcessingOverheadIsARunningTotal) {
  auto& d = this->driver();
  EXPECT_EQ(d.EventProcessingOverhead(), absl::ZeroDuration());
  auto bp = Breakpoint<typename TypeParam::Driver>::Arm(d, *this->target_);
  ASSERT_TRUE(bp.ok()) << bp.status();
  absl::Duration last = absl::ZeroDuration();
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(d.WaitForEvent(this->adapter_->quiet_wait(), [](const VmiEvent<Amd64>&) {
                   return VmiEventResponse<Amd64>::Continue();  // the INT3 fires again
                 }).ok());
    const absl::Duration now = d.EventProcessingOverhead();
    EXPECT_GT(now, absl::ZeroDuration());
    EXPECT_GE(now, last);
    last = now;
  }
  ASSERT_TRUE(bp->Remove().ok());
  ASSERT_TRUE(d.ResetState().ok());
}

// Contract: a response the driver cannot carry out is InvalidArgument, and
// the vCPU was resumed as with Continue (here: it re-executes the INT3 and
// raises the same event again).
TYPED_TEST(EventConformance, AnImpossibleResponseIsInvalidArgumentAndTheVcpuGoesOn) {
  auto& d = this->driver();
  auto bp = Breakpoint<typename TypeParam::Driver>::Arm(d, *this->target_);
  ASSERT_TRUE(bp.ok()) << bp.status();
  std::vector<std::string> seen;
  auto record = [&](const VmiEvent<Amd64>& e) {
    seen.push_back(absl::StrFormat("rip=%s", Va(e.registers.rip)));
    return seen.size() == 1 ? VmiEventResponse<Amd64>::Deny()  // no deny for a breakpoint
                            : VmiEventResponse<Amd64>::Continue();
  };
  const absl::Status denied = d.WaitForEvent(this->adapter_->quiet_wait(), record);
  EXPECT_EQ(denied.code(), absl::StatusCode::kInvalidArgument) << denied;
  ASSERT_TRUE(d.WaitForEvent(this->adapter_->quiet_wait(), record).ok());
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0], seen[1]);
  ASSERT_TRUE(bp->Remove().ok());
  ASSERT_TRUE(d.ResetState().ok());
}

// Contract: enabling an enabled monitor and disabling one that is not
// enabled are OK; a monitor the driver cannot arm on this host is
// Unimplemented (and disabling it is OK).
TYPED_TEST(EventConformance, MonitorsAreIdempotentAndMissingOnesUnimplemented) {
  auto& d = this->driver();
  const amd64::EventMonitor cr3{amd64::MonitorControlRegister{amd64::ControlRegister::kCr3}};
  ASSERT_TRUE(d.MonitorDisable(cr3).ok());
  ASSERT_TRUE(d.MonitorEnable(cr3).ok());
  ASSERT_TRUE(d.MonitorEnable(cr3).ok());
  ASSERT_TRUE(d.MonitorDisable(cr3).ok());
  ASSERT_TRUE(d.MonitorDisable(cr3).ok());
  int refused = 0;
  for (const amd64::EventMonitor& m : std::vector<amd64::EventMonitor>{
           amd64::MonitorBreakpoint{*this->target_},
           amd64::MonitorWatchpoint{*this->target_, 8, MemoryAccess::W()},
           amd64::MonitorInterrupt{0x41}, amd64::MonitorIo{},
           amd64::MonitorControlRegister{amd64::ControlRegister::kXcr0}}) {
    const absl::Status s = d.MonitorEnable(m);
    if (!s.ok()) {
      EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented) << amd64::EventMonitorToString(m) << s;
      ++refused;
    }
    EXPECT_TRUE(d.MonitorDisable(m).ok()) << amd64::EventMonitorToString(m);
  }
  EXPECT_GT(refused, 0) << "no candidate monitor is missing: add one this driver lacks";
  ASSERT_TRUE(d.ResetState().ok());
}

// The hidden-breakpoint technique: in a new view the code frame is remapped
// to a shadow copy carrying an INT3. Only a vCPU in that view hits it (it
// executes the remapped frame); the host view, and ReadPage, keep the
// original code.
TYPED_TEST(EventConformance, RemappedFrameIsSeenInItsViewOnly) {
  auto& d = this->driver();
  const amd64::Registers regs = *d.Registers(VcpuId(0));
  PageReader<typename TypeParam::Driver> reader(d);
  auto t = Amd64::Translate(reader, AddressContext(*this->target_, Amd64::TranslationRoot(regs)),
                            Amd64::PagingModeOf(regs));
  ASSERT_TRUE(t.ok()) << t.status();
  const Gfn code(t->pa.value() >> 12);
  const uint64_t offset = t->pa.value() & 0xfff;
  auto shadow = d.AllocateGfn();
  ASSERT_TRUE(shadow.ok()) << shadow.status();
  std::vector<uint8_t> copy = this->PageBytes(code);
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
  for (int i = 0;
       i < 16 &&
       (s = d.WaitForEvent(this->adapter_->quiet_wait(),
                           [&](const VmiEvent<Amd64>& e) {
                             seen.push_back(absl::StrFormat("vcpu=%s view=%s rip=%s gfn=%s", e.vcpu,
                                                            e.view, Va(e.registers.rip),
                                                            InstructionGfnOf(e)));
                             return VmiEventResponse<Amd64>::Continue().WithView(kDefaultView);
                           }))
           .ok();
       ++i) {
  }
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  const uint16_t vcpus = d.Info()->vcpus;
  std::vector<std::string> want;
  for (uint16_t v = 0; v < vcpus; ++v) {
    // The guest's frame, not the shadow the view maps in its place.
    want.push_back(
        absl::StrFormat("vcpu=%u view=%s rip=%s gfn=%s", v, *view, *this->target_, code));
  }
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, want);
  EXPECT_EQ(this->PageBytes(code)[offset], original);  // the host view never saw the INT3
  ASSERT_TRUE(d.ResetState().ok());
  EXPECT_TRUE(d.FreeGfn(*shadow).ok());
}

// Contract: an injected interrupt is delivered through the guest's IDT: the
// vCPU arrives at the gate's handler.
TYPED_TEST(EventConformance, InjectedInterruptArrivesAtItsHandler) {
  auto& d = this->driver();
  std::optional<InjectionProbe> probe = this->adapter_->injection();
  if (!probe) GTEST_SKIP() << TypeParam::Name() << " knows no IDT gate to inject through";
  auto bp = Breakpoint<typename TypeParam::Driver>::Arm(d, probe->handler);
  ASSERT_TRUE(bp.ok()) << bp.status();
  ASSERT_TRUE(d.InjectInterrupt(VcpuId(0), probe->interrupt).ok());
  std::optional<VmiEvent<Amd64>> hit;
  for (int i = 0; i < 8 && !hit; ++i) {
    ASSERT_TRUE(d.WaitForEvent(this->adapter_->quiet_wait(), [&](const VmiEvent<Amd64>& e) {
                   if (bp->Hit(e)) hit = e;
                   return VmiEventResponse<Amd64>::Continue();
                 }).ok());
  }
  ASSERT_TRUE(hit.has_value());
  if (!probe->broadcast) EXPECT_EQ(hit->vcpu, VcpuId(0));
  EXPECT_EQ(hit->registers.rip, probe->handler.value());
  ASSERT_TRUE(bp->Remove().ok());
  ASSERT_TRUE(d.ResetState().ok());
}

// ---- VmiEventControl + VmiVmControl: a paused VM ----

template <typename A>
class PauseConformance : public Conformance<A> {};
using PauseAdapters = FilterAdapters<HasPauseAndEvents, VMI_CONFORMANCE_ADAPTERS>;
TYPED_TEST_SUITE(PauseConformance, PauseAdapters, AdapterName);

// Contract: a paused VM executes nothing and raises no events (the wait ends
// with DeadlineExceeded); pauses nest.
TYPED_TEST(PauseConformance, PausedVmRaisesNoEventsAndDoesNotRun) {
  auto& d = this->driver();
  ASSERT_TRUE(d.MonitorEnable(amd64::MonitorSingleStep{}).ok());
  const uint16_t vcpus = d.Info()->vcpus;
  std::vector<uint64_t> before;
  for (uint16_t v = 0; v < vcpus; ++v) before.push_back(d.Registers(VcpuId(v))->rip);
  ASSERT_TRUE(d.Pause().ok());
  ASSERT_TRUE(d.Pause().ok());
  ASSERT_TRUE(d.Resume().ok());  // still paused: one Pause outstanding
  int events = 0;
  absl::Status paused = d.WaitForEvent(absl::Milliseconds(10), [&](const VmiEvent<Amd64>&) {
    ++events;
    return VmiEventResponse<Amd64>::Continue();
  });
  EXPECT_EQ(paused.code(), absl::StatusCode::kDeadlineExceeded) << paused;
  EXPECT_EQ(events, 0);
  for (uint16_t v = 0; v < vcpus; ++v) {
    EXPECT_EQ(d.Registers(VcpuId(v))->rip, before[v]) << "vcpu " << v << " ran while paused";
  }
  ASSERT_TRUE(d.Resume().ok());
  ASSERT_TRUE(d.ResetState().ok());
}

// ---- VmiVmControl ----

template <typename A>
class VmControlConformance : public Conformance<A> {};
using VmControlAdapters = FilterAdapters<HasVmControl, VMI_CONFORMANCE_ADAPTERS>;
TYPED_TEST_SUITE(VmControlConformance, VmControlAdapters, AdapterName);

// Contract: frames come and go (a freed frame is a bad GFN, NotFound, also
// for a second free); populating a populated frame is AlreadyExists; a
// driver over fixed RAM says Unimplemented for all three.
TYPED_TEST(VmControlConformance, GfnAllocationAndFree) {
  auto& d = this->driver();
  const Gfn max = d.Info()->max_gfn;
  auto gfn = d.AllocateGfn();
  if (absl::IsUnimplemented(gfn.status())) {
    EXPECT_EQ(d.AllocateGfnAt(this->adapter_->known_gfn()).code(), absl::StatusCode::kUnimplemented);
    EXPECT_EQ(d.FreeGfn(this->adapter_->known_gfn()).code(), absl::StatusCode::kUnimplemented);
    EXPECT_TRUE(d.ReadPage(this->adapter_->known_gfn()).ok());
    return;
  }
  ASSERT_TRUE(gfn.ok()) << gfn.status();
  EXPECT_GT(*gfn, max);
  EXPECT_GE(d.Info()->max_gfn, *gfn);
  EXPECT_TRUE(d.ReadPage(*gfn).ok());
  EXPECT_EQ(d.AllocateGfnAt(*gfn).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(d.AllocateGfnAt(this->adapter_->known_gfn()).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(this->PageBytes(this->adapter_->known_gfn()), this->adapter_->known_bytes());
  ASSERT_TRUE(d.FreeGfn(*gfn).ok());
  EXPECT_EQ(d.ReadPage(*gfn).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(d.FreeGfn(*gfn).code(), absl::StatusCode::kNotFound);
}

// Contract: Resume without Pause is FailedPrecondition and unpauses nothing.
TYPED_TEST(VmControlConformance, ResumeWithoutPauseIsFailedPrecondition) {
  auto& d = this->driver();
  this->adapter_->Release();  // a live guest held paused runs from here
  ASSERT_TRUE(d.Pause().ok());
  ASSERT_TRUE(d.Resume().ok());
  EXPECT_EQ(d.Resume().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(d.Pause().ok());  // the nesting count was not disturbed
  ASSERT_TRUE(d.Resume().ok());
  EXPECT_EQ(d.Resume().code(), absl::StatusCode::kFailedPrecondition);
  this->adapter_->Hold();
}

// Contract: injection into an unknown vCPU is OutOfRange; an interrupt the
// driver cannot inject is Unimplemented.
TYPED_TEST(VmControlConformance, InjectionIntoAnUnknownVcpuIsOutOfRange) {
  auto& d = this->driver();
  const uint16_t vcpus = d.Info()->vcpus;
  EXPECT_EQ(d.InjectInterrupt(VcpuId(vcpus), amd64::Interrupt::Nmi()).code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(d.InjectInterrupt(VcpuId(99), amd64::Interrupt::Breakpoint(1)).code(),
            absl::StatusCode::kOutOfRange);
  const absl::Status external = d.InjectInterrupt(VcpuId(0), amd64::Interrupt::External(0x40));
  EXPECT_TRUE(external.ok() || absl::IsUnimplemented(external)) << external;
}

template <typename A>
class ResetConformance : public Conformance<A> {};
using ResetAdapters = FilterAdapters<HasEvents, VMI_CONFORMANCE_ADAPTERS>;
TYPED_TEST_SUITE(ResetConformance, ResetAdapters, AdapterName);

// Contract: ResetState leaves every monitor off, every vCPU in the default
// view, no view but the default and the default view's permissions as found.
TYPED_TEST(ResetConformance, ResetStateLeavesNothingBehind) {
  auto& d = this->driver();
  const Gfn gfn = this->adapter_->writable_gfn();
  ASSERT_TRUE(d.SetMemoryAccess(gfn, kDefaultView, MemoryAccess::R()).ok());
  ASSERT_TRUE(d.MonitorEnable(amd64::MonitorInterrupt{3}).ok());
  ASSERT_TRUE(d.MonitorEnable(amd64::MonitorSingleStep{}).ok());
  auto view = d.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(view.ok());
  ASSERT_TRUE(d.SwitchToView(*view).ok());
  ASSERT_TRUE(d.ResetState().ok());
  EXPECT_EQ(*d.GetMemoryAccess(gfn, kDefaultView), MemoryAccess::RWX());
  EXPECT_EQ(d.SwitchToView(*view).code(), absl::StatusCode::kInvalidArgument);
  // No monitor is left: an INT3 in the guest's loop raises nothing now (the
  // guest takes it through its own IDT; the case ends before that matters).
  if (std::optional<Va> target = this->adapter_->breakpoint_target()) {
    auto bp = Breakpoint<typename TypeParam::Driver>::Arm(d, *target);
    ASSERT_TRUE(bp.ok()) << bp.status();
    ASSERT_TRUE(d.ResetState().ok());
    int events = 0;
    const absl::Status s = d.WaitForEvent(this->adapter_->quiet_wait(), [&](const VmiEvent<Amd64>&) {
      ++events;
      return VmiEventResponse<Amd64>::Continue();
    });
    EXPECT_EQ(events, 0);
    EXPECT_FALSE(s.ok());
  }
}

// ---- Translation through VmiCore: the fault keeps its code and payload ----

template <typename A>
class TranslationConformance : public Conformance<A> {};
using TranslationAdapters = FilterAdapters<HasTranslation, VMI_CONFORMANCE_ADAPTERS>;
TYPED_TEST_SUITE(TranslationConformance, TranslationAdapters, AdapterName);

// The contract's note: a translation fault is NotFound with its
// AddressContext attached, which tells it apart from a driver's bad GFN.
TYPED_TEST(TranslationConformance, TranslationFaultIsNotFoundAndTyped) {
  auto& d = this->driver();
  auto regs = d.Registers(VcpuId(0));
  ASSERT_TRUE(regs.ok()) << regs.status();
  PageReader<typename TypeParam::Driver> reader(d);
  const AddressContext ctx(Va(0x1000), Amd64::TranslationRoot(*regs));  // page 1: never mapped
  const absl::Status fault = Amd64::Translate(reader, ctx, Amd64::PagingModeOf(*regs)).status();
  EXPECT_EQ(fault.code(), absl::StatusCode::kNotFound) << fault;
  ASSERT_TRUE(IsTranslationFault(fault)) << fault;
  EXPECT_EQ(GetTranslationFault(fault)->va, Va(0x1000));
  const absl::Status bad_gfn = d.ReadPage(this->beyond_max()).status();
  EXPECT_EQ(bad_gfn.code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(IsTranslationFault(bad_gfn));
}

}  // namespace
}  // namespace vmi::conformance
