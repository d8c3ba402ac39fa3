#!/usr/bin/env bash
# Installs the Debian 12 packages shardforge builds and tests with, then configures and builds it.
# Usage: scripts/setup.sh [BUILD_DIR [SANITIZED_BUILD_DIR]]   (default: build). Safe to run repeatedly.
#   BUILD_DIR            the release build, with the compiler CMake picks (CXX, else c++)
#   SANITIZED_BUILD_DIR  when given, also a clang build with AddressSanitizer + UndefinedBehaviorSanitizer
#                        and the libFuzzer targets (SHARDFORGE_SANITIZE, SHARDFORGE_FUZZ), whatever CXX says
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  cmake g++ make pkg-config
  libzip-dev zlib1g-dev libcli11-dev libsentencepiece-dev nlohmann-json3-dev
  libicu-dev             # Unicode character properties for GPT-2's pre-tokenizer
  libhwy-dev             # Highway: the executor's SIMD kernels, one build per x86 level, chosen at run time
  libssl-dev             # OpenSSL's libcrypto: SHA-256 of sources and shards
  libhdf5-dev            # HDF5: --format hdf5 and its reader
  libeigen3-dev          # Eigen: dense linear algebra for calibration (GPTQ's Hessian factorisations)
  libonnx-dev protobuf-compiler libprotobuf-dev  # ONNX sources: onnx.proto, protoc to generate its classes, libprotobuf-lite
  libgtest-dev libgmock-dev libbenchmark-dev
  python3 python3-torch python3-numpy python3-sentencepiece
  python3-h5py           # the HDF5 writer's test reads the .h5 with h5py
  python3-onnx           # ONNX test fixtures: external-data layouts and hostile files written with onnx.save
  libopenblas0-pthread   # a real BLAS under Debian's python3-torch (fixture generation)
  time                   # /usr/bin/time -v for the memory benchmark
  clang                  # the sanitized build and the fuzz targets
  libclang-rt-14-dev     # ASan/UBSan runtimes and libFuzzer (only recommended by clang, so named here)
  llvm                   # llvm-symbolizer: sanitizer reports with file:line instead of bare addresses
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node and npm install onnxruntime-node for the ONNX writer's tests (tests/e2e/test_onnx_writer.py);
# Debian's, unless a node with npm is already on PATH.
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

BUILD_DIR=${1:-build}
start=$SECONDS
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)"
echo "setup: $BUILD_DIR built in $((SECONDS - start)) s"

SAN_DIR=${2:-}
if [ -n "$SAN_DIR" ]; then
  start=$SECONDS
  # RelWithDebInfo: optimised enough for the end-to-end suites, with line numbers in reports; line
  # tables only (not full -g): all a sanitizer report uses, objects half the size, faster links.
  cmake -S . -B "$SAN_DIR" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -gline-tables-only -DNDEBUG" \
        -DSHARDFORGE_SANITIZE=ON -DSHARDFORGE_FUZZ=ON -DSHARDFORGE_BENCH=OFF >/dev/null
  cmake --build "$SAN_DIR" -j "$(nproc)"
  echo "setup: $SAN_DIR built in $((SECONDS - start)) s"
fi
