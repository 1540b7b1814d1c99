// SPDX-License-Identifier: Apache-2.0
// raw: trivial parser, but the generic block layer (bounds, block_status walk, reads) runs under it.
#include "exercise.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const auto reg = vdisk::Registry::builtin();
    vdisk::testlib::exercise_bytes(reg, "image.raw", data, size, "raw");
    return 0;
}
