#include "os/linux/maps.h"

#include <cstring>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "arch/amd64/paging.h"
#include "core/error.h"

namespace vmi::os_linux {
namespace {

// Kernel facts that are #defines, absent from the types:
// include/linux/mm.h VM_READ, VM_WRITE, VM_EXEC, VM_MAYSHARE; PAGE_SHIFT;
// include/linux/kdev_t.h MINORBITS; include/linux/maple_tree.h
// MAPLE_HEIGHT_MAX, MAPLE_NODE_MASK and the node-type bits of an encoded
// node pointer; XA_ZERO_ENTRY (xa_mk_internal(257)); NAME_MAX, PATH_MAX;
// ANON_VMA_NAME_MAX_LEN. All unchanged since the maple tree came in (6.1).
constexpr uint64_t kVmRead = 0x1, kVmWrite = 0x2, kVmExec = 0x4, kVmMayShare = 0x80;
constexpr uint64_t kPageShift = 12;
constexpr uint32_t kMinorBits = 20;
constexpr int kMapleHeightMax = 31;
constexpr uint64_t kMapleNodeMask = 0xff;
constexpr uint64_t kMapleTypeShift = 3, kMapleTypeMask = 0xf;
constexpr uint64_t kXaZeroEntry = (257 << 2) | 2;
constexpr uint32_t kNameMax = 255;
constexpr size_t kPathMax = 4096;
constexpr size_t kAnonNameMax = 80;
// dynamic_dname()'s buffer (fs/d_path.c): longer names fail in the kernel.
constexpr size_t kDynamicNameMax = 64;
// Our bound on a vm_special_mapping's name ("[vdso]", "[vvar]", "[uprobes]").
constexpr size_t kSpecialNameMax = 256;
constexpr uint64_t kMaxNodeSize = 4096;

// The offset of a member whose size the code relies on.
absl::StatusOr<uint64_t> Member(const KernelTypes& types, absl::string_view type,
                                absl::string_view path, uint64_t size) {
  VMI_ASSIGN_OR_RETURN(FieldInfo f, types.Field(type, path));
  if (f.is_bitfield() || f.size != size) {
    return absl::UnimplementedError(
        absl::StrFormat("%s.%s is %u bytes%s; the maps code reads it as %u", type, path, f.size,
                        f.is_bitfield() ? " (a bitfield)" : "", size));
  }
  return f.offset;
}

bool Has(const KernelTypes& types, absl::string_view type, absl::string_view path) {
  return types.Field(type, path).ok();
}

// An array of 8-byte elements: its offset and length.
absl::Status Array(const KernelTypes& types, absl::string_view type, absl::string_view path,
                   uint64_t* offset, uint32_t* count) {
  VMI_ASSIGN_OR_RETURN(FieldInfo f, types.Field(type, path));
  VMI_ASSIGN_OR_RETURN(TypeInfo array, types.Describe(f.type));
  if (array.kind != TypeKind::kArray || array.count == 0 || f.size != array.count * 8) {
    return absl::UnimplementedError(
        absl::StrFormat("%s.%s is %s; the maps code expects an array of 8-byte elements", type,
                        path, types.TypeName(f.type)));
  }
  *offset = f.offset;
  *count = static_cast<uint32_t>(array.count);
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> MapleType(const KernelTypes& types, absl::string_view name) {
  VMI_ASSIGN_OR_RETURN(int64_t value, types.EnumValue(name));
  if (value < 0 || static_cast<uint64_t>(value) > kMapleTypeMask) {
    return absl::UnimplementedError(absl::StrFormat(
        "enum maple_type: %s is %d, beyond the 4 bits a node pointer holds", name, value));
  }
  return static_cast<uint32_t>(value);
}

absl::Status MapleNodeArrays(const KernelTypes& types, absl::string_view prefix, uint64_t node_size,
                             MapsLayout::MapleNode* n) {
  VMI_RETURN_IF_ERROR(
      Array(types, "maple_node", absl::StrCat(prefix, "pivot"), &n->pivot, &n->pivots));
  VMI_RETURN_IF_ERROR(
      Array(types, "maple_node", absl::StrCat(prefix, "slot"), &n->slot, &n->slots));
  VMI_ASSIGN_OR_RETURN(n->meta_end,
                       Member(types, "maple_node", absl::StrCat(prefix, "meta.end"), 1));
  n->has_meta = true;
  if (n->slots != n->pivots + 1 || n->pivot + 8 * n->pivots > node_size ||
      n->slot + 8 * n->slots > node_size || n->meta_end >= node_size) {
    return absl::UnimplementedError(
        absl::StrFormat("maple_node.%s: %u pivots and %u slots do not fit a %u-byte node", prefix,
                        n->pivots, n->slots, node_size));
  }
  return absl::OkStatus();
}

// xa_is_node(): ma_root holding a node (tagged MAPLE_ROOT_NODE), not an entry.
bool IsNode(uint64_t entry) { return (entry & 3) == 2 && entry > 4096; }

uint64_t Load64(absl::Span<const uint8_t> bytes, uint64_t offset) {
  uint64_t v;
  std::memcpy(&v, bytes.data() + offset, sizeof(v));
  return v;
}

// mangle_path(..., "\n") as seq_file_path applies it.
std::string MangleNewlines(std::string path) {
  if (path.find('\n') == std::string::npos) return path;
  std::string out;
  for (char c : path) {
    if (c == '\n') {
      out += "\\012";
    } else {
      out += c;
    }
  }
  return out;
}

// Where a VMA or node pointer was found, for errors.
struct Where {
  uint64_t parent = 0;  // maple node, or the previous VMA of the list (0: the mm itself)
  int slot = -1;        // slot in `parent`, -1 on the mmap list
};

class MapsReader {
 public:
  MapsReader(const KernelAccess& access, const MapsLayout& l, uint64_t mm, size_t limit,
             std::vector<MemoryMap>& out)
      : access_(access), l_(l), mm_(mm), limit_(limit), out_(out) {}

  absl::Status Run() {
    for (auto [offset, out, what] : {std::tuple{l_.mm_start_brk, &start_brk_, "start_brk"},
                                     std::tuple{l_.mm_brk, &brk_, "brk"},
                                     std::tuple{l_.mm_start_stack, &start_stack_, "start_stack"}}) {
      absl::StatusOr<uint64_t> v = access_.U64(mm_ + offset);
      if (!v.ok()) {
        return AnnotateStatus(v.status(), absl::StrFormat("mm_struct at 0x%x: %s", mm_, what));
      }
      *out = *v;
    }
    const LinuxKernel& kernel = access_.kernel();
    special_mapping_name_ = kernel.symbols.Address("special_mapping_name");
    // anon_vma_name() is NULL without CONFIG_ANON_VMA_NAME, although 6.1
    // keeps the member; the kernel's own anon_vma_name_alloc says which.
    anon_names_ = l_.anon_name.has_value() &&
                  (!kernel.symbols_status.ok() || kernel.symbols.Address("anon_vma_name_alloc"));
    return l_.maple_tree ? WalkTree() : WalkList();
  }

 private:
  struct Vma {
    uint64_t address, start, end, mm, flags, pgoff, file, ops, private_data, next, anon_name;
  };

  std::string Describe(const Where& w) const {
    if (w.slot >= 0) return absl::StrFormat("slot %d of maple node 0x%x", w.slot, w.parent);
    if (w.parent != 0) return absl::StrFormat("vm_next of 0x%x", w.parent);
    return absl::StrFormat("%s of mm_struct 0x%x", l_.maple_tree ? "mm_mt.ma_root" : "mmap", mm_);
  }

  absl::Status WalkTree() {
    absl::StatusOr<uint64_t> root = access_.U64(mm_ + l_.mm_mt + l_.ma_root);
    if (!root.ok()) {
      return AnnotateStatus(root.status(),
                            absl::StrFormat("mm_struct at 0x%x: mm_mt.ma_root", mm_));
    }
    if (*root == 0) return absl::OkStatus();
    if (IsNode(*root)) return WalkNode(*root, 0, ~uint64_t{0}, 1, Where{});
    // A tree of one entry keeps it in the root itself.
    return AddVma(*root, Where{}).status();
  }

  absl::Status WalkNode(uint64_t entry, uint64_t min, uint64_t max, int depth, const Where& where) {
    const uint64_t node = entry & ~kMapleNodeMask;
    const uint32_t type = (entry >> kMapleTypeShift) & kMapleTypeMask;
    if (depth > kMapleHeightMax) {
      return absl::DataLossError(absl::StrFormat(
          "maple tree of mm_struct 0x%x: node 0x%x (%s) is at depth %d, deeper than "
          "MAPLE_HEIGHT_MAX %d",
          mm_, node, Describe(where), depth, kMapleHeightMax));
    }
    if (!IsKernelAddress(node, access_.kernel().paging)) {
      return absl::DataLossError(absl::StrFormat(
          "%s holds 0x%x: not a maple node at a canonical kernel address", Describe(where), entry));
    }
    if (!visited_.insert(node).second) {
      return absl::DataLossError(absl::StrFormat(
          "maple node 0x%x (%s) was reached before: the tree of mm_struct 0x%x has a cycle or a "
          "shared node",
          node, Describe(where), mm_));
    }
    if (visited_.size() > limit_) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "maple tree of mm_struct 0x%x: more than %u nodes; stopped there", mm_, limit_));
    }
    std::vector<uint8_t> bytes(l_.node_size);
    if (absl::Status s = access_.Read(node, absl::MakeSpan(bytes)); !s.ok()) {
      return AnnotateStatus(s, absl::StrFormat("maple node 0x%x (%s)", node, Describe(where)));
    }
    if (type == l_.type_dense) return WalkLeaf(node, bytes, l_.dense, l_.dense.slots - 1);
    const bool arange = type == l_.type_arange_64;
    if (type != l_.type_leaf_64 && type != l_.type_range_64 && !arange) {
      return absl::DataLossError(
          absl::StrFormat("maple node 0x%x (%s) has type %u, which enum maple_type does not have",
                          node, Describe(where), type));
    }
    const MapsLayout::MapleNode& kind = arange ? l_.arange_64 : l_.range_64;
    VMI_ASSIGN_OR_RETURN(const uint32_t end, DataEnd(node, bytes, kind, arange, max));
    if (type == l_.type_leaf_64) return WalkLeaf(node, bytes, kind, end);

    uint64_t child_min = min;
    for (uint32_t i = 0; i <= end; ++i) {
      const uint64_t child_max = i < end ? Load64(bytes, kind.pivot + 8 * i) : max;
      if (i < end && (child_max < child_min || child_max >= max)) {
        return absl::DataLossError(absl::StrFormat(
            "maple node 0x%x: pivot %u is 0x%x, outside 0x%x..0x%x (pivots out of order)", node, i,
            child_max, child_min, max));
      }
      const uint64_t child = Load64(bytes, kind.slot + 8 * i);
      // Children are encoded nodes (mt_mk_node(): address | type << 3 |
      // MAPLE_ENODE_NULL), without the root's MAPLE_ROOT_NODE tag.
      if (child == 0) {
        return absl::DataLossError(
            absl::StrFormat("slot %u of internal maple node 0x%x is empty", i, node));
      }
      VMI_RETURN_IF_ERROR(WalkNode(child, child_min, child_max, depth + 1, Where{node, int(i)}));
      child_min = child_max + 1;
    }
    return absl::OkStatus();
  }

  // ma_data_end(): the last slot in use.
  absl::StatusOr<uint32_t> DataEnd(uint64_t node, absl::Span<const uint8_t> bytes,
                                   const MapsLayout::MapleNode& kind, bool arange, uint64_t max) {
    uint32_t end;
    const uint64_t last_pivot = Load64(bytes, kind.pivot + 8 * (kind.pivots - 1));
    if (arange || last_pivot == 0) {
      end = bytes[kind.meta_end];
    } else if (last_pivot == max) {
      end = kind.pivots - 1;
    } else {
      end = kind.pivots;
    }
    if (end >= kind.slots) {
      return absl::DataLossError(
          absl::StrFormat("maple node 0x%x: its metadata says %u slots are in use, of %u", node,
                          end + 1, kind.slots));
    }
    return end;
  }

  absl::Status WalkLeaf(uint64_t node, absl::Span<const uint8_t> bytes,
                        const MapsLayout::MapleNode& kind, uint32_t end) {
    uint64_t previous = 0;
    for (uint32_t i = 0; i <= end; ++i) {
      const uint64_t entry = Load64(bytes, kind.slot + 8 * i);
      // A dense node holds one entry per index: a VMA fills consecutive slots.
      if (entry == 0 || entry == kXaZeroEntry || entry == previous) continue;
      previous = entry;
      VMI_RETURN_IF_ERROR(AddVma(entry, Where{node, int(i)}).status());
    }
    return absl::OkStatus();
  }

  absl::Status WalkList() {
    absl::StatusOr<uint64_t> first = access_.U64(mm_ + l_.mm_mmap);
    if (!first.ok()) {
      return AnnotateStatus(first.status(), absl::StrFormat("mm_struct at 0x%x: mmap", mm_));
    }
    absl::flat_hash_set<uint64_t> seen;
    Where where;
    for (uint64_t vma = *first; vma != 0;) {
      if (!seen.insert(vma).second) {
        return absl::DataLossError(absl::StrFormat(
            "mmap list of mm_struct 0x%x: vm_area_struct 0x%x (%s) comes round again (a cycle)",
            mm_, vma, Describe(where)));
      }
      VMI_ASSIGN_OR_RETURN(const uint64_t next, AddVma(vma, where));
      where = Where{vma, -1};
      vma = next;
    }
    return absl::OkStatus();
  }

  // Reads, checks and names the VMA at `address`; returns its vm_next.
  absl::StatusOr<uint64_t> AddVma(uint64_t address, const Where& where) {
    if (!IsKernelAddress(address, access_.kernel().paging) || address % 8 != 0) {
      return absl::DataLossError(
          absl::StrFormat("%s holds 0x%x: not a vm_area_struct at a canonical kernel address",
                          Describe(where), address));
    }
    if (out_.size() == limit_) {
      return absl::ResourceExhaustedError(
          absl::StrFormat("mm_struct 0x%x: more than %u VMAs; stopped there", mm_, limit_));
    }
    std::vector<uint8_t> bytes(l_.vma_size);
    if (absl::Status s = access_.Read(address, absl::MakeSpan(bytes)); !s.ok()) {
      return AnnotateStatus(s,
                            absl::StrFormat("vm_area_struct 0x%x (%s)", address, Describe(where)));
    }
    Vma v{.address = address,
          .start = Load64(bytes, l_.vm_start),
          .end = Load64(bytes, l_.vm_end),
          .mm = Load64(bytes, l_.vm_mm),
          .flags = Load64(bytes, l_.vm_flags),
          .pgoff = Load64(bytes, l_.vm_pgoff),
          .file = Load64(bytes, l_.vm_file),
          .ops = Load64(bytes, l_.vm_ops),
          .private_data = Load64(bytes, l_.vm_private_data),
          .next = l_.maple_tree ? 0 : Load64(bytes, l_.vm_next),
          .anon_name = l_.anon_name ? Load64(bytes, *l_.anon_name) : 0};
    // vm_mm pointing back rejects most garbage taken for a VMA.
    if (v.mm != mm_) {
      return absl::DataLossError(
          absl::StrFormat("vm_area_struct 0x%x (%s): vm_mm is 0x%x, not the mm_struct 0x%x",
                          address, Describe(where), v.mm, mm_));
    }
    if (v.start >= v.end) {
      return absl::DataLossError(
          absl::StrFormat("vm_area_struct 0x%x (%s): vm_start 0x%x is not below vm_end 0x%x",
                          address, Describe(where), v.start, v.end));
    }
    if (v.start < previous_end_) {
      return absl::DataLossError(absl::StrFormat(
          "vm_area_struct 0x%x (%s): 0x%x-0x%x overlaps or precedes the VMA before it, which "
          "ends at 0x%x",
          address, Describe(where), v.start, v.end, previous_end_));
    }
    MemoryMap m;
    m.vma = address;
    m.start = v.start;
    m.end = v.end;
    m.flags = v.flags;
    m.file = v.file;
    if (absl::Status s = Name(v, m); !s.ok()) {
      return AnnotateStatus(s, absl::StrFormat("vm_area_struct 0x%x", address));
    }
    previous_end_ = v.end;
    out_.push_back(std::move(m));
    return v.next;
  }

  // show_map_vma() of fs/proc/task_mmu.c (6.1).
  absl::Status Name(const Vma& v, MemoryMap& m) {
    if (v.file != 0) {
      VMI_ASSIGN_OR_RETURN(const uint64_t inode,
                           Pointer(v.file + l_.f_inode, "file", v.file, "f_inode"));
      VMI_ASSIGN_OR_RETURN(const uint64_t sb, Pointer(inode + l_.i_sb, "inode", inode, "i_sb"));
      VMI_ASSIGN_OR_RETURN(const uint32_t dev, Read32(sb + l_.s_dev, "super_block", sb, "s_dev"));
      VMI_ASSIGN_OR_RETURN(m.inode, Read64(inode + l_.i_ino, "inode", inode, "i_ino"));
      m.dev_major = dev >> kMinorBits;
      m.dev_minor = dev & ((1u << kMinorBits) - 1);
      m.offset = v.pgoff << kPageShift;
      if (anon_names_ && !l_.anon_name_file_only && v.anon_name != 0) {
        VMI_ASSIGN_OR_RETURN(std::string name, AnonName(v.anon_name));
        m.name = absl::StrCat("[anon_shmem:", name, "]");
        return absl::OkStatus();
      }
      VMI_ASSIGN_OR_RETURN(std::string path, FilePath(v.file));
      m.name = MangleNewlines(std::move(path));
      return absl::OkStatus();
    }
    if (v.ops != 0) {
      VMI_ASSIGN_OR_RETURN(const uint64_t name_fn,
                           Read64(v.ops + l_.vm_ops_name, "vm_operations_struct", v.ops, "name"));
      if (name_fn != 0) {
        if (!special_mapping_name_ || name_fn != *special_mapping_name_) {
          return absl::UnimplementedError(absl::StrFormat(
              "vm_ops->name is %s, which this reader does not emulate (only special_mapping_name)",
              SymbolName(name_fn)));
        }
        if (v.private_data != 0) {
          VMI_ASSIGN_OR_RETURN(const uint64_t name,
                               Read64(v.private_data + l_.special_mapping_name,
                                      "vm_special_mapping", v.private_data, "name"));
          if (name != 0) {
            absl::StatusOr<std::string> text = access_.CString(name, kSpecialNameMax);
            if (!text.ok()) {
              return AnnotateStatus(
                  text.status(), absl::StrFormat("vm_special_mapping 0x%x: name", v.private_data));
            }
            m.name = *std::move(text);
            return absl::OkStatus();
          }
        }
      }
    }
    if (v.start <= brk_ && v.end >= start_brk_) {
      m.name = "[heap]";
    } else if (v.start <= start_stack_ && v.end >= start_stack_) {
      m.name = "[stack]";
    } else if (anon_names_ && v.anon_name != 0) {
      VMI_ASSIGN_OR_RETURN(std::string name, AnonName(v.anon_name));
      m.name = absl::StrCat("[anon:", name, "]");
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> AnonName(uint64_t anon_name) {
    absl::StatusOr<std::string> name =
        access_.CString(anon_name + l_.anon_vma_name_name, kAnonNameMax);
    if (!name.ok()) {
      return AnnotateStatus(name.status(), absl::StrFormat("anon_vma_name 0x%x", anon_name));
    }
    return name;
  }

  // d_path(&file->f_path), before seq_file_path() escapes newlines.
  absl::StatusOr<std::string> FilePath(uint64_t file) {
    VMI_ASSIGN_OR_RETURN(uint64_t vfsmount,
                         Pointer(file + l_.f_path_mnt, "file", file, "f_path.mnt"));
    VMI_ASSIGN_OR_RETURN(uint64_t dentry,
                         Pointer(file + l_.f_path_dentry, "file", file, "f_path.dentry"));
    VMI_ASSIGN_OR_RETURN(uint64_t parent,
                         Pointer(dentry + l_.d_parent, "dentry", dentry, "d_parent"));
    VMI_ASSIGN_OR_RETURN(uint64_t mnt_root,
                         Pointer(vfsmount + l_.mnt_root, "vfsmount", vfsmount, "mnt_root"));
    // Synthetic filesystems name their files themselves, unless mounted.
    VMI_ASSIGN_OR_RETURN(const uint64_t d_op, Read64(dentry + l_.d_op, "dentry", dentry, "d_op"));
    if (d_op != 0) {
      VMI_ASSIGN_OR_RETURN(const uint64_t d_dname,
                           Read64(d_op + l_.d_dname, "dentry_operations", d_op, "d_dname"));
      if (d_dname != 0 && (parent != dentry || dentry != mnt_root)) {
        return DynamicName(d_dname, dentry);
      }
    }
    VMI_ASSIGN_OR_RETURN(const uint64_t pprev,
                         Read64(dentry + l_.d_hash_pprev, "dentry", dentry, "d_hash.pprev"));
    const bool unlinked = pprev == 0 && parent != dentry;  // d_unlinked()
    const size_t suffix = unlinked ? 11 : 1;               // " (deleted)" or the NUL

    // prepend_path() up to the global root, crossing mounts.
    std::vector<std::string> names;
    size_t bytes = suffix;
    uint64_t mount = vfsmount - l_.mount_mnt;
    uint64_t d = dentry;
    for (size_t steps = 0;; ++steps) {
      if (steps == kPathMax) {
        return absl::DataLossError(absl::StrFormat(
            "path of dentry 0x%x: more than %u steps towards the root (a dentry or mount loop)",
            dentry, kPathMax));
      }
      if (d == mnt_root) {
        VMI_ASSIGN_OR_RETURN(const uint64_t up,
                             Pointer(mount + l_.mnt_parent, "mount", mount, "mnt_parent"));
        if (up == mount) break;  // the global root
        VMI_ASSIGN_OR_RETURN(d,
                             Pointer(mount + l_.mnt_mountpoint, "mount", mount, "mnt_mountpoint"));
        mount = up;
        VMI_ASSIGN_OR_RETURN(
            mnt_root, Pointer(mount + l_.mount_mnt + l_.mnt_root, "mount", mount, "mnt.mnt_root"));
        continue;
      }
      VMI_ASSIGN_OR_RETURN(const uint64_t up, Pointer(d + l_.d_parent, "dentry", d, "d_parent"));
      if (up == d) {  // escaped its mount: the kernel gives "/"
        names.clear();
        bytes = suffix;
        break;
      }
      VMI_ASSIGN_OR_RETURN(std::string name, DentryName(d, &bytes));
      if (bytes > kPathMax) {
        return absl::DataLossError(absl::StrFormat(
            "path of dentry 0x%x: longer than PATH_MAX %u bytes at dentry 0x%x (a dentry loop?)",
            dentry, kPathMax, d));
      }
      names.push_back(std::move(name));
      d = up;
    }
    std::string path;
    for (auto it = names.rbegin(); it != names.rend(); ++it) absl::StrAppend(&path, "/", *it);
    if (path.empty()) path = "/";
    if (unlinked) path += " (deleted)";
    return path;
  }

  // dentry->d_name, cut at a NUL as prepend_name() does; adds the bytes the
  // kernel reserves for it ('/' and d_name.len) to `*bytes`.
  absl::StatusOr<std::string> DentryName(uint64_t dentry, size_t* bytes) {
    VMI_ASSIGN_OR_RETURN(const uint32_t len,
                         Read32(dentry + l_.d_name_len, "dentry", dentry, "d_name.len"));
    if (len > kNameMax) {
      return absl::DataLossError(absl::StrFormat(
          "dentry 0x%x: d_name.len is %u, beyond NAME_MAX %u", dentry, len, kNameMax));
    }
    VMI_ASSIGN_OR_RETURN(const uint64_t name,
                         Pointer(dentry + l_.d_name_name, "dentry", dentry, "d_name.name"));
    std::string text(len, '\0');
    if (absl::Status s =
            access_.Read(name, absl::MakeSpan(reinterpret_cast<uint8_t*>(text.data()), len));
        !s.ok()) {
      return AnnotateStatus(s, absl::StrFormat("dentry 0x%x: d_name.name", dentry));
    }
    text.resize(strnlen(text.data(), len));
    if (bytes != nullptr) *bytes += len + 1;
    return text;
  }

  // The d_dname() functions of the pseudo filesystems whose files get mapped.
  absl::StatusOr<std::string> DynamicName(uint64_t d_dname, uint64_t dentry) {
    const SymbolTable& symbols = access_.kernel().symbols;
    auto is = [&](absl::string_view name) { return symbols.Address(name) == d_dname; };
    if (is("simple_dname")) {  // shmem and other alloc_file_pseudo() files
      VMI_ASSIGN_OR_RETURN(std::string name, DentryName(dentry, nullptr));
      return absl::StrCat("/", name, " (deleted)");
    }
    if (is("anon_inodefs_dname")) {
      VMI_ASSIGN_OR_RETURN(const uint64_t name,
                           Pointer(dentry + l_.d_name_name, "dentry", dentry, "d_name.name"));
      absl::StatusOr<std::string> text = access_.CString(name, kDynamicNameMax);
      if (!text.ok()) {
        return AnnotateStatus(text.status(), absl::StrFormat("dentry 0x%x: d_name.name", dentry));
      }
      std::string out = absl::StrCat("anon_inode:", *text);
      if (out.size() >= kDynamicNameMax) {
        return absl::OutOfRangeError(absl::StrFormat(
            "dentry 0x%x: \"%s...\" is longer than dynamic_dname() can print", dentry, out));
      }
      return out;
    }
    const bool pipe = is("pipefs_dname");
    if (pipe || is("sockfs_dname")) {
      VMI_ASSIGN_OR_RETURN(const uint64_t inode,
                           Pointer(dentry + l_.d_inode, "dentry", dentry, "d_inode"));
      VMI_ASSIGN_OR_RETURN(const uint64_t ino, Read64(inode + l_.i_ino, "inode", inode, "i_ino"));
      return absl::StrFormat("%s:[%u]", pipe ? "pipe" : "socket", ino);
    }
    return absl::UnimplementedError(
        absl::StrFormat("dentry 0x%x: its d_dname is %s, which this reader does not emulate",
                        dentry, SymbolName(d_dname)));
  }

  std::string SymbolName(uint64_t address) const {
    if (std::optional<SymbolOffset> s = access_.kernel().symbols.Symbolize(address)) {
      return absl::StrFormat("%s (0x%x)", s->ToString(), address);
    }
    return absl::StrFormat("0x%x", address);
  }

  absl::StatusOr<uint64_t> Read64(uint64_t va, const char* type, uint64_t object,
                                  const char* member) {
    absl::StatusOr<uint64_t> v = access_.U64(va);
    if (!v.ok()) {
      return AnnotateStatus(v.status(), absl::StrFormat("%s 0x%x: %s", type, object, member));
    }
    return v;
  }
  absl::StatusOr<uint32_t> Read32(uint64_t va, const char* type, uint64_t object,
                                  const char* member) {
    absl::StatusOr<uint32_t> v = access_.U32(va);
    if (!v.ok()) {
      return AnnotateStatus(v.status(), absl::StrFormat("%s 0x%x: %s", type, object, member));
    }
    return v;
  }
  // A pointer member that must point into the kernel.
  absl::StatusOr<uint64_t> Pointer(uint64_t va, const char* type, uint64_t object,
                                   const char* member) {
    VMI_ASSIGN_OR_RETURN(const uint64_t v, Read64(va, type, object, member));
    if (!IsKernelAddress(v, access_.kernel().paging)) {
      return absl::DataLossError(absl::StrFormat(
          "%s 0x%x: %s is 0x%x, not a canonical kernel address", type, object, member, v));
    }
    return v;
  }

  const KernelAccess& access_;
  const MapsLayout& l_;
  const uint64_t mm_;
  const size_t limit_;
  std::vector<MemoryMap>& out_;
  uint64_t start_brk_ = 0, brk_ = 0, start_stack_ = 0;
  std::optional<uint64_t> special_mapping_name_;
  bool anon_names_ = false;
  absl::flat_hash_set<uint64_t> visited_;
  uint64_t previous_end_ = 0;
};

}  // namespace

absl::StatusOr<MapsLayout> MapsLayout::Resolve(const KernelTypes& types) {
  MapsLayout l;
  VMI_ASSIGN_OR_RETURN(l.mm_start_brk, Member(types, "mm_struct", "start_brk", 8));
  VMI_ASSIGN_OR_RETURN(l.mm_brk, Member(types, "mm_struct", "brk", 8));
  VMI_ASSIGN_OR_RETURN(l.mm_start_stack, Member(types, "mm_struct", "start_stack", 8));
  l.maple_tree = Has(types, "mm_struct", "mm_mt");
  if (l.maple_tree) {
    VMI_ASSIGN_OR_RETURN(l.mm_mt, types.OffsetOf("mm_struct", "mm_mt"));
    VMI_ASSIGN_OR_RETURN(l.ma_root, Member(types, "maple_tree", "ma_root", 8));
    VMI_ASSIGN_OR_RETURN(l.node_size, types.SizeOf("maple_node"));
    if (l.node_size == 0 || l.node_size > kMaxNodeSize) {
      return absl::UnimplementedError(absl::StrFormat("maple_node is %u bytes", l.node_size));
    }
    VMI_ASSIGN_OR_RETURN(l.type_dense, MapleType(types, "maple_dense"));
    VMI_ASSIGN_OR_RETURN(l.type_leaf_64, MapleType(types, "maple_leaf_64"));
    VMI_ASSIGN_OR_RETURN(l.type_range_64, MapleType(types, "maple_range_64"));
    VMI_ASSIGN_OR_RETURN(l.type_arange_64, MapleType(types, "maple_arange_64"));
    VMI_RETURN_IF_ERROR(Array(types, "maple_node", "slot", &l.dense.slot, &l.dense.slots));
    VMI_RETURN_IF_ERROR(MapleNodeArrays(types, "mr64.", l.node_size, &l.range_64));
    VMI_RETURN_IF_ERROR(MapleNodeArrays(types, "ma64.", l.node_size, &l.arange_64));
  } else {
    VMI_ASSIGN_OR_RETURN(l.mm_mmap, Member(types, "mm_struct", "mmap", 8));
    VMI_ASSIGN_OR_RETURN(l.vm_next, Member(types, "vm_area_struct", "vm_next", 8));
  }

  VMI_ASSIGN_OR_RETURN(l.vma_size, types.SizeOf("vm_area_struct"));
  VMI_ASSIGN_OR_RETURN(l.vm_start, Member(types, "vm_area_struct", "vm_start", 8));
  VMI_ASSIGN_OR_RETURN(l.vm_end, Member(types, "vm_area_struct", "vm_end", 8));
  VMI_ASSIGN_OR_RETURN(l.vm_mm, Member(types, "vm_area_struct", "vm_mm", 8));
  VMI_ASSIGN_OR_RETURN(l.vm_flags, Member(types, "vm_area_struct", "vm_flags", 8));
  VMI_ASSIGN_OR_RETURN(l.vm_pgoff, Member(types, "vm_area_struct", "vm_pgoff", 8));
  VMI_ASSIGN_OR_RETURN(l.vm_file, Member(types, "vm_area_struct", "vm_file", 8));
  VMI_ASSIGN_OR_RETURN(l.vm_ops, Member(types, "vm_area_struct", "vm_ops", 8));
  VMI_ASSIGN_OR_RETURN(l.vm_private_data, Member(types, "vm_area_struct", "vm_private_data", 8));
  if (Has(types, "vm_area_struct", "anon_name")) {
    VMI_ASSIGN_OR_RETURN(l.anon_name, Member(types, "vm_area_struct", "anon_name", 8));
    VMI_ASSIGN_OR_RETURN(l.anon_vma_name_name, types.OffsetOf("anon_vma_name", "name"));
    // 6.1 overlays it on `shared` (file mappings only); later kernels keep
    // it apart and name shmem mappings with it too.
    absl::StatusOr<uint64_t> shared = types.OffsetOf("vm_area_struct", "shared");
    l.anon_name_file_only = shared.ok() && *shared == *l.anon_name;
  }
  for (uint64_t offset : {l.vm_start, l.vm_end, l.vm_mm, l.vm_flags, l.vm_pgoff, l.vm_file,
                          l.vm_ops, l.vm_private_data, l.vm_next, l.anon_name.value_or(0)}) {
    if (offset + 8 > l.vma_size || l.vma_size > kMaxNodeSize) {
      return absl::UnimplementedError(absl::StrFormat(
          "vm_area_struct is %u bytes, a member at %u does not fit", l.vma_size, offset));
    }
  }
  VMI_ASSIGN_OR_RETURN(l.vm_ops_name, Member(types, "vm_operations_struct", "name", 8));
  VMI_ASSIGN_OR_RETURN(l.special_mapping_name, Member(types, "vm_special_mapping", "name", 8));

  VMI_ASSIGN_OR_RETURN(l.f_path_mnt, Member(types, "file", "f_path.mnt", 8));
  VMI_ASSIGN_OR_RETURN(l.f_path_dentry, Member(types, "file", "f_path.dentry", 8));
  VMI_ASSIGN_OR_RETURN(l.f_inode, Member(types, "file", "f_inode", 8));
  VMI_ASSIGN_OR_RETURN(l.i_sb, Member(types, "inode", "i_sb", 8));
  VMI_ASSIGN_OR_RETURN(l.i_ino, Member(types, "inode", "i_ino", 8));
  VMI_ASSIGN_OR_RETURN(l.s_dev, Member(types, "super_block", "s_dev", 4));
  VMI_ASSIGN_OR_RETURN(l.d_parent, Member(types, "dentry", "d_parent", 8));
  VMI_ASSIGN_OR_RETURN(l.d_name_len, Member(types, "dentry", "d_name.len", 4));
  VMI_ASSIGN_OR_RETURN(l.d_name_name, Member(types, "dentry", "d_name.name", 8));
  VMI_ASSIGN_OR_RETURN(l.d_hash_pprev, Member(types, "dentry", "d_hash.pprev", 8));
  VMI_ASSIGN_OR_RETURN(l.d_op, Member(types, "dentry", "d_op", 8));
  VMI_ASSIGN_OR_RETURN(l.d_inode, Member(types, "dentry", "d_inode", 8));
  VMI_ASSIGN_OR_RETURN(l.d_dname, Member(types, "dentry_operations", "d_dname", 8));
  VMI_ASSIGN_OR_RETURN(l.mnt_root, Member(types, "vfsmount", "mnt_root", 8));
  VMI_ASSIGN_OR_RETURN(l.mount_mnt, types.OffsetOf("mount", "mnt"));
  VMI_ASSIGN_OR_RETURN(l.mnt_parent, Member(types, "mount", "mnt_parent", 8));
  VMI_ASSIGN_OR_RETURN(l.mnt_mountpoint, Member(types, "mount", "mnt_mountpoint", 8));
  return l;
}

std::string MemoryMap::Permissions() const {
  return {flags & kVmRead ? 'r' : '-', flags & kVmWrite ? 'w' : '-', flags & kVmExec ? 'x' : '-',
          flags & kVmMayShare ? 's' : 'p'};
}

std::string MemoryMap::ToProcLine() const {
  // show_vma_header_prefix(), then seq_pad() to 25 + 8 * 6 - 1 columns and
  // one space before the name.
  constexpr size_t kNameColumn = 25 + 8 * 6 - 1;
  std::string line = absl::StrFormat("%08x-%08x %s %08x %02x:%02x %u ", start, end, Permissions(),
                                     offset, dev_major, dev_minor, inode);
  if (!name.empty()) {
    if (line.size() < kNameColumn) line.append(kNameColumn - line.size(), ' ');
    line += ' ';
    line += name;
  }
  return line;
}

MapList ListMaps(const KernelAccess& access, const MapsLayout& layout, uint64_t mm, size_t limit) {
  MapList out;
  out.status = MapsReader(access, layout, mm, limit, out.maps).Run();
  return out;
}

}  // namespace vmi::os_linux
