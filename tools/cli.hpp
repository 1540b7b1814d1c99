// Shared pieces of the vdisk command-line tool: option parsing, opening images, output helpers.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "vdisk/vdisk.hpp"

namespace vdisk::cli {

/// Everything a command needs: the registry and the host file system. Owned by main().
struct Env {
    Registry registry = Registry::builtin();
    std::unique_ptr<FileSystem> fs = make_posix_file_system();
};

/// One parsed option: short name ('f') or long name ("output"), and its value if it takes one.
struct Opt {
    std::string name;
    std::string value;
};

/// A command's option table: short options in getopt style ("f:O:cp"), long ones as "name" or "name=".
struct OptSpec {
    std::string_view shorts;
    std::vector<std::string_view> longs;
};

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

/// Print "vdisk: MESSAGE" on stderr; returns 1.
int fail(const Error& e);
int fail(std::string_view message);

/// Open an image for a command. `format` empty: probe. `untrusted`: OpenOptions::untrusted.
Result<OpenedImage> open_cli(Env& env, const std::string& path, const std::string& format, bool untrusted,
                             bool read_write = false, const std::string& snapshot = {},
                             const std::string& parent = {});

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
int cmd_measure(Env&, int argc, char** argv);
int cmd_snapshot(Env&, int argc, char** argv);
int cmd_rebase(Env&, int argc, char** argv);
int cmd_commit(Env&, int argc, char** argv);
int cmd_dd(Env&, int argc, char** argv);
int cmd_amend(Env&, int argc, char** argv);

}  // namespace vdisk::cli
