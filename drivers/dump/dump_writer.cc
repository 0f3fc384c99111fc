#include "drivers/dump/dump_writer.h"

#include <elf.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "core/error.h"
#include "drivers/dump/internal/constants.h"
#include "drivers/dump/internal/cpu_state.h"
#include "drivers/dump/internal/layout.h"

namespace vmi::dump {
namespace {

using dump_internal::kPageSize;

// Positional writes to a file, removed unless Commit() is called.
class OutputFile {
 public:
  static absl::StatusOr<OutputFile> Create(const std::string& path) {
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoError(absl::StrFormat("open(%s)", path), errno);
    return OutputFile(path, fd);
  }
  OutputFile(OutputFile&& other) noexcept : path_(std::move(other.path_)), fd_(other.fd_) {
    other.fd_ = -1;
  }
  ~OutputFile() {
    if (fd_ >= 0) {
      close(fd_);
      unlink(path_.c_str());
    }
  }

  absl::Status Write(uint64_t offset, const void* data, size_t size) {
    const auto* p = static_cast<const uint8_t*>(data);
    while (size > 0) {
      const ssize_t n = pwrite(fd_, p, size, static_cast<off_t>(offset));
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoError(absl::StrFormat("pwrite(%s, offset=0x%x)", path_, offset), errno);
      }
      p += n;
      offset += n;
      size -= n;
    }
    return absl::OkStatus();
  }
  template <typename T>
  absl::Status WriteValue(uint64_t offset, const T& value) {
    return Write(offset, &value, sizeof(T));
  }
  absl::Status Truncate(uint64_t size) {
    if (ftruncate(fd_, static_cast<off_t>(size)) != 0) {
      return ErrnoError(absl::StrFormat("ftruncate(%s, 0x%x)", path_, size), errno);
    }
    return absl::OkStatus();
  }
  absl::Status Commit() {
    const int fd = fd_;
    fd_ = -1;
    if (close(fd) != 0) return ErrnoError(absl::StrFormat("close(%s)", path_), errno);
    return absl::OkStatus();
  }

 private:
  OutputFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_;
};

absl::Status Validate(const DumpSource& source) {
  if (!source.read_page) return absl::InvalidArgumentError("write_dump: no read_page callback");
  if (source.ranges.empty()) return absl::InvalidArgumentError("write_dump: no memory ranges");
  constexpr uint64_t kMaxGfn = dump_internal::kMaxPhysicalAddress >> dump_internal::kPageShift;
  uint64_t previous_end = 0;
  for (size_t i = 0; i < source.ranges.size(); ++i) {
    const GfnRange& r = source.ranges[i];
    if (r.count == 0 || r.first.value() >= kMaxGfn || r.count > kMaxGfn - r.first.value()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("write_dump: range %u (first=%s, count=%u) is empty or beyond 52 bits", i,
                          r.first, r.count));
    }
    if (i > 0 && r.first.value() < previous_end) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "write_dump: range %u (first=%s) overlaps or precedes range %u", i, r.first, i - 1));
    }
    previous_end = r.first.value() + r.count;
  }
  return absl::OkStatus();
}

// Writes the frames of `range` at consecutive file offsets from `offset`.
absl::Status WriteRange(OutputFile& out, const DumpSource& source, const GfnRange& range,
                        uint64_t offset) {
  std::vector<uint8_t> page(kPageSize);
  for (uint64_t i = 0; i < range.count; ++i) {
    const Gfn gfn = range.first + i;
    std::memset(page.data(), 0, page.size());
    VMI_RETURN_IF_ERROR(AnnotateStatus(source.read_page(gfn, absl::MakeSpan(page)),
                                       absl::StrFormat("write_dump: read_page(gfn=%s)", gfn)));
    VMI_RETURN_IF_ERROR(out.Write(offset + i * kPageSize, page.data(), page.size()));
  }
  return absl::OkStatus();
}

uint64_t PageAlign(uint64_t offset) { return (offset + kPageSize - 1) & ~(kPageSize - 1); }

// One ELF note: header, name padded to 4, desc padded to 4.
void AppendNote(std::vector<uint8_t>& out, const char* name, uint32_t type,
                const std::vector<uint8_t>& desc) {
  Elf64_Nhdr nhdr;
  nhdr.n_namesz = static_cast<uint32_t>(std::strlen(name) + 1);
  nhdr.n_descsz = static_cast<uint32_t>(desc.size());
  nhdr.n_type = type;
  const size_t at = out.size();
  out.resize(at + sizeof(nhdr) + ((nhdr.n_namesz + 3) & ~3u) + ((desc.size() + 3) & ~size_t{3}));
  std::memcpy(out.data() + at, &nhdr, sizeof(nhdr));
  std::memcpy(out.data() + at + sizeof(nhdr), name, nhdr.n_namesz);
  if (!desc.empty()) {
    std::memcpy(out.data() + at + sizeof(nhdr) + ((nhdr.n_namesz + 3) & ~3u), desc.data(),
                desc.size());
  }
}

Elf64_Ehdr CoreHeader() {
  Elf64_Ehdr ehdr;
  std::memset(&ehdr, 0, sizeof(ehdr));
  std::memcpy(ehdr.e_ident, ELFMAG, SELFMAG);
  ehdr.e_ident[EI_CLASS] = ELFCLASS64;
  ehdr.e_ident[EI_DATA] = ELFDATA2LSB;
  ehdr.e_ident[EI_VERSION] = EV_CURRENT;
  ehdr.e_type = ET_CORE;
  ehdr.e_machine = EM_X86_64;
  ehdr.e_version = EV_CURRENT;
  ehdr.e_ehsize = sizeof(Elf64_Ehdr);
  return ehdr;
}

}  // namespace

absl::Status WriteRawDump(const std::string& path, const DumpSource& source) {
  VMI_RETURN_IF_ERROR(Validate(source));
  VMI_ASSIGN_OR_RETURN(OutputFile out, OutputFile::Create(path));
  // Holes stay unwritten: zeros, and sparse on file systems that allow it.
  const GfnRange& last = source.ranges.back();
  VMI_RETURN_IF_ERROR(out.Truncate((last.first.value() + last.count) * kPageSize));
  for (const GfnRange& r : source.ranges) {
    VMI_RETURN_IF_ERROR(WriteRange(out, source, r, r.first.value() * kPageSize));
  }
  return out.Commit();
}

absl::Status WriteLimeDump(const std::string& path, const DumpSource& source) {
  VMI_RETURN_IF_ERROR(Validate(source));
  VMI_ASSIGN_OR_RETURN(OutputFile out, OutputFile::Create(path));
  uint64_t offset = 0;
  for (const GfnRange& r : source.ranges) {
    uint8_t header[dump_internal::kLimeHeaderSize] = {};
    const uint32_t magic = dump_internal::kLimeMagic, version = dump_internal::kLimeVersion;
    const uint64_t start = r.first.value() * kPageSize;
    const uint64_t end = start + r.count * kPageSize - 1;
    std::memcpy(header, &magic, 4);
    std::memcpy(header + 4, &version, 4);
    std::memcpy(header + 8, &start, 8);
    std::memcpy(header + 16, &end, 8);
    VMI_RETURN_IF_ERROR(out.Write(offset, header, sizeof(header)));
    offset += sizeof(header);
    VMI_RETURN_IF_ERROR(WriteRange(out, source, r, offset));
    offset += r.count * kPageSize;
  }
  return out.Commit();
}

absl::Status WriteElfCoreDump(const std::string& path, const DumpSource& source) {
  VMI_RETURN_IF_ERROR(Validate(source));
  VMI_ASSIGN_OR_RETURN(OutputFile out, OutputFile::Create(path));
  // Notes as QEMU orders them: every vCPU's NT_PRSTATUS, then every vCPU's
  // QEMUCPUState. pr_pid is the vCPU index + 1.
  std::vector<uint8_t> notes;
  for (size_t v = 0; v < source.vcpus.size(); ++v) {
    AppendNote(notes, "CORE", NT_PRSTATUS,
               dump_internal::EncodePrstatus(source.vcpus[v], static_cast<uint32_t>(v + 1)));
  }
  for (const amd64::Registers& regs : source.vcpus) {
    AppendNote(notes, "QEMU", 0, dump_internal::EncodeQemuCpuState(regs));
  }
  for (const DumpSource::Note& note : source.notes) {
    AppendNote(notes, note.name.c_str(), note.type, note.desc);
  }
  const uint64_t phnum = 1 + source.ranges.size();
  const bool extended = phnum >= PN_XNUM;
  Elf64_Ehdr ehdr = CoreHeader();
  ehdr.e_phoff = sizeof(Elf64_Ehdr);
  ehdr.e_phentsize = sizeof(Elf64_Phdr);
  ehdr.e_phnum = extended ? PN_XNUM : static_cast<uint16_t>(phnum);
  uint64_t offset = ehdr.e_phoff + phnum * sizeof(Elf64_Phdr);
  if (extended) {
    // The real count goes in section header 0's sh_info.
    ehdr.e_shoff = offset;
    ehdr.e_shentsize = sizeof(Elf64_Shdr);
    ehdr.e_shnum = 1;
    Elf64_Shdr shdr0;
    std::memset(&shdr0, 0, sizeof(shdr0));
    shdr0.sh_info = static_cast<uint32_t>(phnum);
    VMI_RETURN_IF_ERROR(out.WriteValue(offset, shdr0));
    offset += sizeof(Elf64_Shdr);
  }
  VMI_RETURN_IF_ERROR(out.WriteValue(0, ehdr));

  Elf64_Phdr note_ph;
  std::memset(&note_ph, 0, sizeof(note_ph));
  note_ph.p_type = PT_NOTE;
  note_ph.p_offset = offset;
  note_ph.p_filesz = note_ph.p_memsz = notes.size();
  VMI_RETURN_IF_ERROR(out.WriteValue(ehdr.e_phoff, note_ph));
  if (!notes.empty()) VMI_RETURN_IF_ERROR(out.Write(offset, notes.data(), notes.size()));
  offset = PageAlign(offset + notes.size());

  for (size_t i = 0; i < source.ranges.size(); ++i) {
    const GfnRange& r = source.ranges[i];
    Elf64_Phdr ph;
    std::memset(&ph, 0, sizeof(ph));
    ph.p_type = PT_LOAD;
    ph.p_offset = offset;
    ph.p_paddr = r.first.value() * kPageSize;
    ph.p_filesz = ph.p_memsz = r.count * kPageSize;
    VMI_RETURN_IF_ERROR(out.WriteValue(ehdr.e_phoff + (1 + i) * sizeof(Elf64_Phdr), ph));
    VMI_RETURN_IF_ERROR(WriteRange(out, source, r, offset));
    offset += ph.p_filesz;
  }
  return out.Commit();
}

absl::Status WriteXenCoreDump(const std::string& path, const DumpSource& source) {
  VMI_RETURN_IF_ERROR(Validate(source));
  VMI_ASSIGN_OR_RETURN(OutputFile out, OutputFile::Create(path));
  uint64_t nr_pages = 0;
  for (const GfnRange& r : source.ranges) nr_pages += r.count;

  // Section name table.
  static constexpr char kNames[] = "\0.shstrtab\0.note.Xen\0.xen_prstatus\0.xen_pages\0.xen_pfn";
  const std::string strtab(kNames, sizeof(kNames));  // with the final NUL
  const uint32_t name_shstrtab = 1, name_note = 11, name_prstatus = 21, name_pages = 35,
                 name_pfn = 46;

  std::vector<uint8_t> notes;
  AppendNote(notes, "Xen", dump_internal::kXenElfnoteDumpcoreNone, {});
  std::vector<uint8_t> header(32);
  const uint64_t header_fields[4] = {dump_internal::kXenCoreMagicHvm, source.vcpus.size(), nr_pages,
                                     kPageSize};
  std::memcpy(header.data(), header_fields, sizeof(header_fields));
  AppendNote(notes, "Xen", dump_internal::kXenElfnoteDumpcoreHeader, header);
  std::vector<uint8_t> format_version(8);
  const uint64_t version = 1;  // XEN_DUMPCORE_FORMAT_VERSION(0, 1)
  std::memcpy(format_version.data(), &version, 8);
  AppendNote(notes, "Xen", dump_internal::kXenElfnoteDumpcoreFormatVersion, format_version);

  constexpr uint16_t kSections = 6;
  Elf64_Ehdr ehdr = CoreHeader();
  ehdr.e_shoff = sizeof(Elf64_Ehdr);
  ehdr.e_shentsize = sizeof(Elf64_Shdr);
  ehdr.e_shnum = kSections;
  ehdr.e_shstrndx = 1;
  Elf64_Shdr sh[kSections];
  std::memset(sh, 0, sizeof(sh));
  uint64_t offset = ehdr.e_shoff + kSections * sizeof(Elf64_Shdr);
  auto set = [](Elf64_Shdr& s, uint32_t name, uint32_t type, uint64_t off, uint64_t size,
                uint64_t align, uint64_t entsize) {
    s.sh_name = name;
    s.sh_type = type;
    s.sh_offset = off;
    s.sh_size = size;
    s.sh_addralign = align;
    s.sh_entsize = entsize;
  };
  set(sh[2], name_note, SHT_NOTE, offset, notes.size(), 0, 0);
  VMI_RETURN_IF_ERROR(out.Write(offset, notes.data(), notes.size()));
  offset += notes.size();
  set(sh[3], name_prstatus, SHT_PROGBITS, offset,
      source.vcpus.size() * dump_internal::kXenContextSize, 8, dump_internal::kXenContextSize);
  for (const amd64::Registers& regs : source.vcpus) {
    const std::vector<uint8_t> ctx = dump_internal::EncodeXenContext(regs);
    VMI_RETURN_IF_ERROR(out.Write(offset, ctx.data(), ctx.size()));
    offset += ctx.size();
  }
  offset = PageAlign(offset);
  set(sh[4], name_pages, SHT_PROGBITS, offset, nr_pages * kPageSize, kPageSize, kPageSize);
  std::vector<uint64_t> pfns;
  pfns.reserve(nr_pages);
  for (const GfnRange& r : source.ranges) {
    VMI_RETURN_IF_ERROR(WriteRange(out, source, r, offset));
    offset += r.count * kPageSize;
    for (uint64_t i = 0; i < r.count; ++i) pfns.push_back(r.first.value() + i);
  }
  set(sh[5], name_pfn, SHT_PROGBITS, offset, pfns.size() * 8, 8, 8);
  VMI_RETURN_IF_ERROR(out.Write(offset, pfns.data(), pfns.size() * 8));
  offset += pfns.size() * 8;
  set(sh[1], name_shstrtab, SHT_STRTAB, offset, strtab.size(), 0, 0);
  VMI_RETURN_IF_ERROR(out.Write(offset, strtab.data(), strtab.size()));
  VMI_RETURN_IF_ERROR(out.Write(ehdr.e_shoff, sh, sizeof(sh)));
  VMI_RETURN_IF_ERROR(out.WriteValue(0, ehdr));
  return out.Commit();
}

absl::Status WriteDump(const std::string& path, DumpFormat format, const DumpSource& source) {
  switch (format) {
    case DumpFormat::kRaw:
      return WriteRawDump(path, source);
    case DumpFormat::kLime:
      return WriteLimeDump(path, source);
    case DumpFormat::kElfCore:
      return WriteElfCoreDump(path, source);
    case DumpFormat::kXenCore:
      return WriteXenCoreDump(path, source);
    case DumpFormat::kAuto:
      break;
  }
  return absl::InvalidArgumentError("write_dump: choose a format (auto is for reading)");
}

}  // namespace vmi::dump
