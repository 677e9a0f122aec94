// ptguard dump [--after FILE] [--as host|hyp|guest:N] [--json] [--empty]
#include <fmt/format.h>

#include "cli_common.hpp"
#include "commands.hpp"
#include "dump.hpp"

namespace ptguard::tools {

namespace {
struct DumpOptions {
  std::string after;
  std::string as = "host";
  bool json = false;
  bool empty = false;
};

int run(const DumpOptions& opt) {
  const std::optional<ComponentId> id = parse_component(opt.as);
  if (!id) {
    fmt::print(stderr, "ptguard dump: unknown component '{}' (host, hyp or guest:N)\n", opt.as);
    return 2;
  }
  Loaded l = load_after(opt.after, "dump");
  if (l.exit_code == 2) return 2;
  const Result<TableDump> d = dump_table(l.world(), *id, opt.empty);
  if (!d) {
    fmt::print(stderr, "ptguard dump: {} has no table{}\n", opt.as,
               opt.after.empty() ? " (no scenario: only host and hyp exist; use --after FILE)" : " after the scenario");
    return 2;
  }
  fmt::print("{}", opt.json ? dump_json(*d) : dump_text(*d));
  return l.exit_code;
}
}  // namespace

void add_dump_command(CLI::App& app) {
  auto opt = std::make_shared<DumpOptions>();
  CLI::App* cmd = app.add_subcommand("dump", "A component's translation table as merged ranges (like Linux's ptdump)");
  cmd->footer(
      "Examples:\n  ptguard dump --after examples/lend.ptg --as guest:2\n"
      "  ptguard dump --after examples/share_hyp.ptg --as hyp --json\n"
      "One line per run of entries at the same level with the same attributes and contiguous\n"
      "output addresses. Empty entries are left out (--empty shows them). JSON: docs/cli.md.\n"
      "Exit: 0 ok, 1 the scenario's expectations failed, 2 bad usage or input.");
  cmd->add_option("--after", opt->after, "run this scenario file first (- for standard input)");
  cmd->add_option("--as", opt->as, "whose table: host, hyp or guest:N")->capture_default_str();
  cmd->add_flag("--json", opt->json, "print JSON");
  cmd->add_flag("--empty", opt->empty, "show empty entries (nothing mapped, no annotation) too");
  cmd->callback([opt] { set_exit_code(run(*opt)); });
}

}  // namespace ptguard::tools
