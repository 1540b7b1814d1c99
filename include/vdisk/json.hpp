// SPDX-License-Identifier: Apache-2.0
// vdisk — a small JSON value, used for image information and the tool's --output=json.
//
// Strict RFC 8259 and independent of the C locale: numbers are written and read with std::to_chars and
// std::from_chars (never "1,5" under a comma-decimal locale), integers that do not fit 64 bits are an error
// rather than a silently wrapped value, and text in and out is valid UTF-8.
#pragma once

#include "vdisk/export.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace vdisk {

/// Why Json::parse refused its input. Stable: tests and callers branch on these.
enum class JsonError {
    none,
    unexpected_end,        ///< the text ends inside a value (or is empty)
    unexpected_character,  ///< a byte that cannot start or continue the value here
    trailing_characters,   ///< a complete value followed by more than whitespace
    too_deep,              ///< arrays/objects nested deeper than Json::max_depth
    invalid_number,        ///< not RFC 8259 number syntax ("01", "1.", ".5", "+1", "1e")
    number_out_of_range,   ///< an integer beyond int64/uint64, or a number beyond double's range
    invalid_escape,        ///< a backslash escape other than \" \\ \/ \b \f \n \r \t \uXXXX
    invalid_surrogate,     ///< \u escapes naming an unpaired UTF-16 surrogate
    control_character,     ///< a raw byte below 0x20 inside a string
    invalid_utf8,          ///< string bytes that are not well-formed UTF-8
    duplicate_key,         ///< the same member name twice in one object
};

/// Short stable name ("invalid_number", ...).
VDISK_API std::string_view to_string(JsonError e) noexcept;

/// Where and why a parse failed.
struct VDISK_API JsonParseError {
    JsonError kind = JsonError::none;
    size_t offset = 0;  ///< byte offset in the input text
    /// One line: "invalid_number at byte 7".
    std::string message() const;
};

class VDISK_API Json {
public:
    using Array = std::vector<Json>;
    using Object = std::vector<std::pair<std::string, Json>>;  // insertion-ordered

    Json() : v_(nullptr) {}
    Json(std::nullptr_t) : v_(nullptr) {}                         // NOLINT
    Json(bool b) : v_(b) {}                                       // NOLINT
    Json(int v) : v_(static_cast<int64_t>(v)) {}                  // NOLINT
    Json(int64_t v) : v_(v) {}                                    // NOLINT
    Json(uint64_t v) : v_(v) {}                                   // NOLINT
    Json(long long v) : v_(static_cast<int64_t>(v)) {}            // NOLINT
    Json(unsigned long long v) : v_(static_cast<uint64_t>(v)) {}  // NOLINT
    Json(unsigned v) : v_(static_cast<uint64_t>(v)) {}            // NOLINT
    Json(double v) : v_(v) {}                                     // NOLINT
    Json(const char* s) : v_(std::string(s)) {}                   // NOLINT
    Json(std::string s) : v_(std::move(s)) {}                     // NOLINT
    Json(std::string_view s) : v_(std::string(s)) {}              // NOLINT
    Json(Array a) : v_(std::move(a)) {}                           // NOLINT
    Json(Object o) : v_(std::move(o)) {}                          // NOLINT

    static Json object() { return Json(Object{}); }
    static Json array() { return Json(Array{}); }

    bool is_null() const { return std::holds_alternative<std::nullptr_t>(v_); }
    bool is_object() const { return std::holds_alternative<Object>(v_); }
    bool is_array() const { return std::holds_alternative<Array>(v_); }

    /// Object: set (or replace) key. Returns *this for chaining.
    Json& set(std::string_view key, Json value);
    /// Object: value of key or nullptr.
    const Json* get(std::string_view key) const;
    /// Array: append.
    Json& push(Json value);

    const Object* as_object() const { return std::get_if<Object>(&v_); }
    const Array* as_array() const { return std::get_if<Array>(&v_); }
    const std::string* as_string() const { return std::get_if<std::string>(&v_); }
    const uint64_t* as_uint() const { return std::get_if<uint64_t>(&v_); }
    const int64_t* as_int() const { return std::get_if<int64_t>(&v_); }
    const bool* as_bool() const { return std::get_if<bool>(&v_); }
    const double* as_double() const { return std::get_if<double>(&v_); }

    /// Arrays and objects nested deeper than this are refused by parse.
    static constexpr int max_depth = 64;

    /// Parse one RFC 8259 JSON text. Numbers without fraction or exponent become int (negative) or uint;
    /// the others double. On failure `out` is unspecified and `error` says why and where.
    static bool parse(std::string_view text, Json& out, JsonParseError& error);
    /// As above, with the error as one line of text.
    static bool parse(std::string_view text, Json& out, std::string* error = nullptr);

    /// Serialise; indent > 0 pretty-prints with that many spaces per level (as qemu-img does with 4).
    /// Strings that are not valid UTF-8 are written with U+FFFD for each bad byte; non-finite doubles as null.
    std::string dump(int indent = 4) const;

private:
    void dump_to(std::string& out, int indent, int level) const;
    std::variant<std::nullptr_t, bool, int64_t, uint64_t, double, std::string, Array, Object> v_;
};

}  // namespace vdisk
