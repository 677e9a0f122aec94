// A simulated machine for engine tests: table pool, data memory, a SimPlatform, and helpers to
// ask the reference MMU about a table and to snapshot every table page it reaches.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <vector>

#include "ptguard/pgtable/table.hpp"
#include "ptguard/sim/ref_mmu.hpp"
#include "ptguard/sim/sim_platform.hpp"

namespace ptguard::test {

using namespace ptguard::arch;
using namespace ptguard::pgtable;

inline constexpr u64 kPoolBase = 0x4000'0000;
inline constexpr u64 kPoolSize = u64{512} << 20;
inline constexpr u64 kDataBase = u64{1} << 32;  // output addresses used by the tests
inline constexpr u64 kDataSize = u64{16} << 30;

template <Granule G>
struct Env {
  static constexpr u64 kPage = page_size(G);
  static constexpr u64 kL2 = level_size(G, 2);  // the block size every granule has

  sim::PhysMem mem;
  std::optional<sim::SimPlatform> plat;
  Memcache mc;

  Env() {
    EXPECT_TRUE(mem.add_region(kPoolBase, kPoolSize));
    EXPECT_TRUE(mem.add_region(kDataBase, kDataSize));  // cache maintenance reaches it
    plat.emplace(mem, kPoolBase, kPoolSize, kPage);
  }
  ~Env() { mc.drain(*plat); }

  using S2 = Stage2Table<G, sim::SimPlatform>;
  using S1 = Stage1Table<G, sim::SimPlatform>;

  S2 stage2(unsigned ia = 40, CpuFeatures cpu = CpuFeatures::modern(), TableOptions opt = {}, u16 vmid = 1) {
    auto cfg = make_stage2_config(G, ia, cpu);
    EXPECT_TRUE(cfg.has_value());
    auto t = S2::create_stage2(*plat, *cfg, vmid, opt);
    EXPECT_TRUE(t.has_value());
    s2cfg = *cfg;
    return std::move(*t);
  }
  S1 stage1(unsigned va = 48, TableOptions opt = {}) {
    auto cfg = make_stage1_config(G, va, CpuFeatures::modern());
    EXPECT_TRUE(cfg.has_value());
    auto t = S1::create_stage1(*plat, *cfg, opt);
    EXPECT_TRUE(t.has_value());
    s1cfg = *cfg;
    return std::move(*t);
  }

  void fill(u32 pages = 64) { ASSERT_TRUE(mc.topup(*plat, pages)); }

  sim::Translation at(const S2& t, u64 ipa, sim::Access a = sim::Access::read) const {
    return sim::translate_stage2(mem, sim::Stage2Regs{s2cfg->vtcr, make_vttbr(t.root_pa(), t.vmid()), t.fwb()}, ipa, a);
  }
  sim::Translation at(const S1& t, u64 va, sim::Access a = sim::Access::read) const {
    return sim::translate_stage1_el2(mem, sim::Stage1Regs{s1cfg->tcr, s1cfg->mair, make_ttbr0_el2(t.root_pa())}, va, a);
  }

  /// Every table page reachable from the root, with its contents (read from simulated memory
  /// directly, not through the engine).
  template <typename T>
  std::map<u64, std::vector<u64>> snapshot(const T& t) const {
    std::map<u64, std::vector<u64>> out;
    const u64 n = entries_per_table(G);
    for (unsigned p = 0; p < t.root_pages(); ++p) read_table(t.root_pa() + p * kPage, t.start_level(), out);
    (void)n;
    return out;
  }

  std::optional<Stage2Config> s2cfg;
  std::optional<Stage1Config> s1cfg;

 private:
  void read_table(u64 pa, int level, std::map<u64, std::vector<u64>>& out) const {
    std::vector<u64> v(entries_per_table(G));
    EXPECT_TRUE(mem.read(pa, v.data(), kPage));
    out[pa] = v;
    if (level == kLastLevel) return;
    for (u64 e : v)
      if ((e & 3) == 3) read_table(e & bit_range(47, page_shift(G)), level + 1, out);
  }
};

/// Number of descriptor writes in a view of the event log.
inline size_t writes(const sim::EventView& v) { return v.count(sim::EventKind::write); }

}  // namespace ptguard::test
