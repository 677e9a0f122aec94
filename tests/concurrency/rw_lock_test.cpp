// The reader-writer locks of pgtable/rw_lock.hpp (RwLock, one word; BasicPerCpuRwLock, the
// default guest lock, a reader slot per CPU) under real threads: writers exclude everyone,
// readers run together, a waiting writer keeps new readers out, and what a writer wrote is
// seen by the next reader. Run under ThreadSanitizer too (make test-tsan), which
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
// Each thread its own reader slot, as each CPU at EL2 (4 slots for up to 5 threads: two share
// one, which must work too).
struct ThreadSlot {
  unsigned operator()() const {
    static std::atomic<unsigned> next{0};
    static thread_local const unsigned id = next.fetch_add(1);
    return id;
  }
};

template <typename L>
class RwLockTest : public ::testing::Test {};
using Locks = ::testing::Types<BasicRwLock<YieldRelax>, BasicPerCpuRwLock<YieldRelax, ThreadSlot, 4>>;
TYPED_TEST_SUITE(RwLockTest, Locks);

// Writers do two separate read-modify-writes of plain data; readers check the pair is never
// seen half-written. With a lock whose writer does not wait for the readers inside, or whose
// reader does not back off from a writer, readers see a != b (and TSan reports the race).
TYPED_TEST(RwLockTest, WritersExcludeReadersAndEachOther) {
  TypeParam lock;
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
        SharedLockGuard<TypeParam> guard(lock);
        const u64 ra = a;
        if (ra != b) torn.fetch_add(1, std::memory_order_relaxed);  // let in while a writer is
        std::this_thread::yield();  // a writer let in now would change a and b apart
        if (ra != b) torn.fetch_add(1, std::memory_order_relaxed);
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
TYPED_TEST(RwLockTest, ReadersHoldItTogether) {
  TypeParam lock;
  std::atomic<int> inside{0};
  std::atomic<bool> both{true};
  auto reader = [&] {
    SharedLockGuard<TypeParam> guard(lock);
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
TYPED_TEST(RwLockTest, AWaitingWriterKeepsNewReadersOut) {
  TypeParam lock;
  lock.lock_shared();
  std::atomic<bool> writer_in{false};
  std::thread writer([&] {
    lock.lock();
    writer_in = true;
    lock.unlock();
  });
  // Until the writer has set its bit (bounded: a writer that does not wait for us would be
  // through already, and the test fails below instead of hanging here).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!lock.is_locked() && !writer_in.load() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::yield();
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
