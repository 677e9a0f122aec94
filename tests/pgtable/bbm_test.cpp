// Break-before-make order and TLB-invalidation coverage, from the event log.
//
// check_events() (invariants.hpp) tracks every descriptor of the table through the events of
// one operation and reports, one line per violation: a valid->valid change of output address,
// memory type, shareability or table/block-ness; a broken entry made valid again before
// DSB ISHST; TLBI (covering, right VMID and level); DSB ISH; TLBI VMALLE1IS (or VMALLS12E1IS);
// DSB ISH; a table page freed while linked or before the invalidation of its removal
// completed; a valid->invalid change or a permission reduction not invalidated by the end of
// the operation; stage 1 breaking a live entry at all.
//
// CheckerSelfTest feeds it hand-written event sequences, so the checker is known to fail on
// each kind of mistake. BbmScenarios then drives the engine through every kind of replacement,
// for each granule, checking the events of each operation (and, through World::step, the
// table against the model, the reference MMU and the structure), and that the replacement
// really took the path it names (an entry broken and remade, a table freed, ...).
// The model-based tests run the same checker after every random operation.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "invariants.hpp"

namespace ptguard::pgtest {
namespace {

using arch::Barrier;
using arch::Granule;
using arch::Tlbi;
using pgtable::Memcache;
using sim::Event;
using sim::EventKind;
using sim::SimPlatform;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// ---------------------------------------------------------------------------------------------
// The checker on hand-written events.
// ---------------------------------------------------------------------------------------------

class CheckerSelfTest : public ::testing::Test {
 protected:
  // A 4K stage-2 table: root (level 1) at kRoot, its entry 0 -> level-2 table at kL2, whose
  // entry 1 -> level-3 table at kL3.
  static constexpr u64 kRoot = 0x4000'0000;
  static constexpr u64 kL2 = 0x4000'1000;
  static constexpr u64 kL3 = 0x4000'2000;
  static constexpr u16 kVmid = 3;
  static constexpr u64 kPageDesc = 0x8000'0000 | 0x3 | (0x6u << 2) | (0x3u << 6) | (0x3u << 8) | (1u << 10);
  static constexpr u64 kBlockDesc = 0xc000'0000 | 0x1 | (0x6u << 2) | (0x3u << 6) | (0x3u << 8) | (1u << 10);

  CheckerSelfTest() {
    geo.g = Granule::k4K;
    geo.stage = 2;
    geo.start_level = 1;
    geo.root_pages = 1;
    geo.root_pa = kRoot;
    geo.ia_bits = 39;
    geo.vmid = kVmid;
    pages = {TablePage{kRoot, 1, 0, 0}, TablePage{kL2, 2, 0, kRoot}, TablePage{kL3, 3, 0x20'0000, kL2 + 8}};
  }
  std::vector<std::string> check(const std::vector<Event>& ev, EventCheckOptions opt = {}) {
    events = ev;
    return check_events(geo, pages, sim::EventView(events), opt);
  }
  static Event w(u64 pa, u64 o, u64 n) { return Event::write(pa, o, n); }
  static Event tlbi(Tlbi op, u64 addr = 0, int level = arch::kTlbiLevelUnknown, u16 vmid = kVmid) {
    return Event::tlbi(op, vmid, addr, level);
  }
  static Event dsb(Barrier b = Barrier::dsb_ish) { return Event::barrier(b); }
  // The full break-before-make sequence for the level-3 entry 5 (IA 0x205000).
  static std::vector<Event> bbm_page(u64 new_value) {
    return {w(kL3 + 5 * 8, kPageDesc, 0), dsb(Barrier::dsb_ishst), tlbi(Tlbi::ipas2e1is, 0x20'5000, 3), dsb(),
            tlbi(Tlbi::vmalle1is), dsb(), w(kL3 + 5 * 8, 0, new_value)};
  }

  Geometry geo;
  std::vector<TablePage> pages;
  std::vector<Event> events;
};

TEST_F(CheckerSelfTest, FullSequenceIsClean) {
  EXPECT_THAT(check(bbm_page(kPageDesc + 0x1000)), IsEmpty());
}

TEST_F(CheckerSelfTest, ValidToValidOutputAddressChange) {
  EXPECT_THAT(check({w(kL3 + 5 * 8, kPageDesc, kPageDesc + 0x1000)}),
              ElementsAre(HasSubstr("BBM valid->valid at 0x40002028")));
}

TEST_F(CheckerSelfTest, ValidToValidMemoryTypeAndShareabilityChange) {
  EXPECT_THAT(check({w(kL3 + 5 * 8, kPageDesc, kPageDesc ^ (0x6u << 2) ^ (0x5u << 2))}),
              ElementsAre(HasSubstr("BBM valid->valid")));
  EXPECT_THAT(check({w(kL3 + 5 * 8, kPageDesc, kPageDesc ^ (0x1u << 8))}),
              ElementsAre(HasSubstr("BBM valid->valid")));
}

// The Contiguous bit (bit 52) is part of the translation for the checker: setting or clearing
// it on a live entry needs break-before-make (Arm ARM D8.16.1), and a break that rewrites the
// entry without it is clean.
TEST_F(CheckerSelfTest, ContiguousBitChangeNeedsBreakBeforeMake) {
  const u64 hinted = kPageDesc | (u64{1} << 52);
  EXPECT_THAT(check({w(kL3 + 5 * 8, hinted, kPageDesc)}), ElementsAre(HasSubstr("BBM valid->valid")));
  EXPECT_THAT(check({w(kL3 + 5 * 8, kPageDesc, hinted)}), ElementsAre(HasSubstr("BBM valid->valid")));
  std::vector<Event> ev = bbm_page(kPageDesc);
  ev.front() = w(kL3 + 5 * 8, hinted, 0);
  EXPECT_THAT(check(ev), IsEmpty());
}

TEST_F(CheckerSelfTest, PermissionsAndSoftwareBitsMayChangeInPlace) {
  const u64 more = kPageDesc | (u64{0xf} << 55);
  EXPECT_THAT(check({w(kL3 + 5 * 8, kPageDesc & ~(u64{1} << 54), more & ~(u64{1} << 54))}), IsEmpty());
}

TEST_F(CheckerSelfTest, BlockToTableWithoutBreak) {
  EXPECT_THAT(check({w(kL2 + 2 * 8, kBlockDesc, 0x4000'3000 | 0x3)}),
              ElementsAre(HasSubstr("BBM valid->valid at 0x40001010")));
}

TEST_F(CheckerSelfTest, EachMissingStepOfTheSequence) {
  for (std::size_t drop = 1; drop < 6; ++drop) {
    std::vector<Event> ev = bbm_page(kPageDesc + 0x1000);
    ev.erase(ev.begin() + static_cast<long>(drop));
    const auto out = check(ev);
    ASSERT_FALSE(out.empty()) << "dropping event " << drop;
    EXPECT_THAT(out[0], HasSubstr("BBM incomplete at 0x40002028")) << "dropping event " << drop;
  }
}

TEST_F(CheckerSelfTest, StepsOutOfOrder) {
  // TLBI before the DSB ISHST that publishes the invalid entry.
  EXPECT_THAT(check({w(kL3 + 5 * 8, kPageDesc, 0), tlbi(Tlbi::ipas2e1is, 0x20'5000, 3), dsb(Barrier::dsb_ishst),
                     dsb(), tlbi(Tlbi::vmalle1is), dsb(), w(kL3 + 5 * 8, 0, kPageDesc + 0x1000)}),
              ::testing::Contains(HasSubstr("BBM incomplete")));
  // VMALLE1IS before the DSB ISH that completes the IPA invalidation.
  EXPECT_THAT(check({w(kL3 + 5 * 8, kPageDesc, 0), dsb(Barrier::dsb_ishst), tlbi(Tlbi::ipas2e1is, 0x20'5000, 3),
                     tlbi(Tlbi::vmalle1is), dsb(), dsb(), w(kL3 + 5 * 8, 0, kPageDesc + 0x1000)}),
              ::testing::Contains(HasSubstr("missing TLBI VMALLE1IS")));
}

TEST_F(CheckerSelfTest, TlbiThatDoesNotCover) {
  // Another address, a wrong level hint, another VMID.
  for (const Event& bad : {tlbi(Tlbi::ipas2e1is, 0x20'6000, 3), tlbi(Tlbi::ipas2e1is, 0x20'5000, 2)}) {
    std::vector<Event> ev = bbm_page(kPageDesc + 0x1000);
    ev[2] = bad;
    EXPECT_THAT(check(ev), ::testing::Contains(HasSubstr("missing TLBI covering the address")));
  }
  std::vector<Event> ev = bbm_page(kPageDesc + 0x1000);
  ev[2] = tlbi(Tlbi::ipas2e1is, 0x20'5000, 3, kVmid + 1);
  EXPECT_THAT(check(ev), ::testing::Contains(HasSubstr("wrong VMID")));
}

TEST_F(CheckerSelfTest, VmallS12CoversEverything) {
  EXPECT_THAT(check({w(kL3 + 5 * 8, kPageDesc, 0), dsb(Barrier::dsb_ishst), tlbi(Tlbi::vmalls12e1is), dsb(),
                     w(kL3 + 5 * 8, 0, kPageDesc + 0x1000)}),
              IsEmpty());
}

TEST_F(CheckerSelfTest, UnmapNotInvalidatedByTheEnd) {
  EXPECT_THAT(check({w(kL3 + 5 * 8, kPageDesc, 0), dsb(Barrier::dsb_ishst)}),
              ElementsAre(HasSubstr("valid->invalid at 0x40002028 (IA 0x205000, level 3")));
  // An annotation is invalid too.
  EXPECT_THAT(check({w(kL3 + 5 * 8, kPageDesc, arch::InvalidDesc::annotation(2, 1).raw())}),
              ElementsAre(HasSubstr("not invalidated before the operation ended")));
}

TEST_F(CheckerSelfTest, TableEntryNeedsTheWholeVmid) {
  const std::vector<Event> by_ipa = {w(kL2 + 8, kL3 | 0x3, 0), dsb(Barrier::dsb_ishst),
                                     tlbi(Tlbi::ipas2e1is, 0x20'0000), dsb(), tlbi(Tlbi::vmalle1is), dsb(),
                                     Event::free(kL3, 0, 0x1000, true, 0)};
  const auto out = check(by_ipa);
  EXPECT_THAT(out, ::testing::Contains(HasSubstr("free before TLBI at 0x40002000")));
  EXPECT_THAT(out, ::testing::Contains(HasSubstr("valid->invalid at 0x40001008")));
  EXPECT_THAT(check({w(kL2 + 8, kL3 | 0x3, 0), dsb(Barrier::dsb_ishst), tlbi(Tlbi::vmalls12e1is), dsb(),
                     Event::free(kL3, 0, 0x1000, true, 0)}),
              IsEmpty());
}

TEST_F(CheckerSelfTest, FreeOfALiveTablePage) {
  EXPECT_THAT(check({Event::free(kL3, 0, 0x1000, true, 0)}),
              ElementsAre(HasSubstr("free of live table page 0x40002000")));
  // Unlinking the parent's parent unlinks it too.
  EXPECT_THAT(check({w(kRoot, kL2 | 0x3, 0), dsb(Barrier::dsb_ishst), tlbi(Tlbi::vmalls12e1is), dsb(),
                     Event::free(kL3, 0, 0x1000, true, 0), Event::free(kL2, 0, 0x1000, true, 0)}),
              IsEmpty());
}

TEST_F(CheckerSelfTest, PermissionReduction) {
  const u64 ro = kPageDesc & ~(u64{1} << 7);
  EXPECT_THAT(check({w(kL3 + 5 * 8, kPageDesc, ro)}),
              ElementsAre(HasSubstr("permission reduction at 0x40002028")));
  EXPECT_THAT(check({w(kL3 + 5 * 8, kPageDesc, ro)}, EventCheckOptions{.tlbi_deferred = true}), IsEmpty());
  EXPECT_THAT(check({w(kL3 + 5 * 8, kPageDesc, ro), dsb(Barrier::dsb_ishst), tlbi(Tlbi::ipas2e1is, 0x20'5000, 3),
                     dsb(), tlbi(Tlbi::vmalle1is), dsb()}),
              IsEmpty());
  // Adding a permission needs nothing.
  EXPECT_THAT(check({w(kL3 + 5 * 8, ro, kPageDesc)}), IsEmpty());
}

TEST_F(CheckerSelfTest, Stage1NeverBreaks) {
  geo.stage = 1;
  const u64 s1 = 0x8000'0000 | 0x3 | (0x1u << 6) | (0x3u << 8) | (1u << 10) | (u64{1} << 54);
  EXPECT_THAT(check({w(kL3 + 5 * 8, s1, 0), dsb(Barrier::dsb_ishst), tlbi(Tlbi::vale2is, 0x20'5000, 3), dsb(),
                     w(kL3 + 5 * 8, 0, s1 + 0x1000)}),
              ElementsAre(HasSubstr("stage-1 BBM (valid->invalid->valid) at 0x40002028")));
  // Any change but the software bits is a new translation at stage 1.
  EXPECT_THAT(check({w(kL3 + 5 * 8, s1, s1 & ~(u64{1} << 54))}), ElementsAre(HasSubstr("BBM valid->valid")));
  EXPECT_THAT(check({w(kL3 + 5 * 8, s1, s1 | (u64{3} << 55))}), IsEmpty());
  EXPECT_THAT(check({w(kL3 + 5 * 8, s1, 0), dsb(Barrier::dsb_ishst), tlbi(Tlbi::vale2is, 0x20'5000, 3), dsb()}),
              IsEmpty());
  EXPECT_THAT(check({w(kL3 + 5 * 8, s1, 0), dsb(Barrier::dsb_ishst), tlbi(Tlbi::ipas2e1is, 0x20'5000, 3), dsb()}),
              ::testing::Contains(HasSubstr("stage-2 TLBI")));
}

// ---------------------------------------------------------------------------------------------
// The engine, every kind of replacement, each granule.
// ---------------------------------------------------------------------------------------------

/// What one operation's events show.
struct Seen {
  int remade = 0;        // valid -> 0 -> valid on one descriptor (break-before-make)
  int made_table = 0;    // of those, a table written where a valid leaf was (a split)
  int frees = 0;
  int inplace = 0;       // valid -> valid writes
  std::size_t tlbis = 0;
};

Seen analyse(const Geometry& geo, const sim::EventView& ev) {
  Seen s;
  std::map<u64, u64> broken;
  for (const Event& e : ev) {
    if (e.kind == EventKind::free) ++s.frees;
    if (e.kind == EventKind::tlbi) ++s.tlbis;
    if (e.kind != EventKind::write) continue;
    const bool ov = arch::DescValid::get(e.old_value);
    const bool nv = arch::DescValid::get(e.value);
    if (ov && !nv) broken[e.pa] = e.old_value;
    if (ov && nv) ++s.inplace;
    if (!ov && nv && broken.count(e.pa) != 0) {
      ++s.remade;
      // Level unknown here; a table descriptor has bits 1:0 = 0b11 and the old leaf was a block.
      if ((e.value & 0x3) == 0x3 && (broken[e.pa] & 0x3) == 0x1) ++s.made_table;
    }
  }
  (void)geo;
  return s;
}

template <Granule G>
struct Scenario {
  using T = pgtable::Stage2Table<G, SimPlatform>;
  static constexpr u64 P = arch::page_size(G);
  static constexpr u64 B = arch::level_size(G, 2);  // a block every granule has
  static constexpr u64 kBase = 4 * B;
  static constexpr u64 kPa = u64{1} << 40;

  World<T> w{G == Granule::k64K ? 46u : 40u, /*fwb=*/false};
  Memcache mc;

  Seen run(Op op, const EventCheckOptions& opt = {}) {
    std::vector<std::string> errors;
    EXPECT_TRUE(mc.topup(*w.plat, w.pages_for(op)));
    const std::vector<TablePage> pages = reachable(*w.plat, w.geo).pages;
    const auto mark = w.plat->log().mark();
    if (opt.tlbi_deferred) {
      // wrprotect with TlbPolicy::defer (World::step knows only the default policy).
      Model next = w.model;
      EXPECT_FALSE(w.expect(next, op).has_value());
      EXPECT_TRUE(w.t->wrprotect(op.addr, op.size, mc, pgtable::TlbPolicy::defer));
      w.model = next;
      for (std::string& e : w.check({op.addr}, mc.size())) errors.push_back(e);
      const sim::EventView ev = w.plat->log().since(mark);
      for (std::string& e : check_events(w.geo, pages, ev, opt)) errors.push_back("events: " + e);
      // Without the deferral the same events are a missing invalidation.
      EXPECT_THAT(check_events(w.geo, pages, ev), ::testing::Contains(HasSubstr("permission reduction")));
    } else {
      w.step(op, mc, errors);  // checks the events too
    }
    const sim::EventView ev = w.plat->log().since(mark);
    EXPECT_THAT(errors, IsEmpty()) << to_string(op) << "\n" << ev.format();
    return analyse(w.geo, ev);
  }
  static Op map(u64 a, u64 s, u64 pa, pgtable::Perm perm = pgtable::kPermRW, bool replace = false, u8 sw = 0) {
    Op op;
    op.kind = OpKind::map;
    op.addr = a;
    op.size = s;
    op.pa = pa;
    op.prot = pgtable::Prot{perm, arch::MemType::normal_wb, sw};
    op.replace = replace;
    return op;
  }
  static Op range(OpKind k, u64 a, u64 s) {
    Op op;
    op.kind = k;
    op.addr = a;
    op.size = s;
    op.owner = 2;
    op.sw = 1;
    return op;
  }
};

template <typename F>
void for_granule(Granule g, F&& f) {
  switch (g) {
    case Granule::k4K: f.template operator()<Granule::k4K>(); break;
    case Granule::k16K: f.template operator()<Granule::k16K>(); break;
    case Granule::k64K: f.template operator()<Granule::k64K>(); break;
  }
}

class BbmScenarios : public ::testing::TestWithParam<Granule> {};

TEST_P(BbmScenarios, ReplaceOutputAddressOfAPage) {
  for_granule(GetParam(), []<Granule G>() {
    Scenario<G> s;
    using S = Scenario<G>;
    s.run(S::map(S::kBase + S::P, S::P, S::kPa));
    const Seen seen = s.run(S::map(S::kBase + S::P, S::P, S::kPa + 7 * S::P, pgtable::kPermRW, true));
    EXPECT_EQ(seen.remade, 1);
  });
}

TEST_P(BbmScenarios, ReplaceOutputAddressOfABlock) {
  for_granule(GetParam(), []<Granule G>() {
    Scenario<G> s;
    using S = Scenario<G>;
    s.run(S::map(S::kBase, S::B, S::kPa));
    const Seen seen = s.run(S::map(S::kBase, S::B, S::kPa + 2 * S::B, pgtable::kPermRW, true));
    EXPECT_EQ(seen.remade, 1);
    // Replacing a page inside the block: split first (keeping the rest), then the page.
    const Seen part = s.run(S::map(S::kBase + 3 * S::P, S::P, S::kPa, pgtable::kPermRW, true));
    EXPECT_EQ(part.made_table, 1);
    EXPECT_EQ(part.remade, 2);
  });
}

TEST_P(BbmScenarios, ChangingPermissionsOrSoftwareBitsOfPartOfABlockSplitsIt) {
  for_granule(GetParam(), []<Granule G>() {
    Scenario<G> s;
    using S = Scenario<G>;
    s.run(S::map(S::kBase, S::B, S::kPa));
    Seen seen = s.run(S::map(S::kBase + S::P, S::P, S::kPa + S::P, pgtable::kPermR));
    EXPECT_EQ(seen.made_table, 1);
    s.run(S::map(S::kBase + S::B, S::B, S::kPa + S::B));
    seen = s.run(S::map(S::kBase + S::B + 2 * S::P, 2 * S::P, S::kPa + S::B + 2 * S::P, pgtable::kPermRW,
                        false, /*sw=*/3));
    EXPECT_EQ(seen.made_table, 1);
    // Only the software bits of a whole page differ now: in place, no break.
    seen = s.run(S::map(S::kBase + S::B + 2 * S::P, S::P, S::kPa + S::B + 2 * S::P, pgtable::kPermRW, false, 1));
    EXPECT_EQ(seen.remade, 0);
    EXPECT_EQ(seen.inplace, 1);
  });
}

TEST_P(BbmScenarios, UnmapSetOwnerWrprotectOfPartOfABlock) {
  for_granule(GetParam(), []<Granule G>() {
    Scenario<G> s;
    using S = Scenario<G>;
    s.run(S::map(S::kBase, 3 * S::B, S::kPa));
    EXPECT_EQ(s.run(S::range(OpKind::unmap, S::kBase + S::P, S::P)).made_table, 1);
    EXPECT_EQ(s.run(S::range(OpKind::set_owner, S::kBase + S::B + S::P, 2 * S::P)).made_table, 1);
    const Seen wp = s.run(S::range(OpKind::wrprotect, S::kBase + 2 * S::B, S::P));
    EXPECT_EQ(wp.made_table, 1);
    EXPECT_EQ(wp.inplace, 1);
  });
}

TEST_P(BbmScenarios, Split) {
  for_granule(GetParam(), []<Granule G>() {
    Scenario<G> s;
    using S = Scenario<G>;
    s.run(S::map(S::kBase, 2 * S::B, S::kPa));
    EXPECT_EQ(s.run(S::range(OpKind::split, S::kBase, S::P)).made_table, 1);
    Op to_pages = S::range(OpKind::split, S::kBase + S::B, S::B);
    to_pages.to_pages = true;
    EXPECT_EQ(s.run(to_pages).made_table, 1);
    if constexpr (G == Granule::k4K) {
      // A 1 GiB block: to 2 MiB blocks, then one of those to pages.
      constexpr u64 kG = u64{1} << 30;
      s.run(S::map(4 * kG, kG, S::kPa + kG));
      EXPECT_EQ(s.run(S::range(OpKind::split, 4 * kG, S::P)).made_table, 1);
      Op deep = S::range(OpKind::split, 5 * kG - S::P, S::P);
      deep.to_pages = true;
      EXPECT_EQ(s.run(deep).made_table, 1);
    }
  });
}

TEST_P(BbmScenarios, UnmapOfWholeTablesFreesThemAfterTheInvalidation) {
  for_granule(GetParam(), []<Granule G>() {
    Scenario<G> s;
    using S = Scenario<G>;
    // Page mappings (output address off by one page, so no block fits) over two blocks.
    s.run(S::map(S::kBase, 2 * S::B, S::kPa + S::P));
    const std::size_t pages = reachable(*s.w.plat, s.w.geo).pages.size();
    const Seen seen = s.run(S::range(OpKind::unmap, S::kBase, 2 * S::B));
    EXPECT_GE(seen.frees, 2);
    EXPECT_EQ(reachable(*s.w.plat, s.w.geo).pages.size(), pages - static_cast<std::size_t>(seen.frees));
    // Part of a table only: the table stays.
    s.run(S::map(S::kBase, 2 * S::P, S::kPa + S::P));
    EXPECT_EQ(s.run(S::range(OpKind::unmap, S::kBase, S::P)).frees, 0);
    EXPECT_GE(s.run(S::range(OpKind::unmap, S::kBase + S::P, S::P)).frees, 1);
  });
}

TEST_P(BbmScenarios, BlockOverATableOfAnnotations) {
  for_granule(GetParam(), []<Granule G>() {
    Scenario<G> s;
    using S = Scenario<G>;
    s.run(S::range(OpKind::set_owner, S::kBase + S::P, 3 * S::P));  // a table of annotations
    const Seen seen = s.run(S::map(S::kBase, S::B, S::kPa));
    EXPECT_GE(seen.frees, 1);  // the table went, replaced by the block
    EXPECT_EQ(s.w.t->lookup(S::kBase)->level, 2);
    // A table of valid pages replaced by a block (replace).
    s.run(S::map(S::kBase + S::B, S::B, S::kPa + S::P));
    const Seen rep = s.run(S::map(S::kBase + S::B, S::B, S::kPa + S::B, pgtable::kPermRW, true));
    EXPECT_GE(rep.frees, 1);
    EXPECT_EQ(rep.remade, 1);
  });
}

TEST_P(BbmScenarios, PermissionReductionsAreInvalidated) {
  for_granule(GetParam(), []<Granule G>() {
    Scenario<G> s;
    using S = Scenario<G>;
    s.run(S::map(S::kBase, S::B, S::kPa, pgtable::kPermRWX));
    Seen seen = s.run(S::map(S::kBase, S::B, S::kPa, pgtable::kPermRW));  // loses X, in place
    EXPECT_EQ(seen.inplace, 1);
    EXPECT_GE(seen.tlbis, 1u);
    seen = s.run(S::range(OpKind::wrprotect, S::kBase, S::B));
    EXPECT_EQ(seen.inplace, 1);
    EXPECT_GE(seen.tlbis, 1u);
    // Deferred: no TLBI from the engine; the checker accepts it only when told.
    s.run(S::map(S::kBase + S::B, S::P, S::kPa + S::B));
    Op wp = S::range(OpKind::wrprotect, S::kBase + S::B, S::P);
    seen = s.run(wp, EventCheckOptions{.tlbi_deferred = true});
    EXPECT_EQ(seen.tlbis, 0u);
  });
}

TEST_P(BbmScenarios, Stage1NeverBreaks) {
  for_granule(GetParam(), []<Granule G>() {
    using T = pgtable::Stage1Table<G, SimPlatform>;
    World<T> w(40, false);
    Memcache mc;
    constexpr u64 P = arch::page_size(G);
    constexpr u64 B = arch::level_size(G, 2);
    const u64 pa = u64{1} << 40;
    const auto ok = [&](Op op) {
      std::vector<std::string> errors;
      EXPECT_TRUE(mc.topup(*w.plat, w.pages_for(op)));
      w.step(op, mc, errors);
      EXPECT_THAT(errors, IsEmpty()) << to_string(op);
    };
    Op m;
    m.kind = OpKind::map;
    m.prot = pgtable::Prot{pgtable::kPermRW, arch::MemType::normal_wb, 0};
    m.addr = B;
    m.size = B;
    m.pa = pa;
    ok(m);  // a block
    m.prot.sw = 5;
    ok(m);  // software bits in place
    m.prot.perm = pgtable::kPermR;
    ok(m);  // EEXIST: refused, nothing written (World checks)
    m.addr = 2 * B + P;
    m.size = 4 * P;
    m.pa = pa + P;
    m.prot.perm = pgtable::kPermRW;
    ok(m);  // pages
    Op u;
    u.kind = OpKind::unmap;
    u.addr = B + P;
    u.size = P;
    ok(u);  // EINVAL: part of a block
    u.addr = B;
    u.size = 2 * B;
    ok(u);  // the block and the pages' whole range... (part of a page table: fine)
  });
}

INSTANTIATE_TEST_SUITE_P(Granules, BbmScenarios,
                         ::testing::Values(Granule::k4K, Granule::k16K, Granule::k64K),
                         [](const ::testing::TestParamInfo<Granule>& i) {
                           return i.param == Granule::k4K ? "4K" : i.param == Granule::k16K ? "16K" : "64K";
                         });

}  // namespace
}  // namespace ptguard::pgtest
