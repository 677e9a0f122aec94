// VTCR_EL2, TCR_EL2, VTTBR_EL2 and the CPU features they depend on.
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include "ptguard/arch/regs.hpp"

using namespace ptguard;
using namespace ptguard::arch;

namespace {

TEST(Vtcr, FieldsDescribeTheTable) {
  for (Granule g : kAllGranules) {
    for (unsigned ia = kMinIaBits; ia <= kMaxIaBits; ++ia) {
      const auto cfg = make_stage2_config(g, ia, CpuFeatures::modern());
      ASSERT_TRUE(cfg.has_value()) << ia;
      const u64 v = cfg->vtcr;
      EXPECT_EQ(TcrT0sz::get(v), 64 - ia);
      EXPECT_EQ(start_level_from_sl0(g, VtcrSl0::get(v)), cfg->geometry.start_level);
      Granule back{};
      ASSERT_TRUE(granule_from_tg0(TcrTg0::get(v), &back));
      EXPECT_EQ(back, g);
      EXPECT_EQ(TcrIrgn0::get(v), 0b01u);
      EXPECT_EQ(TcrOrgn0::get(v), 0b01u);
      EXPECT_EQ(TcrSh0::get(v), 0b11u);
      EXPECT_EQ(pa_bits_from_range(TcrPs::get(v)), 48u);
      EXPECT_TRUE(VtcrVs::get(v));
      EXPECT_TRUE(TcrHa::get(v));
      EXPECT_EQ(v & kVtcrRes1, kVtcrRes1);
    }
  }
}

TEST(Vtcr, FeaturesDecidePsVsHa) {
  CpuFeatures cpu;
  cpu.pa_bits = 40;
  cpu.vmid_bits = 8;
  cpu.hw_access_flag = false;
  const auto cfg = make_stage2_config(Granule::k4K, 40, cpu);
  ASSERT_TRUE(cfg);
  EXPECT_EQ(TcrPs::get(cfg->vtcr), 0b010u);
  EXPECT_FALSE(VtcrVs::get(cfg->vtcr));
  EXPECT_FALSE(TcrHa::get(cfg->vtcr));
  EXPECT_EQ(cfg->vmid_bits, 8u);
  // The user may decline HA and VS even where the CPU has them.
  WalkOptions opt;
  opt.use_hw_access_flag = false;
  opt.use_16bit_vmid = false;
  const auto cfg2 = make_stage2_config(Granule::k4K, 40, CpuFeatures::modern(), opt);
  ASSERT_TRUE(cfg2);
  EXPECT_FALSE(TcrHa::get(cfg2->vtcr));
  EXPECT_FALSE(VtcrVs::get(cfg2->vtcr));
  // 52-bit PA CPUs get a 48-bit PS unless 52-bit addresses are asked for (lpa2_test.cpp).
  cpu = CpuFeatures{};
  cpu.pa_bits = 52;
  EXPECT_EQ(TcrPs::get(make_stage2_config(Granule::k64K, 48, cpu)->vtcr), 0b101u);
}

TEST(Vtcr, RefusesWhatCannotBeBuilt) {
  EXPECT_EQ(make_stage2_config(Granule::k4K, 24, CpuFeatures{}).error(), Error::einval);
  EXPECT_EQ(make_stage2_config(Granule::k4K, 53, CpuFeatures::modern_52bit()).error(), Error::einval);
  CpuFeatures small;
  small.pa_bits = 36;
  EXPECT_EQ(make_stage2_config(Granule::k4K, 40, small).error(), Error::erange);
  EXPECT_TRUE(make_stage2_config(Granule::k4K, 36, small).has_value());
  CpuFeatures no16k;
  no16k.granule_s2[static_cast<unsigned>(Granule::k16K)] = false;
  EXPECT_EQ(make_stage2_config(Granule::k16K, 40, no16k).error(), Error::eopnotsupp);
  EXPECT_TRUE(make_stage1_config(Granule::k16K, 40, no16k).has_value());
}

TEST(Tcr, Stage1El2) {
  for (Granule g : kAllGranules) {
    for (unsigned va = kMinIaBits; va <= kMaxIaBits; ++va) {
      const auto cfg = make_stage1_config(g, va, CpuFeatures::modern());
      ASSERT_TRUE(cfg);
      EXPECT_EQ(TcrT0sz::get(cfg->tcr), 64 - va);
      EXPECT_EQ(cfg->tcr & kTcrEl2Res1, kTcrEl2Res1);
      EXPECT_EQ(cfg->start_level, stage1_start_level(g, va));
      EXPECT_EQ(cfg->mair, kMairEl2);
    }
  }
  EXPECT_EQ(make_stage1_config(Granule::k4K, 53, CpuFeatures{}).error(), Error::einval);
  EXPECT_EQ(make_stage1_config(Granule::k4K, 50, CpuFeatures{}).error(), Error::eopnotsupp);
}

TEST(Features, FromIdRegisters) {
  // PARange 0b0101 (48 bits), TGran4 supported, TGran16 0b0001 (supported), TGran64 0b1111
  // (not), TGran4_2 0b0010 (supported at stage 2), TGran16_2 0b0001 (not at stage 2),
  // TGran64_2 0 (as stage 1: not).
  const u64 mmfr0 = Mmfr0PaRange::make(0b0101) | Mmfr0TGran16::make(0b0001) |
                    Mmfr0TGran64::make(0xf) | Mmfr0TGran4_2::make(0b0010) |
                    Mmfr0TGran16_2::make(0b0001);
  const u64 mmfr1 = Mmfr1Hafdbs::make(0b0010) | Mmfr1VmidBits::make(0b0010);
  const u64 mmfr2 = Mmfr2Fwb::make(1);
  const u64 ctr = CtrDic::make(1);
  const CpuFeatures f = CpuFeatures::from_id_regs(mmfr0, mmfr1, mmfr2, ctr);
  EXPECT_EQ(f.pa_bits, 48u);
  EXPECT_EQ(f.vmid_bits, 16u);
  EXPECT_TRUE(f.hw_access_flag);
  EXPECT_TRUE(f.fwb);
  EXPECT_TRUE(f.dic);
  EXPECT_FALSE(f.idc);
  EXPECT_TRUE(f.supports(Granule::k4K, 1));
  EXPECT_TRUE(f.supports(Granule::k4K, 2));
  EXPECT_TRUE(f.supports(Granule::k16K, 1));
  EXPECT_FALSE(f.supports(Granule::k16K, 2));
  EXPECT_FALSE(f.supports(Granule::k64K, 1));
  EXPECT_FALSE(f.supports(Granule::k64K, 2));
  const CpuFeatures old = CpuFeatures::from_id_regs(Mmfr0PaRange::make(0b0010), 0, 0, 0);
  EXPECT_EQ(old.pa_bits, 40u);
  EXPECT_EQ(old.vmid_bits, 8u);
  EXPECT_FALSE(old.hw_access_flag);
  EXPECT_FALSE(old.fwb);
}

// FEAT_LPA2 and FEAT_LPA in ID_AA64MMFR0_EL1 (D24.2): TGran4 0b0001 and TGran16 0b0010 give
// 4K and 16K 52-bit addresses at stage 1, the stage-2 fields 0b0011 (or 0b0000: as stage 1);
// 64K has them with a 52-bit PARange (FEAT_LPA).
TEST(Features, FiftyTwoBitAddressesFromIdRegisters) {
  // Every 52-bit feature: PARange 52, TGran4 0b0001, TGran16 0b0010, TGran4_2/16_2 0b0011, TGran64 0.
  const u64 max = Mmfr0PaRange::make(0b0110) | Mmfr0TGran4::make(0b0001) | Mmfr0TGran16::make(0b0010) |
                  Mmfr0TGran4_2::make(0b0011) | Mmfr0TGran16_2::make(0b0011) | Mmfr0TGran64_2::make(0b0010);
  const CpuFeatures f = CpuFeatures::from_id_regs(max, 0, 0, 0);
  EXPECT_EQ(f.pa_bits, 52u);
  for (Granule g : {Granule::k4K, Granule::k16K, Granule::k64K})
    for (int stage : {1, 2}) {
      EXPECT_TRUE(f.supports(g, stage)) << static_cast<int>(g) << " " << stage;
      EXPECT_TRUE(f.supports_52bit(g, stage)) << static_cast<int>(g) << " " << stage;
    }
  // Stage-2 fields 0b0000 follow stage 1.
  const CpuFeatures as_s1 = CpuFeatures::from_id_regs(
      Mmfr0PaRange::make(0b0110) | Mmfr0TGran4::make(0b0001) | Mmfr0TGran16::make(0b0010), 0, 0, 0);
  EXPECT_TRUE(as_s1.supports_52bit(Granule::k4K, 2));
  EXPECT_TRUE(as_s1.supports_52bit(Granule::k16K, 2));
  // Stage 2 supported without 52 bits (0b0010) while stage 1 has them.
  const CpuFeatures s2_48 = CpuFeatures::from_id_regs(Mmfr0TGran4_2::put(max, 0b0010), 0, 0, 0);
  EXPECT_TRUE(s2_48.supports(Granule::k4K, 2));
  EXPECT_FALSE(s2_48.supports_52bit(Granule::k4K, 2));
  EXPECT_TRUE(s2_48.supports_52bit(Granule::k4K, 1));
  // A 48-bit CPU: 4K and 16K supported, no 52-bit addresses anywhere (64K needs PARange 52).
  const CpuFeatures cpu48 = CpuFeatures::from_id_regs(Mmfr0PaRange::make(0b0101) | Mmfr0TGran16::make(0b0001), 0, 0, 0);
  for (Granule g : {Granule::k4K, Granule::k16K, Granule::k64K})
    for (int stage : {1, 2}) EXPECT_FALSE(cpu48.supports_52bit(g, stage));
  // What Debian's QEMU 7.2 reports for -cpu max (the EL2 image prints it: "cpu mmfr0
  // 0x32310201126"): PARange 52, TGran4 0b0001, TGran16 0b0010, TGran4_2 and TGran16_2 0b0011,
  // TGran64_2 0b0010: FEAT_LPA2 and FEAT_LPA with every granule at both stages.
  const CpuFeatures qemu = CpuFeatures::from_id_regs(0x32310201126ull, 0, 0, 0);
  EXPECT_EQ(qemu.pa_bits, 52u);
  for (Granule g : {Granule::k4K, Granule::k16K, Granule::k64K})
    for (int stage : {1, 2}) EXPECT_TRUE(qemu.supports_52bit(g, stage));
  // Defaults and modern(): none (modern_52bit() has them all).
  EXPECT_FALSE(CpuFeatures{}.supports_52bit(Granule::k4K, 2));
  EXPECT_FALSE(CpuFeatures::modern().supports_52bit(Granule::k4K, 2));
}

RC_GTEST_PROP(Vttbr, HoldsRootAndVmid, (u64 root, u16 vmid)) {
  const u64 aligned = root & bit_range(47, 12);
  const u64 v = make_vttbr(aligned, vmid);
  RC_ASSERT((v & TtbrBaddr::kMask) == aligned);
  RC_ASSERT(VttbrVmid::get(v) == vmid);
  RC_ASSERT(!TtbrCnp::get(v));
}

TEST(PaRange, EncodingsRoundTrip) {
  for (u64 e = 0; e <= 0b110; ++e) EXPECT_EQ(pa_range_from_bits(pa_bits_from_range(e)), e);
  EXPECT_EQ(pa_range_from_bits(41), 0b010u);  // the largest size not above 41 bits is 40
  EXPECT_EQ(pa_bits_from_range(0b111), 56u);  // FEAT_D128's 56 bits
  // A CPU reporting more than 48 bits still gets tables, with a 48-bit PS.
  const CpuFeatures big = CpuFeatures::from_id_regs(Mmfr0PaRange::make(0b0111), 0, 0, 0);
  const auto cfg = make_stage2_config(Granule::k4K, 48, big);
  ASSERT_TRUE(cfg.has_value());
  EXPECT_EQ(TcrPs::get(cfg->vtcr), 0b101u);
}

TEST(Features, DefaultsAreTheConservativeMinimum) {
  const CpuFeatures f;
  EXPECT_FALSE(f.fwb);
  EXPECT_FALSE(f.hw_access_flag);
  EXPECT_EQ(f.vmid_bits, 8u);
  EXPECT_EQ(f.pa_bits, 40u);
  const auto cfg = make_stage2_config(Granule::k4K, 40, f);
  ASSERT_TRUE(cfg.has_value());
  EXPECT_FALSE(cfg->fwb);
  EXPECT_FALSE(TcrHa::get(cfg->vtcr));
  EXPECT_FALSE(VtcrVs::get(cfg->vtcr));
}

TEST(Walks, NonCacheableWalksAreRecorded) {
  WalkOptions nc;
  nc.cache = WalkCache::non_cacheable;
  const auto s2 = make_stage2_config(Granule::k4K, 40, CpuFeatures::modern(), nc);
  ASSERT_TRUE(s2.has_value());
  EXPECT_FALSE(s2->walk_cacheable);
  EXPECT_EQ(TcrSh0::get(s2->vtcr), 0u);
  EXPECT_EQ(TcrIrgn0::get(s2->vtcr), 0u);
  const auto s1 = make_stage1_config(Granule::k4K, 40, CpuFeatures::modern(), nc);
  ASSERT_TRUE(s1.has_value());
  EXPECT_FALSE(s1->walk_cacheable);
  EXPECT_TRUE(make_stage1_config(Granule::k4K, 40, CpuFeatures::modern())->walk_cacheable);
}

}  // namespace
