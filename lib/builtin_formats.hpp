// SPDX-License-Identifier: Apache-2.0
// Factories of the formats vdisk ships. Each format folder defines exactly one of these.
#pragma once

#include <memory>

#include "vdisk/format.hpp"

namespace vdisk {
std::unique_ptr<Format> make_raw_format();
std::unique_ptr<Format> make_qcow2_format();
std::unique_ptr<Format> make_qcow_format();
std::unique_ptr<Format> make_vmdk_format();
std::unique_ptr<Format> make_vhd_format();
std::unique_ptr<Format> make_vhdx_format();
std::unique_ptr<Format> make_vdi_format();
}  // namespace vdisk
