// View restrictions hold on every guest access, TLB hit or not, and page
// walks through table frames protected with or without
// MemoryAccessOptions::IgnorePageWalkUpdates: real guest code, exact exits.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sim/machine.h"
#include "sim/programs.h"
#include "sim/testing/test_machine.h"

namespace vmi::sim {
namespace {

using ::testing::ElementsAre;
using testing::Guest;
using testing::NewMachine;
using testing::ReadQ;
using testing::Sym;

uint64_t SymPa(const StandardGuest& g, const char* name) {
  return g.program.SymbolPa(name)->value();
}

void SetRdi(Machine& m, uint64_t rdi) {
  amd64::GpRegisters r = m.GetRegisters(VcpuId(0))->gp();
  r.rdi = rdi;
  ASSERT_TRUE(m.SetGpRegisters(VcpuId(0), r).ok());
}

// Runs to halt answering every exit with `respond`; returns the exits.
template <typename F>
std::vector<std::string> Trace(Machine& m, F respond, int max_exits = 50) {
  std::vector<std::string> trace;
  for (int i = 0; i <= max_exits; ++i) {
    absl::StatusOr<RunResult> r = m.Run(10'000'000);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok() || r->status != RunStatus::kExit) return trace;
    trace.push_back(r->exit->ToString());
    absl::Status s = m.Respond(respond(*r->exit));
    EXPECT_TRUE(s.ok()) << s;
  }
  ADD_FAILURE() << "too many exits";
  return trace;
}

Response Emulate(const Exit&) { return {EventAction::kEmulate, std::nullopt, std::nullopt}; }

std::string Access(View view, uint64_t rip, uint64_t gpa, uint64_t gla, const char* access) {
  return absl::StrFormat("vcpu=0 view=%s memory_access rip=0x%x gpa=0x%x gla=0x%x access=%s",
                         view, rip, gpa, gla, access);
}

// The guest reads the code page it executes from: every read is a violation
// in a view where that frame is execute-only, although each instruction fetch
// filled the TLB entry the read hits.
TEST(RestrictionsTest, ExecuteOnlyFrameFaultsEveryReadOfItsOwnCode) {
  auto m = NewMachine();
  StandardGuest g = Guest(*m, "self_read");
  const uint64_t code_pa = SymPa(g, "entry"), code_va = Sym(g, "entry");
  const Gfn code(code_pa / 4096);
  View v = *m->CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(m->SetMemoryAccess(v, code, MemoryAccess::X()).ok());
  ASSERT_TRUE(m->SwitchView(v).ok());
  SetRdi(*m, 3);
  std::vector<std::string> trace = Trace(*m, Emulate);
  const std::string read = Access(v, Sym(g, "read_insn"), code_pa, code_va, "r--");
  EXPECT_THAT(trace, ElementsAre(read, read, read));
  // Each emulated read saw the frame's real bytes.
  EXPECT_EQ(m->GetRegisters(VcpuId(0))->rbx, 3 * ReadQ(*m, code_pa));
  EXPECT_EQ(ReadQ(*m, SymPa(g, "data")), 0x42u);
  EXPECT_EQ(m->GetRegisters(VcpuId(0))->rip, Sym(g, "done") + 1);
  // Only the restricting view's engine pays for the checks.
  EXPECT_TRUE(*m->ChecksEveryAccess(VcpuId(0), v));
  EXPECT_FALSE(*m->ChecksEveryAccess(VcpuId(0), kDefaultView));
  EXPECT_EQ(*m->GetMemoryAccess(kDefaultView, code), MemoryAccess::RWX());
}

// Continue retries the read, which faults again: the check is not a one-off.
TEST(RestrictionsTest, ExecuteOnlyReadAnsweredWithContinueFaultsAgain) {
  auto m = NewMachine();
  StandardGuest g = Guest(*m, "self_read");
  const uint64_t code_pa = SymPa(g, "entry");
  View v = *m->CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(m->SetMemoryAccess(v, Gfn(code_pa / 4096), MemoryAccess::X()).ok());
  ASSERT_TRUE(m->SwitchView(v).ok());
  SetRdi(*m, 1);
  int answered = 0;
  std::vector<std::string> trace = Trace(*m, [&](const Exit&) {
    return ++answered < 3 ? Response{} : Emulate(Exit{});
  });
  const std::string read = Access(v, Sym(g, "read_insn"), code_pa, Sym(g, "entry"), "r--");
  EXPECT_THAT(trace, ElementsAre(read, read, read));
  EXPECT_EQ(m->GetRegisters(VcpuId(0))->rbx, ReadQ(*m, code_pa));
}

// A write to a read-only frame traps after the guest read the same page (the
// read filled a TLB entry that the guest page tables make writable).
TEST(RestrictionsTest, ReadOnlyFrameWriteAfterReadTraps) {
  for (bool in_default_view : {false, true}) {
    SCOPED_TRACE(in_default_view ? "default view" : "own view");
    auto m = NewMachine();
    StandardGuest g = Guest(*m, "self_read");
    const uint64_t data_pa = SymPa(g, "data"), data_va = Sym(g, "data");
    const Gfn data(data_pa / 4096);
    View v = kDefaultView;
    if (!in_default_view) {
      v = *m->CreateView(MemoryAccess::RWX());
      ASSERT_TRUE(m->SwitchView(v).ok());
    }
    ASSERT_TRUE(m->SetMemoryAccess(v, data, MemoryAccess::R()).ok());
    SetRdi(*m, 0);
    int answered = 0;
    std::vector<std::string> trace = Trace(*m, [&](const Exit&) {
      return ++answered < 2 ? Response{} : Emulate(Exit{});
    });
    const std::string write = Access(v, Sym(g, "data_write"), data_pa, data_va, "-w-");
    EXPECT_THAT(trace, ElementsAre(write, write));
    EXPECT_EQ(ReadQ(*m, data_pa), 0x42u);
    EXPECT_TRUE(*m->ChecksEveryAccess(VcpuId(0), v));
    if (!in_default_view) {
      EXPECT_FALSE(*m->ChecksEveryAccess(VcpuId(0), kDefaultView));
    }
  }
}

// Lifting the last restriction puts the engine back on the fast path, and the
// guest's accesses go through unchecked from then on.
TEST(RestrictionsTest, EngineChecksOnlyWhileItsViewRestricts) {
  auto m = NewMachine();
  StandardGuest g = Guest(*m, "self_read");
  const Gfn data(SymPa(g, "data") / 4096);
  ASSERT_TRUE(m->SetMemoryAccess(kDefaultView, data, MemoryAccess::R()).ok());
  SetRdi(*m, 0);
  absl::StatusOr<RunResult> r = m->Run(1'000'000);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  EXPECT_EQ(r->exit->rip, Sym(g, "data_write"));
  EXPECT_TRUE(*m->ChecksEveryAccess(VcpuId(0), kDefaultView));
  ASSERT_TRUE(m->SetMemoryAccess(kDefaultView, data, MemoryAccess::RWX()).ok());
  ASSERT_TRUE(m->Respond({}).ok());
  r = m->Run(1'000'000);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, RunStatus::kAllHalted);
  EXPECT_FALSE(*m->ChecksEveryAccess(VcpuId(0), kDefaultView));
  EXPECT_EQ(ReadQ(*m, SymPa(g, "data")), 0x42u);
}

// A view whose default access is not RWX restricts every frame: its guest
// write after a read of the same page traps too.
TEST(RestrictionsTest, ViewWithRestrictiveDefaultChecksEveryAccess) {
  auto m = NewMachine();
  StandardGuest g = Guest(*m, "self_read");
  View rx = *m->CreateView(MemoryAccess::RX());
  ASSERT_TRUE(m->SwitchView(rx).ok());
  SetRdi(*m, 2);
  absl::StatusOr<RunResult> r = m->Run(1'000'000);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  EXPECT_EQ(r->exit->ToString(),
            Access(rx, Sym(g, "data_write"), SymPa(g, "data"), Sym(g, "data"), "-w-"));
  EXPECT_TRUE(*m->ChecksEveryAccess(VcpuId(0), rx));
  EXPECT_FALSE(*m->ChecksEveryAccess(VcpuId(0), kDefaultView));
}

// The table_write guest: a data page at kRegion whose PTE has its accessed bit
// clear, and the page-table page mapping it at kTableAlias.
constexpr uint64_t kRegion = 0x40000000;
constexpr uint64_t kTableAlias = 0xffffc00000000000ull;
constexpr uint64_t kAccessed = 1u << 5;

struct TableGuest {
  std::unique_ptr<Machine> m;
  StandardGuest g;
  uint64_t pt_pa = 0;   // the page-table page mapping kRegion
  uint64_t pte_pa = 0;  // kRegion's entry in it
  uint64_t slot = 5;    // the entry the guest writes
};

TableGuest NewTableGuest() {
  TableGuest t;
  t.m = NewMachine();
  t.g = Guest(*t.m, "table_write");
  Pa frame = *t.g.builder->AllocateFrames(1);
  EXPECT_TRUE(t.g.space->Map(Va(kRegion), frame, 4096, page_flags::kWritable).ok());
  t.pt_pa = t.g.space->PageTableFor(Va(kRegion))->value();
  EXPECT_TRUE(
      t.g.space->Map(Va(kTableAlias), Pa(t.pt_pa), 4096, page_flags::kWritable).ok());
  t.pte_pa = t.pt_pa + ((kRegion >> 12) & 511) * 8;
  const uint64_t pte = ReadQ(*t.m, t.pte_pa) & ~kAccessed;
  EXPECT_TRUE(
      t.m->WritePhys(Pa(t.pte_pa), absl::MakeSpan(reinterpret_cast<const uint8_t*>(&pte), 8))
          .ok());
  amd64::GpRegisters r = t.m->GetRegisters(VcpuId(0))->gp();
  r.rdi = kRegion;
  r.rsi = kTableAlias + t.slot * 8;
  r.rdx = 0x1234567000ull;
  EXPECT_TRUE(t.m->SetGpRegisters(VcpuId(0), r).ok());
  return t;
}

// R + IgnorePageWalkUpdates on the table frame: the walk of the guest's read
// sets the accessed bit there without an exit; the guest's own write to the
// table is a write violation (performed once on Emulate).
TEST(RestrictionsTest, PageWalkUpdatesPassIgnorePwTableFrameGuestWritesTrap) {
  for (bool in_default_view : {true, false}) {
    SCOPED_TRACE(in_default_view ? "default view" : "own view");
    TableGuest t = NewTableGuest();
    Machine& m = *t.m;
    View v = kDefaultView;
    if (!in_default_view) {
      v = *m.CreateView(MemoryAccess::RWX());
      ASSERT_TRUE(m.SwitchView(v).ok());
    }
    const Gfn pt(t.pt_pa / 4096);
    ASSERT_TRUE(m.SetMemoryAccess(v, pt, MemoryAccess::R(),
                                  MemoryAccessOptions::IgnorePageWalkUpdates())
                    .ok());
    EXPECT_EQ(*m.GetMemoryAccessOptions(v, pt), MemoryAccessOptions::IgnorePageWalkUpdates());
    EXPECT_EQ(*m.GetMemoryAccess(v, pt), MemoryAccess::R());
    absl::StatusOr<RunResult> r = m.Run(1'000'000);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->status, RunStatus::kExit);
    EXPECT_EQ(r->exit->ToString(), Access(v, Sym(t.g, "write_insn"), t.pt_pa + t.slot * 8,
                                          kTableAlias + t.slot * 8, "-w-"));
    EXPECT_NE(ReadQ(m, t.pte_pa) & kAccessed, 0u);  // set by the walk of read_insn
    EXPECT_EQ(ReadQ(m, t.pt_pa + t.slot * 8), 0u);  // the guest's write did not land
    // Continue: the write faults again, still unperformed.
    ASSERT_TRUE(m.Respond({}).ok());
    r = m.Run(1'000'000);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->status, RunStatus::kExit);
    EXPECT_EQ(r->exit->rip, Sym(t.g, "write_insn"));
    EXPECT_EQ(ReadQ(m, t.pt_pa + t.slot * 8), 0u);
    ASSERT_TRUE(m.Respond({EventAction::kEmulate, std::nullopt, std::nullopt}).ok());
    r = m.Run(1'000'000);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->status, RunStatus::kAllHalted);
    EXPECT_EQ(ReadQ(m, t.pt_pa + t.slot * 8), 0x1234567000ull);
    EXPECT_EQ(m.GetRegisters(VcpuId(0))->rip, Sym(t.g, "done") + 1);
    // Dropping the option (same access) makes it a plain read-only frame.
    ASSERT_TRUE(m.SetMemoryAccess(v, pt, MemoryAccess::R()).ok());
    EXPECT_EQ(*m.GetMemoryAccessOptions(v, pt), MemoryAccessOptions::None());
  }
}

// Without the option the walk's accessed-bit update to the read-only table
// frame is dropped (documented in machine.h: Xen would raise a violation with
// fault_in_gpt); the guest's write traps as before.
TEST(RestrictionsTest, PageWalkUpdateToReadOnlyTableFrameWithoutOptionIsDropped) {
  TableGuest t = NewTableGuest();
  Machine& m = *t.m;
  ASSERT_TRUE(m.SetMemoryAccess(kDefaultView, Gfn(t.pt_pa / 4096), MemoryAccess::R()).ok());
  std::vector<std::string> trace = Trace(m, Emulate);
  EXPECT_THAT(trace, ElementsAre(Access(kDefaultView, Sym(t.g, "write_insn"),
                                        t.pt_pa + t.slot * 8, kTableAlias + t.slot * 8, "-w-")));
  EXPECT_EQ(ReadQ(m, t.pte_pa) & kAccessed, 0u);
  EXPECT_EQ(ReadQ(m, t.pt_pa + t.slot * 8), 0x1234567000ull);
}

// The option is per frame and per view: a view without it keeps the frame
// plain read-only while another has it, and the walk in each behaves as its
// own view says.
TEST(RestrictionsTest, IgnorePwIsPerView) {
  TableGuest t = NewTableGuest();
  Machine& m = *t.m;
  const Gfn pt(t.pt_pa / 4096);
  View v = *m.CreateView(MemoryAccess::RWX());
  ASSERT_TRUE(
      m.SetMemoryAccess(v, pt, MemoryAccess::R(), MemoryAccessOptions::IgnorePageWalkUpdates())
          .ok());
  ASSERT_TRUE(m.SetMemoryAccess(kDefaultView, pt, MemoryAccess::R()).ok());
  EXPECT_EQ(*m.GetMemoryAccessOptions(kDefaultView, pt), MemoryAccessOptions::None());
  // In the default view: the update is dropped.
  absl::StatusOr<RunResult> r = m.Run(1'000'000);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  EXPECT_EQ(r->exit->rip, Sym(t.g, "write_insn"));
  EXPECT_EQ(ReadQ(m, t.pte_pa) & kAccessed, 0u);
  // Back to the read in view v (fresh TLB there): the update lands.
  amd64::GpRegisters regs = m.GetRegisters(VcpuId(0))->gp();
  regs.rip = Sym(t.g, "read_insn");
  ASSERT_TRUE(m.Respond({EventAction::kContinue, v, regs}).ok());
  r = m.Run(1'000'000);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, RunStatus::kExit);
  EXPECT_EQ(r->exit->view, v);
  EXPECT_EQ(r->exit->rip, Sym(t.g, "write_insn"));
  EXPECT_NE(ReadQ(m, t.pte_pa) & kAccessed, 0u);
}


// A guest's own #PF, raised while its engine checks every access (its view
// restricts a frame), reaches the guest's handler as it does anywhere else:
// demand_paging maps each page on first touch, in a view that restricts an
// unrelated frame, in one whose table frame is write-protected with
// IgnorePageWalkUpdates (the handler's PTE write is then a violation), and in
// one where a store to the first mapped page is emulated.
TEST(RestrictionsTest, GuestPageFaultsAreDeliveredInACheckingEngine) {
  enum Case { kUnrelatedFrame, kTableFramePw, kDataFrameEmulated };
  for (Case c : {kUnrelatedFrame, kTableFramePw, kDataFrameEmulated}) {
    const bool pw = c == kTableFramePw;
    SCOPED_TRACE(c == kUnrelatedFrame ? "unrelated frame R"
                 : pw                 ? "table frame R + pw"
                                      : "first data frame R, its write emulated");
    std::unique_ptr<Machine> m = NewMachine();
    StandardGuest g = Guest(*m, "demand_paging");
    constexpr uint64_t kRegion = 0x40000000, kWindow = 0xffffc00000000000ull, kPages = 3;
    const Pa pt = *g.space->PageTableFor(Va(kRegion));
    ASSERT_TRUE(g.space->Map(Va(kWindow), pt, 4096, page_flags::kWritable).ok());
    const Pa pool = *g.builder->AllocateFrames(kPages);
    const Pa spare = *g.builder->AllocateFrames(1);
    const uint64_t pf_data[2] = {kWindow, pool.value()};
    ASSERT_TRUE(m->WritePhys(Pa(SymPa(g, "pf_data")),
                             absl::MakeSpan(reinterpret_cast<const uint8_t*>(pf_data), 16))
                    .ok());
    amd64::GpRegisters gp = m->GetRegisters(VcpuId(0))->gp();
    gp.rdi = kRegion;
    gp.rsi = kPages;
    ASSERT_TRUE(m->SetGpRegisters(VcpuId(0), gp).ok());
    const View view = *m->CreateView(MemoryAccess::RWX());
    if (pw) {
      ASSERT_TRUE(m->SetMemoryAccess(view, Gfn(pt.value() / 4096), MemoryAccess::RX(),
                                     MemoryAccessOptions::IgnorePageWalkUpdates())
                      .ok());
    } else if (c == kUnrelatedFrame) {
      ASSERT_TRUE(m->SetMemoryAccess(view, Gfn(spare.value() / 4096), MemoryAccess::R()).ok());
    } else {
      // The guest's store into the page its handler mapped first is a write
      // violation, answered by emulation; the next page's #PF is still a #PF.
      ASSERT_TRUE(m->SetMemoryAccess(view, Gfn(pool.value() / 4096), MemoryAccess::R()).ok());
    }
    ASSERT_TRUE(m->SwitchView(view).ok());
    const std::vector<std::string> trace = Trace(*m, Emulate);
    EXPECT_TRUE(*m->ChecksEveryAccess(VcpuId(0), view));
    EXPECT_EQ(trace.size(), c == kTableFramePw ? kPages : c == kDataFrameEmulated ? 1u : 0u)
        << ::testing::PrintToString(trace);
    EXPECT_EQ(ReadQ(*m, SymPa(g, "pf_data") + 16), kPages);  // faults handled
    EXPECT_EQ(m->GetRegisters(VcpuId(0))->rip, Sym(g, "done") + 1);
  }
}

}  // namespace
}  // namespace vmi::sim
