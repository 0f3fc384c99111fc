#include "os/linux/types.h"

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/error.h"

namespace vmi::os_linux {

const char* TypeKindName(TypeKind kind) {
  switch (kind) {
    case TypeKind::kVoid: return "void";
    case TypeKind::kInt: return "int";
    case TypeKind::kFloat: return "float";
    case TypeKind::kPointer: return "pointer";
    case TypeKind::kArray: return "array";
    case TypeKind::kStruct: return "struct";
    case TypeKind::kUnion: return "union";
    case TypeKind::kEnum: return "enum";
    case TypeKind::kFunction: return "function";
  }
  return "?";
}

absl::StatusOr<FieldInfo> KernelTypes::Field(TypeId id, absl::string_view path) const {
  FieldInfo result;
  VMI_ASSIGN_OR_RETURN(TypeInfo outer, Describe(id));
  result.type = id;
  result.size = outer.size;
  if (path.empty()) return result;
  for (absl::string_view part : absl::StrSplit(path, '.')) {
    absl::string_view name = part;
    std::optional<uint64_t> index;
    if (const size_t open = part.find('['); open != absl::string_view::npos) {
      uint64_t i;
      if (part.back() != ']' || !absl::SimpleAtoi(part.substr(open + 1, part.size() - open - 2), &i)) {
        return absl::InvalidArgumentError(
            absl::StrFormat("field path \"%s\": \"%s\" is not name[index]", path, part));
      }
      name = part.substr(0, open);
      index = i;
    }
    if (result.is_bitfield()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("field path \"%s\": \"%s\" follows a bitfield", path, part));
    }
    absl::StatusOr<FieldInfo> member = Member(result.type, name);
    if (!member.ok()) {
      return AnnotateStatus(member.status(), absl::StrFormat("field path \"%s\"", path));
    }
    result.offset += member->offset;
    result.bit_offset = result.offset * 8 + (member->bit_offset - member->offset * 8);
    result.bit_size = member->bit_size;
    result.size = member->size;
    result.type = member->type;
    if (index) {
      VMI_ASSIGN_OR_RETURN(TypeInfo array, Describe(result.type));
      if (array.kind != TypeKind::kArray) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "field path \"%s\": \"%s\" indexes %s, which is not an array", path, part,
            TypeName(result.type)));
      }
      if (array.count != 0 && *index >= array.count) {
        return absl::OutOfRangeError(absl::StrFormat(
            "field path \"%s\": index %u is beyond %s", path, *index, TypeName(result.type)));
      }
      VMI_ASSIGN_OR_RETURN(TypeInfo element, Describe(array.target));
      result.offset += *index * element.size;
      result.bit_offset = result.offset * 8;
      result.size = element.size;
      result.type = array.target;
    }
  }
  return result;
}

absl::StatusOr<FieldInfo> KernelTypes::Field(absl::string_view type, absl::string_view path) const {
  VMI_ASSIGN_OR_RETURN(TypeId id, FindType(type));
  return Field(id, path);
}

absl::StatusOr<uint64_t> KernelTypes::OffsetOf(absl::string_view type, absl::string_view path) const {
  VMI_ASSIGN_OR_RETURN(FieldInfo f, Field(type, path));
  return f.offset;
}

absl::StatusOr<uint64_t> KernelTypes::SizeOf(absl::string_view type) const {
  VMI_ASSIGN_OR_RETURN(TypeId id, FindType(type));
  VMI_ASSIGN_OR_RETURN(TypeInfo info, Describe(id));
  return info.size;
}

std::string KernelTypes::TypeName(TypeId id) const {
  // Bounded: a pointer/array chain longer than this is malformed input.
  std::string suffix;
  for (int depth = 0; depth < 16; ++depth) {
    absl::StatusOr<TypeInfo> info = Describe(id);
    if (!info.ok()) return "<bad type>" + suffix;
    switch (info->kind) {
      case TypeKind::kPointer:
        suffix = " *" + suffix;
        id = info->target;
        continue;
      case TypeKind::kArray:
        // Outer dimension first: int m[3][4] is an array of 3 arrays of 4.
        suffix += absl::StrFormat("[%u]", info->count);
        id = info->target;
        continue;
      case TypeKind::kStruct:
      case TypeKind::kUnion:
      case TypeKind::kEnum: {
        const std::string name = info->name.empty() ? "<anonymous>" : info->name;
        return absl::StrFormat("%s %s%s", TypeKindName(info->kind), name, suffix);
      }
      case TypeKind::kFunction:
        return "function" + suffix;
      default:
        return (info->name.empty() ? std::string(TypeKindName(info->kind)) : info->name) + suffix;
    }
  }
  return "<type chain too deep>" + suffix;
}

}  // namespace vmi::os_linux
