// SPDX-License-Identifier: Apache-2.0
// Per-command help: `vdisk COMMAND --help` explains every option the command takes.
#include <iostream>
#include <string_view>

#include "cli.hpp"

namespace vdisk::cli {
namespace {

struct CommandHelp {
    std::string_view name;
    std::string_view text;
};

// Options shared by the commands that open an image.
constexpr std::string_view kOpenOptions =
    "  -f FMT, --format=FMT  image format (vdisk --help lists them); probed when omitted\n"
    "  --image-opts          IMG is an option string: driver=FMT,file.filename=PATH\n"
    "  -U, --force-share     open without taking locks (vdisk takes no image locks; accepted as qemu-img's)\n"
    "  --untrusted           open no file but the one named (no backing/extent/parent files), never guess raw,\n"
    "                        tighter memory caps\n"
    "  --object DEF          refused: vdisk has no QEMU objects (secrets); encrypted images are unsupported\n";

constexpr CommandHelp kHelp[] = {
    {"convert",
     "usage: vdisk convert [options] SRC [SRC2...] DST\n"
     "Copy the virtual content of SRC (several sources: concatenated in order) into DST.\n"
     "DST may be a new or existing file, a symbolic link (its target is written), a block device (written in\n"
     "place, zeroed where the source is zero), a character device or FIFO (raw or streamOptimized VMDK), or -\n"
     "(stdout). New files and existing files that can be replaced safely are written under a temporary name and\n"
     "renamed when complete (owner, group and mode kept); other existing files are written in place.\n"
     "  -O FMT                output format (default raw)\n"
     "  -o K=V[,K=V...]       create options of the output format; -o help lists them\n"
     "  -c                    compress (qcow2 clusters, streamOptimized VMDK grains)\n"
     "  -n                    do not create DST: it exists in format -O, at least as large as the source\n"
     "  --target-is-zero      with -n: DST reads as zeros already, skip zeroing\n"
     "  -B BACKING [-F FMT]   DST gets BACKING as its backing file; only what differs from it is written\n"
     "  -S SIZE               shortest run of zeros left sparse (default 4k, multiple of 512);\n"
     "                        0 writes every byte (fully allocated output)\n"
     "  -l snapshot.name=N|snapshot.id=I, -s N   read an internal (qcow2) snapshot of SRC\n"
     "  -t CACHE / -T CACHE   target / source cache mode: writeback (default), none and directsync (O_DIRECT),\n"
     "                        writethrough (sync every write), unsafe (no final sync)\n"
     "  -W                    allow out-of-order writes (compressed chunks are written as they complete)\n"
     "  -m N, --threads=N     worker threads for compression (default: all cores)\n"
     "  -r RATE               write at most RATE bytes per second (k, M, G suffixes)\n"
     "  --salvage             continue past unreadable source sectors, write zeros there, report each range\n"
     "  --keep-uuid           DST keeps SRC's UUID (vhd, vhdx, vdi; -o uuid= of the target format)\n"
     "  --target-image-opts   DST is an option string (with -n)\n"
     "  -p                    show progress      -q  quiet\n"
     "  --parent FILE         backing image of SRC when it records none (VDI differencing)\n"
     "  -C, --bitmaps, --skip-broken-bitmaps   refused (not implemented)\n"
     "SIGINT, SIGTERM or SIGHUP stop a conversion cleanly (temporary file removed; exit 130, 143, 129).\n"},
    {"info",
     "usage: vdisk info [options] IMG\n"
     "Show an image's format, sizes, backing file and format-specific details.\n"
     "  --output=human|json   output format (qemu-img's JSON fields)\n"
     "  --backing-chain       one entry per layer of the chain, top first\n"
     "  --parent FILE         backing image of IMG when it records none\n"},
    {"create",
     "usage: vdisk create [options] IMG [SIZE]\n"
     "Create a new image (published under its name only when complete).\n"
     "  -f FMT                format (default raw)\n"
     "  -o K=V[,K=V...]       create options; -o help lists them\n"
     "  -b BACKING [-F FMT]   backing file (qcow2, vmdk; vhd, vhdx, vdi: a differencing image of a parent of\n"
     "                        the same format); SIZE defaults to the backing file's size\n"
     "  -u                    do not attach the backing file (SIZE must be given; vhd, vhdx, vdi, vmdk still\n"
     "                        read the parent's identity)\n"
     "  -q                    quiet\n"
     "  --object DEF          refused: vdisk has no QEMU objects\n"},
    {"check",
     "usage: vdisk check [options] IMG\n"
     "Check an image's metadata. Exit: 0 clean, 1 check failed, 2 corruptions, 3 leaks, 63 no check.\n"
     "  --output=human|json   output format\n"
     "  -r leaks|all, --repair=...  repair leaks, or everything; the image is checked again afterwards and the\n"
     "                        exit status reports what is left\n"
     "  -T CACHE              source cache mode (see convert)\n"
     "  -q                    quiet\n"},
    {"map",
     "usage: vdisk map [options] IMG\n"
     "Show where the image's data lives, merged runs as qemu-img map.\n"
     "  --output=human|json   output format\n"
     "  -s OFF, --start-offset=OFF   start at this virtual offset\n"
     "  -l LEN, --max-length=LEN     map at most this many bytes\n"},
    {"compare",
     "usage: vdisk compare [options] IMG1 IMG2\n"
     "Compare contents. Exit: 0 identical, 1 different, 2 error.\n"
     "  -f FMT / -F FMT       format of IMG1 / IMG2\n"
     "  -s                    strict: images of different sizes differ\n"
     "  -T CACHE              source cache mode (see convert)\n"
     "  -p                    show progress      -q  quiet\n"},
    {"resize",
     "usage: vdisk resize [options] IMG [+|-]SIZE\n"
     "Change the virtual size (raw, qcow2, vhd, vhdx, vdi; vmdk: flat extents, and sparse ones grow).\n"
     "  --shrink              allow shrinking (data past the new end is lost)\n"
     "  --preallocation=off|falloc|full   how to allocate the new part (raw images)\n"
     "  -q                    quiet\n"},
    {"bench",
     "usage: vdisk bench [options] IMG\n"
     "qemu-img bench's read test through the library.\n"
     "  -c COUNT  requests (default 75000)   -s SIZE  bytes each (default 4k)\n"
     "  -S STEP   distance between requests   -o OFFSET  first offset   -t CACHE  cache mode\n"
     "  -d 1      queue depth (only 1)        -q  quiet\n"
     "  -n, -i, -w, --flush-interval, --pattern, --no-drain   refused (reads only, synchronous)\n"},
    {"sample",
     "usage: vdisk sample FILE [SIZE]\n"
     "Write a raw image with a known test pattern (used by the demo).\n"},
};

}  // namespace

int print_command_help(std::string_view command) {
    for (auto& h : kHelp) {
        if (h.name != command) continue;
        std::cout << h.text;
        if (command != "create" && command != "sample") std::cout << kOpenOptions;
        return 0;
    }
    return 1;
}

}  // namespace vdisk::cli
