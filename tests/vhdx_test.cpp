// VHDX backend: corpus images, log replay, differencing, create/write against qemu-img, malformed input.
#include <cstring>

#include "support.hpp"
#include "vdisk/vdisk.hpp"

namespace vdisk {
std::unique_ptr<Format> make_raw_format();
std::unique_ptr<Format> make_vhdx_format();
}  // namespace vdisk

using namespace vdisk;

namespace {

Registry make_reg() {
    Registry reg;
    reg.add(make_raw_format());
    reg.add(make_vhdx_format());
    return reg;
}

void verify(const std::string& rel) {
    auto root = vt::need_corpus();
    if (!root) return;
    auto reg = make_reg();
    vt::TempDir tmp;
    vt::verify_manifest_entry(reg, *root, vt::manifest_entry(*root, rel), tmp.path, "vhdx");
}

}  // namespace

TEST_CASE("corpus: Disk2vhd image with equal header sequence numbers") { verify("real/qemu-iotests/test-disk2vhd.vhdx.bz2"); }
TEST_CASE("corpus: Hyper-V dynamic 1 GiB") { verify("real/qemu-iotests/iotest-dynamic-1G.vhdx.bz2"); }
TEST_CASE("corpus: dirty log replayed in memory on a read-only open") {
    verify("real/qemu-iotests/iotest-dirtylog-10G-4M.vhdx.bz2");
}
TEST_CASE("corpus: Windows 10 dynamic") { verify("real/dissect.hypervisor/dynamic.vhdx.gz"); }
TEST_CASE("corpus: Windows 10 fixed") { verify("real/dissect.hypervisor/fixed.vhdx.gz"); }
