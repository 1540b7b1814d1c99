// SPDX-License-Identifier: Apache-2.0
// convert with "-" as the source: one forward pass over stdin (lib/stream_convert.cpp).
#include <sys/stat.h>
#include <unistd.h>

#include "cli.hpp"
#include "vdisk/stream.hpp"

namespace vdisk::cli {

int convert_from_stdin(Env& env, const Args& args, const std::string& dst) {
    ConvertOptions co;
    co.output_format = args.get("O").value_or("raw");
    bool want_help = false;
    auto kv = collect_options(args, want_help);
    if (!kv) return fail(kv.error());
    if (args.get("target") == "gce")
        return fail("convert: --target gce from stdin is not supported; convert to a file first");
    if (apply_convert_target(args, co.output_format, *kv)) return 1;
    co.create.values = std::move(*kv);
    co.compress = args.has("c");
    if (read_thread_count(args, co)) return 1;
    if (args.has("p")) co.progress = progress_printer();
    std::unique_ptr<HashSink> hasher;
    std::unique_ptr<FileSystem> stream;
    if (attach_hasher(args, co, hasher) || open_stdout_target(dst, stream)) return 1;
    FileSystem& out_fs = stream ? *stream : *env.fs;

    StreamSource s;
    s.format = args.get("f").value_or("");
    if (s.format.empty()) return fail("convert: reading an image from stdin needs its format: -f raw|vmdk|vhd");
    if (auto f = env.registry.lookup(s.format); !f) return fail(f.error());
    // Refused here, before a byte of stdin is consumed.
    if (!stream_readable_format(env.registry, s.format))
        return fail("convert: -f " + s.format +
                    " cannot be read from stdin: it needs random access "
                    "(only raw, streamOptimized vmdk and fixed vhd stream); save it to a file first");
    if (::isatty(0)) return fail("convert: stdin is a terminal, not an image");
    if (auto sz = args.get("size")) {
        auto v = parse_size(*sz);
        if (!v) return fail(v.error());
        s.size = *v;
    } else {
        // Redirected from a file (< disk.raw): its size is known without reading.
        struct stat st {};
        if (::fstat(0, &st) == 0 && S_ISREG(st.st_mode) && ::lseek(0, 0, SEEK_CUR) == 0) {
            uint64_t total = static_cast<uint64_t>(st.st_size);
            const Format* f = *env.registry.lookup(s.format);
            if (f->name() == "raw") s.size = total;
            else if (f->name() == "vhd" && total >= 512) s.size = total - 512;
        }
    }
    auto in = make_fd_input_stream(0, "-");
    auto st = convert_stream(env.registry, *in, s, out_fs, dst, co);
    if (!st) return report_convert_failure(std::move(st).error(), dst, false);
    if (hasher) return report_convert_digests(*hasher, "-", dst, co.output_format, args.get("hash-file"));
    return 0;
}

}  // namespace vdisk::cli
