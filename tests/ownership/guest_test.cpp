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
// under its VMID: teardown retires the table with one VMID-wide invalidation (waited for) before
// it changes any entry, so no stale entry can reach a page the host owns again; reclaim then
// issues no TLBI of that VMID at all (the guest runs nowhere, nothing refills them).
TEST(Guests, TeardownInvalidatesTheGuestsTlbOnceAndReclaimNone) {
  GuestEnv e;
  const u64 owned = OwnEnv::kMem + (u64{4} << 20), shared = owned + (u64{2} << 20), lent = shared + 16 * kPg;
  ASSERT_TRUE(e.mp.host_donate_guest(owned, 2, kG1, 0x1000'0000));
  ASSERT_TRUE(e.mp.host_share_guest(shared, 1, kG1, 0x2000'0000, pgtable::kPermRW));
  ASSERT_TRUE(e.mp.host_lend_guest(lent, 1, kG1, 0x3000'0000, pgtable::kPermRW));
  const u16 vmid = e.mp.guest(kG1)->table.vmid();
  auto mark = e.plat->log().mark();
  ASSERT_TRUE(e.mp.teardown_guest(kG1));
  auto ev = e.plat->log().since(mark);
  std::size_t flush = ev.size(), first_write = ev.size(), flushes = 0, guest_tlbis = 0;
  for (std::size_t i = 0; i < ev.size(); ++i) {
    if (ev[i].kind == sim::EventKind::tlbi && ev[i].vmid == vmid) {
      ++guest_tlbis;
      if (ev[i].tlbi_op == Tlbi::vmalls12e1is && flushes++ == 0) flush = i;
    }
    if (first_write == ev.size() && ev[i].kind == sim::EventKind::write) first_write = i;
  }
  ASSERT_LT(flush, ev.size()) << "teardown issued no TLBI VMALLS12E1IS for the guest's VMID";
  ASSERT_GT(flush, 0u);
  EXPECT_EQ(ev[flush - 1], sim::Event::barrier(Barrier::dsb_ishst));
  ASSERT_LT(flush + 1, ev.size());
  EXPECT_EQ(ev[flush + 1], sim::Event::barrier(Barrier::dsb_ish)) << "the invalidation completes first";
  EXPECT_LT(first_write, ev.size()) << "teardown relinquished nothing: the test checks nothing";
  EXPECT_LT(flush, first_write) << "a table entry changed before the guest's TLB entries went";
  EXPECT_EQ(guest_tlbis, 1u) << "the lent page's unmap needs no TLBI of its own after the flush";
  EXPECT_TRUE(e.mp.guest(kG1)->table.retired());

  mark = e.plat->log().mark();
  ASSERT_TRUE(e.mp.reclaim_guest(kG1));
  ev = e.plat->log().since(mark);
  std::size_t writes = 0, scrubs = 0;
  guest_tlbis = 0;
  for (const auto& x : ev) {
    guest_tlbis += x.kind == sim::EventKind::tlbi && x.vmid == vmid;
    writes += x.kind == sim::EventKind::write;
    scrubs += x.kind == sim::EventKind::fixmap_map;
  }
  EXPECT_GT(writes, 0u) << "reclaim changed no entry: the test checks nothing";
  EXPECT_GE(scrubs, 2u) << "reclaim scrubbed nothing: the test checks nothing";
  EXPECT_EQ(guest_tlbis, 0u) << "the retired guest's TLB entries are gone: no TLBI a page";
  EXPECT_EQ(e.mp.host_state(owned), PageState::owned);
  EXPECT_EQ(e.mp.host_state(shared), PageState::owned);
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

// ---- reclaiming a torn-down guest one page at a time -----------------------------------------

// The number of tables (below the root) a table holds: reclaim_guest_page frees them as they
// empty, the root stays.
template <typename T>
u64 tables_below_root(const T& t) {
  struct V {
    static constexpr unsigned visits() { return pgtable::kVisitTablePre; }
    u64 n = 0;
    Status table_pre(pgtable::VisitCtx&) {
      ++n;
      return {};
    }
  } v;
  EXPECT_TRUE(t.walk(0, u64{1} << t.ia_bits(), v));
  return v.n;
}

// Each state a torn-down guest's page can be in, given back a page per call: its own pages
// (donated, shared back) scrubbed and the host's, a share from the host ended (the count drops;
// the page is the host's alone at the last one), a lent page not there (relinquished at
// teardown: ENOENT), and the guest itself, its root and its VMID kept until reclaim_guest.
TEST(GuestPageReclaim, GivesBackOnePageAtATime) {
  GuestEnv e;
  const u64 owned = OwnEnv::kMem + (u64{4} << 20), back = owned + 16 * kPg, shared = owned + 32 * kPg,
            lent = owned + 48 * kPg;
  constexpr u64 kIpa = 0x1000'0000;
  ASSERT_TRUE(e.mp.host_donate_guest(owned, 2, kG1, kIpa));
  ASSERT_TRUE(e.mp.host_donate_guest(back, 1, kG1, kIpa + 0x10'0000));
  ASSERT_TRUE(e.mp.guest_share_host(kG1, kIpa + 0x10'0000, 1));
  ASSERT_TRUE(e.mp.host_share_guest(shared, 1, kG1, kIpa + 0x20'0000, pgtable::kPermRW));
  ASSERT_TRUE(e.mp.host_share_guest(shared, 1, kG2, kIpa, pgtable::kPermR));
  ASSERT_TRUE(e.mp.host_lend_guest(lent, 1, kG1, kIpa + 0x30'0000, pgtable::kPermRW));
  for (u64 pa : {owned, owned + kPg, back, shared}) e.write_byte(pa + 5, 0x5a);
  EXPECT_EQ(e.mp.reclaim_guest_page(kG1, kIpa).error(), Error::eperm) << "live guest";
  ASSERT_TRUE(e.mp.teardown_guest(kG1));
  const u16 vmid = e.mp.guest(kG1)->table.vmid();

  // The second donated page first (any order): only that page moves.
  ASSERT_TRUE(e.mp.reclaim_guest_page(kG1, kIpa + kPg));
  EXPECT_EQ(e.read_byte(owned + kPg + 5), 0) << "scrubbed";
  EXPECT_EQ(e.read_byte(owned + 5), 0x5a) << "its neighbour is still the guest's";
  EXPECT_EQ(e.mp.host_state(owned + kPg), PageState::owned);
  EXPECT_EQ(e.mp.page_meta(owned + kPg).guest, 0u);
  EXPECT_EQ(e.mp.guest_state(kG1, kIpa + kPg), PageState::none);
  EXPECT_EQ(e.mp.guest_state(kG1, kIpa), PageState::owned);
  EXPECT_EQ(e.mp.host_annotation_owner(owned), kG1);
  EXPECT_TRUE(invariants_hold(e.mp));
  EXPECT_EQ(e.mp.reclaim_guest_page(kG1, kIpa + kPg).error(), Error::enoent) << "already given back";

  // Shared back: scrubbed too (the guest's own page).
  ASSERT_TRUE(e.mp.reclaim_guest_page(kG1, kIpa + 0x10'0000));
  EXPECT_EQ(e.read_byte(back + 5), 0);
  EXPECT_EQ(e.mp.host_state(back), PageState::owned);
  EXPECT_EQ(e.mp.page_meta(back).guest, 0u);

  // Shared by the host with both guests: the share ends, not scrubbed, still shared with G2.
  ASSERT_TRUE(e.mp.reclaim_guest_page(kG1, kIpa + 0x20'0000));
  EXPECT_EQ(e.read_byte(shared + 5), 0x5a) << "the host's page is never scrubbed";
  EXPECT_EQ(e.mp.page_meta(shared).guest_shares, 1u);
  EXPECT_EQ(e.mp.host_state(shared), PageState::shared_owned);
  EXPECT_EQ(e.mp.guest_state(kG2, kIpa), PageState::shared_borrowed);

  // Lent: relinquished at teardown, so nothing there; the host reclaims it itself.
  EXPECT_EQ(e.mp.reclaim_guest_page(kG1, kIpa + 0x30'0000).error(), Error::enoent);
  EXPECT_EQ(e.mp.host_state(lent), PageState::lent);
  ASSERT_TRUE(e.mp.host_reclaim_lent(lent, 1));

  ASSERT_TRUE(e.mp.reclaim_guest_page(kG1, kIpa));
  EXPECT_EQ(e.read_byte(owned + 5), 0);
  EXPECT_TRUE(invariants_hold(e.mp));

  // Nothing left to give back: every table below the root is freed as it empties; the guest,
  // its root and its VMID stay until reclaim_guest, which now only releases them.
  ASSERT_NE(e.mp.guest(kG1), nullptr);
  EXPECT_FALSE(e.mp.guest(kG1)->alive);
  EXPECT_TRUE(e.mp.guest(kG1)->table.valid());
  EXPECT_EQ(tables_below_root(e.mp.guest(kG1)->table), 0u);
  EXPECT_EQ(e.mp.create_guest(4, vmid).error(), Error::einval) << "the VMID is held until reclaim_guest";
  ASSERT_TRUE(e.mp.reclaim_guest(kG1));
  EXPECT_EQ(e.mp.guest(kG1), nullptr);
  EXPECT_TRUE(e.mp.create_guest(4, vmid));
  // The last share from G2 ends by its own reclaim.
  ASSERT_TRUE(e.mp.teardown_guest(kG2));
  ASSERT_TRUE(e.mp.reclaim_guest_page(kG2, kIpa));
  EXPECT_EQ(e.mp.host_state(shared), PageState::owned);
  EXPECT_EQ(e.mp.page_meta(shared).guest_shares, 0u);
  EXPECT_EQ(e.read_byte(shared + 5), 0x5a);
  EXPECT_THAT(e.plat->violations(), IsEmpty());
  EXPECT_EQ(e.plat->fixmap_pa(), std::nullopt);
  EXPECT_TRUE(invariants_hold(e.mp));
}

// Every refusal, in the documented order, changes nothing.
TEST(GuestPageReclaim, RefusalsChangeNothing) {
  GuestEnv e;
  const u64 pa = OwnEnv::kMem + (u64{8} << 20);
  constexpr u64 kIpa = 0x5000'0000;
  ASSERT_TRUE(e.mp.host_donate_guest(pa, 2, kG1, kIpa));
  ASSERT_TRUE(e.mp.host_force_reclaim(pa + kPg));  // kIpa + kPg poisoned
  EXPECT_EQ(e.mp.reclaim_guest_page(77, kIpa).error(), Error::einval) << "no such guest";
  EXPECT_EQ(e.mp.reclaim_guest_page(kG1, kIpa + 1).error(), Error::eperm) << "live comes before the address";
  ASSERT_TRUE(e.mp.teardown_guest(kG1));
  const u64 ia_end = u64{1} << e.mp.guest(kG1)->table.ia_bits();
  EXPECT_EQ(e.mp.reclaim_guest_page(kG1, kIpa + 1).error(), Error::einval) << "unaligned";
  EXPECT_EQ(e.mp.reclaim_guest_page(kG1, ia_end).error(), Error::einval) << "past the IPA space";
  EXPECT_EQ(e.mp.reclaim_guest_page(kG1, ~u64{0} & ~(kPg - 1)).error(), Error::einval);
  EXPECT_EQ(e.mp.reclaim_guest_page(kG1, kIpa + 2 * kPg).error(), Error::enoent) << "nothing mapped";
  EXPECT_EQ(e.mp.reclaim_guest_page(kG1, kIpa + kPg).error(), Error::ehwpoison);
  EXPECT_EQ(e.mp.guest_state(kG1, kIpa + kPg), PageState::poisoned) << "left as it is";
  EXPECT_EQ(e.mp.guest_state(kG1, kIpa), PageState::owned);
  EXPECT_EQ(e.mp.host_annotation_owner(pa), kG1);
  EXPECT_EQ(e.plat->fixmap_pa(), std::nullopt);
  EXPECT_TRUE(invariants_hold(e.mp));
  // reclaim_guest skips the poisoned address and releases the table it is in.
  ASSERT_TRUE(e.mp.reclaim_guest(kG1));
  EXPECT_EQ(e.mp.host_state(pa), PageState::owned);
  EXPECT_TRUE(invariants_hold(e.mp));
}

// The guest's entry goes and the page is scrubbed and given back with no TLBI at all: teardown
// retired the guest's table (one VMID-wide invalidation), so neither a TLBI by IPA nor a
// VMID-wide one is needed per page. Nothing is written before the guest's entry goes, and the
// scrub comes after it.
TEST(GuestPageReclaim, IssuesNoTlbiAfterTheTeardownsFlush) {
  GuestEnv e;
  const u64 pa = OwnEnv::kMem + (u64{4} << 20);
  constexpr u64 kIpa = 0x1000'0000;
  ASSERT_TRUE(e.mp.host_donate_guest(pa, 2, kG1, kIpa));
  ASSERT_TRUE(e.mp.teardown_guest(kG1));
  const auto mark = e.plat->log().mark();
  ASSERT_TRUE(e.mp.reclaim_guest_page(kG1, kIpa + kPg));
  const auto ev = e.plat->log().since(mark);
  std::size_t unmap = ev.size(), fixmap_unmap = ev.size(), tlbis = 0, writes = 0;
  std::size_t first_write = ev.size();
  for (std::size_t i = 0; i < ev.size(); ++i) {
    if (ev[i].kind == sim::EventKind::tlbi) ++tlbis;
    if (ev[i].kind == sim::EventKind::fixmap_unmap) fixmap_unmap = i;
    if (ev[i].kind == sim::EventKind::write) {
      ++writes;
      if (first_write == ev.size()) first_write = i;
      if (ev[i].old_value != 0 && arch::DescValid::get(ev[i].old_value) && ev[i].value == 0 && unmap == ev.size())
        unmap = i;
    }
  }
  ASSERT_LT(unmap, ev.size()) << "the guest's entry was not cleared";
  EXPECT_EQ(first_write, unmap) << "nothing written before the guest's entry goes";
  ASSERT_LT(fixmap_unmap, ev.size()) << "the page was not scrubbed";
  EXPECT_LT(unmap, fixmap_unmap) << "scrub finished while the guest still mapped the page";
  EXPECT_EQ(tlbis, 0u) << "a retired guest's pages need no TLBI";
  EXPECT_EQ(writes, 2u) << "the guest's entry and the host's";
  EXPECT_EQ(e.mp.host_state(pa + kPg), PageState::owned);
  EXPECT_TRUE(invariants_hold(e.mp));
}

// A page inside a block of the guest's stage-2 (a 2 MiB range donated whole, a block at the
// guest and a block annotation at the host) is given back alone: both blocks are split, the
// table pages taken from the host's memcache (filled from the platform by the call), the rest
// of the block kept. With the platform out of pages: ENOMEM and nothing changed. Page by page,
// the whole block comes back and every table made for it is freed again.
TEST(GuestPageReclaim, APageOfABlockSplitsItAndTheRestStays) {
  GuestEnv e;
  const u64 pa = OwnEnv::kMem + (u64{32} << 20);  // 2 MiB-aligned
  constexpr u64 kIpa = 0x4000'0000;
  ASSERT_TRUE(e.mp.host_donate_guest(pa, 512, kG1, kIpa));
  ASSERT_EQ(e.mp.guest(kG1)->table.lookup(kIpa)->level, 2);
  ASSERT_EQ(e.mp.host_table().lookup(pa)->level, 2);
  ASSERT_TRUE(e.mp.teardown_guest(kG1));
  const u64 guest_tables = tables_below_root(e.mp.guest(kG1)->table);
  e.write_byte(pa + 7 * kPg + 3, 0x77);
  e.write_byte(pa + 8 * kPg + 3, 0x88);

  e.mp.host_memcache().drain(*e.plat);
  e.plat->allocator().fail_nth(1);
  EXPECT_EQ(e.mp.reclaim_guest_page(kG1, kIpa + 7 * kPg).error(), Error::enomem);
  EXPECT_EQ(e.mp.guest(kG1)->table.lookup(kIpa)->level, 2) << "nothing changed";
  EXPECT_EQ(e.mp.host_table().lookup(pa)->level, 2);
  EXPECT_EQ(e.read_byte(pa + 7 * kPg + 3), 0x77);
  EXPECT_TRUE(invariants_hold(e.mp));

  e.mp.host_memcache().drain(*e.plat);
  ASSERT_TRUE(e.mp.reclaim_guest_page(kG1, kIpa + 7 * kPg));
  EXPECT_EQ(e.read_byte(pa + 7 * kPg + 3), 0);
  EXPECT_EQ(e.read_byte(pa + 8 * kPg + 3), 0x88) << "the rest of the block is the guest's";
  EXPECT_EQ(e.mp.host_state(pa + 7 * kPg), PageState::owned);
  EXPECT_EQ(e.mp.host_annotation_owner(pa + 8 * kPg), kG1);
  EXPECT_EQ(e.mp.guest_state(kG1, kIpa + 7 * kPg), PageState::none);
  for (u64 i : {u64{0}, u64{6}, u64{8}, u64{511}}) {
    EXPECT_EQ(e.mp.guest_state(kG1, kIpa + i * kPg), PageState::owned) << i;
    EXPECT_EQ(e.mp.guest(kG1)->table.lookup(kIpa + i * kPg)->level, 3) << "split to pages";
  }
  EXPECT_EQ(tables_below_root(e.mp.guest(kG1)->table), guest_tables + 1);
  EXPECT_TRUE(invariants_hold(e.mp));

  // The rest, a page per call: at the last one the guest's last-level table goes.
  for (u64 i = 0; i < 512; ++i) {
    if (i == 7) continue;
    ASSERT_TRUE(e.mp.reclaim_guest_page(kG1, kIpa + i * kPg)) << i;
  }
  EXPECT_EQ(tables_below_root(e.mp.guest(kG1)->table), 0u);
  EXPECT_EQ(e.mp.host_state(pa + 511 * kPg), PageState::owned);
  EXPECT_EQ(e.read_byte(pa + 8 * kPg + 3), 0);
  EXPECT_THAT(e.plat->violations(), IsEmpty());
  EXPECT_TRUE(invariants_hold(e.mp));
  ASSERT_TRUE(e.mp.reclaim_guest(kG1));
  EXPECT_TRUE(invariants_hold(e.mp));
}

// What one call costs is bounded by one page and the tables its splits make, whatever the size
// of the guest (no call walks the guest's table or the page array): over a 2 MiB block given
// back page by page, no call writes more than the two tables the first one's splits make (the
// guest's block, the host's block annotation) and a few entries, or invalidates more than a
// few TLB entries. (The EL2 lock a call holds is held for that long.)
TEST(GuestPageReclaim, EachCallDoesBoundedWork) {
  GuestEnv e;
  constexpr u64 kIpa = u64{1} << 30;
  const u64 mem = OwnEnv::kMem + (u64{64} << 20);
  ASSERT_TRUE(e.mp.host_donate_guest(mem, 512, kG1, kIpa));
  ASSERT_EQ(e.mp.guest(kG1)->table.lookup(kIpa)->level, 2);
  ASSERT_TRUE(e.mp.teardown_guest(kG1));
  std::size_t max_writes = 0, max_tlbi = 0;
  for (u64 i = 0; i < 512; ++i) {
    const auto mark = e.plat->log().mark();
    ASSERT_TRUE(e.mp.reclaim_guest_page(kG1, kIpa + i * kPg)) << i;
    std::size_t writes = 0, tlbi = 0;
    for (const auto& ev : e.plat->log().since(mark)) {
      writes += ev.kind == sim::EventKind::write;
      tlbi += ev.kind == sim::EventKind::tlbi;
    }
    max_writes = std::max(max_writes, writes);
    max_tlbi = std::max(max_tlbi, tlbi);
  }
  const std::size_t per_table = arch::entries_per_table(Granule::k4K);
  EXPECT_GE(max_writes, per_table) << "the first call splits a block: the test measures that";
  EXPECT_LE(max_writes, 2 * per_table + 6);
  EXPECT_LE(max_tlbi, 8u);
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
  // Page by page: the same refusal for a page that needs a scrub; a page shared with the guest
  // needs none.
  EXPECT_EQ(mp->reclaim_guest_page(kG1, kIpa).error(), Error::eopnotsupp);
  EXPECT_EQ(mp->guest_state(kG1, kIpa), PageState::owned);
  EXPECT_EQ(mp->host_annotation_owner(kPa), kG1);
  ASSERT_TRUE(mp->reclaim_guest_page(kG1, kIpa + 0x10'0000));
  EXPECT_EQ(mp->page_meta(kShared).guest_shares, 0u);
  EXPECT_TRUE(invariants_hold(*mp));
}

}  // namespace
}  // namespace ptguard::test
