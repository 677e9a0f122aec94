// One test per operation and per error of the engine, each run for the 4K, 16K and 64K
// granules, judged by the reference MMU, the event log and snapshots of the table pages.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "env.hpp"

namespace ptguard::test {
namespace {

using ::testing::IsEmpty;

template <typename T>
class Ops : public ::testing::Test {
 public:
  static constexpr Granule G = T::value;
  Env<G> env;
  static constexpr u64 kPage = Env<G>::kPage;
  static constexpr u64 kL2 = Env<G>::kL2;
  // An IPA and a PA both aligned to the level-2 block size, and an IPA space large enough.
  static constexpr u64 kIpa = 4 * kL2;
  static constexpr u64 kPa = kDataBase + 8 * kL2;
};

template <Granule G>
using GranuleConst = std::integral_constant<Granule, G>;
using Granules = ::testing::Types<GranuleConst<Granule::k4K>, GranuleConst<Granule::k16K>,
                                  GranuleConst<Granule::k64K>>;
class GranuleNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    return T::value == Granule::k4K ? "4K" : T::value == Granule::k16K ? "16K" : "64K";
  }
};
TYPED_TEST_SUITE(Ops, Granules, GranuleNames);

constexpr Prot kRW{kPermRW, MemType::normal_wb, 0};
constexpr Prot kRO{kPermR, MemType::normal_wb, 0};

// ---- map ----------------------------------------------------------------------------------

TYPED_TEST(Ops, MapUsesTheLargestBlockBothAlignmentsAllow) {
  auto& e = this->env;
  auto t = e.stage2();
  e.fill();
  const u64 ipa = this->kIpa, pa = this->kPa, l2 = this->kL2, pg = this->kPage;
  // One block, then pages up to the next block boundary, then a block again.
  ASSERT_TRUE(t.map(ipa, 2 * l2 + 3 * pg, pa, kRW, e.mc));
  EXPECT_EQ(t.lookup(ipa)->level, 2);
  EXPECT_EQ(t.lookup(ipa + l2 + pg)->level, 2);
  EXPECT_EQ(t.lookup(ipa + 2 * l2)->level, 3);
  for (u64 off : {u64{0}, l2 - 8, l2 + 5 * pg, 2 * l2 + 2 * pg + 16}) {
    const sim::Translation tr = e.at(t, ipa + off, sim::Access::write);
    ASSERT_TRUE(tr.ok()) << sim::to_string(tr);
    EXPECT_EQ(tr.output_address, pa + off);
    EXPECT_FALSE(tr.executable);
  }
  EXPECT_EQ(e.at(t, ipa + 2 * l2 + 3 * pg).fault, sim::FaultKind::translation);
  // A PA aligned only to pages gives pages everywhere.
  ASSERT_TRUE(t.map(ipa + 8 * l2, l2, pa + pg, kRW, e.mc));
  EXPECT_EQ(t.lookup(ipa + 8 * l2)->level, 3);
  EXPECT_EQ(e.at(t, ipa + 8 * l2 + l2 - pg).output_address, pa + l2);
  EXPECT_THAT(e.plat->violations(), IsEmpty());
}

TYPED_TEST(Ops, ForcePagePolicyForbidsBlocks) {
  auto& e = this->env;
  TableOptions opt;
  opt.force_page.fn = force_pages_always;
  auto t = e.stage2(40, CpuFeatures::modern(), opt);
  e.fill(16);
  ASSERT_TRUE(t.map(this->kIpa, this->kL2, this->kPa, kRW, e.mc));
  EXPECT_EQ(t.lookup(this->kIpa)->level, 3);
  EXPECT_EQ(t.lookup(this->kIpa + this->kL2 - this->kPage)->level, 3);
}

TYPED_TEST(Ops, MapRefusesBadArgumentsAndLeavesTheTableUnchanged) {
  auto& e = this->env;
  auto t = e.stage2(40);
  e.fill();
  const u64 ipa = this->kIpa, pa = this->kPa, pg = this->kPage;
  ASSERT_TRUE(t.map(ipa, pg, pa, kRW, e.mc));
  const auto before = e.snapshot(t);
  const u32 mc_before = e.mc.size();
  const auto mark = e.plat->log().mark();
  EXPECT_EQ(t.map(ipa + 1, pg, pa, kRW, e.mc).error(), Error::einval);              // unaligned IPA
  EXPECT_EQ(t.map(ipa, pg + 8, pa, kRW, e.mc).error(), Error::einval);              // unaligned size
  EXPECT_EQ(t.map(ipa, pg, pa + 8, kRW, e.mc).error(), Error::einval);              // unaligned PA
  EXPECT_EQ(t.map(ipa, 0, pa, kRW, e.mc).error(), Error::einval);                   // zero size
  EXPECT_EQ(t.map(~u64{0} - pg + 1, 2 * pg, pa, kRW, e.mc).error(), Error::einval); // wraps
  EXPECT_EQ(t.map((u64{1} << 40) - pg, 2 * pg, pa, kRW, e.mc).error(), Error::erange);  // past IA
  EXPECT_EQ(t.map(ipa, pg, u64{1} << 48, kRW, e.mc).error(), Error::erange) << "past PA size";
  ASSERT_TRUE(t.pages_needed_for_map(ipa + pg, pg, (u64{1} << 48) - pg, kRW).has_value()) << "up to it is fine";
  EXPECT_EQ(t.map(ipa, pg, pa, Prot{kPermRWX, MemType::device_ngnre, 0}, e.mc).error(), Error::einval);
  EXPECT_EQ(t.map(ipa, pg, pa, Prot{kPermRX, MemType::normal_nc, 0}, e.mc).error(), Error::einval);
  EXPECT_EQ(t.map(ipa, pg, pa, Prot{kPermRW, MemType::normal_wb, 0x10}, e.mc).error(), Error::einval);
  EXPECT_EQ(t.map(ipa, pg, pa + pg, kRW, e.mc).error(), Error::eexist);             // another PA
  EXPECT_EQ(t.map(ipa, pg, pa, Prot{kPermRW, MemType::normal_nc, 0}, e.mc).error(), Error::eexist);
  EXPECT_EQ(writes(e.plat->log().since(mark)), 0u);
  EXPECT_EQ(e.snapshot(t), before);
  EXPECT_EQ(e.mc.size(), mc_before);
}

TYPED_TEST(Ops, EexistAnywhereInTheRangeMeansNothingIsWritten) {
  auto& e = this->env;
  auto t = e.stage2();
  e.fill();
  const u64 ipa = this->kIpa, pg = this->kPage;
  ASSERT_TRUE(t.map(ipa + 5 * pg, pg, kDataBase, kRW, e.mc));  // in the way, late in the range
  const auto before = e.snapshot(t);
  const auto mark = e.plat->log().mark();
  EXPECT_EQ(t.map(ipa, 8 * pg, this->kPa, kRW, e.mc).error(), Error::eexist);
  EXPECT_EQ(writes(e.plat->log().since(mark)), 0u);
  EXPECT_EQ(e.snapshot(t), before);
}

TYPED_TEST(Ops, EnomemBeforeAnyWriteWhenTheMemcacheIsShort) {
  auto& e = this->env;
  auto t = e.stage2(48);
  const u64 ipa = this->kIpa, pg = this->kPage;
  const Result<u32> need = t.pages_needed_for_map(ipa, 4 * pg, this->kPa, kRW);
  ASSERT_TRUE(need.has_value());
  EXPECT_GE(*need, 2u);
  EXPECT_LE(*need, t.max_pages_needed(ipa, 4 * pg));
  ASSERT_TRUE(e.mc.topup(*e.plat, *need - 1));
  const auto before = e.snapshot(t);
  const auto mark = e.plat->log().mark();
  EXPECT_EQ(t.map(ipa, 4 * pg, this->kPa, kRW, e.mc).error(), Error::enomem);
  EXPECT_EQ(writes(e.plat->log().since(mark)), 0u);
  EXPECT_EQ(e.snapshot(t), before);
  ASSERT_TRUE(e.mc.topup(*e.plat, *need));
  ASSERT_TRUE(t.map(ipa, 4 * pg, this->kPa, kRW, e.mc));
  EXPECT_EQ(e.mc.size(), 0u) << "exactly the counted pages were used";
}

TYPED_TEST(Ops, IdenticalRemapWritesNothing) {
  auto& e = this->env;
  auto t = e.stage2();
  e.fill();
  ASSERT_TRUE(t.map(this->kIpa, 2 * this->kL2, this->kPa, kRW, e.mc));
  const auto mark = e.plat->log().mark();
  ASSERT_TRUE(t.map(this->kIpa, 2 * this->kL2, this->kPa, kRW, e.mc));
  // The same translation over part of a block is also nothing to do.
  ASSERT_TRUE(t.map(this->kIpa + this->kPage, this->kPage, this->kPa + this->kPage, kRW, e.mc));
  EXPECT_EQ(writes(e.plat->log().since(mark)), 0u);
  EXPECT_EQ(e.plat->log().since(mark).count(sim::EventKind::tlbi), 0u);
}

TYPED_TEST(Ops, PermissionOrSoftwareBitChangesAreMadeInPlace) {
  auto& e = this->env;
  auto t = e.stage2();
  e.fill();
  const u64 ipa = this->kIpa, pa = this->kPa, pg = this->kPage;
  ASSERT_TRUE(t.map(ipa, pg, pa, kRO, e.mc));
  // More permissions and software bits: one write, no TLB invalidation, no break.
  auto mark = e.plat->log().mark();
  ASSERT_TRUE(t.map(ipa, pg, pa, Prot{kPermRW, MemType::normal_wb, 0b01}, e.mc));
  EXPECT_EQ(writes(e.plat->log().since(mark)), 1u);
  EXPECT_EQ(e.plat->log().since(mark).count(sim::EventKind::tlbi), 0u);
  sim::Translation tr = e.at(t, ipa, sim::Access::write);
  ASSERT_TRUE(tr.ok());
  EXPECT_EQ(tr.sw, 0b01);
  // Fewer permissions: in place, and the TLB is invalidated for the address.
  mark = e.plat->log().mark();
  ASSERT_TRUE(t.map(ipa, pg, pa, Prot{kPermR, MemType::normal_wb, 0b01}, e.mc));
  EXPECT_EQ(writes(e.plat->log().since(mark)), 1u);
  EXPECT_EQ(e.plat->log().since(mark).count(Tlbi::ipas2e1is), 1u);
  EXPECT_EQ(e.at(t, ipa, sim::Access::write).fault, sim::FaultKind::permission);
}

// A change of the software bits alone (a page-state change) is one store: the MMU ignores
// bits 58:55, so there is no barrier and no invalidation to pay for.
TYPED_TEST(Ops, ASoftwareBitChangeIsOneStoreWithoutBarriers) {
  auto& e = this->env;
  auto t = e.stage2();
  e.fill();
  const u64 ipa = this->kIpa, pa = this->kPa, pg = this->kPage;
  ASSERT_TRUE(t.map(ipa, pg, pa, kRW, e.mc));
  const auto mark = e.plat->log().mark();
  ASSERT_TRUE(t.map(ipa, pg, pa, Prot{kPermRW, MemType::normal_wb, 0b10}, e.mc));
  const sim::EventView ev = e.plat->log().since(mark);
  EXPECT_EQ(writes(ev), 1u);
  EXPECT_EQ(ev.count(sim::EventKind::barrier), 0u);
  EXPECT_EQ(ev.count(sim::EventKind::tlbi), 0u);
  const sim::Translation tr = e.at(t, ipa, sim::Access::write);
  ASSERT_TRUE(tr.ok());
  EXPECT_EQ(tr.sw, 0b10);
  // With a permission change as well, the write is ordered as before.
  const auto mark2 = e.plat->log().mark();
  ASSERT_TRUE(t.map(ipa, pg, pa, Prot{kPermRWX, MemType::normal_wb, 0b01}, e.mc));
  EXPECT_GE(e.plat->log().since(mark2).count(sim::EventKind::barrier), 1u);
}

// The fault handlers' entry maps a page only into an empty last-level entry that tables already
// lead to, exactly as map() would (the same entry, one store, one barrier, the table's count
// of live entries raised), and otherwise writes nothing.
TYPED_TEST(Ops, MapPageIfEmptyMapsOnlyAnEmptyLastLevelEntry) {
  auto& e = this->env;
  e.fill();
  const u64 ipa = this->kIpa, pa = this->kPa, pg = this->kPage;
  auto t = e.stage2();
  auto ref = e.stage2(40, CpuFeatures::modern(), {}, 2);
  // No tables lead there yet.
  auto mark = e.plat->log().mark();
  EXPECT_FALSE(t.map_page_if_empty(ipa + pg, pa + pg, kRW));
  EXPECT_EQ(writes(e.plat->log().since(mark)), 0u);
  // A neighbour mapped through map() builds the tables; the entry beside it maps here.
  ASSERT_TRUE(t.map(ipa, pg, pa, kRW, e.mc));
  ASSERT_TRUE(ref.map(ipa, 2 * pg, pa, kRW, e.mc));
  mark = e.plat->log().mark();
  ASSERT_TRUE(t.map_page_if_empty(ipa + pg, pa + pg, kRW));
  const sim::EventView ev = e.plat->log().since(mark);
  EXPECT_EQ(writes(ev), 1u);
  EXPECT_EQ(ev.count(sim::EventKind::barrier), 1u);
  EXPECT_EQ(ev.count(sim::EventKind::tlbi), 0u);
  EXPECT_EQ(t.lookup(ipa + pg)->entry, ref.lookup(ipa + pg)->entry);
  const sim::Translation tr = e.at(t, ipa + pg + 8, sim::Access::write);
  ASSERT_TRUE(tr.ok()) << sim::to_string(tr);
  EXPECT_EQ(tr.output_address, pa + pg + 8);
  // A valid entry, an annotation, an unaligned or out-of-range address, a prot stage 2 cannot
  // encode: refused, nothing written.
  ASSERT_TRUE(t.set_owner(ipa + 2 * pg, pg, 3, 0, e.mc));
  const auto before = e.snapshot(t);
  mark = e.plat->log().mark();
  EXPECT_FALSE(t.map_page_if_empty(ipa + pg, pa + 5 * pg, kRW));
  EXPECT_FALSE(t.map_page_if_empty(ipa + 2 * pg, pa + 2 * pg, kRW));
  EXPECT_FALSE(t.map_page_if_empty(ipa + 3 * pg + 8, pa + 3 * pg, kRW));
  EXPECT_FALSE(t.map_page_if_empty(ipa + 3 * pg, pa + 3 * pg + 8, kRW));
  EXPECT_FALSE(t.map_page_if_empty(u64{1} << t.ia_bits(), pa, kRW));
  EXPECT_FALSE(t.map_page_if_empty(ipa + 3 * pg, pa + 3 * pg, Prot{kPermRWX, MemType::device_ngnre, 0}));
  EXPECT_EQ(writes(e.plat->log().since(mark)), 0u);
  EXPECT_EQ(e.snapshot(t), before);
  // The live-entry count took the page: unmapping the two pages and the annotation frees every
  // table below the root, and no count goes wrong on the way (a missing count would free the
  // last-level table while the annotation still lives in it, a violation).
  ASSERT_TRUE(t.unmap(ipa, 3 * pg, e.mc));
  EXPECT_EQ(e.snapshot(t).size(), t.root_pages());
  EXPECT_THAT(e.plat->violations(), IsEmpty());
}

// last_level_table() names the table that holds an address's last-level entry, from the
// remembered slot or a walk, and nothing where no table leads there.
TYPED_TEST(Ops, LastLevelTableNamesTheTableHoldingTheEntry) {
  auto& e = this->env;
  e.fill();
  const u64 ipa = this->kIpa, pa = this->kPa, l2 = this->kL2, pg = this->kPage;
  auto t = e.stage2();
  u64 tp = 0;
  EXPECT_FALSE(t.last_level_table(ipa, &tp));  // nothing below the root
  ASSERT_TRUE(t.map(ipa, l2, pa, kRW, e.mc));  // a block
  EXPECT_FALSE(t.last_level_table(ipa + pg, &tp));
  ASSERT_TRUE(t.map(ipa + 2 * l2 + pg, pg, pa + pg, kRW, e.mc));
  ASSERT_TRUE(t.map(ipa + 4 * l2 + 3 * pg, pg, pa + 3 * pg, kRW, e.mc));
  EXPECT_FALSE(t.last_level_table(u64{1} << t.ia_bits(), &tp));
  // Asked in turn, so the remembered table is the other one each time.
  for (int round = 0; round < 2; ++round) {
    for (const u64 addr : {ipa + 2 * l2 + pg, ipa + 4 * l2 + 3 * pg}) {
      tp = 0;
      ASSERT_TRUE(t.last_level_table(addr, &tp));
      const u64 e3 = e.plat->phys_to_virt(tp)[arch::level_index(TypeParam::value, arch::kLastLevel, addr)];
      EXPECT_EQ(e3, t.lookup(addr)->entry);
      EXPECT_NE(e3, 0u);
      EXPECT_EQ(t.lookup(addr)->level, arch::kLastLevel);
    }
  }
  // Gone with its table: the unmap frees it, and the remembered slot with it.
  ASSERT_TRUE(t.unmap(ipa + 2 * l2, l2, e.mc));
  EXPECT_FALSE(t.last_level_table(ipa + 2 * l2 + pg, &tp));
}

// The engine remembers the last Prot it encoded; a table moved in with another FWB setting
// must not reuse that encoding (MemAttr means different things with and without FWB).
TYPED_TEST(Ops, AMovedInTableEncodesForItsOwnFwbSetting) {
  auto& e = this->env;
  e.fill();
  const u64 ipa = this->kIpa, pa = this->kPa, pg = this->kPage;
  auto t = e.stage2(40, CpuFeatures::modern());
  ASSERT_TRUE(t.fwb());
  ASSERT_TRUE(t.map(ipa, pg, pa, kRW, e.mc));
  EXPECT_EQ(S2MemAttr::get(t.lookup(ipa)->entry), s2_memattr(MemType::normal_wb, true));
  t = e.stage2(40, CpuFeatures{});
  ASSERT_FALSE(t.fwb());
  ASSERT_TRUE(t.map(ipa, pg, pa, kRW, e.mc));
  EXPECT_EQ(S2MemAttr::get(t.lookup(ipa)->entry), s2_memattr(MemType::normal_wb, false));
  const sim::Translation tr = e.at(t, ipa, sim::Access::write);
  ASSERT_TRUE(tr.ok());
}

TYPED_TEST(Ops, TaggingAPageInsideABlockSplitsItAndKeepsTheRest) {
  auto& e = this->env;
  auto t = e.stage2();
  e.fill();
  const u64 ipa = this->kIpa, pa = this->kPa, pg = this->kPage, l2 = this->kL2;
  ASSERT_TRUE(t.map(ipa, l2, pa, Prot{kPermRWX, MemType::normal_wb, 0}, e.mc));
  ASSERT_EQ(t.lookup(ipa)->level, 2);
  const u64 target = ipa + 7 * pg;
  ASSERT_TRUE(t.map(target, pg, pa + 7 * pg, Prot{kPermRW, MemType::normal_wb, 0b01}, e.mc));
  EXPECT_EQ(t.lookup(ipa)->level, 3);
  sim::Translation tagged = e.at(t, target);
  ASSERT_TRUE(tagged.ok());
  EXPECT_EQ(tagged.sw, 0b01);
  EXPECT_FALSE(tagged.executable);
  for (u64 off : {u64{0}, 6 * pg, 8 * pg, l2 - pg}) {
    const sim::Translation rest = e.at(t, ipa + off, sim::Access::exec);
    ASSERT_TRUE(rest.ok()) << std::hex << off << " " << sim::to_string(rest);
    EXPECT_EQ(rest.output_address, pa + off);
    EXPECT_EQ(rest.sw, 0);
  }
  EXPECT_THAT(e.plat->violations(), IsEmpty());
}

TYPED_TEST(Ops, ReplaceGoesThroughBreakBeforeMakeAndKeepsTheRestOfTheBlock) {
  auto& e = this->env;
  auto t = e.stage2();
  e.fill();
  const u64 ipa = this->kIpa, pa = this->kPa, pg = this->kPage, l2 = this->kL2;
  ASSERT_TRUE(t.map(ipa, l2, pa, kRW, e.mc));
  const u64 other = kDataBase + 64 * l2;
  const auto mark = e.plat->log().mark();
  ASSERT_TRUE(t.map(ipa + 2 * pg, pg, other, kRW, e.mc, MapOptions{true}));
  EXPECT_EQ(e.at(t, ipa + 2 * pg).output_address, other);
  EXPECT_EQ(e.at(t, ipa + 3 * pg).output_address, pa + 3 * pg);
  EXPECT_EQ(e.at(t, ipa).output_address, pa);
  // Every valid entry that was overwritten by a different valid entry was first written to 0
  // and invalidated.
  const sim::EventView ev = e.plat->log().since(mark);
  EXPECT_GE(ev.count(Tlbi::ipas2e1is), 2u) << "the block break and the page break";
  EXPECT_GE(ev.count(Tlbi::vmalle1is), 2u);
  EXPECT_THAT(e.plat->violations(), IsEmpty());
}

TYPED_TEST(Ops, MapOverAnnotationsReplacesThem) {
  auto& e = this->env;
  auto t = e.stage2();
  e.fill();
  const u64 ipa = this->kIpa, pg = this->kPage;
  ASSERT_TRUE(t.set_owner(ipa, this->kL2, 7, 0b11, e.mc));
  ASSERT_TRUE(t.map(ipa + pg, pg, this->kPa, kRW, e.mc));
  EXPECT_TRUE(e.at(t, ipa + pg).ok());
  const Result<Leaf> still = t.lookup(ipa);
  ASSERT_TRUE(still.has_value());
  EXPECT_EQ(InvalidDesc(still->entry).owner(), 7u);
  EXPECT_EQ(InvalidDesc(still->entry).sw(), 0b11);
}

// ---- unmap --------------------------------------------------------------------------------

TYPED_TEST(Ops, UnmapEverythingFreesEveryTableButTheRoot) {
  auto& e = this->env;
  auto t = e.stage2(48);
  const auto roots = e.plat->allocator().stats().outstanding;
  e.fill();
  const u32 filled = e.mc.size();
  ASSERT_TRUE(t.map(this->kIpa, 3 * this->kL2 + 5 * this->kPage, this->kPa, kRW, e.mc));
  ASSERT_TRUE(t.set_owner(this->kIpa + 16 * this->kL2, this->kPage, 3, 0, e.mc));
  ASSERT_TRUE(t.unmap(0, u64{1} << 48, e.mc));
  EXPECT_EQ(e.plat->allocator().stats().outstanding, roots + e.mc.size());
  EXPECT_LT(e.mc.size(), filled);
  EXPECT_EQ(e.snapshot(t).size(), t.root_pages());
  EXPECT_EQ(e.at(t, this->kIpa).fault, sim::FaultKind::translation);
  EXPECT_EQ(e.plat->page_count(t.root_pa()), 1u);
  EXPECT_THAT(e.plat->violations(), IsEmpty());
}

TYPED_TEST(Ops, UnmapPartOfABlockKeepsTheRest) {
  auto& e = this->env;
  auto t = e.stage2();
  e.fill();
  const u64 ipa = this->kIpa, pa = this->kPa, pg = this->kPage, l2 = this->kL2;
  ASSERT_TRUE(t.map(ipa, l2, pa, kRW, e.mc));
  ASSERT_TRUE(t.unmap(ipa + pg, 2 * pg, e.mc));
  EXPECT_EQ(e.at(t, ipa + pg).fault, sim::FaultKind::translation);
  EXPECT_EQ(e.at(t, ipa + 2 * pg).fault, sim::FaultKind::translation);
  EXPECT_EQ(e.at(t, ipa).output_address, pa);
  EXPECT_EQ(e.at(t, ipa + 3 * pg).output_address, pa + 3 * pg);
  // Without a memcache the split cannot happen: ENOMEM and nothing changed.
  ASSERT_TRUE(t.map(ipa + l2, l2, pa + l2, kRW, e.mc));
  const auto before = e.snapshot(t);
  EXPECT_EQ(t.unmap(ipa + l2 + pg, pg).error(), Error::enomem);
  EXPECT_EQ(e.snapshot(t), before);
}

TYPED_TEST(Ops, UnmapWithoutFwbCleansCacheableMemory) {
  auto& e = this->env;
  CpuFeatures cpu = CpuFeatures::modern();
  cpu.fwb = false;
  auto t = e.stage2(40, cpu);
  e.fill();
  auto mark = e.plat->log().mark();
  ASSERT_TRUE(t.map(this->kIpa, 2 * this->kPage, this->kPa, kRW, e.mc));
  EXPECT_EQ(e.plat->log().since(mark).count(CacheOp::dc_civac), 2u) << "cleaned when mapped";
  ASSERT_TRUE(t.map(this->kIpa + 4 * this->kPage, this->kPage, this->kPa, Prot{kPermRW, MemType::device_ngnre, 0}, e.mc));
  mark = e.plat->log().mark();
  ASSERT_TRUE(t.unmap(this->kIpa, 8 * this->kPage, e.mc));
  EXPECT_EQ(e.plat->log().since(mark).count(CacheOp::dc_civac), 2u) << "device memory is not cleaned";
}

TYPED_TEST(Ops, CacheMaintenanceCanBeTurnedOffForATable) {
  auto& e = this->env;
  CpuFeatures cpu = CpuFeatures::modern();
  cpu.fwb = false;
  TableOptions opt;
  opt.cache_maintenance = false;
  auto t = e.stage2(40, cpu, opt);
  e.fill();
  const auto mark = e.plat->log().mark();
  ASSERT_TRUE(t.map(this->kIpa, 2 * this->kPage, this->kPa, Prot{kPermRWX, MemType::normal_wb, 0}, e.mc));
  ASSERT_TRUE(t.unmap(this->kIpa, 2 * this->kPage, e.mc));
  EXPECT_EQ(e.plat->log().since(mark).count(sim::EventKind::cache), 0u);
}

// ---- set_owner ----------------------------------------------------------------------------

TYPED_TEST(Ops, SetOwnerUsesBlockLevelAnnotationsAndRoundTrips) {
  auto& e = this->env;
  auto t = e.stage2();
  e.fill();
  const u64 ipa = this->kIpa, l2 = this->kL2, pg = this->kPage;
  ASSERT_TRUE(t.set_owner(ipa, l2 + pg, 0xabcd'1234u, 0b10, e.mc));
  const Result<Leaf> block = t.lookup(ipa + pg);
  ASSERT_TRUE(block.has_value());
  EXPECT_EQ(block->level, 2);
  EXPECT_EQ(InvalidDesc(block->entry).owner(), 0xabcd'1234u);
  EXPECT_EQ(InvalidDesc(block->entry).sw(), 0b10);
  EXPECT_EQ(InvalidDesc(block->entry).reserved_bits(), 0u);
  EXPECT_EQ(t.lookup(ipa + l2)->level, 3);
  EXPECT_EQ(InvalidDesc(t.lookup(ipa + l2)->entry).owner(), 0xabcd'1234u);
  EXPECT_EQ(e.at(t, ipa).fault, sim::FaultKind::translation);
  // The force-page policy gives page-level annotations.
  Env<TestFixture::G> e2;
  TableOptions opt;
  opt.force_page.fn = force_pages_always;
  auto t2 = e2.stage2(40, CpuFeatures::modern(), opt);
  e2.fill();
  ASSERT_TRUE(t2.set_owner(ipa, l2, 9, 0, e2.mc));
  EXPECT_EQ(t2.lookup(ipa)->level, 3);
}

TYPED_TEST(Ops, SetOwnerOverMappingsAndOverPartOfABlock) {
  auto& e = this->env;
  auto t = e.stage2();
  e.fill();
  const u64 ipa = this->kIpa, pa = this->kPa, l2 = this->kL2, pg = this->kPage;
  ASSERT_TRUE(t.map(ipa, l2, pa, kRW, e.mc));
  const auto mark = e.plat->log().mark();
  ASSERT_TRUE(t.set_owner(ipa + pg, pg, 2, 0b11, e.mc));
  EXPECT_EQ(e.at(t, ipa + pg).fault, sim::FaultKind::translation);
  EXPECT_EQ(InvalidDesc(t.lookup(ipa + pg)->entry).owner(), 2u);
  EXPECT_EQ(e.at(t, ipa + 2 * pg).output_address, pa + 2 * pg);
  EXPECT_GE(e.plat->log().since(mark).count(Tlbi::ipas2e1is), 2u);
  EXPECT_EQ(t.set_owner(ipa, pg, 2, 0x10, e.mc).error(), Error::einval);
  // Owner 0 with no state is the empty entry: the same as unmap.
  ASSERT_TRUE(t.set_owner(ipa + pg, pg, 0, 0, e.mc));
  EXPECT_EQ(t.lookup(ipa + pg)->entry, 0u);
}

// map() of one page whose last-level table and Prot the call before left (the inline case:
// no general path) must do exactly what the general path does: the same entries as one map()
// of the whole range, one store, one DSB ISHST and no TLBI per page, every refusal the same,
// cache maintenance where the table needs it, and the table's count of live entries kept.
TYPED_TEST(Ops, OnePageMapsAfterTheFirstMatchTheGeneralPath) {
  auto& e = this->env;
  e.fill();
  const u64 ipa = this->kIpa, pa = this->kPa, pg = this->kPage;
  constexpr u64 kN = 24;
  for (const bool fwb : {true, false}) {
    SCOPED_TRACE(fwb ? "FWB" : "no FWB");
    CpuFeatures cpu = CpuFeatures::modern();
    cpu.fwb = fwb;
    e.fill();
    auto t = e.stage2(40, cpu);
    auto ref = e.stage2(40, cpu, {}, 2);
    // Pages [0, 8) read-write, [8, kN) read-only: the Prot changes once on the way.
    ASSERT_TRUE(ref.map(ipa, 8 * pg, pa, kRW, e.mc));
    ASSERT_TRUE(ref.map(ipa + 8 * pg, (kN - 8) * pg, pa + 8 * pg, kRO, e.mc));
    for (u64 i = 0; i < kN; ++i) {
      const auto mark = e.plat->log().mark();
      ASSERT_TRUE(t.map(ipa + i * pg, pg, pa + i * pg, i < 8 ? kRW : kRO, e.mc)) << i;
      if (i == 0) continue;  // the first builds the tables
      const sim::EventView ev = e.plat->log().since(mark);
      EXPECT_EQ(writes(ev), 1u) << i;
      EXPECT_EQ(ev.count(sim::EventKind::barrier), 1u) << i;
      EXPECT_EQ(ev.count(Barrier::dsb_ishst), 1u) << i;
      EXPECT_EQ(ev.count(sim::EventKind::tlbi), 0u) << i;
      // Without FWB, cacheable memory is cleaned to the point of coherency before it is mapped.
      EXPECT_EQ(ev.count(CacheOp::dc_civac), fwb ? 0u : 1u) << i;
    }
    for (u64 i = 0; i < kN + 1; ++i) EXPECT_EQ(t.lookup(ipa + i * pg)->entry, ref.lookup(ipa + i * pg)->entry) << i;
    // Refusals right after a page went in (table and Prot remembered), nothing written.
    const auto before = e.snapshot(t);
    const auto mark = e.plat->log().mark();
    const u64 next = ipa + kN * pg;
    EXPECT_TRUE(t.map(ipa + 3 * pg, pg, pa + 3 * pg, kRW, e.mc)) << "the same translation again";
    EXPECT_EQ(t.map(ipa + 3 * pg, pg, pa + 9 * pg, kRW, e.mc).error(), Error::eexist);
    EXPECT_EQ(t.map(next + 8, pg, pa, kRO, e.mc).error(), Error::einval);
    EXPECT_EQ(t.map(next, pg, pa + 8, kRO, e.mc).error(), Error::einval);
    EXPECT_EQ(t.map(next, pg, u64{1} << t.pa_bits(), kRO, e.mc).error(), Error::erange);
    EXPECT_EQ(t.map(next, pg, ~u64{0} & ~(pg - 1), kRO, e.mc).error(), Error::einval) << "a wrapping output range";
    EXPECT_EQ(t.map(u64{1} << t.ia_bits(), pg, pa, kRO, e.mc).error(), Error::erange);
    EXPECT_EQ(t.map(next, pg, pa, Prot{kPermRWX, MemType::device_ngnre, 0}, e.mc).error(), Error::einval);
    EXPECT_EQ(writes(e.plat->log().since(mark)), 0u);
    EXPECT_EQ(e.snapshot(t), before);
    // Every page counted in its table: unmapping them one by one frees every table below the
    // root with the last one, and not before (a missing count frees the table while the pages
    // after still need it).
    for (u64 i = 0; i < kN; ++i) {
      ASSERT_TRUE(t.unmap(ipa + i * pg, pg, e.mc)) << i;
      if (i + 1 < kN) {
        ASSERT_TRUE(e.at(t, ipa + (kN - 1) * pg).ok()) << "after unmapping page " << i;
      }
    }
    EXPECT_EQ(e.snapshot(t).size(), t.root_pages());
    EXPECT_THAT(e.plat->violations(), IsEmpty());
  }
}

// wrprotect over a last-level table whose entries are all writable pages (every entry changes:
// stored without a test per entry) must match the entry-by-entry loop: the same entries and
// the same invalidations, with and without FEAT_TLBIRANGE and with TlbPolicy::defer. The
// reference table has one read-only page in the middle of the range, so every other entry is
// the same, the invalidation covers the same run, and its loop is the general one.
TYPED_TEST(Ops, WrprotectOfAWholeTableOfPagesMatchesTheEntryByEntryPath) {
  auto& e = this->env;
  e.fill();
  const u64 ipa = this->kIpa, pa = this->kPa, l2 = this->kL2, pg = this->kPage;
  const u64 per_table = l2 / pg;
  // Maintenance events as comparable tuples: kind, operation, address, level, range fields.
  auto maintenance = [](const sim::EventView& ev) {
    std::vector<std::tuple<int, int, int, u64, int, int, int>> out;
    for (const sim::Event& x : ev) {
      if (x.kind == sim::EventKind::tlbi || x.kind == sim::EventKind::barrier)
        out.emplace_back(static_cast<int>(x.kind), static_cast<int>(x.tlbi_op), static_cast<int>(x.barrier_op), x.addr,
                         x.level, x.tlbi_scale, x.tlbi_num);
    }
    return out;
  };
  TableOptions pages;
  pages.force_page = ForcePagePolicy{&force_pages_always, nullptr};
  for (const bool range : {true, false}) {
    for (const TlbPolicy policy : {TlbPolicy::invalidate, TlbPolicy::defer}) {
      SCOPED_TRACE(std::string(range ? "TLBI range" : "no TLBI range") +
                   (policy == TlbPolicy::defer ? ", deferred" : ""));
      CpuFeatures cpu = CpuFeatures::modern();
      cpu.tlbi_range = range;
      e.fill();
      auto t = e.stage2(40, cpu, pages);
      auto ref = e.stage2(40, cpu, pages);
      // Two last-level tables of pages, and the range from the first's middle (a run of more
      // than 16) to the second's end.
      ASSERT_TRUE(t.map(ipa, 2 * l2, pa, Prot{kPermRWX, MemType::normal_wb, 0b01}, e.mc));
      ASSERT_TRUE(ref.map(ipa, 2 * l2, pa, Prot{kPermRWX, MemType::normal_wb, 0b01}, e.mc));
      const u64 mid = ipa + l2 + (per_table / 2) * pg;
      ASSERT_TRUE(ref.wrprotect(mid, pg, e.mc));
      const u64 from = ipa + (per_table / 4) * pg;
      auto mark = e.plat->log().mark();
      ASSERT_TRUE(t.wrprotect(from, ipa + 2 * l2 - from, e.mc, policy));
      const sim::EventView tv = e.plat->log().since(mark);
      mark = e.plat->log().mark();
      ASSERT_TRUE(ref.wrprotect(from, ipa + 2 * l2 - from, e.mc, policy));
      const sim::EventView rv = e.plat->log().since(mark);
      EXPECT_EQ(maintenance(tv), maintenance(rv));
      EXPECT_EQ(writes(tv), writes(rv) + 1) << "the reference's middle page was read-only already";
      EXPECT_EQ(writes(tv), (ipa + 2 * l2 - from) / pg);
      for (u64 a = ipa; a < ipa + 2 * l2; a += pg) {
        const Leaf l = *t.lookup(a);
        ASSERT_EQ(l.entry, ref.lookup(a)->entry) << std::hex << a;
        ASSERT_EQ(S2ApWrite::get(l.entry) != 0, a < from) << std::hex << a;
      }
      if (policy == TlbPolicy::defer) {
        EXPECT_EQ(tv.count(sim::EventKind::tlbi), 0u);
      } else {
        EXPECT_GE(tv.count(sim::EventKind::tlbi), 1u);
      }
      EXPECT_THAT(e.plat->violations(), IsEmpty());
    }
  }
}

// ---- relax_perms, wrprotect, young ---------------------------------------------------------

TYPED_TEST(Ops, RelaxPermsAddsPermissionsOnTheLeafAndNeverTouchesSoftwareBits) {
  auto& e = this->env;
  auto t = e.stage2();
  e.fill();
  const u64 ipa = this->kIpa, pa = this->kPa, l2 = this->kL2;
  ASSERT_TRUE(t.map(ipa, l2, pa, Prot{kPermR, MemType::normal_wb, 0b01}, e.mc));
  ASSERT_TRUE(t.relax_perms(ipa + 3 * this->kPage, Prot{kPermW}));
  // The whole block gained write, never split, software bits kept.
  EXPECT_EQ(t.lookup(ipa)->level, 2);
  const sim::Translation tr = e.at(t, ipa + l2 - 8, sim::Access::write);
  ASSERT_TRUE(tr.ok());
  EXPECT_EQ(tr.sw, 0b01);
  EXPECT_FALSE(tr.executable);
  EXPECT_EQ(t.relax_perms(ipa, Prot{kPermX, MemType::normal_wb, 0b10}).error(), Error::einval)
      << "software bits cannot be set or cleared through relax_perms";
  EXPECT_EQ(t.relax_perms(ipa + 4 * l2, Prot{kPermW}).error(), Error::enoent);
  ASSERT_TRUE(t.map(ipa + 4 * l2, this->kPage, pa, Prot{kPermR, MemType::device_ngnre, 0}, e.mc));
  EXPECT_EQ(t.relax_perms(ipa + 4 * l2, Prot{kPermX}).error(), Error::einval);
  const auto mark = e.plat->log().mark();
  ASSERT_TRUE(t.relax_perms(ipa, Prot{kPermX}));
  EXPECT_EQ(e.plat->log().since(mark).count(CacheOp::ic_ivau), 1u) << "new executable code";
  EXPECT_TRUE(e.at(t, ipa, sim::Access::exec).ok());
  EXPECT_EQ(e.at(t, ipa).sw, 0b01);
}

TYPED_TEST(Ops, WrprotectRemovesWriteKeepsTheRestAndSplitsPartialBlocks) {
  auto& e = this->env;
  auto t = e.stage2();
  e.fill();
  const u64 ipa = this->kIpa, pa = this->kPa, l2 = this->kL2, pg = this->kPage;
  ASSERT_TRUE(t.map(ipa, l2, pa, Prot{kPermRWX, MemType::normal_wb, 0b11}, e.mc));
  auto mark = e.plat->log().mark();
  ASSERT_TRUE(t.wrprotect(ipa, pg, e.mc));
  EXPECT_EQ(e.at(t, ipa, sim::Access::write).fault, sim::FaultKind::permission);
  EXPECT_TRUE(e.at(t, ipa, sim::Access::exec).ok());
  EXPECT_EQ(e.at(t, ipa).sw, 0b11);
  EXPECT_TRUE(e.at(t, ipa + pg, sim::Access::write).ok()) << "the rest of the block stays writable";
  EXPECT_GE(e.plat->log().since(mark).count(Tlbi::ipas2e1is), 1u);
  // With TlbPolicy::defer the engine leaves the invalidation to the caller.
  mark = e.plat->log().mark();
  ASSERT_TRUE(t.wrprotect(ipa + pg, pg, e.mc, TlbPolicy::defer));
  EXPECT_EQ(e.plat->log().since(mark).count(sim::EventKind::tlbi), 0u);
  EXPECT_EQ(e.at(t, ipa + pg, sim::Access::write).fault, sim::FaultKind::permission);
}

TYPED_TEST(Ops, YoungBitsAreSetTestedAndClearedWithoutTouchingSoftwareBits) {
  auto& e = this->env;
  auto t = e.stage2();
  e.fill();
  const u64 ipa = this->kIpa, pg = this->kPage;
  ASSERT_TRUE(t.map(ipa, 2 * pg, this->kPa, Prot{kPermRW, MemType::normal_wb, 0b10}, e.mc));
  EXPECT_TRUE(*t.test_and_clear_young(ipa, 2 * pg, false));
  EXPECT_TRUE(*t.test_and_clear_young(ipa, 2 * pg, true));
  EXPECT_FALSE(*t.test_and_clear_young(ipa, 2 * pg, false));
  // With hardware access-flag management (VTCR_EL2.HA) the MMU sets the flag itself.
  EXPECT_TRUE(e.at(t, ipa).af_set_by_hw);
  ASSERT_TRUE(t.mkyoung(ipa + pg));
  EXPECT_TRUE(*t.test_and_clear_young(ipa + pg, pg, false));
  EXPECT_FALSE(*t.test_and_clear_young(ipa, pg, false));
  EXPECT_TRUE(e.at(t, ipa + pg).ok());
  EXPECT_EQ(e.at(t, ipa + pg).sw, 0b10);
  EXPECT_EQ(t.mkyoung(ipa + 8 * pg).error(), Error::enoent);
}

// ---- stage-2 execute-never with FEAT_XNX ----------------------------------------------------

// XN[1:0] (Arm ARM D8.4.2): 00 both, 01 EL0 only, 10 neither, 11 EL1 only.
constexpr bool kXnEl1[4] = {true, false, false, true};
constexpr bool kXnEl0[4] = {true, true, false, false};

TEST(Stage2Regime, ExecutionIsJudgedPerExceptionLevel) {
  const u64 base = *Stage2::encode(Prot{kPermRW, MemType::normal_wb, 0}, false) | 0x4000'0003;
  const auto with = [&](u64 xn) { return S2Xn::put(base, xn); };
  for (u64 a = 0; a < 4; ++a) {
    EXPECT_EQ(Stage2::executable_el1(with(a)), kXnEl1[a]) << a;
    EXPECT_EQ(Stage2::executable_el0(with(a)), kXnEl0[a]) << a;
    EXPECT_EQ(Stage2::executable(with(a)), kXnEl1[a] || kXnEl0[a]) << a;
    // decode(): kPermX only for 00 (what encode() writes for it); 01 and 11 are not ours.
    bool exact = true;
    const Prot p = Stage2::decode(with(a), false, &exact);
    EXPECT_EQ(p.executable(), a == 0b00) << a;
    EXPECT_EQ(exact, a == 0b00 || a == 0b10) << a;
    for (u64 b = 0; b < 4; ++b) {
      const bool lost = (kXnEl1[a] && !kXnEl1[b]) || (kXnEl0[a] && !kXnEl0[b]);
      const bool gained = (!kXnEl1[a] && kXnEl1[b]) || (!kXnEl0[a] && kXnEl0[b]);
      EXPECT_EQ(Stage2::reduces_perms(with(a), with(b)), lost) << a << " -> " << b;
      EXPECT_EQ(Stage2::gains_exec(with(a), with(b)), gained) << a << " -> " << b;
    }
  }
  // The cases the single-bit rule (bit 54 alone) got wrong.
  EXPECT_TRUE(Stage2::reduces_perms(with(0b11), with(0b01))) << "EL1 loses execution";
  EXPECT_TRUE(Stage2::reduces_perms(with(0b11), with(0b10))) << "EL1 loses execution";
  EXPECT_TRUE(Stage2::reduces_perms(with(0b00), with(0b01))) << "EL1 loses execution";
  EXPECT_TRUE(Stage2::gains_exec(with(0b01), with(0b00))) << "EL1 gains execution";
}

// A leaf the engine did not write (FEAT_XNX's one-level encodings, set through walk()): the
// engine's own changes to it judge execution per Exception level.
TYPED_TEST(Ops, OneLevelExecuteNeverEncodingsAreInvalidatedAndCacheMaintainedPerLevel) {
  auto& e = this->env;
  auto t = e.stage2();
  e.fill();
  const u64 ipa = this->kIpa, pa = this->kPa, pg = this->kPage;
  struct SetXn {
    static constexpr unsigned visits() { return kVisitLeaf; }
    sim::SimPlatform* p;
    u64 xn;
    Status leaf(VisitCtx& x) {
      if (DescValid::get(x.old)) p->write_desc(x.ptep, S2Xn::put(x.old, xn));
      return {};
    }
  };
  // 0b11 (EL1 may execute) -> read-only, never executable (0b10): EL1 loses execution, so the
  // stale TLB entry must go.
  ASSERT_TRUE(t.map(ipa, pg, pa, kRO, e.mc));
  SetXn uxn{&*e.plat, 0b11};
  ASSERT_TRUE(t.walk(ipa, ipa + pg, uxn));
  auto mark = e.plat->log().mark();
  ASSERT_TRUE(t.map(ipa, pg, pa, kRO, e.mc));
  EXPECT_EQ(S2Xn::get(t.lookup(ipa)->entry), 0b10u);
  EXPECT_EQ(e.plat->log().since(mark).count(Tlbi::ipas2e1is), 1u) << e.plat->log().since(mark).format();
  // 0b01 (EL0 only) -> executable at both (relax_perms X): EL1 gains execution, so the
  // instruction cache is invalidated for it.
  SetXn pxn{&*e.plat, 0b01};
  ASSERT_TRUE(t.walk(ipa, ipa + pg, pxn));
  mark = e.plat->log().mark();
  ASSERT_TRUE(t.relax_perms(ipa, Prot{kPermX, MemType::normal_wb, 0}));
  EXPECT_EQ(S2Xn::get(t.lookup(ipa)->entry), 0b00u);
  EXPECT_EQ(e.plat->log().since(mark).count(CacheOp::ic_ivau), 1u) << e.plat->log().since(mark).format();
  // 0b11 -> 0b00 (map RX over it): EL0 gains execution.
  ASSERT_TRUE(t.walk(ipa, ipa + pg, uxn));
  mark = e.plat->log().mark();
  ASSERT_TRUE(t.map(ipa, pg, pa, Prot{kPermRX, MemType::normal_wb, 0}, e.mc));
  EXPECT_EQ(e.plat->log().since(mark).count(CacheOp::ic_ivau), 1u) << e.plat->log().since(mark).format();
  EXPECT_THAT(e.plat->violations(), IsEmpty());
}

// ---- split, lookup, destroy ---------------------------------------------------------------

TYPED_TEST(Ops, SplitChangesNoTranslation) {
  auto& e = this->env;
  constexpr Granule g = TestFixture::G;
  auto t = e.stage2(40);
  e.fill(1100);
  const u64 top = first_block_level(g) == 1 ? level_size(g, 1) : level_size(g, 2);
  const u64 ipa = 2 * top, pa = kDataBase;
  ASSERT_TRUE(t.map(ipa, top, pa, kRW, e.mc));
  const int top_level = first_block_level(g);
  ASSERT_EQ(t.lookup(ipa)->level, top_level);
  ASSERT_TRUE(t.split(ipa, this->kPage, e.mc));
  EXPECT_EQ(t.lookup(ipa)->level, top_level + 1);
  ASSERT_TRUE(t.split(ipa, top, e.mc, true));
  EXPECT_EQ(t.lookup(ipa + top - this->kPage)->level, kLastLevel);
  for (u64 off : {u64{0}, top / 2 + 8, top - 8}) EXPECT_EQ(e.at(t, ipa + off).output_address, pa + off);
  EXPECT_THAT(e.plat->violations(), IsEmpty());
}

TYPED_TEST(Ops, LookupAndDestroy) {
  auto& e = this->env;
  const auto start = e.plat->allocator().stats().outstanding;
  auto t = e.stage2(44);
  e.fill();
  EXPECT_EQ(t.lookup(u64{1} << 44).error(), Error::erange);
  ASSERT_TRUE(t.map(this->kIpa, this->kPage, this->kPa, kRW, e.mc));
  const Result<Leaf> l = t.lookup(this->kIpa + 8);
  ASSERT_TRUE(l.has_value());
  EXPECT_EQ(l->level, kLastLevel);
  EXPECT_EQ(l->base, this->kIpa);
  EXPECT_EQ(S2Leaf(l->entry).output_address(TestFixture::G, kLastLevel), this->kPa);
  e.mc.drain(*e.plat);
  t.destroy();
  EXPECT_EQ(e.plat->allocator().stats().outstanding, start);
  EXPECT_EQ(t.map(0, this->kPage, this->kPa, kRW, e.mc).error(), Error::einval) << "destroyed";
}

// What flush_tlb() of a stage-2 table logs, and retire() with it: the table's stores made
// visible to the walkers (DSB ISHST), every entry of its VMID invalidated (stage 1 and 2), and
// the invalidation waited for (DSB ISH).
std::vector<sim::Event> stage2_flush_events(u16 vmid) {
  return {sim::Event::barrier(Barrier::dsb_ishst), sim::Event::tlbi(Tlbi::vmalls12e1is, vmid, 0, kTlbiLevelUnknown),
          sim::Event::barrier(Barrier::dsb_ish)};
}

TYPED_TEST(Ops, FlushTlbInvalidatesTheWholeTableAndWaits) {
  auto& e = this->env;
  e.fill();
  // Stage 2: the whole of the table's own VMID (7, not the current or a default one).
  auto t2 = e.stage2(40, CpuFeatures::modern(), TableOptions{}, 7);
  ASSERT_TRUE(t2.map(this->kIpa, this->kPage, this->kPa, kRW, e.mc));
  auto mark = e.plat->log().mark();
  ASSERT_TRUE(t2.flush_tlb());
  EXPECT_THAT(e.plat->log().since(mark), ::testing::ElementsAreArray(stage2_flush_events(7)));
  // Stage 1 at EL2: every EL2 entry, then an ISB for this PE's own translations.
  auto t1 = e.stage1();
  ASSERT_TRUE(t1.map(this->kIpa, this->kPage, this->kPa, kRW, e.mc));
  mark = e.plat->log().mark();
  ASSERT_TRUE(t1.flush_tlb());
  const std::vector<sim::Event> s1{sim::Event::barrier(Barrier::dsb_ishst),
                                   sim::Event::tlbi(Tlbi::alle2is, 0, 0, kTlbiLevelUnknown),
                                   sim::Event::barrier(Barrier::dsb_ish), sim::Event::barrier(Barrier::isb)};
  EXPECT_THAT(e.plat->log().since(mark), ::testing::ElementsAreArray(s1));
  // An empty table (destroyed, or never created) has nothing to flush.
  e.mc.drain(*e.plat);
  t2.destroy();
  t1.destroy();
  mark = e.plat->log().mark();
  EXPECT_EQ(t2.flush_tlb().error(), Error::einval);
  EXPECT_EQ(t1.flush_tlb().error(), Error::einval);
  EXPECT_EQ(typename Env<TestFixture::G>::S2{}.flush_tlb().error(), Error::einval);
  EXPECT_TRUE(e.plat->log().since(mark).empty());
  EXPECT_THAT(e.plat->violations(), IsEmpty());
}

// The retire() tests' pair: a table (VMID 7) and its twin (VMID 8), each mapping the same four
// pages from kIpa to kPa. The test retires the first; the twin, left live, shows what the same
// later changes cost without retire().
template <typename F>
std::pair<typename Env<F::G>::S2, typename Env<F::G>::S2> twin_tables(F& f, const CpuFeatures& cpu) {
  auto& e = f.env;
  e.fill();
  auto t = e.stage2(40, cpu, TableOptions{}, 7);
  auto twin = e.stage2(40, cpu, TableOptions{}, 8);
  for (auto* x : {&t, &twin}) EXPECT_TRUE(x->map(F::kIpa, 4 * F::kPage, F::kPa, kRW, e.mc));
  return {std::move(t), std::move(twin)};
}
// Gives the memcache's pages back and frees every page of both tables.
template <typename E, typename S2>
void destroy_twins(E& e, S2& t, S2& twin) {
  e.mc.drain(*e.plat);
  t.destroy();
  twin.destroy();
}

// retire(): one VMID-wide invalidation (as flush_tlb), and from then on the table's changes
// take effect in memory with no TLB maintenance: nothing can hold or fetch its entries any more.
// A twin that is not retired issues its TLBIs for the same changes (so the count is the
// retirement's doing, not the operations').
TYPED_TEST(Ops, RetireFlushesOnceAndLaterChangesIssueNoTlbi) {
  auto& e = this->env;
  auto [t, twin] = twin_tables(*this, CpuFeatures::modern());
  EXPECT_FALSE(t.retired());
  auto mark = e.plat->log().mark();
  ASSERT_TRUE(t.retire());
  EXPECT_THAT(e.plat->log().since(mark), ::testing::ElementsAreArray(stage2_flush_events(7)));
  EXPECT_TRUE(t.retired());
  auto tlbis = [&](auto& x) {
    const auto m = e.plat->log().mark();
    EXPECT_TRUE(x.wrprotect(this->kIpa, this->kPage, e.mc));
    EXPECT_TRUE(x.unmap(this->kIpa + this->kPage, this->kPage, e.mc));
    return e.plat->log().since(m).count(sim::EventKind::tlbi);
  };
  EXPECT_EQ(tlbis(t), std::size_t{0});
  EXPECT_GT(tlbis(twin), std::size_t{0});
  // The changes are in the table all the same.
  EXPECT_EQ(e.at(t, this->kIpa, sim::Access::write).fault, sim::FaultKind::permission);
  EXPECT_TRUE(e.at(t, this->kIpa).ok());
  EXPECT_EQ(e.at(t, this->kIpa + this->kPage).fault, sim::FaultKind::translation);
  EXPECT_TRUE(e.at(t, this->kIpa + 2 * this->kPage).ok());
  destroy_twins(e, t, twin);
}

// retire() drops TLB maintenance only. Without FWB, the clean and invalidate to the point of
// coherency that an unmap owes the memory it gives back (and a change the memory it maps) is
// about the data caches, and a TLB invalidation does nothing to them (TLB maintenance, Arm ARM
// D8.14; cache maintenance, D7.5): a retired guest's pages can be as dirty in the caches as a
// live one's. The retired table and a live twin, both without FWB, make the same changes: the
// same cache maintenance on both, TLBIs only on the twin.
TYPED_TEST(Ops, RetireKeepsCacheMaintenanceWithoutFwb) {
  auto& e = this->env;
  CpuFeatures cpu = CpuFeatures::modern();
  cpu.fwb = false;
  const u64 ipa = this->kIpa, pa = this->kPa, pg = this->kPage;
  const u64 other = pa + 16 * pg;
  auto [t, twin] = twin_tables(*this, cpu);
  const auto from_retire = e.plat->log().mark();
  ASSERT_TRUE(t.retire());
  // One page unmapped, one replaced by another (break-before-make), then the rest unmapped,
  // which empties and frees the last-level table.
  auto changes = [&](auto& x) {
    const auto m = e.plat->log().mark();
    EXPECT_TRUE(x.unmap(ipa + pg, pg, e.mc));
    EXPECT_TRUE(x.map(ipa + 2 * pg, pg, other, kRW, e.mc, MapOptions{true}));
    EXPECT_TRUE(x.unmap(ipa, 4 * pg, e.mc));
    return e.plat->log().since(m).filter([](const sim::Event& ev) {
      return ev.kind == sim::EventKind::cache || ev.kind == sim::EventKind::tlbi;
    });
  };
  const std::vector<sim::Event> retired = changes(t);
  // From retire() on, the retirement's own flush is the only TLBI.
  const auto is_tlbi = [](const sim::Event& ev) { return ev.kind == sim::EventKind::tlbi; };
  EXPECT_THAT(e.plat->log().since(from_retire).filter(is_tlbi),
              ::testing::ElementsAre(sim::Event::tlbi(Tlbi::vmalls12e1is, 7, 0, kTlbiLevelUnknown)))
      << sim::EventView(retired).format();
  const std::vector<sim::Event> live = changes(twin);
  const auto cache = [](const std::vector<sim::Event>& v) {
    return sim::EventView(v).filter([](const sim::Event& ev) { return ev.kind == sim::EventKind::cache; });
  };
  // Every page unmapped is cleaned, `other` both when it is mapped in and when it goes (so the
  // comparison with the twin below is not between two empty lists).
  EXPECT_THAT(cache(retired), ::testing::IsSupersetOf({sim::Event::cache(CacheOp::dc_civac, pa + pg, pg),
                                                       sim::Event::cache(CacheOp::dc_civac, other, pg),
                                                       sim::Event::cache(CacheOp::dc_civac, pa, pg),
                                                       sim::Event::cache(CacheOp::dc_civac, other, pg),
                                                       sim::Event::cache(CacheOp::dc_civac, pa + 3 * pg, pg)}))
      << sim::EventView(retired).format();
  EXPECT_EQ(cache(retired), cache(live)) << "retired:\n" << sim::EventView(retired).format() << "live:\n"
                                          << sim::EventView(live).format();
  EXPECT_GT(sim::EventView(live).count(sim::EventKind::tlbi), 0u) << "the same changes on a live table";
  EXPECT_EQ(e.at(t, ipa).fault, sim::FaultKind::translation);
  EXPECT_THAT(e.plat->violations(), IsEmpty());
  destroy_twins(e, t, twin);
}

// lookup_page() + unmap_page() do exactly what unmap() of that page does: twin machines (same
// allocations, so the same table addresses), one unmapping through the general call, the other
// through the PageRef its lookup kept, must log the same events (writes, barriers, TLBIs, cache
// maintenance, frees) and leave the same tables: a page and an annotation in a last-level table
// (cleared in place), an empty entry, a page inside a block (split), the last entry of a table
// (the table freed), a page past anything mapped; live and retired, with FWB and without.
TYPED_TEST(Ops, UnmapPageThroughItsLookupIsUnmap) {
  using E = Env<TestFixture::G>;
  const u64 ipa = this->kIpa, pa = this->kPa, pg = this->kPage, l2 = this->kL2;
  for (const bool fwb : {false, true}) {
    for (const bool retire : {false, true}) {
      SCOPED_TRACE(std::string(fwb ? "FWB" : "no FWB") + (retire ? ", retired" : ", live"));
      CpuFeatures cpu = CpuFeatures::modern();
      cpu.fwb = fwb;
      E a, b;
      a.fill();
      b.fill();
      auto ta = a.stage2(40, cpu, TableOptions{}, 7);
      auto tb = b.stage2(40, cpu, TableOptions{}, 7);
      for (auto [e, t] : {std::pair{&a, &ta}, std::pair{&b, &tb}}) {
        ASSERT_TRUE(t->map(ipa, 3 * pg, pa, kRW, e->mc));          // three pages of a table
        ASSERT_TRUE(t->set_owner(ipa + 5 * pg, pg, 3, 0, e->mc));   // an annotation there
        ASSERT_TRUE(t->map(ipa + l2, l2, pa + l2, kRW, e->mc));     // a block
        if (retire) {
          ASSERT_TRUE(t->retire());
        }
      }
      for (const u64 x : {ipa + pg, ipa + 5 * pg, ipa + 7 * pg, ipa + l2 + 2 * pg, ipa + l2 + 3 * pg, ipa, ipa + 2 * pg,
                          ipa + 9 * l2}) {
        SCOPED_TRACE("unmap of page " + std::to_string(x));
        const auto ma = a.plat->log().mark();
        const auto mb = b.plat->log().mark();
        ASSERT_TRUE(ta.unmap(x, pg, a.mc));
        const Result<PageRef> ref = tb.lookup_page(x + pg / 2);  // any address in the page
        ASSERT_TRUE(ref.has_value());
        EXPECT_EQ(ref->addr, x);
        ASSERT_TRUE(tb.unmap_page(*ref, b.mc));
        const auto ea = a.plat->log().since(ma), eb = b.plat->log().since(mb);
        ASSERT_EQ(ea.size(), eb.size());
        for (std::size_t i = 0; i < ea.size(); ++i) EXPECT_EQ(ea[i], eb[i]) << "event " << i;
        EXPECT_EQ(a.snapshot(ta), b.snapshot(tb));
        EXPECT_EQ(b.at(tb, x).fault, sim::FaultKind::translation);
      }
      EXPECT_TRUE(b.at(tb, ipa + l2).ok()) << "the rest of the split block stays";
      EXPECT_THAT(a.plat->violations(), IsEmpty());
      EXPECT_THAT(b.plat->violations(), IsEmpty());
      a.mc.drain(*a.plat);
      b.mc.drain(*b.plat);
      ta.destroy();
      tb.destroy();
    }
  }
}

// The one-page unmap of a retired table, cleared in place: the store, and without FWB the
// page cleaned to the point of coherency (it may hold dirty lines from the guest), nothing
// else: no TLBI and no barrier (no TLB holds the entry and no walker reads the table). An
// annotation's removal is the same live or retired: the store and DSB ISHST.
TYPED_TEST(Ops, RetiredTableUnmapsAPageWithCacheMaintenanceOnly) {
  auto& e = this->env;
  e.fill();
  const u64 ipa = this->kIpa, pa = this->kPa, pg = this->kPage;
  CpuFeatures cpu = CpuFeatures::modern();
  cpu.fwb = false;
  auto t = e.stage2(40, cpu, TableOptions{}, 7);
  ASSERT_TRUE(t.map(ipa, 4 * pg, pa, kRW, e.mc));
  ASSERT_TRUE(t.set_owner(ipa + 5 * pg, pg, 3, 0, e.mc));
  ASSERT_TRUE(t.retire());
  auto kinds = [](const sim::EventView& ev) {
    std::vector<sim::EventKind> k;
    for (const sim::Event& x : ev) k.push_back(x.kind);
    return k;
  };
  auto mark = e.plat->log().mark();
  const Result<PageRef> ref = t.lookup_page(ipa + pg);
  ASSERT_TRUE(ref.has_value());
  ASSERT_NE(ref->ptep, nullptr);
  ASSERT_TRUE(t.unmap_page(*ref, e.mc));
  auto ev = e.plat->log().since(mark);
  ASSERT_THAT(kinds(ev), ::testing::ElementsAre(sim::EventKind::write, sim::EventKind::cache));
  EXPECT_EQ(ev[1], sim::Event::cache(CacheOp::dc_civac, pa + pg, pg));
  mark = e.plat->log().mark();
  ASSERT_TRUE(t.unmap(ipa + 5 * pg, pg, e.mc));
  ev = e.plat->log().since(mark);
  ASSERT_THAT(kinds(ev), ::testing::ElementsAre(sim::EventKind::write, sim::EventKind::barrier));
  EXPECT_EQ(ev[1], sim::Event::barrier(Barrier::dsb_ishst));
  EXPECT_EQ(e.at(t, ipa + pg).fault, sim::FaultKind::translation);
  EXPECT_TRUE(e.at(t, ipa).ok());
  e.mc.drain(*e.plat);
  t.destroy();
}

TYPED_TEST(Ops, WalkChecksItsRangeAsMapDoes) {
  auto& e = this->env;
  e.fill();
  auto t = e.stage2(40);
  const u64 ipa = this->kIpa, pg = this->kPage, top = u64{1} << 40;
  ASSERT_TRUE(t.map(ipa, pg, this->kPa, kRW, e.mc));
  struct Count {
    static constexpr unsigned visits() { return kVisitLeaf; }
    u64 n = 0;
    Status leaf(VisitCtx&) {
      ++n;
      return {};
    }
  } v;
  EXPECT_EQ(t.walk(ipa + 8, ipa + pg, v).error(), Error::einval) << "unaligned start";
  EXPECT_EQ(t.walk(ipa, ipa + pg + 8, v).error(), Error::einval) << "unaligned end";
  EXPECT_EQ(t.walk(ipa + pg, ipa, v).error(), Error::einval) << "end below start (wrapped)";
  EXPECT_EQ(t.walk(top - pg, top + pg, v).error(), Error::erange) << "past the IPA size";
  EXPECT_EQ(t.walk(top, top + pg, v).error(), Error::erange) << "wholly past it";
  EXPECT_EQ(v.n, 0u) << "nothing is visited on error";
  ASSERT_TRUE(t.walk(ipa, ipa, v)) << "an empty range";
  EXPECT_EQ(v.n, 0u);
  ASSERT_TRUE(t.walk(top - pg, top, v)) << "up to the IPA size is fine";
  EXPECT_EQ(v.n, 1u);
  ASSERT_TRUE(t.walk(0, top, v));
  // The same for a stage-1 table (48-bit VAs), and none for an empty table.
  auto s1 = e.stage1(48);
  EXPECT_EQ(s1.walk(0, (u64{1} << 48) + pg, v).error(), Error::erange);
  ASSERT_TRUE(s1.walk(0, u64{1} << 48, v));
  e.mc.drain(*e.plat);
  t.destroy();
  EXPECT_EQ(t.walk(0, pg, v).error(), Error::einval) << "destroyed";
}

TYPED_TEST(Ops, ConcatenatedRootsMapAcrossRootPages) {
  auto& e = this->env;
  constexpr Granule g = TestFixture::G;
  // An IPA size that needs 16 concatenated root tables.
  unsigned ia = kMinIaBits;
  while (stage2_geometry(g, ia).root_tables != 16) ++ia;
  auto t = e.stage2(ia);
  ASSERT_EQ(t.root_pages(), 16u);
  e.fill();
  const u64 per_root = u64{1} << (ia - 4);
  for (u64 r : {u64{0}, u64{1}, u64{15}}) {
    ASSERT_TRUE(t.map(r * per_root, this->kPage, this->kPa + r * this->kPage, kRW, e.mc));
    EXPECT_EQ(e.at(t, r * per_root + 8).output_address, this->kPa + r * this->kPage + 8);
  }
  ASSERT_TRUE(t.map(per_root - this->kPage, 2 * this->kPage, this->kPa, kRW, e.mc, MapOptions{true}));
  EXPECT_EQ(e.at(t, per_root).output_address, this->kPa + this->kPage);
  EXPECT_THAT(e.plat->violations(), IsEmpty());
}

// ---- ordering: a new table's entries before the link --------------------------------------

// The indexes (in `ev`) of the descriptor writes that link a table page `before` did not reach
// and `after` does: the new tables of an operation.
template <typename Snap>
std::vector<size_t> links_to_new_tables(const sim::EventView& ev, const Snap& before, const Snap& after,
                                        unsigned page_shift_bits) {
  std::vector<size_t> out;
  for (size_t i = 0; i < ev.size(); ++i) {
    const sim::Event& w = ev[i];
    if (w.kind != sim::EventKind::write || (w.value & 3) != 3) continue;
    const u64 child = w.value & bit_range(47, page_shift_bits);
    if (after.contains(child) && !before.contains(child)) out.push_back(i);
  }
  return out;
}

TYPED_TEST(Ops, NewTablesArePublishedAfterADmbIshst) {
  auto& e = this->env;
  constexpr Granule g = TestFixture::G;
  e.fill(256);
  const u64 ipa = this->kIpa, pa = this->kPa, pg = this->kPage, l2 = this->kL2;
  // Each link must come right after DMB ISHST, that barrier once per new table, and every
  // store the engine made into the new page before it (a fresh table is filled, then linked).
  const auto check = [&](auto& t, auto&& op, size_t min_links, const char* what) {
    const auto before = e.snapshot(t);
    const auto mark = e.plat->log().mark();
    ASSERT_TRUE(op()) << what;
    const sim::EventView ev = e.plat->log().since(mark);
    const auto after = e.snapshot(t);
    const std::vector<size_t> links = links_to_new_tables(ev, before, after, page_shift(g));
    EXPECT_GE(links.size(), min_links) << what << "\n" << ev.format();
    EXPECT_EQ(ev.count(Barrier::dmb_ishst), links.size()) << what << "\n" << ev.format();
    for (size_t i : links) {
      ASSERT_GT(i, 0u);
      EXPECT_EQ(ev[i - 1], sim::Event::barrier(Barrier::dmb_ishst)) << what << ": link " << sim::to_string(ev[i]);
    }
  };
  auto t = e.stage2(40);
  // Tables from empty entries down to one page: zeroed pages, linked level by level.
  check(t, [&] { return t.map(ipa, pg, pa, kRW, e.mc); }, 1, "one page");
  // A last-level table built whole with its leaves (a PA aligned to pages only), then linked.
  check(t, [&] { return t.map(ipa + 2 * l2, l2, pa + pg, kRW, e.mc); }, 1, "a filled table");
  // A table of copies of a block-level annotation (fill_table), then one page mapped in it.
  ASSERT_TRUE(t.set_owner(ipa + 4 * l2, l2, 5, 0, e.mc));
  ASSERT_EQ(t.lookup(ipa + 4 * l2)->level, 2);
  check(t, [&] { return t.map(ipa + 4 * l2, pg, pa, kRW, e.mc); }, 1, "a table of annotations");
  EXPECT_EQ(InvalidDesc(t.lookup(ipa + 4 * l2 + pg)->entry).owner(), 5u) << "the copies are there";
  // The EL2 stage 1 the same.
  auto s1 = e.stage1();
  check(s1, [&] { return s1.map(ipa, pg, pa, kRW, e.mc); }, 1, "stage 1");
  // A split of a block links a new table too, after break-before-make's DSB ISHST: no DMB.
  ASSERT_TRUE(t.map(ipa + 8 * l2, l2, pa, kRW, e.mc));
  ASSERT_EQ(t.lookup(ipa + 8 * l2)->level, 2);
  const auto mark = e.plat->log().mark();
  ASSERT_TRUE(t.split(ipa + 8 * l2, l2, e.mc));
  const sim::EventView ev = e.plat->log().since(mark);
  EXPECT_EQ(ev.count(Barrier::dmb_ishst), 0u) << ev.format();
  EXPECT_THAT(e.plat->violations(), IsEmpty());
}

// Whether a DC CVAC in ev[from, to) covers [pa, pa + size).
inline bool cleaned(const sim::EventView& ev, size_t from, size_t to, u64 pa, u64 size) {
  for (size_t j = from; j < to && j < ev.size(); ++j) {
    const sim::Event& c = ev[j];
    if (c.kind == sim::EventKind::cache && c.cache_op == CacheOp::dc_cvac && c.pa <= pa && pa + size <= c.pa + c.size)
      return true;
  }
  return false;
}

TYPED_TEST(Ops, NonCacheableWalksCleanEveryTableWriteAndEveryNewTableWhole) {
  auto& e = this->env;
  constexpr Granule g = TestFixture::G;
  const u64 ipa = this->kIpa, pa = this->kPa, pg = this->kPage, l2 = this->kL2;
  WalkOptions nc;
  nc.cache = WalkCache::non_cacheable;
  // A concatenated root (two pages) is cleaned whole at create, and the clean completed.
  unsigned ia = kMinIaBits;
  while (stage2_geometry(g, ia).root_tables != 2) ++ia;
  auto cfg = make_stage2_config(g, ia, CpuFeatures::modern(), nc);
  ASSERT_TRUE(cfg.has_value());
  auto mark = e.plat->log().mark();
  auto t = Stage2Table<g, sim::SimPlatform>::create_stage2(*e.plat, *cfg, 1);
  ASSERT_TRUE(t.has_value());
  const std::vector<sim::Event> create{sim::Event::alloc(t->root_pa(), 1, 2 * pg),
                                       sim::Event::cache(CacheOp::dc_cvac, t->root_pa(), 2 * pg),
                                       sim::Event::barrier(Barrier::dsb_ish)};
  EXPECT_THAT(e.plat->log().since(mark), ::testing::ElementsAreArray(create));
  auto s1cfg = make_stage1_config(g, 48, CpuFeatures::modern(), nc);
  ASSERT_TRUE(s1cfg.has_value());
  mark = e.plat->log().mark();
  auto s1 = Stage1Table<g, sim::SimPlatform>::create_stage1(*e.plat, *s1cfg);
  ASSERT_TRUE(s1.has_value());
  const std::vector<sim::Event> create1{sim::Event::alloc(s1->root_pa(), 0, pg),
                                        sim::Event::cache(CacheOp::dc_cvac, s1->root_pa(), pg),
                                        sim::Event::barrier(Barrier::dsb_ish)};
  EXPECT_THAT(e.plat->log().since(mark), ::testing::ElementsAreArray(create1));
  e.fill(256);
  // Every write is cleaned after it; every new table is cleaned whole after its last store
  // before the link, with a DSB ISH between the clean and the link.
  const auto check = [&](auto& tbl, auto&& op, size_t min_links, const char* what) {
    const auto before = e.snapshot(tbl);
    const auto m = e.plat->log().mark();
    ASSERT_TRUE(op()) << what;
    const sim::EventView ev = e.plat->log().since(m);
    const auto after = e.snapshot(tbl);
    ASSERT_GT(writes(ev), 0u);
    for (size_t i = 0; i < ev.size(); ++i) {
      if (ev[i].kind == sim::EventKind::write) {
        EXPECT_TRUE(cleaned(ev, i + 1, ev.size(), ev[i].pa, 8)) << what << ": " << sim::to_string(ev[i]);
      }
    }
    const std::vector<size_t> links = links_to_new_tables(ev, before, after, page_shift(g));
    EXPECT_GE(links.size(), min_links) << what;
    for (size_t i : links) {
      const u64 child = ev[i].value & bit_range(47, page_shift(g));
      size_t last_store = 0;
      for (size_t j = 0; j < i; ++j)
        if (ev[j].kind == sim::EventKind::write && (ev[j].pa & ~(pg - 1)) == child) last_store = j;
      const auto clean = ev.find([&](const sim::Event& c) {
        return c.kind == sim::EventKind::cache && c.cache_op == CacheOp::dc_cvac && c.pa == child && c.size == pg;
      }, last_store);
      ASSERT_TRUE(clean.has_value() && *clean < i) << what << ": new table " << std::hex << child << " not cleaned whole\n"
                                                   << ev.format();
      const auto dsb = ev.find([](const sim::Event& b) {
        return b.kind == sim::EventKind::barrier && b.barrier_op == Barrier::dsb_ish;
      }, *clean);
      EXPECT_TRUE(dsb.has_value() && *dsb < i) << what << ": no DSB ISH between the clean and the link";
    }
  };
  check(*t, [&] { return t->map(ipa, 2 * pg, pa, kRW, e.mc); }, 1, "pages into empty tables");
  check(*t, [&] { return t->map(ipa + 2 * l2, l2, pa + pg, kRW, e.mc); }, 1, "a filled table");
  ASSERT_TRUE(t->map(ipa + 4 * l2, l2, pa, kRW, e.mc));
  check(*t, [&] { return t->split(ipa + 4 * l2, l2, e.mc); }, 1, "a split");
  check(*s1, [&] { return s1->map(ipa, pg, pa, kRW, e.mc); }, 1, "stage 1");
  EXPECT_THAT(e.plat->violations(), IsEmpty());
}

// ---- stage 1 EL2 --------------------------------------------------------------------------

TYPED_TEST(Ops, Stage1MapsWhatEl2CanEncodeAndRefusesTheRest) {
  auto& e = this->env;
  auto t = e.stage1();
  e.fill();
  const u64 va = this->kIpa, pa = this->kPa, pg = this->kPage;
  ASSERT_TRUE(t.map(va, pg, pa, Prot{kPermRX}, e.mc));
  ASSERT_TRUE(t.map(va + pg, pg, pa + pg, Prot{kPermRW}, e.mc));
  ASSERT_TRUE(t.map(va + 2 * pg, pg, pa, Prot{kPermRW, MemType::device_ngnre, 0}, e.mc));
  EXPECT_TRUE(e.at(t, va, sim::Access::exec).ok());
  EXPECT_EQ(e.at(t, va, sim::Access::write).fault, sim::FaultKind::permission);
  EXPECT_TRUE(e.at(t, va + pg, sim::Access::write).ok());
  EXPECT_EQ(e.at(t, va + pg, sim::Access::exec).fault, sim::FaultKind::permission);
  EXPECT_TRUE(e.at(t, va + 2 * pg).attrs.device);
  EXPECT_EQ(t.map(va + 3 * pg, pg, pa, Prot{kPermW}, e.mc).error(), Error::einval) << "no read";
  EXPECT_EQ(t.map(va + 3 * pg, pg, pa, Prot{kPermRWX}, e.mc).error(), Error::einval) << "W+X";
  EXPECT_EQ(t.map(va + 3 * pg, pg, pa, Prot{kPermRX, MemType::device_ngnre, 0}, e.mc).error(), Error::einval);
  EXPECT_EQ(t.map(va, pg, pa, Prot{kPermR}, e.mc, MapOptions{true}).error(), Error::einval) << "no replace at EL2";
}

TYPED_TEST(Ops, Stage1LiveMappingsChangeOnlyInSoftwareBits) {
  auto& e = this->env;
  auto t = e.stage1();
  e.fill();
  const u64 va = this->kIpa, pa = this->kPa, pg = this->kPage, l2 = this->kL2;
  ASSERT_TRUE(t.map(va, l2, pa, Prot{kPermRW}, e.mc));
  const auto before = e.snapshot(t);
  EXPECT_EQ(t.map(va, l2, pa, Prot{kPermR}, e.mc).error(), Error::eexist);
  EXPECT_EQ(t.map(va, l2, pa + l2, Prot{kPermRW}, e.mc).error(), Error::eexist);
  EXPECT_EQ(t.map(va + pg, pg, pa + pg, Prot{kPermRW, MemType::normal_wb, 1}, e.mc).error(), Error::einval)
      << "part of a live block";
  EXPECT_EQ(t.unmap(va + pg, pg, e.mc).error(), Error::einval);
  EXPECT_EQ(e.snapshot(t), before);
  const auto mark = e.plat->log().mark();
  ASSERT_TRUE(t.map(va, l2, pa, Prot{kPermRW, MemType::normal_wb, 0b101 & 0xf}, e.mc));
  EXPECT_EQ(e.at(t, va).sw, 0b101);
  EXPECT_EQ(writes(e.plat->log().since(mark)), 1u);
  ASSERT_TRUE(t.unmap(va, l2, e.mc));
  EXPECT_EQ(e.at(t, va).fault, sim::FaultKind::translation);
  EXPECT_THAT(e.plat->violations(), IsEmpty());
}

// ---- software-bit layouts ------------------------------------------------------------------

using PageState = SwField<0, 2>;
using TlbHint = SwField<2, 2>;
using Overlapping = SwField<1, 2>;
using Layout = SwLayout<PageState, TlbHint>;
using Tagged = Stage2Table<Granule::k4K, sim::SimPlatform, Layout>;

template <typename T, typename F>
concept AcceptsField = requires { T::template sw<F>(1); };

static_assert(AcceptsField<Tagged, PageState>);
static_assert(AcceptsField<Tagged, TlbHint>);
static_assert(!AcceptsField<Tagged, Overlapping>, "a field outside the layout does not compile");
static_assert(!pgtable::detail::disjoint<PageState, Overlapping>(), "overlapping users are refused");
static_assert(Layout::kReserved == 0xf);

TEST(SwLayout, FieldsPackIntoTheSoftwareBits) {
  const u8 sw = Tagged::sw<TlbHint>(0b10, Tagged::sw<PageState>(0b01));
  EXPECT_EQ(sw, 0b1001);
  EXPECT_EQ(PageState::get(sw), 0b01);
  EXPECT_EQ(TlbHint::get(sw), 0b10);
}

}  // namespace
}  // namespace ptguard::test
