// ptguard: the command-line tool. Each subcommand lives in its own file; main wires them up.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "commands.hpp"

int main(int argc, char** argv) {
  CLI::App app{"ptguard: Armv8-A translation tables and page ownership for hypervisors"};
  app.require_subcommand(1);
  ptguard::tools::add_demo_command(app);
  ptguard::tools::add_decode_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return ptguard::tools::exit_code();
}
