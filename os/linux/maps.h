// Memory maps of a Linux process, what /proc/PID/maps shows, read from its
// mm_struct with offsets from the kernel's types: the VMAs from the maple
// tree mm->mm_mt (kernels >= 6.1) or the older mm->mmap list, each with its
// range, flags and file, and its name as fs/proc/task_mmu.c prints it (the
// file's path as d_path builds it, [heap], [stack], [vdso], [anon:...]).
//
// Everything read is guest data. The tree walk is bounded (height, nodes,
// entries), visits no node twice, takes only tagged node pointers and
// canonical kernel addresses, and accepts a VMA only if it points back at
// the mm and starts at or after the end of the one before it. A walk that
// breaks part-way returns the maps before the break and the reason
// (MapList::status), never a hang or an unbounded allocation.
//
// Paths are built up to the global root (the reader's chroot is not
// known); a file whose dentry has its own d_dname is named as the kernel's
// simple_dname, anon_inodefs_dname, pipefs_dname and sockfs_dname would
// name it, any other d_dname is an Unimplemented error.
//
// Thread-safety: stateless functions over a KernelAccess; thread-compatible.

#ifndef VMI_OS_LINUX_MAPS_H_
#define VMI_OS_LINUX_MAPS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "os/linux/kernel_access.h"
#include "os/linux/types.h"

namespace vmi::os_linux {

// No mm has more VMAs than this (vm.max_map_count defaults to 65530).
inline constexpr size_t kMaxMaps = size_t{1} << 20;

// Offsets of what the maps code reads, resolved once from the types.
// Alternatives are chosen by which members the kernel has.
struct MapsLayout {
  // Where one kind of maple node keeps its pivots, slots and metadata.
  struct MapleNode {
    uint64_t pivot = 0, slot = 0, meta_end = 0;
    uint32_t pivots = 0, slots = 0;  // array lengths
    bool has_meta = false;
  };

  // mm_struct: the maple tree mm_mt (6.1+), else the mmap list.
  bool maple_tree = true;
  uint64_t mm_mt = 0, mm_mmap = 0, mm_start_brk = 0, mm_brk = 0, mm_start_stack = 0;

  // The maple tree: maple_tree.ma_root, sizeof(maple_node), enum
  // maple_type's values, and each node kind's arrays.
  uint64_t ma_root = 0, node_size = 0;
  uint32_t type_dense = 0, type_leaf_64 = 0, type_range_64 = 0, type_arange_64 = 0;
  MapleNode dense, range_64, arange_64;

  // vm_area_struct.
  uint64_t vma_size = 0, vm_start = 0, vm_end = 0, vm_mm = 0, vm_flags = 0, vm_pgoff = 0,
           vm_file = 0, vm_ops = 0, vm_private_data = 0, vm_next = 0;
  // vm_area_struct.anon_name and anon_vma_name.name. In 6.1 anon_name
  // shares a union with `shared` and is meaningful only without a file.
  std::optional<uint64_t> anon_name;
  bool anon_name_file_only = true;
  uint64_t anon_vma_name_name = 0;
  // vm_operations_struct.name, vm_special_mapping.name.
  uint64_t vm_ops_name = 0, special_mapping_name = 0;

  // struct file, inode, super_block.
  uint64_t f_path_mnt = 0, f_path_dentry = 0, f_inode = 0, i_sb = 0, i_ino = 0, s_dev = 0;
  // struct dentry and dentry_operations.d_dname.
  uint64_t d_parent = 0, d_name_len = 0, d_name_name = 0, d_hash_pprev = 0, d_op = 0, d_inode = 0,
           d_dname = 0;
  // vfsmount.mnt_root; struct mount: the vfsmount inside it, mnt_parent,
  // mnt_mountpoint.
  uint64_t mnt_root = 0, mount_mnt = 0, mnt_parent = 0, mnt_mountpoint = 0;

  static absl::StatusOr<MapsLayout> Resolve(const KernelTypes& types);
};

struct MemoryMap {
  uint64_t vma = 0;  // the vm_area_struct
  uint64_t start = 0, end = 0;
  uint64_t flags = 0;   // vm_flags
  uint64_t offset = 0;  // vm_pgoff << 12 for file mappings, 0 otherwise
  uint32_t dev_major = 0, dev_minor = 0;
  uint64_t inode = 0;
  uint64_t file = 0;  // the struct file, 0 for an anonymous mapping
  // As /proc prints it: a file's path (newlines as \012, " (deleted)" when
  // unlinked), "[heap]", "[stack]", "[vdso]", "[vvar]", "[anon:...]", or
  // empty.
  std::string name;

  // "r-xp": read, write, exec, then 's' for VM_MAYSHARE else 'p'.
  std::string Permissions() const;
  // Byte-identical to the /proc/PID/maps line, without the '\n'.
  std::string ToProcLine() const;
};

// The maps and, when the walk stopped early, why (what came before is
// valid).
struct MapList {
  std::vector<MemoryMap> maps;
  absl::Status status = absl::OkStatus();
  bool complete() const { return status.ok(); }
};

// The maps of the mm_struct at `mm`, ascending. At most `limit` maps:
// ResourceExhausted beyond (and beyond `limit` maple nodes).
MapList ListMaps(const KernelAccess& access, const MapsLayout& layout, uint64_t mm,
                 size_t limit = kMaxMaps);

}  // namespace vmi::os_linux

#endif  // VMI_OS_LINUX_MAPS_H_
