// The physical-limit baseline every table benchmark is measured against, in the same run:
// what it costs just to store the descriptors of a page-mapped GiB (262,144 sequential 64-bit
// stores into preallocated memory) and to zero the 512 last-level table pages that hold them.
// A table operation cannot beat this; its ratio to it says how close it comes.
#include <benchmark/benchmark.h>

#include <cstring>
#include <memory>

#include "ptguard/arch/descriptor.hpp"
#include "ptguard/arch/memattr.hpp"

namespace {

using namespace ptguard;
using namespace ptguard::arch;

constexpr u64 kPages = 262'144;  // 1 GiB of 4 KiB pages
constexpr u64 kTablePages = 512;

struct Memory {
  std::unique_ptr<u64[]> words{new u64[kPages]};
};

// ns_per_page: elapsed time per iteration over pages per iteration, in nanoseconds (an
// inverted rate of items x 1e-9 per second).
void set_counters(benchmark::State& state, double items) {
  state.counters["ns_per_page"] = benchmark::Counter(
      items * 1e-9, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

// 262,144 sequential 64-bit stores plus zeroing 512 pages of 4 KiB.
void limit_1g_pages(benchmark::State& state) {
  Memory m;
  for (auto _ : state) {
    std::memset(m.words.get(), 0, kTablePages * 4096);
    u64* p = m.words.get();
    for (u64 i = 0; i < kPages; ++i) p[i] = ((u64{1} << 32) + (i << 12)) | 0x7ff;
    benchmark::ClobberMemory();
  }
  set_counters(state, static_cast<double>(kPages));
}
BENCHMARK(limit_1g_pages)->Unit(benchmark::kMillisecond);

// The same stores, each descriptor built through arch/'s typed fields: the typed layer must
// cost nothing over raw constants.
void arch_build_1g_page_descriptors(benchmark::State& state) {
  Memory m;
  for (auto _ : state) {
    std::memset(m.words.get(), 0, kTablePages * 4096);
    u64* p = m.words.get();
    for (u64 i = 0; i < kPages; ++i) {
      p[i] = S2Leaf::page<Granule::k4K>((u64{1} << 32) + (i << 12))
                 .with_memattr(s2_memattr(MemType::normal_wb, true))
                 .with_read(true)
                 .with_write(true)
                 .with_sh(Shareability::inner)
                 .with_af(true)
                 .raw();
    }
    benchmark::ClobberMemory();
  }
  set_counters(state, static_cast<double>(kPages));
}
BENCHMARK(arch_build_1g_page_descriptors)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
