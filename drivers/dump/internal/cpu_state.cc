#include "drivers/dump/internal/cpu_state.h"

#include <cstring>

#include "drivers/dump/internal/layout.h"

namespace vmi::dump_internal {
namespace {

template <typename T>
void Store(std::vector<uint8_t>& out, uint64_t offset, T value) {
  std::memcpy(out.data() + offset, &value, sizeof(T));
}

// user_regs_struct order.
constexpr uint64_t amd64::Registers::*kPrstatusGprs[] = {
    &amd64::Registers::r15, &amd64::Registers::r14, &amd64::Registers::r13, &amd64::Registers::r12,
    &amd64::Registers::rbp, &amd64::Registers::rbx, &amd64::Registers::r11, &amd64::Registers::r10,
    &amd64::Registers::r9,  &amd64::Registers::r8,  &amd64::Registers::rax, &amd64::Registers::rcx,
    &amd64::Registers::rdx, &amd64::Registers::rsi, &amd64::Registers::rdi};
// Slot indices after the 15 GPRs.
enum : uint64_t { kRip = 16, kCs, kEflags, kRsp, kSs, kFsBase, kGsBase, kDs, kEs, kFs, kGs };

// QEMUCPUState GPR order: rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rip rflags.
constexpr uint64_t amd64::Registers::*kQemuGprs[] = {
    &amd64::Registers::rax, &amd64::Registers::rbx, &amd64::Registers::rcx,
    &amd64::Registers::rdx, &amd64::Registers::rsi, &amd64::Registers::rdi,
    &amd64::Registers::rsp, &amd64::Registers::rbp, &amd64::Registers::r8,
    &amd64::Registers::r9,  &amd64::Registers::r10, &amd64::Registers::r11,
    &amd64::Registers::r12, &amd64::Registers::r13, &amd64::Registers::r14,
    &amd64::Registers::r15, &amd64::Registers::rip, &amd64::Registers::rflags};
constexpr amd64::Segment amd64::Registers::*kQemuSegments[] = {
    &amd64::Registers::cs, &amd64::Registers::ds, &amd64::Registers::es,   &amd64::Registers::fs,
    &amd64::Registers::gs, &amd64::Registers::ss, &amd64::Registers::ldtr, &amd64::Registers::tr};

uint64_t Slot(absl::Span<const uint8_t> bytes, uint64_t index) {
  return LoadUnchecked<uint64_t>(bytes, kPrstatusRegsOffset + 8 * index);
}

}  // namespace

void DecodePrstatus(absl::Span<const uint8_t> bytes, amd64::Registers* regs) {
  for (uint64_t i = 0; i < 15; ++i) regs->*kPrstatusGprs[i] = Slot(bytes, i);
  regs->rip = Slot(bytes, kRip);
  regs->cs.selector = static_cast<uint16_t>(Slot(bytes, kCs));
  regs->rflags = Slot(bytes, kEflags);
  regs->rsp = Slot(bytes, kRsp);
  regs->ss.selector = static_cast<uint16_t>(Slot(bytes, kSs));
  regs->fs_base = Slot(bytes, kFsBase);
  regs->fs.base = regs->fs_base;
  regs->gs_base = Slot(bytes, kGsBase);
  regs->gs.base = regs->gs_base;
  regs->ds.selector = static_cast<uint16_t>(Slot(bytes, kDs));
  regs->es.selector = static_cast<uint16_t>(Slot(bytes, kEs));
  regs->fs.selector = static_cast<uint16_t>(Slot(bytes, kFs));
  regs->gs.selector = static_cast<uint16_t>(Slot(bytes, kGs));
}

std::vector<uint8_t> EncodePrstatus(const amd64::Registers& regs, uint32_t pid) {
  std::vector<uint8_t> out(kPrstatusSize, 0);
  Store<uint32_t>(out, kPrstatusPidOffset, pid);
  auto slot = [&](uint64_t index, uint64_t value) {
    Store<uint64_t>(out, kPrstatusRegsOffset + 8 * index, value);
  };
  for (uint64_t i = 0; i < 15; ++i) slot(i, regs.*kPrstatusGprs[i]);
  slot(kRip, regs.rip);
  slot(kCs, regs.cs.selector);
  slot(kEflags, regs.rflags);
  slot(kRsp, regs.rsp);
  slot(kSs, regs.ss.selector);
  slot(kFsBase, regs.fs.base);
  slot(kGsBase, regs.gs.base);
  slot(kDs, regs.ds.selector);
  slot(kEs, regs.es.selector);
  slot(kFs, regs.fs.selector);
  slot(kGs, regs.gs.selector);
  return out;
}

void DecodeQemuCpuState(absl::Span<const uint8_t> bytes, amd64::Registers* regs) {
  for (uint64_t i = 0; i < 18; ++i) {
    regs->*kQemuGprs[i] = LoadUnchecked<uint64_t>(bytes, kQemuGprOffset + 8 * i);
  }
  for (uint64_t i = 0; i < 10; ++i) {
    const uint64_t at = kQemuSegmentsOffset + kQemuSegmentSize * i;
    const uint32_t selector = LoadUnchecked<uint32_t>(bytes, at);
    const uint32_t limit = LoadUnchecked<uint32_t>(bytes, at + 4);
    const uint32_t flags = LoadUnchecked<uint32_t>(bytes, at + 8);
    const uint64_t base = LoadUnchecked<uint64_t>(bytes, at + 16);
    if (i < 8) {
      amd64::Segment& s = regs->*kQemuSegments[i];
      s.selector = static_cast<uint16_t>(selector);
      s.limit = limit;
      s.access = AccessFromQemuFlags(flags);
      s.base = base;
    } else {
      amd64::DescriptorTable& t = i == 8 ? regs->gdtr : regs->idtr;
      t.base = base;
      t.limit = static_cast<uint16_t>(limit);
    }
  }
  regs->fs_base = regs->fs.base;
  regs->gs_base = regs->gs.base;
  regs->cr0 = LoadUnchecked<uint64_t>(bytes, kQemuCrOffset);
  regs->cr2 = LoadUnchecked<uint64_t>(bytes, kQemuCrOffset + 16);
  regs->cr3 = LoadUnchecked<uint64_t>(bytes, kQemuCrOffset + 24);
  regs->cr4 = LoadUnchecked<uint64_t>(bytes, kQemuCrOffset + 32);
  const uint32_t size = LoadUnchecked<uint32_t>(bytes, 4);
  if (bytes.size() >= kQemuCpuStateSize && size >= kQemuCpuStateSize) {
    regs->kernel_gs_base = LoadUnchecked<uint64_t>(bytes, kQemuKernelGsBaseOffset);
  }
}

std::vector<uint8_t> EncodeQemuCpuState(const amd64::Registers& regs) {
  std::vector<uint8_t> out(kQemuCpuStateSize, 0);
  Store<uint32_t>(out, 0, kQemuCpuStateVersion);
  Store<uint32_t>(out, 4, static_cast<uint32_t>(kQemuCpuStateSize));
  for (uint64_t i = 0; i < 18; ++i)
    Store<uint64_t>(out, kQemuGprOffset + 8 * i, regs.*kQemuGprs[i]);
  for (uint64_t i = 0; i < 10; ++i) {
    const uint64_t at = kQemuSegmentsOffset + kQemuSegmentSize * i;
    if (i < 8) {
      const amd64::Segment& s = regs.*kQemuSegments[i];
      Store<uint32_t>(out, at, s.selector);
      Store<uint32_t>(out, at + 4, s.limit);
      Store<uint32_t>(out, at + 8, QemuFlagsFromAccess(s.access));
      Store<uint64_t>(out, at + 16, s.base);
    } else {
      const amd64::DescriptorTable& t = i == 8 ? regs.gdtr : regs.idtr;
      Store<uint32_t>(out, at + 4, t.limit);
      Store<uint64_t>(out, at + 16, t.base);
    }
  }
  Store<uint64_t>(out, kQemuCrOffset, regs.cr0);
  Store<uint64_t>(out, kQemuCrOffset + 16, regs.cr2);
  Store<uint64_t>(out, kQemuCrOffset + 24, regs.cr3);
  Store<uint64_t>(out, kQemuCrOffset + 32, regs.cr4);
  Store<uint64_t>(out, kQemuKernelGsBaseOffset, regs.kernel_gs_base);
  return out;
}

namespace {
uint64_t XenSlot(absl::Span<const uint8_t> bytes, uint64_t index) {
  return LoadUnchecked<uint64_t>(bytes, kXenUserRegsOffset + 8 * index);
}
uint16_t XenSelector(absl::Span<const uint8_t> bytes, uint64_t offset) {
  return LoadUnchecked<uint16_t>(bytes, kXenUserRegsOffset + offset);
}
}  // namespace

void DecodeXenContext(absl::Span<const uint8_t> bytes, amd64::Registers* regs) {
  // cpu_user_regs starts with the same 15 GPRs as user_regs_struct.
  for (uint64_t i = 0; i < 15; ++i) regs->*kPrstatusGprs[i] = XenSlot(bytes, i);
  regs->rip = LoadUnchecked<uint64_t>(bytes, kXenUserRegsOffset + kXenRipOffset);
  regs->rflags = LoadUnchecked<uint64_t>(bytes, kXenUserRegsOffset + kXenRflagsOffset);
  regs->rsp = LoadUnchecked<uint64_t>(bytes, kXenUserRegsOffset + kXenRspOffset);
  regs->cs.selector = XenSelector(bytes, kXenCsOffset);
  regs->ss.selector = XenSelector(bytes, kXenSsOffset);
  regs->es.selector = XenSelector(bytes, kXenEsOffset);
  regs->ds.selector = XenSelector(bytes, kXenDsOffset);
  regs->fs.selector = XenSelector(bytes, kXenFsOffset);
  regs->gs.selector = XenSelector(bytes, kXenGsOffset);
  auto ctrl = [&](int n) { return LoadUnchecked<uint64_t>(bytes, kXenCtrlregOffset + 8 * n); };
  auto dbg = [&](int n) { return LoadUnchecked<uint64_t>(bytes, kXenDebugregOffset + 8 * n); };
  regs->cr0 = ctrl(0);
  regs->cr2 = ctrl(2);
  regs->cr3 = ctrl(3);
  regs->cr4 = ctrl(4);
  regs->dr0 = dbg(0);
  regs->dr1 = dbg(1);
  regs->dr2 = dbg(2);
  regs->dr3 = dbg(3);
  regs->dr6 = dbg(6);
  regs->dr7 = dbg(7);
  regs->fs_base = LoadUnchecked<uint64_t>(bytes, kXenFsBaseOffset);
  regs->fs.base = regs->fs_base;
  regs->kernel_gs_base = LoadUnchecked<uint64_t>(bytes, kXenGsBaseKernelOffset);
  regs->gs_base = LoadUnchecked<uint64_t>(bytes, kXenGsBaseUserOffset);
  regs->gs.base = regs->gs_base;
}

std::vector<uint8_t> EncodeXenContext(const amd64::Registers& regs) {
  std::vector<uint8_t> out(kXenContextSize, 0);
  for (uint64_t i = 0; i < 15; ++i) {
    Store<uint64_t>(out, kXenUserRegsOffset + 8 * i, regs.*kPrstatusGprs[i]);
  }
  Store<uint64_t>(out, kXenUserRegsOffset + kXenRipOffset, regs.rip);
  Store<uint64_t>(out, kXenUserRegsOffset + kXenRflagsOffset, regs.rflags);
  Store<uint64_t>(out, kXenUserRegsOffset + kXenRspOffset, regs.rsp);
  Store<uint16_t>(out, kXenUserRegsOffset + kXenCsOffset, regs.cs.selector);
  Store<uint16_t>(out, kXenUserRegsOffset + kXenSsOffset, regs.ss.selector);
  Store<uint16_t>(out, kXenUserRegsOffset + kXenEsOffset, regs.es.selector);
  Store<uint16_t>(out, kXenUserRegsOffset + kXenDsOffset, regs.ds.selector);
  Store<uint16_t>(out, kXenUserRegsOffset + kXenFsOffset, regs.fs.selector);
  Store<uint16_t>(out, kXenUserRegsOffset + kXenGsOffset, regs.gs.selector);
  const uint64_t cr[8] = {regs.cr0, 0, regs.cr2, regs.cr3, regs.cr4, 0, 0, 0};
  const uint64_t dr[8] = {regs.dr0, regs.dr1, regs.dr2, regs.dr3, 0, 0, regs.dr6, regs.dr7};
  for (int i = 0; i < 8; ++i) {
    Store<uint64_t>(out, kXenCtrlregOffset + 8 * i, cr[i]);
    Store<uint64_t>(out, kXenDebugregOffset + 8 * i, dr[i]);
  }
  Store<uint64_t>(out, kXenFsBaseOffset, regs.fs.base);
  Store<uint64_t>(out, kXenGsBaseKernelOffset, regs.kernel_gs_base);
  Store<uint64_t>(out, kXenGsBaseUserOffset, regs.gs.base);
  return out;
}

}  // namespace vmi::dump_internal
