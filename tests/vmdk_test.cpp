// SPDX-License-Identifier: Apache-2.0
// VMDK backend: corpus images, qemu-img interop (every subformat both ways), chains, info, check.
#include <cstring>
#include <filesystem>

#include "builtin_formats.hpp"
#include "support.hpp"
#include "vdisk/vdisk.hpp"

using namespace vdisk;

namespace {

Registry make_reg() { return vt::registry_of(make_raw_format, make_vmdk_format); }

void verify(const std::string& rel, const std::string& open_name = "") {
    vt::verify_corpus_image(make_reg(), rel, "vmdk", open_name);
}

}  // namespace

TEST_CASE("corpus: dfvfs ext2 monolithicSparse") { verify("real/dfvfs/ext2.vmdk.xz"); }
TEST_CASE("corpus: VMware streamOptimized 16 GiB (footer GD)") { verify("real/qemu-iotests/iotest-version3.vmdk.bz2"); }
TEST_CASE("corpus: go-vmdk-parser streamOptimized") { verify("real/go-vmdk-parser/vmdk-streamoptimized.img.xz"); }
TEST_CASE("corpus: seSparse with descriptor") {
    verify("real/dissect.hypervisor/sesparse.vmdk.gz", "sesparse-descriptor.vmdk");
}
