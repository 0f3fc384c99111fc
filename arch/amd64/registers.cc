#include "arch/amd64/registers.h"

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "arch/amd64/bitfields.h"
#include "core/types.h"

namespace vmi::amd64 {

Va InstructionPointer(const Registers& regs) { return Va(regs.rip); }
Va StackPointer(const Registers& regs) { return Va(regs.rsp); }
Va FramePointer(const Registers& regs) { return Va(regs.rbp); }
uint64_t ReturnValue(const Registers& regs) { return regs.rax; }

int AddressWidth(const Registers& regs) { return Efer(regs.efer).lma() ? 8 : 4; }

int EffectiveAddressWidth(const Registers& regs) {
  return Efer(regs.efer).lma() && SegmentAccess(regs.cs.access).l() ? 8 : 4;
}

bool IsUserMode(const Registers& regs) {
  return Selector(regs.cs.selector).rpl() == 3 || SegmentAccess(regs.cs.access).dpl() == 3;
}

namespace {

std::string Line4(const char* n0, uint64_t v0, const char* n1, uint64_t v1, const char* n2,
                  uint64_t v2, const char* n3, uint64_t v3) {
  return absl::StrFormat("%-3s=%016x %-3s=%016x %-3s=%016x %-3s=%016x\n", n0, v0, n1, v1, n2, v2,
                         n3, v3);
}

std::string SegmentLine(const char* name, const Segment& s) {
  return absl::StrFormat("%-4s sel=%04x base=%016x limit=%08x %s\n", name, s.selector, s.base,
                         s.limit, SegmentAccess(s.access).ToString());
}

}  // namespace

std::string FormatRegisters(const Registers& r) {
  std::string out;
  absl::StrAppend(&out, Line4("rax", r.rax, "rbx", r.rbx, "rcx", r.rcx, "rdx", r.rdx),
                  Line4("rsi", r.rsi, "rdi", r.rdi, "rbp", r.rbp, "rsp", r.rsp),
                  Line4("r8", r.r8, "r9", r.r9, "r10", r.r10, "r11", r.r11),
                  Line4("r12", r.r12, "r13", r.r13, "r14", r.r14, "r15", r.r15));
  absl::StrAppend(&out, absl::StrFormat("rip=%016x rflags=%016x [%s]\n", r.rip, r.rflags,
                                        Rflags(r.rflags).ToString()));
  const bool pcide = Cr4(r.cr4).pcide();
  absl::StrAppend(&out, absl::StrFormat("cr0=%016x [%s]\n", r.cr0, Cr0(r.cr0).ToString()),
                  absl::StrFormat("cr2=%016x\n", r.cr2),
                  absl::StrFormat("cr3=%016x [%s]\n", r.cr3, Cr3(r.cr3).ToString(pcide)),
                  absl::StrFormat("cr4=%016x [%s]\n", r.cr4, Cr4(r.cr4).ToString()),
                  absl::StrFormat("xcr0=%016x\n", r.xcr0),
                  absl::StrFormat("efer=%016x [%s]\n", r.efer, Efer(r.efer).ToString()));
  absl::StrAppend(&out, Line4("dr0", r.dr0, "dr1", r.dr1, "dr2", r.dr2, "dr3", r.dr3),
                  absl::StrFormat("dr6=%016x dr7=%016x\n", r.dr6, r.dr7));
  absl::StrAppend(&out, SegmentLine("cs", r.cs), SegmentLine("ss", r.ss), SegmentLine("ds", r.ds),
                  SegmentLine("es", r.es), SegmentLine("fs", r.fs), SegmentLine("gs", r.gs),
                  SegmentLine("ldtr", r.ldtr), SegmentLine("tr", r.tr));
  absl::StrAppend(&out, absl::StrFormat("gdtr base=%016x limit=%04x\n", r.gdtr.base, r.gdtr.limit),
                  absl::StrFormat("idtr base=%016x limit=%04x\n", r.idtr.base, r.idtr.limit));
  absl::StrAppend(
      &out,
      absl::StrFormat("star=%016x lstar=%016x cstar=%016x sfmask=%016x\n", r.star, r.lstar, r.cstar,
                      r.sfmask),
      absl::StrFormat("sysenter_cs=%016x sysenter_esp=%016x sysenter_eip=%016x\n", r.sysenter_cs,
                      r.sysenter_esp, r.sysenter_eip),
      absl::StrFormat("fs_base=%016x gs_base=%016x kernel_gs_base=%016x tsc_aux=%016x\n", r.fs_base,
                      r.gs_base, r.kernel_gs_base, r.tsc_aux));
  return out;
}

}  // namespace vmi::amd64
