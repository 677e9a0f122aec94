// 52-bit addresses in arch/: the descriptor address formats (FEAT_LPA2 with 4K/16K and DS = 1,
// FEAT_LPA with 64K), the VTCR_EL2 / TCR_EL2 / VTTBR_EL2 values the builders make for them, and
// the refusals. Arm ARM DDI 0487: D8.3.1 ("52-bit output addresses"), D8.2 (level -1, and the
// concatenated initial lookup), D24.2 (VTCR_EL2.DS/SL2, TCR_EL2.DS, the TTBRs' BADDR[51:48]).
// Expected values are written from the architecture's layout here, not from OaFormat.
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include "ptguard/arch/descriptor.hpp"
#include "ptguard/arch/regs.hpp"

using namespace ptguard;
using namespace ptguard::arch;

namespace {

// The descriptor a 52-bit address `a` (aligned to 2^lo) takes, bit by bit from the Arm ARM.
u64 ds_bits(u64 a, unsigned lo) {
  u64 d = 0;
  for (unsigned b = lo; b <= 49; ++b) d |= ((a >> b) & 1) << b;  // [49:lo] in place
  d |= ((a >> 50) & 1) << 8;                                       // OA[50] in bit 8
  d |= ((a >> 51) & 1) << 9;                                       // OA[51] in bit 9
  return d;
}
u64 lpa64_bits(u64 a, unsigned lo) {
  u64 d = 0;
  for (unsigned b = lo; b <= 47; ++b) d |= ((a >> b) & 1) << b;  // [47:lo] in place
  for (unsigned b = 48; b <= 51; ++b) d |= ((a >> b) & 1) << (b - 36);  // OA[51:48] in [15:12]
  return d;
}

RC_GTEST_PROP(OaFormat, DsLeavesAndTablesMatchTheArchitectureAndRoundTrip, (u64 raw_pa, u8 lvl, bool g16)) {
  const Granule g = g16 ? Granule::k16K : Granule::k4K;
  const int level = 1 + lvl % 3;  // 1..3
  const unsigned lo = level_shift(g, level);
  const u64 pa = raw_pa & bit_range(51, lo);
  const u64 leaf = S2Leaf::make(g, level, pa, kOa52Ds).raw();
  RC_ASSERT((leaf & ~u64{0b11}) == ds_bits(pa, lo));
  RC_ASSERT(S2Leaf(leaf).output_address(g, level, kOa52Ds) == pa);
  RC_ASSERT(S1Leaf(S1Leaf::make(g, level, pa, kOa52Ds).raw()).output_address(g, level, kOa52Ds) == pa);
  const u64 tpa = raw_pa & bit_range(51, page_shift(g));
  const TableDesc t = TableDesc::make(g, tpa, kOa52Ds);
  RC_ASSERT((t.raw() & ~u64{0b11}) == ds_bits(tpa, page_shift(g)));
  RC_ASSERT(t.next_table(g, kOa52Ds) == tpa);
  // Attribute bits in the descriptor do not leak into the address.
  RC_ASSERT(TableDesc(t.raw() | DescSw::kMask | bit_range(63, 59) | bit_range(7, 2)).next_table(g, kOa52Ds) == tpa);
}

RC_GTEST_PROP(OaFormat, Lpa64LeavesAndTablesMatchTheArchitectureAndRoundTrip, (u64 raw_pa, bool block)) {
  constexpr Granule g = Granule::k64K;
  const int level = block ? 2 : 3;
  const unsigned lo = level_shift(g, level);
  const u64 pa = raw_pa & bit_range(51, lo);
  const u64 leaf = S2Leaf::make(g, level, pa, kOa52Lpa64).raw();
  RC_ASSERT((leaf & ~u64{0b11}) == lpa64_bits(pa, lo));
  RC_ASSERT(S2Leaf(leaf | kOa52Lpa64.hi_field * 0).output_address(g, level, kOa52Lpa64) == pa);
  const u64 tpa = raw_pa & bit_range(51, 16);
  RC_ASSERT(TableDesc::make(g, tpa, kOa52Lpa64).next_table(g, kOa52Lpa64) == tpa);
  RC_ASSERT((TableDesc::make(g, tpa, kOa52Lpa64).raw() & ~u64{0b11}) == lpa64_bits(tpa, 16));
}

RC_GTEST_PROP(OaFormat, FormatsAgreeBelow48Bits, (u64 raw_pa)) {
  for (Granule g : kAllGranules) {
    const u64 pa = raw_pa & bit_range(47, page_shift(g));
    const OaFormat f = oa_format(g, true);
    RC_ASSERT(f.encode(pa, page_shift(g)) == kOa48.encode(pa, page_shift(g)));
    RC_ASSERT(S2Leaf::make(g, kLastLevel, pa, f).raw() == S2Leaf::make(g, kLastLevel, pa).raw());
  }
}

TEST(OaFormat, SoftwareBitsAndAnnotationsKeepClearOfTheAddressBits) {
  // Valid leaves: SW0..SW3 (58:55) and the attribute fields the engine keeps stay outside every
  // address format (D8.3.1.2). A leaf's SW bits survive the highest 52-bit address.
  const u64 top = bit_range(51, 12);
  EXPECT_EQ(S2Leaf::make(Granule::k4K, 3, top, kOa52Ds).with_sw(0xf).sw(), 0xf);
  EXPECT_EQ(S2Leaf::make(Granule::k4K, 3, top, kOa52Ds).with_sw(0xf).output_address(Granule::k4K, 3, kOa52Ds), top);
  EXPECT_EQ(S2Leaf::make(Granule::k64K, 3, bit_range(51, 16), kOa52Lpa64).with_sw(0xa).sw(), 0xa);
  // Invalid entries: the MMU ignores every bit but bit 0 (D8.3.1), so the annotation layout is
  // the same with 52-bit addresses; an owner id and the SW bits stay where they were.
  const InvalidDesc a = InvalidDesc::annotation(0xffff'ffff, 0xf).with_locked(true).with_poisoned(true);
  EXPECT_EQ(a.owner(), 0xffff'ffffu);
  EXPECT_EQ(a.sw(), 0xf);
  EXPECT_FALSE(DescValid::get(a.raw()));
  EXPECT_EQ(kOa52Ds.descriptor_bits(12) & DescSw::kMask, 0u);
  EXPECT_EQ(kOa52Lpa64.descriptor_bits(16) & DescSw::kMask, 0u);
  EXPECT_FALSE(kOa52Ds.leaf_has_sh());
  EXPECT_TRUE(kOa52Lpa64.leaf_has_sh());
  EXPECT_TRUE(kOa48.leaf_has_sh());
}

TEST(Vtcr52, FourKAtLevelMinusOne) {
  for (unsigned ia = 49; ia <= 52; ++ia) {
    const auto cfg = make_stage2_config(Granule::k4K, ia, CpuFeatures::modern_52bit());
    ASSERT_TRUE(cfg.has_value()) << ia;
    const u64 v = cfg->vtcr;
    EXPECT_EQ(cfg->geometry.start_level, -1);
    EXPECT_EQ(cfg->geometry.root_tables, 1u);
    EXPECT_EQ(TcrT0sz::get(v), 64u - ia);
    EXPECT_EQ(VtcrSl0::get(v), 0u) << "level -1: SL0 = 0b00 with SL2 = 1";
    EXPECT_EQ((v >> 33) & 1, 1u) << "SL2";
    EXPECT_EQ((v >> 32) & 1, 1u) << "DS";
    EXPECT_EQ(TcrPs::get(v), 0b110u);
    EXPECT_EQ(TcrSh0::get(v), 0b11u);
    EXPECT_EQ(cfg->pa_bits, 52u);
    EXPECT_EQ(cfg->oa, kOa52Ds);
    EXPECT_TRUE(cfg->tlbi_range) << "range TLBIs with DS = 1 too (BaseADDR in 64 KiB units: TlbiRange::ds)";
  }
  // Pinned: 4K, 52-bit IPA, 52-bit PA, VS, HA, WBWA inner-shareable walks: T0SZ 12, SL0 0,
  // IRGN0/ORGN0 01, SH0 11, TG0 00, PS 110, VS, HA, RES1 bit 31, DS (32), SL2 (33).
  EXPECT_EQ(make_stage2_config(Granule::k4K, 52, CpuFeatures::modern_52bit())->vtcr, 0x3'802e'350cull);
}

TEST(Vtcr52, SixteenKAndSixtyFourK) {
  const CpuFeatures cpu = CpuFeatures::modern_52bit();
  // 16K: level 1 with 4, 8, 16 concatenated tables at 49..51 bits (SL0 0b10), level 0 at 52
  // (SL0 0b11, only with DS = 1).
  for (unsigned ia = 49; ia <= 51; ++ia) {
    const auto c = make_stage2_config(Granule::k16K, ia, cpu);
    ASSERT_TRUE(c);
    EXPECT_EQ(c->geometry.start_level, 1);
    EXPECT_EQ(c->geometry.root_tables, 1u << (ia - 47));
    EXPECT_EQ(VtcrSl0::get(c->vtcr), 0b10u);
    EXPECT_EQ((c->vtcr >> 32) & 3, 1u) << "DS, no SL2";
  }
  const auto c16 = make_stage2_config(Granule::k16K, 52, cpu);
  ASSERT_TRUE(c16);
  EXPECT_EQ(c16->geometry.start_level, 0);
  EXPECT_EQ(VtcrSl0::get(c16->vtcr), 0b11u);
  // 64K: FEAT_LPA, no DS (it has no effect with 64K and ptguard leaves it 0): level 1, one table.
  for (unsigned ia = 49; ia <= 52; ++ia) {
    const auto c = make_stage2_config(Granule::k64K, ia, cpu);
    ASSERT_TRUE(c);
    EXPECT_EQ(c->geometry.start_level, 1);
    EXPECT_EQ(c->geometry.root_tables, 1u);
    EXPECT_EQ(VtcrSl0::get(c->vtcr), 0b10u);
    EXPECT_EQ((c->vtcr >> 32) & 3, 0u);
    EXPECT_EQ(TcrPs::get(c->vtcr), 0b110u);
    EXPECT_EQ(c->oa, kOa52Lpa64);
    EXPECT_TRUE(c->tlbi_range) << "no DS: range TLBIs as usual";
  }
}

TEST(Vtcr52, FiftyTwoBitPaWithA48BitIpaIsAskedFor) {
  WalkOptions opt;
  opt.pa_52bit = true;
  opt.cache = WalkCache::non_cacheable;
  const auto c = make_stage2_config(Granule::k4K, 40, CpuFeatures::modern_52bit(), opt);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->geometry.start_level, 1);
  EXPECT_EQ(TcrPs::get(c->vtcr), 0b110u);
  EXPECT_EQ((c->vtcr >> 32) & 1, 1u);
  EXPECT_EQ(TcrSh0::get(c->vtcr), 0b11u) << "with DS = 1 SH0 is the leaves' shareability";
  // Without the option a 52-bit CPU still gets the 48-bit format it always had.
  const auto d = make_stage2_config(Granule::k4K, 40, CpuFeatures::modern_52bit());
  ASSERT_TRUE(d);
  EXPECT_EQ(TcrPs::get(d->vtcr), 0b101u);
  EXPECT_EQ((d->vtcr >> 32) & 3, 0u);
  EXPECT_EQ(d->oa, kOa48);
}

TEST(Vtcr52, RefusedWithoutTheFeature) {
  // A 48-bit CPU, and a 52-bit PA without FEAT_LPA2: EOPNOTSUPP for 4K/16K, as is 64K without
  // FEAT_LPA. Malformed sizes stay EINVAL.
  CpuFeatures no_lpa2 = CpuFeatures::modern();
  no_lpa2.pa_bits = 52;
  for (Granule g : {Granule::k4K, Granule::k16K}) {
    EXPECT_EQ(make_stage2_config(g, 49, CpuFeatures::modern()).error(), Error::eopnotsupp);
    EXPECT_EQ(make_stage2_config(g, 52, no_lpa2).error(), Error::eopnotsupp);
    EXPECT_EQ(make_stage1_config(g, 52, no_lpa2).error(), Error::eopnotsupp);
    WalkOptions opt;
    opt.pa_52bit = true;
    EXPECT_EQ(make_stage2_config(g, 40, no_lpa2, opt).error(), Error::eopnotsupp);
  }
  CpuFeatures only4k = CpuFeatures::modern_52bit();
  only4k.lpa_s2[static_cast<unsigned>(Granule::k64K)] = false;
  only4k.lpa_s2[static_cast<unsigned>(Granule::k16K)] = false;
  EXPECT_TRUE(make_stage2_config(Granule::k4K, 52, only4k).has_value());
  EXPECT_EQ(make_stage2_config(Granule::k64K, 52, only4k).error(), Error::eopnotsupp);
  EXPECT_EQ(make_stage2_config(Granule::k16K, 50, only4k).error(), Error::eopnotsupp);
  EXPECT_EQ(make_stage2_config(Granule::k4K, 53, CpuFeatures::modern_52bit()).error(), Error::einval);
  EXPECT_EQ(make_stage1_config(Granule::k4K, 53, CpuFeatures::modern_52bit()).error(), Error::einval);
  // FEAT_LPA2 with a 48-bit PARange: the IPA cannot exceed the PA size.
  CpuFeatures pa48 = CpuFeatures::modern_52bit();
  pa48.pa_bits = 48;
  EXPECT_EQ(make_stage2_config(Granule::k4K, 50, pa48).error(), Error::erange);
  // Stage 1 with 64K above 48 bits of VA would need FEAT_LVA.
  EXPECT_EQ(make_stage1_config(Granule::k64K, 52, CpuFeatures::modern_52bit()).error(), Error::eopnotsupp);
}

TEST(Tcr52, Stage1El2) {
  const auto c = make_stage1_config(Granule::k4K, 52, CpuFeatures::modern_52bit());
  ASSERT_TRUE(c);
  EXPECT_EQ(c->start_level, -1);
  EXPECT_EQ(TcrT0sz::get(c->tcr), 12u);
  EXPECT_EQ((c->tcr >> 32) & 1, 1u) << "TCR_EL2.DS";
  EXPECT_EQ(TcrPs::get(c->tcr), 0b110u);
  EXPECT_EQ(c->oa, kOa52Ds);
  const auto c16 = make_stage1_config(Granule::k16K, 52, CpuFeatures::modern_52bit());
  ASSERT_TRUE(c16);
  EXPECT_EQ(c16->start_level, 0);
  WalkOptions opt;
  opt.pa_52bit = true;
  const auto c64 = make_stage1_config(Granule::k64K, 48, CpuFeatures::modern_52bit(), opt);
  ASSERT_TRUE(c64);
  EXPECT_EQ(c64->oa, kOa52Lpa64);
  EXPECT_EQ((c64->tcr >> 32) & 1, 0u);
  EXPECT_EQ(TcrPs::get(c64->tcr), 0b110u);
}

RC_GTEST_PROP(Vttbr52, HoldsA52BitBase, (u64 root, u16 vmid)) {
  const auto cfg = make_stage2_config(Granule::k4K, 52, CpuFeatures::modern_52bit());
  RC_ASSERT(cfg.has_value());
  const u64 base = root & bit_range(51, 12);
  const u64 v = make_vttbr(*cfg, base, vmid);
  // BADDR[47:6] in place, BADDR[51:48] in [5:2], VMID in [63:48] (D24.2 VTTBR_EL2).
  const u64 back = (v & bit_range(47, 6)) | (((v >> 2) & 0xf) << 48);
  RC_ASSERT(back == base);
  RC_ASSERT((v >> 48) == vmid);
  RC_ASSERT((v & 0b11) == 0u);
  // A 48-bit configuration keeps the old layout.
  const auto c48 = make_stage2_config(Granule::k4K, 48, CpuFeatures::modern());
  RC_ASSERT(make_vttbr(*c48, base & bit_range(47, 12), vmid) == make_vttbr(base & bit_range(47, 12), vmid));
}

}  // namespace
