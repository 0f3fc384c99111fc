#include "drivers/fault/fault_injecting_driver.h"

namespace vmi {

const char* DriverOpName(DriverOp op) {
  switch (op) {
    case DriverOp::kInfo: return "info";
    case DriverOp::kReadPage: return "read_page";
    case DriverOp::kWritePage: return "write_page";
    case DriverOp::kGetMemoryAccess: return "memory_access";
    case DriverOp::kGetMemoryAccessWithOptions: return "memory_access_with_options";
    case DriverOp::kSetMemoryAccess: return "set_memory_access";
    case DriverOp::kSetMemoryAccessWithOptions: return "set_memory_access_with_options";
    case DriverOp::kRegisters: return "registers";
    case DriverOp::kSetRegisters: return "set_registers";
    case DriverOp::kMonitorEnable: return "monitor_enable";
    case DriverOp::kMonitorDisable: return "monitor_disable";
    case DriverOp::kWaitForEvent: return "wait_for_event";
    case DriverOp::kCreateView: return "create_view";
    case DriverOp::kDestroyView: return "destroy_view";
    case DriverOp::kSwitchToView: return "switch_to_view";
    case DriverOp::kChangeViewGfn: return "change_view_gfn";
    case DriverOp::kResetViewGfn: return "reset_view_gfn";
    case DriverOp::kPause: return "pause";
    case DriverOp::kResume: return "resume";
    case DriverOp::kAllocateGfn: return "allocate_gfn";
    case DriverOp::kAllocateGfnAt: return "allocate_gfn_at";
    case DriverOp::kFreeGfn: return "free_gfn";
    case DriverOp::kInjectInterrupt: return "inject_interrupt";
    case DriverOp::kResetState: return "reset_state";
    case DriverOp::kCount: break;
  }
  return "?";
}

}  // namespace vmi
