// What every benchmark shares: the configuration the issue fixes, the rows of the final table,
// and the timing loop.
//
// Timing. Every benchmark uses manual timing (UseManualTime): each iteration rebuilds its
// starting state (an empty table and a filled memcache, or a page-mapped GiB, or write
// permission restored), untimed, then times only the operation with steady_clock and reports
// it with SetIterationTime. The timed bodies are 50 us to 30 ms, so the two clock reads (~25 ns
// each) are noise; state.PauseTiming/ResumeTiming would cost more than that and add its own
// jitter (it reads the CPU-time clock too). Operations that are only a few hundred nanoseconds
// long (one 1 GiB block, one block-level annotation) are timed as a batch of kBatch calls on
// kBatch separate tables, each call doing identical work from an identical starting state.
// A benchmark's ns per page (block, call) is its total timed nanoseconds over the pages
// (blocks, calls) it did, per repetition; the reported figure is the median repetition.
#pragma once

#include <benchmark/benchmark.h>

#include <chrono>
#include <type_traits>

#include "bench_platform.hpp"
#include "ptguard/arch/error.hpp"
#include "ptguard/arch/granule.hpp"
#include "ptguard/arch/memattr.hpp"
#include "ptguard/arch/regs.hpp"
#include "ptguard/pgtable/prot.hpp"

namespace ptguard::bench {

inline constexpr u64 kKiB = 1024;
inline constexpr u64 kMiB = 1024 * kKiB;
inline constexpr u64 kGiB = 1024 * kMiB;
inline constexpr u64 kPage = 4 * kKiB;

/// Input addresses start at 1 GiB, output addresses at 4 GiB: not an identity map.
inline constexpr u64 kIaBase = 1 * kGiB;
inline constexpr u64 kPaBase = 4 * kGiB;
inline constexpr u64 kPagesPerGiB = kGiB / kPage;  // 262,144
/// Table pages of a page-mapped GiB: 512 last-level, one level-2, one level-1, the level-0 root.
inline constexpr u32 kMinTablePagesGiB = 515;

/// Where the table arena sits in the physical address space (well clear of the mapped PAs).
inline constexpr u64 kArenaPa = 64 * kGiB;
inline constexpr u32 kArenaPages = 8192;  // 32 MiB
/// Calls per timed batch for operations of a few hundred nanoseconds.
inline constexpr u32 kBatch = 256;

inline constexpr u16 kVmid = 1;
inline constexpr arch::Granule kGranule = arch::Granule::k4K;
inline constexpr unsigned kIaBits = 48;

/// Normal write-back memory, read-write (no execute: no instruction-cache maintenance).
inline constexpr pgtable::Prot kRW{pgtable::kPermRW, arch::MemType::normal_wb, 0};

enum class Unit { page, block, call };
[[nodiscard]] constexpr const char* counter_name(Unit u) {
  switch (u) {
    case Unit::page: return "ns_per_page";
    case Unit::block: return "ns_per_block";
    case Unit::call: return "ns_per_call";
  }
  return "?";
}

/// Time accumulated over one repetition.
struct Timing {
  double seconds = 0;
  u64 iters = 0;
  u64 tlbi = 0;
};

/// What an operation that times itself returns (the rows whose work runs on several threads:
/// their time is from the start signal to the last thread's end, without starting and joining
/// the threads).
struct SelfTimed {
  Status status;
  double seconds = 0;
};

/// Runs `op` (returning Status, or SelfTimed) timed, reports the iteration's time to Google
/// Benchmark and adds it, and the TLB invalidations the platform counted during it, to `t`.
template <typename Op>
[[nodiscard]] inline Status timed(benchmark::State& state, Timing& t, const BenchPlatform* plat, Op&& op) {
  const u64 tlbi0 = plat != nullptr ? plat->counts().tlbi : 0;
  const auto t0 = std::chrono::steady_clock::now();
  auto r = op();
  benchmark::ClobberMemory();
  const auto t1 = std::chrono::steady_clock::now();
  double s = std::chrono::duration<double>(t1 - t0).count();
  if constexpr (std::is_same_v<decltype(r), SelfTimed>) s = r.seconds;
  const Status st = [&]() -> Status {
    if constexpr (std::is_same_v<decltype(r), SelfTimed>)
      return r.status;
    else
      return r;
  }();
  state.SetIterationTime(s);
  t.seconds += s;
  ++t.iters;
  if (plat != nullptr) t.tlbi += plat->counts().tlbi - tlbi0;
  return st;
}

/// The counters every row carries (ratio is added by the reporter, main.cpp, from the limit's
/// median in the same run).
inline void report(benchmark::State& state, const Timing& t, Unit unit, double units_per_iter,
                   double table_bytes) {
  if (t.iters == 0) return;
  state.counters[counter_name(unit)] = t.seconds * 1e9 / (static_cast<double>(t.iters) * units_per_iter);
  state.counters["tlbi"] = static_cast<double>(t.tlbi) / static_cast<double>(t.iters);
  state.counters["table_bytes"] = table_bytes;
}

void register_limit_benchmarks();
void register_stage2_benchmarks();
void register_hyp_benchmarks();
void register_ownership_benchmarks();

}  // namespace ptguard::bench
