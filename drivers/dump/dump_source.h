// DumpSourceFor: the DumpSource (present frame ranges, a page reader, vCPU
// states) of any driver, for the writers in dump_writer.h. Used by the
// simulator's dump, the `vmi dump` command and the conformance suite.
//
// Frame ranges come from the driver's PresentRanges() when it has one (a
// dump), otherwise from probing every frame up to max_gfn with ReadPage, so
// that unpopulated frames become holes instead of failing the write.
//
// Thread-safety: as the driver; the source refers to `driver`, which must
// outlive it.

#ifndef VMI_DRIVERS_DUMP_DUMP_SOURCE_H_
#define VMI_DRIVERS_DUMP_DUMP_SOURCE_H_

#include <cstring>

#include "absl/status/statusor.h"
#include "arch/amd64/amd64.h"
#include "core/driver.h"
#include "core/error.h"
#include "drivers/dump/dump_writer.h"

namespace vmi::dump {

template <VmiRead D>
requires std::is_same_v<typename D::Architecture, Amd64> absl::StatusOr<DumpSource> DumpSourceFor(
    D& driver) {
  VMI_ASSIGN_OR_RETURN(const VmiInfo info, driver.Info());
  DumpSource source;
  if constexpr (requires { driver.PresentRanges(); }) {
    source.ranges = driver.PresentRanges();
  } else {
    uint64_t start = 0;
    bool open = false;
    for (uint64_t g = 0; g <= info.max_gfn.value() + 1; ++g) {
      const bool present = g <= info.max_gfn.value() && driver.ReadPage(Gfn(g)).ok();
      if (present && !open) start = g;
      if (!present && open) source.ranges.push_back({Gfn(start), g - start});
      open = present;
    }
  }
  source.read_page = [&driver](Gfn gfn, absl::Span<uint8_t> out) -> absl::Status {
    VMI_ASSIGN_OR_RETURN(MappedPage page, driver.ReadPage(gfn));
    std::memcpy(out.data(), page.data(), std::min(out.size(), page.size()));
    return absl::OkStatus();
  };
  if constexpr (VmiQueryRegisters<D>) {
    for (uint16_t v = 0; v < info.vcpus; ++v) {
      VMI_ASSIGN_OR_RETURN(amd64::Registers regs, driver.Registers(VcpuId(v)));
      source.vcpus.push_back(regs);
    }
  }
  return source;
}

}  // namespace vmi::dump

#endif  // VMI_DRIVERS_DUMP_DUMP_SOURCE_H_
