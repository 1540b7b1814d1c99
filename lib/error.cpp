// SPDX-License-Identifier: Apache-2.0
#include "vdisk/error.hpp"
#include "vdisk/text.hpp"

#include <cstdio>
#include <cstdlib>

namespace vdisk {

std::string_view to_string(ErrorCode code) noexcept {
    switch (code) {
        case ErrorCode::io: return "io";
        case ErrorCode::invalid_format: return "invalid_format";
        case ErrorCode::unsupported: return "unsupported";
        case ErrorCode::corrupt: return "corrupt";
        case ErrorCode::out_of_range: return "out_of_range";
        case ErrorCode::not_found: return "not_found";
        case ErrorCode::access_denied: return "access_denied";
        case ErrorCode::limit_exceeded: return "limit_exceeded";
        case ErrorCode::read_only: return "read_only";
        case ErrorCode::invalid_argument: return "invalid_argument";
        case ErrorCode::cancelled: return "cancelled";
    }
    return "unknown";
}

std::string hex(uint64_t v) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
    return buf;
}

Error make_error(ErrorCode code, std::string message) {
    Error e;
    e.code = code;
    e.message = std::move(message);
    return e;
}

std::string Error::to_string() const {
    std::string s;
    if (!file.empty()) s += file + ": ";
    if (!format.empty()) s += format + ": ";
    s += message;
    if (offset) s += " (at offset " + hex(*offset) + ")";
    // Keep it one line whatever the message holds, and harmless on a terminal: names in messages come from
    // images (backing files, extents) and may carry escape sequences or invalid UTF-8.
    for (char& c : s)
        if (c == '\n' || c == '\r') c = ' ';
    return escape_for_terminal(s);
}

Error&& Error::in(std::string_view file_name, std::string_view format_name) && {
    if (file.empty()) file = std::string(file_name);
    if (format.empty()) format = std::string(format_name);
    return std::move(*this);
}

void bad_result_access(const Error* error) noexcept {
    if (error)
        std::fprintf(stderr, "vdisk: Result::value() called on an error: %s\n",
                     escape_for_terminal(error->to_string()).c_str());
    else std::fputs("vdisk: Result::error() called on a success\n", stderr);
    std::abort();
}

}  // namespace vdisk
