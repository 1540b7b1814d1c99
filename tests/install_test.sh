#!/usr/bin/env bash
# Install the built library (headers, libvdisk.so.0 + libvdisk.a, CMake package, pkg-config files) into a
# temporary prefix, then build consumers against it and run them on an image: the README's C++ example with
# find_package(vdisk) linked shared and static, the same with pkg-config, and the C example with pkg-config
# (shared and static). Also: the library exports only the public API, and the prefix can be moved.
# usage: tests/install_test.sh BUILD_DIR EXTRA_LINK_FLAGS
set -euo pipefail
build=$1 flags=${2:-}
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Install from a prefix that is then moved: the CMake package and the .pc files must not hard-code it.
cmake --install "$build" --prefix "$work/orig" >/dev/null
mv "$work/orig" "$work/prefix"
libdir=$(dirname "$(find "$work/prefix" -name vdisk.pc)")/..
[ -f "$work/prefix/share/doc/vdisk/LICENSE" ] || { echo "LICENSE not installed"; exit 1; }
! grep -rq "$work/orig" "$work/prefix" || { echo "installed files name the install prefix"; exit 1; }
! grep -rq 'libuuid\.\(so\|a\)' "$work/prefix"/lib*/cmake "$libdir/cmake" 2>/dev/null || { echo "absolute libuuid path"; exit 1; }
mkdir -p "$work/app"
cat > "$work/app/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.20)
project(app CXX)
set(CMAKE_CXX_STANDARD 20)
find_package(vdisk REQUIRED)
add_executable(app main.cpp)
target_link_libraries(app PRIVATE vdisk::vdisk)
if(TARGET vdisk::vdisk_static)
  add_executable(app_static main.cpp)
  target_link_libraries(app_static PRIVATE vdisk::vdisk_static)
endif()
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
# No CMAKE_CXX_STANDARD in the consumer: the package's cxx_std_20 requirement must bring it.
sed -i '/CMAKE_CXX_STANDARD/d' "$work/app/CMakeLists.txt"
cmake -S "$work/app" -B "$work/app/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" >/dev/null
cmake --build "$work/app/build" >/dev/null
qemu-img create -q -f vmdk "$work/in.vmdk" 16M
qemu-io -f vmdk -c 'write -P 0x42 0 1M' "$work/in.vmdk" >/dev/null
run_app() {  # run_app BINARY: converts in.vmdk and checks the result with qemu-img
  rm -f "$work/out.qcow2"
  out=$(LD_LIBRARY_PATH="$libdir" "$@" "$work/in.vmdk" "$work/out.qcow2")
  [ "$out" = "vmdk 16777216" ] || { echo "$1: unexpected output: $out"; exit 1; }
  qemu-img compare -q -f vmdk -F qcow2 "$work/in.vmdk" "$work/out.qcow2"
}
run_app "$work/app/build/app"
if [ -e "$libdir/libvdisk.so.0" ]; then
  readelf -d "$work/app/build/app" | grep -q 'NEEDED.*libvdisk\.so\.0' || { echo "app does not use libvdisk.so.0"; exit 1; }
fi
if [ -x "$work/app/build/app_static" ]; then
  run_app "$work/app/build/app_static"
  ! readelf -d "$work/app/build/app_static" | grep -q 'NEEDED.*libvdisk' || { echo "app_static needs libvdisk.so"; exit 1; }
fi

export PKG_CONFIG_PATH="$libdir/pkgconfig"
# pkg-config, C++: `pkg-config --cflags --libs vdisk` as the README says (it carries -std=c++20).
c++ $flags "$work/app/main.cpp" $(pkg-config --cflags --libs vdisk) -o "$work/app_pc"
run_app "$work/app_pc"
# pkg-config, C: the C example, shared and static (the archive plus --static's private dependencies).
c_flags="-std=c11 -Wall -Wextra -pedantic -Werror"
cc $c_flags $flags "$src/tests/c/vdisk_example.c" $(pkg-config --cflags --libs vdisk-c) -o "$work/example_c"
LD_LIBRARY_PATH="$libdir" "$work/example_c" "$work/in.vmdk" "$work/out_c.qcow2" 2>/dev/null | grep -q '^vmdk 16777216 bytes, 1048576 bytes of data$'
qemu-img compare -q -f vmdk -F qcow2 "$work/in.vmdk" "$work/out_c.qcow2"
if [ -f "$libdir/libvdisk.a" ]; then
  cc $c_flags $flags "$src/tests/c/vdisk_example.c" $(pkg-config --cflags vdisk-c) "$libdir/libvdisk.a" \
    $(pkg-config --static --libs-only-l --libs-only-other vdisk-c | sed 's/-lvdisk\b//') -o "$work/example_c_static"
  ! readelf -d "$work/example_c_static" | grep -q 'NEEDED.*libvdisk' || { echo "static C example needs libvdisk.so"; exit 1; }
  "$work/example_c_static" "$work/in.vmdk" "$work/out_cs.qcow2" 2>/dev/null | grep -q '^vmdk 16777216'
fi
# Only the public API leaves the shared library: no internal namespaces, no std:: instantiations.
if [ -e "$libdir/libvdisk.so.0" ]; then
  readelf -d "$libdir/libvdisk.so.0" | grep -q 'SONAME.*\[libvdisk\.so\.0\]' || { echo "no SONAME"; exit 1; }
  syms=$(nm -DC --defined-only "$libdir/libvdisk.so.0")
  ! grep -E '^\S+ \S (vdisk::(qcow2|vmdk|vhd|vhdx|vdi|util|detail)::|std::|typeinfo for std|vtable for std)' <<<"$syms" || { echo "internal symbols exported"; exit 1; }
  grep -q ' vdisk_pread@@VDISK_0$' <<<"$(nm -D --defined-only "$libdir/libvdisk.so.0")" || { echo "C symbols unversioned"; exit 1; }
  echo "exported symbols: $(grep -vc ' A ' <<<"$syms")"
fi
# The installed nbdkit plugin finds the installed libvdisk.so.0 (RUNPATH $ORIGIN/../..) and serves the image.
plugin=$(find "$work/prefix" -name nbdkit-vdisk-plugin.so | head -1)
# (Not in sanitizer builds: nbdkit would need the runtime preloaded; tests/nbdkit_test.sh does that.)
if [ -n "$plugin" ] && [[ $flags != *sanitize* ]] && command -v nbdkit >/dev/null && command -v nbdinfo >/dev/null; then
  size=$(nbdkit -U - "$plugin" file="$work/in.vmdk" -r --run 'nbdinfo --size "$uri"')
  [ "$size" = 16777216 ] || { echo "installed nbdkit plugin: unexpected size '$size'"; exit 1; }
fi
echo "install test: find_package (shared, static), pkg-config (C++, C shared, C static) consumers built and converted an image"
