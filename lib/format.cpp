// SPDX-License-Identifier: Apache-2.0
// Format defaults, option parsing, OpenContext and the registry's lookup and probing.
#include "vdisk/format.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>

namespace vdisk {

Result<std::unique_ptr<BlockDevice>> Format::create(const CreateOptions&, const OpenContext&) const {
    return make_error(ErrorCode::unsupported, "creating " + std::string(name()) + " images is not supported");
}

Result<MeasureResult> Format::measure(const CreateOptions&, const MeasureSource&) const {
    return make_error(ErrorCode::unsupported, "format '" + std::string(name()) + "' does not support size measurement");
}

// ---- options -------------------------------------------------------------------------------------

std::optional<std::string> CreateOptions::get(std::string_view key) const {
    for (auto it = values.rbegin(); it != values.rend(); ++it)
        if (it->first == key) return it->second;
    return std::nullopt;
}

void CreateOptions::set(std::string key, std::string value) {
    for (auto& [k, v] : values)
        if (k == key) {
            v = std::move(value);
            return;
        }
    values.emplace_back(std::move(key), std::move(value));
}

Result<bool> CreateOptions::get_bool(std::string_view key, bool dflt) const {
    auto v = get(key);
    if (!v) return dflt;
    std::string s = *v;
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (s == "on" || s == "true" || s == "yes" || s == "1") return true;
    if (s == "off" || s == "false" || s == "no" || s == "0") return false;
    return make_error(ErrorCode::invalid_argument,
                      "option '" + std::string(key) + "' expects on/off, got '" + *v + "'");
}

Result<uint64_t> CreateOptions::get_size(std::string_view key, uint64_t dflt) const {
    auto v = get(key);
    if (!v) return dflt;
    auto r = parse_size(*v);
    if (!r) return make_error(ErrorCode::invalid_argument, "option '" + std::string(key) + "': " + r.error().message);
    return r;
}

Result<uint64_t> parse_size(std::string_view text) {
    auto bad = [&] { return make_error(ErrorCode::invalid_argument, "invalid size '" + std::string(text) + "'"); };
    if (text.empty()) return bad();
    size_t i = 0;
    uint64_t whole = 0;
    bool digits = false;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
        uint64_t d = static_cast<uint64_t>(text[i] - '0');
        if (whole > (UINT64_MAX - d) / 10) return bad();
        whole = whole * 10 + d;
        ++i;
        digits = true;
    }
    double frac = 0;
    if (i < text.size() && text[i] == '.') {
        ++i;
        double scale = 0.1;
        while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
            frac += (text[i] - '0') * scale;
            scale /= 10;
            ++i;
            digits = true;
        }
    }
    if (!digits) return bad();
    uint64_t mult = 1;
    if (i < text.size()) {
        switch (std::tolower(static_cast<unsigned char>(text[i]))) {
            case 'b': mult = 1; break;
            case 'k': mult = 1ull << 10; break;
            case 'm': mult = 1ull << 20; break;
            case 'g': mult = 1ull << 30; break;
            case 't': mult = 1ull << 40; break;
            case 'p': mult = 1ull << 50; break;
            case 'e': mult = 1ull << 60; break;
            default: return bad();
        }
        ++i;
        if (i < text.size() && (text[i] == 'i' || text[i] == 'I')) ++i;
        if (i < text.size() && (text[i] == 'b' || text[i] == 'B') && mult != 1) ++i;
    }
    if (i != text.size()) return bad();
    if (whole > UINT64_MAX / mult) return bad();
    long double total = static_cast<long double>(whole) * mult + static_cast<long double>(frac) * mult;
    if (total >= 18446744073709551615.0L) return bad();
    return static_cast<uint64_t>(std::llround(total));
}

Result<std::vector<std::pair<std::string, std::string>>> parse_option_list(std::string_view text) {
    std::vector<std::pair<std::string, std::string>> out;
    std::string cur;
    std::vector<std::string> items;
    for (size_t i = 0; i < text.size(); ++i) {
        if (text[i] == ',') {
            if (i + 1 < text.size() && text[i + 1] == ',') {
                cur += ',';
                ++i;
                continue;
            }
            items.push_back(cur);
            cur.clear();
        } else {
            cur += text[i];
        }
    }
    items.push_back(cur);
    for (auto& item : items) {
        if (item.empty()) continue;
        auto eq = item.find('=');
        if (eq == std::string::npos || eq == 0)
            return make_error(ErrorCode::invalid_argument, "invalid option '" + item + "': expected key=value");
        out.emplace_back(item.substr(0, eq), item.substr(eq + 1));
    }
    return out;
}

// ---- OpenContext ---------------------------------------------------------------------------------

Result<std::unique_ptr<File>> OpenContext::open_related(std::string_view ref, Access access,
                                                        std::string_view what) const {
    if (options_.references) options_.references->push_back(std::string(what) + " '" + std::string(ref) + "'");
    if (options_.untrusted) {
        Error e = make_error(ErrorCode::access_denied, "untrusted image refers to another file (" + std::string(what) +
                                                           " '" + std::string(ref) + "'); refusing to open it");
        e.file = name_;
        return e;
    }
    if (ref.empty()) {
        Error e = make_error(ErrorCode::corrupt, std::string(what) + " name is empty");
        e.file = name_;
        return e;
    }
    std::string resolved = resolve_reference(name_, ref);
    auto f = fs_.open(resolved, access);
    if (!f) {
        Error e = std::move(f).error();
        e.message = "cannot open " + std::string(what) + " '" + std::string(ref) + "': " + e.message;
        e.file = name_;
        return e;
    }
    return f;
}

Result<std::unique_ptr<File>> OpenContext::create_related(std::string_view ref) const {
    return fs_.create(resolve_reference(name_, ref), false);
}

// ---- Registry ------------------------------------------------------------------------------------

const Format* Registry::find(std::string_view name) const {
    for (auto& f : formats_) {
        if (f->name() == name) return f.get();
        for (auto a : f->aliases())
            if (a == name) return f.get();
    }
    return nullptr;
}

Result<const Format*> Registry::lookup(std::string_view name) const {
    if (auto* f = find(name)) return f;
    std::string known;
    for (auto& f : formats_) {
        if (!known.empty()) known += ", ";
        known += f->name();
    }
    return make_error(ErrorCode::not_found, "unknown format '" + std::string(name) + "' (known: " + known + ")");
}

std::vector<const Format*> Registry::formats() const {
    std::vector<const Format*> out;
    for (auto& f : formats_) out.push_back(f.get());
    return out;
}

Result<std::vector<std::pair<const Format*, int>>> Registry::probe_all(File& file) const {
    VDISK_ASSIGN(uint64_t size, file.size());
    std::vector<uint8_t> head(static_cast<size_t>(std::min<uint64_t>(size, uint64_t{64} * 1024)));
    VDISK_TRY(read_exact(file, 0, head, "probe header"));
    std::vector<uint8_t> tail(static_cast<size_t>(std::min<uint64_t>(size, 512)));
    VDISK_TRY(read_exact(file, size - tail.size(), tail, "probe trailer"));
    std::vector<std::pair<const Format*, int>> out;
    for (auto& f : formats_) {
        int s = f->probe(head, tail, size);
        if (s > 1) out.emplace_back(f.get(), s);
    }
    std::stable_sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.second > b.second; });
    return out;
}

Result<const Format*> Registry::probe(File& file, bool allow_raw) const {
    VDISK_ASSIGN(auto scored, probe_all(file));
    if (scored.empty()) {
        if (allow_raw)
            if (auto* raw = find("raw")) return raw;
        Error e = make_error(ErrorCode::invalid_format, "no format recognises this file");
        e.file = file.name();
        return e;
    }
    if (scored.size() > 1 && scored[0].second == scored[1].second) {
        Error e = make_error(ErrorCode::invalid_format,
                             "ambiguous image: both " + std::string(scored[0].first->name()) + " and " +
                                 std::string(scored[1].first->name()) + " match equally; give the format with -f");
        e.file = file.name();
        return e;
    }
    return scored[0].first;
}

}  // namespace vdisk
