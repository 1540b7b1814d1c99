// SPDX-License-Identifier: Apache-2.0
// Shared pieces of the vdisk command-line tool: option parsing, opening images, output helpers.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "vdisk/hash.hpp"
#include "vdisk/vdisk.hpp"

namespace vdisk::cli {

/// Everything a command needs: the registry and the host file system. Owned by main().
struct Env {
    Registry registry = Registry::builtin();
    /// qemu-img's image locking is on unless the command was given -U / --force-share.
    PosixOptions posix = [] {
        PosixOptions p;
        p.lock = true;
        return p;
    }();
    std::unique_ptr<FileSystem> fs = make_posix_file_system({}, NamePolicy::any, posix);
    /// -U / --force-share: open images without taking QEMU's locks.
    void force_share() {
        posix.lock = false;
        fs = make_posix_file_system({}, NamePolicy::any, posix);
    }
    /// --disk N: which disk of an OVF package (.ova/.ovf) open_cli opens.
    uint32_t appliance_disk = 0;
};

/// One parsed option: short name ('f') or long name ("output"), and its value if it takes one.
struct Opt {
    std::string name;
    std::string value;
};

/// A command's option table: short options in getopt style ("f:O:cp"), long ones as "name" or "name=".
/// Long options may be abbreviated to any unique prefix, as with getopt_long. `refused` names options
/// (short letter or long name, also listed in shorts/longs) that qemu-img accepts but vdisk does not
/// implement, with the reason: they fail with one line instead of being accepted and ignored.
struct OptSpec {
    std::string_view shorts;
    std::vector<std::string_view> longs;
    std::vector<std::pair<std::string_view, std::string_view>> refused = {};
};

/// Options every qemu-img command accepts that vdisk refuses, with the reason.
inline constexpr std::string_view kNoObjects =
    "vdisk has no QEMU objects (secrets, TLS credentials, iothreads); encrypted images are not supported";

struct Args {
    std::vector<Opt> opts;
    std::vector<std::string> positional;
    bool has(std::string_view name) const;
    std::optional<std::string> get(std::string_view name) const;
    /// All values of a repeatable option, in order.
    std::vector<std::string> all(std::string_view name) const;
};

/// Parse argv[first..]. Returns an error message on unknown options or missing values.
Result<Args> parse_args(int argc, char** argv, int first, const OptSpec& spec);

/// -l snapshot.name=NAME|snapshot.id=ID|NAME (if given) into `snapshot`. 0, or 1 after printing "CMD: message".
int read_snapshot_option(const Args& a, std::string_view cmd, std::string& snapshot);

/// Print "vdisk: MESSAGE" on stderr; returns 1.
int fail(const Error& e);
int fail(std::string_view message);

/// Tighter caps for images from strangers (--untrusted).
Limits untrusted_limits();
/// Open an image for a command. `format` empty: probe. `untrusted`: OpenOptions::untrusted. `fs`: the file
/// system to open it through (default env.fs; another one for a cache mode).
Result<OpenedImage> open_cli(Env& env, const std::string& path, const std::string& format, bool untrusted,
                             bool read_write = false, const std::string& snapshot = {}, const std::string& parent = {},
                             FileSystem* fs = nullptr);

/// --image-opts: "driver=FMT,file.filename=PATH" (also "filename=PATH", "file.driver=file") -> path and
/// format. Any other key is an error naming it.
Result<std::pair<std::string, std::string>> parse_image_opts(const std::string& text);
/// --image-opts: `path` becomes its file name, `fmt` its driver= (if any). 0, or 1 after printing "CMD: message".
int apply_image_opts(std::string_view cmd, std::string& path, std::string& fmt);

/// qemu-img's cache modes (-t / -T): none, writeback, writethrough, directsync, unsafe.
struct CacheMode {
    PosixOptions posix;
    bool unsafe = false;  ///< no final sync
};
Result<CacheMode> parse_cache_mode(const std::string& mode);
/// The cache mode option `opt` (-t or -T; if given) into `mode`. 0, or 1 after printing "CMD: message".
int read_cache_mode(const Args& a, const char* opt, std::string_view cmd, CacheMode& mode);
/// Commands that write one image with a cache mode (-t): env.fs itself opens files that way. A non-empty
/// `other` (-T, for the files it reads) must name the same mode: one mode applies to every file. Returns
/// 0, or 1 after printing an error. `unsafe` is refused where the command has no final sync to skip.
int apply_cache_modes(Env& env, const char* cmd, const Args& a);

/// A POSIX file system for a cache mode (the default mode shares env.fs: returns nullptr).
std::unique_ptr<FileSystem> file_system_for(const Env& env, const CacheMode& mode);

/// Print a command's detailed help (usage plus one line per option) and return 0.
int print_command_help(std::string_view command);

/// qemu-img's human sizes: "4 MiB", "2.13 MiB", "388 KiB".
std::string human_size(uint64_t bytes);

/// Render format-specific JSON data as qemu-img's indented "key: value" lines.
void print_human_tree(const Json& j, int indent);

/// --output=human|json (default human); nullopt with a message printed on bad values.
std::optional<bool> output_is_json(const Args& a);

/// A progress printer for -p: "    (42.00/100%)" on stderr, redrawn in place.
ProgressFn progress_printer();

/// Print a format's create options (-o help).
int print_option_help(Env& env, const std::string& fmt_name);
/// Merge all -o arguments; "help" or "?" sets want_help.
Result<std::vector<std::pair<std::string, std::string>>> collect_options(const Args& a, bool& want_help);

int cmd_info(Env&, int argc, char** argv);
int cmd_convert(Env&, int argc, char** argv);
int cmd_create(Env&, int argc, char** argv);
int cmd_check(Env&, int argc, char** argv);
int cmd_map(Env&, int argc, char** argv);
int cmd_compare(Env&, int argc, char** argv);
int cmd_resize(Env&, int argc, char** argv);
int cmd_sample(Env&, int argc, char** argv);
int cmd_bench(Env&, int argc, char** argv);
int cmd_hash(Env&, int argc, char** argv);
int cmd_lint(Env&, int argc, char** argv);
/// convert --target T: the platform's format and -o values into out_fmt/kv (a user's -o wins; a
/// conflicting -O is an error). Returns 0, or 1 after printing an error.
int apply_convert_target(const Args& a, std::string& out_fmt, std::vector<std::pair<std::string, std::string>>& kv);

/// convert with "-" as SRC: -f raw|vmdk|vhd read in one forward pass (--size for raw/vhd from a pipe).
/// Takes convert's options (-O -o -c -m -p --hash --hash-file) itself.
int convert_from_stdin(Env& env, const Args& args, const std::string& dst);
/// Pieces both convert paths share; each returns 0, or 1 after printing an error. -m / --threads into
/// co.threads; "-" as `dst`: `stream` writes stdout (refused on a terminal); --hash / --hash-file: `hasher`
/// takes the content (co.content_sink). The failure's exit status: 128 + the signal that stopped it.
int report_convert_failure(Error e, const std::string& dst, bool in_place);
int read_thread_count(const Args& a, ConvertOptions& co);
int open_stdout_target(const std::string& dst, std::unique_ptr<FileSystem>& stream);
int attach_hasher(const Args& a, ConvertOptions& co, std::unique_ptr<HashSink>& hasher);

/// --disk N (OVF packages) into env.appliance_disk; false with a message printed on a bad value.
bool take_disk_option(Env& env, const Args& a);
/// `info` of an OVF package: the disks its descriptor names, then the selected disk's usual info.
/// Returns -1 when `path` is not an appliance (the caller goes on as usual).
int appliance_info(Env& env, const std::string& path, bool json, bool untrusted);

/// --algo/--hash values (repeatable, comma lists allowed), duplicates dropped, in the order given.
Result<std::vector<HashAlgorithm>> parse_hash_list(const std::vector<std::string>& values);
/// Digest lines for `name`: sha256sum's "HEX  NAME" for one digest, "SHA256 (NAME) = HEX" lines for several.
std::string format_digests(const std::vector<Digest>& digests, std::string_view name);
/// After `convert --hash`: finish the sink, print the digests (stderr when the image went to stdout) and
/// write `hash_file` if given. The name on each line is the target when it is raw (so `sha256sum -c`
/// verifies the written file), else the source.
int report_convert_digests(HashSink& sink, const std::string& src, const std::string& dst, const std::string& out_fmt,
                           const std::optional<std::string>& hash_file);
int cmd_measure(Env&, int argc, char** argv);
int cmd_snapshot(Env&, int argc, char** argv);
int cmd_rebase(Env&, int argc, char** argv);
int cmd_commit(Env&, int argc, char** argv);
int cmd_dd(Env&, int argc, char** argv);
int cmd_amend(Env&, int argc, char** argv);

}  // namespace vdisk::cli
