// SPDX-License-Identifier: Apache-2.0
// vmdk: sparse headers (KDMV, COWD, seSparse), streamOptimized footers and markers, text descriptors.
// The input is the main file; a descriptor naming "image-flat.vmdk" or "image-s001.vmdk" finds a copy of the
// same bytes there, so extent parsing is reached from text inputs too.
#include "builtin_formats.hpp"
#include "exercise.hpp"
#include "registry.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    vdisk::testlib::InputFs fs;
    fs.add("image.vmdk", {data, size});
    fs.add("image-flat.vmdk", {data, size});
    fs.add("image-s001.vmdk", {data, size});
    const auto reg = vdisk::testlib::registry_of(vdisk::make_raw_format, vdisk::make_vmdk_format);
    vdisk::testlib::exercise(reg, fs, "image.vmdk", vdisk::testlib::fuzz_options("vmdk"));
    return 0;
}
