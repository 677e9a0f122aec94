// TicketLock (pgtable/ticket_lock.hpp) under real threads: mutual exclusion, the ordering that
// makes one holder's writes visible to the next, try_lock, and first-come-first-served order.
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

}  // namespace
}  // namespace ptguard::pgtable
