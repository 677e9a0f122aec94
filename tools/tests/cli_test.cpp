// The ptguard binary end to end: every command, its errors and exit codes, golden outputs for
// `decode` and `dump` (tools/tests/golden/, compared byte for byte), translate's answers and
// speed, the map's SVG through a real XML parser (xmllint), and export's images read back
// by the reference MMU.
//
// Regenerating a golden file (then review every changed line before committing it):
//   PTGUARD_UPDATE_GOLDEN=1 build/.../ptguard_tools_tests --gtest_filter='Golden*'
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "decode.hpp"
#include "dump.hpp"
#include "ptguard/sim/phys_mem.hpp"
#include "ptguard/sim/ref_mmu.hpp"

namespace fs = std::filesystem;
using namespace ptguard;
using namespace ptguard::tools;

namespace {

const fs::path kSource = fs::path(PTGUARD_EXAMPLES_DIR).parent_path();
const fs::path kGolden = kSource / "tools/tests/golden";

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

fs::path scratch(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("ptguard-cli-test-" + std::to_string(getpid()));
  fs::create_directories(d);
  return d / name;
}

struct Ran {
  int rc;
  std::string out, err;
};

// Runs `ptguard ARGS` from the source root (so relative paths in goldens are stable), with
// `input` on standard input.
Ran cli(const std::string& args, const std::string& input = "") {
  const fs::path in = scratch("stdin"), out = scratch("stdout"), err = scratch("stderr");
  {
    std::ofstream f(in, std::ios::binary);
    f << input;
  }
  const std::string cmd = "cd '" + kSource.string() + "' && '" + std::string(PTGUARD_CLI) + "' " + args + " <'" +
                          in.string() + "' >'" + out.string() + "' 2>'" + err.string() + "'";
  const int st = std::system(cmd.c_str());
  return Ran{WIFEXITED(st) ? WEXITSTATUS(st) : -1, slurp(out), slurp(err)};
}

int shell(const std::string& cmd) {
  const int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// Runs every line of `cmds` (comments and blank lines skipped) and returns the transcript.
std::string transcript(const std::string& command, const fs::path& cmds) {
  std::istringstream lines(slurp(cmds));
  std::string t;
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#') continue;
    const Ran r = cli(command + " " + line);
    t += "$ ptguard " + command + " " + line + "\n" + r.out;
    if (r.rc != 0) t += "[exit " + std::to_string(r.rc) + "]\n";
    t += "\n";
  }
  return t;
}

void check_golden(const std::string& command) {
  const fs::path cmds = kGolden / (command + ".cmds"), expected = kGolden / (command + ".txt");
  const std::string got = transcript(command, cmds);
  if (std::getenv("PTGUARD_UPDATE_GOLDEN") != nullptr) {
    std::ofstream(expected, std::ios::binary) << got;
    GTEST_SKIP() << "wrote " << expected << ": review it before committing";
  }
  ASSERT_TRUE(fs::exists(expected)) << expected;
  const std::string want = slurp(expected);
  if (got != want) {
    const fs::path actual = scratch(command + ".actual.txt");
    std::ofstream(actual, std::ios::binary) << got;
    FAIL() << "ptguard " << command << " differs from " << expected << "; diff -u " << expected << " " << actual;
  }
}

bool xmllint_ok(const fs::path& svg) {
  // Mandatory: make test installs libxml2-utils, and the SVG must pass a real XML parser.
  EXPECT_EQ(shell("command -v xmllint >/dev/null 2>&1"), 0) << "xmllint is missing: apt-get install libxml2-utils";
  return shell("xmllint --noout '" + svg.string() + "'") == 0;
}

std::size_t count_lines(const std::string& s) { return static_cast<std::size_t>(std::count(s.begin(), s.end(), '\n')); }

}  // namespace

// ---- golden outputs ---------------------------------------------------------------------------

TEST(Golden, Decode) { check_golden("decode"); }
TEST(Golden, Dump) { check_golden("dump"); }

TEST(Golden, TheGoldenFilesCanFail) {
  // A transcript of something else never matches: the comparison is not vacuous.
  const std::string want = slurp(kGolden / "decode.txt");
  ASSERT_FALSE(want.empty());
  EXPECT_NE(transcript("decode", kGolden / "dump.cmds"), want);
}

// ---- decode with 52-bit addresses, against the arch layer's encoder -----------------------------

TEST(Decode, FiftyTwoBitAddressesRoundTrip) {
  // Leaves and tables built by arch (OaFormat::encode) decode back to the address they hold,
  // for every granule and level with a leaf or a table; pseudo-random 52-bit addresses.
  u64 x = 0x9e37'79b9'7f4a'7c15ull;
  for (const arch::Granule g : arch::kAllGranules) {
    const arch::OaFormat f = arch::oa_format(g, true);
    for (int i = 0; i < 200; ++i) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      const int level = g == arch::Granule::k4K ? -1 + static_cast<int>(x % 5) : 1 + static_cast<int>(x % 3);
      const u64 pa = (x >> 8) & arch::bit_range(51, 0);
      DecodeContext ctx;
      ctx.granule = g;
      ctx.level = level;
      ctx.oa_bits = 52;
      ASSERT_EQ(check_context(ctx), "");
      const u64 table = arch::TableDesc::make(g, pa, f).raw();
      if (level < arch::kLastLevel) {
        const Decoded d = decode_descriptor(table, ctx);
        ASSERT_EQ(d.kind, arch::DescKind::table);
        EXPECT_NE(d.summary.find(fmt::format("{:#x}", pa & ~(arch::page_size(g) - 1))), std::string::npos) << d.summary;
        EXPECT_TRUE(d.problems.empty()) << d.problems.front();
      }
      if (!block_allowed_at(g, level, 52) && level != arch::kLastLevel) continue;
      const u64 leaf = arch::S2Leaf::make(g, level, pa, f).with_af(true).raw();
      const Decoded d = decode_descriptor(leaf, ctx);
      ASSERT_EQ(d.kind, level == arch::kLastLevel ? arch::DescKind::page : arch::DescKind::block);
      const u64 oa = pa & ~(arch::level_size(g, level) - 1);
      EXPECT_NE(d.summary.find(fmt::format("maps {:#x} ", oa)), std::string::npos) << d.summary;
      // With DS = 1 a leaf has no SH field; 64K (FEAT_LPA) keeps it.
      const bool has_sh = std::any_of(d.fields.begin(), d.fields.end(), [](const DecodedField& df) { return df.name == "SH"; });
      EXPECT_EQ(has_sh, g == arch::Granule::k64K);
      // Read as 48-bit, an address above 2^48 (2^50 with DS's in-place bits) is not what it says.
      DecodeContext c48 = ctx;
      c48.oa_bits = 48;
      if (level >= 0 && (oa >> (g == arch::Granule::k64K ? 48 : 50)) != 0) {
        EXPECT_EQ(decode_descriptor(leaf, c48).summary.find(fmt::format("maps {:#x} ", oa)), std::string::npos);
      }
    }
  }
  // Blocks: level 0 with 4K and level 1 with 16K/64K only at 52 bits; never at level -1.
  EXPECT_TRUE(block_allowed_at(arch::Granule::k4K, 0, 52));
  EXPECT_FALSE(block_allowed_at(arch::Granule::k4K, 0, 48));
  EXPECT_FALSE(block_allowed_at(arch::Granule::k4K, -1, 52));
  EXPECT_TRUE(block_allowed_at(arch::Granule::k16K, 1, 52));
  EXPECT_FALSE(block_allowed_at(arch::Granule::k16K, 0, 52));
  EXPECT_TRUE(block_allowed_at(arch::Granule::k64K, 1, 52));
  EXPECT_FALSE(block_allowed_at(arch::Granule::k64K, 1, 48));
}

// ---- help, version, usage errors ----------------------------------------------------------------

TEST(Cli, HelpOnEveryCommandHasAnExample) {
  for (const char* c : {"demo", "run", "decode", "dump", "translate", "map", "export"}) {
    const Ran r = cli(std::string(c) + " --help");
    EXPECT_EQ(r.rc, 0) << c;
    EXPECT_NE(r.out.find("Example"), std::string::npos) << c << ":\n" << r.out;
    EXPECT_NE(r.out.find(std::string("ptguard ") + c), std::string::npos) << c;
  }
  const Ran top = cli("--help");
  EXPECT_EQ(top.rc, 0);
  for (const char* c : {"demo", "run", "decode", "dump", "translate", "map", "export"})
    EXPECT_NE(top.out.find(c), std::string::npos) << c;
}

TEST(Cli, Version) {
  const Ran r = cli("--version");
  EXPECT_EQ(r.rc, 0);
  EXPECT_EQ(r.out, "ptguard 0.1.0\n");
}

TEST(Cli, BadUsageIsExit2) {
  EXPECT_EQ(cli("").rc, 2);                       // no command
  EXPECT_EQ(cli("frobnicate").rc, 2);             // unknown command
  EXPECT_EQ(cli("decode").rc, 2);                 // missing VALUE
  EXPECT_EQ(cli("decode 0x12zz").rc, 2);          // malformed number
  EXPECT_EQ(cli("decode 1 --level 4").rc, 2);     // out of range
  EXPECT_EQ(cli("decode 1 --granule 8K").rc, 2);
  EXPECT_EQ(cli("decode 1 --oa-bits 50").rc, 2);  // 48 or 52 only
  // Level -1 exists only with 4K and 52-bit addresses (FEAT_LPA2): said on stderr, exit 2.
  const Ran lvl = cli("decode 3 --level -1");
  EXPECT_EQ(lvl.rc, 2);
  EXPECT_NE(lvl.err.find("level -1"), std::string::npos) << lvl.err;
  EXPECT_EQ(cli("decode 3 --level -1 --granule 16K --oa-bits 52").rc, 2);
  EXPECT_EQ(cli("decode 3 --level -1 --oa-bits 52").rc, 0);
  EXPECT_EQ(cli("dump --frob").rc, 2);            // unknown option
  EXPECT_EQ(cli("export --after examples/lend.ptg").rc, 2);  // missing --out
}

// ---- long scenarios: progress on a terminal only -------------------------------------------------

TEST(Run, ProgressOnATerminalOnly) {
  std::string text;
  for (int i = 0; i < 20'000; ++i)
    text += fmt::format("host-share-hyp {0:#x}\nhost-unshare-hyp {0:#x}\n", 0x4800'0000u + (i % 512) * 0x1000u);
  const fs::path f = scratch("long.ptg");
  std::ofstream(f) << text;
  // Not a terminal: nothing on standard error.
  Ran r = cli("run -q " + f.string());
  EXPECT_EQ(r.rc, 0);
  EXPECT_TRUE(r.err.empty()) << r.err.substr(0, 200);
  EXPECT_NE(r.out.find("40000 operations, 0 checks, 0 failed"), std::string::npos) << r.out;
  // On a terminal (script(1) gives the command one): progress lines, then the summary.
  ASSERT_EQ(shell("command -v script >/dev/null 2>&1"), 0) << "script(1) (bsdutils) is missing";
  const fs::path log = scratch("tty.txt");
  ASSERT_EQ(shell("script -qec \"'" + std::string(PTGUARD_CLI) + "' run -q " + f.string() + "\" '" + log.string() +
                  "' >/dev/null 2>&1"),
            0);
  const std::string tty = slurp(log);
  EXPECT_NE(tty.find("16384/40000 operations (40%)"), std::string::npos) << tty.substr(0, 400);
  EXPECT_NE(tty.find("40000 operations, 0 checks, 0 failed"), std::string::npos);
}

// ---- dump ---------------------------------------------------------------------------------------

TEST(Dump, DefaultMachineAndErrors) {
  Ran r = cli("dump");
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("host stage-2"), std::string::npos);
  EXPECT_NE(r.out.find("owner hyp"), std::string::npos) << r.out;  // the carve-out's annotation
  r = cli("dump --as hyp");
  EXPECT_EQ(r.rc, 0);
  EXPECT_NE(r.out.find("L2 block"), std::string::npos) << r.out;
  r = cli("dump --as guest:2");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("guest:2 has no table"), std::string::npos) << r.err;
  EXPECT_EQ(cli("dump --as guest:1").rc, 2);
  EXPECT_EQ(cli("dump --as nobody").rc, 2);
  EXPECT_EQ(cli("dump --after /nonexistent.ptg").rc, 2);
  r = cli("dump --after -", "host-share-hyp 0x4800_0000 frob\n");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("<stdin>:1:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("^"), std::string::npos) << r.err;
}

TEST(Dump, AFailingScenarioStillDumpsAndExits1) {
  const Ran r = cli("dump --after tools/tests/data/failing.ptg --as hyp");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("failing.ptg:5: FAILED"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("hyp stage-1 EL2"), std::string::npos);
}

TEST(Dump, JsonIsStable) {
  const Ran r = cli("dump --after tools/tests/data/dump.ptg --as guest:2 --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["component"], "guest:2");
  EXPECT_EQ(j["stage"], 2);
  EXPECT_EQ(j["vmid"], 2);
  ASSERT_TRUE(j["ranges"].is_array());
  bool poisoned = false;
  for (const auto& x : j["ranges"]) {
    EXPECT_TRUE(x.contains("start") && x.contains("end") && x.contains("size") && x.contains("state"));
    poisoned = poisoned || x["state"] == "poisoned";
  }
  EXPECT_TRUE(poisoned);
}

TEST(Dump, MergedRangesCoverExactlyWhatTheTablesMap) {
  // Every valid row translates, through the reference MMU, to its PA at its first and last page.
  Loaded l = load_after((kSource / "tools/tests/data/dump.ptg").string(), "test");
  ASSERT_EQ(l.exit_code, 0);
  World& w = l.world();
  for (ComponentId id : {ownership::kHostId, ownership::kHypId, ComponentId{2}, ComponentId{3}}) {
    const Result<TableDump> d = dump_table(w, id);
    ASSERT_TRUE(d);
    for (const DumpRow& r : d->rows) {
      for (const u64 a : {r.start, r.end - World::kPage}) {
        World::Access acc;
        if (id == ownership::kHostId) acc = w.host_access(a, sim::Access::read, false);
        else if (id == ownership::kHypId) acc = w.hyp_access(a, sim::Access::read);
        else acc = *w.guest_access(id, a, sim::Access::read);
        EXPECT_EQ(acc.t.ok(), r.valid) << std::hex << a;
        if (r.valid) {
          EXPECT_EQ(acc.t.output_address, r.oa + (a - r.start)) << std::hex << a;
          EXPECT_EQ(acc.t.level, r.level);
        }
      }
    }
  }
}

// ---- translate ----------------------------------------------------------------------------------

TEST(Translate, AnswersAndFaults) {
  Ran r = cli("translate 0x5000_0000 --after examples/lend.ptg --as host --access w");
  EXPECT_EQ(r.rc, 0) << r.err;
  // The host faulted one page in while its neighbours were lent; once the last came home its
  // 2 MiB was rebuilt as one block (mem_protect.hpp, "Host blocks").
  EXPECT_NE(r.out.find("0x50000000 write: pa 0x50000000 level 2 (2M block)"), std::string::npos) << r.out;
  // Without fault-in the host's untouched memory faults; with it, the handler maps a block.
  r = cli("translate 0x4800_0000");
  EXPECT_NE(r.out.find("fault translation"), std::string::npos) << r.out;
  r = cli("translate 0x4800_0000 --fault-in");
  EXPECT_NE(r.out.find("pa 0x48000000 level 2 (2M block)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[host fault handler: ok]"), std::string::npos) << r.out;
  // The carve-out: the handler refuses.
  r = cli("translate 0x4000_0000 --fault-in");
  EXPECT_NE(r.out.find("host fault handler: EPERM"), std::string::npos) << r.out;
  // The hypervisor's VA of the UART; an exec is a permission fault (XN).
  r = cli("translate 0x8000_0900_0000 --as hyp --access x --walk");
  EXPECT_NE(r.out.find("fault permission level 3"), std::string::npos) << r.out;
  EXPECT_EQ(count_lines(r.out), 5u) << r.out;  // the answer and four descriptors (levels 0-3)
  r = cli("translate 0x4000_0000 --after examples/lend.ptg --as guest:2 --access x");
  EXPECT_NE(r.out.find("fault translation"), std::string::npos) << r.out;
}

TEST(Translate, Errors) {
  EXPECT_EQ(cli("translate").rc, 2);                                 // no address
  EXPECT_EQ(cli("translate 0xzz").rc, 2);
  EXPECT_EQ(cli("translate 1 --access q").rc, 2);
  EXPECT_EQ(cli("translate 1 --as hyp --fault-in").rc, 2);
  EXPECT_EQ(cli("translate 1 --as guest:2").rc, 2);                   // no such guest
  EXPECT_EQ(cli("translate 1 --as guest:x").rc, 2);
  EXPECT_EQ(cli("translate --addresses /nonexistent").rc, 2);
  const Ran r = cli("translate --addresses -", "0x4800_0000 0x4800_1000\n# fine\n0x1000, 0x48zz\n");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("<stdin>:3:9: error:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("          ^^^^^^"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty());  // nothing half-runs
}

TEST(Translate, ThousandsOfAddressesQuickly) {
  std::string in;
  constexpr int kN = 50'000;
  for (int i = 0; i < kN; ++i) in += fmt::format("{:#x}\n", 0x4000'0000u + static_cast<unsigned>(i) * 0x1000u);
  const auto t0 = std::chrono::steady_clock::now();
  Ran r = cli("translate --addresses - --fault-in", in);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(count_lines(r.out), static_cast<std::size_t>(kN));
  EXPECT_LT(secs, 20.0);  // well under a second optimised; generous for the sanitizer build
  r = cli("translate 0x4800_0000 0x4000_0000 0x9000_0000 --fault-in --json --walk");
  ASSERT_EQ(r.rc, 0);
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["component"], "host");
  ASSERT_EQ(j["results"].size(), 3u);
  EXPECT_EQ(j["results"][0]["ok"], true);
  EXPECT_EQ(j["results"][0]["pa"], "0x48000000");
  EXPECT_EQ(j["results"][0]["level"], 2);
  EXPECT_EQ(j["results"][0]["fault_in"], "ok");
  EXPECT_FALSE(j["results"][0]["walk"].empty());
  EXPECT_EQ(j["results"][1]["ok"], false);
  EXPECT_EQ(j["results"][1]["fault"], "translation");
  EXPECT_EQ(j["results"][1]["fault_in"], "EPERM");
}

// ---- map ----------------------------------------------------------------------------------------

TEST(Map, TextSvgAndZoom) {
  Ran r = cli("map --after examples/lend.ptg");
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("range"), std::string::npos);
  r = cli("map --after tools/tests/data/dump.ptg --range 0x4820_0000+16K");
  EXPECT_EQ(r.rc, 0) << r.err;
  // Page by page: pinned, shared, then two untouched pages merged.
  EXPECT_NE(r.out.find("0x048200000-0x048201000       4K"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pins=1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("0x048202000-0x048204000       8K"), std::string::npos) << r.out;
  EXPECT_EQ(count_lines(r.out), 4u) << r.out;
  const fs::path svg = scratch("zoom.svg");
  r = cli("map --after tools/tests/data/dump.ptg --range 0x4820_0000-0x4821_0000 --svg " + svg.string());
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(r.out.empty()) << "--svg alone prints no text";
  EXPECT_TRUE(xmllint_ok(svg));
  EXPECT_NE(slurp(svg).find("pinned"), std::string::npos);
  const fs::path big = scratch("big.svg");
  r = cli("map --after tools/tests/data/dump.ptg --svg " + big.string() + " --text");
  EXPECT_EQ(r.rc, 0);
  EXPECT_FALSE(r.out.empty());
  EXPECT_TRUE(xmllint_ok(big));
  r = cli("map --after tools/tests/data/dump.ptg --range 0x5200_0000+4K --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["ranges"].size(), 1u);
  EXPECT_EQ(j["ranges"][0]["host"], "lent");
  EXPECT_EQ(j["ranges"][0]["owner"], "host");
  EXPECT_EQ(j["ranges"][0]["guests"]["guest:3"], "borrowed");
  EXPECT_EQ(j["ranges"][0]["guests"]["guest:2"], "none");
  EXPECT_EQ(cli("map --range 5-3").rc, 2);
  EXPECT_EQ(cli("map --range 0x10").rc, 2);
  EXPECT_EQ(cli("map --range 0x1000+0").rc, 2);
  EXPECT_EQ(cli("map --range 0x2000_0000+4K").rc, 2);  // nothing there
  EXPECT_EQ(cli("map --svg /nonexistent-dir/x.svg").rc, 2);
}

TEST(Map, DemoSvgParses) {
  const fs::path svg = scratch("demo.svg");
  const Ran r = cli("demo --svg " + svg.string());
  EXPECT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_TRUE(xmllint_ok(svg));
}

// ---- export -------------------------------------------------------------------------------------

namespace {

// Loads an export into a fresh PhysMem and translates `addrs` for component `who` with the
// registers it lists, through the reference MMU.
struct Reloaded {
  sim::PhysMem mem;
  nlohmann::json doc;
};

void reload(const fs::path& dir, Reloaded* r) {
  r->doc = nlohmann::json::parse(slurp(dir / "tables.json"));
  for (const auto& img : r->doc["images"]) {
    const u64 base = std::stoull(img["base"].get<std::string>(), nullptr, 16);
    const std::string bytes = slurp(dir / img["file"].get<std::string>());
    ASSERT_EQ(bytes.size(), img["size"].get<u64>());
    ASSERT_TRUE(r->mem.add_region(base, bytes.size()));
    ASSERT_TRUE(r->mem.write(base, bytes.data(), bytes.size()));
  }
}

u64 hexval(const nlohmann::json& j) { return std::stoull(j.get<std::string>(), nullptr, 16); }

void expect_same_translations(const std::string& scenario, const fs::path& dir, const ScenarioOptions& so = {}) {
  Reloaded re;
  reload(dir, &re);
  Loaded l = load_after((kSource / scenario).string(), "test", so);
  ASSERT_EQ(l.exit_code, 0);
  World& w = l.world();
  ASSERT_EQ(re.doc["tables"].size(), 2 + w.guests().size());
  for (const auto& t : re.doc["tables"]) {
    const std::optional<ComponentId> id = parse_component(t["component"].get<std::string>());
    ASSERT_TRUE(id);
    const Result<TableDump> d = dump_table(w, *id, false);
    ASSERT_TRUE(d);
    EXPECT_EQ(hexval(t["root"]), d->root);
    std::vector<u64> addrs{0x4000'0000, 0x4800'0000, 0x8000'0000};
    for (const DumpRow& r : d->rows) {
      addrs.push_back(r.start);
      addrs.push_back(r.end - World::kPage);
    }
    // A reader learns the address format from oa_bits: 52 is FEAT_LPA2 (DS in the registers).
    sim::ImplChoices impl;
    if (t["oa_bits"] == 52) {
      impl.pa_bits = 52;
      impl.lpa2 = true;
    }
    for (const u64 a : addrs) {
      sim::Translation want, got;
      if (*id == ownership::kHypId) {
        const sim::Stage1Regs regs{hexval(t["registers"]["TCR_EL2"]), hexval(t["registers"]["MAIR_EL2"]),
                                   hexval(t["registers"]["TTBR0_EL2"])};
        got = sim::translate_stage1_el2(re.mem, regs, a, sim::Access::read, impl);
        want = w.hyp_access(a, sim::Access::read).t;
      } else {
        const sim::Stage2Regs regs{hexval(t["registers"]["VTCR_EL2"]), hexval(t["registers"]["VTTBR_EL2"]),
                                   t["registers"]["HCR_EL2.FWB"] == 1};
        got = sim::translate_stage2(re.mem, regs, a, sim::Access::read, false, impl);
        want = *id == ownership::kHostId ? w.host_access(a, sim::Access::read, false).t
                                         : w.guest_access(*id, a, sim::Access::read)->t;
      }
      EXPECT_EQ(got.fault, want.fault) << t["component"] << " " << std::hex << a;
      EXPECT_EQ(got.level, want.level) << t["component"] << " " << std::hex << a;
      EXPECT_EQ(got.output_address, want.output_address) << t["component"] << " " << std::hex << a;
      EXPECT_EQ(got.descriptor, want.descriptor) << t["component"] << " " << std::hex << a;
    }
  }
}

}  // namespace

TEST(Export, ImagesReadBackGiveTheSameTranslations) {
  const fs::path dir = scratch("export");
  fs::remove_all(dir);
  const Ran r = cli("export --after tools/tests/data/dump.ptg --out " + dir.string());
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("4 tables"), std::string::npos) << r.out;
  expect_same_translations("tools/tests/data/dump.ptg", dir);
  const nlohmann::json j = nlohmann::json::parse(slurp(dir / "tables.json"));
  EXPECT_EQ(j["format"], "ptguard-tables");
  EXPECT_EQ(j["version"], 1);
  EXPECT_EQ(j["tables"][0]["component"], "host");
  // Checked by hand: T0SZ 16 (48-bit IPA), SL0 0b10 (level 0), IRGN0/ORGN0 WBWA, SH0 inner,
  // TG0 4K, PS 48 bits, VS (16-bit VMID), HA, RES1 bit 31.
  EXPECT_EQ(j["tables"][0]["registers"]["VTCR_EL2"], "0x802d3590");
  EXPECT_EQ(j["tables"][0]["registers"]["HCR_EL2.FWB"], 1);
  // T0SZ 16, WBWA inner-shareable walks, TG0 4K, PS 48 bits, HA, RES1 bits 31 and 23.
  EXPECT_EQ(j["tables"][1]["registers"]["TCR_EL2"], "0x80a53510");
  EXPECT_EQ(j["tables"][1]["registers"]["MAIR_EL2"], fmt::format("{:#x}", arch::kMairEl2));
  EXPECT_EQ(j["tables"][3]["vmid"], 9);
  EXPECT_EQ(hexval(j["tables"][3]["registers"]["VTTBR_EL2"]) >> 48, 9u);
}

TEST(Export, FiftyTwoBitMachine) {
  // examples/pa52.ptg: RAM above 2^48 on a CPU with FEAT_LPA2. The registers carry DS, the
  // level -1 start and the 52-bit TTBR layout; the images read back with a 52-bit MMU translate
  // as the machine does (and, read as 48-bit, they would not: oa_bits says which).
  const fs::path dir = scratch("export-pa52");
  fs::remove_all(dir);
  const Ran r = cli("export --after examples/pa52.ptg --out " + dir.string());
  ASSERT_EQ(r.rc, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(slurp(dir / "tables.json"));
  ASSERT_EQ(j["tables"].size(), 3u);
  for (const auto& t : j["tables"]) EXPECT_EQ(t["oa_bits"], 52) << t["component"];
  const u64 vtcr = hexval(j["tables"][0]["registers"]["VTCR_EL2"]);
  EXPECT_TRUE(arch::TcrDs::get(vtcr));
  EXPECT_TRUE(arch::VtcrSl2::get(vtcr)) << "level -1: SL2 = 1";
  EXPECT_EQ(arch::TcrT0sz::get(vtcr), 12u) << "52-bit IPA";
  EXPECT_EQ(arch::TcrPs::get(vtcr), 0b110u) << "52-bit PA";
  EXPECT_EQ(j["tables"][0]["start_level"], -1);
  EXPECT_TRUE(arch::TcrDs::get(hexval(j["tables"][1]["registers"]["TCR_EL2"])));
  EXPECT_EQ(j["tables"][1]["ia_bits"], 48);
  // The root is at 0xf_0000_4000_0000 or above: BADDR[51:48] = 0xf in TTBR bits [5:2].
  EXPECT_EQ(arch::TtbrBaddr52Hi::get(hexval(j["tables"][0]["registers"]["VTTBR_EL2"])), 0xfu);
  EXPECT_EQ(arch::TtbrBaddr52Hi::get(hexval(j["tables"][1]["registers"]["TTBR0_EL2"])), 0xfu);
  expect_same_translations("examples/pa52.ptg", dir);
}

TEST(Export, TableBaseMovesTheTablePages) {
  const auto images_within = [](const fs::path& dir, u64 lo, u64 hi) {
    const nlohmann::json j = nlohmann::json::parse(slurp(dir / "tables.json"));
    EXPECT_FALSE(j["images"].empty());
    for (const auto& img : j["images"]) {
      const u64 base = hexval(img["base"]);
      EXPECT_GE(base, lo);
      EXPECT_LE(base + img["size"].get<u64>(), hi);
    }
  };
  // Inside the carve-out (0x4000_0000 + 64M): the scenario's `invariants` line holds.
  fs::path dir = scratch("export-carveout");
  Ran r = cli("export --after tools/tests/data/dump.ptg --out " + dir.string() + " --table-base 0x4200_0000+16M");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  images_within(dir, 0x4200'0000, 0x4300'0000);
  ScenarioOptions so;
  so.table_pool_base = 0x4200'0000;
  so.table_pool_size = 16u << 20;
  expect_same_translations("tools/tests/data/dump.ptg", dir, so);
  // Outside every region of the machine (RAM ends at 0x1_4000_0000): memory only the
  // hypervisor has, backed on its own; the invariants hold too.
  dir = scratch("export-outside");
  r = cli("export --after tools/tests/data/dump.ptg --out " + dir.string() + " --table-base 0x2_0000_0000");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  images_within(dir, 0x2'0000'0000, 0x2'0400'0000);  // the carve-out's size, 64M
  so.table_pool_base = 0x2'0000'0000;
  so.table_pool_size.reset();
  expect_same_translations("tools/tests/data/dump.ptg", dir, so);
  // In RAM the host may own: done, with a warning (the default machine: no invariants line).
  dir = scratch("export-hostram");
  r = cli("export --out " + dir.string() + " --table-base 0x4400_0000+16M");
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("outside the hypervisor's carve-out"), std::string::npos) << r.err;
  images_within(dir, 0x4400'0000, 0x4500'0000);
  // Bad input.
  EXPECT_EQ(cli("export --out " + dir.string() + " --table-base 0x7f00_0000+32M").rc, 2);  // straddles RAM's end
  EXPECT_EQ(cli("export --out " + dir.string() + " --table-base 0x0800_0000+64K").rc, 2);  // the GIC
  EXPECT_EQ(cli("export --out " + dir.string() + " --table-base 0x4200_0800").rc, 2);      // unaligned
  EXPECT_EQ(cli("export --out " + dir.string() + " --table-base 0x4200_0000+6K").rc, 2);   // part of a page
  EXPECT_EQ(cli("export --out " + dir.string() + " --table-base zz").rc, 2);
  EXPECT_EQ(cli("export --out /proc/nope").rc, 2);
}

namespace {
// The scratch directory goes when every test passed (a failing golden's actual output stays).
class RemoveScratch : public ::testing::Environment {
 public:
  void TearDown() override {
    if (::testing::UnitTest::GetInstance()->Passed()) fs::remove_all(scratch("x").parent_path());
  }
};
[[maybe_unused]] ::testing::Environment* const kRemoveScratch =
    ::testing::AddGlobalTestEnvironment(new RemoveScratch);
}  // namespace
