// Stage-1 EL2 benchmarks: the hypervisor's own table, 4K granule, 48-bit VAs (level-0 root),
// VA base 1 GiB, PA base 4 GiB + 4 KiB: the output address is 4 KiB off the input's block
// alignment, so no block can be used and 256 MiB takes 65,536 pages (128 last-level tables).
#include <string>

#include "harness.hpp"
#include "ptguard/arch/descriptor.hpp"
#include "ptguard/pgtable/memcache.hpp"
#include "ptguard/pgtable/table.hpp"

namespace ptguard::bench {
namespace {

using pgtable::Memcache;
using S1 = pgtable::Stage1Table<arch::Granule::k4K, BenchPlatform>;

constexpr u64 kSize = 256 * kMiB;
constexpr u64 kPages = kSize / kPage;  // 65,536
constexpr u64 kPa = kPaBase + kPage;
// 128 last-level tables, one level-2, one level-1, the root.
constexpr u32 kTablePages = kSize / (2 * kMiB) + 3;

S1 new_table(BenchPlatform& p) {
  static const arch::Stage1Config cfg = *arch::make_stage1_config(kGranule, kIaBits, arch::CpuFeatures::modern());
  return *S1::create_stage1(p, cfg);
}

struct Census {
  static constexpr unsigned visits() { return pgtable::kVisitLeaf | pgtable::kVisitTablePre; }
  u64 tables = 0;
  u64 pages = 0;
  Status leaf(pgtable::VisitCtx& x) {
    pages += arch::DescValid::get(x.old) && x.level == arch::kLastLevel ? 1 : 0;
    return {};
  }
  Status table_pre(pgtable::VisitCtx&) {
    ++tables;
    return {};
  }
};

std::string check(const S1& t, const BenchPlatform& p, const Memcache& mc) {
  Census c;
  (void)t.walk(0, u64{1} << kIaBits, c);
  const u32 pages = p.pages_in_use() - mc.size();
  if (c.pages != kPages || pages != kTablePages || c.tables + 1 != kTablePages)
    return "expected 65,536 pages in 131 table pages, got " + std::to_string(c.pages) + " in " +
           std::to_string(pages);
  return {};
}

template <typename Op>
void hyp_map(benchmark::State& state, Op&& op) {
  BenchPlatform plat(kArenaPa, kArenaPages);
  Memcache mc;
  S1 t = new_table(plat);
  Timing tm;
  for (auto _ : state) {
    if (!mc.topup(plat, t.max_pages_needed(kIaBase, kSize))) {
      state.SkipWithError("topup");
      break;
    }
    const Status st = timed(state, tm, &plat, [&] { return op(t, mc); });
    if (!st) {
      state.SkipWithError(ptguard::name(st.error()));
      break;
    }
    if (tm.iters == 1) {
      if (const std::string e = check(t, plat, mc); !e.empty()) {
        state.SkipWithError(e.c_str());
        break;
      }
    }
    t.destroy();
    t = new_table(plat);
  }
  report(state, tm, Unit::page, kPages, kTablePages * kPage);
}

void hyp_map_256m_pages(benchmark::State& state) {
  hyp_map(state, [](S1& t, Memcache& mc) { return t.map(kIaBase, kSize, kPa, kRW, mc); });
}

void hyp_map_256m_page_calls(benchmark::State& state) {
  hyp_map(state, [](S1& t, Memcache& mc) -> Status {
    for (u64 i = 0; i < kPages; ++i) {
      const Status s = t.map(kIaBase + i * kPage, kPage, kPa + i * kPage, kRW, mc);
      if (!s) return s;
    }
    return {};
  });
}

}  // namespace

void register_hyp_benchmarks() {
  benchmark::RegisterBenchmark("hyp_map_256m_pages", hyp_map_256m_pages)->UseManualTime()->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("hyp_map_256m_page_calls", hyp_map_256m_page_calls)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
}

}  // namespace ptguard::bench
