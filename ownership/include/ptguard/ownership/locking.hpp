// The ownership layer's locks: which lock type, in which order, and the guard that holds one.
// Freestanding.
//
// MemProtect owns one lock for the host's stage 2, one for the hypervisor's stage 1 and one per
// guest slot (docs/concurrency.md, "The locks the ownership layer owns"). Every transition
// takes the locks of the tables it reads or changes in one global order, host, then
// hypervisor, then guests (pKVM's order), so two transitions can never each hold a lock the
// other waits for. The order is expressed as a rank:
//
//   host 0, hypervisor 1, guest slot i 2 + i
//
// and a lock may be taken only while every lock the caller holds has a lower rank. Transitions
// take at most one guest lock; only check_invariants takes several (every slot's, by slot).
//
// The platform chooses (both optional; pgtable/platform.hpp lists them with the rest):
//   Lock                  the host's and the hypervisor's lock type (lock()/unlock());
//                         pgtable::TicketLock if it names none. A ticket lock's two are
//                         fused into one pgtable::TicketLockPair (HostHypLocks, below).
//   GuestLock             a guest slot's lock type: a reader-writer lock (lock()/unlock() and
//                         lock_shared()/unlock_shared()); if it names none,
//                         pgtable::BasicPerCpuRwLock, a reader slot per P::cpu_id(). The
//                         guest's own stage-2 fault operations take its shared side, every
//                         transition the exclusive side (docs/concurrency.md).
//   lock_order_acquire(r) called with the rank before a lock is taken, and
//   lock_order_release(r) after it is released: a checker's hooks (the simulator records,
//                         per thread, the ranks held and reports an acquisition out of order).
//                         Without them, nothing is called (at EL2 they are empty).
//   lock_order_acquire_shared(r)
//                         called instead of lock_order_acquire for a shared acquisition (the
//                         release is lock_order_release either way). The order rule is the
//                         same for both sides: a reader that waits for a higher lock while a
//                         writer of that lock waits for it deadlocks just as two writers do,
//                         and so does a reader taking its own lock again behind a waiting
//                         writer (writers are preferred). Without it, lock_order_acquire.
#pragma once

#include "ptguard/arch/bits.hpp"
#include "ptguard/pgtable/rw_lock.hpp"
#include "ptguard/pgtable/ticket_lock.hpp"

namespace ptguard::ownership {

/// The ranks of the global lock order (see above). A guest slot's lock is guest + slot (guest_lock_rank).
enum class LockRank : unsigned { host = 0, hyp = 1, guest = 2 };

/// The rank of guest slot `slot`'s lock.
[[nodiscard]] constexpr unsigned guest_lock_rank(unsigned slot) { return static_cast<unsigned>(LockRank::guest) + slot; }

/// What the ownership layer needs of a lock: exclusive, not recursive, acquire on lock() and
/// release on unlock() (so the next holder sees every write the previous one made).
template <typename L>
concept OwnershipLock = requires(L& l) {
  l.lock();
  l.unlock();
};

namespace detail {
template <typename P>
struct LockOf {
  using type = pgtable::TicketLock;
};
template <typename P>
  requires requires { typename P::Lock; }
struct LockOf<P> {
  using type = typename P::Lock;
};
}  // namespace detail

/// The platform's lock type: P::Lock, or pgtable::TicketLock if the platform names none.
template <typename P>
using PlatformLock = typename detail::LockOf<P>::type;

/// What a guest slot's lock needs besides OwnershipLock: a shared side, acquire on
/// lock_shared() and release on unlock_shared(), excluded by lock() both ways.
template <typename L>
concept SharedOwnershipLock = OwnershipLock<L> && requires(L& l) {
  l.lock_shared();
  l.unlock_shared();
};

namespace detail {
// The reader slot of the default guest lock: the platform's CPU (P::cpu_id(), at EL2 the
// MPIDR_EL1 affinity; folded so that Aff0, Aff1 and Aff2 all spread), or slot 0.
template <typename P>
struct CpuSlot {
  [[nodiscard]] unsigned operator()() const {
    if constexpr (requires { P::cpu_id(); }) {
      const u64 id = P::cpu_id();
      return static_cast<unsigned>(id ^ (id >> 8) ^ (id >> 16) ^ (id >> 32));
    } else {
      return 0;
    }
  }
};
template <typename P>
struct GuestLockOf {
  using type = pgtable::BasicPerCpuRwLock<pgtable::CpuRelax, CpuSlot<P>>;
};
template <typename P>
  requires requires { typename P::GuestLock; }
struct GuestLockOf<P> {
  using type = typename P::GuestLock;
};
}  // namespace detail

/// The platform's guest lock type: P::GuestLock, or else pgtable::BasicPerCpuRwLock with a
/// reader slot per CPU (P::cpu_id() if the platform has it: readers on different CPUs then
/// write no common cache line; else every reader on one slot).
template <typename P>
using PlatformGuestLock = typename detail::GuestLockOf<P>::type;

/// The host's and the hypervisor's locks (ranks host and hyp), kept together because most
/// transitions between the two take both. The rule that makes fusing them safe: a caller that
/// needs both takes both with lock_both(), never the host's and then the hypervisor's on its
/// own (lock_host() then lock_hyp() in one caller is not allowed; MemProtect's guards make
/// each transition take exactly one of host, hyp or both).
///
/// For any lock type, two locks, lock_both() taking them in the order. For the ticket lock
/// (pgtable::BasicTicketLock, the default and the EL2 platform's), one
/// pgtable::BasicTicketLockPair: lock_both() takes both tickets with one atomic instead of
/// two (docs/concurrency.md, "Cost"); the rule above is what its deadlock freedom needs.
template <typename L>
class HostHypLocks {
 public:
  void lock_host() { host_.lock(); }
  void unlock_host() { host_.unlock(); }
  void lock_hyp() { hyp_.lock(); }
  void unlock_hyp() { hyp_.unlock(); }
  void lock_both() {
    host_.lock();
    hyp_.lock();
  }
  void unlock_both() {
    hyp_.unlock();
    host_.unlock();
  }

 private:
  L host_{};
  L hyp_{};
};

template <class Relax>
class HostHypLocks<pgtable::BasicTicketLock<Relax>> {
 public:
  void lock_host() { pair_.lock_first(); }
  void unlock_host() { pair_.unlock_first(); }
  void lock_hyp() { pair_.lock_second(); }
  void unlock_hyp() { pair_.unlock_second(); }
  void lock_both() { pair_.lock_both(); }
  void unlock_both() { pair_.unlock_both(); }

 private:
  pgtable::BasicTicketLockPair<Relax> pair_{};
};

/// Which of HostHypLocks' locks a HostHypGuard holds.
enum class HostHyp : unsigned { host = 1, hyp = 2, both = 3 };

/// Whether the platform has the lock-order checker's hooks.
template <typename P>
concept LockOrderHooks = requires(P& p, unsigned rank) {
  p.lock_order_acquire(rank);
  p.lock_order_release(rank);
};

/// Whether the checker tells shared acquisitions apart (lock_order_acquire_shared).
template <typename P>
concept SharedLockOrderHooks = LockOrderHooks<P> && requires(P& p, unsigned rank) { p.lock_order_acquire_shared(rank); };

/// Holds one ownership lock for a scope, telling the platform's checker (if it has one) before
/// taking it (so an inversion is reported even where it would deadlock) and after dropping it.
/// A null lock holds nothing (a transition whose guest does not exist takes no guest lock).
template <typename P, typename L = PlatformLock<P>>
class RankedGuard {
 public:
  RankedGuard(P& plat, L* lock, unsigned rank) : plat_(plat), lock_(lock), rank_(rank) {
    if (lock_ == nullptr) return;
    if constexpr (LockOrderHooks<P>) plat_.lock_order_acquire(rank_);
    lock_->lock();
  }
  ~RankedGuard() {
    if (lock_ == nullptr) return;
    lock_->unlock();
    if constexpr (LockOrderHooks<P>) plat_.lock_order_release(rank_);
  }
  RankedGuard(const RankedGuard&) = delete;
  RankedGuard& operator=(const RankedGuard&) = delete;

 private:
  P& plat_;
  L* lock_;
  unsigned rank_;
};

/// Holds the host's lock, the hypervisor's, or both (HostHypLocks) for a scope, telling the
/// platform's checker (if it has one) of each rank before taking them, host first, and after
/// releasing them, hypervisor first.
template <typename P, typename L = PlatformLock<P>>
class HostHypGuard {
 public:
  HostHypGuard(P& plat, HostHypLocks<L>& locks, HostHyp which) : plat_(plat), locks_(locks), which_(which) {
    if constexpr (LockOrderHooks<P>) {
      if (has(HostHyp::host)) plat_.lock_order_acquire(static_cast<unsigned>(LockRank::host));
      if (has(HostHyp::hyp)) plat_.lock_order_acquire(static_cast<unsigned>(LockRank::hyp));
    }
    switch (which_) {
      case HostHyp::host: locks_.lock_host(); break;
      case HostHyp::hyp: locks_.lock_hyp(); break;
      case HostHyp::both: locks_.lock_both(); break;
    }
  }
  ~HostHypGuard() {
    switch (which_) {
      case HostHyp::host: locks_.unlock_host(); break;
      case HostHyp::hyp: locks_.unlock_hyp(); break;
      case HostHyp::both: locks_.unlock_both(); break;
    }
    if constexpr (LockOrderHooks<P>) {
      if (has(HostHyp::hyp)) plat_.lock_order_release(static_cast<unsigned>(LockRank::hyp));
      if (has(HostHyp::host)) plat_.lock_order_release(static_cast<unsigned>(LockRank::host));
    }
  }
  HostHypGuard(const HostHypGuard&) = delete;
  HostHypGuard& operator=(const HostHypGuard&) = delete;

 private:
  [[nodiscard]] bool has(HostHyp h) const { return (static_cast<unsigned>(which_) & static_cast<unsigned>(h)) != 0; }
  P& plat_;
  HostHypLocks<L>& locks_;
  HostHyp which_;
};

/// RankedGuard's shared twin: holds the shared side of a guest lock for a scope, telling the
/// checker as RankedGuard does (lock_order_acquire_shared if the platform has it). A null lock
/// holds nothing.
template <typename P, typename L = PlatformGuestLock<P>>
class SharedRankedGuard {
 public:
  SharedRankedGuard(P& plat, L* lock, unsigned rank) : plat_(plat), lock_(lock), rank_(rank) {
    if (lock_ == nullptr) return;
    if constexpr (SharedLockOrderHooks<P>)
      plat_.lock_order_acquire_shared(rank_);
    else if constexpr (LockOrderHooks<P>)
      plat_.lock_order_acquire(rank_);
    lock_->lock_shared();
  }
  ~SharedRankedGuard() {
    if (lock_ == nullptr) return;
    lock_->unlock_shared();
    if constexpr (LockOrderHooks<P>) plat_.lock_order_release(rank_);
  }
  SharedRankedGuard(const SharedRankedGuard&) = delete;
  SharedRankedGuard& operator=(const SharedRankedGuard&) = delete;

 private:
  P& plat_;
  L* lock_;
  unsigned rank_;
};

}  // namespace ptguard::ownership
