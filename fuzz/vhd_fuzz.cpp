// SPDX-License-Identifier: Apache-2.0
// vhd: footer (head or tail), dynamic header, BAT, sector bitmaps, parent locators.
#include "fuzz_common.hpp"
#include "fuzz_mutator.hpp"

namespace vdisk {
std::unique_ptr<Format> make_raw_format();
std::unique_ptr<Format> make_vhd_format();
}  // namespace vdisk

VDISK_FUZZ_CHECKSUM_MUTATOR

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    vdisk::fuzz::InputFs fs;
    fs.add("image.vhd", {data, size});
    vdisk::Registry reg;
    reg.add(vdisk::make_raw_format());
    reg.add(vdisk::make_vhd_format());
    vdisk::fuzz::exercise(reg, fs, "image.vhd", vdisk::fuzz::fuzz_options("vhd"));
    return 0;
}
