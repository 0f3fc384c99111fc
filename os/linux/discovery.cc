#include "os/linux/discovery.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "arch/amd64/amd64.h"
#include "os/linux/btf_types.h"
#include "os/linux/internal/scan.h"
#include "os/linux/kallsyms.h"

namespace vmi::os_linux {
namespace {

using os_linux_internal::CheckVmcoreinfo;
using os_linux_internal::FindPattern;
using os_linux_internal::kNotFound;

constexpr absl::string_view kPattern = "OSRELEASE=";
constexpr uint64_t kPageSize = Amd64::kPageSize;
constexpr size_t kMaxRejectionsQuoted = 4;
constexpr size_t kMaxBannerLength = 512;

// Reads a NUL-terminated kernel string of at most `limit` bytes, page by
// page so that an unmapped page after a short string does not matter.
absl::StatusOr<std::string> ReadKernelString(GuestMemory& memory, const LinuxKernel& kernel,
                                             uint64_t va, size_t limit) {
  std::string out;
  while (out.size() < limit) {
    const size_t chunk = std::min<uint64_t>(limit - out.size(), kPageSize - (va & (kPageSize - 1)));
    std::vector<uint8_t> bytes(chunk);
    VMI_RETURN_IF_ERROR(memory.ReadVirtual(Va(va), kernel.root, kernel.paging, absl::MakeSpan(bytes)));
    const auto nul = std::find(bytes.begin(), bytes.end(), 0);
    out.append(bytes.begin(), nul);
    if (nul != bytes.end()) break;
    va += chunk;
  }
  return out;
}

class Rejections {
 public:
  void Add(uint64_t pa, const absl::Status& why) {
    ++count_;
    if (quoted_.size() < kMaxRejectionsQuoted) {
      quoted_.push_back(absl::StrFormat("pa 0x%x: %s", pa, why.message()));
    }
  }
  size_t count() const { return count_; }
  std::string Summary() const {
    if (count_ == 0) return "no candidate blocks";
    std::string s = absl::StrFormat("%u candidate block%s rejected (%s%s)", count_,
                                    count_ == 1 ? "" : "s", absl::StrJoin(quoted_, "; "),
                                    count_ > quoted_.size() ? "; ..." : "");
    return s;
  }

 private:
  size_t count_ = 0;
  std::vector<std::string> quoted_;
};

// Tries the block starting at `pa`: up to a page of text (less where the
// next frame is absent), parsed and checked against memory.
absl::Status TryCandidate(GuestMemory& memory, uint64_t pa, LinuxKernel* kernel) {
  std::vector<uint8_t> text(kMaxVmcoreinfoBytes);
  if (!memory.ReadPhysical(Pa(pa), absl::MakeSpan(text)).ok()) {
    text.resize(kPageSize - (pa & (kPageSize - 1)));
    VMI_RETURN_IF_ERROR(memory.ReadPhysical(Pa(pa), absl::MakeSpan(text)));
  }
  VMI_ASSIGN_OR_RETURN(VmcoreInfo info, ParseVmcoreinfo(text));
  VMI_RETURN_IF_ERROR(CheckVmcoreinfo(info, memory, kernel));
  kernel->vmcoreinfo = std::move(info);
  return absl::OkStatus();
}

// Scans physical memory frame by frame for the first valid block.
absl::Status ScanForVmcoreinfo(GuestMemory& memory, const DiscoveryOptions& options,
                               LinuxKernel* kernel, ScanStats* stats, Rejections* rejected) {
  bool found = false;
  VMI_RETURN_IF_ERROR(os_linux_internal::ScanPhysicalMemory(
      memory, kPattern, stats, [&](uint64_t pa) -> absl::StatusOr<bool> {
        if (stats->candidates > options.max_candidates) {
          return absl::ResourceExhaustedError(absl::StrFormat(
              "gave up after %u \"OSRELEASE=\" candidates without a valid VMCOREINFO block",
              options.max_candidates));
        }
        absl::Status s = TryCandidate(memory, pa, kernel);
        if (!s.ok()) {
          rejected->Add(pa, s);
          return false;
        }
        kernel->layout_source =
            absl::StrFormat("VMCOREINFO found at pa 0x%x by a scan of physical memory", pa);
        found = true;
        return true;
      }));
  return found ? absl::OkStatus() : absl::NotFoundError("not found");
}

// "Linux version 6.1.0-57-amd64 (...)" -> "6.1.0-57-amd64".
std::string ReleaseFromBanner(absl::string_view banner) {
  absl::ConsumePrefix(&banner, "Linux version ");
  return std::string(banner.substr(0, banner.find(' ')));
}

// A banner as C would read it: up to its NUL, at most kMaxBannerLength.
std::string BannerText(absl::string_view bytes) {
  return std::string(bytes.substr(0, std::min(bytes.find('\0'), kMaxBannerLength)));
}

std::string Quote(absl::string_view banner) {
  std::string s(banner.substr(0, 120));
  while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) s.pop_back();
  return absl::StrCat("\"", absl::CHexEscape(s), banner.size() > 120 ? "...\"" : "\"");
}

// The layout from the profile and the banner found in memory (see the
// header comment); NotFound naming what was seen when no banner fits.
absl::Status LayoutFromProfile(GuestMemory& memory, const IsfProfile& profile,
                               const DiscoveryOptions& options, LinuxKernel* kernel,
                               ScanStats* stats) {
  constexpr uint64_t kAlign = 0x200000, kImageArea = 0x40000000;
  std::optional<uint64_t> banner_va = profile.SymbolAddress("linux_banner");
  std::optional<uint64_t> pgt_va = profile.SymbolAddress("init_top_pgt");
  if (!pgt_va) pgt_va = profile.SymbolAddress("swapper_pg_dir");
  if (!banner_va || !pgt_va) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s has no %s: it cannot locate the kernel without VMCOREINFO", profile.source(),
        !banner_va ? "linux_banner symbol" : "init_top_pgt or swapper_pg_dir symbol"));
  }
  const std::optional<std::string> want = profile.Banner();
  const std::string want_text = want ? BannerText(*want) : "";
  const uint64_t memory_end = (memory.max_gfn().value() + 1) * kPageSize;
  std::string seen;  // the first banner in memory that did not fit
  bool found = false;
  VMI_RETURN_IF_ERROR(os_linux_internal::ScanPhysicalMemory(
      memory, "Linux version ", stats, [&](uint64_t pa) -> absl::StatusOr<bool> {
        if (stats->candidates > options.max_candidates) {
          return absl::ResourceExhaustedError(absl::StrFormat(
              "gave up after %u \"Linux version \" candidates", options.max_candidates));
        }
        std::vector<uint8_t> bytes(kMaxBannerLength);
        if (!memory.ReadPhysical(Pa(pa), absl::MakeSpan(bytes)).ok()) {
          bytes.resize(kPageSize - (pa & (kPageSize - 1)));
          if (!memory.ReadPhysical(Pa(pa), absl::MakeSpan(bytes)).ok()) return false;
        }
        const std::string text =
            BannerText(absl::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
        if (want && text != want_text) {
          if (seen.empty()) seen = text;
          return false;
        }
        // phys_base + slide, and the root it implies.
        const uint64_t shift = pa - (*banner_va - kStartKernelMap);
        const uint64_t root = *pgt_va - kStartKernelMap + shift;
        if (root >= memory_end || (root & (kPageSize - 1)) != 0) return false;
        for (const amd64::PagingMode mode : {amd64::PagingMode::FourLevel(), amd64::PagingMode::FiveLevel()}) {
          for (uint64_t slide = 0; slide < kImageArea; slide += kAlign) {
            absl::StatusOr<Pa> at = memory.Translate(Va(*banner_va + slide), Pa(root), mode);
            if (!at.ok() || at->value() != pa) continue;
            absl::StatusOr<Pa> self = memory.Translate(Va(*pgt_va + slide), Pa(root), mode);
            if (!self.ok() || self->value() != root) continue;
            kernel->kaslr_slide = slide;
            kernel->phys_base = static_cast<int64_t>(shift - slide);
            kernel->root_va = Va(*pgt_va + slide);
            kernel->root = Pa(root);
            kernel->paging = mode;
            kernel->release = ReleaseFromBanner(text);
            kernel->layout_source = absl::StrFormat(
                "linux_banner of %s found at pa 0x%x; slide and root from the page tables",
                profile.source(), pa);
            found = true;
            return true;
          }
        }
        if (seen.empty()) seen = text;
        return false;
      }));
  if (found) return absl::OkStatus();
  return absl::NotFoundError(absl::StrFormat(
      "%s describes the kernel %s, which is not in memory%s", profile.source(),
      want ? Quote(want_text) : "with an unknown banner",
      seen.empty() ? " (no \"Linux version \" banner found)"
                   : absl::StrCat(": memory holds ", Quote(seen))));
}

// With VMCOREINFO's layout known, the profile must describe this kernel:
// its banner must be what lies at its linux_banner, slid.
absl::Status CheckProfile(GuestMemory& memory, const IsfProfile& profile, const LinuxKernel& kernel) {
  std::optional<uint64_t> banner_va = profile.SymbolAddress("linux_banner");
  std::optional<std::string> want = profile.Banner();
  if (!banner_va || !want) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s has no linux_banner with its text: it cannot be checked against the kernel (%s)",
        profile.source(), kernel.release));
  }
  absl::StatusOr<std::string> text = ReadKernelString(memory, kernel, *banner_va + kernel.kaslr_slide,
                                                      kMaxBannerLength);
  const std::string want_text = BannerText(*want);
  if (!text.ok() || *text != want_text) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s is for another kernel: its banner is %s, this kernel (%s) has %s", profile.source(),
        Quote(want_text), kernel.release,
        text.ok() ? Quote(*text) : absl::StrCat("an unreadable banner: ", text.status().message())));
  }
  return absl::OkStatus();
}

absl::Status LoadSymbols(GuestMemory& memory, LinuxKernel* kernel) {
  const VmcoreInfo& info = *kernel->vmcoreinfo;
  std::optional<KallsymsLocation> location = KallsymsLocation::FromVmcoreinfo(info);
  if (!location) {
    return absl::NotFoundError(absl::StrFormat(
        "VMCOREINFO of %s names no kallsyms tables (SYMBOL(kallsyms_*) lines appear in kernels "
        ">= 6.0): pass an ISF profile",
        kernel->release));
  }
  VMI_ASSIGN_OR_RETURN(SymbolTable table,
                       DecodeKallsyms(*location, [&](uint64_t va, absl::Span<uint8_t> out) {
                         return memory.ReadVirtual(Va(va), kernel->root, kernel->paging, out);
                       }));
  // The decoded table must agree with VMCOREINFO's own addresses. Only
  // symbols VMCOREINFO records by address: for arrays such as mem_section
  // it records the pointer's value instead.
  for (const char* name : {"_stext", "init_uts_ns", "init_top_pgt", "swapper_pg_dir"}) {
    std::optional<uint64_t> from_info = info.Symbol(name);
    std::optional<uint64_t> from_table = table.Address(name);
    if (from_info && from_table && *from_info != *from_table) {
      return absl::DataLossError(absl::StrFormat(
          "kallsyms disagree with VMCOREINFO: %s is 0x%x in kallsyms, 0x%x in VMCOREINFO", name,
          *from_table, *from_info));
    }
  }
  kernel->symbols_source = absl::StrFormat("kallsyms in guest memory (%u symbols)", table.size());
  kernel->symbols = std::move(table);
  return absl::OkStatus();
}

absl::Status LoadTypes(GuestMemory& memory, LinuxKernel* kernel) {
  std::optional<uint64_t> start = kernel->symbols.Address("__start_BTF");
  std::optional<uint64_t> stop = kernel->symbols.Address("__stop_BTF");
  if (!start || !stop) {
    return absl::NotFoundError(
        "the kernel has no __start_BTF/__stop_BTF symbols (built without CONFIG_DEBUG_INFO_BTF): "
        "pass an ISF profile");
  }
  if (*stop <= *start || *stop - *start > kMaxBtfBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "BTF bounds __start_BTF=0x%x __stop_BTF=0x%x are not 1 byte to %u MiB apart", *start, *stop,
        kMaxBtfBytes >> 20));
  }
  std::vector<uint8_t> data(*stop - *start);
  if (absl::Status s = memory.ReadVirtual(Va(*start), kernel->root, kernel->paging, absl::MakeSpan(data));
      !s.ok()) {
    return AnnotateStatus(s, absl::StrFormat("reading BTF at 0x%x (%u bytes)", *start, data.size()));
  }
  const std::string where = absl::StrFormat("BTF in guest memory at 0x%x (%u bytes)", *start, data.size());
  VMI_ASSIGN_OR_RETURN(std::unique_ptr<BtfTypes> types, BtfTypes::Parse(data, where));
  kernel->types_source = absl::StrFormat("%s, %u types", where, types->type_count());
  kernel->types = std::move(types);
  return absl::OkStatus();
}

}  // namespace

}  // namespace vmi::os_linux

namespace vmi::os_linux_internal {

using os_linux::GuestMemory;
using os_linux::LinuxKernel;
using os_linux::ScanStats;
using os_linux::VmcoreInfo;

absl::Status ScanPhysicalMemory(GuestMemory& memory, absl::string_view pattern, ScanStats* stats,
                                absl::FunctionRef<absl::StatusOr<bool>(uint64_t pa)> on_match) {
  constexpr uint64_t kPageSize = Amd64::kPageSize;
  const size_t k = pattern.size();
  if (k < 2 || k > 64) {
    return absl::InvalidArgumentError(
        absl::StrFormat("scan pattern of %u bytes: 2 to 64 are supported", k));
  }
  // Memory comes in runs (whole mapped ranges, or single frames). The last
  // k-1 bytes of a run and the first k-1 of the next one, if it follows
  // without a gap, make the seam where a match may straddle the two.
  uint8_t seam[2 * 64];
  bool have_tail = false;
  uint64_t tail_end = 0;
  auto scan_run = [&](uint64_t start, absl::Span<const uint8_t> bytes) -> absl::StatusOr<bool> {
    if (have_tail && tail_end == start && bytes.size() >= k - 1) {
      std::memcpy(seam + (k - 1), bytes.data(), k - 1);
      const absl::Span<const uint8_t> joined(seam, 2 * (k - 1));
      for (size_t at = 0; (at = FindPattern(joined, pattern, at)) != kNotFound; ++at) {
        ++stats->candidates;
        VMI_ASSIGN_OR_RETURN(bool stop, on_match(start - (k - 1) + at));
        if (stop) {
          stats->frames_scanned += 1;
          return true;
        }
      }
    }
    for (size_t at = 0; (at = FindPattern(bytes, pattern, at)) != kNotFound; ++at) {
      ++stats->candidates;
      VMI_ASSIGN_OR_RETURN(bool stop, on_match(start + at));
      if (stop) {
        stats->frames_scanned += at / kPageSize + 1;
        return true;
      }
    }
    stats->frames_scanned += bytes.size() / kPageSize;
    have_tail = bytes.size() >= k - 1;
    if (have_tail) std::memcpy(seam, bytes.data() + bytes.size() - (k - 1), k - 1);
    tail_end = start + bytes.size();
    return false;
  };

  const uint64_t frames = memory.max_gfn().value() + 1;
  std::vector<GuestMemory::Run> runs = memory.MappedRuns();
  if (!runs.empty()) {
    uint64_t covered = 0;
    for (const GuestMemory::Run& run : runs) {
      VMI_ASSIGN_OR_RETURN(bool stop, scan_run(run.start.value(), run.bytes));
      if (stop) return absl::OkStatus();
      covered += run.bytes.size() / kPageSize;
    }
    stats->frames_absent += frames - std::min(frames, covered);
    return absl::OkStatus();
  }
  for (uint64_t g = 0; g < frames; ++g) {
    absl::StatusOr<MappedPage> page = memory.ScanFrame(Gfn(g));
    if (!page.ok() || page->size() < kPageSize) {
      ++stats->frames_absent;
      have_tail = false;
      continue;
    }
    VMI_ASSIGN_OR_RETURN(bool stop, scan_run(g * kPageSize, page->bytes().subspan(0, kPageSize)));
    if (stop) return absl::OkStatus();
  }
  return absl::OkStatus();
}

absl::Status CheckVmcoreinfo(const VmcoreInfo& info, GuestMemory& memory, LinuxKernel* kernel) {
  constexpr uint64_t kPageSize = Amd64::kPageSize;
  // struct new_utsname (uapi): sysname[65], nodename[65], release[65], ...
  constexpr uint64_t kUtsReleaseOffset = 130;
  constexpr size_t kUtsFieldLength = 65;
  const uint64_t root = info.KernelImagePa(info.top_pgt);
  const uint64_t memory_end = (memory.max_gfn().value() + 1) * kPageSize;
  if (root >= memory_end) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "its page-table root (init_top_pgt 0x%x with phys_base %d) is pa 0x%x, beyond guest "
        "memory (0x%x bytes)",
        info.top_pgt, info.phys_base, root, memory_end));
  }
  const amd64::PagingMode mode = info.five_level ? amd64::PagingMode::FiveLevel()
                                                 : amd64::PagingMode::FourLevel();
  absl::StatusOr<Pa> self = memory.Translate(Va(info.top_pgt), Pa(root), mode);
  if (!self.ok() || self->value() != root) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the %s page tables at pa 0x%x do not map init_top_pgt (0x%x) to themselves: %s",
        mode.ToString(), root, info.top_pgt,
        self.ok() ? absl::StrFormat("it translates to pa %s", *self) : std::string(self.status().message())));
  }
  if (std::optional<uint64_t> uts = info.Symbol("init_uts_ns")) {
    const uint64_t va = *uts + info.Offset("uts_namespace.name").value_or(0) + kUtsReleaseOffset;
    std::vector<uint8_t> release(kUtsFieldLength);
    absl::Status s = memory.ReadVirtual(Va(va), Pa(root), mode, absl::MakeSpan(release));
    if (!s.ok()) {
      return AnnotateStatus(s, absl::StrFormat("reading the release in init_uts_ns at 0x%x", va));
    }
    const std::string found(reinterpret_cast<const char*>(release.data()),
                            strnlen(reinterpret_cast<const char*>(release.data()), release.size()));
    if (found != info.osrelease) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "init_uts_ns says release \"%s\", the block says \"%s\"", found, info.osrelease));
    }
  }
  kernel->release = info.osrelease;
  kernel->build_id = info.build_id;
  kernel->kaslr_slide = info.kernel_offset;
  kernel->phys_base = info.phys_base;
  kernel->root_va = Va(info.top_pgt);
  kernel->root = Pa(root);
  kernel->paging = mode;
  return absl::OkStatus();
}

}  // namespace vmi::os_linux_internal

namespace vmi::os_linux {

absl::StatusOr<LinuxKernel> DiscoverLinux(GuestMemory& memory, const DiscoveryOptions& options,
                                          ScanStats* stats) {
  ScanStats local_stats;
  if (stats == nullptr) stats = &local_stats;
  *stats = ScanStats();
  LinuxKernel kernel;
  Rejections rejected;
  bool found = false;
  std::string note_result = "no VMCOREINFO note";

  if (options.use_note) {
    if (std::optional<std::string> note = memory.VmcoreinfoNote()) {
      absl::StatusOr<VmcoreInfo> info = ParseVmcoreinfo(
          absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(note->data()), note->size()));
      absl::Status s = info.ok() ? CheckVmcoreinfo(*info, memory, &kernel) : info.status();
      if (s.ok()) {
        kernel.vmcoreinfo = *std::move(info);
        kernel.layout_source = "VMCOREINFO from the dump's ELF note";
        found = true;
      } else {
        note_result = absl::StrCat("the VMCOREINFO note was rejected: ", s.message());
      }
    }
  }
  if (!found && options.scan_memory) {
    absl::Status s = ScanForVmcoreinfo(memory, options, &kernel, stats, &rejected);
    if (s.ok()) {
      found = true;
    } else if (s.code() != absl::StatusCode::kNotFound) {
      return absl::Status(s.code(), absl::StrFormat("linux discovery: %s; %s", s.message(),
                                                    rejected.Summary()));
    }
  }
  const IsfProfile* profile = options.profile.get();
  if (!found && profile != nullptr) {
    ScanStats banner_stats;
    absl::Status s = LayoutFromProfile(memory, *profile, options, &kernel, &banner_stats);
    stats->frames_scanned += banner_stats.frames_scanned;
    stats->candidates += banner_stats.candidates;
    if (!s.ok()) {
      return absl::Status(s.code(), absl::StrFormat("linux discovery: no valid VMCOREINFO (%s%s%s), and %s",
                                                    note_result, options.scan_memory ? "; " : "",
                                                    options.scan_memory ? rejected.Summary() : "",
                                                    s.message()));
    }
    found = true;
  } else if (found && profile != nullptr) {
    if (absl::Status s = CheckProfile(memory, *profile, kernel); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("linux discovery: ", s.message()));
    }
  }
  if (!found) {
    return absl::NotFoundError(absl::StrFormat(
        "linux discovery: no valid VMCOREINFO: %s; %s%s. Not a Linux guest, or a kernel without "
        "CONFIG_CRASH_CORE (an ISF profile can locate the kernel without it)",
        note_result,
        options.scan_memory
            ? absl::StrFormat("scanned %u frames (%u absent) of physical memory for \"OSRELEASE=\": ",
                              stats->frames_scanned, stats->frames_absent)
            : "memory scan disabled",
        options.scan_memory ? rejected.Summary() : ""));
  }

  if (profile != nullptr) {
    // The profile's symbols and types, whatever memory has.
    kernel.symbols = profile->Symbols(kernel.kaslr_slide);
    kernel.symbols_source = absl::StrFormat("%s (%u symbols)", profile->source(), kernel.symbols.size());
    kernel.types = profile->Types();
    kernel.types_source = absl::StrFormat("%s, %u types", profile->source(), kernel.types->type_count());
    if (std::optional<uint64_t> banner = kernel.symbols.Address("linux_banner")) {
      absl::StatusOr<std::string> text = ReadKernelString(memory, kernel, *banner, kMaxBannerLength);
      if (text.ok()) kernel.banner = *std::move(text);
    }
    return kernel;
  }

  if (!options.load_symbols) {
    kernel.symbols_status = absl::FailedPreconditionError("symbols were not requested");
  } else if (absl::Status s = LoadSymbols(memory, &kernel); !s.ok()) {
    kernel.symbols_status = s;
  }
  if (kernel.symbols_status.ok()) {
    if (std::optional<uint64_t> banner = kernel.symbols.Address("linux_banner")) {
      absl::StatusOr<std::string> text = ReadKernelString(memory, kernel, *banner, kMaxBannerLength);
      if (text.ok()) kernel.banner = *std::move(text);
    }
  }
  if (!options.load_types) {
    kernel.types_status = absl::FailedPreconditionError("types were not requested");
  } else if (!kernel.symbols_status.ok()) {
    kernel.types_status = absl::FailedPreconditionError(
        "BTF is found through the kernel's symbols, which are missing");
  } else if (absl::Status s = LoadTypes(memory, &kernel); !s.ok()) {
    kernel.types_status = s;
  }
  return kernel;
}

}  // namespace vmi::os_linux
