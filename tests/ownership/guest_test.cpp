// Transitions between the host and guests, from every state, asserting the result and the
// state at the host, the hypervisor and the guest, and what the MMU lets each do.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <memory>

#include "env.hpp"

namespace ptguard::test {
namespace {

using ::testing::IsEmpty;
constexpr u64 kPg = OwnEnv::kPage;
constexpr ComponentId kG1 = 2, kG2 = 3;

struct GuestEnv : OwnEnv {
  GuestEnv() {
    EXPECT_TRUE(mp.create_guest(kG1, 1));
    EXPECT_TRUE(mp.create_guest(kG2, 2));
    EXPECT_TRUE(mp.guest(kG1)->mc.topup(*plat, 32));
    EXPECT_TRUE(mp.guest(kG2)->mc.topup(*plat, 32));
  }
  sim::Translation guest_access(ComponentId id, u64 ipa, sim::Access a = sim::Access::read) const {
    const auto* g = mp.guest(id);
    const auto& c = mp.host_config();
    return sim::translate_stage2(mem, sim::Stage2Regs{c.vtcr, make_vttbr(g->table.root_pa(), g->table.vmid()), c.fwb},
                                 ipa, a);
  }
  void write_byte(u64 pa, u8 v) { ASSERT_TRUE(mem.write(pa, &v, 1)); }
  u8 read_byte(u64 pa) const {
    u8 v = 0xee;
    EXPECT_TRUE(mem.read(pa, &v, 1));
    return v;
  }
};

TEST(Guests, CreationRules) {
  GuestEnv e;
  EXPECT_EQ(e.mp.create_guest(kG1, 9).error(), Error::eexist);
  EXPECT_EQ(e.mp.create_guest(kHypId, 9).error(), Error::einval);
  EXPECT_EQ(e.mp.create_guest(kHostId, 9).error(), Error::einval);
  EXPECT_TRUE(e.mp.create_guest(kMaxGuestId, 9)) << "the owner field's limit is allowed";
}

// A VMID tags TLB entries: a guest on the host's VMID, on one another guest still holds, or on
// one wider than the VMID field would translate through another table's entries.
TEST(Guests, VmidRules) {
  GuestEnv e;  // kG1 on VMID 1, kG2 on VMID 2
  constexpr ComponentId kG3 = 4;
  EXPECT_EQ(e.mp.create_guest(kG3, OwnEnv::MP::kHostVmid).error(), Error::einval);
  EXPECT_EQ(e.mp.create_guest(kG3, 1).error(), Error::einval) << "held by a live guest";
  ASSERT_TRUE(e.mp.teardown_guest(kG1));
  EXPECT_EQ(e.mp.create_guest(kG3, 1).error(), Error::einval) << "held until the guest is reclaimed";
  ASSERT_TRUE(e.mp.reclaim_guest(kG1));
  ASSERT_TRUE(e.mp.create_guest(kG3, 1)) << "free again";
  EXPECT_EQ(e.mp.guest(kG3)->table.vmid(), 1u);
  EXPECT_TRUE(e.mp.create_guest(kG1, 0xffff)) << "16-bit VMIDs on this CPU";
  EXPECT_EQ(e.mp.guest(kG3 + 1), nullptr) << "nothing created by the refusals";
  EXPECT_TRUE(invariants_hold(e.mp));

  // A CPU with 8-bit VMIDs: 0x100 does not fit the field (it would be VMID 0, the host's).
  sim::PhysMem mem;
  ASSERT_TRUE(mem.add_region(0x4000'0000, u64{16} << 20));
  sim::SimPlatform plat(mem, 0x4000'0000, u64{16} << 20, kPg);
  const std::vector<Region> ram{{0x4000'0000, u64{16} << 20}};
  const MachineDesc m{ram, {}, Region{0x4000'0000, u64{16} << 20}, OwnEnv::kHypOffset};
  std::vector<PageMeta> meta(memory_pages(m, kPg));
  CpuFeatures cpu = CpuFeatures::modern();
  cpu.vmid_bits = 8;
  auto mp = std::make_unique<OwnEnv::MP>();
  ASSERT_TRUE(mp->init(plat, m, meta, cpu));
  ASSERT_EQ(mp->host_config().vmid_bits, 8u);
  EXPECT_EQ(mp->create_guest(kG1, 0x100).error(), Error::einval);
  EXPECT_EQ(mp->create_guest(kG1, 0xffff).error(), Error::einval);
  EXPECT_TRUE(mp->create_guest(kG1, 0xff));
  EXPECT_TRUE(invariants_hold(*mp));
}

TEST(Guests, ShareWithSeveralGuestsIsCounted) {
  GuestEnv e;
  const u64 pa = OwnEnv::kMem, ipa = 0x1000'0000;
  ASSERT_TRUE(e.mp.host_share_guest(pa, 2, kG1, ipa, pgtable::kPermRW));
  ASSERT_TRUE(e.mp.host_share_guest(pa, 2, kG2, ipa + 0x10'0000, pgtable::kPermR));
  EXPECT_EQ(e.mp.page_meta(pa).guest_shares, 2u);
  EXPECT_EQ(e.mp.host_state(pa), PageState::shared_owned);
  EXPECT_EQ(e.mp.guest_state(kG1, ipa), PageState::shared_borrowed);
  EXPECT_TRUE(e.guest_access(kG1, ipa + kPg, sim::Access::write).ok());
  EXPECT_EQ(e.guest_access(kG2, ipa + 0x10'0000, sim::Access::write).fault, sim::FaultKind::permission);
  EXPECT_EQ(e.guest_access(kG1, ipa, sim::Access::read).output_address, pa);
  // A page shared with guests cannot go to the hypervisor or the secure world.
  EXPECT_EQ(e.mp.host_share_hyp(pa, 1).error(), Error::eperm);
  EXPECT_EQ(e.mp.host_share_ffa(pa, 1).error(), Error::eperm);
  // The same guest address twice: EPERM.
  EXPECT_EQ(e.mp.host_share_guest(pa + 4 * kPg, 1, kG1, ipa, pgtable::kPermRW).error(), Error::eperm);
  ASSERT_TRUE(e.mp.host_unshare_guest(kG1, ipa, 2));
  EXPECT_EQ(e.mp.page_meta(pa).guest_shares, 1u);
  EXPECT_EQ(e.mp.host_state(pa), PageState::shared_owned);
  EXPECT_EQ(e.mp.host_unshare_guest(kG1, ipa, 1).error(), Error::enoent);
  ASSERT_TRUE(e.mp.host_unshare_guest(kG2, ipa + 0x10'0000, 2));
  EXPECT_EQ(e.mp.host_state(pa), PageState::owned);
  EXPECT_EQ(e.mp.page_meta(pa).guest_shares, 0u);
  EXPECT_THAT(e.plat->violations(), IsEmpty());
  EXPECT_TRUE(invariants_hold(e.mp));
}

TEST(Guests, SharesOfHypOrFfaPagesAndBadArgumentsAreRefused) {
  GuestEnv e;
  const u64 pa = OwnEnv::kMem;
  ASSERT_TRUE(e.mp.host_share_hyp(pa, 1));
  EXPECT_EQ(e.mp.host_share_guest(pa, 1, kG1, 0, pgtable::kPermRW).error(), Error::eperm);
  ASSERT_TRUE(e.mp.host_share_ffa(pa + kPg, 1));
  EXPECT_EQ(e.mp.host_share_guest(pa + kPg, 1, kG1, 0, pgtable::kPermRW).error(), Error::eperm);
  EXPECT_EQ(e.mp.host_share_guest(OwnEnv::kGic, 1, kG1, 0, pgtable::kPermRW).error(), Error::eperm) << "MMIO";
  EXPECT_EQ(e.mp.host_donate_guest(0x7000'0000'0000, 1, kG1, 0).error(), Error::eperm) << "no memory there";
  EXPECT_EQ(e.mp.host_share_guest(pa + 2 * kPg, 1, kG1, 0, pgtable::kPermNone).error(), Error::einval);
  EXPECT_EQ(e.mp.host_share_guest(pa + 2 * kPg, 1, 77, 0, pgtable::kPermRW).error(), Error::einval) << "no such guest";
}

TEST(Guests, ATooSmallMemcacheFailsWithNothingChanged) {
  GuestEnv e;
  e.mp.guest(kG1)->mc.drain(*e.plat);
  const u64 pa = OwnEnv::kMem;
  EXPECT_EQ(e.mp.host_share_guest(pa, 1, kG1, 0x4000'0000, pgtable::kPermRW).error(), Error::enomem);
  EXPECT_EQ(e.mp.host_donate_guest(pa, 1, kG1, 0x4000'0000).error(), Error::enomem);
  EXPECT_EQ(e.mp.host_state(pa), PageState::owned);
  EXPECT_EQ(e.mp.page_meta(pa).guest_shares, 0u);
  EXPECT_EQ(e.mp.guest_state(kG1, 0x4000'0000), PageState::none);
}

TEST(Guests, DonateThenGuestSharesBackAndUnshares) {
  GuestEnv e;
  const u64 pa = OwnEnv::kMem + (u64{2} << 20), ipa = 0x8000'0000;
  ASSERT_TRUE(e.mp.host_donate_guest(pa, 4, kG1, ipa));
  EXPECT_EQ(e.mp.host_state(pa), PageState::none);
  EXPECT_EQ(e.mp.host_annotation_owner(pa), kG1);
  EXPECT_EQ(e.mp.guest_state(kG1, ipa), PageState::owned);
  EXPECT_EQ(e.mp.host_handle_fault(pa).error(), Error::eperm);
  EXPECT_TRUE(e.guest_access(kG1, ipa + kPg, sim::Access::exec).ok());
  ASSERT_TRUE(e.mp.guest_share_host(kG1, ipa + kPg, 1));
  EXPECT_EQ(e.mp.guest_state(kG1, ipa + kPg), PageState::shared_owned);
  EXPECT_EQ(e.mp.host_state(pa + kPg), PageState::shared_borrowed);
  EXPECT_TRUE(e.host_access(pa + kPg, sim::Access::write).ok());
  EXPECT_EQ(e.host_access(pa).fault, sim::FaultKind::translation) << "the rest stays the guest's";
  EXPECT_TRUE(e.guest_access(kG1, ipa + kPg, sim::Access::write).ok()) << "guest permissions kept";
  EXPECT_EQ(e.mp.guest_share_host(kG1, ipa + kPg, 1).error(), Error::eperm);
  ASSERT_TRUE(e.mp.guest_unshare_host(kG1, ipa + kPg, 1));
  EXPECT_EQ(e.mp.host_state(pa + kPg), PageState::none);
  EXPECT_EQ(e.mp.host_annotation_owner(pa + kPg), kG1);
  EXPECT_EQ(e.mp.guest_state(kG1, ipa + kPg), PageState::owned);
  EXPECT_THAT(e.plat->violations(), IsEmpty());
  EXPECT_TRUE(invariants_hold(e.mp));
}

TEST(Guests, LendRelinquishReclaim) {
  GuestEnv e;
  const u64 pa = OwnEnv::kMem + 32 * kPg, ipa = 0x9000'0000;
  ASSERT_TRUE(e.mp.host_lend_guest(pa, 2, kG1, ipa, pgtable::kPermRW));
  EXPECT_EQ(e.mp.host_state(pa), PageState::lent);
  EXPECT_EQ(e.mp.host_annotation_owner(pa), kG1) << "the borrower's id";
  EXPECT_EQ(e.mp.guest_state(kG1, ipa), PageState::borrowed);
  EXPECT_EQ(e.mp.host_handle_fault(pa).error(), Error::eperm) << "the owner lost access";
  EXPECT_TRUE(e.guest_access(kG1, ipa, sim::Access::write).ok());
  EXPECT_EQ(e.mp.host_reclaim_lent(pa, 2).error(), Error::ebusy) << "not relinquished";
  ASSERT_TRUE(e.mp.guest_relinquish(kG1, ipa, 2));
  EXPECT_EQ(e.mp.guest_state(kG1, ipa), PageState::none);
  EXPECT_EQ(e.guest_access(kG1, ipa).fault, sim::FaultKind::translation);
  EXPECT_EQ(e.mp.host_handle_fault(pa).error(), Error::eperm) << "neither can reach it";
  ASSERT_TRUE(e.mp.host_reclaim_lent(pa, 2));
  EXPECT_EQ(e.mp.host_state(pa), PageState::owned);
  ASSERT_TRUE(e.mp.host_handle_fault(pa));
  EXPECT_EQ(e.mp.host_reclaim_lent(pa, 1).error(), Error::eperm);
}

// A torn-down guest's table still maps its pages, and the TLBs may hold those translations
// under its VMID: reclaim must invalidate them (and wait) before the first page is scrubbed or
// its host entry changes, or a stale entry would reach a page the host owns again.
TEST(Guests, ReclaimInvalidatesTheGuestsTlbFirst) {
  GuestEnv e;
  const u64 owned = OwnEnv::kMem + (u64{4} << 20), shared = owned + (u64{2} << 20);
  ASSERT_TRUE(e.mp.host_donate_guest(owned, 2, kG1, 0x1000'0000));
  ASSERT_TRUE(e.mp.host_share_guest(shared, 1, kG1, 0x2000'0000, pgtable::kPermRW));
  ASSERT_TRUE(e.mp.teardown_guest(kG1));
  const u16 vmid = e.mp.guest(kG1)->table.vmid();
  const auto mark = e.plat->log().mark();
  ASSERT_TRUE(e.mp.reclaim_guest(kG1));
  const auto ev = e.plat->log().since(mark);
  // The first fixmap mapping is reclaim's probe that the fixmap works (nothing changes by it);
  // every later one is a scrub.
  std::size_t flush = ev.size(), first_write = ev.size(), first_scrub = ev.size(), fixmaps = 0;
  for (std::size_t i = 0; i < ev.size(); ++i) {
    if (ev[i].kind == sim::EventKind::fixmap_map && fixmaps++ == 1) first_scrub = i;
    if (flush == ev.size() && ev[i].kind == sim::EventKind::tlbi && ev[i].tlbi_op == Tlbi::vmalls12e1is &&
        ev[i].vmid == vmid)
      flush = i;
    if (first_write == ev.size() && ev[i].kind == sim::EventKind::write) first_write = i;
  }
  ASSERT_LT(flush, ev.size()) << "no TLBI VMALLS12E1IS for the guest's VMID";
  ASSERT_GT(flush, 0u);
  EXPECT_EQ(ev[flush - 1], sim::Event::barrier(Barrier::dsb_ishst));
  ASSERT_LT(flush + 1, ev.size());
  EXPECT_EQ(ev[flush + 1], sim::Event::barrier(Barrier::dsb_ish)) << "the invalidation completes first";
  EXPECT_LT(flush, first_write) << "a table entry changed before the guest's TLB entries went";
  EXPECT_LT(flush, first_scrub) << "a page was scrubbed before the guest's TLB entries went";
  EXPECT_LT(first_write, ev.size()) << "reclaim changed no entry: the test checks nothing";
  EXPECT_LT(first_scrub, ev.size()) << "reclaim scrubbed nothing: the test checks nothing";
  EXPECT_TRUE(invariants_hold(e.mp));
}

TEST(Guests, TeardownRelinquishesAndReclaimScrubs) {
  GuestEnv e;
  const u64 owned = OwnEnv::kMem + (u64{4} << 20), shared = owned + (u64{2} << 20), lent = shared + 16 * kPg;
  ASSERT_TRUE(e.mp.host_donate_guest(owned, 2, kG1, 0x1000'0000));
  e.write_byte(owned + 5, 0x5a);
  ASSERT_TRUE(e.mp.host_share_guest(shared, 1, kG1, 0x2000'0000, pgtable::kPermRW));
  ASSERT_TRUE(e.mp.host_lend_guest(lent, 1, kG1, 0x3000'0000, pgtable::kPermRW));
  EXPECT_EQ(e.mp.reclaim_guest(kG1).error(), Error::eperm) << "live guest";
  ASSERT_TRUE(e.mp.teardown_guest(kG1));
  EXPECT_EQ(e.mp.guest_state(kG1, 0x3000'0000), PageState::none) << "relinquished";
  EXPECT_EQ(e.mp.host_share_guest(OwnEnv::kMem, 1, kG1, 0, pgtable::kPermRW).error(), Error::eperm);
  ASSERT_TRUE(e.mp.reclaim_guest(kG1));
  EXPECT_EQ(e.read_byte(owned + 5), 0) << "scrubbed";
  EXPECT_EQ(e.mp.host_state(owned), PageState::owned);
  EXPECT_EQ(e.mp.host_state(shared), PageState::owned);
  EXPECT_EQ(e.mp.page_meta(shared).guest_shares, 0u);
  EXPECT_EQ(e.mp.host_state(lent), PageState::lent) << "the host reclaims lent pages itself";
  ASSERT_TRUE(e.mp.host_reclaim_lent(lent, 1));
  EXPECT_EQ(e.mp.guest(kG1), nullptr);
  ASSERT_TRUE(e.mp.host_handle_fault(owned));
  EXPECT_EQ(e.plat->fixmap_pa(), std::nullopt) << "the fixmap slot is released";
  EXPECT_THAT(e.plat->violations(), IsEmpty());
  EXPECT_TRUE(invariants_hold(e.mp));
}

TEST(Guests, ForcedReclaimPoisonsTheGuestAddress) {
  GuestEnv e;
  const u64 pa = OwnEnv::kMem + (u64{8} << 20), ipa = 0x5000'0000;
  ASSERT_TRUE(e.mp.host_donate_guest(pa, 2, kG1, ipa));
  e.write_byte(pa + 9, 0x77);
  EXPECT_EQ(e.mp.host_force_reclaim(OwnEnv::kMem).error(), Error::eperm) << "not a guest's page";
  ASSERT_TRUE(e.mp.host_force_reclaim(pa));
  EXPECT_EQ(e.read_byte(pa + 9), 0);
  EXPECT_EQ(e.mp.host_state(pa), PageState::owned);
  EXPECT_EQ(e.mp.guest_state(kG1, ipa), PageState::poisoned);
  EXPECT_EQ(e.guest_access(kG1, ipa).fault, sim::FaultKind::translation);
  EXPECT_TRUE(e.guest_access(kG1, ipa + kPg).ok()) << "only that page";
  EXPECT_EQ(e.mp.guest_share_host(kG1, ipa, 1).error(), Error::ehwpoison);
  EXPECT_EQ(e.mp.host_share_guest(OwnEnv::kMem, 1, kG1, ipa, pgtable::kPermRW).error(), Error::eperm);
  EXPECT_EQ(e.mp.host_donate_guest(OwnEnv::kMem, 1, kG1, ipa).error(), Error::eperm);
  EXPECT_EQ(e.mp.host_lend_guest(OwnEnv::kMem, 1, kG1, ipa, pgtable::kPermRW).error(), Error::eperm);
  EXPECT_EQ(e.mp.host_unshare_guest(kG1, ipa, 1).error(), Error::eperm) << "nothing is shared there";
  // The guest's own calls on the poisoned address all say the page is gone.
  EXPECT_EQ(e.mp.guest_unshare_host(kG1, ipa, 1).error(), Error::ehwpoison);
  EXPECT_EQ(e.mp.guest_relinquish(kG1, ipa, 1).error(), Error::ehwpoison);
  EXPECT_EQ(e.mp.guest_wrprotect(kG1, ipa, 1).error(), Error::ehwpoison);
  EXPECT_EQ(e.mp.guest_relax_perms(kG1, ipa, pgtable::kPermW).error(), Error::ehwpoison);
  EXPECT_EQ(e.mp.guest_mkyoung(kG1, ipa).error(), Error::ehwpoison);
  EXPECT_EQ(e.mp.guest_test_clear_young(kG1, ipa, 1, false).error(), Error::ehwpoison);
  ASSERT_TRUE(e.mp.host_handle_fault(pa));
  EXPECT_TRUE(invariants_hold(e.mp));
}

// After teardown only reclaim_guest touches a guest's table: every other call on it is EPERM,
// and nothing changes.
TEST(Guests, ATornDownGuestTakesNoTransition) {
  GuestEnv e;
  const u64 pa = OwnEnv::kMem + (u64{12} << 20), ipa = 0x5000'0000;
  ASSERT_TRUE(e.mp.host_share_guest(pa, 1, kG1, ipa, pgtable::kPermRW));
  ASSERT_TRUE(e.mp.host_donate_guest(pa + kPg, 1, kG1, ipa + kPg));
  ASSERT_TRUE(e.mp.host_lend_guest(pa + 2 * kPg, 1, kG1, ipa + 2 * kPg, pgtable::kPermRW));
  ASSERT_TRUE(e.mp.teardown_guest(kG1));
  const u64 free = pa + 16 * kPg, free_ipa = ipa + 0x10'0000;
  EXPECT_EQ(e.mp.host_share_guest(free, 1, kG1, free_ipa, pgtable::kPermRW).error(), Error::eperm);
  EXPECT_EQ(e.mp.host_donate_guest(free, 1, kG1, free_ipa).error(), Error::eperm);
  EXPECT_EQ(e.mp.host_lend_guest(free, 1, kG1, free_ipa, pgtable::kPermRW).error(), Error::eperm);
  EXPECT_EQ(e.mp.host_unshare_guest(kG1, ipa, 1).error(), Error::eperm);
  EXPECT_EQ(e.mp.guest_share_host(kG1, ipa + kPg, 1).error(), Error::eperm);
  EXPECT_EQ(e.mp.guest_relinquish(kG1, ipa + 2 * kPg, 1).error(), Error::eperm);
  EXPECT_EQ(e.mp.guest_relax_perms(kG1, ipa, pgtable::kPermRWX).error(), Error::eperm);
  EXPECT_EQ(e.mp.guest_wrprotect(kG1, ipa, 1).error(), Error::eperm);
  EXPECT_EQ(e.mp.guest_mkyoung(kG1, ipa).error(), Error::eperm);
  EXPECT_EQ(e.mp.guest_test_clear_young(kG1, ipa, 1, false).error(), Error::eperm);
  EXPECT_EQ(e.mp.page_meta(pa).guest_shares, 1u) << "the share is dropped by reclaim, not by a refused unshare";
  EXPECT_EQ(e.mp.guest_state(kG1, ipa), PageState::shared_borrowed);
  EXPECT_TRUE(invariants_hold(e.mp));
  ASSERT_TRUE(e.mp.reclaim_guest(kG1));
  EXPECT_EQ(e.mp.host_state(pa), PageState::owned);
  EXPECT_TRUE(invariants_hold(e.mp));
}

// A request that is refused says why, whatever the guest's memcache holds: the state checks
// come before ENOMEM.
TEST(Guests, StateErrorsComeBeforeAnEmptyMemcache) {
  GuestEnv e;
  const u64 pa = OwnEnv::kMem + (u64{16} << 20), ipa = 0x5000'0000;
  ASSERT_TRUE(e.mp.host_donate_hyp(pa, 1));  // not the host's any more
  auto* g = e.mp.guest(kG2);
  g->mc.drain(*e.plat);
  ASSERT_EQ(g->mc.size(), 0u);
  EXPECT_EQ(e.mp.host_share_guest(pa, 1, kG2, ipa, pgtable::kPermRW).error(), Error::eperm);
  EXPECT_EQ(e.mp.host_donate_guest(pa, 1, kG2, ipa).error(), Error::eperm);
  EXPECT_EQ(e.mp.host_lend_guest(pa, 1, kG2, ipa, pgtable::kPermRW).error(), Error::eperm);
  // A legal request with an empty memcache: ENOMEM, nothing changed.
  EXPECT_EQ(e.mp.host_donate_guest(pa + kPg, 1, kG2, ipa).error(), Error::enomem);
  EXPECT_EQ(e.mp.host_state(pa + kPg), PageState::owned);
  EXPECT_EQ(e.mp.guest_state(kG2, ipa), PageState::none);
  EXPECT_TRUE(invariants_hold(e.mp));
}

}  // namespace
}  // namespace ptguard::test

namespace ptguard::test {
namespace {

TEST(Guests, PermissionChangesOnSharedPagesKeepTheState) {
  GuestEnv e;
  const u64 pa = OwnEnv::kMem + 128 * kPg, ipa = 0x6000'0000;
  ASSERT_TRUE(e.mp.host_share_guest(pa, 2, kG1, ipa, pgtable::kPermR));
  EXPECT_EQ(e.guest_access(kG1, ipa, sim::Access::write).fault, sim::FaultKind::permission);
  ASSERT_TRUE(e.mp.guest_relax_perms(kG1, ipa, pgtable::kPermW));
  EXPECT_TRUE(e.guest_access(kG1, ipa, sim::Access::write).ok());
  EXPECT_EQ(e.mp.guest_state(kG1, ipa), PageState::shared_borrowed);
  ASSERT_TRUE(e.mp.guest_wrprotect(kG1, ipa, 2));
  EXPECT_EQ(e.guest_access(kG1, ipa, sim::Access::write).fault, sim::FaultKind::permission);
  EXPECT_EQ(e.mp.guest_state(kG1, ipa), PageState::shared_borrowed);
  EXPECT_TRUE(*e.mp.guest_test_clear_young(kG1, ipa, 2, true));
  EXPECT_FALSE(*e.mp.guest_test_clear_young(kG1, ipa, 2, false));
  ASSERT_TRUE(e.mp.guest_mkyoung(kG1, ipa + kPg));
  EXPECT_TRUE(*e.mp.guest_test_clear_young(kG1, ipa + kPg, 1, false));
  EXPECT_EQ(e.mp.guest_state(kG1, ipa + kPg), PageState::shared_borrowed);
  // Only on pages shared with the guest: its own pages are not the host's to change.
  ASSERT_TRUE(e.mp.host_donate_guest(pa + 8 * kPg, 1, kG1, ipa + 0x10'0000));
  EXPECT_EQ(e.mp.guest_wrprotect(kG1, ipa + 0x10'0000, 1).error(), Error::eperm);
  EXPECT_EQ(e.mp.guest_relax_perms(kG1, ipa + 0x10'0000, pgtable::kPermW).error(), Error::eperm);
  EXPECT_TRUE(invariants_hold(e.mp));
}

// A platform whose fixmap maps nothing: scrubbing is impossible, so a reclaim that would give
// the host a page the guest wrote fails before changing anything (EOPNOTSUPP), rather than
// skipping the scrub.
struct NoFixmapPlatform : sim::SimPlatform {
  using sim::SimPlatform::SimPlatform;
  void* fixmap_map(u64) { return nullptr; }
  void fixmap_unmap() {}
};

TEST(Guests, WithoutAFixmapReclaimsThatNeedAScrubFailBeforeChangingAnything) {
  using MP = MemProtect<Granule::k4K, NoFixmapPlatform>;
  sim::PhysMem mem;
  ASSERT_TRUE(mem.add_region(0x4000'0000, u64{64} << 20));
  NoFixmapPlatform plat(mem, 0x4000'0000, u64{16} << 20, kPg);
  const std::vector<Region> ram{{0x4000'0000, u64{64} << 20}};
  const MachineDesc m{ram, {}, Region{0x4000'0000, u64{16} << 20}, OwnEnv::kHypOffset};
  std::vector<PageMeta> meta(memory_pages(m, kPg));
  auto mp = std::make_unique<MP>();
  ASSERT_TRUE(mp->init(plat, m, meta, CpuFeatures::modern()));
  mp->finalize();
  constexpr u64 kPa = 0x4200'0000, kShared = kPa + 0x10'0000, kIpa = 0x1000'0000;
  ASSERT_TRUE(mp->create_guest(kG1, 1));
  ASSERT_TRUE(mp->guest(kG1)->mc.topup(plat, 16));
  ASSERT_TRUE(mp->host_donate_guest(kPa, 2, kG1, kIpa));
  ASSERT_TRUE(mp->host_share_guest(kShared, 1, kG1, kIpa + 0x10'0000, pgtable::kPermRW));
  // Forced reclaim: refused, the guest keeps its page.
  EXPECT_EQ(mp->host_force_reclaim(kPa).error(), Error::eopnotsupp);
  EXPECT_EQ(mp->guest_state(kG1, kIpa), PageState::owned);
  EXPECT_EQ(mp->host_annotation_owner(kPa), kG1);
  EXPECT_TRUE(invariants_hold(*mp));
  // Reclaim after teardown: refused, nothing changed; the guest stays until it can be scrubbed.
  ASSERT_TRUE(mp->teardown_guest(kG1));
  EXPECT_EQ(mp->reclaim_guest(kG1).error(), Error::eopnotsupp);
  ASSERT_NE(mp->guest(kG1), nullptr);
  EXPECT_EQ(mp->host_annotation_owner(kPa), kG1);
  EXPECT_EQ(mp->host_annotation_owner(kPa + kPg), kG1);
  EXPECT_EQ(mp->page_meta(kShared).guest_shares, 1u);
  EXPECT_TRUE(invariants_hold(*mp));
  // A guest that owns nothing needs no scrub: its reclaim works without a fixmap.
  ASSERT_TRUE(mp->create_guest(kG2, 2));
  ASSERT_TRUE(mp->guest(kG2)->mc.topup(plat, 16));
  ASSERT_TRUE(mp->host_share_guest(kShared, 1, kG2, kIpa, pgtable::kPermR));
  ASSERT_TRUE(mp->teardown_guest(kG2));
  ASSERT_TRUE(mp->reclaim_guest(kG2));
  EXPECT_EQ(mp->guest(kG2), nullptr);
  EXPECT_EQ(mp->page_meta(kShared).guest_shares, 1u);
  EXPECT_TRUE(invariants_hold(*mp));
}

}  // namespace
}  // namespace ptguard::test
