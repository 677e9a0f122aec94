// The ownership layer's locks (ownership/locking.hpp) and the simulator's lock-order checker:
// the checker reports an acquisition out of the global order (host 0, hypervisor 1, guest
// 2 + slot), and every public transition takes exactly the locks docs/concurrency.md's table
// lists, in that order, and releases them all.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "ownership/env.hpp"

namespace ptguard::test {
namespace {

using sim::SimPlatform;
using sim::ViolationKind;

constexpr u64 kHost = 1u << 0, kHyp = 1u << 1, kGuest0 = 1u << 2;  // guest slot 0: rank 2

std::vector<ViolationKind> kinds(const SimPlatform& p) {
  std::vector<ViolationKind> k;
  for (const auto& v : p.violations()) k.push_back(v.kind);
  return k;
}

TEST(LockOrder, CheckerReportsALockTakenBelowOneHeld) {
  OwnEnv e;
  SimPlatform& p = *e.plat;
  p.lock_order_acquire(1);  // the hypervisor's
  EXPECT_EQ(p.lock_order_violations(), 0u);
  p.lock_order_acquire(0);  // then the host's: inverted
  EXPECT_EQ(p.lock_order_violations(), 1u);
  EXPECT_THAT(kinds(p), testing::ElementsAre(ViolationKind::lock_order));
  EXPECT_EQ(SimPlatform::lock_ranks_held(), kHost | kHyp);
  p.lock_order_release(0);
  p.lock_order_release(1);
  EXPECT_EQ(SimPlatform::lock_ranks_held(), 0u);
}

TEST(LockOrder, CheckerReportsTheSameRankTakenTwice) {
  OwnEnv e;
  SimPlatform& p = *e.plat;
  p.lock_order_acquire(2);
  p.lock_order_acquire(2);  // two locks of one rank: two guests' in no defined order
  EXPECT_EQ(p.lock_order_violations(), 1u);
  p.lock_order_release(2);
  p.lock_order_release(2);
}

// A shared acquisition obeys the same order: a guest fault holding its guest's shared side
// that then waited for the host's lock would deadlock with a transition holding the host's
// lock and waiting for the guest's exclusive side. And a reader taking its own lock again
// deadlocks behind a waiting writer (writers are preferred).
TEST(LockOrder, CheckerReportsASharedAcquisitionOutOfOrderAndRecordsItApart) {
  OwnEnv e;
  SimPlatform& p = *e.plat;
  SimPlatform::reset_lock_ranks_taken();
  p.lock_order_acquire_shared(2);
  EXPECT_EQ(p.lock_order_violations(), 0u);
  EXPECT_EQ(SimPlatform::lock_ranks_taken_shared(), kGuest0);
  p.lock_order_acquire(0);  // the host's under a guest's shared side: inverted
  EXPECT_EQ(p.lock_order_violations(), 1u);
  p.lock_order_release(0);
  p.lock_order_acquire_shared(2);  // the same guest lock's shared side again
  EXPECT_EQ(p.lock_order_violations(), 2u);
  p.lock_order_release(2);
  p.lock_order_release(2);
  EXPECT_EQ(SimPlatform::lock_ranks_taken(), kHost | kGuest0);
  EXPECT_EQ(SimPlatform::lock_ranks_taken_shared(), kGuest0);
  EXPECT_EQ(SimPlatform::lock_ranks_held(), 0u);
}

TEST(LockOrder, CheckerAcceptsTheGlobalOrderAndRanksHeldOnOtherThreads) {
  OwnEnv e;
  SimPlatform& p = *e.plat;
  p.lock_order_acquire(0);
  p.lock_order_acquire(1);
  p.lock_order_acquire(5);
  // Another thread's record is its own: it may take the host's lock while this one holds all.
  std::thread([&] {
    EXPECT_EQ(SimPlatform::lock_ranks_held(), 0u);
    p.lock_order_acquire(0);
    p.lock_order_release(0);
  }).join();
  p.lock_order_release(5);
  p.lock_order_release(1);
  p.lock_order_release(0);
  EXPECT_EQ(p.lock_order_violations(), 0u);
  EXPECT_TRUE(p.violations().empty());
}

// A MemProtect with a way to call a transition while holding the hypervisor's lock: the
// deliberately inverted order (host after hypervisor) the checker must catch. The host's lock
// is free, so the call completes; on two CPUs this order against host_share_hyp's could
// deadlock.
struct InvertingMP : OwnEnv::MP {
  Status fault_holding_hyp_lock(u64 pa) {
    const auto hyp = this->lock_hyp();
    return this->host_handle_fault(pa);
  }
};

TEST(LockOrder, ATransitionCalledUnderTheHypervisorLockIsReported) {
  // The machine of OwnEnv, over an InvertingMP.
  OwnEnv e;
  auto mp = std::make_unique<InvertingMP>();
  const MachineDesc m{e.regions, e.mmio, Region{OwnEnv::kCarve, OwnEnv::kCarveSize}, OwnEnv::kHypOffset};
  std::vector<PageMeta> meta(memory_pages(m, OwnEnv::kPage));
  SimPlatform p(e.mem, OwnEnv::kPool, OwnEnv::kPoolSize, OwnEnv::kPage);
  ASSERT_TRUE(mp->init(p, m, meta, CpuFeatures::modern()));
  mp->finalize();
  // In order: nothing reported.
  ASSERT_TRUE(mp->host_handle_fault(OwnEnv::kMem));
  EXPECT_EQ(p.lock_order_violations(), 0u);
  // Inverted: reported once, as a lock_order violation.
  ASSERT_TRUE(mp->fault_holding_hyp_lock(OwnEnv::kMem + (4u << 20)));
  EXPECT_EQ(p.lock_order_violations(), 1u);
  EXPECT_THAT(kinds(p), testing::ElementsAre(ViolationKind::lock_order));
  EXPECT_EQ(SimPlatform::lock_ranks_held(), 0u);
}

// Every public transition once, on a machine where each succeeds, with the locks it took.
TEST(LockOrder, EveryTransitionTakesExactlyItsTableLocksInOrder) {
  OwnEnv e;
  auto& mp = e.mp;
  SimPlatform& p = *e.plat;
  constexpr u64 P = OwnEnv::kPage, M = OwnEnv::kMem;
  constexpr ComponentId g = kFirstGuestId;
  u64 all = kHost | kHyp;
  for (unsigned i = 0; i < 16; ++i) all |= u64{1} << guest_lock_rank(i);
  std::vector<u32> scratch(e.meta.size());
  OwnEnv::MP::Violation v;
  struct Step {
    const char* what;
    std::function<Status()> call;
    u64 locks;
    u64 shared = 0;  // of those, the ones taken on their shared side
  };
  const std::vector<Step> steps = {
      {"host_handle_fault", [&] { return mp.host_handle_fault(M); }, kHost},
      {"host_share_hyp", [&] { return mp.host_share_hyp(M, 1); }, kHost | kHyp},
      {"hyp_pin_shared", [&] { return mp.hyp_pin_shared(M, 1); }, kHost | kHyp},
      {"hyp_unpin_shared", [&] { return mp.hyp_unpin_shared(M, 1); }, kHost | kHyp},
      {"host_unshare_hyp", [&] { return mp.host_unshare_hyp(M, 1); }, kHost | kHyp},
      {"host_donate_hyp", [&] { return mp.host_donate_hyp(M + P, 1); }, kHost | kHyp},
      {"hyp_donate_host", [&] { return mp.hyp_donate_host(M + P, 1); }, kHost | kHyp},
      {"host_share_ffa", [&] { return mp.host_share_ffa(M + 2 * P, 1); }, kHost},
      {"host_unshare_ffa", [&] { return mp.host_unshare_ffa(M + 2 * P, 1); }, kHost},
      {"create_guest", [&] { return mp.create_guest(g, 1); }, kHost | kGuest0},
      {"topup_guest_memcache", [&] { return mp.topup_guest_memcache(g, 16); }, kGuest0},
      {"host_share_guest", [&] { return mp.host_share_guest(M + 3 * P, 1, g, 0, pgtable::kPermRW); }, kHost | kGuest0},
      {"guest_relax_perms", [&] { return mp.guest_relax_perms(g, 0, pgtable::kPermRWX); }, kGuest0, kGuest0},
      {"guest_wrprotect", [&] { return mp.guest_wrprotect(g, 0, 1); }, kGuest0},
      {"guest_test_clear_young",
       [&]() -> Status {
         const Result<bool> r = mp.guest_test_clear_young(g, 0, 1, true);
         return r ? Status{} : fail(r.error());
       },
       kGuest0, kGuest0},
      {"guest_mkyoung", [&] { return mp.guest_mkyoung(g, 0); }, kGuest0, kGuest0},
      {"host_unshare_guest", [&] { return mp.host_unshare_guest(g, 0, 1); }, kHost | kGuest0},
      {"host_donate_guest", [&] { return mp.host_donate_guest(M + 4 * P, 1, g, P); }, kHost | kGuest0},
      {"guest_share_host", [&] { return mp.guest_share_host(g, P, 1); }, kHost | kGuest0},
      {"guest_unshare_host", [&] { return mp.guest_unshare_host(g, P, 1); }, kHost | kGuest0},
      {"host_lend_guest", [&] { return mp.host_lend_guest(M + 5 * P, 1, g, 2 * P, pgtable::kPermRW); }, kHost | kGuest0},
      {"guest_relinquish", [&] { return mp.guest_relinquish(g, 2 * P, 1); }, kHost | kGuest0},
      {"host_reclaim_lent", [&] { return mp.host_reclaim_lent(M + 5 * P, 1); }, kHost},
      {"host_donate_guest", [&] { return mp.host_donate_guest(M + 6 * P, 1, g, 3 * P); }, kHost | kGuest0},
      {"host_force_reclaim", [&] { return mp.host_force_reclaim(M + 6 * P); }, kHost | kGuest0},
      {"host_donate_guest", [&] { return mp.host_donate_guest(M + 7 * P, 1, g, 4 * P); }, kHost | kGuest0},
      {"teardown_guest", [&] { return mp.teardown_guest(g); }, kHost | kGuest0},
      {"reclaim_guest_page", [&] { return mp.reclaim_guest_page(g, P); }, kHost | kGuest0},
      {"reclaim_guest", [&] { return mp.reclaim_guest(g); }, kHost | kGuest0},
      {"check_invariants",
       [&]() -> Status { return mp.check_invariants(scratch, &v) ? Status{} : fail(Error::einval); }, all},
  };
  for (const Step& s : steps) {
    SCOPED_TRACE(s.what);
    SimPlatform::reset_lock_ranks_taken();
    const Status st = s.call();
    EXPECT_TRUE(st) << (st ? "" : name(st.error()));
    EXPECT_EQ(SimPlatform::lock_ranks_taken(), s.locks) << std::hex << "took 0x" << SimPlatform::lock_ranks_taken();
    EXPECT_EQ(SimPlatform::lock_ranks_taken_shared(), s.shared)
        << std::hex << "took shared 0x" << SimPlatform::lock_ranks_taken_shared();
    EXPECT_EQ(SimPlatform::lock_ranks_held(), 0u);
  }
  EXPECT_EQ(p.lock_order_violations(), 0u);
  EXPECT_TRUE(p.violations().empty());
  EXPECT_TRUE(invariants_hold(mp));
}

}  // namespace
}  // namespace ptguard::test
