// The TLB model: what a TLBI removes, and how a missing or too narrow one shows as a stale
// entry once the tables changed.
#include "ptguard/sim/tlb_model.hpp"

#include <gtest/gtest.h>

#include "ptguard/arch/descriptor.hpp"
#include "ptguard/arch/regs.hpp"

namespace ptguard::sim {
namespace {

using arch::Granule;
using arch::Tlbi;

constexpr u64 kPage = 4096;
constexpr u64 kRoot = 0x4000'0000;  // the level-2 root of a 32-bit IPA space: 4 concatenated pages
constexpr u64 kL3 = kRoot + 4 * kPage;
constexpr u64 kData = 0x8000'0000;

// A stage-2 table for a 32-bit IPA, 4K granule (start level 2, four concatenated root pages):
// root[1] -> L3, which maps 512 pages at IPA 0x20'0000.
struct Tables {
  PhysMem mem;
  arch::Stage2Config cfg = *arch::make_stage2_config(Granule::k4K, 32, arch::CpuFeatures::modern());
  Tables() {
    EXPECT_TRUE(mem.add_region(kRoot, 16 * kPage));
    EXPECT_EQ(cfg.geometry.start_level, 2);
    put(kRoot + 8, kL3 | 3);
    for (u64 i = 0; i < 512; ++i) put(kL3 + 8 * i, page(i));
  }
  static u64 page(u64 i) { return (kData + i * kPage) | 0x7c3 | (1u << 10); }  // S2AP RW, AF, valid page
  void put(u64 pa, u64 v) { EXPECT_TRUE(mem.write(pa, &v, 8)); }
  Stage2Regs regs() const { return Stage2Regs{cfg.vtcr, arch::make_vttbr(kRoot, 1), true}; }
  TlbModel filled() const {
    TlbModel m;
    for (u64 i = 0; i < 512; ++i) m.fill(2, 1, Granule::k4K, translate_stage2(mem, regs(), 0x20'0000 + i * kPage, Access::read));
    return m;
  }
};

TEST(TlbModel, FillCachesLeavesAndWalks) {
  Tables t;
  const TlbModel m = t.filled();
  EXPECT_EQ(m.size(), 512u + 1u);  // 512 pages and the level-2 table descriptor
  EXPECT_TRUE(m.stale(t.mem, t.regs(), 1).empty());
}

TEST(TlbModel, RangeTlbiRemovesExactlyItsRangeAndLevel) {
  Tables t;
  TlbModel m = t.filled();
  for (u64 i = 10; i < 20; ++i) t.put(kL3 + 8 * i, 0);
  EXPECT_EQ(m.stale(t.mem, t.regs(), 1).size(), 10u);
  // Pages 10..17 (SCALE 0, NUM 3: 8 pages): two stay stale.
  m.apply(Event::tlbi_range(Tlbi::ripas2e1is, 1, arch::TlbiRange{0x20'0000 + 10 * kPage, 0, 3, 3}, kPage));
  EXPECT_EQ(m.stale(t.mem, t.regs(), 1).size(), 2u);
  // Another VMID's range does nothing; a level-2 hint leaves level-3 entries.
  m.apply(Event::tlbi_range(Tlbi::ripas2e1is, 2, arch::TlbiRange{0x20'0000 + 18 * kPage, 0, 0, 3}, kPage));
  m.apply(Event::tlbi_range(Tlbi::ripas2e1is, 1, arch::TlbiRange{0x20'0000 + 18 * kPage, 0, 0, 2}, kPage));
  EXPECT_EQ(m.stale(t.mem, t.regs(), 1).size(), 2u);
  m.apply(Event::tlbi_range(Tlbi::ripas2e1is, 1, arch::TlbiRange{0x20'0000 + 18 * kPage, 0, 0, -1}, kPage));
  EXPECT_TRUE(m.stale(t.mem, t.regs(), 1).empty());
  EXPECT_EQ(m.size(), 512u + 1u - 10u - 1u);  // the unhinted range took the walk entry over it too
}

TEST(TlbModel, ByAddressAndVmidWide) {
  Tables t;
  TlbModel m = t.filled();
  t.put(kL3 + 8 * 5, 0);
  m.apply(Event::tlbi(Tlbi::ipas2e1is, 1, 0x20'0000 + 6 * kPage, 3));  // the wrong page
  EXPECT_EQ(m.stale(t.mem, t.regs(), 1).size(), 1u);
  m.apply(Event::tlbi(Tlbi::ipas2e1is, 1, 0x20'0000 + 5 * kPage, 3));
  EXPECT_TRUE(m.stale(t.mem, t.regs(), 1).empty());
  m.apply(Event::tlbi(Tlbi::vmalls12e1is, 1, 0, arch::kTlbiLevelUnknown));
  EXPECT_EQ(m.size(), 0u);
}

TEST(TlbModel, AFreedTableNeedsItsWalkEntryGone) {
  Tables t;
  TlbModel m = t.filled();
  t.put(kRoot + 8, 0);  // the level-3 table unlinked
  const auto stale = m.stale(t.mem, t.regs(), 1);
  EXPECT_EQ(stale.size(), 512u + 1u);  // every page and the level-2 table descriptor
  // A level hint (3) over the span removes the leaves but not the walk entry: a table's span
  // needs no hint (Linux 36e008323926).
  m.apply(Event::tlbi_range(Tlbi::ripas2e1is, 1, arch::TlbiRange{0x20'0000, 1, 7, 3}, kPage));
  EXPECT_EQ(m.stale(t.mem, t.regs(), 1).size(), 1u);
  m.apply(Event::tlbi_range(Tlbi::ripas2e1is, 1, arch::TlbiRange{0x20'0000, 1, 7, -1}, kPage));
  EXPECT_TRUE(m.stale(t.mem, t.regs(), 1).empty());
}

}  // namespace
}  // namespace ptguard::sim
