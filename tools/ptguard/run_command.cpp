// ptguard run FILE|- [--check] [--trace] [--quiet] [--map] [--svg OUT]
#include <fmt/format.h>
#include <unistd.h>

#include <fstream>
#include <iostream>

#include "commands.hpp"
#include "ownership_map.hpp"
#include "scenario.hpp"

namespace ptguard::tools {

namespace {
struct RunOptions {
  std::string file;
  bool check = false, trace = false, quiet = false, map = false;
  std::string svg;
};

int run(const RunOptions& opt) {
  ScenarioOptions so;
  so.check = opt.check;
  so.trace = opt.trace;
  so.quiet = opt.quiet;
  // Progress on a terminal only, and only when the steps themselves are not scrolling past on
  // it: with -q, or with the output going to a file or a pipe.
  so.progress = isatty(STDERR_FILENO) != 0 && (opt.quiet || isatty(STDOUT_FILENO) == 0);
  std::string text, shown;
  if (!read_scenario_file(opt.file, &text, &shown, std::cerr)) return 2;
  Scenario s;
  if (!s.parse(text, shown, std::cerr)) return 2;
  const ScenarioResult r = s.run(so, std::cout, std::cerr);
  if (r.exit_code == 2 || s.world() == nullptr) return r.exit_code;
  if (opt.map || !opt.svg.empty()) {
    const OwnershipMap m = build_map(*s.world());
    if (opt.map) fmt::print("\n{}", map_text(m));
    if (!opt.svg.empty()) {
      std::ofstream f(opt.svg);
      f << map_svg(m, fmt::format("ptguard ownership map after {}", shown));
      f.close();
      if (!f) {
        fmt::print(stderr, "ptguard run: cannot write '{}'\n", opt.svg);
        return 2;
      }
      fmt::print("ownership map written to {}\n", opt.svg);
    }
  }
  return r.exit_code;
}
}  // namespace

void add_run_command(CLI::App& app) {
  auto opt = std::make_shared<RunOptions>();
  CLI::App* cmd =
      app.add_subcommand("run", "Run a scenario file: operations on a simulated machine, with expectations");
  cmd->footer(
      "Examples:\n  ptguard run examples/share_hyp.ptg --check\n"
      "  echo 'host-share-hyp 0x48000000 expect ok' | ptguard run -\n"
      "Syntax: docs/scenarios.md. Exit: 0 ok, 1 an expectation or check failed, 2 bad input.");
  cmd->add_option("FILE", opt->file, "the scenario file, or - for standard input")->required();
  cmd->add_flag("--check", opt->check, "run the invariant checker after every step");
  cmd->add_flag("--trace", opt->trace,
                "print the event log (table writes, TLB invalidations, barriers) of every step");
  cmd->add_flag("-q,--quiet", opt->quiet, "print only failures and the summary");
  cmd->add_flag("--map", opt->map, "print the ownership map at the end");
  cmd->add_option("--svg", opt->svg, "write the ownership map at the end as SVG to this file");
  cmd->callback([opt] { set_exit_code(run(*opt)); });
}

}  // namespace ptguard::tools
