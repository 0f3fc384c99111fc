// The emulated x86-64 machine: guest RAM as one host buffer shared by 1..8
// vCPUs. A vCPU runs on one Unicorn engine per view it has been in (so each
// vCPU has its own TLB, translated-code cache and active view, like a
// hardware thread with its own EPT pointer); each engine applies its view's
// permissions once, and a view switch moves the CPU state to the other
// engine. Guest code writes reach every engine: before an engine runs after
// another, frames it translated code from are compared with their content
// then, and a changed frame drops its translations.
//
// Execution is deterministic: Run() schedules the vCPUs round-robin, each for
// a fixed quantum of guest instructions; a quantum ends early when the vCPU
// raises an exit, takes an exception, executes SYSCALL or HLT. The same
// machine state, program and responses give the same sequence of exits.
//
// Events are synchronous, like Xen vm_event: the vCPU stops at the event,
// Run() returns the pending Exit, and the caller answers it with Respond()
// before the machine runs again. See Exit and Response for the semantics of
// each kind.
//
// Interrupts and exceptions are delivered through the guest IDT by the
// machine itself (Unicorn never delivers them): 64-bit gates, privilege change
// through TSS.RSP0, IST stacks, error codes, CR2 for #PF.
//
// View permissions hold for every guest access, not only the first one that
// fills a TLB entry: an engine whose view restricts any frame checks every
// guest load and store (Unicorn's slow memory path, forced by a memory hook;
// see ChecksEveryAccess), one whose view restricts nothing runs without it.
//
// Page walks: the CPU's own reads of page tables are never subject to view
// permissions. Its accessed/dirty-bit updates to a table frame the view
// write-protects with MemoryAccessOptions::IgnorePageWalkUpdates land without
// an exit (Xen's *_pw access types), while guest instructions writing that
// frame raise write violations. Without the option, Xen raises a violation
// for the walk's update (fault_in_gpt); the simulator cannot see it (Unicorn's
// walker writes physical memory directly) and drops the update instead: no
// exit, and the bit stays clear in the table.
//
// Limitations (by design of the emulator underneath): guest-armed hardware breakpoints
// (MOV to DR7) are not supported: Unicorn 2.1.1 faults in its generated code
// when one is hit, and QEMU's breakpoint objects do not move between engines
// (the DR0-7 values do); LMSW with a memory operand raises no CR0 event; XCR0
// is not reachable through Unicorn 2.1.1 (reads as 0).
//
// The guest-linear address of a violating access is derived, not observed
// (Unicorn reports the physical address): from the faulting instruction's
// memory operand (or RSP/RSI/RDI for implicit operands), accepted when that
// linear page maps the frame; failing that, when exactly one virtual page of
// the current address space maps the frame; for fetches, from RIP.
// Exit::gla_valid is set only in those cases.
//
// Thread-safety: thread-compatible. All calls must come from one thread at a
// time; Unicorn engines are not thread-safe.

#ifndef VMI_SIM_MACHINE_H_
#define VMI_SIM_MACHINE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "arch/amd64/registers.h"
#include "core/event.h"
#include "core/types.h"
#include "sim/views.h"

namespace vmi::sim {

struct MachineOptions {
  uint64_t ram_size = 64ull << 20;  // bytes; a multiple of 4096
  uint16_t vcpu_count = 1;          // 1..8
  uint64_t quantum = 10000;         // guest instructions per scheduling slot
  // Guest RAM in a memfd (Machine::ram_fd()) that other mappings can share,
  // e.g. a simulated hypervisor's foreign mappings; anonymous memory
  // otherwise.
  bool shared_ram = false;
};

enum class ExitKind : uint8_t {
  kMemoryAccess,     // a guest access the vCPU's view does not allow
  kBreakpoint,       // INT3 / INT 3 (breakpoint monitor on)
  kSingleStep,       // one instruction completed (single-step on)
  kControlRegister,  // MOV to CR0/CR3/CR4 (monitor on for that CR)
  kMsrWrite,         // WRMSR
  kCpuid,            // CPUID
  kIo,               // IN/OUT/INS/OUTS
  kVmcall,           // VMCALL/VMMCALL
  kDescriptorTable,  // LGDT/LIDT/LLDT/LTR/SGDT/SIDT/SLDT/STR
  kInterrupt,        // an exception or INT n on a monitored vector other than #BP
};

enum class DescriptorOp : uint8_t { kLgdt, kLidt, kLldt, kLtr, kSgdt, kSidt, kSldt, kStr };

const char* ExitKindName(ExitKind kind);
const char* DescriptorOpName(DescriptorOp op);

// A pending event. Fields not used by `kind` stay zero.
//
// Where the vCPU stands:
//  - kMemoryAccess: before the faulting instruction (rip = its address); for a
//    fetch the gpa is the fetched byte's frame.
//  - kBreakpoint: rip = the breakpoint instruction, insn_length 1 (CC) or 2.
//  - kInterrupt: not delivered yet; rip = the faulting instruction (faults)
//    or the INT n instruction (software interrupts, insn_length > 0). For #PF
//    CR2 already holds the faulting address.
//  - kSingleStep: after the instruction; rip = the next one.
//  - all instruction intercepts: before the instruction; rip = its address,
//    insn_length its length. For kControlRegister/kMsrWrite, new_value is
//    what the guest is writing and old_value the current value.
struct Exit {
  VcpuId vcpu;
  View view;  // the vCPU's view when the event happened
  ExitKind kind = ExitKind::kSingleStep;
  uint64_t rip = 0;
  uint8_t insn_length = 0;

  // kMemoryAccess (and kBreakpoint: where the breakpoint is).
  Pa gpa;
  Va gla;
  bool gla_valid = false;  // true only when the linear address is known
  MemoryAccess access;     // the attempted access: exactly one of R, W, X

  uint8_t cr = 0;    // kControlRegister
  uint32_t msr = 0;  // kMsrWrite
  uint64_t old_value = 0, new_value = 0;

  uint32_t leaf = 0, subleaf = 0;  // kCpuid

  uint16_t port = 0;  // kIo
  uint8_t io_size = 0;
  bool io_in = false;
  bool io_string = false;

  DescriptorOp descriptor_op = DescriptorOp::kLgdt;  // kDescriptorTable

  uint8_t vector = 0;  // kInterrupt (3 for kBreakpoint)
  bool has_error_code = false;
  uint32_t error_code = 0;

  // One line naming the kind and its fields, e.g.
  // "vcpu=0 view=1 memory_access rip=0x... gpa=0x... gla=0x... access=-w-".
  std::string ToString() const;
};

// The answer to an Exit.
//  - kContinue: resume. A memory access is retried (and re-faults if the view
//    still forbids it); an intercepted instruction executes (VMCALL is
//    skipped: there is no hypervisor behind it); a breakpoint re-executes.
//  - kDeny: the intercepted instruction is skipped without effect (CR/MSR
//    writes, and every other intercept). Invalid for memory and breakpoints.
//  - kEmulate: a memory access is performed once despite the view.
//  - kReinjectInterrupt: the intercepted breakpoint or interrupt is delivered
//    to the guest through its IDT (a fault's retry happens after the guest
//    handler returns).
//  - kSingleStep: toggles single-stepping of the vCPU, then continues.
//  - kFastSingleStep: executes one instruction in `view`, then returns to the
//    vCPU's current view without a single-step exit (Xen: an altp2m switch
//    plus VM_EVENT_FLAG_FAST_SINGLESTEP back to the current view).
// `view` (for actions other than kFastSingleStep) switches the vCPU's view
// before it resumes; `registers` replaces its GPRs/RIP/RFLAGS first (if RIP
// changes, the intercepted instruction is considered handled).
//
// A fast single step ends when its instruction completes, or when an
// exception or interrupt is delivered instead (a #PF it raised, an injected
// event): then RIP is the handler's entry with the frame pushed, as with the
// monitor trap flag. Either way the vCPU is back in the view it had before
// the step, and nothing is reported. Until then the step is under way: an
// exit raised by the stepped instruction (a memory access the step's view
// forbids, a breakpoint or monitored interrupt, an intercept) is reported
// with `view` = the step's view, VcpuView() says the step's view, and the
// response applies to the step, which resumes in that view (or in `view`,
// when the response names one) and returns to the original view once the
// instruction completes:
//  - kContinue: the instruction is retried in the step's view (it faults
//    again if that view still forbids the access; it completes if the
//    permission was lifted meanwhile), then the vCPU returns.
//  - kEmulate: the access is performed once in the step's view, the
//    instruction completes there, then the vCPU returns.
//  - kFastSingleStep(W) / any action with `view` = W: the instruction is
//    retried in W instead, then the vCPU returns to the original view (not
//    to the step's view).
//  - kSingleStep: toggles single-stepping; the instruction is retried as for
//    kContinue, and with single-stepping on a kSingleStep exit follows in the
//    original view once it completed.
//  - kReinjectInterrupt (breakpoint/interrupt exits): the event is delivered
//    and the step ends there, back in the original view at the handler.
//  - kDeny (intercepts): the instruction is skipped, which completes the step.
//  - `registers` with another RIP: the step executes the instruction at the
//    new RIP instead (the step is still one instruction).
// CancelFastSingleSteps() drops a step under way: the vCPU stays in the view
// it is in. A view the vCPU returns to cannot be destroyed.
struct Response {
  EventAction action = EventAction::kContinue;
  std::optional<View> view;
  std::optional<amd64::GpRegisters> registers;
};

// An interrupt or exception for InjectInterrupt.
struct Interrupt {
  uint8_t vector = 0;
  std::optional<uint32_t> error_code;
  std::optional<uint64_t> cr2;  // written to CR2 before delivery (#PF)
  // For software interrupts/traps (#BP from INT3): the return RIP is
  // rip + insn_length.
  uint8_t insn_length = 0;
};

enum class RunStatus : uint8_t {
  kExit,             // an event is pending: see Machine::pending_exit()
  kBudgetExhausted,  // the instruction budget was used up
  kAllHalted,        // every vCPU executed HLT with nothing to wake it
  kPaused,           // the machine is paused
};

struct RunResult {
  RunStatus status = RunStatus::kBudgetExhausted;
  std::optional<Exit> exit;
};

class Snapshot;

class Machine {
 public:
  static absl::StatusOr<std::unique_ptr<Machine>> Create(const MachineOptions& options);
  ~Machine();
  Machine(const Machine&) = delete;
  Machine& operator=(const Machine&) = delete;

  // --- geometry and physical memory ---
  uint64_t ram_size() const;
  Gfn max_gfn() const;
  uint16_t vcpu_count() const;
  // The memfd holding guest RAM (file offset = guest-physical address), or
  // -1 unless created with MachineOptions::shared_ram.
  int ram_fd() const;
  absl::Status ReadPhys(Pa pa, absl::Span<uint8_t> out) const;
  // Also invalidates code the vCPUs translated from the written bytes.
  absl::Status WritePhys(Pa pa, absl::Span<const uint8_t> bytes);
  // The host bytes of frame `gfn` (zero-copy, live). Writes through this
  // pointer are not seen by already-translated code until
  // InvalidateTranslations().
  absl::StatusOr<uint8_t*> FramePointer(Gfn gfn);
  void InvalidateTranslations();

  // --- registers ---
  absl::StatusOr<amd64::Registers> GetRegisters(VcpuId vcpu);
  // Sets everything in `regs`; segment registers are loaded with the given
  // hidden parts (selector, base, limit, access) as if by a descriptor load.
  absl::Status SetRegisters(VcpuId vcpu, const amd64::Registers& regs);
  absl::Status SetGpRegisters(VcpuId vcpu, const amd64::GpRegisters& regs);
  // Loads a segment register from the guest GDT (0=ES 1=CS 2=SS 3=DS 4=FS
  // 5=GS), including the CPL for SS: what the builder uses to start vCPUs.
  absl::Status LoadSegmentFromGdt(VcpuId vcpu, int segment, uint16_t selector);

  // --- execution ---
  // Runs until an exit, all vCPUs halt, the machine is paused, or roughly
  // `instruction_budget` instructions ran (each slot is charged its quantum).
  absl::StatusOr<RunResult> Run(uint64_t instruction_budget);
  const std::optional<Exit>& pending_exit() const;
  absl::Status Respond(const Response& response);
  void Pause();
  void Resume();
  bool paused() const;
  absl::StatusOr<bool> Halted(VcpuId vcpu) const;
  // Bytes the guest wrote to the debug port 0xE9.
  const std::string& console() const;
  // Instructions scheduled so far (sum of charged quanta).
  uint64_t instructions_scheduled() const;

  // Queues an interrupt for delivery through the guest IDT before the vCPU
  // next executes; it also wakes a halted vCPU.
  absl::Status InjectInterrupt(VcpuId vcpu, const Interrupt& interrupt);

  // --- monitors ---
  // INT3 / #BP: kBreakpoint exits. Same as SetInterruptMonitor(3, ...).
  absl::Status SetBreakpointMonitor(bool enabled);
  // Exceptions and software interrupts on `vector` (kInterrupt exits; #BP
  // gives kBreakpoint exits).
  absl::Status SetInterruptMonitor(uint8_t vector, bool enabled);
  // cr must be 0, 3 or 4 (CR0 also covers LMSW and CLTS).
  absl::Status SetControlRegisterMonitor(int cr, bool enabled);
  // Writes to every MSR.
  absl::Status SetMsrWriteMonitor(bool enabled);
  // Writes to one MSR (independent of the all-MSR switch).
  absl::Status SetMsrWriteMonitor(uint32_t index, bool enabled);
  absl::Status SetCpuidMonitor(bool enabled);
  absl::Status SetIoMonitor(bool enabled);
  // VMCALL/VMMCALL at CPL 0 (and at CPL 3 when `allow_user`; otherwise the
  // guest gets #UD, as with Xen).
  absl::Status SetVmcallMonitor(bool enabled, bool allow_user = false);
  absl::Status SetDescriptorTableMonitor(bool enabled);
  absl::Status SetSingleStep(VcpuId vcpu, bool enabled);

  // --- views ---
  absl::StatusOr<View> CreateView(MemoryAccess default_access);
  // Fails while a vCPU is in `view`, has a fast singlestep into it pending, or
  // returns to it after a fast singlestep under way.
  absl::Status DestroyView(View view);
  // Drops the fast singlesteps responses scheduled that have not run yet and
  // the steps under way; each vCPU resumes in the view it is in now.
  void CancelFastSingleSteps();
  // Switches every vCPU (during a fast single step under way: the view the
  // step's instruction runs in; the vCPU still returns afterwards).
  absl::Status SwitchView(View view);
  absl::Status SwitchVcpuView(VcpuId vcpu, View view);
  absl::StatusOr<View> VcpuView(VcpuId vcpu) const;
  // `options` (IgnorePageWalkUpdates) matters where `access` lacks write: see
  // the page-walk note at the top. A call without options drops earlier ones.
  absl::Status SetMemoryAccess(View view, Gfn gfn, MemoryAccess access,
                               MemoryAccessOptions options = MemoryAccessOptions::None());
  absl::StatusOr<MemoryAccess> GetMemoryAccess(View view, Gfn gfn) const;
  absl::StatusOr<MemoryAccessOptions> GetMemoryAccessOptions(View view, Gfn gfn) const;
  // Whether the vCPU's engine for `view` checks every guest load and store
  // against the view (true while the view, as last applied to it, restricts
  // some frame or has a default access other than RWX; false when the engine
  // does not exist yet). For tests and benchmarks: a checking engine runs
  // guest code more slowly.
  absl::StatusOr<bool> ChecksEveryAccess(VcpuId vcpu, View view) const;
  absl::Status ChangeGfn(View view, Gfn old_gfn, Gfn new_gfn);
  absl::Status ResetGfn(View view, Gfn gfn);
  const ViewTable& views() const;

  // --- snapshots: RAM, every vCPU, views, monitors, pending work ---
  absl::StatusOr<std::unique_ptr<Snapshot>> TakeSnapshot();
  absl::Status RestoreSnapshot(const Snapshot& snapshot);

  struct Impl;

 private:
  explicit Machine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// An opaque copy of a machine's state, for Machine::RestoreSnapshot.
class Snapshot {
 public:
  ~Snapshot();
  struct Data;

 private:
  friend class Machine;
  explicit Snapshot(std::unique_ptr<Data> data);
  std::unique_ptr<Data> data_;
};

}  // namespace vmi::sim

#endif  // VMI_SIM_MACHINE_H_
