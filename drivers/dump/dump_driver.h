// DumpDriver: offline introspection of a memory dump file (raw physical
// image, LiME, QEMU dump-guest-memory ELF core, Xen `xl dump-core`). It
// satisfies VmiRead and VmiQueryRegisters, never VmiWrite: a dump is
// evidence, and the mapping is read-only.
//
// The file is mmap'ed read-only at Open, which reads only its headers (and
// for Xen the page-frame table): opening a 1 GiB dump does not scan it.
// ReadPage returns a zero-copy MappedPage::Live into the mapping; every page
// handle shares ownership of the mapping, so pages stay valid after the
// driver is moved or destroyed. The bytes are read-only: writing through the
// page pointer faults. As with any mmap reader, the file must not be
// truncated while open (the kernel would raise SIGBUS).
//
// Damaged and hostile files are rejected at Open with an error naming the
// defect and where it is, or served up to the damage (warnings() says what
// was lost); a frame the dump does not hold is a NotFound error, never a
// read of unrelated bytes.
//
// Thread-safety: thread-compatible. After Open, ReadPage, Registers and
// Info only read immutable state, so concurrent calls on one driver are safe.

#ifndef VMI_DRIVERS_DUMP_DUMP_DRIVER_H_
#define VMI_DRIVERS_DUMP_DUMP_DRIVER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "arch/amd64/amd64.h"
#include "core/driver.h"
#include "core/mapped_page.h"
#include "core/types.h"
#include "drivers/dump/dump_format.h"

namespace vmi::dump {

namespace dump_driver_internal {
struct State;
}  // namespace dump_driver_internal

struct OpenOptions {
  // kAuto detects the format from the file's content.
  DumpFormat format = DumpFormat::kAuto;
  // CPU state supplied by the caller: vCPU i gets registers[i]. When not
  // empty it replaces whatever the dump carries; it is the only CPU state
  // of raw and LiME dumps (which record none).
  std::vector<amd64::Registers> registers;
  // ELF PT_LOAD bytes between p_filesz and p_memsz: false (default) reports
  // those frames missing, true reads them as zeros (the ELF meaning).
  bool zero_fill_elf_memsz = false;

  // Options supplying one vCPU in 64-bit long mode with 4-level paging
  // rooted at `cr3`: enough for VmiCore to translate through a raw or LiME
  // dump.
  static OpenOptions WithCr3(uint64_t cr3);
};

class DumpDriver {
 public:
  using Architecture = Amd64;

  [[nodiscard]] static absl::StatusOr<DumpDriver> Open(const std::string& path,
                                                       OpenOptions options = {});

  DumpDriver(DumpDriver&&) noexcept;
  DumpDriver& operator=(DumpDriver&&) noexcept;
  DumpDriver(const DumpDriver&) = delete;
  DumpDriver& operator=(const DumpDriver&) = delete;
  ~DumpDriver();

  // page_size 4096, max_gfn = highest frame present, vcpus = number of
  // vCPU states (0 for a raw or LiME dump opened without registers).
  absl::StatusOr<VmiInfo> Info() const;

  // A live view of the frame in the mapping; NotFound for a hole or a frame
  // beyond the end: "read_page(gfn=0x..): not present in dump <path>".
  [[nodiscard]] absl::StatusOr<MappedPage> ReadPage(Gfn gfn);

  // The vCPU's state as the dump (or OpenOptions) records it. Fields a
  // format does not carry are zero; EFER is inferred (LME|LMA|NXE) for a
  // vCPU with CR0.PG and CR4.PAE in a 64-bit dump. OutOfRange for a vCPU it
  // does not have, which is every vCPU of a dump without CPU state (the
  // driver contract's unknown vCPU; the message says so).
  [[nodiscard]] absl::StatusOr<amd64::Registers> Registers(VcpuId vcpu);

  const std::string& path() const;
  DumpFormat format() const;
  uint64_t file_size() const;
  // Present frames, coalesced into ranges, ascending.
  std::vector<GfnRange> PresentRanges() const;
  // The present frames that the file holds (not zero-filled ones) as
  // zero-copy spans of the mapping, ascending: whole-memory scans run over
  // these instead of page by page. Valid as long as the driver, a driver
  // moved from it or any page it returned lives.
  struct MappedRange {
    Gfn first;
    absl::Span<const uint8_t> bytes;  // a multiple of 4096 bytes
  };
  std::vector<MappedRange> MappedRanges() const;
  uint64_t page_count() const;
  // The descriptor of the first ELF note named `name` other than the
  // CPU-state notes (e.g. "VMCOREINFO" in a kdump or a QEMU dump of a guest
  // with the vmcoreinfo device); nullopt when the dump has none. Valid as
  // long as the driver (or a moved-to driver) lives.
  std::optional<absl::Span<const uint8_t>> FindNote(absl::string_view name) const;
  // Damage found at Open and worked around (what is missing and why).
  const std::vector<std::string>& warnings() const;

 private:
  explicit DumpDriver(std::shared_ptr<const dump_driver_internal::State> state);
  std::shared_ptr<const dump_driver_internal::State> state_;
};

static_assert(VmiRead<DumpDriver>);
static_assert(VmiQueryRegisters<DumpDriver>);
static_assert(!VmiWrite<DumpDriver>);
static_assert(!VmiFullDriver<DumpDriver>);
static_assert(!VmiSetRegisters<DumpDriver>);

}  // namespace vmi::dump

#endif  // VMI_DRIVERS_DUMP_DUMP_DRIVER_H_
