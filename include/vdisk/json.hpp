// SPDX-License-Identifier: Apache-2.0
// vdisk — a small JSON value, used for image information and the tool's --output=json.
#pragma once

#include "vdisk/export.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace vdisk {

class VDISK_API Json {
public:
    using Array = std::vector<Json>;
    using Object = std::vector<std::pair<std::string, Json>>;  // insertion-ordered

    Json() : v_(nullptr) {}
    Json(std::nullptr_t) : v_(nullptr) {}                                    // NOLINT
    Json(bool b) : v_(b) {}                                                  // NOLINT
    Json(int v) : v_(static_cast<int64_t>(v)) {}                             // NOLINT
    Json(int64_t v) : v_(v) {}                                               // NOLINT
    Json(uint64_t v) : v_(v) {}                                              // NOLINT
    Json(long long v) : v_(static_cast<int64_t>(v)) {}                       // NOLINT
    Json(unsigned long long v) : v_(static_cast<uint64_t>(v)) {}             // NOLINT
    Json(unsigned v) : v_(static_cast<uint64_t>(v)) {}                       // NOLINT
    Json(double v) : v_(v) {}                                                // NOLINT
    Json(const char* s) : v_(std::string(s)) {}                              // NOLINT
    Json(std::string s) : v_(std::move(s)) {}                                // NOLINT
    Json(std::string_view s) : v_(std::string(s)) {}                         // NOLINT
    Json(Array a) : v_(std::move(a)) {}                                      // NOLINT
    Json(Object o) : v_(std::move(o)) {}                                     // NOLINT

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

    /// Parse JSON text (nesting depth capped at 64). Numbers without fraction become int/uint.
    static bool parse(std::string_view text, Json& out, std::string* error = nullptr);

    /// Serialise; indent > 0 pretty-prints with that many spaces per level (as qemu-img does with 4).
    std::string dump(int indent = 4) const;

private:
    void dump_to(std::string& out, int indent, int level) const;
    std::variant<std::nullptr_t, bool, int64_t, uint64_t, double, std::string, Array, Object> v_;
};

}  // namespace vdisk
