// The engine with 52-bit addresses, checked against the reference MMU (sim/ref_mmu.hpp, which
// implements FEAT_LPA2 and FEAT_LPA independently of arch/) and a plain model.
//
// Stage 2 at a 52-bit IPA and PA: 4K (FEAT_LPA2, DS = 1, the level -1 root), 16K (DS = 1, a
// level-0 root at 52 bits and 16 concatenated level-1 tables at 51) and 64K (FEAT_LPA). Random
// map (with replace), unmap, wrprotect and relax_perms over pages and blocks at input addresses
// above 2^48 and across it, to output addresses above 2^50 (OA[51:50] in descriptor bits [9:8]
// with DS; OA[51:48] in bits [15:12] with 64K), across 2^50 and across 2^48. Table pages are
// allocated above 2^50 too, so every table descriptor and the VTTBR carry the moved bits.
// After every step the reference MMU, configured from the config's VTCR_EL2 with FEAT_LPA2 and
// a 52-bit PAMax, translates the operation's range and random addresses to exactly what the
// model says (output address, read/write/execute, Inner Shareable from SH0 with DS). The same
// for stage 1 at EL2 (map and unmap of disjoint ranges: stage 1 refuses to change live entries).
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <map>
#include <optional>
#include <string>

#include "ptguard/pgtable/table.hpp"
#include "ptguard/sim/ref_mmu.hpp"
#include "ptguard/sim/sim_platform.hpp"

namespace ptguard::test {
namespace {

using namespace ptguard::arch;
using namespace ptguard::pgtable;

// Table pages above 2^50 (bits 51:50 = 0b11, 51:48 = 0xc).
constexpr u64 kPoolBase = 0x000c'0000'0000'0000ull;
constexpr u64 kPoolSize = u64{256} << 20;

sim::ImplChoices lpa2_cpu() {
  sim::ImplChoices c;
  c.pa_bits = 52;
  c.lpa2 = true;
  return c;
}

u64 below(u64 n) { return n <= 1 ? 0 : *rc::gen::inRange<u64>(0, n); }

struct Page {
  u64 pa;
  u8 perm;
};

template <Granule G, typename Regime>
struct World {
  static constexpr u64 kPage = page_size(G);
  static constexpr u64 kBlock = level_size(G, 2);
  static constexpr bool kS2 = Regime::kStage == 2;
  using T = Table<Regime, G, sim::SimPlatform>;

  sim::PhysMem mem;
  std::optional<sim::SimPlatform> plat;
  Memcache mc;
  T t;
  unsigned ia_bits;
  u64 reg_tcr = 0, reg_ttbr = 0, mair = 0;
  std::map<u64, Page> model;  // page IA -> mapping
  // Input windows (each 8 blocks): just below the top of the IA space, across 2^48 (when the
  // space is wider) and low. Output windows: above 2^50, across 2^50, across 2^48.
  std::vector<u64> ia_win, oa_win;
  static constexpr u64 kWin = 8 * kBlock;

  explicit World(unsigned ia) : ia_bits(ia) {
    EXPECT_TRUE(mem.add_region(kPoolBase, kPoolSize));
    plat.emplace(mem, kPoolBase, kPoolSize, kPage);
    ia_win = {(u64{1} << ia) - kWin, 0};
    if (ia > 48) ia_win.push_back((u64{1} << 48) - kWin / 2);
    oa_win = {0x000a'0000'0000'0000ull, (u64{1} << 50) - kWin / 2, (u64{1} << 48) - kWin / 2};
    for (u64 w : oa_win) EXPECT_TRUE(mem.add_region(w, kWin));  // cache maintenance reaches them
    const CpuFeatures cpu = CpuFeatures::modern_52bit();
    if constexpr (kS2) {
      WalkOptions opt;
      opt.pa_52bit = true;  // implied above 48 bits; asked for below
      auto cfg = make_stage2_config(G, ia, cpu, opt);
      RC_ASSERT(cfg.has_value());
      RC_ASSERT(cfg->pa_bits == 52u);
      auto tt = T::create_stage2(*plat, *cfg, 7);
      RC_ASSERT(tt.has_value());
      t = std::move(*tt);
      reg_tcr = cfg->vtcr;
      reg_ttbr = make_vttbr(*cfg, t.root_pa(), 7);
    } else {
      WalkOptions opt;
      opt.pa_52bit = true;
      auto cfg = make_stage1_config(G, ia, cpu, opt);
      RC_ASSERT(cfg.has_value());
      auto tt = T::create_stage1(*plat, *cfg);
      RC_ASSERT(tt.has_value());
      t = std::move(*tt);
      reg_tcr = cfg->tcr;
      mair = cfg->mair;
      reg_ttbr = make_ttbr0_el2(*cfg, t.root_pa());
    }
  }
  ~World() {
    if (t.valid()) t.destroy();
    mc.drain(*plat);
  }

  sim::Translation translate(u64 ia, sim::Access a) const {
    if constexpr (kS2)
      return sim::translate_stage2(mem, sim::Stage2Regs{reg_tcr, reg_ttbr, t.fwb()}, ia, a, false, lpa2_cpu());
    else
      return sim::translate_stage1_el2(mem, sim::Stage1Regs{reg_tcr, mair, reg_ttbr}, ia, a, lpa2_cpu());
  }

  void check_page(u64 ia, const std::string& what) const {
    const u64 off = below(kPage / 8) * 8;
    const sim::Translation r = translate(ia + off, sim::Access::read);
    const auto it = model.find(ia);
    if (it == model.end()) {
      RC_ASSERT(!r.ok());
      if (r.fault != sim::FaultKind::translation) RC_FAIL(what + ": " + sim::to_string(r));
      return;
    }
    const Page& p = it->second;
    if (kS2 && (p.perm & kPermR) == 0) {
      if (r.fault != sim::FaultKind::permission) RC_FAIL(what + ": expected a permission fault, " + sim::to_string(r));
    } else {
      if (!r.ok()) RC_FAIL(what + ": " + sim::to_string(r));
      RC_ASSERT(r.output_address == p.pa + off);
      RC_ASSERT(r.sh == Shareability::inner);
    }
    RC_ASSERT(r.writable == ((p.perm & kPermW) != 0));
    const sim::Translation x = translate(ia, sim::Access::exec);
    RC_ASSERT(x.ok() == ((p.perm & kPermX) != 0));
  }

  void check_range(u64 ia, u64 size, const std::string& what) const {
    const u64 pages = size / kPage;
    const u64 step = pages > 64 ? pages / 64 : 1;
    for (u64 i = 0; i < pages; i += step) check_page(ia + i * kPage, what);
    check_page(ia + size - kPage, what);
    for (int i = 0; i < 16; ++i) {
      const u64 w = ia_win[below(ia_win.size())];
      check_page(w + below(kWin / kPage) * kPage, what + " (random)");
    }
  }

  void topup(u64 ia, u64 size) { RC_ASSERT(mc.topup(*plat, t.max_pages_needed(ia, size)).has_value()); }

  // A range in an input window: a few pages or whole blocks, and an output address with the
  // same offset within a block (so blocks can be used).
  void pick(u64* ia, u64* size, u64* pa) const {
    const u64 w = ia_win[below(ia_win.size())];
    const bool blocks = below(3) == 0;
    if (blocks) {
      *size = (1 + below(2)) * kBlock;
      *ia = w + below(kWin / kBlock - 2) * kBlock;
    } else {
      *size = (1 + below(8)) * kPage;
      *ia = w + below((kWin - *size) / kPage) * kPage;
    }
    const u64 ow = oa_win[below(oa_win.size())];
    *pa = ow + below(kWin / kBlock - 2) * kBlock + (*ia & (kBlock - 1));
  }

  static u8 random_perm() {
    if constexpr (kS2) {
      const u8 choices[] = {kPermR, kPermRW, static_cast<u8>(kPermR | kPermX), kPermW};
      return choices[below(4)];
    } else {
      const u8 choices[] = {kPermR, kPermRW, static_cast<u8>(kPermR | kPermX)};
      return choices[below(3)];
    }
  }

  void step_stage2() {
    u64 ia, size, pa;
    pick(&ia, &size, &pa);
    const unsigned kind = static_cast<unsigned>(below(5));
    topup(ia, size);
    std::string what;
    if (kind == 0 || kind == 3) {
      const u8 perm = random_perm();
      MapOptions o;
      o.replace = true;
      const Status st = t.map(ia, size, pa, Prot{static_cast<Perm>(perm), MemType::normal_wb}, mc, o);
      RC_ASSERT(st.has_value());
      for (u64 i = 0; i < size; i += kPage) model[ia + i] = Page{pa + i, perm};
      what = "map";
    } else if (kind == 1) {
      RC_ASSERT(t.unmap(ia, size, mc).has_value());
      for (u64 i = 0; i < size; i += kPage) model.erase(ia + i);
      what = "unmap";
    } else if (kind == 4) {
      // An annotation (invalid entry naming an owner) where the IPA is above 2^48: the same
      // layout as with 48 bits, read back through lookup().
      const OwnerId owner = static_cast<OwnerId>(1 + below(1000));
      RC_ASSERT(t.set_owner(ia, size, owner, 0, mc).has_value());
      for (u64 i = 0; i < size; i += kPage) model.erase(ia + i);
      const auto l = t.lookup(ia + size - kPage);
      RC_ASSERT(l.has_value());
      RC_ASSERT(InvalidDesc(l->entry).owner() == owner);
      what = "set_owner";
    } else {
      RC_ASSERT(t.wrprotect(ia, size, mc).has_value());
      for (u64 i = 0; i < size; i += kPage)
        if (auto it = model.find(ia + i); it != model.end()) it->second.perm &= static_cast<u8>(~kPermW);
      what = "wrprotect";
    }
    check_range(ia, size, what);
  }

  void step_stage1() {
    u64 ia, size, pa;
    pick(&ia, &size, &pa);
    bool any = false;
    for (u64 i = 0; i < size; i += kPage) any = any || model.count(ia + i) != 0;
    topup(ia, size);
    if (!any) {
      const u8 perm = random_perm();
      RC_ASSERT(t.map(ia, size, pa, Prot{static_cast<Perm>(perm), MemType::normal_wb}, mc).has_value());
      for (u64 i = 0; i < size; i += kPage) model[ia + i] = Page{pa + i, perm};
      check_range(ia, size, "map");
    } else {
      // Unmap a whole earlier mapping that overlaps (stage 1 refuses to split a live block):
      // every page from the first model page at or after ia, as pages.
      const u64 first = model.lower_bound(ia)->first;
      const Status st = t.unmap(first, kPage, mc);
      if (st) {
        model.erase(first);
        check_range(first, kPage, "unmap");
      } else {
        RC_ASSERT(st.error() == Error::einval);  // part of a block
      }
    }
  }

  void run() {
    const int steps = 10 + static_cast<int>(below(30));
    for (int i = 0; i < steps; ++i) {
      if constexpr (kS2) step_stage2(); else step_stage1();
    }
    // The whole model, page by page.
    for (const auto& [ia, p] : model) {
      (void)p;
      check_page(ia, "final");
    }
    // Every table page lies above 2^50: the walk crossed descriptors with moved bits.
    RC_ASSERT(t.root_pa() >= kPoolBase);
    RC_ASSERT(plat->violations().empty());
  }
};

template <Granule G>
void stage2_property(unsigned ia) {
  World<G, Stage2> w(ia);
  w.run();
}

RC_GTEST_PROP(PgtableLpa2, Stage2Granule4KLevelMinusOne, ()) {
  const unsigned ia = *rc::gen::element(49u, 50u, 52u);
  stage2_property<Granule::k4K>(ia);
}
RC_GTEST_PROP(PgtableLpa2, Stage2Granule16K, ()) {
  const unsigned ia = *rc::gen::element(49u, 51u, 52u);
  stage2_property<Granule::k16K>(ia);
}
RC_GTEST_PROP(PgtableLpa2, Stage2Granule64KLpa, ()) {
  const unsigned ia = *rc::gen::element(49u, 52u);
  stage2_property<Granule::k64K>(ia);
}
// A 48-bit-or-less IPA with 52-bit output addresses (WalkOptions::pa_52bit): the usual start
// levels, the 52-bit descriptor format.
RC_GTEST_PROP(PgtableLpa2, Stage2Pa52WithA40BitIpa, ()) {
  const Granule g = *rc::gen::element(Granule::k4K, Granule::k16K, Granule::k64K);
  if (g == Granule::k4K) stage2_property<Granule::k4K>(40);
  if (g == Granule::k16K) stage2_property<Granule::k16K>(40);
  if (g == Granule::k64K) stage2_property<Granule::k64K>(40);
}
RC_GTEST_PROP(PgtableLpa2, Stage1El2Granule4K, ()) {
  World<Granule::k4K, Stage1El2> w(52);
  w.run();
}
RC_GTEST_PROP(PgtableLpa2, Stage1El2Granule16K, ()) {
  World<Granule::k16K, Stage1El2> w(52);
  w.run();
}
RC_GTEST_PROP(PgtableLpa2, Stage1El2Granule64KLpa, ()) {
  World<Granule::k64K, Stage1El2> w(48);
  w.run();
}

// Hand-checked encodings of what the engine writes.
TEST(PgtableLpa2, FourKLeafAndTablesCarryTheTopBitsAndNoSh) {
  sim::PhysMem mem;
  ASSERT_TRUE(mem.add_region(kPoolBase, kPoolSize));
  sim::SimPlatform plat(mem, kPoolBase, kPoolSize, 4096);
  const auto cfg = make_stage2_config(Granule::k4K, 52, CpuFeatures::modern_52bit());
  ASSERT_TRUE(cfg);
  auto t = Stage2Table<Granule::k4K, sim::SimPlatform>::create_stage2(plat, *cfg, 1);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->start_level(), -1);
  Memcache mc;
  ASSERT_TRUE(mc.topup(plat, 8));
  constexpr u64 kIpa = 0x000f'ffff'ffff'f000ull, kPa = 0x000b'1234'5678'9000ull;
  ASSERT_TRUE(t->map(kIpa, 4096, kPa, Prot{kPermRW, MemType::normal_wb}, mc));
  const auto leaf = t->lookup(kIpa);
  ASSERT_TRUE(leaf);
  EXPECT_EQ(leaf->level, 3);
  // OA[49:12] in place, OA[51:50] = 0b10 in bits [9:8]; no SH (it would read Outer Shareable).
  EXPECT_EQ(leaf->entry & (bit_range(49, 12) | bit_range(9, 8)), 0x0003'1234'5678'9200ull);
  EXPECT_EQ(S2Leaf(leaf->entry).output_address(Granule::k4K, 3, kOa52Ds), kPa);
  EXPECT_EQ(t->output_address(*leaf), kPa);
  EXPECT_NE(leaf->entry & leaf_address_mask(Granule::k4K, 3), kPa) << "the 48-bit mask loses OA[51:50]";
  EXPECT_TRUE(t->tlbi_range()) << "range TLBIs with DS = 1 too (64 KiB aligned pieces)";
  EXPECT_TRUE(t->oa_format().ds());
  // The root's entry 15 (IPA[51:48]) points at a table above 2^50: bits [9:8] = 0b11.
  const u64 root_e = plat.phys_to_virt(t->root_pa())[15];
  EXPECT_EQ(root_e & 0b11, 0b11u);
  EXPECT_EQ((root_e >> 8) & 0b11, 0b11u);
  EXPECT_EQ(make_vttbr(*cfg, t->root_pa(), 1) & 0b111100, 0xcu << 2);
  t->destroy();
  mc.drain(plat);
}

// A whole table of blocks built at once (fill_leaves) whose output addresses cross the first
// moved address bit: 2^50 with DS (4K: a GiB of 2 MiB blocks), 2^48 with FEAT_LPA (64K: 4 TiB of
// 512 MiB blocks). A leaf made by adding to its neighbour would carry into descriptor bit 50
// (GP at stage 1, ignored at stage 2) or 48 (RES0) instead of the moved field.
template <Granule G>
void run_across(u64 span, u64 pa_cross) {
  sim::PhysMem mem;
  ASSERT_TRUE(mem.add_region(kPoolBase, kPoolSize));
  sim::SimPlatform plat(mem, kPoolBase, kPoolSize, page_size(G));
  const auto cfg = make_stage2_config(G, 52, CpuFeatures::modern_52bit());
  ASSERT_TRUE(cfg);
  auto t = Stage2Table<G, sim::SimPlatform>::create_stage2(plat, *cfg, 1);
  ASSERT_TRUE(t);
  Memcache mc;
  const u64 ia = u64{0xe} << 48;  // aligned to `span`
  const u64 pa = pa_cross - span / 2;
  const Prot rw{kPermRW, MemType::normal_wb};
  const auto need = t->pages_needed_for_map(ia, span, pa, rw);
  ASSERT_TRUE(need);
  ASSERT_TRUE(mc.topup(plat, *need));
  ASSERT_TRUE(t->map(ia, span, pa, rw, mc));
  const sim::Stage2Regs regs{cfg->vtcr, make_vttbr(*cfg, t->root_pa(), 1), t->fwb()};
  const u64 block = level_size(G, 2);
  for (u64 off = 0; off < span; off += span / 64) {
    for (u64 o : {off, span / 2 - block, span / 2, span - block}) {
      const sim::Translation r = sim::translate_stage2(mem, regs, ia + o + 0x40, sim::Access::write, false, lpa2_cpu());
      ASSERT_TRUE(r.ok()) << sim::to_string(r);
      EXPECT_EQ(r.output_address, pa + o + 0x40);
      EXPECT_EQ(r.level, 2);
    }
  }
  t->destroy();
  mc.drain(plat);
}

TEST(PgtableLpa2, RunOfBlocksAcrossTheMovedBits) {
  run_across<Granule::k4K>(u64{1} << 30, u64{1} << 50);
  run_across<Granule::k64K>(u64{1} << 42, u64{1} << 48);
}

}  // namespace
}  // namespace ptguard::test
