#include "arch/amd64/amd64.h"

#include "arch/amd64/testing/page_store.h"
#include "gtest/gtest.h"

namespace vmi {
namespace {

using amd64::PagingMode;

amd64::Registers LongMode() {
  amd64::Registers r;
  r.cr0 = 0x80050033;   // PG|AM|WP|NE|ET|MP|PE
  r.cr4 = 0x20;         // PAE
  r.efer = 0xd01;       // SCE|LME|LMA|NXE
  r.cr3 = 0x1ab000 | 0x5;  // PCID 5
  return r;
}

TEST(Amd64Test, PagingModeFromRegisters) {
  amd64::Registers r = LongMode();
  EXPECT_EQ(Amd64::PagingModeOf(r), PagingMode::FourLevel(true));
  r.cr4 |= 1 << 12;  // LA57
  EXPECT_EQ(Amd64::PagingModeOf(r), PagingMode::FiveLevel(true));
  r.efer = 0;  // legacy PAE, no NX
  EXPECT_EQ(Amd64::PagingModeOf(r), PagingMode::Pae(false));
  r.cr4 = 0x10;  // PSE only
  EXPECT_EQ(Amd64::PagingModeOf(r), PagingMode::Legacy32(true));
  r.cr4 = 0;
  EXPECT_EQ(Amd64::PagingModeOf(r), PagingMode::Legacy32(false));
  r.cr0 = 0x11;  // PE, no PG
  EXPECT_EQ(Amd64::PagingModeOf(r).kind, PagingMode::Kind::kDisabled);
}

TEST(Amd64Test, RootAndPointers) {
  amd64::Registers r = LongMode();
  r.rip = 0xffffffff81000000;
  r.rsp = 0xffffc90000001000;
  EXPECT_EQ(Amd64::TranslationRoot(r), Pa(0x1ab000));
  EXPECT_EQ(Amd64::InstructionPointer(r), Va(0xffffffff81000000));
  EXPECT_EQ(Amd64::StackPointer(r), Va(0xffffc90000001000));
  EXPECT_EQ(Amd64::GfnFromPa(Pa(0x1ab123)), Gfn(0x1ab));
  EXPECT_EQ(Amd64::PaFromGfn(Gfn(0x1ab)), Pa(0x1ab000));
  EXPECT_EQ(Amd64::PageOffset(0x1ab123), 0x123u);
}

TEST(Amd64Test, TranslateThroughTheArchitecture) {
  amd64::testing::MemoryPageStore store(Gfn(0xffff));
  amd64::testing::PageTableBuilder builder(store, PagingMode::FourLevel());
  ASSERT_TRUE(builder.Map(Va(0xffff888000000000), Pa(0x200000), 1 << 21, 0x3).ok());
  auto t = Amd64::Translate(store, AddressContext(Va(0xffff888000012345), builder.root()));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->pa, Pa(0x212345));
  EXPECT_EQ(t->page_size, 1u << 21);
  auto w = Amd64::WalkPage(store, AddressContext(Va(0xffff888000012345), builder.root()),
                           PagingMode::FourLevel());
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->count, 3);
}

}  // namespace
}  // namespace vmi
