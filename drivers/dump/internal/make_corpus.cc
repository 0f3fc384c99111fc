// Writes the crafted corpus of drivers/dump/testdata: one small valid dump
// per format and one damaged variant per hostile case, made by patching the
// writer's output. Run once; the files are committed.
//   bazel run //drivers/dump:make_corpus -- $PWD/drivers/dump/testdata

#include <elf.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "drivers/dump/dump_writer.h"
#include "drivers/dump/internal/constants.h"

namespace vmi::dump {
namespace {

using Bytes = std::vector<uint8_t>;

std::string out_dir;

// gfn 0 and gfns 2-3 (a hole at 1); one vCPU.
DumpSource Source() {
  DumpSource source;
  source.ranges = {{Gfn(0), 1}, {Gfn(2), 2}};
  source.read_page = [](Gfn gfn, absl::Span<uint8_t> out) {
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(gfn.value() * 16 + i);
    return absl::OkStatus();
  };
  amd64::Registers regs;
  regs.rip = 0xffffffff81000000;
  regs.cr0 = 0x80000011;
  regs.cr3 = 0x3000;
  regs.cr4 = 0x20;
  source.vcpus = {regs};
  return source;
}

Bytes Make(DumpFormat format) {
  const std::string tmp = out_dir + "/.tmp";
  const absl::Status status = WriteDump(tmp, format, Source());
  if (!status.ok()) {
    std::fprintf(stderr, "%s\n", status.ToString().c_str());
    std::exit(1);
  }
  std::ifstream in(tmp, std::ios::binary);
  Bytes bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::remove(tmp.c_str());
  return bytes;
}

void Save(const std::string& name, const Bytes& bytes) {
  std::ofstream out(out_dir + "/" + name, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

template <typename T>
T Get(const Bytes& b, size_t at) {
  T v;
  std::memcpy(&v, b.data() + at, sizeof(T));
  return v;
}
template <typename T>
Bytes Put(Bytes b, size_t at, T v) {
  std::memcpy(b.data() + at, &v, sizeof(T));
  return b;
}
Bytes Cut(Bytes b, size_t size) {
  b.resize(size);
  return b;
}

// ELF offsets.
constexpr size_t kPh = sizeof(Elf64_Ehdr);  // program header 0 (PT_NOTE)
size_t Ph(int i) { return kPh + i * sizeof(Elf64_Phdr); }
size_t Sh(int i) { return sizeof(Elf64_Ehdr) + i * sizeof(Elf64_Shdr); }

void Raw() {
  const Bytes raw = Make(DumpFormat::kRaw);
  Save("raw_valid.bin", raw);
  Bytes tail = raw;
  tail.resize(raw.size() + 100, 0xab);
  Save("raw_partial_tail.bin", tail);
  Save("raw_too_small.bin", Cut(raw, 100));
}

void Lime() {
  const Bytes lime = Make(DumpFormat::kLime);
  const size_t second = 32 + 4096;  // header of range 1
  Save("lime_valid.lime", lime);
  Save("lime_truncated_data.lime", Cut(lime, lime.size() - 4096 - 100));
  Save("lime_truncated_header.lime", Cut(lime, 20));
  Save("lime_header_only.lime", Cut(lime, 32));
  Save("lime_bad_magic.lime", Put<uint32_t>(lime, 0, 0x12345678));
  Save("lime_bad_second_magic.lime", Put<uint32_t>(lime, second, 0x12345678));
  Save("lime_bad_version.lime", Put<uint32_t>(lime, 4, 7));
  Save("lime_end_before_start.lime", Put<uint64_t>(lime, second + 16, 0));
  Save("lime_huge_end.lime", Put<uint64_t>(lime, 16, ~uint64_t{0}));
  Save("lime_overlap.lime", Put<uint64_t>(Put<uint64_t>(lime, second + 8, 0), second + 16, 0x1fff));
  Bytes trailing = lime;
  trailing.resize(lime.size() + 10, 0x55);
  Save("lime_trailing_garbage.lime", trailing);
}

void Elf() {
  const Bytes elf = Make(DumpFormat::kElfCore);
  Save("elf_valid.elf", elf);
  Save("elf_truncated_header.elf", Cut(elf, 40));
  Save("elf_truncated_phdrs.elf", Cut(elf, Ph(2) + 10));
  Save("elf_segment_beyond_eof.elf", Cut(elf, elf.size() - 4096 - 100));
  Save("elf_bad_magic.elf", Put<uint8_t>(elf, 1, 'X'));
  Save("elf_class32.elf", Put<uint8_t>(elf, EI_CLASS, ELFCLASS32));
  Save("elf_big_endian.elf", Put<uint8_t>(elf, EI_DATA, ELFDATA2MSB));
  Save("elf_not_core.elf", Put<uint16_t>(elf, 16, ET_EXEC));
  Save("elf_wrong_machine.elf", Put<uint16_t>(elf, 18, EM_AARCH64));
  Save("elf_huge_phnum.elf", Put<uint16_t>(elf, 56, 60000));
  Save("elf_zero_phnum.elf", Put<uint16_t>(elf, 56, 0));
  Save("elf_small_phentsize.elf", Put<uint16_t>(elf, 54, 8));
  Save("elf_phoff_overflow.elf", Put<uint64_t>(elf, 32, ~uint64_t{0} - 8));
  Save("elf_overlap.elf", Put<uint64_t>(elf, Ph(2) + 24, 0));
  Save("elf_offset_overflow.elf", Put<uint64_t>(elf, Ph(1) + 8, ~uint64_t{0} - 0xfff));
  Save("elf_paddr_overflow.elf", Put<uint64_t>(elf, Ph(1) + 24, ~uint64_t{0} - 0xfff));
  Save("elf_filesz_gt_memsz.elf", Put<uint64_t>(elf, Ph(1) + 32, 0x2000));
  Save("elf_filesz_lt_memsz.elf", Put<uint64_t>(elf, Ph(2) + 40, 0x4000));
  Save("elf_unaligned_paddr.elf", Put<uint64_t>(elf, Ph(2) + 24, 0x2800));
  const uint64_t notes = Get<uint64_t>(elf, Ph(0) + 8);
  Save("elf_note_huge_descsz.elf", Put<uint32_t>(elf, notes + 4, 0xffffffff));
  Save("elf_note_huge_namesz.elf", Put<uint32_t>(elf, notes, 0xfffffff0));
  Save("elf_note_segment_beyond_eof.elf", Put<uint64_t>(elf, Ph(0) + 32, ~uint64_t{0} / 2));
  Save("elf_note_offset_beyond_eof.elf", Put<uint64_t>(elf, Ph(0) + 8, 0x7fffffffffff));
  // The QEMU note follows the 12 + 8 + 336 byte CORE note.
  Save("elf_qemu_note_bad_version.elf", Put<uint32_t>(elf, notes + 356 + 20, 9));
  // PN_XNUM: the count moves to section header 0, appended at the end.
  Bytes xnum = Put<uint16_t>(Put<uint64_t>(elf, 40, elf.size()), 56, PN_XNUM);
  xnum = Put<uint16_t>(Put<uint16_t>(xnum, 58, sizeof(Elf64_Shdr)), 60, 1);
  Elf64_Shdr shdr0{};
  shdr0.sh_info = 3;
  xnum.insert(xnum.end(), reinterpret_cast<uint8_t*>(&shdr0),
              reinterpret_cast<uint8_t*>(&shdr0) + sizeof(shdr0));
  Save("elf_xnum.elf", xnum);
  Save("elf_xnum_shoff_beyond_eof.elf", Put<uint64_t>(xnum, 40, ~uint64_t{0} - 8));
  Save("elf_xnum_huge_count.elf",
       Put<uint32_t>(xnum, xnum.size() - sizeof(Elf64_Shdr) + 44, 0xffffffff));
}

void Xen() {
  const Bytes xen = Make(DumpFormat::kXenCore);
  Save("xen_valid.xen", xen);
  const uint64_t note = Get<uint64_t>(xen, Sh(2) + 24);
  const uint64_t header_desc = note + 16 + 16;  // after the empty "none" note
  const uint64_t pfn = Get<uint64_t>(xen, Sh(5) + 24);
  Save("xen_truncated.xen", Cut(xen, xen.size() - 60));
  Save("xen_truncated_pages.xen", Cut(xen, pfn - 100));
  Save("xen_huge_shnum.xen", Put<uint16_t>(xen, 60, 60000));
  Save("xen_shoff_overflow.xen", Put<uint64_t>(xen, 40, ~uint64_t{0} - 8));
  Save("xen_bad_shstrndx.xen", Put<uint16_t>(xen, 62, 99));
  Save("xen_strtab_beyond_eof.xen", Put<uint64_t>(xen, Sh(1) + 32, ~uint64_t{0} / 2));
  Save("xen_bad_name_offset.xen", Put<uint32_t>(xen, Sh(4), 0xfffffff0));
  Save("xen_bad_magic.xen", Put<uint64_t>(xen, header_desc, 0x1234));
  Save("xen_page_size.xen", Put<uint64_t>(xen, header_desc + 24, 8192));
  Save("xen_huge_vcpus.xen", Put<uint64_t>(xen, header_desc + 8, ~uint64_t{0}));
  Save("xen_huge_pages.xen", Put<uint64_t>(xen, header_desc + 16, ~uint64_t{0}));
  Save("xen_no_header_note.xen", Put<uint32_t>(xen, note + 16 + 8, 0x2000005));
  Save("xen_note_huge_descsz.xen", Put<uint32_t>(xen, note + 4, 0xffffffff));
  Save("xen_dup_pfn.xen", Put<uint64_t>(xen, pfn + 16, 0));
  Save("xen_pfn_huge.xen", Put<uint64_t>(xen, pfn + 8, uint64_t{1} << 60));
  Save("xen_invalid_pfn.xen", Put<uint64_t>(xen, pfn + 8, ~uint64_t{0}));
  Save("xen_pages_offset_overflow.xen", Put<uint64_t>(xen, Sh(4) + 24, ~uint64_t{0} - 10));
  Save("xen_pfn_offset_beyond_eof.xen", Put<uint64_t>(xen, Sh(5) + 24, 0x7fffffffffff));
  Save("xen_prstatus_small_entsize.xen", Put<uint64_t>(xen, Sh(3) + 56, 64));
  Save("xen_prstatus_beyond_eof.xen", Put<uint64_t>(xen, Sh(3) + 32, ~uint64_t{0} / 2));
}

}  // namespace
}  // namespace vmi::dump

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  vmi::dump::out_dir = argv[1];
  vmi::dump::Raw();
  vmi::dump::Lime();
  vmi::dump::Elf();
  vmi::dump::Xen();
  return 0;
}
