// SPDX-License-Identifier: Apache-2.0
// The untrusted-image safety report.
#include <algorithm>
#include <vector>

#include "util/endian.hpp"
#include "vdisk/vdisk.hpp"

namespace vdisk {
namespace {

// Partition table sanity for raw images: every MBR/GPT structure must lie inside the disk.
void partition_checks(BlockDevice& dev, Json& report, std::vector<std::string>& reasons) {
    if (dev.size() < 512) return;
    std::vector<uint8_t> s0(512);
    if (!dev.read(0, s0)) return;
    Json pt = Json::object();
    const uint64_t sectors = dev.size() / 512;
    if (s0[510] == 0x55 && s0[511] == 0xaa) {
        Json parts = Json::array();
        bool protective = false;
        for (size_t i = 0; i < 4; ++i) {
            const uint8_t* e = s0.data() + 446 + 16 * i;
            uint8_t type = e[4];
            uint32_t start = util::load_le<uint32_t>(e + 8), count = util::load_le<uint32_t>(e + 12);
            if (type == 0 || count == 0) continue;
            if (type == 0xee) protective = true;
            bool inside = uint64_t(start) + count <= sectors || type == 0xee;
            parts.push(Json::object()
                           .set("type", unsigned(type))
                           .set("start-sector", unsigned(start))
                           .set("sectors", unsigned(count))
                           .set("inside-disk", inside));
            if (!inside) reasons.push_back("MBR partition " + std::to_string(i + 1) + " ends past the end of the disk");
        }
        pt.set("mbr-partitions", std::move(parts));
        if (protective && dev.size() >= 1024) {
            std::vector<uint8_t> h(512);
            if (dev.read(512, h) && std::equal(h.begin(), h.begin() + 8, "EFI PART")) {
                uint64_t entries_lba = util::load_le<uint64_t>(h.data() + 72);
                uint32_t n = util::load_le<uint32_t>(h.data() + 80), esz = util::load_le<uint32_t>(h.data() + 84);
                bool ok = entries_lba < sectors && n <= 4096 && esz >= 128 && esz <= 4096 &&
                          entries_lba + (uint64_t(n) * esz + 511) / 512 <= sectors;
                pt.set("gpt", Json::object()
                                  .set("entries-lba", entries_lba)
                                  .set("entries", unsigned(n))
                                  .set("entry-size", unsigned(esz))
                                  .set("sane", ok));
                if (!ok) reasons.push_back("GPT header describes a partition array outside the disk");
            }
        }
    }
    report.set("partition-table", std::move(pt));
}

}  // namespace

Json safety_report(const Registry& registry, FileSystem& fs, std::string_view name, std::string_view claimed_format,
                   const Limits& limits) {
    Json r = Json::object();
    std::vector<std::string> reasons;
    r.set("filename", std::string(name));
    auto file = fs.open(name, Access::read_only);
    if (!file) {
        r.set("error", file.error().to_string());
        r.set("verdict", "unsafe");
        r.set("reasons", Json::array().push("cannot open the file"));
        return r;
    }
    // Every format that claims these bytes: more than one non-raw match is a polyglot.
    Json matches = Json::array();
    std::string detected;
    if (auto all = registry.probe_all(**file)) {
        for (auto& [fmt, score] : *all)
            matches.push(Json::object().set("format", std::string(fmt->name())).set("score", score));
        if (!all->empty()) detected = std::string((*all)[0].first->name());
        if (all->size() > 1)
            reasons.push_back("the bytes match more than one format (" + std::string((*all)[0].first->name()) + ", " +
                              std::string((*all)[1].first->name()) + ")");
    }
    r.set("probed-formats", std::move(matches));
    r.set("detected-format", detected.empty() ? Json(nullptr) : Json(detected));
    std::string use = std::string(claimed_format);
    if (!claimed_format.empty()) {
        const Format* claimed = registry.find(claimed_format);
        bool match = claimed && (claimed->name() == detected || (detected.empty() && claimed->name() == "raw"));
        r.set("claimed-format", std::string(claimed_format));
        r.set("format-matches", match);
        if (!match) reasons.push_back("the image is not the claimed format '" + std::string(claimed_format) + "'");
    } else if (detected.empty()) {
        reasons.push_back("no format recognises the image (give -f raw to treat it as raw)");
    }
    if (use.empty()) use = detected;

    std::vector<std::string> refs;
    OpenOptions o;
    o.untrusted = true;
    o.no_backing = true;  // report the backing reference instead of refusing at it
    o.format = use;
    o.limits = limits;
    o.references = &refs;
    Json ext = Json::array();
    if (!use.empty()) {
        auto img = open_image(registry, fs, name, o);
        if (img) {
            ImageInfo inf = img->device->info();
            r.set("virtual-size", inf.virtual_size);
            r.set("encrypted", inf.encrypted);
            r.set("dirty-flag", inf.dirty);
            if (inf.encrypted) reasons.push_back("the image is encrypted");
            if (auto* fsd = inf.format_specific.get("data"))
                if (auto* c = fsd->get("corrupt"); c && c->as_bool() && *c->as_bool())
                    reasons.push_back("the image is marked corrupt");
            if (img->format->name() == "raw") partition_checks(*img->device, r, reasons);
        } else {
            r.set("open-error", img.error().to_string());
            if (img.error().code != ErrorCode::access_denied)
                reasons.push_back("the image does not open: " + img.error().message);
        }
    }
    for (auto& ref : refs) ext.push(ref);
    if (!refs.empty()) reasons.push_back("the image refers to other files");
    r.set("external-references", std::move(ext));
    Json rs = Json::array();
    for (auto& s : reasons) rs.push(s);
    r.set("verdict", reasons.empty() ? "safe" : "unsafe");
    r.set("reasons", std::move(rs));
    return r;
}

}  // namespace vdisk
