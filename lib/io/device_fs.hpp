// SPDX-License-Identifier: Apache-2.0
// Writing an image onto an existing block device (internal to the library).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "vdisk/io.hpp"

namespace vdisk {

/// A FileSystem over `base` in which create(name) opens the existing device `name` read-write (never
/// truncating or replacing it) and presents it as a new, empty file of at most `capacity` bytes: growing
/// past the capacity is an out_of_range error naming both sizes, and every range the writer leaves unwritten
/// up to the file's final size is zeroed on the device at sync(), unless `known_zero` (--target-is-zero).
/// Other names are read through `base`; creating them is refused.
std::unique_ptr<FileSystem> make_device_file_system(FileSystem& base, std::string name, uint64_t capacity,
                                                    bool known_zero);

}  // namespace vdisk
