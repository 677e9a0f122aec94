// The Contiguous bit (TableOptions::contiguous; Arm ARM D8.6.1) in the engine, per granule:
//   - a map that writes a whole aligned run of leaves (16 pages at 4K, 128 at 16K, 32 at 64K;
//     16/32/32 blocks at level 2) into invalid entries, with a run-aligned output address, sets
//     the hint on every entry of it; a run one entry short, an output address off by a page,
//     or the option off, sets none;
//   - every change to one entry of a hinted run (unmap, wrprotect, relax_perms, set_owner,
//     replace, a software-bit change, mkyoung, test_and_clear_young, split) clears the hint of
//     the whole run first, through break-before-make;
//   - a table built whole (a new last-level table for a page-mapped block) has all its runs;
//   - a run corrupted by hand is reported by the reference MMU and by check_translations, so
//     the checks the other tests rely on can fail.
// Every operation goes through World::step (model, reference MMU, structure, and the event
// log's break-before-make checker, which counts the hint as part of the translation); after
// each, every page of the runs involved is translated by the reference MMU, which must report
// no misprogrammed run.
#include <gtest/gtest.h>

#include "invariants.hpp"

namespace ptguard::pgtest {
namespace {

using arch::Granule;
using pgtable::Memcache;
using sim::SimPlatform;

template <Granule G>
struct Contig {
  using T = pgtable::Stage2Table<G, SimPlatform>;
  static constexpr u64 kPage = arch::page_size(G);
  static constexpr unsigned kN = arch::contiguous_entries(G, arch::kLastLevel);
  static constexpr u64 kRun = arch::contiguous_size(G, arch::kLastLevel);
  static constexpr u64 kL2 = arch::level_size(G, 2);
  static constexpr unsigned kN2 = arch::contiguous_entries(G, 2);
  static constexpr u64 kRun2 = arch::contiguous_size(G, 2);
  // Input addresses: a level-2 run's worth in, so every run size divides them; output
  // addresses the same offset into the mapped RAM (kMappedRam is 1 TiB: aligned to them all).
  static constexpr u64 kBase = kRun2 * 2;
  static constexpr u64 kPaOff = kMappedRam;
  static constexpr unsigned kIa = G == Granule::k64K ? 42 : 40;

  static pgtable::Prot prot(pgtable::Perm p = pgtable::kPermRW, u8 sw = 0) {
    return pgtable::Prot{p, arch::MemType::normal_wb, sw};
  }

  static pgtable::TableOptions opts(bool contiguous, bool on_split = false) {
    pgtable::TableOptions o;
    o.contiguous = contiguous;
    o.contiguous_on_split = on_split;
    return o;
  }

  static void step(World<T>& w, Memcache& mc, const Op& op) {
    ASSERT_TRUE(mc.topup(*w.plat, w.pages_for(op) + 4));
    std::vector<std::string> errors;
    w.step(op, mc, errors);
    ASSERT_TRUE(errors.empty()) << to_string(op) << "\n" << join(errors);
  }
  static Op map(u64 addr, u64 size, u64 pa, pgtable::Prot p = prot(), bool replace = false) {
    Op op;
    op.kind = OpKind::map;
    op.addr = addr;
    op.size = size;
    op.pa = pa;
    op.prot = p;
    op.replace = replace;
    return op;
  }
  static Op other(OpKind k, u64 addr, u64 size) {
    Op op;
    op.kind = k;
    op.addr = addr;
    op.size = size;
    op.owner = 2;
    op.prot = prot(pgtable::kPermRWX);
    return op;
  }

  // Leaves with the Contiguous bit in [addr, addr + size).
  static unsigned hinted(World<T>& w, u64 addr, u64 size) {
    struct V {
      static constexpr unsigned visits() { return pgtable::kVisitLeaf; }
      unsigned n = 0;
      Status leaf(pgtable::VisitCtx& x) {
        if (arch::DescValid::get(x.old) && arch::S2Contiguous::get(x.old)) ++n;
        return {};
      }
    } v;
    EXPECT_TRUE(w.t->walk(addr, addr + size, v));
    return v.n;
  }

  // The reference MMU at every `step` of [addr, addr + size): no misprogrammed run, and the
  // hint reported where the table has it.
  static void no_misprogrammed(World<T>& w, u64 addr, u64 size, u64 step) {
    for (u64 a = addr; a < addr + size; a += step) {
      const sim::Translation t = sim::translate_stage2(
          w.mem, sim::Stage2Regs{w.tcr, arch::make_vttbr(w.geo.root_pa, w.geo.vmid), w.geo.fwb}, a,
          sim::Access::read);
      EXPECT_FALSE(t.contiguous_misprogrammed) << "at " << std::hex << a << ": " << sim::to_string(t);
    }
  }

  // The descriptor address of the leaf that maps `addr`.
  static u64 desc_pa(World<T>& w, u64 addr) {
    struct V {
      static constexpr unsigned visits() { return pgtable::kVisitLeaf; }
      u64* p = nullptr;
      Status leaf(pgtable::VisitCtx& x) {
        p = x.ptep;
        return {};
      }
    } v;
    EXPECT_TRUE(w.t->walk(addr & ~(kPage - 1), (addr & ~(kPage - 1)) + kPage, v));
    return w.plat->virt_to_phys(v.p);
  }

  // -------------------------------------------------------------------------------------------
  static void runs_form_only_when_whole() {
    World<T> w(kIa, true, opts(true));
    Memcache mc;
    // The last-level table exists already (a page at its far end): the runs are written entry
    // by entry into a live table.
    step(w, mc, map(kBase + kL2 - kPage, kPage, kBase + kL2 - kPage + kPaOff));
    // A whole aligned run: every entry hinted.
    step(w, mc, map(kBase, kRun, kBase + kPaOff));
    EXPECT_EQ(hinted(w, kBase, kRun), kN);
    // One entry short: none.
    step(w, mc, map(kBase + 2 * kRun, kRun - kPage, kBase + 2 * kRun + kPaOff));
    EXPECT_EQ(hinted(w, kBase + 2 * kRun, kRun), 0u);
    // Unaligned in the input (one page in): the one whole run inside is not aligned, none.
    step(w, mc, map(kBase + 4 * kRun + kPage, kRun, kBase + 4 * kRun + kPage + kPaOff));
    EXPECT_EQ(hinted(w, kBase + 4 * kRun, 2 * kRun), 0u);
    // Output address a page off the run's alignment: none.
    step(w, mc, map(kBase + 6 * kRun, kRun, kBase + 6 * kRun + kPage + kPaOff));
    EXPECT_EQ(hinted(w, kBase + 6 * kRun, kRun), 0u);
    // Two runs and a half: the two whole ones.
    step(w, mc, map(kBase + 8 * kRun, 2 * kRun + kRun / 2, kBase + 8 * kRun + kPaOff));
    EXPECT_EQ(hinted(w, kBase + 8 * kRun, 3 * kRun), 2 * kN);
    // Mapping an identical range again changes nothing (World::step: nothing written).
    step(w, mc, map(kBase, kRun, kBase + kPaOff));
    EXPECT_EQ(hinted(w, kBase, kRun), kN);
    no_misprogrammed(w, kBase, 12 * kRun, kPage);

    // The option off: the same whole run gets no hint.
    World<T> off(kIa, true, opts(false));
    Memcache mc2;
    step(off, mc2, map(kBase + kL2 - kPage, kPage, kBase + kL2 - kPage + kPaOff));
    step(off, mc2, map(kBase, kRun, kBase + kPaOff));
    EXPECT_EQ(hinted(off, kBase, kRun), 0u);
  }

  // A new last-level table built whole for a page-mapped block: every run of it hinted.
  static void table_built_whole() {
    World<T> w(kIa, true, opts(true));
    Memcache mc;
    // The output address is run-aligned but not block-aligned: pages, not a block.
    step(w, mc, map(kBase, kL2, kBase + kRun + kPaOff));
    EXPECT_EQ(hinted(w, kBase, kL2), arch::entries_per_table(G));
    no_misprogrammed(w, kBase, kL2, kRun / 2);
  }

  // A block split by a change to part of it: the new table's runs outside the change are
  // hinted (identical leaves, consecutive from the block's aligned address), the run the
  // change reaches is not.
  static void split_keeps_runs_outside_the_change() {
    {  // without contiguous_on_split (the default): the split's table has no run
      World<T> w(kIa, true, opts(true));
      Memcache mc;
      step(w, mc, map(kBase, kL2, kBase + kPaOff));
      step(w, mc, other(OpKind::wrprotect, kBase + kRun + 5 * kPage, kPage));
      EXPECT_EQ(hinted(w, kBase, kL2), 0u);
      no_misprogrammed(w, kBase, kL2, kPage);
    }
    World<T> w(kIa, true, opts(true, true));
    Memcache mc;
    step(w, mc, map(kBase, kL2, kBase + kPaOff));  // one block
    step(w, mc, other(OpKind::wrprotect, kBase + kRun + 5 * kPage, kPage));
    EXPECT_EQ(hinted(w, kBase, kL2), arch::entries_per_table(G) - kN);
    EXPECT_EQ(hinted(w, kBase + kRun, kRun), 0u);
    no_misprogrammed(w, kBase, kL2, kPage);
    // A pure split of a whole block: every entry lies in the operation's range, none hinted.
    step(w, mc, map(kBase + kL2, kL2, kBase + kL2 + kPaOff));
    step(w, mc, other(OpKind::split, kBase + kL2, kL2));
    EXPECT_EQ(hinted(w, kBase + kL2, kL2), 0u);
  }

  // Table::map_run_if_empty (the host fault handler's run): maps an empty aligned run whole,
  // hinted, with a clean event log; declines (nothing written) without a last-level table,
  // with an entry in the run, or unaligned; without the option it maps the run plain.
  static void map_run_if_empty(bool contiguous) {
    World<T> w(kIa, true, opts(contiguous));
    Memcache mc;
    EXPECT_FALSE(w.t->map_run_if_empty(kBase, kBase + kPaOff, prot())) << "no last-level table yet";
    step(w, mc, map(kBase + kL2 - kPage, kPage, kBase + kL2 - kPage + kPaOff));
    std::vector<TablePage> pages = reachable(*w.plat, w.geo).pages;
    auto mark = w.plat->log().mark();
    ASSERT_TRUE(w.t->map_run_if_empty(kBase, kBase + kPaOff, prot()));
    EXPECT_TRUE(check_events(w.geo, pages, w.plat->log().since(mark)).empty());
    EXPECT_EQ(w.plat->log().since(mark).count(sim::EventKind::write), kN);
    EXPECT_EQ(hinted(w, kBase, kRun), contiguous ? kN : 0u);
    no_misprogrammed(w, kBase, kRun, kPage);
    for (u64 a = kBase; a < kBase + kRun; a += kPage) {
      const sim::Translation t = sim::translate_stage2(
          w.mem, sim::Stage2Regs{w.tcr, arch::make_vttbr(w.geo.root_pa, w.geo.vmid), w.geo.fwb}, a,
          sim::Access::write);
      ASSERT_TRUE(t.ok()) << std::hex << a;
      EXPECT_EQ(t.output_address, a + kPaOff);
    }
    EXPECT_TRUE(w.plat->violations().empty());
    // An entry in the run (mapped through World::step's twin path is not needed: a direct map).
    ASSERT_TRUE(w.t->map(kBase + 2 * kRun + 3 * kPage, kPage, kBase + 2 * kRun + 3 * kPage + kPaOff, prot(), mc));
    mark = w.plat->log().mark();
    EXPECT_FALSE(w.t->map_run_if_empty(kBase + 2 * kRun, kBase + 2 * kRun + kPaOff, prot()));
    EXPECT_FALSE(w.t->map_run_if_empty(kBase + 4 * kRun + kPage, kBase + 4 * kRun + kPage + kPaOff, prot()));
    EXPECT_FALSE(w.t->map_run_if_empty(kBase + 4 * kRun, kBase + 4 * kRun + kPage + kPaOff, prot()));
    EXPECT_EQ(w.plat->log().since(mark).size(), 0u) << "a declined run writes nothing";
  }

  // Table::map_page_or_run_if_empty (the host fault handler's one call): from a page in the
  // middle of an empty run it maps the whole run (hinted with the option); with an entry in
  // the run, or runs not allowed, or addr and pa at different offsets in their runs, just the
  // page; with the page's own entry taken, no last-level table, or an unaligned address,
  // nothing. Every result checked against the reference MMU and the event log.
  static void map_page_or_run_if_empty(bool contiguous) {
    World<T> w(kIa, true, opts(contiguous));
    Memcache mc;
    const auto translates = [&](u64 a, u64 pa) {
      const sim::Translation t = sim::translate_stage2(
          w.mem, sim::Stage2Regs{w.tcr, arch::make_vttbr(w.geo.root_pa, w.geo.vmid), w.geo.fwb}, a,
          sim::Access::write);
      return t.ok() && t.output_address == pa;
    };
    const auto empty = [&](u64 a) { return w.t->lookup(a)->entry == 0; };
    EXPECT_EQ(w.t->map_page_or_run_if_empty(kBase + 3 * kPage, kBase + 3 * kPage + kPaOff, prot(), true), 0u)
        << "no last-level table yet";
    step(w, mc, map(kBase + kL2 - kPage, kPage, kBase + kL2 - kPage + kPaOff));
    std::vector<TablePage> pages = reachable(*w.plat, w.geo).pages;
    auto mark = w.plat->log().mark();
    // A fault in the middle of an empty run: the run, whole.
    ASSERT_EQ(w.t->map_page_or_run_if_empty(kBase + 3 * kPage, kBase + 3 * kPage + kPaOff, prot(), true), kRun);
    EXPECT_TRUE(check_events(w.geo, pages, w.plat->log().since(mark)).empty());
    EXPECT_EQ(w.plat->log().since(mark).count(sim::EventKind::write), kN);
    EXPECT_EQ(hinted(w, kBase, kRun), contiguous ? kN : 0u);
    no_misprogrammed(w, kBase, kRun, kPage);
    for (u64 a = kBase; a < kBase + kRun; a += kPage) EXPECT_TRUE(translates(a, a + kPaOff)) << std::hex << a;
    // Its page is taken now: nothing.
    mark = w.plat->log().mark();
    EXPECT_EQ(w.t->map_page_or_run_if_empty(kBase + 5 * kPage, kBase + 5 * kPage + kPaOff, prot(), true), 0u);
    // Unaligned, or out of the table's range: nothing.
    EXPECT_EQ(w.t->map_page_or_run_if_empty(kBase + kRun + 8, kBase + kRun + kPaOff, prot(), true), 0u);
    EXPECT_EQ(w.t->map_page_or_run_if_empty(u64{1} << kIa, kBase + kPaOff, prot(), true), 0u);
    EXPECT_EQ(w.plat->log().since(mark).size(), 0u) << "a declined map writes nothing";
    // An entry elsewhere in the run: the page alone, and its neighbours stay empty.
    const u64 r2 = kBase + 2 * kRun;
    ASSERT_TRUE(w.t->map(r2 + 3 * kPage, kPage, r2 + 3 * kPage + kPaOff, prot(), mc));
    ASSERT_EQ(w.t->map_page_or_run_if_empty(r2 + kPage, r2 + kPage + kPaOff, prot(), true), kPage);
    EXPECT_TRUE(translates(r2 + kPage, r2 + kPage + kPaOff));
    EXPECT_TRUE(empty(r2) && empty(r2 + 2 * kPage));
    // Runs not allowed, or the output at another offset in its run: the page alone.
    const u64 r3 = kBase + 3 * kRun, r4 = kBase + 4 * kRun;
    ASSERT_EQ(w.t->map_page_or_run_if_empty(r3 + kPage, r3 + kPage + kPaOff, prot(), false), kPage);
    EXPECT_TRUE(empty(r3) && empty(r3 + 2 * kPage));
    ASSERT_EQ(w.t->map_page_or_run_if_empty(r4, r4 + kPage + kPaOff, prot(), true), kPage);
    EXPECT_TRUE(translates(r4, r4 + kPage + kPaOff));
    EXPECT_TRUE(empty(r4 + kPage));
    EXPECT_EQ(hinted(w, r2, 3 * kRun), 0u);
    no_misprogrammed(w, kBase, 5 * kRun, kPage);
    EXPECT_TRUE(w.plat->violations().empty());
  }

  // Level 2: a whole aligned run of blocks.
  static void block_runs() {
    World<T> w(kIa, true, opts(true));
    Memcache mc;
    step(w, mc, map(kBase + kRun2 - kPage, kPage, kBase + kRun2 - kPage + kPaOff));  // level-2 table there
    step(w, mc, map(kBase + kRun2 * 2 - kL2, kL2, kBase + kRun2 * 2 - kL2 + kPaOff));
    step(w, mc, map(kBase + kRun2 * 2, kRun2, kBase + kRun2 * 2 + kPaOff));
    EXPECT_EQ(hinted(w, kBase + kRun2 * 2, kRun2), kN2);
    no_misprogrammed(w, kBase + kRun2 * 2, kRun2, kL2);
    // Splitting one block of it breaks the run: no hint left on the level-2 entries, the rest
    // of the run still maps the same (World::step checks it against the model).
    Op sp = other(OpKind::split, kBase + kRun2 * 2 + 3 * kL2, kL2);
    step(w, mc, sp);
    EXPECT_EQ(hinted(w, kBase + kRun2 * 2, kRun2), 0u);
    no_misprogrammed(w, kBase + kRun2 * 2, kRun2, kL2 / 2);
  }

  // Each kind of change to one entry of a run: the whole run loses its hint first.
  static void changes_break_the_run() {
    World<T> w(kIa, true, opts(true));
    Memcache mc;
    step(w, mc, map(kBase + kL2 - kPage, kPage, kBase + kL2 - kPage + kPaOff));
    const auto fresh = [&](unsigned i) {
      const u64 a = kBase + u64{i} * 2 * kRun;
      step(w, mc, map(a, kRun, a + kPaOff, prot(pgtable::kPermR)));
      EXPECT_EQ(hinted(w, a, kRun), kN);
      return a;
    };
    const auto broken = [&](u64 a, const char* what) {
      EXPECT_EQ(hinted(w, a, kRun), 0u) << what;
      no_misprogrammed(w, a - kRun, 3 * kRun, kPage);
    };
    u64 a = fresh(0);
    step(w, mc, other(OpKind::unmap, a + 5 * kPage, kPage));
    broken(a, "unmap");
    a = fresh(1);
    step(w, mc, map(a + kPage, kPage, a + kPage + kPaOff, prot(pgtable::kPermRW)));  // wider perms in place
    broken(a, "map with other permissions");
    a = fresh(2);
    step(w, mc, map(a + 2 * kPage, kPage, a + 2 * kPage + kPaOff, prot(pgtable::kPermR, 5)));  // sw bits
    broken(a, "software bits");
    a = fresh(3);
    step(w, mc, map(a + 3 * kPage, kPage, a + 3 * kPage + kPaOff + kL2, prot(pgtable::kPermR), true));
    broken(a, "replace");
    a = fresh(4);
    Op relax = other(OpKind::relax, a + kRun - kPage, 0);
    relax.prot = prot(pgtable::kPermRW);
    step(w, mc, relax);
    broken(a, "relax_perms");
    a = fresh(5);
    step(w, mc, map(a, kRun, a + kPaOff, prot(pgtable::kPermRW)));  // the whole run, in place
    broken(a, "map of the whole run with other permissions");
    a = fresh(6);
    step(w, mc, other(OpKind::wrprotect, a, kPage));  // R only already: nothing to change
    EXPECT_EQ(hinted(w, a, kRun), kN) << "a wrprotect with nothing to change";
    step(w, mc, other(OpKind::set_owner, a + 7 * kPage, kPage));
    broken(a, "set_owner");
    // Write-protect over a writable run.
    a = kBase + 16 * kRun;
    step(w, mc, map(a, kRun, a + kPaOff, prot(pgtable::kPermRW)));
    ASSERT_EQ(hinted(w, a, kRun), kN);
    step(w, mc, other(OpKind::wrprotect, a + kPage, kPage));
    broken(a, "wrprotect");

    // The access-flag operations, outside World::step: their events go through the checker
    // here.
    const auto young = [&](u64 at, const char* what, auto&& fn) {
      const std::vector<TablePage> pages = reachable(*w.plat, w.geo).pages;
      const auto mark = w.plat->log().mark();
      fn();
      const std::vector<std::string> ev = check_events(w.geo, pages, w.plat->log().since(mark));
      EXPECT_TRUE(ev.empty()) << what << "\n" << join(ev);
      broken(at, what);
    };
    a = kBase + 20 * kRun;
    step(w, mc, map(a, kRun, a + kPaOff));
    ASSERT_EQ(hinted(w, a, kRun), kN);
    young(a, "test_and_clear_young", [&] {
      const Result<bool> y = w.t->test_and_clear_young(a + kPage, kPage, true);
      ASSERT_TRUE(y.has_value());
      EXPECT_TRUE(*y);
    });
    // mkyoung on the page that lost its flag (a hinted run never has a clear flag: runs are
    // formed with it set and clearing it breaks them, so mkyoung's own break is for tables
    // changed by other means): its events too pass the checker.
    young(a, "mkyoung", [&] { ASSERT_TRUE(w.t->mkyoung(a + kPage)); });
  }

  // A run broken by hand (one entry without the hint) is reported: the check can fail.
  static void corrupted_run_is_reported() {
    World<T> w(kIa, true, opts(true));
    Memcache mc;
    step(w, mc, map(kBase, kRun, kBase + kPaOff));
    ASSERT_EQ(hinted(w, kBase, kRun), kN);
    const u64 victim = desc_pa(w, kBase + 3 * kPage);
    u64 d = 0;
    ASSERT_TRUE(w.mem.read64(victim, &d));
    ASSERT_TRUE(w.mem.write64(victim, d & ~arch::S2Contiguous::kMask));
    const std::vector<std::string> errs =
        check_translations(w.mem, w.geo, w.model, {kBase, kBase + 3 * kPage},
                           [&](u64 x) { return w.t->lookup(x); });
    ASSERT_FALSE(errs.empty());
    EXPECT_NE(join(errs).find("misprogrammed contiguous run"), std::string::npos) << join(errs);
    // And with the output address of one entry moved (a page swapped in from elsewhere).
    ASSERT_TRUE(w.mem.write64(victim, d + kPage));
    const sim::Translation t = sim::translate_stage2(
        w.mem, sim::Stage2Regs{w.tcr, arch::make_vttbr(w.geo.root_pa, w.geo.vmid), w.geo.fwb}, kBase,
        sim::Access::read);
    EXPECT_TRUE(t.contiguous_misprogrammed) << sim::to_string(t);
    ASSERT_TRUE(w.mem.write64(victim, d));  // as it was, for the teardown's checks
  }
};

#define CONTIG_TESTS(G, name)                                                                        \
  TEST(PgtableContiguous, RunsFormOnlyWhenWhole##name) { Contig<G>::runs_form_only_when_whole(); }   \
  TEST(PgtableContiguous, TableBuiltWholeHasAllItsRuns##name) { Contig<G>::table_built_whole(); }    \
  TEST(PgtableContiguous, BlockRunsAndSplit##name) { Contig<G>::block_runs(); }                      \
  TEST(PgtableContiguous, MapRunIfEmpty##name) {                                                      \
    Contig<G>::map_run_if_empty(true);                                                                \
    Contig<G>::map_run_if_empty(false);                                                               \
  }                                                                                                   \
  TEST(PgtableContiguous, MapPageOrRunIfEmpty##name) {                                                \
    Contig<G>::map_page_or_run_if_empty(true);                                                        \
    Contig<G>::map_page_or_run_if_empty(false);                                                       \
  }                                                                                                   \
  TEST(PgtableContiguous, SplitKeepsRunsOutsideTheChange##name) { Contig<G>::split_keeps_runs_outside_the_change(); } \
  TEST(PgtableContiguous, EveryChangeBreaksTheWholeRun##name) { Contig<G>::changes_break_the_run(); } \
  TEST(PgtableContiguous, CorruptedRunIsReported##name) { Contig<G>::corrupted_run_is_reported(); }
CONTIG_TESTS(Granule::k4K, 4K)
CONTIG_TESTS(Granule::k16K, 16K)
CONTIG_TESTS(Granule::k64K, 64K)

}  // namespace
}  // namespace ptguard::pgtest
