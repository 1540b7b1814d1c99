// SPDX-License-Identifier: Apache-2.0
// vhd: footer (head or tail), dynamic header, BAT, sector bitmaps, parent locators.
#include "builtin_formats.hpp"
#include "exercise.hpp"
#include "fuzz_mutator.hpp"
#include "registry.hpp"

VDISK_FUZZ_CHECKSUM_MUTATOR

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const auto reg = vdisk::testlib::registry_of(vdisk::make_raw_format, vdisk::make_vhd_format);
    vdisk::testlib::exercise_bytes(reg, "image.vhd", data, size, "vhd");
    return 0;
}
