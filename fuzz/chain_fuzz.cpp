// SPDX-License-Identifier: Apache-2.0
// Multi-file sets on the memory file system: the input is split into up to four files named as chains and
// extents refer to them (base.img, top.img, disk.vmdk, disk-s001.vmdk ...), so references between files,
// loops and depth limits are exercised. Layout: [u8 count] then per file [u32 little-endian length][bytes].
#include <cstring>

#include "exercise.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const char* const kNames[] = {"top.img", "base.img", "disk-s001.vmdk", "disk-flat.vmdk"};
    if (size < 1) return 0;
    size_t count = data[0] % 4 + 1;
    size_t pos = 1;
    vdisk::MemoryFileSystem fs;
    for (size_t i = 0; i < count && pos + 4 <= size; ++i) {
        uint32_t len;
        std::memcpy(&len, data + pos, 4);
        pos += 4;
        len = static_cast<uint32_t>(std::min<size_t>(len, size - pos));
        fs.add(kNames[i], std::vector<uint8_t>(data + pos, data + pos + len));
        pos += len;
    }
    if (!fs.exists("top.img")) return 0;
    auto reg = vdisk::Registry::builtin();
    vdisk::testlib::exercise(reg, fs, "top.img", vdisk::testlib::fuzz_options(""));
    return 0;
}
