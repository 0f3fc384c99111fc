#include "os/linux/isf.h"

#include <bpf/btf.h>
#include <fcntl.h>
#include <lzma.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "core/error.h"
#include "nlohmann/json.hpp"
#include "os/linux/btf_types.h"

namespace vmi::os_linux {
namespace {

using Json = nlohmann::json;

constexpr TypeId kVoidId = 0;
constexpr uint64_t kMaxBaseSize = 64;
constexpr uint64_t kMaxEnumSize = 16;
constexpr uint64_t kMaxBitLength = 128;
constexpr int kMaxAnonymousDepth = 32;
constexpr int kMaxFramesVisited = 4096;
constexpr uint64_t kMaxFieldsExamined = uint64_t{1} << 20;
constexpr size_t kMaxKeyInMessage = 80;
constexpr size_t kMaxKeysInMessage = 16;

// ---------------------------------------------------------------------------
// Reading the file.

constexpr unsigned char kXzMagic[6] = {0xFD, '7', 'z', 'X', 'Z', 0x00};

class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() { close(fd_); }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;
};

absl::StatusOr<std::string> ReadAll(const std::string& path, uint64_t max_bytes) {
  int fd;
  do {
    fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ErrnoError("open", errno);
  FdCloser closer(fd);
  struct stat st;
  if (fstat(fd, &st) != 0) return ErrnoError("fstat", errno);
  if (S_ISDIR(st.st_mode)) return absl::InvalidArgumentError("is a directory");
  std::string data;
  if (S_ISREG(st.st_mode)) {
    if (static_cast<uint64_t>(st.st_size) > max_bytes) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "the file is %d bytes, more than the limit of %u", st.st_size, max_bytes));
    }
    data.reserve(st.st_size);
  }
  char buffer[1 << 16];
  while (true) {
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("read", errno);
    }
    if (n == 0) break;
    if (data.size() + n > max_bytes) {
      return absl::InvalidArgumentError(
          absl::StrFormat("the file is more than the limit of %u bytes", max_bytes));
    }
    data.append(buffer, n);
  }
  return data;
}

absl::Status XzError(lzma_ret ret) {
  switch (ret) {
    case LZMA_MEM_ERROR:
      return absl::ResourceExhaustedError("out of memory decompressing xz data");
    case LZMA_MEMLIMIT_ERROR:
      return absl::InvalidArgumentError(absl::StrFormat(
          "the xz stream needs more than %u MiB of decoder memory", kIsfXzMemoryLimit >> 20));
    case LZMA_FORMAT_ERROR:
      return absl::InvalidArgumentError("corrupt xz data (not an xz stream)");
    case LZMA_OPTIONS_ERROR:
      return absl::InvalidArgumentError("corrupt xz data (unsupported options)");
    case LZMA_DATA_ERROR:
      return absl::InvalidArgumentError("corrupt xz data");
    case LZMA_BUF_ERROR:
      return absl::InvalidArgumentError("truncated xz data");
    default:
      return absl::InvalidArgumentError(
          absl::StrFormat("xz decoding failed (liblzma error %d)", ret));
  }
}

// Streams the output into a growing buffer and stops as soon as it would
// exceed `max_bytes`: a small file cannot make us allocate more than that.
absl::StatusOr<std::string> DecompressXz(absl::string_view in, uint64_t max_bytes) {
  lzma_stream stream = LZMA_STREAM_INIT;
  const lzma_ret started = lzma_stream_decoder(&stream, kIsfXzMemoryLimit, LZMA_CONCATENATED);
  if (started != LZMA_OK) return XzError(started);
  struct End {
    lzma_stream* s;
    ~End() { lzma_end(s); }
  } end{&stream};
  stream.next_in = reinterpret_cast<const uint8_t*>(in.data());
  stream.avail_in = in.size();
  std::string out;
  const uint64_t limit = max_bytes + 1;  // one byte more tells "too large"
  const auto too_large = [&] {
    return absl::InvalidArgumentError(
        absl::StrFormat("the xz data decompresses to more than the limit of %u bytes", max_bytes));
  };
  while (true) {
    if (stream.avail_out == 0) {
      if (out.size() >= limit) return too_large();
      const uint64_t grow = std::max<uint64_t>({out.size(), in.size() * 4, uint64_t{1} << 20});
      out.resize(std::min<uint64_t>(out.size() + grow, limit));
      stream.next_out = reinterpret_cast<uint8_t*>(out.data()) + stream.total_out;
      stream.avail_out = out.size() - stream.total_out;
    }
    const lzma_ret ret = lzma_code(&stream, LZMA_FINISH);
    if (stream.total_out > max_bytes) return too_large();
    if (ret == LZMA_STREAM_END) break;
    if (ret != LZMA_OK) return XzError(ret);
  }
  out.resize(stream.total_out);
  return out;
}

// ---------------------------------------------------------------------------
// The parsed profile.

// One interned type descriptor.
struct Node {
  TypeKind kind = TypeKind::kVoid;
  bool is_signed = false;
  bool defined = true;  // false: a struct/union known by name only
  TypeId target = 0;
  uint64_t count = 0;
  uint64_t size = 0;
  uint32_t first_field = 0, field_count = 0;  // defined structs and unions
  std::string name;
};

struct FieldRec {
  uint32_t name_at = 0, name_len = 0;  // in Tables::names
  uint64_t bit = 0;                    // from the start of the struct
  uint32_t bit_size = 0;               // bitfields
  bool anonymous = false;
  TypeId type = 0;
};

struct Tables {
  std::string source;
  std::vector<Node> nodes;
  std::vector<FieldRec> fields;  // each struct's fields in a run, by offset
  std::string names;             // field names, back to back
  absl::flat_hash_map<std::string, TypeId> users, enums, bases;
  absl::flat_hash_map<std::string, int64_t> enumerators;

  absl::string_view FieldName(const FieldRec& f) const {
    return absl::string_view(names.data() + f.name_at, f.name_len);
  }
};

class IsfTypes final : public KernelTypes {
 public:
  explicit IsfTypes(std::shared_ptr<const Tables> t) : t_(std::move(t)) {}

  std::string source() const override { return t_->source; }
  size_t type_count() const override { return t_->nodes.size(); }

  absl::StatusOr<TypeId> FindType(absl::string_view name) const override {
    absl::string_view bare = name;
    const bool user_only = absl::ConsumePrefix(&bare, "struct ") ||
                           absl::ConsumePrefix(&bare, "union ") ||
                           absl::ConsumePrefix(&bare, "class ");
    const bool enum_only = !user_only && absl::ConsumePrefix(&bare, "enum ");
    if (!enum_only) {
      if (auto it = t_->users.find(bare); it != t_->users.end()) return it->second;
    }
    if (!user_only) {
      if (auto it = t_->enums.find(bare); it != t_->enums.end()) return it->second;
    }
    if (!user_only && !enum_only) {
      if (auto it = t_->bases.find(bare); it != t_->bases.end()) return it->second;
    }
    return absl::NotFoundError(absl::StrFormat("type '%s' is not in the %s", name, t_->source));
  }

  absl::StatusOr<TypeInfo> Describe(TypeId id) const override {
    if (id >= t_->nodes.size()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("type id %u is not in the %s", id, t_->source));
    }
    const Node& n = t_->nodes[id];
    TypeInfo info;
    info.kind = n.kind;
    info.name = n.name;
    info.size = n.size;
    info.target = n.target;
    info.count = n.count;
    info.is_signed = n.is_signed;
    return info;
  }

  absl::StatusOr<FieldInfo> Member(TypeId id, absl::string_view name) const override {
    if (id >= t_->nodes.size()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "member '%s' of type id %u: the id is not in the %s", name, id, t_->source));
    }
    const Node& outer = t_->nodes[id];
    if (outer.kind != TypeKind::kStruct && outer.kind != TypeKind::kUnion) {
      return absl::InvalidArgumentError(
          absl::StrFormat("member '%s' of %s: not a struct or union", name, TypeName(id)));
    }
    if (!outer.defined) {
      return absl::InvalidArgumentError(
          absl::StrFormat("member '%s' of %s: only its name is known, no layout (%s)", name,
                          TypeName(id), t_->source));
    }
    // Depth-first through anonymous members, each struct's own members
    // first, as BtfTypes does. Bounded in depth, frames and fields examined:
    // a profile may make a struct contain itself.
    struct Frame {
      TypeId type;
      uint64_t bit_base;
      int depth;
    };
    std::vector<Frame> stack = {{id, 0, 0}};
    uint64_t examined = 0;
    for (int visited = 0; !stack.empty() && visited < kMaxFramesVisited; ++visited) {
      const Frame f = stack.back();
      stack.pop_back();
      const Node& n = t_->nodes[f.type];
      const size_t pushed_at = stack.size();
      for (uint32_t i = 0; i < n.field_count && examined < kMaxFieldsExamined; ++i, ++examined) {
        const FieldRec& field = t_->fields[n.first_field + i];
        if (field.anonymous) {
          const Node& inner = t_->nodes[field.type];
          if (inner.defined &&
              (inner.kind == TypeKind::kStruct || inner.kind == TypeKind::kUnion) &&
              f.depth < kMaxAnonymousDepth) {
            stack.push_back({field.type, f.bit_base + field.bit, f.depth + 1});
          }
          continue;
        }
        if (t_->FieldName(field) != name) continue;
        FieldInfo info;
        info.bit_offset = f.bit_base + field.bit;
        info.bit_size = field.bit_size;
        info.type = field.type;
        info.size = t_->nodes[field.type].size;
        if (info.bit_size != 0 && info.size != 0) {
          // The storage unit holding the bitfield, aligned to its type.
          info.offset = (info.bit_offset / (info.size * 8)) * info.size;
        } else {
          info.offset = info.bit_offset / 8;
        }
        return info;
      }
      std::reverse(stack.begin() + pushed_at, stack.end());
    }
    return absl::NotFoundError(
        absl::StrFormat("%s has no member '%s' (%s)", TypeName(id), name, t_->source));
  }

  absl::StatusOr<int64_t> EnumValue(absl::string_view enumerator) const override {
    auto it = t_->enumerators.find(enumerator);
    if (it == t_->enumerators.end()) {
      return absl::NotFoundError(
          absl::StrFormat("enumerator '%s' is not in the %s", enumerator, t_->source));
    }
    return it->second;
  }

 private:
  std::shared_ptr<const Tables> t_;
};

}  // namespace

namespace isf_internal {

struct SymbolRec {
  std::string name;
  uint64_t address = 0;
  bool is_function = false;
};

struct ProfileData {
  std::string source;
  std::vector<SymbolRec> symbols;                            // by name (the JSON object's order)
  absl::flat_hash_map<absl::string_view, uint32_t> by_name;  // keys view symbols
  std::optional<std::string> banner;
  std::shared_ptr<const KernelTypes> types;
};

}  // namespace isf_internal

namespace {

using isf_internal::ProfileData;
using isf_internal::SymbolRec;

// ---------------------------------------------------------------------------
// Parsing: the JSON document is checked value by value and turned into
// Tables; nothing below calls a json accessor that can throw.

// A JSON path, built on the stack and only rendered for an error.
struct Path {
  const Path* parent;
  absl::string_view key;

  // Long keys and long paths (64 nested "subtype"s) are shortened.
  std::string ToString() const {
    std::vector<absl::string_view> keys;
    for (const Path* p = this; p != nullptr; p = p->parent) keys.push_back(p->key);
    std::reverse(keys.begin(), keys.end());
    std::string out;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (keys.size() > kMaxKeysInMessage && i == kMaxKeysInMessage / 2) {
        const size_t skipped = keys.size() - kMaxKeysInMessage;
        absl::StrAppend(&out, ".(", skipped, " more)");
        i += skipped - 1;
        continue;
      }
      if (!out.empty()) out.push_back('.');
      // Keys are the file's bytes: escaped, so a message stays one line.
      if (keys[i].size() > kMaxKeyInMessage) {
        absl::StrAppend(&out, absl::CHexEscape(keys[i].substr(0, kMaxKeyInMessage)), "...");
      } else {
        absl::StrAppend(&out, absl::CHexEscape(keys[i]));
      }
    }
    return out;
  }
};

// Records the parser's complaint (re-parsing only after DOM parsing failed).
class ErrorRecorder : public nlohmann::json_sax<Json> {
 public:
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return true; }
  bool key(string_t&) override { return true; }
  bool end_object() override { return true; }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
  bool parse_error(std::size_t, const std::string&,
                   const nlohmann::detail::exception& ex) override {
    message = ex.what();
    return false;
  }
  std::string message;
};

using Object = Json::object_t;

const Json* Find(const Object& o, absl::string_view key) {
  auto it = o.find(std::string_view(key.data(), key.size()));
  return it == o.end() ? nullptr : &it->second;
}

class Parser {
 public:
  explicit Parser(std::string source) : t_(std::make_shared<Tables>()) {
    t_->source = std::move(source);
  }

  absl::StatusOr<IsfProfile> Run(absl::string_view text);

 private:
  absl::Status Bad(const Path& path, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(t_->source, ": ", path.ToString(), ": ", what));
  }
  absl::StatusOr<const Object*> GetObject(const Json& v, const Path& path) const {
    if (const Object* o = v.get_ptr<const Object*>()) return o;
    return Bad(path, "not an object");
  }
  absl::StatusOr<const Json*> Require(const Object& o, const Path& path,
                                      absl::string_view key) const {
    if (const Json* v = Find(o, key)) return v;
    return Bad(path, absl::StrCat("no \"", key, "\""));
  }
  absl::StatusOr<uint64_t> GetUnsigned(const Json& v, const Path& path) const {
    if (const auto* u = v.get_ptr<const Json::number_unsigned_t*>()) return *u;
    if (const auto* i = v.get_ptr<const Json::number_integer_t*>()) {
      if (*i >= 0) return static_cast<uint64_t>(*i);
      return Bad(path, absl::StrFormat("%d is negative", *i));
    }
    if (v.is_number_float()) return Bad(path, "not an integer");
    return Bad(path, "not a number");
  }
  absl::StatusOr<uint64_t> GetBounded(const Json& v, const Path& path, uint64_t max) const {
    VMI_ASSIGN_OR_RETURN(uint64_t value, GetUnsigned(v, path));
    if (value > max) return Bad(path, absl::StrFormat("%u is beyond the limit of %u", value, max));
    return value;
  }
  absl::StatusOr<int64_t> GetInteger(const Json& v, const Path& path) const {
    if (const auto* u = v.get_ptr<const Json::number_unsigned_t*>())
      return static_cast<int64_t>(*u);
    if (const auto* i = v.get_ptr<const Json::number_integer_t*>()) return *i;
    if (v.is_number_float()) return Bad(path, "not an integer");
    return Bad(path, "not a number");
  }
  absl::StatusOr<const std::string*> GetString(const Json& v, const Path& path) const {
    if (const auto* s = v.get_ptr<const Json::string_t*>()) return s;
    return Bad(path, "not a string");
  }
  absl::StatusOr<bool> GetBool(const Json& v, const Path& path) const {
    if (const auto* b = v.get_ptr<const Json::boolean_t*>()) return *b;
    return Bad(path, "not a boolean");
  }

  TypeId Add(Node node) {
    t_->nodes.push_back(std::move(node));
    return static_cast<TypeId>(t_->nodes.size() - 1);
  }

  absl::Status ParseBaseTypes(const Object& o, const Path& path);
  absl::Status ParseEnums(const Object& o, const Path& path);
  absl::Status ParseUserTypes(const Object& o, const Path& path);
  absl::Status ParseSymbols(const Object& o, const Path& path, ProfileData& data);
  // A type descriptor (not a bitfield) at nesting `depth` (a field's "type"
  // is depth 1).
  absl::StatusOr<TypeId> Intern(const Json& v, const Path& path, int depth);

  std::shared_ptr<Tables> t_;
  uint64_t pointer_size_ = 8;
  absl::flat_hash_map<TypeId, TypeId> pointers_;
  absl::flat_hash_map<std::pair<TypeId, uint64_t>, TypeId> arrays_;
  absl::flat_hash_map<std::string, TypeId> declared_structs_, declared_unions_;
  std::optional<TypeId> function_;
};

absl::Status Parser::ParseBaseTypes(const Object& o, const Path& path) {
  // "pointer" first: pointer descriptors take their size from it.
  if (const Json* p = Find(o, "pointer")) {
    const Path at{&path, "pointer"};
    VMI_ASSIGN_OR_RETURN(const Object* po, GetObject(*p, at));
    VMI_ASSIGN_OR_RETURN(const Json* size, Require(*po, at, "size"));
    const Path size_at{&at, "size"};
    VMI_ASSIGN_OR_RETURN(pointer_size_, GetUnsigned(*size, size_at));
    if (pointer_size_ != 4 && pointer_size_ != 8) {
      return Bad(size_at, absl::StrFormat("a pointer of %u bytes (not 4 or 8)", pointer_size_));
    }
  }
  for (const auto& [name, value] : o) {
    const Path at{&path, name};
    VMI_ASSIGN_OR_RETURN(const Object* b, GetObject(value, at));
    VMI_ASSIGN_OR_RETURN(const Json* size_v, Require(*b, at, "size"));
    VMI_ASSIGN_OR_RETURN(uint64_t size, GetBounded(*size_v, Path{&at, "size"}, kMaxBaseSize));
    VMI_ASSIGN_OR_RETURN(const Json* kind_v, Require(*b, at, "kind"));
    const Path kind_at{&at, "kind"};
    VMI_ASSIGN_OR_RETURN(const std::string* kind, GetString(*kind_v, kind_at));
    VMI_ASSIGN_OR_RETURN(const Json* signed_v, Require(*b, at, "signed"));
    VMI_ASSIGN_OR_RETURN(bool is_signed, GetBool(*signed_v, Path{&at, "signed"}));
    if (const Json* endian = Find(*b, "endian")) {
      VMI_RETURN_IF_ERROR(GetString(*endian, Path{&at, "endian"}).status());
    }
    Node node;
    if (*kind == "int" || *kind == "char" || *kind == "bool") {
      node.kind = TypeKind::kInt;
    } else if (*kind == "float") {
      node.kind = TypeKind::kFloat;
    } else if (*kind == "void") {
      node.kind = TypeKind::kVoid;
    } else {
      return Bad(kind_at,
                 absl::StrFormat("unknown base type kind \"%s\"", absl::CHexEscape(*kind)));
    }
    if (name == "void") continue;  // always type id 0
    node.name = name;
    node.size = size;
    // Signedness means something for integers only (dwarf2json marks floats
    // signed, BTF does not).
    node.is_signed = node.kind == TypeKind::kInt && is_signed;
    t_->bases.emplace(name, Add(std::move(node)));
  }
  return absl::OkStatus();
}

absl::Status Parser::ParseEnums(const Object& o, const Path& path) {
  for (const auto& [name, value] : o) {
    const Path at{&path, name};
    VMI_ASSIGN_OR_RETURN(const Object* e, GetObject(value, at));
    VMI_ASSIGN_OR_RETURN(const Json* size_v, Require(*e, at, "size"));
    VMI_ASSIGN_OR_RETURN(uint64_t size, GetBounded(*size_v, Path{&at, "size"}, kMaxEnumSize));
    VMI_ASSIGN_OR_RETURN(const Json* base_v, Require(*e, at, "base"));
    const Path base_at{&at, "base"};
    VMI_ASSIGN_OR_RETURN(const std::string* base, GetString(*base_v, base_at));
    auto b = t_->bases.find(*base);
    if (b == t_->bases.end()) {
      return Bad(base_at,
                 absl::StrFormat("base type \"%s\" is not in base_types", absl::CHexEscape(*base)));
    }
    const bool is_signed = t_->nodes[b->second].is_signed;
    VMI_ASSIGN_OR_RETURN(const Json* constants_v, Require(*e, at, "constants"));
    const Path constants_at{&at, "constants"};
    VMI_ASSIGN_OR_RETURN(const Object* constants, GetObject(*constants_v, constants_at));
    for (const auto& [enumerator, v] : *constants) {
      VMI_ASSIGN_OR_RETURN(int64_t number, GetInteger(v, Path{&constants_at, enumerator}));
      t_->enumerators.try_emplace(enumerator, number);
    }
    Node node;
    node.kind = TypeKind::kEnum;
    node.name = name;
    node.size = size;
    node.is_signed = is_signed;
    t_->enums.emplace(name, Add(std::move(node)));
  }
  return absl::OkStatus();
}

absl::StatusOr<TypeId> Parser::Intern(const Json& v, const Path& path, int depth) {
  if (depth > kIsfMaxDescriptorDepth) {
    return Bad(path,
               absl::StrFormat("type descriptors nested deeper than %d", kIsfMaxDescriptorDepth));
  }
  VMI_ASSIGN_OR_RETURN(const Object* d, GetObject(v, path));
  VMI_ASSIGN_OR_RETURN(const Json* kind_v, Require(*d, path, "kind"));
  const Path kind_at{&path, "kind"};
  VMI_ASSIGN_OR_RETURN(const std::string* kind, GetString(*kind_v, kind_at));
  const auto name = [&]() -> absl::StatusOr<const std::string*> {
    VMI_ASSIGN_OR_RETURN(const Json* name_v, Require(*d, path, "name"));
    return GetString(*name_v, Path{&path, "name"});
  };
  if (*kind == "base") {
    VMI_ASSIGN_OR_RETURN(const std::string* base, name());
    if (*base == "void") return kVoidId;
    auto it = t_->bases.find(*base);
    if (it == t_->bases.end()) {
      return Bad(Path{&path, "name"},
                 absl::StrFormat("base type \"%s\" is not in base_types", absl::CHexEscape(*base)));
    }
    return it->second;
  }
  if (*kind == "struct" || *kind == "union" || *kind == "class") {
    VMI_ASSIGN_OR_RETURN(const std::string* user, name());
    if (auto it = t_->users.find(*user); it != t_->users.end()) return it->second;
    // Declared only (or defined elsewhere): a name without a layout, like
    // BTF's forward declarations.
    const bool is_union = *kind == "union";
    auto& declared = is_union ? declared_unions_ : declared_structs_;
    if (auto it = declared.find(*user); it != declared.end()) return it->second;
    Node node;
    node.kind = is_union ? TypeKind::kUnion : TypeKind::kStruct;
    node.defined = false;
    node.name = *user;
    const TypeId id = Add(std::move(node));
    declared.emplace(*user, id);
    return id;
  }
  if (*kind == "enum") {
    VMI_ASSIGN_OR_RETURN(const std::string* e, name());
    auto it = t_->enums.find(*e);
    if (it == t_->enums.end()) {
      return Bad(Path{&path, "name"},
                 absl::StrFormat("enum \"%s\" is not in enums", absl::CHexEscape(*e)));
    }
    return it->second;
  }
  if (*kind == "pointer") {
    VMI_ASSIGN_OR_RETURN(const Json* sub, Require(*d, path, "subtype"));
    VMI_ASSIGN_OR_RETURN(TypeId target, Intern(*sub, Path{&path, "subtype"}, depth + 1));
    if (auto it = pointers_.find(target); it != pointers_.end()) return it->second;
    Node node;
    node.kind = TypeKind::kPointer;
    node.size = pointer_size_;
    node.target = target;
    const TypeId id = Add(std::move(node));
    pointers_.emplace(target, id);
    return id;
  }
  if (*kind == "array") {
    VMI_ASSIGN_OR_RETURN(const Json* count_v, Require(*d, path, "count"));
    const Path count_at{&path, "count"};
    VMI_ASSIGN_OR_RETURN(uint64_t count, GetBounded(*count_v, count_at, kIsfMaxArrayCount));
    VMI_ASSIGN_OR_RETURN(const Json* sub, Require(*d, path, "subtype"));
    VMI_ASSIGN_OR_RETURN(TypeId element, Intern(*sub, Path{&path, "subtype"}, depth + 1));
    if (auto it = arrays_.find(std::make_pair(element, count)); it != arrays_.end()) {
      return it->second;
    }
    uint64_t size;
    if (__builtin_mul_overflow(count, t_->nodes[element].size, &size)) {
      return Bad(count_at, absl::StrFormat("%u elements of %u bytes overflow", count,
                                           t_->nodes[element].size));
    }
    Node node;
    node.kind = TypeKind::kArray;
    node.size = size;
    node.count = count;
    node.target = element;
    const TypeId id = Add(std::move(node));
    arrays_.emplace(std::make_pair(element, count), id);
    return id;
  }
  if (*kind == "function") {
    if (!function_) {
      Node node;
      node.kind = TypeKind::kFunction;
      function_ = Add(std::move(node));
    }
    return *function_;
  }
  if (*kind == "bitfield") return Bad(kind_at, "a bitfield outside a struct field");
  return Bad(kind_at, absl::StrFormat("unknown kind \"%s\"", absl::CHexEscape(*kind)));
}

absl::Status Parser::ParseUserTypes(const Object& o, const Path& path) {
  // Two passes: every user type gets its id (and size) before any field
  // refers to it.
  struct Pending {
    TypeId id;
    const Object* fields;
    const std::string* name;
  };
  std::vector<Pending> pending;
  pending.reserve(o.size());
  for (const auto& [name, value] : o) {
    const Path at{&path, name};
    VMI_ASSIGN_OR_RETURN(const Object* u, GetObject(value, at));
    VMI_ASSIGN_OR_RETURN(const Json* kind_v, Require(*u, at, "kind"));
    const Path kind_at{&at, "kind"};
    VMI_ASSIGN_OR_RETURN(const std::string* kind, GetString(*kind_v, kind_at));
    Node node;
    if (*kind == "struct" || *kind == "class") {
      node.kind = TypeKind::kStruct;
    } else if (*kind == "union") {
      node.kind = TypeKind::kUnion;
    } else {
      return Bad(kind_at,
                 absl::StrFormat("unknown user type kind \"%s\"", absl::CHexEscape(*kind)));
    }
    VMI_ASSIGN_OR_RETURN(const Json* size_v, Require(*u, at, "size"));
    VMI_ASSIGN_OR_RETURN(node.size, GetBounded(*size_v, Path{&at, "size"}, kIsfMaxTypeSize));
    VMI_ASSIGN_OR_RETURN(const Json* fields_v, Require(*u, at, "fields"));
    VMI_ASSIGN_OR_RETURN(const Object* fields, GetObject(*fields_v, Path{&at, "fields"}));
    node.name = name;
    const TypeId id = Add(std::move(node));
    t_->users.emplace(name, id);
    pending.push_back({id, fields, &name});
  }
  for (const Pending& p : pending) {
    const Path at{&path, *p.name};
    const Path fields_at{&at, "fields"};
    const uint64_t size = t_->nodes[p.id].size;
    const uint64_t max_byte = size + kIsfMaxFieldBeyondEnd;
    const size_t first = t_->fields.size();
    for (const auto& [name, value] : *p.fields) {
      const Path field_at{&fields_at, name};
      VMI_ASSIGN_OR_RETURN(const Object* f, GetObject(value, field_at));
      VMI_ASSIGN_OR_RETURN(const Json* offset_v, Require(*f, field_at, "offset"));
      const Path offset_at{&field_at, "offset"};
      VMI_ASSIGN_OR_RETURN(uint64_t offset, GetUnsigned(*offset_v, offset_at));
      if (offset > max_byte) {
        return Bad(offset_at, absl::StrFormat("%u is more than %u bytes beyond the end of the "
                                              "%u-byte type",
                                              offset, kIsfMaxFieldBeyondEnd, size));
      }
      FieldRec rec;
      rec.bit = offset * 8;
      if (const Json* anonymous = Find(*f, "anonymous")) {
        VMI_ASSIGN_OR_RETURN(rec.anonymous, GetBool(*anonymous, Path{&field_at, "anonymous"}));
      }
      if (absl::StartsWith(name, "unnamed_field_")) rec.anonymous = true;
      VMI_ASSIGN_OR_RETURN(const Json* type_v, Require(*f, field_at, "type"));
      const Path type_at{&field_at, "type"};
      VMI_ASSIGN_OR_RETURN(const Object* type, GetObject(*type_v, type_at));
      const Json* kind_v = Find(*type, "kind");
      const std::string* kind = kind_v ? kind_v->get_ptr<const Json::string_t*>() : nullptr;
      if (kind != nullptr && *kind == "bitfield") {
        VMI_ASSIGN_OR_RETURN(const Json* position_v, Require(*type, type_at, "bit_position"));
        VMI_ASSIGN_OR_RETURN(
            uint64_t position,
            GetBounded(*position_v, Path{&type_at, "bit_position"}, kIsfMaxFieldBeyondEnd * 8));
        VMI_ASSIGN_OR_RETURN(const Json* length_v, Require(*type, type_at, "bit_length"));
        const Path length_at{&type_at, "bit_length"};
        VMI_ASSIGN_OR_RETURN(uint64_t length, GetBounded(*length_v, length_at, kMaxBitLength));
        if (length == 0) return Bad(length_at, "a bitfield of 0 bits");
        VMI_ASSIGN_OR_RETURN(const Json* inner_v, Require(*type, type_at, "type"));
        const Path inner_at{&type_at, "type"};
        VMI_ASSIGN_OR_RETURN(rec.type, Intern(*inner_v, inner_at, 2));
        const TypeKind inner = t_->nodes[rec.type].kind;
        if (inner != TypeKind::kInt && inner != TypeKind::kEnum) {
          return Bad(inner_at, absl::StrFormat("a bitfield of %s (not an integer or enum)",
                                               TypeKindName(inner)));
        }
        rec.bit += position;
        rec.bit_size = static_cast<uint32_t>(length);
        if (rec.bit / 8 > max_byte) {
          return Bad(Path{&type_at, "bit_position"},
                     absl::StrFormat("bit %u is more than %u bytes beyond the end of the "
                                     "%u-byte type",
                                     rec.bit, kIsfMaxFieldBeyondEnd, size));
        }
      } else {
        VMI_ASSIGN_OR_RETURN(rec.type, Intern(*type_v, type_at, 1));
      }
      rec.name_at = static_cast<uint32_t>(t_->names.size());
      rec.name_len = static_cast<uint32_t>(name.size());
      t_->names.append(name);
      t_->fields.push_back(rec);
    }
    // Declaration order, near enough: the JSON object's keys come sorted by
    // name; anonymous members are searched in offset order, as BTF's are.
    std::stable_sort(t_->fields.begin() + first, t_->fields.end(),
                     [](const FieldRec& a, const FieldRec& b) { return a.bit < b.bit; });
    Node& node = t_->nodes[p.id];
    node.first_field = static_cast<uint32_t>(first);
    node.field_count = static_cast<uint32_t>(t_->fields.size() - first);
  }
  return absl::OkStatus();
}

absl::Status Parser::ParseSymbols(const Object& o, const Path& path, ProfileData& data) {
  data.symbols.reserve(o.size());
  for (const auto& [name, value] : o) {
    const Path at{&path, name};
    VMI_ASSIGN_OR_RETURN(const Object* s, GetObject(value, at));
    VMI_ASSIGN_OR_RETURN(const Json* address_v, Require(*s, at, "address"));
    SymbolRec rec;
    rec.name = name;
    VMI_ASSIGN_OR_RETURN(rec.address, GetUnsigned(*address_v, Path{&at, "address"}));
    if (const Json* type = Find(*s, "type")) {
      VMI_ASSIGN_OR_RETURN(TypeId id, Intern(*type, Path{&at, "type"}, 1));
      rec.is_function = t_->nodes[id].kind == TypeKind::kFunction;
    }
    if (const Json* constant = Find(*s, "constant_data")) {
      const Path constant_at{&at, "constant_data"};
      VMI_ASSIGN_OR_RETURN(const std::string* encoded, GetString(*constant, constant_at));
      if (name == "linux_banner") {
        std::string decoded;
        if (!absl::Base64Unescape(*encoded, &decoded)) return Bad(constant_at, "not base64");
        data.banner = std::move(decoded);
      }
    }
    if (const Json* linkage = Find(*s, "linkage_name")) {
      VMI_RETURN_IF_ERROR(GetString(*linkage, Path{&at, "linkage_name"}).status());
    }
    data.symbols.push_back(std::move(rec));
  }
  // The vector no longer changes: views of its names stay valid.
  data.by_name.reserve(data.symbols.size());
  for (uint32_t i = 0; i < data.symbols.size(); ++i) {
    data.by_name.try_emplace(data.symbols[i].name, i);
  }
  return absl::OkStatus();
}

absl::StatusOr<IsfProfile> Parser::Run(absl::string_view text) {
  if (text.empty()) return absl::InvalidArgumentError(absl::StrCat(t_->source, ": empty"));
  const Json doc = Json::parse(text.data(), text.data() + text.size(), nullptr,
                               /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    ErrorRecorder recorder;
    Json::sax_parse(text.data(), text.data() + text.size(), &recorder);
    absl::string_view detail = recorder.message;
    // "[json.exception.parse_error.101] parse error at line 1, column 2: ..."
    if (absl::ConsumePrefix(&detail, "[json.exception.")) {
      if (const size_t close = detail.find("] "); close != absl::string_view::npos) {
        detail.remove_prefix(close + 2);
      }
    }
    return absl::InvalidArgumentError(absl::StrCat(t_->source, ": not JSON: ", detail));
  }
  const Object* root = doc.get_ptr<const Object*>();
  if (root == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(t_->source, ": not a JSON object"));
  }
  for (absl::string_view required : {"user_types", "symbols"}) {
    if (Find(*root, required) == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(t_->source, ": no \"", required, "\" (not an ISF profile)"));
    }
  }

  Node void_node;
  void_node.name = "void";
  Add(std::move(void_node));
  t_->bases.emplace("void", kVoidId);

  if (const Json* v = Find(*root, "base_types")) {
    const Path at{nullptr, "base_types"};
    VMI_ASSIGN_OR_RETURN(const Object* o, GetObject(*v, at));
    VMI_RETURN_IF_ERROR(ParseBaseTypes(*o, at));
  }
  if (const Json* v = Find(*root, "enums")) {
    const Path at{nullptr, "enums"};
    VMI_ASSIGN_OR_RETURN(const Object* o, GetObject(*v, at));
    VMI_RETURN_IF_ERROR(ParseEnums(*o, at));
  }
  {
    const Path at{nullptr, "user_types"};
    VMI_ASSIGN_OR_RETURN(const Object* o, GetObject(*Find(*root, "user_types"), at));
    VMI_RETURN_IF_ERROR(ParseUserTypes(*o, at));
  }
  auto data = std::make_shared<ProfileData>();
  {
    const Path at{nullptr, "symbols"};
    VMI_ASSIGN_OR_RETURN(const Object* o, GetObject(*Find(*root, "symbols"), at));
    VMI_RETURN_IF_ERROR(ParseSymbols(*o, at, *data));
  }
  data->source = t_->source;
  data->types = std::make_shared<IsfTypes>(std::move(t_));
  return IsfProfile(std::move(data));
}

// ---------------------------------------------------------------------------
// Export.

// Appends `s` as a JSON string. Bytes that are not UTF-8 become U+FFFD: what
// the guest's memory holds may be anything, the document must stay JSON.
void AppendString(std::string* out, absl::string_view s) {
  out->push_back('"');
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const auto cont = [&](size_t i) { return i < s.size() && (byte(i) & 0xC0) == 0x80; };
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = byte(i);
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(static_cast<char>(c));
      ++i;
    } else if (c < 0x20) {
      absl::StrAppendFormat(out, "\\u%04x", c);
      ++i;
    } else if (c < 0x80) {
      out->push_back(static_cast<char>(c));
      ++i;
    } else {
      // Well-formed UTF-8 (RFC 3629): no overlongs, surrogates, or > U+10FFFF.
      size_t len = 0;
      if (c >= 0xC2 && c <= 0xDF) {
        len = cont(i + 1) ? 2 : 0;
      } else if (c >= 0xE0 && c <= 0xEF) {
        const unsigned char lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        len = i + 1 < s.size() && byte(i + 1) >= lo && byte(i + 1) <= hi && cont(i + 2) ? 3 : 0;
      } else if (c >= 0xF0 && c <= 0xF4) {
        const unsigned char lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        len =
            i + 1 < s.size() && byte(i + 1) >= lo && byte(i + 1) <= hi && cont(i + 2) && cont(i + 3)
                ? 4
                : 0;
      }
      if (len == 0) {
        out->append("\\ufffd");
        ++i;
      } else {
        out->append(s.data() + i, len);
        i += len;
      }
    }
  }
  out->push_back('"');
}

constexpr int kMaxResolveDepth = 32;

class Exporter {
 public:
  explicit Exporter(const IsfExportInput& input) : in_(input) {}
  absl::StatusOr<std::string> Run();

 private:
  absl::StatusOr<uint32_t> Resolve(uint32_t id) const;
  // The descriptor of `id` used at nesting `level` (a field's type: 1).
  absl::StatusOr<const std::string*> Descriptor(uint32_t id, int level);
  std::string Name(uint32_t id) const {
    const struct btf_type* t = btf__type_by_id(btf_, id);
    const char* name = t ? btf__name_by_offset(btf_, t->name_off) : nullptr;
    if (name == nullptr || *name == '\0') return absl::StrCat("unnamed_", id);
    return name;
  }
  absl::Status BaseTypes(std::string* out);
  absl::Status UserTypes(std::string* out);
  absl::Status Enums(std::string* out);
  void Symbols(std::string* out) const;
  std::string Provenance(absl::string_view what) const;

  const IsfExportInput& in_;
  const struct btf* btf_ = nullptr;
  uint32_t count_ = 0;
  std::vector<std::string> descriptors_;
  std::vector<uint8_t> state_;   // 0: not yet, 1: being built, 2: done
  std::vector<uint8_t> height_;  // nesting of a done descriptor
  // Enum bases by (size, signed).
  absl::flat_hash_map<std::pair<uint64_t, bool>, std::string> enum_bases_;
};

absl::StatusOr<uint32_t> Exporter::Resolve(uint32_t id) const {
  for (int depth = 0; depth < kMaxResolveDepth; ++depth) {
    const struct btf_type* t = btf__type_by_id(btf_, id);
    if (t == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrFormat("BTF: a reference to type %u, which does not exist", id));
    }
    if (!btf_is_typedef(t) && !btf_is_mod(t) && !btf_is_type_tag(t)) return id;
    id = t->type;
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "BTF: a chain of typedefs and qualifiers longer than %d at type %u", kMaxResolveDepth, id));
}

absl::StatusOr<const std::string*> Exporter::Descriptor(uint32_t raw, int level) {
  VMI_ASSIGN_OR_RETURN(const uint32_t id, Resolve(raw));
  if (state_[id] == 2) {
    if (level - 1 + height_[id] > kIsfMaxDescriptorDepth) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "BTF type %u: nested deeper than ISF's %d levels", id, kIsfMaxDescriptorDepth));
    }
    return &descriptors_[id];
  }
  if (state_[id] == 1) {
    return absl::InvalidArgumentError(absl::StrFormat("BTF type %u contains itself", id));
  }
  if (level > kIsfMaxDescriptorDepth) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "BTF type %u: nested deeper than ISF's %d levels", id, kIsfMaxDescriptorDepth));
  }
  state_[id] = 1;
  const struct btf_type* t = btf__type_by_id(btf_, id);
  std::string d;
  int height = 1;
  switch (btf_kind(t)) {
    case BTF_KIND_INT:
    case BTF_KIND_FLOAT:
      d = R"({"kind":"base","name":)";
      AppendString(&d, Name(id));
      d += "}";
      break;
    case BTF_KIND_PTR: {
      VMI_ASSIGN_OR_RETURN(const std::string* sub, Descriptor(t->type, level + 1));
      VMI_ASSIGN_OR_RETURN(const uint32_t sub_id, Resolve(t->type));
      height = 1 + height_[sub_id];
      d = absl::StrCat(R"({"kind":"pointer","subtype":)", *sub, "}");
      break;
    }
    case BTF_KIND_ARRAY: {
      const struct btf_array* a = btf_array(t);
      VMI_ASSIGN_OR_RETURN(const std::string* sub, Descriptor(a->type, level + 1));
      VMI_ASSIGN_OR_RETURN(const uint32_t sub_id, Resolve(a->type));
      height = 1 + height_[sub_id];
      d = absl::StrCat(R"({"kind":"array","count":)", a->nelems, R"(,"subtype":)", *sub, "}");
      break;
    }
    case BTF_KIND_STRUCT:
    case BTF_KIND_UNION:
    case BTF_KIND_FWD: {
      const bool is_union = btf_is_fwd(t) ? btf_kflag(t) : btf_is_union(t);
      d = absl::StrCat(R"({"kind":")", is_union ? "union" : "struct", R"(","name":)");
      AppendString(&d, Name(id));
      d += "}";
      break;
    }
    case BTF_KIND_ENUM:
    case BTF_KIND_ENUM64:
      d = R"({"kind":"enum","name":)";
      AppendString(&d, Name(id));
      d += "}";
      break;
    case BTF_KIND_FUNC:
    case BTF_KIND_FUNC_PROTO:
      d = R"({"kind":"function"})";
      break;
    default:
      // void, and what no member should refer to (variables, sections, tags).
      d = R"({"kind":"base","name":"void"})";
      break;
  }
  descriptors_[id] = std::move(d);
  height_[id] = static_cast<uint8_t>(height);
  state_[id] = 2;
  return &descriptors_[id];
}

absl::Status Exporter::BaseTypes(std::string* out) {
  struct Base {
    std::string name;
    uint64_t size;
    bool is_signed;
    const char* kind;
  };
  std::vector<Base> bases;
  absl::flat_hash_set<std::string> names;
  const auto add = [&](Base b) {
    if (names.insert(b.name).second) bases.push_back(std::move(b));
  };
  // As BtfTypes describes pointers; ISF loaders take 4 or 8 only.
  const size_t pointer_size = btf_ ? btf__pointer_size(btf_) : 8;
  add({"pointer", pointer_size == 4 ? uint64_t{4} : uint64_t{8}, false, "int"});
  add({"void", 0, false, "void"});
  for (uint32_t id = 1; id < count_; ++id) {
    const struct btf_type* t = btf__type_by_id(btf_, id);
    if (btf_is_int(t)) {
      const uint8_t encoding = btf_int_encoding(t);
      const char* kind = (encoding & BTF_INT_BOOL)   ? "bool"
                         : (encoding & BTF_INT_CHAR) ? "char"
                                                     : "int";
      const std::string name = Name(id);
      const bool is_signed = encoding & BTF_INT_SIGNED;
      const bool first = !names.contains(name);
      add({name, t->size, is_signed, kind});
      // The first integer of each size and signedness, for enum bases.
      if (first && std::strcmp(kind, "int") == 0) {
        enum_bases_.try_emplace(std::make_pair(uint64_t{t->size}, is_signed), name);
      }
    } else if (btf_is_float(t)) {
      add({Name(id), t->size, true, "float"});
    }
  }
  // Enums whose size and signedness no integer has get a base of their own.
  for (uint32_t id = 1; id < count_; ++id) {
    const struct btf_type* t = btf__type_by_id(btf_, id);
    if (!btf_is_any_enum(t)) continue;
    const auto key = std::make_pair(uint64_t{t->size}, static_cast<bool>(btf_kflag(t)));
    if (t->size == 0 || enum_bases_.contains(key)) continue;
    std::string name = absl::StrFormat("__vmi_enum_%c%u", key.second ? 's' : 'u', key.first * 8);
    while (names.contains(name)) name += "_";
    add({name, key.first, key.second, "int"});
    enum_bases_.emplace(key, std::move(name));
  }
  out->append("\"base_types\":{");
  bool comma = false;
  for (const Base& b : bases) {
    if (comma) out->append(",\n");
    comma = true;
    AppendString(out, b.name);
    absl::StrAppend(out, R"(:{"size":)", b.size, R"(,"signed":)", b.is_signed ? "true" : "false",
                    R"(,"kind":")", b.kind, R"(","endian":"little"})");
  }
  out->append("}");
  return absl::OkStatus();
}

absl::Status Exporter::UserTypes(std::string* out) {
  out->append("\"user_types\":{");
  absl::flat_hash_set<std::string> types_seen;
  absl::flat_hash_set<std::string> fields_seen;
  bool comma = false;
  for (uint32_t id = 1; id < count_; ++id) {
    const struct btf_type* t = btf__type_by_id(btf_, id);
    if (!btf_is_composite(t)) continue;
    std::string name = Name(id);
    if (!types_seen.insert(name).second) continue;  // the first of a name wins
    if (comma) out->append(",\n");
    comma = true;
    AppendString(out, name);
    absl::StrAppend(out, R"(:{"kind":")", btf_is_union(t) ? "union" : "struct", R"(","size":)",
                    t->size, R"(,"fields":{)");
    fields_seen.clear();
    bool field_comma = false;
    const struct btf_member* m = btf_members(t);
    for (uint16_t i = 0; i < btf_vlen(t); ++i) {
      const char* raw_name = btf__name_by_offset(btf_, m[i].name_off);
      const uint64_t bit = btf_member_bit_offset(t, i);
      const uint32_t bit_size = btf_member_bitfield_size(t, i);
      std::string field;
      const std::string* descriptor;
      uint64_t offset = bit / 8;
      bool anonymous = false;
      std::string bitfield;
      if (raw_name == nullptr || *raw_name == '\0') {
        // Only anonymous structs and unions are members; nameless others
        // (padding bitfields) cannot be named and are left out.
        VMI_ASSIGN_OR_RETURN(const uint32_t inner, Resolve(m[i].type));
        if (!btf_is_composite(btf__type_by_id(btf_, inner))) continue;
        field = absl::StrFormat("unnamed_field_%x", offset);
        for (int n = 1; fields_seen.contains(field); ++n) {
          field = absl::StrFormat("unnamed_field_%x_%d", offset, n);
        }
        anonymous = true;
        VMI_ASSIGN_OR_RETURN(descriptor, Descriptor(m[i].type, 1));
      } else {
        field = raw_name;
        if (fields_seen.contains(field)) continue;
        VMI_ASSIGN_OR_RETURN(const uint32_t inner, Resolve(m[i].type));
        const struct btf_type* it = btf__type_by_id(btf_, inner);
        const int64_t size = btf__resolve_size(btf_, m[i].type);
        if (bit_size != 0 && size > 0 && (btf_is_int(it) || btf_is_any_enum(it))) {
          // The storage unit holding it, aligned to its type, as BtfTypes
          // reports it; bit_position counts from there.
          const uint64_t unit = static_cast<uint64_t>(size);
          offset = (bit / (unit * 8)) * unit;
          VMI_ASSIGN_OR_RETURN(const std::string* inner_d, Descriptor(m[i].type, 2));
          bitfield = absl::StrCat(R"({"kind":"bitfield","bit_position":)", bit - offset * 8,
                                  R"(,"bit_length":)", bit_size, R"(,"type":)", *inner_d, "}");
          descriptor = &bitfield;
        } else {
          VMI_ASSIGN_OR_RETURN(descriptor, Descriptor(m[i].type, 1));
        }
      }
      if (field_comma) out->push_back(',');
      field_comma = true;
      AppendString(out, field);
      absl::StrAppend(out, R"(:{"offset":)", offset, anonymous ? R"(,"anonymous":true)" : "",
                      R"(,"type":)", *descriptor, "}");
      fields_seen.insert(std::move(field));
    }
    out->append("}}");
  }
  out->append("}");
  return absl::OkStatus();
}

absl::Status Exporter::Enums(std::string* out) {
  out->append("\"enums\":{");
  absl::flat_hash_set<std::string> seen;
  absl::flat_hash_set<absl::string_view> constants_seen;
  bool comma = false;
  for (uint32_t id = 1; id < count_; ++id) {
    const struct btf_type* t = btf__type_by_id(btf_, id);
    if (!btf_is_any_enum(t)) continue;
    std::string name = Name(id);
    if (!seen.insert(name).second) continue;
    if (comma) out->append(",\n");
    comma = true;
    AppendString(out, name);
    const bool is_signed = btf_kflag(t);
    auto base = enum_bases_.find(std::make_pair(uint64_t{t->size}, is_signed));
    absl::StrAppend(out, R"(:{"size":)", t->size, R"(,"base":)");
    AppendString(out, base == enum_bases_.end() ? "void" : base->second);
    out->append(R"(,"constants":{)");
    constants_seen.clear();
    bool constant_comma = false;
    for (uint16_t i = 0; i < btf_vlen(t); ++i) {
      uint32_t name_off;
      int64_t value;
      if (btf_is_enum(t)) {
        const struct btf_enum* e = btf_enum(t) + i;
        name_off = e->name_off;
        // As BtfTypes reads it: sign-extended only for a signed enum.
        value = is_signed ? static_cast<int64_t>(e->val)
                          : static_cast<int64_t>(static_cast<uint32_t>(e->val));
      } else {
        const struct btf_enum64* e = btf_enum64(t) + i;
        name_off = e->name_off;
        value = static_cast<int64_t>(btf_enum64_value(e));
      }
      const char* constant = btf__name_by_offset(btf_, name_off);
      if (constant == nullptr || *constant == '\0' || !constants_seen.insert(constant).second) {
        continue;
      }
      if (constant_comma) out->push_back(',');
      constant_comma = true;
      AppendString(out, constant);
      absl::StrAppend(out, ":", value);
    }
    out->append("}}");
  }
  out->append("}");
  return absl::OkStatus();
}

void Exporter::Symbols(std::string* out) const {
  out->append("\"symbols\":{");
  const SymbolTable& table = *in_.symbols;
  absl::flat_hash_set<absl::string_view> seen;
  seen.reserve(table.size());
  bool comma = false;
  for (size_t i = 0; i < table.size(); ++i) {
    const Symbol s = table[i];
    if (!seen.insert(s.name).second) continue;  // the first of a name wins
    const bool absolute = s.type == 'A' || s.type == 'a';
    const uint64_t address =
        !absolute && s.address >= kKernelImageStart ? s.address - in_.kaslr_slide : s.address;
    if (comma) out->append(",\n");
    comma = true;
    AppendString(out, s.name);
    absl::StrAppend(out, R"(:{"address":)", address);
    if (s.type == 'T' || s.type == 't') out->append(R"(,"type":{"kind":"function"})");
    if (s.name == "linux_banner" && !in_.banner.empty()) {
      out->append(R"(,"constant_data":)");
      AppendString(out, absl::Base64Escape(in_.banner));
    }
    out->append("}");
  }
  out->append("}");
}

std::string Exporter::Provenance(absl::string_view what) const {
  std::string s(what);
  if (!in_.osrelease.empty()) absl::StrAppend(&s, "; osrelease ", in_.osrelease);
  if (!in_.build_id.empty()) absl::StrAppend(&s, "; build id ", in_.build_id);
  return s;
}

absl::StatusOr<std::string> Exporter::Run() {
  if (in_.symbols == nullptr) {
    return absl::InvalidArgumentError("ISF export: no symbol table");
  }
  if (in_.types != nullptr) {
    btf_ = in_.types->btf();
    count_ = btf__type_cnt(btf_);
  }
  descriptors_.resize(count_);
  state_.assign(count_, 0);
  height_.assign(count_, 0);

  std::string out;
  out.reserve(size_t{64} * (count_ + in_.symbols->size()) + 4096);
  // Volatility 3's schema 6.2.0: metadata entries of kind dwarf, symtab or
  // system-map with no other keys than name and hash.
  out.append(R"({"metadata":{"format":"6.2.0","producer":{"name":"vmi","version":"1"},)");
  out.append(R"("linux":{"symbols":[{"kind":"symtab","name":)");
  AppendString(&out, Provenance("kallsyms in guest memory"));
  out.append(R"(}],"types":[)");
  if (btf_ != nullptr) {
    out.append(R"({"kind":"dwarf","name":)");
    AppendString(&out, Provenance("BTF in guest memory"));
    out.append("}");
  }
  out.append("]}},\n");
  VMI_RETURN_IF_ERROR(BaseTypes(&out));
  out.append(",\n");
  VMI_RETURN_IF_ERROR(UserTypes(&out));
  out.append(",\n");
  VMI_RETURN_IF_ERROR(Enums(&out));
  out.append(",\n");
  Symbols(&out);
  out.append("}\n");
  return out;
}

}  // namespace

absl::StatusOr<std::string> ReadIsfFile(const std::string& path, uint64_t max_bytes) {
  const std::string source = absl::StrCat("ISF profile ", path);
  absl::StatusOr<std::string> data = ReadAll(path, max_bytes);
  if (!data.ok()) return AnnotateStatus(data.status(), source);
  if (data->empty()) return absl::InvalidArgumentError(absl::StrCat(source, ": empty file"));
  if (data->size() >= sizeof(kXzMagic) &&
      std::memcmp(data->data(), kXzMagic, sizeof(kXzMagic)) == 0) {
    absl::StatusOr<std::string> text = DecompressXz(*data, max_bytes);
    if (!text.ok()) return AnnotateStatus(text.status(), source);
    if (text->empty()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": empty file (after xz)"));
    }
    return text;
  }
  return data;
}

absl::StatusOr<IsfProfile> IsfProfile::Load(const std::string& path) {
  VMI_ASSIGN_OR_RETURN(std::string text, ReadIsfFile(path));
  return Parse(text, absl::StrCat("ISF profile ", path));
}

absl::StatusOr<IsfProfile> IsfProfile::Parse(absl::string_view json, std::string source) {
  return Parser(std::move(source)).Run(json);
}

const std::string& IsfProfile::source() const { return data_->source; }

size_t IsfProfile::symbol_count() const { return data_->symbols.size(); }

std::optional<uint64_t> IsfProfile::SymbolAddress(absl::string_view name) const {
  auto it = data_->by_name.find(name);
  if (it == data_->by_name.end()) return std::nullopt;
  return data_->symbols[it->second].address;
}

std::optional<std::string> IsfProfile::Banner() const { return data_->banner; }

SymbolTable IsfProfile::Symbols(uint64_t slide) const {
  std::vector<SymbolTable::Entry> entries;
  entries.reserve(data_->symbols.size());
  for (const SymbolRec& s : data_->symbols) {
    if (s.address >= kKernelImageStart) {
      entries.push_back({s.address + slide, s.is_function ? 'T' : 'D', s.name});
    } else {
      entries.push_back({s.address, 'A', s.name});
    }
  }
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    return a.address != b.address ? a.address < b.address : a.name < b.name;
  });
  return SymbolTable(std::move(entries));
}

std::shared_ptr<const KernelTypes> IsfProfile::Types() const { return data_->types; }

absl::StatusOr<std::string> ExportIsf(const IsfExportInput& input) { return Exporter(input).Run(); }

}  // namespace vmi::os_linux
