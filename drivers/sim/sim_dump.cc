#include "drivers/sim/sim_dump.h"

#include <cstring>

#include "absl/strings/str_format.h"
#include "core/error.h"
#include "drivers/dump/dump_writer.h"

namespace vmi::sim {

absl::Status WriteMachineDump(SimDriver& driver, const std::string& path, dump::DumpFormat format) {
  VMI_ASSIGN_OR_RETURN(VmiInfo info, driver.Info());
  dump::DumpSource source;
  // Every populated frame, as ranges (freed frames are holes).
  uint64_t start = 0;
  bool open = false;
  for (uint64_t g = 0; g <= info.max_gfn.value(); ++g) {
    const bool present = driver.ReadPage(Gfn(g)).ok();
    if (present && !open) {
      start = g;
      open = true;
    } else if (!present && open) {
      source.ranges.push_back({Gfn(start), g - start});
      open = false;
    }
  }
  if (open) source.ranges.push_back({Gfn(start), info.max_gfn.value() + 1 - start});
  source.read_page = [&driver](Gfn gfn, absl::Span<uint8_t> out) -> absl::Status {
    VMI_ASSIGN_OR_RETURN(MappedPage page, driver.ReadPage(gfn));
    std::memcpy(out.data(), page.data(), out.size());
    return absl::OkStatus();
  };
  for (uint16_t v = 0; v < info.vcpus; ++v) {
    VMI_ASSIGN_OR_RETURN(amd64::Registers regs, driver.Registers(VcpuId(v)));
    source.vcpus.push_back(regs);
  }
  return AnnotateStatus(dump::WriteDump(path, format, source),
                        absl::StrFormat("write %s dump of the simulator to %s",
                                        dump::DumpFormatName(format), path));
}

}  // namespace vmi::sim
