#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The nbdkit plugin against qemu-img and libnbd's tools: for every format, `nbdinfo --map` equals
# `vdisk map` (data vs hole/zero), `nbdcopy` and `qemu-img convert nbd+unix://` give qemu-img's bytes; writes,
# zeroes and trims through NBD are read back by qemu-img; multi-conn is advertised read-only and read-write
# (nbdcopy writes over 4 connections); untrusted=1 refuses a
# backing file.
# usage: tests/nbdkit_test.sh PLUGIN.so VDISK_TOOL [SANITIZER_RUNTIME.so]
# With a sanitizer runtime (ASan builds), nbdkit itself is not instrumented, so the runtime is preloaded into
# nbdkit only; the --run commands drop it again ($clean) so qemu-img and libnbd's tools run as usual.
set -euo pipefail
plugin=$(realpath "$1") tool=$(realpath "$2") preload=${3:-}
export clean=""
if [ -n "$preload" ]; then
  clean="env -u LD_PRELOAD"
  nbdkit() { LD_PRELOAD=$preload ASAN_OPTIONS=detect_leaks=0:verify_asan_link_order=0 command nbdkit "$@"; }
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

# vdisk map's JSON as "start length type" lines with nbdinfo's types (0 data, 3 hole,zero), merged.
vdisk_map() {
  "$tool" map --output=json "$@" | python3 -c '
import json, sys
out = []
for e in json.load(sys.stdin):
    t = 0 if e["data"] else 3
    if out and out[-1][2] == t and out[-1][0] + out[-1][1] == e["start"]:
        out[-1][1] += e["length"]
    else:
        out.append([e["start"], e["length"], t])
for s, l, t in out: print(s, l, t)'
}
nbd_map() {  # nbdinfo --map, merged the same way
  awk '{ if (n && t == $3 && s + l == $1) { l += $2 } else { if (n) print s, l, t; s = $1; l = $2; t = $3; n = 1 } }
       END { if (n) print s, l, t }'
}

for fmt in qcow2 vmdk vpc vhdx vdi raw; do
  img=img.$fmt
  qemu-img create -q -f $fmt $img 64M
  qemu-io -f $fmt -c 'write -q -P 0x11 0 1M' -c 'write -q -P 0x22 5M 192k' -c 'write -q -P 0x33 40M 4M' \
    -c 'write -q -z 41M 1M' $img
  qemu-img convert -f $fmt -O raw $img ref.raw
  vdisk_map $img > want.map
  nbdkit -U - "$plugin" file=$img -r --run '$clean nbdinfo --map "$uri"' | nbd_map > got.map
  diff -u want.map got.map || { echo "$fmt: nbdinfo --map differs from vdisk map"; exit 1; }
  nbdkit -U - "$plugin" file=$img -r --run '$clean nbdcopy "$uri" copy.raw'
  cmp ref.raw copy.raw || { echo "$fmt: nbdcopy differs"; exit 1; }
  nbdkit -U - "$plugin" file=$img -r --run '$clean qemu-img convert -f raw "nbd+unix:///?socket=$unixsocket" -O qcow2 q.qcow2'
  qemu-img compare -q -f raw -F qcow2 ref.raw q.qcow2 || { echo "$fmt: qemu-img convert over NBD differs"; exit 1; }
  nbdkit -U - "$plugin" file=$img -r --run '$clean nbdinfo "$uri"' | grep -q 'can_multi_conn: true' ||
    { echo "$fmt: no multi-conn read-only"; exit 1; }
  rm -f copy.raw q.qcow2
done

# Writes through NBD: qemu-io as the client, then qemu-img reads the file.
for fmt in qcow2 vmdk vhdx vdi vpc raw; do
  img=w.$fmt
  qemu-img create -q -f $fmt $img 32M
  qemu-io -f $fmt -c 'write -q -P 0x44 8M 2M' $img
  nbdkit -U - "$plugin" file=$img --run '$clean qemu-io -f raw -c "write -q -P 0x61 1M 64k" -c "write -q -P 0x62 1052672 100" -c "write -q -z 8M 1M" -c "discard -q 9M 64k" -c "flush" "nbd+unix:///?socket=$unixsocket"'
  case $fmt in qcow2|vmdk|vhdx|vdi) qemu-img check -q -f $fmt $img ;; esac
  out=$(qemu-io -f $fmt -c 'read -q -P 0x61 1M 4k' -c 'read -q -P 0x62 1052672 100' -c 'read -q -P 0x61 1052772 60000' \
        -c 'read -q -P 0 8M 1M' -c 'read -q -P 0x44 9961472 512k' -c 'read -q -P 0 0 1M' $img)
  [ -z "$out" ] || { echo "$fmt: written data not read back by qemu-img: $out"; exit 1; }
  # nbdcopy into the image (every byte through NBD) over 4 connections at once, then compare. Read-write
  # servers advertise multi-conn too: every connection shares the one open image (writes serialized by the
  # library), so a flush on any connection covers the writes of all of them.
  nbdkit -U - "$plugin" file=$img --run '$clean nbdinfo "$uri"' | grep -q 'can_multi_conn: true' ||
    { echo "$fmt: no multi-conn read-write"; exit 1; }
  head -c 32M /dev/urandom > src.raw
  nbdkit -U - "$plugin" file=$img --run '$clean nbdcopy --connections=4 --requests=16 src.raw "$uri"'
  qemu-img compare -q -f raw -F $fmt src.raw $img || { echo "$fmt: nbdcopy into the image differs"; exit 1; }
done

# untrusted=1: a backing file is an external reference and is refused.
qemu-img create -q -f qcow2 base.qcow2 1M
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
nbdkit -U - "$plugin" file=top.qcow2 -r --run '$clean nbdinfo --size "$uri"' >/dev/null
if nbdkit -U - "$plugin" file=top.qcow2 untrusted=1 -r --run '$clean nbdinfo --size "$uri"' >/dev/null 2>err.txt; then
  echo "untrusted=1 served an image with a backing file"; exit 1
fi
grep -q 'base.qcow2' err.txt || { echo "untrusted refusal does not name the backing file"; cat err.txt; exit 1; }
echo "nbdkit test: map, nbdcopy, qemu-img over NBD, writes, untrusted: all formats agree"
