// Range TLBIs (FEAT_TLBIRANGE) on 52-bit FEAT_LPA2 tables (VTCR_EL2.DS = 1): a range operand
// then counts its base address in 64 KiB units whatever the granule (arch/maintenance.hpp,
// "52-bit addresses"), so the engine sends the pages before a run's first 64 KiB boundary by
// address and starts every range piece at a boundary. The simulator decodes each range TLBI
// with the regime's DS (SimPlatform::set_regime_ds), so a range built for the wrong DS, or
// starting off a boundary, covers other addresses and the TLB model reports what stays stale.
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <algorithm>
#include <vector>

#include "env.hpp"
#include "ptguard/sim/tlb_model.hpp"

using namespace ptguard;
using namespace ptguard::test;

namespace {

const Prot kRw{kPermRW, MemType::normal_wb, 0};

sim::ImplChoices lpa2_cpu() {
  sim::ImplChoices c;
  c.pa_bits = 52;
  c.lpa2 = true;
  return c;
}

// A 52-bit stage-2 table with every page of [base, base + span) mapped by a last-level entry:
// 4K at 52 bits (a level -1 root), 16K at 51 bits (level 1, concatenated roots).
template <Granule G>
struct Ds {
  static constexpr u64 kPage = page_size(G);
  static constexpr u64 kL2 = level_size(G, 2);
  // Above 2^48 (4K: IA[51:48] = 0x5; 16K: 0x2), 1 GiB into it.
  static constexpr u64 kBase = (u64{G == Granule::k4K ? 0xa : 0x5} << 47) + (u64{1} << 30);
  static constexpr unsigned kIa = G == Granule::k4K ? 52 : 51;
  static constexpr u64 kSpan = G == Granule::k4K ? 4 * kL2 : kL2;  // 2048 pages of each

  Env<G> env;
  typename Env<G>::S2 t;
  explicit Ds(bool range = true) : t(env.stage2(kIa, cpu(range))) {
    env.plat->set_regime_ds(2, true);  // VTCR_EL2.DS of the machine: what the hardware reads Xt with
    env.fill(256);
    EXPECT_TRUE(env.s2cfg->oa.ds());
    EXPECT_EQ(t.tlbi_range(), range);
    EXPECT_TRUE(t.map(kBase, kSpan, kDataBase, kRw, env.mc, {}));
    EXPECT_TRUE(t.split(kBase, kSpan, env.mc, true));
  }
  static CpuFeatures cpu(bool range) {
    CpuFeatures f = CpuFeatures::modern_52bit();
    f.tlbi_range = range;
    return f;
  }
  sim::Stage2Regs regs() const {
    return sim::Stage2Regs{env.s2cfg->vtcr, make_vttbr(*env.s2cfg, t.root_pa(), t.vmid()), t.fwb()};
  }
  sim::TlbModel tlb() const {
    sim::TlbModel m;
    for (u64 x = kBase; x < kBase + kSpan; x += kPage)
      m.fill(2, t.vmid(), G, sim::translate_stage2(env.mem, regs(), x, sim::Access::read, false, lpa2_cpu()));
    return m;
  }
  std::vector<sim::TlbModel::Entry> stale(const sim::TlbModel& m) const {
    return m.stale(env.mem, regs(), t.vmid(), lpa2_cpu());
  }
};

std::vector<sim::Event> tlbis(const sim::EventView& v) { return v.filter(sim::EventKind::tlbi); }

template <Granule G>
void unaligned_unmap_is_head_pages_then_aligned_ranges() {
  Ds<G> f;
  constexpr u64 kPage = Ds<G>::kPage;
  constexpr u64 k64 = 0x10000;
  const u64 per64 = k64 / kPage;  // 16 (4K) or 4 (16K)
  // Start one page past a 64 KiB boundary: per64 - 1 pages before the next one, then 128 KiB.
  // (At 4K that is 16 instructions, the most one batch issues before it flushes the VMID.)
  const u64 a = Ds<G>::kBase + 5 * k64 + kPage, n = (per64 - 1 + 2 * per64) * kPage;
  sim::TlbModel tlb = f.tlb();
  ASSERT_GT(tlb.size(), 0u);
  const auto m = f.env.plat->log().mark();
  ASSERT_TRUE(f.t.unmap(a, n));
  const auto ev = f.env.plat->log().since(m);
  const std::vector<sim::Event> ti = tlbis(ev);
  // per64 - 1 head pages by IPA, one 2 * per64-page range from the boundary, TLBI VMALLE1IS.
  ASSERT_EQ(ti.size(), per64 - 1 + 1 + 1) << ev.format();
  for (u64 i = 0; i + 1 < per64; ++i) {
    EXPECT_EQ(ti[i].tlbi_op, Tlbi::ipas2e1is) << i;
    EXPECT_EQ(ti[i].addr, a + i * kPage);
    EXPECT_EQ(ti[i].level, 3);
  }
  const sim::Event& r = ti[per64 - 1];
  EXPECT_EQ(r.tlbi_op, Tlbi::ripas2e1is);
  EXPECT_EQ(r.addr, Ds<G>::kBase + 6 * k64);
  EXPECT_EQ(r.addr % k64, 0u);
  EXPECT_EQ(r.size, 2 * k64);
  EXPECT_EQ(r.level, 3);
  EXPECT_EQ(ti[per64].tlbi_op, Tlbi::vmalle1is);
  tlb.apply(ev);
  EXPECT_TRUE(f.stale(tlb).empty());
  EXPECT_TRUE(f.env.plat->violations().empty());
}

TEST(RangeTlbiDs, FourKUnalignedUnmapIsHeadPagesThenAlignedRanges) {
  unaligned_unmap_is_head_pages_then_aligned_ranges<Granule::k4K>();
}
TEST(RangeTlbiDs, SixteenKUnalignedUnmapIsHeadPagesThenAlignedRanges) {
  unaligned_unmap_is_head_pages_then_aligned_ranges<Granule::k16K>();
}

// A run inside a larger operation starts its range at the 64 KiB boundary below it when that
// is still the operation's (fewer instructions than the head pages).
TEST(RangeTlbiDs, ARunInsideALargerOperationStartsAtTheBoundaryBelow) {
  Ds<Granule::k4K> f;
  constexpr u64 kPage = 4096;
  // Annotate a page so the walk's run of leaves starts mid-64K inside the operation's range.
  ASSERT_TRUE(f.t.set_owner(Ds<Granule::k4K>::kBase, 3 * kPage, 3, 0, f.env.mc));
  sim::TlbModel tlb = f.tlb();
  const auto m = f.env.plat->log().mark();
  ASSERT_TRUE(f.t.unmap(Ds<Granule::k4K>::kBase, 64 * kPage));
  const auto ev = f.env.plat->log().since(m);
  const std::vector<sim::Event> ti = tlbis(ev);
  ASSERT_EQ(ti.size(), 2u) << ev.format();
  EXPECT_EQ(ti[0].tlbi_op, Tlbi::ripas2e1is);
  EXPECT_EQ(ti[0].addr, Ds<Granule::k4K>::kBase);
  tlb.apply(ev);
  EXPECT_TRUE(f.stale(tlb).empty());
  EXPECT_TRUE(f.env.plat->violations().empty());
}

// Random scattered unmaps, annotations and write-protections of the page-mapped range: the
// operation's TLBIs leave nothing stale in a TLB filled with every page, range TLBIs are used,
// every range piece starts at a 64 KiB boundary, and the platform saw no misuse.
template <Granule G>
void no_stale_translation_after_any_operation() {
  Ds<G> f;
  constexpr u64 kPage = Ds<G>::kPage;
  const u64 span = Ds<G>::kSpan / kPage;
  const int ops = *rc::gen::inRange(1, 5);
  for (int i = 0; i < ops; ++i) {
    const u64 first = *rc::gen::inRange<u64>(0, span);
    const u64 n = *rc::gen::oneOf(rc::gen::inRange<u64>(1, span - first + 1),
                                  rc::gen::inRange<u64>(1, std::min<u64>(span - first, 40) + 1));
    const int kind = *rc::gen::inRange(0, 3);
    sim::TlbModel tlb = f.tlb();
    const auto m = f.env.plat->log().mark();
    const u64 a = Ds<G>::kBase + first * kPage;
    if (kind == 0) RC_ASSERT(f.t.unmap(a, n * kPage, f.env.mc).has_value());
    if (kind == 1) RC_ASSERT(f.t.set_owner(a, n * kPage, 3, 0, f.env.mc).has_value());
    if (kind == 2) RC_ASSERT(f.t.wrprotect(a, n * kPage, f.env.mc).has_value());
    const auto ev = f.env.plat->log().since(m);
    tlb.apply(ev);
    RC_ASSERT(f.stale(tlb).empty());
    for (const sim::Event& e : tlbis(ev)) {
      if (e.tlbi_op == Tlbi::ripas2e1is) {
        RC_ASSERT(e.addr % 0x10000 == 0);
        RC_TAG("range");
      }
    }
    RC_ASSERT(f.env.plat->violations().empty());
    f.env.fill(256);
  }
}

RC_GTEST_PROP(RangeTlbiDs, FourKLevelMinusOneNoStaleTranslation, ()) {
  no_stale_translation_after_any_operation<Granule::k4K>();
}
RC_GTEST_PROP(RangeTlbiDs, SixteenKNoStaleTranslation, ()) {
  no_stale_translation_after_any_operation<Granule::k16K>();
}

// The table's range TLBIs carry DS: sent as if DS were 0 to a DS = 1 regime, the hardware's
// range starts elsewhere, the platform reports it, and the TLB keeps stale entries.
TEST(RangeTlbiDs, ARangeScaledForTheWrongDsLeavesStaleTranslations) {
  Ds<Granule::k4K> f;
  sim::TlbModel tlb = f.tlb();
  const auto m = f.env.plat->log().mark();
  ASSERT_TRUE(f.t.unmap(Ds<Granule::k4K>::kBase + 0x10000, 0x40000));
  const auto ev = f.env.plat->log().since(m);
  // Replay the operation's range TLBIs built without DS (what an engine or platform ignoring
  // TlbiRange::ds would issue) to the same machine, whose regime has DS = 1.
  std::vector<sim::Event> ranges;
  for (const sim::Event& e : ev) {
    if (e.kind == sim::EventKind::tlbi && e.tlbi_op == Tlbi::ripas2e1is) ranges.push_back(e);
    else tlb.apply(e);
  }
  ASSERT_FALSE(ranges.empty()) << ev.format();
  ASSERT_TRUE(f.env.plat->violations().empty());
  const auto m2 = f.env.plat->log().mark();
  for (const sim::Event& e : ranges)
    f.env.plat->tlbi_range(e.tlbi_op, e.vmid, TlbiRange{e.addr, e.tlbi_scale, e.tlbi_num, static_cast<i8>(e.level), false});
  EXPECT_FALSE(f.env.plat->violations().empty());
  tlb.apply(f.env.plat->log().since(m2));
  EXPECT_FALSE(f.stale(tlb).empty());
}

// Without FEAT_TLBIRANGE a DS table still goes by address (and the VMID past the threshold).
TEST(RangeTlbiDs, WithoutTheFeatureNoRangeForms) {
  Ds<Granule::k4K> f(false);
  sim::TlbModel tlb = f.tlb();
  const auto m = f.env.plat->log().mark();
  ASSERT_TRUE(f.t.unmap(Ds<Granule::k4K>::kBase + 0x3000, 9 * 4096));
  const auto ev = f.env.plat->log().since(m);
  for (const sim::Event& e : tlbis(ev)) EXPECT_FALSE(arch::is_range(e.tlbi_op));
  tlb.apply(ev);
  EXPECT_TRUE(f.stale(tlb).empty());
}

}  // namespace
