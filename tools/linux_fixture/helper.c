// fixture-threads: a known process for the Linux guest fixtures.
//
// Started by init.sh as `fixture-threads --vmi-fixture alpha beta` (a distinctive
// argv for readers of /proc/PID/cmdline and of mm->arg_start). The environment
// names the ready file (VMI_FIXTURE_READY, default /run/fixture-threads.ready)
// and the file to map (VMI_FIXTURE_MAP, default /data/fixture.bin).
// It builds a process whose memory layout and task list a VMI reader can check
// against the guest's own view:
//   - 3 extra threads (4 tasks in all), named fx-worker-1..3, that sleep forever;
//   - a [heap]: 1 MiB from malloc (brk, not mmap: the mmap threshold is raised),
//     every byte written, starting with the marker string kHeapMarker;
//   - a read-only private file mapping of the file to map, every
//     page read so it is resident;
//   - a 256 KiB anonymous read-write mapping, written, starting with kAnonMarker.
// When all of that is in place it writes the ready file (atomically: a temporary file
// renamed into place) with one `key value` line per fact (addresses in hex), then
// sleeps forever. Built with `gcc -static -O2 -pthread`: the initramfs has no libc.
//
// Installed a second time as /bin/syscall-loop: under that name it calls
// getpid() in a loop forever, counting the calls in vmi_syscall_loop_count
// (a live guest's steady stream of one syscall, for breakpoint tests).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define kWorkers 3
#define kHeapBytes (1 << 20)
#define kAnonBytes (256 << 10)

static const char kHeapMarker[] = "VMI-FIXTURE-HEAP-MARKER";
static const char kAnonMarker[] = "VMI-FIXTURE-ANON-MARKER";

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static pid_t g_tids[kWorkers];
static int g_started;

static void Die(const char* what) {
  fprintf(stderr, "fixture-threads: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void SleepForever(void) {
  for (;;) pause();
}

static void* Worker(void* arg) {
  int index = (int)(intptr_t)arg;
  char name[16];
  snprintf(name, sizeof(name), "fx-worker-%c", (char)('1' + index));
  pthread_setname_np(pthread_self(), name);
  pthread_mutex_lock(&g_mu);
  g_tids[index] = (pid_t)syscall(SYS_gettid);
  ++g_started;
  pthread_cond_broadcast(&g_cv);
  pthread_mutex_unlock(&g_mu);
  SleepForever();
  return NULL;
}

volatile uint64_t vmi_syscall_loop_count;

static int syscall_loop(void) {
  for (;;) {
    syscall(SYS_getpid);
    vmi_syscall_loop_count++;
  }
  return 0;
}

int main(int argc, char** argv) {
  {
    const char* name = strrchr(argv[0], '/');
    name = name ? name + 1 : argv[0];
    if (strcmp(name, "syscall-loop") == 0) return syscall_loop();
  }
  if (argc < 2 || strcmp(argv[1], "--vmi-fixture") != 0) {
    fprintf(stderr, "usage: %s --vmi-fixture [WORD...]\n", argv[0]);
    return 2;
  }
  const char* ready_file = getenv("VMI_FIXTURE_READY");
  if (ready_file == NULL || *ready_file == '\0') ready_file = "/run/fixture-threads.ready";
  const char* map_file = getenv("VMI_FIXTURE_MAP");
  if (map_file == NULL || *map_file == '\0') map_file = "/data/fixture.bin";

  // Keep a 1 MiB malloc on the brk heap so the process has a [heap] mapping.
  if (mallopt(M_MMAP_THRESHOLD, 64 << 20) != 1) Die("mallopt");
  unsigned char* heap = malloc(kHeapBytes);
  if (heap == NULL) Die("malloc");
  for (size_t i = 0; i < kHeapBytes; ++i) heap[i] = (unsigned char)(i * 7 + 1);
  memcpy(heap, kHeapMarker, sizeof(kHeapMarker));

  int fd = open(map_file, O_RDONLY | O_CLOEXEC);
  if (fd < 0) Die(map_file);
  struct stat st;
  if (fstat(fd, &st) != 0) Die("fstat");
  if (st.st_size == 0) {
    errno = EINVAL;
    Die("empty file to map");
  }
  const volatile unsigned char* file_map =
      mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (file_map == MAP_FAILED) Die("mmap file");
  close(fd);
  unsigned sum = 0;
  for (off_t i = 0; i < st.st_size; i += 4096) sum += file_map[i];

  unsigned char* anon =
      mmap(NULL, kAnonBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (anon == MAP_FAILED) Die("mmap anon");
  for (size_t i = 0; i < kAnonBytes; ++i) anon[i] = (unsigned char)(i * 13 + 5);
  memcpy(anon, kAnonMarker, sizeof(kAnonMarker));

  pthread_t threads[kWorkers];
  for (int i = 0; i < kWorkers; ++i) {
    int err = pthread_create(&threads[i], NULL, Worker, (void*)(intptr_t)i);
    if (err != 0) {
      errno = err;
      Die("pthread_create");
    }
  }
  pthread_mutex_lock(&g_mu);
  while (g_started < kWorkers) pthread_cond_wait(&g_cv, &g_mu);
  pthread_mutex_unlock(&g_mu);

  char tmp[4096];
  snprintf(tmp, sizeof(tmp), "%s.tmp", ready_file);
  FILE* out = fopen(tmp, "w");
  if (out == NULL) Die(tmp);
  fprintf(out, "pid %d\n", (int)getpid());
  fprintf(out, "tids %d", (int)getpid());
  for (int i = 0; i < kWorkers; ++i) fprintf(out, " %d", (int)g_tids[i]);
  fprintf(out, "\n");
  fprintf(out, "heap_addr 0x%lx\nheap_size %d\nheap_marker %s\n", (unsigned long)heap,
          kHeapBytes, kHeapMarker);
  fprintf(out, "anon_addr 0x%lx\nanon_size %d\nanon_marker %s\n", (unsigned long)anon,
          kAnonBytes, kAnonMarker);
  fprintf(out, "file_addr 0x%lx\nfile_size %ld\nfile_path %s\nfile_page_sum %u\n",
          (unsigned long)file_map, (long)st.st_size, map_file, sum);
  if (fclose(out) != 0) Die("fclose");
  if (rename(tmp, ready_file) != 0) Die("rename");

  SleepForever();
  return 0;
}
