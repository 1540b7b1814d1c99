// SPDX-License-Identifier: Apache-2.0
// A registry of chosen formats, for the test suites and the fuzz targets that exercise one format alone.
#pragma once

#include "vdisk/format.hpp"

namespace vdisk::testlib {

/// A registry of exactly the formats the given factories make, in that order (ties in probing go to the
/// earlier one): `registry_of(make_raw_format, make_vhdx_format)`. The factories are declared in
/// lib/builtin_formats.hpp.
template <typename... Factory>
Registry registry_of(Factory... make) {
    Registry reg;
    (reg.add(make()), ...);
    return reg;
}

}  // namespace vdisk::testlib
