// What several commands share: the machine after a scenario (`--after FILE`), component names
// (`--as host|hyp|guest:N`), addresses and ranges on the command line, and writing files.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "scenario.hpp"
#include "world.hpp"

namespace ptguard::tools {

/// The machine a command looks at: after a scenario file, or the default machine just booted.
struct Loaded {
  std::unique_ptr<Scenario> scenario;
  int exit_code = 0;  ///< 0; 1 if the scenario's expectations failed (it still ran); 2 bad input
  [[nodiscard]] World& world() { return *scenario->world(); }
};

/// Runs `path` ("-": standard input; empty: no scenario) quietly and boots the machine if the
/// scenario never did. Failed expectations are printed to stderr and give exit code 1 (the
/// machine is still there); bad input prints file:line:col and gives 2 with no machine.
[[nodiscard]] Loaded load_after(const std::string& path, const std::string& command,
                                const ScenarioOptions& base = {});

/// "host", "hyp", "guest:N" (N from 2). nullopt for anything else.
[[nodiscard]] std::optional<ComponentId> parse_component(const std::string& s);

/// A number (parse_number) or a message "ptguard CMD: 'x' is not an address: why".
[[nodiscard]] std::optional<u64> parse_address(const std::string& s, const std::string& command, std::string* why);

/// "A-B" (end exclusive) or "A+SIZE": base and size, size > 0. nullopt and *why on error.
[[nodiscard]] std::optional<std::pair<u64, u64>> parse_range(const std::string& s, std::string* why);

/// Writes `data` to `path`; false (and a message on stderr) if it cannot.
[[nodiscard]] bool write_file(const std::string& path, const std::string& data, const std::string& command);

}  // namespace ptguard::tools
