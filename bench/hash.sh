#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# vdisk hash against the pipelines people use today, same inputs, same run: an ext4 file system of GIB GiB
# filled from a directory of real files (default /usr/share; mkfs.ext4 -d, no mount needed), as raw and as
# qcow2 (written by qemu-img). Each case runs RUNS times, interleaved, and the median wall time is printed
# with the digest (all digests of one content must agree, else the script fails).
#
# usage: bench/hash.sh [-g GIB] [-r RUNS] [-d DIR] [VDISK_BINARY]
set -euo pipefail
gib=2 runs=3 dir=/usr/share
while getopts "g:r:d:" o; do
  case $o in g) gib=$OPTARG ;; r) runs=$OPTARG ;; d) dir=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
root=$(cd "$(dirname "$0")/.." && pwd)
vdisk=${1:-$root/build/rel/tools/vdisk}
[ -x "$vdisk" ] || { echo "build vdisk first ($vdisk)"; exit 1; }
work=${VDISK_BENCH_CACHE:-$root/build/bench-cache}/hash-${gib}g
mkdir -p "$work"
if [ ! -f "$work/disk.qcow2" ]; then
  echo "bench: ext4 image of ${gib} GiB filled from $dir (cached in $work)"
  rm -f "$work/disk.raw"
  truncate -s "${gib}G" "$work/disk.raw"
  mkfs.ext4 -q -F -E root_owner=0:0 -d "$dir" "$work/disk.raw" 2>/dev/null ||
    { echo "mkfs.ext4 -d $dir failed (too little room? try -g)"; exit 1; }
  qemu-img convert -O qcow2 "$work/disk.raw" "$work/disk.qcow2"
fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "workload: $(du -h --apparent-size "$work/disk.raw" | cut -f1) raw ext4 ($(du -h "$work/disk.raw" | cut -f1) allocated), qcow2 $(du -h "$work/disk.qcow2" | cut -f1)"
# Warm the page cache once so that every case reads from memory, as the repeated runs do anyway.
cat "$work/disk.raw" "$work/disk.qcow2" > /dev/null

declare -A times digest
names=()
run_case() {  # name command...
  local name=$1; shift
  local t0 t1 out
  t0=$(date +%s.%N)
  out=$("$@")
  t1=$(date +%s.%N)
  [[ " ${names[*]} " == *" $name "* ]] || names+=("$name")
  times[$name]+="$(echo "$t1 - $t0" | bc) "
  digest[$name]=$(echo "$out" | head -1 | cut -d' ' -f1)
}
qemu_pipeline() {  # qemu-img cannot write raw to a pipe (it resizes the target), so: a temp file, then sha256sum
  qemu-img convert -O raw "$work/disk.qcow2" "$work/tmp.raw" && sha256sum "$work/tmp.raw"; rm -f "$work/tmp.raw"
}
for _ in $(seq "$runs"); do
  run_case "vdisk hash disk.qcow2" "$vdisk" hash "$work/disk.qcow2"
  run_case "qemu-img convert -O raw disk.qcow2 + sha256sum" qemu_pipeline
  run_case "sha256sum disk.raw" sha256sum "$work/disk.raw"
  run_case "vdisk hash disk.raw" "$vdisk" hash "$work/disk.raw"
  run_case "vdisk hash --algo sha256,sha1,md5 disk.qcow2" "$vdisk" hash --algo sha256,sha1,md5 "$work/disk.qcow2"
  run_case "sha256sum + sha1sum + md5sum disk.raw (sequential)" \
    sh -c "sha256sum '$work/disk.raw'; sha1sum '$work/disk.raw' >/dev/null; md5sum '$work/disk.raw' >/dev/null"
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%-55s %9s  %s\n' case "median s" "all runs / first digest"
for n in "${names[@]}"; do
  printf '%-55s %9.2f  %s/ %s\n' "$n" "$(echo "${times[$n]}" | median)" "${times[$n]}" "${digest[$n]:0:16}"
done
want=${digest["sha256sum disk.raw"]}
for n in "vdisk hash disk.qcow2" "qemu-img convert -O raw disk.qcow2 + sha256sum" "vdisk hash disk.raw"; do
  [ "${digest[$n]}" = "$want" ] || { echo "digest mismatch: $n"; exit 1; }
done
echo "digests agree: $want"
