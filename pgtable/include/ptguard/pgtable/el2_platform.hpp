// El2Platform: a ptguard::Platform for a hypervisor running at EL2 on AArch64 (non-VHE,
// HCR_EL2.E2H = 0), for a library user to take as it is or as a model for their own.
//
//   memory     a simple page pool over a memory range the caller gives (the hypervisor's
//              carve-out, say): a bump allocator with one free list per order. Table pages are
//              reached at pa + va_offset (PA == VA when the offset is 0), so the pool must be
//              mapped there at EL2 before the MMU is turned on (and is reachable with the MMU
//              off only if the offset is 0).
//   refcounts  one u32 per pool page, in an array the caller gives.
//   writes     a single 64-bit store.
//   TLB        the TLBI instructions (insn.hpp). Stage-2 operations act on the current VMID
//              (VTTBR_EL2.VMID, D8.14 "TLB maintenance": "the current VMID"); for another VMID
//              the platform loads that VM's VTTBR_EL2 around the operation, as a hypervisor
//              must (the VTTBR values come from set_vttbr(), and a VMID never registered is
//              loaded with a zero table base: stage 2 is not in use at EL2, and a VMID's own
//              table is what a speculative walk should find, so register every VM).
//              The range forms (tlbi_range: RIPAS2E1IS, RVAE2IS, RVALE2IS) are the real
//              instructions; the engine issues them only for tables configured for a CPU with
//              FEAT_TLBIRANGE (CpuFeatures::tlbi_range, from ID_AA64ISAR0_EL1.TLB).
//   caches     DC CIVAC / DC CVAC / IC IVAU by VA: memory in the linear range is reached at
//              pa + va_offset; any other page through the fixmap (one page at a time, what
//              the fixmap held mapped back afterwards). IC IVAU of memory outside the linear
//              range is IC IALLUIS (no mapping needed) unless this CPU holds that page there.
//   fixmap     one page of EL2 VA whose last-level entry the caller locates (set_fixmap(),
//              after the stage-1 table maps a page there: see fixmap_slot()), shared by every
//              CPU under a lock of its own (below).
//   locks      the ownership layer's locks are TicketLocks (every waiter is a CPU); the
//              lock-order hooks are empty (the order is checked in the simulator). The pool's
//              free lists have a TicketLock of their own: tables of different locks (the
//              host's, a guest's) allocate and free pages at the same time. So has the fixmap:
//              the scrubbing transitions use it under the host's and a guest's lock, and cache_op()
//              borrows it too, and a guest's stage 2 without FEAT_S2FWB calls cache_op under
//              that guest's lock alone. fixmap_map() takes the fixmap lock (waiting for it)
//              and records the holder, the calling CPU's MPIDR_EL1 affinity; fixmap_unmap()
//              clears the holder and releases the lock. cache_op() compares the holder with
//              its own affinity: equal only on the CPU that holds the lock (a CPU writes only
//              its own affinity there, and clears it before releasing), which then swaps pages
//              in the slot and puts its own back; any other CPU takes the lock for the
//              operation. So the scrub path's cache_op(dc_civac) on the page it holds, or a
//              table change it makes while holding the slot, does not wait for itself. A
//              second fixmap_map on the CPU that holds the slot is refused (nullptr), as the
//              Platform contract says, rather than deadlocking. The counts are per table
//              page, under the lock of the table that page belongs to.
//
// Freestanding; AArch64 only (it issues the instructions). See docs/el2.md.
#pragma once

#include "ptguard/arch/aarch64/insn.hpp"
#include "ptguard/arch/descriptor.hpp"
#include "ptguard/arch/error.hpp"
#include "ptguard/arch/granule.hpp"
#include "ptguard/arch/maintenance.hpp"
#include "ptguard/arch/regs.hpp"
#include "ptguard/pgtable/platform.hpp"
#include "ptguard/pgtable/regime.hpp"
#include "ptguard/pgtable/ticket_lock.hpp"

namespace ptguard::pgtable {

template <arch::Granule G, unsigned kMaxVmids = 16>
class El2Platform {
 public:
  static constexpr u64 kPage = arch::page_size(G);
  /// Largest order alloc_pages serves (a 16-table concatenated stage-2 root).
  static constexpr unsigned kMaxOrder = 4;

  struct Config {
    u64 pool_pa = 0;       ///< first pool page (aligned to 2^kMaxOrder pages)
    u64 pool_size = 0;     ///< bytes
    u32* counts = nullptr; ///< one per pool page (pool_size / page size)
    u64 va_offset = 0;     ///< the EL2 VA of pool and linear memory is pa + va_offset
    u64 linear_pa = 0;     ///< memory reachable at pa + va_offset (for cache maintenance);
    u64 linear_size = 0;   ///< the pool should lie inside it
    bool have_ttl = false; ///< FEAT_TTL (ID_AA64MMFR2_EL1.TTL != 0): give TLBIs a level hint
  };

  El2Platform() = default;
  explicit El2Platform(const Config& c) { init(c); }
  El2Platform(const El2Platform&) = delete;
  El2Platform& operator=(const El2Platform&) = delete;

  /// (Re)starts the platform over `c`: an empty pool, no fixmap, no VMIDs registered.
  void init(const Config& c) {
    cfg_ = c;
    next_ = 0;
    for (u64& f : free_) f = 0;
    for (u64& v : vttbr_) v = 0;
    fixmap_va_ = 0;
    fixmap_pte_ = nullptr;
    fixmap_pa_ = kNone;
    __atomic_store_n(&fixmap_owner_, kNoOwner, __ATOMIC_RELAXED);
  }

  /// The fixmap: its VA and a pointer (an EL2 VA) to its last-level entry. Whatever the entry
  /// holds (the page mapped there to make the table exist) is removed, with TLB invalidation.
  /// Called before other CPUs use the platform (it takes no lock). `oa` is the stage-1 table's
  /// address format (Stage1Config::oa): with 52-bit addresses the entry is written in it, so a
  /// page above 2^48 can be scrubbed, and with DS = 1 without an SH field (bits [9:8] are then
  /// OA[51:50]: Arm ARM D8.3.1).
  void set_fixmap(u64 va, u64* pte, const arch::OaFormat& oa = arch::kOa48) {
    fixmap_va_ = va;
    fixmap_pte_ = pte;
    fixmap_oa_ = oa;
    fixmap_pa_ = 0;  // as if mapped, so that raw_unmap clears it
    raw_unmap();
    __atomic_store_n(&fixmap_owner_, kNoOwner, __ATOMIC_RELAXED);
  }
  /// Registers the VTTBR_EL2 value of VMID `vmid` (make_vttbr(root, vmid)), used to switch to
  /// that VMID for stage-2 TLB maintenance. Returns false if the VMID is beyond kMaxVmids.
  bool set_vttbr(u16 vmid, u64 vttbr) {
    if (vmid >= kMaxVmids) return false;
    vttbr_[vmid] = vttbr;
    return true;
  }

  // ---- the Platform interface ---------------------------------------------------------------
  /// The ownership layer's lock type (ownership/locking.hpp).
  using Lock = TicketLock;
  /// The lock-order checker's hooks: nothing at EL2 (the simulator checks the order).
  void lock_order_acquire(unsigned) {}
  void lock_order_release(unsigned) {}

  u64 page_size() const { return kPage; }

  Result<u64> alloc_pages(unsigned order) {
    if (order > kMaxOrder) return fail(Error::einval);
    LockGuard guard(pool_lock_);
    u64 pa = 0;
    if (free_[order] != 0) {
      pa = free_[order];
      free_[order] = *phys_to_virt(pa);
    } else {
      const u64 n = u64{1} << order;
      u64 idx = (next_ + n - 1) & ~(n - 1);
      // Pages skipped for alignment go to the order-0 free list.
      if (idx + n > pages()) return fail(Error::enomem);
      for (u64 i = next_; i < idx; ++i) push_free(cfg_.pool_pa + i * kPage, 0);
      next_ = idx + n;
      pa = cfg_.pool_pa + idx * kPage;
    }
    __builtin_memset(phys_to_virt(pa), 0, kPage << order);
    for (u64 i = 0; i < (u64{1} << order); ++i) cfg_.counts[index(pa) + i] = 1;
    return pa;
  }
  void free_pages(u64 pa, unsigned order) {
    for (u64 i = 0; i < (u64{1} << order); ++i) cfg_.counts[index(pa) + i] = 0;
    LockGuard guard(pool_lock_);
    push_free(pa, order);
  }
  u64* phys_to_virt(u64 pa) { return reinterpret_cast<u64*>(pa + cfg_.va_offset); }
  u64 virt_to_phys(const u64* p) { return reinterpret_cast<u64>(p) - cfg_.va_offset; }
  void get_page(u64 pa) { ++cfg_.counts[index(pa)]; }
  u32 put_page(u64 pa) {
    const u32 c = --cfg_.counts[index(pa)];
    if (c == 0) free_pages(pa & ~(kPage - 1), 0);
    return c;
  }
  u32 page_count(u64 pa) { return cfg_.counts[index(pa)]; }

  /// One 64-bit single-copy-atomic store (B2.2.1): the MMU never sees a torn descriptor.
  void write_desc(u64* ptep, u64 value) { *static_cast<volatile u64*>(ptep) = value; }

  void tlbi(arch::Tlbi op, u16 vmid, u64 addr, int level) {
    namespace a64 = arch::aarch64;
    switch (op) {
      case arch::Tlbi::ripas2e1is:
      case arch::Tlbi::rvae2is:
      case arch::Tlbi::rvale2is: break;  // range forms go through tlbi_range()
      case arch::Tlbi::ipas2e1is:
      case arch::Tlbi::vmalle1is:
      case arch::Tlbi::vmalls12e1is: {
        const u64 saved = enter_vmid(vmid);
        if (op == arch::Tlbi::ipas2e1is)
          a64::tlbi_ipas2e1is(a64::tlbi_ipa_operand(addr, a64::tlbi_ttl(G, level, cfg_.have_ttl)));
        else if (op == arch::Tlbi::vmalle1is)
          a64::tlbi_vmalle1is();
        else
          a64::tlbi_vmalls12e1is();
        leave_vmid(saved);
        break;
      }
      case arch::Tlbi::vae2is:
        a64::tlbi_vae2is(a64::tlbi_va_operand(addr, a64::tlbi_ttl(G, level, cfg_.have_ttl)));
        break;
      case arch::Tlbi::vale2is:
        a64::tlbi_vale2is(a64::tlbi_va_operand(addr, a64::tlbi_ttl(G, level, cfg_.have_ttl)));
        break;
      case arch::Tlbi::alle2is: a64::tlbi_alle2is(); break;
    }
  }

  /// One range TLBI: the operand from arch::tlbi_range_operand (BaseADDR, TTL, NUM, SCALE, TG
  /// of this granule; BaseADDR in 64 KiB units when r.ds, which the engine sets for a table
  /// with TCR_EL2.DS / VTCR_EL2.DS = 1, and then r.addr is 64 KiB aligned). The TTL of a range form is part of FEAT_TLBIRANGE, not FEAT_TTL: it is
  /// given whatever have_ttl says. RIPAS2E1IS acts on the current VMID, switched to `vmid` as
  /// tlbi() does.
  void tlbi_range(arch::Tlbi op, u16 vmid, const arch::TlbiRange& r) {
    namespace a64 = arch::aarch64;
    const u64 xt = arch::tlbi_range_operand(G, r);
    switch (op) {
      case arch::Tlbi::ripas2e1is: {
        const u64 saved = enter_vmid(vmid);
        a64::tlbi_ripas2e1is(xt);
        leave_vmid(saved);
        break;
      }
      case arch::Tlbi::rvae2is: a64::tlbi_rvae2is(xt); break;
      case arch::Tlbi::rvale2is: a64::tlbi_rvale2is(xt); break;
      default: break;
    }
  }

  void barrier(arch::Barrier b) {
    switch (b) {
      case arch::Barrier::dsb_ishst: arch::aarch64::dsb_ishst(); break;
      case arch::Barrier::dsb_ish: arch::aarch64::dsb_ish(); break;
      case arch::Barrier::dsb_sy: arch::aarch64::dsb_sy(); break;
      case arch::Barrier::isb: arch::aarch64::isb(); break;
      case arch::Barrier::dmb_ishst: arch::aarch64::dmb_ishst(); break;
    }
  }

  void cache_op(arch::CacheOp op, u64 pa, u64 size) {
    namespace a64 = arch::aarch64;
    if (size == 0) return;
    // Memory the hypervisor maps linearly: one loop over the whole range.
    if (pa >= cfg_.linear_pa && pa - cfg_.linear_pa + size <= cfg_.linear_size) {
      do_cmo(op, pa + cfg_.va_offset, size);
      return;
    }
    if (fixmap_pte_ == nullptr) {
      // No fixmap: nothing to reach the data by (a platform without one must give the linear
      // range all memory); the instruction cache needs no mapping.
      if (op == arch::CacheOp::ic_ivau) a64::ic_ialluis();
      return;
    }
    // Whether this CPU holds the fixmap (the scrub path cleaning the page it zeroed, or a
    // table change it makes while it holds the slot): then the slot is ours to swap and we
    // must not wait for the lock we hold. Race-free: only this CPU writes its own affinity
    // to fixmap_owner_, so reading it there means we wrote it and have not cleared it.
    const bool mine = __atomic_load_n(&fixmap_owner_, __ATOMIC_RELAXED) == cpu_id();
    // The instruction cache needs no mapping to be invalidated: unless the range is in the
    // page this CPU holds at the fixmap, IC IALLUIS covers every line. (A slot another CPU
    // holds is not ours to use: it may unmap it under us.)
    if (op == arch::CacheOp::ic_ivau) {
      if (mine && fixmap_pa_ != kNone && (pa & ~(kPage - 1)) == fixmap_pa_ && pa + size <= fixmap_pa_ + kPage)
        do_cmo(op, fixmap_va_ + (pa - fixmap_pa_), size);
      else
        a64::ic_ialluis();
      return;
    }
    // Data-cache operations page by page, each page mapped at the fixmap in turn (the page
    // this CPU holds there is reached without a swap); what it held is mapped back at the end.
    // Data and unified caches behave as physically indexed, physically tagged (Arm ARM DDI
    // 0487, chapter D7, on caches), so maintenance through the fixmap VA reaches the lines of
    // the physical page, whatever other VA maps it.
    if (!mine) fixmap_lock_.lock();
    const u64 held = fixmap_pa_;  // kNone unless mine: a holder unmaps before it releases
    u64 cur = held;
    for (u64 p = pa & ~(kPage - 1); p < pa + size; p += kPage) {
      const u64 lo = p < pa ? pa : p;
      const u64 hi = p + kPage < pa + size ? p + kPage : pa + size;
      if (cur != p) {
        raw_unmap();
        raw_map(p);
        cur = p;
      }
      do_cmo(op, fixmap_va_ + (lo - p), hi - lo);
    }
    if (cur != held) {
      raw_unmap();
      if (held != kNone) raw_map(held);
    }
    if (!mine) fixmap_lock_.unlock();
  }

  /// Whether alloc_pages may ever hand out the page at `pa` (it lies in the pool).
  [[nodiscard]] bool in_page_pool(u64 pa) const { return pa - cfg_.pool_pa < cfg_.pool_size; }

  /// Maps the page at `pa` at the fixmap VA for this CPU, waiting while another CPU holds
  /// the fixmap; the slot stays this CPU's until its fixmap_unmap(). nullptr without a fixmap,
  /// or if this CPU already holds it (the Platform contract refuses nested use; waiting for
  /// ourselves would never end).
  void* fixmap_map(u64 pa) {
    if (fixmap_pte_ == nullptr) return nullptr;
    const u64 me = cpu_id();
    if (__atomic_load_n(&fixmap_owner_, __ATOMIC_RELAXED) == me) return nullptr;
    fixmap_lock_.lock();
    __atomic_store_n(&fixmap_owner_, me, __ATOMIC_RELAXED);
    raw_map(pa);
    return reinterpret_cast<void*>(fixmap_va_ + (pa - fixmap_pa_));
  }
  /// Removes the fixmap entry (see raw_unmap) and releases the fixmap. Only on the CPU that
  /// holds it (fixmap_map returned non-null there); anywhere else, nothing.
  void fixmap_unmap() {
    if (fixmap_pte_ == nullptr || __atomic_load_n(&fixmap_owner_, __ATOMIC_RELAXED) != cpu_id()) return;
    raw_unmap();
    // Cleared before the release: the next holder's store of its own affinity comes after.
    __atomic_store_n(&fixmap_owner_, kNoOwner, __ATOMIC_RELAXED);
    fixmap_lock_.unlock();
  }

  // ---- for the hypervisor -------------------------------------------------------------------
  [[nodiscard]] const Config& config() const { return cfg_; }
  /// Pool pages never handed out yet (pages on the free lists not counted).
  [[nodiscard]] u64 untouched_pages() const { return pages() - next_; }
  /// This CPU's affinity: MPIDR_EL1 Aff3 (39:32), Aff2 (23:16), Aff1 (15:8), Aff0 (7:0), the
  /// fields that identify a PE (Arm ARM DDI 0487 D24.2 MPIDR_EL1; readable at EL2). Also the
  /// guest locks' reader slot (ownership/locking.hpp).
  static u64 cpu_id() { return PTGUARD_MRS("mpidr_el1") & 0xff'00ff'ffffull; }

 private:
  static constexpr u64 kNone = ~u64{0};

  [[nodiscard]] u64 pages() const { return cfg_.pool_size / kPage; }
  [[nodiscard]] u64 index(u64 pa) const { return (pa - cfg_.pool_pa) / kPage; }
  void push_free(u64 pa, unsigned order) {
    *phys_to_virt(pa) = free_[order];
    free_[order] = pa;
  }

  /// "No CPU holds the fixmap": not an affinity (MPIDR_EL1 bits 63:40 and 31:24 are never
  /// part of one).
  static constexpr u64 kNoOwner = ~u64{0};

  // The slot itself, for the CPU that holds the fixmap lock. raw_map writes a read-write,
  // Normal write-back, execute-never page entry over an invalid one (raw_unmap left it so, and
  // its TLBI ...IS removed every CPU's copy), so no break-before-make is needed; DSB ISHST
  // makes the store visible to the walker and ISB to the instructions that follow. raw_unmap
  // writes an invalid entry, DSB ISHST, TLBI VALE2IS, DSB ISH, ISB (nothing if empty).
  void raw_map(u64 pa) {
    const u64 page = pa & ~(kPage - 1);
    const u64 attrs = *Stage1El2::encode(Prot{kPermRW, arch::MemType::normal_wb, 0});
    write_desc(fixmap_pte_, fixmap_oa_.encode(page, arch::page_shift(G)) | (attrs & ~fixmap_oa_.hi_field) |
                                arch::DescValid::kMask | arch::DescTypeBit::kMask);
    arch::aarch64::dsb_ishst();
    arch::aarch64::isb();
    fixmap_pa_ = page;
  }
  void raw_unmap() {
    if (fixmap_pa_ == kNone) return;
    write_desc(fixmap_pte_, 0);
    arch::aarch64::dsb_ishst();
    arch::aarch64::tlbi_vale2is(arch::aarch64::tlbi_va_operand(
        fixmap_va_, arch::aarch64::tlbi_ttl(G, arch::kLastLevel, cfg_.have_ttl)));
    arch::aarch64::dsb_ish();
    arch::aarch64::isb();
    fixmap_pa_ = kNone;
  }

  void do_cmo(arch::CacheOp op, u64 va, u64 size) {
    switch (op) {
      case arch::CacheOp::dc_civac: arch::aarch64::dc_civac_range(va, size); break;
      case arch::CacheOp::dc_cvac: arch::aarch64::dc_cvac_range(va, size); break;
      case arch::CacheOp::ic_ivau: arch::aarch64::ic_ivau_range(va, size); break;
    }
  }

  // Loads the VTTBR_EL2 of `vmid` if another VMID is current; returns the value to restore
  // (or kNone). The ISB makes the new VMID the one the TLBI acts on (D8.14: a TLBI uses the
  // VMID in VTTBR_EL2 "at the time the instruction is executed", after context
  // synchronization of the MSR).
  u64 enter_vmid(u16 vmid) {
    const u64 cur = PTGUARD_MRS("vttbr_el2");
    if (arch::VttbrVmid::get(cur) == vmid) return kNone;
    const u64 v = vmid < kMaxVmids ? vttbr_[vmid] : 0;
    PTGUARD_MSR("vttbr_el2", v != 0 ? v : arch::VttbrVmid::make(vmid));
    arch::aarch64::isb();
    return cur;
  }
  void leave_vmid(u64 saved) {
    if (saved == kNone) return;
    PTGUARD_MSR("vttbr_el2", saved);
    arch::aarch64::isb();
  }

  Config cfg_{};
  u64 next_ = 0;
  u64 free_[kMaxOrder + 1] = {};
  u64 fixmap_va_ = 0;
  u64* fixmap_pte_ = nullptr;
  u64 fixmap_pa_ = kNone;   ///< the page in the slot; the fixmap lock's holder's only
  arch::OaFormat fixmap_oa_ = arch::kOa48;  ///< the stage-1 table's address format
  u64 fixmap_owner_ = kNoOwner;  ///< the holder's affinity (__atomic): see "locks" above
  u64 vttbr_[kMaxVmids] = {};
  TicketLock pool_lock_;    ///< next_ and free_ (alloc_pages, free_pages)
  TicketLock fixmap_lock_;  ///< the fixmap slot: its entry and fixmap_pa_
};

/// The last-level entry that maps `va` in a stage-1 table rooted at `root_pa` (a walk of
/// table descriptors only), or nullptr if a level on the way holds no table. Used to locate
/// the fixmap's entry after mapping a page there once. `oa`: the table's address format
/// (Stage1Config::oa).
template <arch::Granule G, typename P>
[[nodiscard]] u64* fixmap_slot(P& plat, u64 root_pa, int start_level, u64 va,
                               const arch::OaFormat& oa = arch::kOa48) {
  u64 table = root_pa;
  for (int level = start_level; level < arch::kLastLevel; ++level) {
    const u64 e = plat.phys_to_virt(table)[arch::level_index(G, level, va)];
    if (arch::classify(e, G, level) != arch::DescKind::table) return nullptr;
    table = arch::TableDesc(e).next_table(G, oa);
  }
  return plat.phys_to_virt(table) + arch::level_index(G, arch::kLastLevel, va);
}

static_assert(Platform<El2Platform<arch::Granule::k4K>>);
static_assert(Platform<El2Platform<arch::Granule::k64K>>);

}  // namespace ptguard::pgtable
