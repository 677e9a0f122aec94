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
//   Lock                  the lock type (lock()/unlock()); pgtable::TicketLock if it names none.
//   lock_order_acquire(r) called with the rank before a lock is taken, and
//   lock_order_release(r) after it is released: a checker's hooks (the simulator records,
//                         per thread, the ranks held and reports an acquisition out of order).
//                         Without them, nothing is called (at EL2 they are empty).
#pragma once

#include "ptguard/arch/bits.hpp"
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

/// Whether the platform has the lock-order checker's hooks.
template <typename P>
concept LockOrderHooks = requires(P& p, unsigned rank) {
  p.lock_order_acquire(rank);
  p.lock_order_release(rank);
};

/// Holds one ownership lock for a scope, telling the platform's checker (if it has one) before
/// taking it (so an inversion is reported even where it would deadlock) and after dropping it.
/// A null lock holds nothing (a transition whose guest does not exist takes no guest lock).
template <typename P>
class RankedGuard {
 public:
  RankedGuard(P& plat, PlatformLock<P>* lock, unsigned rank) : plat_(plat), lock_(lock), rank_(rank) {
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
  PlatformLock<P>* lock_;
  unsigned rank_;
};

}  // namespace ptguard::ownership
