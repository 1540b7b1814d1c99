// SPDX-License-Identifier: Apache-2.0
// Checked arithmetic for on-disk integers. Every value read from an image is hostile.
#pragma once

#include <cstdint>
#include <optional>
#include <type_traits>

namespace vdisk::util {

/// a + b, or nullopt on overflow.
template <typename T>
constexpr std::optional<T> add(T a, T b) noexcept {
    static_assert(std::is_unsigned_v<T>);
    T r;
    if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
    return r;
}

/// a * b, or nullopt on overflow.
template <typename T>
constexpr std::optional<T> mul(T a, T b) noexcept {
    static_assert(std::is_unsigned_v<T>);
    T r;
    if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
    return r;
}

/// ceil(a / b) for b > 0, without overflow.
constexpr uint64_t div_round_up(uint64_t a, uint64_t b) noexcept { return a / b + (a % b != 0); }

/// Round up to a multiple of the power of two `align`, or nullopt on overflow.
constexpr std::optional<uint64_t> align_up(uint64_t v, uint64_t align) noexcept {
    auto s = add<uint64_t>(v, align - 1);
    if (!s) return std::nullopt;
    return *s & ~(align - 1);
}

constexpr uint64_t align_down(uint64_t v, uint64_t align) noexcept { return v & ~(align - 1); }
constexpr bool is_pow2(uint64_t v) noexcept { return v != 0 && (v & (v - 1)) == 0; }
constexpr bool is_aligned(uint64_t v, uint64_t align) noexcept { return (v & (align - 1)) == 0; }

/// True when [off, off+len) lies inside [0, limit).
constexpr bool range_within(uint64_t off, uint64_t len, uint64_t limit) noexcept {
    return off <= limit && len <= limit - off;
}

}  // namespace vdisk::util
