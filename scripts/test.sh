#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test twice: the release build (unit, fixture-based
# end-to-end, real model), then the sanitized clang build in build-san (the same suites under
# AddressSanitizer + UndefinedBehaviorSanitizer, and each libFuzzer target for a fixed number of
# inputs from generated seeds). Tests that need ../shared/ skip with a message when it is absent.
# Prints how long each part took; CI (.ci/run) must finish within 30 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

timed() {  # timed LABEL COMMAND...: runs it, then prints the wall time it took
  local label=$1 start=$SECONDS
  shift
  "$@"
  echo "test.sh: $label took $((SECONDS - start)) s"
}

timed "build (release + sanitized)" scripts/setup.sh build build-san
timed "release tests" bash -c 'cd build && ctest --output-on-failure -j "$(nproc)" --timeout 1200'
# The real-model suite runs in the release build only: under the sanitizers its first perplexity
# figure alone (1535 windows) took over 8 CPU-minutes here, and the fixture and sample suites
# already take the same readers, executor and evaluators through the sanitized binary.
timed "sanitized tests and fuzzing" bash -c \
  'cd build-san && ctest --output-on-failure -j "$(nproc)" --timeout 1200 -E "^e2e\.real_model$"'
