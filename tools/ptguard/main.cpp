// ptguard: the command-line tool. Each subcommand lives in its own file; main wires them up.
// Exit codes: 0 ok, 1 an expectation or check failed, 2 bad usage or bad input.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "commands.hpp"

int main(int argc, char** argv) {
  CLI::App app{"ptguard: Armv8-A translation tables and page ownership for hypervisors"};
  app.set_version_flag("--version", "ptguard 0.1.0");
  app.require_subcommand(1);
  app.footer(
      "Examples:\n  ptguard demo\n  ptguard run examples/share_hyp.ptg --check\n"
      "  ptguard decode 0x0040000040000743 --stage 1 --level 3\n"
      "  ptguard dump --after examples/lend.ptg --as host\n"
      "  ptguard translate 0x50000000 --after examples/lend.ptg --as guest:2 --walk\n"
      "  ptguard map --after examples/guest_share.ptg --svg map.svg\n"
      "  ptguard export --after examples/lend.ptg --out tables/\n"
      "'ptguard COMMAND --help' for each command. Exit: 0 ok, 1 an expectation or check failed,\n"
      "2 bad usage or bad input. Docs: docs/cli.md, docs/scenarios.md.");
  ptguard::tools::add_demo_command(app);
  ptguard::tools::add_run_command(app);
  ptguard::tools::add_decode_command(app);
  ptguard::tools::add_dump_command(app);
  ptguard::tools::add_translate_command(app);
  ptguard::tools::add_map_command(app);
  ptguard::tools::add_export_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    (void)app.exit(e);
    return 2;
  }
  return ptguard::tools::exit_code();
}
