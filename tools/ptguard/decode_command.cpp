// ptguard decode VALUE [--stage 1|2] [--level N] [--granule 4K|16K|64K] [--oa-bits 48|52] [--no-fwb] [--json]
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "decode.hpp"

namespace ptguard::tools {

namespace {
int g_exit_code = 0;

struct DecodeOptions {
  std::string value;
  int stage = 2;
  int level = 3;
  std::string granule = "4K";
  unsigned oa_bits = 48;
  bool no_fwb = false;
  bool json = false;
};

void print_decoded(u64 raw, const Decoded& d, bool json) {
  if (json) {
    nlohmann::ordered_json j;
    j["raw"] = fmt::format("{:#018x}", raw);
    j["kind"] = kind_name(d.kind);
    j["summary"] = d.summary;
    j["fields"] = nlohmann::ordered_json::array();
    for (const DecodedField& f : d.fields) {
      nlohmann::ordered_json x;
      x["name"] = f.name;
      x["bits"] = f.bits;
      x["value"] = f.value;
      x["meaning"] = f.meaning;
      j["fields"].push_back(std::move(x));
    }
    j["problems"] = d.problems;
    fmt::print("{}\n", j.dump(2));
    return;
  }
  fmt::print("{:#018x}: {}\n", raw, d.summary);
  for (const DecodedField& f : d.fields)
    fmt::print("  {:<26} [{:>5}] {:#x}{}{}\n", f.name, f.bits, f.value, f.meaning.empty() ? "" : "  ", f.meaning);
  for (const std::string& p : d.problems) fmt::print("  ! {}\n", p);
}
}  // namespace

int exit_code() { return g_exit_code; }
void set_exit_code(int code) { g_exit_code = code; }

void add_decode_command(CLI::App& app) {
  auto opt = std::make_shared<DecodeOptions>();
  CLI::App* cmd = app.add_subcommand("decode", "Name every field of a raw descriptor");
  cmd->footer(
      "Examples:\n  ptguard decode 0x00000000480007d9 --level 2\n"
      "  ptguard decode 0x0040000040000743 --stage 1 --json\n"
      "  ptguard decode 0x0180000000030000      # an owner annotation: lent to guest:3\n"
      "  ptguard decode 0x0003123456789743 --oa-bits 52   # 4K page at 0xb123456789000 (FEAT_LPA2)\n"
      "Fields are named as in the Arm ARM; problems (reserved encodings, RES0/RES1 bits, W^X) are\n"
      "listed with '!'. Stage 2 assumes HCR_EL2.FWB = 1 unless --no-fwb; stage 1 reads MemAttr\n"
      "through the library's MAIR_EL2. --oa-bits 52 reads 52-bit addresses: FEAT_LPA2 with DS = 1\n"
      "for 4K and 16K (OA[51:50] in bits 9:8, no SH field; level -1 with 4K), FEAT_LPA for 64K\n"
      "(OA[51:48] in bits 15:12). Exit: 0 ok, 2 bad usage or input.");
  cmd->add_option("VALUE", opt->value, "the descriptor, e.g. 0x40000000000747")->required();
  cmd->add_option("--stage", opt->stage, "1 (stage-1 EL2) or 2 (stage-2)")->check(CLI::IsMember({1, 2}));
  cmd->add_option("--level", opt->level, "lookup level 0-3, or -1 (4K with --oa-bits 52)")->check(CLI::Range(-1, 3));
  cmd->add_option("--granule", opt->granule, "4K, 16K or 64K")->check(CLI::IsMember({"4K", "16K", "64K"}));
  cmd->add_option("--oa-bits", opt->oa_bits,
                  "output-address size: 48, or 52 (FEAT_LPA2 with DS = 1 for 4K/16K, FEAT_LPA for 64K)")
      ->check(CLI::IsMember({48u, 52u}));
  cmd->add_flag("--no-fwb", opt->no_fwb, "stage 2: decode MemAttr as without FEAT_S2FWB");
  cmd->add_flag("--json", opt->json, "print JSON");
  cmd->callback([opt] {
    u64 raw = 0;
    try {
      std::size_t used = 0;
      raw = std::stoull(opt->value, &used, 0);
      if (used != opt->value.size()) throw std::invalid_argument("trailing characters");
    } catch (const std::exception&) {
      fmt::print(stderr, "ptguard decode: '{}' is not a number (use 0x... for hex)\n", opt->value);
      set_exit_code(2);
      return;
    }
    DecodeContext ctx;
    ctx.stage = opt->stage;
    ctx.level = opt->level;
    ctx.granule = opt->granule == "16K"   ? arch::Granule::k16K
                  : opt->granule == "64K" ? arch::Granule::k64K
                                          : arch::Granule::k4K;
    ctx.fwb = !opt->no_fwb;
    ctx.oa_bits = opt->oa_bits;
    if (const std::string why = check_context(ctx); !why.empty()) {
      fmt::print(stderr, "ptguard decode: {}\n", why);
      set_exit_code(2);
      return;
    }
    print_decoded(raw, decode_descriptor(raw, ctx), opt->json);
  });
}

}  // namespace ptguard::tools
