// BtfTypes: KernelTypes over the kernel's BTF (CONFIG_DEBUG_INFO_BTF), the
// ~5 MB of type information a kernel keeps between __start_BTF and
// __stop_BTF. Parsing and validation are libbpf's (btf__new); this class adds
// the name index (libbpf's btf__find_by_name is a linear scan) and the
// KernelTypes queries.
//
// Thread-safety: immutable after Parse; thread-safe.

#ifndef VMI_OS_LINUX_BTF_TYPES_H_
#define VMI_OS_LINUX_BTF_TYPES_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "os/linux/types.h"

struct btf;

namespace vmi::os_linux {

class BtfTypes final : public KernelTypes {
 public:
  // Parses raw BTF (magic 0xeB9F, header, type and string sections).
  // `where` says where the bytes came from, for source() and errors.
  // InvalidArgument (with libbpf's own complaint) for truncated or corrupt
  // data.
  static absl::StatusOr<std::unique_ptr<BtfTypes>> Parse(absl::Span<const uint8_t> data,
                                                         std::string where);
  ~BtfTypes() override;

  std::string source() const override { return source_; }
  size_t type_count() const override;
  absl::StatusOr<TypeId> FindType(absl::string_view name) const override;
  absl::StatusOr<TypeInfo> Describe(TypeId id) const override;
  absl::StatusOr<FieldInfo> Member(TypeId id, absl::string_view name) const override;
  absl::StatusOr<int64_t> EnumValue(absl::string_view enumerator) const override;

  // The libbpf object, for callers that need the raw BTF (e.g. a profile
  // exporter).
  const struct btf* btf() const { return btf_; }
  // Resolves typedefs, qualifiers and type tags (bounded).
  TypeId Resolve(TypeId id) const;

 private:
  BtfTypes(struct btf* btf, std::string source) : btf_(btf), source_(std::move(source)) {}
  void Index();

  struct btf* btf_;
  std::string source_;
  // Named types by kind group; the first of each name wins.
  absl::flat_hash_map<std::string, TypeId> composites_, typedefs_, enums_, bases_;
  absl::flat_hash_map<std::string, int64_t> enumerators_;
};

}  // namespace vmi::os_linux

#endif  // VMI_OS_LINUX_BTF_TYPES_H_
