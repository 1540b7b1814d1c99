// SPDX-License-Identifier: Apache-2.0
// vdisk::Json: strict RFC 8259, locale-independent numbers, 64-bit overflow detected, UTF-8 in and out.
#include <locale.h>

#include <clocale>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <locale>
#include <string>

#include "support.hpp"
#include "vdisk/json.hpp"
#include "vdisk/text.hpp"

using vdisk::Json;
using vdisk::JsonError;
using vdisk::JsonParseError;

namespace {

JsonParseError parse_error(std::string_view text) {
    Json j;
    JsonParseError e;
    if (Json::parse(text, j, e)) return JsonParseError{JsonError::none, 0};
    return e;
}

Json parsed(std::string_view text) {
    Json j;
    JsonParseError e;
    REQUIRE_MESSAGE(Json::parse(text, j, e), text << ": " << e.message());
    return j;
}

// A numpunct that writes "1.234.567,5": what a German locale would make of iostream numbers.
struct CommaDecimal : std::numpunct<char> {
    char do_decimal_point() const override { return ','; }
    char do_thousands_sep() const override { return '.'; }
    std::string do_grouping() const override { return "\3"; }
};

// Switch this thread's C locale (uselocale) and the global C++ locale to comma-decimal ones for the scope:
// de_DE.UTF-8 when installed, else compiled here with localedef into a temporary LOCPATH, else only the C++
// side (C.UTF-8 has a decimal point), which the test says. uselocale rather than setlocale: the rest of the
// process keeps its locale.
// glibc keeps what it loads for a locale (names, paths) for the life of the process, which LeakSanitizer would
// report: its allocations are made with leak checking off. Weak: absent outside sanitized builds.
extern "C" void __lsan_disable() __attribute__((weak));  // NOLINT(bugprone-reserved-identifier)
extern "C" void __lsan_enable() __attribute__((weak));   // NOLINT(bugprone-reserved-identifier)
locale_t load_locale(const char* n) {
    if (__lsan_disable) __lsan_disable();
    locale_t l = newlocale(LC_ALL_MASK, n, static_cast<locale_t>(nullptr));
    if (__lsan_enable) __lsan_enable();
    return l;
}

struct CommaLocale {
    std::locale old_cpp;
    locale_t loc = static_cast<locale_t>(nullptr);
    std::string name;
    bool c_level = false;
    vt::TempDir dir;

    CommaLocale() {
        c_level = try_c("de_DE.UTF-8") || try_c("de_DE.utf8");
        if (!c_level &&
            std::system(("localedef -i de_DE -f UTF-8 " + dir / "de_DE.UTF-8" + " >/dev/null 2>&1").c_str()) == 0) {
            ::setenv("LOCPATH", dir.path.c_str(), 1);
            c_level = try_c("de_DE.UTF-8");
        }
        std::locale::global(std::locale(std::locale::classic(), new CommaDecimal));
        if (!c_level) MESSAGE("no comma-decimal C locale available: only the C++ global locale uses a decimal comma");
    }
    ~CommaLocale() {
        uselocale(LC_GLOBAL_LOCALE);
        if (loc) freelocale(loc);
        std::locale::global(old_cpp);
        ::unsetenv("LOCPATH");
    }
    CommaLocale(const CommaLocale&) = delete;
    CommaLocale& operator=(const CommaLocale&) = delete;
    bool try_c(const char* n) {
        locale_t l = load_locale(n);
        if (!l) return false;
        uselocale(l);
        if (std::localeconv()->decimal_point[0] != ',') {
            uselocale(LC_GLOBAL_LOCALE);
            freelocale(l);
            return false;
        }
        loc = l;
        name = n;
        return true;
    }
};

}  // namespace

TEST_CASE("JSON numbers are written and read the same under a comma-decimal locale") {
    CommaLocale guard;
    MESSAGE("C locale of this thread: " << (guard.c_level ? guard.name : std::string("C")));
    if (guard.c_level) {  // the locale really is in effect for C formatting
        char b[16];
        std::snprintf(b, sizeof b, "%.1f", 1.5);
        CHECK(std::string(b) == "1,5");
    }
    Json j = Json::object();
    j.set("half", 1.5).set("tenth", 0.1).set("big", uint64_t(1234567890123)).set("neg", int64_t(-1234567));
    j.set("exp", 1e300).set("tiny", 2.5e-300);
    const std::string text = j.dump(0);
    CHECK(text ==
          "{\"half\": 1.5, \"tenth\": 0.1, \"big\": 1234567890123, \"neg\": -1234567, \"exp\": 1e+300, "
          "\"tiny\": 2.5e-300}");
    Json back = parsed(text);
    CHECK(*back.get("half")->as_double() == 1.5);
    CHECK(*back.get("tenth")->as_double() == 0.1);
    CHECK(*back.get("big")->as_uint() == 1234567890123u);
    CHECK(*back.get("neg")->as_int() == -1234567);
    CHECK(*back.get("exp")->as_double() == 1e300);
    CHECK(*back.get("tiny")->as_double() == 2.5e-300);
    CHECK(back.dump(0) == text);
    // "1,5" is not one JSON number in any locale
    CHECK(parse_error("1,5").kind == JsonError::trailing_characters);
}

TEST_CASE("JSON doubles round-trip exactly through their shortest text") {
    for (double v : {0.0, -0.0, 1.0, -2.5, 0.1, 1.0 / 3.0, 123456.789, 1e-7, 1.7976931348623157e308,
                     2.2250738585072014e-308, 4.9406564584124654e-324, 9007199254740993.0}) {
        const std::string text = Json(v).dump();
        Json back = parsed(text);
        // integral doubles print without a fraction and read back as integers: compare values
        double got = back.as_double() ? *back.as_double()
                     : back.as_uint() ? static_cast<double>(*back.as_uint())
                                      : static_cast<double>(*back.as_int());
        CHECK_MESSAGE(got == v, text);
        CHECK(text.find(',') == std::string::npos);
    }
    CHECK(Json(std::numeric_limits<double>::infinity()).dump() == "null");
    CHECK(Json(std::numeric_limits<double>::quiet_NaN()).dump() == "null");
}

TEST_CASE("JSON integers use the full 64-bit ranges and refuse to overflow") {
    CHECK(*parsed("18446744073709551615").as_uint() == std::numeric_limits<uint64_t>::max());
    CHECK(*parsed("-9223372036854775808").as_int() == std::numeric_limits<int64_t>::min());
    CHECK(*parsed("9223372036854775808").as_uint() == uint64_t(1) << 63);
    CHECK(*parsed("0").as_uint() == 0);
    CHECK(*parsed("-0").as_int() == 0);
    CHECK(Json(std::numeric_limits<uint64_t>::max()).dump() == "18446744073709551615");
    CHECK(Json(std::numeric_limits<int64_t>::min()).dump() == "-9223372036854775808");

    auto e = parse_error("18446744073709551616");
    CHECK(e.kind == JsonError::number_out_of_range);
    CHECK(e.offset == 0);
    CHECK(parse_error("-9223372036854775809").kind == JsonError::number_out_of_range);
    CHECK(parse_error("[1, 99999999999999999999999]").offset == 4);
    CHECK(parse_error("1e400").kind == JsonError::number_out_of_range);
    CHECK(parse_error("-1e400").kind == JsonError::number_out_of_range);
    CHECK(parse_error("1e-400").kind == JsonError::number_out_of_range);
}

TEST_CASE("JSON refuses malformed text with the exact error kind and offset") {
    struct Case {
        std::string_view text;
        JsonError kind;
        size_t offset;
    };
    const Case cases[] = {
        {"", JsonError::unexpected_end, 0},
        {"   ", JsonError::unexpected_end, 3},
        {"{\"a\": [1, 2", JsonError::unexpected_end, 11},
        {"[1 2]", JsonError::unexpected_character, 3},
        {"{\"a\" 1}", JsonError::unexpected_character, 5},
        {"{\"a\": 1,}", JsonError::unexpected_character, 8},
        {"[1,]", JsonError::unexpected_character, 3},
        {"{a: 1}", JsonError::unexpected_character, 1},
        {"'a'", JsonError::unexpected_character, 0},
        {"\xef\xbb\xbf{}", JsonError::unexpected_character, 0},  // no byte order mark
        {"tru", JsonError::unexpected_end, 3},
        {"trux", JsonError::unexpected_character, 0},
        {"nul", JsonError::unexpected_end, 3},
        {"NaN", JsonError::unexpected_character, 0},
        {"Infinity", JsonError::unexpected_character, 0},
        {"1 2", JsonError::trailing_characters, 2},
        {"{} x", JsonError::trailing_characters, 3},
        {"[]]", JsonError::trailing_characters, 2},
        {std::string_view("\"a\"\0", 4), JsonError::trailing_characters, 3},
        {"01", JsonError::invalid_number, 0},
        {"-01", JsonError::invalid_number, 0},
        {"1.", JsonError::invalid_number, 0},
        {".5", JsonError::unexpected_character, 0},
        {"+1", JsonError::unexpected_character, 0},
        {"-", JsonError::unexpected_end, 1},
        {"-a", JsonError::invalid_number, 0},
        {"1e", JsonError::invalid_number, 0},
        {"1e+", JsonError::invalid_number, 0},
        {"[1.5e]", JsonError::invalid_number, 1},
        {"0x10", JsonError::trailing_characters, 1},
        {"\"abc", JsonError::unexpected_end, 4},
        {"\"a\\x\"", JsonError::invalid_escape, 2},
        {"\"a\\'\"", JsonError::invalid_escape, 2},
        {"\"\\u12G4\"", JsonError::invalid_escape, 5},
        {"\"\\u12", JsonError::unexpected_end, 5},
        {"\"\\ud800\"", JsonError::invalid_surrogate, 1},
        {"\"\\udc00\"", JsonError::invalid_surrogate, 1},
        {"\"\\ud800\\u0041\"", JsonError::invalid_surrogate, 1},
        {"\"\\ud800x\"", JsonError::invalid_surrogate, 1},
        {"\"a\tb\"", JsonError::control_character, 2},
        {"\"a\nb\"", JsonError::control_character, 2},
        {"\"\xff\"", JsonError::invalid_utf8, 1},
        {"\"ab\xc0\x80\"", JsonError::invalid_utf8, 3},        // overlong NUL
        {"\"\xed\xa0\x80\"", JsonError::invalid_utf8, 1},      // an encoded surrogate
        {"\"\xf4\x90\x80\x80\"", JsonError::invalid_utf8, 1},  // past U+10FFFF
        {"\"\xe2\x82\"", JsonError::invalid_utf8, 1},          // truncated sequence
        {"{\"a\": 1, \"b\": 2, \"a\": 3}", JsonError::duplicate_key, 0},
        {"[{\"x\": {}, \"x\": []}]", JsonError::duplicate_key, 1},
    };
    for (const Case& c : cases) {
        const std::string_view text = c.text;
        auto e = parse_error(text);
        CHECK_MESSAGE(e.kind == c.kind, '"' << vdisk::escape_for_terminal(text) << "\" gave " << e.message());
        CHECK_MESSAGE(e.offset == c.offset, '"' << vdisk::escape_for_terminal(text) << "\" gave " << e.message());
    }
    std::string message;
    Json j;
    CHECK(!Json::parse("[1,]", j, &message));
    CHECK(message == "unexpected_character at byte 3");
}

TEST_CASE("JSON nesting is capped at max_depth") {
    std::string ok = std::string(Json::max_depth, '[') + std::string(Json::max_depth, ']');
    parsed(ok);
    std::string deep = std::string(Json::max_depth + 1, '[') + std::string(Json::max_depth + 1, ']');
    auto e = parse_error(deep);
    CHECK(e.kind == JsonError::too_deep);
    CHECK(e.offset == static_cast<size_t>(Json::max_depth));
    std::string objects;
    for (int k = 0; k < 100000; ++k) objects += "{\"a\": ";
    CHECK(parse_error(objects).kind == JsonError::too_deep);
}

TEST_CASE("JSON strings: escapes, surrogate pairs and UTF-8 in and out") {
    CHECK(*parsed("\"\\ud83d\\ude00\"").as_string() == "\xf0\x9f\x98\x80");
    CHECK(*parsed("\"\\u00e9\\u20AC\\/\\b\\f\\n\\r\\t\\\"\\\\\"").as_string() == "\xc3\xa9\xe2\x82\xac/\b\f\n\r\t\"\\");
    CHECK(*parsed("\"\\u0000\"").as_string() == std::string(1, '\0'));
    CHECK(*parsed("\"gr\xc3\xbc\xc3\x9f \xf0\x9f\x98\x80\"").as_string() == "gr\xc3\xbc\xc3\x9f \xf0\x9f\x98\x80");
    CHECK(*parsed(" \t\r\n\"x\" \n").as_string() == "x");

    // every byte from 0 to 0x7f, and a 4-byte character, survive a round trip
    std::string all;
    for (int c = 0; c < 0x80; ++c) all += static_cast<char>(c);
    all += "\xf0\x9f\x98\x80";
    const std::string text = Json(all).dump();
    CHECK(vdisk::utf8_valid(text));
    CHECK(*parsed(text).as_string() == all);
    CHECK(Json(std::string("a\x01\x1f\x7f")).dump() == "\"a\\u0001\\u001f\\u007f\"");

    // bytes from an image that are not UTF-8: the output is still valid UTF-8 (and valid JSON)
    Json bad = Json::object();
    bad.set(std::string("k\xff"), std::string("v\xc0\x80\xed\xa0\x80"));
    const std::string out = bad.dump(0);
    CHECK(vdisk::utf8_valid(out));
    CHECK(out == "{\"k\xef\xbf\xbd\": \"v\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"}");
    parsed(out);
}

TEST_CASE("JSON objects keep insertion order through a round trip") {
    Json j = Json::object();
    j.set("z", 1).set("a", Json::array().push(true).push(nullptr).push("s")).set("m", Json::object());
    const std::string pretty = j.dump();
    CHECK(pretty ==
          "{\n    \"z\": 1,\n    \"a\": [\n        true,\n        null,\n        \"s\"\n    ],\n    \"m\": {}\n}");
    CHECK(parsed(pretty).dump() == pretty);
}
