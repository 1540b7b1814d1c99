// SPDX-License-Identifier: Apache-2.0
// vdi: pre-header, 0.x/1.x headers, block map, block extra, differencing without parent.
#include "fuzz_common.hpp"

namespace vdisk {
std::unique_ptr<Format> make_raw_format();
std::unique_ptr<Format> make_vdi_format();
}  // namespace vdisk

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    vdisk::fuzz::InputFs fs;
    fs.add("image.vdi", {data, size});
    vdisk::Registry reg;
    reg.add(vdisk::make_raw_format());
    reg.add(vdisk::make_vdi_format());
    vdisk::fuzz::exercise(reg, fs, "image.vdi", vdisk::fuzz::fuzz_options("vdi"));
    return 0;
}
