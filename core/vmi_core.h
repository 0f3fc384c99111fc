// VmiCore<Driver>: the driver plus its caches, and the access API every VMI
// tool lives on: physical and virtual reads and writes of any size,
// integers, addresses, strings, structs; translation; and pass-throughs to
// every other capability, each present only when the driver has it.
//
// Hot path: a virtual read is one probe of the software TLB ((root, virtual
// page) -> host address of a live page) and the copy. On a TLB miss: V2P
// cache -> page cache -> copy; a live page enters the TLB on the first read
// that finds it in both caches (so from its second read on).
// A read crossing pages translates once per 4 KiB page, never per byte.
//
// Faults: translation failures come back as compact values (FaultOr<T>,
// FaultStatus; core/error.h): no message is formatted and nothing allocated
// until someone asks for the status, so a failed probe costs about what a
// hit does. Failed walks (not-present or malformed entries) are cached in
// the V2P cache as negative entries under the same rules as translations
// (cache_translation_faults, on by default); non-canonical addresses need no
// walk and are not cached.
//
// Coherence: a write through VmiCore never leaves a cache serving stale data.
// The written frame's page-cache entry is replaced by the page the driver
// returns after the write (an owned copy would otherwise go stale), and every
// V2P entry (positive or negative) whose walk read that frame as a page table
// is dropped. The TLB holds nothing the two caches do not: every entry
// leaving either cache (eviction, flush of all / a root / an entry, write
// invalidation, disabling, resizing, a paging-mode change) drops the TLB
// entries that depended on it, and pages a driver hands out as owned copies
// are never entered. Writes the *guest* makes are invisible to VmiCore: live
// (zero-copy) pages stay coherent by construction, owned copies and V2P
// entries (negative ones included, and so the TLB) do not, which is why the
// event loop flushes the V2P cache per event by default, and why a driver
// that returns owned copies should be used with the page cache flushed per
// event too (see VmiEventLoopOptions).
//
// Partial failure: a multi-page read or write first translates every page; a
// translation fault reports the exact (va, root) of the page that failed and
// nothing is written. If the driver fails part-way through a multi-page
// write, the pages already written are restored from copies taken before.
//
// Thread model: thread-compatible. One VmiCore is used by one thread at a
// time (even reads update cache recency and counters). Allowing concurrent
// readers would take: per-thread (or sharded, lock-striped) caches, atomic
// relaxed counters and reference bits, a driver whose ReadPage is itself
// thread-safe, and writes/flushes under an exclusive lock.

#ifndef VMI_CORE_VMI_CORE_H_
#define VMI_CORE_VMI_CORE_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "core/address_context.h"
#include "core/architecture.h"
#include "core/cache/page_cache.h"
#include "core/cache/soft_tlb.h"
#include "core/cache/v2p_cache.h"
#include "core/driver.h"
#include "core/error.h"
#include "core/mapped_page.h"
#include "core/types.h"
#include "core/utf.h"

namespace vmi {

struct VmiCoreOptions {
  size_t page_cache_capacity = PageCache::kDefaultCapacity;  // pages
  size_t v2p_cache_capacity = V2pCache::kDefaultCapacity;    // 4 KiB translations
  bool page_cache_enabled = true;
  bool v2p_cache_enabled = true;
  size_t tlb_entries = SoftTlb::kDefaultEntries;  // 0: no TLB
  bool tlb_enabled = true;
  // Keep failed walks in the V2P cache as negative entries.
  bool cache_translation_faults = true;
};

template <VmiDriver Driver>
class VmiCore {
 public:
  using Arch = typename Driver::Architecture;
  using PagingMode = typename Arch::PagingMode;
  using Registers = typename Arch::Registers;
  static constexpr uint64_t kPageSize = Arch::kPageSize;

  static_assert(kPageSize == (uint64_t{1} << SoftTlb::kPageShift),
                "the V2P cache and the TLB work in 4 KiB pages");

  explicit VmiCore(Driver driver, VmiCoreOptions options = {})
      : driver_(std::move(driver)),
        tlb_(options.tlb_entries),
        page_cache_(options.page_cache_capacity),
        v2p_cache_(options.v2p_cache_capacity),
        cache_translation_faults_(options.cache_translation_faults) {
    page_cache_.AttachTlb(&tlb_);
    v2p_cache_.AttachTlb(&tlb_);
    page_cache_.SetEnabled(options.page_cache_enabled);
    v2p_cache_.SetEnabled(options.v2p_cache_enabled);
    tlb_.SetEnabled(options.tlb_enabled);
  }

  VmiCore(const VmiCore&) = delete;
  VmiCore& operator=(const VmiCore&) = delete;

  Driver& driver() { return driver_; }
  const Driver& driver() const { return driver_; }
  absl::StatusOr<VmiInfo> Info() const { return driver_.Info(); }

  // The paging mode used for virtual accesses (x86: from CR0/CR4/EFER; the
  // default is 4-level). Changing it flushes the V2P cache.
  PagingMode paging_mode() const { return paging_mode_; }
  void SetPagingMode(PagingMode mode) {
    if (!(mode == paging_mode_)) {
      paging_mode_ = mode;
      v2p_cache_.Clear();
    }
  }

  // ---- Caches ----

  PageCache& page_cache() { return page_cache_; }
  V2pCache& v2p_cache() { return v2p_cache_; }
  // The TLB follows the two caches by itself; this is for its statistics and
  // for SetEnabled.
  SoftTlb& tlb() { return tlb_; }
  bool cache_translation_faults() const { return cache_translation_faults_; }
  // Turning it off also drops the negative entries cached so far.
  void SetCacheTranslationFaults(bool on) {
    cache_translation_faults_ = on;
    if (!on) v2p_cache_.EraseNegative();
  }
  void FlushPageCache() { page_cache_.Clear(); }
  void FlushPageCacheEntry(Gfn gfn) { page_cache_.Erase(gfn); }
  void FlushV2pCache() { v2p_cache_.Clear(); }
  size_t FlushV2pRoot(Pa root) { return v2p_cache_.EraseRoot(root); }
  bool FlushV2pEntry(AddressContext ctx) { return v2p_cache_.Erase(ctx.root, ctx.va); }

  // ---- Pages and translation (VmiRead) ----

  // The page through the page cache.
  absl::StatusOr<MappedPage> ReadPage(Gfn gfn)
    requires VmiRead<Driver>
  {
    if (const MappedPage* page = page_cache_.Find(gfn)) return *page;
    VMI_ASSIGN_OR_RETURN(const MappedPage* page, FetchPage(gfn));
    return *page;
  }

  // va -> pa through the V2P cache. A failure is a compact fault (see the
  // file comment); a cached failure is served like a cached translation.
  [[gnu::always_inline]] FaultOr<Pa> Translate(AddressContext ctx)
    requires VmiRead<Driver>
  {
    if (v2p_cache_.enabled()) {
      if (const V2pEntry* e = v2p_cache_.Find(ctx.root, ctx.va)) {
        if (!e->negative()) [[likely]] return e->Apply(ctx.va);
        return CachedFault(*e, ctx);
      }
    }
    return TranslateSlow(ctx);
  }

  // The full translation (page size, permissions, tables), always walked
  // (table pages through the page cache); the result fills the V2P cache.
  FaultOr<PageTranslation> TranslatePage(AddressContext ctx)
    requires VmiRead<Driver>
  {
    PageTranslation t;
    VMI_FAULT_RETURN_IF_ERROR(WalkAndCache(ctx, t));
    return t;
  }

  // The per-level walk, always walked (the V2P cache is neither read nor
  // filled); table pages come through the page cache.
  absl::StatusOr<typename Arch::Walk> Walk(AddressContext ctx)
    requires VmiRead<Driver>
  {
    CachedReader reader{this};
    return Arch::WalkPage(reader, ctx, paging_mode_);
  }

  // The guest-physical address an access context reaches.
  FaultOr<Pa> TranslateAccess(const AccessContext& ctx)
    requires VmiRead<Driver>
  {
    if (ctx.is_physical()) return Pa(ctx.address);
    return Translate(AddressContext(Va(ctx.address), ctx.root()));
  }

  // ---- Reads (VmiRead) ----

  // Reads (and the string and struct reads below) return FaultStatus /
  // FaultOr<T>: use them as absl::Status / absl::StatusOr<T>, to which they
  // convert; a translation fault stays compact until its status is asked for.
  FaultStatus Read(const AccessContext& ctx, absl::Span<uint8_t> out)
    requires VmiRead<Driver>
  {
    const uint64_t first_offset = ctx.address & (kPageSize - 1);
    if (first_offset + out.size() <= kPageSize) {  // the common single-page case
      VMI_FAULT_ASSIGN_OR_RETURN(const uint8_t* src, PageBytes(ctx, ctx.address));
      std::memcpy(out.data(), src, out.size());
      return FaultStatus();
    }
    // Page by page: one translation and one page lookup per 4 KiB. On error
    // the contents of `out` are unspecified.
    size_t done = 0;
    while (done < out.size()) {
      const uint64_t address = ctx.address + done;
      const size_t chunk = std::min<uint64_t>(out.size() - done, kPageSize - (address & (kPageSize - 1)));
      VMI_FAULT_ASSIGN_OR_RETURN(const uint8_t* src, PageBytes(ctx, address));
      std::memcpy(out.data() + done, src, chunk);
      done += chunk;
    }
    return FaultStatus();
  }

  // A virtual read within one page that hits the TLB is inlined into the
  // caller: one probe and the copy. Everything else is out of line. The
  // AddressContext overloads are the virtual reads' own: the address and
  // root stay in registers, and the out-of-line path takes them by value (an
  // AccessContext's variant had to be stored for the out-of-line path to take
  // it by reference, and the probe then waited on reloading the root).
  template <typename T>
    requires VmiRead<Driver> && std::is_trivially_copyable_v<T>
  [[gnu::always_inline]] FaultOr<T> ReadStruct(const AddressContext& ctx) {
    if (FitsInPage<T>(ctx.va.value())) [[likely]] {
      if (const uint8_t* page = tlb_.Find(ctx.root, ctx.va)) [[likely]] {
        T value;
        std::memcpy(&value, page + (ctx.va.value() & (kPageSize - 1)), sizeof(T));
        return value;
      }
    }
    return ReadVirtualSlow<T>(ctx);
  }
  template <typename T>
    requires VmiRead<Driver> && std::is_trivially_copyable_v<T>
  [[gnu::always_inline]] FaultOr<T> ReadStruct(const AccessContext& ctx) {
    if (const Paging* paging = std::get_if<Paging>(&ctx.mechanism)) [[likely]] {
      return ReadStruct<T>(AddressContext(Va(ctx.address), paging->root));
    }
    return ReadPhysicalSlow<T>(ctx);
  }
  [[gnu::always_inline]] FaultOr<uint8_t> ReadU8(const AddressContext& ctx)
    requires VmiRead<Driver>
  {
    return ReadStruct<uint8_t>(ctx);
  }
  [[gnu::always_inline]] FaultOr<uint8_t> ReadU8(const AccessContext& ctx)
    requires VmiRead<Driver>
  {
    return ReadStruct<uint8_t>(ctx);
  }
  [[gnu::always_inline]] FaultOr<uint16_t> ReadU16(const AddressContext& ctx)
    requires VmiRead<Driver>
  {
    return ReadStruct<uint16_t>(ctx);
  }
  [[gnu::always_inline]] FaultOr<uint16_t> ReadU16(const AccessContext& ctx)
    requires VmiRead<Driver>
  {
    return ReadStruct<uint16_t>(ctx);
  }
  [[gnu::always_inline]] FaultOr<uint32_t> ReadU32(const AddressContext& ctx)
    requires VmiRead<Driver>
  {
    return ReadStruct<uint32_t>(ctx);
  }
  [[gnu::always_inline]] FaultOr<uint32_t> ReadU32(const AccessContext& ctx)
    requires VmiRead<Driver>
  {
    return ReadStruct<uint32_t>(ctx);
  }
  [[gnu::always_inline]] FaultOr<uint64_t> ReadU64(const AddressContext& ctx)
    requires VmiRead<Driver>
  {
    return ReadStruct<uint64_t>(ctx);
  }
  [[gnu::always_inline]] FaultOr<uint64_t> ReadU64(const AccessContext& ctx)
    requires VmiRead<Driver>
  {
    return ReadStruct<uint64_t>(ctx);
  }

  // An address of `width` bytes (4 or 8), zero-extended.
  FaultOr<uint64_t> ReadAddress(const AccessContext& ctx, int width)
    requires VmiRead<Driver>
  {
    if (width == 8) return ReadU64(ctx);
    if (width == 4) return ReadU32(ctx);
    return absl::InvalidArgumentError(
        absl::StrFormat("read_address(%s): width %d is not 4 or 8", ctx, width));
  }
  FaultOr<Va> ReadVa(const AccessContext& ctx, int width = 8) requires VmiRead<Driver> {
    VMI_FAULT_ASSIGN_OR_RETURN(uint64_t v, ReadAddress(ctx, width));
    return Va(v);
  }

  // A NUL-terminated byte string of at most `limit` bytes (the terminator
  // not counted); stops at the limit without error. Reads page by page, so a
  // short string near an unmapped page does not fault.
  FaultOr<std::string> ReadString(const AccessContext& ctx, size_t limit = 4096)
    requires VmiRead<Driver>
  {
    std::string out;
    uint64_t address = ctx.address;
    while (out.size() < limit) {
      VMI_FAULT_ASSIGN_OR_RETURN(const uint8_t* src, PageBytes(ctx, address));
      const size_t avail = std::min<uint64_t>(kPageSize - (address & (kPageSize - 1)), limit - out.size());
      const void* nul = std::memchr(src, 0, avail);
      const size_t n = nul ? static_cast<const uint8_t*>(nul) - src : avail;
      out.append(reinterpret_cast<const char*>(src), n);
      if (nul) break;
      address += n;
    }
    return out;
  }

  // A NUL-terminated UTF-16LE string of at most `limit` code units, as UTF-8.
  // Unpaired surrogates become U+FFFD.
  FaultOr<std::string> ReadWString(const AccessContext& ctx, size_t limit = 4096)
    requires VmiRead<Driver>
  {
    std::u16string units;
    uint64_t address = ctx.address;
    while (units.size() < limit) {
      uint8_t pair[2];
      // A code unit may straddle a page boundary only at odd addresses.
      VMI_FAULT_RETURN_IF_ERROR(Read(AccessContext(address, ctx.mechanism), absl::MakeSpan(pair)));
      const char16_t unit = static_cast<char16_t>(pair[0] | (pair[1] << 8));
      if (unit == 0) break;
      units.push_back(unit);
      address += 2;
    }
    return Utf16ToUtf8(units);
  }

  // ---- Writes (VmiWrite) ----

  absl::Status Write(const AccessContext& ctx, absl::Span<const uint8_t> data)
    requires VmiRead<Driver> && VmiWrite<Driver>
  {
    struct Piece {
      Gfn gfn;
      uint64_t offset;
      size_t length;
    };
    // Translate every page before writing anything.
    absl::InlinedVector<Piece, 2> pieces;
    for (size_t done = 0; done < data.size();) {
      const uint64_t address = ctx.address + done;
      const size_t chunk = std::min<uint64_t>(data.size() - done, kPageSize - (address & (kPageSize - 1)));
      Pa pa;
      if (ctx.is_physical()) {
        pa = Pa(address);
      } else {
        VMI_ASSIGN_OR_RETURN(pa, Translate(AddressContext(Va(address), ctx.root())));
      }
      pieces.push_back({Arch::GfnFromPa(pa), Arch::PageOffset(pa.value()), chunk});
      done += chunk;
    }
    // Keep the old bytes of each piece so a multi-page write that fails
    // part-way can be undone.
    std::vector<std::vector<uint8_t>> saved;
    if (pieces.size() > 1) {
      for (const Piece& p : pieces) {
        VMI_ASSIGN_OR_RETURN(MappedPage page, driver_.ReadPage(p.gfn));
        saved.emplace_back(page.data() + p.offset, page.data() + p.offset + p.length);
      }
    }
    size_t done = 0;
    for (size_t i = 0; i < pieces.size(); ++i) {
      const Piece& p = pieces[i];
      absl::Status s = WritePiece(p.gfn, p.offset, data.subspan(done, p.length));
      if (!s.ok()) {
        for (size_t j = 0; j < i; ++j) {
          WritePiece(pieces[j].gfn, pieces[j].offset, saved[j]).IgnoreError();
        }
        return AnnotateStatus(s, absl::StrFormat("write(%s, len=%u): page %u of %u", ctx,
                                                 data.size(), i + 1, pieces.size()));
      }
      done += p.length;
    }
    return absl::OkStatus();
  }

  template <typename T>
    requires VmiRead<Driver> && VmiWrite<Driver> && std::is_trivially_copyable_v<T>
  absl::Status WriteStruct(const AccessContext& ctx, const T& value) {
    return Write(ctx, absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(&value), sizeof(T)));
  }
  absl::Status WriteU8(const AccessContext& ctx, uint8_t v) requires VmiMemory<Driver> {
    return WriteStruct(ctx, v);
  }
  absl::Status WriteU16(const AccessContext& ctx, uint16_t v) requires VmiMemory<Driver> {
    return WriteStruct(ctx, v);
  }
  absl::Status WriteU32(const AccessContext& ctx, uint32_t v) requires VmiMemory<Driver> {
    return WriteStruct(ctx, v);
  }
  absl::Status WriteU64(const AccessContext& ctx, uint64_t v) requires VmiMemory<Driver> {
    return WriteStruct(ctx, v);
  }
  absl::Status WriteAddress(const AccessContext& ctx, int width, uint64_t v)
    requires VmiMemory<Driver>
  {
    if (width == 8) return WriteU64(ctx, v);
    if (width == 4) return WriteU32(ctx, static_cast<uint32_t>(v));
    return absl::InvalidArgumentError(
        absl::StrFormat("write_address(%s): width %d is not 4 or 8", ctx, width));
  }

  // ---- Protection ----

  absl::StatusOr<MemoryAccess> GetMemoryAccess(Gfn gfn, View view)
    requires VmiQueryProtection<Driver>
  {
    return driver_.GetMemoryAccess(gfn, view);
  }
  absl::StatusOr<std::pair<MemoryAccess, MemoryAccessOptions>> GetMemoryAccessWithOptions(
      Gfn gfn, View view)
    requires VmiQueryProtection<Driver>
  {
    return driver_.GetMemoryAccessWithOptions(gfn, view);
  }
  absl::Status SetMemoryAccess(Gfn gfn, View view, MemoryAccess access)
    requires VmiSetProtection<Driver>
  {
    return driver_.SetMemoryAccess(gfn, view, access);
  }
  absl::Status SetMemoryAccessWithOptions(Gfn gfn, View view, MemoryAccess access,
                                          MemoryAccessOptions options)
    requires VmiSetProtection<Driver>
  {
    return driver_.SetMemoryAccessWithOptions(gfn, view, access, options);
  }

  // ---- Registers ----

  absl::StatusOr<Registers> GetRegisters(VcpuId vcpu) requires VmiQueryRegisters<Driver> {
    return driver_.Registers(vcpu);
  }
  absl::Status SetRegisters(VcpuId vcpu, const Registers& regs) requires VmiSetRegisters<Driver> {
    return driver_.SetRegisters(vcpu, regs);
  }

  // ---- Views ----

  View DefaultView() requires VmiViewControl<Driver> { return driver_.DefaultView(); }
  absl::StatusOr<View> CreateView(MemoryAccess default_access) requires VmiViewControl<Driver> {
    return driver_.CreateView(default_access);
  }
  absl::Status DestroyView(View view) requires VmiViewControl<Driver> {
    return driver_.DestroyView(view);
  }
  absl::Status SwitchToView(View view) requires VmiViewControl<Driver> {
    return driver_.SwitchToView(view);
  }
  absl::Status ChangeViewGfn(View view, Gfn old_gfn, Gfn new_gfn) requires VmiViewControl<Driver> {
    return driver_.ChangeViewGfn(view, old_gfn, new_gfn);
  }
  absl::Status ResetViewGfn(View view, Gfn gfn) requires VmiViewControl<Driver> {
    return driver_.ResetViewGfn(view, gfn);
  }

  // ---- Events ----

  absl::Status MonitorEnable(const typename Arch::EventMonitor& m) requires VmiEventControl<Driver> {
    return driver_.MonitorEnable(m);
  }
  absl::Status MonitorDisable(const typename Arch::EventMonitor& m) requires VmiEventControl<Driver> {
    return driver_.MonitorDisable(m);
  }
  size_t EventsPending() requires VmiEventControl<Driver> { return driver_.EventsPending(); }
  absl::Duration EventProcessingOverhead() requires VmiEventControl<Driver> {
    return driver_.EventProcessingOverhead();
  }
  template <typename Handler>
    requires VmiEventControl<Driver> && EventHandlerFn<Handler, Arch>
  absl::Status WaitForEvent(absl::Duration timeout, Handler&& handler) {
    return driver_.WaitForEvent(timeout, std::forward<Handler>(handler));
  }

  // ---- VM control ----

  absl::Status Pause() requires VmiVmControl<Driver> { return driver_.Pause(); }
  absl::Status Resume() requires VmiVmControl<Driver> { return driver_.Resume(); }
  absl::StatusOr<Gfn> AllocateGfn() requires VmiVmControl<Driver> { return driver_.AllocateGfn(); }
  absl::Status AllocateGfnAt(Gfn gfn) requires VmiVmControl<Driver> {
    return driver_.AllocateGfnAt(gfn);
  }
  // Also drops every cached copy of the frame and translations through it.
  absl::Status FreeGfn(Gfn gfn) requires VmiVmControl<Driver> {
    VMI_RETURN_IF_ERROR(driver_.FreeGfn(gfn));
    page_cache_.Erase(gfn);
    v2p_cache_.InvalidateTableGfn(gfn);
    return absl::OkStatus();
  }
  absl::Status InjectInterrupt(VcpuId vcpu, const typename Arch::Interrupt& interrupt)
    requires VmiVmControl<Driver>
  {
    return driver_.InjectInterrupt(vcpu, interrupt);
  }
  absl::Status ResetState() requires VmiVmControl<Driver> { return driver_.ResetState(); }

  // Pauses the VM for the guard's lifetime. Movable, not copyable; resumes
  // on destruction (errors from that resume are dropped: call Release() to
  // resume explicitly and see them).
  class PauseGuard {
   public:
    PauseGuard(PauseGuard&& other) noexcept : core_(std::exchange(other.core_, nullptr)) {}
    PauseGuard& operator=(PauseGuard&& other) noexcept {
      if (this != &other) {
        Release().IgnoreError();
        core_ = std::exchange(other.core_, nullptr);
      }
      return *this;
    }
    PauseGuard(const PauseGuard&) = delete;
    PauseGuard& operator=(const PauseGuard&) = delete;
    ~PauseGuard() { Release().IgnoreError(); }

    absl::Status Release() {
      if (core_ == nullptr) return absl::OkStatus();
      return std::exchange(core_, nullptr)->Resume();
    }
    bool active() const { return core_ != nullptr; }

   private:
    friend class VmiCore;
    explicit PauseGuard(VmiCore* core) : core_(core) {}
    VmiCore* core_;
  };

  absl::StatusOr<PauseGuard> PauseScoped() requires VmiVmControl<Driver> {
    VMI_RETURN_IF_ERROR(driver_.Pause());
    return PauseGuard(this);
  }

 private:
  // Reads table pages for the walk through the page cache. The span stays
  // valid until the next ReadPage through this reader (the walk copies each
  // entry out at once).
  struct CachedReader {
    explicit CachedReader(VmiCore* c) : core(c) {}
    VmiCore* core;
    MappedPage hold;  // keeps an uncached page alive
    absl::StatusOr<absl::Span<const uint8_t>> ReadPage(Gfn gfn) {
      if (const MappedPage* page = core->page_cache_.Find(gfn)) return page->bytes();
      auto fetched = core->FetchPage(gfn);
      if (!fetched.ok()) return fetched.status();
      if (!core->page_cache_.enabled() || core->page_cache_.capacity() == 0) {
        hold = **fetched;
        return hold.bytes();
      }
      return (*fetched)->bytes();
    }
  };

  // Miss path: the driver's page, stored in the page cache. A failed read is
  // never cached. The pointer is valid until the next cache mutation.
  absl::StatusOr<const MappedPage*> FetchPage(Gfn gfn) {
    absl::StatusOr<MappedPage> page = driver_.ReadPage(gfn);
    if (!page.ok()) return page.status();
    if (!page->valid() || page->size() < kPageSize) {
      return absl::InternalError(
          absl::StrFormat("read_page(gfn=%s): driver returned %u bytes", gfn, page->size()));
    }
    return &page_cache_.Insert(gfn, *std::move(page));
  }

  bool PageCacheStores() const { return page_cache_.enabled() && page_cache_.capacity() != 0; }

  // Walks `ctx` and caches the outcome: a translation, or a failed walk as a
  // negative entry (not a bad address: that needs no walk; not a reader
  // error: that may be transient).
  FaultStatus WalkAndCache(AddressContext ctx, PageTranslation& t) {
    CachedReader reader{this};
    FaultStatus walked = Arch::TranslateInto(reader, ctx, paging_mode_, t);
    if (!v2p_cache_.enabled()) return walked;
    if (walked.ok()) {
      v2p_cache_.Insert(ctx.root, ctx.va, t);
    } else if (const TranslationFault* f = walked.fault();
               f != nullptr && cache_translation_faults_ &&
               f->cause.kind != FaultCause::Kind::kBadAddress) {
      v2p_cache_.InsertFault(ctx.root, ctx.va, t, f->cause);
    }
    return walked;
  }

  [[gnu::noinline]] static FaultOr<Pa> CachedFault(const V2pEntry& e, AddressContext ctx) {
    return e.FaultAt(ctx);
  }

  [[gnu::noinline]] FaultOr<Pa> TranslateSlow(AddressContext ctx,
                                              PagePermissions* permissions = nullptr) {
    PageTranslation t;
    VMI_FAULT_RETURN_IF_ERROR(WalkAndCache(ctx, t));
    if (permissions != nullptr) *permissions = t.permissions;
    return t.pa;
  }

  // Whether a T at `address` lies within one page.
  template <typename T>
  static constexpr bool FitsInPage(uint64_t address) {
    return sizeof(T) <= kPageSize && (address & (kPageSize - 1)) <= kPageSize - sizeof(T);
  }

  // ReadStruct of a virtual address past the inlined TLB probe.
  template <typename T>
  [[gnu::noinline]] FaultOr<T> ReadVirtualSlow(AddressContext ctx) {
    T value;
    if (FitsInPage<T>(ctx.va.value())) {
      VMI_FAULT_ASSIGN_OR_RETURN(const uint8_t* src, PageBytesAfterTlbMiss(ctx));
      std::memcpy(&value, src, sizeof(T));
      return value;
    }
    VMI_FAULT_RETURN_IF_ERROR(
        Read(AccessContext(ctx), absl::MakeSpan(reinterpret_cast<uint8_t*>(&value), sizeof(T))));
    return value;
  }

  // ReadStruct of a physical address.
  template <typename T>
  [[gnu::noinline]] FaultOr<T> ReadPhysicalSlow(const AccessContext& ctx) {
    T value;
    if (FitsInPage<T>(ctx.address)) {
      VMI_FAULT_ASSIGN_OR_RETURN(const uint8_t* src, PageBytes(ctx, ctx.address));
      std::memcpy(&value, src, sizeof(T));
      return value;
    }
    VMI_FAULT_RETURN_IF_ERROR(
        Read(ctx, absl::MakeSpan(reinterpret_cast<uint8_t*>(&value), sizeof(T))));
    return value;
  }

  // Pointer to the byte at `address` (in ctx's address space) inside its
  // page; valid until the next cache mutation. The hit paths (a TLB hit for
  // a virtual address, a page hit for a physical one) are forced inline;
  // each miss goes to an out-of-line function that does not look the same
  // cache up again (hits and misses are counted once).
  [[gnu::always_inline]] FaultOr<const uint8_t*> PageBytes(const AccessContext& ctx,
                                                          uint64_t address) {
    const uint64_t offset = address & (kPageSize - 1);
    if (const Paging* paging = std::get_if<Paging>(&ctx.mechanism)) {
      if (const uint8_t* page = tlb_.Find(paging->root, Va(address))) return page + offset;
      return PageBytesAfterTlbMiss(AddressContext(Va(address), paging->root));
    }
    if (const MappedPage* page = page_cache_.Find(Arch::GfnFromPa(Pa(address)))) {
      return page->data() + offset;
    }
    return PageBytesAfterPageMiss(Pa(address));
  }

  // V2P cache (or walk), then page cache (or driver). A live page enters the
  // TLB when both caches already held what this read needed: a page read
  // once is not worth the TLB's bookkeeping, and caches that thrash (every
  // read a miss in one of them) never pay for it.
  [[gnu::noinline]] FaultOr<const uint8_t*> PageBytesAfterTlbMiss(AddressContext actx) {
    Pa pa;
    PagePermissions permissions;
    const V2pEntry* e = v2p_cache_.enabled() ? v2p_cache_.Find(actx.root, actx.va) : nullptr;
    if (e != nullptr) {
      if (e->negative()) return e->FaultAt(actx);
      pa = e->Apply(actx.va);
      permissions = e->permissions;
    } else {
      VMI_FAULT_ASSIGN_OR_RETURN(pa, TranslateSlow(actx, &permissions));
    }
    const Gfn gfn = Arch::GfnFromPa(pa);
    const MappedPage* page = page_cache_.Find(gfn);
    if (page == nullptr) {
      if (!PageCacheStores()) return PageBytesAfterPageMiss(pa);
      VMI_FAULT_ASSIGN_OR_RETURN(page, FetchPage(gfn));
    } else if (e != nullptr && page->is_live()) {
      tlb_.Insert(actx.root, actx.va, gfn, page->data(), permissions);
    }
    return page->data() + Arch::PageOffset(pa.value());
  }

  [[gnu::noinline]] FaultOr<const uint8_t*> PageBytesAfterPageMiss(Pa pa) {
    const Gfn gfn = Arch::GfnFromPa(pa);
    const uint64_t offset = Arch::PageOffset(pa.value());
    if (!PageCacheStores()) {
      VMI_FAULT_ASSIGN_OR_RETURN(uncached_, driver_.ReadPage(gfn));
      return uncached_.data() + offset;
    }
    VMI_FAULT_ASSIGN_OR_RETURN(const MappedPage* page, FetchPage(gfn));
    return page->data() + offset;
  }

  absl::Status WritePiece(Gfn gfn, uint64_t offset, absl::Span<const uint8_t> bytes)
    requires VmiWrite<Driver>
  {
    absl::StatusOr<MappedPage> after = driver_.WritePage(gfn, offset, bytes);
    // Whatever happened, no cached copy of this frame or translation through
    // it may survive unchecked.
    v2p_cache_.InvalidateTableGfn(gfn);
    if (!after.ok()) {
      page_cache_.Erase(gfn);
      return after.status();
    }
    if (page_cache_.Contains(gfn)) {
      if (after->valid()) {
        page_cache_.Insert(gfn, *std::move(after));
      } else {
        page_cache_.Erase(gfn);
      }
    }
    return absl::OkStatus();
  }

  Driver driver_;
  SoftTlb tlb_;  // declared first: both caches report to it until they are gone
  PageCache page_cache_;
  V2pCache v2p_cache_;
  bool cache_translation_faults_;
  PagingMode paging_mode_ = Arch::kDefaultPagingMode;
  MappedPage uncached_;  // holds the page of an uncached read until the next one
};

}  // namespace vmi

#endif  // VMI_CORE_VMI_CORE_H_
