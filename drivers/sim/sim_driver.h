// SimDriver: the capability concepts over the emulated machine (sim/), with
// the same event semantics as Xen's vm_event (see README.md for the table of
// responses next to the vm_event flag each corresponds to). Satisfies
// VmiFullDriver.
//
// Memory: ReadPage returns a live, zero-copy MappedPage into guest RAM.
// Memory control: the machine's RAM is fixed at creation; the driver keeps
// the top `reserve_frames` frames unpopulated, and AllocateGfn populates them
// one by one past the current maximum (as Xen's populate_physmap raises
// max_gpfn). FreeGfn unpopulates a frame: reads, writes and permissions on
// it then fail until it is allocated again.
//
// Events: an INT3 (InterruptEvent with #BP) and a single step carry
// instruction_gfn, the guest frame of RIP at the exit as the vCPU's page
// tables translate an instruction fetch (machine_reader.h), computed when the
// event is raised; empty when that fetch would fault.
//
// Waiting: WaitForEvent runs the vCPUs until an event (which it hands to the
// handler and answers), or until the timeout: wall-clock time by default, or
// a budget of guest instructions (deterministic) when
// SimDriverOptions::wait_instructions is set. It returns DeadlineExceeded when
// no event came, at once if every vCPU halted or the VM is paused.
//
// Thread-safety: thread-compatible (the machine is single-threaded).

#ifndef VMI_DRIVERS_SIM_SIM_DRIVER_H_
#define VMI_DRIVERS_SIM_SIM_DRIVER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "arch/amd64/amd64.h"
#include "core/driver.h"
#include "core/event.h"
#include "core/mapped_page.h"
#include "sim/machine.h"
#include "sim/programs.h"

namespace vmi::sim {

struct SimDriverOptions {
  // Frames at the top of RAM held back for AllocateGfn.
  uint64_t reserve_frames = 64;
  // When non-zero, a WaitForEvent timeout is this many guest instructions
  // instead of wall-clock time.
  uint64_t wait_instructions = 0;
  // Guest instructions per Run slice while waiting on wall-clock time.
  uint64_t run_slice = 200000;
};

class SimDriver {
 public:
  using Architecture = Amd64;
  using Handler = absl::FunctionRef<VmiEventResponse<Amd64>(const VmiEvent<Amd64>&)>;

  // Drives an existing machine.
  static absl::StatusOr<SimDriver> Create(std::unique_ptr<Machine> machine,
                                          SimDriverOptions options = {});
  // A machine running one of the built-in programs (sim/programs.h) in the
  // standard long-mode guest.
  static absl::StatusOr<SimDriver> Boot(absl::string_view program,
                                        const MachineOptions& machine_options = {},
                                        const StandardGuestOptions& guest_options = {},
                                        SimDriverOptions options = {});

  SimDriver(SimDriver&&) noexcept;
  SimDriver& operator=(SimDriver&&) noexcept;
  ~SimDriver();

  Machine& machine() { return *state_->machine; }
  // The standard guest, when booted with Boot().
  const StandardGuest* guest() const {
    return state_->guest ? &*state_->guest : nullptr;
  }
  SimDriverOptions& options() { return state_->options; }

  // ---- VmiDriver / memory ----
  absl::StatusOr<VmiInfo> Info() const;
  absl::StatusOr<MappedPage> ReadPage(Gfn gfn);
  absl::StatusOr<MappedPage> WritePage(Gfn gfn, uint64_t offset, absl::Span<const uint8_t> data);

  // ---- protection ----
  absl::StatusOr<MemoryAccess> GetMemoryAccess(Gfn gfn, View view);
  absl::StatusOr<std::pair<MemoryAccess, MemoryAccessOptions>> GetMemoryAccessWithOptions(
      Gfn gfn, View view);
  absl::Status SetMemoryAccess(Gfn gfn, View view, MemoryAccess access);
  absl::Status SetMemoryAccessWithOptions(Gfn gfn, View view, MemoryAccess access,
                                          MemoryAccessOptions options);

  // ---- registers ----
  absl::StatusOr<amd64::Registers> Registers(VcpuId vcpu);
  absl::Status SetRegisters(VcpuId vcpu, const amd64::Registers& regs);

  // ---- events ----
  absl::Status MonitorEnable(const amd64::EventMonitor& monitor);
  absl::Status MonitorDisable(const amd64::EventMonitor& monitor);
  size_t EventsPending();
  absl::Duration EventProcessingOverhead();
  template <typename H>
  absl::Status WaitForEvent(absl::Duration timeout, H&& handler) {
    return WaitForEventImpl(timeout, Handler(handler));
  }

  // ---- views ----
  View DefaultView() { return kDefaultView; }
  absl::StatusOr<View> CreateView(MemoryAccess default_access);
  absl::Status DestroyView(View view);
  absl::Status SwitchToView(View view);
  absl::Status ChangeViewGfn(View view, Gfn old_gfn, Gfn new_gfn);
  absl::Status ResetViewGfn(View view, Gfn gfn);

  // ---- VM control ----
  absl::Status Pause();
  absl::Status Resume();
  absl::StatusOr<Gfn> AllocateGfn();
  absl::Status AllocateGfnAt(Gfn gfn);
  absl::Status FreeGfn(Gfn gfn);
  absl::Status InjectInterrupt(VcpuId vcpu, const amd64::Interrupt& interrupt);
  absl::Status ResetState();

  // Conversions, exposed for tests. `instruction_gfn` goes into the event of
  // a breakpoint or single-step exit (the driver passes InstructionGfn of
  // machine_reader.h) and is ignored for the others.
  static amd64::EventReason ReasonFromExit(const Exit& exit, const amd64::Registers& regs,
                                           std::optional<Gfn> instruction_gfn = std::nullopt);
  static Response ResponseFor(const VmiEventResponse<Amd64>& response);

 private:
  struct State {
    std::unique_ptr<Machine> machine;
    std::optional<StandardGuest> guest;
    SimDriverOptions options;
    Gfn visible_max;                          // highest populated frame below the reserve
    absl::flat_hash_set<uint64_t> allocated;  // reserve frames populated by AllocateGfn*
    absl::flat_hash_set<uint64_t> freed;      // frames unpopulated by FreeGfn
    absl::flat_hash_set<uint32_t> msrs;       // monitored MSR indexes
    absl::flat_hash_set<uint8_t> vectors;     // monitored interrupt vectors
    bool singlestep_monitor = false;
    int pause_depth = 0;
    absl::Duration overhead;
  };

  explicit SimDriver(std::unique_ptr<State> state) : state_(std::move(state)) {}
  absl::Status CheckPopulated(const char* op, Gfn gfn) const;
  absl::Status WaitForEventImpl(absl::Duration timeout, Handler handler);

  std::unique_ptr<State> state_;
};

static_assert(VmiFullDriver<SimDriver>);

}  // namespace vmi::sim

#endif  // VMI_DRIVERS_SIM_SIM_DRIVER_H_
