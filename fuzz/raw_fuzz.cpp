// SPDX-License-Identifier: Apache-2.0
// raw: trivial parser, but the generic block layer (bounds, block_status walk, reads) runs under it.
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    vdisk::fuzz::InputFs fs;
    fs.add("image.raw", {data, size});
    auto reg = vdisk::Registry::builtin();
    vdisk::fuzz::exercise(reg, fs, "image.raw", vdisk::fuzz::fuzz_options("raw"));
    return 0;
}
