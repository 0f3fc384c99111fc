// Compile-time checks of the capability concepts with small test-only drivers,
// plus a run of the generic code paths they enable.

#include "core/driver.h"

#include <vector>

#include "absl/functional/function_ref.h"
#include "core/testing/test_arch.h"
#include "gtest/gtest.h"

namespace vmi {
namespace {

using testing::TestArch;

// A dump-like driver: reads pages and registers, nothing else.
class ReadOnlyDriver {
 public:
  using Architecture = TestArch;
  absl::StatusOr<VmiInfo> Info() const { return VmiInfo{4096, 12, Gfn(0), 1}; }
  absl::StatusOr<MappedPage> ReadPage(Gfn gfn) {
    if (gfn != Gfn(0)) return absl::NotFoundError("read_page: not present");
    return MappedPage::Live(gfn, page_.data(), page_.size());
  }
  absl::StatusOr<TestArch::Registers> Registers(VcpuId) { return TestArch::Registers{}; }

 private:
  std::vector<uint8_t> page_ = std::vector<uint8_t>(4096, 0x5a);
};

// Every capability, with the handler taken as absl::FunctionRef.
class FullDriver : public ReadOnlyDriver {
 public:
  using Architecture = TestArch;
  using Handler = absl::FunctionRef<VmiEventResponse<TestArch>(const VmiEvent<TestArch>&)>;

  absl::StatusOr<MappedPage> WritePage(Gfn, uint64_t, absl::Span<const uint8_t>) {
    return absl::UnavailableError("test");
  }
  absl::StatusOr<MemoryAccess> GetMemoryAccess(Gfn, View) { return MemoryAccess::RWX(); }
  absl::StatusOr<std::pair<MemoryAccess, MemoryAccessOptions>> GetMemoryAccessWithOptions(Gfn,
                                                                                           View) {
    return std::make_pair(MemoryAccess::RWX(), MemoryAccessOptions::None());
  }
  absl::Status SetMemoryAccess(Gfn, View, MemoryAccess) { return absl::OkStatus(); }
  absl::Status SetMemoryAccessWithOptions(Gfn, View, MemoryAccess, MemoryAccessOptions) {
    return absl::OkStatus();
  }
  absl::Status SetRegisters(VcpuId, const TestArch::Registers&) { return absl::OkStatus(); }
  absl::Status MonitorEnable(const TestArch::EventMonitor&) { return absl::OkStatus(); }
  absl::Status MonitorDisable(const TestArch::EventMonitor&) { return absl::OkStatus(); }
  size_t EventsPending() { return 1; }
  absl::Duration EventProcessingOverhead() { return absl::ZeroDuration(); }
  absl::Status WaitForEvent(absl::Duration, Handler handler) {
    VmiEvent<TestArch> event{};
    event.vcpu = VcpuId(1);
    last_response = handler(event);
    return absl::OkStatus();
  }
  View DefaultView() { return kDefaultView; }
  absl::StatusOr<View> CreateView(MemoryAccess) { return View(1); }
  absl::Status DestroyView(View) { return absl::OkStatus(); }
  absl::Status SwitchToView(View) { return absl::OkStatus(); }
  absl::Status ChangeViewGfn(View, Gfn, Gfn) { return absl::OkStatus(); }
  absl::Status ResetViewGfn(View, Gfn) { return absl::OkStatus(); }
  absl::Status Pause() { return absl::OkStatus(); }
  absl::Status Resume() { return absl::OkStatus(); }
  absl::StatusOr<Gfn> AllocateGfn() { return Gfn(1); }
  absl::Status AllocateGfnAt(Gfn) { return absl::OkStatus(); }
  absl::Status FreeGfn(Gfn) { return absl::OkStatus(); }
  absl::Status InjectInterrupt(VcpuId, const TestArch::Interrupt&) { return absl::OkStatus(); }
  absl::Status ResetState() { return absl::OkStatus(); }

  VmiEventResponse<TestArch> last_response;
};

// Reads pages but returns the wrong type: satisfies nothing beyond the base.
class WrongReadDriver {
 public:
  using Architecture = TestArch;
  absl::StatusOr<VmiInfo> Info() const { return VmiInfo{}; }
  std::vector<uint8_t> ReadPage(Gfn) { return {}; }
};

// No Architecture at all.
class NoArchDriver {
 public:
  absl::StatusOr<VmiInfo> Info() const { return VmiInfo{}; }
};

static_assert(VmiDriver<ReadOnlyDriver>);
static_assert(VmiRead<ReadOnlyDriver>);
static_assert(VmiQueryRegisters<ReadOnlyDriver>);
static_assert(!VmiWrite<ReadOnlyDriver>);
static_assert(!VmiMemory<ReadOnlyDriver>);
static_assert(!VmiReadAccess<ReadOnlyDriver>);  // no protection queries
static_assert(!VmiFullDriver<ReadOnlyDriver>);

static_assert(VmiMemory<FullDriver>);
static_assert(VmiProtection<FullDriver>);
static_assert(VmiRegisters<FullDriver>);
static_assert(VmiReadAccess<FullDriver>);
static_assert(VmiWriteAccess<FullDriver>);
static_assert(VmiEventControl<FullDriver>);
static_assert(VmiViewControl<FullDriver>);
static_assert(VmiVmControl<FullDriver>);
static_assert(VmiFullDriver<FullDriver>);

static_assert(VmiDriver<WrongReadDriver>);
static_assert(!VmiRead<WrongReadDriver>);
static_assert(!VmiDriver<NoArchDriver>);

// Generic code selected by capability, as VmiCore does with requires-clauses.
template <VmiDriver D>
std::string Describe(D&) {
  if constexpr (VmiFullDriver<D>) {
    return "full";
  } else if constexpr (VmiRead<D> && !VmiWrite<D>) {
    return "read-only";
  } else {
    return "other";
  }
}

TEST(DriverConceptsTest, CapabilitySelectsCodePath) {
  ReadOnlyDriver ro;
  FullDriver full;
  WrongReadDriver wrong;
  EXPECT_EQ(Describe(ro), "read-only");
  EXPECT_EQ(Describe(full), "full");
  EXPECT_EQ(Describe(wrong), "other");
}

template <VmiRead D>
absl::StatusOr<uint8_t> FirstByte(D& d, Gfn gfn) {
  VMI_ASSIGN_OR_RETURN(MappedPage page, d.ReadPage(gfn));
  return page.data()[0];
}

TEST(DriverConceptsTest, ReadThroughConcept) {
  ReadOnlyDriver ro;
  EXPECT_EQ(*FirstByte(ro, Gfn(0)), 0x5a);
  EXPECT_EQ(FirstByte(ro, Gfn(1)).status().code(), absl::StatusCode::kNotFound);
}

TEST(DriverConceptsTest, WaitForEventTakesAnyCallable) {
  FullDriver full;
  int calls = 0;
  ASSERT_TRUE(full.WaitForEvent(absl::Seconds(1), [&](const VmiEvent<TestArch>& e) {
                    ++calls;
                    EXPECT_EQ(e.vcpu, VcpuId(1));
                    return VmiEventResponse<TestArch>::FastSingleStep(View(2));
                  }).ok());
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(full.last_response.action, EventAction::kFastSingleStep);
  EXPECT_EQ(full.last_response.view, View(2));
}

TEST(EventResponseTest, Builders) {
  TestArch::GpRegisters regs{};
  regs.ip = 0x401000;
  auto r = VmiEventResponse<TestArch>::Deny().WithView(View(3)).WithRegisters(regs);
  EXPECT_EQ(r.action, EventAction::kDeny);
  EXPECT_EQ(r.view, View(3));
  ASSERT_TRUE(r.registers.has_value());
  EXPECT_EQ(r.registers->ip, 0x401000u);
  EXPECT_EQ(VmiEventResponse<TestArch>::Continue().action, EventAction::kContinue);
  EXPECT_FALSE(VmiEventResponse<TestArch>::Continue().view.has_value());
}

}  // namespace
}  // namespace vmi
