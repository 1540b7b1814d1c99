// SPDX-License-Identifier: Apache-2.0
// vdisk convert: one engine (lib/convert.cpp), qemu-img's options, any target an admin points it at.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstring>
#include <iostream>

#include "cli.hpp"
#include "vdisk/targets.hpp"

namespace vdisk::cli {
namespace {

// SIGINT/SIGTERM/SIGHUP stop a conversion cleanly: the engine sees the flag, stops, and the staging file
// system removes the temporary file; the target is untouched. The handler only stores two atomics.
std::atomic<bool> g_cancel{false};
std::atomic<int> g_signal{0};

extern "C" void on_signal(int sig) {
    g_signal.store(sig);
    g_cancel.store(true);
}

void install_signal_handlers() {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
}

const char* signal_name(int sig) {
    switch (sig) {
        case SIGINT: return "SIGINT";
        case SIGTERM: return "SIGTERM";
        case SIGHUP: return "SIGHUP";
    }
    return "a signal";
}

/// The command line, read: the engine's options, and what convert does around the engine.
struct Request {
    ConvertOptions co;
    std::vector<std::string> sources, src_fmts;
    std::string dst, snapshot;
    CacheMode src_cache, dst_cache;
};

/// The engine's options from the flags (-c -n -W -B -F -S -r -m -T -t -p --salvage --target-is-zero).
int read_engine_options(const Args& a, Request& r) {
    ConvertOptions& co = r.co;
    co.compress = a.has("c");
    co.existing_target = a.has("n");
    co.target_is_zero = a.has("target-is-zero");
    co.out_of_order = a.has("W");
    co.salvage = a.has("salvage");
    if (co.target_is_zero && !co.existing_target) return fail("convert: --target-is-zero requires use of -n flag");
    if (a.has("target-image-opts") && !co.existing_target)
        return fail("convert: --target-image-opts requires use of -n flag");
    if (auto b = a.get("B")) {
        if (co.existing_target)
            return fail("convert: -B cannot be used with -n (the existing target keeps its backing)");
        co.backing_file = *b;
        co.backing_format = a.get("F").value_or("");
    } else if (a.has("F")) {
        return fail("convert: -F (backing format) needs -B");
    }
    if (auto s = a.get("S")) {
        auto v = parse_size(*s);
        if (!v || *v % 512 || *v > (16u << 20))
            return fail(
                "convert: Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up "
                "to 16777216. Select 0 to disable sparse detection (fully allocates output).");
        co.sparse_size = *v;
    }
    if (auto rate = a.get("r")) {
        auto v = parse_size(*rate);
        if (!v)
            return fail("convert: Invalid rate limit specified: '" + *rate +
                        "' (bytes per second; k, M, G, T suffixes)");
        co.rate_limit = *v;
    }
    if (read_thread_count(a, co)) return 1;
    if (read_cache_mode(a, "T", "convert", r.src_cache) || read_cache_mode(a, "t", "convert", r.dst_cache)) return 1;
    co.sync = !r.dst_cache.unsafe;
    if (a.has("p") && !a.has("q")) co.progress = progress_printer();
    if (co.salvage)
        co.on_salvaged = [](uint64_t off, uint64_t len, const Error& e) {
            std::cerr << "vdisk: warning: " << escape_for_terminal(e.to_string()) << ": could not read " << len
                      << " bytes at offset " << off << "; wrote zeros there\n";
        };
    return 0;
}

/// SRC... DST (option strings with --image-opts / --target-image-opts) and the snapshot to read (-l / -s).
int read_paths(const Args& a, Request& r) {
    r.sources.assign(a.positional.begin(), a.positional.end() - 1);
    r.dst = a.positional.back();
    r.src_fmts.assign(r.sources.size(), a.get("f").value_or(""));
    if (a.has("image-opts"))
        for (size_t i = 0; i < r.sources.size(); ++i)
            if (apply_image_opts("convert", r.sources[i], r.src_fmts[i])) return 1;
    if (a.has("target-image-opts") && apply_image_opts("convert", r.dst, r.co.output_format)) return 1;
    for (auto& s : r.sources)
        if (s == r.dst && r.dst != "-") return fail("convert: source and target are the same file: " + s);
    if (read_snapshot_option(a, "convert", r.snapshot)) return 1;
    if (auto s = a.get("s")) r.snapshot = *s;
    if (!r.snapshot.empty() && r.sources.size() > 1) return fail("convert: -l/-s applies to a single source");
    return 0;
}

/// The sources, open; several are read as one device, end to end.
struct Sources {
    std::unique_ptr<FileSystem> fs;  // a -T cache mode's, outliving the images opened through it
    std::vector<OpenedImage> images;
    std::unique_ptr<BlockDevice> concat;
    BlockDevice& device() const { return concat ? *concat : *images[0].device; }
};

int open_sources(Env& env, const Args& a, const Request& r, Sources& out) {
    out.fs = file_system_for(env, r.src_cache);
    for (size_t i = 0; i < r.sources.size(); ++i) {
        auto img = open_cli(env, r.sources[i], r.src_fmts[i], a.has("untrusted"), false, r.snapshot,
                            a.get("parent").value_or(""), out.fs.get());
        if (!img) return fail(img.error());
        out.images.push_back(std::move(*img));
    }
    if (out.images.size() == 1) return 0;
    std::vector<BlockDevice*> parts;
    uint64_t total = 0;
    for (auto& im : out.images) {
        if (im.device->size() > UINT64_MAX / 2 - total) return fail("convert: the sources' total size overflows");
        total += im.device->size();
        parts.push_back(im.device.get());
    }
    out.concat = make_concat_device(std::move(parts));
    return 0;
}

/// --keep-uuid: the target takes the source's identity (VirtualBox refuses a second disk with a registered
/// UUID, so a converted disk that replaces the original must keep it): through the target's uuid option.
int keep_uuid(const Env& env, Request& r, const Sources& src) {
    const Format* tf = env.registry.find(r.co.output_format);
    auto table = tf->create_options();
    bool can = std::any_of(table.begin(), table.end(), [](const OptionSpec& o) { return o.name == "uuid"; });
    if (!can) return fail("convert: --keep-uuid: " + std::string(tf->name()) + " images record no UUID to keep");
    if (r.co.existing_target) return fail("convert: --keep-uuid applies to a new target, not to -n");
    if (src.images.size() > 1) return fail("convert: --keep-uuid needs a single source");
    if (r.co.create.get("uuid")) return fail("convert: --keep-uuid and -o uuid= both set the target's UUID");
    auto uuid = src.images[0].device->info().uuid;
    if (!uuid)
        return fail("convert: --keep-uuid: " + r.sources[0] + " (" + std::string(src.images[0].format->name()) +
                    ") records no UUID");
    r.co.create.set("uuid", *uuid);
    return 0;
}

}  // namespace

int report_convert_failure(Error e, const std::string& dst, bool in_place) {
    if (e.code == ErrorCode::cancelled && g_signal.load()) {
        int sig = g_signal.load();
        std::cerr << "vdisk: convert: interrupted by " << signal_name(sig) << "; "
                  << (in_place ? "the target (written in place) is incomplete" : "the target was not written") << "\n";
        return 128 + sig;
    }
    if (e.file.empty()) e.file = dst;
    return fail(e);
}

int read_thread_count(const Args& a, ConvertOptions& co) {
    auto threads = a.get("m") ? a.get("m") : a.get("threads");
    if (!threads) return 0;
    char* end = nullptr;
    unsigned long n = std::strtoul(threads->c_str(), &end, 10);
    if (!end || *end || n < 1 || n > 256) return fail("convert: -m expects a thread count from 1 to 256");
    co.threads = static_cast<unsigned>(n);
    return 0;
}

int open_stdout_target(const std::string& dst, std::unique_ptr<FileSystem>& stream) {
    if (dst != "-") return 0;
    if (::isatty(1)) return fail("convert: refusing to write an image to a terminal");
    stream = make_stream_file_system(1, "-");
    return 0;
}

int attach_hasher(const Args& a, ConvertOptions& co, std::unique_ptr<HashSink>& hasher) {
    auto hash_algos = parse_hash_list(a.all("hash"));
    if (!hash_algos) return fail(hash_algos.error());
    if (hash_algos->empty() && a.has("hash-file")) hash_algos->push_back(HashAlgorithm::sha256);
    if (!hash_algos->empty()) co.content_sink = (hasher = std::make_unique<HashSink>(*hash_algos)).get();
    return 0;
}

int cmd_convert(Env& env, int argc, char** argv) {
    const OptSpec spec{"hf:O:o:cpm:l:s:S:t:T:qUWnr:B:F:C",
                       {"help", "untrusted", "force-share", "threads=", "parent=", "object=", "image-opts",
                        "target-image-opts", "target-is-zero", "salvage", "bitmaps", "skip-broken-bitmaps",
                        "hash=", "hash-file=", "disk=", "size=", "target=", "keep-uuid"},
                       {{"object", kNoObjects},
                        {"C", "copy offloading (copy_file_range) is not implemented; vdisk copies through memory"},
                        {"bitmaps", "vdisk does not copy qcow2 persistent dirty bitmaps"},
                        {"skip-broken-bitmaps", "vdisk does not copy qcow2 persistent dirty bitmaps"}}};
    auto args = parse_args(argc, argv, 2, spec);
    if (!args) return fail("convert: " + args.error().message);
    if (args->has("U") || args->has("force-share")) env.force_share();
    if (!take_disk_option(env, *args)) return 1;
    std::string out_fmt = args->get("O").value_or("raw");
    bool want_help = false;
    auto kv = collect_options(*args, want_help);
    if (!kv) return fail(kv.error());
    if (apply_convert_target(*args, out_fmt, *kv)) return 1;
    if (want_help) return print_option_help(env, out_fmt);
    if (auto f = env.registry.lookup(out_fmt); !f) return fail(f.error());
    if (args->positional.size() < 2) return fail("convert: expected SRC... DST (see vdisk convert --help)");

    Request r;
    ConvertOptions& co = r.co;
    co.output_format = out_fmt;
    co.create.values = std::move(*kv);
    if (read_engine_options(*args, r) || read_paths(*args, r)) return 1;
    if (r.sources.size() == 1 && r.sources[0] == "-") {
        // A forward-only source: the options that need random access to it, or several sources, do not apply.
        for (const char* o : {"n", "B", "S", "T", "W", "salvage", "image-opts", "l", "s", "keep-uuid"})
            if (args->has(o))
                return fail(std::string("convert: ") + (std::strlen(o) == 1 ? "-" : "--") + o +
                            " is not supported with a stdin source");
        return convert_from_stdin(env, *args, r.dst);
    }
    Sources src;
    if (open_sources(env, *args, r, src) || (args->has("keep-uuid") && keep_uuid(env, r, src))) return 1;
    // "-" streams the image to stdout (formats written in one forward pass: vmdk streamOptimized, raw).
    std::unique_ptr<FileSystem> stream;
    if (open_stdout_target(r.dst, stream)) return 1;
    install_signal_handlers();
    co.cancel = &g_cancel;
    bool in_place = co.existing_target;
    if (auto ts = env.fs->stat(r.dst); ts && (ts->kind == FileKind::block_device || !ts->replaceable)) in_place = true;
    auto dst_fs = file_system_for(env, r.dst_cache);
    FileSystem& target_fs = stream ? *stream : (dst_fs ? *dst_fs : *env.fs);
    // --hash ALGO (repeatable) / --hash-file F: digests of the virtual content, taken in the same pass.
    std::unique_ptr<HashSink> hasher;
    if (attach_hasher(*args, co, hasher)) return 1;
    auto st = args->get("target") == "gce" ? write_gce_tarball(src.device(), target_fs, r.dst, co)
                                           : convert(env.registry, src.device(), target_fs, r.dst, co);
    if (!st) return report_convert_failure(std::move(st).error(), r.dst, in_place);
    if (hasher) return report_convert_digests(*hasher, r.sources.front(), r.dst, out_fmt, args->get("hash-file"));
    return 0;
}

}  // namespace vdisk::cli
