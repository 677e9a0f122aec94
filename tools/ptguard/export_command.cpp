// ptguard export --after FILE --out DIR [--table-base PA]
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
    const std::optional<u64> base = parse_address(opt.table_base, "export", &why);
    if (!base) {
      fmt::print(stderr, "{}\n", why);
      return 2;
    }
    if (*base % World::kPage != 0) {
      fmt::print(stderr, "ptguard export: --table-base {:#x} is not page-aligned (4K)\n", *base);
      return 2;
    }
    so.table_pool_base = *base;
  }
  Loaded l = load_after(opt.after, "export", so);
  if (l.exit_code == 2) return 2;
  const World& w = l.world();
  const ownership::Region pool = w.spec().pool.size != 0 ? w.spec().pool : w.spec().carveout;
  if (!(pool.base >= w.spec().carveout.base && pool.end() <= w.spec().carveout.end()))
    fmt::print(stderr,
               "ptguard export: note: table pages at {:#x}-{:#x} lie outside the hypervisor's carve-out "
               "({:#x}-{:#x}): the host owns that memory and could map its own tables\n",
               pool.base, pool.end(), w.spec().carveout.base, w.spec().carveout.end());
  const Export e = export_tables(w);
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
      "  ptguard export --after examples/guest_share.ptg --out /tmp/tables --table-base 0x42000000\n"
      "Writes DIR/tables-<base>.bin (one per contiguous run of table pages, little-endian, as in\n"
      "memory) and DIR/tables.json: for each table its stage, granule, root, VMID and TCR_EL2 and\n"
      "MAIR_EL2 (stage 1) or VTCR_EL2, VTTBR_EL2 and HCR_EL2.FWB (stage 2). Format: docs/cli.md.\n"
      "Exit: 0 ok, 1 the scenario's expectations failed, 2 bad usage or input.");
  cmd->add_option("--after", opt->after, "run this scenario file first (- for standard input)");
  cmd->add_option("--out", opt->out, "the directory to write (created if missing)")->required();
  cmd->add_option("--table-base", opt->table_base,
                  "take table pages from here (a page-aligned PA in the machine's RAM; the pool keeps its size: "
                  "its `pool` line's, or the carve-out's)");
  cmd->callback([opt] { set_exit_code(run(*opt)); });
}

}  // namespace ptguard::tools
