// The engine's TLB invalidation by range (FEAT_TLBIRANGE) and its level hints: which TLBIs an
// operation issues with and without the feature, and that they leave no stale translation in
// the TLB model (sim/tlb_model.hpp) filled before the operation.
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <vector>

#include "env.hpp"
#include "ptguard/sim/tlb_model.hpp"

using namespace ptguard;
using namespace ptguard::test;

namespace {

constexpr Granule G = Granule::k4K;
constexpr u64 kPage = page_size(G);
constexpr u64 k2M = level_size(G, 2);
constexpr u64 kBase = u64{1} << 30;  // IPA of the mapped GiB's first page
const Prot kRw{kPermRW, MemType::normal_wb, 0};

CpuFeatures cpu(bool range) {
  CpuFeatures f = CpuFeatures::modern();
  f.tlbi_range = range;
  return f;
}

std::vector<sim::Event> tlbis(const sim::EventView& v) { return v.filter(sim::EventKind::tlbi); }

struct Fixture {
  Env<G> env;
  Env<G>::S2 t;
  explicit Fixture(bool range, u64 size = 8 * k2M) : t(env.stage2(40, cpu(range))) {
    env.fill(256);
    EXPECT_TRUE(t.map(kBase, size, kDataBase, kRw, env.mc, {}));
    EXPECT_TRUE(t.split(kBase, size, env.mc, true));  // every page a last-level entry
  }
  sim::Stage2Regs regs() const { return sim::Stage2Regs{env.s2cfg->vtcr, make_vttbr(t.root_pa(), t.vmid()), t.fwb()}; }
  // A TLB holding the translation (and walk) of every page in [a, a + n).
  sim::TlbModel tlb(u64 a, u64 n) const {
    sim::TlbModel m;
    for (u64 x = a; x < a + n; x += kPage) m.fill(2, t.vmid(), G, env.at(t, x));
    return m;
  }
};

TEST(RangeTlbi, UnmapOfAPageRunIsRangesWithTheLevelHint) {
  Fixture f(true);
  // 300 pages starting mid-table: they straddle two last-level tables, neither emptied. 300 =
  // 4 * 64 + 22 * 2: SCALE 1 NUM 3, then SCALE 0 NUM 21, exactly the range (nothing outside
  // the operation's range is invalidated).
  const u64 a = kBase + 400 * kPage, n = 300 * kPage;
  sim::TlbModel tlb = f.tlb(kBase, 8 * k2M);
  const auto m = f.env.plat->log().mark();
  ASSERT_TRUE(f.t.unmap(a, n));
  const auto ev = f.env.plat->log().since(m);
  const std::vector<sim::Event> ti = tlbis(ev);
  ASSERT_EQ(ti.size(), 3u) << ev.format();
  EXPECT_EQ(ti[0].tlbi_op, Tlbi::ripas2e1is);
  EXPECT_EQ(ti[0].addr, a);
  EXPECT_EQ(ti[0].tlbi_scale, 1);
  EXPECT_EQ(ti[0].tlbi_num, 3);
  EXPECT_EQ(ti[0].size, 256 * kPage);
  EXPECT_EQ(ti[1].tlbi_op, Tlbi::ripas2e1is);
  EXPECT_EQ(ti[1].addr, a + 256 * kPage);
  EXPECT_EQ(ti[1].tlbi_scale, 0);
  EXPECT_EQ(ti[1].tlbi_num, 21);
  for (int i = 0; i < 2; ++i) EXPECT_EQ(ti[i].level, 3);  // every entry a page: TTL level 3
  EXPECT_EQ(ti[2].tlbi_op, Tlbi::vmalle1is);
  tlb.apply(ev);
  EXPECT_TRUE(tlb.stale(f.env.mem, f.regs(), f.t.vmid()).empty());
}

TEST(RangeTlbi, ARunInsideALargerOperationIsWidenedToOnePiece) {
  Fixture f(true);
  // Only pages 0, 200..699 and 1023 of the first 4 MiB still mapped; unmapping pages 1..1022
  // finds one run of 500 pages across two tables (neither emptied), widened forwards inside
  // the operation's range to 512: one piece (SCALE 1, NUM 7) instead of 448 + 52 pages (two).
  ASSERT_TRUE(f.t.unmap(kBase + kPage, 199 * kPage));
  ASSERT_TRUE(f.t.unmap(kBase + 700 * kPage, 323 * kPage));
  sim::TlbModel tlb = f.tlb(kBase, 8 * k2M);
  const auto m = f.env.plat->log().mark();
  ASSERT_TRUE(f.t.unmap(kBase + kPage, 1022 * kPage));
  const auto ev = f.env.plat->log().since(m);
  const std::vector<sim::Event> ti = tlbis(ev);
  ASSERT_EQ(ti.size(), 2u) << ev.format();
  EXPECT_EQ(ti[0].tlbi_op, Tlbi::ripas2e1is);
  EXPECT_EQ(ti[0].level, 3);
  EXPECT_EQ(ti[0].tlbi_scale, 1);
  EXPECT_EQ(ti[0].tlbi_num, 7);
  EXPECT_EQ(ti[0].addr, kBase + 200 * kPage);
  EXPECT_EQ(ti[1].tlbi_op, Tlbi::vmalle1is);
  tlb.apply(ev);
  EXPECT_TRUE(tlb.stale(f.env.mem, f.regs(), f.t.vmid()).empty());
}

TEST(RangeTlbi, AnEmptiedTableSwallowsTheRunsFoundInIt) {
  Fixture f(true);
  // Pages 0..19 and 100..399 already gone; unmapping pages 1..519 (the first table's entry is
  // not wholly in the range, so its leaves are visited) empties the first table: its span (no
  // level hint) replaces the runs found in it; pages 512..519 are their own run.
  ASSERT_TRUE(f.t.unmap(kBase, 20 * kPage));
  ASSERT_TRUE(f.t.unmap(kBase + 100 * kPage, 300 * kPage));
  sim::TlbModel tlb = f.tlb(kBase, 8 * k2M);
  const auto m = f.env.plat->log().mark();
  ASSERT_TRUE(f.t.unmap(kBase + kPage, 519 * kPage));
  const auto ev = f.env.plat->log().since(m);
  const std::vector<sim::Event> ti = tlbis(ev);
  ASSERT_EQ(ti.size(), 3u) << ev.format();
  EXPECT_EQ(ti[0].tlbi_op, Tlbi::ripas2e1is);
  EXPECT_EQ(ti[0].addr, kBase);
  EXPECT_EQ(ti[0].size, k2M);
  EXPECT_EQ(ti[0].level, kTlbiLevelUnknown);
  EXPECT_EQ(ti[1].tlbi_op, Tlbi::ripas2e1is);
  EXPECT_EQ(ti[1].addr, kBase + k2M);
  EXPECT_EQ(ti[1].size, 8 * kPage);
  EXPECT_EQ(ti[1].level, 3);
  EXPECT_EQ(ti[2].tlbi_op, Tlbi::vmalle1is);
  tlb.apply(ev);
  EXPECT_TRUE(tlb.stale(f.env.mem, f.regs(), f.t.vmid()).empty());
}

TEST(RangeTlbi, ATableEntryWhollyInTheRangeIsZappedByItsSpan) {
  Fixture f(true);
  sim::TlbModel tlb = f.tlb(kBase, 8 * k2M);
  const auto m = f.env.plat->log().mark();
  ASSERT_TRUE(f.t.unmap(kBase, 520 * kPage));
  const auto ev = f.env.plat->log().since(m);
  const std::vector<sim::Event> ti = tlbis(ev);
  ASSERT_EQ(ti.size(), 4u) << ev.format();
  // Break-before-make of the table entry at once: its span, no hint; then the pages after it.
  EXPECT_EQ(ti[0].tlbi_op, Tlbi::ripas2e1is);
  EXPECT_EQ(ti[0].size, k2M);
  EXPECT_EQ(ti[0].level, kTlbiLevelUnknown);
  EXPECT_EQ(ti[1].tlbi_op, Tlbi::vmalle1is);
  EXPECT_EQ(ti[2].tlbi_op, Tlbi::ripas2e1is);
  EXPECT_EQ(ti[2].level, 3);
  EXPECT_EQ(ti[3].tlbi_op, Tlbi::vmalle1is);
  tlb.apply(ev);
  EXPECT_TRUE(tlb.stale(f.env.mem, f.regs(), f.t.vmid()).empty());
}

TEST(RangeTlbi, WithoutTheFeatureFewPagesGoByAddressWithTheirLevel) {
  Fixture f(false);
  const auto m = f.env.plat->log().mark();
  ASSERT_TRUE(f.t.unmap(kBase + 5 * kPage, 3 * kPage));
  const std::vector<sim::Event> ti = tlbis(f.env.plat->log().since(m));
  ASSERT_EQ(ti.size(), 4u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(ti[i].tlbi_op, Tlbi::ipas2e1is);
    EXPECT_EQ(ti[i].addr, kBase + (5 + i) * kPage);
    EXPECT_EQ(ti[i].level, 3);
  }
  EXPECT_EQ(ti[3].tlbi_op, Tlbi::vmalle1is);
}

TEST(RangeTlbi, WithoutTheFeatureManyPagesFlushTheVmid) {
  Fixture f(false);
  const auto m = f.env.plat->log().mark();
  ASSERT_TRUE(f.t.unmap(kBase + 400 * kPage, 300 * kPage));
  const std::vector<sim::Event> ti = tlbis(f.env.plat->log().since(m));
  ASSERT_EQ(ti.size(), 1u);
  EXPECT_EQ(ti[0].tlbi_op, Tlbi::vmalls12e1is);
}

TEST(RangeTlbi, AFreedTableIsItsWholeSpanWithoutHint) {
  Fixture f(true);
  // Empty the second 2 MiB table piecewise: the last unmap frees it.
  ASSERT_TRUE(f.t.unmap(kBase + k2M, k2M / 2));
  sim::TlbModel tlb = f.tlb(kBase, 8 * k2M);
  const auto m = f.env.plat->log().mark();
  ASSERT_TRUE(f.t.unmap(kBase + k2M + k2M / 2, k2M / 2 + 4 * kPage));
  const auto ev = f.env.plat->log().since(m);
  const std::vector<sim::Event> ti = tlbis(ev);
  bool span = false;
  for (const sim::Event& e : ti)
    if (e.tlbi_op == Tlbi::ripas2e1is && e.addr == kBase + k2M && e.size == k2M && e.level == kTlbiLevelUnknown)
      span = true;
  EXPECT_TRUE(span) << ev.format();
  EXPECT_EQ(ti.back().tlbi_op, Tlbi::vmalle1is);
  // The table page is freed only after the invalidation completed.
  const auto free_at = ev.find([](const sim::Event& e) { return e.kind == sim::EventKind::free; });
  const auto tlbi_at = ev.find([](const sim::Event& e) { return e.kind == sim::EventKind::tlbi; });
  ASSERT_TRUE(free_at && tlbi_at);
  EXPECT_LT(*tlbi_at, *free_at);
  tlb.apply(ev);
  EXPECT_TRUE(tlb.stale(f.env.mem, f.regs(), f.t.vmid()).empty());
}

TEST(RangeTlbi, ReplacingATableByABlockInvalidatesItsSpanByRange) {
  Fixture f(true);
  const auto m = f.env.plat->log().mark();
  ASSERT_TRUE(f.t.map(kBase, k2M, kDataBase + (u64{1} << 30), kRw, f.env.mc, MapOptions{true}));
  const std::vector<sim::Event> ti = tlbis(f.env.plat->log().since(m));
  ASSERT_GE(ti.size(), 2u);
  EXPECT_EQ(ti[0].tlbi_op, Tlbi::ripas2e1is);
  EXPECT_EQ(ti[0].addr, kBase);
  EXPECT_EQ(ti[0].size, k2M);
  EXPECT_EQ(ti[0].level, kTlbiLevelUnknown);
  EXPECT_EQ(ti[1].tlbi_op, Tlbi::vmalle1is);
}

TEST(RangeTlbi, DroppingTheRangeTlbisLeavesStaleTranslations) {
  Fixture f(true);
  sim::TlbModel tlb = f.tlb(kBase, 8 * k2M);
  const auto m = f.env.plat->log().mark();
  ASSERT_TRUE(f.t.unmap(kBase + 100 * kPage, 700 * kPage));
  const auto ev = f.env.plat->log().since(m);
  for (const sim::Event& e : ev)
    if (e.kind != sim::EventKind::tlbi || e.tlbi_op != Tlbi::ripas2e1is) tlb.apply(e);
  EXPECT_FALSE(tlb.stale(f.env.mem, f.regs(), f.t.vmid()).empty());
}

TEST(RangeTlbi, AWrongLevelHintLeavesStaleTranslations) {
  Fixture f(true);
  sim::TlbModel tlb = f.tlb(kBase, 8 * k2M);
  const auto m = f.env.plat->log().mark();
  ASSERT_TRUE(f.t.unmap(kBase + 100 * kPage, 7 * kPage));
  for (sim::Event e : f.env.plat->log().since(m)) {
    if (e.kind == sim::EventKind::tlbi && e.level == 3) e.level = 2;
    tlb.apply(e);
  }
  EXPECT_FALSE(tlb.stale(f.env.mem, f.regs(), f.t.vmid()).empty());
}

TEST(RangeTlbi, Stage1RunsAreLastLevelRangesAndTablesAnyLevel) {
  Env<G> env;
  auto t = env.stage1();
  env.fill(64);
  const u64 va = u64{1} << 30;
  ASSERT_TRUE(t.map(va, 64 * kPage, kDataBase + kPage, kRw, env.mc));  // pages in one table
  ASSERT_TRUE(t.map(va + 2 * k2M, kPage, kDataBase, kRw, env.mc));  // keeps the tables above alive
  sim::TlbModel tlb;
  const sim::Stage1Regs regs{env.s1cfg->tcr, env.s1cfg->mair, make_ttbr0_el2(t.root_pa())};
  for (u64 x = va; x < va + 64 * kPage; x += kPage) tlb.fill(1, 0, G, env.at(t, x));
  auto m = env.plat->log().mark();
  ASSERT_TRUE(t.unmap(va + 3 * kPage, 40 * kPage));
  auto ti = tlbis(env.plat->log().since(m));
  ASSERT_EQ(ti.size(), 1u) << env.plat->log().since(m).format();
  EXPECT_EQ(ti[0].tlbi_op, Tlbi::rvale2is);
  EXPECT_EQ(ti[0].level, 3);
  tlb.apply(env.plat->log().since(m));
  EXPECT_TRUE(tlb.stale(env.mem, regs).empty());
  m = env.plat->log().mark();
  ASSERT_TRUE(t.unmap(va, 64 * kPage));  // the rest: the table goes
  const auto ev = env.plat->log().since(m);
  ti = tlbis(ev);
  bool span = false;
  for (const sim::Event& e : ti) span |= e.tlbi_op == Tlbi::rvae2is && e.level == kTlbiLevelUnknown && e.size == k2M;
  EXPECT_TRUE(span) << ev.format();
  tlb.apply(ev);
  EXPECT_TRUE(tlb.stale(env.mem, regs).empty());
}

// Random unmaps, annotations and write-protections of a page-mapped range, with and without
// the feature: after each, applying the operation's TLBIs to a TLB filled with every page
// leaves nothing stale, and the number of TLBI instructions by address stays bounded.
RC_GTEST_PROP(RangeTlbi, NoStaleTranslationAfterAnyOperation, ()) {
  const bool range = *rc::gen::arbitrary<bool>();
  Fixture f(range);
  const u64 span = 8 * k2M / kPage;
  const int ops = *rc::gen::inRange(1, 6);
  for (int i = 0; i < ops; ++i) {
    const u64 first = *rc::gen::inRange<u64>(0, span);
    const u64 n = *rc::gen::inRange<u64>(1, span - first + 1);
    const int kind = *rc::gen::inRange(0, 3);
    sim::TlbModel tlb = f.tlb(kBase, 8 * k2M);
    const auto m = f.env.plat->log().mark();
    const u64 a = kBase + first * kPage;
    if (kind == 0) RC_ASSERT(f.t.unmap(a, n * kPage, f.env.mc).has_value());
    if (kind == 1) RC_ASSERT(f.t.set_owner(a, n * kPage, 3, 0, f.env.mc).has_value());
    if (kind == 2) RC_ASSERT(f.t.wrprotect(a, n * kPage, f.env.mc).has_value());
    const auto ev = f.env.plat->log().since(m);
    tlb.apply(ev);
    const auto stale = tlb.stale(f.env.mem, f.regs(), f.t.vmid());
    RC_ASSERT(stale.empty());
    std::size_t by_addr = 0;
    for (const sim::Event& e : tlbis(ev)) {
      if (!range) RC_ASSERT(!arch::is_range(e.tlbi_op));
      if (e.tlbi_op == Tlbi::ipas2e1is || e.tlbi_op == Tlbi::ripas2e1is) ++by_addr;
    }
    RC_ASSERT(by_addr <= 16u + 16u);  // a batch, and a mid-operation flush at most
    RC_ASSERT(f.env.plat->violations().empty());
    f.env.fill(256);
  }
}

// unmap() of one page whose table keeps other entries takes a shorter path than the walk
// (Table::unmap_page_in_place): it must issue what the walk would, one TLBI by IPA with the
// last level as TTL and the stage-1 flush, clean the page without FWB after the TLBI, leave
// nothing stale, drop the table's count by one; an annotation needs no TLBI; and the last
// entry of a table still frees the table (the general path).
TEST(RangeTlbi, OnePageUnmapIsOneTlbiByIpaAndKeepsTheCounts) {
  for (const bool fwb : {true, false}) {
    Env<G> env;
    CpuFeatures f = cpu(true);
    f.fwb = fwb;
    auto t = env.stage2(40, f);
    env.fill(64);
    ASSERT_TRUE(t.map(kBase, 4 * kPage, kDataBase, kRw, env.mc, {}));
    ASSERT_TRUE(t.set_owner(kBase + 8 * kPage, kPage, 3, 0, env.mc));
    const u64 table = env.snapshot(t).size();
    const Result<Leaf> leaf = t.lookup(kBase);
    ASSERT_TRUE(leaf.has_value());
    ASSERT_EQ(leaf->level, 3);
    sim::TlbModel tlb;
    for (u64 x = kBase; x < kBase + 4 * kPage; x += kPage) tlb.fill(2, t.vmid(), G, env.at(t, x));
    // The count of the last-level table: the page itself plus 5 entries.
    u64 table_pa = 0;  // the last-level table: the one whose entry for kBase is the leaf
    for (const auto& [pa, entries] : env.snapshot(t))
      if (entries[level_index(G, 3, kBase)] == leaf->entry) table_pa = pa;
    ASSERT_NE(table_pa, 0u);
    ASSERT_EQ(env.plat->page_count(table_pa), 6u);

    auto m = env.plat->log().mark();
    ASSERT_TRUE(t.unmap(kBase + kPage, kPage));
    const auto ev = env.plat->log().since(m);
    const std::vector<sim::Event> ti = tlbis(ev);
    ASSERT_EQ(ti.size(), 2u) << ev.format();
    EXPECT_EQ(ti[0].tlbi_op, Tlbi::ipas2e1is);
    EXPECT_EQ(ti[0].addr, kBase + kPage);
    EXPECT_EQ(ti[0].level, 3);
    EXPECT_EQ(ti[1].tlbi_op, Tlbi::vmalle1is);
    EXPECT_EQ(ev.count(CacheOp::dc_civac), fwb ? 0u : 1u);
    EXPECT_EQ(env.plat->page_count(table_pa), 5u);
    EXPECT_EQ(env.at(t, kBase + kPage).fault, sim::FaultKind::translation);
    EXPECT_EQ(env.at(t, kBase).output_address, kDataBase);
    sim::Stage2Regs regs{env.s2cfg->vtcr, make_vttbr(t.root_pa(), t.vmid()), t.fwb()};
    tlb.apply(ev);
    EXPECT_TRUE(tlb.stale(env.mem, regs, t.vmid()).empty());

    m = env.plat->log().mark();
    ASSERT_TRUE(t.unmap(kBase + 8 * kPage, kPage));  // the annotation: nothing cached
    EXPECT_EQ(env.plat->log().since(m).count(sim::EventKind::tlbi), 0u);
    EXPECT_EQ(env.plat->page_count(table_pa), 4u);
    ASSERT_TRUE(t.unmap(kBase + 9 * kPage, kPage));  // already empty: nothing at all
    EXPECT_EQ(env.plat->page_count(table_pa), 4u);

    for (u64 i : {0, 2}) ASSERT_TRUE(t.unmap(kBase + i * kPage, kPage));
    EXPECT_EQ(env.snapshot(t).size(), table);
    ASSERT_TRUE(t.unmap(kBase + 3 * kPage, kPage));  // the table's last entry: freed
    EXPECT_LT(env.snapshot(t).size(), table);
    EXPECT_TRUE(env.plat->violations().empty());
  }
}

}  // namespace
