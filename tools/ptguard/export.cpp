#include "export.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "decode.hpp"
#include "ptguard/pgtable/walker.hpp"

namespace ptguard::tools {

using namespace ptguard::ownership;

std::string TableImage::file_name() const { return fmt::format("tables-{:#x}.bin", base); }

namespace {

// Every next-level table a walk meets.
struct TablePages {
  static constexpr unsigned visits() { return pgtable::kVisitTablePre; }
  std::vector<u64>* out;
  arch::OaFormat oa;  // the table's address format
  Status table_pre(pgtable::VisitCtx& x) {
    out->push_back(arch::TableDesc(x.old).next_table(World::kGranule, oa));
    return {};
  }
};

template <typename T>
ExportedTable describe(const T& t, ComponentId id, std::vector<std::string>& problems) {
  ExportedTable e;
  e.component = id;
  e.root = t.root_pa();
  e.root_tables = t.root_pages();
  e.start_level = t.start_level();
  e.ia_bits = t.ia_bits();
  e.oa_bits = t.oa_format().oa_bits();
  for (unsigned i = 0; i < t.root_pages(); ++i) e.pages.push_back(t.root_pa() + i * World::kPage);
  TablePages v{&e.pages, t.oa_format()};
  if (Status st = t.walk(0, u64{1} << t.ia_bits(), v); !st)
    problems.push_back(fmt::format("{}'s table: walk failed: {}", component_name(id), name(st.error())));
  std::sort(e.pages.begin(), e.pages.end());
  e.pages.erase(std::unique(e.pages.begin(), e.pages.end()), e.pages.end());
  return e;
}

}  // namespace

Export export_tables(const World& w) {
  const World::MP& mp = w.mp();
  Export out;
  const auto& hc = mp.host_config();
  ExportedTable host = describe(mp.host_table(), kHostId, out.problems);
  host.stage = 2;
  host.vmid = mp.host_table().vmid();
  host.tcr = hc.vtcr;
  // The 52-bit BADDR layout where the configuration has 52-bit addresses (arch::ttbr_baddr).
  host.ttbr = arch::make_vttbr(hc, host.root, host.vmid);
  host.fwb = hc.fwb;
  out.tables.push_back(std::move(host));
  ExportedTable hyp = describe(mp.hyp_table(), kHypId, out.problems);
  hyp.stage = 1;
  hyp.tcr = mp.hyp_config().tcr;
  hyp.mair = mp.hyp_config().mair;
  hyp.ttbr = arch::make_ttbr0_el2(mp.hyp_config(), hyp.root);
  out.tables.push_back(std::move(hyp));
  for (ComponentId id : w.guests()) {
    const World::MP::Guest* g = mp.guest(id);
    if (g == nullptr || !g->table.valid()) continue;
    ExportedTable e = describe(g->table, id, out.problems);
    e.stage = 2;
    e.vmid = g->table.vmid();
    e.alive = g->alive;
    e.tcr = hc.vtcr;  // guests' tables share the host's shape (docs/ownership.md)
    e.ttbr = arch::make_vttbr(hc, e.root, e.vmid);
    e.fwb = hc.fwb;
    out.tables.push_back(std::move(e));
  }
  std::vector<u64> all;
  for (const ExportedTable& t : out.tables) all.insert(all.end(), t.pages.begin(), t.pages.end());
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  for (std::size_t i = 0; i < all.size();) {
    std::size_t j = i + 1;
    while (j < all.size() && all[j] == all[j - 1] + World::kPage) ++j;
    TableImage img;
    img.base = all[i];
    img.bytes.resize((j - i) * World::kPage);
    if (!w.mem().read(img.base, img.bytes.data(), img.bytes.size())) img.bytes.clear();
    out.images.push_back(std::move(img));
    i = j;
  }
  return out;
}

std::string export_json(const Export& e, const std::string& scenario) {
  using nlohmann::ordered_json;
  const auto hex = [](u64 v) { return fmt::format("{:#x}", v); };
  ordered_json j;
  j["format"] = "ptguard-tables";
  j["version"] = 1;
  j["scenario"] = scenario.empty() ? ordered_json(nullptr) : ordered_json(scenario);
  j["byte_order"] = "little-endian";
  j["page_size"] = World::kPage;
  ordered_json images = ordered_json::array();
  for (const TableImage& i : e.images)
    images.push_back({{"file", i.file_name()}, {"base", hex(i.base)}, {"size", i.bytes.size()}});
  j["images"] = std::move(images);
  ordered_json tables = ordered_json::array();
  for (const ExportedTable& t : e.tables) {
    ordered_json x;
    x["component"] = component_name(t.component);
    x["stage"] = t.stage;
    x["granule"] = granule_name(World::kGranule);
    x["root"] = hex(t.root);
    x["root_tables"] = t.root_tables;
    x["start_level"] = t.start_level;
    x["ia_bits"] = t.ia_bits;
    x["oa_bits"] = t.oa_bits;
    if (t.stage == 2) {
      x["vmid"] = t.vmid;
      x["alive"] = t.alive;
      x["registers"] = {{"VTCR_EL2", hex(t.tcr)}, {"VTTBR_EL2", hex(t.ttbr)}, {"HCR_EL2.FWB", t.fwb ? 1 : 0}};
    } else {
      x["registers"] = {{"TCR_EL2", hex(t.tcr)}, {"MAIR_EL2", hex(t.mair)}, {"TTBR0_EL2", hex(t.ttbr)}};
    }
    ordered_json pages = ordered_json::array();
    for (u64 p : t.pages) pages.push_back(hex(p));
    x["table_pages"] = std::move(pages);
    tables.push_back(std::move(x));
  }
  j["tables"] = std::move(tables);
  return j.dump(2) + "\n";
}

}  // namespace ptguard::tools
