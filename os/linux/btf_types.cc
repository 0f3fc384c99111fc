#include "os/linux/btf_types.h"

#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <mutex>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "core/error.h"

namespace vmi::os_linux {
namespace {

constexpr int kMaxResolveDepth = 32;
constexpr int kMaxAnonymousDepth = 32;
constexpr int kMaxFramesVisited = 4096;

// libbpf reports details through a global print callback. Keep the last
// warning of this thread so errors can quote it, and keep libbpf quiet.
thread_local std::string last_libbpf_message;

int CaptureLibbpfPrint(enum libbpf_print_level level, const char* format, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char buffer[512];
  const int n = std::vsnprintf(buffer, sizeof(buffer), format, args);
  if (n > 0) {
    last_libbpf_message.assign(buffer);
    while (!last_libbpf_message.empty() && last_libbpf_message.back() == '\n') {
      last_libbpf_message.pop_back();
    }
  }
  return 0;
}

void QuietLibbpf() {
  static std::once_flag once;
  std::call_once(once, [] { libbpf_set_print(CaptureLibbpfPrint); });
}

absl::string_view NameOf(const struct btf* btf, const struct btf_type* t) {
  const char* name = btf__name_by_offset(btf, t->name_off);
  return name ? absl::string_view(name) : absl::string_view();
}

}  // namespace

absl::StatusOr<std::unique_ptr<BtfTypes>> BtfTypes::Parse(absl::Span<const uint8_t> data,
                                                          std::string where) {
  QuietLibbpf();
  if (data.size() > UINT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrFormat("BTF from %s: %u bytes is beyond BTF's 4 GiB limit", where, data.size()));
  }
  last_libbpf_message.clear();
  errno = 0;
  struct btf* btf = btf__new(data.data(), static_cast<uint32_t>(data.size()));
  if (btf == nullptr) {
    const int err = errno;
    std::string detail = last_libbpf_message.empty()
                             ? absl::StrFormat("%s (errno=%d)", std::strerror(err), err)
                             : absl::StrFormat("libbpf: %s", last_libbpf_message);
    return absl::InvalidArgumentError(absl::StrFormat(
        "BTF from %s (%u bytes) does not parse: %s", where, data.size(), detail));
  }
  std::unique_ptr<BtfTypes> types(new BtfTypes(btf, std::move(where)));
  types->Index();
  return types;
}

BtfTypes::~BtfTypes() { btf__free(btf_); }

size_t BtfTypes::type_count() const { return btf__type_cnt(btf_) - 1; }

void BtfTypes::Index() {
  const uint32_t n = btf__type_cnt(btf_);
  for (uint32_t id = 1; id < n; ++id) {
    const struct btf_type* t = btf__type_by_id(btf_, id);
    const absl::string_view name = NameOf(btf_, t);
    if (btf_is_enum(t)) {
      const struct btf_enum* e = btf_enum(t);
      for (uint16_t i = 0; i < btf_vlen(t); ++i) {
        const char* ename = btf__name_by_offset(btf_, e[i].name_off);
        if (ename && *ename) {
          enumerators_.try_emplace(ename, btf_kflag(t) ? static_cast<int64_t>(e[i].val)
                                                       : static_cast<int64_t>(static_cast<uint32_t>(e[i].val)));
        }
      }
    } else if (btf_is_enum64(t)) {
      const struct btf_enum64* e = btf_enum64(t);
      for (uint16_t i = 0; i < btf_vlen(t); ++i) {
        const char* ename = btf__name_by_offset(btf_, e[i].name_off);
        if (ename && *ename) enumerators_.try_emplace(ename, static_cast<int64_t>(btf_enum64_value(&e[i])));
      }
    }
    if (name.empty()) continue;
    if (btf_is_composite(t)) {
      composites_.try_emplace(name, id);
    } else if (btf_is_typedef(t)) {
      typedefs_.try_emplace(name, id);
    } else if (btf_is_any_enum(t)) {
      enums_.try_emplace(name, id);
    } else if (btf_is_int(t) || btf_is_float(t)) {
      bases_.try_emplace(name, id);
    }
  }
}

TypeId BtfTypes::Resolve(TypeId id) const {
  for (int depth = 0; depth < kMaxResolveDepth; ++depth) {
    const struct btf_type* t = btf__type_by_id(btf_, id);
    if (t == nullptr) return id;
    if (!btf_is_typedef(t) && !btf_is_mod(t) && !btf_is_type_tag(t)) return id;
    id = t->type;
  }
  return id;
}

absl::StatusOr<TypeId> BtfTypes::FindType(absl::string_view name) const {
  // Accept "struct foo" / "union foo" / "enum foo" spellings too.
  absl::string_view bare = name;
  const bool is_enum = absl::ConsumePrefix(&bare, "enum ");
  const bool is_composite = !is_enum && (absl::ConsumePrefix(&bare, "struct ") ||
                                         absl::ConsumePrefix(&bare, "union "));
  const bool untagged = !is_enum && !is_composite;
  if (!is_enum) {
    if (auto it = composites_.find(bare); it != composites_.end()) return it->second;
  }
  if (untagged) {
    if (auto it = typedefs_.find(bare); it != typedefs_.end()) return Resolve(it->second);
  }
  if (!is_composite) {
    if (auto it = enums_.find(bare); it != enums_.end()) return it->second;
  }
  if (untagged) {
    if (auto it = bases_.find(bare); it != bases_.end()) return it->second;
  }
  return absl::NotFoundError(absl::StrFormat("type '%s' is not in the %s", name, source_));
}

absl::StatusOr<TypeInfo> BtfTypes::Describe(TypeId id) const {
  const TypeId resolved = Resolve(id);
  const struct btf_type* t = btf__type_by_id(btf_, resolved);
  if (t == nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat("type id %u is not in the %s", id, source_));
  }
  TypeInfo info;
  info.name = std::string(NameOf(btf_, t));
  if (resolved == 0 || btf_is_void(t)) {
    info.kind = TypeKind::kVoid;
    info.name = "void";
    return info;
  }
  switch (btf_kind(t)) {
    case BTF_KIND_INT:
      info.kind = TypeKind::kInt;
      info.size = t->size;
      info.is_signed = btf_int_encoding(t) & BTF_INT_SIGNED;
      break;
    case BTF_KIND_FLOAT:
      info.kind = TypeKind::kFloat;
      info.size = t->size;
      break;
    case BTF_KIND_PTR:
      info.kind = TypeKind::kPointer;
      info.size = btf__pointer_size(btf_) ? btf__pointer_size(btf_) : 8;
      info.target = Resolve(t->type);
      break;
    case BTF_KIND_ARRAY: {
      const struct btf_array* a = btf_array(t);
      info.kind = TypeKind::kArray;
      info.target = Resolve(a->type);
      info.count = a->nelems;
      const int64_t element = btf__resolve_size(btf_, a->type);
      info.size = element > 0 ? static_cast<uint64_t>(element) * a->nelems : 0;
      break;
    }
    case BTF_KIND_STRUCT:
    case BTF_KIND_UNION:
      info.kind = btf_is_struct(t) ? TypeKind::kStruct : TypeKind::kUnion;
      info.size = t->size;
      break;
    case BTF_KIND_ENUM:
    case BTF_KIND_ENUM64:
      info.kind = TypeKind::kEnum;
      info.size = t->size;
      info.is_signed = btf_kflag(t);
      break;
    case BTF_KIND_FUNC:
    case BTF_KIND_FUNC_PROTO:
      info.kind = TypeKind::kFunction;
      break;
    case BTF_KIND_FWD:
      // A declared-only struct or union: no layout known.
      info.kind = btf_kflag(t) ? TypeKind::kUnion : TypeKind::kStruct;
      break;
    default:
      info.kind = TypeKind::kVoid;
      break;
  }
  return info;
}

absl::StatusOr<FieldInfo> BtfTypes::Member(TypeId id, absl::string_view name) const {
  const TypeId resolved = Resolve(id);
  const struct btf_type* outer = btf__type_by_id(btf_, resolved);
  if (outer == nullptr || !btf_is_composite(outer)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "member '%s' of %s: not a struct or union", name, TypeName(id)));
  }
  // Depth-first through anonymous members, in declaration order (C makes
  // names unique across them). Bounded: nesting depth and frames visited.
  struct Frame {
    TypeId type;
    uint64_t bit_base;
    int depth;
  };
  std::vector<Frame> stack = {{resolved, 0, 0}};
  for (int visited = 0; !stack.empty() && visited < kMaxFramesVisited; ++visited) {
    const Frame f = stack.back();
    stack.pop_back();
    const struct btf_type* t = btf__type_by_id(btf_, f.type);
    const struct btf_member* m = btf_members(t);
    const uint16_t vlen = btf_vlen(t);
    const size_t pushed_at = stack.size();
    for (uint16_t i = 0; i < vlen; ++i) {
      const char* mname = btf__name_by_offset(btf_, m[i].name_off);
      const uint64_t bit = f.bit_base + btf_member_bit_offset(t, i);
      if (mname && *mname) {
        if (name != mname) continue;
        FieldInfo info;
        info.bit_offset = bit;
        info.bit_size = btf_member_bitfield_size(t, i);
        info.type = Resolve(m[i].type);
        const int64_t size = btf__resolve_size(btf_, m[i].type);
        info.size = size > 0 ? static_cast<uint64_t>(size) : 0;
        if (info.bit_size != 0 && info.size != 0) {
          // The storage unit holding the bitfield, aligned to its type.
          info.offset = (bit / (info.size * 8)) * info.size;
        } else {
          info.offset = bit / 8;
        }
        return info;
      }
      const TypeId inner = Resolve(m[i].type);
      const struct btf_type* it = btf__type_by_id(btf_, inner);
      if (it != nullptr && btf_is_composite(it) && f.depth < kMaxAnonymousDepth) {
        stack.push_back({inner, bit, f.depth + 1});
      }
    }
    // The first anonymous member is searched first.
    std::reverse(stack.begin() + pushed_at, stack.end());
  }
  return absl::NotFoundError(
      absl::StrFormat("%s has no member '%s' (%s)", TypeName(id), name, source_));
}

absl::StatusOr<int64_t> BtfTypes::EnumValue(absl::string_view enumerator) const {
  auto it = enumerators_.find(enumerator);
  if (it == enumerators_.end()) {
    return absl::NotFoundError(
        absl::StrFormat("enumerator '%s' is not in the %s", enumerator, source_));
  }
  return it->second;
}

}  // namespace vmi::os_linux
