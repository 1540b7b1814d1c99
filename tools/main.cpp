// SPDX-License-Identifier: Apache-2.0
// vdisk — convert and inspect virtual disk images, with qemu-img's syntax.
#include <cstring>
#include <iostream>
#include <string>
#include <string_view>

#include "cli.hpp"

namespace {

struct Command {
    const char* name;
    int (*run)(vdisk::cli::Env&, int, char**);
    const char* synopsis;
};

constexpr Command kCommands[] = {
    {"info", vdisk::cli::cmd_info,
     "info [-f FMT] [--output=human|json] [--backing-chain] [--parent FILE] [--untrusted] IMG"},
    {"convert", vdisk::cli::cmd_convert,
     "convert [-f FMT] -O FMT [-o k=v,...] [-c] [-p] [-q] [-n [--target-is-zero]] [-B BACKING [-F FMT]] [-S SIZE]\n"
     "                [-t CACHE] [-T CACHE] [-W] [-m N] [-r RATE] [--salvage] [-l snapshot.name=NAME|snapshot.id=ID]\n"
     "                [--image-opts] [--target-image-opts] [--parent FILE] [--untrusted] SRC [SRC2...] DST"},
    {"create", vdisk::cli::cmd_create, "create -f FMT [-o k=v,...] [-b BACKING [-F BACKING_FMT]] [-u] [-q] IMG [SIZE]"},
    {"check", vdisk::cli::cmd_check,
     "check [-f FMT] [--output=human|json] [-r leaks|all] [-T CACHE] [-q] [--untrusted] IMG"},
    {"map", vdisk::cli::cmd_map, "map [-f FMT] [--output=human|json] [-s OFFSET] [-l LENGTH] [--untrusted] IMG"},
    {"compare", vdisk::cli::cmd_compare, "compare [-f FMT] [-F FMT] [-s] [-p] [-q] [-T CACHE] [--untrusted] IMG1 IMG2"},
    {"resize", vdisk::cli::cmd_resize,
     "resize [-f FMT] [--shrink] [--preallocation=off|falloc|full] [-q] IMG [+|-]SIZE"},
    {"snapshot", vdisk::cli::cmd_snapshot, "snapshot [-f FMT] [-q] [-l | -a NAME | -c NAME | -d NAME] IMG   (qcow2)"},
    {"rebase", vdisk::cli::cmd_rebase, "rebase [-f FMT] [-u] [-p] -b BACKING [-F BACKING_FMT] IMG   (qcow2)"},
    {"commit", vdisk::cli::cmd_commit, "commit [-f FMT] [-b BASE] [-d] [-p] IMG"},
    {"dd", vdisk::cli::cmd_dd, "dd [-f FMT] [-O FMT] [bs=SIZE] [count=N] [skip=N] if=INPUT of=OUTPUT"},
    {"amend", vdisk::cli::cmd_amend, "amend [-f FMT] -o compat=0.10|1.1,lazy_refcounts=on|off IMG   (qcow2)"},
    {"measure", vdisk::cli::cmd_measure,
     "measure [--output=human|json] [-O FMT] [-o k=v,...] [--size N | [-f FMT] [-l snapshot.name=NAME] IMG]"},
    {"bench", vdisk::cli::cmd_bench,
     "bench [-f FMT] [-c COUNT] [-s SIZE] [-S STEP] [-o OFFSET] IMG   (qemu-img bench's reads)"},
    {"hash", vdisk::cli::cmd_hash,
     "hash [-f FMT] [--algo sha256|sha1|md5 ...] [--output=human|json] [-p] [--untrusted] IMG"},
    {"lint", vdisk::cli::cmd_lint,
     "lint --target azure|aws|gce|esxi|hyperv|virtualbox|proxmox [-f FMT] [--output=human|json] IMG"},
    {"sample", vdisk::cli::cmd_sample, "sample FILE [SIZE]   (write a raw image with a known test pattern)"},
};

// The formats of this build, from the registry (names and aliases; the completion script reads this line).
// A format without create options cannot be created: it is read only (qcow version 1).
void list_formats(std::ostream& os) {
    const vdisk::Registry registry = vdisk::Registry::builtin();
    std::string names, aliases, read_only;
    for (const vdisk::Format* f : registry.formats()) {
        names += " " + std::string(f->name());
        for (std::string_view a : f->aliases()) {
            names += " " + std::string(a);
            aliases += (aliases.empty() ? "" : ", ") + std::string(a) + " = " + std::string(f->name());
        }
        if (f->create_options().empty()) read_only += (read_only.empty() ? "" : " ") + std::string(f->name());
    }
    os << "Supported formats:" << names << "\n";
    if (!aliases.empty()) os << "  aliases: " << aliases << "\n";
    if (!read_only.empty()) os << "  read only: " << read_only << " (convert to another format to write)\n";
}

void usage(std::ostream& os) {
    os << "usage: vdisk [--version] [--help] COMMAND [args]\n\nCommands (qemu-img syntax):\n";
    for (auto& c : kCommands) os << "  vdisk " << c.synopsis << "\n";
    os << "\n";
    list_formats(os);
    os << "Sizes take k, M, G, T suffixes (binary). Errors: one line on stderr, exit status 1.\n"
          "--untrusted (every command): open no file but the one named; never guess raw.\n"
          "--parent FILE: the backing image of IMG/SRC when it records none (VDI differencing) or to override it.\n";
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        usage(std::cerr);
        return 1;
    }
    std::string_view cmd = argv[1];
    if (cmd == "--help" || cmd == "-h" || cmd == "help") {
        usage(std::cout);
        return 0;
    }
    if (cmd == "--version" || cmd == "-V") {
        std::cout << "vdisk version " << vdisk::version() << "\n";
        return 0;
    }
    for (auto& c : kCommands) {
        if (cmd != c.name) continue;
        for (int i = 2; i < argc; ++i)
            if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
                if (vdisk::cli::print_command_help(c.name) != 0) std::cout << "usage: vdisk " << c.synopsis << "\n";
                return 0;
            }
        vdisk::cli::Env env;
        return c.run(env, argc, argv);
    }
    std::cerr << "vdisk: unknown command '" << cmd << "'\n";
    usage(std::cerr);
    return 1;
}
