// SPDX-License-Identifier: Apache-2.0
// qcow2: header, extensions, snapshot table, L1/L2 walk, compressed clusters, check.
#include "builtin_formats.hpp"
#include "exercise.hpp"
#include "registry.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const auto reg = vdisk::testlib::registry_of(vdisk::make_raw_format, vdisk::make_qcow2_format);
    vdisk::testlib::exercise_bytes(reg, "image", data, size, "qcow2");
    return 0;
}
