#include "os/linux/testing/fake_memory.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"
#include "core/vmi_core.h"
#include "drivers/dump/dump_driver.h"
#include "gtest/gtest.h"
#include "os/linux/discovery.h"
#include "os/linux/testing/fixtures.h"

namespace vmi::os_linux::testing {

absl::StatusOr<MappedPage> FakeMemory::ScanFrame(Gfn /*gfn*/) {
  return absl::UnimplementedError("fake memory has no physical frames");
}

absl::Status FakeMemory::ReadPhysical(Pa pa, absl::Span<uint8_t> /*out*/) {
  return absl::UnimplementedError(absl::StrFormat("fake memory: physical read at %s", pa));
}

absl::StatusOr<Pa> FakeMemory::Translate(Va va, Pa, const amd64::PagingMode&) {
  uint8_t byte;
  if (absl::Status s = Read(va.value(), absl::MakeSpan(&byte, 1)); !s.ok()) return s;
  return Pa(va.value() & 0x000fffffffffffffull);
}

absl::Status FakeMemory::Read(uint64_t va, absl::Span<uint8_t> out) const {
  ++reads_;
  size_t done = 0;
  while (done < out.size()) {
    const uint64_t at = va + done;
    const uint64_t page = at & ~(kPageSize - 1);
    const size_t chunk = std::min<uint64_t>(out.size() - done, page + kPageSize - at);
    auto region = std::find_if(generated_.begin(), generated_.end(), [&](const Region& r) {
      return at >= r.start && at - r.start < r.size;
    });
    if (region != generated_.end()) {
      const size_t n = std::min<uint64_t>(chunk, region->start + region->size - at);
      region->generator(at, out.subspan(done, n));
      done += n;
      continue;
    }
    auto it = pages_.find(page);
    if (it == pages_.end()) {
      return absl::NotFoundError(absl::StrFormat("fake memory: 0x%x is not mapped", at));
    }
    std::memcpy(out.data() + done, it->second->data() + (at - page), chunk);
    done += chunk;
  }
  return absl::OkStatus();
}

void FakeMemory::Write(uint64_t va, const void* data, size_t size) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  size_t done = 0;
  while (done < size) {
    const uint64_t at = va + done;
    const uint64_t page = at & ~(kPageSize - 1);
    const size_t chunk = std::min<uint64_t>(size - done, page + kPageSize - at);
    std::unique_ptr<Page>& p = pages_[page];
    if (p == nullptr) p = std::make_unique<Page>(Page{});
    std::memcpy(p->data() + (at - page), bytes + done, chunk);
    done += chunk;
  }
}

void FakeMemory::WriteString(uint64_t va, absl::string_view s, bool nul) {
  Write(va, s.data(), s.size());
  if (nul) WriteU8(va + s.size(), 0);
}

uint64_t FakeMemory::Allocate(uint64_t size, uint64_t align) {
  next_ = (next_ + align - 1) & ~(align - 1);
  const uint64_t at = next_;
  next_ += std::max<uint64_t>(size, 1);
  // Maps and zeroes [at, at + size), page by page.
  for (uint64_t page = at & ~(kPageSize - 1); page < at + size; page += kPageSize) {
    std::unique_ptr<Page>& p = pages_[page];
    if (p == nullptr) p = std::make_unique<Page>(Page{});
  }
  const std::vector<uint8_t> zeros(size);
  Write(at, zeros.data(), zeros.size());
  return at;
}

uint64_t FakeMemory::AllocateString(absl::string_view s) {
  const uint64_t at = Allocate(s.size() + 1, 1);
  WriteString(at, s);
  return at;
}

uint64_t FakeMemory::Reserve(uint64_t size) {
  next_ = (next_ + kPageSize - 1) & ~(kPageSize - 1);
  const uint64_t at = next_;
  // Round up to whole pages, plus a page so the next allocation does not
  // map any of the range.
  next_ += ((size + kPageSize - 1) & ~(kPageSize - 1)) + kPageSize;
  return at;
}

void FakeMemory::Unmap(uint64_t va, uint64_t size) {
  for (uint64_t page = va & ~(kPageSize - 1); page < va + size; page += kPageSize) {
    pages_.erase(page);
  }
}

void FakeMemory::AddGenerated(uint64_t start, uint64_t size, Generator generator) {
  generated_.push_back({start, size, std::move(generator)});
}

uint64_t KernelObjects::SizeOf(absl::string_view type) const {
  absl::StatusOr<uint64_t> size = types_.SizeOf(type);
  if (!size.ok()) {
    ADD_FAILURE() << "sizeof(" << type << "): " << size.status();
    return 0;
  }
  return *size;
}

uint64_t KernelObjects::OffsetOf(absl::string_view type, absl::string_view path) const {
  absl::StatusOr<uint64_t> offset = types_.OffsetOf(type, path);
  if (!offset.ok()) {
    ADD_FAILURE() << type << "." << path << ": " << offset.status();
    return 0;
  }
  return *offset;
}

uint64_t KernelObjects::New(absl::string_view type, uint64_t align) const {
  return memory_.Allocate(std::max<uint64_t>(SizeOf(type), 1), align);
}

void KernelObjects::Set(uint64_t object, absl::string_view type, absl::string_view path,
                        uint64_t value) const {
  absl::StatusOr<FieldInfo> f = types_.Field(type, path);
  if (!f.ok()) {
    ADD_FAILURE() << type << "." << path << ": " << f.status();
    return;
  }
  if (f->is_bitfield() || (f->size != 1 && f->size != 2 && f->size != 4 && f->size != 8)) {
    ADD_FAILURE() << type << "." << path << " is " << f->size << " bytes"
                  << (f->is_bitfield() ? " (a bitfield)" : "") << ": Set writes 1, 2, 4 or 8";
    return;
  }
  memory_.Write(object + f->offset, &value, f->size);  // little-endian: the low bytes
}

void KernelObjects::SetChars(uint64_t object, absl::string_view type, absl::string_view path,
                             absl::string_view s) const {
  absl::StatusOr<FieldInfo> f = types_.Field(type, path);
  if (!f.ok()) {
    ADD_FAILURE() << type << "." << path << ": " << f.status();
    return;
  }
  std::string bytes(f->size, '\0');
  std::memcpy(bytes.data(), s.data(), std::min<size_t>(s.size(), bytes.size()));
  memory_.Write(object + f->offset, bytes.data(), bytes.size());
}

void KernelObjects::LinkList(uint64_t head, absl::Span<const uint64_t> nodes) const {
  const uint64_t next = OffsetOf("list_head", "next"), prev = OffsetOf("list_head", "prev");
  uint64_t previous = head;
  for (uint64_t node : nodes) {
    memory_.WriteU64(previous + next, node);
    memory_.WriteU64(node + prev, previous);
    previous = node;
  }
  memory_.WriteU64(previous + next, head);
  memory_.WriteU64(head + prev, previous);
}

absl::StatusOr<std::shared_ptr<const KernelTypes>> FixtureKernelTypes() {
  static const absl::StatusOr<std::shared_ptr<const KernelTypes>> types =
      []() -> absl::StatusOr<std::shared_ptr<const KernelTypes>> {
    VMI_ASSIGN_OR_RETURN(LinuxFixture fixture, FindLinuxFixture("l4"));
    VMI_ASSIGN_OR_RETURN(dump::DumpDriver driver, dump::DumpDriver::Open(fixture.raw_path()));
    VmiCore<dump::DumpDriver> core(std::move(driver));
    VMI_ASSIGN_OR_RETURN(LinuxKernel kernel, DiscoverLinux(core));
    if (!kernel.types_status.ok()) return kernel.types_status;
    return kernel.types;
  }();
  return types;
}

absl::StatusOr<LinuxKernel> FakeLinuxKernel(std::vector<SymbolTable::Entry> symbols) {
  VMI_ASSIGN_OR_RETURN(std::shared_ptr<const KernelTypes> types, FixtureKernelTypes());
  LinuxKernel kernel;
  kernel.release = "6.1 (fixture types, fake memory)";
  kernel.root = Pa(0);
  kernel.paging = amd64::PagingMode::FourLevel();
  kernel.symbols = SymbolTable(std::move(symbols));
  kernel.types = std::move(types);
  return kernel;
}

}  // namespace vmi::os_linux::testing
