#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# vdisk vs qemu-img, side by side on the same inputs. Builds a workload once (an ext4 file system with real
# files, made with mkfs.ext4 -d, no mount needed) in every source format, then for each case runs the two
# tools alternately RUNS times, each run timed to durable output (command + sync), and prints medians,
# the time ratio vdisk/qemu-img, peak RSS and output sizes. Every output is checked with qemu-img compare.
#
# usage: bench/compare.sh [-g GIB] [-d DATA_GIB] [-w real|synthetic] [-r RUNS] [-c CASES] [VDISK_BINARY]
#   WORKLOAD: real (default): files copied from /usr/lib and /usr/share (shared libraries, data, docs) in a
#             fixed order until DATA_GIB; synthetic: a third random, a third base64, a third random + zeros.
#   CASES: comma list of vmdk-qcow2,qcow2-vmdk,qcow2-vhdx,vmdk-raw,qcow2-stream,raw-qcow2c,raw-qcow2c-zstd,
#          stream-qcow2 (streamOptimized VMDK source), qcow2c-raw (compressed qcow2 source),
#          sparse2t-vmdk,sparse2t-vhdx (2 TiB sparse source: memory must not grow), cp-floor, raw-floor
#          (cp --sparse + sync of the qcow2 source, of the raw disk: the least any case writing it costs),
#          read4k-qcow2,read4k-vmdk,read4k-vhdx (4 KiB reads: vdisk bench vs qemu-img bench; default: all)
set -euo pipefail
gib=8 data_gib=2 runs=3 workload=real
cases=cp-floor,raw-floor,vmdk-qcow2,qcow2-vmdk,qcow2-vhdx,vmdk-raw,qcow2-stream,raw-qcow2c,raw-qcow2c-zstd,stream-qcow2,qcow2c-raw,sparse2t-vmdk,sparse2t-vhdx,read4k-qcow2,read4k-vmdk,read4k-vhdx
while getopts "g:d:w:r:c:" o; do
  case $o in
    g) gib=$OPTARG ;; d) data_gib=$OPTARG ;; w) workload=$OPTARG ;; r) runs=$OPTARG ;; c) cases=$OPTARG ;; *) exit 2 ;;
  esac
done
case $workload in real|synthetic) ;; *) echo "workload must be real or synthetic"; exit 2 ;; esac
shift $((OPTIND - 1))
root=$(cd "$(dirname "$0")/.." && pwd)
vdisk=${1:-$root/build/release/tools/vdisk}
[ -x "$vdisk" ] || { echo "build vdisk first (tools/demo.sh builds $root/build/release)"; exit 1; }
cache=${VDISK_BENCH_CACHE:-$root/build/bench-cache}/${workload}-${gib}g-${data_gib}g
out=${VDISK_BENCH_OUT:-$root/build/bench-out}
mkdir -p "$cache" "$out"

# --- workload, cached between runs -------------------------------------------------------------------
if [ ! -f "$cache/disk.raw" ]; then
  echo "bench: building a ${gib} GiB ext4 image holding ${data_gib} GiB of $workload files (cached in $cache)"
  tree=$cache/tree
  rm -rf "$tree" && mkdir -p "$tree"
  total=$((data_gib * 1024))
  i=0
  if [ "$workload" = real ]; then
    # Real data: regular files in path order, half from /usr/lib (shared libraries, compilers, modules),
    # half from /usr/share (locale data, documentation, icons); what a system disk holds, as compressible.
    : > "$cache/files.txt"
    for d in /usr/lib /usr/share; do
      find "$d" -xdev -type f -size +0 -readable -printf '%s\t%p\n' 2>/dev/null | LC_ALL=C sort -t$'\t' -k2 |
        awk -F'\t' -v limit=$((data_gib * 512 * 1024 * 1024)) '{ if (sum + $1 > limit) exit; sum += $1; print $2 }' \
        >> "$cache/files.txt" || true  # awk stops early: sort's SIGPIPE is expected
    done
    tar -cf - -P -T "$cache/files.txt" 2>/dev/null | tar -xf - -C "$tree" 2>/dev/null || true
  fi
  # Synthetic: files of mixed sizes and compressibility: text-like, binary-random, and zero-padded.
  while [ "$workload" = synthetic ] && [ $((i * 8)) -lt "$total" ]; do
    d=$tree/dir$((i / 64)); mkdir -p "$d"
    case $((i % 3)) in
      0) head -c 8M /dev/urandom > "$d/rand$i.bin" ;;
      1) head -c 6M /dev/urandom | base64 -w 100 > "$d/text$i.txt" ;;
      2) { head -c 2M /dev/urandom; head -c 6M /dev/zero; } > "$d/mixed$i.dat" ;;
    esac
    i=$((i + 1))
  done
  truncate -s "${gib}G" "$cache/disk.raw.tmp"
  mkfs.ext4 -q -F -d "$tree" "$cache/disk.raw.tmp"
  rm -rf "$tree"
  mv "$cache/disk.raw.tmp" "$cache/disk.raw"
fi
for f in vmdk qcow2 vhdx; do
  [ -f "$cache/disk.$f" ] || qemu-img convert -f raw -O $f "$cache/disk.raw" "$cache/disk.$f"
done
# Compressed sources as users get them: an OVA's streamOptimized disk and a cloud image's compressed qcow2,
# both written by qemu-img.
[ -f "$cache/disk.stream.vmdk" ] ||
  qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$cache/disk.raw" "$cache/disk.stream.vmdk"
[ -f "$cache/disk.c.qcow2" ] || qemu-img convert -f raw -O qcow2 -c "$cache/disk.raw" "$cache/disk.c.qcow2"

# --- one timed run: prints "seconds rss_kib output_bytes allocated_bytes cpu_seconds" -------------------------
# CPU time (user + system) is printed too: on a shared machine the wall clock mostly measures the neighbours.
timed() { # output_file command...
  local dst=$1; shift
  rm -f "$dst"
  sync
  local t0 t1 rss
  t0=$(date +%s.%N)
  /usr/bin/time -f "%M %U %S" -o "$out/rss" "$@" >/dev/null
  sync
  t1=$(date +%s.%N)
  read -r rss user sys < <(tail -n 1 "$out/rss")
  echo "$(echo "$t1 - $t0" | bc -l) $rss $(du -B1 --apparent-size "$dst" | cut -f1) $(du -B1 "$dst" | cut -f1)" \
    "$(echo "$user + $sys" | bc -l)"
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf "%-16s %9s %9s %7s %9s %9s %10s %11s %9s %9s %s\n" case vdisk_s qemu_s ratio vdisk_MiB qemu_MiB size_ratio \
  alloc_ratio vdisk_cpu qemu_cpu verified
# 4 KiB read requests through the library vs qemu-img bench (which keeps 64 requests in flight).
read_bench() { # format
  local f=$1 img=$cache/disk.$1 n=${VDISK_BENCH_READS:-500000} v q
  for r in $(seq "$runs"); do
    "$vdisk" bench -q -f "$f" -c "$n" "$img" | sed -n 's/Run completed in \([0-9.]*\) seconds./\1/p' >> "$out/v.times"
    qemu-img bench -f "$f" -c "$n" "$img" | sed -n 's/Run completed in \([0-9.]*\) seconds./\1/p' >> "$out/q.times"
  done
  v=$(median < "$out/v.times"); q=$(median < "$out/q.times")
  printf "%-16s %9.2f %9.2f %7.2f %9s %9s %10s %11s %9s %9s %s\n" "read4k-$f" "$v" "$q" "$(echo "$v / $q" | bc -l)" - - - - - - \
    "$n reads (speedup $(echo "$q / $v" | bc -l | cut -c1-5)x)"
}

IFS=, read -ra list <<< "$cases"
for c in "${list[@]}"; do
  if [[ $c == read4k-* ]]; then
    : > "$out/v.times"; : > "$out/q.times"
    read_bench "${c#read4k-}"
    continue
  fi
  case $c in
    vmdk-qcow2) src=$cache/disk.vmdk sf=vmdk of=qcow2 opts=() vopts=() ;;
    qcow2-vmdk) src=$cache/disk.qcow2 sf=qcow2 of=vmdk opts=() vopts=() ;;
    qcow2-vhdx) src=$cache/disk.qcow2 sf=qcow2 of=vhdx opts=() vopts=() ;;
    vmdk-raw)   src=$cache/disk.vmdk sf=vmdk of=raw opts=() vopts=() ;;
    qcow2-stream) src=$cache/disk.qcow2 sf=qcow2 of=vmdk opts=(-o subformat=streamOptimized) vopts=(-o subformat=streamOptimized) ;;
    raw-qcow2c) src=$cache/disk.raw sf=raw of=qcow2 opts=(-c) vopts=(-c) ;;
    raw-qcow2c-zstd)
      src=$cache/disk.raw sf=raw of=qcow2 opts=(-c -o compression_type=zstd) vopts=(-c -o compression_type=zstd) ;;
    stream-qcow2) src=$cache/disk.stream.vmdk sf=vmdk of=qcow2 opts=() vopts=() ;;
    qcow2c-raw) src=$cache/disk.c.qcow2 sf=qcow2 of=raw opts=() vopts=() ;;
    sparse2t-vmdk|sparse2t-vhdx)
      # Memory must not grow with the virtual size: a 2 TiB qcow2 holding 12 MiB.
      src=$cache/sparse2t.qcow2 sf=qcow2 of=${c#sparse2t-} opts=() vopts=()
      if [ ! -f "$src" ]; then
        qemu-img create -q -f qcow2 "$src" 2T
        qemu-io -f qcow2 -c 'write -P 1 0 4M' -c 'write -P 2 1T 4M' -c 'write -P 3 2047G 4M' "$src" >/dev/null
      fi ;;
    cp-floor|raw-floor)
      # The machine's floor for writing a case's output: cp --sparse=always of a file holding the same
      # allocated bytes, then sync. cp-floor copies the qcow2 source; raw-floor copies the raw disk, which is
      # what every conversion to raw (qcow2c-raw, vmdk-raw) must write at least.
      [ $c = cp-floor ] && f=disk.qcow2 || f=disk.raw
      : > "$out/v.times"
      for r in $(seq "$runs"); do timed "$out/cp.img" cp --sparse=always "$cache/$f" "$out/cp.img" >> "$out/v.times"; done
      printf "%-16s %9.2f %9s %7s %9s %9s %10s %11s %9s %9s %s\n" "$c" "$(cut -d' ' -f1 "$out/v.times" | median)" - - - - - - - - \
        "cp --sparse=always $f + sync"
      rm -f "$out/cp.img"
      continue ;;
    *) echo "unknown case $c"; exit 2 ;;
  esac
  : > "$out/v.times"; : > "$out/q.times"
  for r in $(seq "$runs"); do
    timed "$out/v.$of" "$vdisk" convert -f $sf -O $of "${vopts[@]}" "$src" "$out/v.$of" >> "$out/v.times"
    timed "$out/q.$of" qemu-img convert -f $sf -O $of "${opts[@]}" "$src" "$out/q.$of" >> "$out/q.times"
  done
  vt=$(cut -d' ' -f1 "$out/v.times" | median); qt=$(cut -d' ' -f1 "$out/q.times" | median)
  vr=$(cut -d' ' -f2 "$out/v.times" | sort -g | tail -1); qr=$(cut -d' ' -f2 "$out/q.times" | sort -g | tail -1)
  vs=$(tail -1 "$out/v.times" | cut -d' ' -f3); qs=$(tail -1 "$out/q.times" | cut -d' ' -f3)
  va=$(tail -1 "$out/v.times" | cut -d' ' -f4); qa=$(tail -1 "$out/q.times" | cut -d' ' -f4)
  vc=$(cut -d' ' -f5 "$out/v.times" | median); qc=$(cut -d' ' -f5 "$out/q.times" | median)
  if qemu-img compare -q -f $sf -F $of "$src" "$out/v.$of"; then ok=yes; else ok=NO; fi
  printf "%-16s %9.2f %9.2f %7.2f %9.1f %9.1f %10.4f %11.4f %9.2f %9.2f %s\n" "$c" "$vt" "$qt" "$(echo "$vt / $qt" | bc -l)" \
    "$(echo "$vr / 1024" | bc -l)" "$(echo "$qr / 1024" | bc -l)" "$(echo "$vs / $qs" | bc -l)" \
    "$(echo "$va / $qa" | bc -l)" "$vc" "$qc" "$ok"
  rm -f "$out/v.$of" "$out/q.$of"
done
