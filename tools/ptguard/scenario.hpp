// Scenario files: one operation per line on a simulated machine with the ownership layer, each
// line optionally stating what it expects. The syntax is documented in docs/scenarios.md.
//
//   Scenario s;
//   if (!s.parse(text, "file.ptg", err)) return 2;      // bad input: file:line:col + caret
//   ScenarioResult r = s.run(opts, out, err);           // r.exit_code: 0, 1 (a failure), 2
//   s.world();                                          // the machine after the run
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "world.hpp"

namespace ptguard::tools {

struct ScenarioOptions {
  bool check = false;     ///< run the invariant checker after every step
  bool trace = false;     ///< print the event log of every step
  bool quiet = false;     ///< print only failures and the summary
  bool progress = false;  ///< show progress on stderr (a terminal)
  bool summary = true;    ///< print the closing summary line
  bool line_numbers = true;  ///< print each step's line number
  /// The machine when the scenario describes none (and no `ram` line).
  MachineSpec default_machine = MachineSpec::small();
  /// Table pages come from [base, base + the pool's size) instead of where the scenario says
  /// (`ptguard export --table-base`); the pool's size is table_pool_size, or its `pool` line's, or
  /// the carve-out's.
  std::optional<u64> table_pool_base;
  /// With table_pool_base: the pool's size instead.
  std::optional<u64> table_pool_size;
};

/// A number as scenarios write it: decimal or 0x hex, '_' separators, an optional size suffix
/// K, M, G, T on decimal numbers. On error, nullopt and the reason in *why.
[[nodiscard]] std::optional<u64> parse_number(const std::string& s, std::string* why);

struct ScenarioResult {
  int exit_code = 0;  ///< 0 ok; 1 an expectation or check failed; 2 bad input or machine
  std::size_t statements = 0;
  std::size_t expectations = 0;  ///< stated expectations and page assertions checked
  std::size_t failures = 0;
};

struct Statement;  // scenario.cpp

class Scenario {
 public:
  Scenario();
  ~Scenario();
  Scenario(const Scenario&) = delete;
  Scenario& operator=(const Scenario&) = delete;

  /// Parses every line first, so bad input never half-runs. On error prints
  /// "name:line:col: error: ..." with the line and a caret under the offending word to `err`.
  [[nodiscard]] bool parse(std::string_view text, const std::string& name, std::ostream& err);
  /// Runs the parsed statements. Failures are printed as "name:line: ..." to `out` and `err`.
  [[nodiscard]] ScenarioResult run(const ScenarioOptions& opts, std::ostream& out, std::ostream& err);

  /// The machine after run() (nullptr if it never booted).
  [[nodiscard]] World* world() { return world_.get(); }
  [[nodiscard]] std::size_t size() const { return stmts_.size(); }

 private:
  std::string name_;
  std::vector<std::unique_ptr<Statement>> stmts_;
  std::unique_ptr<World> world_;
};

/// Reads a scenario file ("-": standard input) into *text and the name to show in messages
/// into *shown. A file that cannot be read: a message to `err` and false.
[[nodiscard]] bool read_scenario_file(const std::string& path, std::string* text, std::string* shown,
                                      std::ostream& err);

/// Reads a file ("-": standard input) and runs it; messages as above. A file that cannot be
/// read: exit code 2.
[[nodiscard]] ScenarioResult run_scenario_file(const std::string& path, const ScenarioOptions& opts,
                                               std::ostream& out, std::ostream& err);

}  // namespace ptguard::tools
