// SPDX-License-Identifier: Apache-2.0
// vdi: pre-header, 0.x/1.x headers, block map, block extra, differencing without parent.
#include "builtin_formats.hpp"
#include "exercise.hpp"
#include "registry.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const auto reg = vdisk::testlib::registry_of(vdisk::make_raw_format, vdisk::make_vdi_format);
    vdisk::testlib::exercise_bytes(reg, "image.vdi", data, size, "vdi");
    return 0;
}
