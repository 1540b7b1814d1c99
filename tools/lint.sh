#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Style and static checks: clang-format --dry-run --Werror (.clang-format) and clang-tidy (.clang-tidy, every
# finding an error) on the given sources, or on every C/C++ source of the repository.
#
# usage: tools/lint.sh [--format|--tidy] [-p BUILD_DIR] [-j N] [FILE...]
#   --format, --tidy  run only that half (default: both)
#   -p BUILD_DIR      a configured build directory holding compile_commands.json (default: build/rel, else
#                     the first build/*/compile_commands.json); clang-tidy needs it, clang-format does not
#   -j N              clang-tidy processes in parallel (default: nproc)
# clang-tidy only sees translation units the build compiled (a fuzz build for fuzz/, the default for the rest);
# headers are checked through them (HeaderFilterRegex in .clang-tidy). Exit status 1 when anything is found.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

do_format=1 do_tidy=1 build="" jobs=$(nproc)
files=()
while [ $# -gt 0 ]; do
    case $1 in
        --format) do_tidy=0 ;;
        --tidy) do_format=0 ;;
        -p) build=$2; shift ;;
        -j) jobs=$2; shift ;;
        -h|--help) sed -n '3,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "lint.sh: unknown option $1" >&2; exit 2 ;;
        *) files+=("$1") ;;
    esac
    shift
done
if [ ${#files[@]} -eq 0 ]; then
    mapfile -t files < <(git ls-files '*.c' '*.h' '*.cpp' '*.hpp')
fi

status=0
if [ $do_format = 1 ]; then
    command -v clang-format >/dev/null || { echo "lint.sh: clang-format not installed" >&2; exit 2; }
    if ! printf '%s\0' "${files[@]}" | xargs -0 clang-format --dry-run --Werror; then
        echo "lint.sh: clang-format: the files above differ from .clang-format (fix: clang-format -i FILE)" >&2
        status=1
    fi
fi

if [ $do_tidy = 1 ]; then
    command -v clang-tidy >/dev/null || { echo "lint.sh: clang-tidy not installed" >&2; exit 2; }
    if [ -z "$build" ]; then
        if [ -f build/rel/compile_commands.json ]; then
            build=build/rel
        else
            build=$(dirname "$(ls build/*/compile_commands.json 2>/dev/null | head -1)")
        fi
    fi
    if [ -z "$build" ] || [ ! -f "$build/compile_commands.json" ]; then
        echo "lint.sh: no compile_commands.json (configure a build first: cmake -S . -B build/rel -G Ninja)" >&2
        exit 2
    fi
    # only translation units the build knows; headers come along through HeaderFilterRegex
    units=()
    for f in "${files[@]}"; do
        case $f in *.c|*.cpp) grep -q "\"file\": \"$root/$f\"" "$build/compile_commands.json" && units+=("$f") ;; esac
    done
    if [ ${#units[@]} -gt 0 ]; then
        if ! printf '%s\0' "${units[@]}" |
            xargs -0 -n 1 -P "$jobs" clang-tidy -p "$build" --quiet --warnings-as-errors='*' \
                --extra-arg=-Wno-unknown-warning-option 2>/dev/null; then
            echo "lint.sh: clang-tidy found problems (above)" >&2
            status=1
        fi
    fi
fi
exit $status
