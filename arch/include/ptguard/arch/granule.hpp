// Translation granules, lookup levels and block sizes of VMSAv8-64.
//
// Arm ARM (DDI 0487) D8.2 "Translation tables and the translation process": with a granule of
// 2^G bytes, every table is one granule of 8-byte descriptors, so each lookup level resolves
// G - 3 bits of the input address; the last level (3) resolves bits [G + G-3 - 1 : G].
//
// Scope: 48-bit input and output addresses, and 52-bit ones with FEAT_LPA2 (4K and 16K, TCR/
// VTCR.DS = 1; with 4K a 52-bit input needs the level -1 lookup, which level_shift() and
// level_index() compute like any other level) and FEAT_LPA (64K, a 52-bit PARange). The larger
// blocks they would allow (4K level 0, 16K level 1, 64K level 1: D8.3.1 "Block descriptor",
// with DS = 1 or FEAT_LPA) are not used: block_allowed() stays the 48-bit rule, so ptguard
// never writes one and classify() reports one as the 48-bit architecture would, a translation
// fault. The architecture never requires a table to use a block.
#pragma once

#include "ptguard/arch/bits.hpp"

namespace ptguard::arch {

/// The translation granule (D8.2.1). The enumerators' values are not the TG0 encodings;
/// see regs.hpp for those.
enum class Granule : u8 { k4K, k16K, k64K };

inline constexpr Granule kAllGranules[] = {Granule::k4K, Granule::k16K, Granule::k64K};

/// The last lookup level, where page descriptors live.
inline constexpr int kLastLevel = 3;
/// Smallest and largest input-address sizes the library supports (TxSZ 39..16 without
/// FEAT_TTST or FEAT_LVA).
inline constexpr unsigned kMinIaBits = 25;
inline constexpr unsigned kMaxIaBits = 48;
/// Largest output-address size of the 48-bit descriptor format (no FEAT_LPA/LPA2).
inline constexpr unsigned kMaxOaBits = 48;
/// Largest input- and output-address sizes with FEAT_LPA2 (4K, 16K: TxSZ down to 12, D24.2
/// TCR_EL2.T0SZ / VTCR_EL2.T0SZ) or FEAT_LPA (64K, stage 2 and output addresses).
inline constexpr unsigned kMaxIaBits52 = 52;
inline constexpr unsigned kMaxOaBits52 = 52;

/// log2 of the granule size: 12, 14 or 16.
[[nodiscard]] constexpr unsigned page_shift(Granule g) {
  switch (g) {
    case Granule::k4K: return 12;
    case Granule::k16K: return 14;
    case Granule::k64K: return 16;
  }
  return 12;
}

[[nodiscard]] constexpr u64 page_size(Granule g) { return u64{1} << page_shift(g); }

/// Input-address bits resolved by one full table: 9, 11 or 13 (a table holds 2^n descriptors).
[[nodiscard]] constexpr unsigned bits_per_level(Granule g) { return page_shift(g) - 3; }

/// Descriptors in one full table.
[[nodiscard]] constexpr unsigned entries_per_table(Granule g) { return 1u << bits_per_level(g); }

/// The lowest input-address bit a descriptor at `level` resolves; equally, log2 of the size a
/// block or page descriptor at that level maps.
[[nodiscard]] constexpr unsigned level_shift(Granule g, int level) {
  return page_shift(g) + static_cast<unsigned>(kLastLevel - level) * bits_per_level(g);
}

/// The size of the region one descriptor at `level` maps (the block size, or the page size at
/// level 3).
[[nodiscard]] constexpr u64 level_size(Granule g, int level) {
  return u64{1} << level_shift(g, level);
}

/// Index of the descriptor for `ia` in a full table at `level`.
[[nodiscard]] constexpr unsigned level_index(Granule g, int level, u64 ia) {
  return static_cast<unsigned>((ia >> level_shift(g, level)) & (entries_per_table(g) - 1));
}

/// Whether a level may hold a block descriptor (D8.3.1 "Block descriptor"; without FEAT_LPA
/// and FEAT_LPA2): 4K at levels 1 (1 GiB) and 2 (2 MiB), 16K at level 2 (32 MiB), 64K at
/// level 2 (512 MiB). Level 3 holds pages, not blocks.
[[nodiscard]] constexpr bool block_allowed(Granule g, int level) {
  switch (g) {
    case Granule::k4K: return level == 1 || level == 2;
    case Granule::k16K: return level == 2;
    case Granule::k64K: return level == 2;
  }
  return false;
}

/// Whether `level` may hold a leaf (a block, or a page at level 3).
[[nodiscard]] constexpr bool leaf_allowed(Granule g, int level) {
  return level == kLastLevel || block_allowed(g, level);
}

/// The highest (coarsest) level that may hold a block.
[[nodiscard]] constexpr int first_block_level(Granule g) { return g == Granule::k4K ? 1 : 2; }

/// The number of lookup levels a single-table walk (stage 1) needs for `ia_bits`:
/// ceil((ia_bits - page_shift) / bits_per_level).
[[nodiscard]] constexpr int levels_for(Granule g, unsigned ia_bits) {
  const unsigned resolved = ia_bits > page_shift(g) ? ia_bits - page_shift(g) : 0;
  return static_cast<int>((resolved + bits_per_level(g) - 1) / bits_per_level(g));
}

/// The initial lookup level of a stage-1 walk over `ia_bits` (D8.2.6 "The initial lookup
/// level"): the level whose table resolves the top bits of the address.
[[nodiscard]] constexpr int stage1_start_level(Granule g, unsigned ia_bits) {
  return kLastLevel + 1 - levels_for(g, ia_bits);
}

/// Descriptors actually used in the root table when the walk starts at `level` over
/// `ia_bits` and the root is not concatenated (may be fewer than a full table).
[[nodiscard]] constexpr u64 root_entries(Granule g, int level, unsigned ia_bits) {
  const unsigned shift = level_shift(g, level);
  return ia_bits > shift ? u64{1} << (ia_bits - shift) : 1;
}

/// Compile-time view of one granule, for code that is instantiated per granule (the engine,
/// typed descriptor constructors). A level that cannot hold a block has no block size: asking
/// for one does not compile.
template <Granule G>
struct GranuleTraits {
  static constexpr Granule kGranule = G;
  static constexpr unsigned kPageShift = page_shift(G);
  static constexpr u64 kPageSize = page_size(G);
  static constexpr unsigned kBitsPerLevel = bits_per_level(G);
  static constexpr unsigned kEntries = entries_per_table(G);

  template <int Level>
  static constexpr bool kBlockAllowed = block_allowed(G, Level);

  /// The size a block at `Level` maps; only declared where the architecture allows a block.
  template <int Level>
    requires(block_allowed(G, Level))
  static constexpr u64 kBlockSize = level_size(G, Level);
};

// Block sizes the issue and the architecture state (D8.3.1), pinned at compile time.
static_assert(GranuleTraits<Granule::k4K>::kBlockSize<1> == (u64{1} << 30));
static_assert(GranuleTraits<Granule::k4K>::kBlockSize<2> == (u64{1} << 21));
static_assert(GranuleTraits<Granule::k16K>::kBlockSize<2> == (u64{1} << 25));
static_assert(GranuleTraits<Granule::k64K>::kBlockSize<2> == (u64{1} << 29));
static_assert(!block_allowed(Granule::k4K, 0) && !block_allowed(Granule::k4K, 3));
static_assert(!block_allowed(Granule::k16K, 1) && !block_allowed(Granule::k64K, 1));
static_assert(stage1_start_level(Granule::k4K, 48) == 0);
static_assert(stage1_start_level(Granule::k4K, 39) == 1);
static_assert(stage1_start_level(Granule::k4K, 25) == 2);
static_assert(stage1_start_level(Granule::k16K, 48) == 0);
static_assert(stage1_start_level(Granule::k16K, 47) == 1);
static_assert(stage1_start_level(Granule::k16K, 25) == 3);
static_assert(stage1_start_level(Granule::k64K, 48) == 1);
static_assert(stage1_start_level(Granule::k64K, 42) == 2);
static_assert(stage1_start_level(Granule::k64K, 29) == 3);
// 52-bit inputs (FEAT_LPA2): 4K starts at level -1, whose table resolves IA[51:48] (D8.2,
// "the level -1 lookup"); 16K at level 0, resolving IA[51:47].
static_assert(stage1_start_level(Granule::k4K, 52) == -1 && level_shift(Granule::k4K, -1) == 48);
static_assert(stage1_start_level(Granule::k4K, 49) == -1 && root_entries(Granule::k4K, -1, 49) == 2);
static_assert(stage1_start_level(Granule::k16K, 52) == 0 && root_entries(Granule::k16K, 0, 52) == 32);
static_assert(level_index(Granule::k4K, -1, u64{0xa} << 48) == 0xa);

}  // namespace ptguard::arch
