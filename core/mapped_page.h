// MappedPage: a cheap, reference-counted handle to the bytes of one guest page.
//
// A page is either *live* (a zero-copy view of guest memory: a Xen foreign
// mapping, the simulator's RAM, an mmap of a dump file), whose bytes change when
// the guest writes, or *owned* (a private copy, frozen at the time it was taken).
// Caches must know which: a cached live page never goes stale, a cached owned
// copy does when the guest or a VMI write changes the frame.
//
// Thread-safety: copies may be used and destroyed on different threads (the
// reference count is atomic); the release callback of a live page runs exactly
// once, on the thread that drops the last handle.

#ifndef VMI_CORE_MAPPED_PAGE_H_
#define VMI_CORE_MAPPED_PAGE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/types/span.h"
#include "core/types.h"

namespace vmi {

class MappedPage {
 public:
  enum class Kind : uint8_t { kLive, kOwned };

  // An empty handle (no bytes). Drivers never return one for a successful read.
  MappedPage() = default;

  // A zero-copy view of `size` bytes at `data`, owned by someone else.
  // `release` (may be empty) runs when the last handle is dropped, e.g. to
  // unmap a foreign mapping.
  static MappedPage Live(Gfn gfn, uint8_t* data, size_t size, std::function<void()> release = {});

  // A private copy of `bytes`.
  static MappedPage Owned(Gfn gfn, absl::Span<const uint8_t> bytes);
  static MappedPage Owned(Gfn gfn, std::vector<uint8_t> bytes);

  bool valid() const { return state_ != nullptr; }
  Gfn gfn() const { return state_ ? state_->gfn : Gfn(); }
  Kind kind() const { return state_ ? state_->kind : Kind::kOwned; }
  bool is_live() const { return kind() == Kind::kLive; }
  bool is_owned() const { return kind() == Kind::kOwned; }

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  absl::Span<const uint8_t> bytes() const { return {data_, size_}; }
  // Number of handles sharing this page (for tests and diagnostics).
  long use_count() const { return state_.use_count(); }

 private:
  struct State {
    ~State();
    Gfn gfn;
    Kind kind = Kind::kOwned;
    std::vector<uint8_t> owned;
    std::function<void()> release;
  };

  std::shared_ptr<State> state_;
  // Cached from state_ so the hot path reads them without a second indirection.
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace vmi

#endif  // VMI_CORE_MAPPED_PAGE_H_
