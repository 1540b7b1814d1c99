// vdisk convert: one engine (lib/convert.cpp), qemu-img's options.
#include <unistd.h>

#include <iostream>

#include "cli.hpp"
#include "vdisk/targets.hpp"

namespace vdisk::cli {

int cmd_convert(Env& env, int argc, char** argv) {
    auto args = parse_args(argc, argv, 2, {"f:O:o:cpm:l:s:S:t:T:qUWn", {"untrusted", "force-share", "threads=", "parent=", "hash=", "hash-file=", "disk=", "size=", "target="}});
    if (!args) return fail(args.error());
    if (!take_disk_option(env, *args)) return 1;
    std::string out_fmt = args->get("O").value_or("raw");
    bool want_help = false;
    auto kv = collect_options(*args, want_help);
    if (!kv) return fail(kv.error());
    if (apply_convert_target(*args, out_fmt, *kv)) return 1;
    if (want_help) return print_option_help(env, out_fmt);
    if (auto f = env.registry.lookup(out_fmt); !f) return fail(f.error());
    if (args->has("n")) return fail("convert: -n (use an existing target) is not supported; the target is always created");
    if (args->positional.size() != 2)
        return fail(args->positional.size() > 2 ? "convert: concatenating several sources is not supported"
                                                : "convert: expected SRC and DST (see vdisk convert --help)");
    const std::string& src = args->positional[0];
    const std::string& dst = args->positional[1];
    if (src == dst && src != "-") return fail("convert: source and target are the same file");

    std::string snapshot;
    if (auto l = args->get("l")) {
        if (l->rfind("snapshot.name=", 0) == 0) snapshot = l->substr(14);
        else if (l->rfind("snapshot.id=", 0) == 0) snapshot = l->substr(12);
        else if (l->find('=') == std::string::npos) snapshot = *l;
        else return fail("convert: -l expects snapshot.name=NAME or snapshot.id=ID");
    }
    if (auto s = args->get("s")) snapshot = *s;

    if (src == "-") return convert_from_stdin(env, *args, dst);
    auto img = open_cli(env, src, args->get("f").value_or(""), args->has("untrusted"), false, snapshot,
                        args->get("parent").value_or(""));
    if (!img) return fail(img.error());

    ConvertOptions co;
    co.output_format = out_fmt;
    co.create.values = std::move(*kv);
    co.compress = args->has("c");
    auto threads = args->get("m") ? args->get("m") : args->get("threads");
    if (threads) {
        char* end = nullptr;
        unsigned long n = std::strtoul(threads->c_str(), &end, 10);
        if (!end || *end || n < 1 || n > 256) return fail("convert: -m expects a thread count from 1 to 256");
        co.threads = static_cast<unsigned>(n);
    }
    if (args->has("p")) co.progress = progress_printer();
    // "-" streams the image to stdout (formats written in one forward pass: vmdk streamOptimized, raw).
    std::unique_ptr<FileSystem> stream;
    if (dst == "-") {
        if (::isatty(1)) return fail("convert: refusing to write an image to a terminal");
        stream = make_stream_file_system(1, "-");
    }
    // --hash ALGO (repeatable) / --hash-file F: digests of the virtual content, taken in the same pass.
    auto hash_algos = parse_hash_list(args->all("hash"));
    if (!hash_algos) return fail(hash_algos.error());
    if (hash_algos->empty() && args->has("hash-file")) hash_algos->push_back(HashAlgorithm::sha256);
    std::unique_ptr<HashSink> hasher;
    if (!hash_algos->empty()) co.content_sink = (hasher = std::make_unique<HashSink>(*hash_algos)).get();
    auto st = args->get("target") == "gce" ? write_gce_tarball(*img->device, stream ? *stream : *env.fs, dst, co)
                                           : convert(env.registry, *img->device, stream ? *stream : *env.fs, dst, co);
    if (!st) {
        Error e = std::move(st).error();
        if (e.file.empty()) e.file = dst;
        return fail(e);
    }
    if (hasher) return report_convert_digests(*hasher, src, dst, out_fmt, args->get("hash-file"));
    return 0;
}

}  // namespace vdisk::cli
