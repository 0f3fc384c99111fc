// Opening a --target: one VmiCore instantiation per driver, chosen here at
// the top; the callback (the subcommands) is a template instantiated for
// each.
//
// Thread-safety: single-threaded.

#ifndef VMI_TOOLS_VMI_TARGETS_H_
#define VMI_TOOLS_VMI_TARGETS_H_

#include <cstdlib>
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
#include "sim/demo_guest.h"

namespace vmi::cli {

// A path given on the command line, as the user meant it: under `bazel run`
// the tool runs inside its runfiles tree, and Bazel names the directory the
// user ran it from in BUILD_WORKING_DIRECTORY; relative paths are resolved
// against that (absolute ones, and runs outside Bazel, are left alone).
inline std::string UserPath(const std::string& path) {
  if (path.empty() || path[0] == '/') return path;
  const char* dir = std::getenv("BUILD_WORKING_DIRECTORY");
  if (dir == nullptr || *dir == '\0') return path;
  return std::string(dir) + "/" + path;
}

template <typename F>
int WithTarget(const std::string& spec, const Io& io, F&& run) {
  if (spec == "sim") {
    absl::StatusOr<sim::DemoGuest> guest = sim::BuildDemoGuest();
    if (!guest.ok()) return Fail(io, "boot the demo guest", guest.status(), kExitTarget);
    absl::StatusOr<sim::SimDriver> driver = sim::SimDriver::Create(std::move(guest->machine));
    if (!driver.ok()) return Fail(io, "boot the demo guest", driver.status(), kExitTarget);
    VmiCore<sim::SimDriver> core(*std::move(driver));
    TargetInfo info{"sim (demo guest)", guest->layout};
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
    const std::string path = UserPath(spec.substr(5));
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
    target->gdb_socket = UserPath(target->gdb_socket);
    target->ram_file = UserPath(target->ram_file);
    target->qmp_socket = UserPath(target->qmp_socket);
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
