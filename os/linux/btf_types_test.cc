#include "os/linux/btf_types.h"

#include <bpf/btf.h>

#include <cstring>
#include <memory>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmi::os_linux {
namespace {

using ::testing::HasSubstr;

// Builds, with libbpf's writer API:
//   struct list_head { struct list_head *next, *prev; };
//   typedef int pid_t;
//   enum pid_type { PIDTYPE_PID, PIDTYPE_TGID, PIDTYPE_MAX = 4 };
//   struct task {                       // 64 bytes
//     volatile long state;              // 0
//     pid_t pid;                        // 8
//     union {                           // 16, anonymous
//       unsigned long word;
//       struct {                        // anonymous
//         unsigned int flag : 1;        // bit 128
//         unsigned int level : 5;       // bit 129
//         const char tag;               // 20
//       };
//     };
//     char comm[16];                    // 24
//     struct list_head tasks;           // 40
//     struct mm *mm;                    // 56 (struct mm only declared)
//   };
//   typedef struct task task_t;
std::vector<uint8_t> BuildBtf() {
  struct btf* b = btf__new_empty();
  const int int_id = btf__add_int(b, "int", 4, BTF_INT_SIGNED);
  const int uint_id = btf__add_int(b, "unsigned int", 4, 0);
  const int long_id = btf__add_int(b, "long", 8, BTF_INT_SIGNED);
  const int ulong_id = btf__add_int(b, "unsigned long", 8, 0);
  const int char_id = btf__add_int(b, "char", 1, BTF_INT_CHAR);
  // Fields must follow their struct at once: the pointer to list_head comes
  // first, referring forward to the id the struct will get.
  const int list_ptr = btf__add_ptr(b, btf__type_cnt(b) + 1);
  const int list_id = btf__add_struct(b, "list_head", 16);
  btf__add_field(b, "next", list_ptr, 0, 0);
  btf__add_field(b, "prev", list_ptr, 64, 0);
  const int pid_t_id = btf__add_typedef(b, "pid_t", int_id);
  const int enum_id = btf__add_enum(b, "pid_type", 4);
  btf__add_enum_value(b, "PIDTYPE_PID", 0);
  btf__add_enum_value(b, "PIDTYPE_TGID", 1);
  btf__add_enum_value(b, "PIDTYPE_MAX", 4);
  (void)enum_id;
  const int vol_long = btf__add_volatile(b, long_id);
  const int const_char = btf__add_const(b, char_id);
  const int inner = btf__add_struct(b, nullptr, 8);
  btf__add_field(b, "flag", uint_id, 0, 1);
  btf__add_field(b, "level", uint_id, 1, 5);
  btf__add_field(b, "tag", const_char, 32, 0);
  const int onion = btf__add_union(b, nullptr, 8);
  btf__add_field(b, "word", ulong_id, 0, 0);
  btf__add_field(b, nullptr, inner, 0, 0);
  const int comm = btf__add_array(b, int_id, char_id, 16);
  const int mm_fwd = btf__add_fwd(b, "mm", BTF_FWD_STRUCT);
  const int mm_ptr = btf__add_ptr(b, mm_fwd);
  const int task = btf__add_struct(b, "task", 64);
  btf__add_field(b, "state", vol_long, 0, 0);
  btf__add_field(b, "pid", pid_t_id, 64, 0);
  btf__add_field(b, nullptr, onion, 128, 0);
  btf__add_field(b, "comm", comm, 192, 0);
  btf__add_field(b, "tasks", list_id, 320, 0);
  btf__add_field(b, "mm", mm_ptr, 448, 0);
  btf__add_typedef(b, "task_t", task);
  uint32_t size = 0;
  const void* raw = btf__raw_data(b, &size);
  std::vector<uint8_t> out(static_cast<const uint8_t*>(raw), static_cast<const uint8_t*>(raw) + size);
  btf__free(b);
  return out;
}

class BtfTypesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<BtfTypes>> parsed = BtfTypes::Parse(BuildBtf(), "a test");
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    types_ = *std::move(parsed);
  }
  std::unique_ptr<BtfTypes> types_;
};

TEST_F(BtfTypesTest, MemberOffsetsAndSizes) {
  const KernelTypes& t = *types_;
  EXPECT_EQ(t.OffsetOf("task", "state").value(), 0u);
  EXPECT_EQ(t.OffsetOf("task", "pid").value(), 8u);
  EXPECT_EQ(t.OffsetOf("task", "comm").value(), 24u);
  EXPECT_EQ(t.OffsetOf("task", "tasks").value(), 40u);
  EXPECT_EQ(t.OffsetOf("task", "tasks.prev").value(), 48u);
  EXPECT_EQ(t.OffsetOf("task", "comm[3]").value(), 27u);
  EXPECT_EQ(t.OffsetOf("task", "mm").value(), 56u);
  EXPECT_EQ(t.SizeOf("task").value(), 64u);
  EXPECT_EQ(t.SizeOf("list_head").value(), 16u);

  absl::StatusOr<FieldInfo> comm = t.Field("task", "comm");
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_EQ(comm->size, 16u);
  EXPECT_EQ(t.TypeName(comm->type), "char[16]");
  absl::StatusOr<FieldInfo> pid = t.Field("task", "pid");
  ASSERT_TRUE(pid.ok());
  EXPECT_EQ(t.TypeName(pid->type), "int");  // the typedef resolved
  EXPECT_EQ(t.TypeName(t.Field("task", "mm")->type), "struct mm *");
  EXPECT_EQ(t.TypeName(t.Field("task", "tasks.next")->type), "struct list_head *");
}

TEST_F(BtfTypesTest, AnonymousMembersAndBitfields) {
  const KernelTypes& t = *types_;
  EXPECT_EQ(t.OffsetOf("task", "word").value(), 16u);
  EXPECT_EQ(t.OffsetOf("task", "tag").value(), 20u);
  absl::StatusOr<FieldInfo> flag = t.Field("task", "flag");
  ASSERT_TRUE(flag.ok()) << flag.status();
  EXPECT_TRUE(flag->is_bitfield());
  EXPECT_EQ(flag->bit_offset, 128u);
  EXPECT_EQ(flag->bit_size, 1u);
  EXPECT_EQ(flag->offset, 16u);  // the unsigned int holding it
  absl::StatusOr<FieldInfo> level = t.Field("task", "level");
  ASSERT_TRUE(level.ok());
  EXPECT_EQ(level->bit_offset, 129u);
  EXPECT_EQ(level->bit_size, 5u);
  EXPECT_EQ(level->size, 4u);
}

TEST_F(BtfTypesTest, TypesByNameThroughTypedefsAndEnums) {
  const KernelTypes& t = *types_;
  EXPECT_EQ(t.FindType("task_t").value(), t.FindType("task").value());
  EXPECT_EQ(t.FindType("struct task").value(), t.FindType("task").value());
  EXPECT_EQ(t.Describe(t.FindType("pid_t").value())->kind, TypeKind::kInt);
  EXPECT_EQ(t.Describe(t.FindType("pid_type").value())->kind, TypeKind::kEnum);
  EXPECT_EQ(t.FindType("enum pid_type").value(), t.FindType("pid_type").value());
  EXPECT_EQ(t.FindType("enum task").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(t.FindType("struct pid_type").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(t.EnumValue("PIDTYPE_TGID").value(), 1);
  EXPECT_EQ(t.EnumValue("PIDTYPE_MAX").value(), 4);
  EXPECT_EQ(t.type_count(), 18u);
  // A declared-only struct has no layout.
  absl::StatusOr<TypeInfo> mm = t.Describe(t.Describe(t.Field("task", "mm")->type)->target);
  ASSERT_TRUE(mm.ok());
  EXPECT_EQ(mm->kind, TypeKind::kStruct);
  EXPECT_EQ(mm->size, 0u);
}

TEST_F(BtfTypesTest, ErrorsNameTheTypeAndMember) {
  const KernelTypes& t = *types_;
  absl::StatusOr<FieldInfo> missing = t.Field("task", "nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("struct task has no member 'nope'"));
  EXPECT_EQ(t.FindType("no_such_struct").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(t.EnumValue("NOPE").status().code(), absl::StatusCode::kNotFound);
  // A path through a pointer or into a scalar is refused.
  EXPECT_FALSE(t.Field("task", "mm.x").ok());
  EXPECT_FALSE(t.Field("task", "pid.x").ok());
  EXPECT_EQ(t.Field("task", "comm[16]").status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(t.Field("task", "pid[0]").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.Field("task", "comm[x]").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.Describe(100000).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(BtfTypesParseTest, TruncatedOrCorruptDataIsRejected) {
  const std::vector<uint8_t> good = BuildBtf();
  for (size_t size : {size_t{0}, size_t{4}, size_t{23}, good.size() / 2, good.size() - 1}) {
    std::vector<uint8_t> cut(good.begin(), good.begin() + size);
    absl::StatusOr<std::unique_ptr<BtfTypes>> parsed = BtfTypes::Parse(cut, "truncated BTF");
    ASSERT_FALSE(parsed.ok()) << size;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("truncated BTF"));
  }
  std::vector<uint8_t> bad_magic = good;
  bad_magic[0] ^= 0xff;
  EXPECT_FALSE(BtfTypes::Parse(bad_magic, "x").ok());
  // A member pointing at a type id that does not exist.
  std::vector<uint8_t> dangling = good;
  bool patched = false;
  // The pointer (type 6, right after the five ints) refers to list_head
  // (type 7): point it far away. Types start after the 24-byte header; each
  // int is 16 bytes (12 + 4 of encoding), so the pointer's 'type' field is at
  // 24 + 5 * 16 + 8.
  {
    const size_t i = 24 + 5 * 16 + 8;
    uint32_t v;
    std::memcpy(&v, &dangling[i], 4);
    if (v == 7) {
      v = 9999;
      std::memcpy(&dangling[i], &v, 4);
      patched = true;
    }
  }
  ASSERT_TRUE(patched);
  // libbpf 1.1 does not check type references at parse time: every query
  // through the dangling id must fail cleanly instead.
  absl::StatusOr<std::unique_ptr<BtfTypes>> parsed = BtfTypes::Parse(dangling, "dangling BTF");
  if (parsed.ok()) {
    const KernelTypes& t = **parsed;
    absl::StatusOr<FieldInfo> next = t.Field("task", "tasks.next");
    ASSERT_TRUE(next.ok()) << next.status();
    absl::StatusOr<TypeInfo> pointer = t.Describe(next->type);
    ASSERT_TRUE(pointer.ok());
    EXPECT_EQ(t.Describe(pointer->target).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(t.TypeName(next->type), "<bad type> *");
    EXPECT_FALSE(t.Field("task", "tasks.next.x").ok());
  }
}

}  // namespace
}  // namespace vmi::os_linux

namespace vmi::os_linux {
namespace {

TEST(BtfTypeNameTest, ArraysOfArraysAndOfPointers) {
  struct btf* b = btf__new_empty();
  const int int_id = btf__add_int(b, "int", 4, BTF_INT_SIGNED);
  const int char_id = btf__add_int(b, "char", 1, BTF_INT_CHAR);
  const int row = btf__add_array(b, int_id, int_id, 4);
  const int matrix = btf__add_array(b, int_id, row, 3);
  const int char_ptr = btf__add_ptr(b, char_id);
  const int argv = btf__add_array(b, int_id, char_ptr, 8);
  btf__add_struct(b, "s", 48 + 64);
  btf__add_field(b, "m", matrix, 0, 0);
  btf__add_field(b, "argv", argv, 48 * 8, 0);
  uint32_t size = 0;
  const void* raw = btf__raw_data(b, &size);
  std::vector<uint8_t> data(static_cast<const uint8_t*>(raw), static_cast<const uint8_t*>(raw) + size);
  btf__free(b);
  auto types = BtfTypes::Parse(data, "arrays");
  ASSERT_TRUE(types.ok()) << types.status();
  const KernelTypes& t = **types;
  EXPECT_EQ(t.TypeName(t.Field("s", "m")->type), "int[3][4]");
  EXPECT_EQ(t.TypeName(t.Field("s", "argv")->type), "char *[8]");
  EXPECT_EQ(t.OffsetOf("s", "m[2]").value(), 32u);
  EXPECT_EQ(t.TypeName(t.Field("s", "m[2]")->type), "int[4]");
}

}  // namespace
}  // namespace vmi::os_linux
