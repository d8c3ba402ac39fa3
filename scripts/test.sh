#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test (unit, fixture-based end-to-end, real model).
# Tests that need ../shared/ skip with a message when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build
cd build
ctest --output-on-failure -j "$(nproc)" --timeout 1200
