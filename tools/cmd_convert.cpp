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

}  // namespace

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

    ConvertOptions co;
    co.output_format = out_fmt;
    co.create.values = std::move(*kv);
    co.compress = args->has("c");
    co.existing_target = args->has("n");
    co.target_is_zero = args->has("target-is-zero");
    co.out_of_order = args->has("W");
    co.salvage = args->has("salvage");
    if (co.target_is_zero && !co.existing_target) return fail("convert: --target-is-zero requires use of -n flag");
    if (args->has("target-image-opts") && !co.existing_target)
        return fail("convert: --target-image-opts requires use of -n flag");
    if (auto b = args->get("B")) {
        if (co.existing_target)
            return fail("convert: -B cannot be used with -n (the existing target keeps its backing)");
        co.backing_file = *b;
        co.backing_format = args->get("F").value_or("");
    } else if (args->has("F")) {
        return fail("convert: -F (backing format) needs -B");
    }
    if (auto s = args->get("S")) {
        auto v = parse_size(*s);
        if (!v || *v % 512 || *v > (16u << 20))
            return fail(
                "convert: Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up "
                "to 16777216. Select 0 to disable sparse detection (fully allocates output).");
        co.sparse_size = *v;
    }
    if (auto r = args->get("r")) {
        auto v = parse_size(*r);
        if (!v)
            return fail("convert: Invalid rate limit specified: '" + *r + "' (bytes per second; k, M, G, T suffixes)");
        co.rate_limit = *v;
    }
    auto threads = args->get("m") ? args->get("m") : args->get("threads");
    if (threads) {
        char* end = nullptr;
        unsigned long n = std::strtoul(threads->c_str(), &end, 10);
        if (!end || *end || n < 1 || n > 256) return fail("convert: -m expects a thread count from 1 to 256");
        co.threads = static_cast<unsigned>(n);
    }
    CacheMode src_cache, dst_cache;
    if (auto t = args->get("T")) {
        auto m = parse_cache_mode(*t);
        if (!m) return fail("convert: " + m.error().message);
        src_cache = *m;
    }
    if (auto t = args->get("t")) {
        auto m = parse_cache_mode(*t);
        if (!m) return fail("convert: " + m.error().message);
        dst_cache = *m;
    }
    co.sync = !dst_cache.unsafe;

    std::vector<std::string> sources(args->positional.begin(), args->positional.end() - 1);
    std::string dst = args->positional.back();
    std::vector<std::string> src_fmts(sources.size(), args->get("f").value_or(""));
    if (args->has("image-opts"))
        for (size_t i = 0; i < sources.size(); ++i) {
            auto io = parse_image_opts(sources[i]);
            if (!io) return fail("convert: " + io.error().message);
            sources[i] = io->first;
            if (!io->second.empty()) src_fmts[i] = io->second;
        }
    if (args->has("target-image-opts")) {
        auto io = parse_image_opts(dst);
        if (!io) return fail("convert: " + io.error().message);
        dst = io->first;
        if (!io->second.empty()) co.output_format = io->second;
    }
    for (auto& s : sources)
        if (s == dst && dst != "-") return fail("convert: source and target are the same file: " + s);

    std::string snapshot;
    if (auto l = args->get("l")) {
        if (l->rfind("snapshot.name=", 0) == 0) snapshot = l->substr(14);
        else if (l->rfind("snapshot.id=", 0) == 0) snapshot = l->substr(12);
        else if (l->find('=') == std::string::npos) snapshot = *l;
        else return fail("convert: -l expects snapshot.name=NAME or snapshot.id=ID");
    }
    if (auto s = args->get("s")) snapshot = *s;
    if (!snapshot.empty() && sources.size() > 1) return fail("convert: -l/-s applies to a single source");

    if (sources.size() == 1 && sources[0] == "-") {
        // A forward-only source: the options that need random access to it, or several sources, do not apply.
        for (const char* o : {"n", "B", "S", "T", "W", "salvage", "image-opts", "l", "s", "keep-uuid"})
            if (args->has(o))
                return fail(std::string("convert: ") + (std::strlen(o) == 1 ? "-" : "--") + o +
                            " is not supported with a stdin source");
        return convert_from_stdin(env, *args, dst);
    }
    auto src_fs = file_system_for(env, src_cache);
    auto dst_fs = file_system_for(env, dst_cache);
    std::vector<OpenedImage> images;
    for (size_t i = 0; i < sources.size(); ++i) {
        auto img = open_cli(env, sources[i], src_fmts[i], args->has("untrusted"), false, snapshot,
                            args->get("parent").value_or(""), src_fs.get());
        if (!img) return fail(img.error());
        images.push_back(std::move(*img));
    }
    std::unique_ptr<BlockDevice> concat;
    BlockDevice* source = images[0].device.get();
    if (images.size() > 1) {
        std::vector<BlockDevice*> parts;
        uint64_t total = 0;
        for (auto& im : images) {
            if (im.device->size() > UINT64_MAX / 2 - total) return fail("convert: the sources' total size overflows");
            total += im.device->size();
            parts.push_back(im.device.get());
        }
        concat = make_concat_device(std::move(parts));
        source = concat.get();
    }

    if (args->has("keep-uuid")) {
        // The target takes the source's identity (VirtualBox refuses a second disk with a registered UUID,
        // so a converted disk that replaces the original must keep it): through the target's uuid option.
        const Format* tf = env.registry.find(co.output_format);
        auto table = tf->create_options();
        bool can = std::any_of(table.begin(), table.end(), [](const OptionSpec& o) { return o.name == "uuid"; });
        if (!can) return fail("convert: --keep-uuid: " + std::string(tf->name()) + " images record no UUID to keep");
        if (co.existing_target) return fail("convert: --keep-uuid applies to a new target, not to -n");
        if (images.size() > 1) return fail("convert: --keep-uuid needs a single source");
        if (co.create.get("uuid")) return fail("convert: --keep-uuid and -o uuid= both set the target's UUID");
        auto uuid = images[0].device->info().uuid;
        if (!uuid)
            return fail("convert: --keep-uuid: " + sources[0] + " (" + std::string(images[0].format->name()) +
                        ") records no UUID");
        co.create.set("uuid", *uuid);
    }
    if (args->has("p") && !args->has("q")) co.progress = progress_printer();
    if (co.salvage)
        co.on_salvaged = [&](uint64_t off, uint64_t len, const Error& e) {
            std::cerr << "vdisk: warning: " << escape_for_terminal(e.to_string()) << ": could not read " << len
                      << " bytes at offset " << off << "; wrote zeros there\n";
        };
    // "-" streams the image to stdout (formats written in one forward pass: vmdk streamOptimized, raw).
    std::unique_ptr<FileSystem> stream;
    if (dst == "-") {
        if (::isatty(1)) return fail("convert: refusing to write an image to a terminal");
        stream = make_stream_file_system(1, "-");
    }
    install_signal_handlers();
    co.cancel = &g_cancel;
    bool in_place = co.existing_target;
    if (auto ts = env.fs->stat(dst); ts && (ts->kind == FileKind::block_device || !ts->replaceable)) in_place = true;
    FileSystem& target_fs = stream ? *stream : (dst_fs ? *dst_fs : *env.fs);
    // --hash ALGO (repeatable) / --hash-file F: digests of the virtual content, taken in the same pass.
    auto hash_algos = parse_hash_list(args->all("hash"));
    if (!hash_algos) return fail(hash_algos.error());
    if (hash_algos->empty() && args->has("hash-file")) hash_algos->push_back(HashAlgorithm::sha256);
    std::unique_ptr<HashSink> hasher;
    if (!hash_algos->empty()) co.content_sink = (hasher = std::make_unique<HashSink>(*hash_algos)).get();
    auto st = args->get("target") == "gce" ? write_gce_tarball(*source, target_fs, dst, co)
                                           : convert(env.registry, *source, target_fs, dst, co);
    if (!st) {
        Error e = std::move(st).error();
        if (e.code == ErrorCode::cancelled && g_signal.load()) {
            int sig = g_signal.load();
            std::cerr << "vdisk: convert: interrupted by " << signal_name(sig) << "; "
                      << (in_place ? "the target (written in place) is incomplete" : "the target was not written")
                      << "\n";
            return 128 + sig;
        }
        if (e.file.empty()) e.file = dst;
        return fail(e);
    }
    if (hasher) return report_convert_digests(*hasher, sources.front(), dst, out_fmt, args->get("hash-file"));
    return 0;
}

}  // namespace vdisk::cli
