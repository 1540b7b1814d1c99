// SPDX-License-Identifier: Apache-2.0
#include "cli.hpp"

#include <cmath>
#include <cstdio>
#include <iostream>

namespace vdisk::cli {

bool Args::has(std::string_view name) const {
    for (auto& o : opts)
        if (o.name == name) return true;
    return false;
}

std::optional<std::string> Args::get(std::string_view name) const {
    std::optional<std::string> v;
    for (auto& o : opts)
        if (o.name == name) v = o.value;
    return v;
}

std::vector<std::string> Args::all(std::string_view name) const {
    std::vector<std::string> v;
    for (auto& o : opts)
        if (o.name == name) v.push_back(o.value);
    return v;
}

namespace {

Error bad_option(std::string m) { return make_error(ErrorCode::invalid_argument, std::move(m)); }

/// "--name", "--name=VALUE" or "--name VALUE" (the value from the next word: advances i). The name is exact,
/// else a unique prefix (getopt_long's abbreviations).
Status parse_long(std::string_view arg, int argc, char** argv, int& i, const OptSpec& spec, Args& a) {
    std::string_view body = arg.substr(2);
    const auto eq = body.find('=');
    std::string_view name = body.substr(0, eq), match;
    int matches = 0;
    for (auto l : spec.longs) {
        std::string_view n = !l.empty() && l.back() == '=' ? l.substr(0, l.size() - 1) : l;
        if (n == name) {
            match = l;
            matches = 1;
            break;
        }
        if (n.substr(0, name.size()) == name) {
            match = l;
            ++matches;
        }
    }
    if (matches == 0) return bad_option("unrecognized option '" + std::string(arg) + "'");
    if (matches > 1) return bad_option("option '" + std::string(arg) + "' is ambiguous");
    const bool takes = match.back() == '=';
    Opt o{std::string(takes ? match.substr(0, match.size() - 1) : match), {}};
    if (takes) {
        if (eq != std::string_view::npos) o.value = std::string(body.substr(eq + 1));
        else if (i + 1 < argc) o.value = argv[++i];
        else return bad_option("option '--" + o.name + "' requires an argument");
    } else if (eq != std::string_view::npos) {
        return bad_option("option '--" + o.name + "' doesn't allow an argument");
    }
    a.opts.push_back(std::move(o));
    return ok();
}

/// "-abc", getopt style: an option that takes a value ends the cluster ("-fqcow2", or "-f qcow2", which
/// advances i).
Status parse_shorts(std::string_view arg, int argc, char** argv, int& i, const OptSpec& spec, Args& a) {
    for (size_t k = 1; k < arg.size(); ++k) {
        char c = arg[k];
        auto pos = spec.shorts.find(c);
        if (pos == std::string_view::npos || c == ':') return bad_option(std::string("invalid option -- '") + c + "'");
        bool takes = pos + 1 < spec.shorts.size() && spec.shorts[pos + 1] == ':';
        Opt o{std::string(1, c), {}};
        if (takes) {
            if (k + 1 < arg.size()) o.value = std::string(arg.substr(k + 1));
            else if (i + 1 < argc) o.value = argv[++i];
            else return bad_option(std::string("option requires an argument -- '") + c + "'");
        }
        a.opts.push_back(std::move(o));
        if (takes) break;
    }
    return ok();
}

}  // namespace

Result<Args> parse_args(int argc, char** argv, int first, const OptSpec& spec) {
    Args a;
    for (int i = first; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg == "--") {
            for (++i; i < argc; ++i) a.positional.emplace_back(argv[i]);
            break;
        }
        if (arg.size() > 2 && arg.substr(0, 2) == "--") VDISK_TRY(parse_long(arg, argc, argv, i, spec, a));
        else if (arg.size() > 1 && arg[0] == '-') VDISK_TRY(parse_shorts(arg, argc, argv, i, spec, a));
        else a.positional.emplace_back(arg);
    }
    for (auto& o : a.opts)
        for (auto& [name, why] : spec.refused)
            if (o.name == name)
                return bad_option((o.name.size() == 1 ? "-" : "--") + o.name +
                                  " is not supported: " + std::string(why));
    return a;
}

int read_snapshot_option(const Args& a, std::string_view cmd, std::string& snapshot) {
    auto l = a.get("l");
    if (!l) return 0;
    if (l->rfind("snapshot.name=", 0) == 0) snapshot = l->substr(14);
    else if (l->rfind("snapshot.id=", 0) == 0) snapshot = l->substr(12);
    else if (l->find('=') == std::string::npos) snapshot = *l;
    else return fail(std::string(cmd) + ": -l expects snapshot.name=NAME or snapshot.id=ID");
    return 0;
}

int fail(const Error& e) {
    std::cerr << "vdisk: " << escape_for_terminal(e.to_string()) << "\n";
    return 1;
}

int fail(std::string_view message) {
    std::cerr << "vdisk: " << escape_for_terminal(message) << "\n";
    return 1;
}

Limits untrusted_limits() {
    Limits l;
    l.max_metadata_bytes = 64ull << 20;
    l.max_descriptor_bytes = 64ull << 10;
    l.max_extents = 256;
    l.max_snapshots = 1024;
    return l;
}

Result<OpenedImage> open_cli(Env& env, const std::string& path, const std::string& format, bool untrusted,
                             bool read_write, const std::string& snapshot, const std::string& parent, FileSystem* fs) {
    OpenOptions o;
    o.backing_override = parent;
    o.format = format;
    o.untrusted = untrusted;
    o.read_write = read_write;
    o.snapshot = snapshot;
    o.appliance_disk = env.appliance_disk;
    if (untrusted) o.limits = untrusted_limits();
    if (!format.empty()) {
        auto f = env.registry.lookup(format);
        if (!f) return std::move(f).error();
    }
    return open_image(env.registry, fs ? *fs : *env.fs, path, o);
}

Result<std::pair<std::string, std::string>> parse_image_opts(const std::string& text) {
    VDISK_ASSIGN(auto kv, parse_option_list(text));
    std::string path, fmt;
    for (auto& [k, v] : kv) {
        if (k == "driver") fmt = v;
        else if (k == "file.filename" || k == "filename") path = v;
        else if (k == "file.driver" && v == "file") continue;
        else
            return make_error(ErrorCode::invalid_argument,
                              "--image-opts: option '" + k +
                                  "' is not supported (vdisk knows driver=, file.filename=, "
                                  "file.driver=file)");
    }
    if (path.empty())
        return make_error(ErrorCode::invalid_argument, "--image-opts: no file.filename= in '" + text + "'");
    return std::make_pair(path, fmt);
}

int apply_image_opts(std::string_view cmd, std::string& path, std::string& fmt) {
    auto io = parse_image_opts(path);
    if (!io) return fail(std::string(cmd) + ": " + io.error().message);
    path = io->first;
    if (!io->second.empty()) fmt = io->second;
    return 0;
}

Result<CacheMode> parse_cache_mode(const std::string& mode) {
    CacheMode m;
    if (mode == "none" || mode == "off") m.posix.direct = true;
    else if (mode == "directsync") m.posix.direct = m.posix.write_through = true;
    else if (mode == "writethrough") m.posix.write_through = true;
    else if (mode == "unsafe") m.unsafe = true;
    else if (mode != "writeback") return make_error(ErrorCode::invalid_argument, "Invalid cache option: " + mode);
    return m;
}

int read_cache_mode(const Args& a, const char* opt, std::string_view cmd, CacheMode& mode) {
    auto name = a.get(opt);
    if (!name) return 0;
    auto m = parse_cache_mode(*name);
    if (!m) return fail(std::string(cmd) + ": " + m.error().message);
    mode = *m;
    return 0;
}

int apply_cache_modes(Env& env, const char* cmd, const Args& a) {
    auto t = a.get("t"), T = a.get("T");
    if (t && T && *t != *T)
        return fail(std::string(cmd) + ": -t " + *t + " and -T " + *T +
                    " differ; vdisk opens every file of this command with one cache mode");
    CacheMode m;
    if (!t && !T) return 0;
    if (read_cache_mode(a, t ? "t" : "T", cmd, m)) return 1;
    if (m.unsafe)
        return fail(std::string(cmd) +
                    ": cache mode 'unsafe' is not supported here (every write is flushed at the end)");
    env.posix.direct = m.posix.direct;
    env.posix.write_through = m.posix.write_through;
    env.fs = make_posix_file_system({}, NamePolicy::any, env.posix);
    return 0;
}

std::unique_ptr<FileSystem> file_system_for(const Env& env, const CacheMode& mode) {
    if (!mode.posix.direct && !mode.posix.write_through) return nullptr;
    PosixOptions p = mode.posix;
    p.lock = env.posix.lock;
    return make_posix_file_system({}, NamePolicy::any, p);
}

std::string human_size(uint64_t bytes) {
    static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = static_cast<double>(bytes);
    int e = 0;
    std::frexp(v / (1000.0 / 1024.0), &e);
    int i = e > 0 ? (e - 1) / 10 : 0;
    if (i > 6) i = 6;
    double div = std::ldexp(1.0, i * 10);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%0.3g %s", v / div, units[i]);
    return buf;
}

static std::string scalar(const Json& v) {
    if (auto* s = v.as_string()) return escape_for_terminal(*s);
    if (auto* b = v.as_bool()) return *b ? "true" : "false";
    return v.dump(0);
}

void print_human_tree(const Json& j, int indent) {
    const auto* obj = j.as_object();
    if (!obj) return;
    for (auto& [k, v] : *obj) {
        std::string key = escape_for_terminal(k);
        for (auto& c : key)
            if (c == '-') c = ' ';
        std::string pad(static_cast<size_t>(indent), ' ');
        if (v.is_object()) {
            std::cout << pad << key << ":\n";
            print_human_tree(v, indent + 4);
        } else if (auto* arr = v.as_array()) {
            std::cout << pad << key << ":\n";
            for (size_t i = 0; i < arr->size(); ++i) {
                if ((*arr)[i].is_object()) {
                    std::cout << pad << "    [" << i << "]:\n";
                    print_human_tree((*arr)[i], indent + 8);
                } else {
                    std::cout << pad << "    [" << i << "]: " << scalar((*arr)[i]) << "\n";
                }
            }
        } else {
            std::cout << pad << key << ": " << scalar(v) << "\n";
        }
    }
}

std::optional<bool> output_is_json(const Args& a) {
    auto o = a.get("output");
    if (!o || *o == "human") return false;
    if (*o == "json") return true;
    fail("--output must be 'human' or 'json', not '" + *o + "'");
    return std::nullopt;
}

ProgressFn progress_printer() {
    auto last = std::make_shared<int>(-1);
    return [last](uint64_t done, uint64_t total) {
        int pct100 = total ? static_cast<int>(done * 10000 / total) : 10000;
        if (pct100 == *last || (pct100 / 100 == *last / 100 && pct100 != 10000)) return;
        *last = pct100;
        std::fprintf(stderr, "    (%d.%02d/100%%)\r", pct100 / 100, pct100 % 100);
        if (done >= total) std::fprintf(stderr, "\n");
        std::fflush(stderr);
    };
}

/// -o help / -o ? : list a format's create options.
int print_option_help(Env& env, const std::string& fmt_name) {
    auto fmt = env.registry.lookup(fmt_name);
    if (!fmt) return fail(fmt.error());
    std::cout << "Supported options:\n";
    bool has_size = false;
    for (auto& o : (*fmt)->create_options()) {
        has_size = has_size || o.name == "size";
        std::printf("  %-22s - %.*s\n", std::string(o.name).c_str(), static_cast<int>(o.help.size()), o.help.data());
    }
    if (!has_size) std::printf("  %-22s - %s\n", "size", "Virtual disk size");
    return 0;
}

/// Merge all -o arguments; "help" or "?" anywhere asks for the option list.
Result<std::vector<std::pair<std::string, std::string>>> collect_options(const Args& a, bool& want_help) {
    std::vector<std::pair<std::string, std::string>> out;
    for (auto& text : a.all("o")) {
        if (text == "help" || text == "?") {
            want_help = true;
            continue;
        }
        VDISK_ASSIGN(auto kv, parse_option_list(text));
        for (auto& p : kv) out.push_back(std::move(p));
    }
    return out;
}

}  // namespace vdisk::cli
