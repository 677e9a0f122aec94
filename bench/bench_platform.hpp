// BenchPlatform: the ptguard::Platform the benchmarks run the engine on.
//
// It is what a hypervisor's platform costs at most, minus the hardware's own instructions:
//   memory      a preallocated, pre-faulted host arena (HostArena); phys_to_virt is base + offset,
//               inline; table pages come from a free list (a stack of page indices), and a freed
//               page is zeroed on the way back, as pKVM's hyp_pool does (so unmap pays for the
//               zeroing, and pages handed out are always zero).
//   refcounts   an array with one u32 per arena page.
//   writes      write_desc is a plain inline 64-bit store.
//   TLB, barriers, caches
//               an out-of-line call (defined in bench_platform.cpp, [[gnu::noinline]]) that only
//               increments a counter: what a TLBI or DSB instruction costs is the hardware's,
//               and not ours to measure on x86-64; that the engine issues them, and how often,
//               is (the `tlbi` column).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "ptguard/arch/error.hpp"
#include "ptguard/arch/maintenance.hpp"
#include "ptguard/pgtable/platform.hpp"

namespace ptguard::bench {

/// Host memory for the benchmarks: mmap'ed, 2 MiB-aligned, asked for transparent huge pages and
/// touched once up front, so that no benchmark takes a page fault in its timed region. The
/// limit baseline and the table arena both use it, so both see the same kind of memory. The
/// mapping of an arena that goes away is kept and handed, zeroed, to the next arena of the same
/// size (every repetition builds its platform anew; see bench_platform.cpp).
class HostArena {
 public:
  explicit HostArena(std::size_t bytes);
  ~HostArena();
  HostArena(const HostArena&) = delete;
  HostArena& operator=(const HostArena&) = delete;
  [[nodiscard]] std::byte* data() const { return data_; }
  [[nodiscard]] std::size_t size() const { return bytes_; }

 private:
  std::byte* data_ = nullptr;
  std::size_t bytes_ = 0;
  void* raw_ = nullptr;  // the mapping, before alignment
  std::size_t mapped_ = 0;
};

/// Counts of the maintenance the engine asked for.
struct MaintenanceCounts {
  u64 tlbi = 0;
  u64 barrier = 0;
  u64 cache_op = 0;
};

// Out of line on purpose (bench_platform.cpp): each is one call that increments a counter.
[[gnu::noinline]] void count_tlbi(MaintenanceCounts& c, arch::Tlbi op, u16 vmid, u64 addr, int level);
[[gnu::noinline]] void count_tlbi_range(MaintenanceCounts& c, arch::Tlbi op, u16 vmid, const arch::TlbiRange& r);
[[gnu::noinline]] void count_barrier(MaintenanceCounts& c, arch::Barrier b);
[[gnu::noinline]] void count_cache_op(MaintenanceCounts& c, arch::CacheOp op, u64 pa, u64 size);

class BenchPlatform {
 public:
  static constexpr u64 kPageSize = 4096;
  static constexpr unsigned kPageShift = 12;

  /// An arena of `pages` table pages at physical address `arena_pa` (page-aligned).
  BenchPlatform(u64 arena_pa, u32 pages);
  BenchPlatform(const BenchPlatform&) = delete;
  BenchPlatform& operator=(const BenchPlatform&) = delete;

  // --- the Platform interface -----------------------------------------------------------------
  [[nodiscard]] u64 page_size() const { return kPageSize; }

  [[nodiscard]] Result<u64> alloc_pages(unsigned order) {
    if (order == 0 && nfree_ != 0) {
      const u32 idx = free_[--nfree_];
      refcount_[idx] = 1;
      ++in_use_;
      return pa_of(idx);
    }
    return alloc_pages_slow(order);
  }

  void free_pages(u64 pa, unsigned order) {
    const u32 first = index_of(pa);
    for (u32 i = 0; i < (1u << order); ++i) {
      // Zero on free (pKVM's hyp_pool does the same), so every page handed out is zero.
      __builtin_memset(page_ptr(first + i), 0, kPageSize);
      refcount_[first + i] = 0;
      free_[nfree_++] = first + i;
    }
    in_use_ -= 1u << order;
  }

  [[nodiscard]] u64* phys_to_virt(u64 pa) const {
    return reinterpret_cast<u64*>(base_ + (pa - arena_pa_));
  }
  [[nodiscard]] u64 virt_to_phys(const u64* ptr) const {
    return arena_pa_ + static_cast<u64>(reinterpret_cast<const std::byte*>(ptr) - base_);
  }

  void get_page(u64 pa) { ++refcount_[index_of(pa)]; }
  [[nodiscard]] u32 put_page(u64 pa) {
    const u32 idx = index_of(pa);
    const u32 count = --refcount_[idx];
    if (count == 0) free_pages(pa & ~(kPageSize - 1), 0);
    return count;
  }
  [[nodiscard]] u32 page_count(u64 pa) const { return refcount_[index_of(pa)]; }

  void write_desc(u64* ptep, u64 value) { *ptep = value; }

  void tlbi(arch::Tlbi op, u16 vmid, u64 addr, int level) { count_tlbi(counts_, op, vmid, addr, level); }
  void tlbi_range(arch::Tlbi op, u16 vmid, const arch::TlbiRange& r) { count_tlbi_range(counts_, op, vmid, r); }
  void barrier(arch::Barrier b) { count_barrier(counts_, b); }
  void cache_op(arch::CacheOp op, u64 pa, u64 size) { count_cache_op(counts_, op, pa, size); }

  /// A table page through its arena address; any other page (the memory a reclaim scrubs,
  /// which the arena does not hold) through one scratch page, as an EL2 fixmap maps every page
  /// at one slot: a scrub then costs its stores into a cache-hot page, not the DRAM traffic
  /// (which is the hardware's, like a TLBI's).
  [[nodiscard]] void* fixmap_map(u64 pa) {
    if (in_page_pool(pa)) return phys_to_virt(pa & ~(kPageSize - 1));
    return scratch_.data();
  }
  void fixmap_unmap() {}
  [[nodiscard]] bool in_page_pool(u64 pa) const { return pa - arena_pa_ < (u64{npages_} << kPageShift); }

  // --- the benchmarks' side -------------------------------------------------------------------
  /// Pages allocated and not freed (table pages in use, plus whatever a memcache holds).
  [[nodiscard]] u32 pages_in_use() const { return in_use_; }
  [[nodiscard]] const MaintenanceCounts& counts() const { return counts_; }
  [[nodiscard]] u64 arena_pa() const { return arena_pa_; }

 private:
  [[nodiscard]] u32 index_of(u64 pa) const { return static_cast<u32>((pa - arena_pa_) >> kPageShift); }
  [[nodiscard]] u64 pa_of(u32 idx) const { return arena_pa_ + (u64{idx} << kPageShift); }
  [[nodiscard]] std::byte* page_ptr(u32 idx) const { return base_ + (std::size_t{idx} << kPageShift); }
  // Order > 0 (a concatenated stage-2 root) or an empty free list: an aligned run of free
  // pages, found by a scan. Rare; never on a benchmark's timed path.
  [[nodiscard]] Result<u64> alloc_pages_slow(unsigned order);
  HostArena scratch_{kPageSize};

  HostArena arena_;
  std::byte* base_;
  u64 arena_pa_;
  u32 npages_;
  std::unique_ptr<u32[]> refcount_;
  std::unique_ptr<u32[]> free_;  // stack of free page indices
  u32 nfree_ = 0;
  u32 in_use_ = 0;
  MaintenanceCounts counts_;
};

static_assert(Platform<BenchPlatform>);

}  // namespace ptguard::bench
