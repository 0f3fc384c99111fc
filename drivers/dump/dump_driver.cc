#include "drivers/dump/dump_driver.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/strings/str_format.h"
#include "arch/amd64/bitfields.h"
#include "core/error.h"
#include "drivers/dump/internal/layout.h"
#include "drivers/dump/internal/parsers.h"

namespace vmi::dump {
namespace dump_driver_internal {

// A read-only mapping of the whole file, unmapped with its last owner (the
// driver or any page handed out).
class Mapping {
 public:
  Mapping(uint8_t* data, size_t size) : data_(data), size_(size) {}
  ~Mapping() { munmap(data_, size_); }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  uint8_t* data_;
  size_t size_;
};

struct State {
  std::string path;
  std::shared_ptr<Mapping> mapping;
  dump_internal::DumpLayout layout;
};

}  // namespace dump_driver_internal

namespace {

// Backs zero extents (ELF p_memsz beyond p_filesz, when asked for).
alignas(4096) uint8_t zero_page[dump_internal::kPageSize] = {};

absl::StatusOr<std::shared_ptr<dump_driver_internal::Mapping>> MapFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(absl::StrFormat("open(%s)", path), errno);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    close(fd);
    return ErrnoError(absl::StrFormat("fstat(%s)", path), err);
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrFormat("open(%s): not a regular file", path));
  }
  if (st.st_size == 0) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrFormat("open(%s): file is empty", path));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  void* data = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  close(fd);
  if (data == MAP_FAILED) return ErrnoError(absl::StrFormat("mmap(%s)", path), err);
  return std::make_shared<dump_driver_internal::Mapping>(static_cast<uint8_t*>(data), size);
}

}  // namespace

OpenOptions OpenOptions::WithCr3(uint64_t cr3) {
  amd64::Registers regs;
  regs.cr0 = amd64::Cr0::kPe | amd64::Cr0::kPg;
  regs.cr4 = amd64::Cr4::kPae;
  regs.efer = amd64::Efer::kLme | amd64::Efer::kLma | amd64::Efer::kNxe;
  regs.cr3 = cr3;
  regs.cs.access = 0xa09b;  // present 64-bit code segment (L=1)
  OpenOptions options;
  options.registers.push_back(regs);
  return options;
}

absl::StatusOr<DumpDriver> DumpDriver::Open(const std::string& path, OpenOptions options) {
  VMI_ASSIGN_OR_RETURN(std::shared_ptr<dump_driver_internal::Mapping> mapping, MapFile(path));
  dump_internal::ParseOptions parse_options;
  parse_options.zero_fill_elf_memsz = options.zero_fill_elf_memsz;
  auto layout =
      dump_internal::Parse({mapping->data(), mapping->size()}, options.format, parse_options);
  if (!layout.ok()) return AnnotateStatus(layout.status(), absl::StrFormat("open(%s)", path));
  auto state = std::make_shared<dump_driver_internal::State>();
  state->path = path;
  state->mapping = std::move(mapping);
  state->layout = *std::move(layout);
  if (!options.registers.empty()) {
    if (options.registers.size() > 0xffff) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "open(%s): %u supplied vCPU states exceed 65535", path, options.registers.size()));
    }
    state->layout.registers = std::move(options.registers);
  }
  return DumpDriver(std::move(state));
}

DumpDriver::DumpDriver(std::shared_ptr<const dump_driver_internal::State> state)
    : state_(std::move(state)) {}
DumpDriver::DumpDriver(DumpDriver&&) noexcept = default;
DumpDriver& DumpDriver::operator=(DumpDriver&&) noexcept = default;
DumpDriver::~DumpDriver() = default;

absl::StatusOr<VmiInfo> DumpDriver::Info() const {
  if (!state_) return absl::FailedPreconditionError("info(): driver was moved from");
  VmiInfo info;
  info.page_size = dump_internal::kPageSize;
  info.page_shift = dump_internal::kPageShift;
  info.max_gfn = Gfn(state_->layout.max_gfn);
  info.vcpus = static_cast<uint16_t>(state_->layout.registers.size());
  return info;
}

std::optional<absl::Span<const uint8_t>> DumpDriver::FindNote(absl::string_view name) const {
  if (!state_) return std::nullopt;
  for (const dump_internal::DumpNote& note : state_->layout.notes) {
    if (note.name == name) return absl::MakeConstSpan(note.desc);
  }
  return std::nullopt;
}

absl::StatusOr<MappedPage> DumpDriver::ReadPage(Gfn gfn) {
  if (!state_) return absl::FailedPreconditionError("read_page(): driver was moved from");
  const dump_internal::Extent* extent = state_->layout.Find(gfn.value());
  if (extent == nullptr) {
    if (gfn.value() > state_->layout.max_gfn) {
      return absl::NotFoundError(
          absl::StrFormat("read_page(gfn=%s): not present in dump %s (beyond max_gfn 0x%x)", gfn,
                          state_->path, state_->layout.max_gfn));
    }
    return absl::NotFoundError(
        absl::StrFormat("read_page(gfn=%s): not present in dump %s (a hole)", gfn, state_->path));
  }
  if (extent->zero) return MappedPage::Live(gfn, zero_page, dump_internal::kPageSize);
  uint8_t* data = state_->mapping->data() + extent->file_offset +
                  (gfn.value() - extent->first_gfn) * dump_internal::kPageSize;
  return MappedPage::Live(gfn, data, dump_internal::kPageSize, [mapping = state_->mapping] {});
}

absl::StatusOr<amd64::Registers> DumpDriver::Registers(VcpuId vcpu) {
  if (!state_) return absl::FailedPreconditionError("registers(): driver was moved from");
  const auto& registers = state_->layout.registers;
  if (registers.empty()) {
    // Info().vcpus is 0: every vCPU id is unknown (the contract's OutOfRange).
    return absl::OutOfRangeError(absl::StrFormat(
        "registers(vcpu=%s): %s dump %s carries no CPU state; supply registers (e.g. a CR3) in "
        "OpenOptions",
        vcpu, DumpFormatName(state_->layout.format), state_->path));
  }
  if (vcpu.value() >= registers.size()) {
    return absl::OutOfRangeError(absl::StrFormat("registers(vcpu=%s): dump %s has %u vCPUs", vcpu,
                                                 state_->path, registers.size()));
  }
  return registers[vcpu.value()];
}

const std::string& DumpDriver::path() const { return state_->path; }
DumpFormat DumpDriver::format() const { return state_->layout.format; }
uint64_t DumpDriver::file_size() const { return state_->mapping->size(); }
std::vector<GfnRange> DumpDriver::PresentRanges() const { return state_->layout.PresentRanges(); }

std::vector<DumpDriver::MappedRange> DumpDriver::MappedRanges() const {
  std::vector<MappedRange> out;
  if (!state_) return out;
  for (const dump_internal::Extent& e : state_->layout.extents) {
    if (e.zero) continue;
    const uint8_t* data = state_->mapping->data() + e.file_offset;
    const size_t size = e.pages * dump_internal::kPageSize;
    // Extents adjacent in memory and in the file become one span.
    if (!out.empty() && out.back().first.value() + out.back().bytes.size() / dump_internal::kPageSize ==
                            e.first_gfn &&
        out.back().bytes.data() + out.back().bytes.size() == data) {
      out.back().bytes = absl::Span<const uint8_t>(out.back().bytes.data(), out.back().bytes.size() + size);
    } else {
      out.push_back({Gfn(e.first_gfn), absl::Span<const uint8_t>(data, size)});
    }
  }
  return out;
}
uint64_t DumpDriver::page_count() const { return state_->layout.page_count; }
const std::vector<std::string>& DumpDriver::warnings() const { return state_->layout.warnings; }

}  // namespace vmi::dump
