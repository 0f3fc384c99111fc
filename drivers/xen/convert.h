// Pure conversions between Xen's tools ABI (vm_event requests and responses,
// xenmem_access_t, the HVM CPU save record) and the project's types. Nothing
// here talks to a hypervisor, so every mapping XenDriver relies on is unit
// tested on hand-built structs.
//
// Event semantics (see README.md for the table):
//  * A request becomes a VmiEvent<Amd64>: vCPU, view (altp2m_idx when
//    VM_EVENT_FLAG_ALTERNATE_P2M is set, else view 0), the registers Xen put
//    in the request, the reason, and whether the vCPU is paused.
//  * A VmiEventResponse becomes a vm_event_response_t whose flags say what
//    Xen does when it resumes the vCPU. kReinjectInterrupt has no flag: the
//    driver injects the event (InterruptToReinject) before responding.
//
// The registers in a vm_event request are a subset of the vCPU state:
// DR0-3, XCR0, CSTAR, SFMASK, TSC_AUX, TR, LDTR and IDTR are not in it and
// read as 0 (XenDriver can fill them in; see XenDriverOptions).
//
// Thread-safety: stateless functions; thread-safe.

#ifndef VMI_DRIVERS_XEN_CONVERT_H_
#define VMI_DRIVERS_XEN_CONVERT_H_

#include <cstdint>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "arch/amd64/amd64.h"
#include "core/event.h"
#include "core/types.h"
#include "drivers/xen/internal/xen_headers.h"

namespace vmi::xen {

// "mem_access", "write_ctrlreg", ... for a VM_EVENT_REASON_*; "unknown(N)".
const char* VmEventReasonName(uint32_t reason);

// ---- Segments ----

// Xen keeps segment attributes in a 12-bit "arbytes" form: bits 0-7 as in the
// descriptor (type, S, DPL, P) and bits 8-11 = AVL, L, D/B, G. Our Segment
// uses the VMX AR-byte layout, where AVL, L, D/B, G are bits 12-15. The two
// convert losslessly.
uint16_t AccessFromArbytes(uint32_t arbytes);
uint32_t ArbytesFromAccess(uint16_t access);

// ---- Registers ----

// The registers of a vm_event request. Segment limits are scaled back to
// bytes (Xen stores them >> 12 when G is set).
amd64::Registers RegistersFromEventRegs(const vm_event_regs_x86& regs);

// The full register set of one vCPU from its HVM CPU save record
// (HVM_SAVE_CODE(CPU)). XCR0 is not in that record and reads as 0.
amd64::Registers RegistersFromHvmCpu(const hvm_hw_cpu& cpu);

// Writes `regs` into `cpu`, leaving what Registers does not model (FPU
// state, TSC, pending event, flags) untouched. FS and GS bases exist twice in
// Registers (fs_base and fs.base, gs_base and gs.base): where the two differ,
// the one that differs from `cpu`'s current value wins, so editing either
// works. XCR0 is ignored (it is not part of this record).
void PatchHvmCpu(const amd64::Registers& regs, hvm_hw_cpu* cpu);

// Finds the CPU record of `vcpu` in a full HVM context (as returned by
// xc_domain_hvm_getcontext: descriptor, payload, descriptor, payload, ...,
// END) and patches it with `regs`. NotFound when the vCPU has no record,
// DataLoss when the buffer is malformed.
absl::Status PatchCpuRecordInContext(absl::Span<uint8_t> context, uint16_t vcpu,
                                     const amd64::Registers& regs);

// ---- Second-level permissions ----

// The xenmem_access_t for an access and its options. With the Xen 4.17
// interface every R/W/X combination has a value; "ignore page-walk updates"
// has none (the proposed XENMEM_access_r_pw is not part of 4.17's
// xenmem_access_t), so any non-empty options give InvalidArgument/
// Unimplemented naming what cannot be expressed.
absl::StatusOr<xenmem_access_t> XenAccessFrom(MemoryAccess access, MemoryAccessOptions options);

// The access a page currently has. The automatic types report what is in
// force until they fire: rx2rw is r-x (becomes rw- on the first write),
// n2rwx is --- (becomes rwx on the first access). XENMEM_access_default and
// unknown values give InvalidArgument.
absl::StatusOr<std::pair<MemoryAccess, MemoryAccessOptions>> AccessFromXen(xenmem_access_t access);

// ---- Events ----

// The event a request reports. Reasons Xen 4.17 can deliver but the
// Architecture has no EventReason for (mem_paging, mem_sharing,
// privileged_call, emul_unimplemented, vmexit, unknown) give Unimplemented;
// a request of another interface version gives FailedPrecondition.
//
// A software breakpoint's InterruptEvent and a single step's SingleStepEvent
// carry the request's gfn as instruction_gfn: Xen's gfn_of_rip, RIP
// translated by the guest's page tables as an instruction fetch (the guest
// frame even when an altp2m view remaps it), empty for INVALID_GFN (RIP does
// not translate). Xen sends 0 there when the monitor's page walks are
// disabled (XEN_DOMCTL_MONITOR_OP_DISABLE_PTWALKS), which XenDriver never
// does. A debug exception's gfn is not reported: instruction_gfn is for #BP.
absl::StatusOr<VmiEvent<Amd64>> EventFromRequest(const vm_event_request_t& request);

// The response to `request`. Always echoes VM_EVENT_FLAG_VCPU_PAUSED (which
// unpauses the vCPU), the vCPU, the reason and the request's payload (Xen's
// emulation check reads the mem_access part back). InvalidArgument for an
// action the request's reason does not support (deny on anything but a
// CR/MSR write or a memory access, reinjection of anything but an interrupt
// or exception, fast single-step without a view).
absl::StatusOr<vm_event_response_t> ResponseFromEvent(const vm_event_request_t& request,
                                                      const VmiEventResponse<Amd64>& response);

// What a kReinjectInterrupt response to `request` must inject (software
// breakpoint -> #BP with its instruction length, debug exception -> #DB with
// pending_dbg in `extra`, interrupt -> the intercepted vector). InvalidArgument
// for any other reason.
absl::StatusOr<amd64::Interrupt> InterruptToReinject(const vm_event_request_t& request);

// Xen's "no error code" marker in vm_event interrupt requests and for
// xendevicemodel_inject_event.
inline constexpr uint32_t kNoErrorCode = ~uint32_t{0};

// Xen's INVALID_GFN: what gfn_of_rip puts in software-breakpoint and
// single-step requests when RIP does not translate, and the new_gfn of
// xc_altp2m_change_gfn that resets a remap.
inline constexpr uint64_t kInvalidGfn = ~uint64_t{0};

// Instruction length reported for guest requests (VMCALL/VMMCALL are 3 bytes;
// the request does not carry it).
inline constexpr uint8_t kVmcallLength = 3;

}  // namespace vmi::xen

#endif  // VMI_DRIVERS_XEN_CONVERT_H_
