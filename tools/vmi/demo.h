// `vmi demo`: the guided tour on the embedded simulated guest (sim/demo_guest.h):
// info, the walk of a kernel and a user address, a user string, a trace of
// breakpoint hits, watched writes and CR3 switches, and a summary with event
// counts and cache hit rates.
//
// Thread-safety: single-threaded.

#ifndef VMI_TOOLS_VMI_DEMO_H_
#define VMI_TOOLS_VMI_DEMO_H_

#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/vmi_core.h"
#include "drivers/sim/sim_driver.h"
#include "tools/vmi/commands.h"
#include "sim/demo_guest.h"
#include "utils/watch/watch.h"

namespace vmi::cli {

// What the target knows beyond its driver.
struct TargetInfo {
  std::string name;
  std::optional<sim::DemoLayout> demo;  // set for the default `--target sim`
};

// Runs a subcommand into a string (for the demo's JSON document).
template <typename F>
std::pair<int, std::string> Capture(bool json, F&& f) {
  std::ostringstream out, err;
  Io io{out, err, json};
  const int rc = f(io);
  return {rc, rc == kExitOk ? out.str() : err.str()};
}

template <VmiDriver D>
int CmdDemo(VmiCore<D>& core, const TargetInfo& target, const Io& io) {
  if constexpr (std::is_same_v<D, sim::SimDriver>) {
    if (target.demo) {
      const sim::DemoLayout& g = *target.demo;
      nlohmann::json doc;
      auto section = [&](const char* title, const char* key, auto&& cmd) -> bool {
        auto [rc, text] = Capture(io.json, cmd);
        if (rc != kExitOk) {
          io.err << "vmi: demo: " << title << ": " << text;
          return false;
        }
        if (io.json) {
          doc[key] = nlohmann::json::parse(text);
        } else {
          io.out << "== " << title << " ==\n" << text << "\n";
        }
        return true;
      };
      if (!io.json) io.out << "vmi demo: the embedded simulated x86-64 guest\n\n";
      const AddressSpace vcpu0{std::nullopt, 0};
      if (!section("info", "info", [&](const Io& o) { return CmdInfo(core, target.name, o); }) ||
          !section("translate a kernel address (tick)", "translate_kernel",
                   [&](const Io& o) { return CmdTranslate(core, g.tick.value(), vcpu0, o); }) ||
          !section("translate a user address", "translate_user",
                   [&](const Io& o) { return CmdTranslate(core, sim::DemoLayout::kUserVa, vcpu0, o); }) ||
          !section("read the user string", "read_user",
                   [&](const Io& o) {
                     return CmdRead(core, sim::DemoLayout::kUserVa, 64, false, vcpu0, ReadAs::kString, o);
                   })) {
        return kExitFailed;
      }
      watch::Options w;
      w.breakpoints = {g.tick.value()};
      w.write_watches = {g.counter.value()};
      w.cr3 = true;
      w.count = 30;
      w.duration = absl::Seconds(10);
      w.json = io.json;  // the lines go into the trace below, not to stdout
      core.page_cache().ResetStats();
      core.v2p_cache().ResetStats();
      const uint64_t before = core.driver().machine().instructions_scheduled();
      const absl::Time start = absl::Now();
      absl::StatusOr<watch::Summary> s = watch::Run(core, w);
      const double secs = absl::ToDoubleSeconds(absl::Now() - start);
      if (!s.ok()) return Fail(io, "demo: watch", s.status());
      const uint64_t instructions = core.driver().machine().instructions_scheduled() - before;
      absl::StatusOr<uint64_t> counter =
          core.ReadU64(AccessContext::Virtual(g.counter, Pa(g.cr3_a)));
      const CacheStats& pc = core.page_cache().stats();
      const CacheStats& v2p = core.v2p_cache().stats();
      if (io.json) {
        doc["trace"] = nlohmann::json::array();
        for (const auto& line : s->lines) doc["trace"].push_back(nlohmann::json::parse(line));
        doc["summary"] = {{"events", s->events},
                          {"breakpoint_hits", s->breakpoint_hits},
                          {"write_hits", s->write_hits},
                          {"cr3_writes", s->cr3_writes},
                          {"guest_counter", counter.value_or(0)},
                          {"guest_instructions", instructions},
                          {"page_cache_hit_rate", pc.HitRate()},
                          {"v2p_cache_hit_rate", v2p.HitRate()},
                          {"seconds", secs}};
        io.out << doc.dump(2) << "\n";
      } else {
        io.out << "== trace: breakpoint on tick, writes to counter, CR3 writes ==\n";
        for (const auto& line : s->lines) io.out << line << "\n";
        io.out << absl::StrFormat(
            "\n== summary ==\n"
            "events             %u (%u breakpoint hits, %u watched writes, %u CR3 writes)\n"
            "guest counter      %u (the watched writes really happened, by emulation)\n"
            "guest instructions %u in %.3f s\n"
            "page cache         %.1f%% hit rate (%u hits, %u misses)\n"
            "V2P cache          %.1f%% hit rate (%u hits, %u misses; flushed at every event)\n"
            "every breakpoint, permission and monitor has been removed again\n",
            s->events, s->breakpoint_hits, s->write_hits, s->cr3_writes, counter.value_or(0),
            instructions, secs, 100 * pc.HitRate(), pc.hits, pc.misses, 100 * v2p.HitRate(),
            v2p.hits, v2p.misses);
      }
      return kExitOk;
    }
  }
  return Fail(io, "demo",
              absl::FailedPreconditionError(
                  "the demo runs on the embedded simulated guest (--target sim), not on " +
                  target.name),
              kExitUnsupported);
}

}  // namespace vmi::cli

#endif  // VMI_TOOLS_VMI_DEMO_H_
