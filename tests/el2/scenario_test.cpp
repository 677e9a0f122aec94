// The EL2 scenario (scenario.hpp) in the simulator, and the differential check against QEMU.
//
//  - Scenario.SimulatorMeetsExpectations: every step of the scenario, for every granule, does
//    in the simulator what the table says, as the reference MMU judges the accesses, and the
//    ownership layer's invariants hold at the end.
//  - Qemu.AgreesWithReferenceMmu: runs the EL2 image under qemu-system-aarch64 (under
//    `timeout`), parses its UART lines, runs the same scenario in the simulator with the CPU
//    features the image read from the ID registers, and fails on any line that differs (the
//    outcome of a transition, an access's success and the value read, a fault's kind, level
//    and address), printing both. Needs PTGUARD_EL2_IMAGE (the ctest el2_qemu sets it after
//    el2_image built it); skipped without it.
//    The 52-bit runs (scenario.hpp, kVariants52: IPAs above 2^48 with FEAT_LPA2 for 4K, the
//    walk from level -1, and 16K, and FEAT_LPA for 64K) are compared the same way, with the
//    reference MMU given the image's PA size and FEAT_LPA2;
//    Scenario.Runs52MeetExpectationsAtTheirLevels runs their simulator half alone and checks
//    their configuration and the fault levels (-1 to 3) as well.
//  - Qemu.SmpRunsAndInvariantsHold: the same image with -smp 4, once with TCG's default
//    single thread (vCPUs take turns) and once with -accel tcg,thread=multi (one host thread
//    per vCPU, so they really interleave): all four CPUs start, run their host stubs on the
//    shared range with no unexpected error, each cycles a guest of its own (scrubs through the
//    shared fixmap, cache maintenance without FWB) and holds the fixmap over a page of its own
//    at least once, and the invariants hold afterwards (the image's `smp:` lines; main.cpp,
//    "the SMP phase").
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "el2/sim_run.hpp"

namespace ptguard::el2test {
namespace {

using arch::Granule;

template <unsigned V>
std::vector<std::string> sim_lines_of(const arch::CpuFeatures& cpu, std::vector<std::string>* problems) {
  SimRun<V> r(cpu);
  std::vector<std::string> lines = r.run();
  problems->insert(problems->end(), r.problems.begin(), r.problems.end());
  return lines;
}

/// The simulator's lines for run `v` of kVariants.
std::vector<std::string> sim_lines(unsigned v, const arch::CpuFeatures& cpu, std::vector<std::string>* problems) {
  static_assert(kNumVariants == 4);
  switch (v) {
    case 0: return sim_lines_of<0>(cpu, problems);
    case 1: return sim_lines_of<1>(cpu, problems);
    case 2: return sim_lines_of<2>(cpu, problems);
    case 3: return sim_lines_of<3>(cpu, problems);
  }
  return {};
}

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

TEST(Scenario, QemusCpuGivesThe4KAnd64KRunsFiftyTwoBitTables) {
  // -cpu max has FEAT_LPA2 and FEAT_LPA: the 4K and 64K runs use 52-bit tables (4K: a level -1
  // host stage 2), the 16K and older-CPU runs 48-bit ones (scenario.hpp, kVariants).
  const arch::CpuFeatures cpu = IdRegs{}.features();
  using MP4K = ownership::MemProtect<Granule::k4K, sim::SimPlatform>;
  using MP16K = ownership::MemProtect<Granule::k16K, sim::SimPlatform>;
  using MP64K = ownership::MemProtect<Granule::k64K, sim::SimPlatform>;
  EXPECT_TRUE(MP4K::uses_52bit(run_cpu(cpu, kVariants[0])));
  EXPECT_FALSE(MP16K::uses_52bit(run_cpu(cpu, kVariants[1])));
  EXPECT_TRUE(MP64K::uses_52bit(run_cpu(cpu, kVariants[2])));
  EXPECT_FALSE(MP4K::uses_52bit(run_cpu(cpu, kVariants[3])));
  SimRun<0> four_k(cpu);
  EXPECT_EQ(four_k.mp().host_config().geometry.start_level, -1);
  EXPECT_EQ(four_k.mp().hyp_config().oa, arch::kOa52Ds);
}

TEST(Scenario, SimulatorMeetsExpectations) {
  const arch::CpuFeatures cpu = IdRegs{}.features();
  for (unsigned v = 0; v < kNumVariants; ++v) {
    std::vector<std::string> problems;
    const std::vector<std::string> lines = sim_lines(v, cpu, &problems);
    EXPECT_EQ(lines.size(), kSteps + 1);
    for (const std::string& l : lines) EXPECT_EQ(l.find("FAIL"), std::string::npos) << l;
    EXPECT_EQ(lines.back(), std::string("invariants ") + kVariants[v].name + ": hold");
    for (const std::string& p : problems) ADD_FAILURE() << kVariants[v].name << ": " << p;
  }
}

template <unsigned V>
std::vector<std::string> sim_lines52_of(const arch::CpuFeatures& cpu, std::vector<std::string>* problems) {
  SimRun52<V> r(cpu);
  std::vector<std::string> lines = r.run();
  problems->insert(problems->end(), r.problems.begin(), r.problems.end());
  return lines;
}

/// The simulator's lines for 52-bit run `v` of kVariants52 (none, with a problem, if the CPU
/// cannot build its table).
std::vector<std::string> sim_lines52(unsigned v, const arch::CpuFeatures& cpu, std::vector<std::string>* problems) {
  static_assert(kNumVariants52 == 3);
  switch (v) {
    case 0: return sim_lines52_of<0>(cpu, problems);
    case 1: return sim_lines52_of<1>(cpu, problems);
    case 2: return sim_lines52_of<2>(cpu, problems);
  }
  return {};
}

TEST(Scenario, Runs52MeetExpectationsAtTheirLevels) {
  // QEMU 7.2 -cpu max's ID registers: FEAT_LPA2 at both stages (TGran4 = 0b0001, TGran16 =
  // 0b0010, TGran4_2 = TGran16_2 = 0b0011) and a 52-bit PARange (FEAT_LPA).
  const arch::CpuFeatures cpu = IdRegs{}.features();
  for (unsigned v = 0; v < kNumVariants52; ++v) {
    const Variant52& run = kVariants52[v];
    SCOPED_TRACE(run.name);
    ASSERT_TRUE(supports_run52(run, cpu));
    const Result<arch::Stage2Config> cfg = config52(run, cpu);
    ASSERT_TRUE(cfg.has_value());
    // What the runs are about: T0SZ = 64 - ia_bits, PS = 0b110 (52-bit PAs), DS = 1 with 4K and
    // 16K (FEAT_LPA2; RES0 with 64K, whose 52-bit format is FEAT_LPA's), and the start levels:
    // 4K at -1 (SL2 = 1, SL0 = 0b00), 16K at 1 (SL0 = 0b10, 16 tables), 64K at 1 (SL0 = 0b10).
    EXPECT_EQ(arch::TcrT0sz::get(cfg->vtcr), 64u - run.ia_bits);
    EXPECT_EQ(arch::TcrPs::get(cfg->vtcr), 0b110u);
    EXPECT_EQ(arch::TcrDs::get(cfg->vtcr), run.granule == Granule::k64K ? 0u : 1u);
    EXPECT_EQ(arch::VtcrSl2::get(cfg->vtcr), run.granule == Granule::k4K ? 1u : 0u);
    EXPECT_EQ(arch::VtcrSl0::get(cfg->vtcr), run.granule == Granule::k4K ? 0u : 0b10u);
    EXPECT_EQ(cfg->geometry.start_level, run.granule == Granule::k4K ? -1 : 1);
    EXPECT_EQ(cfg->geometry.root_tables, run.granule == Granule::k16K ? 16u : 1u);
    std::vector<std::string> problems;
    const std::vector<std::string> lines = sim_lines52(v, cpu, &problems);
    for (const std::string& p : problems) ADD_FAILURE() << run.name << ": " << p;
    ASSERT_EQ(lines.size(), kSteps52);
    const Steps52 steps = steps52(run);
    for (unsigned i = 0; i < kSteps52; ++i) {
      EXPECT_EQ(lines[i].find("FAIL"), std::string::npos) << lines[i];
      // The steps do not name levels (the MMUs are compared on them); these runs are about the
      // walk's levels, so they are checked here too: -1 where a 4K root entry is empty.
      const Expect::Kind k = steps.s[i].expect.kind;
      if (k == Expect::translation || k == Expect::permission) {
        const std::string want = "level " + std::to_string(kLevels52[v][i]) + " ipa ";
        EXPECT_NE(lines[i].find(want), std::string::npos) << lines[i] << " (want " << want << ")";
      }
    }
    // Without 52-bit addresses for the granule the run is refused, not attempted.
    arch::CpuFeatures old = cpu;
    old.lpa_s2[static_cast<unsigned>(run.granule)] = false;
    EXPECT_FALSE(supports_run52(run, old));
  }
}

TEST(Scenario, StepsAreGranuleIndependent) {
  // Every address is a 64 KiB slot, so that a "page" means one page of any granule.
  for (const Step& s : kScenario) {
    if (s.op != Op::call) {
      EXPECT_TRUE(s.addr % 8 == 0) << std::hex << s.addr;
    } else if (s.who == Actor::host) {
      if (!x1_is_guest(s.call)) {
        EXPECT_EQ(s.addr % kSlot, 0u) << name(s.call) << " at 0x" << std::hex << s.addr;
      }
      EXPECT_EQ(s.x4 % kSlot, 0u) << name(s.call);
    } else {
      EXPECT_EQ(s.addr % kSlot, 0u) << name(s.call) << " at 0x" << std::hex << s.addr;
    }
  }
}

struct QemuRun {
  int status = -1;  ///< exit status, 124 when `timeout` stopped it
  std::string out;
};

/// Runs the image under `timeout seconds`, with `extra` QEMU options (-smp ...).
QemuRun run_qemu(const std::string& image, const std::string& extra = "", unsigned seconds = 60) {
  const char* q = std::getenv("PTGUARD_QEMU");
  const std::string cmd = "timeout " + std::to_string(seconds) + " " + (q ? q : "qemu-system-aarch64") +
                          " -M virt,virtualization=on -cpu max -m 512M -nodefaults -display none"
                          " -serial stdio -semihosting-config enable=on,target=native " + extra +
                          " -kernel '" + image + "' 2>&1";
  QemuRun r;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

TEST(Qemu, AgreesWithReferenceMmu) {
  const char* image = std::getenv("PTGUARD_EL2_IMAGE");
  if (image == nullptr) GTEST_SKIP() << "PTGUARD_EL2_IMAGE not set (ctest el2_qemu sets it)";
  const QemuRun q = run_qemu(image);
  ASSERT_NE(q.status, 124) << "QEMU hung: stopped by timeout after 60 s; output so far:\n" << q.out;

  // The image's lines, by kind.
  std::vector<std::string> lines;
  std::istringstream in(q.out);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  IdRegs id;
  bool have_cpu = false;
  std::string summary;
  for (const std::string& l : lines) {
    if (starts_with(l, "cpu ")) {
      have_cpu = std::sscanf(l.c_str(),
                             "cpu mmfr0 %" SCNx64 " mmfr1 %" SCNx64 " mmfr2 %" SCNx64 " ctr %" SCNx64 " isar0 %" SCNx64,
                             &id.mmfr0, &id.mmfr1, &id.mmfr2, &id.ctr, &id.isar0) == 5;
    } else if (starts_with(l, "summary ")) {
      summary = l;
    } else if (starts_with(l, "setup ") || starts_with(l, "panic")) {
      ADD_FAILURE() << "the image reports: " << l;
    }
  }
  ASSERT_TRUE(have_cpu) << "no cpu line from the image; output:\n" << q.out;
  const arch::CpuFeatures cpu = id.features();

  unsigned compared = 0, differ = 0;
  for (unsigned v = 0; v < kNumVariants; ++v) {
    const Granule g = kVariants[v].granule;
    const std::string gn = kVariants[v].name;
    if (!cpu.supports(g, 1) || !cpu.supports(g, 2)) {
      EXPECT_NE(q.out.find("run " + gn + " not supported"), std::string::npos);
      continue;
    }
    std::vector<std::string> got;
    for (const std::string& l : lines)
      if (starts_with(l, "check " + gn + " ") || starts_with(l, "invariants " + gn + ":")) got.push_back(l);
    std::vector<std::string> problems;
    const std::vector<std::string> want = sim_lines(v, cpu, &problems);
    for (const std::string& p : problems) ADD_FAILURE() << gn << ": simulator: " << p;
    for (size_t i = 0; i < want.size() || i < got.size(); ++i) {
      const std::string w = i < want.size() ? want[i] : "(nothing)";
      const std::string o = i < got.size() ? got[i] : "(nothing: the image stopped)";
      ++compared;
      if (w != o) {
        ++differ;
        ADD_FAILURE() << "QEMU and the reference MMU differ:\n  QEMU:          " << o
                      << "\n  reference MMU: " << w;
      }
    }
  }
  // The 52-bit runs: the same comparison, for each the CPU the image read can run.
  for (unsigned v = 0; v < kNumVariants52; ++v) {
    const std::string rn = kVariants52[v].name;
    if (!supports_run52(kVariants52[v], cpu)) {
      EXPECT_NE(q.out.find("run " + rn + " not supported"), std::string::npos);
      continue;
    }
    std::vector<std::string> got;
    for (const std::string& l : lines)
      if (starts_with(l, "check " + rn + " ")) got.push_back(l);
    std::vector<std::string> problems;
    const std::vector<std::string> want = sim_lines52(v, cpu, &problems);
    for (const std::string& p : problems) ADD_FAILURE() << rn << ": simulator: " << p;
    EXPECT_EQ(want.size(), kSteps52) << rn;
    for (size_t i = 0; i < want.size() || i < got.size(); ++i) {
      const std::string w = i < want.size() ? want[i] : "(nothing)";
      const std::string o = i < got.size() ? got[i] : "(nothing: the image stopped)";
      ++compared;
      if (w != o) {
        ++differ;
        ADD_FAILURE() << "QEMU and the reference MMU differ:\n  QEMU:          " << o
                      << "\n  reference MMU: " << w;
      }
    }
  }
  EXPECT_EQ(differ, 0u) << compared << " lines compared";
  // Range TLBIs on the 52-bit (FEAT_LPA2, DS = 1) tables: the image's `tlbi <run>:` lines count
  // what its platform issued. With FEAT_TLBIRANGE, each 52-bit run's unmap is a range TLBI,
  // for a DS = 1 regime with 4K and 16K (64K: FEAT_LPA, no DS), and the 4K granule run, whose
  // tables are 52-bit on this CPU, issues DS range TLBIs too.
  const auto tlbi_counts = [&](const std::string& run, unsigned long long& range, unsigned long long& ds) {
    for (const std::string& l : lines)
      if (starts_with(l, "tlbi " + run + ": "))
        return std::sscanf(l.c_str() + 7 + run.size(), "range %llu ds %llu", &range, &ds) == 2;
    return false;
  };
  if (cpu.tlbi_range) {
    for (unsigned v = 0; v < kNumVariants52; ++v) {
      if (!supports_run52(kVariants52[v], cpu)) continue;
      const std::string rn = kVariants52[v].name;
      unsigned long long range = 0, ds = 0;
      ASSERT_TRUE(tlbi_counts(rn, range, ds)) << rn << ": no tlbi line";
      EXPECT_GE(range, 1u) << rn;
      if (kVariants52[v].granule == Granule::k64K) EXPECT_EQ(ds, 0u) << rn;
      else EXPECT_EQ(ds, range) << rn;
      EXPECT_NE(q.out.find("unmapped " + rn + " ipa "), std::string::npos) << rn;
    }
    using MP4K = ownership::MemProtect<Granule::k4K, sim::SimPlatform>;
    if (MP4K::uses_52bit(run_cpu(cpu, kVariants[0]))) {
      unsigned long long range = 0, ds = 0;
      ASSERT_TRUE(tlbi_counts(kVariants[0].name, range, ds));
      EXPECT_GE(ds, 1u) << "the 4K run's DS = 1 tables";
      std::printf("el2: the 4K run (52-bit tables) issued %llu range TLBIs, %llu with DS = 1\n", range, ds);
    }
  }
  EXPECT_EQ(q.out.find("STILL MAPPED"), std::string::npos) << "a page unmapped by range TLBI still translates";
  EXPECT_EQ(summary.find(" 0 failed"), summary.size() - 9) << "summary: " << summary;
  EXPECT_EQ(q.status, 0) << "QEMU's exit status (semihosting SYS_EXIT): 0 when every check passed";
  std::printf("el2: %u lines compared between QEMU and the reference MMU, %u differ\n", compared, differ);
}

TEST(Qemu, SmpRunsAndInvariantsHold) {
  const char* image = std::getenv("PTGUARD_EL2_IMAGE");
  if (image == nullptr) GTEST_SKIP() << "PTGUARD_EL2_IMAGE not set (ctest el2_qemu sets it)";
  // About 12 s each on a busy 2-core machine (300 rounds per CPU; the guest cycles and
  // fixmap holds measured 3-4 s of SMP phase on an idle one): a lock hand-over under TCG
  // costs milliseconds, not nanoseconds. 45 s leaves room and keeps el2_qemu under its 120 s.
  for (const std::string mode : {"-smp 4", "-smp 4 -accel tcg,thread=multi"}) {
    SCOPED_TRACE(mode);
    const QemuRun q = run_qemu(image, mode, 45);
    ASSERT_NE(q.status, 124) << "QEMU hung: stopped by timeout after 45 s; output so far:\n" << q.out;
    std::vector<std::string> smp;
    std::istringstream in(q.out);
    for (std::string l; std::getline(in, l);)
      if (starts_with(l, "smp: ") || starts_with(l, "panic")) smp.push_back(l);
    std::string all;
    for (const std::string& l : smp) all += "\n  " + l;
    EXPECT_NE(q.out.find("smp: cpus 4 "), std::string::npos) << "not all four CPUs started:" << all;
    for (unsigned cpu = 0; cpu < 4; ++cpu) {
      const std::string tag = "smp: cpu " + std::to_string(cpu) + " ";
      unsigned long long ops = 0, ok = 0, other = ~0ull, guests = 0, fixmap = 0;
      bool found = false;
      const auto field = [](const std::string& l, const char* name, unsigned long long& v) {
        const size_t o = l.find(name);
        if (o != std::string::npos) v = std::strtoull(l.c_str() + o + std::strlen(name), nullptr, 10);
      };
      for (const std::string& l : smp) {
        if (!starts_with(l, tag)) continue;
        found = std::sscanf(l.c_str() + tag.size(), "ops %llu ok %llu", &ops, &ok) == 2;
        field(l, " other ", other);
        field(l, " guests ", guests);
        field(l, " fixmap ", fixmap);
      }
      EXPECT_TRUE(found) << "no counts from cpu " << cpu << ":" << all;
      EXPECT_GT(ops, 0u) << "cpu " << cpu << all;
      EXPECT_GT(ok, 0u) << "cpu " << cpu << " never succeeded:" << all;
      EXPECT_EQ(other, 0u) << "cpu " << cpu << " had unexpected errors:" << all;
      EXPECT_GT(guests, 0u) << "cpu " << cpu << " never reclaimed a guest of its own:" << all;
      EXPECT_GT(fixmap, 0u) << "cpu " << cpu << " never held the fixmap:" << all;
      // The guest all CPUs share: its shared-side calls and its exclusive ones on this CPU
      // (EAGAINs are printed, not required: whether two CPUs' swaps overlap is up to QEMU).
      const std::string gtag = "smp: guest cpu " + std::to_string(cpu) + " ";
      unsigned long long shared = 0, eagain = 0, refused = 0, exclusive = 0;
      bool gfound = false;
      for (const std::string& l : smp)
        if (starts_with(l, gtag))
          gfound = std::sscanf(l.c_str() + gtag.size(), "shared %llu eagain %llu refused %llu exclusive %llu", &shared,
                               &eagain, &refused, &exclusive) == 4;
      EXPECT_TRUE(gfound) << "no shared-guest counts from cpu " << cpu << ":" << all;
      EXPECT_GT(shared, 0u) << "cpu " << cpu << " made no shared-side call on the shared guest:" << all;
      EXPECT_GT(exclusive, 0u) << "cpu " << cpu << " made no exclusive-side call on the shared guest:" << all;
    }
    EXPECT_NE(q.out.find("smp: shared guest final check passed\n"), std::string::npos) << all;
    EXPECT_NE(q.out.find("smp: invariants hold\n"), std::string::npos) << all;
    EXPECT_NE(q.out.find("smp: passed in "), std::string::npos) << all;
    EXPECT_EQ(q.status, 0) << "QEMU's exit status (semihosting SYS_EXIT):" << all;
    for (const std::string& l : smp)
      if (starts_with(l, "smp: passed") || starts_with(l, "smp: guest cpu"))
        std::printf("el2 %s: %s\n", mode.c_str(), l.c_str());
  }
}

}  // namespace
}  // namespace ptguard::el2test
