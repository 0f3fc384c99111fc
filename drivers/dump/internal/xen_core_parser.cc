// Xen `xl dump-core` files (libxenctrl xc_core): an ELF64 ET_CORE without
// program headers whose sections are .note.Xen (dump-core header note:
// magic, vCPU and page counts, page size), .xen_prstatus (one
// vcpu_guest_context per vCPU), .xen_pages (the pages, in order) and
// .xen_pfn (HVM / auto-translated: the guest frame of each page) or
// .xen_p2m (PV: {pfn, gmfn} per page).

#include <algorithm>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "core/error.h"
#include "drivers/dump/internal/constants.h"
#include "drivers/dump/internal/cpu_state.h"
#include "drivers/dump/internal/elf.h"
#include "drivers/dump/internal/parsers.h"

namespace vmi::dump_internal {
namespace {

constexpr size_t kMaxVcpus = 0xffff;

struct Section {
  std::string_view name;
  Elf64_Shdr shdr;
  uint64_t index;
};

absl::StatusOr<std::vector<Section>> ReadSections(absl::Span<const uint8_t> file,
                                                  const Elf64_Ehdr& ehdr) {
  if (ehdr.e_shoff == 0) return absl::InvalidArgumentError("no section header table (e_shoff 0)");
  if (ehdr.e_shentsize < sizeof(Elf64_Shdr)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("e_shentsize %u at offset 58 is smaller than an Elf64_Shdr (%u)",
                        ehdr.e_shentsize, sizeof(Elf64_Shdr)));
  }
  const auto shdr0 = Load<Elf64_Shdr>(file, ehdr.e_shoff);
  if (!shdr0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("section header table at offset 0x%x is beyond end of file (size 0x%x)",
                        ehdr.e_shoff, file.size()));
  }
  const uint64_t shnum = ehdr.e_shnum != 0 ? ehdr.e_shnum : shdr0->sh_size;
  uint64_t table_size;
  if (!CheckedMul(shnum, ehdr.e_shentsize, &table_size) ||
      !InBounds(file.size(), ehdr.e_shoff, table_size)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "section header table at offset 0x%x (%u entries of %u bytes) extends beyond end of "
        "file (size 0x%x)",
        ehdr.e_shoff, shnum, ehdr.e_shentsize, file.size()));
  }
  const uint64_t shstrndx = ehdr.e_shstrndx == SHN_XINDEX ? shdr0->sh_link : ehdr.e_shstrndx;
  if (shstrndx >= shnum) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "section name table index %u is not below the section count %u", shstrndx, shnum));
  }
  const auto strtab = LoadUnchecked<Elf64_Shdr>(file, ehdr.e_shoff + shstrndx * ehdr.e_shentsize);
  if (!InBounds(file.size(), strtab.sh_offset, strtab.sh_size)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "section name table (section %u) at offset 0x%x size 0x%x extends beyond end of file "
        "(size 0x%x)",
        shstrndx, strtab.sh_offset, strtab.sh_size, file.size()));
  }
  const char* names = reinterpret_cast<const char*>(file.data() + strtab.sh_offset);
  std::vector<Section> sections;
  sections.reserve(shnum);
  for (uint64_t i = 0; i < shnum; ++i) {
    Section s;
    s.shdr = LoadUnchecked<Elf64_Shdr>(file, ehdr.e_shoff + i * ehdr.e_shentsize);
    s.index = i;
    if (s.shdr.sh_name < strtab.sh_size) {
      const size_t max_len = strtab.sh_size - s.shdr.sh_name;
      const char* name = names + s.shdr.sh_name;
      s.name = std::string_view(name, strnlen(name, max_len));
    }
    sections.push_back(s);
  }
  return sections;
}

const Section* Find(const std::vector<Section>& sections, std::string_view name) {
  for (const Section& s : sections) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

// [offset, offset + size) of a section clipped to the file; warns when clipped.
uint64_t ClippedSize(absl::Span<const uint8_t> file, const Section& s,
                     std::vector<std::string>* warnings) {
  if (InBounds(file.size(), s.shdr.sh_offset, s.shdr.sh_size)) return s.shdr.sh_size;
  const uint64_t available = s.shdr.sh_offset < file.size() ? file.size() - s.shdr.sh_offset : 0;
  warnings->push_back(absl::StrFormat(
      "section %s (%u) at offset 0x%x size 0x%x extends beyond end of file (size 0x%x); "
      "read up to it",
      std::string(s.name), s.index, s.shdr.sh_offset, s.shdr.sh_size, file.size()));
  return available;
}

}  // namespace

bool HasXenSections(absl::Span<const uint8_t> file) {
  const auto ehdr = ReadElfHeader(file);
  if (!ehdr.ok()) return false;
  const auto sections = ReadSections(file, *ehdr);
  return sections.ok() && Find(*sections, ".xen_pages") != nullptr;
}

absl::StatusOr<DumpLayout> ParseXenCore(absl::Span<const uint8_t> file) {
  VMI_ASSIGN_OR_RETURN(const Elf64_Ehdr ehdr, ReadElfHeader(file));
  VMI_ASSIGN_OR_RETURN(const std::vector<Section> sections, ReadSections(file, ehdr));
  DumpLayout layout;
  layout.format = dump::DumpFormat::kXenCore;

  const Section* note = Find(sections, ".note.Xen");
  if (note == nullptr) return absl::InvalidArgumentError("no .note.Xen section");
  std::vector<ElfNote> notes;
  ParseNotes(file, note->shdr.sh_offset, note->shdr.sh_size,
             absl::StrFormat(".note.Xen section (%u)", note->index), &notes, &layout.warnings);
  const ElfNote* header = nullptr;
  for (const ElfNote& n : notes) {
    if (n.name == "Xen" && n.type == kXenElfnoteDumpcoreHeader) header = &n;
  }
  if (header == nullptr || header->desc.size() < 32) {
    return absl::InvalidArgumentError(
        "no complete dump-core header note (type 0x2000001, 32 bytes) in .note.Xen");
  }
  const uint64_t magic = LoadUnchecked<uint64_t>(header->desc, 0);
  const uint64_t nr_vcpus = LoadUnchecked<uint64_t>(header->desc, 8);
  uint64_t nr_pages = LoadUnchecked<uint64_t>(header->desc, 16);
  const uint64_t page_size = LoadUnchecked<uint64_t>(header->desc, 24);
  if (magic != kXenCoreMagic && magic != kXenCoreMagicHvm) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "wrong magic 0x%x in dump-core header note at offset 0x%x (expected 0x%x or 0x%x)", magic,
        header->offset, kXenCoreMagic, kXenCoreMagicHvm));
  }
  if (page_size != kPageSize) {
    return absl::InvalidArgumentError(
        absl::StrFormat("page size %u in dump-core header note at offset 0x%x is not 4096",
                        page_size, header->offset));
  }

  // Pages and their frame numbers.
  const Section* pages = Find(sections, ".xen_pages");
  if (pages == nullptr) return absl::InvalidArgumentError("no .xen_pages section");
  const Section* table = Find(sections, ".xen_pfn");
  uint64_t entry_size = 8;
  if (table == nullptr) {
    table = Find(sections, ".xen_p2m");
    entry_size = 16;  // {pfn, gmfn}
  }
  if (table == nullptr) return absl::InvalidArgumentError("neither .xen_pfn nor .xen_p2m section");
  layout.source_kind = absl::StrFormat("%s entry", std::string(table->name));
  const uint64_t page_slots = ClippedSize(file, *pages, &layout.warnings) / kPageSize;
  const uint64_t table_entries = ClippedSize(file, *table, &layout.warnings) / entry_size;
  const uint64_t n = std::min({nr_pages, page_slots, table_entries});
  if (n < nr_pages) {
    layout.warnings.push_back(absl::StrFormat(
        "header announces %u pages but .xen_pages holds %u and %s %u entries; %u served", nr_pages,
        page_slots, std::string(table->name), table_entries, n));
  }
  nr_pages = n;
  Extent current;
  for (uint64_t i = 0; i < nr_pages; ++i) {
    const uint64_t pfn = LoadUnchecked<uint64_t>(file, table->shdr.sh_offset + i * entry_size);
    if (pfn == kXenInvalidPfn) continue;
    if (pfn >= (kMaxPhysicalAddress >> kPageShift)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s entry %u (offset 0x%x): pfn 0x%x is beyond the 52-bit physical address space",
          std::string(table->name), i, table->shdr.sh_offset + i * entry_size, pfn));
    }
    const uint64_t offset = pages->shdr.sh_offset + i * kPageSize;
    if (current.pages > 0 && pfn == current.end_gfn() &&
        offset == current.file_offset + current.pages * kPageSize) {
      ++current.pages;
      continue;
    }
    if (current.pages > 0) layout.extents.push_back(current);
    current = Extent{.first_gfn = pfn, .pages = 1, .file_offset = offset, .source = i};
  }
  if (current.pages > 0) layout.extents.push_back(current);

  // vCPU state.
  if (const Section* prstatus = Find(sections, ".xen_prstatus"); prstatus != nullptr) {
    const uint64_t entsize =
        prstatus->shdr.sh_entsize ? prstatus->shdr.sh_entsize : kXenContextSize;
    if (entsize < kXenContextSize) {
      layout.warnings.push_back(absl::StrFormat(
          ".xen_prstatus entry size %u is not the x86-64 vcpu_guest_context (%u bytes); no "
          "registers",
          entsize, kXenContextSize));
    } else {
      const uint64_t present = ClippedSize(file, *prstatus, &layout.warnings) / entsize;
      uint64_t count = std::min(nr_vcpus, present);
      if (count < nr_vcpus) {
        layout.warnings.push_back(absl::StrFormat(
            "header announces %u vCPUs but .xen_prstatus holds %u contexts", nr_vcpus, present));
      }
      if (count > kMaxVcpus) {
        layout.warnings.push_back(
            absl::StrFormat("%u vCPU contexts; only the first %u are used", count, kMaxVcpus));
        count = kMaxVcpus;
      }
      layout.registers.resize(count);
      for (uint64_t v = 0; v < count; ++v) {
        DecodeXenContext(file.subspan(prstatus->shdr.sh_offset + v * entsize, kXenContextSize),
                         &layout.registers[v]);
        InferEfer(&layout.registers[v]);
      }
    }
  } else {
    layout.warnings.push_back("no .xen_prstatus section: no vCPU state");
  }
  VMI_RETURN_IF_ERROR(layout.Finalize());
  return layout;
}

}  // namespace vmi::dump_internal
