// Per-view Unicorn engines and code coherence: opening an engine over guest
// RAM, bringing it to a view's permissions and remaps (once, then only the
// entries that changed), dropping its translated code and TLB where they
// went stale, and the record of the code frames it translated, which tells
// whether another engine's guest writes changed them. Machine (machine.cc,
// engines.cc) coordinates the engines of its vCPUs through these.
//
// Why code frames are recorded: each engine has its own translated-code
// cache, and Unicorn invalidates translations only for writes made by the
// engine itself. A write by another engine (another vCPU, or the same vCPU in
// another view) to a frame this engine translated code from is found by
// comparing the recorded copy with RAM before this engine runs again.
//
// Thread-safety: thread-compatible.

#ifndef VMI_SIM_INTERNAL_ENGINES_H_
#define VMI_SIM_INTERNAL_ENGINES_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sim/internal/machine_state.h"
#include "sim/views.h"

namespace vmi::sim::sim_internal {

// Unicorn's default translation buffer is 1 GiB, which costs ~150 ms to set
// up per engine; guest programs here need far less.
inline constexpr uint32_t kTcgBufferSize = 32u << 20;

// An engine for `view` with guest RAM (`ram_size` bytes at `ram`) mapped RWX
// at guest-physical 0 and no hooks; `op` prefixes errors.
absl::StatusOr<std::unique_ptr<Engine>> OpenEngine(View view, uint8_t* ram, uint64_t ram_size,
                                                   const std::string& op);

// True when the engine keeps the frame writable and traps guest stores to
// it with its write hook: write denied, page-walk updates allowed.
bool WritesTrappedByHook(const ViewEntry& entry);
// The Unicorn permissions an engine gives a frame with this entry.
uint32_t EnginePerms(const ViewEntry& entry);

// Brings frame `gfn` of the engine to `want` (its backing frame and access).
// A remap or a lost execute right drops the engine's translated code
// (Unicorn checks execute only when it translates); any change drops its TLB.
absl::Status ApplyEntry(Engine& e, uint8_t* ram, Gfn gfn, ViewEntry want, const std::string& op);

// Brings the whole engine to its view's current table: the default access,
// then every override, resetting entries the view no longer overrides.
absl::Status ApplyView(Engine& e, uint8_t* ram, uint64_t ram_size, const ViewTable& views,
                       const std::string& op);

// Drops translated code and/or the TLB where marked stale.
void FlushEngine(Engine& e);

// Records that the engine translated code from `frame`: a copy of its bytes
// as they are now (kept if already recorded).
void RecordCodeFrame(Engine& e, const uint8_t* ram, uint64_t frame);
// True when a recorded frame's bytes differ from RAM now.
bool CodeChanged(const Engine& e, const uint8_t* ram);
// Catches the recorded copies up with RAM (after the engine's own run, whose
// writes its translated-code cache saw).
void RefreshCode(Engine& e, const uint8_t* ram);

}  // namespace vmi::sim::sim_internal

#endif  // VMI_SIM_INTERNAL_ENGINES_H_
