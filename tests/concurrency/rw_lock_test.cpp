// RwLock (pgtable/rw_lock.hpp), the EL2 guest lock, under real threads: writers exclude
// everyone, readers run together, a waiting writer keeps new readers out, and what a writer
// wrote is seen by the next reader. Run under ThreadSanitizer too (make test-tsan), which
// reports any access to the guarded data that the lock's acquire/release does not order.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "ptguard/pgtable/rw_lock.hpp"

namespace ptguard::pgtable {
namespace {

// More threads than cores (and TSan): waiters yield so the holder gets to run.
struct YieldRelax {
  void operator()() const { std::this_thread::yield(); }
};
using TestRwLock = BasicRwLock<YieldRelax>;

// Writers do two separate read-modify-writes of plain data; readers check the pair is never
// seen half-written. With a lock whose writer does not wait for the readers inside, or whose
// reader does not back off from a writer, readers see a != b (and TSan reports the race).
TEST(RwLock, WritersExcludeReadersAndEachOther) {
  TestRwLock lock;
  u64 a = 0, b = 0;
  std::atomic<u64> torn{0}, reads{0};
  constexpr int kWriters = 2, kReaders = 3, kIters = 3'000;
  std::vector<std::thread> ts;
  for (int t = 0; t < kWriters; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < kIters; ++i) {
        lock.lock();
        a = a + 1;
        std::this_thread::yield();  // widen the window a broken lock would let a reader into
        b = a;
        lock.unlock();
      }
    });
  }
  for (int t = 0; t < kReaders; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < kIters; ++i) {
        SharedLockGuard guard(lock);
        if (a != b) torn.fetch_add(1, std::memory_order_relaxed);
        reads.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(a, u64{kWriters} * kIters);
  EXPECT_EQ(b, a);
  EXPECT_EQ(torn.load(), 0u);
  EXPECT_EQ(reads.load(), u64{kReaders} * kIters);
  EXPECT_FALSE(lock.is_locked());
  EXPECT_EQ(lock.readers(), 0u);
}

// Two readers are inside at the same time: each waits, holding the shared side, until it has
// seen the other inside. A lock whose shared side excludes (a plain mutex) never gets there.
TEST(RwLock, ReadersHoldItTogether) {
  TestRwLock lock;
  std::atomic<int> inside{0};
  std::atomic<bool> both{true};
  auto reader = [&] {
    SharedLockGuard guard(lock);
    inside.fetch_add(1);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (inside.load() < 2) {
      if (std::chrono::steady_clock::now() > deadline) {
        both = false;
        return;
      }
      std::this_thread::yield();
    }
  };
  std::thread r1(reader), r2(reader);
  r1.join();
  r2.join();
  EXPECT_TRUE(both.load());
  EXPECT_EQ(lock.readers(), 0u);
}

// A writer waiting for a reader inside keeps new readers out (writers are preferred: a
// stream of guest faults cannot starve a transition), and gets in once the reader leaves.
TEST(RwLock, AWaitingWriterKeepsNewReadersOut) {
  TestRwLock lock;
  lock.lock_shared();
  std::atomic<bool> writer_in{false};
  std::thread writer([&] {
    lock.lock();
    writer_in = true;
    lock.unlock();
  });
  while (!lock.is_locked()) std::this_thread::yield();  // the writer has set its bit
  EXPECT_FALSE(lock.try_lock_shared());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(writer_in.load());  // still waiting for us
  lock.unlock_shared();
  writer.join();
  EXPECT_TRUE(writer_in.load());
  EXPECT_TRUE(lock.try_lock_shared());
  lock.unlock_shared();
  EXPECT_EQ(lock.readers(), 0u);
  EXPECT_FALSE(lock.is_locked());
}

}  // namespace
}  // namespace ptguard::pgtable
