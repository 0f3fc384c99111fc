#include "os/linux/testing/fake_kernel.h"

#include <bpf/btf.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vmi::os_linux::testing {
namespace {

// struct list_head { struct list_head *next, *prev; };
// struct task_struct { long state; int pid; char comm[16]; struct list_head tasks; ... } (64 bytes)
// struct uts_namespace { char name[390]; } (the six 65-byte fields)
std::vector<uint8_t> BuildBtf() {
  struct btf* b = btf__new_empty();
  const int int_id = btf__add_int(b, "int", 4, BTF_INT_SIGNED);
  const int long_id = btf__add_int(b, "long", 8, BTF_INT_SIGNED);
  const int char_id = btf__add_int(b, "char", 1, BTF_INT_CHAR);
  const int list_ptr = btf__add_ptr(b, btf__type_cnt(b) + 1);
  const int list_id = btf__add_struct(b, "list_head", 16);
  btf__add_field(b, "next", list_ptr, 0, 0);
  btf__add_field(b, "prev", list_ptr, 64, 0);
  const int comm = btf__add_array(b, int_id, char_id, 16);
  btf__add_struct(b, "task_struct", FakeKernel::kTaskSize);
  btf__add_field(b, "state", long_id, 0, 0);
  btf__add_field(b, "pid", int_id, 64, 0);
  btf__add_field(b, "comm", comm, FakeKernel::kCommOffset * 8, 0);
  btf__add_field(b, "tasks", list_id, FakeKernel::kTasksOffset * 8, 0);
  const int name = btf__add_array(b, int_id, char_id, 390);
  btf__add_struct(b, "uts_namespace", 390);
  btf__add_field(b, "name", name, 0, 0);
  uint32_t size = 0;
  const void* raw = btf__raw_data(b, &size);
  std::vector<uint8_t> out(static_cast<const uint8_t*>(raw), static_cast<const uint8_t*>(raw) + size);
  btf__free(b);
  return out;
}

void Die(const char* what) {
  std::fprintf(stderr, "FakeKernel: %s\n", what);
  std::abort();
}

}  // namespace

FakeKernel::FakeKernel(FakeKernelOptions options)
    : options_(std::move(options)),
      store_(std::make_unique<amd64::testing::MemoryPageStore>(Gfn(options_.frames - 1))) {
  Build();
}

void FakeKernel::WritePa(uint64_t pa, const void* data, size_t size) {
  const uint8_t* bytes = static_cast<const uint8_t*>(data);
  for (size_t done = 0; done < size;) {
    const uint64_t at = pa + done;
    const size_t n = std::min<size_t>(size - done, 4096 - (at & 4095));
    std::memcpy(store_->MutablePage(Gfn(at >> 12)) + (at & 4095), bytes + done, n);
    done += n;
  }
}

uint64_t FakeKernel::Symbol(const std::string& name) const {
  for (const PlainSymbol& s : symbols_) {
    if (s.name == name) return s.address;
  }
  Die(("no symbol " + name).c_str());
  return 0;
}

void FakeKernel::Build() {
  if (PaOf(kStartKernelMap + 0x1000000 + options_.kaslr) != kTextPa) {
    Die("kaslr and phys_base must put _text at kTextPa");
  }
  // Kernel page tables: all of RAM mapped through the image mapping with
  // 2 MiB pages (as the real kernel maps its image).
  amd64::testing::PageTableBuilder tables(*store_, paging());
  root_pa_ = tables.root().value();
  for (uint64_t pa = 0; pa < options_.frames * 4096; pa += 0x200000) {
    if (!tables.Map(Va(VaOf(pa)), Pa(pa), 0x200000, amd64::PageTableEntry::kWrite).ok()) {
      Die("mapping the image");
    }
  }

  // Symbols (runtime addresses). The kallsyms tables' own symbols are added
  // once their places are known.
  const uint64_t text = VaOf(kTextPa);
  symbols_ = {
      {0x0, 'A', "fixed_percpu_data"},
      {0x1fbc0, 'A', "current_task"},
      {text, 'T', "_text"},
      {text, 'T', "_stext"},
      {text + 0x40, 'T', "do_syscall_64"},
      {text + 0x100, 't', "init_entry_handler"},
      {VaOf(kRodataPa + 0x1000), 'R', "linux_banner"},
      {VaOf(kDataPa), 'D', "init_uts_ns"},
      {VaOf(kDataPa + 0x1000), 'D', "init_task"},
      {VaOf(root_pa_), 'D', "init_top_pgt"},
      {VaOf(kDataPa + 0x2000), 'B', "mem_section"},
  };
  for (int i = 0; i < options_.extra_functions; ++i) {
    symbols_.push_back({text + 0x1000 + 0x40 * i, i % 3 ? 't' : 'T', absl::StrFormat("function_%d", i)});
  }
  if (options_.btf) {
    btf_ = BuildBtf();
    WritePa(kBtfPa, btf_.data(), btf_.size());
    symbols_.push_back({VaOf(kBtfPa), 'R', "__start_BTF"});
    symbols_.push_back({VaOf(kBtfPa + btf_.size()), 'R', "__stop_BTF"});
  }
  // Tables: offsets | relative_base | num_syms | names | token_table | token_index.
  // Their addresses are symbols too. The size of the names table does not
  // depend on addresses, so encode once with placeholders to place them.
  const char* const kTableNames[] = {"kallsyms_offsets",     "kallsyms_relative_base",
                                     "kallsyms_num_syms",    "kallsyms_names",
                                     "kallsyms_token_table", "kallsyms_token_index"};
  std::vector<PlainSymbol> all = symbols_;
  for (const char* name : kTableNames) all.push_back({text, 'R', name});
  const size_t names_size = EncodeKallsyms(all, AddressScheme::kAbsolutePercpu).names.size();
  const uint64_t offsets_pa = kKallsymsPa;
  const uint64_t base_pa = (offsets_pa + 4 * all.size() + 7) & ~uint64_t{7};
  const uint64_t num_pa = base_pa + 8;
  const uint64_t names_pa = num_pa + 8;
  const uint64_t token_table_pa = names_pa + names_size + 16;
  const uint64_t token_index_pa = (token_table_pa + KallsymsTokens().size() * 40 + 7) & ~uint64_t{7};
  const uint64_t table_pas[] = {offsets_pa, base_pa, num_pa, names_pa, token_table_pa, token_index_pa};
  for (int i = 0; i < 6; ++i) all[symbols_.size() + i].address = VaOf(table_pas[i]);
  KallsymsImage image = EncodeKallsyms(all, AddressScheme::kAbsolutePercpu);
  if (image.names.size() != names_size || image.token_table.size() > KallsymsTokens().size() * 40) {
    Die("kallsyms layout");
  }
  std::stable_sort(all.begin(), all.end(),
                   [](const PlainSymbol& a, const PlainSymbol& b) { return a.address < b.address; });
  symbols_ = all;
  kallsyms_names_pa_ = names_pa;
  WritePa(offsets_pa, image.offsets.data(), image.offsets.size() * 4);
  WritePa(base_pa, &image.relative_base, 8);
  WritePa(num_pa, &image.num_syms, 4);
  WritePa(names_pa, image.names.data(), image.names.size());
  WritePa(token_table_pa, image.token_table.data(), image.token_table.size());
  WritePa(token_index_pa, image.token_index.data(), image.token_index.size() * 2);
  if (token_index_pa + 512 > kBtfPa) Die("kallsyms tables too large for the layout");

  // Strings and init_uts_ns (struct new_utsname: release at byte 130).
  banner_ = absl::StrFormat("Linux version %s (fake@example) #1 SMP\n", options_.release);
  WriteString(kRodataPa + 0x1000, banner_ + std::string(1, '\0'));
  if (options_.format_string_copy) {
    WriteString(kRodataPa + 0x123, std::string("CRASHTIME=%lld\n\0VMCOREINFO\0OSRELEASE=%s\n\0", 42));
  }
  WriteString(kDataPa, "Linux");
  WriteString(kDataPa + 130, options_.release + std::string(1, '\0'));
  WriteString(kDataPa + 0x1000 + kCommOffset, std::string("swapper/0\0", 10));

  // VMCOREINFO.
  std::string v = absl::StrCat("OSRELEASE=", options_.release, "\n",
                               "BUILD-ID=0123456789abcdef0123456789abcdef01234567\n", "PAGESIZE=4096\n");
  absl::StrAppendFormat(&v, "SYMBOL(init_uts_ns)=%x\nOFFSET(uts_namespace.name)=0\n",
                        Symbol("init_uts_ns"));
  absl::StrAppendFormat(&v, "SYMBOL(swapper_pg_dir)=%x\nSYMBOL(_stext)=%x\n", VaOf(root_pa_), text);
  // Like the real mem_section line: the pointer's value, not the symbol's
  // address (kallsyms has the address).
  absl::StrAppendFormat(&v, "SYMBOL(mem_section)=%x\n", 0xffff888001234000ull);
  absl::StrAppend(&v, "SIZE(list_head)=16\nOFFSET(list_head.next)=0\nOFFSET(list_head.prev)=8\n");
  if (options_.kallsyms_lines) {
    for (const char* name : {"kallsyms_names", "kallsyms_num_syms", "kallsyms_token_table",
                             "kallsyms_token_index", "kallsyms_offsets", "kallsyms_relative_base"}) {
      absl::StrAppendFormat(&v, "SYMBOL(%s)=%x\n", name, Symbol(name));
    }
  }
  absl::StrAppendFormat(&v, "NUMBER(phys_base)=%d\nSYMBOL(init_top_pgt)=%x\n", options_.phys_base,
                        VaOf(root_pa_));
  absl::StrAppendFormat(&v, "NUMBER(pgtable_l5_enabled)=%d\nKERNELOFFSET=%x\n",
                        options_.five_level ? 1 : 0, options_.kaslr);
  vmcoreinfo_ = v;
  if (options_.vmcoreinfo) WriteString(options_.vmcoreinfo_pa, v + std::string(1, '\0'));
}

}  // namespace vmi::os_linux::testing
