#include "arch/amd64/idt.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "arch/amd64/bitfields.h"
#include "arch/amd64/registers.h"
#include "core/address_context.h"
#include "core/error.h"
#include "core/types.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmi::amd64 {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kIdtBase = 0xfffffe0000000000;

// Guest-virtual memory as a map of 4 KiB pages; reading an absent page is a
// translation fault, as from a real page walk.
class FakeMemory {
 public:
  void Write(uint64_t va, absl::Span<const uint8_t> bytes) {
    for (size_t i = 0; i < bytes.size(); ++i) {
      std::vector<uint8_t>& page = pages_[(va + i) & ~uint64_t{0xfff}];
      page.resize(4096);
      page[(va + i) & 0xfff] = bytes[i];
    }
  }

  absl::Status Read(Va va, absl::Span<uint8_t> out) {
    ++reads_;
    for (size_t i = 0; i < out.size(); ++i) {
      uint64_t a = va.value() + i;
      auto it = pages_.find(a & ~uint64_t{0xfff});
      if (it == pages_.end()) {
        return TranslationFaultError(AddressContext(Va(a), Pa(0x1000)), "PTE not present");
      }
      out[i] = it->second[a & 0xfff];
    }
    return absl::OkStatus();
  }

  int reads() const { return reads_; }

 private:
  std::map<uint64_t, std::vector<uint8_t>> pages_;
  int reads_ = 0;
};

static_assert(VirtualMemoryReader<FakeMemory>);

// A table whose gate i points at 0xffffffff81000000 + i * 0x10, with vector 3
// callable from user mode and vector 8 on IST 1; vector 15 is absent.
std::vector<uint8_t> MakeTable(size_t entries) {
  std::vector<uint8_t> table;
  for (size_t i = 0; i < entries; ++i) {
    IdtGate gate{.offset = 0xffffffff81000000 + i * 0x10,
                 .selector = 0x10,
                 .ist = static_cast<uint8_t>(i == 8 ? 1 : 0),
                 .type = IdtGate::kInterruptGate,
                 .dpl = static_cast<uint8_t>(i == 3 ? 3 : 0),
                 .present = i != 15};
    auto bytes = gate.Encode();
    table.insert(table.end(), bytes.begin(), bytes.end());
  }
  return table;
}

TEST(ParseIdtTest, DecodesEveryGateInOrder) {
  std::vector<uint8_t> table = MakeTable(32);
  absl::StatusOr<std::vector<IdtEntry>> entries = ParseInterruptDescriptorTable(table);
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), 32u);
  for (size_t i = 0; i < 32; ++i) {
    EXPECT_EQ((*entries)[i].vector, i);
    EXPECT_EQ((*entries)[i].gate.offset, 0xffffffff81000000 + i * 0x10);
    EXPECT_EQ((*entries)[i].gate.selector, 0x10);
  }
  EXPECT_EQ((*entries)[3].gate.dpl, 3);
  EXPECT_EQ((*entries)[8].gate.ist, 1);
  EXPECT_FALSE((*entries)[15].gate.present);
  EXPECT_TRUE((*entries)[14].gate.present);
}

TEST(ParseIdtTest, FullTable) {
  std::vector<uint8_t> table = MakeTable(256);
  absl::StatusOr<std::vector<IdtEntry>> entries = ParseInterruptDescriptorTable(table);
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), 256u);
  EXPECT_EQ(entries->back().vector, 255);
  EXPECT_EQ(entries->back().gate.offset, 0xffffffff81000000 + 255 * 0x10);
}

TEST(ParseIdtTest, RejectsBadSizes) {
  std::vector<uint8_t> table = MakeTable(257);
  for (size_t size : {size_t{0}, size_t{15}, size_t{17}, size_t{4095}, size_t{4112}}) {
    absl::StatusOr<std::vector<IdtEntry>> entries =
        ParseInterruptDescriptorTable(absl::MakeConstSpan(table.data(), size));
    EXPECT_EQ(entries.status().code(), absl::StatusCode::kInvalidArgument) << size;
    EXPECT_THAT(entries.status().message(), HasSubstr(absl::StrFormat("size %u bytes", size)));
  }
}

TEST(ReadIdtTest, ReadsThroughIdtr) {
  FakeMemory memory;
  memory.Write(kIdtBase, MakeTable(256));
  absl::StatusOr<std::vector<IdtEntry>> entries =
      ReadInterruptDescriptorTable(memory, DescriptorTable{kIdtBase, 0xfff});
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), 256u);
  EXPECT_EQ((*entries)[14].gate.offset, 0xffffffff810000e0u);
  EXPECT_EQ(memory.reads(), 1);
}

TEST(ReadIdtTest, ShortLimitReadsOnlyThatMuch) {
  FakeMemory memory;
  memory.Write(kIdtBase, MakeTable(2));  // only the first 32 bytes are meaningful
  absl::StatusOr<std::vector<IdtEntry>> entries =
      ReadInterruptDescriptorTable(memory, DescriptorTable{kIdtBase, 0x1f});
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[1].gate.offset, 0xffffffff81000010u);
}

TEST(ReadIdtTest, RejectsBadLimitWithoutReading) {
  FakeMemory memory;
  memory.Write(kIdtBase, MakeTable(256));
  for (uint16_t limit :
       {uint16_t{0}, uint16_t{0x10}, uint16_t{0xffe}, uint16_t{0x100f}, uint16_t{0xffff}}) {
    absl::StatusOr<std::vector<IdtEntry>> entries =
        ReadInterruptDescriptorTable(memory, DescriptorTable{kIdtBase, limit});
    EXPECT_EQ(entries.status().code(), absl::StatusCode::kInvalidArgument) << limit;
    EXPECT_THAT(entries.status().message(),
                HasSubstr(absl::StrFormat("read IDT(base=0xfffffe0000000000, limit=0x%x): "
                                          "IDT limit 0x%x is invalid",
                                          limit, limit)));
  }
  EXPECT_EQ(memory.reads(), 0);
}

TEST(ReadIdtTest, ReaderErrorIsAnnotatedAndKeepsTranslationFault) {
  FakeMemory memory;
  memory.Write(kIdtBase, MakeTable(256));  // second page of the table missing
  absl::StatusOr<std::vector<IdtEntry>> entries =
      ReadInterruptDescriptorTable(memory, DescriptorTable{kIdtBase + 0x800, 0xfff});
  ASSERT_FALSE(entries.ok());
  EXPECT_EQ(entries.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(entries.status().message(),
              HasSubstr("read IDT(base=0xfffffe0000000800, limit=0xfff): "));
  EXPECT_THAT(entries.status().message(), HasSubstr("PTE not present"));
  std::optional<AddressContext> fault = GetTranslationFault(entries.status());
  ASSERT_TRUE(fault.has_value());
  EXPECT_EQ(fault->va, Va(kIdtBase + 0x1000));
}

TEST(ReadIdtTest, OtherReaderErrorsPassThrough) {
  struct FailingReader {
    absl::Status Read(Va, absl::Span<uint8_t>) { return absl::UnavailableError("vm gone"); }
  } reader;
  absl::StatusOr<std::vector<IdtEntry>> entries =
      ReadInterruptDescriptorTable(reader, DescriptorTable{0x1000, 0xff});
  EXPECT_EQ(entries.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(entries.status().message(), "read IDT(base=0x1000, limit=0xff): vm gone");
}

}  // namespace
}  // namespace vmi::amd64
