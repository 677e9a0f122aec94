// The physical-limit baseline every table benchmark is measured against, in the same run:
// what it costs just to store the descriptors of a page-mapped GiB (262,144 sequential 64-bit
// stores into preallocated memory) and to zero the 512 last-level table pages that hold them.
// A table operation cannot beat this; its ratio to it says how close it comes.
#include <unistd.h>

#include <cstring>

#include "harness.hpp"
#include "ptguard/arch/descriptor.hpp"
#include "ptguard/arch/memattr.hpp"
#include "ptguard/pgtable/ticket_lock.hpp"

namespace ptguard::bench {
namespace {

using namespace ptguard::arch;

constexpr u64 kTablePages = 512;

// Times zeroing 512 pages of 4 KiB and then 262,144 sequential 64-bit stores of descriptor(i),
// in the same kind of host memory as the table arena (HostArena: pre-faulted, huge-page backed
// where the kernel allows).
template <typename F>
void store_1g_descriptors(benchmark::State& state, F descriptor) {
  HostArena m(kPagesPerGiB * sizeof(u64));
  u64* const words = reinterpret_cast<u64*>(m.data());
  benchmark::DoNotOptimize(words);
  Timing t;
  for (auto _ : state) {
    (void)timed(state, t, nullptr, [&]() -> Status {
      std::memset(words, 0, kTablePages * 4096);
      u64* p = words;
      for (u64 i = 0; i < kPagesPerGiB; ++i) p[i] = descriptor(i);
      return {};
    });
  }
  report(state, t, Unit::page, static_cast<double>(kPagesPerGiB), static_cast<double>(kTablePages * 4096));
}

// The limit: each descriptor a raw constant.
void limit_1g_pages(benchmark::State& state) {
  store_1g_descriptors(state, [](u64 i) { return ((u64{1} << 32) + (i << 12)) | 0x7ff; });
}

// The same stores, each descriptor built through arch/'s typed fields: the typed layer must
// cost nothing over raw constants. (Not one of the rows; kept as a check on arch/.)
void arch_build_1g_page_descriptors(benchmark::State& state) {
  store_1g_descriptors(state, [](u64 i) {
    return S2Leaf::page<Granule::k4K>((u64{1} << 32) + (i << 12))
        .with_memattr(s2_memattr(MemType::normal_wb, true))
        .with_read(true)
        .with_write(true)
        .with_sh(Shareability::inner)
        .with_af(true)
        .raw();
  });
}

// The limit of an operation that must zero each page it gives away (a reclaim of donated
// pages: the guest's data must not reach the host): per page, 4 KiB zeroed through one
// cache-hot page, as the benchmark platform's fixmap maps every page at one slot (the same
// __builtin_memset ownership/ uses), and its descriptor stored. Nothing that gives back a page
// can beat it; a scrubbing row's ratio is against this instead of limit_1g_pages, whose
// 8 bytes a page would make a 4 KiB scrub alone ~200x (bench/main.cpp, kRows).
void limit_1g_scrub_pages(benchmark::State& state) {
  HostArena m(kPagesPerGiB * sizeof(u64));
  HostArena scratch(4096);
  u64* const words = reinterpret_cast<u64*>(m.data());
  void* const page = scratch.data();
  benchmark::DoNotOptimize(words);
  Timing t;
  for (auto _ : state) {
    (void)timed(state, t, nullptr, [&]() -> Status {
      for (u64 i = 0; i < kPagesPerGiB; ++i) {
        benchmark::DoNotOptimize(page);
        __builtin_memset(page, 0, 4096);
        benchmark::ClobberMemory();
        words[i] = ((u64{1} << 32) + (i << 12)) | 0x7ff;
      }
      return {};
    });
  }
  report(state, t, Unit::page, static_cast<double>(kPagesPerGiB), 0);
}


// 262,144 uncontended acquisitions of `lock` (acquire(), release()), each around one store.
template <typename L, typename Acquire, typename Release>
void lock_floor(benchmark::State& state, L& lock, Acquire acquire, Release release) {
  u64 word = 0;
  Timing t;
  for (auto _ : state) {
    (void)timed(state, t, nullptr, [&]() -> Status {
      for (u64 i = 0; i < kPagesPerGiB; ++i) {
        acquire(lock);
        word = i;
        benchmark::DoNotOptimize(word);
        release(lock);
      }
      return {};
    });
  }
  report(state, t, Unit::call, static_cast<double>(kPagesPerGiB), 0);
}

// The floor of what a lock costs the ownership layer on one CPU: 262,144 uncontended
// lock()/unlock() pairs of the default lock (pgtable::TicketLock, the one MemProtect takes when
// the platform names none), each around one store as a transition's commit would be. On
// x86-64 the ticket's atomic add is a LOCK XADD, a full barrier; no lock that excludes another
// CPU can take less than one atomic read-modify-write (or a store and a full fence). Per call,
// against the *_nolock rows: what a transition's locks cost cannot be below this times the
// number of locks it takes (main.cpp, print_lock_cost).
void limit_lock_unlock(benchmark::State& state) {
  pgtable::TicketLock lock;
  lock_floor(state, lock, [](auto& l) { l.lock(); }, [](auto& l) { l.unlock(); });
}

// The same for a transition that takes the host's and the hypervisor's locks: 262,144
// lock_both()/unlock_both() pairs of pgtable::TicketLockPair (ownership/locking.hpp,
// HostHypLocks: what MemProtect takes for both when the platform's lock is the ticket lock),
// one atomic add for the two tickets, two acquire loads, two release stores. Against twice
// limit_lock_unlock: what fusing the two tickets saves.
void limit_lock_both_unlock(benchmark::State& state) {
  pgtable::TicketLockPair pair;
  lock_floor(state, pair, [](auto& l) { l.lock_both(); }, [](auto& l) { l.unlock_both(); });
}

// What this machine gives two CPUs that each do the synchronisation a shared-side guest fault
// cannot avoid, on memory no other CPU writes: per page, an atomic add to a counter on the
// thread's own cache line (the reader slot), a load of a word only writers write (the writers'
// ticket), a compare-and-swap of the page's descriptor (an array of 262,144, thread t taking the
// 2 MiB spans t, t + kThreads, ..., as guest_fault_parallel does) and an atomic subtract.
// Nothing is shared but the read-only word, so the 2-thread row's pages per second over the
// 1-thread row's is the scaling the CPUs themselves allow for this work (main.cpp prints it
// beside guest_fault_parallel's): below 2x when the two vCPUs are SMT siblings, or their
// atomics contend in the host.
template <int kThreads>
void limit_parallel_atomics(benchmark::State& state) {
  if (sysconf(_SC_NPROCESSORS_ONLN) < kThreads) {
    state.SkipWithError("needs a CPU per thread");
    return;
  }
  constexpr u64 kSpanPages = 512;
  HostArena m(kPagesPerGiB * sizeof(u64));
  u64* const descs = reinterpret_cast<u64*>(m.data());
  struct alignas(64) Slot {
    u32 readers = 0;
  };
  Slot slots[kThreads];
  alignas(64) u32 ticket = 0;
  Timing t;
  for (auto _ : state) {
    for (u64 i = 0; i < kPagesPerGiB; ++i) descs[i] = (i << 12) | 0x3;  // untimed: AF clear
    (void)timed(state, t, nullptr, [&] {
      return on_cpus<kThreads>([&](int th) -> Status {
        u32* const c = &slots[th].readers;
        for (u64 b = static_cast<u64>(th) * kSpanPages; b < kPagesPerGiB; b += kThreads * kSpanPages)
          for (u64 i = b; i < b + kSpanPages; ++i) {
            __atomic_fetch_add(c, 1u, __ATOMIC_SEQ_CST);
            if (__atomic_load_n(&ticket, __ATOMIC_SEQ_CST) != 0) return fail(Error::eagain);
            u64 old = __atomic_load_n(&descs[i], __ATOMIC_RELAXED);
            if (!__atomic_compare_exchange_n(&descs[i], &old, old | (u64{1} << 10), false, __ATOMIC_RELAXED,
                                             __ATOMIC_RELAXED))
              return fail(Error::eagain);
            __atomic_fetch_sub(c, 1u, __ATOMIC_RELEASE);
          }
        return {};
      });
    });
  }
  report(state, t, Unit::page, static_cast<double>(kPagesPerGiB), 0);
}
}  // namespace

void register_limit_benchmarks() {
  benchmark::RegisterBenchmark("limit_1g_pages", limit_1g_pages)->UseManualTime()->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("limit_1g_scrub_pages", limit_1g_scrub_pages)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("limit_lock_unlock", limit_lock_unlock)->UseManualTime()->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("limit_lock_both_unlock", limit_lock_both_unlock)->UseManualTime()->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("limit_parallel_atomics_1t", limit_parallel_atomics<1>)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("limit_parallel_atomics_2t", limit_parallel_atomics<2>)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("arch_build_1g_page_descriptors", arch_build_1g_page_descriptors)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
}

}  // namespace ptguard::bench
