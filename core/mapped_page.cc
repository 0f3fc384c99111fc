#include "core/mapped_page.h"

#include <utility>

namespace vmi {

MappedPage::State::~State() {
  if (release) release();
}

MappedPage MappedPage::Live(Gfn gfn, uint8_t* data, size_t size, std::function<void()> release) {
  MappedPage page;
  page.state_ = std::make_shared<State>();
  page.state_->gfn = gfn;
  page.state_->kind = Kind::kLive;
  page.state_->release = std::move(release);
  page.data_ = data;
  page.size_ = size;
  return page;
}

MappedPage MappedPage::Owned(Gfn gfn, std::vector<uint8_t> bytes) {
  MappedPage page;
  page.state_ = std::make_shared<State>();
  page.state_->gfn = gfn;
  page.state_->kind = Kind::kOwned;
  page.state_->owned = std::move(bytes);
  page.data_ = page.state_->owned.data();
  page.size_ = page.state_->owned.size();
  return page;
}

MappedPage MappedPage::Owned(Gfn gfn, absl::Span<const uint8_t> bytes) {
  return Owned(gfn, std::vector<uint8_t>(bytes.begin(), bytes.end()));
}

}  // namespace vmi
