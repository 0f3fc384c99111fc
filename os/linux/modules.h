// Loaded kernel modules, what /proc/modules shows, read from the kernel's
// `modules` list with offsets from its types: each module's name, size,
// reference count, the modules using it (source_list), state and base.
//
// Walks are bounded and cycle- and tear-checked (WalkList); names are
// bounded by module.name's size and must be NUL-terminated in it; a state
// enum module_state does not have is an error. A walk that breaks part-way
// returns the modules before the break and the reason (ModuleList::status).
//
// Thread-safety: stateless functions over a KernelAccess; thread-compatible.

#ifndef VMI_OS_LINUX_MODULES_H_
#define VMI_OS_LINUX_MODULES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "os/linux/kernel_access.h"
#include "os/linux/types.h"

namespace vmi::os_linux {

// No kernel loads more modules than this.
inline constexpr size_t kMaxModules = 65536;

// Offsets of what the module code reads, resolved once from the types.
// Alternatives are chosen by which members the kernel has.
struct ModuleLayout {
  ListHeadLayout list;
  uint64_t list_node = 0;  // module.list
  // module.refcnt, source_list and exit are CONFIG_MODULE_UNLOAD's, which
  // the code requires (every distribution kernel has it).
  uint64_t name = 0, name_size = 0, state = 0, state_size = 4, refcnt = 0, source_list = 0,
           init = 0, exit = 0, taints = 0;
  // module_use.source_list and .source.
  uint64_t use_source_list = 0, use_source = 0;
  // Base and size: core_layout/init_layout (and data_layout when the
  // kernel has it) up to 6.3; from 6.4 the mem[] array, summed, with the
  // base of mem[MOD_TEXT].
  bool mem_array = false;
  uint64_t core_base = 0;
  std::vector<uint64_t> size_fields;  // each an unsigned int, summed
  // enum module_state.
  int64_t state_live = 0, state_coming = 1, state_going = 2, state_unformed = 3;

  static absl::StatusOr<ModuleLayout> Resolve(const KernelTypes& types);
};

struct Module {
  uint64_t address = 0;  // struct module
  std::string name;
  std::string state;                 // "Live", "Loading", "Unloading"
  uint64_t base = 0, size = 0;       // as /proc/modules prints them
  int32_t refcount = 0;              // refcnt - MODULE_REF_BASE
  std::vector<std::string> used_by;  // source_list's modules, in list order
  bool permanent = false;            // has an init but no exit: cannot be unloaded
  uint64_t taints = 0;               // module.taints (TAINT_* bits)

  // "(OE)" as module_flags() prints a tainted module's flags, or empty.
  std::string TaintFlags() const;
  // Byte-identical to the /proc/modules line, without the '\n'.
  std::string ToProcLine() const;
};

struct ModuleList {
  std::vector<Module> modules;
  absl::Status status = absl::OkStatus();
  bool complete() const { return status.ok(); }
};

// The modules on the `modules` list in list order (the most recently
// loaded first), as /proc/modules lists them: modules still being formed
// (MODULE_STATE_UNFORMED) are left out. At most `limit` list entries
// (ResourceExhausted beyond), and as many users per module.
ModuleList ListModules(const KernelAccess& access, const ModuleLayout& layout,
                       size_t limit = kMaxModules);

}  // namespace vmi::os_linux

#endif  // VMI_OS_LINUX_MODULES_H_
