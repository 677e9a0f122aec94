// The platform interface: the only way the freestanding layers reach the machine.
//
// The table engine and the ownership layer are templates over a Platform type, so a call
// inlines into the walk: at EL2 a descriptor write is a plain store and a TLBI is the
// instruction; in the simulator every call is recorded in an ordered event log. Nothing here
// allocates from a heap or throws.
//
// A Platform provides, for table pages of one granule (page_size() bytes):
//   memory      alloc_pages(order): 2^order zeroed, contiguous pages aligned to their total
//               size (order 0 for a table, up to 4 for a concatenated stage-2 root);
//               free_pages(pa, order); phys_to_virt / virt_to_phys.
//   refcounts   per table page: alloc_pages sets each new page's count to 1; get_page adds
//               one; put_page drops one, frees the page when the count reaches 0 and returns
//               the new count; page_count reads it. The engine counts 1 for the page itself
//               plus one per non-empty entry (Linux's rule), so a table whose count is back
//               to 1 holds nothing and can be unlinked and put.
//   writes      write_desc(ptep, value): every descriptor store goes through here, so the
//               simulator can log old and new values; at EL2 it is a single 64-bit store.
//   TLB         tlbi(op, vmid, addr, level): addr is an IPA for stage-2 ops (acting on VMID
//               `vmid`: the platform switches VTTBR_EL2 around it if needed) and a VA for EL2
//               ops; level is 0..3 or arch::kTlbiLevelUnknown. Never a range form.
//               tlbi_range(op, vmid, range): one range TLBI (arch::is_range(op): RIPAS2E1IS,
//               RVAE2IS, RVALE2IS; FEAT_TLBIRANGE), exactly as encodable: range.pages() pages
//               of page_size() from range.addr, level the TTL hint. The engine issues it only
//               for a table whose configuration says the CPU has the feature, and splits every
//               longer or odd range into such pieces itself (arch::tlbi_range_piece), so one
//               call is one instruction.
//   barriers    barrier(b).
//   caches      cache_op(op, pa, size): by physical address; the platform reaches the memory
//               through its linear map or its fixmap.
//   fixmap      fixmap_map(pa) gives a private writable mapping of one page, fixmap_unmap()
//               removes it (the hypervisor scrubs or cleans a page it must not keep mapped).
//               CPUs may call it at once (scrubs of different guests hold no common lock but
//               the host's; cache_op may need the slot under a guest's lock alone): a platform
//               with one slot serialises them, held from fixmap_map to fixmap_unmap; on the CPU
//               that holds it, a second fixmap_map returns nullptr.
//
// Optional, for the ownership layer's locks (ownership/locking.hpp; not part of the concept,
// each has a default):
//   Lock        the lock type of the host's and the hypervisor's lock: lock() and unlock(),
//               exclusive, acquire/release. Default: TicketLock; a TicketLock (BasicTicketLock)
//               makes the two one TicketLockPair, both taken with one atomic (locking.hpp).
//   lock_order_acquire(rank), lock_order_release(rank)
//               the lock-order checker's hooks, called before a lock is taken and after it is
//               released, with its rank (host 0, hypervisor 1, guest slot i 2 + i). Default:
//               nothing is called. The simulator's check the order per thread.
//   GuestLock   a guest slot's lock: a reader-writer lock (lock()/unlock() and
//               lock_shared()/unlock_shared()). Default: BasicPerCpuRwLock with a reader slot
//               per cpu_id() (pgtable/rw_lock.hpp, ownership/locking.hpp).
//   cpu_id()    static: the calling CPU (at EL2 its MPIDR_EL1 affinity), the same for a
//               caller from lock_shared() to unlock_shared(). Default: every CPU is slot 0.
//   lock_order_acquire_shared(rank)
//               the checker's hook for a shared acquisition. Default: lock_order_acquire.
// Optional, for the table engine:
//   cmpxchg_desc(ptep, old, value) -> bool
//               a descriptor compare-and-swap (shared walkers, and in-place changes that may
//               race with the hardware access-flag update; table.hpp cas()): stores `value`
//               only if the entry holds `old`, atomically. Default: __atomic_compare_exchange_n.
// With more than one CPU calling transitions, memory and refcount calls come from several
// CPUs at once (tables under different locks): the pool must be safe for that; a table page's
// count is only ever changed under the lock of the table it belongs to.
#pragma once

#include <concepts>

#include "ptguard/arch/error.hpp"
#include "ptguard/arch/maintenance.hpp"

namespace ptguard {

template <typename P>
concept Platform = requires(P& p, u64 pa, unsigned order, u64* ptep, const u64* cptep, u64 value,
                            arch::Tlbi op, u16 vmid, int level, arch::Barrier b,
                            arch::CacheOp c, u64 size, const arch::TlbiRange& range) {
  { p.page_size() } -> std::same_as<u64>;
  { p.alloc_pages(order) } -> std::same_as<Result<u64>>;
  { p.free_pages(pa, order) } -> std::same_as<void>;
  { p.phys_to_virt(pa) } -> std::same_as<u64*>;
  { p.virt_to_phys(cptep) } -> std::same_as<u64>;
  { p.get_page(pa) } -> std::same_as<void>;
  { p.put_page(pa) } -> std::same_as<u32>;  // the count after the put
  { p.page_count(pa) } -> std::same_as<u32>;
  { p.write_desc(ptep, value) } -> std::same_as<void>;
  { p.tlbi(op, vmid, pa, level) } -> std::same_as<void>;
  { p.tlbi_range(op, vmid, range) } -> std::same_as<void>;
  { p.barrier(b) } -> std::same_as<void>;
  { p.cache_op(c, pa, size) } -> std::same_as<void>;
  { p.fixmap_map(pa) } -> std::same_as<void*>;
  { p.fixmap_unmap() } -> std::same_as<void>;
};

}  // namespace ptguard
