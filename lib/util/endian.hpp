// SPDX-License-Identifier: Apache-2.0
// On-disk integer access. Layout headers use Boost.Endian buffer types for structs; these helpers read
// and write single fields from byte buffers.
#pragma once

#include <boost/endian/buffers.hpp>
#include <boost/endian/conversion.hpp>
#include <cstdint>
#include <cstring>

namespace vdisk::util {

template <typename T>
inline T load_le(const uint8_t* p) noexcept {
    T v;
    std::memcpy(&v, p, sizeof v);
    return boost::endian::little_to_native(v);
}
template <typename T>
inline T load_be(const uint8_t* p) noexcept {
    T v;
    std::memcpy(&v, p, sizeof v);
    return boost::endian::big_to_native(v);
}
template <typename T>
inline void store_le(uint8_t* p, T v) noexcept {
    v = boost::endian::native_to_little(v);
    std::memcpy(p, &v, sizeof v);
}
template <typename T>
inline void store_be(uint8_t* p, T v) noexcept {
    v = boost::endian::native_to_big(v);
    std::memcpy(p, &v, sizeof v);
}

}  // namespace vdisk::util
