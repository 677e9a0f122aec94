// The vocabulary of TLB maintenance, barriers and cache maintenance (DDI 0487K.a: D8.14 "TLB
// maintenance", C6.2 instruction descriptions of TLBI, DSB, ISB, DC and IC; B2.3 for the
// ordering rules). The engine names what it needs with these; the platform carries it out (real
// instructions at EL2, an event log in the simulator).
#pragma once

#include "ptguard/arch/bits.hpp"
#include "ptguard/arch/granule.hpp"

namespace ptguard::arch {

/// TLB invalidations the library issues. All are broadcast to the Inner Shareable domain.
enum class Tlbi : u8 {
  ipas2e1is,     ///< TLBI IPAS2E1IS: stage-2 entries for one IPA, current VMID (level hint)
  ripas2e1is,    ///< TLBI RIPAS2E1IS: stage-2 entries for an IPA range (FEAT_TLBIRANGE)
  vmalle1is,     ///< TLBI VMALLE1IS: all stage-1 (and combined) entries of the current VMID
  vmalls12e1is,  ///< TLBI VMALLS12E1IS: stage-1 and stage-2 entries of the current VMID
  vae2is,        ///< TLBI VAE2IS: EL2 entries for one VA (level hint)
  vale2is,       ///< TLBI VALE2IS: EL2 last-level entries for one VA (level hint)
  alle2is,       ///< TLBI ALLE2IS: all EL2 entries
  rvae2is,       ///< TLBI RVAE2IS: EL2 entries of any level for a VA range (FEAT_TLBIRANGE)
  rvale2is,      ///< TLBI RVALE2IS: EL2 last-level entries for a VA range (FEAT_TLBIRANGE)
};

/// Whether `op` is one of the range forms (FEAT_TLBIRANGE), which a platform carries out through
/// tlbi_range() with a TlbiRange operand, never through tlbi().
[[nodiscard]] constexpr bool is_range(Tlbi op) {
  return op == Tlbi::ripas2e1is || op == Tlbi::rvae2is || op == Tlbi::rvale2is;
}

/// A level hint of "unknown" (TTL = 0): used when a table entry is removed, because the TLB
/// may hold entries from any level below it (Linux fixes 36e008323926, f62d4c3eb687).
inline constexpr int kTlbiLevelUnknown = -1;

// ---- range invalidation (FEAT_TLBIRANGE) ---------------------------------------------------
//
// Arm ARM DDI 0487K.a, C5.5 (TLBI RIPAS2E1IS, RVAE2IS, RVALE2IS) and D8.14 "TLB maintenance"
// ("TLB range maintenance instructions"). The operand Xt of a range TLBI:
//   BaseADDR [36:0]  the first address of the range >> the granule's page shift (4K: IA[48:12],
//                    16K: IA[50:14], 64K: IA[52:16]); the range starts at a page boundary.
//                    With FEAT_LPA2 in use (the regime's TCR_EL2.DS / VTCR_EL2.DS = 1, 4K and
//                    16K only) it is IA[52:16] whatever the granule: 64 KiB units, so a range
//                    then starts at a 64 KiB boundary (see "52-bit addresses" below)
//   TTL      [38:37] the level of every leaf entry in the range: 0b01 level 1, 0b10 level 2,
//                    0b11 level 3; 0b00 entries of any level (and walk-cache entries, for the
//                    forms that are not "last level")
//   NUM      [43:39] and SCALE [45:44]: the range covers (NUM + 1) * 2^(5 * SCALE + 1) pages
//   TG       [47:46] the granule the range counts in: 0b01 4K, 0b10 16K, 0b11 64K (0b00 is
//                    reserved: the instruction would invalidate nothing reliably)
//   ASID/VMID[63:48] unused by the three forms here (stage 2 acts on VTTBR_EL2.VMID; EL2
//                    without E2H has no ASID)
// ID_AA64ISAR0_EL1.TLB (bits [59:56]) is 0b0010 when the range forms exist (CpuFeatures).
using TlbiRBaseAddr = Field<36, 0>;  ///< BaseADDR: first page number
using TlbiRTtl = Field<38, 37>;      ///< TTL: leaf level, 0 = any
using TlbiRNum = Field<43, 39>;      ///< NUM
using TlbiRScale = Field<45, 44>;    ///< SCALE
using TlbiRTg = Field<47, 46>;       ///< TG: granule of the range

// ---- 52-bit addresses (FEAT_LPA2, DS = 1) --------------------------------------------------
//
// With DS = 1 (TCR_EL2.DS for the EL2 regime, VTCR_EL2.DS for stage 2; 4K and 16K granules
// only) BaseADDR holds IA[52:16]: the address in units of 64 KiB whatever the granule, so that
// 37 bits reach every 52-bit address. NUM, SCALE and TG keep their meaning (the range still
// counts pages of the granule). A range TLBI can then only start at a 64 KiB boundary: the
// pages of a range before its first 64 KiB boundary are invalidated by address (IPAS2E1IS,
// VALE2IS, VAE2IS), the rest by range. The 64K granule gets 52-bit addresses from FEAT_LPA,
// not DS, and its BaseADDR is IA[52:16] already: nothing changes for it.
// Sources: the Arm ARM's TLBI RIPAS2E1IS / RVAE2IS / RVALE2IS pages (C5.5, "BaseADDR", with
// FEAT_LPA2); checked against QEMU's implementation (target/arm, tlbi_aa64_get_range: with the
// regime's effective DS the base is shifted by 16 instead of the granule's page shift, "the
// input address is perforce aligned on a 64k boundary regardless of translation granule") and
// the message of Linux commit c910f2b65518 ("arm64/mm: Update tlb invalidation routines for
// FEAT_LPA2": BADDR is in 64KB units when TCR.DS = 1; it invalidates by address up to the
// first 64KB boundary, then by range). The exact Arm ARM wording was not at hand when this was
// written.

/// The 64 KiB unit of BaseADDR with DS = 1.
inline constexpr u64 kTlbiRangeDsAlign = u64{1} << 16;

/// Whether DS changes the range operand of granule `g`: 4K and 16K (64K uses FEAT_LPA).
[[nodiscard]] constexpr bool tlbi_range_ds_applies(Granule g, bool ds) { return ds && g != Granule::k64K; }

/// The shift of BaseADDR: the granule's page shift, or 16 with DS = 1.
[[nodiscard]] constexpr unsigned tlbi_range_base_shift(Granule g, bool ds) {
  return tlbi_range_ds_applies(g, ds) ? 16u : page_shift(g);
}

/// One range TLBI as the architecture encodes it: (num + 1) << (5 * scale + 1) pages of the
/// table's granule from `addr`, every one a leaf of `level` (or kTlbiLevelUnknown: any level).
/// `ds`: the regime the TLBI targets has DS = 1 (FEAT_LPA2), so BaseADDR counts 64 KiB units
/// and `addr` must be 64 KiB aligned (with 4K or 16K; no effect with 64K).
struct TlbiRange {
  u64 addr = 0;  ///< first address (IPA or EL2 VA), page aligned (64 KiB aligned with ds)
  u8 scale = 0;  ///< SCALE, 0..3
  u8 num = 0;    ///< NUM, 0..31
  i8 level = -1; ///< the TTL level hint, or kTlbiLevelUnknown (-1)
  bool ds = false; ///< the target regime's TCR_EL2.DS / VTCR_EL2.DS (FEAT_LPA2)

  /// Pages the range covers.
  [[nodiscard]] constexpr u64 pages() const { return u64{num + 1u} << (5u * scale + 1u); }
  friend constexpr bool operator==(const TlbiRange&, const TlbiRange&) = default;
};

/// The most pages one range TLBI covers: NUM 31 at SCALE 3, 32 << 16 = 2^21 (8 GiB of 4K pages).
inline constexpr u64 kTlbiRangeMaxPages = u64{32} << 16;

/// The TTL field of a range TLBI for leaves of `level` with granule `g`: the level itself for
/// levels 1..3, else 0b00 "any level". Level 0 has no encoding, and 0b01 (level 1) is reserved
/// with the 16K granule without FEAT_LPA2; the engine never writes a 16K level-1 block (its
/// block rules are the 48-bit ones, even with DS = 1), so it is given no hint either way.
[[nodiscard]] constexpr u64 tlbi_range_ttl(Granule g, int level) {
  if (level < 1 || level > kLastLevel || (level == 1 && g == Granule::k16K)) return 0;
  return static_cast<u64>(level);
}

/// The TG field for granule `g`: 0b01 4K, 0b10 16K, 0b11 64K.
[[nodiscard]] constexpr u64 tlbi_range_tg(Granule g) {
  return g == Granule::k4K ? 0b01 : g == Granule::k16K ? 0b10 : 0b11;
}

/// Xt for a range TLBI over `r` with granule `g` (the layout above; BaseADDR in 64 KiB units
/// when r.ds and `g` is 4K or 16K: address bits below 16 are then dropped, so a caller passes
/// an aligned start, as tlbi_range_piece_at() gives).
[[nodiscard]] constexpr u64 tlbi_range_operand(Granule g, const TlbiRange& r) {
  return TlbiRBaseAddr::make(r.addr >> tlbi_range_base_shift(g, r.ds)) |
         TlbiRTtl::make(tlbi_range_ttl(g, r.level)) | TlbiRNum::make(r.num) |
         TlbiRScale::make(r.scale) | TlbiRTg::make(tlbi_range_tg(g));
}

/// What an operand means to a regime whose DS is `ds`: its range (the level from TTL, 0b00
/// giving kTlbiLevelUnknown; range.ds = `ds`) and the granule TG names (false for the reserved
/// TG 0b00). The hardware reads the operand with the target regime's DS, not with whatever the
/// issuer meant: an operand built for the other DS names another address.
struct TlbiRangeDecoded {
  TlbiRange range;
  Granule granule;
  bool valid;
};
[[nodiscard]] constexpr TlbiRangeDecoded decode_tlbi_range(u64 xt, bool ds = false) {
  const u64 tg = TlbiRTg::get(xt);
  const Granule g = tg == 0b01 ? Granule::k4K : tg == 0b10 ? Granule::k16K : Granule::k64K;
  const u64 ttl = TlbiRTtl::get(xt);
  TlbiRange r;
  r.ds = ds;
  r.addr = TlbiRBaseAddr::get(xt) << tlbi_range_base_shift(g, ds);
  r.scale = static_cast<u8>(TlbiRScale::get(xt));
  r.num = static_cast<u8>(TlbiRNum::get(xt));
  r.level = ttl == 0 ? static_cast<i8>(-1) : static_cast<i8>(ttl);
  return TlbiRangeDecoded{r, g, tg != 0};
}

/// The first instruction of a range of `pages` (>= 1) pages: the largest piece one range TLBI
/// can cover from its start. SCALE is tried from 3 down; at the first SCALE whose unit
/// 2^(5 * SCALE + 1) fits, NUM + 1 is as many units as fit, at most 32. What remains is below
/// that unit, so the next piece uses a smaller SCALE: a range of up to kTlbiRangeMaxPages
/// takes at most one piece per SCALE (four) plus, for an odd count, one last single page,
/// which no range encodes (the smallest is 2 pages): `range` is false for it, and it is a
/// by-address TLBI (IPAS2E1IS, VALE2IS, VAE2IS) with the level hint. Longer ranges repeat
/// full pieces of kTlbiRangeMaxPages.
struct TlbiRangePiece {
  bool range;  ///< false: a single page, by address
  u8 scale;
  u8 num;
  [[nodiscard]] constexpr u64 pages() const { return range ? (u64{num + 1u} << (5u * scale + 1u)) : 1; }
};
[[nodiscard]] constexpr TlbiRangePiece tlbi_range_piece(u64 pages) {
  for (int scale = 3; scale >= 0; --scale) {
    const unsigned shift = 5u * static_cast<unsigned>(scale) + 1u;
    const u64 units = pages >> shift;
    if (units == 0) continue;
    const u64 n = units > 32 ? 32 : units;
    return TlbiRangePiece{true, static_cast<u8>(scale), static_cast<u8>(n - 1)};
  }
  return TlbiRangePiece{false, 0, 0};
}

/// How many TLBI instructions tlbi_range_piece() splits `pages` pages into.
[[nodiscard]] constexpr u64 tlbi_range_instructions(u64 pages) {
  u64 n = 0;
  while (pages > 0) {
    if (pages >= kTlbiRangeMaxPages) {
      n += pages / kTlbiRangeMaxPages;
      pages %= kTlbiRangeMaxPages;
      continue;
    }
    pages -= tlbi_range_piece(pages).pages();
    ++n;
  }
  return n;
}

/// The first instruction of a range of `pages` (>= 1) pages of granule `g` from `addr`, in a
/// regime whose DS is `ds`: with DS = 1 (4K, 16K) and `addr` not 64 KiB aligned, one page by
/// address (`range` false); otherwise tlbi_range_piece(pages). Every piece tlbi_range_piece
/// gives, but a last single page, is a multiple of 2^(5 * SCALE + 1) pages, and SCALE only
/// falls from piece to piece; a SCALE >= 1 unit (64 pages) is a multiple of 64 KiB, and a
/// SCALE 0 piece is followed by at most the last single page. So after the head pages up to
/// the first 64 KiB boundary (at most 15 at 4K, 3 at 16K) every range piece starts aligned:
/// the head costs at most that many extra instructions, and nothing else changes.
[[nodiscard]] constexpr TlbiRangePiece tlbi_range_piece_at(Granule g, bool ds, u64 addr, u64 pages) {
  if (tlbi_range_ds_applies(g, ds) && (addr & (kTlbiRangeDsAlign - 1)) != 0) return TlbiRangePiece{false, 0, 0};
  return tlbi_range_piece(pages);
}

/// How many TLBI instructions tlbi_range_piece_at() splits `pages` pages from `addr` into.
[[nodiscard]] constexpr u64 tlbi_range_instructions(Granule g, bool ds, u64 addr, u64 pages) {
  u64 head = 0;
  if (tlbi_range_ds_applies(g, ds) && (addr & (kTlbiRangeDsAlign - 1)) != 0) {
    head = (kTlbiRangeDsAlign - (addr & (kTlbiRangeDsAlign - 1))) >> page_shift(g);
    if (head > pages) head = pages;
  }
  return head + tlbi_range_instructions(pages - head);
}

static_assert(TlbiRange{0, 3, 31, -1}.pages() == kTlbiRangeMaxPages);
// DS = 1: 16 pages of 4K from 0x1'0000'3000 are 13 by address, then a 3-page range (2 + 1).
static_assert(tlbi_range_instructions(Granule::k4K, true, 0x1'0000'3000ull, 16) == 13 + 2);
static_assert(tlbi_range_instructions(Granule::k4K, false, 0x1'0000'3000ull, 16) == 1);
static_assert(tlbi_range_instructions(Granule::k64K, true, 0x1'0001'0000ull, 3) == 2);
static_assert(!tlbi_range_piece_at(Granule::k16K, true, 0x4000, 8).range &&
              tlbi_range_piece_at(Granule::k16K, true, 0x10000, 8).range);
// DS = 1: BaseADDR = IA[52:16]; 2 MiB of 4K pages at 2^51 + 0x4000'0000, level 3.
static_assert(tlbi_range_operand(Granule::k4K, TlbiRange{(1ull << 51) | 0x4000'0000, 1, 7, 3, true}) ==
              ((1ull << 35 | 0x4000ull) | 3ull << 37 | 7ull << 39 | 1ull << 44 | 1ull << 46));
static_assert(decode_tlbi_range(tlbi_range_operand(Granule::k16K, TlbiRange{0x000f'ffff'fff0'0000ull, 0, 1, 3, true}), true)
                  .range == TlbiRange{0x000f'ffff'fff0'0000ull, 0, 1, 3, true});
static_assert(tlbi_range_piece(512).range && tlbi_range_piece(512).scale == 1 && tlbi_range_piece(512).num == 7);
static_assert(!tlbi_range_piece(1).range);
static_assert(tlbi_range_instructions(1) == 1 && tlbi_range_instructions(2) == 1 && tlbi_range_instructions(3) == 2);
static_assert(tlbi_range_instructions(kTlbiRangeMaxPages) == 1 && tlbi_range_instructions(kTlbiRangeMaxPages - 1) == 5);
// 2 MiB of 4K pages at 0x4000'0000, level 3: BaseADDR 0x40000, TTL 0b11, NUM 7, SCALE 1, TG 4K.
static_assert(tlbi_range_operand(Granule::k4K, TlbiRange{0x4000'0000, 1, 7, 3}) ==
              (0x40000ull | 3ull << 37 | 7ull << 39 | 1ull << 44 | 1ull << 46));

/// Barriers.
enum class Barrier : u8 {
  dsb_ishst,  ///< DSB ISHST: order descriptor writes before the TLBI that follows
  dsb_ish,    ///< DSB ISH: wait for TLBIs (and all memory accesses) to complete
  dsb_sy,
  isb,        ///< ISB: the PE sees the new translations from the next instruction
  dmb_ishst,  ///< DMB ISHST: order earlier stores before later stores, Inner Shareable (C6.2
              ///< DMB; B2.3): the entries of a fresh table before the descriptor that links it
};

/// Cache maintenance by address range.
enum class CacheOp : u8 {
  dc_civac,  ///< DC CIVAC: clean and invalidate data cache to the point of coherency
  dc_cvac,   ///< DC CVAC: clean data cache to the point of coherency (table writes when
             ///< walks are non-cacheable)
  ic_ivau,   ///< IC IVAU: invalidate instruction cache to the point of unification
};

[[nodiscard]] constexpr const char* name(Tlbi op) {
  switch (op) {
    case Tlbi::ipas2e1is: return "TLBI IPAS2E1IS";
    case Tlbi::ripas2e1is: return "TLBI RIPAS2E1IS";
    case Tlbi::vmalle1is: return "TLBI VMALLE1IS";
    case Tlbi::vmalls12e1is: return "TLBI VMALLS12E1IS";
    case Tlbi::vae2is: return "TLBI VAE2IS";
    case Tlbi::vale2is: return "TLBI VALE2IS";
    case Tlbi::alle2is: return "TLBI ALLE2IS";
    case Tlbi::rvae2is: return "TLBI RVAE2IS";
    case Tlbi::rvale2is: return "TLBI RVALE2IS";
  }
  return "TLBI ?";
}

[[nodiscard]] constexpr const char* name(Barrier b) {
  switch (b) {
    case Barrier::dsb_ishst: return "DSB ISHST";
    case Barrier::dsb_ish: return "DSB ISH";
    case Barrier::dsb_sy: return "DSB SY";
    case Barrier::isb: return "ISB";
    case Barrier::dmb_ishst: return "DMB ISHST";
  }
  return "?";
}

[[nodiscard]] constexpr const char* name(CacheOp c) {
  switch (c) {
    case CacheOp::dc_civac: return "DC CIVAC";
    case CacheOp::dc_cvac: return "DC CVAC";
    case CacheOp::ic_ivau: return "IC IVAU";
  }
  return "?";
}

}  // namespace ptguard::arch
