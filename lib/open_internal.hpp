// SPDX-License-Identifier: Apache-2.0
// Library-internal entry points of lib/open.cpp.
#pragma once

#include "vdisk/vdisk.hpp"

namespace vdisk::detail {

/// open_image without the appliance check (appliances open their disk through this, so an .ova inside an
/// .ova is not followed).
Result<OpenedImage> open_image_direct(const Registry& registry, FileSystem& fs, std::string_view name,
                                      const OpenOptions& options);

/// True when the first bytes of `file` are an OVA (tar with an .ovf first) or an OVF descriptor.
bool looks_like_appliance(File& file);

/// open_appliance_disk for a package already open as `file` (disk options.appliance_disk).
Result<OpenedImage> open_appliance_file(const Registry& registry, FileSystem& fs, std::string_view name,
                                        std::unique_ptr<File> file, const OpenOptions& options);

}  // namespace vdisk::detail
