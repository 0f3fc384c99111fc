#include "drivers/sim/sim_dump.h"

#include "absl/strings/str_format.h"
#include "core/error.h"
#include "drivers/dump/dump_source.h"
#include "drivers/dump/dump_writer.h"

namespace vmi::sim {

absl::Status WriteMachineDump(SimDriver& driver, const std::string& path, dump::DumpFormat format) {
  VMI_ASSIGN_OR_RETURN(dump::DumpSource source, dump::DumpSourceFor(driver));
  return AnnotateStatus(
      dump::WriteDump(path, format, source),
      absl::StrFormat("write %s dump of the simulator to %s", dump::DumpFormatName(format), path));
}

}  // namespace vmi::sim
