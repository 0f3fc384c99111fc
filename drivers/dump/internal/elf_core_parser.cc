// QEMU dump-guest-memory ELF cores: PT_LOAD segments map guest-physical
// ranges (p_paddr), PT_NOTE segments carry one NT_PRSTATUS ("CORE") and one
// QEMUCPUState ("QEMU") note per vCPU, in vCPU order.

#include <algorithm>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "core/error.h"
#include "drivers/dump/internal/constants.h"
#include "drivers/dump/internal/cpu_state.h"
#include "drivers/dump/internal/elf.h"
#include "drivers/dump/internal/parsers.h"

namespace vmi::dump_internal {
namespace {

// VcpuId is 16 bits wide.
constexpr size_t kMaxVcpus = 0xffff;

// The program header count, following PN_XNUM to section 0's sh_info.
absl::StatusOr<uint64_t> ProgramHeaderCount(absl::Span<const uint8_t> file,
                                            const Elf64_Ehdr& ehdr) {
  if (ehdr.e_phnum != PN_XNUM) return ehdr.e_phnum;
  const auto shdr0 = Load<Elf64_Shdr>(file, ehdr.e_shoff);
  if (!shdr0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "e_phnum is PN_XNUM but section header 0 at offset 0x%x is beyond end of file (size "
        "0x%x)",
        ehdr.e_shoff, file.size()));
  }
  return shdr0->sh_info;
}

}  // namespace

absl::StatusOr<DumpLayout> ParseElfCore(absl::Span<const uint8_t> file,
                                        const ParseOptions& options) {
  VMI_ASSIGN_OR_RETURN(const Elf64_Ehdr ehdr, ReadElfHeader(file));
  DumpLayout layout;
  layout.format = dump::DumpFormat::kElfCore;
  layout.source_kind = "PT_LOAD segment";

  VMI_ASSIGN_OR_RETURN(const uint64_t phnum, ProgramHeaderCount(file, ehdr));
  if (phnum == 0) return absl::InvalidArgumentError("no program headers (e_phnum is 0)");
  if (ehdr.e_phentsize < sizeof(Elf64_Phdr)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("e_phentsize %u at offset 54 is smaller than an Elf64_Phdr (%u)",
                        ehdr.e_phentsize, sizeof(Elf64_Phdr)));
  }
  uint64_t table_size;
  if (!CheckedMul(phnum, ehdr.e_phentsize, &table_size) ||
      !InBounds(file.size(), ehdr.e_phoff, table_size)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "program header table at offset 0x%x (%u entries of %u bytes) extends beyond end of "
        "file (size 0x%x)",
        ehdr.e_phoff, phnum, ehdr.e_phentsize, file.size()));
  }

  std::vector<ElfNote> notes;
  for (uint64_t i = 0; i < phnum; ++i) {
    const uint64_t at = ehdr.e_phoff + i * ehdr.e_phentsize;
    const Elf64_Phdr ph = LoadUnchecked<Elf64_Phdr>(file, at);
    if (ph.p_type == PT_NOTE) {
      ParseNotes(file, ph.p_offset, ph.p_filesz, absl::StrFormat("PT_NOTE segment %u", i), &notes,
                 &layout.warnings);
      continue;
    }
    if (ph.p_type != PT_LOAD) continue;
    if (ph.p_filesz > ph.p_memsz) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "PT_LOAD segment %u (header at offset 0x%x): p_filesz 0x%x exceeds p_memsz 0x%x", i, at,
          ph.p_filesz, ph.p_memsz));
    }
    uint64_t gpa_end, file_end;
    if (!CheckedAdd(ph.p_paddr, ph.p_memsz, &gpa_end) || gpa_end > kMaxPhysicalAddress) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "PT_LOAD segment %u (header at offset 0x%x): p_paddr 0x%x + p_memsz 0x%x is beyond "
          "the 52-bit physical address space",
          i, at, ph.p_paddr, ph.p_memsz));
    }
    if (!CheckedAdd(ph.p_offset, ph.p_filesz, &file_end)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "PT_LOAD segment %u (header at offset 0x%x): p_offset 0x%x + p_filesz 0x%x overflows", i,
          at, ph.p_offset, ph.p_filesz));
    }
    uint64_t available = ph.p_filesz;
    if (file_end > file.size()) {
      available = ph.p_offset < file.size() ? file.size() - ph.p_offset : 0;
      layout.warnings.push_back(absl::StrFormat(
          "PT_LOAD segment %u: data [0x%x, 0x%x) extends beyond end of file (size 0x%x); memory "
          "from gpa 0x%x to 0x%x is missing",
          i, ph.p_offset, file_end, file.size(), ph.p_paddr + available, gpa_end));
    }
    AddWholePages(ph.p_paddr, available, ph.p_offset, /*zero=*/false, i, &layout.extents);
    if (ph.p_memsz > ph.p_filesz && options.zero_fill_elf_memsz) {
      AddWholePages(ph.p_paddr + ph.p_filesz, ph.p_memsz - ph.p_filesz, 0, /*zero=*/true, i,
                    &layout.extents);
    }
  }

  // vCPU N: the Nth NT_PRSTATUS note, overlaid by the Nth QEMU note.
  std::vector<std::optional<amd64::Registers>> from_prstatus, from_qemu;
  for (const ElfNote& note : notes) {
    if (note.name == "CORE" && note.type == NT_PRSTATUS) {
      if (ehdr.e_machine != EM_X86_64 || note.desc.size() < kPrstatusSize) {
        layout.warnings.push_back(
            absl::StrFormat("NT_PRSTATUS note at offset 0x%x: %u-byte descriptor is not the x86-64 "
                            "elf_prstatus (%u bytes); skipped",
                            note.offset, note.desc.size(), kPrstatusSize));
        from_prstatus.emplace_back();
        continue;
      }
      DecodePrstatus(note.desc, &from_prstatus.emplace_back().emplace());
    } else if (note.name == "QEMU" && note.type == 0) {
      const uint32_t version = note.desc.size() >= 8 ? LoadUnchecked<uint32_t>(note.desc, 0) : 0;
      if (note.desc.size() < kQemuCpuStateSizeV1 || version != kQemuCpuStateVersion) {
        layout.warnings.push_back(absl::StrFormat(
            "QEMU note at offset 0x%x: %u-byte QEMUCPUState version %u not understood "
            "(expected version 1, at least %u bytes); skipped",
            note.offset, note.desc.size(), version, kQemuCpuStateSizeV1));
        from_qemu.emplace_back();
        continue;
      }
      DecodeQemuCpuState(note.desc, &from_qemu.emplace_back().emplace());
    } else if (note.name != "CORE" && note.name != "QEMU") {
      if (layout.notes.size() == kMaxKeptNotes || note.desc.size() > kMaxKeptNoteBytes) {
        layout.warnings.push_back(absl::StrFormat(
            "%s note at offset 0x%x (%u bytes): not kept (at most %u notes of %u bytes)",
            note.name, note.offset, note.desc.size(), kMaxKeptNotes, kMaxKeptNoteBytes));
        continue;
      }
      layout.notes.push_back(
          {std::string(note.name), note.type, std::vector<uint8_t>(note.desc.begin(), note.desc.end())});
    }
  }
  size_t vcpus = std::max(from_prstatus.size(), from_qemu.size());
  if (vcpus > kMaxVcpus) {
    layout.warnings.push_back(
        absl::StrFormat("%u vCPU notes; only the first %u are used", vcpus, kMaxVcpus));
    vcpus = kMaxVcpus;
  }
  layout.registers.resize(vcpus);
  for (size_t v = 0; v < vcpus; ++v) {
    amd64::Registers& regs = layout.registers[v];
    if (v < from_prstatus.size() && from_prstatus[v]) regs = *from_prstatus[v];
    if (v < from_qemu.size() && from_qemu[v]) {
      regs = *from_qemu[v];
      if (ehdr.e_machine == EM_X86_64) InferEfer(&regs);
    }
  }
  VMI_RETURN_IF_ERROR(layout.Finalize());
  return layout;
}

}  // namespace vmi::dump_internal
