#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The whole test suite from nothing: install packages, build the libFuzzer targets (clang) and the
# library, tool and tests with ASan+UBSan, then run everything through ctest (doctest cases, the tool
# against qemu-img, fuzz smoke runs on seed corpora).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/tools/setup-debian.sh"
# Style first (seconds): every C/C++ source as .clang-format says. clang-tidy (tools/lint.sh --tidy) takes
# longer than the rest of this suite on two cores and is run by developers, not here.
"$root/tools/lint.sh" --format
build=${VDISK_BUILD_DIR:-$root/build}
jobs=$(nproc)
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)

cmake -S "$root" -B "$build/fuzz" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DVDISK_FUZZ=ON -DVDISK_BUILD_TESTS=OFF -DVDISK_BUILD_TOOLS=OFF "${launcher[@]}" >/dev/null
cmake --build "$build/fuzz" -j "$jobs"

# ThreadSanitizer: only the threading suite (every format read from 8 threads, writers and readers).
cmake -S "$root" -B "$build/tsan" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVDISK_TSAN=ON -DVDISK_BUILD_TOOLS=ON \
  "${launcher[@]}" >/dev/null
cmake --build "$build/tsan" -j "$jobs" --target test_threads

cmake -S "$root" -B "$build/test" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVDISK_SANITIZE=ON -DVDISK_WERROR=ON \
  -DVDISK_BUILD_BENCH=ON -DVDISK_FUZZ_BIN_DIR="$build/fuzz/fuzz" -DVDISK_TSAN_BIN_DIR="$build/tsan/tests" \
  "${launcher[@]}" >/dev/null
cmake --build "$build/test" -j "$jobs"

cd "$build/test"
exec ctest --output-on-failure -j "$jobs" --timeout 900
