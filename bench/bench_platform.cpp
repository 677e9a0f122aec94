#include "bench_platform.hpp"

#include <sys/mman.h>

#include <cstring>
#include <new>
#include <vector>

namespace ptguard::bench {

namespace {
constexpr std::size_t kHuge = std::size_t{2} << 20;

// Mappings given back by arenas that went away, kept for the next arena of the same size: every
// repetition of a row builds its platform anew, and a fresh mmap each time would page-fault and
// re-assemble huge pages between repetitions (noise the rows' cv showed). Reused, the memory
// stays resident and huge-page backed for the whole run. Never unmapped: the process ends.
struct FreeMapping {
  void* raw;
  std::size_t mapped;
  std::byte* data;
};
std::vector<FreeMapping>& free_mappings() {
  static std::vector<FreeMapping> v;
  return v;
}
}  // namespace

HostArena::HostArena(std::size_t bytes) : bytes_(bytes) {
  // Over-allocate by 2 MiB to align the start to a huge page.
  mapped_ = (bytes + kHuge - 1) / kHuge * kHuge + kHuge;
  auto& pool = free_mappings();
  for (auto it = pool.begin(); it != pool.end(); ++it) {
    if (it->mapped != mapped_) continue;
    raw_ = it->raw;
    data_ = it->data;
    pool.erase(it);
    std::memset(data_, 0, bytes_);  // resident already: this only zeroes
    return;
  }
  void* p = mmap(nullptr, mapped_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  auto addr = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t aligned = (addr + kHuge - 1) & ~(std::uintptr_t{kHuge} - 1);
  data_ = reinterpret_cast<std::byte*>(aligned);
  (void)madvise(data_, mapped_ - (aligned - addr), MADV_HUGEPAGE);
  std::memset(data_, 0, bytes_);  // fault everything in now
  // Keep the original mapping start for munmap.
  raw_ = p;
}

HostArena::~HostArena() { free_mappings().push_back(FreeMapping{raw_, mapped_, data_}); }

void count_tlbi(MaintenanceCounts& c, arch::Tlbi, u16, u64, int) { ++c.tlbi; }
void count_tlbi_range(MaintenanceCounts& c, arch::Tlbi, u16, const arch::TlbiRange&) { ++c.tlbi; }
void count_barrier(MaintenanceCounts& c, arch::Barrier) { ++c.barrier; }
void count_cache_op(MaintenanceCounts& c, arch::CacheOp, u64, u64) { ++c.cache_op; }

BenchPlatform::BenchPlatform(u64 arena_pa, u32 pages)
    : arena_(std::size_t{pages} << kPageShift),
      base_(arena_.data()),
      arena_pa_(arena_pa),
      npages_(pages),
      refcount_(new u32[pages]()),
      free_(new u32[pages]) {
  // Pop order: ascending addresses.
  for (u32 i = pages; i > 0; --i) free_[nfree_++] = i - 1;
}

Result<u64> BenchPlatform::alloc_pages_slow(unsigned order) {
  const u32 n = 1u << order;
  for (u32 first = 0; first + n <= npages_; first += n) {
    bool all_free = true;
    for (u32 i = 0; i < n && all_free; ++i) all_free = refcount_[first + i] == 0;
    if (!all_free) continue;
    // Take the run's pages out of the free list.
    u32 kept = 0;
    for (u32 i = 0; i < nfree_; ++i)
      if (free_[i] < first || free_[i] >= first + n) free_[kept++] = free_[i];
    nfree_ = kept;
    for (u32 i = 0; i < n; ++i) refcount_[first + i] = 1;
    in_use_ += n;
    return pa_of(first);
  }
  return fail(Error::enomem);
}

}  // namespace ptguard::bench
