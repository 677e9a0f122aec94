// A counting allocator of table pages over one region of simulated physical memory, with
// per-page reference counts, misuse detection and fault injection.
//
// It hands out single pages and naturally aligned blocks of 2^order pages (order 0..4; order
// 4 is the largest concatenated stage-2 root, 16 tables) at physical addresses. One page is
// one table: page_size() is the granule size (4, 16 or 64 KiB).
//
// Contents: a block is zeroed when it is allocated. When it is freed it is filled with
// kFreePoison (unless poisoning is turned off), so that code still reading a freed table
// sees garbage whose output addresses lie far outside any simulated RAM rather than
// plausible empty entries; the platform also reports writes into free pool pages.
//
// Reference counts (the Platform concept's rule): alloc sets every page of the block to 1;
// get() adds one; put() drops one and, when the count of an order-0 page reaches 0, frees it.
// For a block of order > 0 the block is freed when the last of its pages reaches 0 (pages at 0
// in a block that still has live pages stay allocated). free() frees a block whatever the
// counts, but reports a block whose pages still hold references beyond their own (count > 1).
//
// Misuse never crashes: each one is refused (or, where noted, carried out anyway), returned
// as an error and recorded as a Violation that tests can assert on (violations() empty).
// set_abort_on_violation(true) prints the violation and aborts instead, for debugging.
//
// Speed: order-0 alloc and free are O(1) (an intrusive LIFO free list; the most recently
// freed page is handed out first, as Linux does); order n > 0 scans the pool for an aligned
// run of free pages, starting from the last such find.
#pragma once

#include <cstddef>
#include <limits>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "ptguard/arch/error.hpp"
#include "ptguard/sim/phys_mem.hpp"

namespace ptguard::sim {

/// What was misused. The first group comes from the allocator, the second from SimPlatform.
enum class ViolationKind : u8 {
  double_free,             ///< free of a pool page that was allocated once and is free now
  never_allocated,         ///< free of a pool page that has never been allocated
  not_block_head,          ///< free of an address inside a live block but not its first page
  wrong_order,             ///< free with an order different from the allocation's
  outside_pool,            ///< an address outside the allocator's pool
  misaligned,              ///< an address not aligned to a page (or, for a descriptor, 8 bytes)
  refcount_free_page,      ///< get/put on a page that is not allocated
  refcount_underflow,      ///< put on a page of a live block whose count is already 0
  refcount_overflow,       ///< get on a page whose count is at its maximum (it saturates)
  // SimPlatform:
  write_to_free_page,      ///< write_desc into a pool page that is not allocated (done anyway)
  bad_pointer,             ///< a host pointer that does not point into simulated memory
  unbacked,                ///< a physical address no region backs
  fixmap_busy,             ///< fixmap_map while the slot is already in use (refused)
  fixmap_not_mapped,       ///< fixmap_unmap with nothing mapped
  bad_argument,            ///< an out-of-range argument (TLBI level, order, ...)
  lock_order,              ///< a lock taken out of the global order (SimPlatform's checker)
};

[[nodiscard]] const char* name(ViolationKind k);

/// One detected misuse: what, where, and a precise message.
struct Violation {
  ViolationKind kind;
  u64 pa;         ///< the physical address concerned (0 if none)
  std::string what;

  friend bool operator==(const Violation&, const Violation&) = default;
};
/// "double_free at 0x40002000: free of order-0 block at 0x40002000, already free"
[[nodiscard]] std::string to_string(const Violation& v);
/// For GoogleTest's printer.
void PrintTo(const Violation& v, std::ostream* os);

/// Counters since construction (or the last reset_stats()).
struct AllocStats {
  u64 alloc_calls = 0;        ///< alloc() calls, failed ones included
  u64 failed_allocs = 0;      ///< alloc() calls that returned an error (injected ones included)
  u64 injected_failures = 0;  ///< of those, failures forced by fault injection
  u64 pages_allocated = 0;    ///< pages handed out (a block of order n counts 2^n)
  u64 pages_freed = 0;        ///< pages returned, by free() or by put() reaching 0
  u64 outstanding = 0;        ///< pages allocated now
  u64 peak_outstanding = 0;   ///< the most pages allocated at any one time
};

class PageAllocator {
 public:
  static constexpr unsigned kMaxOrder = 4;
  /// Written over every 8 bytes of a freed block (when poisoning is on). As a descriptor it is
  /// valid (bits 1:0 = 0b11) with an output address (bits 47:12) far beyond any simulated RAM.
  static constexpr u64 kFreePoison = 0xdead'beef'dead'beefull;
  static constexpr u32 kMaxRefcount = std::numeric_limits<u32>::max();

  /// Checks the arguments of the constructor. Errors: EINVAL if page_size is not 4, 16 or 64
  /// KiB, base or size is not a multiple of it, or size is zero; ERANGE if the pool is not
  /// entirely backed by `mem`; E2BIG if it has more than 2^32 - 1 pages.
  [[nodiscard]] static Status check(const PhysMem& mem, u64 base, u64 size, u64 page_size);
  /// An allocator of the pages of [base, base + size) in `mem`, which must outlive it.
  /// Throws std::invalid_argument (with check()'s reason) if check() fails.
  PageAllocator(PhysMem& mem, u64 base, u64 size, u64 page_size);

  [[nodiscard]] u64 page_size() const { return page_size_; }
  [[nodiscard]] u64 pool_base() const { return base_; }
  [[nodiscard]] u64 pool_size() const { return npages_ * page_size_; }
  [[nodiscard]] u64 pool_pages() const { return npages_; }
  [[nodiscard]] u64 free_page_count() const { return npages_ - stats_.outstanding; }
  [[nodiscard]] bool in_pool(u64 pa) const { return pa >= base_ && pa - base_ < pool_size(); }

  /// 2^order zeroed, contiguous pages aligned (in physical address) to their total size.
  /// Errors: EINVAL if order > kMaxOrder (also a bad_argument violation); ENOMEM if no such
  /// run is free or fault injection says this allocation fails.
  [[nodiscard]] Result<u64> alloc(unsigned order);
  /// Frees the block allocated at `pa` (its first page, exactly) with `order`. Errors (nothing freed, a violation
  /// recorded): EINVAL for misaligned, outside_pool, not_block_head, wrong_order; ENOENT for
  /// double_free and never_allocated. The block is freed whatever its pages' counts are: the
  /// counts are the engine's bookkeeping of a table's entries, and the engine frees a whole
  /// discarded subtree at once.
  Status free(u64 pa, unsigned order);

  /// Reference counts of allocated pages (any page of a block). `pa` may be any address in
  /// the page (an entry's address, say). Errors: EINVAL outside the pool; ENOENT if the page is
  /// free (refcount_free_page) or, for put, its count is already 0 (refcount_underflow);
  /// EBUSY if the count is saturated (get only; it stays at the maximum).
  Status get(u64 pa);
  /// The count after the put (0: the page, or its whole block, has been freed).
  Result<u32> put(u64 pa);
  /// The count of an allocated page; 0 for a free page or an address outside the pool (no
  /// violation: this is a query).
  [[nodiscard]] u32 count(u64 pa) const;
  /// Whether `pa` lies in a page that is allocated now.
  [[nodiscard]] bool allocated(u64 pa) const;
  /// The order of the live block starting at `pa`, if there is one.
  [[nodiscard]] std::optional<unsigned> block_order(u64 pa) const;
  struct Block {
    u64 pa;
    unsigned order;
    friend bool operator==(const Block&, const Block&) = default;
  };
  /// The live block containing `pa` (any address in any of its pages), if there is one.
  [[nodiscard]] std::optional<Block> block_containing(u64 pa) const;

  // --- fault injection: counts alloc() calls with a valid order, from the moment of the
  // call; a call that fails for lack of memory counts too. Both kinds may be armed at once.
  /// The k-th alloc() from now (k >= 1; 1 = the next) fails with ENOMEM, once. k = 0 cancels.
  void fail_nth(u64 k);
  /// The next k alloc() calls succeed as usual (if memory allows); every one after fails.
  void fail_after(u64 k);
  /// Cancels both kinds of injection.
  void clear_fault_injection();

  // --- diagnostics --------------------------------------------------------------------------
  [[nodiscard]] const AllocStats& stats() const { return stats_; }
  /// Zeroes the cumulative counters; outstanding stays, peak restarts from it.
  void reset_stats();
  [[nodiscard]] const std::vector<Violation>& violations() const { return violations_; }
  void clear_violations() { violations_.clear(); }
  /// Records a violation found by a user of the allocator (SimPlatform reports its own here,
  /// so that all misuse is in one ordered list).
  void report(ViolationKind kind, u64 pa, std::string what);
  void set_abort_on_violation(bool on) { abort_on_violation_ = on; }
  void set_poison_on_free(bool on) { poison_on_free_ = on; }
  [[nodiscard]] bool poison_on_free() const { return poison_on_free_; }

 private:
  static constexpr u32 kNil = std::numeric_limits<u32>::max();
  enum class State : u8 { never, free, head, tail };
  struct Page {
    u32 count = 0;
    u32 prev = kNil;  // free-list links (free pages only)
    u32 next = kNil;
    State state = State::never;  // never: free and never allocated
    u8 order = 0;                // head and tail: the block's order
    u32 head = 0;                // head and tail: index of the block's first page
  };

  [[nodiscard]] bool is_free(u32 i) const {
    return pages_[i].state == State::never || pages_[i].state == State::free;
  }
  void list_push(u32 i);
  void list_remove(u32 i);
  [[nodiscard]] bool injection_says_fail();
  [[nodiscard]] std::optional<u32> find_run(unsigned order);
  void take(u32 first, unsigned order);
  void release(u32 first, unsigned order);
  // Validates a page address for get/put/free; returns its index or an error (reported).
  [[nodiscard]] Result<u32> page_index(u64 pa, const char* op);

  PhysMem* mem_;
  u64 base_;
  u64 page_size_;
  u32 npages_;
  std::vector<Page> pages_;
  u32 free_head_ = kNil;  // LIFO list of free pages
  u32 scan_hint_ = 0;     // where the last run search succeeded
  AllocStats stats_;
  std::vector<Violation> violations_;
  u64 fail_nth_ = 0;       // 0: off; else alloc calls until the failing one (1 = next)
  std::optional<u64> fail_after_;  // successes left before all fail
  bool abort_on_violation_ = false;
  bool poison_on_free_ = true;
  std::vector<u64> poison_page_;  // one page of kFreePoison, made on first use
};

}  // namespace ptguard::sim
