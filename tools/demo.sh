#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The main job on a built-in sample: vdisk writes a small raw image with a known pattern, converts it to
# VMDK and the VMDK to QCOW2 (the VMware -> KVM path), shows `info`, and verifies the result with its own
# compare and with qemu-img check / compare.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/tools/setup-debian.sh"
build=${VDISK_BUILD_DIR:-$root/build}/release
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DVDISK_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j "$(nproc)" --target vdisk_tool
vdisk=$build/tools/vdisk
work=${VDISK_DEMO_DIR:-$(mktemp -d)}
mkdir -p "$work"
cd "$work"
set -x
"$vdisk" sample sample.raw 256M
"$vdisk" convert -O vmdk -o subformat=monolithicSparse sample.raw sample.vmdk
"$vdisk" convert -p -O qcow2 sample.vmdk sample.qcow2
"$vdisk" info sample.qcow2
"$vdisk" compare sample.raw sample.qcow2
qemu-img check sample.qcow2
qemu-img compare -f vmdk -F qcow2 sample.vmdk sample.qcow2
{ set +x; } 2>/dev/null
echo "demo: OK — sample.raw -> sample.vmdk -> sample.qcow2 verified (files in $work)"
