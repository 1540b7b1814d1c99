// SPDX-License-Identifier: Apache-2.0
// qemu-img measure: the generic half. Counts the source's data at the granularity a format asks for and
// leaves the layout arithmetic to the format (Format::measure).
#include <map>

#include "util/checked.hpp"
#include "vdisk/vdisk.hpp"

namespace vdisk {

Result<MeasureResult> measure(const Registry& registry, std::string_view format, CreateOptions opts,
                              BlockDevice* source) {
    VDISK_ASSIGN(const Format* fmt, registry.lookup(format));
    VDISK_TRY(validate_create_options(*fmt, opts));
    MeasureSource src;
    if (source) {
        src.has_image = true;
        src.virtual_size = source->size();
        src.source_has_bitmap_support = source->info().format == "qcow2";
        // One walk of the chain's map per granule; formats ask for one or two granules.
        auto cache = std::make_shared<std::map<uint64_t, uint64_t>>();
        src.data_units = [source, cache](uint64_t granule) -> Result<uint64_t> {
            if (!util::is_pow2(granule))
                return make_error(ErrorCode::invalid_argument, "measure granule not a power of two");
            if (auto it = cache->find(granule); it != cache->end()) return it->second;
            const uint64_t size = source->size();
            uint64_t units = 0, next_uncounted = 0;  // units below next_uncounted are counted
            for (uint64_t off = 0; off < size;) {
                VDISK_ASSIGN(MappedExtent m, map_extent(*source, off, size - off));
                if (m.length == 0) return make_error(ErrorCode::io, "block status returned an empty extent");
                if (m.data && !m.zero) {
                    uint64_t first = std::max(off / granule, next_uncounted);
                    uint64_t last = (off + m.length - 1) / granule;
                    if (last >= first) units += last - first + 1;
                    next_uncounted = std::max(next_uncounted, last + 1);
                }
                off += m.length;
            }
            cache->emplace(granule, units);
            return units;
        };
        opts.size = src.virtual_size;  // the source decides the size, as in qemu-img (-o size= is ignored)
    } else {
        if (!opts.size) return make_error(ErrorCode::invalid_argument, "measure needs a size or a source image");
        src.virtual_size = *opts.size;
    }
    auto r = fmt->measure(opts, src);
    if (!r) return std::move(r).error();
    return r;
}

}  // namespace vdisk
