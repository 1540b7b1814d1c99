#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Run one libFuzzer target briefly on a seed corpus of tiny valid images made at run time
# (by qemu-img and by vdisk itself), plus the shared corpus images of that format when present.
# usage: fuzz/smoke.sh FUZZ_BINARY FORMAT SECONDS
set -euo pipefail
bin=$1 fmt=$2 secs=${3:-10}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
seeds=$work/seeds
mkdir -p "$seeds"
qfmt=$fmt
[ "$fmt" = vhd ] && qfmt=vpc
make_seed() { # name, qemu-img format, create options[, size (1M)]
  local name=$1 f=$2 opts=$3 size=${4:-1M}
  if qemu-img create -q -f "$f" ${opts:+-o "$opts"} "$work/$name" "$size" 2>/dev/null; then
    qemu-io -f "$f" -c 'write -P 0xa5 0 4k' -c 'write -z 64k 64k' "$work/$name" >/dev/null 2>&1 || true
    cp "$work/$name" "$seeds/$name"
  fi
}
# qemu-img's VDI blocks are 1 MiB, so its seeds are 1 MiB files, and input size is what libFuzzer's own
# work per execution (copies, hashes, mutations) scales with. Blocks are cut to 8 KiB (a block cut short
# by the end of the file reads as zeros) and c.vdi is a.vdi with 4 KiB blocks, three allocated out of
# order and one zero block.
shrink_vdi() { # directory, names...
  python3 - "$@" <<'PY'
import os, struct, sys
d, names = sys.argv[1], sys.argv[2:]
for n in names:
    p = os.path.join(d, n)
    if os.path.exists(p):
        f = open(p, 'rb').read()
        open(p, 'wb').write(f[:struct.unpack_from('<I', f, 344)[0] + 8192])
p = os.path.join(d, names[0])
if os.path.exists(p):
    f = open(p, 'rb').read()
    off_bmap, off_data = struct.unpack_from('<II', f, 340)
    bs, blocks = 4096, 16
    head = bytearray(f[:off_bmap])
    struct.pack_into('<Q', head, 368, bs * blocks)                 # disk size
    struct.pack_into('<IIII', head, 376, bs, 0, blocks, 3)         # block size, extra, blocks, allocated
    bmap = [0xffffffff] * blocks
    bmap[0], bmap[9], bmap[3], bmap[5] = 0, 1, 2, 0xfffffffe       # slots out of order, one zero block
    out = bytes(head) + struct.pack('<%dI' % blocks, *bmap)
    out += bytes(off_data - len(out))
    out += f[off_data:off_data + bs] + bytes(range(256)) * (bs // 256) + b'\x5a' * bs
    open(os.path.join(d, 'c.vdi'), 'wb').write(out)
PY
}
case "$fmt" in
  qcow2) make_seed a.qcow2 qcow2 "cluster_size=4096"; make_seed b.qcow2 qcow2 "compat=0.10,cluster_size=512"
         make_seed c.qcow2 qcow2 "extended_l2=on,cluster_size=16k" ;;
  vmdk)  make_seed a.vmdk vmdk ""; make_seed b.vmdk vmdk "subformat=streamOptimized" ;;
  vhd)   make_seed a.vhd vpc ""; make_seed b.vhd vpc "subformat=fixed" ;;
  vhdx)  make_seed a.vhdx vhdx "block_size=1M,log_size=1M"
         # The target reads a compact form (see vhdx_fuzz.cpp): cut it out of the qemu-img image, with the
         # first block moved to 4 MiB.
         if [ -f "$seeds/a.vhdx" ]; then
           python3 - "$seeds/a.vhdx" "$seeds/compact.vhdx" <<'PY'
import struct, sys
f = open(sys.argv[1], 'rb').read()
K, M = 1024, 1024 * 1024
bat = bytearray(f[2 * M:2 * M + 4 * K])
first = struct.unpack_from('<Q', bat, 0)[0]
data = b''
if first & 7 == 6:
    host = (first >> 20) << 20
    data = f[host:host + 64 * K]
    struct.pack_into('<Q', bat, 0, (4 << 20) | 6)
open(sys.argv[2], 'wb').write(f[:320 * K] + bytes(bat) + f[3 * M:3 * M + 72 * K] + data)
PY
           rm -f "$seeds/a.vhdx"
         fi ;;
  vdi)   make_seed a.vdi vdi ""; make_seed b.vdi vdi "static=on"; shrink_vdi "$seeds" a.vdi b.vdi ;;
  raw)   head -c 4096 /dev/urandom > "$seeds/a.raw" ;;
  any|chain)
         # Small seeds: qcow2 with 4 KiB clusters, a dynamic VHD with no block (its 2 MiB blocks would make
         # the seed larger than -max_len) beside a small fixed one, the VHDX's header section (a whole VHDX
         # is 4 MiB or more; fuzz_vhdx reaches the rest), the VDI cut as above.
         make_seed s.qcow2 qcow2 "cluster_size=4096"; make_seed s.vmdk vmdk ""; make_seed s.vdi vdi ""
         make_seed f.vpc vpc "subformat=fixed,force_size=on" 64k
         qemu-img create -q -f vpc "$seeds/s.vpc" 1M 2>/dev/null || true
         if make_seed s.vhdx vhdx "" && [ -f "$seeds/s.vhdx" ]; then
           head -c $((320 * 1024)) "$seeds/s.vhdx" > "$work/t.vhdx" && mv "$work/t.vhdx" "$seeds/s.vhdx"
         fi
         shrink_vdi "$seeds" s.vdi
         # An OVA (tar: descriptor, a streamOptimized VMDK plain and gzip'd) so the fuzzer reaches the tar,
         # OVF and gzip readers that open_image uses for appliances.
         if [ "$fmt" = any ] && make_seed d.vmdk vmdk "subformat=streamOptimized" && [ -f "$work/d.vmdk" ]; then
           gzip -c "$work/d.vmdk" > "$work/e.vmdk"
           printf '%s\n' '<?xml version="1.0"?>' \
             '<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">' \
             '<References><File ovf:id="f1" ovf:href="d.vmdk"/><File ovf:id="f2" ovf:href="e.vmdk" ovf:compression="gzip"/></References>' \
             '<DiskSection><Disk ovf:diskId="d1" ovf:fileRef="f1" ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^20"/>' \
             '<Disk ovf:diskId="d2" ovf:fileRef="f2" ovf:capacity="1048576"/></DiskSection></Envelope>' > "$work/a.ovf"
           tar --format=ustar -C "$work" -cf "$seeds/a.ova" a.ovf d.vmdk e.vmdk 2>/dev/null || true
         fi ;;
esac
# Real images of the format from the shared corpus (VDISK_CORPUS, as the tests take it), when they are small.
corpus=${VDISK_CORPUS:-$root/../shared/corpus}
if [ -d "$corpus/real" ]; then
  while IFS= read -r f; do
    out="$seeds/corpus-$(basename "${f%.*}")"
    case "$f" in
      *.xz) xz -dc "$f" > "$out" ;; *.bz2) bzip2 -dc "$f" > "$out" ;; *.gz) gzip -dc "$f" > "$out" ;;
      *) [ "$(stat -c %s "$f")" -le 1048576 ] && cp "$f" "$out" ;;
    esac
    [ ! -f "$out" ] || [ "$(stat -c %s "$out")" -le 1048576 ] || rm -f "$out"
  done < <(find "$corpus/real" -type f -name "*.$qfmt*" ! -name '*.md' 2>/dev/null || true)
fi
# VHDX inputs are compact (vhdx_fuzz.cpp); the corpus's real VHDX files are not in that form and are skipped.
if [ "$fmt" = vhdx ]; then find "$seeds" -name 'corpus-*' -delete; fi
cp -r "$seeds" "$work/run"
dict=$root/fuzz/magics.dict
max_len=1048576
# -malloc_limit_mb flags any single allocation sized by references rather than by the file (issue 13).
# -reload=0: one process per corpus, so nothing else adds units to re-read (and re-hash) while it runs.
args=(-max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=256 -timeout=10 -max_len=$max_len
      -print_final_stats=1 -reload=0)
[ -f "$dict" ] && args+=(-dict="$dict")
if "$bin" "${args[@]}" "$work/run" > "$work/log" 2>&1; then
  # Executions, coverage (edges "cov", features "ft") and corpus growth, for the README's figures.
  grep -E '^#[0-9]+' "$work/log" | tail -n 1
  grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added|stat::peak_rss_mb)' "$work/log"
else
  tail -n 80 "$work/log"
  exit 1
fi
