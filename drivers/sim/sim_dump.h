// Writes the simulated machine (all of its RAM and every vCPU's state) as a
// memory dump that DumpDriver reads: raw, LiME, QEMU-style ELF core or Xen
// dump-core (the formats keep the CPU state they have fields for).
//
// Thread-safety: as SimDriver (thread-compatible).

#ifndef VMI_DRIVERS_SIM_SIM_DUMP_H_
#define VMI_DRIVERS_SIM_SIM_DUMP_H_

#include <string>

#include "absl/status/status.h"
#include "drivers/dump/dump_format.h"
#include "drivers/sim/sim_driver.h"

namespace vmi::sim {

absl::Status WriteMachineDump(SimDriver& driver, const std::string& path, dump::DumpFormat format);

}  // namespace vmi::sim

#endif  // VMI_DRIVERS_SIM_SIM_DUMP_H_
