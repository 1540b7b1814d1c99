// SPDX-License-Identifier: Apache-2.0
// Probe and open whatever bytes arrive, with every built-in format in play (no -f).
#include "exercise.hpp"
#include "fuzz_mutator.hpp"

VDISK_FUZZ_CHECKSUM_MUTATOR

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    vdisk::testlib::InputFs fs;
    fs.add("image", {data, size});
    auto reg = vdisk::Registry::builtin();
    auto o = vdisk::testlib::fuzz_options("");
    vdisk::testlib::exercise(reg, fs, "image", o);
    // Untrusted mode must refuse every external reference and never guess raw.
    o.untrusted = true;
    vdisk::testlib::exercise(reg, fs, "image", o);
    return 0;
}
