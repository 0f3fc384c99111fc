// Text and JSON rendering for the vmi CLI: numbers in hex or decimal, an
// xxd-style hexdump, registers, page walks, IDT entries, and a terminal
// progress bar.
//
// Thread-safety: stateless functions; ProgressBar is thread-compatible.

#ifndef VMI_TOOLS_VMI_FORMAT_H_
#define VMI_TOOLS_VMI_FORMAT_H_

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "arch/amd64/idt.h"
#include "arch/amd64/paging.h"
#include "arch/amd64/registers.h"
#include "nlohmann/json.hpp"

namespace vmi::cli {

// "0x1a2", "0X1A2" or "418" (also "0o17", "0b101"); the whole string must parse.
absl::StatusOr<uint64_t> ParseNumber(absl::string_view text);

// xxd's layout: "<address>: 4865 6c6c ...  Hello..." with 16 bytes a line.
std::string HexDump(uint64_t address, absl::Span<const uint8_t> bytes);

nlohmann::json RegistersToJson(const amd64::Registers& regs);
// The registers as text, flags decoded by name.
std::string RegistersToText(const amd64::Registers& regs);

// A walk (possibly partial) with its outcome.
nlohmann::json WalkToJson(const amd64::Walk& walk, const absl::Status& status);
std::string WalkToText(const amd64::Walk& walk, const absl::Status& status);

nlohmann::json IdtToJson(const std::vector<amd64::IdtEntry>& entries);
std::string IdtToText(const std::vector<amd64::IdtEntry>& entries);

std::string Hex(uint64_t v);

// "12.3 MiB" etc.
std::string HumanBytes(double bytes);

// A one-line progress bar (bytes, rate, ETA) redrawn on stderr, only when
// stderr is a terminal; silent on a pipe.
class ProgressBar {
 public:
  explicit ProgressBar(uint64_t total, bool enabled);
  void Update(uint64_t done);
  void Finish();

 private:
  uint64_t total_;
  bool enabled_;
  absl::Time start_;
  absl::Time last_draw_;
};

}  // namespace vmi::cli

#endif  // VMI_TOOLS_VMI_FORMAT_H_
