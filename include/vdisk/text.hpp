// SPDX-License-Identifier: Apache-2.0
// vdisk — text that comes from an image, made safe to show.
//
// Names stored in an image (backing file, parent locators, descriptor strings, snapshot names) are bytes a
// stranger chose: printed raw they can carry terminal escape sequences (retitle the window, clear the
// screen, fake a prompt) and invalid UTF-8 that breaks JSON consumers.
#pragma once

#include <string>
#include <string_view>

#include "vdisk/export.h"

namespace vdisk {

/// For a terminal: control bytes (C0, DEL, and C1 as encoded in UTF-8) and bytes that are not part of a
/// valid UTF-8 sequence become `\xNN`; everything else (printable ASCII, valid UTF-8) is kept.
VDISK_API std::string escape_for_terminal(std::string_view text);

/// True when `text` is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
VDISK_API bool utf8_valid(std::string_view text) noexcept;

/// Valid UTF-8 kept; each byte of an invalid sequence replaced by U+FFFD.
VDISK_API std::string utf8_sanitize(std::string_view text);

}  // namespace vdisk
