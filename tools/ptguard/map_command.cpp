// ptguard map [--after FILE] [--svg OUT] [--text] [--json] [--range A-B|A+SIZE]
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "cli_common.hpp"
#include "commands.hpp"
#include "ownership_map.hpp"

namespace ptguard::tools {

namespace {
struct MapOptions {
  std::string after;
  std::string svg;
  bool text = false;
  bool json = false;
  std::string range;
};

std::string map_json(const OwnershipMap& m) {
  using nlohmann::ordered_json;
  ordered_json j;
  ordered_json guests = ordered_json::array();
  for (std::size_t i = 0; i < m.guests.size(); ++i)
    guests.push_back({{"component", component_name(m.guests[i])}, {"alive", static_cast<bool>(m.guest_alive[i])}});
  j["guests"] = std::move(guests);
  ordered_json rows = ordered_json::array();
  for (const MapRow& r : m.rows) {
    ordered_json x;
    x["start"] = fmt::format("{:#x}", r.base);
    x["end"] = fmt::format("{:#x}", r.end());
    x["size"] = r.size;
    x["region"] = r.region;
    x["memory"] = r.memory;
    x["owner"] = component_name(r.owner);
    x["host"] = ownership::name(r.host);
    x["hyp"] = ownership::name(r.hyp);
    x["secure"] = r.ffa ? "shared-borrowed" : "none";
    ordered_json g = ordered_json::object();
    for (std::size_t i = 0; i < m.guests.size(); ++i) g[component_name(m.guests[i])] = ownership::name(r.guests[i]);
    x["guests"] = std::move(g);
    x["pins"] = r.pins;
    x["shares"] = r.shares;
    rows.push_back(std::move(x));
  }
  j["ranges"] = std::move(rows);
  return j.dump(2) + "\n";
}

int run(const MapOptions& opt) {
  std::optional<std::pair<u64, u64>> range;
  if (!opt.range.empty()) {
    std::string why;
    range = parse_range(opt.range, &why);
    if (!range) {
      fmt::print(stderr, "ptguard map: --range {}\n", why);
      return 2;
    }
  }
  Loaded l = load_after(opt.after, "map");
  if (l.exit_code == 2) return 2;
  OwnershipMap m = build_map(l.world());
  if (range) {
    m = clip_map(m, range->first, range->second);
    if (m.rows.empty()) {
      fmt::print(stderr, "ptguard map: --range {}: no memory or MMIO there\n", opt.range);
      return 2;
    }
  }
  if (opt.json) fmt::print("{}", map_json(m));
  else if (opt.svg.empty() || opt.text) fmt::print("{}", map_text(m));
  if (!opt.svg.empty()) {
    std::string title = opt.after.empty() ? "ptguard ownership map" : fmt::format("ptguard ownership map after {}", opt.after);
    if (range) title += fmt::format(" ({:#x}-{:#x})", range->first, range->first + range->second);
    if (!write_file(opt.svg, map_svg(m, title), "map")) return 2;
    fmt::print(stderr, "ownership map written to {}\n", opt.svg);
  }
  return l.exit_code;
}
}  // namespace

void add_map_command(CLI::App& app) {
  auto opt = std::make_shared<MapOptions>();
  CLI::App* cmd = app.add_subcommand("map", "The ownership map of physical memory, as text or an SVG picture");
  cmd->footer(
      "Examples:\n  ptguard map --after examples/lend.ptg\n"
      "  ptguard map --after examples/guest_share.ptg --svg map.svg\n"
      "  ptguard map --after examples/lend.ptg --range 0x50000000+64K --svg zoom.svg\n"
      "One line (or cell) per range of pages with the same owner, states and counts. The SVG has\n"
      "one band per component; widths grow with the logarithm of a range's size, so a 4K page\n"
      "stays visible next to GiBs. Render it: scripts/render-svg.sh map.svg map.png\n"
      "Exit: 0 ok, 1 the scenario's expectations failed, 2 bad usage or input.");
  cmd->add_option("--after", opt->after, "run this scenario file first (- for standard input)");
  cmd->add_option("--svg", opt->svg, "write the map as SVG to this file (and print no text unless --text)");
  cmd->add_flag("--text", opt->text, "print the map as text (the default without --svg)");
  cmd->add_flag("--json", opt->json, "print the map as JSON (docs/cli.md) instead of text");
  cmd->add_option("--range", opt->range, "only physical addresses BASE-END or BASE+SIZE (e.g. 0x50000000+64K)");
  cmd->callback([opt] { set_exit_code(run(*opt)); });
}

}  // namespace ptguard::tools
