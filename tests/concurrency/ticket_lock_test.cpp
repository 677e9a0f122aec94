// TicketLock (pgtable/ticket_lock.hpp) under real threads: mutual exclusion, the ordering that
// makes one holder's writes visible to the next, try_lock, and first-come-first-served order.
// TicketLockPair: each of its locks excludes on its own and lock_both() excludes both, with
// threads taking first, second and both at once; its counters wrap each on its own.
// tests/concurrency/ runs a third time under ThreadSanitizer (make test-tsan), which also
// reports any access to the guarded data that the lock's acquire/release does not order.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "ptguard/pgtable/ticket_lock.hpp"

namespace ptguard::pgtable {
namespace {

// The tests run more threads than this machine has cores (and under ThreadSanitizer): waiters
// yield, so that the thread whose ticket is up gets to run (ticket_lock.hpp).
struct YieldRelax {
  void operator()() const { std::this_thread::yield(); }
};
using TestLock = BasicTicketLock<YieldRelax>;

// Plain (non-atomic) data written under the lock. With a broken lock two threads' increments
// interleave and some are lost; without acquire/release the next holder may see `a` and `b`
// out of step (a data race that ThreadSanitizer reports, too).
struct Guarded {
  u64 a = 0;
  u64 b = 0;
};

TEST(TicketLock, EveryIncrementUnderTheLockSurvivesFourThreads) {
  TestLock lock;
  Guarded g;
  std::atomic<u64> torn{0};
  constexpr int kThreads = 4, kIters = 5'000;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < kIters; ++i) {
        LockGuard guard(lock);
        if (g.a != g.b) torn.fetch_add(1, std::memory_order_relaxed);
        // Two separate read-modify-writes: a thread entering in between would see a != b.
        g.a = g.a + 1;
        g.b = g.a;
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(g.a, u64{kThreads} * kIters);
  EXPECT_EQ(g.b, g.a);
  EXPECT_EQ(torn.load(), 0u);
  EXPECT_FALSE(lock.is_locked());
}

TEST(TicketLock, TryLockFailsWhileHeldOrWaitedForAndSucceedsWhenFree) {
  TestLock lock;
  EXPECT_TRUE(lock.try_lock());
  EXPECT_TRUE(lock.is_locked());
  EXPECT_FALSE(lock.try_lock());
  std::atomic<bool> got{false};
  std::thread waiter([&] {
    lock.lock();  // queues behind us
    got = true;
    lock.unlock();
  });
  // While the waiter holds a ticket, try_lock must not jump the queue even after we unlock
  // ... so check only while we still hold it.
  for (int i = 0; i < 1000 && !got; ++i) EXPECT_FALSE(lock.try_lock());
  lock.unlock();
  waiter.join();
  EXPECT_TRUE(got);
  EXPECT_FALSE(lock.is_locked());
  EXPECT_TRUE(lock.try_lock());
  lock.unlock();
}

TEST(TicketLock, WaitersAreServedInTicketOrder) {
  // The main thread holds the lock while three threads queue one after the other (each waits
  // until the previous one has taken its ticket); on release they must enter in that order.
  TestLock lock;
  lock.lock();
  std::atomic<int> queued{0};
  std::vector<int> order;
  std::vector<std::thread> ts;
  for (int t = 0; t < 3; ++t) {
    while (queued.load() != t) std::this_thread::yield();
    ts.emplace_back([&, t] {
      queued.fetch_add(1);  // just before taking the ticket: give the next thread a head start
      lock.lock();
      order.push_back(t);
      lock.unlock();
    });
    // Let the thread reach lock() and take its ticket before the next one starts.
    while (queued.load() != t + 1) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  lock.unlock();
  for (auto& t : ts) t.join();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));
}

// ---- TicketLockPair -------------------------------------------------------------------------

using TestPair = BasicTicketLockPair<YieldRelax>;

// Four threads, each taking `first` alone, `second` alone and both in turn (so every pair of
// kinds meets), writing plain data under what they hold: `g1` under first, `g2` under second.
// A lock that did not exclude loses increments or tears a/b; lock_both() holding only one of
// the two does (and ThreadSanitizer reports the race). A deadlock between the kinds hangs.
TEST(TicketLockPair, FirstSecondAndBothEachExcludeAmongFourThreads) {
  TestPair pair;
  Guarded g1, g2;
  std::atomic<u64> torn{0};
  constexpr int kThreads = 4, kIters = 3'000;
  const auto bump = [&](Guarded& g) {
    if (g.a != g.b) torn.fetch_add(1, std::memory_order_relaxed);
    g.a = g.a + 1;
    g.b = g.a;
  };
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < kIters; ++i) {
        switch ((i + t) % 3) {
          case 0:
            pair.lock_first();
            bump(g1);
            pair.unlock_first();
            break;
          case 1:
            pair.lock_second();
            bump(g2);
            pair.unlock_second();
            break;
          default:
            pair.lock_both();
            bump(g1);
            bump(g2);
            pair.unlock_both();
        }
      }
    });
  }
  for (auto& t : ts) t.join();
  // Each thread bumps g1 in cases 0 and 2, g2 in cases 1 and 2: 2 of every 3 iterations.
  u64 want1 = 0, want2 = 0;
  for (int t = 0; t < kThreads; ++t)
    for (int i = 0; i < kIters; ++i) {
      const int k = (i + t) % 3;
      want1 += k != 1;
      want2 += k != 0;
    }
  EXPECT_EQ(g1.a, want1);
  EXPECT_EQ(g2.a, want2);
  EXPECT_EQ(torn.load(), 0u);
  EXPECT_FALSE(pair.first_locked());
  EXPECT_FALSE(pair.second_locked());
}

// While one lock is held, the other is free to take, alone; lock_both() waits for the held one.
TEST(TicketLockPair, HoldingOneLeavesTheOtherFreeAndBothWaitsForIt) {
  TestPair pair;
  pair.lock_first();
  EXPECT_TRUE(pair.first_locked());
  EXPECT_FALSE(pair.second_locked());
  std::thread([&] {
    pair.lock_second();  // must not wait for first
    pair.unlock_second();
  }).join();
  std::atomic<bool> got{false};
  std::thread both([&] {
    pair.lock_both();
    got = true;
    pair.unlock_both();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(got.load());  // still waiting for first
  pair.unlock_first();
  both.join();
  EXPECT_TRUE(got.load());
  EXPECT_FALSE(pair.first_locked());
  EXPECT_FALSE(pair.second_locked());
}

// The counters wrap at 2^32. second's (the word's low half) carries into first's: the caller
// whose add carried owns the extra ticket of first and must pass it on (lock_second) or let it
// go with its own (lock_both, at unlock), else first would look held, and wait, forever.
TEST(TicketLockPair, EachCounterWrapsOnItsOwn) {
  TestPair pair(0xffff'ffffu);
  pair.lock_second();  // second's counter 0xffffffff -> 0
  EXPECT_FALSE(pair.first_locked());
  EXPECT_TRUE(pair.second_locked());
  pair.unlock_second();
  EXPECT_FALSE(pair.second_locked());
  TestPair both(0xffff'ffffu);
  both.lock_both();  // both counters wrap at once
  EXPECT_TRUE(both.first_locked());
  EXPECT_TRUE(both.second_locked());
  both.unlock_both();
  EXPECT_FALSE(both.first_locked());
  EXPECT_FALSE(both.second_locked());
  both.lock_first();  // and each is taken again after its wrap
  both.lock_second();
  both.unlock_second();
  both.unlock_first();
  EXPECT_FALSE(both.first_locked());
  EXPECT_FALSE(both.second_locked());
}

}  // namespace
}  // namespace ptguard::pgtable
