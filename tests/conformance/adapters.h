// Fixture adapters for the driver conformance suite. An adapter prepares a
// known guest state for one driver and says what the suite may expect:
//
//   using Driver = ...;
//   static const char* Name();
//   static std::optional<std::string> SkipReason();   // set: every case skips with it
//   static absl::StatusOr<std::unique_ptr<Adapter>> Make();
//   Driver& driver();
//   Gfn known_gfn();                     // a page whose bytes are known_bytes()
//   std::vector<uint8_t> known_bytes();
//   Gfn writable_gfn();                  // (VmiWrite) a page tests may scribble on
//   amd64::Registers known_registers(VcpuId);   // (VmiQueryRegisters)
//
// A driver gains conformance cases by gaining a capability: the suite picks
// the cases from the concepts its Driver satisfies.
//
// Thread-safety: test-only; single-threaded.

#ifndef VMI_TESTS_CONFORMANCE_ADAPTERS_H_
#define VMI_TESTS_CONFORMANCE_ADAPTERS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "arch/amd64/amd64.h"
#include "arch/amd64/testing/page_store.h"
#include "arch/amd64/testing/store_driver.h"
#include "core/types.h"

namespace vmi::conformance {

// The in-memory page store driver (VmiRead + VmiWrite): the suite's own
// reference, and the template for real adapters.
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

}  // namespace vmi::conformance

#endif  // VMI_TESTS_CONFORMANCE_ADAPTERS_H_
