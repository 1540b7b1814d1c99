// Library-internal entry points of lib/open.cpp.
#pragma once

#include "vdisk/vdisk.hpp"

namespace vdisk::detail {

/// open_image without the appliance check (appliances open their disk through this, so an .ova inside an
/// .ova is not followed).
Result<OpenedImage> open_image_direct(const Registry& registry, FileSystem& fs, std::string_view name,
                                      const OpenOptions& options);

}  // namespace vdisk::detail
