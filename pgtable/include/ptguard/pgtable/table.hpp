// The translation-table engine: one table of one regime, granule and platform.
//
//   using S2 = Table<Stage2, Granule::k4K, MyPlatform, SwLayout<PageState>>;
//   auto t = S2::create_stage2(plat, *arch::make_stage2_config(Granule::k4K, 40, cpu), vmid);
//   Memcache mc; mc.topup(plat, t->pages_needed(ipa, size));
//   t->map(ipa, size, pa, Prot{kPermRW, MemType::normal_wb}, mc);
//
// Every operation is a Content (what the range should hold: a mapping, an invalid value, a
// permission change, a split) applied by one visitor over the one walker (walker.hpp), in two
// passes: a read-only pass that finds every refusal (EEXIST, EINVAL) and counts the table
// pages the change needs, then, only if nothing is refused and the memcache holds enough
// pages, the pass that writes. So a failed operation leaves the table exactly as it was; there
// is no partial result to document, even for ENOMEM.
//
// The decision for each entry (decide()) is shared by both passes, so what the first pass
// counts is what the second does. Table pages are counted as Linux counts them: 1 for the
// page plus 1 per non-empty entry (a valid entry or a non-zero annotation), so an annotation
// keeps its table alive and a table whose count is back to 1 is empty.
//
// Break-before-make (stage 2), for any change of a valid entry other than its permissions,
// access flag or software bits: write 0; DSB ISHST; TLBI IPAS2E1IS (address and level), or,
// for a table entry, TLBI VMALLS12E1IS (the whole VMID: a table covers a range, and no level
// hint is safe for it); DSB ISH; TLBI VMALLE1IS (combined stage-1+2 entries); DSB ISH; then the
// new entry. Valid-to-invalid changes batch their invalidations (up to 16 by address and level,
// beyond that one VMALLS12E1IS), completed before the operation returns and before any table
// page it frees is given back. Stage 1 at EL2 never breaks a live entry: it refuses instead.
//
// A new table holds its initial entries (zeroes, copies of the entry it replaces, or the leaves
// of a range built whole) before it is linked, and DMB ISHST orders them (and the allocator's
// zeroing) before the table descriptor that links it; the walk then changes its entries like
// any live entry (a split's break-before-make
// DSB ISHST does the same there).
#pragma once

#include "ptguard/arch/contiguous.hpp"
#include "ptguard/arch/descriptor.hpp"
#include "ptguard/arch/error.hpp"
#include "ptguard/arch/granule.hpp"
#include "ptguard/arch/maintenance.hpp"
#include "ptguard/arch/memattr.hpp"
#include "ptguard/arch/regs.hpp"
#include "ptguard/pgtable/memcache.hpp"
#include "ptguard/pgtable/platform.hpp"
#include "ptguard/pgtable/prot.hpp"
#include "ptguard/pgtable/regime.hpp"
#include "ptguard/pgtable/walker.hpp"

namespace ptguard::pgtable {

/// The force-page policy: asked before a block-level entry (a block mapping, or a block-level
/// annotation) is written over [addr, end); returning true forces page granularity there.
/// Linux's host stage-2 allows blocks only for the default protections.
struct ForcePagePolicy {
  using Fn = bool (*)(void* ctx, u64 addr, u64 end, const Prot& prot, bool annotation);
  Fn fn = nullptr;
  void* ctx = nullptr;
  [[nodiscard]] bool operator()(u64 addr, u64 end, const Prot& prot, bool annotation) const {
    return fn != nullptr && fn(ctx, addr, end, prot, annotation);
  }
};

/// Forces pages everywhere (Linux's set_owner; the benchmarks' "forced to pages").
inline bool force_pages_always(void*, u64, u64, const Prot&, bool) { return true; }

struct TableOptions {
  ForcePagePolicy force_page;
  /// CTR_EL0.DIC: the instruction cache needs no invalidation for new executable mappings.
  bool dic = false;
  /// Data- and instruction-cache maintenance for new mappings (stage 2). A table whose
  /// component keeps its own caches coherent for memory it already owns (the host's identity
  /// stage-2: pKVM gives the host's table no cache-maintenance callbacks) turns it off.
  bool cache_maintenance = true;
  /// Stage 2: set the Contiguous bit (Arm ARM D8.6.1) on every entry of a run of
  /// arch::contiguous_entries() aligned leaves that one map() writes whole into invalid
  /// entries with one attribute set and consecutive, run-aligned output addresses (16 pages,
  /// 64 KiB, with 4K), and with contiguous_on_split on the runs of a block split by a change to
  /// part of it that the change does not reach. Whatever the option, any change to an entry of
  /// a hinted run first
  /// clears the hint of the whole run through break-before-make (D8.16.1). Stage 1 ignores it:
  /// its live entries are never broken, so a run could never be changed. docs/pgtable.md,
  /// "The contiguous bit".
  bool contiguous = false;
  /// With `contiguous`: a block split by a change to part of it hints the runs the change does
  /// not reach. Off by default, and off for the host's stage 2: where one page of a block
  /// changes hands, its neighbours usually follow one call at a time (hypercalls are per page),
  /// and each would then break its run first (16 entries written twice, and a TLBI);
  /// share_hyp_1g_page_calls took ~36 ns a page with it against ~26 ns without (Intel Xeon VM,
  /// 2026-12-05, same build otherwise).
  bool contiguous_on_split = false;
};

struct MapOptions {
  /// Replace mappings with a different output address, memory type or shareability (through
  /// break-before-make) instead of refusing with EEXIST. Stage 2 only.
  bool replace = false;
};

/// Who invalidates the TLB after wrprotect and the young-bit operations.
enum class TlbPolicy : u8 {
  invalidate,  ///< the engine, batched, before the call returns (the default)
  defer,       ///< the caller (who may batch many calls into one invalidation)
};

/// How the in-place fault operations (relax_perms, mkyoung, test_and_clear_young) reach the
/// table (docs/concurrency.md, "Shared walkers for guest faults").
enum class Walk : u8 {
  /// The caller excludes every other writer of the table (its lock's exclusive side). The
  /// only concurrent change is the hardware's access-flag update (VTCR_EL2.HA / TCR_EL2.HA,
  /// FEAT_HAFDBS), which the engine keeps (compare-and-swap where the old AF is 0).
  exclusive,
  /// Other shared walkers may run at once (the caller holds its lock's shared side; whoever
  /// changes tables takes the exclusive side). The entry is read once, atomically, and changed
  /// only by compare-and-swap from that value: if it changed in between (another walker, the
  /// hardware's access-flag update), nothing is written and the call fails with EAGAIN; the
  /// caller (the guest, taking its fault again) retries. No table is linked, unlinked or
  /// freed, no break-before-make is done, and nothing remembered by the exclusive paths (the
  /// last table found, the last encoding) is read or written. So a table with
  /// TableOptions::contiguous, whose runs change only through break-before-make, refuses
  /// shared walks with EOPNOTSUPP (guests' tables do not form runs; the host's is exclusive).
  shared,
};

/// A check of the leaf a fault operation found, before it changes anything (Status of the
/// entry: an error stops the operation with it). The default accepts every leaf. It is given
/// the entry's value only and must write no entry: its walk is kVisitReadOnly (walker.hpp).
struct AcceptLeaf {
  [[nodiscard]] constexpr Status operator()(u64 /*entry*/) const { return {}; }
};

/// The leaf (or invalid entry) that maps an address.
struct Leaf {
  u64 entry;  ///< the descriptor (an invalid entry counts: it may carry an annotation)
  int level;
  u64 base;   ///< first input address the entry covers
  u64 size;   ///< bytes the entry covers
};

/// A leaf lookup_page() found for one page, and where it lives when it is a last-level entry:
/// the handle unmap_page() takes, so removing what a caller has just looked up (and checked)
/// costs no second walk. It stays meaningful only while the table does not change: the
/// caller holds its exclusive lock and makes no other change to this table in between.
struct PageRef {
  Leaf leaf;      ///< what lookup(addr) returns
  u64 addr;       ///< the page looked up (rounded down to the granule)
  u64* ptep;      ///< its last-level entry, or nullptr if no tables lead down to one
  u64 table_pa;   ///< the last-level table holding *ptep
};

template <typename Regime, arch::Granule G, Platform P, typename Layout = NoSwLayout>
class Table {
 public:
  static constexpr bool kStage2 = Regime::kStage == 2;
  static constexpr arch::Granule kGranule = G;
  static constexpr u64 kPageSize = arch::page_size(G);
  using SwBits = Layout;

  /// No table: every operation fails with EINVAL until a table is moved in.
  Table() = default;
  Table(Table&& o) noexcept { *this = static_cast<Table&&>(o); }
  Table& operator=(Table&& o) noexcept {
    plat_ = o.plat_;
    root_pa_ = o.root_pa_;
    root_order_ = o.root_order_;
    ia_bits_ = o.ia_bits_;
    pa_bits_ = o.pa_bits_;
    start_level_ = o.start_level_;
    fwb_ = o.fwb_;
    walk_cmo_ = o.walk_cmo_;
    tlbi_range_ = o.tlbi_range_;
    retired_ = o.retired_;
    oa_ = o.oa_;
    vmid_ = o.vmid_;
    ha_ = o.ha_;
    opt_ = o.opt_;
    o.root_pa_ = kNoRoot;
    forget_slot();
    o.forget_slot();
    enc_valid_ = false;  // the remembered encoding may be for another FWB setting
    return *this;
  }
  Table(const Table&) = delete;
  Table& operator=(const Table&) = delete;

  /// A stage-2 table described by `cfg` (arch::make_stage2_config), with its root allocated
  /// from the platform (2^cfg.geometry.root_order() zeroed, naturally aligned pages). With
  /// non-cacheable walks the root is cleaned to the point of coherency (DC CVAC, DSB ISH).
  /// Errors: EINVAL if the configuration is for another granule; ENOMEM from the platform.
  [[nodiscard]] static Result<Table> create_stage2(P& plat, const arch::Stage2Config& cfg, u16 vmid,
                                                   const TableOptions& opt = {})
    requires kStage2
  {
    if (cfg.geometry.granule != G || plat.page_size() != kPageSize) return fail(Error::einval);
    const Result<u64> root = plat.alloc_pages(cfg.geometry.root_order());
    if (!root) return fail(root.error());
    if (!cfg.walk_cacheable) clean_new_root(plat, *root, cfg.geometry.root_order());
    Table t(plat, *root, cfg.geometry.root_order(), cfg.geometry.ia_bits, cfg.pa_bits,
            cfg.geometry.start_level, cfg.fwb, !cfg.walk_cacheable, cfg.tlbi_range, vmid, opt, cfg.oa);
    t.ha_ = cfg.hw_access_flag;
    return t;
  }

  /// A stage-1 EL2 table described by `cfg` (arch::make_stage1_config); its root cleaned as
  /// create_stage2()'s.
  [[nodiscard]] static Result<Table> create_stage1(P& plat, const arch::Stage1Config& cfg,
                                                   const TableOptions& opt = {})
    requires(!kStage2)
  {
    if (cfg.granule != G || plat.page_size() != kPageSize) return fail(Error::einval);
    const Result<u64> root = plat.alloc_pages(0);
    if (!root) return fail(root.error());
    if (!cfg.walk_cacheable) clean_new_root(plat, *root, 0);
    Table t(plat, *root, 0, cfg.ia_bits, cfg.pa_bits, cfg.start_level, false, !cfg.walk_cacheable,
            cfg.tlbi_range, 0, opt, cfg.oa);
    t.ha_ = cfg.hw_access_flag;
    return t;
  }

  // ---- queries -----------------------------------------------------------------------------
  [[nodiscard]] bool valid() const { return root_pa_ != kNoRoot; }
  [[nodiscard]] u64 root_pa() const { return root_pa_; }
  [[nodiscard]] int start_level() const { return start_level_; }
  [[nodiscard]] unsigned ia_bits() const { return ia_bits_; }
  [[nodiscard]] unsigned pa_bits() const { return pa_bits_; }
  [[nodiscard]] u16 vmid() const { return vmid_; }
  [[nodiscard]] bool fwb() const { return fwb_; }
  /// Whether the MMU sets access flags in this table itself (its configuration's ha:
  /// VTCR_EL2.HA / TCR_EL2.HA, FEAT_HAFDBS). Then an in-place change of a valid leaf whose AF
  /// is 0 is a compare-and-swap, so an AF the hardware sets meanwhile is kept.
  [[nodiscard]] bool hw_access_flag() const { return ha_; }
  /// Whether the table invalidates by range (its configuration's tlbi_range: FEAT_TLBIRANGE).
  [[nodiscard]] bool tlbi_range() const { return tlbi_range_; }
  /// How descriptors hold output and table addresses: arch::kOa48, or with 52-bit addresses
  /// the configuration's 52-bit format (FEAT_LPA2 DS = 1 with 4K/16K: no SH in leaves; FEAT_LPA
  /// with 64K).
  [[nodiscard]] const arch::OaFormat& oa_format() const { return oa_; }
  /// The output address a valid leaf from lookup() or a walk maps its first byte to, decoded in
  /// the table's address format (arch::leaf_address_mask() is the 48-bit format only).
  [[nodiscard]] u64 output_address(const Leaf& l) const { return leaf_oa(l.entry, l.level); }
  /// Number of pages of the (possibly concatenated) root.
  [[nodiscard]] unsigned root_pages() const { return 1u << root_order_; }

  /// The software bits `value` in layout field F, for a Prot's sw member. Only fields of the
  /// table's layout are accepted (a field nobody reserved does not compile).
  template <typename F>
    requires(Layout::template kContains<F>)
  [[nodiscard]] static constexpr u8 sw(u8 value, u8 sw_bits = 0) {
    return F::put(sw_bits, value);
  }

  /// The most table pages map/set_owner/unmap/wrprotect/split can take over [addr, addr+size)
  /// of any table of this shape, computed from the range alone: one page per entry of each
  /// level above the last that the range touches (each may need a new table, or a split).
  [[nodiscard]] u32 max_pages_needed(u64 addr, u64 size) const {
    if (size == 0) return 0;
    // One page (most hypercalls): at most one new table per level below the root.
    if (size == kPageSize && (addr & (kPageSize - 1)) == 0) return static_cast<u32>(arch::kLastLevel - start_level_);
    const u64 last = addr + size - 1;
    u64 pages = 0;
    for (int level = start_level_; level < arch::kLastLevel; ++level) {
      const unsigned shift = arch::level_shift(G, level);
      pages += (last >> shift) - (addr >> shift) + 1;
    }
    return pages > 0xffff'ffffu ? 0xffff'ffffu : static_cast<u32>(pages);
  }

  /// The leaf that maps `addr` (valid or not): its entry, level and range. Built on the walker.
  /// Errors: EINVAL for an unaligned address is not one: any address is accepted and rounded
  /// down; ERANGE beyond the input-address size.
  [[nodiscard]] Result<Leaf> lookup(u64 addr) const {
    if (ia_bits_ < 64 && addr >> ia_bits_) return fail(Error::erange);
    // A last-level table found just before (by the fault handler's path) answers at once.
    constexpr unsigned kSpan = arch::level_shift(G, arch::kLastLevel - 1);
    if ((addr >> kSpan) == cached_span_) {
      const u64 e = cached_ptes_[arch::level_index(G, arch::kLastLevel, addr)];
      return Leaf{e, arch::kLastLevel, addr & ~(kPageSize - 1), kPageSize};
    }
    struct V {
      static constexpr unsigned visits() { return kVisitLeaf; }
      Leaf out{};
      Status leaf(VisitCtx& x) {
        out = Leaf{x.old, x.level, x.base, arch::level_size(G, x.level)};
        return {};
      }
    } v;
    const u64 a = addr & ~(kPageSize - 1);
    Status st = walk_inner(a, a + kPageSize, v);
    if (!st) return fail(st.error());
    return v.out;
  }

  /// lookup() for one page, with where its entry lives (PageRef) when tables lead down to the
  /// last level, for unmap_page(). Errors as lookup(); EINVAL for no table.
  [[nodiscard]] Result<PageRef> lookup_page(u64 addr) const {
    if (root_pa_ == kNoRoot) return fail(Error::einval);
    if (ia_bits_ < 64 && addr >> ia_bits_) return fail(Error::erange);
    const u64 a = addr & ~(kPageSize - 1);
    if (const PageSlot slot = last_level_slot(a); slot.ptep != nullptr)
      return PageRef{Leaf{*slot.ptep, arch::kLastLevel, a, kPageSize}, a, slot.ptep, slot.table_pa};
    const Result<Leaf> l = lookup(a);
    if (!l) return fail(l.error());
    return PageRef{*l, a, nullptr, 0};
  }

  /// Whether tables lead down to a last-level table for `addr`; if so `*table_pa` is its
  /// physical address. False where an entry above the last level is not a table (empty, a
  /// block, an annotation), for no table, or for `addr` past the input-address size. The table found is remembered as map()'s fast path
  /// remembers it, so a caller asking about the table an operation just changed pays one
  /// compare, not a walk (the ownership layer's block rebuild asks after every page that comes
  /// home). The table stays valid only while the caller's lock keeps others from freeing it.
  [[nodiscard]] bool last_level_table(u64 addr, u64* table_pa) const {
    if (root_pa_ == kNoRoot || (ia_bits_ < 64 && addr >> ia_bits_)) return false;
    const PageSlot slot = last_level_slot(addr);
    if (slot.ptep == nullptr) return false;
    *table_pa = slot.table_pa;
    return true;
  }

  // ---- operations (stage 2 and stage 1) -----------------------------------------------------

  /// Maps [addr, addr+size) to [pa, pa+size) with `prot`, using the largest blocks the
  /// alignment of both addresses, the size left and the force-page policy allow. Where a valid
  /// leaf is already there: the same translation and attributes: nothing written; only
  /// permissions, access flag or software bits differ (stage 2; stage 1: software bits only):
  /// updated in place, with TLB invalidation if permissions shrink, splitting a larger block
  /// first and keeping the rest of it; a different output address, memory type or shareability:
  /// EEXIST, unless opts.replace (stage 2), which goes through break-before-make and keeps the
  /// part of a block outside the range. Annotated invalid entries in the range are replaced.
  /// Errors (the table unchanged): EINVAL for unaligned or zero size, a wrapping range, or a
  /// prot the regime cannot encode (Stage2::encode, Stage1El2::encode); ERANGE past the
  /// input- or output-address size; EEXIST as above; EINVAL at stage 1 for a change to part of
  /// a block; ENOMEM if `mc` holds fewer pages than the change needs (pages_needed()).
  [[nodiscard]] Status map(u64 addr, u64 size, u64 pa, const Prot& prot, Memcache& mc,
                           const MapOptions& opts = {}) {
    // A fault handler's page next to the one before (same last-level table, same Prot): done
    // here, in the caller, without the general path's call. Stage 1 refuses replace first.
    if (size == kPageSize && (kStage2 || !opts.replace) && map_page_cached(addr, pa, prot)) return {};
    return map_general(addr, size, pa, prot, mc, opts);
  }

  /// A fault handler's one-page map: when tables already lead down to the last-level entry for
  /// `addr` and that entry is empty (neither valid nor annotated), maps the page at `addr` to
  /// `pa` with `prot` exactly as map(addr, kPageSize, pa, prot, mc) would, and returns true.
  /// Otherwise (no last-level table yet, an entry already there, an unaligned or out-of-range
  /// address, a prot the regime cannot encode) it changes nothing and returns false, and the
  /// caller takes the general path (lookup(), map()), which also says why. It needs no memcache:
  /// an empty last-level entry takes no new table.
  [[nodiscard]] bool map_page_if_empty(u64 addr, u64 pa, const Prot& prot) {
    if (map_page_cached(addr, pa, prot)) return true;
    if (!check_range(addr, kPageSize) || !check_output(pa, kPageSize)) return false;
    const PageSlot slot = last_level_slot(addr);
    if (slot.ptep == nullptr || *slot.ptep != 0) return false;
    const Result<u64> attrs = encode(prot);
    if (!attrs) return false;
    install_page(slot, addr, pa, prot, *attrs, make_leaf(arch::kLastLevel, pa, *attrs));
    return true;
  }

  /// map_page_if_empty() for a whole contiguous run: when `addr` and `pa` are aligned to
  /// arch::contiguous_size(G, 3) (64 KiB with 4K), tables already lead down to the last-level
  /// entries of [addr, +that size) and every one of them is empty, maps the run exactly as
  /// map(addr, size, pa, prot, mc) would (with TableOptions::contiguous, each leaf with the
  /// Contiguous bit: Arm ARM D8.6.1; cache maintenance first where the regime needs it; the
  /// stores, the table's count, then DSB ISHST, and at stage 1 an ISB) and returns true.
  /// Otherwise it changes nothing and returns false. Through the table remembered for the
  /// fault handler's path: no walk, no memcache.
  [[nodiscard]] bool map_run_if_empty(u64 addr, u64 pa, const Prot& prot) {
    constexpr unsigned kN = arch::contiguous_entries(G, arch::kLastLevel);
    constexpr u64 kRunSize = arch::contiguous_size(G, arch::kLastLevel);
    if (((addr | pa) & (kRunSize - 1)) != 0) return false;
    if (!check_range(addr, kRunSize) || !check_output(pa, kRunSize)) return false;
    const PageSlot slot = last_level_slot(addr);
    if (slot.ptep == nullptr) return false;
    for (unsigned j = 0; j < kN; ++j)
      if (slot.ptep[j] != 0) return false;
    const Result<u64> attrs = encode(prot);
    if (!attrs) return false;
    install_run(slot, addr, pa, prot, *attrs);
    return true;
  }

  /// A fault handler's map, with one lookup of the last-level table: when `allow_run`, `addr`
  /// and `pa` lie at the same offset in their contiguous runs (arch::contiguous_size(G, 3))
  /// and every entry of addr's run is empty, map_run_if_empty() on that run; else, when addr's
  /// own entry is empty, map_page_if_empty() on the page. Returns the bytes mapped: the run's,
  /// a page's, or 0 with nothing changed (no last-level table yet, addr's entry not empty,
  /// either address unaligned or out of the table's range, a Prot that does not encode).
  [[nodiscard]] u64 map_page_or_run_if_empty(u64 addr, u64 pa, const Prot& prot, bool allow_run) {
    constexpr unsigned kN = arch::contiguous_entries(G, arch::kLastLevel);
    constexpr u64 kRunSize = arch::contiguous_size(G, arch::kLastLevel);
    // The addresses' own checks, as map_page_cached(): a run lies in the same naturally aligned
    // power-of-two space as its pages, so it needs none of its own.
    if ((((addr | pa) & (kPageSize - 1)) | (addr >> ia_bits_) | (pa >> pa_bits_)) != 0) return 0;
    const PageSlot slot = last_level_slot(addr);
    if (slot.ptep == nullptr || *slot.ptep != 0) return 0;
    const Result<u64> attrs = encode(prot);
    if (!attrs) return 0;
    if (allow_run && ((addr ^ pa) & (kRunSize - 1)) == 0) {
      const unsigned first = arch::level_index(G, arch::kLastLevel, addr) % kN;
      u64* const run = slot.ptep - first;
      unsigned j = 0;
      while (j < kN && run[j] == 0) ++j;
      if (j == kN) {
        install_run(PageSlot{run, slot.table_pa}, addr - first * kPageSize, pa - first * kPageSize, prot, *attrs);
        return kRunSize;
      }
    }
    // encode() succeeded, so the remembered encoding is prot's, and enc_cmo_ says whether its
    // new leaf needs cache maintenance: without, install_page() is publish_page(), inline.
    if (!enc_cmo_) {
      publish_page(slot, make_leaf(arch::kLastLevel, pa, *attrs));
    } else {
      install_page(slot, addr, pa, prot, *attrs, make_leaf(arch::kLastLevel, pa, *attrs));
    }
    return kPageSize;
  }

 private:
  // Everything map() does but its inline case: out of line, so the caller's loop around the
  // inline case keeps its registers.
  [[gnu::noinline]] [[nodiscard]] Status map_general(u64 addr, u64 size, u64 pa, const Prot& prot, Memcache& mc,
                                                     const MapOptions& opts) {
    if (Status st = check_range(addr, size); !st) return st;
    if (Status st = check_output(pa, size); !st) return st;
    if (!kStage2 && opts.replace) return fail(Error::einval);
    const Result<u64> attrs = encode(prot);
    if (!attrs) return fail(attrs.error());
    // The fault handler's case, one page where the tables already exist and the entry is
    // empty: nothing can be refused and no page is needed, so skip the counting pass.
    if (size == kPageSize) {
      if (const PageSlot slot = last_level_slot(addr); slot.ptep != nullptr) {
        const u64 old = *slot.ptep;
        const u64 leaf = make_leaf(arch::kLastLevel, pa, *attrs);
        if (old == 0) {
          install_page(slot, addr, pa, prot, *attrs, leaf);
          return {};
        }
        // The same translation with other permissions or state bits: in place, as decide()
        // would have it (a page needs no split).
        if ((old & 0b11) == 0b11 && ((old ^ leaf) & ~Regime::kInPlaceMask) == 0) {
          if (old == leaf) return {};
          // Only the software bits change (a page-state change): the MMU ignores bits 58:55
          // (Arm ARM D8.3.1, "reserved for software use"), so no walker or TLB can see the
          // difference and there is nothing to order or invalidate.
          if (((old ^ leaf) & ~arch::DescSw::kMask) == 0) {
            write(slot.ptep, leaf);
            return {};
          }
          return update_in_place(slot.ptep, old, leaf, addr);
        }
      }
    }
    return apply(leaf_content(addr, pa, prot, *attrs, opts.replace), addr, size, &mc);
  }

  // map()'s and map_page_if_empty()'s common case, from what the call before left: the page's
  // last-level table is the one last_level_slot() remembered, `prot` is the one encode()
  // remembered, the new leaf needs no cache maintenance and the entry is empty. Then nothing
  // can be refused and no table is needed, and the entry is installed as install_page() does
  // (one store, the table's count, DSB ISHST). The checks are check_range()'s and
  // check_output()'s for one page: aligned, and below the input- and output-address sizes
  // (an aligned page below 2^bits ends at or below it; 2^48 cannot wrap). Anything else:
  // false, nothing done, and the general path decides (and says why it refuses).
  [[gnu::always_inline]] bool map_page_cached(u64 addr, u64 pa, const Prot& prot) {
    constexpr unsigned kSpan = arch::level_shift(G, arch::kLastLevel - 1);
    if ((((addr | pa) & (kPageSize - 1)) | (addr >> ia_bits_) | (pa >> pa_bits_)) != 0) return false;
    if ((addr >> kSpan) != cached_span_ || !enc_valid_ || !(prot == enc_prot_) || enc_cmo_) return false;
    u64* const ptep = cached_ptes_ + arch::level_index(G, arch::kLastLevel, addr);
    if (*ptep != 0) return false;
    publish_page(PageSlot{ptep, cached_table_}, make_leaf(arch::kLastLevel, pa, enc_attrs_));
    return true;
  }

 public:
  /// Removes every mapping and annotation in [addr, addr+size): the range reads as empty
  /// entries afterwards; tables left empty are freed. Stage 2: a block partly in the range is
  /// split (break-before-make) and its rest kept, which may take pages from `mc`; without FWB,
  /// cacheable memory that was mapped is cleaned and invalidated to the point of coherency.
  /// Stage 1: a block partly in the range is refused with EINVAL (splitting a live EL2 block
  /// could unmap the code that runs). Errors as map(); the table unchanged on error.
  [[nodiscard]] Status unmap(u64 addr, u64 size, Memcache& mc) {
    if (Status st = check_range(addr, size); !st) return st;
    // One page (a hypercall's or a reclaim's) whose last-level table keeps other entries: no
    // split, no table freed, nothing above the entry changes, so skip the general walk.
    if (size == kPageSize) {
      if (const PageSlot slot = last_level_slot(addr); slot.ptep != nullptr && unmap_page_in_place(slot, addr))
        return {};
    }
    Content c{Content::Kind::invalid, 0, addr, 0, Prot{}, false, false, TlbPolicy::invalidate};
    return apply(c, addr, size, &mc);
  }
  /// unmap(ref.addr, one page, mc) for the page lookup_page() has just found (the table
  /// unchanged since: PageRef), with the same effects, barriers, TLB and cache maintenance and
  /// errors. Where the page's last-level entry is known and still holds what was found, and
  /// the call needs no split and frees no table, the entry is cleared there, without a walk;
  /// otherwise (a block to split, a table that empties, a contiguous run) the general path.
  [[nodiscard]] Status unmap_page(const PageRef& ref, Memcache& mc) {
    if (ref.ptep != nullptr && *ref.ptep == ref.leaf.entry && unmap_page_in_place(PageSlot{ref.ptep, ref.table_pa}, ref.addr))
      return {};
    return unmap(ref.addr, kPageSize, mc);
  }
  /// unmap() without a memcache: fails with ENOMEM (nothing changed) if a split is needed.
  [[nodiscard]] Status unmap(u64 addr, u64 size) {
    Memcache none;
    return unmap(addr, size, none);
  }

  /// Invalidates everything the TLB may hold for this table, and waits for it: what a caller
  /// does before it frees or reuses a table that was ever live (destroy()), or after it changed
  /// entries itself through walk(). Stage 2: DSB ISHST (the table's stores complete before the
  /// invalidation, B2.3), TLBI VMALLS12E1IS for the table's VMID (stage-1 and stage-2 entries of
  /// that VMID, D8.14 "TLB maintenance"; a combined entry is tagged with the VMID too), DSB ISH
  /// (the invalidation completes). Stage 1 at EL2: DSB ISHST, TLBI ALLE2IS (every EL2 entry:
  /// EL2 entries carry no ASID or VMID to narrow it to), DSB ISH, ISB (this PE's next
  /// instructions are fetched and translated without the old entries, D8.14 / B2.3 context
  /// synchronization). Errors: EINVAL for an empty (destroyed or moved-from) table.
  [[nodiscard]] Status flush_tlb() {
    if (root_pa_ == kNoRoot) return fail(Error::einval);
    plat_->barrier(arch::Barrier::dsb_ishst);
    if constexpr (kStage2) {
      plat_->tlbi(arch::Tlbi::vmalls12e1is, vmid_, 0, arch::kTlbiLevelUnknown);
      plat_->barrier(arch::Barrier::dsb_ish);
    } else {
      plat_->tlbi(arch::Tlbi::alle2is, 0, 0, arch::kTlbiLevelUnknown);
      plat_->barrier(arch::Barrier::dsb_ish);
      plat_->barrier(arch::Barrier::isb);
    }
    return {};
  }

  /// Declares the table never live again: from this call on, no VTTBR_EL2 / TTBR0_EL2 on any
  /// PE points to it (a torn-down guest: none of its vCPUs runs, and its VMID is not reused
  /// while the table exists) — the caller's promise. Invalidates everything the TLB holds for
  /// it once (flush_tlb()); after that no TLB can hold or fetch an entry of it (a TLB caches
  /// only what a walk through a live VTTBR/TTBR read; Arm ARM D8.14), so the changes that
  /// follow (a torn-down guest's pages given back one by one) issue no TLB invalidation, where
  /// each would otherwise take a TLBI by address, a TLBI VMALLE1IS and two DSBs. Cache
  /// maintenance is kept. Irreversible; the table is destroy()ed in the end as any other.
  /// Errors: those of flush_tlb().
  [[nodiscard]] Status retire() {
    if (Status st = flush_tlb(); !st) return st;
    retired_ = true;
    return {};
  }
  /// Whether retire() was called.
  [[nodiscard]] bool retired() const { return retired_; }

  /// Removes every table and frees the root. It does no TLB maintenance: the table must no
  /// longer be live (no VTTBR_EL2 / TTBR0_EL2 points to it on any PE), and if it ever was, call
  /// flush_tlb() first, or the TLBs may keep translations through pages that are freed and
  /// reused. The Table is empty afterwards; any further call fails with EINVAL.
  void destroy() {
    forget_slot();
    if (root_pa_ == kNoRoot) return;
    const u64 per_page = arch::entries_per_table(G);
    for (u64 i = 0; i < root_entries(); ++i) {
      const u64 page = root_pa_ + (i / per_page) * kPageSize;
      const u64 e = plat_->phys_to_virt(page)[i % per_page];
      if (start_level_ < arch::kLastLevel && arch::classify(e, G, start_level_) == arch::DescKind::table)
        free_subtree(next_table(e), start_level_ + 1);
    }
    plat_->free_pages(root_pa_, root_order_);
    root_pa_ = kNoRoot;
  }

  // ---- stage 2 only ---------------------------------------------------------------------------

  /// Writes invalid entries annotated with `owner` and the software bits `sw` over
  /// [addr, addr+size), replacing what was mapped there (valid-to-invalid: batched TLB
  /// invalidation). Uses the largest block-level entry the alignment allows (an invalid entry
  /// at level 1 annotates a whole GiB with the 4K granule) unless the force-page policy forbids
  /// it, and splits blocks partly in the range (keeping their rest). owner 0 with no software
  /// bits is the empty entry: the same as unmap(). Errors: EINVAL for an owner id beyond
  /// arch::kMaxOwnerId or software bits beyond SW0..SW3; otherwise as unmap(). The table
  /// unchanged on error.
  [[nodiscard]] Status set_owner(u64 addr, u64 size, arch::OwnerId owner, u8 sw_bits, Memcache& mc)
    requires kStage2
  {
    if (owner > arch::kMaxOwnerId || sw_bits >= (1u << kSwBits)) return fail(Error::einval);
    return annotate(addr, size, arch::InvalidDesc::annotation(owner, sw_bits), mc);
  }

  /// set_owner() for any well-formed annotation (the poisoned marker included). Errors: EINVAL
  /// for the locked marker (reserved to break-before-make) or bits outside the annotation
  /// layout; otherwise as set_owner().
  [[nodiscard]] Status annotate(u64 addr, u64 size, arch::InvalidDesc annotation, Memcache& mc)
    requires kStage2
  {
    if (Status st = check_range(addr, size); !st) return st;
    if (annotation.is_locked() || annotation.reserved_bits() != 0) return fail(Error::einval);
    Content c{Content::Kind::invalid, annotation.raw(), addr, 0,
              Prot{kPermNone, arch::MemType::normal_wb, annotation.sw()}, false, false, TlbPolicy::invalidate};
    return apply(c, addr, size, &mc);
  }

  /// Removes write permission from every valid leaf in [addr, addr+size), splitting blocks
  /// partly in the range (pages from `mc`); software bits and everything else are kept. The
  /// TLB is invalidated by the engine (batched) unless `tlb` is TlbPolicy::defer.
  [[nodiscard]] Status wrprotect(u64 addr, u64 size, Memcache& mc, TlbPolicy tlb = TlbPolicy::invalidate)
    requires kStage2
  {
    if (Status st = check_range(addr, size); !st) return st;
    Content c{Content::Kind::clear_bits, arch::S2ApWrite::kMask, addr, 0, Prot{}, false, false, tlb};
    return apply(c, addr, size, &mc);
  }

  /// Adds the permissions in `prot.perm` to the one leaf that maps `addr` (never splits, never
  /// removes a permission, never touches the memory type or the software bits). Software bits
  /// cannot be set or cleared through relax_perms: a prot with any software bit is EINVAL, as in
  /// Linux. Executable permission for device or non-cacheable memory is EINVAL. ENOENT if
  /// nothing valid maps `addr` (Linux: EAGAIN, letting the vCPU fault again). The stale
  /// TLB entry (with the old, smaller permissions) is invalidated unless `tlb` is defer; adding
  /// execute permission invalidates the instruction cache unless CTR_EL0.DIC. `check` is
  /// called with the leaf found (valid or not) before it is tested or changed; an error from it
  /// is returned (Walk::shared calls it before the prot is checked too). Walk::shared: as the enum says (EAGAIN if the entry changed
  /// between the read and the compare-and-swap; no permission is ever lost: the swap is from
  /// the value read, so the concurrent change stays and the caller's retry adds its own).
  template <Walk W = Walk::exclusive, typename Check = AcceptLeaf>
  [[nodiscard]] Status relax_perms(u64 addr, const Prot& prot, TlbPolicy tlb = TlbPolicy::invalidate,
                                   Check check = {})
    requires kStage2
  {
    if (ia_bits_ < 64 && addr >> ia_bits_) return fail(Error::erange);
    u64* ptep = nullptr;
    Leaf leaf{};
    if constexpr (W == Walk::shared) {
      if (root_pa_ == kNoRoot) return fail(Error::einval);
      if (contig_on()) return fail(Error::eopnotsupp);
      const SharedLeaf l = find_leaf_shared(addr);
      ptep = l.ptep;
      leaf = Leaf{l.entry, l.level, l.base, arch::level_size(G, l.level)};
      if (Status st = check(leaf.entry); !st) return st;
    }
    if (prot.sw != 0) return fail(Error::einval);
    if (prot.perm & ~kPermRWX) return fail(Error::einval);
    if constexpr (W == Walk::exclusive) {
      const Result<Leaf> found = lookup(addr);
      if (!found) return fail(found.error());
      leaf = *found;
      if (Status st = check(leaf.entry); !st) return st;
    }
    if (!arch::DescValid::get(leaf.entry)) return fail(Error::enoent);
    const Prot cur = Regime::decode(leaf.entry, fwb_);
    if ((prot.perm & kPermX) && cur.type != arch::MemType::normal_wb) return fail(Error::einval);
    u64 nv = leaf.entry;
    if (prot.perm & kPermR) nv = arch::S2ApRead::put(nv, 1);
    if (prot.perm & kPermW) nv = arch::S2ApWrite::put(nv, 1);
    if (prot.perm & kPermX) nv = arch::S2Xn::put(nv, static_cast<u64>(arch::S2XnKind::exec));
    if (nv == leaf.entry) return {};
    if constexpr (W == Walk::shared) {
      if (Regime::gains_exec(leaf.entry, nv)) icache_for(nv, leaf.level);
      if (!cas(ptep, leaf.entry, nv)) return fail(Error::eagain);
    } else {
      ptep = entry_ptr(addr, leaf.level);
      if (hinted(leaf.entry, leaf.level)) {  // a run changes whole or not at all
        break_run(ptep, leaf.level, leaf.base);
        leaf.entry = read_entry(ptep);
        nv &= ~kContig;
      }
      if (Regime::gains_exec(leaf.entry, nv)) icache_for(nv, leaf.level);
      write_inplace(ptep, leaf.entry, nv);
    }
    OpState s;
    s.policy = tlb;
    queue_tlbi(s, leaf.base, leaf.level, true);
    finish(s, true);
    return {};
  }

  /// Sets the access flag of the leaf that maps `addr` (no TLB maintenance is needed to add
  /// it). ENOENT if nothing valid maps `addr`. `check` as for relax_perms. Walk::shared: as
  /// the enum says (EAGAIN if the entry changed between the read and the compare-and-swap).
  template <Walk W = Walk::exclusive, typename Check = AcceptLeaf>
  [[nodiscard]] Status mkyoung(u64 addr, Check check = {})
    requires kStage2
  {
    if constexpr (W == Walk::shared) {
      if (ia_bits_ < 64 && addr >> ia_bits_) return fail(Error::erange);
      if (root_pa_ == kNoRoot) return fail(Error::einval);
      if (contig_on()) return fail(Error::eopnotsupp);
      const SharedLeaf l = find_leaf_shared(addr);
      if (Status st = check(l.entry); !st) return st;
      if (!arch::DescValid::get(l.entry)) return fail(Error::enoent);
      if (arch::S2Af::get(l.entry)) return {};
      if (!cas(l.ptep, l.entry, arch::S2Af::put(l.entry, 1))) return fail(Error::eagain);
    } else {
      const Result<Leaf> leaf = lookup(addr);
      if (!leaf) return fail(leaf.error());
      if (Status st = check(leaf->entry); !st) return st;
      if (!arch::DescValid::get(leaf->entry)) return fail(Error::enoent);
      if (arch::S2Af::get(leaf->entry)) return {};
      u64* const ptep = entry_ptr(addr, leaf->level);
      // The access flag is one of the bits a contiguous run's entries share: break it first.
      if (hinted(leaf->entry, leaf->level)) break_run(ptep, leaf->level, leaf->base);
      // Setting AF over a hardware update that set it too loses nothing: a plain store.
      write(ptep, arch::S2Af::put(read_entry(ptep), 1));
    }
    plat_->barrier(arch::Barrier::dsb_ishst);
    return {};
  }

  /// Whether any valid leaf in [addr, addr+size) has its access flag set; with `clear`, clears
  /// it on all of them (whole leaves: a block partly in the range is cleared entirely, as in
  /// Linux, since the flag belongs to the block). Software bits are kept. The TLB is invalidated
  /// for the leaves cleared unless `tlb` is defer. `check` is called with every entry that maps
  /// part of the range (valid or not) first; the first error it returns is returned and nothing
  /// is changed. Walk::shared: entries read atomically and cleared by compare-and-swap; one that
  /// changed meanwhile (another walker relaxed its permissions) is read again and cleared from
  /// its new value, so the call never fails for a concurrent change.
  template <Walk W = Walk::exclusive, typename Check = AcceptLeaf>
  [[nodiscard]] Result<bool> test_and_clear_young(u64 addr, u64 size, bool clear,
                                                  TlbPolicy tlb = TlbPolicy::invalidate, Check check = {})
    requires kStage2
  {
    if (Status st = check_range(addr, size); !st) return fail(st.error());
    OpState s;
    s.policy = tlb;
    s.op_lo = addr;
    s.op_hi = addr + size;
    if constexpr (W == Walk::shared) {
      if (contig_on()) return fail(Error::eopnotsupp);
      const u64 end = addr + size;
      for (u64 a = addr; a < end;) {
        const SharedLeaf l = find_leaf_shared(a);
        if (Status st = check(l.entry); !st) return fail(st.error());
        a = l.base + arch::level_size(G, l.level);
      }
      bool young = false;
      for (u64 a = addr; a < end;) {
        SharedLeaf l = find_leaf_shared(a);
        // Hardware only ever sets AF (ptguard sets no DBM), and other walkers change only
        // permissions and AF: retrying from the new value ends once nobody else changes it.
        while (arch::DescValid::get(l.entry) && arch::S2Af::get(l.entry)) {
          if (!clear) {
            young = true;
            break;
          }
          if (cas(l.ptep, l.entry, arch::S2Af::put(l.entry, 0))) {
            young = true;
            queue_tlbi(s, l.base, l.level, true);
            break;
          }
          l.entry = read_entry(l.ptep);
        }
        a = l.base + arch::level_size(G, l.level);
      }
      finish(s, young && clear);
      return young;
    } else {
      if constexpr (!__is_same(Check, AcceptLeaf)) {
        struct C {
          // The check sees each entry's value, never its pointer: it writes no entry.
          static constexpr unsigned visits() { return kVisitLeaf | kVisitReadOnly; }
          Check* check;
          Status leaf(VisitCtx& x) { return (*check)(x.old); }
        } cv{&check};
        if (Status st = walk_inner(addr, addr + size, cv); !st) return fail(st.error());
      }
      struct V {
        static constexpr unsigned visits() { return kVisitLeaf; }
        Table* t;
        OpState* s;
        bool clear;
        bool young = false;
        Status leaf(VisitCtx& x) {
          if (!arch::DescValid::get(x.old) || !arch::S2Af::get(x.old)) return {};
          young = true;
          if (clear) {
            if (t->hinted(x.old, x.level)) {  // the run shares its access flag: break it first
              t->break_run(x.ptep, x.level, x.base);
              x.old = read_entry(x.ptep);
            }
            // AF is 1: the hardware does not change the entry (it only sets AF), a plain store.
            t->write(x.ptep, arch::S2Af::put(x.old, 0));
            t->queue_tlbi(*s, x.base, x.level, true);
          }
          return {};
        }
      };
      V v{this, &s, clear};
      Status st = walk_inner(addr, addr + size, v);
      finish(s, v.young && clear);
      if (!st) return fail(st.error());
      return v.young;
    }
  }

  /// Splits every block in [addr, addr+size) one level down (a 1 GiB block into 2 MiB blocks),
  /// or down to pages with `to_pages`, through break-before-make; translations are unchanged.
  /// Pages from `mc`; ENOMEM (nothing changed) if it holds fewer than needed.
  [[nodiscard]] Status split(u64 addr, u64 size, Memcache& mc, bool to_pages = false)
    requires kStage2
  {
    if (Status st = check_range(addr, size); !st) return st;
    Content c{Content::Kind::split, 0, addr, 0, Prot{}, false, to_pages, TlbPolicy::invalidate};
    return apply(c, addr, size, &mc);
  }

  /// Exactly the table pages map() would take from a memcache now (0 if it would fail for
  /// another reason). Callers that must not fail later fill the memcache with this many.
  [[nodiscard]] Result<u32> pages_needed_for_map(u64 addr, u64 size, u64 pa, const Prot& prot,
                                                 const MapOptions& opts = {}) const {
    if (Status st = check_range(addr, size); !st) return fail(st.error());
    if (Status st = check_output(pa, size); !st) return fail(st.error());
    const Result<u64> attrs = regime_encode(prot);
    if (!attrs) return fail(attrs.error());
    return count_pages(leaf_content(addr, pa, prot, *attrs, opts.replace), addr, size);
  }

  /// Walks [addr, end) with a caller's visitor (see walker.hpp). The visitor must keep the
  /// table's counting rule if it changes entries; read-only visitors are always safe. The range
  /// is checked as map() checks its own (check_range), since the walker indexes tables with the
  /// address bits as they are: EINVAL for an empty table, for addr or end not page-aligned, or
  /// end below addr (a range that wrapped); ERANGE for end beyond the input-address size
  /// (1 << ia_bits()). An empty range (end == addr) visits nothing. Otherwise the first error a
  /// visitor returns, which stops the walk.
  template <typename V>
  [[nodiscard]] Status walk(u64 addr, u64 end, V& v) const {
    forget_slot();  // a caller's visitor may change the table
    if (root_pa_ == kNoRoot || end < addr || (addr & (kPageSize - 1)) != 0) return fail(Error::einval);
    if (end == addr) return {};
    if (Status st = check_range(addr, end - addr); !st) return st;
    return walk_inner(addr, end, v);
  }

 private:
  static constexpr u64 kNoRoot = ~u64{0};

  Table(P& plat, u64 root, unsigned order, unsigned ia, unsigned pa_bits, int start, bool fwb, bool walk_cmo,
        bool tlbi_range, u16 vmid, const TableOptions& opt, const arch::OaFormat& oa)
      : plat_(&plat),
        root_pa_(root),
        root_order_(static_cast<u8>(order)),
        ia_bits_(static_cast<u8>(ia)),
        pa_bits_(static_cast<u8>(pa_bits)),
        start_level_(static_cast<i8>(start)),
        fwb_(fwb),
        walk_cmo_(walk_cmo),
        tlbi_range_(tlbi_range),
        oa_(oa),
        vmid_(vmid),
        opt_(opt) {}

  // What an operation makes of its range.
  struct Content {
    enum class Kind : u8 {
      leaf,        // valid leaves mapping ia -> pa linearly, attributes `value`
      invalid,     // the invalid entry `value` (0: empty; else an annotation)
      clear_bits,  // valid leaves lose the bits `value` (a permission or the access flag)
      split,       // blocks become tables of the next level (or pages)
    } kind;
    u64 value;
    u64 ia;  // start of the range
    u64 pa;  // leaf: output address of `ia`
    Prot prot;
    bool replace;
    bool to_pages;
    TlbPolicy tlb;
    bool clean_d = false;  // leaf: new mappings need a D-cache clean to PoC (no FWB, cacheable)
    bool inval_i = false;  // leaf: new mappings need an I-cache invalidation (executable, no DIC)
  };

  [[nodiscard]] Content leaf_content(u64 addr, u64 pa, const Prot& prot, u64 attrs, bool replace) const {
    Content c{Content::Kind::leaf, attrs, addr, pa, prot, replace, false, TlbPolicy::invalidate};
    if constexpr (kStage2) {
      c.clean_d = opt_.cache_maintenance && !fwb_ && arch::is_cacheable(prot.type);
      c.inval_i = opt_.cache_maintenance && prot.executable() && !opt_.dic;
    }
    return c;
  }

  // Regime::encode, remembering the last Prot it encoded: callers map page after page with
  // the same few protections (a fault handler, a hypercall loop), and the encoding depends only
  // on the Prot and FWB, which is fixed for the table.
  // The hit is inline (every fast path calls it, nearly always with the last prot); a miss
  // encodes out of line.
  [[gnu::always_inline]] [[nodiscard]] Result<u64> encode(const Prot& prot) const {
    if (enc_valid_ && prot == enc_prot_) return enc_attrs_;
    return encode_miss(prot);
  }
  [[gnu::noinline]] [[nodiscard]] Result<u64> encode_miss(const Prot& prot) const {
    const Result<u64> attrs = regime_encode(prot);
    if (attrs) {
      enc_prot_ = prot;
      enc_attrs_ = *attrs;
      enc_cmo_ = new_leaf_needs_cmo(prot);
      enc_valid_ = true;
    }
    return attrs;
  }

  // Regime::encode without the attribute bits the address format takes: with DS = 1 bits [9:8]
  // are OA[51:50] and a leaf has no SH field (Arm ARM D8.3.1, "52-bit output addresses"; the
  // shareability is VTCR_EL2.SH0's / TCR_EL2.SH0's, which make_stage2_config sets Inner
  // Shareable). kOa48 and kOa52Lpa64 take no attribute bit: nothing changes for them.
  [[nodiscard]] Result<u64> regime_encode(const Prot& prot) const {
    const Result<u64> attrs = Regime::encode(prot, fwb_);
    if (!attrs) return attrs;
    return *attrs & ~oa_.hi_field;
  }

  // Whether a new leaf with `prot` needs cache maintenance (leaf_content's clean_d or inval_i),
  // without building the Content: the single-page fast path asks this first.
  [[nodiscard]] bool new_leaf_needs_cmo(const Prot& prot) const {
    if constexpr (kStage2)
      return opt_.cache_maintenance && ((!fwb_ && arch::is_cacheable(prot.type)) || (prot.executable() && !opt_.dic));
    else
      return false;
  }

  enum class Act : u8 {
    skip,       // nothing to do here
    descend,    // an existing table: its entries decide
    write,      // the entry is invalid: write `value` (a leaf or an invalid entry)
    inplace,    // a valid leaf keeps its translation; write `value` (perms, AF, sw changed)
    bbm,        // a valid leaf becomes another valid leaf: break-before-make
    unmap,      // a valid leaf becomes the invalid entry `value`
    zap,        // a table becomes `value` (leaf or invalid) and its subtree is freed
    new_table,  // an invalid entry becomes a table of copies of it
    split,      // a valid block becomes a table of the leaves it maps
  };
  struct Decision {
    Act act;
    u64 value;
    Error err;
    bool failed;
  };
  static constexpr Decision act(Act a, u64 v = 0) { return Decision{a, v, Error::einval, false}; }
  static constexpr Decision refuse(Error e) { return Decision{Act::skip, 0, e, true}; }

  // The most TLBI instructions by address (IPAS2E1IS, VALE2IS, or range pieces) one batch of
  // invalidations issues; a batch that would need more is one TLBI VMALLS12E1IS (stage 2) or
  // TLBI ALLE2IS (stage 1) instead. Without FEAT_TLBIRANGE that is 16 leaves; with it, 16
  // pieces, which cover any range of up to 3 * kTlbiRangeMaxPages pages (8 GiB each at 4K).
  static constexpr u32 kMaxTlbiOps = 16;

  struct OpState {
    // Pending invalidations, in the order the walk found them: each a range of input addresses
    // [addr, addr + size), either a run of leaves of one level (tlbi_level 0..3) or the span of
    // a table entry that was removed (kTlbiLevelUnknown: entries of any level, walk caches too).
    static constexpr u32 kMaxRanges = 16;
    static constexpr u32 kMaxFree = 32;
    u64 tlbi_addr[kMaxRanges];
    u64 tlbi_size[kMaxRanges];
    i8 tlbi_level[kMaxRanges];
    u32 ntlbi = 0;
    bool tlbi_all = false;
    // The operation's own range: with FEAT_TLBIRANGE a run may be widened inside it when that
    // saves instructions (every entry there is the operation's to change).
    u64 op_lo = 0;
    u64 op_hi = 0;
    u64 free_pa[kMaxFree];
    u32 nfree = 0;
    TlbPolicy policy = TlbPolicy::invalidate;
    // The contiguous run (TableOptions::contiguous) whose leaves this map writes hinted:
    // [hint_end - its size, hint_end) at hint_level, decided at its first entry.
    u64 hint_end = 0;
    int hint_level = -1;
  };

  // With non-cacheable table walks the MMU reads the root from memory, where the allocator's
  // zeroing may not be yet (it may still sit in the data cache, and memory hold whatever the
  // page held before): DC CVAC of every root page to the point of coherency (Arm ARM D7.5, data
  // cache maintenance by VA), then DSB ISH to complete it (a DC instruction is only known to be
  // complete after a DSB, D7.5), before the caller can make the root reachable (VTTBR_EL2 /
  // TTBR0_EL2).
  static void clean_new_root(P& plat, u64 root, unsigned order) {
    plat.cache_op(arch::CacheOp::dc_cvac, root, kPageSize << order);
    plat.barrier(arch::Barrier::dsb_ish);
  }

  // Every entry of every root page (those beyond the input-address size stay empty).
  [[nodiscard]] u64 root_entries() const { return u64{arch::entries_per_table(G)} << root_order_; }

  [[nodiscard]] Status check_range(u64 addr, u64 size) const {
    if (root_pa_ == kNoRoot) return fail(Error::einval);
    if (size == 0 || ((addr | size) & (kPageSize - 1)) != 0) return fail(Error::einval);
    if (addr + size < addr) return fail(Error::einval);
    if (addr + size > (u64{1} << ia_bits_)) return fail(Error::erange);
    return {};
  }
  [[nodiscard]] Status check_output(u64 pa, u64 size) const {
    if ((pa & (kPageSize - 1)) != 0 || pa + size < pa) return fail(Error::einval);
    if (pa + size > (u64{1} << pa_bits_)) return fail(Error::erange);
    return {};
  }

  [[nodiscard]] static constexpr bool is_table(u64 e, int level) {
    return level < arch::kLastLevel && arch::classify(e, G, level) == arch::DescKind::table;
  }
  [[nodiscard]] static constexpr bool is_valid_leaf(u64 e, int level) {
    const arch::DescKind k = arch::classify(e, G, level);
    return k == arch::DescKind::block || k == arch::DescKind::page;
  }
  // Leaves and table descriptors in the table's address format (oa_, chosen once at creation:
  // arch::OaFormat's encode and decode are branch-free, and with kOa48 the plain masks).
  [[nodiscard]] static constexpr u64 leaf_in(const arch::OaFormat& oa, int level, u64 pa, u64 attrs) {
    u64 raw = oa.encode(pa, arch::level_shift(G, level)) | arch::DescValid::make(1);
    if (level == arch::kLastLevel) raw |= arch::DescTypeBit::make(1);
    return raw | attrs;
  }
  [[nodiscard]] constexpr u64 make_leaf(int level, u64 pa, u64 attrs) const { return leaf_in(oa_, level, pa, attrs); }
  [[nodiscard]] constexpr u64 leaf_oa(u64 e, int level) const { return oa_.decode(e, arch::level_shift(G, level)); }
  [[nodiscard]] constexpr u64 next_table(u64 e) const { return arch::TableDesc(e).next_table(G, oa_); }
  // The attribute bits of a leaf: kLeafAttrMask less the bits the address format takes ([9:8]
  // with DS = 1).
  [[nodiscard]] constexpr u64 leaf_attr_mask() const { return kLeafAttrMask & ~oa_.hi_field; }

  // The value an entry at `level` covering `child_base` takes when its parent entry `parent`
  // (invalid, or a valid block at parent_level) is turned into a table.
  [[nodiscard]] constexpr u64 child_of(u64 parent, int parent_level, u64 parent_base, u64 child_base) const {
    if (!arch::DescValid::get(parent)) return parent;
    return make_leaf(parent_level + 1, leaf_oa(parent, parent_level) + (child_base - parent_base),
                     parent & leaf_attr_mask());
  }

  // ---- the decision for one entry ---------------------------------------------------------
  [[nodiscard]] Decision decide(const Content& c, u64 old, int level, u64 a, u64 b, u64 base) const {
    const u64 lsize = arch::level_size(G, level);
    const bool full = a == base && b == base + lsize;
    const bool table = is_table(old, level);
    // A reserved encoding (a block where none may be, 0b01 at the last level) is what the MMU
    // takes it for: an entry that faults. The engine never writes one; one found is replaced
    // like any other invalid entry.
    const bool valid = !table && is_valid_leaf(old, level);
    // The Contiguous bit is no part of what an entry maps: a hinted run is broken (its hint
    // cleared) before any of its entries changes (break_run()), and a new leaf gets it only as
    // it is written (contig_for()). So the decision is the one for the entry without it.
    if (valid) old &= ~kContig;
    switch (c.kind) {
      case Content::Kind::leaf: {
        const u64 pa = c.pa + (a - c.ia);
        const bool leaf_ok = full && arch::leaf_allowed(G, level) && (pa & (lsize - 1)) == 0 &&
                             (level == arch::kLastLevel || !opt_.force_page(a, b, c.prot, false));
        if (table) {
          if (leaf_ok && (c.replace || !subtree_has_valid(next_table(old), level + 1)))
            return act(Act::zap, make_leaf(level, pa, c.value));
          return act(Act::descend);
        }
        if (!valid) {
          if (leaf_ok) return act(Act::write, make_leaf(level, pa, c.value));
          return act(Act::new_table);
        }
        const bool same_oa = leaf_oa(old, level) + (a - base) == pa;
        const bool same_type = ((old ^ c.value) & leaf_attr_mask() & ~Regime::kInPlaceMask) == 0;
        if (same_oa && same_type) {
          if (((old ^ c.value) & Regime::kInPlaceMask) == 0) return act(Act::skip);
          if (leaf_ok) return act(Act::inplace, (old & ~Regime::kInPlaceMask) | (c.value & Regime::kInPlaceMask));
          if (!kStage2) return refuse(Error::einval);
          return act(Act::split);
        }
        if (!kStage2) return refuse(full ? Error::eexist : Error::einval);
        if (!c.replace) return refuse(Error::eexist);
        if (leaf_ok) return act(Act::bbm, make_leaf(level, pa, c.value));
        return act(Act::split);
      }
      case Content::Kind::invalid: {
        const bool inv_ok = full && (c.value == 0 || (arch::leaf_allowed(G, level) &&
                                                      (level == arch::kLastLevel ||
                                                       !opt_.force_page(a, b, c.prot, true))));
        if (table) return inv_ok ? act(Act::zap, c.value) : act(Act::descend);
        if (!valid) {
          if (old == c.value) return act(Act::skip);
          if (inv_ok) return act(Act::write, c.value);
          return act(Act::new_table);
        }
        if (inv_ok) return act(Act::unmap, c.value);
        if (!kStage2) return refuse(Error::einval);
        return act(Act::split);
      }
      case Content::Kind::clear_bits: {
        if (table) return act(Act::descend);
        if (!valid) return act(Act::skip);
        const u64 nv = old & ~c.value;
        if (nv == old) return act(Act::skip);
        if (full) return act(Act::inplace, nv);
        return act(Act::split);
      }
      case Content::Kind::split: {
        if (table) return act(Act::descend);
        if (!valid || level == arch::kLastLevel) return act(Act::skip);
        return act(Act::split);
      }
    }
    return refuse(Error::einval);
  }

  [[nodiscard]] bool subtree_has_valid(u64 table_pa, int level) const {
    const u64* t = plat_->phys_to_virt(table_pa);
    for (u64 i = 0; i < arch::entries_per_table(G); ++i) {
      if (!arch::DescValid::get(t[i])) continue;
      if (!is_table(t[i], level)) return true;
      if (subtree_has_valid(next_table(t[i]), level + 1)) return true;
    }
    return false;
  }

  // Pages a fresh table (from new_table or split of `parent` at parent_level) needs for
  // [a, b), itself included. At the last level every decision writes in place: one page.
  [[nodiscard]] Result<u32> simulate_subtree(const Content& c, u64 parent, int parent_level, u64 parent_base,
                                             u64 a, u64 b) const {
    const int level = parent_level + 1;
    if (level == arch::kLastLevel) return 1;
    if (c.kind == Content::Kind::split && !c.to_pages) return 1;  // one level down only
    if (children_all_leaves(c, parent_level, parent_base, a, b)) return 1;
    const u64 cs = arch::level_size(G, level);
    u32 pages = 1;
    for (u64 cb = a & ~(cs - 1); cb < b; cb += cs) {
      const u64 ca = cb > a ? cb : a;
      const u64 ce = cb + cs < b ? cb + cs : b;
      const u64 child = child_of(parent, parent_level, parent_base, cb);
      const Decision d = decide(c, child, level, ca, ce, cb);
      if (d.failed) return fail(d.err);
      if (d.act == Act::new_table || d.act == Act::split) {
        const Result<u32> sub = simulate_subtree(c, child, level, cb, ca, ce);
        if (!sub) return sub;
        pages += *sub;
      }
    }
    return pages;
  }

  // ---- the two passes -----------------------------------------------------------------------
  [[nodiscard]] Result<u32> count_pages(const Content& c, u64 addr, u64 size) const {
    struct V {
      static constexpr unsigned visits() { return kVisitLeaf | kVisitTablePre | kVisitLeafRun; }
      const Table* t;
      const Content* c;
      u32 pages = 0;
      Status leaf(VisitCtx& x) { return visit(x); }
      Status table_pre(VisitCtx& x) { return visit(x); }
      Status visit(VisitCtx& x) {
        const Decision d = t->decide(*c, x.old, x.level, x.addr, x.end, x.base);
        if (d.failed) return fail(d.err);
        if (d.act == Act::new_table || d.act == Act::split) {
          const Result<u32> sub = t->simulate_subtree(*c, x.old, x.level, x.base, x.addr, x.end);
          if (!sub) return fail(sub.error());
          pages += *sub;
        }
        if (d.act == Act::zap) x.descend = false;
        return {};
      }
      // The last level needs no pages; only refusals matter, and only a mapping can be refused
      // there (a different translation: EEXIST). An empty entry refuses nothing.
      Status leaf_run(u64* table, u64 idx, u64 n, u64 addr, u64 table_pa) {
        constexpr u64 kPg = kPageSize;
        if (c->kind != Content::Kind::leaf) return {};
        u64 pa = c->pa + (addr - c->ia);
        for (u64 i = 0; i < n; ++i, addr += kPg, pa += kPg) {
          const u64 old = table[idx + i];
          if (old == 0) continue;
          // The same translation (a state or permission change): nothing to refuse.
          if ((old & 0b11) == 0b11 && ((old ^ t->make_leaf(arch::kLastLevel, pa, c->value)) & ~Regime::kInPlaceMask) == 0)
            continue;
          VisitCtx x{table + idx + i, old, addr, addr + kPg, addr, table_pa, arch::kLastLevel, true};
          if (Status st = visit(x); !st) return st;
        }
        return {};
      }
    } v{this, &c};
    if (Status st = walk_inner(addr, addr + size, v); !st) return fail(st.error());
    return v.pages;
  }

  [[nodiscard]] Status apply(const Content& c, u64 addr, u64 size, Memcache* mc) {
    forget_slot();
    const Result<u32> need = count_pages(c, addr, size);
    if (!need) return fail(need.error());
    if (*need > 0 && (mc == nullptr || mc->size() < *need)) return fail(Error::enomem);
    struct V {
      static constexpr unsigned visits() { return kVisitLeaf | kVisitTablePre | kVisitTablePost | kVisitLeafRun; }
      Table* t;
      const Content* c;
      Memcache* mc;
      OpState* s;
      bool wrote = false;
      // Split (to the next level only): entries of tables this walk created one level down
      // are left as they are.
      u64 fresh_end = 0;
      int fresh_level = -1;
      Status leaf(VisitCtx& x) { return t->apply_entry(*c, *mc, *s, x, wrote, fresh_end, fresh_level); }
      Status table_pre(VisitCtx& x) { return t->apply_entry(*c, *mc, *s, x, wrote, fresh_end, fresh_level); }
      Status table_post(VisitCtx& x) {
        if (c->kind == Content::Kind::invalid && c->value == 0) t->free_if_empty(*s, x);
        return {};
      }
      // The last level, a table at a time: the common cases in a tight loop (an empty entry
      // gets its leaf or annotation; a valid leaf loses the bits to clear), anything else
      // through apply_entry like any other entry.
      Status leaf_run(u64* table, u64 idx, u64 n, u64 addr, u64 table_pa) {
        constexpr u64 kPg = kPageSize;
        const Content& cc = *c;
        u32 counted = 0;
        u64 i = 0;  // entries done
        // The hot cases with everything in locals and no out-of-line call in the loop (cacheable
        // walks; new mappings only without cache maintenance); the first entry they do not
        // cover ends them, and the general loop below goes on from there.
        // (Not with the contiguous option: its runs are formed and broken entry by entry below.)
        if (!t->walk_cmo_ && !t->contig_on()) {
          u64* const e = table + idx;
          P& plat = *t->plat_;
          if (cc.kind == Content::Kind::leaf) {
            const u64 attrs = cc.value;
            const arch::OaFormat oa = t->oa_;  // in registers: the stores below may alias *t
            u64 pa = cc.pa + (addr - cc.ia);
            if (!cc.clean_d && !cc.inval_i) {  // new mappings that need no cache maintenance
              for (; i < n && e[i] == 0; ++i, pa += kPg) plat.write_desc(e + i, leaf_in(oa, arch::kLastLevel, pa, attrs));
              counted = static_cast<u32>(i);
            }
            // Then valid pages keeping their translation (a state or permission change over a
            // page-mapped range): in place.
            if (i < n && (e[i] & 0b11) == 0b11) {
              for (; i < n; ++i, pa += kPg) {
                const u64 old = e[i];
                const u64 nv = leaf_in(oa, arch::kLastLevel, pa, attrs);
                if ((old & 0b11) != 0b11 || ((old ^ nv) & ~Regime::kInPlaceMask) != 0) break;
                if (old == nv) continue;
                if (kStage2 && Regime::gains_exec(old, nv)) break;  // gains execute: general path
                plat.write_desc(e + i, nv);
                wrote = true;
                if (((old ^ nv) & Regime::kPermMask) != 0 && Regime::reduces_perms(old, nv))
                  t->queue_tlbi(*s, addr + i * kPg, arch::kLastLevel, true);
              }
            }
          } else if (cc.kind == Content::Kind::invalid && cc.value != 0) {
            const u64 v = cc.value;
            for (; i < n && e[i] == 0; ++i) plat.write_desc(e + i, v);
            counted = static_cast<u32>(i);
          } else if (cc.kind == Content::Kind::clear_bits) {
            const u64 m = cc.value;
            // Clearing a permission bit reduces, execute-never bits included: with FEAT_XNX,
            // clearing XN[0] turns 0b11 (EL1 may execute) into 0b10 (neither may; D8.4.2).
            const bool reduces = (m & Regime::kPermMask) != 0;
            constexpr u32 kKeep = kMaxTlbiOps;
            u64 changed_at[kKeep];
            u32 changed = 0;
            u64 first = 0, last = 0;
            // A run where every entry is a valid page (0b11 at the last level, Arm ARM D8.3.1)
            // holding every bit to clear (a page-mapped range write-protected whole): every
            // entry changes. Found read-only first (the AND of all the entries has the bits),
            // then stored without a test per entry, and invalidated below like any run whose
            // pages all changed. Only for runs longer than kKeep, where the invalidation does
            // not read changed_at (one range, or with no FEAT_TLBIRANGE, the whole VMID).
            const auto every_entry_has = [&](u64 bits) {
              u64 all = ~u64{0};
              for (u64 j = i; j < n; ++j) all &= e[j];
              return (all & bits) == bits;
            };
            // With hardware AF management, only a run whose entries all have AF set (the MMU
            // leaves those alone) is stored this way; one with AF 0 anywhere goes to the loop
            // below, which keeps an AF the MMU sets meanwhile (write_inplace()).
            const u64 need_af = t->ha_ ? arch::S2Af::kMask : 0;
            if (n - i > kKeep && (m & 0b11) == 0 && every_entry_has(m | 0b11 | need_af)) {
              for (u64 j = i; j < n; ++j) plat.write_desc(e + j, e[j] & ~m);
              changed = static_cast<u32>(n - i);
              first = addr + i * kPg;
              last = addr + (n - 1) * kPg;
              i = n;
            }
            for (; i < n; ++i) {
              const u64 old = e[i];
              const u64 nv = old & ~m;
              if ((old & 0b11) != 0b11 || nv == old) continue;  // only valid pages change
              if (need_af & ~old)
                t->write_inplace(e + i, old, nv);
              else
                plat.write_desc(e + i, nv);
              if (changed < kKeep) changed_at[changed] = addr + i * kPg;
              if (changed == 0) first = addr + i * kPg;
              last = addr + i * kPg;
              ++changed;
            }
            if (changed != 0) wrote = true;
            if (reduces && changed != 0) {
              if (t->tlbi_range_) {
                // One run from the first page changed to the last (the pages between lie in
                // the operation's range: invalidating them too costs no instruction).
                t->queue_range(*s, first, last + kPg - first, arch::kLastLevel, true);
              } else if (changed > kKeep) {
                if (s->policy != TlbPolicy::defer) s->tlbi_all = true;
              } else {
                for (u32 j = 0; j < changed; ++j) t->queue_tlbi(*s, changed_at[j], arch::kLastLevel, true);
              }
            }
            return {};
          }
          addr += i * kPg;
        }
        for (; i < n; ++i, addr += kPg) {
          u64* ptep = table + idx + i;
          const u64 old = *ptep;
          if (cc.kind == Content::Kind::leaf && old == 0) {
            const u64 leaf = t->make_leaf(arch::kLastLevel, cc.pa + (addr - cc.ia), cc.value);
            t->cmo_new(cc, leaf, arch::kLastLevel);
            t->write(ptep, leaf | t->contig_for(*s, cc, ptep, arch::kLastLevel, addr));
            ++counted;
            continue;
          }
          if (cc.kind == Content::Kind::invalid && cc.value != 0 && old == 0) {
            t->write(ptep, cc.value);
            ++counted;
            continue;
          }
          if (cc.kind == Content::Kind::clear_bits && arch::DescValid::get(old)) {
            u64 nv = old & ~cc.value;
            if (nv != old) {
              u64 cur = old;
              if (t->hinted(old, arch::kLastLevel)) {
                t->break_run(ptep, arch::kLastLevel, addr);
                cur = read_entry(ptep);
                nv = cur & ~cc.value;
              }
              t->write_inplace(ptep, cur, nv);
              if (Regime::reduces_perms(old, nv)) t->queue_tlbi(*s, addr, arch::kLastLevel, true);
              wrote = true;
            }
            continue;
          }
          VisitCtx x{ptep, old, addr, addr + kPg, addr, table_pa, arch::kLastLevel, true};
          if (Status st = t->apply_entry(cc, *mc, *s, x, wrote, fresh_end, fresh_level); !st) return st;
        }
        for (u32 j = 0; j < counted; ++j) t->plat_->get_page(table_pa);
        if (counted != 0) wrote = true;
        return {};
      }
    };
    OpState s;
    s.policy = c.tlb;
    s.op_lo = addr;
    s.op_hi = addr + size;
    V v{this, &c, mc, &s};
    const Status st = walk_inner(addr, addr + size, v);
    finish(s, v.wrote);
    return st;
  }

  Status apply_entry(const Content& c, Memcache& mc, OpState& s, VisitCtx& x, bool& wrote, u64& fresh_end,
                     int& fresh_level) {
    if (c.kind == Content::Kind::split && !c.to_pages && x.level == fresh_level && x.addr < fresh_end)
      return {};
    Decision d = decide(c, x.old, x.level, x.addr, x.end, x.base);
    if (d.failed) return fail(d.err);  // cannot happen: the counting pass saw the same entries
    if (d.act != Act::skip && d.act != Act::descend && hinted(x.old, x.level)) {
      // Any change to an entry of a contiguous run: the whole run loses its hint first
      // (break-before-make over the run), then the entry changes as decided without it.
      break_run(x.ptep, x.level, x.base);
      x.old = *x.ptep;
      d = decide(c, x.old, x.level, x.addr, x.end, x.base);
    }
    switch (d.act) {
      case Act::skip:
      case Act::descend:
        return {};
      case Act::write:
        if (arch::DescValid::get(d.value)) {
          cmo_new(c, d.value, x.level);
          d.value |= contig_for(s, c, x.ptep, x.level, x.base);
        }
        set(x, d.value);
        break;
      case Act::inplace:
        if (kStage2 && Regime::gains_exec(x.old, d.value)) icache_for(d.value, x.level);
        write_inplace(x.ptep, x.old, d.value);
        if (Regime::reduces_perms(x.old, d.value)) queue_tlbi(s, x.base, x.level, true);
        break;
      case Act::bbm:
        break_entry(x, false);
        cmo_new(c, d.value, x.level);
        write(x.ptep, d.value);
        break;
      case Act::unmap:
        set(x, d.value);
        queue_tlbi(s, x.base, x.level, false);
        if (kStage2 && !fwb_ && opt_.cache_maintenance && Regime::decode(x.old, fwb_).type == arch::MemType::normal_wb) {
          // Without FWB, clean the data to the point of coherency, once no translation can
          // dirty it again.
          flush(s);
          plat_->cache_op(arch::CacheOp::dc_civac, leaf_oa(x.old, x.level), arch::level_size(G, x.level));
        }
        break;
      case Act::zap:
        zap(c, x, d.value);
        break;
      case Act::new_table:
      case Act::split: {
        const Result<u64> page = mc.pop(*plat_);
        if (!page) return fail(page.error());  // cannot happen: counted
        // Where every entry of the new table takes the operation's own leaf (the range covers
        // it all, each child can be a leaf), the table is built with them before it goes live:
        // no entry of it is visited, nothing written twice, no break-before-make inside it.
        const bool direct = (x.old == 0 || d.act == Act::split) &&
                            children_all_leaves(c, x.level, x.base, x.addr, x.end);
        if (direct) {
          // A split keeping the translation needs no cache maintenance; a new one does.
          const bool same = d.act == Act::split && leaf_oa(x.old, x.level) == c.pa + (x.base - c.ia) &&
                            ((x.old ^ c.value) & leaf_attr_mask() & ~Regime::kInPlaceMask) == 0;
          fill_leaves(c, *page, x.level + 1, x.base, !same);
          x.descend = false;
        } else {
          // A split keeps the block's runs where the operation does not reach (contig_runs).
          fill_table(*page, x.old, x.level, x.base, d.act == Act::split ? contig_runs(s) : ContigRuns{});
        }
        const u64 desc = arch::TableDesc::make(G, *page, oa_).raw();
        if (d.act == Act::split) {
          // Break-before-make's DSB ISHST, after the fill and before the link, orders the new
          // table's entries before it: no barrier of its own. With non-cacheable walks the page
          // is cleaned whole first, and break-before-make's DSB ISH completes the clean.
          if (walk_cmo_) plat_->cache_op(arch::CacheOp::dc_cvac, *page, kPageSize);
          break_entry(x, false);
          write(x.ptep, desc);
          fresh_end = x.base + arch::level_size(G, x.level);
          fresh_level = x.level + 1;
        } else {
          publish_table(*page);
          set(x, desc);
        }
        break;
      }
    }
    wrote = true;
    return {};
  }

  // A fresh table page (zeroed by the allocator, then filled) is about to be linked into the
  // live table by one descriptor store: a walker on another PE that reads the new descriptor
  // must then read the table's entries as written, not what the page held before. Stores by
  // one PE are not observed in program order by other observers without a barrier (Arm ARM
  // B2.3, the ordering model; hardware table walks are observers too, chapter D8), so DMB ISHST orders the
  // zeroing and filling stores before the link. One barrier per new table, and no wait.
  // With non-cacheable table walks the walker reads the page from memory, not through the
  // caches: the whole page is cleaned to the point of coherency (DC CVAC, D7.5; its zeroed
  // entries too, not only those written: memory may still hold the page's old contents), and
  // DSB ISH waits for the clean to complete before the link (it also orders the stores, so no
  // DMB is needed then). The entries of a fresh table are stored without a clean each (fill_*).
  void publish_table(u64 page) {
    if (walk_cmo_) {
      plat_->cache_op(arch::CacheOp::dc_cvac, page, kPageSize);
      plat_->barrier(arch::Barrier::dsb_ish);
    } else {
      plat_->barrier(arch::Barrier::dmb_ishst);
    }
  }

  // ---- compare-and-swap (shared walkers, the hardware access-flag update) -------------------

  // An entry read once, whole (a 64-bit single-copy-atomic load, Arm ARM B2.2.1), where
  // another CPU or the MMU may write it at the same time.
  [[nodiscard]] static u64 read_entry(const u64* ptep) { return __atomic_load_n(ptep, __ATOMIC_RELAXED); }

  // Stores `nv` at `ptep` only if it still holds `old`, as one atomic read-modify-write (CASAL
  // or an LDXR/STXR loop; the MMU's hardware access-flag update is atomic with respect to it:
  // Arm ARM D8.5, the Access flag and its hardware management, B2.2.1 single-copy atomicity).
  // Relaxed: the barriers that order a descriptor store (DSB ISHST before a TLBI, finish())
  // follow it as they follow write(). A platform may supply cmpxchg_desc(ptep, old, nv) (the
  // simulator logs it as a write); otherwise the compiler's builtin. True if it stored.
  [[nodiscard]] bool cas(u64* ptep, u64 old, u64 nv) {
    bool ok;
    if constexpr (requires { plat_->cmpxchg_desc(ptep, old, nv); })
      ok = plat_->cmpxchg_desc(ptep, old, nv);
    else
      ok = __atomic_compare_exchange_n(ptep, &old, nv, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    if (ok && walk_cmo_) plat_->cache_op(arch::CacheOp::dc_cvac, plat_->virt_to_phys(ptep), sizeof(u64));
    return ok;
  }

  // An in-place change of the valid leaf `old` at `ptep` to `nv` (the same translation) under
  // the exclusive side. The one writer that can race with it is the MMU: with hardware
  // access-flag management on (VTCR_EL2.HA / TCR_EL2.HA, FEAT_HAFDBS) a walk that uses a
  // leaf whose AF is 0 sets AF in memory (D8.5), and a plain store of a value computed
  // from the old entry would clear it again: the access is forgotten (a page aged as unused
  // that the guest is using). The hardware only ever sets AF (ptguard never sets DBM, so it
  // never changes permissions), so there is a race only when the old AF is 0 and HA is on;
  // then a compare-and-swap from `old`, and if it fails, the entry now is `old` with AF set:
  // `nv` with AF set, from the new value. Otherwise one plain store, as before.
  void write_inplace(u64* ptep, u64 old, u64 nv) {
    constexpr u64 kAf = arch::S2Af::kMask;  // AF is bit 10 in both regimes' leaves (D8.3)
    if (!ha_ || (old & kAf) != 0) {
      write(ptep, nv);
      return;
    }
    while (!cas(ptep, old, nv)) {
      const u64 cur = read_entry(ptep);
      nv |= cur & kAf;
      old = cur;
    }
  }

  // The entry that maps `addr` as a shared walker finds it: the descent of last_level_slot()
  // with every entry read atomically, stopping at the first that is not a table, and nothing
  // remembered (the remembered slot belongs to the exclusive side). Table entries do not
  // change under the shared side; leaves may, so the leaf's value is the one read here, and a
  // change made from it goes through cas().
  struct SharedLeaf {
    u64* ptep;
    u64 entry;
    int level;
    u64 base;
  };
  [[nodiscard]] SharedLeaf find_leaf_shared(u64 addr) const {
    int level = start_level_;
    const unsigned shift = arch::level_shift(G, level);
    u64 table_pa = root_pa_ + ((addr >> shift) >> arch::bits_per_level(G)) * kPageSize;
    while (true) {
      u64* const ptep = plat_->phys_to_virt(table_pa) + arch::level_index(G, level, addr);
      const u64 e = read_entry(ptep);
      if (level == arch::kLastLevel || !is_table(e, level))
        return SharedLeaf{ptep, e, level, addr & ~(arch::level_size(G, level) - 1)};
      table_pa = next_table(e);
      ++level;
    }
  }

  // Every descriptor store into a reachable table. With non-cacheable table walks the MMU reads
  // tables from memory, so each write is cleaned to the point of coherency as well (a fresh
  // table's entries are stored before it is linked, and cleaned with it: publish_table()).
  void write(u64* ptep, u64 value) {
    plat_->write_desc(ptep, value);
    if (walk_cmo_) plat_->cache_op(arch::CacheOp::dc_cvac, plat_->virt_to_phys(ptep), sizeof(u64));
  }

  // Whether every entry of a fresh table below the entry at `parent_level` covering
  // `parent_base` can hold `c`'s mapping as a leaf: the range covers the whole entry, the next
  // level holds leaves, the output address is aligned to them and the force-page policy allows
  // blocks there. Then the table needs no table below it, and can be filled in one loop.
  [[nodiscard]] bool children_all_leaves(const Content& c, int parent_level, u64 parent_base, u64 a, u64 b) const {
    if (c.kind != Content::Kind::leaf) return false;
    const int level = parent_level + 1;
    const u64 cs = arch::level_size(G, level);
    if (a != parent_base || b - a != arch::level_size(G, parent_level) || !arch::leaf_allowed(G, level)) return false;
    if (((c.pa + (a - c.ia)) & (cs - 1)) != 0) return false;
    if (level == arch::kLastLevel || opt_.force_page.fn == nullptr) return true;
    for (u64 cb = a; cb < b; cb += cs)
      if (opt_.force_page(cb, cb + cs, c.prot, false)) return false;
    return true;
  }

  // Fills a fresh (zeroed) table at `level` with `c`'s leaves for the whole range it covers.
  void fill_leaves(const Content& c, u64 page, int level, u64 base, bool cmo = true) {
    u64* const t = plat_->phys_to_virt(page);
    const u64 cs = arch::level_size(G, level);
    const u64 first = c.pa + (base - c.ia);
    constexpr u64 n = arch::entries_per_table(G);
    // The page is not linked yet: plain stores, no clean of each entry even with non-cacheable
    // walks (publish_table() or the split path cleans the whole page before the link).
    // With a 52-bit format, a run whose addresses cross into the moved bits (2^50 with DS, 2^48
    // with FEAT_LPA's 64K) cannot be built by adding to the first leaf: one leaf at a time.
    const bool crosses = ((first ^ (first + (n - 1) * cs)) & ~oa_.in_place) != 0;
    // A table built whole is made of whole runs: with the contiguous option, each is hinted
    // when the output address is aligned to the run (the entries are not live yet: nothing to
    // break).
    const u64 hint = contig_on() && arch::contiguous_entries(G, level) != 0 &&
                             (first & (arch::contiguous_size(G, level) - 1)) == 0
                         ? kContig
                         : 0;
    if ((cmo && (c.clean_d || c.inval_i)) || crosses) {
      u64 pa = first;
      for (u64 i = 0; i < n; ++i, pa += cs) {
        const u64 leaf = make_leaf(level, pa, c.value);
        if (cmo) cmo_new(c, leaf, level);
        plat_->write_desc(t + i, leaf | hint);
      }
    } else {
      // The common case, nothing but stores: the leaf of entry i is the first one plus i
      // blocks, since the output address is the only field that differs.
      P& plat = *plat_;
      const u64 leaf0 = make_leaf(level, first, c.value) | hint;
      for (u64 i = 0; i < n; ++i) plat.write_desc(t + i, leaf0 + i * cs);
    }
    for (u64 i = 0; i < n; ++i) plat_->get_page(page);
  }

  // Writes `nv` over the entry, keeping its table's count (+1 for empty -> non-empty, -1 back).
  void set(VisitCtx& x, u64 nv) {
    write(x.ptep, nv);
    if (x.old == 0 && nv != 0) {
      plat_->get_page(x.table_pa);
    } else if (x.old != 0 && nv == 0) {
      (void)plat_->put_page(x.table_pa);
    }
  }

  // ---- the Contiguous bit (Arm ARM D8.6.1) -------------------------------------------------
  // Bit 52 of a block or page descriptor at both stages.
  static constexpr u64 kContig = arch::S2Contiguous::kMask;
  static_assert(arch::S1Contiguous::kMask == arch::S2Contiguous::kMask);
  // break_run() keeps a run's entries on the stack: the last level's runs are the longest.
  static_assert(arch::contiguous_entries(G, 1) <= arch::contiguous_entries(G, arch::kLastLevel) &&
                arch::contiguous_entries(G, 2) <= arch::contiguous_entries(G, arch::kLastLevel));

  // Whether this table forms contiguous runs (TableOptions::contiguous, stage 2 only).
  [[nodiscard]] bool contig_on() const { return kStage2 && opt_.contiguous; }

  // A valid leaf with the hint: one entry of a contiguous run.
  [[nodiscard]] static constexpr bool hinted(u64 e, int level) {
    return (e & kContig) != 0 && !is_table(e, level) && is_valid_leaf(e, level);
  }

  // The hint for the new leaf `c` writes at `addr` (level `level`, entry `ptep`): kContig when
  // the leaf belongs to a run this operation writes whole. Decided at the run's first entry:
  // the run lies inside the operation's range, its first output address is aligned to the
  // run's size (so all of them are consecutive from an aligned start: c maps linearly), and
  // every entry of it is invalid now (each becomes one of c's leaves, with c's attributes; none
  // is live, so no break-before-make) and may be a leaf (the force-page policy allows each
  // block). The later entries of that run then get the hint as the walk reaches them.
  [[nodiscard]] u64 contig_for(OpState& s, const Content& c, const u64* ptep, int level, u64 addr) const {
    if (!contig_on() || c.kind != Content::Kind::leaf) return 0;
    const unsigned n = arch::contiguous_entries(G, level);
    if (n == 0) return 0;
    const u64 lsize = arch::level_size(G, level);
    const u64 rsize = arch::contiguous_size(G, level);
    if (level == s.hint_level && addr < s.hint_end && addr >= s.hint_end - rsize) return kContig;
    if ((addr & (rsize - 1)) != 0 || addr < s.op_lo || addr + rsize > s.op_hi || addr + rsize < addr) return 0;
    if (((c.pa + (addr - c.ia)) & (rsize - 1)) != 0) return 0;
    for (unsigned j = 0; j < n; ++j) {
      if (arch::DescValid::get(ptep[j])) return 0;  // a live entry (or a table): not formed
      if (level != arch::kLastLevel && opt_.force_page(addr + j * lsize, addr + (j + 1) * lsize, c.prot, false))
        return 0;
    }
    s.hint_end = addr + rsize;
    s.hint_level = level;
    return kContig;
  }

  // Where fill_table() may hint a split block's runs: outside [lo, hi), the operation's range.
  struct ContigRuns {
    bool on = false;
    u64 lo = 0;
    u64 hi = 0;
  };
  [[nodiscard]] ContigRuns contig_runs(const OpState& s) const {
    return ContigRuns{contig_on() && opt_.contiguous_on_split, s.op_lo, s.op_hi};
  }

  // Clears the hint of the whole contiguous run that holds the entry `ptep` (a hinted leaf at
  // `level` covering `addr`), before any of the run's entries changes: D8.6.1 requires the
  // run's entries to agree, and changing the bit itself needs break-before-make (D8.16.1), so
  // the run is broken as one: every entry written invalid; DSB ISHST; the TLB invalidated over
  // the run's whole input range with the level hint (flush(): by range with FEAT_TLBIRANGE,
  // else one TLBI per entry, or the whole VMID past kMaxTlbiOps); DSB ISH; then each entry
  // rewritten as it was, without the hint. The table's counts do not change (every entry is
  // non-empty before and after). The caller then applies its change to the one entry.
  void break_run(u64* ptep, int level, u64 addr) {
    const unsigned n = arch::contiguous_entries(G, level) != 0 ? arch::contiguous_entries(G, level) : 1;
    const u64 lsize = arch::level_size(G, level);
    u64* const first = ptep - (arch::level_index(G, level, addr) & (n - 1));
    const u64 base = addr & ~(u64{n} * lsize - 1);
    u64 saved[arch::contiguous_entries(G, arch::kLastLevel)];
    for (unsigned j = 0; j < n; ++j) {
      saved[j] = first[j];
      write(first + j, 0);
    }
    OpState s;
    s.op_lo = base;
    s.op_hi = base + u64{n} * lsize;
    queue_range(s, base, u64{n} * lsize, level, false);
    flush(s);
    for (unsigned j = 0; j < n; ++j) write(first + j, saved[j] & ~kContig);
  }

  // A fresh table below `parent` (an invalid entry, copied to every child, or a valid block,
  // whose leaves the children become), with its count.
  // With the contiguous option, a valid block split into a fresh table gives its leaves the
  // hint run by run, for the runs that lie wholly outside `runs` (the operation's range, whose
  // entries the walk changes next; a change there would break the run at once). The leaves of
  // a block are identical and consecutive from an address aligned to the block, so every run
  // of them is well formed (D8.6.1), and the table is not linked yet: nothing to break.
  void fill_table(u64 page, u64 parent, int level, u64 base, ContigRuns runs = {}) {
    if (parent == 0) return;  // the page is zeroed already
    u64* t = plat_->phys_to_virt(page);
    const u64 cs = arch::level_size(G, level + 1);
    const u64 rsize = arch::contiguous_size(G, level + 1);
    const bool hint = runs.on && rsize != 0 && arch::DescValid::get(parent);
    for (u64 i = 0; i < arch::entries_per_table(G); ++i) {
      u64 child = child_of(parent, level, base, base + i * cs);
      if (hint) {
        const u64 rb = (base + i * cs) & ~(rsize - 1);
        if (rb + rsize <= runs.lo || rb >= runs.hi) child |= kContig;
      }
      if (child == 0) continue;
      plat_->write_desc(t + i, child);  // not linked yet: cleaned whole before the link
      plat_->get_page(page);
    }
  }

  // Break: write 0 and invalidate what the TLB may hold for the entry, now (flush()'s
  // sequence). A leaf: by address with its level. A table entry: its whole span with no level
  // hint, by range with FEAT_TLBIRANGE (unless the span needs more than kMaxTlbiOps pieces: a
  // level-0 entry at 4K, say), else the whole VMID (stage 2) or every EL2 entry (stage 1).
  void break_entry(VisitCtx& x, bool was_table) {
    write(x.ptep, 0);
    OpState s;
    s.op_lo = x.base;
    s.op_hi = x.base + arch::level_size(G, x.level);
    if (!was_table) {
      queue_tlbi(s, x.base, x.level, false);
    } else if (tlbi_range_) {
      queue_range(s, x.base, arch::level_size(G, x.level), arch::kTlbiLevelUnknown, false);
    } else {
      s.tlbi_all = true;
    }
    flush(s);
  }

  // A table entry becomes `nv`: break it (invalidating the whole range it covered), clean
  // what was mapped under it if it is being unmapped without FWB, free its subtree, write nv.
  void zap(const Content& c, VisitCtx& x, u64 nv) {
    const u64 child = next_table(x.old);
    break_entry(x, true);
    if (kStage2 && !fwb_ && opt_.cache_maintenance && !arch::DescValid::get(nv)) clean_subtree(child, x.level + 1);
    free_subtree(child, x.level + 1);
    if (arch::DescValid::get(nv)) cmo_new(c, nv, x.level);
    if (nv != 0) write(x.ptep, nv);
    if (nv == 0) (void)plat_->put_page(x.table_pa);
  }

  void clean_subtree(u64 table_pa, int level) {
    const u64* t = plat_->phys_to_virt(table_pa);
    for (u64 i = 0; i < arch::entries_per_table(G); ++i) {
      if (is_table(t[i], level)) {
        clean_subtree(next_table(t[i]), level + 1);
      } else if (arch::DescValid::get(t[i]) && Regime::decode(t[i], fwb_).type == arch::MemType::normal_wb) {
        plat_->cache_op(arch::CacheOp::dc_civac, leaf_oa(t[i], level), arch::level_size(G, level));
      }
    }
  }

  void free_subtree(u64 table_pa, int level) {
    if (level < arch::kLastLevel) {
      const u64* t = plat_->phys_to_virt(table_pa);
      for (u64 i = 0; i < arch::entries_per_table(G); ++i)
        if (is_table(t[i], level)) free_subtree(next_table(t[i]), level + 1);
    }
    plat_->free_pages(table_pa, 0);
  }

  // Post-order (unmap): a table left with no entries is unlinked and freed after the TLB
  // invalidation that covers it completes.
  void free_if_empty(OpState& s, VisitCtx& x) {
    if (!is_table(x.old, x.level)) return;
    const u64 child = next_table(x.old);
    if (plat_->page_count(child) != 1) return;
    write(x.ptep, 0);
    (void)plat_->put_page(x.table_pa);
    if (s.nfree == OpState::kMaxFree) flush(s);
    // A table entry went: invalidate its whole span, entries of any level (no TTL hint: the
    // TLB may hold leaves of any level below it and walk-cache entries; Linux 36e008323926).
    // Without range TLBIs, the whole VMID (stage 2) or every EL2 entry (stage 1).
    if (tlbi_range_) {
      queue_range(s, x.base, arch::level_size(G, x.level), arch::kTlbiLevelUnknown, false);
    } else {
      s.tlbi_all = true;
    }
    s.free_pa[s.nfree++] = child;
  }

  // Cache maintenance before a new leaf becomes visible (Linux does the same): without FWB,
  // cacheable memory is cleaned and invalidated to the point of coherency, so the guest, whose
  // stage-1 may map it non-cacheable, sees what the host wrote; executable memory gets its
  // instruction cache invalidated to the point of unification unless CTR_EL0.DIC.
  void cmo_new(const Content& c, u64 leaf, int level) {
    if (!c.clean_d && !c.inval_i) return;
    const u64 size = arch::level_size(G, level);
    if (c.clean_d) plat_->cache_op(arch::CacheOp::dc_civac, leaf_oa(leaf, level), size);
    if (c.inval_i) plat_->cache_op(arch::CacheOp::ic_ivau, leaf_oa(leaf, level), size);
  }
  void icache_for(u64 leaf, int level) {
    if (!opt_.dic && opt_.cache_maintenance)
      plat_->cache_op(arch::CacheOp::ic_ivau, leaf_oa(leaf, level), arch::level_size(G, level));
  }

  // One leaf (of `level`, covering `addr`) whose old translation must leave the TLB.
  void queue_tlbi(OpState& s, u64 addr, int level, bool deferrable) {
    queue_range(s, addr & ~(arch::level_size(G, level) - 1), arch::level_size(G, level), level, deferrable);
  }

  // Adds [addr, addr + size) to the pending invalidations: a run of leaves of `level`, or with
  // kTlbiLevelUnknown the span of a removed table. A run extends the run of the same level
  // it continues; with FEAT_TLBIRANGE it also bridges a gap after the last range of its level
  // (the walk goes up in address, so the gap lies in the operation's range); a table's span
  // swallows the ranges it contains (the leaves found in it before it emptied). Past
  // kMaxRanges entries: without the feature, the whole VMID; with it, one range over them all.
  void queue_range(OpState& s, u64 addr, u64 size, int level, bool deferrable) {
    if (deferrable && s.policy == TlbPolicy::defer) return;
    if (s.tlbi_all) return;
    const i8 lvl = static_cast<i8>(level);
    if (s.ntlbi != 0) {
      const u32 j = s.ntlbi - 1;
      if (s.tlbi_level[j] == lvl && s.tlbi_addr[j] + s.tlbi_size[j] == addr) {  // the common case
        s.tlbi_size[j] += size;
        return;
      }
    }
    while (s.ntlbi != 0 && addr <= s.tlbi_addr[s.ntlbi - 1] &&
           s.tlbi_addr[s.ntlbi - 1] + s.tlbi_size[s.ntlbi - 1] <= addr + size)
      --s.ntlbi;
    if (tlbi_range_ && s.ntlbi != 0) {
      // Bridge (or overlap) forwards from the latest range when it has the same level, and the
      // whole still fits one range's largest piece; a range that already covers it is enough.
      const u32 j = s.ntlbi - 1;
      const u64 start = s.tlbi_addr[j];
      const u64 end = start + s.tlbi_size[j];
      if (s.tlbi_level[j] == lvl && addr >= start) {
        if (end >= addr + size) return;
        if ((addr + size - start) / kPageSize <= arch::kTlbiRangeMaxPages) {
          s.tlbi_size[j] = addr + size - start;
          return;
        }
      }
    }
    if (s.ntlbi == OpState::kMaxRanges) {
      if (!tlbi_range_) {
        s.tlbi_all = true;
        return;
      }
      u64 lo = addr, hi = addr + size;
      i8 l = lvl;
      for (u32 j = 0; j < s.ntlbi; ++j) {
        if (s.tlbi_addr[j] < lo) lo = s.tlbi_addr[j];
        if (s.tlbi_addr[j] + s.tlbi_size[j] > hi) hi = s.tlbi_addr[j] + s.tlbi_size[j];
        if (s.tlbi_level[j] != l) l = static_cast<i8>(arch::kTlbiLevelUnknown);
      }
      s.ntlbi = 1;
      s.tlbi_addr[0] = lo;
      s.tlbi_size[0] = hi - lo;
      s.tlbi_level[0] = l;
      return;
    }
    s.tlbi_addr[s.ntlbi] = addr;
    s.tlbi_size[s.ntlbi] = size;
    s.tlbi_level[s.ntlbi] = lvl;
    ++s.ntlbi;
  }

  // A pending range as the instructions will cover it: with FEAT_TLBIRANGE, a run of more than
  // one page that the pieces would split is widened to one piece when the wider range stays in
  // the operation's own range (forwards first, else backwards): the pages added are the
  // operation's, so one instruction instead of up to five loses nothing the TLB should keep.
  struct Span {
    u64 addr;
    u64 pages;
  };
  // With DS = 1 (FEAT_LPA2, 4K/16K) a range TLBI starts at a 64 KiB boundary only, and the
  // pages before the first one go by address (arch::tlbi_range_piece_at); when the boundary
  // below the run is still in the operation's range, starting the range there is tried too,
  // and whichever of the two takes fewer instructions is used.
  [[nodiscard]] Span widen(const OpState& s, u64 addr, u64 size) const {
    const Span sp = widen_pieces(s, addr, size);
    if (!ds_range()) return sp;
    const u64 lo = addr & ~(arch::kTlbiRangeDsAlign - 1);
    if (lo == addr || lo < s.op_lo) return sp;
    const Span down = widen_pieces(s, lo, size + (addr - lo));
    return span_ops(down) < span_ops(sp) ? down : sp;
  }
  // DS = 1 and range TLBIs: range pieces start 64 KiB aligned.
  [[nodiscard]] bool ds_range() const { return tlbi_range_ && arch::tlbi_range_ds_applies(G, oa_.ds()); }
  [[nodiscard]] u64 span_ops(const Span& sp) const {
    return arch::tlbi_range_instructions(G, oa_.ds(), sp.addr, sp.pages);
  }
  [[nodiscard]] Span widen_pieces(const OpState& s, u64 addr, u64 size) const {
    const u64 pages = size / kPageSize;
    if (pages <= 1 || pages > arch::kTlbiRangeMaxPages) return Span{addr, pages};
    const arch::TlbiRangePiece p = arch::tlbi_range_piece(pages);
    if (p.pages() == pages) return Span{addr, pages};
    const unsigned shift = 5u * p.scale + 1u;
    const u64 unit = u64{1} << shift;
    const u64 want = (pages + unit - 1) & ~(unit - 1);
    if (want > arch::kTlbiRangeMaxPages) return Span{addr, pages};
    const u64 bytes = want * kPageSize;
    if (addr + bytes <= s.op_hi && addr + bytes > addr) return Span{addr, want};
    if (addr + size >= s.op_lo + bytes) return Span{addr + size - bytes, want};
    return Span{addr, pages};
  }

  // TLBI instructions by address that the pending ranges take.
  [[nodiscard]] u64 pending_ops(const OpState& s) const {
    u64 n = 0;
    for (u32 i = 0; i < s.ntlbi; ++i) {
      const int level = s.tlbi_level[i];
      if (level == arch::kTlbiLevelUnknown && !tlbi_range_) {
        return kMaxTlbiOps + 1;  // a table's span needs the range forms
      } else if (!tlbi_range_) {
        n += s.tlbi_size[i] >> arch::level_shift(G, level);  // one per leaf
      } else if (level != arch::kTlbiLevelUnknown && s.tlbi_size[i] == arch::level_size(G, level)) {
        n += 1;  // one leaf: by address
      } else {
        n += span_ops(widen(s, s.tlbi_addr[i], s.tlbi_size[i]));
      }
      if (n > kMaxTlbiOps) break;
    }
    return n;
  }

  // The instructions for one pending range (pending_ops() said they are few enough).
  void issue(const OpState& s, u32 i) {
    constexpr arch::Tlbi kByAddr = kStage2 ? arch::Tlbi::ipas2e1is : arch::Tlbi::vale2is;
    const int level = s.tlbi_level[i];
    const u64 addr = s.tlbi_addr[i];
    const u16 vmid = kStage2 ? vmid_ : 0;
    if (!tlbi_range_) {
      const u64 step = arch::level_size(G, level);
      for (u64 a = addr; a < addr + s.tlbi_size[i]; a += step) plat_->tlbi(kByAddr, vmid, a, level);
      return;
    }
    if (level != arch::kTlbiLevelUnknown && s.tlbi_size[i] == arch::level_size(G, level)) {
      plat_->tlbi(kByAddr, vmid, addr, level);
      return;
    }
    // Stage 2: RIPAS2E1IS (stage-2 entries of every level, so walk caches too). Stage 1:
    // RVALE2IS for runs of leaves (last level only, like VALE2IS), RVAE2IS for a table's span.
    const arch::Tlbi range_op = kStage2 ? arch::Tlbi::ripas2e1is
                                : level == arch::kTlbiLevelUnknown ? arch::Tlbi::rvae2is
                                                                   : arch::Tlbi::rvale2is;
    // With DS = 1 the range operand counts its base in 64 KiB units (arch::TlbiRange::ds): the
    // pages before the first 64 KiB boundary go by address, then the range pieces.
    const Span sp = widen(s, addr, s.tlbi_size[i]);
    const bool ds = oa_.ds();
    u64 a = sp.addr;
    for (u64 left = sp.pages; left > 0;) {
      const arch::TlbiRangePiece p = arch::tlbi_range_piece_at(G, ds, a, left);
      if (p.range) {
        plat_->tlbi_range(range_op, vmid, arch::TlbiRange{a, p.scale, p.num, static_cast<i8>(level), ds});
      } else {
        // The odd last page, or (DS = 1) a page before the first 64 KiB boundary: by address,
        // with the level hint of the run (only a run of last-level pages or a coalesced range
        // has either). Stage 1 VAE2IS if the level is unknown.
        plat_->tlbi(level == arch::kTlbiLevelUnknown && !kStage2 ? arch::Tlbi::vae2is : kByAddr, vmid, a, level);
      }
      a += p.pages() * kPageSize;
      left -= p.pages();
    }
  }

  // Issues the pending invalidations, waits for them, then frees the pages that waited.
  // Stage 2: DSB ISHST; the TLBIs by address or range (or VMALLS12E1IS); DSB ISH; then, unless
  // the whole VMID went, TLBI VMALLE1IS for the combined stage-1+2 entries and DSB ISH.
  // Stage 1: DSB ISHST; VALE2IS / RVALE2IS / RVAE2IS (or ALLE2IS); DSB ISH; ISB.
  void flush(OpState& s) {
    if (retired_) {  // retire(): no TLB holds an entry of this table any more
      s.ntlbi = 0;
      s.tlbi_all = false;
    }
    if (s.ntlbi != 0 || s.tlbi_all) {
      if (!s.tlbi_all && pending_ops(s) > kMaxTlbiOps) s.tlbi_all = true;
      plat_->barrier(arch::Barrier::dsb_ishst);
      if constexpr (kStage2) {
        if (s.tlbi_all) {
          plat_->tlbi(arch::Tlbi::vmalls12e1is, vmid_, 0, arch::kTlbiLevelUnknown);
        } else {
          for (u32 i = 0; i < s.ntlbi; ++i) issue(s, i);
        }
        plat_->barrier(arch::Barrier::dsb_ish);
        if (!s.tlbi_all) {
          plat_->tlbi(arch::Tlbi::vmalle1is, vmid_, 0, arch::kTlbiLevelUnknown);
          plat_->barrier(arch::Barrier::dsb_ish);
        }
      } else {
        if (s.tlbi_all) {
          plat_->tlbi(arch::Tlbi::alle2is, 0, 0, arch::kTlbiLevelUnknown);
        } else {
          for (u32 i = 0; i < s.ntlbi; ++i) issue(s, i);
        }
        plat_->barrier(arch::Barrier::dsb_ish);
        plat_->barrier(arch::Barrier::isb);
      }
      s.ntlbi = 0;
      s.tlbi_all = false;
    }
    for (u32 i = 0; i < s.nfree; ++i) (void)plat_->put_page(s.free_pa[i]);
    s.nfree = 0;
  }

  // End of an operation: invalidations complete, frees done; writes made visible to the
  // table walkers of other CPUs.
  void finish(OpState& s, bool wrote) {
    const bool pending = s.ntlbi != 0 || s.tlbi_all;
    flush(s);
    if (wrote && !pending) {
      plat_->barrier(arch::Barrier::dsb_ishst);
      if constexpr (!kStage2) plat_->barrier(arch::Barrier::isb);
    }
  }

  // A valid page keeps its translation and gets `nv` (permissions, access flag, state bits):
  // one write, the TLB invalidated if permissions shrank, the I-cache if it became executable.
  [[nodiscard]] Status update_in_place(u64* ptep, u64 old, u64 nv, u64 addr) {
    if (kStage2 && Regime::gains_exec(old, nv)) icache_for(nv, arch::kLastLevel);
    write(ptep, nv);
    OpState s;
    if (Regime::reduces_perms(old, nv)) queue_tlbi(s, addr & ~(kPageSize - 1), arch::kLastLevel, false);
    finish(s, true);
    return {};
  }

  struct PageSlot {
    u64* ptep;
    u64 table_pa;
  };
  void forget_slot() const { cached_span_ = ~u64{0}; }

  // A new page in an empty last-level entry: no break-before-make and no TLB invalidation (the
  // Arm ARM's TLB rules: an entry that gives a Translation fault is never held in a TLB); cache
  // maintenance first when the regime needs it, then the store, the table's count of live
  // entries, and the barrier that makes the entry visible to the walker (dsb ishst; at stage 1
  // an isb too, for this CPU's own walks).
  void install_page(PageSlot slot, u64 addr, u64 pa, const Prot& prot, u64 attrs, u64 leaf) {
    if (new_leaf_needs_cmo(prot)) cmo_new(leaf_content(addr, pa, prot, attrs, false), leaf, arch::kLastLevel);
    publish_page(slot, leaf);
  }
  // A whole contiguous run of empty last-level entries from `slot` (its first), as map() would
  // write it: with TableOptions::contiguous each leaf with the Contiguous bit (Arm ARM D8.6.1),
  // cache maintenance first where the regime needs it, the stores and the table's count, then
  // DSB ISHST, and at stage 1 an ISB.
  void install_run(PageSlot slot, u64 addr, u64 pa, const Prot& prot, u64 attrs) {
    constexpr unsigned kN = arch::contiguous_entries(G, arch::kLastLevel);
    const u64 hint = contig_on() ? kContig : 0;
    const bool cmo = new_leaf_needs_cmo(prot);
    for (unsigned j = 0; j < kN; ++j) {
      const u64 leaf = make_leaf(arch::kLastLevel, pa + j * kPageSize, attrs);
      if (cmo) cmo_new(leaf_content(addr, pa, prot, attrs, false), leaf, arch::kLastLevel);
      write(slot.ptep + j, leaf | hint);
      plat_->get_page(slot.table_pa);
    }
    plat_->barrier(arch::Barrier::dsb_ishst);
    if constexpr (!kStage2) plat_->barrier(arch::Barrier::isb);
  }
  // The last step of installing a page in an empty last-level entry (install_page(),
  // map_page_cached()): the store, the table's count, and DSB ISHST so the walker sees it before
  // the caller returns to the CPU that faulted (B2.3); at stage 1 an ISB as well, for this PE's
  // own next accesses at EL2.
  [[gnu::always_inline]] void publish_page(PageSlot slot, u64 leaf) {
    write(slot.ptep, leaf);
    plat_->get_page(slot.table_pa);
    plat_->barrier(arch::Barrier::dsb_ishst);
    if constexpr (!kStage2) plat_->barrier(arch::Barrier::isb);
  }

  // unmap()'s one-page case where the general walk would do nothing but this entry: the entry
  // is empty (nothing to do), an annotation, or a page (0b11 at the last level, Arm ARM D8.3.1),
  // and its table holds at least one other entry, so its count stays above 1 and it is not
  // freed. The same sequence as the walk's Act::unmap: the store and the table's count; for a
  // page, its TLB entries by IPA with the last level as TTL, waited for (flush()), then without
  // FWB the data cleaned to the point of coherency once no translation can dirty it again. An
  // invalid entry is never held in a TLB (a Translation fault is not cached), so removing an
  // annotation needs only the barrier that publishes the store. False (nothing changed) for
  // anything else: the caller takes the general path.
  [[nodiscard]] bool unmap_page_in_place(PageSlot slot, u64 addr) {
    const u64 old = *slot.ptep;
    if (old == 0) return true;
    const bool page = (old & 0b11) == 0b11;
    if (!page && arch::DescValid::get(old)) return false;  // 0b01 at the last level: reserved
    if (page && (old & kContig) != 0) return false;  // a contiguous run: the general path breaks it
    if (plat_->page_count(slot.table_pa) <= 2) return false;  // the table would empty: freed
    write(slot.ptep, 0);
    (void)plat_->put_page(slot.table_pa);
    const bool clean = kStage2 && page && !fwb_ && opt_.cache_maintenance &&
                       Regime::decode(old, fwb_).type == arch::MemType::normal_wb;
    // Nothing to invalidate (an annotation, or any entry of a retired table: no TLB holds one)
    // needs no OpState: what finish() would do then, without it. A retired table is not live,
    // so no walker reads the store and it needs no barrier either; an annotation's does.
    if (!page || retired_) {
      if (clean) plat_->cache_op(arch::CacheOp::dc_civac, leaf_oa(old, arch::kLastLevel), kPageSize);
      if (!page) {
        plat_->barrier(arch::Barrier::dsb_ishst);
        if constexpr (!kStage2) plat_->barrier(arch::Barrier::isb);
      }
      return true;
    }
    OpState s;
    queue_tlbi(s, addr, arch::kLastLevel, false);
    if (clean) {
      flush(s);
      plat_->cache_op(arch::CacheOp::dc_civac, leaf_oa(old, arch::kLastLevel), kPageSize);
    }
    finish(s, true);
    return true;
  }

  template <typename V>
  [[nodiscard]] Status walk_inner(u64 addr, u64 end, V& v) const {
    if (root_pa_ == kNoRoot) return fail(Error::einval);
    P* plat = plat_;
    return walk_root<G>([plat](u64 pa) { return plat->phys_to_virt(pa); }, root_pa_, start_level_, addr, end, v, oa_);
  }
  // The last-level entry for `addr` if tables lead all the way down to it, else nullptr. The
  // last table found is remembered (fault handlers map neighbouring pages one at a time);
  // every operation that can free a table forgets it.
  // The remembered table's case is inline (a compare and an index: most callers hit it, and the
  // call cost as much as the rest); the walk is not.
  [[gnu::always_inline]] [[nodiscard]] PageSlot last_level_slot(u64 addr) const {
    constexpr unsigned kSpan = arch::level_shift(G, arch::kLastLevel - 1);
    if ((addr >> kSpan) == cached_span_) return PageSlot{cached_ptes_ + arch::level_index(G, arch::kLastLevel, addr), cached_table_};
    return last_level_slot_walk(addr);
  }
  [[gnu::noinline]] [[nodiscard]] PageSlot last_level_slot_walk(u64 addr) const {
    constexpr unsigned kSpan = arch::level_shift(G, arch::kLastLevel - 1);
    int level = start_level_;
    const unsigned shift = arch::level_shift(G, level);
    u64 table_pa = root_pa_ + ((addr >> shift) >> arch::bits_per_level(G)) * kPageSize;
    while (true) {
      u64* ptep = plat_->phys_to_virt(table_pa) + arch::level_index(G, level, addr);
      if (level == arch::kLastLevel) {
        cached_span_ = addr >> kSpan;
        cached_table_ = table_pa;
        cached_ptes_ = ptep - arch::level_index(G, level, addr);
        return PageSlot{ptep, table_pa};
      }
      const u64 e = *ptep;
      if (!is_table(e, level)) return PageSlot{nullptr, 0};
      table_pa = next_table(e);
      ++level;
    }
  }

  [[nodiscard]] u64* entry_ptr(u64 addr, int level) const {
    struct V {
      static constexpr unsigned visits() { return kVisitLeaf; }
      int level;
      u64* out = nullptr;
      Status leaf(VisitCtx& x) {
        if (x.level == level) out = x.ptep;
        return {};
      }
    } v{level};
    const u64 a = addr & ~(kPageSize - 1);
    (void)walk_inner(a, a + kPageSize, v);
    return v.out;
  }

  P* plat_ = nullptr;
  u64 root_pa_ = kNoRoot;
  u8 root_order_ = 0;
  u8 ia_bits_ = 0;
  u8 pa_bits_ = 0;
  i8 start_level_ = 0;
  bool fwb_ = false;
  bool walk_cmo_ = false;
  bool tlbi_range_ = false;  // FEAT_TLBIRANGE: pending ranges go out as range TLBIs
  bool retired_ = false;     // retire(): never live again, its TLB entries gone; no TLBIs
  arch::OaFormat oa_ = arch::kOa48;  // how descriptors hold addresses (48- or 52-bit)
  bool ha_ = false;          // FEAT_HAFDBS in use: the MMU sets AF (write_inplace())
  u16 vmid_ = 0;
  TableOptions opt_{};
  // The last-level table last_level_slot() found, and the input range it covers (>> span).
  mutable u64 cached_span_ = ~u64{0};
  mutable u64 cached_table_ = 0;
  mutable u64* cached_ptes_ = nullptr;  // its entries (phys_to_virt(cached_table_))
  // The last Prot encode() encoded and its attribute bits.
  mutable Prot enc_prot_{};
  mutable u64 enc_attrs_ = 0;
  mutable bool enc_cmo_ = false;  // new_leaf_needs_cmo(enc_prot_)
  mutable bool enc_valid_ = false;
};

template <arch::Granule G, Platform P, typename Layout = NoSwLayout>
using Stage2Table = Table<Stage2, G, P, Layout>;
template <arch::Granule G, Platform P, typename Layout = NoSwLayout>
using Stage1Table = Table<Stage1El2, G, P, Layout>;

}  // namespace ptguard::pgtable
