// SPDX-License-Identifier: Apache-2.0
// The one UTF-16 decoder the backends share (VHD parent names, VHDX parent locator keys and values).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace vdisk::util {

enum class Utf16Order : uint8_t { little, big };
/// What a U+0000 code unit means: the end of the text (fixed-size fields padded with NULs) or a character
/// like any other (length-delimited fields, where it is kept as a NUL byte for the caller to judge).
enum class Utf16Nul : uint8_t { ends, kept };

/// UTF-16 in `bytes` (an odd trailing byte is ignored) to UTF-8. A surrogate without its partner becomes
/// U+FFFD. The output is at most 3/2 of the input's size, so callers bound the work by bounding the input.
std::string utf16_to_utf8(std::span<const uint8_t> bytes, Utf16Order order, Utf16Nul nul);

/// UTF-8 to UTF-16 (for writing locators); invalid sequences become U+FFFD.
std::u16string utf8_to_utf16(std::string_view text);

/// Append one code point (<= U+10FFFF, not a surrogate) as UTF-8.
void append_utf8(std::string& out, uint32_t code_point);

}  // namespace vdisk::util
