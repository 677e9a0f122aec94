// Host stage-2 faults and the host <-> hypervisor transitions, from every state.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "env.hpp"

namespace ptguard::test {
namespace {

using ::testing::IsEmpty;
constexpr u64 kPg = OwnEnv::kPage;

TEST(HostFault, MapsTheLargestBlockInsideTheRegion) {
  OwnEnv e;
  // 2 MiB-aligned memory far from the carve-out: a 2 MiB block (the GiB holds annotations).
  const u64 a = OwnEnv::kMem + (u64{256} << 20) + 0x1234;
  ASSERT_TRUE(e.mp.host_handle_fault(a));
  const auto leaf = e.mp.host_table().lookup(a);
  EXPECT_EQ(leaf->level, 2);
  const sim::Translation t = e.host_access(a, sim::Access::exec);
  ASSERT_TRUE(t.ok()) << sim::to_string(t);
  EXPECT_EQ(t.output_address, a) << "identity map";
  EXPECT_TRUE(t.writable);
  EXPECT_EQ(e.mp.host_handle_fault(a + kPg).error(), Error::eagain);
  EXPECT_EQ(e.mp.host_handle_fault(0x7000'0000'0000).error(), Error::einval);
  EXPECT_THAT(e.plat->violations(), IsEmpty());
  EXPECT_TRUE(invariants_hold(e.mp));
}

TEST(HostFault, MmioIsReadWriteDeviceAndTheHypervisorsMmioIsNotTheHosts) {
  OwnEnv e;
  ASSERT_TRUE(e.mp.host_handle_fault(OwnEnv::kGic + 0x100));
  const sim::Translation t = e.host_access(OwnEnv::kGic + 0x100, sim::Access::write);
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(t.attrs.device);
  EXPECT_EQ(e.host_access(OwnEnv::kGic, sim::Access::exec).fault, sim::FaultKind::permission);
  EXPECT_EQ(e.mp.host_handle_fault(OwnEnv::kUart).error(), Error::einval);
  EXPECT_TRUE(e.hyp_access(OwnEnv::kUart, sim::Access::write).attrs.device);
}

TEST(HostFault, AnnotatedPagesAreRefused) {
  OwnEnv e;
  EXPECT_EQ(e.mp.host_handle_fault(OwnEnv::kCarve + kPg).error(), Error::eperm) << "the hypervisor's carve-out";
  // Around the carve-out the host still gets the largest block that covers no annotation.
  constexpr u64 kEnd = OwnEnv::kCarve + OwnEnv::kCarveSize;
  ASSERT_TRUE(e.mp.host_handle_fault(kEnd));
  EXPECT_EQ(e.host_access(kEnd).output_address, kEnd);
  EXPECT_EQ(e.mp.host_table().lookup(kEnd)->level, 2) << "the 2 MiB block after the carve-out";
  EXPECT_EQ(e.host_access(kEnd - kPg).fault, sim::FaultKind::translation);
}

TEST(HostFault, RegionEdgesThatAreNotBlockOrPageAligned) {
  sim::PhysMem mem;
  ASSERT_TRUE(mem.add_region(0x4000'0000, u64{64} << 20));
  ASSERT_TRUE(mem.add_region(0x8000'0000, u64{8} << 20));
  sim::SimPlatform plat(mem, 0x4000'0000, u64{64} << 20, kPg);
  // Memory from 0x8000_0800 (not page-aligned) to 0x8030_0000 (not 2 MiB-aligned).
  const std::vector<Region> regions{{0x8000'0000 + 0x800, 0x30'0000 - 0x800}};
  const MachineDesc m{regions, {}, Region{0, 0}, OwnEnv::kHypOffset};
  std::vector<PageMeta> meta(memory_pages(m, kPg));
  OwnEnv::MP mp;
  ASSERT_TRUE(mp.init(plat, m, meta, CpuFeatures::modern()));
  // In the middle of the second 2 MiB: the whole block fits.
  ASSERT_TRUE(mp.host_handle_fault(0x8020'0000 + 0x5000));
  EXPECT_EQ(mp.host_table().lookup(0x8020'0000)->level, 3) << "the region ends before the block does";
  // In the first page, which the region only partly covers: that page, and only it.
  ASSERT_TRUE(mp.host_handle_fault(0x8000'0900));
  EXPECT_EQ(mp.host_table().lookup(0x8000'0000)->level, 3);
  EXPECT_NE(mp.host_table().lookup(0x8000'0000)->entry, 0u);
  EXPECT_EQ(mp.host_table().lookup(0x8000'1000)->entry, 0u);
  // Before the region's first byte the address is no memory at all.
  EXPECT_EQ(mp.host_handle_fault(0x8000'0100).error(), Error::einval);
  // No transition takes the partly covered page: its range is not inside the region.
  EXPECT_EQ(mp.host_share_hyp(0x8000'0000, 1).error(), Error::einval);
}

TEST(HostHyp, ShareUnshareFromEveryState) {
  OwnEnv e;
  const u64 pa = OwnEnv::kMem;
  // owned (not faulted in) -> shared
  ASSERT_TRUE(e.mp.host_share_hyp(pa, 2));
  EXPECT_EQ(e.mp.host_state(pa), PageState::shared_owned);
  EXPECT_EQ(e.mp.hyp_state(pa), PageState::shared_borrowed);
  EXPECT_TRUE(e.hyp_access(pa + kPg, sim::Access::write).ok());
  EXPECT_EQ(e.hyp_access(pa + kPg, sim::Access::exec).fault, sim::FaultKind::permission);
  EXPECT_TRUE(e.host_access(pa, sim::Access::write).ok());
  // shared -> shared again: EPERM; donate while shared: EPERM
  EXPECT_EQ(e.mp.host_share_hyp(pa, 1).error(), Error::eperm);
  EXPECT_EQ(e.mp.host_donate_hyp(pa, 1).error(), Error::eperm);
  // pinned -> unshare is EBUSY
  ASSERT_TRUE(e.mp.hyp_pin_shared(pa, 1));
  EXPECT_EQ(e.mp.host_unshare_hyp(pa, 2).error(), Error::ebusy);
  EXPECT_EQ(e.mp.host_state(pa), PageState::shared_owned) << "nothing changed";
  ASSERT_TRUE(e.mp.hyp_unpin_shared(pa, 1));
  EXPECT_EQ(e.mp.hyp_unpin_shared(pa, 1).error(), Error::eperm);
  ASSERT_TRUE(e.mp.host_unshare_hyp(pa, 2));
  EXPECT_EQ(e.mp.host_state(pa), PageState::owned);
  EXPECT_EQ(e.mp.hyp_state(pa), PageState::none);
  EXPECT_EQ(e.hyp_access(pa).fault, sim::FaultKind::translation);
  EXPECT_EQ(e.mp.host_unshare_hyp(pa, 1).error(), Error::eperm) << "not shared";
  EXPECT_THAT(e.plat->violations(), IsEmpty());
  EXPECT_TRUE(invariants_hold(e.mp));
}

TEST(HostHyp, SharingAPageInsideAHostBlockKeepsTheBlocksOtherPages) {
  OwnEnv e;
  const u64 pa = OwnEnv::kMem + (u64{256} << 20);
  ASSERT_TRUE(e.mp.host_handle_fault(pa));
  ASSERT_EQ(e.mp.host_table().lookup(pa)->level, 2);
  ASSERT_TRUE(e.mp.host_share_hyp(pa + 5 * kPg, 1));
  EXPECT_EQ(e.mp.host_table().lookup(pa)->level, 3) << "page granular with a non-default state";
  EXPECT_TRUE(e.host_access(pa + 4 * kPg, sim::Access::exec).ok());
  EXPECT_EQ(e.host_access(pa + 5 * kPg).sw, sw_shared_owned());
}

TEST(HostHyp, DonateAndGiveBack) {
  OwnEnv e;
  const u64 pa = OwnEnv::kMem + 16 * kPg;
  ASSERT_TRUE(e.mp.host_donate_hyp(pa, 4));
  EXPECT_EQ(e.mp.host_state(pa), PageState::none);
  EXPECT_EQ(e.mp.host_annotation_owner(pa), kHypId);
  EXPECT_EQ(e.mp.hyp_state(pa), PageState::owned);
  EXPECT_EQ(e.mp.host_handle_fault(pa).error(), Error::eperm);
  EXPECT_EQ(e.mp.host_share_hyp(pa, 1).error(), Error::eperm);
  EXPECT_EQ(e.mp.hyp_donate_host(pa + 4 * kPg, 1).error(), Error::eperm) << "not the hypervisor's";
  ASSERT_TRUE(e.mp.hyp_donate_host(pa, 4));
  EXPECT_EQ(e.mp.host_state(pa), PageState::owned);
  EXPECT_EQ(e.mp.hyp_state(pa), PageState::none);
  ASSERT_TRUE(e.mp.host_handle_fault(pa));
  EXPECT_TRUE(e.host_access(pa, sim::Access::write).ok());
  EXPECT_TRUE(invariants_hold(e.mp));
}

TEST(HostHyp, NotMemoryIsEpermAndMixedRangesAreEinval) {
  OwnEnv e;
  EXPECT_EQ(e.mp.host_share_hyp(OwnEnv::kGic, 1).error(), Error::eperm);
  EXPECT_EQ(e.mp.host_donate_hyp(0x7000'0000'0000, 1).error(), Error::eperm);
  EXPECT_EQ(e.mp.host_share_hyp(OwnEnv::kRam + OwnEnv::kRamSize - kPg, 2).error(), Error::einval);
  EXPECT_EQ(e.mp.host_share_hyp(OwnEnv::kMem, 0).error(), Error::einval);
  EXPECT_EQ(e.mp.host_share_hyp(OwnEnv::kMem + 8, 1).error(), Error::einval);
}

TEST(HostFfa, SharedWithTheSecureWorldOnly) {
  OwnEnv e;
  const u64 pa = OwnEnv::kMem + 64 * kPg;
  ASSERT_TRUE(e.mp.host_share_ffa(pa, 2));
  EXPECT_EQ(e.mp.host_state(pa), PageState::shared_owned);
  EXPECT_EQ(e.mp.hyp_state(pa), PageState::none);
  EXPECT_EQ(e.mp.host_share_hyp(pa, 1).error(), Error::eperm);
  EXPECT_EQ(e.mp.host_unshare_hyp(pa, 1).error(), Error::eperm) << "not a hypervisor share";
  EXPECT_EQ(e.mp.hyp_pin_shared(pa, 1).error(), Error::eperm);
  ASSERT_TRUE(e.mp.host_unshare_ffa(pa, 2));
  EXPECT_EQ(e.mp.host_state(pa), PageState::owned);
  EXPECT_EQ(e.mp.host_unshare_ffa(pa, 1).error(), Error::eperm);
}

TEST(Setup, PrivateEl2MappingsOnlyBeforeFinalise) {
  OwnEnv e(false);
  const u64 pa = OwnEnv::kCarve;
  ASSERT_TRUE(e.mp.hyp_map_private(0x8000'0000, kPg, pa, pgtable::Prot{pgtable::kPermRX}));
  ASSERT_TRUE(e.mp.setup_share_hyp(OwnEnv::kMem, 1));
  e.mp.finalize();
  EXPECT_EQ(e.mp.hyp_map_private(0x8000'1000, kPg, pa, pgtable::Prot{pgtable::kPermR}).error(), Error::eperm);
  EXPECT_EQ(e.mp.setup_share_hyp(OwnEnv::kMem + kPg, 1).error(), Error::eperm);
  EXPECT_EQ(e.mp.host_state(OwnEnv::kMem), PageState::shared_owned);
  // The carve-out is the hypervisor's from the start.
  EXPECT_EQ(e.mp.host_annotation_owner(OwnEnv::kCarve), kHypId);
  EXPECT_TRUE(e.hyp_access(OwnEnv::kCarve + kPg, sim::Access::write).ok());
}

}  // namespace
}  // namespace ptguard::test

namespace ptguard::test {
namespace {

// The checker must be able to fail: break an invariant behind the layer's back.
TEST(Invariants, TheCheckerCatchesATableChangedBehindItsBack) {
  OwnEnv e;
  const u64 pa = OwnEnv::kMem + 512 * kPg;
  ASSERT_TRUE(e.mp.host_share_hyp(pa, 1));
  EXPECT_TRUE(invariants_hold(e.mp));
  // Clear the hypervisor's mapping directly in memory: the host still says shared.
  // Find the descriptor with the engine's walker.
  struct V {
    static constexpr unsigned visits() { return pgtable::kVisitLeaf; }
    u64* p = nullptr;
    Status leaf(pgtable::VisitCtx& x) {
      p = x.ptep;
      return {};
    }
  } v;
  ASSERT_TRUE(e.mp.hyp_table().walk(e.mp.hyp_va(pa), e.mp.hyp_va(pa) + kPg, v));
  *v.p = 0;
  const auto r = invariants_hold(e.mp);
  EXPECT_FALSE(r);
  EXPECT_THAT(r.message(), ::testing::HasSubstr("not shared with exactly one"));
}

}  // namespace
}  // namespace ptguard::test

namespace ptguard::test {
namespace {

// A platform whose table pages come from memory the host may own breaks isolation (the host
// could fault a table page in and write it); the invariant checker says so.
TEST(Invariants, TablePagesTheHostCouldReachAreAViolation) {
  sim::PhysMem mem;
  ASSERT_TRUE(mem.add_region(0x4000'0000, u64{64} << 20));
  sim::SimPlatform plat(mem, 0x4000'0000, u64{16} << 20, kPg);  // the pool: the first 16 MiB
  const std::vector<Region> regions{{0x4000'0000, u64{64} << 20}};
  for (const Region carve : {Region{0x4000'0000, u64{16} << 20}, Region{0x4100'0000, u64{1} << 20}}) {
    const MachineDesc m{regions, {}, carve, OwnEnv::kHypOffset};
    std::vector<PageMeta> meta(memory_pages(m, kPg));
    auto mp = std::make_unique<OwnEnv::MP>();
    ASSERT_TRUE(mp->init(plat, m, meta, CpuFeatures::modern()));
    mp->finalize();
    const bool pool_in_carveout = carve.base == 0x4000'0000;
    std::vector<u32> scratch(meta.size());
    OwnEnv::MP::Violation v;
    EXPECT_EQ(mp->check_invariants(scratch, &v), pool_in_carveout);
    if (!pool_in_carveout) {
      EXPECT_STREQ(v.what, "a table page lies in memory the hypervisor does not own");
      EXPECT_EQ(v.pa, mp->host_table().root_pa());
    }
  }
}

// The engine never splits a stage-1 block, so what the hypervisor gets by a transition is
// mapped page by page: a range shared (or donated) as a whole can be unshared (or given back)
// a page at a time.
TEST(HostHyp, TransitionsMapPagesAtEl2SoPartsCanGoBack) {
  OwnEnv e(false);
  const u64 pa = OwnEnv::kMem + (u64{2} << 20);  // 2 MiB-aligned, and so is its hyp VA
  ASSERT_TRUE(e.mp.setup_share_hyp(pa, 512));
  e.mp.finalize();
  EXPECT_EQ(e.mp.hyp_table().lookup(e.mp.hyp_va(pa))->level, 3) << "no EL2 block for a share";
  ASSERT_TRUE(e.mp.host_unshare_hyp(pa + 5 * kPg, 1));
  EXPECT_EQ(e.mp.host_state(pa + 5 * kPg), PageState::owned);
  EXPECT_EQ(e.mp.hyp_state(pa + 5 * kPg), PageState::none);
  EXPECT_EQ(e.mp.hyp_state(pa + 4 * kPg), PageState::shared_borrowed);
  EXPECT_TRUE(invariants_hold(e.mp));

  const u64 d = OwnEnv::kMem + (u64{4} << 20);
  ASSERT_TRUE(e.mp.host_donate_hyp(d, 512));
  EXPECT_EQ(e.mp.hyp_table().lookup(e.mp.hyp_va(d))->level, 3) << "no EL2 block for a donation";
  ASSERT_TRUE(e.mp.hyp_donate_host(d + 7 * kPg, 1));
  EXPECT_EQ(e.mp.host_state(d + 7 * kPg), PageState::owned);
  EXPECT_EQ(e.mp.hyp_state(d + 6 * kPg), PageState::owned);
  EXPECT_THAT(e.plat->violations(), IsEmpty());
  EXPECT_TRUE(invariants_hold(e.mp));
}

// A set-up mapping may be an EL2 block (the carve-out is mapped in 2 MiB blocks); giving back
// part of one would need a stage-1 split the engine refuses, so the check phase says EINVAL
// and nothing changes. A whole block goes back.
// The carve-out holds the hypervisor's code and data, which it may map at other EL2 addresses
// too: it is never given back, a page or a whole set-up block of it.
TEST(HostHyp, GivingBackTheCarveOutIsEperm) {
  OwnEnv e;
  const u64 blk = OwnEnv::kCarve + (u64{2} << 20);  // in the carve-out, before the pool
  ASSERT_EQ(e.mp.hyp_table().lookup(e.mp.hyp_va(blk))->level, 2);
  EXPECT_EQ(e.mp.hyp_donate_host(blk + kPg, 1).error(), Error::eperm);
  EXPECT_EQ(e.mp.hyp_donate_host(blk, 512).error(), Error::eperm);
  EXPECT_EQ(e.mp.hyp_donate_host(OwnEnv::kCarve + OwnEnv::kCarveSize - kPg, 2).error(), Error::eperm)
      << "a range reaching into it";
  EXPECT_EQ(e.mp.host_annotation_owner(blk + kPg), kHypId) << "nothing changed";
  EXPECT_EQ(e.mp.hyp_state(blk + kPg), PageState::owned);
  EXPECT_THAT(e.plat->violations(), IsEmpty());
  EXPECT_TRUE(invariants_hold(e.mp));
}

TEST(Invariants, EveryCarveOutPageStaysTheHypervisorsAtTheHost) {
  OwnEnv e;
  const u64 pa = OwnEnv::kCarve + kPg;  // not a table page: the pool starts 16 MiB in
  ASSERT_TRUE(e.mp.host_memcache().topup(*e.plat, 4));
  auto& host = const_cast<OwnEnv::MP::S2&>(e.mp.host_table());
  ASSERT_TRUE(host.unmap(pa, kPg, e.mp.host_memcache()));  // the host's again (bypassing the checks)
  std::vector<u32> scratch(e.meta.size());
  OwnEnv::MP::Violation v;
  EXPECT_FALSE(e.mp.check_invariants(scratch, &v));
  EXPECT_STREQ(v.what, "carve-out page not the hypervisor's at the host");
  EXPECT_EQ(v.pa, pa);
}

// init refuses a machine description it cannot protect, before it allocates anything.
Status init_with(const std::vector<Region>& memory, const std::vector<MmioRegion>& mmio, Region carve,
                 u64 hyp_offset, std::size_t* allocated = nullptr) {
  sim::PhysMem mem;
  EXPECT_TRUE(mem.add_region(0x4000'0000, u64{16} << 20));
  sim::SimPlatform plat(mem, 0x4000'0000, u64{16} << 20, kPg);
  const MachineDesc m{memory, mmio, carve, hyp_offset};
  std::vector<PageMeta> meta(memory_pages(m, kPg));
  auto mp = std::make_unique<OwnEnv::MP>();
  const Status st = mp->init(plat, m, meta, CpuFeatures::modern());
  if (allocated != nullptr) *allocated = plat.allocator().pool_pages() - plat.allocator().free_page_count();
  return st;
}

TEST(Setup, InitRefusesAnOffsetThatLeavesMemoryWithoutAnEl2Address) {
  const std::vector<Region> ram{{0x4000'0000, u64{16} << 20}};
  EXPECT_TRUE(init_with(ram, {}, Region{0x4000'0000, u64{16} << 20}, OwnEnv::kHypOffset));
  // The last page of memory ends exactly at the top of the 48-bit EL2 range: fine.
  EXPECT_TRUE(init_with(ram, {}, Region{}, (u64{1} << 48) - 0x4100'0000));
  // One page past it, or a PA + offset that wraps past 2^64: EINVAL.
  EXPECT_EQ(init_with(ram, {}, Region{}, (u64{1} << 48) - 0x4100'0000 + kPg).error(), Error::einval);
  EXPECT_EQ(init_with(ram, {}, Region{}, ~u64{0} - 0x4000'0000).error(), Error::einval);
  // The hypervisor's MMIO is mapped at EL2 too; the host's is not.
  const std::vector<MmioRegion> hyp_uart{{0x0900'0000, 0x1000, true}};
  const u64 tight = (u64{1} << 48) - 0x4100'0000;  // memory fits, the UART (lower) does too
  EXPECT_TRUE(init_with(ram, hyp_uart, Region{}, tight));
  const std::vector<MmioRegion> hyp_high{{0x8000'0000, 0x1000, true}};
  const std::vector<MmioRegion> host_high{{0x8000'0000, 0x1000, false}};
  EXPECT_EQ(init_with(ram, hyp_high, Region{}, tight).error(), Error::einval);
  EXPECT_TRUE(init_with(ram, host_high, Region{}, tight));
  std::size_t allocated = 99;
  EXPECT_EQ(init_with(ram, hyp_high, Region{}, tight, &allocated).error(), Error::einval);
  EXPECT_EQ(allocated, 0u) << "refused before any table exists";
}

TEST(Setup, InitRefusesRegionsThatOverlapOrLeaveThePaRangeAndUnalignedHypRegions) {
  const std::vector<Region> ram{{0x4000'0000, u64{16} << 20}};
  const Region none{};
  // Memory: overlapping, sharing a page, out of order, empty, wrapping, past 48 bits.
  EXPECT_EQ(init_with({{0x4000'0000, 0x2000}, {0x4000'1000, 0x2000}}, {}, none, 0).error(), Error::einval);
  EXPECT_EQ(init_with({{0x4000'0000, 0x1800}, {0x4000'1800, 0x800}}, {}, none, 0).error(), Error::einval);
  EXPECT_EQ(init_with({{0x5000'0000, 0x1000}, {0x4000'0000, 0x1000}}, {}, none, 0).error(), Error::einval);
  EXPECT_EQ(init_with({{0x4000'0000, 0}}, {}, none, 0).error(), Error::einval);
  EXPECT_EQ(init_with({{~u64{0} - 0xfff, 0x2000}}, {}, none, 0).error(), Error::einval);
  EXPECT_EQ(init_with({{(u64{1} << 48) - 0x1000, 0x2000}}, {}, none, 0).error(), Error::einval);
  EXPECT_TRUE(init_with({{(u64{1} << 48) - 0x2000, 0x2000}}, {}, none, 0));
  // MMIO: overlapping memory (or sharing a page with it), each other, empty, past 48 bits.
  EXPECT_EQ(init_with(ram, {{0x40ff'f800, 0x800, false}}, none, 0).error(), Error::einval);
  EXPECT_EQ(init_with(ram, {{0x4100'0000, 0x800, false}}, none, 0), Status{}) << "the next page: fine";
  EXPECT_EQ(init_with(ram, {{0x0900'0000, 0x2000, false}, {0x0900'1000, 0x1000, true}}, none, 0).error(),
            Error::einval);
  EXPECT_EQ(init_with(ram, {{0x0900'0000, 0x800, false}, {0x0900'0800, 0x800, false}}, none, 0).error(),
            Error::einval)
      << "two regions in one page";
  EXPECT_EQ(init_with(ram, {{0x0900'0000, 0, false}}, none, 0).error(), Error::einval);
  EXPECT_EQ(init_with(ram, {{u64{1} << 48, 0x1000, false}}, none, 0).error(), Error::einval);
  // The hypervisor's MMIO is mapped whole at EL2: page-aligned; the host's may have
  // unaligned edges (it is faulted in a page at a time).
  EXPECT_EQ(init_with(ram, {{0x0900'0800, 0x800, true}}, none, 0).error(), Error::einval);
  EXPECT_EQ(init_with(ram, {{0x0900'0000, 0x800, true}}, none, 0).error(), Error::einval);
  EXPECT_TRUE(init_with(ram, {{0x0900'0800, 0x800, false}}, none, 0));
}

TEST(Setup, InitRefusesACarveOutOutsideMemoryOrUnaligned) {
  const std::vector<Region> ram{{0x4000'0000, u64{16} << 20}, {0x5000'0000, u64{16} << 20}};
  EXPECT_EQ(init_with(ram, {}, Region{0x3000'0000, 0x1000}, 0).error(), Error::einval) << "outside";
  EXPECT_EQ(init_with(ram, {}, Region{0x40ff'f000, 0x2000}, 0).error(), Error::einval) << "past the region's end";
  EXPECT_EQ(init_with(ram, {}, Region{0x40ff'f000, 0x1000'2000}, 0).error(), Error::einval) << "across two regions";
  EXPECT_EQ(init_with(ram, {}, Region{0x4000'0800, 0x1000}, 0).error(), Error::einval) << "unaligned base";
  EXPECT_EQ(init_with(ram, {}, Region{0x4000'0000, 0x1800}, 0).error(), Error::einval) << "unaligned size";
  EXPECT_TRUE(init_with(ram, {}, Region{0x4000'0000, u64{16} << 20}, 0));
}

// The checker walks the hypervisor's whole VA range: a mapping at EL2 that is not the
// hypervisor's own, wherever it is, is reported (not only at the EL2 addresses of memory).
TEST(Invariants, AStrayEl2MappingAnywhereIsAViolation) {
  struct Case {
    u64 va, pa;
    const char* what;
  };
  constexpr u64 kVa = 0x1000'0000;  // below every EL2 address of memory
  for (const Case& c : {Case{kVa, OwnEnv::kMem, "the hypervisor maps something not its own away from its EL2 address"},
                        Case{kVa, OwnEnv::kGic, "the hypervisor maps something not its own away from its EL2 address"},
                        Case{OwnEnv::kHypOffset + OwnEnv::kGic, OwnEnv::kGic,
                             "the hypervisor maps something that is neither memory nor its own"},
                        Case{kVa, OwnEnv::kCarve, nullptr}, Case{kVa, OwnEnv::kUart, nullptr}}) {
    SCOPED_TRACE(c.pa);
    OwnEnv e;
    ASSERT_TRUE(invariants_hold(e.mp));
    ASSERT_TRUE(e.mp.hyp_memcache().topup(*e.plat, 4));
    auto& hyp = const_cast<OwnEnv::MP::S1&>(e.mp.hyp_table());
    ASSERT_TRUE(hyp.map(c.va, kPg, c.pa, pgtable::Prot{pgtable::kPermRW}, e.mp.hyp_memcache()));
    std::vector<u32> scratch(e.meta.size());
    OwnEnv::MP::Violation v;
    EXPECT_EQ(e.mp.check_invariants(scratch, &v), c.what == nullptr);
    if (c.what != nullptr) {
      EXPECT_STREQ(v.what, c.what);
      EXPECT_EQ(v.pa, c.pa);
      EXPECT_EQ(v.who, kHypId);
    }
  }
}

// Table pages (and the pages memcaches keep for tables) must be the hypervisor's in the host's
// table: the carve-out, or memory donated to it. Being in the carve-out is not enough once the
// host's table says the host owns the page.
TEST(Invariants, EveryTablePageIsAnnotatedAsTheHypervisorsAtTheHost) {
  OwnEnv e;
  ASSERT_TRUE(invariants_hold(e.mp));
  const u64 root = e.mp.hyp_table().root_pa();
  ASSERT_TRUE(e.mp.host_memcache().topup(*e.plat, 4));
  auto& host = const_cast<OwnEnv::MP::S2&>(e.mp.host_table());
  ASSERT_TRUE(host.unmap(root, kPg, e.mp.host_memcache()));  // the host's again (bypassing the checks)
  std::vector<u32> scratch(e.meta.size());
  OwnEnv::MP::Violation v;
  EXPECT_FALSE(e.mp.check_invariants(scratch, &v));
  EXPECT_STREQ(v.what, "a table page lies in memory the hypervisor does not own");
  EXPECT_EQ(v.pa, root);
  EXPECT_EQ(v.who, kHypId);
}

// A pool outside the carve-out is fine once the host has donated it to the hypervisor; then
// giving back a page of it (holding a table, kept by a memcache, or free) is EBUSY.
TEST(HostHyp, GivingBackATablePageIsEbusy) {
  sim::PhysMem mem;
  ASSERT_TRUE(mem.add_region(0x4000'0000, u64{64} << 20));
  constexpr u64 kPoolBase = 0x4200'0000, kPoolPages = 1024;
  sim::SimPlatform plat(mem, kPoolBase, kPoolPages * kPg, kPg);
  const std::vector<Region> regions{{0x4000'0000, u64{64} << 20}};
  const MachineDesc m{regions, {}, Region{0x4000'0000, u64{16} << 20}, OwnEnv::kHypOffset};
  std::vector<PageMeta> meta(memory_pages(m, kPg));
  auto mp = std::make_unique<OwnEnv::MP>();
  ASSERT_TRUE(mp->init(plat, m, meta, CpuFeatures::modern()));
  mp->finalize();
  EXPECT_FALSE(invariants_hold(*mp)) << "the pool is the host's";
  ASSERT_TRUE(mp->host_donate_hyp(kPoolBase, kPoolPages));
  EXPECT_TRUE(invariants_hold(*mp)) << "the pool is the hypervisor's";
  ASSERT_TRUE(mp->create_guest(2, 1));
  ASSERT_TRUE(mp->guest(2)->mc.topup(plat, 2));
  // Pages in use: the roots, a table below a root, a page waiting in a memcache.
  const u64 guest_root = mp->guest(2)->table.root_pa();
  EXPECT_EQ(mp->hyp_donate_host(mp->host_table().root_pa(), 1).error(), Error::ebusy);
  EXPECT_EQ(mp->hyp_donate_host(mp->hyp_table().root_pa(), 1).error(), Error::ebusy);
  EXPECT_EQ(mp->hyp_donate_host(guest_root, 1).error(), Error::ebusy);
  u64 cached = 0;
  mp->guest(2)->mc.for_each(plat, [&](u64 pa) { cached = pa; });
  ASSERT_NE(cached, 0u);
  EXPECT_EQ(mp->hyp_donate_host(cached, 1).error(), Error::ebusy) << "a memcache page";
  const auto below_root = [&](u64 root) {
    return arch::TableDesc(plat.phys_to_virt(root)[arch::level_index(Granule::k4K, mp->hyp_config().start_level,
                                                                     mp->hyp_va(kPoolBase))])
        .next_table(Granule::k4K);
  };
  EXPECT_EQ(mp->hyp_donate_host(below_root(mp->hyp_table().root_pa()), 1).error(), Error::ebusy);
  EXPECT_EQ(mp->hyp_donate_host(kPoolBase, kPoolPages).error(), Error::ebusy) << "a range holding one";
  EXPECT_EQ(mp->host_annotation_owner(guest_root), kHypId) << "nothing changed";
  EXPECT_TRUE(invariants_hold(*mp));
  // A free pool page stays too: the next allocation could make it a table.
  const u64 unused = kPoolBase + (kPoolPages - 1) * kPg;
  ASSERT_FALSE(plat.allocator().allocated(unused));
  EXPECT_EQ(mp->hyp_donate_host(unused, 1).error(), Error::ebusy);
  // A donated page outside the pool goes back.
  ASSERT_TRUE(mp->host_donate_hyp(kPoolBase - kPg, 1));
  ASSERT_TRUE(mp->hyp_donate_host(kPoolBase - kPg, 1));
  EXPECT_EQ(mp->host_state(kPoolBase - kPg), PageState::owned);
  EXPECT_TRUE(invariants_hold(*mp));
  EXPECT_THAT(plat.violations(), IsEmpty());
}

}  // namespace
}  // namespace ptguard::test
