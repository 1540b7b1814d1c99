// SPDX-License-Identifier: Apache-2.0
// lib/util helpers: CRC-32C (hardware and table paths against known vectors and a bytewise reference),
// UUID text (libuuid) in byte order and in the Microsoft GUID layout.
#include <array>
#include <cstring>
#include <cstdint>
#include <random>
#include <vector>

#include "support.hpp"
#include "util/bytes.hpp"

using namespace vdisk;

namespace {

// The plain bitwise definition of CRC-32C (reflected polynomial 0x82F63B78): slow and obviously right.
uint32_t crc32c_reference(std::span<const uint8_t> buf, uint32_t seed = 0) {
    uint32_t c = ~seed;
    for (uint8_t b : buf) {
        c ^= b;
        for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

void check_all(std::span<const uint8_t> buf, uint32_t want, uint32_t seed = 0) {
    CHECK(util::crc32c(buf, seed) == want);
    CHECK(util::crc32c_table(buf, seed) == want);
    if (auto hw = util::crc32c_hardware(buf, seed)) CHECK(*hw == want);
}

}  // namespace

TEST_CASE("CRC-32C matches the RFC 3720 test vectors") {
    std::array<uint8_t, 32> b{};
    check_all(b, 0x8a9136aa);  // 32 bytes of zeros
    b.fill(0xff);
    check_all(b, 0x62a8ab43);
    for (size_t i = 0; i < 32; ++i) b[i] = static_cast<uint8_t>(i);
    check_all(b, 0x46dd794e);
    for (size_t i = 0; i < 32; ++i) b[i] = static_cast<uint8_t>(31 - i);
    check_all(b, 0x113fdb5c);
    const std::array<uint8_t, 48> iscsi_read = {0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                                0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
                                                0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
                                                0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    check_all(iscsi_read, 0xd9963a56);
    const std::string check = "123456789";
    check_all(std::span(reinterpret_cast<const uint8_t*>(check.data()), check.size()), 0xe3069283);
    check_all({}, 0);
    MESSAGE(
        "SSE4.2 crc32: " << std::string(util::crc32c_hardware({}).has_value() ? "used" : "not available, table only"));
}

TEST_CASE("CRC-32C agrees with the bitwise definition for every length and alignment") {
    std::mt19937 rng(1234);
    std::vector<uint8_t> buf(4096 + 16);
    for (auto& x : buf) x = static_cast<uint8_t>(rng());
    for (size_t align = 0; align < 8; ++align) {
        for (size_t len = 0; len <= 300; ++len) {
            auto s = std::span<const uint8_t>(buf).subspan(align, len);
            const uint32_t seed = len % 3 == 0 ? 0 : static_cast<uint32_t>(rng());
            const uint32_t want = crc32c_reference(s, seed);
            REQUIRE(util::crc32c(s, seed) == want);
            REQUIRE(util::crc32c_table(s, seed) == want);
            if (auto hw = util::crc32c_hardware(s, seed)) REQUIRE(*hw == want);
        }
    }
    for (size_t len : {1000u, 4093u, 4096u}) {
        auto s = std::span<const uint8_t>(buf).subspan(3, len);
        CHECK(util::crc32c(s) == crc32c_reference(s));
        // a running CRC over pieces equals the CRC of the whole
        CHECK(util::crc32c(s.subspan(517), util::crc32c(s.first(517))) == crc32c_reference(s));
    }
}

TEST_CASE("UUID text: RFC 4122 byte order and the Microsoft GUID layout") {
    const uint8_t bytes[16] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                               0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
    CHECK(util::uuid_to_string(bytes) == "00112233-4455-6677-8899-aabbccddeeff");
    // the VHDX/VDI layout: Data1, Data2, Data3 little-endian
    CHECK(util::guid_to_string(bytes) == "33221100-5544-7766-8899-aabbccddeeff");
    CHECK(util::guid_to_string(bytes, true) == "33221100-5544-7766-8899-AABBCCDDEEFF");

    uint8_t back[16];
    REQUIRE(util::parse_uuid("00112233-4455-6677-8899-AABBCCDDEEFF", back, false));
    CHECK(std::memcmp(back, bytes, 16) == 0);
    REQUIRE(util::parse_uuid("33221100-5544-7766-8899-aabbccddeeff", back, true));
    CHECK(std::memcmp(back, bytes, 16) == 0);

    uint8_t swapped[16];
    util::guid_to_uuid(bytes, swapped);
    util::guid_to_uuid(swapped, swapped);  // its own inverse, in place
    CHECK(std::memcmp(swapped, bytes, 16) == 0);

    for (std::string_view bad : {"", "00112233-4455-6677-8899-aabbccddeef", "00112233-4455-6677-8899-aabbccddeeff0",
                                 "00112233+4455-6677-8899-aabbccddeeff", "0011223g-4455-6677-8899-aabbccddeeff",
                                 "{0112233-4455-6677-8899-aabbccddeef}", "001122334455-6677-8899-aabbccddeeff-"}) {
        CHECK_MESSAGE(!util::parse_uuid(bad, back, false), bad);
    }
    CHECK(!util::parse_uuid(std::string_view("00112233-4455-6677-8899-aabbccdd\0eff", 36), back, false));
}
