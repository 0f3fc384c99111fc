// Test-only: a synthetic Linux kernel in guest-physical memory, built the
// way a real x86-64 kernel lays itself out where discovery looks: kernel
// page tables (4- or 5-level) mapping the image at 0xffffffff80000000 +
// slide, a VMCOREINFO page, the kernel's "OSRELEASE=%s" format string,
// init_uts_ns, compressed kallsyms tables, BTF between __start_BTF and
// __stop_BTF, and linux_banner. Every piece can be left out or damaged, so
// discovery's success and failure paths can be tested without a real guest.
//
// Thread-safety: thread-compatible.

#ifndef VMI_OS_LINUX_TESTING_FAKE_KERNEL_H_
#define VMI_OS_LINUX_TESTING_FAKE_KERNEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "arch/amd64/paging.h"
#include "arch/amd64/testing/page_store.h"
#include "arch/amd64/testing/store_driver.h"
#include "os/linux/testing/kallsyms_encoder.h"

namespace vmi::os_linux::testing {

struct FakeKernelOptions {
  bool five_level = false;
  uint64_t kaslr = 0x2a00000;
  int64_t phys_base = -0x3000000;
  std::string release = "6.1.0-fake-amd64";
  uint64_t frames = 8192;  // 32 MiB of RAM
  // Where the VMCOREINFO text starts (the kernel's data page is page-aligned;
  // other offsets test blocks that straddle frames).
  uint64_t vmcoreinfo_pa = 0x1800000;
  bool vmcoreinfo = true;
  bool kallsyms_lines = true;   // SYMBOL(kallsyms_*) in VMCOREINFO
  bool btf = true;              // BTF and its __start_BTF/__stop_BTF symbols
  bool format_string_copy = true;
  int extra_functions = 500;    // filler symbols
};

class FakeKernel {
 public:
  static constexpr uint64_t kStartKernelMap = 0xffffffff80000000ull;
  // Physical addresses of the pieces (inside the image).
  static constexpr uint64_t kTextPa = 0x0a00000, kRodataPa = 0x0b00000, kDataPa = 0x0c00000,
                            kKallsymsPa = 0x0d00000, kBtfPa = 0x0e00000;

  explicit FakeKernel(FakeKernelOptions options = {});

  amd64::testing::MemoryPageStore& store() { return *store_; }
  amd64::testing::StoreDriver driver() { return amd64::testing::StoreDriver(store_.get()); }
  const FakeKernelOptions& options() const { return options_; }

  // Kernel-image address <-> guest-physical address.
  uint64_t PaOf(uint64_t va) const { return va - kStartKernelMap + options_.phys_base; }
  uint64_t VaOf(uint64_t pa) const { return pa + kStartKernelMap - options_.phys_base; }

  uint64_t root_pa() const { return root_pa_; }
  uint64_t text_va() const { return VaOf(kTextPa); }
  amd64::PagingMode paging() const {
    return options_.five_level ? amd64::PagingMode::FiveLevel() : amd64::PagingMode::FourLevel();
  }
  // The VMCOREINFO text as written (also what an ELF note would carry).
  const std::string& vmcoreinfo_text() const { return vmcoreinfo_; }
  // Every symbol, runtime addresses, kallsyms order.
  const std::vector<PlainSymbol>& symbols() const { return symbols_; }
  uint64_t Symbol(const std::string& name) const;
  const std::string& banner() const { return banner_; }
  // BTF as placed in memory; offsets of task_struct members in it.
  const std::vector<uint8_t>& btf() const { return btf_; }
  static constexpr uint64_t kCommOffset = 24, kTasksOffset = 40, kTaskSize = 64;
  // Where the kallsyms names table lies.
  uint64_t kallsyms_names_pa() const { return kallsyms_names_pa_; }

  void WritePa(uint64_t pa, const void* data, size_t size);
  void WriteString(uint64_t pa, const std::string& s) { WritePa(pa, s.data(), s.size()); }

 private:
  void Build();

  FakeKernelOptions options_;
  std::unique_ptr<amd64::testing::MemoryPageStore> store_;
  uint64_t root_pa_ = 0;
  uint64_t kallsyms_names_pa_ = 0;
  std::string vmcoreinfo_, banner_;
  std::vector<PlainSymbol> symbols_;
  std::vector<uint8_t> btf_;
};

}  // namespace vmi::os_linux::testing

#endif  // VMI_OS_LINUX_TESTING_FAKE_KERNEL_H_
