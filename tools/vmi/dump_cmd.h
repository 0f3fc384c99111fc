// `vmi dump <out> [--format raw|lime|elf|xen]`: the target's physical memory
// (and vCPU state where the format keeps it) to a file. Written to
// "<out>.partial" and renamed at the end, so <out> is either complete or
// absent. A progress bar (bytes, rate, ETA) is drawn on a terminal only.
//
// Thread-safety: single-threaded.

#ifndef VMI_TOOLS_VMI_DUMP_CMD_H_
#define VMI_TOOLS_VMI_DUMP_CMD_H_

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/vmi_core.h"
#include "drivers/dump/dump_format.h"
#include "drivers/dump/dump_source.h"
#include "drivers/dump/dump_writer.h"
#include "tools/vmi/commands.h"
#include "tools/vmi/format.h"

namespace vmi::cli {

template <VmiRead D>
int CmdDump(VmiCore<D>& core, const std::string& out_path, dump::DumpFormat format, const Io& io) {
  if (format == dump::DumpFormat::kAuto) format = dump::DumpFormat::kElfCore;
  absl::StatusOr<VmiInfo> info = core.Info();
  if (!info.ok()) return Fail(io, "dump", info.status());

  absl::StatusOr<dump::DumpSource> prepared = dump::DumpSourceFor(core.driver());
  if (!prepared.ok()) return Fail(io, absl::StrFormat("dump %s", out_path), prepared.status());
  dump::DumpSource source = *std::move(prepared);
  uint64_t total = 0;
  for (const auto& r : source.ranges) total += r.count * info->page_size;

  // Pages come straight from the driver (a full dump would only churn the
  // page cache); the progress bar counts them.
  ProgressBar progress(total, !io.json);
  uint64_t done = 0;
  source.read_page = [&, read = std::move(source.read_page)](Gfn gfn, absl::Span<uint8_t> page) {
    VMI_RETURN_IF_ERROR(read(gfn, page));
    done += page.size();
    progress.Update(done);
    return absl::OkStatus();
  };

  const std::string partial = out_path + ".partial";
  const absl::Time start = absl::Now();
  absl::Status s = dump::WriteDump(partial, format, source);
  progress.Finish();
  if (!s.ok()) {
    std::remove(partial.c_str());
    return Fail(io, absl::StrFormat("dump %s", out_path), s);
  }
  if (std::rename(partial.c_str(), out_path.c_str()) != 0) {
    const int err = errno;
    std::remove(partial.c_str());
    return Fail(io, absl::StrFormat("dump %s", out_path), ErrnoError("rename", err));
  }
  const double secs = absl::ToDoubleSeconds(absl::Now() - start);
  nlohmann::json j = {{"path", out_path},
                      {"format", dump::DumpFormatName(format)},
                      {"bytes", total},
                      {"vcpus", source.vcpus.size()},
                      {"seconds", secs}};
  Emit(io, j,
       absl::StrFormat("wrote %s (%s, %s of memory, %u vCPU states) in %.2fs\n", out_path,
                       dump::DumpFormatName(format), HumanBytes(total), source.vcpus.size(), secs));
  return kExitOk;
}

}  // namespace vmi::cli

#endif  // VMI_TOOLS_VMI_DUMP_CMD_H_
