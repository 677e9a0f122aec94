// Ownership-layer benchmarks (the ownership issue's set), with the engine benchmarks' platform,
// timing and counters. The machine: 4 GiB of host memory at 4 GiB (so the host's faults give
// 1 GiB blocks), no carve-out, the hypervisor mapping physical memory at PA + 2^46. The GiB
// the benchmarks work on starts at 4 GiB. Everything that builds the starting state (the host's
// blocks faulted in, pages donated) is untimed.
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "ptguard/ownership/mem_protect.hpp"

namespace ptguard::bench {
namespace {

using ownership::PageState;

// The comparator for what the ownership layer's locks cost (docs/concurrency.md): the same
// platform with a lock that does nothing. Only the *_nolock rows use it; a MemProtect built on
// it is not safe on more than one CPU.
struct NoLock {
  void lock() {}
  void unlock() {}
};
struct BenchPlatformNoLock : BenchPlatform {
  using BenchPlatform::BenchPlatform;
  using Lock = NoLock;
};

constexpr u64 kMem = kPaBase;      // the GiB the benchmarks use
constexpr u64 kMemSize = 4 * kGiB;  // all host memory
constexpr ownership::ComponentId kGuest = 2;

/// A fresh machine: platform, page array and MemProtect, finalised.
template <class Plat>
struct MachineOf {
  using MP = ownership::MemProtect<arch::Granule::k4K, Plat, 4>;
  std::unique_ptr<Plat> plat = std::make_unique<Plat>(kArenaPa, 3 * kArenaPages);
  std::vector<ownership::Region> memory{{kMem, kMemSize}};
  std::vector<ownership::PageMeta> meta;
  std::unique_ptr<MP> mp = std::make_unique<MP>();

  MachineOf() {
    const ownership::MachineDesc m{memory, {}, ownership::Region{0, 0}, u64{1} << 46};
    meta.resize(ownership::memory_pages(m, kPage));
    if (!mp->init(*plat, m, meta, arch::CpuFeatures::modern())) std::abort();
    mp->finalize();
  }
  /// The host touches the GiB: one fault maps it as a 1 GiB block.
  bool fault_in_gib() { return mp->host_handle_fault(kMem).has_value() && mp->host_table().lookup(kMem)->level == 1; }
};

using Machine = MachineOf<BenchPlatform>;
using MP = Machine::MP;

template <class M = Machine, typename Setup, typename Op, typename Check>
void run(benchmark::State& state, Unit unit, double units, Setup&& setup, Op&& op, Check&& check) {
  Timing tm;
  u64 table_bytes = 0;
  for (auto _ : state) {
    M m;  // untimed: built before the timed region
    if (!setup(m)) {
      state.SkipWithError("setup failed");
      break;
    }
    const Status st = timed(state, tm, m.plat.get(), [&] { return op(m); });
    if (!st) {
      state.SkipWithError(ptguard::name(st.error()));
      break;
    }
    if (tm.iters == 1) {
      if (const std::string e = check(m); !e.empty()) {
        state.SkipWithError(e.c_str());
        break;
      }
    }
    table_bytes = u64{m.plat->pages_in_use() - m.mp->host_memcache().size() - m.mp->hyp_memcache().size()} * kPage;
  }
  report(state, tm, unit, units, static_cast<double>(table_bytes));
}

template <class M>
std::string expect_states(const M& m, PageState host, PageState hyp) {
  for (u64 pa : {kMem, kMem + kGiB / 2 + 5 * kPage, kMem + kGiB - kPage}) {
    if (m.mp->host_state(pa) != host || m.mp->hyp_state(pa) != hyp)
      return std::string("wrong state after the transition: host ") + ownership::name(m.mp->host_state(pa)) +
             ", hypervisor " + ownership::name(m.mp->hyp_state(pa));
  }
  return {};
}

template <class M = Machine>
void share_hyp_1g_page_calls(benchmark::State& state) {
  run<M>(
      state, Unit::page, kPagesPerGiB, [](M& m) { return m.fault_in_gib(); },
      [](M& m) -> Status {
        for (u64 i = 0; i < kPagesPerGiB; ++i)
          if (Status st = m.mp->host_share_hyp(kMem + i * kPage, 1); !st) return st;
        return {};
      },
      [](const M& m) { return expect_states(m, PageState::shared_owned, PageState::shared_borrowed); });
}

void share_hyp_1g_range(benchmark::State& state) {
  run(
      state, Unit::page, kPagesPerGiB, [](Machine& m) { return m.fault_in_gib(); },
      [](Machine& m) { return m.mp->host_share_hyp(kMem, kPagesPerGiB); },
      [](const Machine& m) { return expect_states(m, PageState::shared_owned, PageState::shared_borrowed); });
}

void unshare_hyp_1g_range(benchmark::State& state) {
  run(
      state, Unit::page, kPagesPerGiB,
      [](Machine& m) { return m.fault_in_gib() && m.mp->host_share_hyp(kMem, kPagesPerGiB).has_value(); },
      [](Machine& m) { return m.mp->host_unshare_hyp(kMem, kPagesPerGiB); },
      [](const Machine& m) { return expect_states(m, PageState::owned, PageState::none); });
}

void donate_guest_1g(benchmark::State& state) {
  run(
      state, Unit::page, kPagesPerGiB,
      [](Machine& m) {
        if (!m.fault_in_gib() || !m.mp->create_guest(kGuest, kVmid)) return false;
        auto* g = m.mp->guest(kGuest);
        return g->mc.topup(*m.plat, g->table.max_pages_needed(kIaBase, kGiB)).has_value();
      },
      [](Machine& m) { return m.mp->host_donate_guest(kMem, kPagesPerGiB, kGuest, kIaBase); },
      [](const Machine& m) -> std::string {
        if (m.mp->guest_state(kGuest, kIaBase + kGiB - kPage) != PageState::owned ||
            m.mp->host_annotation_owner(kMem + 7 * kPage) != kGuest)
          return "the GiB is not the guest's";
        return {};
      });
}

// One hypervisor-owned page in every 64 KiB of the GiB (every contiguous run of the host's
// stage 2), then a host fault on every other page: each 2 MiB holds an annotation, so no fault
// maps a block, and each run holds one, so no fault maps a whole run (host_handle_fault maps an
// empty aligned run at once, Arm ARM D8.6.1): every fault maps one page, the path a fault takes
// next to pages that changed hands. (Before the contiguous runs: one page in every 2 MiB.)
constexpr u64 kRun = arch::contiguous_size(arch::Granule::k4K, arch::kLastLevel);  // 64 KiB
constexpr u64 kFaults = kPagesPerGiB - kGiB / kRun;  // 245,760
// Gives the hypervisor the first page of every run of the GiB (the fault rows' set-up).
template <class M>
bool donate_run_heads(M& m) {
  for (u64 b = 0; b < kGiB; b += kRun)
    if (!m.mp->host_donate_hyp(kMem + b, 1)) return false;
  return true;
}

template <class M = Machine>
void host_fault_1g(benchmark::State& state) {
  run<M>(
      state, Unit::call, kFaults,
      [](M& m) { return donate_run_heads(m); },
      [](M& m) -> Status {
        for (u64 b = 0; b < kGiB; b += kRun)
          for (u64 p = kPage; p < kRun; p += kPage)
            if (Status st = m.mp->host_handle_fault(kMem + b + p); !st) return st;
        return {};
      },
      [](const M& m) -> std::string {
        if (m.mp->host_table().lookup(kMem + 3 * kPage)->level != arch::kLastLevel) return "faults did not map pages";
        if (m.mp->host_state(kMem) != PageState::none) return "the hypervisor's page was mapped";
        if (m.mp->host_state(kMem + kPage) != PageState::owned) return "a faulted page is not the host's";
        return {};
      });
}

// Runs body(t) for t in [0, N) on N threads, thread t pinned to CPU t, started together; the
// time is from the start signal to the last thread's end. Starting and joining the threads
// (tens of microseconds each) stay outside it, and no thread spins while it waits: the main
// thread, pinned to CPU 1 (main.cpp), shares that CPU with thread 1 until it sets the signal
// and blocks in join(), and a spinning thread 1 would keep it off the CPU for the rest of a
// scheduler time slice (milliseconds, in a timed region of a few milliseconds).
template <int N, typename Body>
SelfTimed on_cpus(Body&& body) {
  using Clock = std::chrono::steady_clock;
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  Clock::time_point start, end[N];
  Status result[N];
  const auto thread = [&](int t) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(t, &set);
    (void)pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    ready.fetch_add(1);
    while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
    result[t] = body(t);
    end[t] = Clock::now();
  };
  std::vector<std::thread> ts;
  for (int t = 0; t < N; ++t) ts.emplace_back(thread, t);
  while (ready.load() != N) std::this_thread::yield();
  start = Clock::now();
  go.store(true, std::memory_order_release);
  for (auto& th : ts) th.join();
  SelfTimed r;
  for (int t = 0; t < N; ++t) {
    if (!result[t] && r.status) r.status = result[t];
    r.seconds = std::max(r.seconds, std::chrono::duration<double>(end[t] - start).count());
  }
  return r;
}

// host_fault_1g's faults from two threads at once, each on a CPU of its own, into the host's
// stage 2 under its one lock (MemProtect's): thread 0 faults the even 2 MiB ranges, thread 1
// the odd ones. Every range already has its last-level table (the untimed donation), so no
// fault allocates and BenchPlatform's pool, which is single-threaded, is not touched. ns per
// call is the wall time over the calls of both (on_cpus: from the start signal to the last
// thread's end): against host_fault_1g, above 1x is what contending for the lock (and its
// cache line) costs, 0.5x would be perfect scaling.
void host_fault_contended_2t(benchmark::State& state) {
  if (sysconf(_SC_NPROCESSORS_ONLN) < 2) {
    state.SkipWithError("needs 2 CPUs");
    return;
  }
  run(
      state, Unit::call, kFaults,
      [](Machine& m) { return donate_run_heads(m); },
      [](Machine& m) {
        return on_cpus<2>([&](int t) -> Status {
          for (u64 b = static_cast<u64>(t) * 2 * kMiB; b < kGiB; b += 4 * kMiB)
            for (u64 p = kPage; p < 2 * kMiB; p += (p + kPage) % kRun == 0 ? 2 * kPage : kPage)
              if (Status st = m.mp->host_handle_fault(kMem + b + p); !st) return st;
          return {};
        });
      },
      [](const Machine& m) -> std::string {
        for (u64 pa : {kMem + 3 * kPage, kMem + 2 * kMiB + 3 * kPage, kMem + kGiB - kPage})
          if (m.mp->host_state(pa) != PageState::owned || m.mp->host_table().lookup(pa)->level != arch::kLastLevel)
            return "a faulted page is not mapped as the host's";
        return {};
      });
}

// ---- concurrent guest stage-2 faults (the shared side of the guest lock) ---------------------

// For rows whose timed region runs on several threads: the maintenance a call issues (a
// barrier, a TLBI) is counted per thread. BenchPlatform's one set of counters would be a data
// race there, and its cache line, moving between the CPUs on every barrier, would be measured
// instead of the faults (on hardware a DSB or a TLBI is an instruction of the CPU that issues
// it). The guest lock is the default one (the EL2 one: a reader slot per CPU), with each thread
// as a CPU: cpu_id() is the thread's number, as MPIDR_EL1's affinity is the CPU's at EL2.
struct BenchPlatformMt : BenchPlatform {
  using BenchPlatform::BenchPlatform;
  static inline thread_local MaintenanceCounts t_counts;
  static u64 cpu_id() {
    static std::atomic<u64> next{0};
    static thread_local const u64 id = next.fetch_add(1, std::memory_order_relaxed);
    return id;
  }
  void tlbi(arch::Tlbi op, u16 vmid, u64 addr, int level) { count_tlbi(t_counts, op, vmid, addr, level); }
  void tlbi_range(arch::Tlbi op, u16 vmid, const arch::TlbiRange& r) { count_tlbi_range(t_counts, op, vmid, r); }
  void barrier(arch::Barrier b) { count_barrier(t_counts, b); }
  void cache_op(arch::CacheOp op, u64 pa, u64 size) { count_cache_op(t_counts, op, pa, size); }
};
using MachineMt = MachineOf<BenchPlatformMt>;

// A guest's access-flag faults (a stage 2 without VTCR_EL2.HA: the first access to a page the
// host aged faults, and the guest's fault handler sets AF, guest_mkyoung) from kThreads
// threads at once, each on a CPU of its own, on disjoint pages: thread t takes the 2 MiB
// ranges t, t + kThreads, ... of a GiB the host shares with the guest page by page (every page
// its own last-level entry, so no two threads change one entry; each 2 MiB is one last-level
// table). Untimed: the share and the aging (guest_test_clear_young over the GiB). Timed: the
// faults, each under the shared side of the guest lock, setting AF by compare-and-swap.
// ns per page is the wall time over the pages of all threads (so 2 threads scaling perfectly
// show half of 1 thread's), items_per_second the pages per second; main.cpp prints 2t/1t's
// pages per second against issue 15's target (at least 1.6x). The time is on_cpus's: from the
// start signal to the last thread's end.
template <int kThreads>
void guest_fault_parallel(benchmark::State& state) {
  if (sysconf(_SC_NPROCESSORS_ONLN) < kThreads) {
    state.SkipWithError("needs a CPU per thread");
    return;
  }
  constexpr u64 kSpan = 2 * kMiB;
  run<MachineMt>(
      state, Unit::page, kPagesPerGiB,
      [](MachineMt& m) {
        if (!m.fault_in_gib() || !m.mp->create_guest(kGuest, kVmid)) return false;
        auto* g = m.mp->guest(kGuest);
        // 2 MiB less one page at a time: never a whole block, so the guest maps pages.
        for (u64 b = 0; b < kGiB; b += kSpan) {
          if (!g->mc.topup(*m.plat, g->table.max_pages_needed(kIaBase + b, kSpan))) return false;
          if (!m.mp->host_share_guest(kMem + b, 1, kGuest, kIaBase + b, pgtable::kPermRW)) return false;
          if (!g->mc.topup(*m.plat, g->table.max_pages_needed(kIaBase + b, kSpan))) return false;
          if (!m.mp->host_share_guest(kMem + b + kPage, kSpan / kPage - 1, kGuest, kIaBase + b + kPage,
                                      pgtable::kPermRW))
            return false;
        }
        if (g->table.lookup(kIaBase + kGiB - kPage)->level != arch::kLastLevel) return false;
        const Result<bool> aged = m.mp->guest_test_clear_young(kGuest, kIaBase, kPagesPerGiB, true);
        return aged.has_value() && *aged;
      },
      [](MachineMt& m) {
        return on_cpus<kThreads>([&](int t) -> Status {
          for (u64 b = static_cast<u64>(t) * kSpan; b < kGiB; b += kThreads * kSpan)
            for (u64 p = 0; p < kSpan; p += kPage)
              if (Status st = m.mp->guest_mkyoung(kGuest, kIaBase + b + p); !st) return st;
          return {};
        });
      },
      [](const MachineMt& m) -> std::string {
        for (u64 ipa = kIaBase; ipa < kIaBase + kGiB; ipa += kPage) {
          const Result<pgtable::Leaf> l = m.mp->guest(kGuest)->table.lookup(ipa);
          if (!l || l->level != arch::kLastLevel || !arch::S2Af::get(l->entry)) return "a faulted page is not young";
        }
        return {};
      });
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kPagesPerGiB));
}

// A torn-down guest holding the GiB (donated whole: one level-1 block at the guest, one level-1
// annotation at the host), given back.
bool dead_guest_with_gib(Machine& m) {
  if (!m.mp->create_guest(kGuest, kVmid)) return false;
  auto* g = m.mp->guest(kGuest);
  if (!g->mc.topup(*m.plat, g->table.max_pages_needed(kIaBase, kGiB))) return false;
  if (!m.mp->host_donate_guest(kMem, kPagesPerGiB, kGuest, kIaBase)) return false;
  if (m.mp->guest(kGuest)->table.lookup(kIaBase)->level != 1) return false;
  return m.mp->teardown_guest(kGuest).has_value();
}

std::string expect_reclaimed(const Machine& m) {
  for (u64 pa : {kMem, kMem + kGiB / 2 + 5 * kPage, kMem + kGiB - kPage})
    if (m.mp->host_state(pa) != PageState::owned || m.mp->host_annotation_owner(pa) != ownership::kHostId)
      return "a page is not the host's after the reclaim";
  return {};
}

// One call per page (reclaim_guest_page), as a host that reschedules between pages does: every
// page scrubbed, both level-1 entries split on the first call, every 2 MiB split on its first
// page and freed after its last. The final release (reclaim_guest) is not timed.
void reclaim_guest_1g_page_calls(benchmark::State& state) {
  run(
      state, Unit::page, kPagesPerGiB, dead_guest_with_gib,
      [](Machine& m) -> Status {
        for (u64 i = 0; i < kPagesPerGiB; ++i)
          if (Status st = m.mp->reclaim_guest_page(kGuest, kIaBase + i * kPage); !st) return st;
        return {};
      },
      [](const Machine& m) -> std::string {
        const auto* g = m.mp->guest(kGuest);
        if (g == nullptr || g->alive) return "the guest should stay, torn down, until reclaim_guest";
        if (g->table.lookup(kIaBase + kGiB / 2)->entry != 0) return "the guest still maps a page";
        return expect_reclaimed(m);
      });
}

// The whole guest in one call (reclaim_guest): the same pages, plus the release.
void reclaim_guest_1g(benchmark::State& state) {
  run(
      state, Unit::page, kPagesPerGiB, dead_guest_with_gib, [](Machine& m) { return m.mp->reclaim_guest(kGuest); },
      [](const Machine& m) -> std::string {
        if (m.mp->guest(kGuest) != nullptr) return "the guest is not released";
        return expect_reclaimed(m);
      });
}

// ---- host_fragmentation ------------------------------------------------------------------------
// The host faults in all 4 GiB (four 1 GiB blocks), shares 10,000 distinct random pages of it
// with the hypervisor one call each (each splits its 2 MiB, and its GiB the first time), then
// unshares them one call each in another random order. Timed: the 20,000 calls. Reported: ns
// per transition (ns_per_call) and per unshare, and the host's stage-2 after the last unshare:
// valid leaves per level and table pages, and the table pages beyond what the fresh boot's
// faults made (target: none). host_fragmentation_no_rebuild does the same with the rebuild
// switched off (set_host_block_rebuild(false)), as before it existed: the cost of the rebuild
// is host_fragmentation's ns_per_call over that row's, measured in the same run (target: within
// 1.5x; main.cpp prints it under the table).
constexpr u64 kFragPages = 10'000;

struct HostShape {
  u64 tables = 0;
  u64 leaves[4] = {};
};
HostShape host_shape(const MP& mp) {
  struct V {
    static constexpr unsigned visits() { return pgtable::kVisitLeaf | pgtable::kVisitTablePre | pgtable::kVisitLeafRun; }
    HostShape* s;
    Status table_pre(pgtable::VisitCtx&) {
      ++s->tables;
      return {};
    }
    Status leaf(pgtable::VisitCtx& x) {
      if (arch::DescValid::get(x.old)) ++s->leaves[x.level];
      return {};
    }
    Status leaf_run(u64* t, u64 idx, u64 n, u64, u64) {
      for (u64 i = 0; i < n; ++i) s->leaves[arch::kLastLevel] += arch::DescValid::get(t[idx + i]) ? 1 : 0;
      return {};
    }
  };
  HostShape s;
  s.tables = mp.host_table().root_pages();
  V v{&s};
  if (!mp.host_table().walk(0, u64{1} << mp.host_table().ia_bits(), v)) std::abort();
  return s;
}

void host_fragmentation_run(benchmark::State& state, bool rebuild) {
  // The same pages and orders in every repetition and in both rows.
  std::vector<u64> share(kFragPages), unshare;
  {
    std::mt19937_64 rng(16);
    std::vector<u64> all(kMemSize / kPage);
    for (u64 i = 0; i < all.size(); ++i) all[i] = i;
    for (u64 i = 0; i < kFragPages; ++i) {
      std::uniform_int_distribution<u64> d(i, all.size() - 1);
      std::swap(all[i], all[d(rng)]);
      share[i] = kMem + all[i] * kPage;
    }
    unshare = share;
    std::shuffle(unshare.begin(), unshare.end(), rng);
  }
  Timing tm;
  double unshare_s = 0;
  HostShape boot, after;
  u64 table_bytes = 0;
  for (auto _ : state) {
    Machine m;  // untimed
    m.mp->set_host_block_rebuild(rebuild);
    for (u64 g = 0; g < kMemSize; g += kGiB)
      if (!m.mp->host_handle_fault(kMem + g)) {
        state.SkipWithError("fault");
        return;
      }
    boot = host_shape(*m.mp);
    std::chrono::steady_clock::time_point mid;
    const Status st = timed(state, tm, m.plat.get(), [&]() -> Status {
      for (u64 pa : share)
        if (Status s = m.mp->host_share_hyp(pa, 1); !s) return s;
      mid = std::chrono::steady_clock::now();
      for (u64 pa : unshare)
        if (Status s = m.mp->host_unshare_hyp(pa, 1); !s) return s;
      return {};
    });
    unshare_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - mid).count();
    if (!st) {
      state.SkipWithError(ptguard::name(st.error()));
      return;
    }
    after = host_shape(*m.mp);
    if (m.mp->host_state(unshare.front()) != PageState::owned || m.mp->hyp_state(unshare.front()) != PageState::none) {
      state.SkipWithError("a page is not the host's after the unshares");
      return;
    }
    table_bytes = u64{m.plat->pages_in_use() - m.mp->host_memcache().size() - m.mp->hyp_memcache().size()} * kPage;
  }
  report(state, tm, Unit::call, 2.0 * kFragPages, static_cast<double>(table_bytes));
  if (tm.iters == 0) return;
  state.counters["ns_per_unshare"] = unshare_s * 1e9 / (static_cast<double>(tm.iters) * kFragPages);
  state.counters["leaves_l1"] = static_cast<double>(after.leaves[1]);
  state.counters["leaves_l2"] = static_cast<double>(after.leaves[2]);
  state.counters["leaves_l3"] = static_cast<double>(after.leaves[3]);
  state.counters["host_table_pages"] = static_cast<double>(after.tables);
  state.counters["extra_table_pages"] = static_cast<double>(after.tables) - static_cast<double>(boot.tables);
}
void host_fragmentation(benchmark::State& state) { host_fragmentation_run(state, true); }
void host_fragmentation_no_rebuild(benchmark::State& state) { host_fragmentation_run(state, false); }

}  // namespace

void register_ownership_benchmarks() {
  for (auto [name, fn] : {std::pair{"share_hyp_1g_page_calls", &share_hyp_1g_page_calls<>},
                          std::pair{"share_hyp_1g_page_calls_nolock", &share_hyp_1g_page_calls<MachineOf<BenchPlatformNoLock>>},
                          std::pair{"share_hyp_1g_range", &share_hyp_1g_range},
                          std::pair{"unshare_hyp_1g_range", &unshare_hyp_1g_range},
                          std::pair{"donate_guest_1g", &donate_guest_1g},
                          std::pair{"host_fault_1g", &host_fault_1g<>},
                          std::pair{"host_fault_1g_nolock", &host_fault_1g<MachineOf<BenchPlatformNoLock>>},
                          std::pair{"host_fault_contended_2t", &host_fault_contended_2t},
                          std::pair{"guest_fault_parallel_1t", &guest_fault_parallel<1>},
                          std::pair{"guest_fault_parallel_2t", &guest_fault_parallel<2>},
                          std::pair{"reclaim_guest_1g_page_calls", &reclaim_guest_1g_page_calls},
                          std::pair{"reclaim_guest_1g", &reclaim_guest_1g},
                          std::pair{"host_fragmentation", &host_fragmentation},
                          std::pair{"host_fragmentation_no_rebuild", &host_fragmentation_no_rebuild}}) {
    benchmark::RegisterBenchmark(name, fn)->UseManualTime()->Unit(benchmark::kMillisecond);
  }
}

}  // namespace ptguard::bench
