# Sourced by the bench scripts once they have cd'd to the repository root: the python they run,
# messages prefixed with the script's name, and the checks every llama.cpp comparison repeats.
PY=/usr/bin/python3
BENCH_NAME=$(basename "$0" .sh)

die() { echo "$BENCH_NAME: $*" >&2; exit 2; }
note() { echo "$BENCH_NAME: $*" >&2; }

need_llama_cpp() {  # TOOL...: each an executable in LLAMA_CPP_BIN (never built or fetched here)
  [ -n "${LLAMA_CPP_BIN:-}" ] || die "set LLAMA_CPP_BIN to a llama.cpp build's bin directory (this script never builds or downloads it)"
  local tool
  for tool in "$@"; do
    [ -x "$LLAMA_CPP_BIN/$tool" ] || die "$LLAMA_CPP_BIN/$tool: not found or not executable"
  done
}

use_work_dir() {  # PREFIX: WORK when set (created, kept), else a temporary directory removed at exit
  if [ -n "${WORK:-}" ]; then
    mkdir -p "$WORK" || die "$WORK: cannot create"
  else
    WORK=$(mktemp -d "/tmp/$1.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
  fi
}
