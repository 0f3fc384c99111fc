#include "drivers/dump/internal/elf.h"

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "drivers/dump/internal/layout.h"

namespace vmi::dump_internal {

absl::StatusOr<Elf64_Ehdr> ReadElfHeader(absl::Span<const uint8_t> file) {
  if (file.size() < sizeof(Elf64_Ehdr)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("truncated ELF header: file is %u bytes, the header needs %u", file.size(),
                        sizeof(Elf64_Ehdr)));
  }
  const Elf64_Ehdr ehdr = LoadUnchecked<Elf64_Ehdr>(file, 0);
  if (std::memcmp(ehdr.e_ident, ELFMAG, SELFMAG) != 0) {
    return absl::InvalidArgumentError("wrong magic at offset 0: not an ELF file");
  }
  if (ehdr.e_ident[EI_CLASS] != ELFCLASS64) {
    return absl::InvalidArgumentError(
        absl::StrFormat("unsupported ELF class %u at offset 4 (only ELFCLASS64 dumps are read)",
                        ehdr.e_ident[EI_CLASS]));
  }
  if (ehdr.e_ident[EI_DATA] != ELFDATA2LSB) {
    return absl::InvalidArgumentError(
        absl::StrFormat("unsupported ELF data encoding %u at offset 5 (only little-endian)",
                        ehdr.e_ident[EI_DATA]));
  }
  if (ehdr.e_type != ET_CORE) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ELF type %u at offset 16 is not ET_CORE (4)", ehdr.e_type));
  }
  if (ehdr.e_machine != EM_X86_64 && ehdr.e_machine != EM_386) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ELF machine %u at offset 18 is not x86 (EM_X86_64 62 or EM_386 3)", ehdr.e_machine));
  }
  return ehdr;
}

void ParseNotes(absl::Span<const uint8_t> file, uint64_t offset, uint64_t size,
                const std::string& where, std::vector<ElfNote>* notes,
                std::vector<std::string>* warnings) {
  uint64_t end;
  if (!CheckedAdd(offset, size, &end) || end > file.size()) {
    warnings->push_back(absl::StrFormat(
        "%s: notes at [0x%x, +0x%x) extend beyond end of file (size 0x%x); parsed up to it", where,
        offset, size, file.size()));
    if (offset >= file.size()) return;
    end = file.size();
  }
  uint64_t pos = offset;
  while (pos < end) {
    if (end - pos < sizeof(Elf64_Nhdr)) {
      warnings->push_back(absl::StrFormat("%s: truncated note header at offset 0x%x", where, pos));
      return;
    }
    const Elf64_Nhdr nhdr = LoadUnchecked<Elf64_Nhdr>(file, pos);
    // 32-bit sizes padded to 4: the sum fits easily in 64 bits.
    const uint64_t name_padded = (uint64_t{nhdr.n_namesz} + 3) & ~uint64_t{3};
    const uint64_t desc_padded = (uint64_t{nhdr.n_descsz} + 3) & ~uint64_t{3};
    const uint64_t total = sizeof(Elf64_Nhdr) + name_padded + desc_padded;
    // The last note's desc padding may be missing.
    const uint64_t needed = sizeof(Elf64_Nhdr) + name_padded + nhdr.n_descsz;
    if (needed > end - pos) {
      warnings->push_back(absl::StrFormat(
          "%s: note at offset 0x%x (namesz %u, descsz %u) runs past the end of its region at "
          "0x%x; it and any later notes are ignored",
          where, pos, nhdr.n_namesz, nhdr.n_descsz, end));
      return;
    }
    ElfNote note;
    note.type = nhdr.n_type;
    note.offset = pos;
    const char* name = reinterpret_cast<const char*>(file.data() + pos + sizeof(Elf64_Nhdr));
    size_t name_len = nhdr.n_namesz;
    while (name_len > 0 && name[name_len - 1] == '\0') --name_len;
    note.name = absl::string_view(name, name_len);
    note.desc = file.subspan(pos + sizeof(Elf64_Nhdr) + name_padded, nhdr.n_descsz);
    notes->push_back(note);
    if (total > end - pos) break;
    pos += total;
  }
}

}  // namespace vmi::dump_internal
