// SPDX-License-Identifier: Apache-2.0
// qcow2: header, extensions, snapshot table, L1/L2 walk, compressed clusters, check.
#include "fuzz_common.hpp"

namespace vdisk {
std::unique_ptr<Format> make_raw_format();
std::unique_ptr<Format> make_qcow2_format();
}  // namespace vdisk

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    vdisk::fuzz::InputFs fs;
    fs.add("image", {data, size});
    vdisk::Registry reg;
    reg.add(vdisk::make_raw_format());
    reg.add(vdisk::make_qcow2_format());
    vdisk::fuzz::exercise(reg, fs, "image", vdisk::fuzz::fuzz_options("qcow2"));
    return 0;
}
