// ListModules on module lists built by hand in fake memory, with the
// fixture kernel's real offsets: /proc/modules lines for the usual shapes
// (users, permanent, tainted, loading, unformed), and broken lists and
// modules, each reported with what was read before it.

#include "os/linux/modules.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "os/linux/kernel_access.h"
#include "os/linux/testing/fake_memory.h"

namespace vmi::os_linux {
namespace {

using ::testing::ElementsAre;
using testing::FakeMemory;
using ::testing::HasSubstr;
using testing::KernelObjects;

constexpr uint64_t kSomeFunction = 0xffffffffc0540000ull;

std::string Hex(uint64_t v) { return absl::StrFormat("0x%x", v); }

class ModulesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::shared_ptr<const KernelTypes>> types = testing::FixtureKernelTypes();
    ASSERT_TRUE(types.ok()) << types.status();
    objects_ = std::make_unique<KernelObjects>(memory_, **types);
    head_ = New("list_head");
    objects_->LinkList(head_, {});
    absl::StatusOr<LinuxKernel> kernel = testing::FakeLinuxKernel({{head_, 'D', "modules"}});
    ASSERT_TRUE(kernel.ok()) << kernel.status();
    kernel_ = std::make_unique<LinuxKernel>(*std::move(kernel));
    access_ = std::make_unique<KernelAccess>(memory_, *kernel_);
    absl::StatusOr<ModuleLayout> layout = ModuleLayout::Resolve(**types);
    ASSERT_TRUE(layout.ok()) << layout.status();
    layout_ = *layout;
    ASSERT_FALSE(layout_.mem_array);  // 6.1: core_layout and init_layout
    for (auto [value, name] :
         {std::pair{&live_, "MODULE_STATE_LIVE"}, std::pair{&coming_, "MODULE_STATE_COMING"},
          std::pair{&going_, "MODULE_STATE_GOING"},
          std::pair{&unformed_, "MODULE_STATE_UNFORMED"}}) {
      absl::StatusOr<int64_t> v = (*types)->EnumValue(name);
      ASSERT_TRUE(v.ok()) << v.status();
      *value = *v;
    }
  }

  uint64_t New(absl::string_view type) { return objects_->New(type); }
  void Set(uint64_t object, absl::string_view path, uint64_t value) {
    objects_->Set(object, "module", path, value);
  }

  // A live module with no users, as a plain `insmod` leaves it: an init and
  // an exit, one reference base.
  uint64_t NewModule(absl::string_view name, uint64_t base, uint32_t core_size,
                     uint32_t init_size = 0) {
    const uint64_t m = New("module");
    objects_->SetChars(m, "module", "name", name);
    Set(m, "state", live_);
    Set(m, "core_layout.base", base);
    Set(m, "core_layout.size", core_size);
    Set(m, "init_layout.size", init_size);
    Set(m, "refcnt.counter", 1);
    Set(m, "init", kSomeFunction);
    Set(m, "exit", kSomeFunction + 0x100);
    objects_->LinkList(m + layout_.source_list, {});
    return m;
  }
  uint64_t Node(uint64_t module) const { return module + layout_.list_node; }
  void LinkModules(const std::vector<uint64_t>& modules) {
    std::vector<uint64_t> nodes;
    for (uint64_t m : modules) nodes.push_back(Node(m));
    objects_->LinkList(head_, nodes);
  }
  // `users` use `module` (module_use entries on its source_list).
  std::vector<uint64_t> SetUsers(uint64_t module, const std::vector<uint64_t>& users) {
    std::vector<uint64_t> nodes;
    for (uint64_t user : users) {
      const uint64_t use = New("module_use");
      objects_->Set(use, "module_use", "source", user);
      objects_->Set(use, "module_use", "target", module);
      nodes.push_back(use + layout_.use_source_list);
    }
    objects_->LinkList(module + layout_.source_list, nodes);
    return nodes;
  }

  static std::vector<std::string> Lines(const ModuleList& list) {
    std::vector<std::string> out;
    for (const Module& m : list.modules) out.push_back(m.ToProcLine());
    return out;
  }

  FakeMemory memory_;
  std::unique_ptr<KernelObjects> objects_;
  std::unique_ptr<LinuxKernel> kernel_;
  std::unique_ptr<KernelAccess> access_;
  ModuleLayout layout_;
  uint64_t head_ = 0;
  int64_t live_ = 0, coming_ = 0, going_ = 0, unformed_ = 0;
};

TEST_F(ModulesTest, ProcModulesLines) {
  // The fixture guest's modules, as it listed them, and the other shapes.
  const uint64_t crc = NewModule("crc_itu_t", 0xffffffffc0542000, 12288, 4096);
  const uint64_t vfat = NewModule("vfat", 0xffffffffc053b000, 24576);
  const uint64_t fat = NewModule("fat", 0xffffffffc051c000, 90112);
  Set(fat, "refcnt.counter", 2);
  SetUsers(fat, {vfat});
  const uint64_t permanent = NewModule("perm", 0xffffffffc0500000, 8192);
  Set(permanent, "exit", 0);
  const uint64_t tainted = NewModule("oot", 0xffffffffc0510000, 4096);
  Set(tainted, "taints", (1u << 12) | (1u << 13));  // TAINT_OOT_MODULE, TAINT_UNSIGNED_MODULE
  const uint64_t loading = NewModule("loading", 0xffffffffc0520000, 4096);
  Set(loading, "state", coming_);
  Set(loading, "taints", 1u << 12);
  const uint64_t going = NewModule("going", 0xffffffffc0530000, 4096);
  Set(going, "state", going_);
  Set(going, "refcnt.counter", 0);
  const uint64_t unformed = NewModule("unformed", 0, 0);
  Set(unformed, "state", unformed_);
  const uint64_t shared = NewModule("shared", 0xffffffffc0550000, 4096);
  SetUsers(shared, {vfat, fat});
  Set(shared, "refcnt.counter", 3);
  LinkModules({crc, vfat, fat, permanent, tainted, loading, going, unformed, shared});

  ModuleList list = ListModules(*access_, layout_);
  ASSERT_TRUE(list.complete()) << list.status;
  EXPECT_THAT(Lines(list), ElementsAre("crc_itu_t 16384 0 - Live 0xffffffffc0542000",
                                       "vfat 24576 0 - Live 0xffffffffc053b000",
                                       "fat 90112 1 vfat, Live 0xffffffffc051c000",
                                       "perm 8192 0 [permanent], Live 0xffffffffc0500000",
                                       "oot 4096 0 - Live 0xffffffffc0510000 (OE)",
                                       "loading 4096 0 - Loading 0xffffffffc0520000 (O+)",
                                       "going 4096 -1 - Unloading 0xffffffffc0530000",
                                       "shared 4096 2 vfat,fat, Live 0xffffffffc0550000"));
  EXPECT_EQ(list.modules[2].address, fat);
  EXPECT_THAT(list.modules[2].used_by, ElementsAre("vfat"));
  EXPECT_EQ(list.modules[0].size, 16384u);
}

TEST_F(ModulesTest, EmptyList) {
  ModuleList list = ListModules(*access_, layout_);
  EXPECT_TRUE(list.complete()) << list.status;
  EXPECT_TRUE(list.modules.empty());
}

TEST_F(ModulesTest, Cycle) {
  const uint64_t a = NewModule("a", 0, 1), b = NewModule("b", 0, 1), c = NewModule("c", 0, 1);
  LinkModules({a, b, c});
  memory_.WriteU64(Node(c) + layout_.list.next, Node(a));
  ModuleList list = ListModules(*access_, layout_);
  EXPECT_EQ(list.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(list.status.message(),
              HasSubstr("modules: entry " + Hex(Node(a)) + " comes round again"));
  EXPECT_EQ(list.modules.size(), 3u);
}

TEST_F(ModulesTest, TornList) {
  const uint64_t a = NewModule("a", 0, 1), b = NewModule("b", 0, 1), c = NewModule("c", 0, 1);
  LinkModules({a, b, c});
  memory_.WriteU64(Node(c) + layout_.list.prev, head_);
  ModuleList list = ListModules(*access_, layout_);
  EXPECT_EQ(list.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(list.status.message(), HasSubstr("modules: torn at " + Hex(Node(c))));
  ASSERT_EQ(list.modules.size(), 2u);
  EXPECT_EQ(list.modules[1].name, "b");
}

TEST_F(ModulesTest, NameWithoutNul) {
  const uint64_t a = NewModule("a", 0, 1);
  const uint64_t b = NewModule(std::string(layout_.name_size, 'x'), 0, 1);  // fills the array
  LinkModules({a, b});
  ModuleList list = ListModules(*access_, layout_);
  EXPECT_EQ(list.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(list.status.message(),
              HasSubstr(absl::StrFormat("module %s: name \"%s\" has no NUL in its %u bytes", Hex(b),
                                        std::string(layout_.name_size, 'x'), layout_.name_size)));
  EXPECT_EQ(list.modules.size(), 1u);

  // The same in a user's name, reached through source_list.
  const uint64_t c = NewModule("c", 0, 1);
  SetUsers(c, {b});
  LinkModules({c});
  list = ListModules(*access_, layout_);
  EXPECT_EQ(list.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(list.status.message(), HasSubstr("has no NUL"));
}

TEST_F(ModulesTest, UnknownState) {
  const uint64_t a = NewModule("a", 0, 1), b = NewModule("b", 0, 1);
  Set(b, "state", 7);
  LinkModules({a, b});
  ModuleList list = ListModules(*access_, layout_);
  EXPECT_EQ(list.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(list.status.message(),
              HasSubstr("module " + Hex(b) + " (b): state 7 is not one of enum module_state's"));
  EXPECT_EQ(list.modules.size(), 1u);
}

TEST_F(ModulesTest, UnmappedModuleAndUser) {
  const uint64_t a = NewModule("a", 0, 1);
  LinkModules({a});
  const uint64_t nowhere = memory_.Reserve(4096);
  memory_.WriteU64(Node(a) + layout_.list.next, nowhere);
  ModuleList list = ListModules(*access_, layout_);
  EXPECT_EQ(list.status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(list.status.message(), HasSubstr("reading entry " + Hex(nowhere)));
  EXPECT_EQ(list.modules.size(), 1u);

  const uint64_t b = NewModule("b", 0, 1);
  const std::vector<uint64_t> uses = SetUsers(b, {a});
  const uint64_t use = uses[0] - layout_.use_source_list;
  objects_->Set(use, "module_use", "source", nowhere);
  LinkModules({b});
  list = ListModules(*access_, layout_);
  EXPECT_EQ(list.status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(list.status.message(), HasSubstr("module " + Hex(nowhere) + ": name"));
  EXPECT_TRUE(list.modules.empty());
}

TEST_F(ModulesTest, CycleInSourceList) {
  const uint64_t a = NewModule("a", 0, 1), b = NewModule("b", 0, 1), c = NewModule("c", 0, 1);
  const std::vector<uint64_t> uses = SetUsers(a, {b, c});
  memory_.WriteU64(uses[1] + layout_.list.next, uses[1]);  // c's use points at itself
  LinkModules({a});
  ModuleList list = ListModules(*access_, layout_);
  EXPECT_EQ(list.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(list.status.message(), HasSubstr("source_list of module a (" + Hex(a) + "): entry " +
                                               Hex(uses[1]) + " comes round again"));
}

TEST_F(ModulesTest, MoreThanTheLimit) {
  std::vector<uint64_t> modules;
  for (int i = 0; i < 6; ++i) modules.push_back(NewModule(absl::StrFormat("m%d", i), 0, 1));
  LinkModules(modules);
  ModuleList list = ListModules(*access_, layout_, /*limit=*/4);
  EXPECT_EQ(list.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(list.modules.size(), 4u);
  EXPECT_TRUE(ListModules(*access_, layout_, 6).complete());
}

}  // namespace
}  // namespace vmi::os_linux
