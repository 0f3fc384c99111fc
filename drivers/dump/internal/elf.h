// ELF64 pieces shared by the QEMU and Xen core parsers: a checked file
// header and a bounded note iterator.
//
// Thread-safety: stateless functions; thread-safe.

#ifndef VMI_DRIVERS_DUMP_INTERNAL_ELF_H_
#define VMI_DRIVERS_DUMP_INTERNAL_ELF_H_

#include <elf.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace vmi::dump_internal {

// The ELF header of `file`, checked: magic, ELFCLASS64, little-endian,
// ET_CORE, EM_X86_64 (or EM_386, which QEMU writes for a guest outside long
// mode with memory above 4 GiB).
absl::StatusOr<Elf64_Ehdr> ReadElfHeader(absl::Span<const uint8_t> file);

struct ElfNote {
  uint32_t type = 0;
  absl::string_view name;  // without trailing NULs
  absl::Span<const uint8_t> desc;
  uint64_t offset = 0;  // of the note header in the file
};

// Appends the notes in file[offset, offset + size) to `notes`. A region
// running past the end of the file is parsed up to it; a note whose sizes
// run past the region ends the walk. Both add a warning naming `where` and
// the offset.
void ParseNotes(absl::Span<const uint8_t> file, uint64_t offset, uint64_t size,
                const std::string& where, std::vector<ElfNote>* notes,
                std::vector<std::string>* warnings);

}  // namespace vmi::dump_internal

#endif  // VMI_DRIVERS_DUMP_INTERNAL_ELF_H_
