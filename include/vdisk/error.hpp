// SPDX-License-Identifier: Apache-2.0
// vdisk — errors as values.
//
// Every fallible function in the public API returns Result<T> (or Status, which is Result<void>).
// No exception crosses the API. Malformed input is the normal case for a parser: it yields an Error
// whose message names the structure and the bad value, plus the file and offset where it was found.
#pragma once

#include "vdisk/export.h"

#include <cstdint>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace vdisk {

/// The fixed set of error kinds. Callers branch on these; humans read the message.
enum class ErrorCode {
    io,                ///< the operating system failed a read/write/open (errno in the message)
    invalid_format,    ///< the bytes are not this format at all (bad magic, bad signature)
    unsupported,       ///< a valid feature vdisk does not implement (encryption, unknown feature bit)
    corrupt,           ///< the format is recognised but a structure is inconsistent or out of range
    out_of_range,      ///< a request lies outside the device or file
    not_found,         ///< a named file, snapshot or format does not exist
    access_denied,     ///< a policy (untrusted mode, path policy) forbids the operation
    limit_exceeded,    ///< a configured cap (memory, chain depth, extent count) would be exceeded
    read_only,         ///< a write to something opened or marked read-only
    invalid_argument,  ///< the caller's request is malformed (bad option, bad size)
    cancelled,         ///< the caller stopped the operation (cancel flag, signal, progress callback)
};

/// Short stable name of an error code ("corrupt", "io", ...).
VDISK_API std::string_view to_string(ErrorCode code) noexcept;

/// An error with its location. `format`, `file` and `offset` are filled where known.
struct VDISK_API Error {
    ErrorCode code = ErrorCode::io;
    std::string message;             ///< names the structure and value: "L2 entry 0x... points past end of file"
    std::string format;              ///< "qcow2", "vmdk", ... or empty for generic errors
    std::string file;                ///< the file name as the FileSystem knows it
    std::optional<uint64_t> offset;  ///< byte offset of the offending structure in `file`

    /// One line for a human: "FILE: FORMAT: MESSAGE (offset 0x...)".
    std::string to_string() const;

    /// Fill in file/format where not yet set (used while an error travels outwards).
    Error&& in(std::string_view file_name, std::string_view format_name = {}) &&;

    /// Record where the offending structure lies: `make_error(ErrorCode::corrupt, "...").at(off)`.
    Error&& at(uint64_t where) && {
        offset = where;
        return std::move(*this);
    }
};

/// What Result::value() on an error (and error() on a success, with nullptr) does: prints the error to
/// stderr and aborts — defined behaviour, never a read of the wrong union member.
[[noreturn]] VDISK_API void bad_result_access(const Error* error) noexcept;

/// Construct an Error. `make_error(ErrorCode::corrupt, "L1 table offset 0x%llx unaligned", ...)` style
/// formatting is deliberately not provided: build messages with std::string and hex() below.
VDISK_API Error make_error(ErrorCode code, std::string message);

/// "0x1f" — for messages.
VDISK_API std::string hex(uint64_t v);

template <typename T>
class [[nodiscard]] Result;

/// Result<T>: either a T or an Error. An `expected`-like type (GCC 12 has no std::expected in C++20).
template <typename T>
class [[nodiscard]] Result {
public:
    Result(T value) : ok_(true) { new (&value_) T(std::move(value)); }           // NOLINT
    Result(Error error) : ok_(false) { new (&error_) Error(std::move(error)); }  // NOLINT
    template <typename U,
              typename = std::enable_if_t<std::is_convertible_v<U&&, T> && !std::is_same_v<std::decay_t<U>, T> &&
                                          !std::is_same_v<std::decay_t<U>, Error>>>
    Result(U&& v) : ok_(true) {
        new (&value_) T(std::forward<U>(v));
    }  // NOLINT
    Result(const Result& o) : ok_(o.ok_) {
        if (ok_) new (&value_) T(o.value_);
        else new (&error_) Error(o.error_);
    }
    Result(Result&& o) noexcept : ok_(o.ok_) {
        if (ok_) new (&value_) T(std::move(o.value_));
        else new (&error_) Error(std::move(o.error_));
    }
    Result& operator=(Result o) noexcept {
        destroy();
        ok_ = o.ok_;
        if (ok_) new (&value_) T(std::move(o.value_));
        else new (&error_) Error(std::move(o.error_));
        return *this;
    }
    ~Result() { destroy(); }

    explicit operator bool() const noexcept { return ok_; }
    bool ok() const noexcept { return ok_; }

    /// The value; calling it on an error aborts with the error's text (never undefined behaviour).
    /// operator* and -> do not check, like std::optional's: test the Result first.
    T& value() & {
        if (!ok_) bad_result_access(&error_);
        return value_;
    }
    const T& value() const& {
        if (!ok_) bad_result_access(&error_);
        return value_;
    }
    T&& value() && {
        if (!ok_) bad_result_access(&error_);
        return std::move(value_);
    }
    T& operator*() & { return value_; }
    const T& operator*() const& { return value_; }
    T&& operator*() && { return std::move(value_); }
    T* operator->() { return &value_; }
    const T* operator->() const { return &value_; }

    /// The error; calling it on a success aborts (never undefined behaviour).
    Error& error() & {
        if (ok_) bad_result_access(nullptr);
        return error_;
    }
    const Error& error() const& {
        if (ok_) bad_result_access(nullptr);
        return error_;
    }
    Error&& error() && {
        if (ok_) bad_result_access(nullptr);
        return std::move(error_);
    }

private:
    void destroy() noexcept {
        if (ok_) value_.~T();
        else error_.~Error();
    }
    bool ok_;
    union {
        T value_;
        Error error_;
    };
};

/// Result<void>: success or an Error.
template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error error) : error_(std::move(error)) {}  // NOLINT
    explicit operator bool() const noexcept { return !error_; }
    bool ok() const noexcept { return !error_; }
    /// The error; calling it on a success aborts (never undefined behaviour).
    Error& error() & {
        if (!error_) bad_result_access(nullptr);
        return *error_;
    }
    const Error& error() const& {
        if (!error_) bad_result_access(nullptr);
        return *error_;
    }
    Error&& error() && {
        if (!error_) bad_result_access(nullptr);
        return std::move(*error_);
    }

private:
    std::optional<Error> error_;
};

using Status = Result<void>;

inline Status ok() { return {}; }

}  // namespace vdisk

#define VDISK_CONCAT_INNER(a, b) a##b
#define VDISK_CONCAT(a, b) VDISK_CONCAT_INNER(a, b)

/// Propagate an error from an expression returning Result<...>.
#define VDISK_TRY(expr)                                            \
    do {                                                           \
        auto&& vdisk_try_r_ = (expr);                              \
        if (!vdisk_try_r_) return std::move(vdisk_try_r_).error(); \
    } while (0)

/// `VDISK_ASSIGN(auto x, f());` — declare/assign from a Result or propagate its error. Expands to several
/// statements: use it at block scope (not as the body of an unbraced if/for). __COUNTER__ gives each use a
/// distinct temporary even when arguments span lines.
#define VDISK_ASSIGN(lhs, expr) VDISK_ASSIGN_IMPL(VDISK_CONCAT(vdisk_assign_r_, __COUNTER__), lhs, expr)
// tmp and lhs are declarators, which cannot be parenthesised:
// NOLINTBEGIN(bugprone-macro-parentheses)
#define VDISK_ASSIGN_IMPL(tmp, lhs, expr)    \
    auto tmp = (expr);                       \
    if (!tmp) return std::move(tmp).error(); \
    lhs = std::move(*tmp)
// NOLINTEND(bugprone-macro-parentheses)
