// SPDX-License-Identifier: Apache-2.0
// VMDK backend: corpus images, qemu-img interop (every subformat both ways), chains, info, check.
#include <cstring>
#include <filesystem>

#include "support.hpp"
#include "vdisk/vdisk.hpp"

namespace vdisk {
std::unique_ptr<Format> make_raw_format();
std::unique_ptr<Format> make_vmdk_format();
}  // namespace vdisk

using namespace vdisk;

namespace {

Registry make_reg() {
    Registry reg;
    reg.add(make_raw_format());
    reg.add(make_vmdk_format());
    return reg;
}

void verify(const std::string& rel, const std::string& open_name = "") {
    auto root = vt::need_corpus();
    if (!root) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    vt::verify_manifest_entry(reg, *root, vt::manifest_entry(*root, rel), tmp.path, "vmdk", open_name);
}

}  // namespace

TEST_CASE("corpus: dfvfs ext2 monolithicSparse") { verify("real/dfvfs/ext2.vmdk.xz"); }
TEST_CASE("corpus: VMware streamOptimized 16 GiB (footer GD)") { verify("real/qemu-iotests/iotest-version3.vmdk.bz2"); }
TEST_CASE("corpus: go-vmdk-parser streamOptimized") { verify("real/go-vmdk-parser/vmdk-streamoptimized.img.xz"); }
TEST_CASE("corpus: seSparse with descriptor") {
    verify("real/dissect.hypervisor/sesparse.vmdk.gz", "sesparse-descriptor.vmdk");
}
