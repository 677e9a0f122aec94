// A ticket spinlock: the lock a hypervisor takes around a table that several CPUs change (the
// host's stage 2, which every CPU's stage-2 faults fill). Freestanding; no heap, no libc.
//
// Two counters: `next_` hands out tickets, `owner_` names the ticket being served. lock()
// takes a ticket with one atomic add and waits until owner_ reaches it; unlock() lets the next
// ticket in. CPUs are served in the order they asked (no starvation, which a test-and-set
// lock does not promise when one CPU keeps re-taking it).
//
// Ordering (Arm ARM B2.3, "Definition of the Armv8 memory model"; C++ [atomics.order]): the
// load that sees our ticket come up is a load-acquire (LDAR/LDAPR), and unlock() is a
// store-release (STLR), so everything the previous holder wrote under the lock (descriptors
// included) is observed by the next holder before its own accesses. The ticket add needs no
// ordering of its own: nothing is read under the lock until the acquire load succeeds.
//
// While waiting, the CPU executes YIELD on AArch64 (C6.2 YIELD: a hint that the thread is
// spinning) and PAUSE on x86-64, nothing elsewhere (`CpuRelax`). The lock is 8 bytes and is not
// recursive: taking it twice on one CPU deadlocks.
//
// A ticket lock hands the lock to one particular waiter; if that waiter is not running (a
// thread preempted on a host with more threads than cores) everyone waits for the scheduler.
// At EL2 every waiter is a CPU and always runs; a hosted user (the simulator, tests with more
// threads than cores) gives a Relax policy that yields the thread (`BasicTicketLock<R>`).
#pragma once

#include "ptguard/arch/bits.hpp"

namespace ptguard::pgtable {

/// A spinning CPU's hint to the core it runs on.
inline void cpu_relax() {
#if defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#elif defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/// The default wait: the CPU's spin hint.
struct CpuRelax {
  void operator()() const { cpu_relax(); }
};

template <class Relax = CpuRelax>
class BasicTicketLock {
 public:
  constexpr BasicTicketLock() = default;
  BasicTicketLock(const BasicTicketLock&) = delete;
  BasicTicketLock& operator=(const BasicTicketLock&) = delete;

  /// Waits for this caller's turn, then holds the lock.
  void lock() {
    const u32 ticket = __atomic_fetch_add(&next_, 1u, __ATOMIC_RELAXED);
    while (__atomic_load_n(&owner_, __ATOMIC_ACQUIRE) != ticket) Relax{}();
  }

  /// Takes the lock only if nobody holds or waits for it; true if taken.
  [[nodiscard]] bool try_lock() {
    // Seeing owner_ == o with acquire orders us after the unlock that made it o; the CAS then
    // claims ticket o only if no ticket was handed out since.
    u32 o = __atomic_load_n(&owner_, __ATOMIC_ACQUIRE);
    return __atomic_compare_exchange_n(&next_, &o, o + 1u, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  }

  /// Lets the next ticket in. Only the holder may call it.
  void unlock() {
    // owner_ is written by the holder only, so a plain read of it is exact.
    const u32 mine = __atomic_load_n(&owner_, __ATOMIC_RELAXED);
    __atomic_store_n(&owner_, mine + 1u, __ATOMIC_RELEASE);
  }

  /// Whether some CPU holds the lock (a snapshot: for assertions and diagnostics only).
  [[nodiscard]] bool is_locked() const {
    return __atomic_load_n(&next_, __ATOMIC_RELAXED) != __atomic_load_n(&owner_, __ATOMIC_RELAXED);
  }

 private:
  u32 next_ = 0;
  u32 owner_ = 0;
};

/// The lock for code where every waiter is a CPU of its own (EL2).
using TicketLock = BasicTicketLock<>;

/// Holds a lock for the lifetime of a scope.
template <class L>
class LockGuard {
 public:
  explicit LockGuard(L& l) : l_(l) { l_.lock(); }
  ~LockGuard() { l_.unlock(); }
  LockGuard(const LockGuard&) = delete;
  LockGuard& operator=(const LockGuard&) = delete;

 private:
  L& l_;
};

}  // namespace ptguard::pgtable
