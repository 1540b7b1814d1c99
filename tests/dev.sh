#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The developer's quick loop beside tests/run.sh: no package installation, no fuzzers, no sanitizers.
# Configures (once) and builds a Release tree in build/dev, then runs the ctest cases matching a pattern.
#
#   tests/dev.sh                 build, run every suite except test_targets (loop devices, signals: slow)
#   tests/dev.sh vhdx            build, run the cases whose ctest name matches "vhdx"
#   tests/dev.sh -- -N           build, pass the rest to ctest (here: list the tests)
#
# Environment: VDISK_DEV_BUILD (build dir), VDISK_DEV_TYPE (CMAKE_BUILD_TYPE, default Release).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${VDISK_DEV_BUILD:-$root/build/dev}
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE="${VDISK_DEV_TYPE:-Release}" \
    -DCMAKE_EXPORT_COMPILE_COMMANDS=ON "${launcher[@]}" >/dev/null
fi
cmake --build "$build" -j "$(nproc)"
cd "$build"
if [ "${1:-}" = "--" ]; then
  shift
  exec ctest "$@"
elif [ $# -gt 0 ]; then
  exec ctest --output-on-failure -j "$(nproc)" -R "$1"
else
  exec ctest --output-on-failure -j "$(nproc)" -E '^test_targets:'
fi
