// The one walker every table operation is built on.
//
// walk() visits [addr, end) of a table: for each entry it meets, a visitor is called for
// leaves (valid blocks and pages, and invalid entries at any level), for tables before their
// children (pre-order) and for tables after them (post-order). A visitor may replace the entry
// it is given; the walker re-reads the entry after a leaf or pre-order visit before deciding
// whether to descend, so a visitor that turns an invalid entry into a table is walked into,
// and one that turns a table into a block is not walked into. (Linux once descended into a
// table its pre-order visitor had just freed: commit a9f0e3d5a089.)
//
// Visitors are compile-time parameters: the walker is a template over the visitor type, so
// its callbacks inline into the loop and no per-entry indirect call remains. A visitor is a
// class with
//     static constexpr unsigned visits() { return kVisitLeaf | kVisitTablePre; }  (any of the three)
//     Status leaf(VisitCtx&);  Status table_pre(VisitCtx&);  Status table_post(VisitCtx&);
// (only those named in visits() are called; kVisitLeafRun below replaces leaf() at the last
// level with one call per table). An error from a visitor stops the walk and is
// returned. Setting ctx.descend = false in leaf() or table_pre() stops the walker from
// descending into a table at that entry.
#pragma once

#include "ptguard/arch/descriptor.hpp"
#include "ptguard/arch/error.hpp"
#include "ptguard/arch/granule.hpp"

namespace ptguard::pgtable {

inline constexpr unsigned kVisitLeaf = 1u << 0;
inline constexpr unsigned kVisitTablePre = 1u << 1;
inline constexpr unsigned kVisitTablePost = 1u << 2;
/// The visitor takes the entries of one last-level table as a run: leaf_run(table, idx, n,
/// addr, table_pa) is called once with the n entries from idx on (covering [addr, addr + n
/// pages)), instead of leaf() for each. There are no tables at the last level, so nothing is
/// lost; a visitor uses this to keep its per-page loop tight (the map of a GiB of pages).
inline constexpr unsigned kVisitLeafRun = 1u << 3;
/// The visitor writes no entry of the table while it is walked (not through ctx.ptep, not any
/// other way): a census, a check pass. The walker may then read a last-level table's entries
/// a chunk at a time into locals ahead of their leaf() visits, and the visits see exactly what
/// they would see one at a time. Why it pays: a visitor that keeps a u64 of its own (a count)
/// may, for the compiler, alias the u64 entries, so without it each visit's store must land
/// before the next entry is read and the loop is never vectorised (walk_1g_pages: 0.58 ns a
/// leaf with a u64 count, 0.17 with a u32 one, which cannot alias; README, "Performance").
/// A visitor that writes must not set it: a write to a neighbour (a contiguous run broken whole)
/// would not be seen by the neighbour's visit.
inline constexpr unsigned kVisitReadOnly = 1u << 4;

/// What a visitor sees of one entry.
struct VisitCtx {
  u64* ptep;     ///< the entry
  u64 old;       ///< its value when the visit began (re-read by the walker after a visit)
  u64 addr;      ///< first input address this visit covers (>= the entry's base)
  u64 end;       ///< end of the visit within this entry (<= the entry's end)
  u64 base;      ///< first input address the entry maps
  u64 table_pa;  ///< physical address of the table page holding the entry
  int level;
  bool descend;  ///< cleared by a visitor: do not walk into the table at this entry
};

namespace detail {
// One leaf() visit of the last-level entry at `ptep`, read as `e`, mapping the page at `a`: the
// per-page tail of walk_table()'s last-level loop and its read-ahead chunks build the same
// context, so the two cannot drift. Always inline: it is the body of the hottest loop.
template <arch::Granule G, typename V>
[[gnu::always_inline]] inline Status visit_last_level(V& v, u64* ptep, u64 e, u64 a, u64 table_pa) {
  VisitCtx ctx{ptep, e, a, a + arch::page_size(G), a, table_pa, arch::kLastLevel, true};
  return v.leaf(ctx);
}
}  // namespace detail

/// Walks [addr, end) of the table at `table_pa` (a level-`level` table, or the whole root when
/// `root_entries` is given: a concatenated root is one array of entries). `to_virt` turns a
/// table's physical address into a pointer to its entries. Preconditions (checked by the
/// callers): addr < end, both within the table's input range and granule-aligned. `oa` is how
/// table descriptors hold the next table's address (arch::OaFormat: 48- or 52-bit).
template <arch::Granule G, typename ToVirt, typename V>
[[nodiscard]] inline Status walk_table(ToVirt&& to_virt, u64 table_pa, int level, u64 addr, u64 end,
                                       V& v, const arch::OaFormat& oa = arch::kOa48) {
  constexpr unsigned kEntryMask = arch::entries_per_table(G) - 1;
  const unsigned shift = arch::level_shift(G, level);
  const u64 entry_size = u64{1} << shift;
  u64* const table = to_virt(table_pa);
  u64 idx = (addr >> shift) & kEntryMask;
  if constexpr ((V::visits() & kVisitLeafRun) != 0) {
    if (level == arch::kLastLevel) return v.leaf_run(table, idx, (end - addr) >> shift, addr, table_pa);
  } else if constexpr ((V::visits() & kVisitLeaf) != 0) {
    // The last level holds no tables: one leaf visit per entry, nothing to classify or re-read.
    if (level == arch::kLastLevel) {
      // Counted by index, the address derived from it: a visitor that never reads the address
      // then costs the loop nothing for it (walk_1g_pages: one load, the visit, the count).
      constexpr u64 kPage = arch::page_size(G);
      const u64 n = (end - addr) >> shift;
      u64 i = 0;
      if constexpr ((V::visits() & kVisitReadOnly) != 0) {
        // A cache line of entries at a time, read before any of their visits (the visitor
        // writes none, so each still sees its entry as it is).
        constexpr u64 kChunk = 64 / sizeof(u64);
        for (; i + kChunk <= n; i += kChunk) {
          u64 chunk[kChunk];
          for (u64 j = 0; j < kChunk; ++j) chunk[j] = table[idx + i + j];
          for (u64 j = 0; j < kChunk; ++j) {
            Status st = detail::visit_last_level<G>(v, table + idx + i + j, chunk[j], addr + (i + j) * kPage, table_pa);
            if (!st) return st;
          }
        }
      }
      for (; i < n; ++i) {
        Status st = detail::visit_last_level<G>(v, table + idx + i, table[idx + i], addr + i * kPage, table_pa);
        if (!st) return st;
      }
      return {};
    }
  }
  u64* ptep = table + idx;
  while (addr < end) {
    const u64 base = addr & ~(entry_size - 1);
    const u64 entry_end = base + entry_size;
    const u64 stop = entry_end < end ? entry_end : end;
    VisitCtx ctx{ptep, *ptep, addr, stop, base, table_pa, level, true};
    bool is_table = level < arch::kLastLevel && arch::classify(ctx.old, G, level) == arch::DescKind::table;
    if (!is_table) {
      if constexpr ((V::visits() & kVisitLeaf) != 0) {
        Status st = v.leaf(ctx);
        if (!st) return st;
        ctx.old = *ptep;
        is_table = ctx.descend && level < arch::kLastLevel &&
                   arch::classify(ctx.old, G, level) == arch::DescKind::table;
      }
    } else {
      if constexpr ((V::visits() & kVisitTablePre) != 0) {
        Status st = v.table_pre(ctx);
        if (!st) return st;
        ctx.old = *ptep;
        is_table = ctx.descend && arch::classify(ctx.old, G, level) == arch::DescKind::table;
      }
    }
    if (is_table) {
      Status st = walk_table<G>(to_virt, arch::TableDesc(ctx.old).next_table(G, oa), level + 1, addr, stop, v, oa);
      if (!st) return st;
      if constexpr ((V::visits() & kVisitTablePost) != 0) {
        ctx.old = *ptep;
        st = v.table_post(ctx);
        if (!st) return st;
      }
    }
    addr = stop;
    ++ptep;
  }
  return {};
}

/// Walks [addr, end) from a root at `start_level` that may be concatenated: the root is one
/// array of 2^(ia_bits - level_shift(start_level)) entries, so the index at the root uses
/// every input bit above the level's shift. `start_level` may be -1 (FEAT_LPA2's 4K level -1).
template <arch::Granule G, typename ToVirt, typename V>
[[nodiscard]] inline Status walk_root(ToVirt&& to_virt, u64 root_pa, int start_level, u64 addr, u64 end,
                                      V& v, const arch::OaFormat& oa = arch::kOa48) {
  const unsigned shift = arch::level_shift(G, start_level);
  const unsigned table_span = shift + arch::bits_per_level(G);
  // Split the walk at each root page of a concatenated root: each page is walked as one
  // table whose index wraps within it.
  while (addr < end) {
    const u64 page = addr >> table_span;
    const u64 page_end = (page + 1) << table_span;
    const u64 stop = page_end < end && page_end != 0 ? page_end : end;
    Status st = walk_table<G>(to_virt, root_pa + page * arch::page_size(G), start_level, addr, stop, v, oa);
    if (!st) return st;
    addr = stop;
  }
  return {};
}

}  // namespace ptguard::pgtable
