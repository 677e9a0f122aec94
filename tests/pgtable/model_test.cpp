// Model-based property tests of the table engine (RapidCheck).
//
// Random sequences of map (with and without replace), unmap, set_owner, wrprotect,
// relax_perms and split on random ranges (aligned and unaligned to blocks, inside and across
// blocks, near the top of the IA space and across the pages of a concatenated root) are applied
// to a table and, independently, to a plain model (page -> empty / annotation / mapping; see
// invariants.hpp). After EVERY step World::step checks:
//   - the result (error or success) is the model's;
//   - a failed operation left the table byte for byte as it was (snapshot of every table
//     page), wrote no descriptor, invalidated nothing, took no page from the memcache;
//   - a successful map took exactly pages_needed_for_map() pages; no operation more than
//     max_pages_needed();
//   - an operation with nothing to change (map without replace, wrprotect, relax_perms)
//     wrote nothing and invalidated nothing;
//   - a full Table::walk, decoded bit by bit, equals the model;
//   - the reference MMU agrees with the model at the range's edges, at every run boundary and
//     at random addresses, for reads, writes and fetches (OA, permissions, memory type,
//     shareability, software bits; Translation faults and lookup()'s annotation elsewhere);
//   - structural invariants (refcounts, reachability, allocator accounting, no violations);
//   - the event log of the operation passes the break-before-make checker.
// At the end everything is unmapped: only the root may remain, then destroy() frees it.
//
// One test body per granule, each for stage 2 and stage-1 EL2.
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include "invariants.hpp"

namespace ptguard::pgtest {
namespace {

using arch::Granule;
using pgtable::Memcache;
using sim::SimPlatform;

struct RcRng final : Rng {
  // Uniform whatever RapidCheck's current size (inRange scales with it otherwise).
  u64 below(u64 n) override { return n <= 1 ? 0 : *rc::gen::resize(100, rc::gen::inRange<u64>(0, n)); }
};

rc::Gen<Op> op_gen(const Space& sp) {
  return rc::gen::exec([sp] {
    RcRng r;
    return gen_op(r, sp);
  });
}

std::string tail(const std::vector<std::string>& trace) {
  std::string out = "operations:\n";
  const std::size_t from = trace.size() > 40 ? trace.size() - 40 : 0;
  for (std::size_t i = from; i < trace.size(); ++i) out += "  " + std::to_string(i) + ": " + trace[i] + "\n";
  return out;
}

template <Granule G>
std::vector<unsigned> ia_choices(int stage, bool pa52 = false) {
  if (pa52) {
    // 52-bit tables (FEAT_LPA2 / FEAT_LPA): level -1 with 4K, concatenated and level-0 roots
    // with 16K, and a 48-bit-or-less input with 52-bit output addresses. Stage 1 with 64K
    // stays at 48 bits of VA (52 would be FEAT_LVA).
    if (stage == 1) return G == Granule::k64K ? std::vector<unsigned>{48} : std::vector<unsigned>{40, 52};
    switch (G) {
      case Granule::k4K: return {40, 49, 52};
      case Granule::k16K: return {49, 51, 52};
      case Granule::k64K: return {44, 49, 52};
    }
  }
  if (stage == 1) return {39, 40, 48};
  switch (G) {
    case Granule::k4K: return {36, 40, 44, 48};
    case Granule::k16K: return {36, 40, 47};
    case Granule::k64K: return {36, 42, 46, 48};
  }
  return {40};
}

/// Unmaps the whole IA space, checks only the root is left, drains the memcache and destroys.
template <typename W>
void teardown(W& w, Memcache& mc) {
  std::vector<std::string> errors;
  Op all;
  all.kind = OpKind::unmap;
  all.addr = 0;
  all.size = u64{1} << w.geo.ia_bits;
  // Nothing to split: the range covers everything. No topup (max_pages_needed is huge here).
  w.step(all, mc, errors);
  if (!errors.empty()) RC_FAIL(tail(w.trace) + join(errors));
  RC_ASSERT(w.model.empty());
  const Reach r = reachable(*w.plat, w.geo);
  if (r.pages.size() != w.geo.root_pages) {
    RC_FAIL("after unmapping everything " + std::to_string(r.pages.size()) + " table pages remain, root has " +
            std::to_string(w.geo.root_pages) + "\n" + tail(w.trace));
  }
  mc.drain(*w.plat);
  RC_ASSERT(w.plat->allocator().stats().outstanding == u64{w.geo.root_pages});
  w.t->destroy();
  RC_ASSERT(w.plat->allocator().stats().outstanding == 0u);
  RC_ASSERT(w.plat->violations().empty());
}

// kVisitReadOnly: a read-only visitor sees every leaf the per-leaf walk sees, in the same
// order, with the same entry, pointer and range, over a range that may start and end
// anywhere inside a last-level table (so whole chunks, tails, and tables shorter than a chunk).
// Run on the tables of both stages: the walk is one code path, but their shapes differ (start
// levels, concatenated roots, where the operations left pages), so each pins it on its own.
template <Granule G, typename W>
void read_only_walk_sees_what_per_leaf_sees(W& w, const Space& sp) {
  struct Seen {
    u64* ptep;
    u64 old, addr, end, base, table_pa;
    int level;
    bool operator==(const Seen&) const = default;
  };
  struct PerLeaf {
    static constexpr unsigned visits() { return pgtable::kVisitLeaf; }
    std::vector<Seen> seen;
    Status leaf(pgtable::VisitCtx& x) {
      seen.push_back(Seen{x.ptep, x.old, x.addr, x.end, x.base, x.table_pa, x.level});
      return {};
    }
  };
  struct Chunked : PerLeaf {
    static constexpr unsigned visits() { return pgtable::kVisitLeaf | pgtable::kVisitReadOnly; }
  };
  // Inside the window the operations changed (sp), where the pages and tables are. Half the
  // time from a valid page: a range from anywhere meets mostly blocks and empty entries, and a
  // chunk of empty entries read off by one looks right (4K: one walk in twenty had a chunk).
  const u64 page = arch::page_size(G), pages = sp.big * sp.nbig / page;
  PerLeaf all;
  RC_ASSERT(w.t->walk(sp.base, sp.base + pages * page, all).has_value());
  std::vector<u64> valid_pages;
  for (const Seen& s : all.seen)
    if (s.level == arch::kLastLevel && arch::DescValid::get(s.old)) valid_pages.push_back((s.addr - sp.base) / page);
  const u64 first = !valid_pages.empty() && *rc::gen::arbitrary<bool>() ? *rc::gen::elementOf(valid_pages)
                                                                         : *rc::gen::inRange<u64>(0, pages);
  const u64 count = *rc::gen::inRange<u64>(1, std::min<u64>(pages - first, 3 * 2048) + 1);
  PerLeaf a;
  Chunked b;
  const u64 from = sp.base + first * page, to = from + count * page;
  RC_ASSERT(w.t->walk(from, to, a).has_value());
  RC_ASSERT(w.t->walk(from, to, b).has_value());
  RC_CLASSIFY(b.seen.size() >= 8, "a whole chunk walked");
  RC_ASSERT(a.seen.size() == b.seen.size());
  RC_ASSERT(a.seen == b.seen);
}

template <Granule G>
void stage2_property(bool contiguous = false, bool pa52 = false) {
  using T = pgtable::Stage2Table<G, SimPlatform>;
  const unsigned ia = *rc::gen::elementOf(ia_choices<G>(2, pa52));
  const bool fwb = *rc::gen::arbitrary<bool>();
  pgtable::TableOptions opt;
  if (G != Granule::k4K && *rc::gen::inRange(0, 4) == 0) opt.force_page = {pgtable::force_pages_always, nullptr};
  opt.contiguous = contiguous;
  opt.contiguous_on_split = contiguous && *rc::gen::arbitrary<bool>();
  World<T> w(ia, fwb, opt, 7, {}, pa52);
  RC_ASSERT(w.t.has_value());
  RC_ASSERT(w.t->oa_format().oa_bits() == (pa52 ? 52u : 48u));
  const Space sp = make_space(w.geo, *rc::gen::inRange(0, 3));
  const auto n = *rc::gen::resize(100, rc::gen::inRange<std::size_t>(1, 31));
  const auto ops = *rc::gen::container<std::vector<Op>>(n, op_gen(sp));
  Memcache mc;
  bool hinted = false;  // some step left a contiguous run in the table
  for (const Op& op : ops) {
    RC_ASSERT(mc.topup(*w.plat, w.pages_for(op)));
    std::vector<std::string> errors;
    w.step(op, mc, errors);
    if (!errors.empty()) RC_FAIL(tail(w.trace) + join(errors));
    if (contiguous && !hinted) {
      struct V {
        static constexpr unsigned visits() { return pgtable::kVisitLeaf; }
        bool any = false;
        Status leaf(pgtable::VisitCtx& x) {
          any = any || (arch::DescValid::get(x.old) && arch::S2Contiguous::get(x.old));
          return {};
        }
      } v;
      RC_ASSERT(w.t->walk(0, u64{1} << w.geo.ia_bits, v).has_value());
      hinted = v.any;
    }
  }
  if (contiguous) RC_CLASSIFY(hinted, "contiguous runs formed");
  read_only_walk_sees_what_per_leaf_sees<G>(w, sp);
  teardown(w, mc);
}

template <Granule G>
void stage1_property(bool pa52 = false) {
  using T = pgtable::Stage1Table<G, SimPlatform>;
  const unsigned ia = *rc::gen::elementOf(ia_choices<G>(1, pa52));
  World<T> w(ia, false, {}, 7, {}, pa52);
  RC_ASSERT(w.t.has_value());
  const Space sp = make_space(w.geo, *rc::gen::inRange(0, 2));
  const auto n = *rc::gen::resize(100, rc::gen::inRange<std::size_t>(1, 31));
  const auto ops = *rc::gen::container<std::vector<Op>>(n, op_gen(sp));
  Memcache mc;
  for (const Op& op : ops) {
    RC_ASSERT(mc.topup(*w.plat, w.pages_for(op)));
    std::vector<std::string> errors;
    w.step(op, mc, errors);
    if (!errors.empty()) RC_FAIL(tail(w.trace) + join(errors));
  }
  read_only_walk_sees_what_per_leaf_sees<G>(w, sp);
  teardown(w, mc);
}

RC_GTEST_PROP(PgtableModel, Stage2Granule4K, ()) { stage2_property<Granule::k4K>(); }
RC_GTEST_PROP(PgtableModel, Stage2Granule16K, ()) { stage2_property<Granule::k16K>(); }
RC_GTEST_PROP(PgtableModel, Stage2Granule64K, ()) { stage2_property<Granule::k64K>(); }
// The same with TableOptions::contiguous: runs form where maps write them whole, and every
// later change breaks them first. World::step's checks then also say: no leaf the reference
// MMU reads has a misprogrammed run (check_translations), and no hinted entry changed live
// without break-before-make (the checker counts the hint as part of the translation).
RC_GTEST_PROP(PgtableModel, Stage2Contiguous4K, ()) { stage2_property<Granule::k4K>(true); }
RC_GTEST_PROP(PgtableModel, Stage2Contiguous16K, ()) { stage2_property<Granule::k16K>(true); }
RC_GTEST_PROP(PgtableModel, Stage2Contiguous64K, ()) { stage2_property<Granule::k64K>(true); }
RC_GTEST_PROP(PgtableModel, Stage1Granule4K, ()) { stage1_property<Granule::k4K>(); }
RC_GTEST_PROP(PgtableModel, Stage1Granule16K, ()) { stage1_property<Granule::k16K>(); }
RC_GTEST_PROP(PgtableModel, Stage1Granule64K, ()) { stage1_property<Granule::k64K>(); }
// The same with 52-bit addresses: output addresses above 2^50, and the input window at the top of
// a 49..52-bit space (docs/pgtable.md, "52-bit addresses").
RC_GTEST_PROP(PgtableModel, Stage2Granule4KPa52, ()) { stage2_property<Granule::k4K>(false, true); }
RC_GTEST_PROP(PgtableModel, Stage2Granule16KPa52, ()) { stage2_property<Granule::k16K>(false, true); }
RC_GTEST_PROP(PgtableModel, Stage2Granule64KPa52, ()) { stage2_property<Granule::k64K>(false, true); }
// Both at once: runs of 52-bit output addresses (a run never crosses the moved bits: it is
// aligned to its size, far below 2^48).
RC_GTEST_PROP(PgtableModel, Stage2Contiguous4KPa52, ()) { stage2_property<Granule::k4K>(true, true); }
RC_GTEST_PROP(PgtableModel, Stage1Granule4KPa52, ()) { stage1_property<Granule::k4K>(true); }
RC_GTEST_PROP(PgtableModel, Stage1Granule16KPa52, ()) { stage1_property<Granule::k16K>(true); }
RC_GTEST_PROP(PgtableModel, Stage1Granule64KPa52, ()) { stage1_property<Granule::k64K>(true); }

}  // namespace
}  // namespace ptguard::pgtest
