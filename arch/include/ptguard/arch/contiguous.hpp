// The Contiguous bit (bit 52 of a block or page descriptor, both stages): how many adjacent
// entries form one contiguous run at each granule and level.
//
// Arm ARM (DDI 0487) D8.6.1 "The Contiguous bit": software may set the bit on each entry of a
// naturally aligned run of adjacent entries of one table that map one naturally aligned,
// contiguous output range with the same attributes and permissions; the TLB may then hold the
// whole run as one entry. The run length depends on the granule and the lookup level:
//   4KB:  16 entries at levels 1, 2 and 3 (16 GB, 32 MB, 64 KB);
//   16KB: 32 entries at level 2 (1 GB), 128 at level 3 (2 MB);
//   64KB: 32 entries at levels 2 and 3 (16 GB, 2 MB).
// A run whose entries break these rules is misprogrammed (the TLB may then return any of the
// entries' translations, or a TLB conflict abort), and changing any entry of a run, the bit
// included, needs break-before-make over the whole run (D8.16.1, "Using break-before-make when
// updating translation table entries").
//
// The 4KB level-1 figure agrees with Linux's generic IOMMU page-table format for Armv8 (16
// entries at every 4KB level), a second, independent statement of the same fact.
//
// The levels FEAT_LPA/LPA2 add blocks to (4KB level 0, 16KB and 64KB level 1) hold no run here:
// the engine never writes those blocks (docs/pgtable.md, "52-bit addresses").
#pragma once

#include "ptguard/arch/granule.hpp"

namespace ptguard::arch {

/// Entries in one contiguous run of leaves at `level` (D8.6.1), or 0 where the library never
/// sets the hint (a level that holds no leaf, or one only FEAT_LPA/LPA2 gives blocks).
[[nodiscard]] constexpr unsigned contiguous_entries(Granule g, int level) {
  switch (g) {
    case Granule::k4K: return level >= 1 && level <= kLastLevel ? 16u : 0u;
    case Granule::k16K: return level == 2 ? 32u : level == kLastLevel ? 128u : 0u;
    case Granule::k64K: return level == 2 || level == kLastLevel ? 32u : 0u;
  }
  return 0;
}

/// Bytes of input (and output) address one contiguous run at `level` covers, 0 where there is
/// no run: the alignment both the run's first input address and its first output address need.
[[nodiscard]] constexpr u64 contiguous_size(Granule g, int level) {
  return u64{contiguous_entries(g, level)} * level_size(g, level);
}

// The run lengths and sizes of D8.6.1, pinned at compile time.
static_assert(contiguous_entries(Granule::k4K, 3) == 16 && contiguous_size(Granule::k4K, 3) == (u64{64} << 10));
static_assert(contiguous_entries(Granule::k4K, 2) == 16 && contiguous_size(Granule::k4K, 2) == (u64{32} << 20));
static_assert(contiguous_entries(Granule::k4K, 1) == 16 && contiguous_size(Granule::k4K, 1) == (u64{16} << 30));
static_assert(contiguous_entries(Granule::k4K, 0) == 0);
static_assert(contiguous_entries(Granule::k16K, 3) == 128 && contiguous_size(Granule::k16K, 3) == (u64{2} << 20));
static_assert(contiguous_entries(Granule::k16K, 2) == 32 && contiguous_size(Granule::k16K, 2) == (u64{1} << 30));
static_assert(contiguous_entries(Granule::k16K, 1) == 0);
static_assert(contiguous_entries(Granule::k64K, 3) == 32 && contiguous_size(Granule::k64K, 3) == (u64{2} << 20));
static_assert(contiguous_entries(Granule::k64K, 2) == 32 && contiguous_size(Granule::k64K, 2) == (u64{16} << 30));
static_assert(contiguous_entries(Granule::k64K, 1) == 0);
// Every run holds only leaves a table can hold, and fits one table (it never crosses tables).
static_assert(contiguous_entries(Granule::k16K, 3) <= entries_per_table(Granule::k16K));
static_assert(block_allowed(Granule::k4K, 1) && block_allowed(Granule::k16K, 2) && block_allowed(Granule::k64K, 2));

}  // namespace ptguard::arch
