// SPDX-License-Identifier: Apache-2.0
// qemu-img dd: a block copy between images, with qemu-img's size rule.
#include <algorithm>
#include <vector>

#include "util/bytes.hpp"
#include "util/checked.hpp"
#include "vdisk/vdisk.hpp"

namespace vdisk {

Status dd(const Registry& registry, BlockDevice& input, FileSystem& fs, std::string_view output,
          const DdOptions& options) {
    const uint64_t bs = options.block_size;
    if (bs == 0 || bs > (64u << 20))
        return make_error(ErrorCode::invalid_argument, "bs must be between 1 and 64M, not " + std::to_string(bs));
    uint64_t size = input.size();
    // qemu-img: count limits the end of the copy (count*bs from the start of the input, not from skip).
    if (options.count && *options.count <= size / bs) size = *options.count * bs;
    auto skip_bytes = util::mul<uint64_t>(options.skip, bs);
    if (!skip_bytes || *skip_bytes > size)
        return make_error(ErrorCode::out_of_range, "cannot skip to specified offset");
    const uint64_t start = *skip_bytes;
    CreateOptions co;
    co.size = size - start;
    VDISK_ASSIGN(auto out, create_image(registry, fs, output, options.output_format, co));
    std::vector<uint8_t> buf(static_cast<size_t>(bs));
    for (uint64_t in = start; in < size;) {
        auto n = static_cast<size_t>(std::min<uint64_t>(bs, size - in));
        auto part = std::span<uint8_t>(buf.data(), n);
        VDISK_TRY(input.read(in, part));
        if (!util::is_zero(part)) VDISK_TRY(out->write(in - start, part));
        in += n;
    }
    return out->close();
}

}  // namespace vdisk

namespace vdisk {

Status amend(const Registry& registry, FileSystem& fs, std::string_view image, const std::string& format,
             const std::vector<std::pair<std::string, std::string>>& options) {
    OpenOptions oo;
    oo.read_write = true;
    oo.format = format;
    oo.no_backing = true;  // amend changes this layer's header only
    VDISK_ASSIGN(OpenedImage img, open_image(registry, fs, image, oo));
    VDISK_TRY(validate_create_options(*img.format, CreateOptions{std::nullopt, options}));
    VDISK_TRY(img.device->amend(options));
    return img.device->close();
}

}  // namespace vdisk
