// ptguard export --after FILE --out DIR [--table-base PA[+SIZE]]
#include <fmt/format.h>

#include <filesystem>

#include "cli_common.hpp"
#include "commands.hpp"
#include "export.hpp"

namespace ptguard::tools {

namespace {
struct ExportOptions {
  std::string after;
  std::string out;
  std::string table_base;
};

int run(const ExportOptions& opt) {
  ScenarioOptions so;
  if (!opt.table_base.empty()) {
    std::string why;
    u64 base = 0, size = 0;
    if (opt.table_base.find('+') != std::string::npos || opt.table_base.find('-') != std::string::npos) {
      const std::optional<std::pair<u64, u64>> r = parse_range(opt.table_base, &why);
      if (!r) {
        fmt::print(stderr, "ptguard export: --table-base {}\n", why);
        return 2;
      }
      base = r->first;
      size = r->second;
    } else {
      const std::optional<u64> b = parse_address(opt.table_base, "export", &why);
      if (!b) {
        fmt::print(stderr, "{}\n", why);
        return 2;
      }
      base = *b;
    }
    if (base % World::kPage != 0 || size % World::kPage != 0) {
      fmt::print(stderr, "ptguard export: --table-base {}: base and size must be whole 4K pages\n", opt.table_base);
      return 2;
    }
    so.table_pool_base = base;
    if (size != 0) so.table_pool_size = size;
  }
  Loaded l = load_after(opt.after, "export", so);
  if (l.exit_code == 2) return 2;
  const World& w = l.world();
  const ownership::Region pool = w.spec().pool.size != 0 ? w.spec().pool : w.spec().carveout;
  if (w.is_memory(pool.base) && !(pool.base >= w.spec().carveout.base && pool.end() <= w.spec().carveout.end()))
    fmt::print(stderr,
               "ptguard export: warning: table pages at {:#x}-{:#x} lie in ram outside the hypervisor's carve-out "
               "({:#x}-{:#x}): memory the host may own and map (the invariant checker refuses this)\n",
               pool.base, pool.end(), w.spec().carveout.base, w.spec().carveout.end());
  const Export e = export_tables(w);
  if (!e.problems.empty()) {
    for (const std::string& p : e.problems) fmt::print(stderr, "ptguard export: {} (a bug)\n", p);
    return 2;
  }
  std::error_code ec;
  std::filesystem::create_directories(opt.out, ec);
  if (ec || !std::filesystem::is_directory(opt.out)) {
    fmt::print(stderr, "ptguard export: cannot create the directory '{}'\n", opt.out);
    return 2;
  }
  const std::filesystem::path dir(opt.out);
  std::size_t pages = 0;
  for (const TableImage& i : e.images) {
    if (i.bytes.empty()) {
      fmt::print(stderr, "ptguard export: table memory at {:#x} is not backed (a bug)\n", i.base);
      return 2;
    }
    const std::string data(reinterpret_cast<const char*>(i.bytes.data()), i.bytes.size());
    if (!write_file((dir / i.file_name()).string(), data, "export")) return 2;
    pages += i.bytes.size() / World::kPage;
  }
  if (!write_file((dir / "tables.json").string(), export_json(e, opt.after), "export")) return 2;
  fmt::print("{} tables, {} table pages in {} image{}, described in {}\n", e.tables.size(), pages, e.images.size(),
             e.images.size() == 1 ? "" : "s", (dir / "tables.json").string());
  for (const TableImage& i : e.images)
    fmt::print("  {}  {:#x}-{:#x}\n", (dir / i.file_name()).string(), i.base, i.base + i.bytes.size());
  return l.exit_code;
}
}  // namespace

void add_export_command(CLI::App& app) {
  auto opt = std::make_shared<ExportOptions>();
  CLI::App* cmd = app.add_subcommand("export", "Every translation table as raw memory images, with the registers to load them");
  cmd->footer(
      "Examples:\n  ptguard export --after examples/lend.ptg --out /tmp/tables\n"
      "  ptguard export --after examples/lend.ptg --out /tmp/tables --table-base 0x42000000+16M\n"
      "  ptguard export --after examples/lend.ptg --out /tmp/tables --table-base 0x2_0000_0000\n"
      "Writes DIR/tables-<base>.bin (one per contiguous run of table pages, little-endian, as in\n"
      "memory) and DIR/tables.json: for each table its stage, granule, root, VMID and TCR_EL2 and\n"
      "MAIR_EL2 (stage 1) or VTCR_EL2, VTTBR_EL2 and HCR_EL2.FWB (stage 2). Format: docs/cli.md.\n"
      "Exit: 0 ok, 1 the scenario's expectations failed, 2 bad usage or input.");
  cmd->add_option("--after", opt->after, "run this scenario file first (- for standard input)");
  cmd->add_option("--out", opt->out, "the directory to write (created if missing)")->required();
  cmd->add_option("--table-base", opt->table_base,
                  "take table pages from PA, PA+SIZE or PA-END: inside the carve-out, or outside every ram and "
                  "mmio region (memory only the hypervisor has); SIZE defaults to the pool's (its `pool` line's, "
                  "or the carve-out's)");
  cmd->callback([opt] { set_exit_code(run(*opt)); });
}

}  // namespace ptguard::tools
