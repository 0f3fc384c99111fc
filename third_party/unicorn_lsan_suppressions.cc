// Unicorn 2.1.1 leaks 32 bytes per engine between uc_open and uc_close (seen
// with a bare uc_open/uc_reg_write/uc_close program): not ours to fix. Every
// binary that links Unicorn gets this suppression, so LeakSanitizer
// (--config=asan) still reports our own leaks.
extern "C" const char* __lsan_default_suppressions() { return "leak:libunicorn.so\n"; }
// Keep stderr to what the program prints (the CLI promises one error line).
extern "C" const char* __lsan_default_options() { return "print_suppressions=0"; }
