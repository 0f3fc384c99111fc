// `vmi demo`: the guided tour on the embedded simulated guest.
//
// Thread-safety: single-threaded.

#ifndef VMI_TOOLS_VMI_DEMO_H_
#define VMI_TOOLS_VMI_DEMO_H_

#include <string>

#include "absl/status/status.h"
#include "core/vmi_core.h"
#include "tools/vmi/commands.h"

namespace vmi::cli {

template <VmiDriver D>
int CmdDemo(VmiCore<D>&, const std::string& driver_name, const Io& io) {
  return Fail(io, "demo",
              absl::FailedPreconditionError(
                  "the demo runs on the embedded simulated guest (--target sim), not on " +
                  driver_name),
              kExitUnsupported);
}

}  // namespace vmi::cli

#endif  // VMI_TOOLS_VMI_DEMO_H_
