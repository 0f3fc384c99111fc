// Test-only: kernel structures built by hand, for unit tests of the OS code
// on inputs no real guest gives (cycles, torn links, unmapped pointers,
// forged trees), laid out with a real kernel's offsets.
//
// FakeMemory is a GuestMemory whose virtual reads go straight to a sparse
// byte store (no page tables: root and mode are ignored); bytes never
// written are unmapped and reads of them fail with NotFound naming the
// address. Regions too big to store (a ten-million-entry list) can be
// generated on demand. KernelObjects writes objects into it by member name
// with offsets and sizes from a KernelTypes; FixtureKernelTypes() gives the
// real fixture kernel's BTF (tools/linux_fixture), and FakeLinuxKernel() a
// LinuxKernel over fake memory with those types and symbols of the test's
// choosing.
//
// Thread-safety: thread-compatible; FixtureKernelTypes() is thread-safe.

#ifndef VMI_OS_LINUX_TESTING_FAKE_MEMORY_H_
#define VMI_OS_LINUX_TESTING_FAKE_MEMORY_H_

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "os/linux/guest_memory.h"
#include "os/linux/linux_kernel.h"
#include "os/linux/symbols.h"
#include "os/linux/types.h"

namespace vmi::os_linux::testing {

class FakeMemory final : public GuestMemory {
 public:
  static constexpr uint64_t kPageSize = 4096;
  // Where Allocate() starts: the kernel's direct map (4-level).
  static constexpr uint64_t kHeapStart = 0xffff888000100000ull;
  // Fills `out` with the bytes at `va` of a generated region.
  using Generator = std::function<void(uint64_t va, absl::Span<uint8_t> out)>;

  FakeMemory() = default;
  FakeMemory(const FakeMemory&) = delete;
  FakeMemory& operator=(const FakeMemory&) = delete;

  // GuestMemory. Physical memory is not modelled: the physical calls fail
  // with Unimplemented. Translate gives the address with its top 12 bits
  // cleared for mapped bytes.
  Gfn max_gfn() const override { return Gfn(0); }
  absl::StatusOr<MappedPage> ScanFrame(Gfn gfn) override;
  absl::Status ReadPhysical(Pa pa, absl::Span<uint8_t> out) override;
  absl::Status ReadVirtual(Va va, Pa /*root*/, const amd64::PagingMode& /*mode*/,
                           absl::Span<uint8_t> out) override {
    return Read(va.value(), out);
  }
  absl::StatusOr<Pa> Translate(Va va, Pa root, const amd64::PagingMode& mode) override;

  absl::Status Read(uint64_t va, absl::Span<uint8_t> out) const;
  // Writes map the pages they touch (zero-filled) as needed.
  void Write(uint64_t va, const void* data, size_t size);
  void WriteU8(uint64_t va, uint8_t v) { Write(va, &v, 1); }
  void WriteU16(uint64_t va, uint16_t v) { Write(va, &v, 2); }
  void WriteU32(uint64_t va, uint32_t v) { Write(va, &v, 4); }
  void WriteU64(uint64_t va, uint64_t v) { Write(va, &v, 8); }
  // The bytes of `s` and, unless `nul` is false, a NUL.
  void WriteString(uint64_t va, absl::string_view s, bool nul = true);
  template <typename T>
  void WriteObject(uint64_t va, const T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    Write(va, &value, sizeof(T));
  }

  // `size` zeroed, mapped bytes at a fresh address aligned to `align`.
  uint64_t Allocate(uint64_t size, uint64_t align = 64);
  // A NUL-terminated copy of `s`.
  uint64_t AllocateString(absl::string_view s);
  // `size` bytes at a fresh page-aligned address that stays unmapped (a
  // pointer to nowhere, past the end of what was allocated).
  uint64_t Reserve(uint64_t size);
  // Unmaps the pages that overlap [va, va + size).
  void Unmap(uint64_t va, uint64_t size);
  // Bytes of [start, start + size) come from `generator` (stored bytes are
  // ignored there).
  void AddGenerated(uint64_t start, uint64_t size, Generator generator);

  size_t mapped_pages() const { return pages_.size(); }
  uint64_t reads() const { return reads_; }

 private:
  using Page = std::array<uint8_t, kPageSize>;
  struct Region {
    uint64_t start, size;
    Generator generator;
  };

  absl::flat_hash_map<uint64_t, std::unique_ptr<Page>> pages_;  // by page address
  std::vector<Region> generated_;
  uint64_t next_ = kHeapStart;
  mutable uint64_t reads_ = 0;
};

// Objects laid out by `types` in `memory`. A type or member the types do
// not have fails the running test (ADD_FAILURE with the types' message) and
// the write is skipped: a test never crashes on a layout mistake.
class KernelObjects {
 public:
  KernelObjects(FakeMemory& memory, const KernelTypes& types) : memory_(memory), types_(types) {}

  FakeMemory& memory() const { return memory_; }
  const KernelTypes& types() const { return types_; }

  // A zeroed object of `type` (its size from the types).
  uint64_t New(absl::string_view type, uint64_t align = 64) const;
  uint64_t SizeOf(absl::string_view type) const;
  uint64_t OffsetOf(absl::string_view type, absl::string_view path) const;
  // Writes `value` into a member with the member's own size (1, 2, 4, 8).
  void Set(uint64_t object, absl::string_view type, absl::string_view path, uint64_t value) const;
  // Writes `s` into a char-array member: NUL-terminated unless it fills
  // the array (longer strings are cut).
  void SetChars(uint64_t object, absl::string_view type, absl::string_view path,
                absl::string_view s) const;
  // Links the list_heads at `nodes` into the circular list whose head is
  // the list_head at `head`, in order.
  void LinkList(uint64_t head, absl::Span<const uint64_t> nodes) const;

 private:
  FakeMemory& memory_;
  const KernelTypes& types_;
};

// The BTF types of the l4 fixture kernel (a real Debian 6.1 kernel),
// discovered from its raw dump once per process; the fixtures' NotFound
// ("run tools/setup.sh") when they are missing.
absl::StatusOr<std::shared_ptr<const KernelTypes>> FixtureKernelTypes();

// A LinuxKernel for FakeMemory: the fixture kernel's types, `symbols` at
// the test's own addresses, 4-level paging, root 0.
absl::StatusOr<LinuxKernel> FakeLinuxKernel(std::vector<SymbolTable::Entry> symbols);

}  // namespace vmi::os_linux::testing

#endif  // VMI_OS_LINUX_TESTING_FAKE_MEMORY_H_
