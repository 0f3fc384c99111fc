#include "os/linux/isf.h"

#include <bpf/btf.h>
#include <lzma.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "os/linux/btf_types.h"
#include "os/linux/symbols.h"
#include "os/linux/types.h"

namespace vmi::os_linux {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kInitTask = 0xffffffff82a0c940;
constexpr uint64_t kSchedule = 0xffffffff81e3a6b0;
constexpr uint64_t kBannerAddress = 0xffffffff82200100;
constexpr uint64_t kJiffies = 0xffffffff82c05900;
constexpr uint64_t kRunqueues = 0x2f4c0;  // a per-CPU offset
constexpr uint64_t kSlide = 0x1e000000;
const char kBanner[] = "Linux version 6.1.0-test (gcc) #1 SMP\n";  // + its NUL

std::string BannerBytes() { return std::string(kBanner, sizeof(kBanner)); }

// A task_struct-like profile as dwarf2json writes them:
//   struct task_struct {                      // 96 bytes
//     long state;                             // 0
//     int pid;                                // 8
//     union {                                 // 16, anonymous
//       unsigned long word;
//       struct { unsigned flag:1, level:5; char tag; };  // anonymous
//     };
//     char comm[16];                          // 24
//     struct list_head tasks;                 // 40
//     struct mm_struct *mm;                   // 56 (not in user_types)
//     enum pid_type kind;                     // 64
//     unsigned int flags:2;                   // bit 563, written dwarf2json-style as
//                                             // offset 70 + bit_position 3
//     struct pid_link pids[2];                // 72
//     void (*handler)(void);                  // 88
//   };
std::string TestProfileJson() {
  std::string json = R"({
  "metadata": {"format": "6.2.0", "producer": {"name": "dwarf2json", "version": "0.8.0"},
               "linux": {"symbols": [{"kind": "dwarf", "name": "vmlinux"}]}},
  "base_types": {
    "char": {"size": 1, "signed": true, "kind": "char", "endian": "little"},
    "int": {"size": 4, "signed": true, "kind": "int", "endian": "little"},
    "unsigned int": {"size": 4, "signed": false, "kind": "int", "endian": "little"},
    "long int": {"size": 8, "signed": true, "kind": "int", "endian": "little"},
    "long unsigned int": {"size": 8, "signed": false, "kind": "int", "endian": "little"},
    "_Bool": {"size": 1, "signed": false, "kind": "bool", "endian": "little"},
    "double": {"size": 8, "signed": true, "kind": "float", "endian": "little"},
    "pointer": {"size": 8, "signed": false, "kind": "int", "endian": "little"},
    "void": {"size": 0, "signed": false, "kind": "void", "endian": "little"}
  },
  "user_types": {
    "list_head": {"kind": "struct", "size": 16, "fields": {
      "next": {"offset": 0, "type": {"kind": "pointer", "subtype": {"kind": "struct", "name": "list_head"}}},
      "prev": {"offset": 8, "type": {"kind": "pointer", "subtype": {"kind": "struct", "name": "list_head"}}}}},
    "pid_link": {"kind": "struct", "size": 8, "fields": {
      "node": {"offset": 0, "type": {"kind": "pointer", "subtype": {"kind": "base", "name": "void"}}}}},
    "task_struct": {"kind": "struct", "size": 96, "fields": {
      "state": {"offset": 0, "type": {"kind": "base", "name": "long int"}},
      "pid": {"offset": 8, "type": {"kind": "base", "name": "int"}},
      "unnamed_field_10": {"offset": 16, "anonymous": true, "type": {"kind": "union", "name": "unnamed_8b3c0a91d2e4f5a6"}},
      "comm": {"offset": 24, "type": {"kind": "array", "count": 16, "subtype": {"kind": "base", "name": "char"}}},
      "tasks": {"offset": 40, "type": {"kind": "struct", "name": "list_head"}},
      "mm": {"offset": 56, "type": {"kind": "pointer", "subtype": {"kind": "struct", "name": "mm_struct"}}},
      "kind": {"offset": 64, "type": {"kind": "enum", "name": "pid_type"}},
      "flags": {"offset": 70, "type": {"kind": "bitfield", "bit_position": 3, "bit_length": 2,
                                       "type": {"kind": "base", "name": "unsigned int"}}},
      "pids": {"offset": 72, "type": {"kind": "array", "count": 2, "subtype": {"kind": "struct", "name": "pid_link"}}},
      "handler": {"offset": 88, "type": {"kind": "pointer", "subtype": {"kind": "function"}}}}},
    "unnamed_8b3c0a91d2e4f5a6": {"kind": "union", "size": 8, "fields": {
      "word": {"offset": 0, "type": {"kind": "base", "name": "long unsigned int"}},
      "unnamed_field_0": {"offset": 0, "anonymous": true, "type": {"kind": "struct", "name": "unnamed_51af3c2d"}}}},
    "unnamed_51af3c2d": {"kind": "struct", "size": 8, "fields": {
      "flag": {"offset": 0, "type": {"kind": "bitfield", "bit_position": 0, "bit_length": 1,
                                     "type": {"kind": "base", "name": "unsigned int"}}},
      "level": {"offset": 0, "type": {"kind": "bitfield", "bit_position": 1, "bit_length": 5,
                                      "type": {"kind": "base", "name": "unsigned int"}}},
      "tag": {"offset": 4, "type": {"kind": "base", "name": "char"}}}}
  },
  "enums": {
    "pid_type": {"size": 4, "base": "unsigned int",
                 "constants": {"PIDTYPE_PID": 0, "PIDTYPE_TGID": 1, "PIDTYPE_MAX": 4}},
    "signed_thing": {"size": 4, "base": "int", "constants": {"NEG_ONE": -1}}
  },
  "symbols": {
    "init_task": {"address": @INIT_TASK, "type": {"kind": "struct", "name": "task_struct"}},
    "schedule": {"address": @SCHEDULE, "type": {"kind": "function"}},
    "jiffies": {"address": @JIFFIES, "type": {"kind": "base", "name": "long unsigned int"}},
    "linux_banner": {"address": @BANNER_ADDRESS,
                     "type": {"kind": "array", "count": 39, "subtype": {"kind": "base", "name": "char"}},
                     "constant_data": "@BANNER_DATA"},
    "runqueues": {"address": @RUNQUEUES}
  }
})";
  return absl::StrReplaceAll(json, {{"@INIT_TASK", absl::StrCat(kInitTask)},
                                    {"@SCHEDULE", absl::StrCat(kSchedule)},
                                    {"@JIFFIES", absl::StrCat(kJiffies)},
                                    {"@BANNER_ADDRESS", absl::StrCat(kBannerAddress)},
                                    {"@BANNER_DATA", absl::Base64Escape(BannerBytes())},
                                    {"@RUNQUEUES", absl::StrCat(kRunqueues)}});
}

std::string TempPath(absl::string_view name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return absl::StrCat(dir ? dir : "/tmp", "/", name);
}

void WriteFile(const std::string& path, absl::string_view data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), data.size());
  ASSERT_TRUE(out.good()) << path;
}

std::string XzCompress(absl::string_view data) {
  std::string out(lzma_stream_buffer_bound(data.size()), '\0');
  size_t out_pos = 0;
  const lzma_ret ret = lzma_easy_buffer_encode(
      6, LZMA_CHECK_CRC64, nullptr, reinterpret_cast<const uint8_t*>(data.data()), data.size(),
      reinterpret_cast<uint8_t*>(out.data()), &out_pos, out.size());
  EXPECT_EQ(ret, LZMA_OK);
  out.resize(out_pos);
  return out;
}

class IsfProfileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<IsfProfile> parsed =
        IsfProfile::Parse(TestProfileJson(), "ISF profile test.json");
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    profile_ = std::make_unique<IsfProfile>(*std::move(parsed));
    types_ = profile_->Types();
  }
  std::unique_ptr<IsfProfile> profile_;
  std::shared_ptr<const KernelTypes> types_;
};

TEST_F(IsfProfileTest, SourceAndCounts) {
  EXPECT_EQ(profile_->source(), "ISF profile test.json");
  EXPECT_EQ(types_->source(), "ISF profile test.json");
  EXPECT_EQ(profile_->symbol_count(), 5u);
  // void, 8 base types, 2 enums, 5 user types, and the interned pointers,
  // arrays, declared-only struct and function.
  EXPECT_GE(types_->type_count(), 16u);
}

TEST_F(IsfProfileTest, MemberOffsetsAndSizes) {
  const KernelTypes& t = *types_;
  EXPECT_EQ(t.OffsetOf("task_struct", "state").value(), 0u);
  EXPECT_EQ(t.OffsetOf("task_struct", "pid").value(), 8u);
  EXPECT_EQ(t.OffsetOf("task_struct", "comm").value(), 24u);
  EXPECT_EQ(t.OffsetOf("task_struct", "comm[3]").value(), 27u);
  EXPECT_EQ(t.OffsetOf("task_struct", "tasks").value(), 40u);
  EXPECT_EQ(t.OffsetOf("task_struct", "tasks.prev").value(), 48u);
  EXPECT_EQ(t.OffsetOf("task_struct", "mm").value(), 56u);
  EXPECT_EQ(t.OffsetOf("task_struct", "pids[1].node").value(), 80u);
  EXPECT_EQ(t.SizeOf("task_struct").value(), 96u);
  EXPECT_EQ(t.SizeOf("list_head").value(), 16u);

  absl::StatusOr<FieldInfo> comm = t.Field("task_struct", "comm");
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_EQ(comm->size, 16u);
  EXPECT_EQ(comm->bit_offset, 24u * 8);
  EXPECT_FALSE(comm->is_bitfield());
  EXPECT_EQ(t.TypeName(comm->type), "char[16]");
  EXPECT_EQ(t.TypeName(t.Field("task_struct", "mm")->type), "struct mm_struct *");
  EXPECT_EQ(t.TypeName(t.Field("task_struct", "tasks.next")->type), "struct list_head *");
  EXPECT_EQ(t.TypeName(t.Field("task_struct", "pids")->type), "struct pid_link[2]");
  EXPECT_EQ(t.Field("task_struct", "pids")->size, 16u);
  EXPECT_EQ(t.TypeName(t.Field("task_struct", "pids[0].node")->type), "void *");
  EXPECT_EQ(t.TypeName(t.Field("task_struct", "handler")->type), "function *");
  EXPECT_EQ(t.TypeName(t.Field("task_struct", "kind")->type), "enum pid_type");
  EXPECT_EQ(t.Field("task_struct", "kind")->size, 4u);
  EXPECT_EQ(t.TypeName(t.Field("task_struct", "state")->type), "long int");
}

TEST_F(IsfProfileTest, AnonymousMembersAndBitfields) {
  const KernelTypes& t = *types_;
  EXPECT_EQ(t.OffsetOf("task_struct", "word").value(), 16u);
  EXPECT_EQ(t.OffsetOf("task_struct", "tag").value(), 20u);
  absl::StatusOr<FieldInfo> flag = t.Field("task_struct", "flag");
  ASSERT_TRUE(flag.ok()) << flag.status();
  EXPECT_TRUE(flag->is_bitfield());
  EXPECT_EQ(flag->bit_offset, 128u);
  EXPECT_EQ(flag->bit_size, 1u);
  EXPECT_EQ(flag->offset, 16u);  // the unsigned int holding it
  EXPECT_EQ(flag->size, 4u);
  EXPECT_EQ(t.TypeName(flag->type), "unsigned int");
  absl::StatusOr<FieldInfo> level = t.Field("task_struct", "level");
  ASSERT_TRUE(level.ok());
  EXPECT_EQ(level->bit_offset, 129u);
  EXPECT_EQ(level->bit_size, 5u);
  EXPECT_EQ(level->offset, 16u);
  // dwarf2json's byte offset 70 + bit 3 is bit 563: the unsigned int at 68.
  absl::StatusOr<FieldInfo> flags = t.Field("task_struct", "flags");
  ASSERT_TRUE(flags.ok());
  EXPECT_EQ(flags->bit_offset, 563u);
  EXPECT_EQ(flags->bit_size, 2u);
  EXPECT_EQ(flags->offset, 68u);
  EXPECT_EQ(flags->size, 4u);
  // A bitfield ends a path.
  EXPECT_FALSE(t.Field("task_struct", "flag.x").ok());
  // Anonymous members are not members by their made-up names.
  EXPECT_EQ(t.Field("task_struct", "unnamed_field_10").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(IsfProfileTest, TypesByNameAndDescriptions) {
  const KernelTypes& t = *types_;
  const TypeId task = t.FindType("task_struct").value();
  EXPECT_EQ(t.FindType("struct task_struct").value(), task);
  EXPECT_EQ(t.FindType("union unnamed_8b3c0a91d2e4f5a6").value(),
            t.FindType("unnamed_8b3c0a91d2e4f5a6").value());
  EXPECT_EQ(t.FindType("enum pid_type").value(), t.FindType("pid_type").value());
  EXPECT_EQ(t.FindType("struct pid_type").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(t.FindType("enum task_struct").status().code(), absl::StatusCode::kNotFound);
  // No typedefs in ISF.
  EXPECT_EQ(t.FindType("pid_t").status().code(), absl::StatusCode::kNotFound);

  absl::StatusOr<TypeInfo> info = t.Describe(task);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->kind, TypeKind::kStruct);
  EXPECT_EQ(info->name, "task_struct");
  EXPECT_EQ(info->size, 96u);
  info = t.Describe(t.FindType("unnamed_8b3c0a91d2e4f5a6").value());
  EXPECT_EQ(info->kind, TypeKind::kUnion);

  info = t.Describe(t.FindType("int").value());
  EXPECT_EQ(info->kind, TypeKind::kInt);
  EXPECT_EQ(info->size, 4u);
  EXPECT_TRUE(info->is_signed);
  EXPECT_EQ(t.Describe(t.FindType("_Bool").value())->kind, TypeKind::kInt);
  EXPECT_EQ(t.Describe(t.FindType("char").value())->kind, TypeKind::kInt);
  EXPECT_EQ(t.Describe(t.FindType("double").value())->kind, TypeKind::kFloat);
  EXPECT_EQ(t.Describe(t.FindType("void").value())->kind, TypeKind::kVoid);

  info = t.Describe(t.FindType("pid_type").value());
  EXPECT_EQ(info->kind, TypeKind::kEnum);
  EXPECT_EQ(info->size, 4u);
  EXPECT_FALSE(info->is_signed);
  EXPECT_TRUE(t.Describe(t.FindType("signed_thing").value())->is_signed);

  const FieldInfo mm = t.Field("task_struct", "mm").value();
  absl::StatusOr<TypeInfo> pointer = t.Describe(mm.type);
  ASSERT_TRUE(pointer.ok());
  EXPECT_EQ(pointer->kind, TypeKind::kPointer);
  EXPECT_EQ(pointer->size, 8u);
  EXPECT_EQ(pointer->name, "");
  // Known by name only: a struct without a layout, like a forward declaration.
  absl::StatusOr<TypeInfo> mm_struct = t.Describe(pointer->target);
  ASSERT_TRUE(mm_struct.ok());
  EXPECT_EQ(mm_struct->kind, TypeKind::kStruct);
  EXPECT_EQ(mm_struct->name, "mm_struct");
  EXPECT_EQ(mm_struct->size, 0u);
  EXPECT_EQ(t.Member(pointer->target, "x").status().code(), absl::StatusCode::kInvalidArgument);

  absl::StatusOr<TypeInfo> comm = t.Describe(t.Field("task_struct", "comm")->type);
  ASSERT_TRUE(comm.ok());
  EXPECT_EQ(comm->kind, TypeKind::kArray);
  EXPECT_EQ(comm->count, 16u);
  EXPECT_EQ(comm->size, 16u);
  EXPECT_EQ(comm->name, "");
  EXPECT_EQ(t.Describe(comm->target)->name, "char");
  // Structurally equal descriptors share an id.
  EXPECT_EQ(t.Field("list_head", "next")->type, t.Field("list_head", "prev")->type);
}

TEST_F(IsfProfileTest, EnumValues) {
  EXPECT_EQ(types_->EnumValue("PIDTYPE_PID").value(), 0);
  EXPECT_EQ(types_->EnumValue("PIDTYPE_TGID").value(), 1);
  EXPECT_EQ(types_->EnumValue("PIDTYPE_MAX").value(), 4);
  EXPECT_EQ(types_->EnumValue("NEG_ONE").value(), -1);
  EXPECT_EQ(types_->EnumValue("NOPE").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(IsfProfileTest, ErrorsNameTheTypeAndMember) {
  const KernelTypes& t = *types_;
  absl::StatusOr<FieldInfo> missing = t.Field("task_struct", "nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()),
              HasSubstr("struct task_struct has no member 'nope' (ISF profile test.json)"));
  EXPECT_EQ(t.FindType("no_such_struct").status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(t.Field("task_struct", "mm.x").ok());
  EXPECT_FALSE(t.Field("task_struct", "pid.x").ok());
  EXPECT_EQ(t.Field("task_struct", "comm[16]").status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(t.Field("task_struct", "pid[0]").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.Describe(100000).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.Member(100000, "x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.Member(t.FindType("int").value(), "x").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(IsfProfileTest, SymbolsAreRelocatedBySlide) {
  EXPECT_EQ(profile_->SymbolAddress("init_task"), kInitTask);  // link-time
  EXPECT_EQ(profile_->SymbolAddress("runqueues"), kRunqueues);
  EXPECT_EQ(profile_->SymbolAddress("nope"), std::nullopt);

  const SymbolTable symbols = profile_->Symbols(kSlide);
  ASSERT_EQ(symbols.size(), 5u);
  EXPECT_EQ(symbols.Address("init_task"), kInitTask + kSlide);
  EXPECT_EQ(symbols[*symbols.IndexOf("init_task")].type, 'D');
  EXPECT_EQ(symbols.Address("schedule"), kSchedule + kSlide);
  EXPECT_EQ(symbols[*symbols.IndexOf("schedule")].type, 'T');
  EXPECT_EQ(symbols[*symbols.IndexOf("linux_banner")].type, 'D');
  EXPECT_EQ(symbols[*symbols.IndexOf("jiffies")].type, 'D');
  // Not in the kernel image: unchanged, absolute.
  EXPECT_EQ(symbols.Address("runqueues"), kRunqueues);
  EXPECT_EQ(symbols[*symbols.IndexOf("runqueues")].type, 'A');
  // Sorted by address.
  for (size_t i = 1; i < symbols.size(); ++i) EXPECT_LE(symbols[i - 1].address, symbols[i].address);
  EXPECT_EQ(symbols[0].name, "runqueues");
  std::optional<SymbolOffset> at = symbols.Symbolize(kSchedule + kSlide + 0x10);
  ASSERT_TRUE(at.has_value());
  EXPECT_EQ(at->ToString(), "schedule+0x10");

  const SymbolTable unslid = profile_->Symbols(0);
  EXPECT_EQ(unslid.Address("init_task"), kInitTask);
}

TEST_F(IsfProfileTest, BannerKeepsItsBytes) {
  std::optional<std::string> banner = profile_->Banner();
  ASSERT_TRUE(banner.has_value());
  EXPECT_EQ(*banner, BannerBytes());
  EXPECT_EQ(banner->back(), '\0');

  absl::StatusOr<IsfProfile> none = IsfProfile::Parse(R"({"user_types": {}, "symbols": {}})", "x");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->Banner(), std::nullopt);
  EXPECT_EQ(none->symbol_count(), 0u);
}

TEST_F(IsfProfileTest, TypesOutliveTheProfile) {
  std::shared_ptr<const KernelTypes> types;
  {
    absl::StatusOr<IsfProfile> parsed = IsfProfile::Parse(TestProfileJson(), "ISF profile x");
    ASSERT_TRUE(parsed.ok());
    IsfProfile moved = *std::move(parsed);
    types = moved.Types();
  }
  EXPECT_EQ(types->OffsetOf("task_struct", "tag").value(), 20u);
}

TEST(IsfProfileParseTest, PointerSizeComesFromBaseTypes) {
  absl::StatusOr<IsfProfile> parsed = IsfProfile::Parse(R"({
    "base_types": {"pointer": {"size": 4, "signed": false, "kind": "int", "endian": "little"}},
    "user_types": {"s": {"kind": "class", "size": 4, "fields": {
      "p": {"offset": 0, "type": {"kind": "pointer", "subtype": {"kind": "base", "name": "void"}}}}}},
    "symbols": {}})",
                                                        "x");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  std::shared_ptr<const KernelTypes> t = parsed->Types();
  EXPECT_EQ(t->Field("s", "p")->size, 4u);
  EXPECT_EQ(t->Describe(t->FindType("s").value())->kind, TypeKind::kStruct);  // "class"
}

// ---------------------------------------------------------------------------
// Files.

TEST(IsfFileTest, LoadsPlainAndXzByMagicNotName) {
  const std::string plain = TempPath("plain_profile.json.xz");  // the name lies
  WriteFile(plain, TestProfileJson());
  absl::StatusOr<IsfProfile> a = IsfProfile::Load(plain);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->source(), "ISF profile " + plain);

  const std::string xz = TempPath("xz_profile.json");
  WriteFile(xz, XzCompress(TestProfileJson()));
  absl::StatusOr<IsfProfile> b = IsfProfile::Load(xz);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->source(), "ISF profile " + xz);
  EXPECT_EQ(b->Types()->OffsetOf("task_struct", "tag").value(), 20u);
  EXPECT_EQ(b->Banner(), BannerBytes());
  EXPECT_EQ(b->SymbolAddress("init_task"), kInitTask);
}

TEST(IsfFileTest, ConcatenatedXzStreamsAreOneDocument) {
  const std::string json = TestProfileJson();
  const std::string path = TempPath("concatenated.json.xz");
  WriteFile(path, XzCompress(json.substr(0, 100)) + XzCompress(json.substr(100)));
  absl::StatusOr<std::string> text = ReadIsfFile(path);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, json);
}

TEST(IsfFileTest, TruncatedXzIsRejected) {
  const std::string xz = XzCompress(TestProfileJson());
  for (size_t size : {size_t{6}, size_t{12}, xz.size() / 2, xz.size() - 1}) {
    const std::string path = TempPath("truncated.json.xz");
    WriteFile(path, xz.substr(0, size));
    absl::StatusOr<IsfProfile> loaded = IsfProfile::Load(path);
    ASSERT_FALSE(loaded.ok()) << size;
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument) << loaded.status();
    EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("ISF profile " + path + ": "));
    EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("xz data")) << size;
  }
}

TEST(IsfFileTest, CorruptXzIsRejected) {
  std::string xz = XzCompress(TestProfileJson());
  xz[xz.size() / 2] ^= 0x55;
  const std::string path = TempPath("corrupt.json.xz");
  WriteFile(path, xz);
  absl::StatusOr<IsfProfile> loaded = IsfProfile::Load(path);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("corrupt xz data"));

  // Garbage after a good stream.
  WriteFile(path, XzCompress(TestProfileJson()) + "garbage!");
  loaded = IsfProfile::Load(path);
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("xz data"));
}

TEST(IsfFileTest, DecompressionStopsAtTheLimit) {
  // 4 MiB of JSON whitespace around an object: compresses to a few KiB.
  const uint64_t limit = 1 << 20;
  std::string big = "{\"user_types\": {}, \"symbols\": {}}";
  big.append(4 << 20, ' ');
  const std::string path = TempPath("bomb.json.xz");
  WriteFile(path, XzCompress(big));
  absl::StatusOr<std::string> text = ReadIsfFile(path, limit);
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(text.status().message()),
              HasSubstr("decompresses to more than the limit of 1048576 bytes"));
  // Exactly at the limit is fine.
  big.resize(limit);
  WriteFile(path, XzCompress(big));
  text = ReadIsfFile(path, limit);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->size(), limit);
  // A plain file over the limit.
  big.push_back(' ');
  WriteFile(path, big);
  text = ReadIsfFile(path, limit);
  ASSERT_FALSE(text.ok());
  EXPECT_THAT(std::string(text.status().message()), HasSubstr("more than the limit"));
}

TEST(IsfFileTest, EmptyFileIsRejected) {
  const std::string path = TempPath("empty.json");
  WriteFile(path, "");
  absl::StatusOr<IsfProfile> loaded = IsfProfile::Load(path);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(loaded.status().message(), "ISF profile " + path + ": empty file");
}

TEST(IsfFileTest, MissingFileIsNotFound) {
  const std::string path = TempPath("does_not_exist.json");
  absl::StatusOr<IsfProfile> loaded = IsfProfile::Load(path);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("ISF profile " + path));
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("No such file or directory"));
}

TEST(IsfFileTest, DirectoryIsRejected) {
  absl::StatusOr<IsfProfile> loaded = IsfProfile::Load(TempPath(""));
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("is a directory"));
}

// ---------------------------------------------------------------------------
// Hostile profiles: each gets a clear InvalidArgument naming the source and
// the JSON path.

struct HostileCase {
  const char* name;
  std::string json;
  const char* message;    // expected in the error, after "ISF profile evil.json: "
  const char* also = "";  // and this, anywhere
};

std::string WithTask(absl::string_view fields) {
  return absl::StrCat(R"({"base_types": {"int": {"size": 4, "signed": true, "kind": "int"}},
    "user_types": {"task_struct": {"kind": "struct", "size": 16, "fields": {)",
                      fields, R"(}}}, "symbols": {}})");
}

std::string WithSymbol(absl::string_view symbol) {
  return absl::StrCat(R"({"user_types": {}, "symbols": {"s": )", symbol, "}}");
}

std::string NestedPointers(int depth) {
  std::string d = R"({"kind": "base", "name": "int"})";
  for (int i = 0; i < depth; ++i) d = absl::StrCat(R"({"kind": "pointer", "subtype": )", d, "}");
  return d;
}

std::vector<HostileCase> HostileCases() {
  return {
      {"Empty", "", "empty"},
      {"NotJson", R"({"user_types": {)", "not JSON: parse error at line 1"},
      {"Garbage", "hello", "not JSON"},
      {"InvalidUtf8", "{\"user_types\": {\"\xff\": 1}, \"symbols\": {}}", "not JSON"},
      {"NotAnObject", "[1, 2]", "not a JSON object"},
      {"MissingUserTypes", R"({"symbols": {}})", "no \"user_types\""},
      {"MissingSymbols", R"({"user_types": {}})", "no \"symbols\""},
      {"UserTypesNotAnObject", R"({"user_types": [], "symbols": {}})", "user_types: not an object"},
      {"SymbolsNotAnObject", R"({"user_types": {}, "symbols": 3})", "symbols: not an object"},
      {"OffsetNotANumber",
       WithTask(R"("comm": {"offset": "8", "type": {"kind": "base", "name": "int"}})"),
       "user_types.task_struct.fields.comm.offset: not a number"},
      {"OffsetNotAnInteger",
       WithTask(R"("comm": {"offset": 1.5, "type": {"kind": "base", "name": "int"}})"),
       "user_types.task_struct.fields.comm.offset: not an integer"},
      {"OffsetMissing", WithTask(R"("comm": {"type": {"kind": "base", "name": "int"}})"),
       "user_types.task_struct.fields.comm: no \"offset\""},
      {"TypeMissing", WithTask(R"("comm": {"offset": 0})"),
       "user_types.task_struct.fields.comm: no \"type\""},
      {"FieldNotAnObject", WithTask(R"("comm": 7)"),
       "user_types.task_struct.fields.comm: not an object"},
      {"AnonymousNotABoolean",
       WithTask(
           R"("comm": {"offset": 0, "anonymous": 1, "type": {"kind": "base", "name": "int"}})"),
       "user_types.task_struct.fields.comm.anonymous: not a boolean"},
      {"NegativeSize",
       R"({"user_types": {"s": {"kind": "struct", "size": -8, "fields": {}}}, "symbols": {}})",
       "user_types.s.size: -8 is negative"},
      {"AbsurdSize",
       R"({"user_types": {"s": {"kind": "struct", "size": 1000000000000, "fields": {}}}, "symbols": {}})",
       "user_types.s.size: 1000000000000 is beyond the limit of 4294967295"},
      {"UnknownUserKind",
       R"({"user_types": {"s": {"kind": "blob", "size": 8, "fields": {}}}, "symbols": {}})",
       "user_types.s.kind: unknown user type kind \"blob\""},
      {"FieldsMissing", R"({"user_types": {"s": {"kind": "struct", "size": 8}}, "symbols": {}})",
       "user_types.s: no \"fields\""},
      {"FieldBeyondOneMiB",
       WithTask(R"("comm": {"offset": 2000000, "type": {"kind": "base", "name": "int"}})"),
       "user_types.task_struct.fields.comm.offset: 2000000 is more than 1048576 bytes beyond the "
       "end "
       "of the 16-byte type"},
      {"BitfieldBeyondOneMiB",
       WithTask(R"("f": {"offset": 1000, "type": {"kind": "bitfield", "bit_position": 8388607,
                "bit_length": 1, "type": {"kind": "base", "name": "int"}}})"),
       "user_types.task_struct.fields.f.type.bit_position: bit 8396607 is more than 1048576 bytes"},
      {"ArrayCountTooLarge",
       WithTask(R"("a": {"offset": 0, "type": {"kind": "array", "count": 4294967297,
                "subtype": {"kind": "base", "name": "int"}}})"),
       "user_types.task_struct.fields.a.type.count: 4294967297 is beyond the limit of 4294967296"},
      {"ArraySizeOverflows",
       WithTask(R"("a": {"offset": 0, "type": {"kind": "array", "count": 4294967296,
                "subtype": {"kind": "array", "count": 4294967296, "subtype": {"kind": "base", "name": "int"}}}})"),
       "user_types.task_struct.fields.a.type.count: 4294967296 elements of 17179869184 bytes "
       "overflow"},
      {"ArrayCountNegative", WithTask(R"("a": {"offset": 0, "type": {"kind": "array", "count": -1,
                "subtype": {"kind": "base", "name": "int"}}})"),
       "user_types.task_struct.fields.a.type.count: -1 is negative"},
      {"DescriptorTooDeep",
       WithTask(absl::StrCat(R"("p": {"offset": 0, "type": )", NestedPointers(64), "}")),
       "user_types.task_struct.fields.p.type.subtype.subtype",
       "type descriptors nested deeper than 64"},
      {"DescriptorNotAnObject", WithTask(R"("p": {"offset": 0, "type": "int"})"),
       "user_types.task_struct.fields.p.type: not an object"},
      {"DescriptorWithoutKind", WithTask(R"("p": {"offset": 0, "type": {"name": "int"}})"),
       "user_types.task_struct.fields.p.type: no \"kind\""},
      {"UnknownDescriptorKind", WithTask(R"("p": {"offset": 0, "type": {"kind": "blob"}})"),
       "user_types.task_struct.fields.p.type.kind: unknown kind \"blob\""},
      {"PointerWithoutSubtype", WithTask(R"("p": {"offset": 0, "type": {"kind": "pointer"}})"),
       "user_types.task_struct.fields.p.type: no \"subtype\""},
      {"UnknownBaseType",
       WithTask(R"("p": {"offset": 0, "type": {"kind": "base", "name": "foo"}})"),
       "user_types.task_struct.fields.p.type.name: base type \"foo\" is not in base_types"},
      {"UnknownEnum", WithTask(R"("p": {"offset": 0, "type": {"kind": "enum", "name": "e"}})"),
       "user_types.task_struct.fields.p.type.name: enum \"e\" is not in enums"},
      {"ZeroBitLength",
       WithTask(
           R"("f": {"offset": 0, "type": {"kind": "bitfield", "bit_position": 0, "bit_length": 0,
                "type": {"kind": "base", "name": "int"}}})"),
       "user_types.task_struct.fields.f.type.bit_length: a bitfield of 0 bits"},
      {"BitfieldOfAStruct",
       WithTask(
           R"("f": {"offset": 0, "type": {"kind": "bitfield", "bit_position": 0, "bit_length": 3,
                "type": {"kind": "struct", "name": "task_struct"}}})"),
       "user_types.task_struct.fields.f.type.type: a bitfield of struct"},
      {"BitfieldOutsideAField", WithSymbol(R"({"address": 1, "type": {"kind": "bitfield",
                "bit_position": 0, "bit_length": 1, "type": {"kind": "base", "name": "void"}}})"),
       "symbols.s.type.kind: a bitfield outside a struct field"},
      {"BadPointerSize",
       R"({"base_types": {"pointer": {"size": 3, "signed": false, "kind": "int"}}, "user_types": {}, "symbols": {}})",
       "base_types.pointer.size: a pointer of 3 bytes (not 4 or 8)"},
      {"BaseTypeKind",
       R"({"base_types": {"x": {"size": 4, "signed": false, "kind": "wide"}}, "user_types": {}, "symbols": {}})",
       "base_types.x.kind: unknown base type kind \"wide\""},
      {"BaseTypeSigned",
       R"({"base_types": {"x": {"size": 4, "signed": "no", "kind": "int"}}, "user_types": {}, "symbols": {}})",
       "base_types.x.signed: not a boolean"},
      {"EnumBaseUnknown",
       R"({"enums": {"e": {"size": 4, "base": "nope", "constants": {}}}, "user_types": {}, "symbols": {}})",
       "enums.e.base: base type \"nope\" is not in base_types"},
      {"EnumConstantNotANumber",
       R"({"enums": {"e": {"size": 4, "base": "void", "constants": {"A": "1"}}}, "user_types": {}, "symbols": {}})",
       "enums.e.constants.A: not a number"},
      {"EnumSizeAbsurd",
       R"({"enums": {"e": {"size": 4096, "base": "void", "constants": {}}}, "user_types": {}, "symbols": {}})",
       "enums.e.size: 4096 is beyond the limit of 16"},
      {"SymbolAddressMissing", WithSymbol(R"({"type": {"kind": "function"}})"),
       "symbols.s: no \"address\""},
      {"SymbolAddressNegative", WithSymbol(R"({"address": -4096})"),
       "symbols.s.address: -4096 is negative"},
      {"SymbolAddressString", WithSymbol(R"({"address": "0xffffffff81000000"})"),
       "symbols.s.address: not a number"},
      {"SymbolNotAnObject", WithSymbol("12"), "symbols.s: not an object"},
      {"BannerNotBase64",
       R"({"user_types": {}, "symbols": {"linux_banner": {"address": 1, "constant_data": "!!not base64!!"}}})",
       "symbols.linux_banner.constant_data: not base64"},
      {"BannerNotAString",
       R"({"user_types": {}, "symbols": {"linux_banner": {"address": 1, "constant_data": 5}}})",
       "symbols.linux_banner.constant_data: not a string"},
  };
}

class IsfHostileTest : public ::testing::TestWithParam<HostileCase> {};

TEST_P(IsfHostileTest, IsRejectedWithThePath) {
  const HostileCase& c = GetParam();
  absl::StatusOr<IsfProfile> parsed = IsfProfile::Parse(c.json, "ISF profile evil.json");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << parsed.status();
  EXPECT_THAT(std::string(parsed.status().message()),
              HasSubstr(absl::StrCat("ISF profile evil.json: ", c.message)));
  EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(c.also));
}

INSTANTIATE_TEST_SUITE_P(Cases, IsfHostileTest, ::testing::ValuesIn(HostileCases()),
                         [](const ::testing::TestParamInfo<HostileCase>& info) {
                           return std::string(info.param.name);
                         });

TEST(IsfHostileTest, DepthSixtyFourIsAccepted) {
  absl::StatusOr<IsfProfile> parsed = IsfProfile::Parse(
      WithTask(absl::StrCat(R"("p": {"offset": 0, "type": )", NestedPointers(63), "}")), "x");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
}

TEST(IsfHostileTest, DeeplyNestedJsonDoesNotOverflowTheStack) {
  std::string deep(200000, '[');
  deep.append(200000, ']');
  absl::StatusOr<IsfProfile> parsed = IsfProfile::Parse(deep, "x");
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("not a JSON object"));
  std::string deep_descriptor =
      WithTask(absl::StrCat(R"("p": {"offset": 0, "type": )", NestedPointers(5000), "}"));
  parsed = IsfProfile::Parse(deep_descriptor, "x");
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("nested deeper than 64"));
}

TEST(IsfHostileTest, CyclicAnonymousMembersDoNotHang) {
  // A struct whose anonymous members are itself (twice: the search would
  // double at every level), and two that contain each other.
  absl::StatusOr<IsfProfile> parsed = IsfProfile::Parse(R"({
    "base_types": {"int": {"size": 4, "signed": true, "kind": "int"}},
    "user_types": {
      "loop": {"kind": "struct", "size": 16, "fields": {
        "unnamed_field_0": {"offset": 0, "anonymous": true, "type": {"kind": "struct", "name": "loop"}},
        "unnamed_field_8": {"offset": 8, "type": {"kind": "struct", "name": "loop"}},
        "x": {"offset": 4, "type": {"kind": "base", "name": "int"}}}},
      "a": {"kind": "struct", "size": 8, "fields": {
        "inner": {"offset": 0, "anonymous": true, "type": {"kind": "struct", "name": "b"}}}},
      "b": {"kind": "struct", "size": 8, "fields": {
        "inner": {"offset": 0, "anonymous": true, "type": {"kind": "struct", "name": "a"}}}}},
    "symbols": {}})",
                                                        "ISF profile loop.json");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  std::shared_ptr<const KernelTypes> t = parsed->Types();
  EXPECT_EQ(t->Field("loop", "missing").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(t->Field("a", "missing").status().code(), absl::StatusCode::kNotFound);
  // What is there is still found.
  EXPECT_EQ(t->OffsetOf("loop", "x").value(), 4u);
}

// ---------------------------------------------------------------------------
// Export.

std::vector<uint8_t> RawBtf(struct btf* b) {
  uint32_t size = 0;
  const void* raw = btf__raw_data(b, &size);
  std::vector<uint8_t> out(static_cast<const uint8_t*>(raw),
                           static_cast<const uint8_t*>(raw) + size);
  btf__free(b);
  return out;
}

// Everything the exporter has to flatten:
//   struct list_head { struct list_head *next, *prev; };
//   typedef int pid_t;  typedef const volatile pid_t cv_pid_t;
//   enum pid_type { PIDTYPE_PID, PIDTYPE_TGID, PIDTYPE_MAX = 4 };       // unsigned
//   enum { NEG = -1, POS = 2 };                                         // anonymous, signed
//   enum big : u64 { BIG_A = 1 << 40, BIG_TOP = ~0ull };                // enum64
//   enum tiny : u8 { TINY_A = 3 };  enum shorty : s16 { SHORTY = -3 };  // no s16 integer
//   struct task {                                 // 184 bytes
//     volatile long state;                        // 0
//     cv_pid_t pid;                               // 8
//     union {                                     // 16, anonymous
//       unsigned long word;
//       struct { unsigned flag:1, level:5; const char tag; enum pid_type how:3; };
//       struct { unsigned alt_a; unsigned alt_b; };   // also at 0: the names collide
//     };
//     char comm[16];                              // 24
//     struct list_head tasks;                     // 40
//     struct mm *mm;                              // 56 (declared only)
//     enum pid_type kind;                         // 64
//     enum big big;                               // 72
//     int matrix[3][4];                           // 80
//     int (*handler)(int);                        // 128
//     int __tag("user") *user_ptr;                // 136
//     unsigned long fl:7;                         // bit 1155
//     union uu *uu;                               // 152 (declared only)
//     double d;                                   // 160
//     _Bool b;                                    // 168
//     enum tiny t:2;                              // bit 1352
//     char * restrict rp;                         // 176
//     enum shorty sh;                             // 170
//   };
//   typedef struct task task_t;
std::vector<uint8_t> BuildExportBtf() {
  struct btf* b = btf__new_empty();
  const int int_id = btf__add_int(b, "int", 4, BTF_INT_SIGNED);
  const int uint_id = btf__add_int(b, "unsigned int", 4, 0);
  const int long_id = btf__add_int(b, "long", 8, BTF_INT_SIGNED);
  const int ulong_id = btf__add_int(b, "unsigned long", 8, 0);
  const int char_id = btf__add_int(b, "char", 1, BTF_INT_CHAR | BTF_INT_SIGNED);
  const int bool_id = btf__add_int(b, "_Bool", 1, BTF_INT_BOOL);
  btf__add_int(b, "unsigned char", 1, 0);
  const int double_id = btf__add_float(b, "double", 8);
  const int list_ptr = btf__add_ptr(b, btf__type_cnt(b) + 1);
  const int list_id = btf__add_struct(b, "list_head", 16);
  btf__add_field(b, "next", list_ptr, 0, 0);
  btf__add_field(b, "prev", list_ptr, 64, 0);
  const int pid_t_id = btf__add_typedef(b, "pid_t", int_id);
  const int cv_pid =
      btf__add_typedef(b, "cv_pid_t", btf__add_const(b, btf__add_volatile(b, pid_t_id)));
  const int pid_type = btf__add_enum(b, "pid_type", 4);
  btf__add_enum_value(b, "PIDTYPE_PID", 0);
  btf__add_enum_value(b, "PIDTYPE_TGID", 1);
  btf__add_enum_value(b, "PIDTYPE_MAX", 4);
  btf__add_enum(b, nullptr, 4);
  btf__add_enum_value(b, "NEG", -1);
  btf__add_enum_value(b, "POS", 2);
  const int big = btf__add_enum64(b, "big", 8, false);
  btf__add_enum64_value(b, "BIG_A", uint64_t{1} << 40);
  btf__add_enum64_value(b, "BIG_TOP", ~uint64_t{0});
  const int tiny = btf__add_enum(b, "tiny", 1);
  btf__add_enum_value(b, "TINY_A", 3);
  const int shorty = btf__add_enum(b, "shorty", 2);
  btf__add_enum_value(b, "SHORTY", -3);
  const int vol_long = btf__add_volatile(b, long_id);
  const int const_char = btf__add_const(b, char_id);
  const int inner = btf__add_struct(b, nullptr, 8);
  btf__add_field(b, "flag", uint_id, 0, 1);
  btf__add_field(b, "level", uint_id, 1, 5);
  btf__add_field(b, "tag", const_char, 32, 0);
  btf__add_field(b, "how", pid_type, 40, 3);
  const int alt = btf__add_struct(b, nullptr, 8);
  btf__add_field(b, "alt_a", uint_id, 0, 0);
  btf__add_field(b, "alt_b", uint_id, 32, 0);
  const int onion = btf__add_union(b, nullptr, 8);
  btf__add_field(b, "word", ulong_id, 0, 0);
  btf__add_field(b, nullptr, inner, 0, 0);
  btf__add_field(b, nullptr, alt, 0, 0);
  const int comm = btf__add_array(b, int_id, char_id, 16);
  const int row = btf__add_array(b, int_id, int_id, 4);
  const int matrix = btf__add_array(b, int_id, row, 3);
  const int mm_fwd = btf__add_fwd(b, "mm", BTF_FWD_STRUCT);
  const int mm_ptr = btf__add_ptr(b, mm_fwd);
  const int uu_ptr = btf__add_ptr(b, btf__add_fwd(b, "uu", BTF_FWD_UNION));
  const int proto = btf__add_func_proto(b, int_id);
  btf__add_func_param(b, "x", int_id);
  const int handler = btf__add_ptr(b, proto);
  const int user_ptr = btf__add_ptr(b, btf__add_type_tag(b, "user", int_id));
  const int rp = btf__add_restrict(b, btf__add_ptr(b, char_id));
  const int task = btf__add_struct(b, "task", 184);
  btf__add_field(b, "state", vol_long, 0, 0);
  btf__add_field(b, "pid", cv_pid, 64, 0);
  btf__add_field(b, nullptr, onion, 128, 0);
  btf__add_field(b, "comm", comm, 192, 0);
  btf__add_field(b, "tasks", list_id, 320, 0);
  btf__add_field(b, "mm", mm_ptr, 448, 0);
  btf__add_field(b, "kind", pid_type, 512, 0);
  btf__add_field(b, "big", big, 576, 0);
  btf__add_field(b, "matrix", matrix, 640, 0);
  btf__add_field(b, "handler", handler, 1024, 0);
  btf__add_field(b, "user_ptr", user_ptr, 1088, 0);
  btf__add_field(b, "fl", ulong_id, 1155, 7);
  btf__add_field(b, "uu", uu_ptr, 1216, 0);
  btf__add_field(b, "d", double_id, 1280, 0);
  btf__add_field(b, "b", bool_id, 1344, 0);
  btf__add_field(b, "t", tiny, 1352, 2);
  btf__add_field(b, "sh", shorty, 1360, 0);
  btf__add_field(b, "rp", rp, 1408, 0);
  btf__add_typedef(b, "task_t", task);
  return RawBtf(b);
}

std::unique_ptr<BtfTypes> ParseBtf(const std::vector<uint8_t>& raw) {
  absl::StatusOr<std::unique_ptr<BtfTypes>> parsed = BtfTypes::Parse(raw, "BTF in a test");
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.ok() ? *std::move(parsed) : nullptr;
}

// Every member name reachable in `id` (through anonymous members).
void MemberNames(const struct btf* b, uint32_t id, std::set<std::string>* names, int depth = 0) {
  const struct btf_type* t = btf__type_by_id(b, id);
  while (btf_is_typedef(t) || btf_is_mod(t)) t = btf__type_by_id(b, t->type);
  if (!btf_is_composite(t) || depth > 8) return;
  const struct btf_member* m = btf_members(t);
  for (uint16_t i = 0; i < btf_vlen(t); ++i) {
    const char* name = btf__name_by_offset(b, m[i].name_off);
    if (name && *name) {
      names->insert(name);
    } else {
      MemberNames(b, m[i].type, names, depth + 1);
    }
  }
}

// The ISF types must describe every member of every struct as BTF does.
void ExpectSameLayouts(const BtfTypes& btf, const KernelTypes& isf) {
  const struct btf* b = btf.btf();
  int compared = 0;
  for (uint32_t id = 1; id < btf__type_cnt(b); ++id) {
    const struct btf_type* t = btf__type_by_id(b, id);
    if (!btf_is_composite(t)) continue;
    const char* raw_name = btf__name_by_offset(b, t->name_off);
    const std::string name = raw_name && *raw_name ? raw_name : absl::StrCat("unnamed_", id);
    SCOPED_TRACE(name);
    absl::StatusOr<TypeId> isf_id = isf.FindType(name);
    ASSERT_TRUE(isf_id.ok()) << isf_id.status();
    absl::StatusOr<TypeInfo> a = btf.Describe(id), c = isf.Describe(*isf_id);
    ASSERT_TRUE(a.ok() && c.ok());
    EXPECT_EQ(a->kind, c->kind);
    EXPECT_EQ(a->size, c->size);
    std::set<std::string> members;
    MemberNames(b, id, &members);
    for (const std::string& member : members) {
      SCOPED_TRACE(member);
      absl::StatusOr<FieldInfo> want = btf.Field(id, member);
      absl::StatusOr<FieldInfo> got = isf.Field(*isf_id, member);
      ASSERT_TRUE(want.ok()) << want.status();
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(got->offset, want->offset);
      EXPECT_EQ(got->bit_offset, want->bit_offset);
      EXPECT_EQ(got->bit_size, want->bit_size);
      EXPECT_EQ(got->size, want->size);
      EXPECT_EQ(isf.TypeName(got->type), btf.TypeName(want->type));
      absl::StatusOr<TypeInfo> want_type = btf.Describe(want->type);
      absl::StatusOr<TypeInfo> got_type = isf.Describe(got->type);
      ASSERT_TRUE(want_type.ok() && got_type.ok());
      EXPECT_EQ(got_type->kind, want_type->kind);
      EXPECT_EQ(got_type->size, want_type->size);
      EXPECT_EQ(got_type->is_signed, want_type->is_signed);
      ++compared;
    }
  }
  EXPECT_GT(compared, 0);
}

SymbolTable RuntimeSymbols() {
  return SymbolTable({
      {0xffffffff81000000 + kSlide, 'T', "_text"},
      {0xffffffff81e3a6b0 + kSlide, 't', "schedule"},
      {0xffffffff81e3a700 + kSlide, 'T', "schedule"},  // a second of the name: dropped
      {0xffffffff82a0c940 + kSlide, 'D', "init_task"},
      {0xffffffff82c05900 + kSlide, 'b', "jiffies"},
      {0xffffffff82200100 + kSlide, 'R', "linux_banner"},
      {0x2f4c0, 'A', "runqueues"},
      {0, 'a', "fixed_percpu_data"},
      {0x1000, 'D', "low_data"},  // not in the kernel image: not moved
  });
}

TEST(IsfExportTest, RoundTripReproducesBtfAndSymbols) {
  std::unique_ptr<BtfTypes> btf = ParseBtf(BuildExportBtf());
  ASSERT_NE(btf, nullptr);
  const SymbolTable symbols = RuntimeSymbols();
  IsfExportInput input;
  input.symbols = &symbols;
  input.kaslr_slide = kSlide;
  input.types = btf.get();
  input.banner = BannerBytes();
  input.osrelease = "6.1.0-18-amd64";
  input.build_id = "0123456789abcdef0123456789abcdef01234567";
  absl::StatusOr<std::string> json = ExportIsf(input);
  ASSERT_TRUE(json.ok()) << json.status();

  absl::StatusOr<IsfProfile> profile = IsfProfile::Parse(*json, "ISF profile exported");
  ASSERT_TRUE(profile.ok()) << profile.status() << "\n" << *json;
  std::shared_ptr<const KernelTypes> isf = profile->Types();
  ExpectSameLayouts(*btf, *isf);

  // Spot checks of what the comparison covers.
  EXPECT_EQ(isf->Field("task", "fl")->offset, 144u);
  EXPECT_EQ(isf->Field("task", "fl")->bit_offset, 1155u);
  EXPECT_EQ(isf->Field("task", "t")->offset, 169u);
  EXPECT_EQ(isf->Field("task", "how")->bit_offset, 128u + 40);
  EXPECT_EQ(isf->Field("task", "alt_b")->offset, 20u);
  EXPECT_EQ(isf->Field("task", "matrix")->size, 48u);
  EXPECT_EQ(isf->OffsetOf("task", "matrix[2]").value(), 80u + 32);
  EXPECT_EQ(isf->TypeName(isf->Field("task", "uu")->type), "union uu *");
  EXPECT_EQ(isf->TypeName(isf->Field("task", "pid")->type), "int");
  EXPECT_EQ(isf->FindType("task_t").status().code(), absl::StatusCode::kNotFound);

  // Enums: values and signedness as BtfTypes reads them.
  for (const char* e : {"PIDTYPE_PID", "PIDTYPE_TGID", "PIDTYPE_MAX", "NEG", "POS", "BIG_A",
                        "BIG_TOP", "TINY_A", "SHORTY"}) {
    SCOPED_TRACE(e);
    EXPECT_EQ(isf->EnumValue(e).value(), btf->EnumValue(e).value());
  }
  for (const char* e : {"pid_type", "big", "tiny", "shorty"}) {
    SCOPED_TRACE(e);
    absl::StatusOr<TypeInfo> want = btf->Describe(btf->FindType(e).value());
    absl::StatusOr<TypeInfo> got = isf->Describe(isf->FindType(e).value());
    ASSERT_TRUE(want.ok() && got.ok());
    EXPECT_EQ(got->size, want->size);
    EXPECT_EQ(got->is_signed, want->is_signed);
  }

  // Symbols: runtime addresses back with the same slide, letters as ISF can
  // say them.
  const SymbolTable loaded = profile->Symbols(kSlide);
  EXPECT_EQ(loaded.size(), symbols.size() - 1);
  std::set<std::string> seen;
  for (size_t i = 0; i < symbols.size(); ++i) {
    const Symbol want = symbols[i];
    if (!seen.insert(std::string(want.name)).second) continue;
    SCOPED_TRACE(std::string(want.name));
    std::optional<size_t> index = loaded.IndexOf(want.name);
    ASSERT_TRUE(index.has_value());
    const Symbol got = loaded[*index];
    EXPECT_EQ(got.address, want.address);
    const bool image = want.type != 'A' && want.type != 'a' && want.address >= kKernelImageStart;
    const char letter = !image ? 'A' : (want.type == 'T' || want.type == 't') ? 'T' : 'D';
    EXPECT_EQ(got.type, letter);
  }
  EXPECT_EQ(profile->SymbolAddress("init_task"), 0xffffffff82a0c940);  // link-time
  EXPECT_EQ(profile->SymbolAddress("schedule"), 0xffffffff81e3a6b0);   // the first one
  EXPECT_EQ(profile->Banner(), BannerBytes());

  // The metadata Volatility 3's schema accepts.
  EXPECT_THAT(*json, HasSubstr(R"("format":"6.2.0")"));
  EXPECT_THAT(*json, HasSubstr(R"("producer":{"name":"vmi","version":"1"})"));
  EXPECT_THAT(
      *json,
      HasSubstr(
          R"({"kind":"symtab","name":"kallsyms in guest memory; osrelease 6.1.0-18-amd64; build id 0123456789abcdef0123456789abcdef01234567"})"));
  EXPECT_THAT(
      *json, HasSubstr(R"({"kind":"dwarf","name":"BTF in guest memory; osrelease 6.1.0-18-amd64)"));
  // Anonymous members at the same offset keep distinct names.
  EXPECT_THAT(*json, HasSubstr(R"("unnamed_field_0":{"offset":0,"anonymous":true)"));
  EXPECT_THAT(*json, HasSubstr(R"("unnamed_field_0_1":{"offset":0,"anonymous":true)"));
  EXPECT_THAT(*json, HasSubstr(R"("unnamed_field_10":{"offset":16,"anonymous":true)"));
}

TEST(IsfExportTest, SymbolsOnly) {
  const SymbolTable symbols = RuntimeSymbols();
  IsfExportInput input;
  input.symbols = &symbols;
  input.kaslr_slide = kSlide;
  absl::StatusOr<std::string> json = ExportIsf(input);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_THAT(*json, HasSubstr(R"("types":[])"));
  absl::StatusOr<IsfProfile> profile = IsfProfile::Parse(*json, "x");
  ASSERT_TRUE(profile.ok()) << profile.status();
  EXPECT_EQ(profile->Types()->type_count(), 3u);  // void, pointer and the function type
  EXPECT_EQ(profile->Symbols(kSlide).Address("init_task"), 0xffffffff82a0c940 + kSlide);
  EXPECT_EQ(profile->Banner(), std::nullopt);
  input.symbols = nullptr;
  EXPECT_EQ(ExportIsf(input).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(IsfExportTest, NamesThatAreNotUtf8StayJson) {
  const SymbolTable symbols(
      {{0xffffffff81000000, 'T', "bad\xff\"name\n"}, {0xffffffff81000010, 'T', "caf\xc3\xa9"}});
  IsfExportInput input;
  input.symbols = &symbols;
  input.osrelease = "6.1\x80";
  absl::StatusOr<std::string> json = ExportIsf(input);
  ASSERT_TRUE(json.ok());
  absl::StatusOr<IsfProfile> profile = IsfProfile::Parse(*json, "x");
  ASSERT_TRUE(profile.ok()) << profile.status();
  EXPECT_TRUE(profile->SymbolAddress("bad\xef\xbf\xbd\"name\n").has_value());
  EXPECT_TRUE(profile->SymbolAddress("caf\xc3\xa9").has_value());
}

TEST(IsfExportTest, DanglingOrSelfContainingBtfIsRejected) {
  // A member of a type id that does not exist, and an array of itself:
  // libbpf 1.1 does not check references when parsing.
  struct btf* b = btf__new_empty();
  const int int_id = btf__add_int(b, "int", 4, BTF_INT_SIGNED);
  btf__add_struct(b, "dangling", 8);
  btf__add_field(b, "x", 9999, 0, 0);
  std::vector<uint8_t> dangling = RawBtf(b);

  b = btf__new_empty();
  const int int2 = btf__add_int(b, "int", 4, BTF_INT_SIGNED);
  const int self = btf__add_array(b, int2, btf__type_cnt(b), 2);
  btf__add_struct(b, "selfish", 8);
  btf__add_field(b, "x", self, 0, 0);
  std::vector<uint8_t> selfish = RawBtf(b);
  (void)int_id;

  const SymbolTable symbols;
  for (const auto& [raw, message] : {std::pair{dangling, "type 9999, which does not exist"},
                                     std::pair{selfish, "contains itself"}}) {
    absl::StatusOr<std::unique_ptr<BtfTypes>> parsed = BtfTypes::Parse(raw, "bad BTF");
    if (!parsed.ok()) continue;  // a newer libbpf refuses it already
    IsfExportInput input;
    input.symbols = &symbols;
    input.types = parsed->get();
    absl::StatusOr<std::string> json = ExportIsf(input);
    ASSERT_FALSE(json.ok());
    EXPECT_EQ(json.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(json.status().message()), HasSubstr(message));
  }
}

// A kernel-sized input: ~100k BTF types and ~100k symbols. Reports the time
// export and load take; asserts only that the result is right.
TEST(IsfExportTest, LargeSyntheticKernel) {
  constexpr int kStructs = 20000;
  constexpr int kEnums = 2000;
  struct btf* b = btf__new_empty();
  const int int_id = btf__add_int(b, "int", 4, BTF_INT_SIGNED);
  const int uint_id = btf__add_int(b, "unsigned int", 4, 0);
  const int ulong_id = btf__add_int(b, "unsigned long", 8, 0);
  const int char_id = btf__add_int(b, "char", 1, BTF_INT_CHAR);
  const int name_array = btf__add_array(b, int_id, char_id, 16);
  std::vector<int> enum_ids;
  for (int e = 0; e < kEnums; ++e) {
    enum_ids.push_back(btf__add_enum(b, absl::StrFormat("enum_%d", e).c_str(), 4));
    for (int v = 0; v < 8; ++v) btf__add_enum_value(b, absl::StrFormat("E%d_V%d", e, v).c_str(), v);
  }
  // Per struct: a typedef, a pointer to the next struct, an array, an
  // anonymous union and the struct itself (5 types).
  const int first_struct_guess = btf__type_cnt(b);
  for (int s = 0; s < kStructs; ++s) {
    const int base = btf__type_cnt(b);
    const int td = btf__add_typedef(b, absl::StrFormat("s%d_t", s).c_str(), ulong_id);
    // The next struct is 5 ids on (and the last points at the first).
    const int ptr = btf__add_ptr(b, s + 1 < kStructs ? base + 9 : first_struct_guess + 4);
    const int arr = btf__add_array(b, int_id, ulong_id, (s % 7) + 1);
    const int anon = btf__add_union(b, nullptr, 8);
    btf__add_field(b, absl::StrFormat("u%d_a", s).c_str(), ulong_id, 0, 0);
    btf__add_field(b, absl::StrFormat("u%d_b", s).c_str(), ptr, 0, 0);
    btf__add_struct(b, absl::StrFormat("struct_%d", s).c_str(), 48 + 8 * 8);
    btf__add_field(b, "count", td, 0, 0);
    btf__add_field(b, "next", ptr, 64, 0);
    btf__add_field(b, "flags", uint_id, 128, 3);
    btf__add_field(b, "mode", enum_ids[s % kEnums], 131, 4);
    btf__add_field(b, "name", name_array, 192, 0);
    btf__add_field(b, nullptr, anon, 320, 0);
    btf__add_field(b, "values", arr, 384, 0);
  }
  std::unique_ptr<BtfTypes> btf = ParseBtf(RawBtf(b));
  ASSERT_NE(btf, nullptr);

  std::vector<SymbolTable::Entry> entries;
  for (int i = 0; i < 100000; ++i) {
    entries.push_back({0xffffffff81000000 + kSlide + 16 * i, i % 3 ? 'T' : 'd',
                       absl::StrFormat("symbol_number_%d", i)});
  }
  const SymbolTable symbols(std::move(entries));

  IsfExportInput input;
  input.symbols = &symbols;
  input.kaslr_slide = kSlide;
  input.types = btf.get();
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<std::string> json = ExportIsf(input);
  const auto t1 = std::chrono::steady_clock::now();
  ASSERT_TRUE(json.ok()) << json.status();
  absl::StatusOr<IsfProfile> profile = IsfProfile::Parse(*json, "ISF profile large");
  const auto t2 = std::chrono::steady_clock::now();
  ASSERT_TRUE(profile.ok()) << profile.status();
  const SymbolTable loaded = profile->Symbols(kSlide);
  const auto t3 = std::chrono::steady_clock::now();
  const auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
  std::printf(
      "large synthetic kernel: %zu BTF types, %zu symbols, %zu bytes of JSON\n"
      "  export %.0f ms, parse %.0f ms, Symbols() %.0f ms\n",
      btf->type_count(), symbols.size(), json->size(), ms(t1 - t0), ms(t2 - t1), ms(t3 - t2));
  RecordProperty("export_ms", static_cast<int>(ms(t1 - t0)));
  RecordProperty("parse_ms", static_cast<int>(ms(t2 - t1)));

  EXPECT_EQ(loaded.size(), symbols.size());
  EXPECT_EQ(loaded.Address("symbol_number_99999"), 0xffffffff81000000 + kSlide + 16 * 99999);
  std::shared_ptr<const KernelTypes> isf = profile->Types();
  for (int s : {0, 1, kStructs / 2, kStructs - 1}) {
    const std::string name = absl::StrFormat("struct_%d", s);
    SCOPED_TRACE(name);
    for (const char* member : {"count", "next", "flags", "mode", "name", "values", "u0_a"}) {
      absl::StatusOr<FieldInfo> want = btf->Field(name, member);
      absl::StatusOr<FieldInfo> got = isf->Field(name, member);
      if (!want.ok()) {
        EXPECT_FALSE(got.ok());
        continue;
      }
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(got->offset, want->offset);
      EXPECT_EQ(got->bit_offset, want->bit_offset);
      EXPECT_EQ(got->size, want->size);
      EXPECT_EQ(isf->TypeName(got->type), btf->TypeName(want->type));
    }
    EXPECT_EQ(isf->OffsetOf(name, absl::StrFormat("u%d_b", s)).value(), 40u);
  }
  EXPECT_EQ(isf->EnumValue("E1999_V7").value(), 7);
}

}  // namespace
}  // namespace vmi::os_linux
