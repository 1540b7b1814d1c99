// vhdx: headers, log replay (in memory, read-only), region table, metadata, BAT and sector bitmaps.
//
// The smallest VHDX is 4 MiB, nearly all zeros (its regions are 1 MiB aligned), and libFuzzer slows down with
// input size. Inputs are therefore a compact form of the file: the first 320 KiB (identifier, both headers,
// both region tables) are placed at 0, the next 4 KiB at 2 MiB (the start of the BAT where qemu-img puts it),
// the next 72 KiB at 3 MiB (metadata table and items) and the rest at 4 MiB (a payload block); everything
// else reads as zeros. A fuzzed region table can still point anywhere in the file. fuzz/smoke.sh cuts its
// VHDX seed (about 400 KiB) out of a qemu-img image this way.
#include "fuzz_common.hpp"
#include "fuzz_mutator.hpp"

namespace vdisk {
std::unique_ptr<Format> make_raw_format();
std::unique_ptr<Format> make_vhdx_format();
}  // namespace vdisk

namespace {
constexpr size_t K = 1024, M = 1024 * K;
struct Part {
    size_t file_offset, length;  // length 0: the rest of the input
};
constexpr Part kParts[] = {{0, 320 * K}, {2 * M, 4 * K}, {3 * M, 72 * K}, {4 * M, 0}};

std::vector<uint8_t> expand(const uint8_t* data, size_t size) {
    std::vector<uint8_t> file;
    size_t in = 0;
    for (const Part& p : kParts) {
        if (in >= size) break;
        size_t n = p.length ? std::min(p.length, size - in) : size - in;
        if (file.size() < p.file_offset) file.resize(p.file_offset, 0);
        file.resize(std::max(file.size(), p.file_offset + n), 0);
        std::memcpy(file.data() + p.file_offset, data + in, n);
        in += n;
    }
    if (size > kParts[0].length) file.resize(std::max<size_t>(file.size(), 4 * M), 0);
    return file;
}
}  // namespace

VDISK_FUZZ_CHECKSUM_MUTATOR

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    vdisk::MemoryFileSystem fs;
    fs.add("image.vhdx", expand(data, size));
    vdisk::Registry reg;
    reg.add(vdisk::make_raw_format());
    reg.add(vdisk::make_vhdx_format());
    vdisk::fuzz::exercise(reg, fs, "image.vhdx", vdisk::fuzz::fuzz_options("vhdx"));
    return 0;
}
