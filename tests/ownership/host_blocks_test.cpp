// Host blocks rebuilt (mem_protect.hpp, "Host blocks"; docs/ownership.md): when every page of a
// block-sized, block-aligned range of host memory is the host's alone again, the transition
// that gave back the last one maps the range as one block again (2 MiB, then the 1 GiB above
// it), through break-before-make, and the tables it no longer needs go back to the pool.
//  - BlockEnv: a GiB-aligned GiB of memory (plus 3 MiB, whose last MiB no 2 MiB block fits),
//    so both levels can be rebuilt; the carve-out lies in a region of its own.
//  - The shape of the host's stage-2 (table pages, valid leaves per level) is counted by a
//    walk; "back in the pool" is the allocator's free pages plus what the memcaches hold.
//  - The break-before-make checker of the engine's tests (tests/pgtable/invariants.hpp) reads
//    the events of the transition that rebuilds.
//  - A property test (SmallEnv): random transitions, then their undoing, leave the host's
//    stage-2 with the table pages a fresh boot's faults make, and the reference MMU agrees
//    with every page's state.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <algorithm>
#include <functional>

#include "model.hpp"
#include "pgtable/invariants.hpp"
#include "ptguard/sim/access_check.hpp"

namespace ptguard::test {
namespace {

using ::testing::IsEmpty;
constexpr u64 kPg = 4096;
constexpr u64 k2M = u64{2} << 20;
constexpr u64 k1G = u64{1} << 30;

/// The host's stage-2 as counted by a walk: table pages (the root's included) and valid leaves
/// per level.
struct Shape {
  u64 tables = 0;
  u64 leaves[4] = {};
  friend bool operator==(const Shape&, const Shape&) = default;
};
std::ostream& operator<<(std::ostream& os, const Shape& s) {
  return os << "{tables " << s.tables << ", leaves L1 " << s.leaves[1] << " L2 " << s.leaves[2] << " L3 "
            << s.leaves[3] << "}";
}

template <typename MP>
Shape host_shape(const MP& mp) {
  struct V {
    static constexpr unsigned visits() { return pgtable::kVisitLeaf | pgtable::kVisitTablePre | pgtable::kVisitLeafRun; }
    Shape* s;
    Status table_pre(pgtable::VisitCtx&) {
      ++s->tables;
      return {};
    }
    Status leaf(pgtable::VisitCtx& x) {
      if (arch::DescValid::get(x.old)) ++s->leaves[x.level];
      return {};
    }
    Status leaf_run(u64* t, u64 idx, u64 n, u64, u64) {
      for (u64 i = 0; i < n; ++i) s->leaves[arch::kLastLevel] += arch::DescValid::get(t[idx + i]) ? 1 : 0;
      return {};
    }
  };
  Shape s;
  s.tables = mp.host_table().root_pages();
  V v{&s};
  EXPECT_TRUE(mp.host_table().walk(0, u64{1} << mp.host_table().ia_bits(), v));
  return s;
}

/// 16 pages of carve-out in a 2 MiB region of their own, then a GiB-aligned region of 1 GiB +
/// 3 MiB: a 1 GiB block, a 2 MiB block, and a last MiB that only pages can map. The table
/// pool lies outside memory.
struct BlockEnv {
  static constexpr u64 kPool = 0x4000'0000, kPoolSize = u64{16} << 20;
  static constexpr u64 kSmall = 0x3000'0000, kCarvePages = 16;
  static constexpr u64 kGiB = 0x1'0000'0000;  ///< the GiB-aligned region
  static constexpr u64 kGiBRegion = k1G + (u64{3} << 20);
  static constexpr u64 kTail2M = kGiB + k1G;   ///< a 2 MiB block no 1 GiB block contains
  static constexpr u64 kTailPages = kTail2M + k2M;  ///< the last MiB: pages only
  static constexpr u64 kUart = 0x0900'0000;

  using MP = OwnEnv::MP;
  sim::PhysMem mem;
  std::optional<sim::SimPlatform> plat;
  std::vector<Region> regions{{kSmall, k2M}, {kGiB, kGiBRegion}};
  std::vector<MmioRegion> mmio{{kUart, 0x1000, true}};
  std::vector<PageMeta> meta;
  MP mp;

  explicit BlockEnv(const CpuFeatures& cpu = CpuFeatures::modern()) {
    EXPECT_TRUE(mem.add_region(kPool, kPoolSize));
    EXPECT_TRUE(mem.add_region(kSmall, k2M));
    EXPECT_TRUE(mem.add_region(kGiB, kGiBRegion));
    EXPECT_TRUE(mem.add_region(kUart, 0x1000));
    plat.emplace(mem, kPool, kPoolSize, kPg);
    const MachineDesc m{regions, mmio, Region{kSmall, kCarvePages * kPg}, u64{1} << 46};
    meta.resize(memory_pages(m, kPg));
    const Status st = mp.init(*plat, m, meta, cpu);
    EXPECT_TRUE(st.has_value()) << errname(st);
    mp.finalize();
  }
  int level(u64 pa) const { return mp.host_table().lookup(pa)->level; }
  /// Free pages of the pool plus the pages the memcaches keep: what is not in a table.
  u64 spare_pages() const {
    MP& m = const_cast<MP&>(mp);
    u64 n = plat->allocator().free_page_count() + m.host_memcache().size() + m.hyp_memcache().size();
    for (const auto& g : mp.guests())
      if (g.used) n += g.mc.size();
    return n;
  }
  pgtest::Geometry host_geometry() const { return pgtest::geometry_of(mp.host_table(), mp.host_config().vtcr); }
  std::vector<pgtest::TablePage> host_pages() { return pgtest::reachable(*plat, host_geometry()).pages; }
  sim::Translation host_access(u64 pa, sim::Access a = sim::Access::read) const {
    const auto& c = mp.host_config();
    return sim::translate_stage2(mem, sim::Stage2Regs{c.vtcr, make_vttbr(mp.host_table().root_pa(), 0), c.fwb}, pa, a);
  }
  void add_guest(ComponentId id, u16 vmid) {
    ASSERT_TRUE(mp.create_guest(id, vmid));
    ASSERT_TRUE(mp.guest(id)->mc.topup(*plat, 16));
  }
};

// The host's stage-2 events of one transition: the hypervisor's stage-1 TLBIs, and writes to and
// frees of its table pages (`other_tables`), dropped, so the engine's checker sees one table.
std::vector<sim::Event> host_events(const sim::EventView& ev, const std::vector<u64>& other_tables) {
  std::vector<sim::Event> out;
  for (const sim::Event& e : ev) {
    if (e.kind == sim::EventKind::tlbi) {
      const arch::Tlbi op = e.tlbi_op;
      if (op != arch::Tlbi::ipas2e1is && op != arch::Tlbi::ripas2e1is && op != arch::Tlbi::vmalls12e1is &&
          op != arch::Tlbi::vmalle1is)
        continue;
      if (e.vmid != OwnEnv::MP::kHostVmid) continue;
    }
    if (e.kind == sim::EventKind::write || e.kind == sim::EventKind::free) {
      const u64 page = e.pa & ~(kPg - 1);
      if (std::find(other_tables.begin(), other_tables.end(), page) != other_tables.end()) continue;
    }
    out.push_back(e);
  }
  return out;
}

TEST(HostBlocks, UnsharingTheLastPagesRebuildsThe2MiBBlocksAndThe1GiBBlockAboveThem) {
  BlockEnv e;
  ASSERT_TRUE(e.mp.host_handle_fault(BlockEnv::kGiB + 123 * kPg));
  ASSERT_EQ(e.level(BlockEnv::kGiB), 1);
  const Shape boot = host_shape(e.mp);
  const u64 spare = e.spare_pages();
  const u64 a = BlockEnv::kGiB + k2M + 5 * kPg, b = BlockEnv::kGiB + 7 * k2M + 511 * kPg;
  ASSERT_TRUE(e.mp.host_share_hyp(a, 1));
  ASSERT_TRUE(e.mp.host_share_hyp(b, 2));  // b and the first page of the next 2 MiB
  EXPECT_EQ(e.level(a), 3);
  EXPECT_EQ(e.level(b + kPg), 3);
  Shape split = host_shape(e.mp);
  EXPECT_EQ(split.tables, boot.tables + 4) << split;  // one level-2 table, three level-3 ones
  ASSERT_TRUE(e.mp.host_unshare_hyp(a, 1));
  EXPECT_EQ(e.level(a), 2) << "the 2 MiB block around a is one block again";
  EXPECT_EQ(host_shape(e.mp).tables, boot.tables + 3);
  ASSERT_TRUE(e.mp.host_unshare_hyp(b, 1));
  EXPECT_EQ(e.level(b), 2);
  EXPECT_EQ(e.level(b + kPg), 3) << "its neighbour is still shared";
  ASSERT_TRUE(e.mp.host_unshare_hyp(b + kPg, 1));
  EXPECT_EQ(e.level(a), 1) << "the GiB is one block again";
  EXPECT_EQ(host_shape(e.mp), boot);
  EXPECT_EQ(e.spare_pages(), spare) << "every table page the shares took is back in the pool";
  EXPECT_THAT(e.plat->violations(), IsEmpty());
  EXPECT_TRUE(invariants_hold(e.mp));
  for (u64 pa : {a, b, b + kPg, BlockEnv::kGiB, BlockEnv::kGiB + k1G - kPg}) {
    const sim::Translation t = e.host_access(pa, sim::Access::write);
    EXPECT_TRUE(t.ok()) << std::hex << pa;
    EXPECT_EQ(t.output_address, pa);
  }
}

// The rebuild's events pass the engine tests' break-before-make checker, with and without range
// TLBIs: the table entry written invalid, its span invalidated (a range TLBI, or the whole
// VMID), completed, and only then the tables freed and the block written.
TEST(HostBlocks, TheRebuildBreaksBeforeItMakesAndFreesTheTablesAfterTheInvalidation) {
  for (bool range : {true, false}) {
    SCOPED_TRACE(range ? "FEAT_TLBIRANGE" : "no FEAT_TLBIRANGE");
    CpuFeatures cpu = CpuFeatures::modern();
    cpu.tlbi_range = range;
    BlockEnv e(cpu);
    ASSERT_TRUE(e.mp.host_handle_fault(BlockEnv::kGiB));
    const u64 pa = BlockEnv::kGiB + 9 * k2M + 17 * kPg;
    ASSERT_TRUE(e.mp.host_share_ffa(pa, 1));
    ASSERT_EQ(e.level(pa), 3);
    const std::vector<pgtest::TablePage> before = e.host_pages();
    const auto m = e.plat->log().mark();
    ASSERT_TRUE(e.mp.host_unshare_ffa(pa, 1));
    ASSERT_EQ(e.level(pa), 1);
    const sim::EventView ev = e.plat->log().since(m);
    EXPECT_THAT(pgtest::check_events(e.host_geometry(), before, ev), IsEmpty());
    EXPECT_EQ(ev.count(sim::EventKind::free), 2u) << "the level-3 table, then the level-2 one";
    if (range) {
      EXPECT_GE(ev.count(arch::Tlbi::ripas2e1is), 2u);
      EXPECT_EQ(ev.count(arch::Tlbi::vmalls12e1is), 0u);
    } else {
      EXPECT_GE(ev.count(arch::Tlbi::vmalls12e1is), 2u);
    }
    EXPECT_THAT(e.plat->violations(), IsEmpty());
  }
}

// A range given back whole is rebuilt at the largest block it covers, without a scan: a GiB
// unshared in one call is one break-before-make of its level-1 entry, every table freed.
TEST(HostBlocks, AGiBGivenBackInOneCallIsOneBlockAgain) {
  BlockEnv e;
  ASSERT_TRUE(e.mp.host_handle_fault(BlockEnv::kGiB));
  const Shape boot = host_shape(e.mp);
  ASSERT_TRUE(e.mp.host_share_ffa(BlockEnv::kGiB, k1G / kPg));
  EXPECT_EQ(host_shape(e.mp).tables, boot.tables + 513);
  const std::vector<pgtest::TablePage> before = e.host_pages();
  const auto m = e.plat->log().mark();
  ASSERT_TRUE(e.mp.host_unshare_ffa(BlockEnv::kGiB, k1G / kPg));
  EXPECT_EQ(e.level(BlockEnv::kGiB + 77 * k2M), 1);
  EXPECT_EQ(host_shape(e.mp), boot);
  const sim::EventView ev = e.plat->log().since(m);
  EXPECT_THAT(pgtest::check_events(e.host_geometry(), before, ev), IsEmpty());
  EXPECT_EQ(ev.count(sim::EventKind::free), 513u);
  // The block is written at once (host_map_home), not over 262,144 pages written owned first:
  // the level-1 entry broken and made, nothing else.
  EXPECT_LE(ev.count(sim::EventKind::write), 4u);
  EXPECT_TRUE(invariants_hold(e.mp));
}

// The same through host_unshare_hyp, whose events include the hypervisor's stage-1 (filtered).
TEST(HostBlocks, UnshareHypRebuildPassesTheBreakBeforeMakeChecker) {
  BlockEnv e;
  ASSERT_TRUE(e.mp.host_handle_fault(BlockEnv::kGiB));
  const u64 pa = BlockEnv::kGiB + 3 * k2M;
  ASSERT_TRUE(e.mp.host_share_hyp(pa, 3));
  const std::vector<pgtest::TablePage> before = e.host_pages();
  std::vector<u64> hyp_tables;
  {
    const auto geo = pgtest::geometry_of(e.mp.hyp_table(), e.mp.hyp_config().tcr);
    for (const auto& p : pgtest::reachable(*e.plat, geo).pages) hyp_tables.push_back(p.pa);
  }
  const auto m = e.plat->log().mark();
  ASSERT_TRUE(e.mp.host_unshare_hyp(pa, 3));
  ASSERT_EQ(e.level(pa), 1);
  const std::vector<sim::Event> evs = host_events(e.plat->log().since(m), hyp_tables);
  const std::vector<std::string> errs = pgtest::check_events(e.host_geometry(), before, sim::EventView(evs));
  EXPECT_THAT(errs, IsEmpty());
}

// Every way a page comes home rebuilds the block once it is the last; while one page of the
// range is in any other state, the range stays in pages.
struct Holder {
  const char* what;
  std::function<Status(BlockEnv&, u64)> take;  ///< puts the page at pa in another state
  std::function<Status(BlockEnv&, u64)> undo;  ///< gives it back to the host alone
};

const std::vector<Holder>& holders() {
  static const std::vector<Holder> v = {
      {"shared with the hypervisor", [](BlockEnv& e, u64 pa) { return e.mp.host_share_hyp(pa, 1); },
       [](BlockEnv& e, u64 pa) { return e.mp.host_unshare_hyp(pa, 1); }},
      {"pinned by the hypervisor",
       [](BlockEnv& e, u64 pa) {
         if (Status st = e.mp.host_share_hyp(pa, 1); !st) return st;
         return e.mp.hyp_pin_shared(pa, 1);
       },
       [](BlockEnv& e, u64 pa) {
         if (Status st = e.mp.hyp_unpin_shared(pa, 1); !st) return st;
         return e.mp.host_unshare_hyp(pa, 1);
       }},
      {"donated to the hypervisor", [](BlockEnv& e, u64 pa) { return e.mp.host_donate_hyp(pa, 1); },
       [](BlockEnv& e, u64 pa) { return e.mp.hyp_donate_host(pa, 1); }},
      {"shared with the secure world", [](BlockEnv& e, u64 pa) { return e.mp.host_share_ffa(pa, 1); },
       [](BlockEnv& e, u64 pa) { return e.mp.host_unshare_ffa(pa, 1); }},
      {"shared with a guest", [](BlockEnv& e, u64 pa) { return e.mp.host_share_guest(pa, 1, 2, 0x1000'0000, pgtable::kPermRW); },
       [](BlockEnv& e, u64) { return e.mp.host_unshare_guest(2, 0x1000'0000, 1); }},
      {"donated to a live guest", [](BlockEnv& e, u64 pa) { return e.mp.host_donate_guest(pa, 1, 2, 0x1000'0000); },
       [](BlockEnv& e, u64 pa) { return e.mp.host_force_reclaim(pa); }},
      {"lent to a guest", [](BlockEnv& e, u64 pa) { return e.mp.host_lend_guest(pa, 1, 2, 0x1000'0000, pgtable::kPermRW); },
       [](BlockEnv& e, u64 pa) {
         if (Status st = e.mp.guest_relinquish(2, 0x1000'0000, 1); !st) return st;
         return e.mp.host_reclaim_lent(pa, 1);
       }},
      {"a guest's own page shared back to the host",
       [](BlockEnv& e, u64 pa) {
         if (Status st = e.mp.host_donate_guest(pa, 1, 2, 0x1000'0000); !st) return st;
         return e.mp.guest_share_host(2, 0x1000'0000, 1);
       },
       [](BlockEnv& e, u64) {
         if (Status st = e.mp.teardown_guest(2); !st) return st;
         return e.mp.reclaim_guest_page(2, 0x1000'0000);
       }},
      {"donated to a guest that is then reclaimed whole",
       [](BlockEnv& e, u64 pa) { return e.mp.host_donate_guest(pa, 1, 2, 0x1000'0000); },
       [](BlockEnv& e, u64) {
         if (Status st = e.mp.teardown_guest(2); !st) return st;
         return e.mp.reclaim_guest(2);
       }},
  };
  return v;
}

TEST(HostBlocks, ARangeWithOnePageInAnotherStateIsNotRebuiltUntilItComesHome) {
  for (const Holder& h : holders()) {
    SCOPED_TRACE(h.what);
    BlockEnv e;
    e.add_guest(2, 1);
    ASSERT_TRUE(e.mp.host_handle_fault(BlockEnv::kGiB));
    const Shape boot = host_shape(e.mp);
    const u64 a = BlockEnv::kGiB + 4 * k2M + 10 * kPg, held = BlockEnv::kGiB + 4 * k2M + 300 * kPg;
    ASSERT_TRUE(e.mp.host_share_hyp(a, 1));
    ASSERT_TRUE(h.take(e, held));
    const Shape split = host_shape(e.mp);
    ASSERT_TRUE(e.mp.host_unshare_hyp(a, 1));
    EXPECT_EQ(e.level(a), 3) << "one page of the range is still " << h.what;
    EXPECT_EQ(host_shape(e.mp).tables, split.tables);
    EXPECT_TRUE(invariants_hold(e.mp));
    ASSERT_TRUE(h.undo(e, held));
    EXPECT_EQ(e.level(a), 1);
    EXPECT_EQ(e.level(held), 1);
    EXPECT_EQ(host_shape(e.mp), boot);
    EXPECT_TRUE(invariants_hold(e.mp));
    EXPECT_THAT(e.plat->violations(), IsEmpty());
  }
}

// The other order: the page given back last is the one in another state, through each path.
TEST(HostBlocks, EveryPathThatGivesBackTheLastPageRebuilds) {
  for (const Holder& h : holders()) {
    SCOPED_TRACE(h.what);
    BlockEnv e;
    e.add_guest(2, 1);
    ASSERT_TRUE(e.mp.host_handle_fault(BlockEnv::kGiB));
    const Shape boot = host_shape(e.mp);
    const u64 held = BlockEnv::kGiB + 6 * k2M + 77 * kPg;
    ASSERT_TRUE(h.take(e, held));
    EXPECT_EQ(e.level(held), 3);
    EXPECT_EQ(e.level(held + kPg), 3);
    ASSERT_TRUE(h.undo(e, held));
    EXPECT_EQ(e.level(held), 1) << "rebuilt by the path that gave back " << h.what;
    EXPECT_EQ(host_shape(e.mp), boot);
    EXPECT_TRUE(invariants_hold(e.mp));
    EXPECT_THAT(e.plat->violations(), IsEmpty());
  }
}

// A dead guest's pages given back one call each (reclaim_guest_page), in address order, in the
// reverse order, and from both ends inwards: host_rebuild_blocks() leaves early while a page next
// to the one coming home is still away (host_neighbour_not_default), and must not while the
// neighbours are default, whether empty (a page given back before) or a valid page the host
// faulted in: the range, 10 pages inside a 2 MiB the host faulted in whole, is one block again
// (and the GiB above it) exactly when its last page comes home, and not before.
TEST(HostBlocks, PagesReclaimedOneCallEachRebuildTheBlockWithTheLastPage) {
  constexpr u64 kN = 10, kIpa = 0x1000'0000;
  const u64 base = BlockEnv::kGiB + 3 * k2M + 40 * kPg;
  const std::vector<std::pair<const char*, std::vector<u64>>> orders = {
      {"ascending", {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
      {"descending", {9, 8, 7, 6, 5, 4, 3, 2, 1, 0}},
      {"from both ends", {0, 9, 1, 8, 2, 7, 3, 6, 4, 5}},
  };
  for (const auto& [what, order] : orders) {
    SCOPED_TRACE(what);
    BlockEnv e;
    e.add_guest(2, 1);
    ASSERT_TRUE(e.mp.host_handle_fault(BlockEnv::kGiB));
    const Shape boot = host_shape(e.mp);
    ASSERT_TRUE(e.mp.host_donate_guest(base, kN, 2, kIpa));
    ASSERT_TRUE(e.mp.teardown_guest(2));
    for (std::size_t k = 0; k < order.size(); ++k) {
      ASSERT_TRUE(e.mp.reclaim_guest_page(2, kIpa + order[k] * kPg));
      if (k + 1 < order.size()) {
        EXPECT_EQ(e.level(base + order[k] * kPg), 3) << "page " << k << ": the range is not all home yet";
      }
    }
    EXPECT_EQ(e.level(base), 1) << "the last page home rebuilt the 2 MiB block, then the GiB";
    EXPECT_EQ(host_shape(e.mp), boot);
    EXPECT_TRUE(invariants_hold(e.mp));
    EXPECT_THAT(e.plat->violations(), IsEmpty());
    ASSERT_TRUE(e.mp.reclaim_guest(2));
  }
}

// Only where host_handle_fault would map the block: a 2 MiB block whose GiB is not all memory
// is rebuilt, the GiB is not; the last MiB of the region, which no 2 MiB block fits, stays in
// pages. And with the rebuild switched off, nothing is.
TEST(HostBlocks, OnlyBlocksTheFaultHandlerWouldMapAreRebuilt) {
  BlockEnv e;
  ASSERT_TRUE(e.mp.host_handle_fault(BlockEnv::kTail2M));
  ASSERT_EQ(e.level(BlockEnv::kTail2M), 2);
  ASSERT_TRUE(e.mp.host_handle_fault(BlockEnv::kTailPages));
  ASSERT_EQ(e.level(BlockEnv::kTailPages), 3);
  const Shape boot = host_shape(e.mp);
  ASSERT_TRUE(e.mp.host_share_hyp(BlockEnv::kTail2M + 8 * kPg, 1));
  ASSERT_TRUE(e.mp.host_share_hyp(BlockEnv::kTailPages + 8 * kPg, 1));
  ASSERT_TRUE(e.mp.host_unshare_hyp(BlockEnv::kTail2M + 8 * kPg, 1));
  ASSERT_TRUE(e.mp.host_unshare_hyp(BlockEnv::kTailPages + 8 * kPg, 1));
  EXPECT_EQ(e.level(BlockEnv::kTail2M), 2) << "a 2 MiB block, not the GiB the region does not cover";
  EXPECT_EQ(e.level(BlockEnv::kTailPages), 3);
  EXPECT_EQ(e.level(BlockEnv::kTailPages + 8 * kPg), 3);
  EXPECT_EQ(host_shape(e.mp).tables, boot.tables);
  EXPECT_TRUE(invariants_hold(e.mp));

  BlockEnv off;
  off.mp.set_host_block_rebuild(false);
  EXPECT_FALSE(off.mp.host_block_rebuild());
  ASSERT_TRUE(off.mp.host_handle_fault(BlockEnv::kGiB));
  const Shape off_boot = host_shape(off.mp);
  ASSERT_TRUE(off.mp.host_share_hyp(BlockEnv::kGiB + 8 * kPg, 1));
  ASSERT_TRUE(off.mp.host_unshare_hyp(BlockEnv::kGiB + 8 * kPg, 1));
  EXPECT_EQ(off.level(BlockEnv::kGiB), 3) << "switched off: the range stays in pages";
  EXPECT_EQ(host_shape(off.mp).tables, off_boot.tables + 2);
}

// A range the host never faulted in: sharing a page builds tables of empty entries around it;
// giving it back maps the block that the host's first fault there would have mapped.
TEST(HostBlocks, ARangeNeverFaultedInIsMappedAsTheFaultWouldMapIt) {
  BlockEnv e;
  const u64 pa = BlockEnv::kGiB + 100 * k2M + 3 * kPg;
  ASSERT_TRUE(e.mp.host_share_hyp(pa, 1));
  ASSERT_TRUE(e.mp.host_unshare_hyp(pa, 1));
  EXPECT_EQ(e.level(pa), 1);
  EXPECT_TRUE(e.host_access(BlockEnv::kGiB + 5 * kPg).ok());
  BlockEnv f;
  ASSERT_TRUE(f.mp.host_handle_fault(pa));
  EXPECT_EQ(host_shape(e.mp), host_shape(f.mp));
  // A page donated and given back with nothing else mapped: the engine frees the emptied
  // tables, and nothing is mapped until the host faults.
  BlockEnv g;
  ASSERT_TRUE(g.mp.host_donate_hyp(pa, 1));
  ASSERT_TRUE(g.mp.hyp_donate_host(pa, 1));
  EXPECT_EQ(g.mp.host_table().lookup(pa)->entry, 0u);
  EXPECT_FALSE(g.host_access(pa).ok());
}

// The host's stage-2 has TableOptions::contiguous on: a fault on memory inside a last-level
// table maps the empty aligned run around the page (16 pages, 64 KiB) at once, with the
// Contiguous bit, and nothing beyond it; a transition on one page of the run breaks the whole
// run first (its events pass the break-before-make checker, which counts the bit as part of
// the translation) and leaves no misprogrammed run; the block rebuild reads a hinted run as
// default memory.
TEST(HostBlocks, FaultsMapContiguousRunsThatTransitionsBreakAndTheRebuildReads) {
  constexpr u64 kRun = 16;
  BlockEnv e;
  const u64 blk = BlockEnv::kGiB + 8 * k2M;
  const u64 held = blk + 300 * kPg;
  ASSERT_TRUE(e.mp.host_share_hyp(held, 1));  // the 2 MiB block is now a last-level table
  const u64 run = blk + 4 * kRun * kPg;
  int level = -1;
  ASSERT_TRUE(e.mp.host_handle_fault(run + 5 * kPg, &level));
  EXPECT_EQ(level, 3);
  for (u64 i = 0; i < kRun; ++i) {
    const sim::Translation t = e.host_access(run + i * kPg, sim::Access::write);
    ASSERT_TRUE(t.ok()) << i;
    EXPECT_TRUE(t.contiguous) << i;
    EXPECT_FALSE(t.contiguous_misprogrammed) << sim::to_string(t);
  }
  EXPECT_FALSE(e.host_access(run - kPg).ok());
  EXPECT_FALSE(e.host_access(run + kRun * kPg).ok());
  const Status again = e.mp.host_handle_fault(run + 9 * kPg);
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error(), Error::eagain);

  std::vector<u64> hyp_tables;
  {
    const auto geo = pgtest::geometry_of(e.mp.hyp_table(), e.mp.hyp_config().tcr);
    for (const auto& p : pgtest::reachable(*e.plat, geo).pages) hyp_tables.push_back(p.pa);
  }
  const std::vector<pgtest::TablePage> before = e.host_pages();
  const auto m = e.plat->log().mark();
  ASSERT_TRUE(e.mp.host_share_hyp(run + 3 * kPg, 1));
  const std::vector<sim::Event> evs = host_events(e.plat->log().since(m), hyp_tables);
  EXPECT_THAT(pgtest::check_events(e.host_geometry(), before, sim::EventView(evs)), IsEmpty());
  for (u64 i = 0; i < kRun; ++i) {
    const sim::Translation t = e.host_access(run + i * kPg);
    ASSERT_TRUE(t.ok()) << i;
    EXPECT_FALSE(t.contiguous) << i;
    EXPECT_FALSE(t.contiguous_misprogrammed) << sim::to_string(t);
  }
  ASSERT_TRUE(e.mp.host_unshare_hyp(run + 3 * kPg, 1));
  EXPECT_EQ(e.level(run), 3) << "the page held elsewhere keeps the range in pages";

  // Another run, hinted, when the last page comes home: the range is default, rebuilt.
  const u64 run2 = blk + 8 * kRun * kPg;
  ASSERT_TRUE(e.mp.host_handle_fault(run2));
  ASSERT_TRUE(e.host_access(run2 + 7 * kPg).contiguous);
  ASSERT_TRUE(e.mp.host_unshare_hyp(held, 1));
  EXPECT_LE(e.level(run2), 2) << "a hinted run is default memory to the rebuild";
  EXPECT_FALSE(e.host_access(run2).contiguous);
  EXPECT_TRUE(invariants_hold(e.mp));
  EXPECT_THAT(e.plat->violations(), IsEmpty());
}

// ---- property: random transitions, then their undoing ------------------------------------

// One step that changed something, and how to undo it.
struct Done {
  std::string what;
  std::function<Status(SmallEnv&)> undo;
};

RC_GTEST_PROP(HostBlocks, RandomTransitionsThenTheirUndoingLeaveNoExtraTablePages, ()) {
  SmallEnv e;
  const bool faulted = *rc::gen::arbitrary<bool>();
  // A fresh boot's faults: the block without the carve-out whole, and a few pages of the other.
  if (faulted) {
    RC_ASSERT(e.mp.host_handle_fault(SmallEnv::kBlock1).has_value());
    // (A fault maps the whole empty contiguous run around its page: the rest of it answers
    // EAGAIN, already mapped.)
    for (u64 i = SmallEnv::kCarvePages; i < 40; ++i) {
      const Status st = e.mp.host_handle_fault(SmallEnv::kRam + i * kPg);
      RC_ASSERT(st.has_value() || st.error() == Error::eagain);
    }
  }
  e.add_guest(2);
  const Shape boot = host_shape(e.mp);
  std::vector<Done> done;
  const int steps = *rc::gen::inRange(1, 40);
  u64 next_ipa = 0x1000'0000;
  for (int i = 0; i < steps; ++i) {
    // Pages of the block without the carve-out mostly, some of the other, runs of 1 to 3.
    const bool b1 = *rc::gen::inRange(0, 10) < 8;
    const u64 first = b1 ? SmallEnv::kBlock1 : SmallEnv::kRam + SmallEnv::kCarvePages * kPg;
    const u64 pa = first + *rc::gen::inRange<u64>(0, b1 ? 512 : 24) * kPg;
    const u64 n = *rc::gen::inRange<u64>(1, 4);
    if (pa + n * kPg > SmallEnv::kRam + SmallEnv::kRamSize) continue;
    e.topup(2, 32);
    const u64 ipa = next_ipa;
    switch (*rc::gen::inRange(0, 7)) {
      case 0:
        if (e.mp.host_share_hyp(pa, n)) done.push_back({"share_hyp", [=](SmallEnv& x) { return x.mp.host_unshare_hyp(pa, n); }});
        break;
      case 1:
        if (e.mp.host_donate_hyp(pa, n)) done.push_back({"donate_hyp", [=](SmallEnv& x) { return x.mp.hyp_donate_host(pa, n); }});
        break;
      case 2:
        if (e.mp.host_share_ffa(pa, n)) done.push_back({"share_ffa", [=](SmallEnv& x) { return x.mp.host_unshare_ffa(pa, n); }});
        break;
      case 3:
        if (e.mp.host_share_guest(pa, n, 2, ipa, pgtable::kPermRW)) {
          next_ipa += n * kPg;
          done.push_back({"share_guest", [=](SmallEnv& x) { return x.mp.host_unshare_guest(2, ipa, n); }});
        }
        break;
      case 4:
        if (e.mp.host_lend_guest(pa, n, 2, ipa, pgtable::kPermRW)) {
          next_ipa += n * kPg;
          done.push_back({"lend_guest", [=](SmallEnv& x) -> Status {
                            if (Status st = x.mp.guest_relinquish(2, ipa, n); !st) return st;
                            return x.mp.host_reclaim_lent(pa, n);
                          }});
        }
        break;
      case 5:
        if (e.mp.host_donate_guest(pa, n, 2, ipa)) {
          next_ipa += n * kPg;
          done.push_back({"donate_guest", [=](SmallEnv& x) -> Status {
                            for (u64 k = 0; k < n; ++k)
                              if (Status st = x.mp.host_force_reclaim(pa + k * kPg); !st) return st;
                            return {};
                          }});
        }
        break;
      default:
        if (e.mp.host_share_hyp(pa, 1)) {
          RC_ASSERT(e.mp.hyp_pin_shared(pa, 1).has_value());
          done.push_back({"share_hyp+pin", [=](SmallEnv& x) -> Status {
                            if (Status st = x.mp.hyp_unpin_shared(pa, 1); !st) return st;
                            return x.mp.host_unshare_hyp(pa, 1);
                          }});
        }
        break;
    }
    RC_ASSERT(invariants_hold(e.mp));
  }
  // Undo, last first.
  for (auto it = done.rbegin(); it != done.rend(); ++it) {
    e.topup(2, 32);
    const Status st = it->undo(e);
    if (!st) RC_FAIL("undoing " + it->what + ": " + errname(st));
    RC_ASSERT(invariants_hold(e.mp));
  }
  const Shape now = host_shape(e.mp);
  RC_ASSERT(now.tables <= boot.tables);
  if (faulted) {
    RC_ASSERT(now.tables == boot.tables);
    RC_ASSERT(e.mp.host_table().lookup(SmallEnv::kBlock1)->level == 2);
    RC_ASSERT(now.leaves[2] == 1u);
  }
  RC_ASSERT(e.plat->violations().empty());
  if (const auto p = sim::check_access_against_states(e.mem, e.mp)) RC_FAIL("access check: " + *p);
}

}  // namespace
}  // namespace ptguard::test
