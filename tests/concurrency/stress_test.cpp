// MemProtect under real threads: random transitions from 2 to 8 threads at once, each with a
// guest of its own, on ranges of its own and on one range they all fight over.
//  - RandomTransitionsKeepEveryInvariant: host faults, shares with and donations to the
//    hypervisor, shares, donations and loans to the thread's guest, the guest's own
//    operations; at quiescent points (every thread parked at a barrier) and at the end, the
//    invariant checker and the whole-machine access check (sim/access_check.hpp) pass, and
//    the simulator saw no misuse and no lock taken out of order.
//  - SharedGuestFaultsRaceTransitionsOnOneGuest: one guest's faults under the shared side of
//    its lock from half the threads, its transitions from the others (below).
//  - ResultsMatchASequentialReplayInHostLockOrder: a linearisability check. Every transition
//    that takes the host lock takes it first and keeps it until it returns, so the order in
//    which they took it is an order in which they happened. Each call is recorded with its
//    place in that order (a lock that counts its acquisitions) and its result; replayed one
//    at a time in that order on a fresh machine, every call must return the same result and
//    every page must end in the same state at the host, the hypervisor and every guest.
// These run a third time under ThreadSanitizer (make test-tsan).
#include <gtest/gtest.h>

#include <algorithm>
#include <barrier>
#include <random>
#include <thread>
#include <vector>

#include "ownership/env.hpp"
#include "ptguard/sim/access_check.hpp"

namespace ptguard::test {
namespace {

// ---- a lock that says in which order it was taken --------------------------------------------

// The place, in its lock's order, of the first lock this thread took since the last reset: for
// a transition that takes the host lock, the host lock's (it is always taken first).
thread_local u64 t_first_place = ~u64{0};

struct CountingLock {
  sim::SimPlatform::Lock lock_;
  u64 taken_ = 0;  // written under lock_ only
  void lock() {
    lock_.lock();
    const u64 place = taken_++;
    if (t_first_place == ~u64{0}) t_first_place = place;
  }
  void unlock() { lock_.unlock(); }
};

// The simulator's platform with counting locks (PlatformLock picks P::Lock).
struct CountingPlatform : sim::SimPlatform {
  using SimPlatform::SimPlatform;
  using Lock = CountingLock;
};

// The simulator's platform with ticket locks: MemProtect then fuses its host and hypervisor
// locks into one pgtable::TicketLockPair (ownership/locking.hpp, HostHypLocks), as at EL2.
// Waiters yield: more threads than cores (ticket_lock.hpp).
struct YieldRelax {
  void operator()() const { std::this_thread::yield(); }
};
struct TicketPlatform : sim::SimPlatform {
  using SimPlatform::SimPlatform;
  using Lock = pgtable::BasicTicketLock<YieldRelax>;
};

// 256 MiB of RAM (the ranges below end before 200 MiB): the invariant and access checks walk
// every page of it, and run several times per test, under ThreadSanitizer too.
using Env = BasicOwnEnv<CountingPlatform, (u64{256} << 20)>;
using TicketEnv = BasicOwnEnv<TicketPlatform, (u64{256} << 20)>;
using MP = Env::MP;

constexpr u64 kPage = Env::kPage;
constexpr u64 kPagesPerThread = 48;  // the thread's own range, at kMem + t * 2 MiB
constexpr u64 kSharedBase = Env::kMem + (u64{64} << 20);
constexpr u64 kSharedPages = 24;  // every thread's

enum class Op : u8 {
  fault, share_hyp, unshare_hyp, pin, unpin, donate_hyp, hyp_donate, share_ffa, unshare_ffa,
  share_guest, unshare_guest, donate_guest, guest_share, guest_unshare, lend_guest, relinquish,
  reclaim_lent, force_reclaim,
  // The guest's own (the guest lock only): not in the linearisability check.
  relax, mkyoung, young, wrprotect,
  create_guest,  // each thread's first call, never drawn at random
};
constexpr unsigned kHostLockOps = static_cast<unsigned>(Op::force_reclaim) + 1;
constexpr unsigned kAllOps = static_cast<unsigned>(Op::wrprotect) + 1;

ComponentId guest_of(unsigned thread) { return static_cast<ComponentId>(kFirstGuestId + thread); }
// Every guest maps a page at the same address: its offset from kMem.
u64 ipa_of(u64 pa) { return pa - Env::kMem; }

template <typename M>
Status run(M& mp, Op op, u64 pa, u64 n, ComponentId g) {
  const u64 ipa = ipa_of(pa);
  switch (op) {
    case Op::fault: return mp.host_handle_fault(pa);
    case Op::share_hyp: return mp.host_share_hyp(pa, n);
    case Op::unshare_hyp: return mp.host_unshare_hyp(pa, n);
    case Op::pin: return mp.hyp_pin_shared(pa, n);
    case Op::unpin: return mp.hyp_unpin_shared(pa, n);
    case Op::donate_hyp: return mp.host_donate_hyp(pa, n);
    case Op::hyp_donate: return mp.hyp_donate_host(pa, n);
    case Op::share_ffa: return mp.host_share_ffa(pa, n);
    case Op::unshare_ffa: return mp.host_unshare_ffa(pa, n);
    case Op::share_guest: return mp.host_share_guest(pa, n, g, ipa, pgtable::kPermRW);
    case Op::unshare_guest: return mp.host_unshare_guest(g, ipa, n);
    case Op::donate_guest: return mp.host_donate_guest(pa, n, g, ipa);
    case Op::guest_share: return mp.guest_share_host(g, ipa, n);
    case Op::guest_unshare: return mp.guest_unshare_host(g, ipa, n);
    case Op::lend_guest: return mp.host_lend_guest(pa, n, g, ipa, pgtable::kPermRW);
    case Op::relinquish: return mp.guest_relinquish(g, ipa, n);
    case Op::reclaim_lent: return mp.host_reclaim_lent(pa, n);
    case Op::force_reclaim: return mp.host_force_reclaim(pa);
    case Op::relax: return mp.guest_relax_perms(g, ipa, pgtable::kPermRWX);
    case Op::mkyoung: return mp.guest_mkyoung(g, ipa);
    case Op::young: {
      const Result<bool> r = mp.guest_test_clear_young(g, ipa, n, true);
      return r ? Status{} : fail(r.error());
    }
    case Op::wrprotect: return mp.guest_wrprotect(g, ipa, n);
    case Op::create_guest: return mp.create_guest(g, static_cast<u16>(g - kFirstGuestId + 1));
  }
  return fail(Error::einval);
}

// One call: what, on which pages, for which guest, its place in the host lock's order, and
// what it returned.
struct Call {
  u64 place;
  Op op;
  u64 pa;
  u64 n;
  ComponentId guest;
  Status result;
};

// A random call of thread `t`: half on its own range, half on the shared one, 1-3 pages.
Call random_call(std::mt19937_64& rng, unsigned t, unsigned ops) {
  Call c{};
  c.op = static_cast<Op>(rng() % ops);
  c.n = 1 + rng() % 3;
  const bool shared = rng() % 2 == 0;
  const u64 base = shared ? kSharedBase : Env::kMem + t * (u64{2} << 20);
  const u64 pages = shared ? kSharedPages : kPagesPerThread;
  c.pa = base + (rng() % (pages - c.n + 1)) * kPage;
  c.guest = guest_of(t);
  return c;
}

// The errors a refused call may give here (anything else, ENOMEM or EINVAL, is a bug: every
// memcache is kept full and every range is valid).
bool expected_refusal(Error e) {
  return e == Error::eperm || e == Error::ebusy || e == Error::enoent || e == Error::eagain || e == Error::ehwpoison;
}

template <typename E>
::testing::AssertionResult machine_ok(const E& e) {
  if (::testing::AssertionResult r = invariants_hold(e.mp); !r) return r;
  if (const auto why = sim::check_access_against_states(e.mem, e.mp)) return ::testing::AssertionFailure() << *why;
  return ::testing::AssertionSuccess();
}

// Per-page state of everything the calls can touch: host, hypervisor, page array, guests.
struct PageView {
  PageState host, hyp;
  PageMeta meta;
  std::vector<PageState> guests;
  bool operator==(const PageView& o) const {
    return host == o.host && hyp == o.hyp && meta.guest == o.meta.guest && meta.guest_ipa == o.meta.guest_ipa &&
           meta.guest_shares == o.meta.guest_shares && meta.hyp_pins == o.meta.hyp_pins &&
           meta.flags == o.meta.flags && guests == o.guests;
  }
};
std::vector<PageView> snapshot(const MP& mp, unsigned threads) {
  std::vector<u64> pages;
  for (unsigned t = 0; t < threads; ++t)
    for (u64 i = 0; i < kPagesPerThread; ++i) pages.push_back(Env::kMem + t * (u64{2} << 20) + i * kPage);
  for (u64 i = 0; i < kSharedPages; ++i) pages.push_back(kSharedBase + i * kPage);
  std::vector<PageView> v;
  for (u64 pa : pages) {
    PageView p{mp.host_state(pa), mp.hyp_state(pa), mp.page_meta(pa), {}};
    for (unsigned t = 0; t < threads; ++t) p.guests.push_back(mp.guest_state(guest_of(t), ipa_of(pa)));
    v.push_back(p);
  }
  return v;
}

constexpr u32 kGuestMemcache = 32;

// ---- the tests ---------------------------------------------------------------------------------

class Stress : public ::testing::TestWithParam<unsigned> {};

// The body of RandomTransitionsKeepEveryInvariant, on environment E.
template <typename E>
void random_transitions_keep_every_invariant(unsigned threads) {
  constexpr unsigned kRounds = 3, kCallsPerRound = 300;
  E e;
  for (unsigned t = 0; t < threads; ++t) ASSERT_TRUE(e.mp.create_guest(guest_of(t), static_cast<u16>(1 + t)));
  std::atomic<unsigned> unexpected{0};
  std::vector<::testing::AssertionResult> checks;
  std::mutex checks_mu;
  // Every thread parks here after each round; the last to arrive checks the quiescent machine.
  std::barrier quiescent(static_cast<std::ptrdiff_t>(threads), [&]() noexcept {
    const std::lock_guard g(checks_mu);
    checks.push_back(machine_ok(e));
  });
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(0x5eed + t);
      for (unsigned round = 0; round < kRounds; ++round) {
        for (unsigned i = 0; i < kCallsPerRound; ++i) {
          Call c = random_call(rng, t, kAllOps);
          if (!e.mp.topup_guest_memcache(c.guest, kGuestMemcache)) unexpected.fetch_add(1);
          const Status st = run(e.mp, c.op, c.pa, c.n, c.guest);
          if (!st && !expected_refusal(st.error())) unexpected.fetch_add(1);
        }
        quiescent.arrive_and_wait();
      }
      // The end: every thread tears its guest down and reclaims it, at once.
      if (!e.mp.teardown_guest(guest_of(t))) unexpected.fetch_add(1);
      if (!e.mp.reclaim_guest(guest_of(t))) unexpected.fetch_add(1);
    });
  }
  for (auto& th : ts) th.join();
  EXPECT_EQ(unexpected.load(), 0u);
  ASSERT_EQ(checks.size(), kRounds);
  for (const auto& r : checks) EXPECT_TRUE(r);
  EXPECT_TRUE(machine_ok(e));
  EXPECT_EQ(e.plat->lock_order_violations(), 0u);
  EXPECT_TRUE(e.plat->violations().empty());
  for (unsigned t = 0; t < threads; ++t) EXPECT_EQ(e.mp.guest(guest_of(t)), nullptr);
}

TEST_P(Stress, RandomTransitionsKeepEveryInvariant) { random_transitions_keep_every_invariant<Env>(GetParam()); }

// The same on ticket locks, where the host's and the hypervisor's share one ticket word: share,
// donate and pin (both locks, one atomic) race host faults (the host's alone). A deadlock
// between them hangs the test; a lost exclusion breaks an invariant (or TSan reports a race).
TEST_P(Stress, RandomTransitionsKeepEveryInvariantUnderFusedTicketLocks) {
  random_transitions_keep_every_invariant<TicketEnv>(GetParam());
}

TEST_P(Stress, ResultsMatchASequentialReplayInHostLockOrder) {
  const unsigned threads = GetParam();
  constexpr unsigned kCalls = 600;
  Env e;
  std::vector<std::vector<Call>> per_thread(threads);
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(0xabc + t);
      auto& calls = per_thread[t];
      // The guest is created by its thread, racing with the others' calls: recorded too.
      t_first_place = ~u64{0};
      const Status created = run(e.mp, Op::create_guest, Env::kMem, 0, guest_of(t));
      calls.push_back(Call{t_first_place, Op::create_guest, Env::kMem, 0, guest_of(t), created});
      for (unsigned i = 0; i < kCalls; ++i) {
        Call c = random_call(rng, t, kHostLockOps);
        (void)e.mp.topup_guest_memcache(c.guest, kGuestMemcache);
        t_first_place = ~u64{0};
        c.result = run(e.mp, c.op, c.pa, c.n, c.guest);
        c.place = t_first_place;
        calls.push_back(c);
      }
    });
  }
  for (auto& th : ts) th.join();
  ASSERT_TRUE(machine_ok(e));
  EXPECT_EQ(e.plat->lock_order_violations(), 0u);
  EXPECT_TRUE(e.plat->violations().empty());

  // The calls in the order they took the host lock; every place taken once.
  std::vector<Call> all;
  for (auto& v : per_thread) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end(), [](const Call& a, const Call& b) { return a.place < b.place; });
  for (std::size_t i = 1; i < all.size(); ++i) ASSERT_NE(all[i - 1].place, all[i].place);
  ASSERT_NE(all.back().place, ~u64{0});

  // Replayed one at a time on a fresh machine: the same results and the same pages.
  Env r;
  unsigned mismatches = 0;
  for (std::size_t i = 0; i < all.size(); ++i) {
    const Call& c = all[i];
    if (c.op != Op::create_guest) (void)r.mp.topup_guest_memcache(c.guest, kGuestMemcache);
    const Status st = run(r.mp, c.op, c.pa, c.n, c.guest);
    if (st.has_value() != c.result.has_value() || (!st && st.error() != c.result.error())) {
      if (++mismatches <= 5)
        ADD_FAILURE() << "call " << i << " (op " << static_cast<int>(c.op) << ", pa 0x" << std::hex << c.pa << std::dec
                      << ", " << c.n << " pages, guest " << c.guest << "): "
                      << (c.result ? "ok" : name(c.result.error())) << " concurrently, "
                      << (st ? "ok" : name(st.error())) << " in the replay";
    }
  }
  EXPECT_EQ(mismatches, 0u);
  const std::vector<PageView> got = snapshot(e.mp, threads), want = snapshot(r.mp, threads);
  ASSERT_EQ(got.size(), want.size());
  unsigned differ = 0;
  for (std::size_t i = 0; i < got.size(); ++i) differ += !(got[i] == want[i]);
  EXPECT_EQ(differ, 0u) << "pages whose state differs from the replay's";
  // The run was not trivially sequential or trivially refused: calls succeeded.
  EXPECT_GT(std::count_if(all.begin(), all.end(), [](const Call& c) { return c.result.has_value(); }), 100);
}

// One guest, faulting from half the threads under its lock's shared side (relax permissions,
// set the access flag, test and clear it: pgtable::Walk::shared), while the other half change
// its pages under the exclusive side (share pages with it read-only and unshare them,
// write-protect them, host faults and hypervisor shares around them). Every fault returns
// success or a refusal the state explains (EAGAIN when its compare-and-swap lost; EPERM or
// ENOENT for a page not shared at that moment); at the quiescent points and at the end the
// invariant checker and the whole-machine access check pass; the simulator sees no misuse and
// no lock out of order; and under ThreadSanitizer no race (the faults read and swap entries
// atomically, and the exclusive side's plain stores are ordered against them by the lock).
TEST_P(Stress, SharedGuestFaultsRaceTransitionsOnOneGuest) {
  const unsigned threads = GetParam();
  const unsigned faulters = threads / 2;
  constexpr unsigned kRounds = 3, kCallsPerRound = 300;
  Env e;
  const ComponentId g = guest_of(0);
  ASSERT_TRUE(e.mp.create_guest(g, 1));
  std::atomic<unsigned> unexpected{0};
  std::atomic<u64> faults_ok{0}, faults_eagain{0}, transitions_ok{0};
  std::vector<::testing::AssertionResult> checks;
  std::mutex checks_mu;
  std::barrier quiescent(static_cast<std::ptrdiff_t>(threads), [&]() noexcept {
    const std::lock_guard lg(checks_mu);
    checks.push_back(machine_ok(e));
  });
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(0xfa17 + t);
      const bool faulter = t < faulters;
      for (unsigned round = 0; round < kRounds; ++round) {
        for (unsigned i = 0; i < kCallsPerRound; ++i) {
          const u64 n = 1 + rng() % 3;
          const u64 pa = kSharedBase + (rng() % (kSharedPages - n + 1)) * kPage;
          const u64 ipa = ipa_of(pa);
          Status st;
          if (faulter) {
            switch (rng() % 4) {
              case 0: st = e.mp.guest_relax_perms(g, ipa, pgtable::kPermW); break;
              case 1: st = e.mp.guest_relax_perms(g, ipa, pgtable::kPermX); break;
              case 2: st = e.mp.guest_mkyoung(g, ipa); break;
              default: {
                const Result<bool> r = e.mp.guest_test_clear_young(g, ipa, n, rng() % 2 == 0);
                st = r ? Status{} : Status{fail(r.error())};
              }
            }
            if (st) faults_ok.fetch_add(1, std::memory_order_relaxed);
            else if (st.error() == Error::eagain) faults_eagain.fetch_add(1, std::memory_order_relaxed);
          } else {
            if (!e.mp.topup_guest_memcache(g, kGuestMemcache)) unexpected.fetch_add(1);
            switch (rng() % 6) {
              case 0:
              case 1: st = e.mp.host_share_guest(pa, n, g, ipa, pgtable::kPermR); break;
              case 2: st = e.mp.host_unshare_guest(g, ipa, n); break;
              case 3: st = e.mp.guest_wrprotect(g, ipa, n); break;
              case 4: st = e.mp.host_handle_fault(pa); break;
              default: st = rng() % 2 ? e.mp.host_share_hyp(pa, n) : e.mp.host_unshare_hyp(pa, n); break;
            }
            if (st) transitions_ok.fetch_add(1, std::memory_order_relaxed);
          }
          if (!st && !expected_refusal(st.error())) unexpected.fetch_add(1);
        }
        quiescent.arrive_and_wait();
      }
    });
  }
  for (auto& th : ts) th.join();
  EXPECT_EQ(unexpected.load(), 0u);
  ASSERT_EQ(checks.size(), kRounds);
  for (const auto& r : checks) EXPECT_TRUE(r);
  // The run was not trivially refused: faults and transitions both succeeded.
  EXPECT_GT(faults_ok.load(), 50u);
  EXPECT_GT(transitions_ok.load(), 50u);
  RecordProperty("faults_eagain", static_cast<int>(faults_eagain.load()));
  ASSERT_TRUE(e.mp.teardown_guest(g));
  ASSERT_TRUE(e.mp.reclaim_guest(g));
  EXPECT_TRUE(machine_ok(e));
  EXPECT_EQ(e.plat->lock_order_violations(), 0u);
  EXPECT_TRUE(e.plat->violations().empty());
}

INSTANTIATE_TEST_SUITE_P(Threads, Stress, ::testing::Values(2u, 4u, 8u),
                         [](const auto& param_info) { return std::to_string(param_info.param) + "threads"; });

}  // namespace
}  // namespace ptguard::test
