#include "sim/internal/qemu_state.h"

#include <cstring>
#include <mutex>
#include <utility>

#include "absl/strings/str_format.h"
#include "arch/amd64/bitfields.h"

namespace vmi::sim::sim_internal {
namespace {

absl::Status UcError(const char* op, uc_err err) {
  return absl::InternalError(absl::StrFormat("%s: %s", op, uc_strerror(err)));
}

absl::StatusOr<QemuLayout> ComputeLayout() {
  uc_engine* uc = nullptr;
  if (uc_err e = uc_open(UC_ARCH_X86, UC_MODE_64, &uc); e != UC_ERR_OK) {
    return UcError("qemu layout probe: uc_open", e);
  }
  const uint64_t rax = 0x5a17c0de0badf00dull, rip = 0x0000123456789ab0ull;
  const uint64_t dr0 = 0x1111222233334444ull, dr1 = 0x5555666677778888ull;
  uc_x86_mmr gdtr{};
  gdtr.base = 0x00000fedcba98000ull;
  gdtr.limit = 0x1234;
  uc_reg_write(uc, UC_X86_REG_RAX, &rax);
  uc_reg_write(uc, UC_X86_REG_RIP, &rip);
  uc_reg_write(uc, UC_X86_REG_DR0, &dr0);
  uc_reg_write(uc, UC_X86_REG_DR1, &dr1);
  uc_reg_write(uc, UC_X86_REG_GDTR, &gdtr);
  uc_context* ctx = nullptr;
  uc_context_alloc(uc, &ctx);
  uc_context_save(uc, ctx);
  const size_t size = uc_context_size(uc);
  const auto* blob = reinterpret_cast<const uint8_t*>(ctx);
  size_t head = 0, dr = 0;
  for (size_t i = 0; i + 8 <= size && i < 256; ++i) {
    if (std::memcmp(blob + i, &rax, 8) == 0) {
      head = i;
      break;
    }
  }
  for (size_t i = 0; i + 16 <= size; ++i) {
    if (std::memcmp(blob + i, &dr0, 8) == 0 && std::memcmp(blob + i + 8, &dr1, 8) == 0) {
      dr = i;
      break;
    }
  }
  absl::Status status;
  QemuLayout layout{};
  if (head == 0 || dr == 0 || head + sizeof(QemuStateHead) > size) {
    status = absl::FailedPreconditionError(
        "qemu layout probe: CPU state layout of this Unicorn build not recognised");
  } else {
    QemuStateHead h;
    std::memcpy(&h, blob + head, sizeof(h));
    if (h.eip != rip || h.gdt.base != gdtr.base || h.gdt.limit != gdtr.limit) {
      status = absl::FailedPreconditionError(
          "qemu layout probe: CPU state head of this Unicorn build does not match QEMU 5");
    } else {
      // error_code, exception_is_int, exception_next_eip precede dr[8]; then
      // four breakpoint pointers and old_exception follow.
      layout.head_offset = head;
      layout.error_code = dr - 16;
      layout.breakpoints = dr + 8 * 8;
      layout.old_exception = dr + 8 * 8 + 4 * sizeof(void*);
      int32_t old_exception;
      std::memcpy(&old_exception, blob + layout.old_exception, 4);
      if (old_exception != -1) {
        status = absl::FailedPreconditionError(
            "qemu layout probe: exception-in-flight marker not where QEMU 5 keeps it");
      }
    }
  }
  uc_context_free(ctx);
  uc_close(uc);
  if (!status.ok()) return status;
  return layout;
}

}  // namespace

absl::StatusOr<QemuLayout> GetQemuLayout() {
  static const absl::StatusOr<QemuLayout>* layout = new absl::StatusOr<QemuLayout>(ComputeLayout());
  return *layout;
}

absl::Status TransferCpuState(uc_engine* from, uc_engine* to, uc_context* scratch) {
  absl::StatusOr<QemuLayout> layout = GetQemuLayout();
  if (!layout.ok()) return layout.status();
  if (uc_err e = uc_context_save(from, scratch); e != UC_ERR_OK) {
    return UcError("transfer_cpu_state: uc_context_save", e);
  }
  std::memset(reinterpret_cast<uint8_t*>(scratch) + layout->breakpoints, 0, 4 * sizeof(void*));
  if (uc_err e = uc_context_restore(to, scratch); e != UC_ERR_OK) {
    return UcError("transfer_cpu_state: uc_context_restore", e);
  }
  return absl::OkStatus();
}

absl::StatusOr<CpuContext> CpuContext::Save(uc_engine* uc) {
  absl::StatusOr<QemuLayout> layout = GetQemuLayout();
  if (!layout.ok()) return layout.status();
  uc_context* ctx = nullptr;
  if (uc_err e = uc_context_alloc(uc, &ctx); e != UC_ERR_OK) return UcError("uc_context_alloc", e);
  if (uc_err e = uc_context_save(uc, ctx); e != UC_ERR_OK) {
    uc_context_free(ctx);
    return UcError("uc_context_save", e);
  }
  return CpuContext(ctx, *layout);
}

CpuContext::CpuContext(uc_context* ctx, QemuLayout layout) : ctx_(ctx), layout_(layout) {
  std::memcpy(&head_, reinterpret_cast<const uint8_t*>(ctx_) + layout_.head_offset, sizeof(head_));
}

CpuContext::CpuContext(CpuContext&& other) noexcept
    : ctx_(std::exchange(other.ctx_, nullptr)), layout_(other.layout_), head_(other.head_) {}

CpuContext& CpuContext::operator=(CpuContext&& other) noexcept {
  if (this != &other) {
    if (ctx_ != nullptr) uc_context_free(ctx_);
    ctx_ = std::exchange(other.ctx_, nullptr);
    layout_ = other.layout_;
    head_ = other.head_;
  }
  return *this;
}

CpuContext::~CpuContext() {
  if (ctx_ != nullptr) uc_context_free(ctx_);
}

absl::Status CpuContext::Restore(uc_engine* uc) const {
  std::memcpy(reinterpret_cast<uint8_t*>(ctx_) + layout_.head_offset, &head_, sizeof(head_));
  if (uc_err e = uc_context_restore(uc, ctx_); e != UC_ERR_OK) {
    return UcError("uc_context_restore", e);
  }
  return absl::OkStatus();
}

absl::Status CpuContext::Resave(uc_engine* uc) {
  if (uc_err e = uc_context_save(uc, ctx_); e != UC_ERR_OK) return UcError("uc_context_save", e);
  std::memcpy(&head_, reinterpret_cast<const uint8_t*>(ctx_) + layout_.head_offset, sizeof(head_));
  return absl::OkStatus();
}

QemuStateHead& CpuContext::head() { return head_; }

int32_t CpuContext::error_code() const {
  int32_t v;
  std::memcpy(&v, reinterpret_cast<const uint8_t*>(ctx_) + layout_.error_code, 4);
  return v;
}

bool CpuContext::exception_is_int() const {
  int32_t v;
  std::memcpy(&v, reinterpret_cast<const uint8_t*>(ctx_) + layout_.error_code + 4, 4);
  return v != 0;
}

bool CpuContext::exception_in_flight() const {
  int32_t v;
  std::memcpy(&v, reinterpret_cast<const uint8_t*>(ctx_) + layout_.old_exception, 4);
  return v != -1;
}

void CpuContext::clear_exception_in_flight() {
  const int32_t none = -1;
  std::memcpy(reinterpret_cast<uint8_t*>(ctx_) + layout_.old_exception, &none, 4);
}

void CpuContext::LoadSegment(int seg, uint16_t selector, uint64_t base, uint32_t limit,
                             uint32_t flags) {
  QemuStateHead& h = head();
  h.segs[seg] = QemuSegment{selector, 0, base, limit, flags};
  const amd64::SegmentAccess access = amd64::SegmentAccess::FromDescriptorFlags(flags);
  if (seg == kSegCs) {
    h.hflags &= ~(kHfCs32 | kHfCs64);
    if (access.db()) h.hflags |= kHfCs32;
    if ((h.hflags & kHfLma) && access.l()) h.hflags |= kHfCs32 | kHfSs32 | kHfCs64;
  } else if (seg == kSegSs) {
    const uint32_t dpl = access.dpl();
    h.hflags = (h.hflags & ~kHfCplMask) | dpl;
    if (!(h.hflags & kHfCs64)) {
      h.hflags &= ~kHfSs32;
      if (access.db()) h.hflags |= kHfSs32;
    }
  }
}

}  // namespace vmi::sim::sim_internal
