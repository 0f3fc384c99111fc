// KernelAccess: typed reads of guest kernel memory for the OS layer, through
// the kernel's own page tables, plus reads of a process's user memory through
// its page tables; and WalkList, the one bounded, cycle- and tear-checking
// walk of the kernel's circular list_head lists.
//
// Everything read is guest data: strings are bounded, list walks stop at a
// node limit, at a node seen before, and at a link whose back pointer does
// not point back (a list torn by a running guest, or forged).
//
// Thread-safety: as the GuestMemory (thread-compatible).

#ifndef VMI_OS_LINUX_KERNEL_ACCESS_H_
#define VMI_OS_LINUX_KERNEL_ACCESS_H_

#include <cstdint>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "arch/amd64/paging.h"
#include "core/types.h"
#include "os/linux/guest_memory.h"
#include "os/linux/linux_kernel.h"

namespace vmi::os_linux {

class KernelAccess {
 public:
  KernelAccess(GuestMemory& memory, const LinuxKernel& kernel) : memory_(memory), kernel_(kernel) {}

  GuestMemory& memory() const { return memory_; }
  const LinuxKernel& kernel() const { return kernel_; }

  // Kernel virtual memory.
  absl::Status Read(uint64_t va, absl::Span<uint8_t> out) const {
    return memory_.ReadVirtual(Va(va), kernel_.root, kernel_.paging, out);
  }
  absl::StatusOr<uint64_t> U64(uint64_t va) const { return Scalar<uint64_t>(va); }
  absl::StatusOr<uint32_t> U32(uint64_t va) const { return Scalar<uint32_t>(va); }
  absl::StatusOr<uint16_t> U16(uint64_t va) const { return Scalar<uint16_t>(va); }
  absl::StatusOr<uint8_t> U8(uint64_t va) const { return Scalar<uint8_t>(va); }
  // An unsigned integer of 1, 2, 4 or 8 bytes.
  absl::StatusOr<uint64_t> Unsigned(uint64_t va, uint64_t size) const;
  // A NUL-terminated string of at most `limit` bytes (the rest cut off),
  // read page by page.
  absl::StatusOr<std::string> CString(uint64_t va, size_t limit) const;
  // A char array of `size` bytes, up to its first NUL.
  absl::StatusOr<std::string> CharArray(uint64_t va, size_t size) const;
  absl::StatusOr<Pa> Translate(uint64_t va) const {
    return memory_.Translate(Va(va), kernel_.root, kernel_.paging);
  }

  // User memory of a process whose page-table root is `root`.
  absl::Status ReadUser(Pa root, uint64_t va, absl::Span<uint8_t> out) const {
    return memory_.ReadVirtual(Va(va), root, kernel_.paging, out);
  }

 private:
  template <typename T>
  absl::StatusOr<T> Scalar(uint64_t va) const {
    T value;
    absl::Status s = Read(va, absl::MakeSpan(reinterpret_cast<uint8_t*>(&value), sizeof(T)));
    if (!s.ok()) return s;
    return value;
  }

  GuestMemory& memory_;
  const LinuxKernel& kernel_;
};

// Whether `va` can be a kernel pointer: in the upper canonical half for the
// paging mode (bit 47, or bit 56 with 5-level paging, and all above it set).
inline bool IsKernelAddress(uint64_t va, const amd64::PagingMode& paging) {
  const int bits = paging.kind == amd64::PagingMode::Kind::kFiveLevel ? 57 : 48;
  return (va >> (bits - 1)) == (~uint64_t{0} >> (bits - 1));
}

// The offsets of list_head's members (from the kernel's types).
struct ListHeadLayout {
  uint64_t next = 0, prev = 8;
};

// Walks the circular list whose head is at `head`: `on_node` gets each
// node's address (the list_head inside the entry, not the entry) in order,
// and returns false to stop early. Errors (with what was walked so far
// reported by the callback already):
//   - ResourceExhausted after `limit` nodes;
//   - DataLoss for a link whose prev does not point back (a torn or forged
//     list) or a node seen twice (a cycle not through the head; named so
//     among the first 65,536 nodes, caught by the prev check beyond: memory
//     stays bounded whatever `limit` is);
//   - the read error, annotated with the node, for unreadable memory.
// `what` names the list in errors ("init_task.tasks").
absl::Status WalkList(const KernelAccess& access, const ListHeadLayout& layout, uint64_t head,
                      size_t limit, absl::string_view what,
                      absl::FunctionRef<absl::StatusOr<bool>(uint64_t node)> on_node);

}  // namespace vmi::os_linux

#endif  // VMI_OS_LINUX_KERNEL_ACCESS_H_
