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

/// Two ticket locks, `first` and `second`, whose ticket counters share one 64-bit word, so a
/// caller that needs both takes its two tickets with one atomic add instead of two (the
/// ownership layer's host and hypervisor locks: share_hyp and its kin take both on every call,
/// and the second atomic was a tenth of such a call). Each lock is still waited for and
/// released on its own; only the ticket counters are fused.
///
/// The word: bits 63:32 are `first`'s next ticket, bits 31:0 `second`'s. Taking `first` adds
/// 2^32, `second` adds 1, both add 2^32 + 1: one atomic add each (LDADD with FEAT_LSE, LOCK
/// XADD on x86-64). A carry out of bit 63 leaves the word, so `first`'s counter wraps exactly.
/// When `second`'s counter wraps, its carry adds one to `first`'s, handing the adder a ticket
/// of `first` that it did not ask for and nobody else holds. The adder owns that ticket and
/// fills it, so `first`'s queue has no hole: lock_second() waits for its turn at `first` and
/// passes it straight on; lock_both() holds its two consecutive tickets of `first` as one, and
/// unlock_first() lets both go (`first_extra_`). That happens once in 2^32 acquisitions of
/// `second`; a compare-and-swap that never carries would cost every lock_both() more (0.7 ns of
/// 3.1 on the machine of the README's tables: limit_lock_both_unlock).
///
/// Deadlock freedom, the rule the caller keeps: a CPU holding `first` alone never then takes
/// `second` alone, and a CPU holding `second` never takes `first`; a caller that needs both
/// takes both with lock_both(). Then the tickets of every lock_both() (and of a lock_second()
/// whose add carried) are taken at one instant, so two such callers are in the same order in
/// both queues, each waits for `first` before `second`, and a holder of one lock alone waits
/// for nothing while it holds it: every ticket is served in turn. (Taking `first`, then
/// `second` alone, could deadlock against a lock_both() whose tickets fell between the two.)
///
/// Ordering is BasicTicketLock's: the wait is a load-acquire, the release a store-release.
/// 24 bytes.
template <class Relax = CpuRelax>
class BasicTicketLockPair {
 public:
  constexpr BasicTicketLockPair() = default;
  /// Both locks free, with every counter at `start`: for tests of the counters' wrap.
  constexpr explicit BasicTicketLockPair(u32 start) : next_(u64{start} << 32 | start), owner_{start, start} {}
  BasicTicketLockPair(const BasicTicketLockPair&) = delete;
  BasicTicketLockPair& operator=(const BasicTicketLockPair&) = delete;

  /// Waits for this caller's turn at `first`, then holds it.
  void lock_first() {
    const u64 old = __atomic_fetch_add(&next_, kFirstOne, __ATOMIC_RELAXED);
    wait(0, static_cast<u32>(old >> 32));
  }
  /// Waits for this caller's turn at `second`, then holds it.
  void lock_second() {
    const u64 old = __atomic_fetch_add(&next_, 1, __ATOMIC_RELAXED);
    if (carried(old)) {
      // The carry gave us ticket old >> 32 of `first`: wait for it and pass it on.
      wait(0, static_cast<u32>(old >> 32));
      release(0, 1);
    }
    wait(1, static_cast<u32>(old));
  }
  /// Takes a ticket of each with one atomic add, then waits for `first`, then for `second`.
  void lock_both() {
    const u64 old = __atomic_fetch_add(&next_, kFirstOne + 1, __ATOMIC_RELAXED);
    wait(0, static_cast<u32>(old >> 32));
    // With a carry the add took two tickets of `first`, ours and the next: both go at unlock.
    // Only `first`'s holder touches first_extra_, so a plain write under it is exact.
    if (carried(old)) first_extra_ = 1;
    wait(1, static_cast<u32>(old));
  }

  void unlock_first() {
    const u32 extra = first_extra_;
    first_extra_ = 0;
    release(0, 1 + extra);
  }
  void unlock_second() { release(1, 1); }
  /// Releases both (second first: the reverse of lock_both()).
  void unlock_both() {
    unlock_second();
    unlock_first();
  }

  /// Whether some CPU holds or waits for `first` (a snapshot: for assertions and diagnostics).
  [[nodiscard]] bool first_locked() const {
    return static_cast<u32>(__atomic_load_n(&next_, __ATOMIC_RELAXED) >> 32) != __atomic_load_n(&owner_[0], __ATOMIC_RELAXED);
  }
  /// Whether some CPU holds or waits for `second` (a snapshot, as first_locked()).
  [[nodiscard]] bool second_locked() const {
    return static_cast<u32>(__atomic_load_n(&next_, __ATOMIC_RELAXED)) != __atomic_load_n(&owner_[1], __ATOMIC_RELAXED);
  }

 private:
  static constexpr u64 kFirstOne = u64{1} << 32;
  // Whether adding 1 to `old`'s low half carried into its high half.
  static constexpr bool carried(u64 old) { return static_cast<u32>(old) == 0xffff'ffffu; }
  void wait(unsigned which, u32 ticket) {
    while (__atomic_load_n(&owner_[which], __ATOMIC_ACQUIRE) != ticket) Relax{}();
  }
  void release(unsigned which, u32 tickets) {
    // owner_[which] is written by its holder only, so a plain read of it is exact.
    const u32 mine = __atomic_load_n(&owner_[which], __ATOMIC_RELAXED);
    __atomic_store_n(&owner_[which], mine + tickets, __ATOMIC_RELEASE);
  }

  u64 next_ = 0;
  u32 owner_[2] = {0, 0};
  u32 first_extra_ = 0;  ///< tickets of `first` its holder holds beyond its own (0 or 1)
};

/// The pair for code where every waiter is a CPU of its own (EL2).
using TicketLockPair = BasicTicketLockPair<>;

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
