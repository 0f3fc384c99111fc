// vmi: prints the capabilities of this build. The full CLI (info, regs,
// translate, read, idt, dump, watch, demo) replaces this with the CLI issue.

#include <cstdio>
#include <cstring>

#include "core/driver.h"
#include "core/types.h"

int main(int argc, char** argv) {
  const char* job = argc > 1 ? argv[1] : "capabilities";
  std::printf("vmi: virtual machine introspection framework\n");
  std::printf("job: %s\n", job);
  std::printf("capability concepts: VmiDriver VmiRead VmiWrite VmiQueryProtection "
              "VmiSetProtection VmiQueryRegisters VmiSetRegisters VmiViewControl "
              "VmiEventControl VmiVmControl\n");
  std::printf("architectures: (none yet: arch/amd64 lands with its issue)\n");
  std::printf("drivers: (none yet: sim, xen and dump land with their issues)\n");
  if (std::strcmp(job, "capabilities") != 0 && std::strcmp(job, "demo") != 0) {
    std::fprintf(stderr, "vmi: unknown job '%s' (this build knows: capabilities, demo)\n", job);
    return 2;
  }
  return 0;
}
