// ptguard translate ADDR... --as host|hyp|guest:N [--access r|w|x] [--after FILE] [--addresses FILE]
//                   [--json] [--walk] [--fault-in]
#include <fmt/format.h>

#include <cctype>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli_common.hpp"
#include "commands.hpp"
#include "decode.hpp"
#include "dump.hpp"
#include "ownership_map.hpp"

namespace ptguard::tools {

using namespace ptguard::ownership;

namespace {
struct TranslateOptions {
  std::vector<std::string> addrs;
  std::string addresses_file;
  std::string as = "host";
  std::string access = "r";
  std::string after;
  bool json = false, walk = false, fault_in = false;
};

// Addresses from a file: words separated by spaces, tabs or commas; '#' starts a comment. A bad
// word gives file:line:col and a caret.
bool read_addresses(const std::string& path, std::vector<u64>* out) {
  std::string text, shown;
  if (!read_scenario_file(path, &text, &shown, std::cerr)) return false;
  int line_no = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string_view line(text.data() + pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    std::size_t i = 0;
    while (i < line.size()) {
      const char c = line[i];
      if (c == '#') break;
      if (std::isspace(static_cast<unsigned char>(c)) != 0 || c == ',') {
        ++i;
        continue;
      }
      const std::size_t b = i;
      while (i < line.size() && line[i] != '#' && line[i] != ',' && std::isspace(static_cast<unsigned char>(line[i])) == 0)
        ++i;
      const std::string word(line.substr(b, i - b));
      std::string why;
      const std::optional<u64> v = parse_number(word, &why);
      if (!v) {
        std::string l(line);
        if (!l.empty() && l.back() == '\r') l.pop_back();
        std::cerr << fmt::format("{}:{}:{}: error: {}\n  {}\n  {}{}\n", shown, line_no, b + 1, why, l,
                                 std::string(b, ' '), std::string(word.size(), '^'));
        return false;
      }
      out->push_back(*v);
    }
  }
  return true;
}

std::string perms(const sim::Translation& t) {
  return fmt::format("{}{}{}", t.readable ? 'r' : '-', t.writable ? 'w' : '-', t.executable ? 'x' : '-');
}

int run(const TranslateOptions& opt) {
  const std::optional<ComponentId> id = parse_component(opt.as);
  if (!id) {
    fmt::print(stderr, "ptguard translate: unknown component '{}' (host, hyp or guest:N)\n", opt.as);
    return 2;
  }
  sim::Access acc;
  if (opt.access == "r" || opt.access == "read") acc = sim::Access::read;
  else if (opt.access == "w" || opt.access == "write") acc = sim::Access::write;
  else if (opt.access == "x" || opt.access == "exec") acc = sim::Access::exec;
  else {
    fmt::print(stderr, "ptguard translate: --access '{}': r, w or x (read, write, exec)\n", opt.access);
    return 2;
  }
  if (opt.fault_in && *id != kHostId) {
    fmt::print(stderr, "ptguard translate: --fault-in is for the host (only the host's stage-2 is filled by faults)\n");
    return 2;
  }
  std::vector<u64> addrs;
  for (const std::string& a : opt.addrs) {
    std::string why;
    const std::optional<u64> v = parse_address(a, "translate", &why);
    if (!v) {
      fmt::print(stderr, "{}\n", why);
      return 2;
    }
    addrs.push_back(*v);
  }
  if (!opt.addresses_file.empty() && !read_addresses(opt.addresses_file, &addrs)) return 2;
  if (addrs.empty()) {
    fmt::print(stderr, "ptguard translate: no address given (ADDR... or --addresses FILE)\n");
    return 2;
  }
  if (opt.addresses_file == "-" && opt.after == "-") {
    fmt::print(stderr, "ptguard translate: --after and --addresses cannot both read standard input\n");
    return 2;
  }
  Loaded l = load_after(opt.after, "translate");
  if (l.exit_code == 2) return 2;
  World& w = l.world();
  if (*id >= kFirstGuestId && (w.mp().guest(*id) == nullptr || !w.mp().guest(*id)->table.valid())) {
    fmt::print(stderr, "ptguard translate: {} does not exist{}\n", opt.as,
               opt.after.empty() ? " (no scenario: use --after FILE)" : " after the scenario");
    return 2;
  }
  DecodeContext dctx;
  dctx.stage = *id == kHypId ? 1 : 2;
  dctx.fwb = w.mp().host_config().fwb;
  dctx.mair = w.mp().hyp_config().mair;
  // The walk's descriptors in the table's address format (52-bit on a 52-bit machine).
  dctx.oa_bits = (*id == kHypId ? w.mp().hyp_config().oa : w.mp().host_config().oa).oa_bits();

  nlohmann::ordered_json results = nlohmann::ordered_json::array();
  std::string text;
  for (const u64 a : addrs) {
    World::Access r;
    if (*id == kHostId) r = w.host_access(a, acc, opt.fault_in);
    else if (*id == kHypId) r = w.hyp_access(a, acc);
    else r = *w.guest_access(*id, a, acc);
    const sim::Translation& t = r.t;
    const std::string state = t.ok() ? name(state_of(t.descriptor)) : "";
    if (opt.json) {
      nlohmann::ordered_json j;
      j["address"] = fmt::format("{:#x}", a);
      j["ok"] = t.ok();
      if (t.ok()) {
        j["pa"] = fmt::format("{:#x}", t.output_address);
        j["level"] = t.level;
        j["block_size"] = t.block_size;
        j["perms"] = perms(t);
        j["memory"] = memory_name(t.attrs);
        j["shareability"] = shareability_name(static_cast<u64>(t.sh));
        j["state"] = state;
        j["descriptor"] = fmt::format("{:#018x}", t.descriptor);
      } else {
        j["fault"] = sim::name(t.fault);
        j["level"] = t.level;
        if (t.fault == sim::FaultKind::permission || t.fault == sim::FaultKind::access_flag)
          j["descriptor"] = fmt::format("{:#018x}", t.descriptor);
      }
      if (!t.notes.empty()) {
        nlohmann::ordered_json notes = nlohmann::ordered_json::array();
        for (std::string_view n : t.notes) notes.push_back(std::string(n));
        j["notes"] = std::move(notes);
      }
      if (r.fault_in) j["fault_in"] = *r.fault_in ? "ok" : name(r.fault_in->error());
      if (opt.walk) {
        nlohmann::ordered_json steps = nlohmann::ordered_json::array();
        for (const sim::WalkStep& s : t.walk)
          steps.push_back({{"level", s.level},
                           {"table", fmt::format("{:#x}", s.table_pa)},
                           {"address", fmt::format("{:#x}", s.desc_pa)},
                           {"descriptor", fmt::format("{:#018x}", s.desc)},
                           {"kind", kind_name(s.kind)}});
        j["walk"] = std::move(steps);
      }
      results.push_back(std::move(j));
      continue;
    }
    std::string line = fmt::format("{:#x} {}: ", a, sim::name(acc));
    if (t.ok()) {
      line += fmt::format("pa {:#x} level {} ({} {}) {} {} {} {}", t.output_address, t.level, size_name(t.block_size),
                          t.level < 3 ? "block" : "page", perms(t), memory_name(t.attrs),
                          shareability_name(static_cast<u64>(t.sh)), state);
    } else {
      line += fmt::format("fault {} level {}", sim::name(t.fault), t.level);
    }
    if (!t.note.empty()) line += fmt::format(" ({})", t.note);
    if (r.fault_in) line += fmt::format(" [host fault handler: {}]", *r.fault_in ? "ok" : name(r.fault_in->error()));
    text += line + "\n";
    if (opt.walk) {
      for (const sim::WalkStep& s : t.walk) {
        dctx.level = s.level;
        text += fmt::format("    L{} {:#x}: {:#018x} {}\n", s.level, s.desc_pa, s.desc,
                            decode_descriptor(s.desc, dctx).summary);
      }
    }
    if (text.size() > (1u << 16)) {
      fmt::print("{}", text);
      text.clear();
    }
  }
  if (opt.json) {
    nlohmann::ordered_json doc;
    doc["component"] = component_name(*id);
    doc["stage"] = *id == kHypId ? 1 : 2;
    doc["access"] = sim::name(acc);
    doc["fault_in"] = opt.fault_in;
    doc["results"] = std::move(results);
    fmt::print("{}\n", doc.dump(2));
  } else {
    fmt::print("{}", text);
  }
  return l.exit_code;
}
}  // namespace

void add_translate_command(CLI::App& app) {
  auto opt = std::make_shared<TranslateOptions>();
  CLI::App* cmd = app.add_subcommand("translate", "What the reference MMU does with an address: output address or fault");
  cmd->footer(
      "Examples:\n  ptguard translate 0x50000000 --after examples/lend.ptg --as host --access w\n"
      "  ptguard translate 0x40000000 0x40001000 --after examples/lend.ptg --as guest:2 --walk\n"
      "  seq 0x48000000 4096 0x48100000 | ptguard translate --addresses - --as host --fault-in --json\n"
      "--as hyp takes hypervisor virtual addresses (PA + the hyp offset, 0x8000_0000_0000 by default).\n"
      "A fault is an answer, not an error. Exit: 0 ok, 1 the scenario's expectations failed, 2 bad input.");
  cmd->add_option("ADDR", opt->addrs, "addresses (IPA for host and guests, VA for hyp)");
  cmd->add_option("--addresses", opt->addresses_file,
                  "read more addresses from this file (- for standard input): whitespace or commas, # comments");
  cmd->add_option("--as", opt->as, "whose tables: host, hyp or guest:N")->capture_default_str();
  cmd->add_option("--access", opt->access, "r, w or x (read, write, instruction fetch)")->capture_default_str();
  cmd->add_option("--after", opt->after, "run this scenario file first (- for standard input)");
  cmd->add_flag("--json", opt->json, "print JSON");
  cmd->add_flag("--walk", opt->walk, "show every descriptor the walk read");
  cmd->add_flag("--fault-in", opt->fault_in,
                "host: on a translation fault, let the host's fault handler run and translate again");
  cmd->callback([opt] { set_exit_code(run(*opt)); });
}

}  // namespace ptguard::tools
