// ListMaps on VMA trees and lists built by hand in fake memory, with the
// fixture kernel's real offsets: the normal shapes and every kind of
// hostile or broken input, each reported (an error or a partial result).

#include "os/linux/maps.h"

#include <memory>
#include <optional>
#include <string>
#include <utility>
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

// Kernel functions the maps code compares pointers with (any addresses do).
constexpr uint64_t kSpecialMappingName = 0xffffffff81100000ull;
constexpr uint64_t kSimpleDname = 0xffffffff81100100ull;
constexpr uint64_t kAnonInodefsDname = 0xffffffff81100200ull;
constexpr uint64_t kSockfsDname = 0xffffffff81100300ull;
constexpr uint64_t kOtherFunction = 0xffffffff81100400ull;
constexpr uint64_t kAnonVmaNameAlloc = 0xffffffff81100500ull;

constexpr uint64_t kVmRead = 1, kVmWrite = 2, kVmExec = 4, kVmMayShare = 0x80;
constexpr uint64_t kMax = ~uint64_t{0};

std::string Hex(uint64_t v) { return absl::StrFormat("0x%x", v); }

struct FakeVma {
  uint64_t address, start, end;
};

class MapsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::shared_ptr<const KernelTypes>> types = testing::FixtureKernelTypes();
    ASSERT_TRUE(types.ok()) << types.status();
    objects_ = std::make_unique<KernelObjects>(memory_, **types);
    absl::StatusOr<LinuxKernel> kernel = testing::FakeLinuxKernel({
        {kSpecialMappingName, 't', "special_mapping_name"},
        {kSimpleDname, 'T', "simple_dname"},
        {kAnonInodefsDname, 't', "anon_inodefs_dname"},
        {kSockfsDname, 't', "sockfs_dname"},
        {kOtherFunction, 't', "some_other_dname"},
        {kAnonVmaNameAlloc, 'T', "anon_vma_name_alloc"},
    });
    ASSERT_TRUE(kernel.ok()) << kernel.status();
    kernel_ = std::make_unique<LinuxKernel>(*std::move(kernel));
    access_ = std::make_unique<KernelAccess>(memory_, *kernel_);
    absl::StatusOr<MapsLayout> layout = MapsLayout::Resolve(**types);
    ASSERT_TRUE(layout.ok()) << layout.status();
    layout_ = *layout;

    mm_ = New("mm_struct");
    Set(mm_, "mm_struct", "start_brk", 0x5e5000);
    Set(mm_, "mm_struct", "brk", 0x5e6000);
    Set(mm_, "mm_struct", "start_stack", 0x7ffd434cd000);

    // "/" (rootfs), with "/bin/busybox", and a second filesystem mounted on
    // "/data".
    root_dentry_ = NewDentry("/", 0);
    root_mount_ = NewMount(root_dentry_, 0, 0);
    const uint64_t bin = NewDentry("bin", root_dentry_);
    busybox_ = NewFile(root_mount_, NewDentry("busybox", bin), 14, 2);
    data_dentry_ = NewDentry("data", root_dentry_);
    data_root_ = NewDentry("/", 0);
    data_mount_ = NewMount(data_root_, root_mount_, data_dentry_);
  }

  uint64_t New(absl::string_view type) { return objects_->New(type); }
  void Set(uint64_t object, absl::string_view type, absl::string_view path, uint64_t value) {
    objects_->Set(object, type, path, value);
  }
  uint64_t Off(absl::string_view type, absl::string_view path) {
    return objects_->OffsetOf(type, path);
  }

  // A dentry named `name` under `parent` (its own root when 0), hashed
  // (linked) unless `hashed` is false.
  uint64_t NewDentry(absl::string_view name, uint64_t parent, bool hashed = true) {
    const uint64_t d = New("dentry");
    Set(d, "dentry", "d_name.len", name.size());
    Set(d, "dentry", "d_name.name", memory_.AllocateString(name));
    Set(d, "dentry", "d_parent", parent == 0 ? d : parent);
    Set(d, "dentry", "d_hash.pprev", hashed ? d : 0);
    return d;
  }
  // A mount of `root` on `mountpoint` in `parent` (the global root when 0).
  uint64_t NewMount(uint64_t root, uint64_t parent, uint64_t mountpoint) {
    const uint64_t m = New("mount");
    Set(m, "mount", "mnt.mnt_root", root);
    Set(m, "mount", "mnt_parent", parent == 0 ? m : parent);
    Set(m, "mount", "mnt_mountpoint", mountpoint == 0 ? root : mountpoint);
    return m;
  }
  uint64_t NewFile(uint64_t mount, uint64_t dentry, uint64_t ino, uint32_t dev) {
    const uint64_t sb = New("super_block");
    Set(sb, "super_block", "s_dev", dev);
    const uint64_t inode = New("inode");
    Set(inode, "inode", "i_sb", sb);
    Set(inode, "inode", "i_ino", ino);
    Set(dentry, "dentry", "d_inode", inode);
    const uint64_t file = New("file");
    Set(file, "file", "f_path.mnt", mount + Off("mount", "mnt"));
    Set(file, "file", "f_path.dentry", dentry);
    Set(file, "file", "f_inode", inode);
    return file;
  }
  // A dentry_operations whose d_dname is `fn`.
  uint64_t NewDentryOps(uint64_t fn) {
    const uint64_t ops = New("dentry_operations");
    Set(ops, "dentry_operations", "d_dname", fn);
    return ops;
  }

  FakeVma NewVma(uint64_t start, uint64_t end, uint64_t flags, uint64_t file = 0,
                 uint64_t pgoff = 0, std::optional<uint64_t> mm = std::nullopt) {
    const uint64_t v = New("vm_area_struct");
    Set(v, "vm_area_struct", "vm_start", start);
    Set(v, "vm_area_struct", "vm_end", end);
    Set(v, "vm_area_struct", "vm_mm", mm.value_or(mm_));
    Set(v, "vm_area_struct", "vm_flags", flags);
    Set(v, "vm_area_struct", "vm_file", file);
    Set(v, "vm_area_struct", "vm_pgoff", pgoff);
    return {v, start, end};
  }
  // A [vdso]-style special mapping.
  FakeVma NewSpecialVma(uint64_t start, uint64_t end, uint64_t flags, absl::string_view name) {
    FakeVma v = NewVma(start, end, flags);
    const uint64_t ops = New("vm_operations_struct");
    Set(ops, "vm_operations_struct", "name", kSpecialMappingName);
    const uint64_t sm = New("vm_special_mapping");
    Set(sm, "vm_special_mapping", "name", memory_.AllocateString(name));
    Set(v.address, "vm_area_struct", "vm_ops", ops);
    Set(v.address, "vm_area_struct", "vm_private_data", sm);
    return v;
  }

  // Maple nodes: 256-byte aligned, pointers encoded as mt_mk_node() does.
  uint64_t NewNode() { return memory_.Allocate(layout_.node_size, 256); }
  static uint64_t Encode(uint64_t node, uint32_t type) { return node | uint64_t{type} << 3 | 4; }
  static uint64_t RootOf(uint64_t enode) { return enode | 2; }
  // A node of `kind` with (pivot, slot) pairs; the metadata's end is the
  // last slot unless given.
  uint64_t NewNode(const MapsLayout::MapleNode& kind,
                   const std::vector<std::pair<uint64_t, uint64_t>>& slots,
                   std::optional<uint8_t> meta_end = std::nullopt) {
    const uint64_t node = NewNode();
    if (slots.empty() || slots.size() > kind.slots) {
      ADD_FAILURE() << slots.size() << " slots for a node of " << kind.slots;
      return node;
    }
    for (size_t i = 0; i < slots.size(); ++i) {
      if (i < kind.pivots) memory_.WriteU64(node + kind.pivot + 8 * i, slots[i].first);
      memory_.WriteU64(node + kind.slot + 8 * i, slots[i].second);
    }
    if (slots.size() <= kind.pivots) {
      memory_.WriteU8(node + kind.meta_end,
                      meta_end.value_or(static_cast<uint8_t>(slots.size() - 1)));
    }
    return node;
  }
  // A maple_leaf_64 over [min, max] holding `vmas`, the gaps as empty slots.
  uint64_t NewLeaf(const std::vector<FakeVma>& vmas, uint64_t min = 0, uint64_t max = kMax) {
    std::vector<std::pair<uint64_t, uint64_t>> slots;
    uint64_t cursor = min;
    bool covered = false;  // up to max
    for (const FakeVma& v : vmas) {
      if (v.start > cursor) slots.push_back({v.start - 1, 0});
      slots.push_back({v.end - 1, v.address});
      cursor = v.end;
      covered = v.end - 1 == max;
    }
    if (!covered) slots.push_back({max, 0});
    return NewNode(layout_.range_64, slots);
  }
  uint64_t Leaf64(uint64_t node) const { return Encode(node, layout_.type_leaf_64); }
  uint64_t Arange64(uint64_t node) const { return Encode(node, layout_.type_arange_64); }
  void SetRoot(uint64_t root) { Set(mm_, "mm_struct", "mm_mt.ma_root", root); }

  MapList List(size_t limit = kMaxMaps) { return ListMaps(*access_, layout_, mm_, limit); }
  static std::vector<std::string> Lines(const MapList& list) {
    std::vector<std::string> out;
    for (const MemoryMap& m : list.maps) out.push_back(m.ToProcLine());
    return out;
  }

  FakeMemory memory_;
  std::unique_ptr<KernelObjects> objects_;
  std::unique_ptr<LinuxKernel> kernel_;
  std::unique_ptr<KernelAccess> access_;
  MapsLayout layout_;
  uint64_t mm_ = 0;
  uint64_t root_dentry_ = 0, root_mount_ = 0, busybox_ = 0, data_dentry_ = 0, data_root_ = 0,
           data_mount_ = 0;
};

TEST_F(MapsTest, ProcLineFormat) {
  MemoryMap m{.start = 0x400000,
              .end = 0x401000,
              .flags = kVmRead | kVmExec,
              .offset = 0x1000,
              .dev_major = 0,
              .dev_minor = 2,
              .inode = 14,
              .name = "/bin/busybox"};
  EXPECT_EQ(m.Permissions(), "r-xp");
  EXPECT_EQ(
      m.ToProcLine(),
      "00400000-00401000 r-xp 00001000 00:02 14                                 /bin/busybox");
  m.name.clear();
  EXPECT_EQ(m.ToProcLine(), "00400000-00401000 r-xp 00001000 00:02 14 ");
  // Wide fields push the name: seq_pad() still adds its one space after the
  // prefix's own.
  MemoryMap wide{.start = 0xffffffffff600000,
                 .end = 0xffffffffff601000,
                 .flags = kVmRead | kVmWrite | kVmMayShare,
                 .offset = 0x123456789a,
                 .dev_major = 0xfff,
                 .dev_minor = 0xfffff,
                 .inode = 12345678901234567890u,
                 .name = "[x]"};
  EXPECT_EQ(
      wide.ToProcLine(),
      "ffffffffff600000-ffffffffff601000 rw-s 123456789a fff:fffff 12345678901234567890  [x]");
}

TEST_F(MapsTest, OneLeafWithFileHeapStackVdsoAndAnonymousMaps) {
  const uint64_t fixture = NewFile(data_mount_, NewDentry("fixture.bin", data_root_), 289, 2);
  const std::vector<FakeVma> vmas = {
      NewVma(0x400000, 0x401000, kVmRead, busybox_),
      NewVma(0x401000, 0x585000, kVmRead | kVmExec, busybox_, 1),
      NewVma(0x5e5000, 0x5ec000, kVmRead | kVmWrite),  // [heap]: reaches start_brk
      NewVma(0x7f0000000000, 0x7f0000001000, 0),       // anonymous, no name
      NewVma(0x7f0000001000, 0x7f0000011000, kVmRead | kVmMayShare, fixture, 0x10),
      NewVma(0x7ffd434ae000, 0x7ffd434cf000, kVmRead | kVmWrite),  // [stack]
      NewSpecialVma(0x7ffd4358c000, 0x7ffd4358e000, kVmRead | kVmExec, "[vdso]"),
  };
  SetRoot(RootOf(Leaf64(NewLeaf(vmas))));
  MapList list = List();
  ASSERT_TRUE(list.complete()) << list.status;
  EXPECT_THAT(
      Lines(list),
      ElementsAre(
          "00400000-00401000 r--p 00000000 00:02 14                                 /bin/busybox",
          "00401000-00585000 r-xp 00001000 00:02 14                                 /bin/busybox",
          "005e5000-005ec000 rw-p 00000000 00:00 0                                  [heap]",
          "7f0000000000-7f0000001000 ---p 00000000 00:00 0 ",
          "7f0000001000-7f0000011000 r--s 00010000 00:02 289                        "
          "/data/fixture.bin",
          "7ffd434ae000-7ffd434cf000 rw-p 00000000 00:00 0                          [stack]",
          "7ffd4358c000-7ffd4358e000 r-xp 00000000 00:00 0                          [vdso]"));
  EXPECT_EQ(list.maps[0].vma, vmas[0].address);
  EXPECT_EQ(list.maps[0].file, busybox_);
  EXPECT_EQ(list.maps[3].file, 0u);
}

TEST_F(MapsTest, TwoLevelTreeInOrder) {
  std::vector<FakeVma> low, high;
  // Back to back: ten VMAs and the gaps at either end fill 12 of a leaf's 16 slots.
  for (uint64_t i = 0; i < 10; ++i)
    low.push_back(NewVma(0x10000000 + 0x1000 * i, 0x10001000 + 0x1000 * i, kVmRead));
  for (uint64_t i = 0; i < 10; ++i)
    high.push_back(NewVma(0x20000000 + 0x1000 * i, 0x20001000 + 0x1000 * i, kVmRead));
  const uint64_t pivot = 0x1fffffff;
  const uint64_t left = NewLeaf(low, 0, pivot), right = NewLeaf(high, pivot + 1, kMax);
  SetRoot(
      RootOf(Arange64(NewNode(layout_.arange_64, {{pivot, Leaf64(left)}, {kMax, Leaf64(right)}}))));
  MapList list = List();
  ASSERT_TRUE(list.complete()) << list.status;
  ASSERT_EQ(list.maps.size(), 20u);
  for (size_t i = 0; i < 20; ++i)
    EXPECT_EQ(list.maps[i].vma, (i < 10 ? low[i] : high[i - 10]).address);
}

TEST_F(MapsTest, FullLeafWithoutMetadata) {
  // 16 slots in use: no room for metadata, the last slot ends at the node's max.
  std::vector<FakeVma> vmas;
  for (uint64_t i = 0; i < 16; ++i) vmas.push_back(NewVma(0x1000 * i, 0x1000 * (i + 1), kVmRead));
  Set(mm_, "mm_struct", "start_brk", 0x7000000);  // no [heap] among these
  Set(mm_, "mm_struct", "brk", 0x7000000);
  std::vector<std::pair<uint64_t, uint64_t>> slots;
  for (const FakeVma& v : vmas) slots.push_back({v.end - 1, v.address});
  // The tree ends at 0xffff (the leaf's max under an internal node).
  const uint64_t leaf = NewNode(layout_.range_64, slots);
  const uint64_t rest = NewLeaf({}, 0x10000, kMax);
  SetRoot(
      RootOf(Arange64(NewNode(layout_.arange_64, {{0xffff, Leaf64(leaf)}, {kMax, Leaf64(rest)}}))));
  MapList list = List();
  ASSERT_TRUE(list.complete()) << list.status;
  EXPECT_EQ(list.maps.size(), 16u);
}

TEST_F(MapsTest, EmptyTree) {
  SetRoot(0);
  MapList list = List();
  EXPECT_TRUE(list.complete()) << list.status;
  EXPECT_TRUE(list.maps.empty());
}

TEST_F(MapsTest, PathsThroughMountsDeletedFilesAndPseudoFiles) {
  // Unlinked: " (deleted)"; a newline in a name: \012, as seq_file_path.
  const uint64_t deleted =
      NewFile(root_mount_, NewDentry("old", root_dentry_, /*hashed=*/false), 7, 2);
  const uint64_t newline = NewFile(root_mount_, NewDentry("a\nb", root_dentry_), 8, 2);
  // Shared anonymous memory: shmem's pseudo file, named by simple_dname.
  const uint64_t zero_dentry = NewDentry("dev/zero", 0, /*hashed=*/false);
  Set(zero_dentry, "dentry", "d_op", NewDentryOps(kSimpleDname));
  const uint64_t internal_root = NewDentry("/", 0);
  const uint64_t zero = NewFile(NewMount(internal_root, 0, 0), zero_dentry, 1025, 1);
  const uint64_t anon_dentry = NewDentry("[perf_event]", 0);
  Set(anon_dentry, "dentry", "d_op", NewDentryOps(kAnonInodefsDname));
  const uint64_t anon_inode = NewFile(NewMount(NewDentry("/", 0), 0, 0), anon_dentry, 9, 3);
  const uint64_t socket_dentry = NewDentry("", 0);
  Set(socket_dentry, "dentry", "d_op", NewDentryOps(kSockfsDname));
  const uint64_t socket = NewFile(NewMount(NewDentry("/", 0), 0, 0), socket_dentry, 4242, 8);
  // The root of a mounted filesystem itself.
  const uint64_t data_dir = NewFile(data_mount_, data_root_, 2, 2);
  SetRoot(RootOf(Leaf64(NewLeaf({
      NewVma(0x1000, 0x2000, kVmRead, deleted),
      NewVma(0x2000, 0x3000, kVmRead, newline),
      NewVma(0x3000, 0x4000, kVmRead | kVmWrite | kVmMayShare, zero),
      NewVma(0x4000, 0x5000, kVmRead, anon_inode),
      NewVma(0x5000, 0x6000, kVmRead, socket),
      NewVma(0x6000, 0x7000, kVmRead, data_dir),
  }))));
  MapList list = List();
  ASSERT_TRUE(list.complete()) << list.status;
  std::vector<std::string> names;
  for (const MemoryMap& m : list.maps) names.push_back(m.name);
  EXPECT_THAT(names, ElementsAre("/old (deleted)", "/a\\012b", "/dev/zero (deleted)",
                                 "anon_inode:[perf_event]", "socket:[4242]", "/data"));
  EXPECT_EQ(list.maps[2].ToProcLine(),
            "00003000-00004000 rw-s 00000000 00:01 1025                               /dev/zero "
            "(deleted)");
}

TEST_F(MapsTest, AnonymousNamesWhenTheKernelHasThem) {
  FakeVma named = NewVma(0x1000, 0x2000, kVmRead | kVmWrite);
  const uint64_t anon_name = memory_.Allocate(64);
  memory_.WriteString(anon_name + Off("anon_vma_name", "name"), "buffers");
  Set(named.address, "vm_area_struct", "anon_name", anon_name);
  SetRoot(RootOf(Leaf64(NewLeaf({named}))));
  MapList list = List();
  ASSERT_TRUE(list.complete()) << list.status;
  ASSERT_EQ(list.maps.size(), 1u);
  EXPECT_EQ(list.maps[0].name, "[anon:buffers]");
}

TEST_F(MapsTest, SingleEntryInTheRoot) {
  // A tree of one entry at index 0 keeps it in ma_root itself.
  FakeVma v = NewVma(0, 0x1000, kVmRead);
  SetRoot(v.address);
  MapList list = List();
  ASSERT_TRUE(list.complete()) << list.status;
  ASSERT_EQ(list.maps.size(), 1u);
  EXPECT_EQ(list.maps[0].vma, v.address);
}

TEST_F(MapsTest, DenseLeaf) {
  // maple_dense: one slot per index, so an entry repeats over its range.
  const FakeVma a = NewVma(0x1000, 0x2000, kVmRead), b = NewVma(0x3000, 0x4000, kVmRead);
  const uint64_t node = NewNode();
  for (int i : {0, 1}) memory_.WriteU64(node + layout_.dense.slot + 8 * i, a.address);
  memory_.WriteU64(node + layout_.dense.slot + 8 * 3, b.address);
  SetRoot(RootOf(Encode(node, layout_.type_dense)));
  MapList list = List();
  ASSERT_TRUE(list.complete()) << list.status;
  ASSERT_EQ(list.maps.size(), 2u);
  EXPECT_EQ(list.maps[1].vma, b.address);
}

// Hostile and broken trees.

TEST_F(MapsTest, UnknownNodeType) {
  const uint64_t leaf = NewLeaf({NewVma(0x1000, 0x2000, kVmRead)});
  SetRoot(RootOf(Encode(leaf, 7)));
  MapList list = List();
  EXPECT_EQ(list.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(list.status.message(), HasSubstr("maple node " + Hex(leaf)));
  EXPECT_THAT(list.status.message(), HasSubstr("type 7"));
}

TEST_F(MapsTest, TreeDeeperThanMapleHeightMax) {
  // 40 internal nodes, each with one child, then a leaf.
  uint64_t child = Leaf64(NewLeaf({NewVma(0x1000, 0x2000, kVmRead)}));
  for (int i = 0; i < 40; ++i) child = Arange64(NewNode(layout_.arange_64, {{kMax, child}}));
  SetRoot(RootOf(child));
  MapList list = List();
  EXPECT_EQ(list.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(list.status.message(), HasSubstr("deeper than MAPLE_HEIGHT_MAX 31"));
  EXPECT_TRUE(list.maps.empty());
}

TEST_F(MapsTest, NodeSeenTwice) {
  const uint64_t leaf = NewLeaf({NewVma(0x1000, 0x2000, kVmRead)}, 0, 0xffff);
  const uint64_t root = NewNode(layout_.arange_64, {{0xffff, Leaf64(leaf)}, {kMax, Leaf64(leaf)}});
  SetRoot(RootOf(Arange64(root)));
  MapList list = List();
  EXPECT_EQ(list.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(list.status.message(),
              HasSubstr("maple node " + Hex(leaf) + " (slot 1 of maple node " + Hex(root) +
                        ") was reached before"));
  EXPECT_EQ(list.maps.size(), 1u);  // what the first visit found
}

TEST_F(MapsTest, NodeThatIsItsOwnChild) {
  const uint64_t node = NewNode();
  memory_.WriteU64(node + layout_.arange_64.slot, Arange64(node));  // meta end 0: one child
  SetRoot(RootOf(Arange64(node)));
  MapList list = List();
  EXPECT_EQ(list.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(list.status.message(), HasSubstr("reached before"));
}

TEST_F(MapsTest, SlotsThatAreNotCanonicalKernelAddresses) {
  // A leaf slot holding a user address instead of a VMA.
  SetRoot(RootOf(Leaf64(NewNode(layout_.range_64, {{0xfff, 0x00007fff12345670ull}, {kMax, 0}}))));
  MapList list = List();
  EXPECT_EQ(list.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(list.status.message(), HasSubstr("0x7fff12345670: not a vm_area_struct"));

  // An internal slot holding a non-canonical node pointer.
  const uint64_t internal = NewNode(layout_.arange_64, {{kMax, Encode(0x8000123400000000ull, 1)}});
  SetRoot(RootOf(Arange64(internal)));
  list = List();
  EXPECT_EQ(list.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(list.status.message(), HasSubstr("slot 0 of maple node " + Hex(internal)));
  EXPECT_THAT(list.status.message(), HasSubstr("not a maple node at a canonical kernel address"));

  // An empty child slot of an internal node.
  SetRoot(RootOf(Arange64(NewNode(layout_.arange_64, {{0xffff, 0}, {kMax, 0}}))));
  list = List();
  EXPECT_EQ(list.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(list.status.message(), HasSubstr("is empty"));
}

TEST_F(MapsTest, VmaOfAnotherMm) {
  const uint64_t other_mm = New("mm_struct");
  const FakeVma good = NewVma(0x1000, 0x2000, kVmRead);
  const FakeVma foreign = NewVma(0x3000, 0x4000, kVmRead, 0, 0, other_mm);
  SetRoot(RootOf(Leaf64(NewLeaf({good, foreign}))));
  MapList list = List();
  EXPECT_EQ(list.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(list.status.message(), HasSubstr("vm_area_struct " + Hex(foreign.address)));
  EXPECT_THAT(list.status.message(),
              HasSubstr("vm_mm is " + Hex(other_mm) + ", not the mm_struct " + Hex(mm_)));
  ASSERT_EQ(list.maps.size(), 1u);  // the one before it
  EXPECT_EQ(list.maps[0].vma, good.address);
}

TEST_F(MapsTest, StartNotBelowEnd) {
  const FakeVma bad = NewVma(0x2000, 0x2000, kVmRead);
  SetRoot(
      RootOf(Leaf64(NewNode(layout_.range_64, {{0x1fff, 0}, {0x2fff, bad.address}, {kMax, 0}}))));
  MapList list = List();
  EXPECT_EQ(list.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(list.status.message(), HasSubstr("vm_start 0x2000 is not below vm_end 0x2000"));
}

TEST_F(MapsTest, OverlappingAndOutOfOrderVmas) {
  const FakeVma a = NewVma(0x1000, 0x3000, kVmRead);
  const FakeVma overlapping = NewVma(0x2000, 0x4000, kVmRead);
  SetRoot(RootOf(Leaf64(
      NewNode(layout_.range_64, {{0x2fff, a.address}, {0x3fff, overlapping.address}, {kMax, 0}}))));
  MapList list = List();
  EXPECT_EQ(list.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(list.status.message(),
              HasSubstr("overlaps or precedes the VMA before it, which ends at 0x3000"));
  EXPECT_EQ(list.maps.size(), 1u);

  const FakeVma before = NewVma(0x0, 0x1000, kVmRead);
  SetRoot(RootOf(Leaf64(
      NewNode(layout_.range_64, {{0x2fff, a.address}, {0x3fff, before.address}, {kMax, 0}}))));
  list = List();
  EXPECT_EQ(list.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(list.status.message(), HasSubstr("vm_area_struct " + Hex(before.address)));
}

TEST_F(MapsTest, MoreThanTheLimit) {
  std::vector<FakeVma> vmas;
  for (uint64_t i = 0; i < 7; ++i)
    vmas.push_back(NewVma(0x10000 + 0x2000 * i, 0x11000 + 0x2000 * i, kVmRead));
  SetRoot(RootOf(Leaf64(NewLeaf(vmas))));
  MapList list = List(/*limit=*/4);
  EXPECT_EQ(list.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(list.status.message(), HasSubstr("more than 4 VMAs"));
  EXPECT_EQ(list.maps.size(), 4u);
  EXPECT_TRUE(List(/*limit=*/7).complete());
}

TEST_F(MapsTest, MetadataBeyondTheSlots) {
  SetRoot(RootOf(Leaf64(NewNode(layout_.range_64, {{kMax, 0}}, /*meta_end=*/200))));
  MapList list = List();
  EXPECT_EQ(list.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(list.status.message(), HasSubstr("201 slots are in use, of 16"));
}

TEST_F(MapsTest, PivotsOutOfOrder) {
  const uint64_t leaf = Leaf64(NewLeaf({}, 0, kMax));
  const uint64_t node = NewNode(layout_.arange_64, {{0x5000, leaf}, {0x4000, leaf}, {kMax, leaf}});
  SetRoot(RootOf(Arange64(node)));
  MapList list = List();
  EXPECT_EQ(list.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(list.status.message(), HasSubstr("maple node " + Hex(node) + ": pivot 1 is 0x4000"));
}

TEST_F(MapsTest, UnreadablePointers) {
  const FakeVma a = NewVma(0x1000, 0x2000, kVmRead);
  // A leaf slot pointing to unmapped memory: the maps before it, and the address.
  const uint64_t nowhere = memory_.Reserve(4096);
  SetRoot(RootOf(Leaf64(
      NewNode(layout_.range_64, {{0xfff, 0}, {0x1fff, a.address}, {0x2fff, nowhere}, {kMax, 0}}))));
  MapList list = List();
  EXPECT_EQ(list.status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(list.status.message(), HasSubstr("vm_area_struct " + Hex(nowhere)));
  EXPECT_THAT(list.status.message(), HasSubstr(Hex(nowhere) + " is not mapped"));
  ASSERT_EQ(list.maps.size(), 1u);

  // An unmapped child node.
  const uint64_t lost = memory_.Reserve(4096);
  SetRoot(RootOf(Arange64(NewNode(layout_.arange_64, {{kMax, Leaf64(lost)}}))));
  list = List();
  EXPECT_EQ(list.status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(list.status.message(), HasSubstr("maple node " + Hex(lost)));

  // A VMA whose file is unmapped.
  const FakeVma bad_file = NewVma(0x1000, 0x2000, kVmRead, nowhere + 0x100);
  SetRoot(RootOf(Leaf64(NewLeaf({bad_file}))));
  list = List();
  EXPECT_EQ(list.status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(list.status.message(), HasSubstr("file " + Hex(nowhere + 0x100)));

  // An unmapped mm.
  list = ListMaps(*access_, layout_, nowhere);
  EXPECT_EQ(list.status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(list.status.message(), HasSubstr("mm_struct at " + Hex(nowhere)));
}

TEST_F(MapsTest, DentryLoop) {
  const uint64_t a = NewDentry("a", 0), b = NewDentry("b", a);
  Set(a, "dentry", "d_parent", b);
  SetRoot(
      RootOf(Leaf64(NewLeaf({NewVma(0x1000, 0x2000, kVmRead, NewFile(root_mount_, a, 1, 1))}))));
  MapList list = List();
  EXPECT_EQ(list.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(list.status.message(),
              HasSubstr("path of dentry " + Hex(a) + ": longer than PATH_MAX 4096"));
}

TEST_F(MapsTest, MountLoop) {
  // Two mounts each the other's parent, each mounted on the other's root:
  // the walk crosses mounts forever without adding a byte.
  const uint64_t r1 = NewDentry("/", 0), r2 = NewDentry("/", 0);
  const uint64_t m1 = NewMount(r1, 0, 0), m2 = NewMount(r2, m1, r1);
  Set(m1, "mount", "mnt_parent", m2);
  Set(m1, "mount", "mnt_mountpoint", r2);
  SetRoot(RootOf(Leaf64(NewLeaf({NewVma(0x1000, 0x2000, kVmRead, NewFile(m1, r1, 1, 1))}))));
  MapList list = List();
  EXPECT_EQ(list.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(list.status.message(), HasSubstr("a dentry or mount loop"));
}

TEST_F(MapsTest, PathLongerThanPathMax) {
  uint64_t d = root_dentry_;
  for (int i = 0; i < 20; ++i) d = NewDentry(std::string(255, 'a' + i), d);
  SetRoot(
      RootOf(Leaf64(NewLeaf({NewVma(0x1000, 0x2000, kVmRead, NewFile(root_mount_, d, 1, 1))}))));
  MapList list = List();
  EXPECT_EQ(list.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(list.status.message(), HasSubstr("longer than PATH_MAX"));

  // Fifteen of them fit.
  d = root_dentry_;
  for (int i = 0; i < 15; ++i) d = NewDentry(std::string(255, 'a' + i), d);
  SetRoot(
      RootOf(Leaf64(NewLeaf({NewVma(0x1000, 0x2000, kVmRead, NewFile(root_mount_, d, 1, 1))}))));
  list = List();
  ASSERT_TRUE(list.complete()) << list.status;
  EXPECT_EQ(list.maps[0].name.size(), 15u * 256);
}

TEST_F(MapsTest, NameLongerThanNameMax) {
  const uint64_t d = NewDentry("x", root_dentry_);
  Set(d, "dentry", "d_name.len", 100000);
  SetRoot(
      RootOf(Leaf64(NewLeaf({NewVma(0x1000, 0x2000, kVmRead, NewFile(root_mount_, d, 1, 1))}))));
  MapList list = List();
  EXPECT_EQ(list.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(list.status.message(),
              HasSubstr("dentry " + Hex(d) + ": d_name.len is 100000, beyond NAME_MAX 255"));
}

TEST_F(MapsTest, NamingFunctionsItCannotEmulate) {
  const uint64_t d = NewDentry("x", 0);
  Set(d, "dentry", "d_op", NewDentryOps(kOtherFunction));
  SetRoot(RootOf(Leaf64(NewLeaf(
      {NewVma(0x1000, 0x2000, kVmRead, NewFile(NewMount(NewDentry("/", 0), 0, 0), d, 1, 1))}))));
  MapList list = List();
  EXPECT_EQ(list.status.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(list.status.message(), HasSubstr("some_other_dname"));

  FakeVma v = NewVma(0x1000, 0x2000, kVmRead);
  const uint64_t ops = New("vm_operations_struct");
  Set(ops, "vm_operations_struct", "name", kOtherFunction);
  Set(v.address, "vm_area_struct", "vm_ops", ops);
  SetRoot(RootOf(Leaf64(NewLeaf({v}))));
  list = List();
  EXPECT_EQ(list.status.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(list.status.message(), HasSubstr("vm_ops->name is some_other_dname"));
}

// Kernels before 6.1: mm->mmap and vm_area_struct.vm_next. The fixture
// kernel has neither, so the layout puts them at members this test does not
// otherwise use.
class MapsListTest : public MapsTest {
 protected:
  void SetUp() override {
    MapsTest::SetUp();
    layout_.maple_tree = false;
    layout_.mm_mmap = Off("mm_struct", "mm_mt.ma_root");
    layout_.vm_next = Off("vm_area_struct", "anon_vma_chain.next");
  }
  void SetNext(const FakeVma& v, uint64_t next) {
    memory_.WriteU64(v.address + layout_.vm_next, next);
  }
  void Chain(const std::vector<FakeVma>& vmas) {
    memory_.WriteU64(mm_ + layout_.mm_mmap, vmas.empty() ? 0 : vmas[0].address);
    for (size_t i = 0; i < vmas.size(); ++i)
      SetNext(vmas[i], i + 1 < vmas.size() ? vmas[i + 1].address : 0);
  }
};

TEST_F(MapsListTest, Normal) {
  Chain({NewVma(0x400000, 0x401000, kVmRead, busybox_),
         NewVma(0x5e5000, 0x5ec000, kVmRead | kVmWrite),
         NewSpecialVma(0x7ffd4358c000, 0x7ffd4358e000, kVmRead | kVmExec, "[vdso]")});
  MapList list = List();
  ASSERT_TRUE(list.complete()) << list.status;
  EXPECT_THAT(
      Lines(list),
      ElementsAre(
          "00400000-00401000 r--p 00000000 00:02 14                                 /bin/busybox",
          "005e5000-005ec000 rw-p 00000000 00:00 0                                  [heap]",
          "7ffd4358c000-7ffd4358e000 r-xp 00000000 00:00 0                          [vdso]"));
  Chain({});
  list = List();
  EXPECT_TRUE(list.complete()) << list.status;
  EXPECT_TRUE(list.maps.empty());
}

TEST_F(MapsListTest, Cycle) {
  const std::vector<FakeVma> vmas = {NewVma(0x1000, 0x2000, kVmRead),
                                     NewVma(0x3000, 0x4000, kVmRead)};
  Chain(vmas);
  SetNext(vmas[1], vmas[0].address);
  MapList list = List();
  EXPECT_EQ(list.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(list.status.message(), HasSubstr(Hex(vmas[0].address) + " (vm_next of " +
                                               Hex(vmas[1].address) + ") comes round again"));
  EXPECT_EQ(list.maps.size(), 2u);
}

TEST_F(MapsListTest, OutOfOrderForeignUnmappedAndLimit) {
  std::vector<FakeVma> vmas = {NewVma(0x3000, 0x4000, kVmRead), NewVma(0x1000, 0x2000, kVmRead)};
  Chain(vmas);
  EXPECT_THAT(List().status.message(), HasSubstr("overlaps or precedes"));

  vmas = {NewVma(0x1000, 0x2000, kVmRead), NewVma(0x3000, 0x4000, kVmRead, 0, 0, New("mm_struct"))};
  Chain(vmas);
  EXPECT_THAT(List().status.message(), HasSubstr("vm_mm is"));

  vmas = {NewVma(0x1000, 0x2000, kVmRead)};
  Chain(vmas);
  const uint64_t nowhere = memory_.Reserve(4096);
  SetNext(vmas[0], nowhere);
  MapList list = List();
  EXPECT_EQ(list.status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(list.status.message(), HasSubstr("vm_area_struct " + Hex(nowhere) + " (vm_next of " +
                                               Hex(vmas[0].address) + ")"));
  EXPECT_EQ(list.maps.size(), 1u);

  SetNext(vmas[0], 0x1234);  // not a kernel address
  EXPECT_EQ(List().status.code(), absl::StatusCode::kDataLoss);

  vmas.clear();
  for (uint64_t i = 0; i < 5; ++i)
    vmas.push_back(NewVma(0x1000 * (2 * i + 1), 0x1000 * (2 * i + 2), kVmRead));
  Chain(vmas);
  list = List(/*limit=*/3);
  EXPECT_EQ(list.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(list.maps.size(), 3u);
}

}  // namespace
}  // namespace vmi::os_linux
