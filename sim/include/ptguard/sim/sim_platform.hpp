// SimPlatform: the ptguard::Platform of the simulated machine.
//
// Built on a PhysMem (which it does not own), a PageAllocator over a table pool in that
// memory, and an EventLog. Every platform call does what the hardware would (a descriptor write
// is a 64-bit store into simulated memory) and is recorded, in order, in the log. Misuse
// (writing into a free table page, a pointer outside simulated memory, nested fixmap use, a
// double free, ...) never crashes: it is recorded as a Violation in allocator().violations(),
// which violations() returns; a test ends with EXPECT_THAT(p.violations(), IsEmpty()).
//
//   PhysMem mem;
//   mem.add_region(0x4000'0000, 1ull << 30);          // 1 GiB of RAM
//   SimPlatform p(mem, 0x4000'0000, 16ull << 20, 4096); // 16 MiB of it for table pages
//   auto root = p.alloc_pages(0);
//   p.write_desc(p.phys_to_virt(*root) + 1, 0x4020'0000 | 0x3);
//   std::cout << p.log().format();                     // alloc ..., write ...
//
// Threads: every platform call may come from any thread at once (the ownership layer's
// transitions run under different locks and share the allocator, the refcounts, the log).
// One mutex covers the allocator, the log, the fixmap slot and the host-range cache; the
// accessors that return references to them (allocator(), log(), violations()) are for a
// caller that knows no other thread runs. The ownership layer's locks are std::mutexes (Lock),
// and the lock-order checker (lock_order_acquire) records per thread
// which ranks it holds: taking a lock whose rank is not above every rank held is a
// lock_order violation (reported like any other, and counted: lock_order_violations()).
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "ptguard/arch/error.hpp"
#include "ptguard/arch/maintenance.hpp"
#include "ptguard/pgtable/platform.hpp"
#include "ptguard/sim/event_log.hpp"
#include "ptguard/sim/page_allocator.hpp"
#include "ptguard/sim/phys_mem.hpp"

namespace ptguard::sim {

class SimPlatform {
 public:
  /// What virt_to_phys returns for a pointer outside simulated memory.
  static constexpr u64 kBadPa = ~u64{0};
  /// The ownership layer's lock type. Not the EL2 ticket lock: tests run up to 8 threads on
  /// a few cores (and under ThreadSanitizer), where a ticket lock hands the lock to one
  /// particular waiter that may not be running, and every handoff waits for the scheduler
  /// (measured: the 8-thread stress tests took 4 to 27 s under TSan on a loaded 2-core
  /// machine). A mutex lets the running thread take it; the ticket lock has tests of its own.
  struct Lock {
    std::mutex m;
    void lock() { m.lock(); }
    void unlock() { m.unlock(); }
  };
  /// A guest slot's lock: a POSIX reader-writer lock (for the reason above; pgtable::RwLock,
  /// the EL2 one, has tests of its own). The guest's fault operations take its shared side.
  /// Writers are preferred, as with pgtable::RwLock: the default (std::shared_mutex, glibc's
  /// reader preference) lets threads faulting back to back keep a transition out for as long
  /// as they overlap.
  class GuestLock {
   public:
    GuestLock() {
      pthread_rwlockattr_t a;
      pthread_rwlockattr_init(&a);
#if defined(__GLIBC__)
      pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
      pthread_rwlock_init(&l_, &a);
      pthread_rwlockattr_destroy(&a);
    }
    ~GuestLock() { pthread_rwlock_destroy(&l_); }
    GuestLock(const GuestLock&) = delete;
    GuestLock& operator=(const GuestLock&) = delete;
    void lock() { pthread_rwlock_wrlock(&l_); }
    void unlock() { pthread_rwlock_unlock(&l_); }
    void lock_shared() { pthread_rwlock_rdlock(&l_); }
    void unlock_shared() { pthread_rwlock_unlock(&l_); }

   private:
    pthread_rwlock_t l_;
  };

  /// A platform whose table pages come from [pool_base, pool_base + pool_size) of `mem` (which
  /// must be backed and must outlive the platform), one page of `page_size` bytes per table.
  /// Throws std::invalid_argument if PageAllocator::check() refuses the pool; create() reports
  /// the same as an error instead.
  SimPlatform(PhysMem& mem, u64 pool_base, u64 pool_size, u64 page_size);
  [[nodiscard]] static Result<SimPlatform> create(PhysMem& mem, u64 pool_base, u64 pool_size,
                                                  u64 page_size);

  SimPlatform(SimPlatform&&) = default;
  SimPlatform& operator=(SimPlatform&&) = default;
  SimPlatform(const SimPlatform&) = delete;
  SimPlatform& operator=(const SimPlatform&) = delete;

  // --- the Platform interface -----------------------------------------------------------------
  [[nodiscard]] u64 page_size() const { return alloc_.page_size(); }
  /// Logs alloc (or alloc_fail). Errors as PageAllocator::alloc.
  [[nodiscard]] Result<u64> alloc_pages(unsigned order);
  /// Logs free when the block is freed; misuse is a violation and nothing is freed or logged.
  void free_pages(u64 pa, unsigned order);
  /// Host pointer of `pa`; nullptr (and a violation: unbacked or misaligned) if `pa` is not
  /// backed or not 8-byte aligned.
  [[nodiscard]] u64* phys_to_virt(u64 pa) {
    if (pa - pool_base_ < pool_bytes_ && pa % 8 == 0) {
      return reinterpret_cast<u64*>(pool_host_ + (pa - pool_base_));
    }
    const std::lock_guard guard(mu_.m);
    return phys_to_virt_slow(pa);
  }
  /// The physical address of a host pointer into simulated memory (any region); kBadPa (and a
  /// bad_pointer violation) for any other pointer.
  [[nodiscard]] u64 virt_to_phys(const u64* ptr) {
    const auto p = reinterpret_cast<std::uintptr_t>(ptr);
    if (p - pool_host_addr_ < pool_bytes_) return pool_base_ + (p - pool_host_addr_);
    const std::lock_guard guard(mu_.m);
    return virt_to_phys_slow(ptr);
  }
  /// Reference counts (PageAllocator::get/put/count; any address within the page). Logged as
  /// get_page/put_page events only with set_log_refcounts(true); a put that frees its block
  /// always logs the free.
  void get_page(u64 pa);
  [[nodiscard]] u32 put_page(u64 pa);
  [[nodiscard]] u32 page_count(u64 pa) const {
    const std::lock_guard guard(mu_.m);
    return alloc_.count(pa);
  }
  /// Stores `value` at `ptep` and logs (pa, old, new). A pointer outside simulated memory or
  /// not 8-byte aligned is refused (violation, nothing written); a write into a free pool page
  /// is carried out and reported (write_to_free_page).
  void write_desc(u64* ptep, u64 value);
  /// The optional compare-and-swap of a descriptor (pgtable/table.hpp, cas()): stores `value`
  /// at `ptep` only if it holds `expected`, as one atomic operation, and logs the write if it
  /// stored; true if it did. Misuse as write_desc (nothing stored, false).
  [[nodiscard]] bool cmpxchg_desc(u64* ptep, u64 expected, u64 value);
  /// Logs the invalidation; a level other than 0..3 or kTlbiLevelUnknown is a violation, and
  /// so is a range form (arch::is_range), which only tlbi_range() carries.
  void tlbi(arch::Tlbi op, u16 vmid, u64 addr, int level);
  /// Logs one range TLBI (Event::tlbi_range over the allocator's page size) as the hardware
  /// would carry it out: the range is encoded into Xt as El2Platform does
  /// (arch::tlbi_range_operand, with r.ds) and decoded with the DS of the regime it targets
  /// (arch::decode_tlbi_range: stage 2 for RIPAS2E1IS, stage 1 for RVAE2IS/RVALE2IS; see
  /// set_regime_ds), and the decoded range is logged, so a TlbiModel applying the log sees a
  /// wrongly scaled or misaligned range cover other addresses and reports what stays stale.
  /// Violations (bad_argument, logged all the same): an op that is not a range form, an address
  /// not aligned to the page size, SCALE above 3, NUM above 31, a level other than 1..3 or
  /// kTlbiLevelUnknown; with 4K/16K pages, r.ds differing from the regime's DS (when set), and
  /// with DS = 1 an address not aligned to 64 KiB (BaseADDR counts 64 KiB units).
  void tlbi_range(arch::Tlbi op, u16 vmid, const arch::TlbiRange& r);
  /// The DS bit (FEAT_LPA2: VTCR_EL2.DS for `stage` 2, every VMID; TCR_EL2.DS for `stage` 1)
  /// of the simulated machine's regimes, with which tlbi_range() decodes range operands. Until
  /// it is set for a stage, a range TLBI is decoded with the DS it was built for (r.ds): a test
  /// that checks the scaling of range TLBIs sets it from its table's configuration
  /// (cfg.oa.ds(), or arch::TcrDs of the VTCR/TCR value).
  void set_regime_ds(int stage, bool ds) {
    const std::lock_guard guard(mu_.m);
    (stage == 1 ? ds_s1_ : ds_s2_) = ds ? 1 : 0;
  }
  void barrier(arch::Barrier b) {
    const std::lock_guard guard(mu_.m);
    log_.record(Event::barrier(b));
  }
  /// Logs the operation; an unbacked range is a violation (logged all the same).
  void cache_op(arch::CacheOp op, u64 pa, u64 size);
  /// The host pointer of `pa` through the single fixmap slot (the page containing `pa` must be
  /// backed). The slot is held by one thread from fixmap_map to its fixmap_unmap, as
  /// El2Platform's is by one CPU: another thread's fixmap_map waits for it (the ownership layer
  /// scrubs under the host and a guest lock, not a lock every scrub shares). Refused with
  /// nullptr when the calling thread holds the slot already (fixmap_busy: nested use) or for an
  /// unbacked page (unbacked).
  [[nodiscard]] void* fixmap_map(u64 pa);
  /// Frees the slot; a fixmap_not_mapped violation if the calling thread does not hold it.
  void fixmap_unmap();
  /// Whether alloc_pages may ever hand out the page at `pa` (it lies in the allocator's pool).
  [[nodiscard]] bool in_page_pool(u64 pa) const {
    return pa - alloc_.pool_base() < alloc_.pool_size();
  }

  // --- the lock-order checker (ownership/locking.hpp) -----------------------------------------
  /// Called before a lock of rank `rank` is taken: a lock_order violation (and the count up)
  /// if this thread holds a lock of the same or a higher rank. Recorded as held either way.
  void lock_order_acquire(unsigned rank);
  /// The same for the shared side of a guest lock (the same order rule; also recorded in
  /// lock_ranks_taken_shared()).
  void lock_order_acquire_shared(unsigned rank);
  /// Called after a lock of rank `rank` is released (either side).
  void lock_order_release(unsigned rank);
  /// The number of out-of-order acquisitions seen so far, on any thread.
  [[nodiscard]] u64 lock_order_violations() const { return lock_order_violations_.load(); }
  /// This thread's held ranks (bit r: rank r; ranks above 63 count as 63).
  [[nodiscard]] static u64 lock_ranks_held();
  /// The ranks this thread has taken since the last reset_lock_ranks_taken() (bit r: rank r):
  /// which locks a call took.
  [[nodiscard]] static u64 lock_ranks_taken();
  /// The ranks of those this thread took on their shared side (a subset of lock_ranks_taken()).
  [[nodiscard]] static u64 lock_ranks_taken_shared();
  /// Forgets both.
  static void reset_lock_ranks_taken();

  // --- the simulator's side -------------------------------------------------------------------
  [[nodiscard]] PhysMem& mem() { return *mem_; }
  [[nodiscard]] const PhysMem& mem() const { return *mem_; }
  [[nodiscard]] PageAllocator& allocator() { return alloc_; }
  [[nodiscard]] const PageAllocator& allocator() const { return alloc_; }
  [[nodiscard]] EventLog& log() { return log_; }
  [[nodiscard]] const EventLog& log() const { return log_; }
  /// Every misuse so far, the allocator's and the platform's, in order.
  [[nodiscard]] const std::vector<Violation>& violations() const { return alloc_.violations(); }
  /// The physical address mapped in the fixmap slot, if any.
  [[nodiscard]] std::optional<u64> fixmap_pa() const {
    const std::lock_guard guard(mu_.m);
    return fixmap_pa_;
  }
  void set_log_refcounts(bool on) { log_refcounts_ = on; }

 private:
  struct HostRange {
    std::uintptr_t host;
    u64 base;
    u64 size;
  };
  // A mutex that a moved platform does not take along (a platform is moved only before use:
  // create()).
  struct Mutex {
    mutable std::mutex m;
    Mutex() = default;
    Mutex(Mutex&&) noexcept {}
    Mutex& operator=(Mutex&&) noexcept { return *this; }
  };
  struct Counter {
    std::atomic<u64> n{0};
    Counter() = default;
    Counter(Counter&& o) noexcept : n(o.n.load()) {}
    Counter& operator=(Counter&& o) noexcept {
      n = o.n.load();
      return *this;
    }
    [[nodiscard]] u64 load() const { return n.load(); }
  };

  // With mu_ held:
  u64* phys_to_virt_slow(u64 pa);
  u64 virt_to_phys_slow(const u64* ptr);
  void refresh_host_ranges();

  Mutex mu_;
  Counter lock_order_violations_;

  PhysMem* mem_;
  PageAllocator alloc_;
  EventLog log_;
  u64 pool_base_;
  u64 pool_bytes_;
  std::byte* pool_host_;
  std::uintptr_t pool_host_addr_;
  std::vector<HostRange> host_ranges_;  // every region of mem_, refreshed when a lookup misses
  std::optional<u64> fixmap_pa_;
  Mutex fixmap_slot_;                          // held from fixmap_map to fixmap_unmap
  // The thread holding fixmap_slot_, if any (not moved: a platform is moved only before use).
  struct Holder {
    std::atomic<std::thread::id> id{};
    Holder() = default;
    Holder(Holder&&) noexcept {}
    Holder& operator=(Holder&&) noexcept { return *this; }
    [[nodiscard]] std::thread::id load() const { return id.load(); }
    void store(std::thread::id v) { id.store(v); }
  };
  Holder fixmap_holder_;
  bool log_refcounts_ = false;
  // The regimes' DS (set_regime_ds): -1 not set, else 0 or 1.
  int ds_s1_ = -1;
  int ds_s2_ = -1;
};

static_assert(Platform<SimPlatform>);

}  // namespace ptguard::sim
