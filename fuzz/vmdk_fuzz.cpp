// SPDX-License-Identifier: Apache-2.0
// vmdk: sparse headers (KDMV, COWD, seSparse), streamOptimized footers and markers, text descriptors.
// The input is the main file; a descriptor naming "image-flat.vmdk" or "image-s001.vmdk" finds a copy of the
// same bytes there, so extent parsing is reached from text inputs too.
#include "fuzz_common.hpp"

namespace vdisk {
std::unique_ptr<Format> make_raw_format();
std::unique_ptr<Format> make_vmdk_format();
}  // namespace vdisk

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    vdisk::fuzz::InputFs fs;
    fs.add("image.vmdk", {data, size});
    fs.add("image-flat.vmdk", {data, size});
    fs.add("image-s001.vmdk", {data, size});
    vdisk::Registry reg;
    reg.add(vdisk::make_raw_format());
    reg.add(vdisk::make_vmdk_format());
    vdisk::fuzz::exercise(reg, fs, "image.vmdk", vdisk::fuzz::fuzz_options("vmdk"));
    return 0;
}
