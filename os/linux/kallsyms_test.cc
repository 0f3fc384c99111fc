#include "os/linux/kallsyms.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "os/linux/testing/kallsyms_encoder.h"

namespace vmi::os_linux {
namespace {

using ::testing::HasSubstr;
using testing::AddressScheme;
using testing::EncodeKallsyms;
using testing::KallsymsImage;
using testing::PlainSymbol;

// Sparse virtual memory in whole 4 KiB pages (zero-filled around what was
// put); anything else is unmapped.
class FakeMemory {
 public:
  void Put(uint64_t va, const void* data, size_t size) {
    const uint8_t* bytes = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < size; ++i) Page(va + i)[(va + i) & 4095] = bytes[i];
    if (size == 0) Page(va);
  }
  template <typename T>
  void PutVector(uint64_t va, const std::vector<T>& v) {
    Put(va, v.data(), v.size() * sizeof(T));
  }
  absl::Status Read(uint64_t va, absl::Span<uint8_t> out) {
    ++reads_;
    for (size_t done = 0; done < out.size();) {
      const uint64_t at = va + done;
      auto it = pages_.find(at & ~uint64_t{4095});
      if (it == pages_.end()) {
        return absl::NotFoundError(absl::StrFormat("va 0x%x not mapped", at & ~uint64_t{4095}));
      }
      const size_t n = std::min<size_t>(out.size() - done, 4096 - (at & 4095));
      std::memcpy(out.data() + done, it->second.data() + (at & 4095), n);
      done += n;
    }
    return absl::OkStatus();
  }
  int reads() const { return reads_; }

 private:
  std::vector<uint8_t>& Page(uint64_t va) {
    std::vector<uint8_t>& page = pages_[va & ~uint64_t{4095}];
    if (page.empty()) page.resize(4096);
    return page;
  }
  std::map<uint64_t, std::vector<uint8_t>> pages_;
  int reads_ = 0;
};

// The names table ends on a page boundary, with nothing mapped after it.
constexpr uint64_t kNamesEnd = 0xffffffff82400000, kNum = 0xffffffff81f00000,
                   kTokenTable = 0xffffffff82800000, kTokenIndex = 0xffffffff82900000,
                   kOffsets = 0xffffffff81e00000, kBase = 0xffffffff81f00100,
                   kAddresses = 0xffffffff81d00000;

KallsymsLocation Place(const KallsymsImage& image, FakeMemory& mem) {
  KallsymsLocation loc;
  loc.names = kNamesEnd - image.names.size();
  loc.num_syms = kNum;
  loc.token_table = kTokenTable;
  loc.token_index = kTokenIndex;
  mem.PutVector(loc.names, image.names);
  mem.Put(kNum, &image.num_syms, 4);
  mem.PutVector(kTokenTable, image.token_table);
  mem.PutVector(kTokenIndex, image.token_index);
  if (!image.addresses.empty()) {
    loc.addresses = kAddresses;
    mem.PutVector(kAddresses, image.addresses);
  } else {
    loc.offsets = kOffsets;
    loc.relative_base = kBase;
    mem.PutVector(kOffsets, image.offsets);
    mem.Put(kBase, &image.relative_base, 8);
  }
  return loc;
}

std::vector<PlainSymbol> KernelLikeSymbols() {
  return {
      {0x0, 'A', "fixed_percpu_data"},
      {0x1fbc0, 'A', "current_task"},
      {0xffffffff81000000, 'T', "_stext"},
      {0xffffffff81000000, 'T', "_text"},
      {0xffffffff81000010, 't', "init_entry_handler"},
      {0xffffffff81000040, 'T', "do_syscall_64"},
      {0xffffffff81000040, 't', "do_syscall_64_alias"},
      {0xffffffff81234560, 'D', "init_task"},
      {0xffffffff82000000, 'B', "__bss_start"},
      {0xffffffff82001000, 'b', "cleanup"},
      {0xffffffff82002000, 'b', "cleanup"},  // a second static of the same name
  };
}

absl::StatusOr<SymbolTable> Decode(const KallsymsLocation& loc, FakeMemory& mem) {
  return DecodeKallsyms(loc, [&](uint64_t va, absl::Span<uint8_t> out) { return mem.Read(va, out); });
}

void ExpectSameSymbols(const SymbolTable& table, std::vector<PlainSymbol> expected) {
  ASSERT_EQ(table.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(table[i].address, expected[i].address) << i;
    EXPECT_EQ(table[i].type, expected[i].type) << i;
    EXPECT_EQ(table[i].name, expected[i].name) << i;
  }
}

TEST(KallsymsTest, DecodesEachAddressScheme) {
  for (AddressScheme scheme : {AddressScheme::kRelative, AddressScheme::kAbsolutePercpu,
                               AddressScheme::kAbsoluteAddresses}) {
    std::vector<PlainSymbol> symbols = KernelLikeSymbols();
    if (scheme == AddressScheme::kRelative) {
      // Without ABSOLUTE_PERCPU there are no small absolute values.
      symbols.erase(symbols.begin(), symbols.begin() + 2);
    }
    FakeMemory mem;
    const KallsymsLocation loc = Place(EncodeKallsyms(symbols, scheme), mem);
    absl::StatusOr<SymbolTable> table = Decode(loc, mem);
    ASSERT_TRUE(table.ok()) << table.status();
    ExpectSameSymbols(*table, symbols);
  }
}

TEST(KallsymsTest, TwoByteNameLengths) {
  std::vector<PlainSymbol> symbols = KernelLikeSymbols();
  // 300 characters the encoder cannot merge (no fragment matches "Q"):
  // 300 tokens need the two-byte length.
  symbols.push_back({0xffffffff82003000, 't', std::string(300, 'Q')});
  symbols.push_back({0xffffffff82004000, 't', "after_the_big_one"});
  FakeMemory mem;
  const KallsymsImage image = EncodeKallsyms(symbols, AddressScheme::kAbsolutePercpu);
  const KallsymsLocation loc = Place(image, mem);
  absl::StatusOr<SymbolTable> table = Decode(loc, mem);
  ASSERT_TRUE(table.ok()) << table.status();
  ExpectSameSymbols(*table, symbols);
}

TEST(KallsymsTest, LookupsByNameAndAddress) {
  FakeMemory mem;
  const KallsymsLocation loc = Place(EncodeKallsyms(KernelLikeSymbols(), AddressScheme::kAbsolutePercpu), mem);
  absl::StatusOr<SymbolTable> decoded = Decode(loc, mem);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  // Moving the table keeps its name index valid.
  SymbolTable table = *std::move(decoded);

  EXPECT_EQ(table.Address("init_task"), 0xffffffff81234560u);
  EXPECT_EQ(table.Address("current_task"), 0x1fbc0u);
  EXPECT_EQ(table.Address("cleanup"), 0xffffffff82001000u);  // the first one
  EXPECT_EQ(table.Address("nope"), std::nullopt);
  EXPECT_EQ(table.Find("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(table.Find("nope").status().message()), HasSubstr("'nope'"));

  EXPECT_EQ(table.Symbolize(0xffffffff81000044)->ToString(), "do_syscall_64+0x4");
  EXPECT_EQ(table.Symbolize(0xffffffff81000000)->ToString(), "_stext");
  EXPECT_EQ(table.Symbolize(0xffffffff82001fff)->ToString(), "cleanup+0xfff");
  EXPECT_EQ(table.Symbolize(0xffffffff82002000)->ToString(), "cleanup");
  // Absolute symbols are values, not addresses; below the first address and
  // past the last there is nothing.
  EXPECT_EQ(table.Symbolize(0x1fbc0), std::nullopt);
  EXPECT_EQ(table.Symbolize(0xffffffff80000000), std::nullopt);
  EXPECT_EQ(table.Symbolize(0xffffffff82002001), std::nullopt);
}

TEST(KallsymsTest, LocationFromVmcoreinfo) {
  const std::string block =
      "OSRELEASE=6.1.0\nPAGESIZE=4096\nKERNELOFFSET=0\nNUMBER(phys_base)=0\n"
      "SYMBOL(init_top_pgt)=ffffffff82a10000\n"
      "SYMBOL(kallsyms_names)=ffffffff8d5bdac0\nSYMBOL(kallsyms_num_syms)=ffffffff8d5bdab8\n"
      "SYMBOL(kallsyms_token_table)=ffffffff8d72ddd8\nSYMBOL(kallsyms_token_index)=ffffffff8d72e170\n"
      "SYMBOL(kallsyms_offsets)=ffffffff8d5619c8\nSYMBOL(kallsyms_relative_base)=ffffffff8d5bdab0\n";
  absl::StatusOr<VmcoreInfo> info =
      ParseVmcoreinfo(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(block.data()), block.size()));
  ASSERT_TRUE(info.ok()) << info.status();
  std::optional<KallsymsLocation> loc = KallsymsLocation::FromVmcoreinfo(*info);
  ASSERT_TRUE(loc.has_value());
  EXPECT_EQ(loc->names, 0xffffffff8d5bdac0u);
  EXPECT_EQ(loc->relative_base, 0xffffffff8d5bdab0u);
  EXPECT_EQ(loc->addresses, 0u);

  const std::string old = "OSRELEASE=5.10\nPAGESIZE=4096\nKERNELOFFSET=0\nNUMBER(phys_base)=0\n"
                          "SYMBOL(init_top_pgt)=ffffffff82a10000\n";
  info = ParseVmcoreinfo(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(old.data()), old.size()));
  ASSERT_TRUE(info.ok());
  EXPECT_FALSE(KallsymsLocation::FromVmcoreinfo(*info).has_value());
}

// ---- Bad input: each is rejected with the table and place named. ----

struct Corruption {
  const char* name;
  std::function<void(KallsymsImage&)> corrupt;
  const char* error;
};

TEST(KallsymsTest, RejectsTablesThatAreNotKallsyms) {
  const std::vector<Corruption> cases = {
      {"zero symbols", [](KallsymsImage& i) { i.num_syms = 0; }, "kallsyms_num_syms"},
      {"absurd count", [](KallsymsImage& i) { i.num_syms = 0x7fffffff; }, "kallsyms_num_syms"},
      {"unterminated token",
       [](KallsymsImage& i) {
         for (uint8_t& b : i.token_table) b = b ? b : 'x';
       },
       "kallsyms_token_table"},
      {"non-printable name",
       [](KallsymsImage& i) {
         i.token_table[i.token_index['Q']] = 0x07;  // the token for 'Q' becomes a BEL
       },
       "non-printable"},
      {"zero length", [](KallsymsImage& i) { i.names[0] = 0; }, "length 0"},
      {"no type letter", [](KallsymsImage& i) { i.names[1] = '5'; }, "no type letter"},
      {"unsorted addresses", [](KallsymsImage& i) { std::swap(i.offsets[3], i.offsets[8]); },
       "not sorted"},
      {"names run off the mapping",
       [](KallsymsImage& i) {
         // The count claims more symbols than the table holds.
         i.num_syms += 5;
         i.offsets.resize(i.num_syms, -0x2000000);
       },
       "kallsyms_names"},
      {"endless name",
       [](KallsymsImage& i) {
         // One symbol claiming 0x3fff tokens of the longest fragment.
         i.names = {0xff, 0x7f};
         i.names.resize(2 + 0x3fff, '_' + 0);
       },
       "expands beyond"},
  };
  for (const Corruption& c : cases) {
    std::vector<PlainSymbol> symbols = KernelLikeSymbols();
    symbols.push_back({0xffffffff82003000, 't', "QQQ"});
    KallsymsImage image = EncodeKallsyms(symbols, AddressScheme::kAbsolutePercpu);
    c.corrupt(image);
    FakeMemory mem;
    const KallsymsLocation loc = Place(image, mem);
    absl::StatusOr<SymbolTable> table = Decode(loc, mem);
    ASSERT_FALSE(table.ok()) << c.name;
    EXPECT_THAT(std::string(table.status().message()), HasSubstr(c.error)) << c.name << ": " << table.status();
  }
}

TEST(KallsymsTest, UnmappedTablesAreNamed) {
  FakeMemory mem;
  KallsymsLocation loc = Place(EncodeKallsyms(KernelLikeSymbols(), AddressScheme::kAbsolutePercpu), mem);
  loc.token_index = 0xffffffffa0000000;
  absl::StatusOr<SymbolTable> table = Decode(loc, mem);
  ASSERT_FALSE(table.ok());
  EXPECT_THAT(std::string(table.status().message()), HasSubstr("kallsyms_token_index at 0xffffffffa0000000"));
}

TEST(KallsymsTest, ReadsAreChunkedNotPerByte) {
  std::vector<PlainSymbol> symbols;
  for (int i = 0; i < 20000; ++i) {
    symbols.push_back({0xffffffff81000000 + 16 * i, 't', absl::StrFormat("function_number_%d", i)});
  }
  FakeMemory mem;
  const KallsymsLocation loc = Place(EncodeKallsyms(symbols, AddressScheme::kRelative), mem);
  absl::StatusOr<SymbolTable> table = Decode(loc, mem);
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->size(), 20000u);
  EXPECT_EQ(table->Address("function_number_12345"), 0xffffffff81000000u + 16 * 12345);
  // ~400 KB of names in 64 KiB chunks plus the fixed tables.
  EXPECT_LT(mem.reads(), 40);
}

}  // namespace
}  // namespace vmi::os_linux
