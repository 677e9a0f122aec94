#include "cli_common.hpp"

#include <fmt/format.h>

#include <fstream>
#include <iostream>
#include <sstream>

namespace ptguard::tools {

Loaded load_after(const std::string& path, const std::string& command, const ScenarioOptions& base) {
  Loaded l;
  // Without a scenario: the default machine, booted.
  std::string text = "boot\n", shown = "<default machine>";
  if (!path.empty() && !read_scenario_file(path, &text, &shown, std::cerr)) {
    l.exit_code = 2;
    return l;
  }
  ScenarioOptions opts = base;
  opts.quiet = true;
  opts.summary = false;
  opts.progress = false;
  for (int attempt = 0; attempt < 2; ++attempt) {
    l.scenario = std::make_unique<Scenario>();
    if (!l.scenario->parse(text, shown, std::cerr)) {
      l.exit_code = 2;
      l.scenario.reset();
      return l;
    }
    std::ostringstream out;
    const ScenarioResult r = l.scenario->run(opts, out, std::cerr);
    std::cerr << out.str();
    if (r.exit_code == 2) {
      l.exit_code = 2;
      l.scenario.reset();
      return l;
    }
    if (r.exit_code == 1)
      std::cerr << fmt::format("ptguard {}: {} failed {} of its checks; showing the machine as it ended\n", command,
                               shown, r.failures);
    l.exit_code = r.exit_code;
    if (l.scenario->world() != nullptr) return l;
    text += "\nboot\n";  // only machine lines (or nothing): boot it
  }
  std::cerr << fmt::format("ptguard {}: the machine did not boot\n", command);
  l.exit_code = 2;
  l.scenario.reset();
  return l;
}

std::optional<ComponentId> parse_component(const std::string& s) {
  if (s == "host") return ownership::kHostId;
  if (s == "hyp") return ownership::kHypId;
  if (s.rfind("guest:", 0) != 0) return std::nullopt;
  std::string why;
  const std::optional<u64> v = parse_number(s.substr(6), &why);
  if (!v || *v < ownership::kFirstGuestId || *v > ownership::kMaxGuestId) return std::nullopt;
  return static_cast<ComponentId>(*v);
}

std::optional<u64> parse_address(const std::string& s, const std::string& command, std::string* why) {
  std::string w;
  const std::optional<u64> v = parse_number(s, &w);
  if (!v) *why = fmt::format("ptguard {}: '{}' is not an address: {}", command, s, w);
  return v;
}

std::optional<std::pair<u64, u64>> parse_range(const std::string& s, std::string* why) {
  const std::size_t dash = s.find('-'), plus = s.find('+');
  const std::size_t cut = dash != std::string::npos ? dash : plus;
  if (cut == std::string::npos) {
    *why = fmt::format("'{}' is not a range: write BASE-END or BASE+SIZE", s);
    return std::nullopt;
  }
  std::string w;
  const std::optional<u64> a = parse_number(s.substr(0, cut), &w);
  if (!a) {
    *why = fmt::format("'{}': {}", s, w);
    return std::nullopt;
  }
  const std::optional<u64> b = parse_number(s.substr(cut + 1), &w);
  if (!b) {
    *why = fmt::format("'{}': {}", s, w);
    return std::nullopt;
  }
  u64 size = *b;
  if (cut == dash) {
    if (*b <= *a) {
      *why = fmt::format("'{}': the end must lie above the base", s);
      return std::nullopt;
    }
    size = *b - *a;
  } else if (size == 0 || *a + size < *a) {
    *why = fmt::format("'{}': the size must be non-zero and the range must not wrap", s);
    return std::nullopt;
  }
  return std::pair<u64, u64>{*a, size};
}

bool write_file(const std::string& path, const std::string& data, const std::string& command) {
  std::ofstream f(path, std::ios::binary);
  f << data;
  f.close();
  if (!f) {
    fmt::print(stderr, "ptguard {}: cannot write '{}'\n", command, path);
    return false;
  }
  return true;
}

}  // namespace ptguard::tools
