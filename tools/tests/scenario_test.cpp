// The scenario engine (tools/ptguard/scenario.*): every example in examples/ passes, a failing
// scenario fails with file:line, bad input is refused before anything runs (file:line:col and a
// caret), and the built binary keeps its exit codes.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "commands.hpp"
#include "ownership_map.hpp"
#include "ptguard/sim/access_check.hpp"
#include "scenario.hpp"

namespace fs = std::filesystem;
using namespace ptguard::tools;
using ptguard::u64;
namespace arch = ptguard::arch;
namespace sim = ptguard::sim;

namespace {

struct Ran {
  int exit_code;
  std::string out, err;
  ScenarioResult res;
};

Ran run_text(const std::string& text, ScenarioOptions opts = {}) {
  std::ostringstream out, err;
  Scenario s;
  Ran r{};
  if (!s.parse(text, "t.ptg", err)) {
    r.exit_code = 2;
  } else {
    r.res = s.run(opts, out, err);
    r.exit_code = r.res.exit_code;
  }
  r.out = out.str();
  r.err = err.str();
  return r;
}

std::vector<fs::path> examples() {
  std::vector<fs::path> v;
  for (const auto& e : fs::directory_iterator(PTGUARD_EXAMPLES_DIR))
    if (e.path().extension() == ".ptg") v.push_back(e.path());
  std::sort(v.begin(), v.end());
  return v;
}

int shell(const std::string& cmd) {
  const int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

// ---- every example passes, with the invariant checker after every step ----------------------

TEST(Examples, ThereAreEnough) { EXPECT_GE(examples().size(), 6u); }

class ExampleTest : public ::testing::TestWithParam<fs::path> {};

TEST_P(ExampleTest, PassesWithCheck) {
  ScenarioOptions opts;
  opts.check = true;
  std::ostringstream out, err;
  const ScenarioResult r = run_scenario_file(GetParam().string(), opts, out, err);
  EXPECT_EQ(r.exit_code, 0) << out.str() << err.str();
  EXPECT_EQ(r.failures, 0u) << out.str();
  EXPECT_GE(r.expectations, 10u) << "an example is a test: state what each line expects";
  EXPECT_EQ(out.str().find("FAIL"), std::string::npos) << out.str();
}

INSTANTIATE_TEST_SUITE_P(All, ExampleTest, ::testing::ValuesIn(examples()),
                         [](const ::testing::TestParamInfo<fs::path>& i) { return i.param.stem().string(); });

// ---- the runner can fail ---------------------------------------------------------------------

TEST(Runner, FailingScenarioIsReportedWithFileAndLine) {
  const fs::path p = fs::path(PTGUARD_EXAMPLES_DIR).parent_path() / "tools/tests/data/failing.ptg";
  std::ostringstream out, err;
  const ScenarioResult r = run_scenario_file(p.string(), ScenarioOptions{}, out, err);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.failures, 2u);
  const std::string o = out.str();
  EXPECT_NE(o.find(p.string() + ":5: FAILED: host-unshare-hyp 0x4800_0000"), std::string::npos) << o;
  EXPECT_NE(o.find("expected ok, got EBUSY"), std::string::npos) << o;
  EXPECT_NE(o.find(p.string() + ":6: FAILED: page 0x4800_0000 host=owned"), std::string::npos) << o;
  EXPECT_NE(o.find("expected host=owned, got shared-owned"), std::string::npos) << o;
}

TEST(Runner, EveryKindOfExpectationCanFail) {
  const char* cases[] = {
      "host-share-hyp 0x4800_0000 expect EPERM",
      "host-share-hyp 0x0800_0000 expect ok",
      "access host read 0x4800_0000 expect fault",
      "access host read 0x4000_0000 expect ok",
      "access host read 0x4000_0000 expect fault permission",
      "access host read 0x4800_0000 expect ok level 3",
      "access host read 0x4800_0000 expect ok pa 0x4800_1000",
      "access host read 0x0900_0000 expect fault translation level 1",
      "page 0x4800_0000 hyp=shared-borrowed",
      "page 0x4800_0000 pins=1",
      "page 0x4800_0000 shares=1",
      "page 0x4800_0000 owner=hyp",
      "page 0x4800_0000 secure=shared-borrowed",
      "page 0x4000_0000 host=owned",
      "create-guest guest:2\npage guest:2 0x0 owned",
      "create-guest guest:2\npage 0x4800_0000 guest:2=shared-borrowed",
      "create-guest guest:2\nhost-share-guest 0x4800_0000 to guest:2 at 0 rw\nguest-test-young guest:2 at 0 expect old",
  };
  for (const char* c : cases) {
    const Ran r = run_text(c);
    EXPECT_EQ(r.exit_code, 1) << c << "\n" << r.out << r.err;
    EXPECT_NE(r.out.find("t.ptg:"), std::string::npos) << c;
    EXPECT_NE(r.out.find(": FAILED: "), std::string::npos) << c << "\n" << r.out;
  }
}

TEST(Runner, LinesWithoutExpectationsOnlyReport) {
  const Ran r = run_text("host-share-hyp 0x0800_0000\nhost-share-hyp 0x4800_0000 expect ok\n");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("EPERM"), std::string::npos);
  EXPECT_EQ(r.res.expectations, 1u);
}

TEST(Runner, KeepsGoingAfterAFailureAndCountsThem) {
  const Ran r = run_text("host-share-hyp 0x4800_0000 expect EPERM\nhost-share-hyp 0x4800_0000 expect ok\n"
                         "host-share-hyp 0x4900_0000 expect EBUSY\n");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.res.failures, 3u) << r.out;
  EXPECT_EQ(r.res.statements, 3u);
}

// ---- output: what changed, --trace, --check, the map ------------------------------------------

TEST(Runner, ShowsWhatChanged) {
  const Ran r = run_text("host-share-hyp 0x4800_0000 2 pages expect ok\nhyp-pin-shared 0x4800_0000\n"
                         "host-unshare-hyp 0x4800_0000 expect EBUSY\n");
  EXPECT_NE(r.out.find("host owned→shared-owned, hyp none→shared-borrowed (2 pages)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pins 0→1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("refused, nothing changed"), std::string::npos) << r.out;
}

TEST(Runner, ReclaimingAGuestPageShowsWhatChanged) {
  const Ran r = run_text(
      "create-guest guest:2\nhost-donate-guest 0x5000_0000 8K to guest:2 at 0x0 expect ok\n"
      "host-share-guest 0x6000_0000 to guest:2 at 0x10_0000 r expect ok\nteardown-guest guest:2\n"
      "guest-reclaim-page guest:2 at 0x1000 expect ok\nguest-reclaim-page guest:2 0x10_0000 expect ok\n"
      "guest-reclaim-page guest:2 at 0x1000 expect ENOENT\n"
      "create-guest guest:3\nhost-donate-guest 0x5100_0000 8K to guest:3 at 0x0 expect ok\nteardown-guest guest:3\n"
      "reclaim-guest guest:3 expect ok\n");
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("host none→owned, guest:2 owned→none, owner guest:2→host, scrubbed"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("host shared-owned→owned, guest:2 shared-borrowed→none"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("shared-borrowed→none, scrubbed"), std::string::npos) << "a share is not scrubbed\n" << r.out;
  EXPECT_NE(r.out.find("refused, nothing changed"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("guest:3 owns 2→0 pages, 2 pages scrubbed"), std::string::npos)
      << "pages, not fixmap mappings (the first is mapped once more to try the fixmap)\n" << r.out;
}

TEST(Runner, TracePrintsTheEventLog) {
  ScenarioOptions o;
  o.trace = true;
  const Ran r = run_text("access host read 0x4800_0000\nhost-share-hyp 0x4800_0000 expect ok\n", o);
  EXPECT_NE(r.out.find("| write 0x"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| TLBI IPAS2E1IS"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| DSB ISH"), std::string::npos) << r.out;
}

TEST(Runner, CheckRunsTheInvariantCheckerAfterEveryStep) {
  ScenarioOptions o;
  o.check = true;
  const Ran r = run_text("host-share-hyp 0x4800_0000 expect ok\ninvariants\n", o);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("every invariant holds"), std::string::npos);
}

TEST(Runner, QuietPrintsOnlyFailuresAndTheSummary) {
  ScenarioOptions o;
  o.quiet = true;
  const Ran r = run_text("host-share-hyp 0x4800_0000 expect ok\nhost-share-hyp 0x4800_0000 expect ok\n", o);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "t.ptg:2: FAILED: host-share-hyp 0x4800_0000\n    expected ok, got EPERM\n"
                   "t.ptg: 2 operations, 2 checks, 1 failed\n");
}

TEST(Map, MergesRangesAndNamesEveryComponent) {
  Scenario s;
  std::ostringstream out, err;
  ASSERT_TRUE(s.parse("create-guest guest:2\nhost-donate-guest 0x5000_0000 2M to guest:2 at 0\n"
                      "host-share-hyp 0x4800_0000 2 pages\nhyp-pin-shared 0x4800_0000\n",
                      "m", err));
  ASSERT_EQ(s.run(ScenarioOptions{}, out, err).exit_code, 0);
  const OwnershipMap m = build_map(*s.world());
  const std::string t = map_text(m);
  EXPECT_NE(t.find("0x050000000-0x050200000       2M  ram    guest:2   -                -                owned"), std::string::npos) << t;
  EXPECT_NE(t.find("0x048000000-0x048001000       4K  ram    host      shared-owned     shared-borrowed  -    "
                   "            pins=1"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("pins=1"), std::string::npos);
  EXPECT_NE(t.find("0x009000000-0x009001000       4K  uart   hyp"), std::string::npos) << t;
  // Ranges tile the machine: memory and MMIO, no gaps inside a region, no overlaps.
  ptguard::u64 total = 0;
  for (const MapRow& r : m.rows) total += r.size;
  EXPECT_EQ(total, (ptguard::u64{1} << 30) + 0x1'0000 + 0x1000);
}

TEST(Map, MmioBeyondTheHypervisorsVaSpaceReadsAsUnmappedThere) {
  // The host's second MMIO region has hypervisor VAs (pa + 0xffff_0000_0000) from 2^48 on, past
  // the EL2 table's 48-bit VA space (allowed: the hypervisor never maps the host's MMIO). The
  // map's walk there must be clipped, not wrapped onto VA 0 (where the hypervisor maps a page of
  // its own) and not refused (a warning in the map).
  Scenario s;
  std::ostringstream out, err;
  ASSERT_TRUE(s.parse("ram 0x8000_0000 512M\nmmio 0x0900_0000 4K uart hyp\nmmio 0x1_0000_0000 64K pcie\n"
                      "carveout 0x8000_0000 32M\npool 0x8000_0000 16M\nhyp-offset 0xffff_0000_0000\n"
                      "boot setup\nhyp-map-private 0x1000 4K to 0x8000_0000 rw expect ok\nfinalize\n",
                      "m", err))
      << err.str();
  ASSERT_EQ(s.run(ScenarioOptions{}, out, err).exit_code, 0) << out.str() << err.str();
  const OwnershipMap m = build_map(*s.world());
  const std::string t = map_text(m);
  EXPECT_TRUE(m.problems.empty()) << t;
  EXPECT_EQ(t.find("warning"), std::string::npos) << t;
  EXPECT_NE(t.find("0x100000000-0x100010000      64K  pcie   host      owned            -"), std::string::npos) << t;
}

TEST(Map, MemoryBeyondTheHypervisorsVaSpaceIsRefusedAtBoot) {
  // Memory whose hypervisor VA would lie past the EL2 VA space could never be shared with or
  // donated to the hypervisor: the ownership layer refuses such a description (EINVAL).
  Scenario s;
  std::ostringstream out, err;
  ASSERT_TRUE(s.parse("ram 0x8000_0000 512M\nram 0x1_0000_0000 256M\nmmio 0x0900_0000 4K uart hyp\n"
                      "carveout 0x8000_0000 32M\npool 0x8000_0000 16M\nhyp-offset 0xffff_0000_0000\n"
                      "boot setup\nfinalize\n",
                      "m", err))
      << err.str();
  EXPECT_EQ(s.run(ScenarioOptions{}, out, err).exit_code, 2) << out.str() << err.str();
  EXPECT_NE(err.str().find("EINVAL"), std::string::npos) << err.str();
  EXPECT_NE(err.str().find("hyp-offset"), std::string::npos) << err.str();
}

// ---- a 52-bit machine (examples/pa52.ptg) ---------------------------------------------------

namespace {
// examples/pa52.ptg's machine lines, without its `cpu` line.
const char* const kPa52Machine =
    "ram      0xf_0000_4000_0000 1G\ncarveout 0xf_0000_4000_0000 64M\nmmio     0x0800_0000 64K gic\n"
    "mmio     0xf_0000_3000_0000 4K uart hyp\nhyp-offset -0xf_0000_0000_0000\n";
}  // namespace

TEST(Pa52, TransitionsAboveTwoToThe48AgreeWithTheReferenceMmu) {
  // The example, then the reference MMU over the whole machine with the CPU's 52-bit
  // implementation choices (sim::check_access_against_states): every page's state at the host,
  // the hypervisor and the guest is what the MMU lets each do.
  const fs::path p = fs::path(PTGUARD_EXAMPLES_DIR) / "pa52.ptg";
  Scenario s;
  std::ostringstream out, err;
  ASSERT_TRUE(s.parse(slurp(p), p.string(), err)) << err.str();
  ASSERT_EQ(s.run(ScenarioOptions{}, out, err).exit_code, 0) << out.str() << err.str();
  EXPECT_NE(out.str().find("2 MMIO region(s), 52-bit PA (FEAT_LPA2); protected mode on"), std::string::npos) << out.str();
  World& w = *s.world();
  EXPECT_EQ(w.mp().host_config().oa, arch::kOa52Ds);
  EXPECT_EQ(w.mp().host_config().geometry.start_level, -1);
  EXPECT_EQ(sim::check_access_against_states(w.mem(), w.mp()), std::nullopt);
  // A page above 2^48 shared with the hypervisor, checked the same way, then given back.
  const u64 pa = 0xf'0000'6000'0000ull;
  ASSERT_TRUE(w.host_access(pa, sim::Access::write, true).t.ok());
  ASSERT_TRUE(w.mp().host_share_hyp(pa, 1));
  const World::Access y = w.hyp_access(w.mp().hyp_va(pa), sim::Access::write);
  ASSERT_TRUE(y.t.ok()) << sim::to_string(y.t);
  EXPECT_EQ(y.t.output_address, pa);
  EXPECT_EQ(sim::check_access_against_states(w.mem(), w.mp()), std::nullopt);
  // The same check on a 48-bit MMU (no FEAT_LPA2: DS reads as 0) does not see these tables as
  // the machine does: the check above is not vacuous.
  const auto& c = w.mp().host_config();
  const sim::Translation t48 = sim::translate_stage2(
      w.mem(), sim::Stage2Regs{c.vtcr, arch::make_vttbr(c, w.mp().host_table().root_pa(), 0), c.fwb}, pa,
      sim::Access::read);
  EXPECT_FALSE(t48.ok() && t48.output_address == pa) << sim::to_string(t48);
  EXPECT_EQ(w.check_invariants(), "");
}

TEST(Pa52, AFortyEightBitCpuRefusesTheMachineWithAClearError) {
  for (const char* cpu : {"", "cpu pa-bits 48\n", "cpu pa-bits 52 no-lpa2\n"}) {
    const Ran r = run_text(std::string(cpu) + kPa52Machine + "host-share-hyp 0xf_0000_4800_0000 expect ok\n");
    EXPECT_EQ(r.exit_code, 2) << cpu << r.out;
    EXPECT_NE(r.err.find("error: the machine cannot boot: ram 0xf000040000000 0x40000000 lies past the CPU's 48-bit "
                         "physical addresses"),
              std::string::npos)
        << r.err;
    EXPECT_NE(r.err.find(*cpu == '\0' || cpu[12] == '4' ? "needs `cpu pa-bits 52`" : "not FEAT_LPA2"), std::string::npos)
        << r.err;
  }
  // With the CPU, but RAM whose EL2 address would not fit the 48-bit VA (no negative offset).
  const Ran r = run_text("cpu pa-bits 52\nram 0xf_0000_4000_0000 1G\ncarveout 0xf_0000_4000_0000 64M\n"
                         "host-share-hyp 0xf_0000_4800_0000\n");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("negative offset"), std::string::npos) << r.err;
  // And booted: the machine line gives a 52-bit IPA.
  const Ran ok = run_text(std::string("cpu pa-bits 52\n") + kPa52Machine + "host-share-hyp 0xf_0000_4800_0000 expect ok\n");
  EXPECT_EQ(ok.exit_code, 0) << ok.out << ok.err;
}

// ---- bad input: file:line:col, a caret, exit 2, nothing run ----------------------------------

struct BadInput {
  const char* text;
  const char* message;
  const char* caret;  // the caret line, as printed
};

TEST(BadInput, OneClearMessageWithACaretAndNothingRuns) {
  const BadInput cases[] = {
      {"host-share-hyp 0x4800_0000\nhost-shar-hyp 0x4800_0000\n", "t.ptg:2:1: error: unknown operation 'host-shar-hyp' (did you mean 'host-share-hyp'?)", "  ^^^^^^^^^^^^^"},
      {"host-share-hyp 0x48zz_0000", "t.ptg:1:16: error: a physical address: '0x48zz_0000' is not a number", "                 ^^^^^^^^^^^"},
      {"host-share-hyp 0x4800_0000 6K", "t.ptg:1:28: error: size '6K' is not a whole number of 4K pages", "                             ^^"},
      {"host-share-hyp 0x1_0000_0000_0000_0000", "t.ptg:1:16: error: a physical address: '0x1_0000_0000_0000_0000' does not fit in 64 bits", ""},
      {"host-share-hyp 0xffff_ffff_ffff_f000 8K", "t.ptg:1:16: error: range 0xfffffffffffff000 + 0x2000 runs past the end", ""},
      {"create-guest guest:2\nteardown-guest gust:2", "t.ptg:2:16: error: 'gust:2' is not a guest", "                 ^^^^^^"},
      {"access cpu read 0x4800_0000", "t.ptg:1:8: error: unknown component 'cpu'", "         ^^^"},
      {"access host load 0x4800_0000", "t.ptg:1:13: error: 'load': read, write or exec", ""},
      {"host-share-hyp 0x4800_0000 expect EPRM", "t.ptg:1:35: error: unknown outcome 'EPRM'", ""},
      {"host-share-hyp 0x4800_0000 expect", "t.ptg:1:", ""},
      {"access host read 0x4800_0000 expect fault perm", "unknown fault kind 'perm'", ""},
      {"host-share-hyp", "t.ptg:1:15: error: expected a physical address", "                ^"},
      {"host-share-hyp 0x4800_0000 extra", "t.ptg:1:28: error: unexpected 'extra'", ""},
      {"page 0x4800_0000 host=own", "unknown state 'own'", ""},
      {"page 0x4800_0000 colour=blue", "unknown key 'colour'", ""},
      {"page 0x4800_0000", "expected what to check", ""},
      {"host-share-hyp 0x4800_0000\nram 0x4000_0000 1G", "t.ptg:2:1: error: the machine is described before it boots", ""},
      {"create-guest guest:2 vmid 70000", "a VMID has 16 bits", ""},
      {"host-share-guest 0x4800_0000 to guest:2 at 0 rwz", "unexpected 'rwz'", ""},
      {"page 0x4800_0000 host=owned expect ok", "states no outcome", ""},
      {"guest-reclaim-page guest:2", "t.ptg:1:27: error: expected a guest address (IPA)", ""},
      {"guest-reclaim-page 0x1000", "is not a guest", ""},
      {"cpu pa-bits 50", "t.ptg:1:13: error: '50' is not a PA size the architecture defines", "              ^^"},
      {"cpu pa-bytes 52", "unknown cpu property 'pa-bytes'", ""},
      {"cpu pa-bits 48 no-lpa2", "no-lpa2 means something only with pa-bits 52", ""},
      {"hyp-offset -0xzz", "the hypervisor's VA offset: '0xzz' is not a number", ""},
  };
  for (const BadInput& c : cases) {
    const Ran r = run_text(c.text);
    EXPECT_EQ(r.exit_code, 2) << c.text;
    EXPECT_EQ(r.out, "") << c.text << ": nothing may run";
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.text << "\n" << r.err;
    if (*c.caret != '\0') {
      std::istringstream lines(r.err);
      std::string l1, l2, l3;
      std::getline(lines, l1);
      std::getline(lines, l2);
      std::getline(lines, l3);
      EXPECT_EQ(l3, c.caret) << c.text << "\n" << r.err;
    }
  }
}

TEST(BadInput, AMachineThatCannotBootIsExit2) {
  const Ran r = run_text("ram 0x4000_0000 1G\nhost-share-hyp 0x4800_0000\n");  // no carve-out, no pool
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("t.ptg:2: error: the machine cannot boot: no table pool"), std::string::npos) << r.err;
}

TEST(Numbers, HexDecimalSeparatorsAndSuffixes) {
  const Ran r = run_text(
      "host-share-hyp 1207959552 8192 expect ok\n"         // 0x4800_0000, 2 pages
      "page 0x48000000 0x2000 host=shared-owned\n"
      "page 0x4800_2000 4K host=owned\n"
      "host-donate-hyp 0x4820_0000 2M expect ok\n"
      "page 0x4820_0000 512 pages host=none owner=hyp\n"
      "host-donate-hyp 0x7ff0_0000 1G expect EINVAL\n"   // runs off the end of 1G of RAM
      "host-donate-hyp 0x8000_0000 1G expect EPERM\n");  // nothing there at all
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

// ---- the demo, and the binary end to end ----------------------------------------------------

TEST(Demo, RunsAndWritesAValidSvg) {
  const fs::path svg = fs::temp_directory_path() / "ptguard-test-demo.svg";
  testing::internal::CaptureStdout();
  const int rc = run_demo(svg.string(), false);
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("0 failed"), std::string::npos) << out;
  EXPECT_NE(out.find(svg.string()), std::string::npos);
  const std::string s = slurp(svg);
  EXPECT_NE(s.find("<svg"), std::string::npos);
  EXPECT_NE(s.find("</svg>"), std::string::npos);
  // Mandatory: make test installs xmllint (libxml2-utils); a missing one is a failure.
  ASSERT_EQ(shell("command -v xmllint >/dev/null 2>&1"), 0) << "xmllint is missing: apt-get install libxml2-utils";
  EXPECT_EQ(shell("xmllint --noout " + svg.string()), 0);
  fs::remove(svg);
}

TEST(Binary, ExitCodes) {
  const std::string cli = PTGUARD_CLI;
  const std::string ex = PTGUARD_EXAMPLES_DIR;
  const std::string failing = fs::path(ex).parent_path() / "tools/tests/data/failing.ptg";
  EXPECT_EQ(shell(cli + " run -q " + ex + "/share_hyp.ptg >/dev/null"), 0);
  EXPECT_EQ(shell(cli + " run -q --check " + failing + " >/dev/null"), 1);
  EXPECT_EQ(shell(cli + " run /nonexistent.ptg 2>/dev/null"), 2);
  EXPECT_EQ(shell(cli + " run " + ex + " 2>/dev/null"), 2);  // a directory
  EXPECT_EQ(shell("echo 'host-shar 0x4800_0000' | " + cli + " run - 2>/dev/null"), 2);
  EXPECT_EQ(shell("echo 'host-share-hyp 0x4800_0000 expect ok' | " + cli + " run - >/dev/null"), 0);
  EXPECT_EQ(shell("echo 'host-share-hyp 0x4800_0000 expect EPERM' | " + cli + " run - >/dev/null"), 1);
  EXPECT_EQ(shell(cli + " run >/dev/null 2>&1"), 2);         // missing FILE
  EXPECT_EQ(shell(cli + " frobnicate >/dev/null 2>&1"), 2);  // unknown command
  EXPECT_EQ(shell(cli + " run --help >/dev/null"), 0);
  EXPECT_EQ(shell(cli + " --version >/dev/null"), 0);
  const fs::path svg = fs::temp_directory_path() / "ptguard-test-run.svg";
  EXPECT_EQ(shell(cli + " run -q --map --svg " + svg.string() + " " + ex + "/teardown.ptg >/dev/null"), 0);
  // Mandatory: make test installs xmllint (libxml2-utils); a missing one is a failure.
  ASSERT_EQ(shell("command -v xmllint >/dev/null 2>&1"), 0) << "xmllint is missing: apt-get install libxml2-utils";
  EXPECT_EQ(shell("xmllint --noout " + svg.string()), 0);
  fs::remove(svg);
}

TEST(Binary, FailureOutputNamesFileAndLine) {
  const std::string cli = PTGUARD_CLI;
  const fs::path out = fs::temp_directory_path() / "ptguard-test-failing.txt";
  const std::string failing = fs::path(PTGUARD_EXAMPLES_DIR).parent_path() / "tools/tests/data/failing.ptg";
  EXPECT_EQ(shell(cli + " run -q " + failing + " >" + out.string()), 1);
  const std::string o = slurp(out);
  EXPECT_NE(o.find("failing.ptg:5: FAILED: host-unshare-hyp 0x4800_0000\n    expected ok, got EBUSY"),
            std::string::npos)
      << o;
  fs::remove(out);
}
