#!/usr/bin/env bash
# Install the built library (headers, static libraries, CMake package, pkg-config file) into a temporary
# prefix, then build the README's library example against it with find_package(vdisk) and run it on an
# image, and check that pkg-config knows the package.
# usage: tests/install_test.sh BUILD_DIR EXTRA_LINK_FLAGS
set -euo pipefail
build=$1 flags=${2:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
mkdir -p "$work/app"
cat > "$work/app/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.20)
project(app CXX)
set(CMAKE_CXX_STANDARD 20)
find_package(vdisk REQUIRED)
add_executable(app main.cpp)
target_link_libraries(app PRIVATE vdisk::vdisk)
CM
# The README's example, verbatim in substance.
cat > "$work/app/main.cpp" <<'CPP'
#include <vdisk/vdisk.hpp>
#include <iostream>
int main(int argc, char** argv) {
    auto registry = vdisk::Registry::builtin();
    auto fs = vdisk::make_posix_file_system();
    auto img = vdisk::open_image(registry, *fs, argv[1], {});
    if (!img) { std::cerr << img.error().to_string() << "\n"; return 1; }
    std::cout << img->format->name() << " " << img->device->size() << "\n";
    vdisk::ConvertOptions co;
    co.output_format = "qcow2";
    if (auto st = vdisk::convert(registry, *img->device, *fs, argv[2], co); !st) {
        std::cerr << st.error().to_string() << "\n";
        return 1;
    }
    return argc > 3 ? 2 : 0;
}
CPP
cmake -S "$work/app" -B "$work/app/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" >/dev/null
cmake --build "$work/app/build" >/dev/null
qemu-img create -q -f vmdk "$work/in.vmdk" 16M
qemu-io -f vmdk -c 'write -P 0x42 0 1M' "$work/in.vmdk" >/dev/null
out=$("$work/app/build/app" "$work/in.vmdk" "$work/out.qcow2")
[ "$out" = "vmdk 16777216" ] || { echo "unexpected output: $out"; exit 1; }
qemu-img compare -f vmdk -F qcow2 "$work/in.vmdk" "$work/out.qcow2"
PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig:$work/prefix/lib/x86_64-linux-gnu/pkgconfig" pkg-config --libs vdisk | grep -q -- -lvdisk
echo "install test: find_package(vdisk) consumer built and converted an image"
