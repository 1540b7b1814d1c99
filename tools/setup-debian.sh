#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Install what vdisk needs to build, test, fuzz and benchmark on Debian 12. Idempotent: apt-get runs only
# when a package is missing. Needs root (or sudo) the first time.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev clang-format clang-tidy
  zlib1g-dev libboost-dev uuid-dev libzstd-dev libdeflate-dev libssl-dev libexpat1-dev libbenchmark-dev doctest-dev
  qemu-utils libvhdi-utils python3-libvhdi libvmdk-utils python3-libvmdk libqcow-utils nbdkit nbdkit-plugin-dev libnbd-bin
  xz-utils bzip2 gzip e2fsprogs time coreutils python3 util-linux mount man-db groff-base
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
