// KernelTypes: the kernel's type information (struct layouts, enums, base
// types) as OS code needs it, whatever it came from: BTF read from guest
// memory (btf_types.h) or a Volatility 3 ISF profile (isf.h). OS code asks
// for members by name ("task_struct", "signal.pids") and never hard-codes an
// offset.
//
// Members are found through anonymous structs and unions (as C does), and a
// path descends through nested structs and arrays: "a.b", "a[2].c".
// Typedefs and qualifiers are resolved: a FieldInfo's type and a TypeInfo
// are never a typedef, const or volatile.
//
// Thread-safety: implementations are immutable after construction;
// thread-safe.

#ifndef VMI_OS_LINUX_TYPES_H_
#define VMI_OS_LINUX_TYPES_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vmi::os_linux {

// Identifies a type within one KernelTypes (meaningless across two).
using TypeId = uint32_t;

enum class TypeKind : uint8_t {
  kVoid,
  kInt,  // integers, char, bool
  kFloat,
  kPointer,
  kArray,
  kStruct,
  kUnion,
  kEnum,
  kFunction,
};

const char* TypeKindName(TypeKind kind);

struct TypeInfo {
  TypeKind kind = TypeKind::kVoid;
  std::string name;     // empty for anonymous types, pointers and arrays
  uint64_t size = 0;    // bytes (a pointer: 8; void and functions: 0)
  TypeId target = 0;    // pointee (kPointer) or element (kArray)
  uint64_t count = 0;   // elements (kArray; 0 for a flexible array)
  bool is_signed = false;  // kInt, kEnum
};

// Where a member lies inside the type it was looked up in.
struct FieldInfo {
  uint64_t offset = 0;      // bytes from the start of the outer type
  uint64_t bit_offset = 0;  // bits from the start of the outer type (offset * 8 unless a bitfield)
  uint32_t bit_size = 0;    // width of a bitfield; 0 for an ordinary member
  uint64_t size = 0;        // bytes of the member's type
  TypeId type = 0;          // the member's type (typedefs resolved)

  bool is_bitfield() const { return bit_size != 0; }
};

class KernelTypes {
 public:
  virtual ~KernelTypes() = default;

  // Where the types came from, for `vmi os` ("BTF in guest memory", "ISF
  // profile <file>").
  virtual std::string source() const = 0;
  // Number of types described.
  virtual size_t type_count() const = 0;

  // A named type: struct or union first, then typedef (resolved), enum,
  // base type. NotFound names it.
  virtual absl::StatusOr<TypeId> FindType(absl::string_view name) const = 0;
  // What a type is. InvalidArgument for an id this object never handed out.
  virtual absl::StatusOr<TypeInfo> Describe(TypeId id) const = 0;
  // One member of a struct or union (`id` may be a typedef of one),
  // searched through anonymous members. NotFound names the type and member.
  virtual absl::StatusOr<FieldInfo> Member(TypeId id, absl::string_view name) const = 0;
  // The value of an enumerator, from any enum ("PIDTYPE_TGID").
  virtual absl::StatusOr<int64_t> EnumValue(absl::string_view enumerator) const = 0;

  // A path inside `id`: members separated by '.', each optionally indexed
  // ("pids[2].node"). Pointers are not followed: a path stays inside one
  // object.
  absl::StatusOr<FieldInfo> Field(TypeId id, absl::string_view path) const;
  // The same starting from a type name: Field("task_struct", "comm").
  absl::StatusOr<FieldInfo> Field(absl::string_view type, absl::string_view path) const;
  absl::StatusOr<uint64_t> OffsetOf(absl::string_view type, absl::string_view path) const;
  absl::StatusOr<uint64_t> SizeOf(absl::string_view type) const;
  // A type's name as C would print it ("struct list_head", "char[16]",
  // "struct mm_struct *").
  std::string TypeName(TypeId id) const;
};

}  // namespace vmi::os_linux

#endif  // VMI_OS_LINUX_TYPES_H_
