#include "os/linux/kernel_access.h"

#include <algorithm>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "arch/amd64/amd64.h"
#include "core/error.h"

namespace vmi::os_linux {
namespace {
constexpr uint64_t kPageSize = Amd64::kPageSize;
}  // namespace

absl::StatusOr<uint64_t> KernelAccess::Unsigned(uint64_t va, uint64_t size) const {
  switch (size) {
    case 1: return U8(va);
    case 2: return U16(va);
    case 4: return U32(va);
    case 8: return U64(va);
    default:
      return absl::InvalidArgumentError(
          absl::StrFormat("an integer of %u bytes at 0x%x: only 1, 2, 4 and 8 are read", size, va));
  }
}

absl::StatusOr<std::string> KernelAccess::CString(uint64_t va, size_t limit) const {
  std::string out;
  char buffer[kPageSize];
  while (out.size() < limit) {
    const size_t chunk = std::min<uint64_t>(limit - out.size(), kPageSize - (va & (kPageSize - 1)));
    VMI_RETURN_IF_ERROR(Read(va, absl::MakeSpan(reinterpret_cast<uint8_t*>(buffer), chunk)));
    const size_t n = strnlen(buffer, chunk);
    out.append(buffer, n);
    if (n < chunk) break;
    va += chunk;
  }
  return out;
}

absl::StatusOr<std::string> KernelAccess::CharArray(uint64_t va, size_t size) const {
  std::string bytes(size, '\0');
  VMI_RETURN_IF_ERROR(Read(va, absl::MakeSpan(reinterpret_cast<uint8_t*>(bytes.data()), size)));
  bytes.resize(strnlen(bytes.data(), size));
  return bytes;
}

absl::Status WalkList(const KernelAccess& access, const ListHeadLayout& layout, uint64_t head,
                      size_t limit, absl::string_view what,
                      absl::FunctionRef<absl::StatusOr<bool>(uint64_t node)> on_node) {
  // The back-pointer check alone already stops any cycle that does not pass
  // the head (a node reached a second time has a prev that cannot match both
  // of its predecessors); the visited set, kept for the first nodes only so
  // memory stays bounded, names such a cycle for what it is.
  constexpr size_t kRemembered = 65536;
  absl::flat_hash_set<uint64_t> seen;
  uint64_t previous = head;
  absl::StatusOr<uint64_t> next = access.U64(head + layout.next);
  if (!next.ok()) {
    return AnnotateStatus(next.status(), absl::StrFormat("%s: reading the head at 0x%x", what, head));
  }
  for (size_t count = 0;; ++count) {
    const uint64_t node = *next;
    if (node == head) return absl::OkStatus();
    if (count == limit) {
      return absl::ResourceExhaustedError(
          absl::StrFormat("%s: more than %u entries; stopped there", what, limit));
    }
    if (seen.contains(node)) {
      return absl::DataLossError(absl::StrFormat(
          "%s: entry 0x%x comes round again without reaching the head (a cycle)", what, node));
    }
    if (count < kRemembered) seen.insert(node);
    absl::StatusOr<uint64_t> back = access.U64(node + layout.prev);
    if (!back.ok()) {
      return AnnotateStatus(back.status(),
                            absl::StrFormat("%s: reading entry 0x%x (after 0x%x)", what, node, previous));
    }
    if (*back != previous) {
      return absl::DataLossError(absl::StrFormat(
          "%s: torn at 0x%x: its prev is 0x%x, not the entry before it (0x%x)", what, node, *back,
          previous));
    }
    VMI_ASSIGN_OR_RETURN(bool go_on, on_node(node));
    if (!go_on) return absl::OkStatus();
    next = access.U64(node + layout.next);
    if (!next.ok()) {
      return AnnotateStatus(next.status(), absl::StrFormat("%s: reading entry 0x%x", what, node));
    }
    previous = node;
  }
}

}  // namespace vmi::os_linux
