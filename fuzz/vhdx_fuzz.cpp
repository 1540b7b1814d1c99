// vhdx: headers, log replay (in memory, read-only), region table, metadata, BAT and sector bitmaps.
#include "fuzz_common.hpp"

namespace vdisk {
std::unique_ptr<Format> make_raw_format();
std::unique_ptr<Format> make_vhdx_format();
}  // namespace vdisk

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    vdisk::MemoryFileSystem fs;
    fs.add("image.vhdx", std::vector<uint8_t>(data, data + size));
    vdisk::Registry reg;
    reg.add(vdisk::make_raw_format());
    reg.add(vdisk::make_vhdx_format());
    vdisk::fuzz::exercise(reg, fs, "image.vhdx", vdisk::fuzz::fuzz_options("vhdx"));
    return 0;
}
