// Control registers that describe a translation table to the MMU, built from the CPU's features.
//
//   VTCR_EL2, VTTBR_EL2  stage-2 (DDI 0487K.a D24.2, register descriptions; D8.2 for the start
//                        level and concatenated tables, "Concatenated translation tables")
//   TCR_EL2, TTBR0_EL2,  stage-1 EL2 without VHE (HCR_EL2.E2H = 0)
//   MAIR_EL2             see memattr.hpp
//   ID_AA64MMFR0/1/2_EL1, CTR_EL0  the features that decide PS, VS, HA, FWB and cache maintenance
#pragma once

#include "ptguard/arch/bits.hpp"
#include "ptguard/arch/descriptor.hpp"
#include "ptguard/arch/error.hpp"
#include "ptguard/arch/granule.hpp"
#include "ptguard/arch/memattr.hpp"

namespace ptguard::arch {

// ---------------------------------------------------------------------------------------------
// CPU features.
// ---------------------------------------------------------------------------------------------
using Mmfr0PaRange = Field<3, 0>;    ///< ID_AA64MMFR0_EL1.PARange
using Mmfr0TGran16 = Field<23, 20>;  ///< 16K at stage 1: 0b0000 no, 0b0001 yes, 0b0010 with 52-bit addresses (FEAT_LPA2)
using Mmfr0TGran64 = Field<27, 24>;  ///< 0b0000 supported, 0b1111 not
using Mmfr0TGran4 = Field<31, 28>;   ///< 4K at stage 1: 0b0000 yes, 0b0001 with 52-bit addresses (FEAT_LPA2), 0b1111 no
/// Stage 2 (TGran16_2, TGran64_2, TGran4_2): 0b0000 as the stage-1 field, 0b0001 no, 0b0010
/// yes, 0b0011 with 52-bit addresses (FEAT_LPA2; 4K and 16K only).
using Mmfr0TGran16_2 = Field<35, 32>;
using Mmfr0TGran64_2 = Field<39, 36>;
using Mmfr0TGran4_2 = Field<43, 40>;
using Mmfr1Hafdbs = Field<3, 0>;     ///< 0b0001 hardware AF, 0b0010 AF and dirty state
using Mmfr1VmidBits = Field<7, 4>;   ///< 0b0000 8-bit VMID, 0b0010 16-bit
using Mmfr1Xnx = Field<31, 28>;      ///< FEAT_XNX: stage-2 XN[0] distinguishes EL1 and EL0
using Mmfr2Fwb = Field<43, 40>;      ///< FEAT_S2FWB
using Isar0Tlb = Field<59, 56>;      ///< ID_AA64ISAR0_EL1.TLB: 0b0001 outer-shareable TLBIs,
                                     ///< 0b0010 those and the range forms (FEAT_TLBIRANGE)
using CtrIdc = Bit<28>;              ///< CTR_EL0.IDC: no D-cache clean to PoU for coherence
using CtrDic = Bit<29>;              ///< CTR_EL0.DIC: no I-cache invalidation for coherence

/// PARange / PS encodings and the physical-address size they stand for.
[[nodiscard]] constexpr unsigned pa_bits_from_range(u64 encoding) {
  switch (encoding) {
    case 0b000: return 32;
    case 0b001: return 36;
    case 0b010: return 40;
    case 0b011: return 42;
    case 0b100: return 44;
    case 0b101: return 48;
    case 0b110: return 52;
    default: return 56;  // 0b0111 (FEAT_D128); later encodings are at least as large
  }
}

/// The PS encoding for a physical-address size (the largest encoding not above `bits`).
[[nodiscard]] constexpr u64 pa_range_from_bits(unsigned bits) {
  u64 enc = 0;
  for (u64 e = 0; e <= 0b110; ++e)
    if (pa_bits_from_range(e) <= bits) enc = e;
  return enc;
}

/// What the table builders need to know about the CPU. Fill it from the ID registers with
/// from_id_regs(). A default-constructed CpuFeatures is deliberately conservative (the
/// Armv8.0 minimum: 40-bit PA, 8-bit VMIDs, no hardware access flag, no FWB), so that skipping
/// the ID registers can never give a CPU an encoding it does not implement (an FWB MemAttr on a
/// CPU without FEAT_S2FWB is a silently wrong memory type). modern() describes a recent CPU
/// (and QEMU's `-cpu max`) for tests and the simulator.
struct CpuFeatures {
  unsigned pa_bits = 40;        ///< physical-address size (PARange); the builders cap it at 48
                                ///< unless a configuration asks for 52-bit addresses
  unsigned vmid_bits = 8;       ///< 8 or 16
  bool hw_access_flag = false;  ///< FEAT_HAFDBS: the MMU can set AF itself (VTCR/TCR.HA)
  bool fwb = false;             ///< FEAT_S2FWB: stage 2 can force write-back (HCR_EL2.FWB)
  bool xnx = false;             ///< FEAT_XNX
  bool dic = false;             ///< CTR_EL0.DIC
  bool idc = false;             ///< CTR_EL0.IDC
  bool tlbi_range = false;      ///< FEAT_TLBIRANGE: TLBI RIPAS2E1IS, RVAE2IS, RVALE2IS
  bool granule_s1[3] = {true, true, true};  ///< stage-1 support, indexed by Granule
  bool granule_s2[3] = {true, true, true};  ///< stage-2 support, indexed by Granule
  /// 52-bit addresses with the granule at stage 1 / stage 2, indexed by Granule: FEAT_LPA2 for
  /// 4K and 16K (TCR_EL2.DS / VTCR_EL2.DS), FEAT_LPA for 64K (a 52-bit PARange). A 52-bit
  /// configuration (make_stage2_config, make_stage1_config) is refused where they are false.
  bool lpa_s1[3] = {false, false, false};
  bool lpa_s2[3] = {false, false, false};

  /// A recent CPU: 48-bit PA, 16-bit VMIDs, hardware access flag, FWB, range TLBIs, every
  /// granule.
  [[nodiscard]] static constexpr CpuFeatures modern() {
    CpuFeatures f;
    f.pa_bits = 48;
    f.vmid_bits = 16;
    f.hw_access_flag = true;
    f.fwb = true;
    f.tlbi_range = true;
    return f;
  }

  /// modern() with a 52-bit PA, FEAT_LPA2 (4K and 16K) and FEAT_LPA (64K) at both stages, as
  /// QEMU's `-cpu max` reports them.
  [[nodiscard]] static constexpr CpuFeatures modern_52bit() {
    CpuFeatures f = modern();
    f.pa_bits = 52;
    for (unsigned g = 0; g < 3; ++g) f.lpa_s1[g] = f.lpa_s2[g] = true;
    return f;
  }

  [[nodiscard]] constexpr bool supports(Granule g, int stage) const {
    return (stage == 1 ? granule_s1 : granule_s2)[static_cast<unsigned>(g)];
  }
  /// Whether the granule can translate 52-bit addresses at that stage (lpa_s1, lpa_s2).
  [[nodiscard]] constexpr bool supports_52bit(Granule g, int stage) const {
    return (stage == 1 ? lpa_s1 : lpa_s2)[static_cast<unsigned>(g)];
  }

  /// Reads the features from raw ID_AA64MMFR0_EL1, ID_AA64MMFR1_EL1, ID_AA64MMFR2_EL1,
  /// CTR_EL0 and ID_AA64ISAR0_EL1 values (without the last: no range TLBIs).
  [[nodiscard]] static constexpr CpuFeatures from_id_regs(u64 mmfr0, u64 mmfr1, u64 mmfr2, u64 ctr,
                                                          u64 isar0 = 0) {
    CpuFeatures f;
    f.pa_bits = pa_bits_from_range(Mmfr0PaRange::get(mmfr0));
    f.vmid_bits = Mmfr1VmidBits::get(mmfr1) == 0b0010 ? 16 : 8;
    f.hw_access_flag = Mmfr1Hafdbs::get(mmfr1) >= 1;
    f.fwb = Mmfr2Fwb::get(mmfr2) >= 1;
    f.xnx = Mmfr1Xnx::get(mmfr1) >= 1;
    f.dic = CtrDic::get(ctr);
    f.idc = CtrIdc::get(ctr);
    f.tlbi_range = Isar0Tlb::get(isar0) >= 0b0010;
    const bool s1_4k = Mmfr0TGran4::get(mmfr0) != 0xf;
    const bool s1_16k = Mmfr0TGran16::get(mmfr0) != 0;
    const bool s1_64k = Mmfr0TGran64::get(mmfr0) != 0xf;
    f.granule_s1[0] = s1_4k;
    f.granule_s1[1] = s1_16k;
    f.granule_s1[2] = s1_64k;
    auto s2 = [](u64 field, bool s1) { return field == 0 ? s1 : field >= 0b0010; };
    f.granule_s2[0] = s2(Mmfr0TGran4_2::get(mmfr0), s1_4k);
    f.granule_s2[1] = s2(Mmfr0TGran16_2::get(mmfr0), s1_16k);
    f.granule_s2[2] = s2(Mmfr0TGran64_2::get(mmfr0), s1_64k);
    // 52-bit addresses. FEAT_LPA2: TGran4 = 0b0001, TGran16 = 0b0010 at stage 1; the stage-2
    // fields 0b0011, or 0b0000 (as stage 1). FEAT_LPA (64K): PARange 0b0110, 52 bits.
    const bool pa52 = f.pa_bits >= 52;
    f.lpa_s1[0] = Mmfr0TGran4::get(mmfr0) == 0b0001;
    f.lpa_s1[1] = Mmfr0TGran16::get(mmfr0) == 0b0010;
    f.lpa_s1[2] = s1_64k && pa52;
    auto s2_52 = [](u64 field, bool s1) { return field == 0 ? s1 : field == 0b0011; };
    f.lpa_s2[0] = s2_52(Mmfr0TGran4_2::get(mmfr0), f.lpa_s1[0]);
    f.lpa_s2[1] = s2_52(Mmfr0TGran16_2::get(mmfr0), f.lpa_s1[1]);
    f.lpa_s2[2] = f.granule_s2[2] && pa52;
    return f;
  }
};

// ---------------------------------------------------------------------------------------------
// Fields shared by VTCR_EL2 and TCR_EL2 (E2H = 0) for the TTBR0/VTTBR walk.
// ---------------------------------------------------------------------------------------------
using TcrT0sz = Field<5, 0>;     ///< T0SZ: the input-address size is 64 - T0SZ
using VtcrSl0 = Field<7, 6>;     ///< SL0 (VTCR only): the initial lookup level
using TcrIrgn0 = Field<9, 8>;    ///< inner cacheability of table walks
using TcrOrgn0 = Field<11, 10>;  ///< outer cacheability of table walks
using TcrSh0 = Field<13, 12>;    ///< shareability of table walks
using TcrTg0 = Field<15, 14>;    ///< granule: 0b00 4K, 0b01 64K, 0b10 16K
using TcrPs = Field<18, 16>;     ///< PS: output (physical) address size, PARange encoding
using VtcrVs = Bit<19>;          ///< VS (VTCR only): 16-bit VMID
using TcrTbi = Bit<20>;          ///< TBI (TCR_EL2 only): top byte ignored
using TcrHa = Bit<21>;           ///< HA: hardware access-flag update
using TcrHd = Bit<22>;           ///< HD: hardware dirty-state update
/// DS (TCR_EL2 with E2H = 0, and VTCR_EL2; FEAT_LPA2): 52-bit addresses with 4K and 16K: OA[51:50]
/// in descriptor bits [9:8], no SH field in leaves (SH0 gives the shareability), TxSZ down to
/// 12, the level -1 lookup with 4K and 16K's SL0 = 0b11 (level 0) at stage 2. RES0 without it.
using TcrDs = Bit<32>;
/// SL2 (VTCR_EL2 only, FEAT_LPA2 with DS = 1 and 4K): with SL0 = 0b00, the walk starts at level
/// -1 (VTCR_EL2 in D24.2; AArch64.S2StartLevel). RES0 otherwise.
using VtcrSl2 = Bit<33>;
inline constexpr u64 kVtcrRes1 = Bit<31>::kMask;
inline constexpr u64 kTcrEl2Res1 = Bit<31>::kMask | Bit<23>::kMask;

/// Table-walk cacheability, IRGN0/ORGN0 encodings.
enum class WalkCache : u8 { non_cacheable = 0b00, wb_wa = 0b01, wt = 0b10, wb_nwa = 0b11 };

[[nodiscard]] constexpr u64 tg0_encoding(Granule g) {
  switch (g) {
    case Granule::k4K: return 0b00;
    case Granule::k64K: return 0b01;
    case Granule::k16K: return 0b10;
  }
  return 0;
}

/// The granule TG0 selects; false for the reserved encoding 0b11.
[[nodiscard]] constexpr bool granule_from_tg0(u64 tg0, Granule* out) {
  switch (tg0) {
    case 0b00: *out = Granule::k4K; return true;
    case 0b01: *out = Granule::k64K; return true;
    case 0b10: *out = Granule::k16K; return true;
    default: return false;
  }
}

/// VTCR_EL2.SL0 for a start level: for 4K, 0b00 level 2, 0b01 level 1, 0b10 level 0; for
/// 16K and 64K, 0b00 level 3, 0b01 level 2, 0b10 level 1, 0b11 level 0 (16K only).
[[nodiscard]] constexpr u64 sl0_encoding(Granule g, int start_level) {
  return static_cast<u64>((g == Granule::k4K ? 2 : 3) - start_level);
}

/// The start level an SL0 value selects, or -1 for a reserved value: 4K SL0 = 0b11 needs
/// FEAT_TTST, 16K SL0 = 0b11 needs FEAT_LPA2 (VTCR_EL2.DS), 64K SL0 = 0b11 is reserved
/// (AArch64.S2InvalidSL). Whether a level-0 start is allowed also depends on the PA size (4K
/// SL0 = 0b10 needs 44 bits, 16K SL0 = 0b10 42 bits); the reference MMU checks that.
[[nodiscard]] constexpr int start_level_from_sl0(Granule g, u64 sl0) {
  if (sl0 == 0b11) return -1;
  if (g == Granule::k4K) return 2 - static_cast<int>(sl0);
  return 3 - static_cast<int>(sl0);
}
static_assert(start_level_from_sl0(Granule::k16K, 0b11) == -1);
static_assert(start_level_from_sl0(Granule::k4K, 0b10) == 0);

/// Largest number of concatenated tables at the stage-2 initial lookup level (D8.2.7).
inline constexpr unsigned kMaxConcatenatedTables = 16;

/// The shape of a stage-2 table for an IPA size, by Linux's rule: the fewest lookup levels that
/// need at most 16 concatenated root tables, and never fewer than two levels. Two levels are
/// impossible only where the IPA space fits in one last-level table (16K with 25 bits, 64K
/// with 25 to 29 bits); there the walk starts at level 3 with a single table.
struct Stage2Geometry {
  Granule granule;
  unsigned ia_bits;
  int start_level;
  unsigned root_tables;  ///< concatenated root tables: 1, 2, 4, 8 or 16

  [[nodiscard]] constexpr u64 root_bytes() const { return u64{root_tables} * page_size(granule); }
  /// log2 of root_tables: the platform allocates 2^order contiguous, naturally aligned pages.
  [[nodiscard]] constexpr unsigned root_order() const {
    unsigned o = 0;
    while ((1u << o) < root_tables) ++o;
    return o;
  }
};

[[nodiscard]] constexpr Stage2Geometry stage2_geometry(Granule g, unsigned ia_bits) {
  // 4K with an IPA above 48 bits (FEAT_LPA2): the level -1 lookup, one root table of
  // 2^(ia_bits - 48) entries (VTCR_EL2.SL2 = 1, SL0 = 0b00). Level 0 with 2..16 concatenated
  // tables would also be valid (Linux's choice: one lookup fewer); ptguard starts at level -1,
  // so the root is one page and the walk the architecture's own five levels.
  if (g == Granule::k4K && ia_bits > kMaxIaBits) return Stage2Geometry{g, ia_bits, -1, 1};
  // Up to 16 tables (4 more bits) are resolved at the first level by concatenation.
  int levels = levels_for(g, ia_bits > 4 ? ia_bits - 4 : 0);
  if (levels < 2) levels = 2;
  int start = kLastLevel + 1 - levels;
  if (ia_bits <= level_shift(g, start)) start = kLastLevel;  // the space fits one L3 table
  const unsigned table_span = level_shift(g, start) + bits_per_level(g);
  const unsigned root = ia_bits > table_span ? 1u << (ia_bits - table_span) : 1u;
  return Stage2Geometry{g, ia_bits, start, root};
}

static_assert(stage2_geometry(Granule::k4K, 40).start_level == 1);
static_assert(stage2_geometry(Granule::k4K, 40).root_tables == 2);
static_assert(stage2_geometry(Granule::k4K, 43).root_tables == 16);
static_assert(stage2_geometry(Granule::k4K, 44).start_level == 0);
static_assert(stage2_geometry(Granule::k4K, 48).root_tables == 1);
static_assert(stage2_geometry(Granule::k4K, 25).start_level == 2);
static_assert(stage2_geometry(Granule::k16K, 40).start_level == 2);
static_assert(stage2_geometry(Granule::k16K, 40).root_tables == 16);
static_assert(stage2_geometry(Granule::k16K, 48).start_level == 1);
static_assert(stage2_geometry(Granule::k16K, 48).root_tables == 2);
static_assert(stage2_geometry(Granule::k16K, 25).start_level == 3);
static_assert(stage2_geometry(Granule::k64K, 48).start_level == 1);
static_assert(stage2_geometry(Granule::k64K, 46).start_level == 2);
static_assert(stage2_geometry(Granule::k64K, 46).root_tables == 16);
static_assert(stage2_geometry(Granule::k64K, 29).start_level == 3);
// 52-bit IPAs: 4K at level -1 (one table), 16K at level 1 with 16 concatenated tables up to 51
// bits and level 0 (SL0 = 0b11, DS = 1) at 52, 64K at level 1 (one table of 1024 entries).
static_assert(stage2_geometry(Granule::k4K, 52).start_level == -1);
static_assert(stage2_geometry(Granule::k4K, 49).root_tables == 1);
static_assert(stage2_geometry(Granule::k16K, 51).start_level == 1);
static_assert(stage2_geometry(Granule::k16K, 51).root_tables == 16);
static_assert(stage2_geometry(Granule::k16K, 52).start_level == 0);
static_assert(stage2_geometry(Granule::k16K, 52).root_tables == 1);
static_assert(stage2_geometry(Granule::k64K, 52).start_level == 1);
static_assert(stage2_geometry(Granule::k64K, 52).root_tables == 1);

// ---------------------------------------------------------------------------------------------
// Builders.
// ---------------------------------------------------------------------------------------------

/// Options a user may change; the defaults are what Linux uses.
struct WalkOptions {
  /// Inner-shareable write-back table walks. With non_cacheable walks, every table write
  /// must be cleaned to the point of coherency before the MMU can see it; the engine reads
  /// walk_needs_cmo() to know.
  WalkCache cache = WalkCache::wb_wa;
  bool use_hw_access_flag = true;  ///< set HA when the CPU has it
  bool use_16bit_vmid = true;      ///< set VS when the CPU has it
  /// 52-bit output addresses even for an input size of at most 48 bits (an input size above
  /// 48 always implies them): PS = 0b110, and with 4K/16K DS = 1. Refused (EOPNOTSUPP) where
  /// the CPU lacks FEAT_LPA2 / FEAT_LPA for the granule.
  bool pa_52bit = false;
};

[[nodiscard]] constexpr bool walk_needs_cmo(const WalkOptions& o) {
  return o.cache == WalkCache::non_cacheable;
}

/// A stage-2 configuration: geometry, VTCR_EL2 and what it was built for.
struct Stage2Config {
  Stage2Geometry geometry;
  u64 vtcr;
  unsigned pa_bits;    ///< output-address size PS encodes
  unsigned vmid_bits;  ///< 8 or 16 (VS)
  bool fwb;            ///< HCR_EL2.FWB should be set (the CPU has FEAT_S2FWB)
  bool hw_access_flag;
  bool walk_cacheable;  ///< false: table writes must be cleaned to the point of coherency
  bool tlbi_range = false;  ///< the CPU has FEAT_TLBIRANGE: invalidate ranges by TLBI RIPAS2E1IS
  /// How descriptors hold addresses: kOa48, or the 52-bit format (52-bit addresses asked for).
  OaFormat oa = kOa48;
};

/// Builds VTCR_EL2 for a stage-2 table of `ia_bits` over granule `g`.
/// 52-bit addresses (ia_bits 49..52, or opt.pa_52bit): PS = 0b110 and the 52-bit descriptor
/// format (cfg.oa); with 4K/16K also DS = 1 (FEAT_LPA2), which takes the leaves' shareability
/// from SH0 (D8.3.1, "52-bit output addresses"), so SH0 is Inner Shareable then whatever the
/// walk cacheability (with non-cacheable walks SH0 does not matter to the walk: Arm ARM B2,
/// "Normal memory", treats Inner and Outer Non-cacheable memory as Outer Shareable); with 4K
/// and ia_bits > 48 the walk starts at level -1 (SL2 = 1, SL0 = 0b00).
/// Errors: EINVAL if ia_bits is outside 25..52; EOPNOTSUPP if the CPU lacks the granule at
/// stage 2, or 52-bit addresses with it (CpuFeatures::supports_52bit); ERANGE if ia_bits
/// exceeds the CPU's PA size (the IPA space cannot be larger than the PA space).
[[nodiscard]] constexpr Result<Stage2Config> make_stage2_config(Granule g, unsigned ia_bits,
                                                                const CpuFeatures& cpu,
                                                                const WalkOptions& opt = {}) {
  if (ia_bits < kMinIaBits || ia_bits > kMaxIaBits52) return fail(Error::einval);
  const bool pa52 = ia_bits > kMaxIaBits || opt.pa_52bit;
  if (pa52 && cpu.supports(g, 2) && !cpu.supports_52bit(g, 2)) return fail(Error::eopnotsupp);
  const unsigned pa_max = pa52 ? kMaxOaBits52 : kMaxOaBits;
  const unsigned pa_bits = cpu.pa_bits > pa_max ? pa_max : cpu.pa_bits;
  if (pa_bits < 32) return fail(Error::einval);
  if (ia_bits > pa_bits) return fail(Error::erange);
  if (!cpu.supports(g, 2)) return fail(Error::eopnotsupp);
  const Stage2Geometry geo = stage2_geometry(g, ia_bits);
  const bool ds = pa52 && g != Granule::k64K;
  const bool vs = opt.use_16bit_vmid && cpu.vmid_bits == 16;
  const bool ha = opt.use_hw_access_flag && cpu.hw_access_flag;
  const u64 walk_sh = opt.cache == WalkCache::non_cacheable && !ds ? 0b00 : 0b11;  // inner shareable
  u64 v = kVtcrRes1;
  v = TcrT0sz::put(v, 64 - ia_bits);
  // Level -1 is SL2 = 1 with SL0 = 0b00; every other start level is SL0 alone.
  v = VtcrSl0::put(v, geo.start_level < 0 ? 0 : sl0_encoding(g, geo.start_level));
  v = VtcrSl2::put(v, geo.start_level < 0);
  v = TcrIrgn0::put(v, static_cast<u64>(opt.cache));
  v = TcrOrgn0::put(v, static_cast<u64>(opt.cache));
  v = TcrSh0::put(v, walk_sh);
  v = TcrTg0::put(v, tg0_encoding(g));
  v = TcrPs::put(v, pa_range_from_bits(pa_bits));
  v = VtcrVs::put(v, vs);
  v = TcrHa::put(v, ha);
  v = TcrDs::put(v, ds);
  // Range TLBIs with DS = 1 count their BaseADDR in 64 KiB units whatever the granule: the
  // engine encodes them so (arch::TlbiRange::ds, from cfg.oa) and starts every range piece at a
  // 64 KiB boundary (maintenance.hpp, "52-bit addresses").
  return Stage2Config{geo,      v,   pa_bits, vs ? 16u : 8u, cpu.fwb, ha, !walk_needs_cmo(opt), cpu.tlbi_range,
                      oa_format(g, pa52)};
}

/// A stage-1 EL2 configuration (one TTBR, no VHE).
struct Stage1Config {
  Granule granule;
  unsigned ia_bits;
  int start_level;
  u64 tcr;
  u64 mair;  ///< MAIR_EL2 with the library's memory types (kMairEl2)
  unsigned pa_bits;
  bool hw_access_flag;
  bool walk_cacheable;  ///< false: table writes must be cleaned to the point of coherency
  bool tlbi_range = false;  ///< the CPU has FEAT_TLBIRANGE: invalidate ranges by TLBI RVA(L)E2IS
  /// How descriptors hold addresses: kOa48, or the 52-bit format (52-bit addresses asked for).
  OaFormat oa = kOa48;
};

/// Builds TCR_EL2 (E2H = 0) for a hypervisor VA space of `va_bits`, and MAIR_EL2 with the
/// library's memory types at their attr_index() slots (memattr.hpp). 52-bit addresses (va_bits
/// 49..52 with 4K/16K, or opt.pa_52bit): PS = 0b110, the 52-bit descriptor format, and with
/// 4K/16K TCR_EL2.DS = 1 (FEAT_LPA2; SH0 then Inner Shareable, as in make_stage2_config); with
/// 4K and va_bits > 48 the walk starts at level -1. Errors: EINVAL for va_bits outside 25..52;
/// EOPNOTSUPP if the CPU lacks the granule, 52-bit addresses with it, or for a VA above 48
/// bits with 64K (that is FEAT_LVA, which ptguard does not use).
[[nodiscard]] constexpr Result<Stage1Config> make_stage1_config(Granule g, unsigned va_bits,
                                                                const CpuFeatures& cpu,
                                                                const WalkOptions& opt = {}) {
  if (va_bits < kMinIaBits || va_bits > kMaxIaBits52) return fail(Error::einval);
  if (!cpu.supports(g, 1)) return fail(Error::eopnotsupp);
  const bool pa52 = va_bits > kMaxIaBits || opt.pa_52bit;
  if (pa52 && !cpu.supports_52bit(g, 1)) return fail(Error::eopnotsupp);
  if (va_bits > kMaxIaBits && g == Granule::k64K) return fail(Error::eopnotsupp);
  const unsigned pa_max = pa52 ? kMaxOaBits52 : kMaxOaBits;
  const unsigned pa_bits = cpu.pa_bits > pa_max ? pa_max : cpu.pa_bits;
  if (pa_bits < 32) return fail(Error::einval);
  const bool ds = pa52 && g != Granule::k64K;
  const bool ha = opt.use_hw_access_flag && cpu.hw_access_flag;
  u64 t = kTcrEl2Res1;
  t = TcrT0sz::put(t, 64 - va_bits);
  t = TcrIrgn0::put(t, static_cast<u64>(opt.cache));
  t = TcrOrgn0::put(t, static_cast<u64>(opt.cache));
  t = TcrSh0::put(t, opt.cache == WalkCache::non_cacheable && !ds ? 0b00 : 0b11);
  t = TcrTg0::put(t, tg0_encoding(g));
  t = TcrPs::put(t, pa_range_from_bits(pa_bits));
  t = TcrHa::put(t, ha);
  t = TcrDs::put(t, ds);
  // Range TLBIs with DS = 1 as in make_stage2_config.
  return Stage1Config{g, va_bits, stage1_start_level(g, va_bits), t, kMairEl2, pa_bits, ha,
                      !walk_needs_cmo(opt), cpu.tlbi_range, oa_format(g, pa52)};
}

// ---------------------------------------------------------------------------------------------
// Translation table base registers.
// ---------------------------------------------------------------------------------------------
using TtbrBaddr = Field<47, 1>;  ///< BADDR (bit 0 is CnP)
using TtbrCnp = Bit<0>;
/// With a 52-bit OA size (PS = 0b110 and DS = 1 or FEAT_LPA's 64K), BADDR[51:48] is held in
/// bits [5:2] and BADDR[47:6] in place: the base is at least 64-byte aligned (VTTBR_EL2 and
/// TTBR0_EL2 in D24.2, "BADDR" with FEAT_LPA / FEAT_LPA2).
using TtbrBaddr52Lo = Field<47, 6>;
using TtbrBaddr52Hi = Field<5, 2>;

/// The BADDR bits of a TTBR for a root at `root_pa`: the 48-bit layout, or with `pa52` the
/// 52-bit one.
[[nodiscard]] constexpr u64 ttbr_baddr(u64 root_pa, bool pa52) {
  if (!pa52) return root_pa & TtbrBaddr::kMask;
  return (root_pa & TtbrBaddr52Lo::kMask) | TtbrBaddr52Hi::make((root_pa >> 48) & 0xf);
}
using VttbrVmid = Field<63, 48>; ///< VMID; with VS = 0 only [55:48] are used, [63:56] RES0

/// VTTBR_EL2 for a root at `root_pa` (aligned to the root's size) and a VMID.
[[nodiscard]] constexpr u64 make_vttbr(u64 root_pa, u16 vmid) {
  return (root_pa & TtbrBaddr::kMask) | VttbrVmid::make(vmid);
}
/// TTBR0_EL2 for a root at `root_pa`.
[[nodiscard]] constexpr u64 make_ttbr0_el2(u64 root_pa) { return root_pa & TtbrBaddr::kMask; }
/// VTTBR_EL2 for a table of configuration `cfg`: the 52-bit BADDR layout where cfg.pa_bits is 52.
[[nodiscard]] constexpr u64 make_vttbr(const Stage2Config& cfg, u64 root_pa, u16 vmid) {
  return ttbr_baddr(root_pa, cfg.pa_bits == 52) | VttbrVmid::make(vmid);
}
/// TTBR0_EL2 for a table of configuration `cfg` (52-bit BADDR layout where cfg.pa_bits is 52).
[[nodiscard]] constexpr u64 make_ttbr0_el2(const Stage1Config& cfg, u64 root_pa) {
  return ttbr_baddr(root_pa, cfg.pa_bits == 52);
}

// ---------------------------------------------------------------------------------------------
// HCR_EL2 bits the library cares about.
// ---------------------------------------------------------------------------------------------
using HcrVm = Bit<0>;    ///< stage-2 translation enabled
using HcrFwb = Bit<46>;  ///< FEAT_S2FWB: stage 2 forces write-back, MemAttr as above

// A typical configuration pinned against hand-computed values: 4K granule, 40-bit IPA, 48-bit
// PA, 16-bit VMID, hardware AF: T0SZ 24 (0x18), SL0 = 1 (level 1, two concatenated tables),
// IRGN0 = ORGN0 = 01, SH0 = 11, TG0 = 00, PS = 0b101, VS, HA, RES1 bit 31.
static_assert(make_stage2_config(Granule::k4K, 40, CpuFeatures::modern())->vtcr == 0x802d'3558ull);
// TCR_EL2 for a 48-bit VA, 4K: T0SZ 16, WBWA inner-shareable walks, PS 48 bits, HA, RES1.
static_assert(make_stage1_config(Granule::k4K, 48, CpuFeatures::modern())->tcr == 0x80a5'3510ull);
// A 52-bit root above 2^48: BADDR[51:48] = 0xc in bits [5:2].
static_assert(ttbr_baddr(0x000c'0000'4000'0000ull, true) == 0x4000'0030ull);
static_assert(ttbr_baddr(0x0000'0000'4000'0000ull, true) == ttbr_baddr(0x4000'0000ull, false));

}  // namespace ptguard::arch
