// SPDX-License-Identifier: Apache-2.0
// The C API (include/vdisk/vdisk.h) over the C++ API.
#include "vdisk/vdisk.h"

#include "vdisk/vdisk.hpp"

extern "C" {

VDISK_API const char* vdisk_version(void) { return VDISK_VERSION_STRING; }

}
