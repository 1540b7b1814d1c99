// SPDX-License-Identifier: Apache-2.0
// vdisk hash: digests of an image's virtual content, equal to `qemu-img convert -O raw IMG - | sha256sum`.
#include <fstream>
#include <iostream>

#include "cli.hpp"
#include "vdisk/hash.hpp"

namespace vdisk::cli {

Result<std::vector<HashAlgorithm>> parse_hash_list(const std::vector<std::string>& values) {
    std::vector<HashAlgorithm> out;
    for (auto& v : values) {
        // Accept "--algo sha256,md5" as well as repeated options.
        size_t start = 0;
        while (start <= v.size()) {
            size_t comma = v.find(',', start);
            std::string_view one = std::string_view(v).substr(start,
                                                              comma == std::string::npos ? v.npos : comma - start);
            VDISK_ASSIGN(HashAlgorithm a, parse_hash_algorithm(one));
            if (std::find(out.begin(), out.end(), a) == out.end()) out.push_back(a);
            if (comma == std::string::npos) break;
            start = comma + 1;
        }
    }
    return out;
}

std::string format_digests(const std::vector<Digest>& digests, std::string_view name) {
    std::string out;
    // One digest: exactly sha256sum's line, so `sha256sum -c` reads it. Several: the tagged lines of
    // `sha256sum --tag`, which say which algorithm each digest is (and `cksum -c` checks them all).
    for (auto& d : digests) {
        if (digests.size() == 1) out += d.hex + "  " + std::string(name) + "\n";
        else out += std::string(hash_algorithm_tag(d.algorithm)) + " (" + std::string(name) + ") = " + d.hex + "\n";
    }
    return out;
}

int report_convert_digests(HashSink& sink, const std::string& src, const std::string& dst, const std::string& out_fmt,
                           const std::optional<std::string>& hash_file) {
    auto digests = sink.finish();
    if (!digests) return fail(digests.error());
    const bool raw_file = out_fmt == "raw" && dst != "-";
    std::string lines = format_digests(*digests, raw_file ? dst : src);
    (dst == "-" ? std::cerr : std::cout) << lines;
    if (hash_file) {
        std::ofstream f(*hash_file, std::ios::binary | std::ios::trunc);
        f << lines;
        f.close();
        if (!f) return fail("convert: cannot write the hash file '" + *hash_file + "'");
    }
    return 0;
}

int cmd_hash(Env& env, int argc, char** argv) {
    auto args = parse_args(argc, argv, 2,
                           {"f:pU", {"algo=", "output=", "untrusted", "parent=", "force-share", "disk="}});
    if (!args) return fail(args.error());
    if (!take_disk_option(env, *args)) return 1;
    auto json = output_is_json(*args);
    if (!json) return 1;
    if (args->positional.size() != 1) return fail("hash: expected exactly one image (see vdisk hash --help)");
    auto algos_r = parse_hash_list(args->all("algo"));
    if (!algos_r) return fail(algos_r.error());
    auto algos = std::move(*algos_r);
    if (algos.empty()) algos.push_back(HashAlgorithm::sha256);
    const std::string& path = args->positional[0];
    auto img = open_cli(env, path, args->get("f").value_or(""), args->has("untrusted"), false, {},
                        args->get("parent").value_or(""));
    if (!img) return fail(img.error());
    HashOptions ho;
    if (args->has("p")) ho.progress = progress_printer();
    auto digests = hash_device(*img->device, algos, ho);
    if (!digests) return fail(std::move(digests).error().in(path));
    if (*json) {
        Json j = Json::object();
        j.set("filename", Json(path));
        j.set("virtual-size", Json(img->device->size()));
        for (auto& d : *digests) j.set(std::string(hash_algorithm_name(d.algorithm)), Json(d.hex));
        std::cout << j.dump(4) << "\n";
    } else {
        std::cout << format_digests(*digests, path);
    }
    return 0;
}

}  // namespace vdisk::cli
