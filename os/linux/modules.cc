#include "os/linux/modules.h"

#include <cstring>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/error.h"

namespace vmi::os_linux {
namespace {

// include/linux/module.h MODULE_REF_BASE, and kernel/panic.c taint_flags[]:
// the TAINT_* bits a module can carry and their letters (a #define and a
// table in kernel data, absent from the types; as of 6.1).
constexpr int32_t kModuleRefBase = 1;
struct TaintLetter {
  int bit;
  char letter;
};
constexpr TaintLetter kModuleTaints[] = {{0, 'P'},  {1, 'F'},  {10, 'C'}, {12, 'O'}, {13, 'E'},
                                         {15, 'K'}, {16, 'X'}, {17, 'T'}, {18, 'N'}};

absl::StatusOr<uint64_t> Member(const KernelTypes& types, absl::string_view type,
                                absl::string_view path, uint64_t size) {
  VMI_ASSIGN_OR_RETURN(FieldInfo f, types.Field(type, path));
  if (f.is_bitfield() || f.size != size) {
    return absl::UnimplementedError(absl::StrFormat(
        "%s.%s is %u bytes; the module code reads it as %u", type, path, f.size, size));
  }
  return f.offset;
}

bool Has(const KernelTypes& types, absl::string_view type, absl::string_view path) {
  return types.Field(type, path).ok();
}

// module.name (a char array), which the kernel always NUL-terminates.
absl::StatusOr<std::string> ModuleName(const KernelAccess& access, const ModuleLayout& l,
                                       uint64_t module) {
  std::string bytes(l.name_size, '\0');
  absl::Status s = access.Read(
      module + l.name, absl::MakeSpan(reinterpret_cast<uint8_t*>(bytes.data()), bytes.size()));
  if (!s.ok()) return AnnotateStatus(s, absl::StrFormat("module 0x%x: name", module));
  const size_t n = strnlen(bytes.data(), bytes.size());
  if (n == bytes.size()) {
    return absl::DataLossError(
        absl::StrFormat("module 0x%x: name \"%s\" has no NUL in its %u bytes", module,
                        absl::CHexEscape(bytes), l.name_size));
  }
  bytes.resize(n);
  return bytes;
}

absl::StatusOr<Module> ReadModule(const KernelAccess& access, const ModuleLayout& l,
                                  uint64_t module, size_t limit, bool* unformed) {
  auto annotate = [&](const absl::Status& s, absl::string_view what) {
    return AnnotateStatus(s, absl::StrFormat("module 0x%x: %s", module, what));
  };
  Module m;
  m.address = module;
  absl::StatusOr<uint64_t> raw_state = access.Unsigned(module + l.state, l.state_size);
  if (!raw_state.ok()) return annotate(raw_state.status(), "state");
  const int64_t state = static_cast<int32_t>(*raw_state);
  VMI_ASSIGN_OR_RETURN(m.name, ModuleName(access, l, module));
  *unformed = state == l.state_unformed;
  if (state == l.state_live) {
    m.state = "Live";
  } else if (state == l.state_coming) {
    m.state = "Loading";
  } else if (state == l.state_going) {
    m.state = "Unloading";
  } else if (!*unformed) {
    return absl::DataLossError(absl::StrFormat(
        "module 0x%x (%s): state %d is not one of enum module_state's", module, m.name, state));
  }
  if (*unformed) return m;

  absl::StatusOr<uint64_t> base = access.U64(module + l.core_base);
  if (!base.ok()) return annotate(base.status(), "base");
  m.base = *base;
  uint32_t size = 0;  // an unsigned int in the kernel: the sum wraps as there
  for (uint64_t offset : l.size_fields) {
    absl::StatusOr<uint32_t> part = access.U32(module + offset);
    if (!part.ok()) return annotate(part.status(), "size");
    size += *part;
  }
  m.size = size;
  absl::StatusOr<uint32_t> refcnt = access.U32(module + l.refcnt);
  if (!refcnt.ok()) return annotate(refcnt.status(), "refcnt");
  m.refcount = static_cast<int32_t>(*refcnt) - kModuleRefBase;
  absl::StatusOr<uint64_t> init = access.U64(module + l.init);
  if (!init.ok()) return annotate(init.status(), "init");
  absl::StatusOr<uint64_t> exit = access.U64(module + l.exit);
  if (!exit.ok()) return annotate(exit.status(), "exit");
  m.permanent = *init != 0 && *exit == 0;
  absl::StatusOr<uint64_t> taints = access.U64(module + l.taints);
  if (!taints.ok()) return annotate(taints.status(), "taints");
  m.taints = *taints;

  // print_unload_info(): the modules that use this one.
  absl::Status users = WalkList(
      access, l.list, module + l.source_list, limit,
      absl::StrFormat("source_list of module %s (0x%x)", m.name, module),
      [&](uint64_t node) -> absl::StatusOr<bool> {
        const uint64_t use = node - l.use_source_list;
        absl::StatusOr<uint64_t> source = access.U64(use + l.use_source);
        if (!source.ok()) {
          return AnnotateStatus(source.status(), absl::StrFormat("module_use 0x%x: source", use));
        }
        VMI_ASSIGN_OR_RETURN(std::string name, ModuleName(access, l, *source));
        m.used_by.push_back(std::move(name));
        return true;
      });
  if (!users.ok()) return users;
  return m;
}

}  // namespace

absl::StatusOr<ModuleLayout> ModuleLayout::Resolve(const KernelTypes& types) {
  ModuleLayout l;
  VMI_ASSIGN_OR_RETURN(l.list.next, Member(types, "list_head", "next", 8));
  VMI_ASSIGN_OR_RETURN(l.list.prev, Member(types, "list_head", "prev", 8));
  VMI_ASSIGN_OR_RETURN(l.list_node, types.OffsetOf("module", "list"));
  VMI_ASSIGN_OR_RETURN(FieldInfo name, types.Field("module", "name"));
  l.name = name.offset;
  l.name_size = name.size;
  if (l.name_size == 0 || l.name_size > 4096) {
    return absl::UnimplementedError(absl::StrFormat("module.name is %u bytes", l.name_size));
  }
  VMI_ASSIGN_OR_RETURN(FieldInfo state, types.Field("module", "state"));
  l.state = state.offset;
  l.state_size = state.size;
  VMI_ASSIGN_OR_RETURN(l.refcnt, Member(types, "module", "refcnt", 4));
  VMI_ASSIGN_OR_RETURN(l.source_list, types.OffsetOf("module", "source_list"));
  VMI_ASSIGN_OR_RETURN(l.init, Member(types, "module", "init", 8));
  VMI_ASSIGN_OR_RETURN(l.exit, Member(types, "module", "exit", 8));
  VMI_ASSIGN_OR_RETURN(l.taints, Member(types, "module", "taints", 8));
  VMI_ASSIGN_OR_RETURN(l.use_source_list, types.OffsetOf("module_use", "source_list"));
  VMI_ASSIGN_OR_RETURN(l.use_source, Member(types, "module_use", "source", 8));
  for (auto [value, name] : {std::pair{&l.state_live, "MODULE_STATE_LIVE"},
                             std::pair{&l.state_coming, "MODULE_STATE_COMING"},
                             std::pair{&l.state_going, "MODULE_STATE_GOING"},
                             std::pair{&l.state_unformed, "MODULE_STATE_UNFORMED"}}) {
    VMI_ASSIGN_OR_RETURN(*value, types.EnumValue(name));
  }

  l.mem_array = Has(types, "module", "mem");
  if (l.mem_array) {
    // 6.4+: struct module_memory mem[MOD_MEM_NUM_TYPES].
    VMI_ASSIGN_OR_RETURN(FieldInfo mem, types.Field("module", "mem"));
    VMI_ASSIGN_OR_RETURN(TypeInfo array, types.Describe(mem.type));
    if (array.kind != TypeKind::kArray || array.count == 0) {
      return absl::UnimplementedError(
          absl::StrFormat("module.mem is %s, not an array", types.TypeName(mem.type)));
    }
    VMI_ASSIGN_OR_RETURN(int64_t text, types.EnumValue("MOD_TEXT"));
    VMI_ASSIGN_OR_RETURN(l.core_base,
                         Member(types, "module", absl::StrFormat("mem[%d].base", text), 8));
    for (uint64_t i = 0; i < array.count; ++i) {
      VMI_ASSIGN_OR_RETURN(uint64_t size,
                           Member(types, "module", absl::StrFormat("mem[%u].size", i), 4));
      l.size_fields.push_back(size);
    }
  } else {
    VMI_ASSIGN_OR_RETURN(l.core_base, Member(types, "module", "core_layout.base", 8));
    // data_layout: 6.2-6.3 with CONFIG_ARCH_WANTS_MODULES_DATA_IN_VMALLOC.
    for (auto [layout, required] : {std::pair{"init_layout", true}, std::pair{"core_layout", true},
                                    std::pair{"data_layout", false}}) {
      if (!required && !Has(types, "module", layout)) continue;
      VMI_ASSIGN_OR_RETURN(uint64_t size,
                           Member(types, "module", absl::StrCat(layout, ".size"), 4));
      l.size_fields.push_back(size);
    }
  }
  return l;
}

std::string Module::TaintFlags() const {
  if (taints == 0) return "";
  std::string flags = "(";
  for (const TaintLetter& t : kModuleTaints) {
    if (taints & (uint64_t{1} << t.bit)) flags += t.letter;
  }
  if (state == "Unloading") flags += '-';
  if (state == "Loading") flags += '+';
  flags += ')';
  return flags;
}

std::string Module::ToProcLine() const {
  // m_show() and print_unload_info() of kernel/module/procfs.c.
  std::string line = absl::StrFormat("%s %u %d ", name, size, refcount);
  for (const std::string& user : used_by) absl::StrAppend(&line, user, ",");
  if (permanent) line += "[permanent],";
  if (used_by.empty() && !permanent) line += "-";
  absl::StrAppendFormat(&line, " %s 0x%016x", state, base);
  if (taints != 0) absl::StrAppend(&line, " ", TaintFlags());
  return line;
}

ModuleList ListModules(const KernelAccess& access, const ModuleLayout& l, size_t limit) {
  ModuleList out;
  absl::StatusOr<uint64_t> head = access.kernel().Symbol("modules");
  if (!head.ok()) {
    out.status = head.status();
    return out;
  }
  out.status =
      WalkList(access, l.list, *head, limit, "modules", [&](uint64_t node) -> absl::StatusOr<bool> {
        bool unformed = false;
        VMI_ASSIGN_OR_RETURN(Module m, ReadModule(access, l, node - l.list_node, limit, &unformed));
        if (!unformed) out.modules.push_back(std::move(m));
        return true;
      });
  return out;
}

}  // namespace vmi::os_linux
