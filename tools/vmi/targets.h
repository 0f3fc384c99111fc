// Opening a --target: one VmiCore instantiation per driver, chosen here at
// the top; the callback (the subcommands) is a template instantiated for
// each.
//
// Thread-safety: single-threaded.

#ifndef VMI_TOOLS_VMI_TARGETS_H_
#define VMI_TOOLS_VMI_TARGETS_H_

#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "core/vmi_core.h"
#include "drivers/dump/dump_driver.h"
#include "drivers/xen/xen_driver.h"
#include "tools/vmi/commands.h"

namespace vmi::cli {

template <typename F>
int WithTarget(const std::string& spec, const Io& io, F&& run) {
  if (absl::StartsWith(spec, "dump:")) {
    const std::string path = spec.substr(5);
    absl::StatusOr<dump::DumpDriver> driver = dump::DumpDriver::Open(path);
    if (!driver.ok()) return Fail(io, absl::StrFormat("open dump %s", path), driver.status(), kExitTarget);
    const std::string name = "dump (" + dump::DumpFormatName(driver->format()) + ")";
    VmiCore<dump::DumpDriver> core(*std::move(driver));
    return run(core, name);
  }
  if (absl::StartsWith(spec, "xen:")) {
    const std::string domain = spec.substr(4);
    absl::StatusOr<xen::XenDriver> driver = xen::XenDriver::Open(domain);
    if (!driver.ok()) return Fail(io, absl::StrFormat("open xen domain %s", domain), driver.status(), kExitTarget);
    VmiCore<xen::XenDriver> core(*std::move(driver));
    return run(core, "xen:" + domain);
  }
  return Fail(io, "--target",
              absl::InvalidArgumentError(absl::StrFormat(
                  "unknown target '%s': expected sim, sim:<program>, dump:<file> or xen:<domid|name>",
                  spec)),
              kExitUsage);
}

}  // namespace vmi::cli

#endif  // VMI_TOOLS_VMI_TARGETS_H_
