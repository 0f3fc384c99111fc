// Volatility 3 ISF ("intermediate symbol format", dwarf2json format 6.x)
// profiles: the fallback source of symbols and types for kernels that keep
// neither BTF nor kallsyms in memory, and the format in which what discovery
// did find in memory (kallsyms, BTF) is written out for other tools.
//
// The profile file is untrusted: it is parsed without exceptions and every
// value is checked before use. Errors are InvalidArgument and name the file
// and the JSON path, e.g.
//   "ISF profile x.json: user_types.task_struct.fields.comm.offset: not a number".
// Sizes, offsets, counts and nesting are bounded (see the constants below).
//
// ISF has no typedefs or qualifiers (dwarf2json flattens them), so
// Types()->FindType knows struct, union, enum and base type names only:
// "pid_t" is not found, "int" is.
//
// Thread-safety: IsfProfile and the KernelTypes it hands out are immutable
// after Load/Parse; thread-safe. ExportIsf is stateless; thread-safe.

#ifndef VMI_OS_LINUX_ISF_H_
#define VMI_OS_LINUX_ISF_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "os/linux/symbols.h"
#include "os/linux/types.h"

namespace vmi::os_linux {

class BtfTypes;

namespace isf_internal {
struct ProfileData;
}  // namespace isf_internal

// Hard limits on what a profile may contain.
inline constexpr uint64_t kIsfMaxJsonBytes = uint64_t{2} << 30;     // file or xz output
inline constexpr uint64_t kIsfXzMemoryLimit = uint64_t{256} << 20;  // liblzma decoder memory
inline constexpr int kIsfMaxDescriptorDepth = 64;                   // nested type descriptors
inline constexpr uint64_t kIsfMaxArrayCount = uint64_t{1} << 32;
inline constexpr uint64_t kIsfMaxTypeSize = UINT32_MAX;  // struct/union bytes (as BTF)
inline constexpr uint64_t kIsfMaxFieldBeyondEnd = uint64_t{1}
                                                  << 20;  // offset past the struct's size

// Kernel-image addresses: what KASLR slides (the image is linked at
// 0xffffffff81000000 and stays within the top 2 GiB). Symbols below it
// (per-CPU offsets, absolute values) are not moved.
inline constexpr uint64_t kKernelImageStart = 0xffffffff80000000;

// The JSON text of a profile file: the file itself, or its decompressed
// content when it starts with the xz magic (FD 37 7A 58 5A 00), whatever its
// name. NotFound (with errno's text) when it does not exist; InvalidArgument
// for an empty file, a truncated or corrupt xz stream, or more than
// `max_bytes` of JSON (decompression stops there).
absl::StatusOr<std::string> ReadIsfFile(const std::string& path,
                                        uint64_t max_bytes = kIsfMaxJsonBytes);

class IsfProfile {
 public:
  // ReadIsfFile + Parse, with source() "ISF profile <path>".
  [[nodiscard]] static absl::StatusOr<IsfProfile> Load(const std::string& path);
  // JSON text; `source` names it in errors and is source() ("ISF profile
  // <path>"). "user_types" and "symbols" are required; "base_types" and
  // "enums" may be absent; "metadata" is not read.
  [[nodiscard]] static absl::StatusOr<IsfProfile> Parse(absl::string_view json, std::string source);

  const std::string& source() const;
  size_t symbol_count() const;
  // The link-time address (un-relocated, as in the profile).
  std::optional<uint64_t> SymbolAddress(absl::string_view name) const;
  // linux_banner's constant_data, decoded; the bytes as given (a trailing
  // "\n" and NUL included). nullopt when the profile has none.
  std::optional<std::string> Banner() const;
  // All symbols, sorted by address (ties: by name). Kernel-image addresses
  // (>= kKernelImageStart) are moved by `slide` and typed 'T' (type kind
  // "function") or 'D' (anything else); the others are unchanged and typed
  // 'A' (SymbolTable finds those by name only).
  SymbolTable Symbols(uint64_t slide) const;
  // The types. Shares the profile's parsed tables: may outlive this object.
  std::shared_ptr<const KernelTypes> Types() const;

  // For the parser (the data type is private to isf.cc).
  explicit IsfProfile(std::shared_ptr<const isf_internal::ProfileData> data)
      : data_(std::move(data)) {}

 private:
  std::shared_ptr<const isf_internal::ProfileData> data_;  // never null
};

// What discovery found in memory, to be written as an ISF document.
struct IsfExportInput {
  // Runtime (relocated) addresses, as decoded from kallsyms. Required.
  const SymbolTable* symbols = nullptr;
  // Subtracted from kernel-image addresses (>= kKernelImageStart) to get the
  // link-time addresses ISF holds. Absolute symbols ('A'/'a') are written
  // unchanged.
  uint64_t kaslr_slide = 0;
  // May be null: a profile with symbols only (base types "pointer" and
  // "void", no user types or enums).
  const BtfTypes* types = nullptr;
  // linux_banner's bytes as read from memory; written as its constant_data
  // when the symbol table has linux_banner. Empty: none.
  std::string banner;
  // Written into the metadata.
  std::string osrelease, build_id;
};

// The ISF (format 6.2.0) JSON text. Every BTF struct and union becomes a user
// type (anonymous ones "unnamed_<btf id>", anonymous members
// "unnamed_field_<hex byte offset>" with "anonymous": true); typedefs,
// qualifiers and type tags are resolved away; enums keep their BTF
// signedness through their "base". Bitfields get "offset" = their storage
// unit, aligned to the member type's size, so loading the result gives the
// FieldInfo BtfTypes gives. Symbols: the first of each name in table order;
// 'T'/'t' ones typed {"kind": "function"}.
// The metadata follows Volatility 3's schema (which allows only the kinds
// "dwarf", "symtab" and "system-map" and no extra keys there): the symbols
// entry is kind "symtab" and the types entry kind "dwarf", and their "name"
// says where they really came from ("kallsyms in guest memory", "BTF in
// guest memory") with the osrelease and build id.
// InvalidArgument for BTF whose references dangle or loop.
absl::StatusOr<std::string> ExportIsf(const IsfExportInput& input);

}  // namespace vmi::os_linux

#endif  // VMI_OS_LINUX_ISF_H_
