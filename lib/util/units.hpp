// SPDX-License-Identifier: Apache-2.0
// Splitting a byte range at unit boundaries (clusters, grains, blocks, sectors): the one loop the backends
// would otherwise each write by hand.
#pragma once

#include <algorithm>
#include <cstdint>

#include "vdisk/error.hpp"

namespace vdisk::util {

/// One piece of a range that lies inside a single unit.
struct UnitPiece {
    uint64_t index;    ///< which unit (offset / unit_size)
    uint64_t in_unit;  ///< offset of the piece inside its unit
    uint64_t length;   ///< bytes, > 0, in_unit + length <= unit_size
    uint64_t done;     ///< bytes of the range before this piece
};

/// Call `fn(const UnitPiece&)` (returning Status) for each piece of [offset, offset + len) split at multiples
/// of `unit_size` (> 0, any value), in order; the first error stops the walk and is returned.
template <typename Fn>
Status for_each_unit(uint64_t offset, uint64_t len, uint64_t unit_size, Fn&& fn) {
    uint64_t done = 0;
    while (done < len) {
        const uint64_t pos = offset + done;
        UnitPiece p{pos / unit_size, pos % unit_size, 0, done};
        p.length = std::min(len - done, unit_size - p.in_unit);
        VDISK_TRY(fn(static_cast<const UnitPiece&>(p)));
        done += p.length;
    }
    return ok();
}

}  // namespace vdisk::util
