// Default options of the sanitizer runtimes, linked into every executable of a sanitized build
// (SHARDFORGE_SANITIZE / SHARDFORGE_FUZZ). ASAN_OPTIONS / UBSAN_OPTIONS / LSAN_OPTIONS in the
// environment still override them.
//
// exitcode=86: a sanitizer report must never pass for shardforge's own "bad input" exit 1, which
// the end-to-end suites accept for damaged files. UBSan stops at the first report: the code is
// built with -fno-sanitize-recover=all, and halt_on_error says so again for the runtime. Leak
// checking (on by default with ASan on Linux) stays on: a leak is a finding like any other.
extern "C" {
const char* __asan_default_options() {
  return "halt_on_error=1:exitcode=86:detect_leaks=1:check_initialization_order=1:strict_string_checks=1:"
         "detect_stack_use_after_return=1";
}
const char* __ubsan_default_options() { return "halt_on_error=1:exitcode=86:print_stacktrace=1"; }
const char* __lsan_default_options() { return "exitcode=86"; }
}
