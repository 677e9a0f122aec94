// Allocation failures at every point of a transition sequence: for every k up to the number of
// allocations the sequence makes, the k-th fails (PageAllocator::fail_nth). The transition
// that meets it fails with ENOMEM and changes nothing (every entry of every table, every
// PageMeta, the guests), the invariants hold, the same transition then succeeds, and the
// sequence ends in the same states as without the failure. Also: a guest memcache one page
// short of what a transition into the guest needs is ENOMEM with nothing changed.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>

#include "model.hpp"

namespace ptguard::test {
namespace {

using ::testing::IsEmpty;
using pgtable::kPermR;
using pgtable::kPermRW;
constexpr u64 kPg = SmallEnv::kPage;
constexpr u64 kB0 = SmallEnv::kRam, kB1 = SmallEnv::kBlock1;
constexpr ComponentId kG2 = 2, kG3 = 3;
const std::vector<ComponentId> kIds{kG2, kG3};
const std::vector<u64> kIpas{0x1000'0000, 0x1000'1000, 0x2000'0000, 0x3000'0000, 0x3000'1000,
                             0x4000'0000, 0x5000'0000, 0x6000'0000, 0x6000'1000};

struct InjEnv : SmallEnv {
  std::vector<u64> reserve;  // pages allocated up front, so a guest's memcache can be filled
                             // without counting as the layer's allocations
  InjEnv() {
    for (int i = 0; i < 96; ++i) reserve.push_back(*plat->alloc_pages(0));
  }
  void fill_guest(ComponentId id, u32 n) {
    auto* g = mp.guest(id);
    while (g->mc.size() < n) {
      g->mc.push(*plat, reserve.back());
      reserve.pop_back();
    }
  }
  // Creates the guest and fills its memcache from the reserve.
  Status create(ComponentId id) {
    const Status st = mp.create_guest(id, static_cast<u16>(id));
    if (st) fill_guest(id, 16);
    return st;
  }
};

struct NamedStep {
  const char* what;
  std::function<Status(InjEnv&)> run;
};

// A sequence touching every transition, the host's faults and guests' lives.
const std::vector<NamedStep>& sequence() {
  static const std::vector<NamedStep> v = {
      {"fault block", [](InjEnv& e) { return e.mp.host_handle_fault(kB1); }},
      {"share_hyp", [](InjEnv& e) { return e.mp.host_share_hyp(kB1 + kPg, 2); }},
      {"pin", [](InjEnv& e) { return e.mp.hyp_pin_shared(kB1 + kPg, 1); }},
      {"unpin", [](InjEnv& e) { return e.mp.hyp_unpin_shared(kB1 + kPg, 1); }},
      {"unshare_hyp", [](InjEnv& e) { return e.mp.host_unshare_hyp(kB1 + kPg, 2); }},
      {"donate_hyp", [](InjEnv& e) { return e.mp.host_donate_hyp(kB0 + 40 * kPg, 3); }},
      {"hyp_donate_host", [](InjEnv& e) { return e.mp.hyp_donate_host(kB0 + 41 * kPg, 1); }},
      {"share_ffa", [](InjEnv& e) { return e.mp.host_share_ffa(kB0 + 50 * kPg, 1); }},
      {"unshare_ffa", [](InjEnv& e) { return e.mp.host_unshare_ffa(kB0 + 50 * kPg, 1); }},
      {"create G2", [](InjEnv& e) { return e.create(kG2); }},
      {"create G3", [](InjEnv& e) { return e.create(kG3); }},
      {"share G2", [](InjEnv& e) { return e.mp.host_share_guest(kB1 + 10 * kPg, 2, kG2, 0x1000'0000, kPermRW); }},
      {"share G3", [](InjEnv& e) { return e.mp.host_share_guest(kB1 + 10 * kPg, 1, kG3, 0x2000'0000, kPermR); }},
      {"unshare G2", [](InjEnv& e) { return e.mp.host_unshare_guest(kG2, 0x1000'0000, 2); }},
      {"donate G2", [](InjEnv& e) { return e.mp.host_donate_guest(kB1 + 20 * kPg, 2, kG2, 0x3000'0000); }},
      {"G2 share host", [](InjEnv& e) { return e.mp.guest_share_host(kG2, 0x3000'0000, 1); }},
      {"G2 unshare host", [](InjEnv& e) { return e.mp.guest_unshare_host(kG2, 0x3000'0000, 1); }},
      {"lend G2", [](InjEnv& e) { return e.mp.host_lend_guest(kB0 + 60 * kPg, 1, kG2, 0x4000'0000, kPermRW); }},
      {"relinquish", [](InjEnv& e) { return e.mp.guest_relinquish(kG2, 0x4000'0000, 1); }},
      {"reclaim lent", [](InjEnv& e) { return e.mp.host_reclaim_lent(kB0 + 60 * kPg, 1); }},
      {"force reclaim", [](InjEnv& e) { return e.mp.host_force_reclaim(kB1 + 21 * kPg); }},
      {"wrprotect G3", [](InjEnv& e) { return e.mp.guest_wrprotect(kG3, 0x2000'0000, 1); }},
      {"lend G3", [](InjEnv& e) { return e.mp.host_lend_guest(kB0 + 70 * kPg, 2, kG3, 0x6000'0000, kPermRW); }},
      {"teardown G2", [](InjEnv& e) { return e.mp.teardown_guest(kG2); }},
      {"reclaim G2", [](InjEnv& e) { return e.mp.reclaim_guest(kG2); }},
      {"teardown G3", [](InjEnv& e) { return e.mp.teardown_guest(kG3); }},
      {"reclaim lent G3", [](InjEnv& e) { return e.mp.host_reclaim_lent(kB0 + 70 * kPg, 2); }},
      {"reclaim page G3", [](InjEnv& e) { return e.mp.reclaim_guest_page(kG3, 0x2000'0000); }},
      {"reclaim G3", [](InjEnv& e) { return e.mp.reclaim_guest(kG3); }},
      // (Not in kB1: every page of it is the host's again by now, so it is one block once more.
      // The first block keeps the carve-out, so a page given back there stays a page.)
      {"fault page", [](InjEnv& e) { return e.mp.host_handle_fault(kB0 + 41 * kPg); }},
      {"fault mmio", [](InjEnv& e) { return e.mp.host_handle_fault(SmallEnv::kGic); }},
      {"share_hyp again", [](InjEnv& e) { return e.mp.host_share_hyp(kB1 + 21 * kPg, 1); }},
  };
  return v;
}

// Runs the sequence; with `drain`, the host's and the hypervisor's memcaches are emptied before
// each step, so every step allocates what it needs then and there. The `fail_at`-th allocation
// from the start fails.
void run_sequence(InjEnv& e, bool drain, u64 fail_at, int* enomem_seen) {
  auto& alloc = e.plat->allocator();
  if (fail_at != 0) alloc.fail_nth(fail_at);
  for (const NamedStep& s : sequence()) {
    SCOPED_TRACE(s.what);
    if (drain) {
      e.mp.host_memcache().drain(*e.plat);
      e.mp.hyp_memcache().drain(*e.plat);
    }
    const Snapshot before = snapshot(e, kIds, kIpas);
    const u64 injected = alloc.stats().injected_failures;
    Status st = s.run(e);
    if (!st && st.error() == Error::enomem && alloc.stats().injected_failures == injected + 1) {
      ++*enomem_seen;
      ASSERT_TRUE(same(before, snapshot(e, kIds, kIpas))) << s.what << " failed with ENOMEM and changed something";
      ASSERT_TRUE(invariants_hold(e.mp));
      st = s.run(e);  // the injection is spent: the same transition now goes through
    }
    ASSERT_TRUE(st) << s.what << ": " << errname(st);
    ASSERT_TRUE(invariants_hold(e.mp));
  }
  EXPECT_THAT(e.plat->violations(), IsEmpty());
  EXPECT_EQ(e.plat->fixmap_pa(), std::nullopt);
}

void every_allocation_fails_once(bool drain) {
  std::vector<StateSnap> want;
  u64 allocs = 0;
  {
    InjEnv e;
    const u64 a0 = e.plat->allocator().stats().alloc_calls;
    int seen = 0;
    ASSERT_NO_FATAL_FAILURE(run_sequence(e, drain, 0, &seen));
    allocs = e.plat->allocator().stats().alloc_calls - a0;
    want = states(e);
  }
  ASSERT_GT(allocs, 8u) << "the sequence should allocate";
  for (u64 k = 1; k <= allocs; ++k) {
    SCOPED_TRACE(::testing::Message() << "allocation " << k << " of " << allocs << " fails");
    InjEnv e;
    int seen = 0;
    ASSERT_NO_FATAL_FAILURE(run_sequence(e, drain, k, &seen));
    EXPECT_EQ(seen, 1) << "exactly one transition meets the failure";
    EXPECT_TRUE(same_states(want, states(e))) << "ends where the run without failures ends";
  }
}

TEST(FaultInjection, EveryAllocationOfASequenceFailingLeavesEverythingConsistent) {
  every_allocation_fails_once(false);
}
TEST(FaultInjection, EveryAllocationFailingWithEmptyHostAndHypMemcaches) { every_allocation_fails_once(true); }

// ---- guest memcaches one page short ----------------------------------------------------------

struct ShortCase {
  const char* what;
  std::function<Status(InjEnv&)> setup;  // puts the guest (G2) in the state the transition needs
  std::function<Status(InjEnv&)> run;
  u64 ipa;
  u64 pages;
};

const std::vector<ShortCase>& short_cases() {
  static const std::vector<ShortCase> v = {
      {"share", [](InjEnv&) { return Status{}; },
       [](InjEnv& e) { return e.mp.host_share_guest(kB1, 2, kG2, 0x1000'0000, kPermRW); }, 0x1000'0000, 2},
      {"share a block", [](InjEnv&) { return Status{}; },
       [](InjEnv& e) { return e.mp.host_share_guest(kB1, 512, kG2, 0x4000'0000, kPermRW); }, 0x4000'0000, 512},
      {"donate", [](InjEnv&) { return Status{}; },
       [](InjEnv& e) { return e.mp.host_donate_guest(kB1, 3, kG2, 0x1000'0000); }, 0x1000'0000, 3},
      {"lend", [](InjEnv&) { return Status{}; },
       [](InjEnv& e) { return e.mp.host_lend_guest(kB1, 1, kG2, 0x1000'0000, kPermRW); }, 0x1000'0000, 1},
      // Inside a 2 MiB block of the guest's: the page-level change splits it.
      {"guest share host (in a block)",
       [](InjEnv& e) { return e.mp.host_donate_guest(kB1, 512, kG2, 0x4000'0000); },
       [](InjEnv& e) { return e.mp.guest_share_host(kG2, 0x4000'0000 + 5 * kPg, 1); }, 0x4000'0000 + 5 * kPg, 1},
      {"unshare (in a block)",
       [](InjEnv& e) { return e.mp.host_share_guest(kB1, 512, kG2, 0x4000'0000, kPermRW); },
       [](InjEnv& e) { return e.mp.host_unshare_guest(kG2, 0x4000'0000 + 5 * kPg, 1); }, 0x4000'0000 + 5 * kPg, 1},
      {"force reclaim (in a block)",
       [](InjEnv& e) { return e.mp.host_donate_guest(kB1, 512, kG2, 0x4000'0000); },
       [](InjEnv& e) { return e.mp.host_force_reclaim(kB1 + 7 * kPg); }, 0x4000'0000 + 7 * kPg, 1},
  };
  return v;
}

TEST(GuestMemcache, OnePageShortOfTheWorstCaseIsEnomemWithNothingChanged) {
  for (const ShortCase& c : short_cases()) {
    SCOPED_TRACE(c.what);
    InjEnv e;
    ASSERT_TRUE(e.create(kG2));
    ASSERT_TRUE(c.setup(e));
    auto* g = e.mp.guest(kG2);
    const u32 need = g->table.max_pages_needed(c.ipa, c.pages * kPg);
    ASSERT_GT(need, 0u);
    g->mc.drain(*e.plat);
    e.fill_guest(kG2, need - 1);
    const Snapshot before = snapshot(e, kIds, kIpas);
    const std::vector<StateSnap> st0 = states(e);
    const Status st = c.run(e);
    ASSERT_FALSE(st) << "went through with a short memcache";
    EXPECT_EQ(st.error(), Error::enomem) << errname(st);
    EXPECT_TRUE(same(before, snapshot(e, kIds, kIpas)));
    EXPECT_TRUE(same_states(st0, states(e)));
    EXPECT_TRUE(invariants_hold(e.mp));
    e.fill_guest(kG2, need);
    ASSERT_TRUE(c.run(e)) << "with exactly the worst case it goes through";
    EXPECT_TRUE(invariants_hold(e.mp));
    EXPECT_THAT(e.plat->violations(), IsEmpty());
  }
}

// BUG (reported): guest_relinquish does not check the guest's memcache before it changes
// anything. Relinquishing one page of a 2 MiB block lent to the guest splits the block, which
// needs table pages; with an empty memcache the unmap fails with ENOMEM after the page has
// already been marked relinquished, so the guest still maps a page the host may now reclaim
// ("relinquished page still mapped by its borrower"). Fix: in guest_relinquish, after
// check_guest_owned, `if (g->mc.size() < g->table.max_pages_needed(ipa, size)) return
// fail(Error::enomem);` before setting kMetaRelinquished (and set the flags after the unmap).
TEST(GuestMemcache, RelinquishWithAShortMemcacheChangesNothing) {
  InjEnv e;
  ASSERT_TRUE(e.create(kG2));
  ASSERT_TRUE(e.mp.host_lend_guest(kB1, 512, kG2, 0x4000'0000, kPermRW));
  ASSERT_EQ(e.mp.guest(kG2)->table.lookup(0x4000'0000)->level, 2) << "lent as one block";
  e.mp.guest(kG2)->mc.drain(*e.plat);
  const Snapshot before = snapshot(e, kIds, kIpas);
  const Status st = e.mp.guest_relinquish(kG2, 0x4000'0000 + 3 * kPg, 1);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error(), Error::enomem);
  EXPECT_TRUE(same(before, snapshot(e, kIds, kIpas)));
  EXPECT_TRUE(invariants_hold(e.mp));
}

// A fixed bug: reclaim_guest filled the host's memcache page by page inside its loops, so an
// allocation failure part-way returned ENOMEM after earlier pages were scrubbed and given back,
// and a share count decremented before its fill made a retry skip the page for good. It now
// fills the worst case over every page once, before the first change.
TEST(FaultInjection, ReclaimGuestIsAllOrNothing) {
  u64 allocs = 0;
  for (u64 k = 0; k == 0 || k <= allocs; ++k) {
    SCOPED_TRACE(::testing::Message() << "allocation " << k << " fails");
    InjEnv e;
    ASSERT_TRUE(e.create(kG2));
    ASSERT_TRUE(e.mp.host_donate_guest(kB1, 512, kG2, 0x4000'0000));  // one block annotation at the host
    ASSERT_TRUE(e.mp.host_donate_guest(kB0 + 100 * kPg, 4, kG2, 0x1000'0000));
    ASSERT_TRUE(e.mp.teardown_guest(kG2));
    e.mp.host_memcache().drain(*e.plat);
    const Snapshot before = snapshot(e, kIds, kIpas);
    const u64 a0 = e.plat->allocator().stats().alloc_calls;
    if (k) e.plat->allocator().fail_nth(k);
    const Status st = e.mp.reclaim_guest(kG2);
    if (k == 0) {
      ASSERT_TRUE(st);
      allocs = e.plat->allocator().stats().alloc_calls - a0;
      ASSERT_GT(allocs, 1u);
      continue;
    }
    ASSERT_FALSE(st);
    EXPECT_TRUE(same(before, snapshot(e, kIds, kIpas))) << "reclaim_guest failed part-way";
    EXPECT_TRUE(invariants_hold(e.mp));
  }
}

// A page reclaim inside a block of a torn-down guest splits the guest's block and the host's
// block annotation: every allocation it makes failing in turn gives ENOMEM with nothing
// changed, and the same call then goes through. Then reclaim_guest, after some pages went
// one by one, is still all-or-nothing.
TEST(FaultInjection, ReclaimGuestPageIsAllOrNothing) {
  u64 allocs = 0;
  for (u64 k = 0; k == 0 || k <= allocs + 1; ++k) {
    SCOPED_TRACE(::testing::Message() << "allocation " << k << " fails");
    InjEnv e;
    ASSERT_TRUE(e.create(kG2));
    ASSERT_TRUE(e.mp.host_donate_guest(kB1, 512, kG2, 0x4000'0000));
    ASSERT_TRUE(e.mp.teardown_guest(kG2));
    e.mp.host_memcache().drain(*e.plat);
    const Snapshot before = snapshot(e, kIds, kIpas);
    const u64 a0 = e.plat->allocator().stats().alloc_calls;
    if (k) e.plat->allocator().fail_nth(k);
    Status st = e.mp.reclaim_guest_page(kG2, 0x4000'0000 + 5 * kPg);
    if (k == 0) {
      ASSERT_TRUE(st);
      allocs = e.plat->allocator().stats().alloc_calls - a0;
      ASSERT_EQ(allocs, 2u) << "a table for the guest's block and one for the host's";
    } else if (k <= allocs) {
      ASSERT_FALSE(st);
      EXPECT_EQ(st.error(), Error::enomem);
      EXPECT_TRUE(same(before, snapshot(e, kIds, kIpas))) << "reclaim_guest_page failed part-way";
      EXPECT_TRUE(invariants_hold(e.mp));
      ASSERT_TRUE(e.mp.reclaim_guest_page(kG2, 0x4000'0000 + 5 * kPg)) << "the injection is spent";
    } else {
      ASSERT_TRUE(st) << "no allocation left to fail";
    }
    EXPECT_EQ(e.mp.host_state(kB1 + 5 * kPg), PageState::owned);
    EXPECT_TRUE(invariants_hold(e.mp));
    // The rest by reclaim_guest, with an allocation failing: nothing changed, or done.
    e.mp.host_memcache().drain(*e.plat);
    const Snapshot mid = snapshot(e, kIds, kIpas);
    e.plat->allocator().fail_nth(k + 1);
    st = e.mp.reclaim_guest(kG2);
    if (!st) {
      EXPECT_EQ(st.error(), Error::enomem);
      EXPECT_TRUE(same(mid, snapshot(e, kIds, kIpas))) << "reclaim_guest failed part-way";
      e.plat->allocator().fail_nth(0);
      ASSERT_TRUE(e.mp.reclaim_guest(kG2));
    }
    EXPECT_EQ(e.mp.guest(kG2), nullptr);
    EXPECT_EQ(e.mp.host_state(kB1 + 6 * kPg), PageState::owned);
    EXPECT_TRUE(invariants_hold(e.mp));
  }
}

}  // namespace
}  // namespace ptguard::test
