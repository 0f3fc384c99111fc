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
#include "drivers/qemu/qemu_driver.h"
#include "drivers/sim/sim_driver.h"
#include "drivers/xen/xen_driver.h"
#include "tools/vmi/commands.h"
#include "tools/vmi/demo.h"
#include "tools/vmi/demo_guest.h"

namespace vmi::cli {

template <typename F>
int WithTarget(const std::string& spec, const Io& io, F&& run) {
  if (spec == "sim") {
    absl::StatusOr<DemoGuest> guest = BootDemoGuest();
    if (!guest.ok()) return Fail(io, "boot the demo guest", guest.status(), kExitTarget);
    VmiCore<sim::SimDriver> core(std::move(guest->driver));
    TargetInfo info{"sim (demo guest)", std::move(*guest)};
    return run(core, info);
  }
  if (absl::StartsWith(spec, "sim:")) {
    const std::string program = spec.substr(4);
    absl::StatusOr<sim::SimDriver> driver = sim::SimDriver::Boot(program);
    if (!driver.ok()) {
      std::string known;
      for (const auto& p : sim::AllPrograms()) known += std::string(known.empty() ? "" : ", ") + p.name;
      return Fail(io, absl::StrFormat("boot sim program %s (known: %s)", program, known),
                  driver.status(), kExitTarget);
    }
    VmiCore<sim::SimDriver> core(*std::move(driver));
    return run(core, TargetInfo{"sim:" + program, std::nullopt});
  }
  if (absl::StartsWith(spec, "dump:")) {
    const std::string path = spec.substr(5);
    absl::StatusOr<dump::DumpDriver> driver = dump::DumpDriver::Open(path);
    if (!driver.ok()) return Fail(io, absl::StrFormat("open dump %s", path), driver.status(), kExitTarget);
    const std::string name = "dump (" + dump::DumpFormatName(driver->format()) + ")";
    VmiCore<dump::DumpDriver> core(*std::move(driver));
    return run(core, TargetInfo{name, std::nullopt});
  }
  if (absl::StartsWith(spec, "xen:")) {
    const std::string domain = spec.substr(4);
    absl::StatusOr<xen::XenDriver> driver = xen::XenDriver::Open(domain);
    if (!driver.ok()) return Fail(io, absl::StrFormat("open xen domain %s", domain), driver.status(), kExitTarget);
    VmiCore<xen::XenDriver> core(*std::move(driver));
    return run(core, TargetInfo{"xen:" + domain, std::nullopt});
  }
  if (absl::StartsWith(spec, "qemu:")) {
    absl::StatusOr<qemu::QemuTarget> target = qemu::QemuTarget::Parse(spec.substr(5));
    if (!target.ok()) return Fail(io, "--target", target.status(), kExitUsage);
    absl::StatusOr<qemu::QemuDriver> driver = qemu::QemuDriver::Open(*target);
    if (!driver.ok()) return Fail(io, absl::StrFormat("open %s", spec), driver.status(), kExitTarget);
    VmiCore<qemu::QemuDriver> core(*std::move(driver));
    return run(core, TargetInfo{spec, std::nullopt});
  }
  return Fail(io, "--target",
              absl::InvalidArgumentError(absl::StrFormat(
                  "unknown target '%s': expected sim, sim:<program>, dump:<file>, xen:<domid|name> or "
                  "qemu:<dir>|qemu:<gdb socket>,mem=<ram file>,qmp=<qmp socket>",
                  spec)),
              kExitUsage);
}

}  // namespace vmi::cli

#endif  // VMI_TOOLS_VMI_TARGETS_H_
