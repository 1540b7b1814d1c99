#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Longer fuzzing runs with a summary table for the README: each target for SECONDS on its seed corpus
# (fuzz/smoke.sh builds the seeds), then executions, executions per second, edge coverage (cov), features
# (ft), corpus size and peak RSS as libFuzzer reports them, plus executions per CPU second (user + system
# time of the run, seed building included): on a loaded machine the wall-clock rate understates the target.
# usage: fuzz/report.sh FUZZ_BUILD_DIR [SECONDS] [TARGETS...]   (default 60 s; all targets)
set -euo pipefail
dir=$1 secs=${2:-60}
shift $(( $# >= 2 ? 2 : $# ))
root=$(cd "$(dirname "$0")/.." && pwd)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(raw qcow2 vmdk vhd vhdx vdi any chain)
printf "| target | seconds | executions | exec/s | exec/CPU-s | cov | ft | corpus | peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|\n"
for t in "${targets[@]}"; do
  bin=$dir/fuzz/fuzz_$t
  [ -x "$bin" ] || { echo "missing $bin (configure with -DVDISK_FUZZ=ON and clang)" >&2; exit 1; }
  cpu_file=$(mktemp)
  out=$(/usr/bin/time -f '%U %S' -o "$cpu_file" "$root/fuzz/smoke.sh" "$bin" "$t" "$secs")
  cpu=$(awk '{ printf "%d", ($1 + $2) * 100 }' "$cpu_file")
  rm -f "$cpu_file"
  line=$(printf '%s\n' "$out" | grep -E '^#[0-9]+' | tail -n 1)
  execs=$(printf '%s\n' "$out" | sed -n 's/^stat::number_of_executed_units: *//p')
  rss=$(printf '%s\n' "$out" | sed -n 's/^stat::peak_rss_mb: *//p')
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<< "$line")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<< "$line")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<< "$line")
  printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n" "$t" "$secs" "$execs" "$((execs / secs))" \
    "$((cpu > 0 ? execs * 100 / cpu : 0))" "$cov" "$ft" "$corp" "$rss"
done
