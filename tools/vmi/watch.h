// `vmi watch`: the watch library (utils/watch/watch.h) behind the command line:
// per-event lines on stdout, the summary on stderr, the CLI's exit codes.
//
// Thread-safety: single-threaded.

#ifndef VMI_TOOLS_VMI_WATCH_H_
#define VMI_TOOLS_VMI_WATCH_H_

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "core/vmi_core.h"
#include "tools/vmi/commands.h"
#include "utils/watch/watch.h"

namespace vmi::cli {

template <VmiDriver D>
int CmdWatch(VmiCore<D>& core, watch::Options options, const Io& io) {
  if (!options.HasEventSource()) {
    return Fail(io, "watch",
                absl::InvalidArgumentError(
                    "nothing to watch: give --break VA, --write VA or --cr3 (without one no event "
                    "can ever come)"),
                kExitUsage);
  }
  if constexpr (VmiFullDriver<D>) {
    options.out = &io.out;
    options.json = io.json;
    absl::StatusOr<watch::Summary> summary = watch::Run(core, options);
    if (!summary.ok()) return Fail(io, "watch", summary.status());
    if (!io.json) {
      io.err << absl::StrFormat("watch: %u events (%u breakpoint hits, %u writes, %u CR3 writes)\n",
                                summary->events, summary->breakpoint_hits, summary->write_hits,
                                summary->cr3_writes);
    }
    return kExitOk;
  } else {
    return Fail(io, "watch", absl::UnimplementedError("this target cannot monitor events (read-only)"),
                kExitUnsupported);
  }
}

}  // namespace vmi::cli

#endif  // VMI_TOOLS_VMI_WATCH_H_
