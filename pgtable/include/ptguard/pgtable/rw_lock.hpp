// A reader-writer spinlock: the per-guest lock whose shared side a guest's own stage-2 faults
// take (many at once, each changing one entry by compare-and-swap), and whose exclusive side
// every ownership transition takes (docs/concurrency.md, "Shared walkers for guest faults").
// Freestanding; no heap, no libc.
//
// One 32-bit word: bit 31 says a writer holds or is taking the lock, bits 30:0 count the
// readers inside (and, for a moment, readers that are backing off). Writers queue on a
// BasicTicketLock of their own first, so they enter in the order they asked.
//
//   lock_shared():   add one reader (acquire). If the writer bit was clear, the reader is in;
//                    else take the reader back out and wait until the bit clears, then retry.
//   unlock_shared(): remove one reader (release).
//   lock():          take the writers' ticket, set the writer bit (no new reader gets in from
//                    then on), wait (acquire) until no reader is left inside.
//   unlock():        clear the writer bit (release), hand the ticket on.
//
// Writers are preferred: once one sets its bit, readers wait, so a stream of guest faults
// cannot starve an ownership transition. Readers can wait behind a stream of writers; the
// transitions are the rare operations.
//
// Ordering (Arm ARM B2.3; C++ [atomics.order], [intro.races] release sequences): every
// change of the word is an atomic read-modify-write, so all of them lie in one modification
// order. A reader's add either comes before the writer's set of bit 31, and the writer's
// acquire load waits for that reader's release subtraction (everything the reader read
// happens before the writer's first write), or it comes after, sees the bit, and backs off.
// A reader's acquire add reads from the release sequence the writer's release clear heads
// (the other readers' adds and subtractions are read-modify-writes, which extend it), so the
// reader sees every descriptor the writer wrote. This is what makes the deferred-free scheme
// of the shared walkers sound: a table page freed under the exclusive side was unlinked after
// every reader that could hold a pointer into it had left.
#pragma once

#include "ptguard/arch/bits.hpp"
#include "ptguard/pgtable/ticket_lock.hpp"

namespace ptguard::pgtable {

template <class Relax = CpuRelax>
class BasicRwLock {
 public:
  constexpr BasicRwLock() = default;
  BasicRwLock(const BasicRwLock&) = delete;
  BasicRwLock& operator=(const BasicRwLock&) = delete;

  /// Waits until no writer holds or waits for the lock, then holds it shared with other readers.
  void lock_shared() {
    while (true) {
      if ((__atomic_fetch_add(&state_, kReader, __ATOMIC_ACQUIRE) & kWriter) == 0) return;
      // A writer holds the lock or waits for the readers inside: back off, so it is not kept
      // waiting for us, until it has gone.
      __atomic_fetch_sub(&state_, kReader, __ATOMIC_RELAXED);
      while ((__atomic_load_n(&state_, __ATOMIC_RELAXED) & kWriter) != 0) Relax{}();
    }
  }

  /// Takes the shared side only if no writer holds or waits for the lock; true if taken.
  [[nodiscard]] bool try_lock_shared() {
    if ((__atomic_fetch_add(&state_, kReader, __ATOMIC_ACQUIRE) & kWriter) == 0) return true;
    __atomic_fetch_sub(&state_, kReader, __ATOMIC_RELAXED);
    return false;
  }

  /// Leaves the shared side. Only a reader inside may call it.
  void unlock_shared() { __atomic_fetch_sub(&state_, kReader, __ATOMIC_RELEASE); }

  /// Waits for the writers before this caller, keeps new readers out, waits for the readers
  /// inside to leave, then holds the lock alone.
  void lock() {
    writers_.lock();
    // Relaxed: nothing is read under the lock before the acquire load below succeeds.
    __atomic_fetch_or(&state_, kWriter, __ATOMIC_RELAXED);
    while (__atomic_load_n(&state_, __ATOMIC_ACQUIRE) != kWriter) Relax{}();
  }

  /// Lets readers and the next writer in. Only the holder may call it.
  void unlock() {
    __atomic_fetch_and(&state_, ~kWriter, __ATOMIC_RELEASE);
    writers_.unlock();
  }

  /// Whether a writer holds or waits for the lock (a snapshot: diagnostics only).
  [[nodiscard]] bool is_locked() const { return (__atomic_load_n(&state_, __ATOMIC_RELAXED) & kWriter) != 0; }
  /// The readers inside (a snapshot: diagnostics only).
  [[nodiscard]] u32 readers() const { return __atomic_load_n(&state_, __ATOMIC_RELAXED) & ~kWriter; }

 private:
  static constexpr u32 kWriter = 1u << 31;
  static constexpr u32 kReader = 1;

  u32 state_ = 0;
  BasicTicketLock<Relax> writers_;
};

/// The reader-writer lock for code where every waiter is a CPU of its own (EL2).
using RwLock = BasicRwLock<>;

/// The default reader slot: every caller on slot 0.
struct SlotZero {
  [[nodiscard]] unsigned operator()() const { return 0; }
};

// A reader-writer spinlock whose readers do not share a cache line: BasicRwLock's one word is
// written twice by every reader (lock and unlock), so with readers on several CPUs that line
// moves between them on every guest fault, and on a 2-CPU machine two threads faulting on
// disjoint pages ran at a third of one thread's rate (guest_fault_parallel_2t). Here each
// reader counts itself in the slot of its CPU (kSlots counters, each on a 64-byte line of its
// own, chosen by `Slot`: a CPU index, e.g. from MPIDR_EL1; two CPUs may share a slot, which
// costs speed, not correctness). Writers queue on a ticket pair (next_, owner_) that only
// writers write, so it stays in every reader's cache between writers: a writer holds or waits
// for the lock exactly when next_ != owner_. A writer takes a ticket (its one atomic
// read-modify-write: every transition pays it, so the writer side is kept to one, where a
// ticket lock plus a separate writer flag took two), waits for its turn, then waits until
// every slot is empty (kSlots loads).
//
// Slot must return the same value to a caller in unlock_shared() as in its lock_shared() (a
// CPU index at EL2, where a hypercall does not migrate; a thread's own index when hosted).
//
// Ordering (Arm ARM B2.3; C++ [atomics.order]): the reader's increment of its slot then load
// of next_, and the writer's increment of next_ then load of each slot, are the
// store-buffering pattern: all four are sequentially consistent (LDADDAL, LDAR, LDADDAL, LDAR
// on AArch64), so in their single total order either the reader's load of next_ comes before
// the writer's ticket (the reader then finds next_ == owner_ unless an earlier writer is still
// in, and the writer's later load of the slot sees the reader and waits for it), or after it
// (the reader sees the new next_ and backs off until that writer has unlocked). The reader
// loads owner_ after next_ and enters only if they are equal: owner_ never passes next_, so
// every ticket below the next_ it read was released by then. The reader's acquire load of
// owner_ reads from the release store that unlocked the last writer, so the reader sees every
// descriptor that writer wrote; the reader's release decrement is read by the writer's load
// of the slot, so the writer sees everything the reader did. Writers are preferred as with
// BasicRwLock: a ticket taken keeps every new reader out.
template <class Relax = CpuRelax, class Slot = SlotZero, unsigned kSlots = 8>
class BasicPerCpuRwLock {
 public:
  static_assert(kSlots > 0);
  constexpr BasicPerCpuRwLock() = default;
  BasicPerCpuRwLock(const BasicPerCpuRwLock&) = delete;
  BasicPerCpuRwLock& operator=(const BasicPerCpuRwLock&) = delete;

  /// Waits until no writer holds or waits for the lock, then holds it shared.
  void lock_shared() {
    u32* const c = &slots_[Slot{}() % kSlots].readers;
    while (!enter(c)) {
      while (writer_in()) Relax{}();
    }
  }
  /// Takes the shared side only if no writer holds or waits for the lock; true if taken.
  [[nodiscard]] bool try_lock_shared() { return enter(&slots_[Slot{}() % kSlots].readers); }
  /// Leaves the shared side (the same caller, so the same slot, as the lock_shared()).
  void unlock_shared() { __atomic_fetch_sub(&slots_[Slot{}() % kSlots].readers, 1u, __ATOMIC_RELEASE); }

  /// Waits for the writers before this caller, keeps new readers out, waits for every reader
  /// inside to leave, then holds the lock alone.
  void lock() {
    const u32 ticket = __atomic_fetch_add(&next_, 1u, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&owner_, __ATOMIC_ACQUIRE) != ticket) Relax{}();
    for (Counter& s : slots_)
      while (__atomic_load_n(&s.readers, __ATOMIC_SEQ_CST) != 0) Relax{}();
  }
  /// Lets readers and the next writer in. Only the holder may call it.
  void unlock() {
    // owner_ is written by the holder only, so a plain read of it is exact.
    const u32 mine = __atomic_load_n(&owner_, __ATOMIC_RELAXED);
    __atomic_store_n(&owner_, mine + 1u, __ATOMIC_RELEASE);
  }

  /// Whether a writer holds or waits for the lock (a snapshot: diagnostics only).
  [[nodiscard]] bool is_locked() const { return writer_in(); }
  /// The readers inside (a snapshot: diagnostics only).
  [[nodiscard]] u32 readers() const {
    u32 n = 0;
    for (const Counter& s : slots_) n += __atomic_load_n(&s.readers, __ATOMIC_RELAXED);
    return n;
  }

 private:
  // Counts the caller in on slot `c`; if a writer holds or waits for the lock, counts it back
  // out (so that writer is not kept waiting for it) and returns false.
  [[nodiscard]] bool enter(u32* c) {
    __atomic_fetch_add(c, 1u, __ATOMIC_SEQ_CST);
    const u32 next = __atomic_load_n(&next_, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&owner_, __ATOMIC_ACQUIRE) == next) return true;
    __atomic_fetch_sub(c, 1u, __ATOMIC_RELEASE);
    return false;
  }
  [[nodiscard]] bool writer_in() const {
    return __atomic_load_n(&next_, __ATOMIC_RELAXED) != __atomic_load_n(&owner_, __ATOMIC_RELAXED);
  }

  struct alignas(64) Counter {
    u32 readers = 0;
  };
  Counter slots_[kSlots];
  alignas(64) u32 next_ = 0;  // the next writer's ticket
  u32 owner_ = 0;             // the ticket that holds, or is next to hold, the lock
};

/// Holds the shared side of a lock for the lifetime of a scope.
template <class L>
class SharedLockGuard {
 public:
  explicit SharedLockGuard(L& l) : l_(l) { l_.lock_shared(); }
  ~SharedLockGuard() { l_.unlock_shared(); }
  SharedLockGuard(const SharedLockGuard&) = delete;
  SharedLockGuard& operator=(const SharedLockGuard&) = delete;

 private:
  L& l_;
};

}  // namespace ptguard::pgtable
