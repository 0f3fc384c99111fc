// Access to the parts of Unicorn's x86 CPU state that its register API does
// not reach: the hidden (descriptor-cache) part of segment registers, the CPL,
// the error code of the exception in flight and the "exception in flight"
// marker that turns a second #PF into a #DF.
//
// uc_context_save copies the head of QEMU's CPUX86State verbatim. The layout
// of that head is fixed by QEMU; GetQemuLayout() verifies it once per process
// against values written through the public API, and every accessor fails
// with a clear status if the verification failed.
//
// Thread-safety: GetQemuLayout is thread-safe; CpuContext is thread-compatible.

#ifndef VMI_SIM_INTERNAL_QEMU_STATE_H_
#define VMI_SIM_INTERNAL_QEMU_STATE_H_

#include <unicorn/unicorn.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace vmi::sim::sim_internal {

// QEMU's SegmentCache.
struct QemuSegment {
  uint32_t selector;
  uint32_t pad;
  uint64_t base;
  uint32_t limit;
  uint32_t flags;  // the descriptor's high dword as loaded
};

// The head of QEMU's CPUX86State (target-i386, x86_64).
struct QemuStateHead {
  uint64_t regs[16];
  uint64_t eip, eflags, cc_dst, cc_src, cc_src2;
  uint32_t cc_op;
  int32_t df;
  uint32_t hflags, hflags2;
  QemuSegment segs[6];  // ES CS SS DS FS GS
  QemuSegment ldt, tr, gdt, idt;
  uint64_t cr[5];
};

inline constexpr int kSegEs = 0, kSegCs = 1, kSegSs = 2, kSegDs = 3, kSegFs = 4, kSegGs = 5;

// hflags bits (QEMU target/i386/cpu.h).
inline constexpr uint32_t kHfCplMask = 3;
inline constexpr uint32_t kHfCs32 = 1u << 4;
inline constexpr uint32_t kHfSs32 = 1u << 5;
inline constexpr uint32_t kHfAddSeg = 1u << 6;
inline constexpr uint32_t kHfLma = 1u << 14;
inline constexpr uint32_t kHfCs64 = 1u << 15;

struct QemuLayout {
  size_t head_offset;    // offset of CPUX86State in the uc_context blob
  size_t error_code;     // offset of env->error_code in the blob
  size_t old_exception;  // offset of env->old_exception in the blob
  size_t breakpoints;    // offset of env->cpu_breakpoint[4] (engine-owned pointers)
};

// The verified layout, or why it could not be verified.
absl::StatusOr<QemuLayout> GetQemuLayout();

// Moves the whole CPU state of engine `from` into engine `to` (both x86-64),
// using `scratch`, a context allocated for either. QEMU's hardware-breakpoint
// objects belong to one engine, so their pointers are cleared in transit.
absl::Status TransferCpuState(uc_engine* from, uc_engine* to, uc_context* scratch);

// A saved CPU context that can be edited and written back.
class CpuContext {
 public:
  static absl::StatusOr<CpuContext> Save(uc_engine* uc);
  CpuContext(CpuContext&& other) noexcept;
  CpuContext& operator=(CpuContext&& other) noexcept;
  CpuContext(const CpuContext&) = delete;
  CpuContext& operator=(const CpuContext&) = delete;
  ~CpuContext();

  absl::Status Restore(uc_engine* uc) const;
  // Saves `uc` into this context again (same engine kind).
  absl::Status Resave(uc_engine* uc);

  QemuStateHead& head();
  int32_t error_code() const;
  // True when the exception in flight is a software interrupt (INT n, INT3):
  // RIP already points after the instruction.
  bool exception_is_int() const;
  // Whether QEMU marks an exception as being delivered (env->old_exception),
  // which turns the next one into a #DF.
  bool exception_in_flight() const;
  void clear_exception_in_flight();

  // Loads a segment's hidden part as a descriptor load would (and the CPL
  // for SS, the code-size flags for CS).
  void LoadSegment(int seg, uint16_t selector, uint64_t base, uint32_t limit, uint32_t flags);

  uc_context* raw() const { return ctx_; }

 private:
  CpuContext(uc_context* ctx, QemuLayout layout);
  uc_context* ctx_ = nullptr;
  QemuLayout layout_{};
  // The blob places the state at an unaligned offset: edit an aligned copy
  // and write it back on Restore.
  QemuStateHead head_{};
};

}  // namespace vmi::sim::sim_internal

#endif  // VMI_SIM_INTERNAL_QEMU_STATE_H_
