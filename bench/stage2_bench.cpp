// Stage-2 benchmarks: 4K granule, 48-bit IPA (level-0 root, one page), a CPU with FEAT_S2FWB
// (arch::CpuFeatures::modern(): no cache maintenance for new mappings), IPA base 1 GiB, PA base
// 4 GiB, normal write-back memory, read-write. See harness.hpp for how time is measured.
#include <chrono>
#include <string>
#include <vector>

#include "harness.hpp"
#include "ptguard/arch/descriptor.hpp"
#include "ptguard/pgtable/memcache.hpp"
#include "ptguard/pgtable/table.hpp"
#include "ptguard/pgtable/walker.hpp"

namespace ptguard::bench {
namespace {

using pgtable::Memcache;
using S2 = pgtable::Stage2Table<arch::Granule::k4K, BenchPlatform>;

const arch::Stage2Config& s2_config() {
  static const arch::Stage2Config cfg = *arch::make_stage2_config(kGranule, kIaBits, arch::CpuFeatures::modern());
  return cfg;
}

// 1 GiB forced to pages: Linux's policy for set_owner, and the "forced to pages".
pgtable::TableOptions forced_pages() {
  pgtable::TableOptions o;
  o.force_page = pgtable::ForcePagePolicy{&pgtable::force_pages_always, nullptr};
  return o;
}

// What a full walk sees of a table: tables below the root, leaves by kind.
struct Census {
  static constexpr unsigned visits() { return pgtable::kVisitLeaf | pgtable::kVisitTablePre; }
  u64 tables = 0;
  u64 valid = 0;
  u64 writable = 0;
  u64 annotated = 0;  // invalid, non-zero entries
  Status leaf(pgtable::VisitCtx& x) {
    if (arch::DescValid::get(x.old)) {
      ++valid;
      writable += arch::S2ApWrite::get(x.old) ? 1 : 0;
    } else if (x.old != 0) {
      ++annotated;
    }
    return {};
  }
  Status table_pre(pgtable::VisitCtx&) {
    ++tables;
    return {};
  }
};

Census census(const S2& t) {
  Census c;
  (void)t.walk(0, u64{1} << t.ia_bits(), c);
  return c;
}

// The timed visitor of walk_1g_pages: counts valid leaves.
struct CountValidLeaves {
  static constexpr unsigned visits() { return pgtable::kVisitLeaf | pgtable::kVisitReadOnly; }
  u64 n = 0;
  Status leaf(pgtable::VisitCtx& x) {
    n += arch::DescValid::get(x.old);
    return {};
  }
};

u32 table_pages(const BenchPlatform& p, const Memcache& mc) { return p.pages_in_use() - mc.size(); }

// The check: a page-mapped GiB takes exactly 515 table pages, and maps every page.
// Returns an error message, or empty.
// `min_pages`: 515 with a level-0 root; one more with a level -1 root (52-bit IPA).
std::string check_page_mapped_gib(const S2& t, const BenchPlatform& p, const Memcache& mc,
                                  u32 min_pages = kMinTablePagesGiB) {
  const u32 pages = table_pages(p, mc);
  const Census c = census(t);
  if (pages != min_pages || c.tables + 1 != min_pages)
    return "page-mapped GiB uses " + std::to_string(pages) + " table pages (" + std::to_string(c.tables + 1) +
           " reachable), expected the minimum " + std::to_string(min_pages);
  if (c.valid != kPagesPerGiB) return "page-mapped GiB has " + std::to_string(c.valid) + " valid leaves";
  return {};
}

S2 new_table(BenchPlatform& p, const pgtable::TableOptions& o = {}) {
  return *S2::create_stage2(p, s2_config(), kVmid, o);
}

// The untimed starting state of the page-mapped benchmarks: the GiB mapped page by page (forced),
// checked at its minimum size. Returns an error message, or empty.
std::string map_page_mapped_gib(S2& t, BenchPlatform& p, Memcache& mc) {
  if (!mc.topup(p, t.max_pages_needed(kIaBase, kGiB)) || !t.map(kIaBase, kGiB, kPaBase, kRW, mc))
    return "setup map";
  return check_page_mapped_gib(t, p, mc);
}

const char* err(const Status& st) { return ptguard::name(st.error()); }

// ---------------------------------------------------------------------------------------------

void stage2_map_1g_pages(benchmark::State& state) {
  BenchPlatform plat(kArenaPa, kArenaPages);
  Memcache mc;
  S2 t = new_table(plat, forced_pages());
  Timing tm;
  for (auto _ : state) {
    // Untimed: an empty table (root only) and a memcache holding what the map needs.
    if (!mc.topup(plat, t.max_pages_needed(kIaBase, kGiB))) {
      state.SkipWithError("topup");
      break;
    }
    const Status st = timed(state, tm, &plat, [&] { return t.map(kIaBase, kGiB, kPaBase, kRW, mc); });
    if (!st) {
      state.SkipWithError(err(st));
      break;
    }
    if (tm.iters == 1) {
      if (const std::string e = check_page_mapped_gib(t, plat, mc); !e.empty()) {
        state.SkipWithError(e.c_str());
        break;
      }
    }
    t.destroy();
    t = new_table(plat, forced_pages());
  }
  report(state, tm, Unit::page, kPagesPerGiB, kMinTablePagesGiB * kPage);
}

// stage2_map_1g_pages on a 4K table at a 52-bit IPA and PA (FEAT_LPA2, VTCR_EL2.DS = 1): a
// level -1 root (VTCR_EL2.SL2), so one table level more than the 48-bit row, the GiB mapped
// above 2^48 (IPA 0x000a_0000_4000_0000) to above 2^50 (PA 0x000b_0001_0000_0000), every leaf
// with OA[51:50] in bits [9:8]. The same measurement and target as stage2_map_1g_pages.
constexpr u64 kIaBase52 = (u64{0xa} << 48) + kIaBase;
constexpr u64 kPaBase52 = (u64{0xb} << 48) + kPaBase;

const arch::Stage2Config& s2_config_lpa2() {
  static const arch::Stage2Config cfg =
      *arch::make_stage2_config(kGranule, 52, arch::CpuFeatures::modern_52bit());
  return cfg;
}

void stage2_map_1g_pages_lpa2(benchmark::State& state) {
  BenchPlatform plat(kArenaPa, kArenaPages);
  Memcache mc;
  auto make = [&] { return *S2::create_stage2(plat, s2_config_lpa2(), kVmid, forced_pages()); };
  S2 t = make();
  if (t.start_level() != -1) {
    state.SkipWithError("expected a level -1 root");
    return;
  }
  Timing tm;
  for (auto _ : state) {
    if (!mc.topup(plat, t.max_pages_needed(kIaBase52, kGiB))) {
      state.SkipWithError("topup");
      break;
    }
    const Status st = timed(state, tm, &plat, [&] { return t.map(kIaBase52, kGiB, kPaBase52, kRW, mc); });
    if (!st) {
      state.SkipWithError(err(st));
      break;
    }
    if (tm.iters == 1) {
      if (const std::string e = check_page_mapped_gib(t, plat, mc, kMinTablePagesGiB + 1); !e.empty()) {
        state.SkipWithError(e.c_str());
        break;
      }
      const auto leaf = t.lookup(kIaBase52 + kGiB - kPage);
      if (!leaf || arch::S2Leaf(leaf->entry).output_address(kGranule, arch::kLastLevel, t.oa_format()) !=
                       kPaBase52 + kGiB - kPage) {
        state.SkipWithError("the last page does not map its 52-bit PA");
        break;
      }
    }
    t.destroy();
    t = make();
  }
  report(state, tm, Unit::page, kPagesPerGiB, (kMinTablePagesGiB + 1) * kPage);
}

void stage2_map_1g_page_calls(benchmark::State& state) {
  BenchPlatform plat(kArenaPa, kArenaPages);
  Memcache mc;
  S2 t = new_table(plat);  // 4 KiB calls cannot use blocks: no force-page policy needed
  Timing tm;
  for (auto _ : state) {
    if (!mc.topup(plat, t.max_pages_needed(kIaBase, kGiB))) {
      state.SkipWithError("topup");
      break;
    }
    // Each call starts from the root, as a stage-2 fault handler's would.
    const Status st = timed(state, tm, &plat, [&]() -> Status {
      for (u64 i = 0; i < kPagesPerGiB; ++i) {
        const Status s = t.map(kIaBase + i * kPage, kPage, kPaBase + i * kPage, kRW, mc);
        if (!s) return s;
      }
      return {};
    });
    if (!st) {
      state.SkipWithError(err(st));
      break;
    }
    if (tm.iters == 1) {
      if (const std::string e = check_page_mapped_gib(t, plat, mc); !e.empty()) {
        state.SkipWithError(e.c_str());
        break;
      }
    }
    t.destroy();
    t = new_table(plat);
  }
  report(state, tm, Unit::page, kPagesPerGiB, kMinTablePagesGiB * kPage);
}

// One 1 GiB block per call, into an empty table (the call allocates the level-1 table), timed
// over kBatch tables.
void stage2_map_1g_block(benchmark::State& state) {
  BenchPlatform plat(kArenaPa, kArenaPages);
  Memcache mc;
  std::vector<S2> ts;
  for (u32 i = 0; i < kBatch; ++i) ts.push_back(new_table(plat));
  Timing tm;
  for (auto _ : state) {
    if (!mc.topup(plat, kBatch)) {
      state.SkipWithError("topup");
      break;
    }
    const Status st = timed(state, tm, &plat, [&]() -> Status {
      for (S2& t : ts)
        if (Status s = t.map(kIaBase, kGiB, kPaBase, kRW, mc); !s) return s;
      return {};
    });
    if (!st) {
      state.SkipWithError(err(st));
      break;
    }
    if (tm.iters == 1) {
      const auto leaf = ts[0].lookup(kIaBase);
      if (!leaf || leaf->level != 1 || table_pages(plat, mc) != 2 * kBatch) {
        state.SkipWithError("expected one level-1 block per table, two table pages");
        break;
      }
    }
    for (S2& t : ts)
      if (!t.unmap(kIaBase, kGiB)) state.SkipWithError("unmap");
  }
  report(state, tm, Unit::call, kBatch, 2 * kPage);
}

// PA only 2 MiB-aligned: 512 level-2 blocks in one call.
void stage2_map_1g_2m_blocks(benchmark::State& state) {
  constexpr u64 kBlocks = kGiB / (2 * kMiB);
  BenchPlatform plat(kArenaPa, kArenaPages);
  Memcache mc;
  S2 t = new_table(plat);
  Timing tm;
  for (auto _ : state) {
    if (!mc.topup(plat, t.max_pages_needed(kIaBase, kGiB))) {
      state.SkipWithError("topup");
      break;
    }
    const Status st = timed(state, tm, &plat, [&] { return t.map(kIaBase, kGiB, kPaBase + 2 * kMiB, kRW, mc); });
    if (!st) {
      state.SkipWithError(err(st));
      break;
    }
    if (tm.iters == 1) {
      const Census c = census(t);
      const auto leaf = t.lookup(kIaBase);
      if (c.valid != kBlocks || !leaf || leaf->level != 2 || table_pages(plat, mc) != 3) {
        state.SkipWithError("expected 512 level-2 blocks in three table pages");
        break;
      }
    }
    t.destroy();
    t = new_table(plat);
  }
  report(state, tm, Unit::block, kBlocks, 3 * kPage);
}

void stage2_unmap_1g_pages(benchmark::State& state) {
  BenchPlatform plat(kArenaPa, kArenaPages);
  Memcache mc;
  S2 t = new_table(plat, forced_pages());
  Timing tm;
  for (auto _ : state) {
    // Untimed: the page-mapped GiB, checked at its minimum size.
    if (!mc.topup(plat, t.max_pages_needed(kIaBase, kGiB)) || !t.map(kIaBase, kGiB, kPaBase, kRW, mc)) {
      state.SkipWithError("setup map");
      break;
    }
    if (tm.iters == 0) {
      if (const std::string e = check_page_mapped_gib(t, plat, mc); !e.empty()) {
        state.SkipWithError(e.c_str());
        break;
      }
    }
    const Status st = timed(state, tm, &plat, [&] { return t.unmap(kIaBase, kGiB, mc); });
    if (!st) {
      state.SkipWithError(err(st));
      break;
    }
    if (tm.iters == 1 && (table_pages(plat, mc) != 1 || census(t).tables != 0)) {
      state.SkipWithError("unmap left table pages behind");
      break;
    }
  }
  report(state, tm, Unit::page, kPagesPerGiB, static_cast<double>(table_pages(plat, mc) * kPage));
}

// 1,000 unmaps of 2 MiB (512 pages) at scattered page-aligned IPAs of a page-mapped GiB, on a
// CPU with FEAT_TLBIRANGE. Each range is mapped again (untimed) after its unmap, so every call
// removes 512 valid pages; most ranges straddle two last-level tables and free neither, so
// each call's invalidation is one TLBI RIPAS2E1IS (512 pages, TTL level 3) and TLBI VMALLE1IS.
// Per-page invalidation would take 512 TLBI IPAS2E1IS and the VMALLE1IS: `tlbi_per_page` is
// that count, `tlbi_reduction` the ratio, which must be at least 100.
void stage2_unmap_1g_pages_range_tlbi(benchmark::State& state) {
  constexpr u32 kRanges = 1000;
  constexpr u64 kRangePages = 512;
  arch::CpuFeatures cpu = arch::CpuFeatures::modern();
  cpu.tlbi_range = true;
  const arch::Stage2Config cfg = *arch::make_stage2_config(kGranule, kIaBits, cpu);
  BenchPlatform plat(kArenaPa, kArenaPages);
  Memcache mc;
  auto made = S2::create_stage2(plat, cfg, kVmid, forced_pages());
  if (!made) {
    state.SkipWithError("create_stage2");
    return;
  }
  S2 t = std::move(*made);
  // Scattered first pages (a fixed xorshift sequence), each range inside the GiB.
  std::vector<u64> first(kRanges);
  u64 x = 0x9e37'79b9'7f4a'7c15ull;
  for (u64& f : first) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    f = x % (kPagesPerGiB - kRangePages + 1);
  }
  if (!mc.topup(plat, t.max_pages_needed(kIaBase, kGiB)) || !t.map(kIaBase, kGiB, kPaBase, kRW, mc)) {
    state.SkipWithError("setup map");
    return;
  }
  Timing tm;
  double seconds = 0;
  for (auto _ : state) {
    double s = 0;
    const u64 tlbi0 = plat.counts().tlbi;
    for (u64 f : first) {
      const u64 ia = kIaBase + f * kPage, size = kRangePages * kPage;
      const auto t0 = std::chrono::steady_clock::now();
      const Status st = t.unmap(ia, size, mc);
      benchmark::ClobberMemory();
      const auto t1 = std::chrono::steady_clock::now();
      s += std::chrono::duration<double>(t1 - t0).count();
      // Untimed: the range mapped again (a table page if the unmap freed one).
      if (!st || !mc.topup(plat, t.max_pages_needed(ia, size)) || !t.map(ia, size, kPaBase + f * kPage, kRW, mc)) {
        state.SkipWithError("unmap or remap");
        return;
      }
    }
    state.SetIterationTime(s);
    seconds += s;
    ++tm.iters;
    tm.tlbi += plat.counts().tlbi - tlbi0;
  }
  tm.seconds = seconds;
  report(state, tm, Unit::page, static_cast<double>(kRanges * kRangePages),
         static_cast<double>(table_pages(plat, mc) * kPage));
  if (tm.iters == 0) return;
  const double per_page = static_cast<double>(kRanges * (kRangePages + 1));
  const double tlbi = static_cast<double>(tm.tlbi) / static_cast<double>(tm.iters);
  state.counters["tlbi_per_page"] = per_page;
  state.counters["tlbi_reduction"] = per_page / tlbi;
  if (per_page / tlbi < 100) state.SkipWithError("fewer than 100x fewer TLBIs than per-page invalidation");
}

void walk_1g_pages(benchmark::State& state) {
  BenchPlatform plat(kArenaPa, kArenaPages);
  Memcache mc;
  S2 t = new_table(plat, forced_pages());
  if (const std::string e = map_page_mapped_gib(t, plat, mc); !e.empty()) {
    state.SkipWithError(e.c_str());
    return;
  }
  Timing tm;
  for (auto _ : state) {
    CountValidLeaves v;
    const Status st = timed(state, tm, &plat, [&] { return t.walk(kIaBase, kIaBase + kGiB, v); });
    if (!st || v.n != kPagesPerGiB) {
      state.SkipWithError("walk did not see 262,144 valid leaves");
      break;
    }
  }
  report(state, tm, Unit::page, kPagesPerGiB, kMinTablePagesGiB * kPage);
}

void stage2_wrprotect_1g_pages(benchmark::State& state) {
  BenchPlatform plat(kArenaPa, kArenaPages);
  Memcache mc;
  S2 t = new_table(plat, forced_pages());
  if (const std::string e = map_page_mapped_gib(t, plat, mc); !e.empty()) {
    state.SkipWithError(e.c_str());
    return;
  }
  Timing tm;
  for (auto _ : state) {
    const Status st = timed(state, tm, &plat, [&] { return t.wrprotect(kIaBase, kGiB, mc); });
    if (!st) {
      state.SkipWithError(err(st));
      break;
    }
    if (tm.iters == 1) {
      const Census c = census(t);
      if (c.valid != kPagesPerGiB || c.writable != 0 || table_pages(plat, mc) != kMinTablePagesGiB) {
        state.SkipWithError("wrprotect left writable pages or changed the tables");
        break;
      }
    }
    // Untimed: write permission back (map over the same translation: permissions in place).
    if (!t.map(kIaBase, kGiB, kPaBase, kRW, mc)) {
      state.SkipWithError("restore");
      break;
    }
  }
  report(state, tm, Unit::page, kPagesPerGiB, kMinTablePagesGiB * kPage);
}

void stage2_set_owner_1g_pages(benchmark::State& state) {
  constexpr arch::OwnerId kOwner = 2;
  BenchPlatform plat(kArenaPa, kArenaPages);
  Memcache mc;
  S2 t = new_table(plat, forced_pages());
  Timing tm;
  for (auto _ : state) {
    if (!mc.topup(plat, t.max_pages_needed(kIaBase, kGiB))) {
      state.SkipWithError("topup");
      break;
    }
    const Status st = timed(state, tm, &plat, [&] { return t.set_owner(kIaBase, kGiB, kOwner, 0, mc); });
    if (!st) {
      state.SkipWithError(err(st));
      break;
    }
    if (tm.iters == 1) {
      const Census c = census(t);
      if (c.annotated != kPagesPerGiB || table_pages(plat, mc) != kMinTablePagesGiB) {
        state.SkipWithError("expected 262,144 page annotations in 515 table pages");
        break;
      }
    }
    t.destroy();
    t = new_table(plat, forced_pages());
  }
  report(state, tm, Unit::page, kPagesPerGiB, kMinTablePagesGiB * kPage);
}

// Block-level annotations: the largest the range allows, here one level-1 entry for the GiB;
// a few hundred nanoseconds, so timed over kBatch tables.
void stage2_set_owner_1g_blocks(benchmark::State& state) {
  constexpr arch::OwnerId kOwner = 2;
  BenchPlatform plat(kArenaPa, kArenaPages);
  Memcache mc;
  std::vector<S2> ts;
  for (u32 i = 0; i < kBatch; ++i) ts.push_back(new_table(plat));
  Timing tm;
  u64 blocks = 0;  // block-level annotations one call writes (counted after the first batch)
  u32 pages = 0;
  for (auto _ : state) {
    if (!mc.topup(plat, kBatch)) {
      state.SkipWithError("topup");
      break;
    }
    const Status st = timed(state, tm, &plat, [&]() -> Status {
      for (S2& t : ts)
        if (Status s = t.set_owner(kIaBase, kGiB, kOwner, 0, mc); !s) return s;
      return {};
    });
    if (!st) {
      state.SkipWithError(err(st));
      break;
    }
    if (tm.iters == 1) {
      blocks = census(ts[0]).annotated;
      pages = table_pages(plat, mc) / kBatch;
      const auto leaf = ts[0].lookup(kIaBase);
      if (blocks == 0 || !leaf || leaf->level == arch::kLastLevel) {
        state.SkipWithError("expected block-level annotations");
        break;
      }
    }
    for (S2& t : ts)
      if (!t.unmap(kIaBase, kGiB)) state.SkipWithError("unmap");
  }
  if (blocks != 0) report(state, tm, Unit::block, static_cast<double>(kBatch * blocks), pages * kPage);
}

}  // namespace

void register_stage2_benchmarks() {
  auto reg = [](const char* name, void (*fn)(benchmark::State&), benchmark::TimeUnit unit) {
    benchmark::RegisterBenchmark(name, fn)->UseManualTime()->Unit(unit);
  };
  reg("stage2_map_1g_pages", stage2_map_1g_pages, benchmark::kMicrosecond);
  reg("stage2_map_1g_pages_lpa2", stage2_map_1g_pages_lpa2, benchmark::kMicrosecond);
  reg("stage2_map_1g_page_calls", stage2_map_1g_page_calls, benchmark::kMicrosecond);
  reg("stage2_map_1g_block", stage2_map_1g_block, benchmark::kMicrosecond);
  reg("stage2_map_1g_2m_blocks", stage2_map_1g_2m_blocks, benchmark::kMicrosecond);
  reg("stage2_unmap_1g_pages", stage2_unmap_1g_pages, benchmark::kMicrosecond);
  reg("stage2_unmap_1g_pages_range_tlbi", stage2_unmap_1g_pages_range_tlbi, benchmark::kMicrosecond);
  reg("walk_1g_pages", walk_1g_pages, benchmark::kMicrosecond);
  reg("stage2_wrprotect_1g_pages", stage2_wrprotect_1g_pages, benchmark::kMicrosecond);
  reg("stage2_set_owner_1g_pages", stage2_set_owner_1g_pages, benchmark::kMicrosecond);
  reg("stage2_set_owner_1g_blocks", stage2_set_owner_1g_blocks, benchmark::kMicrosecond);
}

}  // namespace ptguard::bench
