// Memory protection between the host, the hypervisor, the secure world and guests: every
// ownership transition, each all-or-nothing, over the table engine. Freestanding.
//
// Tables: the host's stage-2 is an identity map of what the host may access, filled lazily by
// host_handle_fault(); pages the host neither owns nor borrows, and pages it lent, are invalid
// entries annotated with the owner's (or borrower's) id (state.hpp). The hypervisor's stage-1
// EL2 table maps its private memory and what is shared with or donated to it, at
// VA = PA + hyp_va_offset, in blocks only for what set-up maps (a transition's pages are
// mapped page by page: the engine never splits a stage-1 block, so giving back part of a
// set-up block is EINVAL from the checks). Each guest has its own stage-2 table.
//
// Every transition checks every page of its range first: memory only, the states at each
// side, the per-page counts, and that each memcache it will draw from can cover the worst case
// (the host's and the hypervisor's are filled from the platform here; a guest's is filled by
// its creator, like pKVM's vCPU memcache, and a short one is ENOMEM). Only then does it change
// the tables, through engine calls that cannot fail once the checks passed. A failed transition
// changes nothing.
//
// Host blocks: the host's stage-2 holds blocks only for the default protections (memory RWX,
// MMIO RW device, state owned); every page with another state is mapped page by page (the
// engine's force-page policy). Block-level annotations are allowed (a GiB donated to a guest is
// one entry at level 1). When a block-sized, block-aligned range of host memory is back in the
// default state (every entry empty or a valid owned RWX page mapping its own address), the
// transition that returned its last page rebuilds the block, eagerly (host_rebuild_blocks):
// break-before-make on the table entry (Arm ARM D8.16.1), the freed table given back to the
// platform's pool, then the level above the same way (a GiB at level 1 with the 4K granule).
// Only where host_handle_fault would map that block (block_fits_region). Eager, not lazy at the
// next fault: the host may never fault on a range it already maps page by page, so a lazy
// rebuild could leave it fragmented for good; the cost is one read of a remembered entry, or a
// scan of the touched last-level table (from the changed entry on, stopping at the first entry
// that is not default), per transition, and a range covered whole needs no look at all;
// measured by the benchmark host_fragmentation (docs/ownership.md). A rebuild
// is an optimisation: it never fails a transition, and is skipped whenever anything is off.
//
// The platform: the engine's (pgtable/platform.hpp), plus fixmap_map(pa) -> void* (nullptr: no
// fixmap) and fixmap_unmap() for scrubbing, and in_page_pool(pa) -> bool, whether alloc_pages
// may ever hand out that page (hyp_donate_host never gives such a page to the host); and,
// optionally, its lock type and lock-order hooks (locking.hpp).
//
// Locks (docs/concurrency.md): MemProtect owns one lock for the host's stage 2 (which also
// covers the per-page array), one for the hypervisor's stage 1 (and the fixmap), one per guest
// slot. Every public transition takes the locks of the tables it reads or changes, host, then
// hypervisor, then guest, checks, commits and releases; check_invariants takes all of them.
// Any number of CPUs may call transitions at once. The platform's own state (its page pool)
// must then be safe for concurrent callers too: table pages are allocated and freed under
// different locks. init(), hyp_map_private(), setup_share_hyp() and finalize() are set-up, on
// one CPU; the read-only accessors take no lock and are for quiescent callers.
#pragma once

#include <span>
#include <type_traits>

#include "ptguard/arch/error.hpp"
#include "ptguard/arch/regs.hpp"
#include "ptguard/ownership/locking.hpp"
#include "ptguard/ownership/machine.hpp"
#include "ptguard/ownership/state.hpp"
#include "ptguard/pgtable/memcache.hpp"
#include "ptguard/pgtable/platform.hpp"
#include "ptguard/pgtable/table.hpp"

namespace ptguard::ownership {

template <arch::Granule G, Platform P, unsigned kMaxGuests = 16>
class MemProtect {
 public:
  static constexpr u64 kPage = arch::page_size(G);
  using S2 = pgtable::Stage2Table<G, P, Layout>;
  using S1 = pgtable::Stage1Table<G, P, Layout>;
  using Prot = pgtable::Prot;
  /// The platform's lock type (locking.hpp): the host's, the hypervisor's and each guest's.
  using Lock = PlatformLock<P>;
  static_assert(OwnershipLock<Lock>);
  /// A guest slot's lock (locking.hpp): reader-writer; its shared side for the guest's own
  /// stage-2 fault operations, its exclusive side for everything else.
  using GuestLock = PlatformGuestLock<P>;
  static_assert(SharedOwnershipLock<GuestLock>);

  /// The default protections of host memory and host MMIO (blocks allowed only for these).
  static constexpr Prot kHostMem{pgtable::kPermRWX, arch::MemType::normal_wb, 0};
  static constexpr Prot kHostMmio{pgtable::kPermRW, arch::MemType::device_ngnre, 0};
  /// How the hypervisor maps what is shared with or donated to it.
  static constexpr Prot kHypData{pgtable::kPermRW, arch::MemType::normal_wb, 0};

  static constexpr u16 kMaxPins = 0xffff;
  /// The host's stage-2 runs on VMID 0; no guest may use it.
  static constexpr u16 kHostVmid = 0;
  static constexpr u32 kMaxGuestShares = 0xffff'ffffu;

  struct Guest {
    ComponentId id = 0;
    bool used = false;
    bool alive = false;  ///< false once torn down (its pages wait to be reclaimed)
    S2 table;
    /// Pages the guest's table draws from, filled by whoever runs the guest (the host in
    /// pKVM). A transition into the guest that would need more is ENOMEM.
    pgtable::Memcache mc;
    /// Covers the slot and the guest's table (and `mc` once the guest exists); rank
    /// guest_lock_rank(slot) in the lock order (locking.hpp). Shared side: the guest's fault
    /// operations, which change only access flags and permissions of its valid leaves, by
    /// compare-and-swap (Table's Walk::shared); exclusive side: everything else.
    mutable GuestLock lock;
  };

  MemProtect() = default;
  MemProtect(const MemProtect&) = delete;
  MemProtect& operator=(const MemProtect&) = delete;

  /// Sets up the host's stage-2 (identity map of the CPU's physical-address space, VMID 0,
  /// empty: filled by faults), the hypervisor's stage-1 (48-bit VA), the hypervisor's carve-out
  /// (owned by it, annotated in the host's table, mapped at EL2) and the MMIO regions given to
  /// the hypervisor. `meta` is the per-page array, one entry per page of memory
  /// (memory_pages()). Errors: EINVAL for a description check_machine() refuses or a short
  /// `meta`; ENOMEM from the platform. Nothing is allocated when the description is refused.
  [[nodiscard]] Status init(P& plat, const MachineDesc& machine, std::span<PageMeta> meta,
                            const arch::CpuFeatures& cpu) {
    plat_ = &plat;
    machine_ = machine;
    meta_ = meta;
    cpu_ = cpu;
    // 52-bit addresses are automatic (docs/ownership.md, "52-bit addresses"): where the CPU's
    // PA size is 52 bits and it translates 52-bit addresses with G at both stages (FEAT_LPA2
    // for 4K/16K, FEAT_LPA for 64K: CpuFeatures::supports_52bit), the host's identity stage 2
    // covers the whole 52-bit PA space (4K: a level -1 root, VTCR_EL2.DS = 1), guests get the
    // same IPA size, and the hypervisor's stage 1 keeps a 48-bit VA but writes 52-bit output
    // addresses (TCR_EL2.DS = 1 / PS = 52 bits). Otherwise every table is 48-bit at most.
    const bool pa52 = uses_52bit(cpu);
    const unsigned pa_max = pa52 ? arch::kMaxOaBits52 : arch::kMaxOaBits;
    const unsigned ia = cpu.pa_bits > pa_max ? pa_max : cpu.pa_bits;
    const Result<arch::Stage2Config> hcfg = arch::make_stage2_config(G, ia, cpu);
    if (!hcfg) return fail(hcfg.error());
    arch::WalkOptions yo;
    yo.pa_52bit = pa52;
    const Result<arch::Stage1Config> ycfg = arch::make_stage1_config(G, arch::kMaxIaBits, cpu, yo);
    if (!ycfg) return fail(ycfg.error());
    if (Status st = check_machine(machine, hcfg->geometry.ia_bits, ycfg->ia_bits); !st) return st;
    if (meta.size() < memory_pages(machine, kPage)) return fail(Error::einval);
    for (PageMeta& m : meta) m = PageMeta{};
    pinned_pages_ = 0;
    pgtable::TableOptions hopt;
    hopt.force_page = pgtable::ForcePagePolicy{&host_force_page, nullptr};
    hopt.dic = cpu.dic;
    // The host's memory is the host's own: it keeps its caches coherent itself, and mapping it
    // into its identity stage-2 needs no maintenance (as in pKVM). Pages that change hands are
    // scrubbed and cleaned by the transitions that move them.
    hopt.cache_maintenance = false;
    // Runs of 16 pages (4K) that a transition maps back whole get the Contiguous bit, so the TLB
    // may hold each as one entry (Arm ARM D8.6.1); the engine breaks a run before changing any
    // of its entries (pgtable::TableOptions::contiguous).
    hopt.contiguous = true;
    Result<S2> host = S2::create_stage2(plat, *hcfg, kHostVmid, hopt);
    if (!host) return fail(host.error());
    host_ = static_cast<S2&&>(*host);
    host_cfg_ = *hcfg;
    // Pages that change hands are mapped at EL2 page by page (hyp_force_page): the engine never
    // splits a live EL2 block (it might map the code that runs), so a later transition on part
    // of a block could not be done.
    pgtable::TableOptions yopt;
    yopt.force_page = pgtable::ForcePagePolicy{&hyp_force_page, this};
    Result<S1> hyp = S1::create_stage1(plat, *ycfg, yopt);
    if (!hyp) return fail(hyp.error());
    hyp_ = static_cast<S1&&>(*hyp);
    hyp_cfg_ = *ycfg;
    // The carve-out: the hypervisor's from the start.
    const Region c = machine.hyp_carveout;
    if (c.size != 0) {
      if (Status st = fill(host_mc_, host_.max_pages_needed(c.base, c.size)); !st) return st;
      if (Status st = fill(hyp_mc_, hyp_.max_pages_needed(hyp_va(c.base), c.size)); !st) return st;
      if (Status st = host_.set_owner(c.base, c.size, kHypId, sw_owned(), host_mc_); !st) return st;
      if (Status st = hyp_map_blocks(hyp_va(c.base), c.size, c.base, kHypData); !st) return st;
    }
    for (const MmioRegion& m : machine.mmio) {
      if (!m.hyp) continue;
      if (Status st = fill(host_mc_, host_.max_pages_needed(m.base, m.size)); !st) return st;
      if (Status st = fill(hyp_mc_, hyp_.max_pages_needed(hyp_va(m.base), m.size)); !st) return st;
      if (Status st = host_.set_owner(m.base, m.size, kHypId, sw_owned(), host_mc_); !st) return st;
      if (Status st = hyp_map_blocks(hyp_va(m.base), m.size, m.base, Prot{pgtable::kPermRW, arch::MemType::device_ngnre, 0});
          !st)
        return st;
    }
    finalized_ = false;
    return {};
  }

  /// Whether init() on `cpu` gives the tables 52-bit addresses: a 52-bit PA size and 52-bit
  /// support for the granule at stage 2 and at stage 1 (FEAT_LPA2 with 4K/16K, FEAT_LPA with
  /// 64K). Then the host's and the guests' IPA size is 52 bits and the hypervisor's stage 1
  /// reaches 52-bit PAs from its 48-bit VA; the descriptors are in the 52-bit format
  /// (host_config().oa, hyp_config().oa).
  [[nodiscard]] static constexpr bool uses_52bit(const arch::CpuFeatures& cpu) {
    return cpu.pa_bits >= arch::kMaxOaBits52 && cpu.supports_52bit(G, 2) && cpu.supports_52bit(G, 1);
  }

  /// What init() accepts (EINVAL otherwise), checked before anything is allocated:
  ///  - memory regions non-empty, sorted, not sharing a page with each other, and inside the
  ///    host's physical-address range (their edges may be unaligned: see MachineDesc);
  ///  - MMIO regions non-empty, inside that range, sharing no page with memory or with each
  ///    other; the hypervisor's ones page-aligned (they are mapped whole at EL2 at set-up; the
  ///    host's are faulted in a page at a time, so their edges may be unaligned like memory's);
  ///  - the carve-out page-aligned and inside one memory region;
  ///  - hyp_va_offset such that every page of memory and of the hypervisor's MMIO has an EL2
  ///    address: PA + offset, modulo 2^64, inside the EL2 table's `hyp_ia` bits and not
  ///    wrapping inside a region. The sum is modular so that memory above the 48-bit VA
  ///    (a 52-bit machine's RAM above 2^48) can have an EL2 address: its offset is then
  ///    "negative" (2^64 - d maps PA to PA - d).
  [[nodiscard]] static Status check_machine(const MachineDesc& m, unsigned host_ia, unsigned hyp_ia) {
    const u64 pa_end = u64{1} << host_ia, va_end = u64{1} << hyp_ia;
    // [lo, hi) page-rounded, inside the PA range and with an EL2 address when `at_el2`.
    const auto extent_ok = [&](u64 base, u64 size, bool at_el2) {
      if (size == 0 || base + size < base || base + size > pa_end) return false;
      const u64 lo = base & ~(kPage - 1), hi = (base + size + kPage - 1) & ~(kPage - 1);
      const u64 va_lo = lo + m.hyp_va_offset, va_hi = hi + m.hyp_va_offset;  // modulo 2^64
      return !at_el2 || (va_lo < va_hi && va_hi <= va_end);
    };
    const auto pages_overlap = [](u64 b1, u64 s1, u64 b2, u64 s2) {
      const Region r1{b1, s1}, r2{b2, s2};
      return r1.first_page(kPage) < r2.end_page(kPage) && r2.first_page(kPage) < r1.end_page(kPage);
    };
    u64 prev_end = 0;
    for (const Region& r : m.memory) {
      if (!extent_ok(r.base, r.size, true) || r.first_page(kPage) < prev_end) return fail(Error::einval);
      prev_end = r.end_page(kPage);
    }
    for (std::size_t i = 0; i < m.mmio.size(); ++i) {
      const MmioRegion& x = m.mmio[i];
      if (!extent_ok(x.base, x.size, x.hyp)) return fail(Error::einval);
      if (x.hyp && ((x.base | x.size) & (kPage - 1)) != 0) return fail(Error::einval);
      for (const Region& r : m.memory)
        if (pages_overlap(x.base, x.size, r.base, r.size)) return fail(Error::einval);
      for (std::size_t j = 0; j < i; ++j)
        if (pages_overlap(x.base, x.size, m.mmio[j].base, m.mmio[j].size)) return fail(Error::einval);
    }
    const Region c = m.hyp_carveout;
    if (c.size != 0) {
      if (((c.base | c.size) & (kPage - 1)) != 0) return fail(Error::einval);
      bool inside = false;
      for (const Region& r : m.memory) inside |= r.contains(c.base, c.size);
      if (!inside) return fail(Error::einval);
    }
    return {};
  }

  // ---- set-up ----------------------------------------------------------------------------

  /// During set-up only: maps the hypervisor's own code, data or any private range at EL2.
  /// After finalize(): EPERM (what the hypervisor maps then changes only by transitions).
  [[nodiscard]] Status hyp_map_private(u64 va, u64 size, u64 pa, const Prot& prot) {
    if (finalized_) return fail(Error::eperm);
    const Guard hyp_lock = lock_hyp();
    if (Status st = fill(hyp_mc_, hyp_.max_pages_needed(va, size)); !st) return st;
    return hyp_map_blocks(va, size, pa, prot);
  }

  /// During set-up only: declares [pa, pa + n pages) shared from the start (host shared-owned,
  /// hypervisor shared-borrowed), as Linux marks the host's sections the hypervisor reads.
  [[nodiscard]] Status setup_share_hyp(u64 pa, u64 n) {
    if (finalized_) return fail(Error::eperm);
    const Guard locks = lock_host_hyp();
    return host_share_hyp_locked(pa, n);
  }

  /// Ends set-up: protected mode is on.
  void finalize() { finalized_ = true; }
  [[nodiscard]] bool finalized() const { return finalized_; }

  /// Whether transitions rebuild the host's blocks as block-sized ranges come home (the "Host
  /// blocks" comment at the top; on by default). Off, a range given back to the host stays
  /// mapped page by page, as before this existed: for measuring what the rebuild costs (the
  /// benchmark host_fragmentation runs both) and for a caller that wants no host entry broken
  /// that a transition did not name. Changing it touches no table.
  void set_host_block_rebuild(bool on) { rebuild_blocks_ = on; }
  [[nodiscard]] bool host_block_rebuild() const { return rebuild_blocks_; }

  // ---- the host's stage-2 faults ------------------------------------------------------------

  /// The host touched `addr` and its stage-2 faulted. EINVAL if the address is in no declared
  /// region; EAGAIN if a valid leaf is already there (another CPU mapped it first); EPERM if the
  /// entry is annotated (another component owns the page, or the host lent it). Otherwise maps
  /// the largest block that contains `addr`, lies inside its memory or MMIO region and covers
  /// no annotation (memory RWX, MMIO RW device); at a region edge that is not block-aligned the
  /// largest block that fits, and where an edge is not even page-aligned, the faulting page.
  /// On success, `*mapped_level` (if given) is the level of the leaf it mapped: read under the
  /// host lock, since once the lock is dropped another CPU may change the entry. Takes the
  /// host lock.
  [[nodiscard]] Status host_handle_fault(u64 addr, int* mapped_level = nullptr) {
    Region region{};
    bool mmio = false;
    if (!find_region(addr, &region, &mmio)) return fail(Error::einval);
    const Guard host_lock = lock_host();
    // Most faults land next to one just handled, in a last-level table that already exists;
    // there the answer is always the faulting page (a block would cover that table), and an
    // empty entry is the only case that maps. Everything else takes the general path below.
    //
    // There, when the whole naturally aligned contiguous run around the page (16 pages with 4K,
    // arch::contiguous_entries) lies inside the page's region and every entry of it is empty,
    // all of it is mapped at once, which the engine writes with the Contiguous bit (the host's
    // table has TableOptions::contiguous; Arm ARM D8.6.1). An empty host entry is the host's own
    // page not faulted in yet (another owner's page is annotated), so this maps nothing that a
    // fault on each page would not map the same way. MMIO keeps its page-by-page faults. One
    // engine call, one lookup of the last-level table, for both.
    const u64 page = addr & ~(kPage - 1);
    constexpr u64 kRun = arch::contiguous_size(G, arch::kLastLevel);
    const bool run = !mmio && region.contains(page & ~(kRun - 1), kRun);
    if (host_.map_page_or_run_if_empty(page, page, mmio ? kHostMmio : kHostMem, run) != 0) {
      if (mapped_level != nullptr) *mapped_level = arch::kLastLevel;
      return {};
    }
    const Result<pgtable::Leaf> leaf = host_.lookup(addr);
    if (!leaf) return fail(leaf.error());
    if (arch::DescValid::get(leaf->entry)) return fail(Error::eagain);
    if (leaf->entry != 0) return fail(Error::eperm);
    // The empty entry covers [leaf->base, +leaf->size) with nothing below it: any block inside
    // it covers no annotation. Take the largest that also lies inside the region.
    u64 base = addr & ~(kPage - 1), size = kPage;
    for (int level = leaf->level; level <= arch::kLastLevel; ++level) {
      const u64 s = arch::level_size(G, level);
      const u64 b = addr & ~(s - 1);
      if (block_fits_region(region, b, level)) {
        base = b;
        size = s;
        break;
      }
    }
    // An empty last-level entry needs no new table; anything higher may.
    if (leaf->level != arch::kLastLevel) {
      if (Status st = fill(host_mc_, host_.max_pages_needed(base, size)); !st) return st;
    }
    const Status st = host_.map(base, size, base, mmio ? kHostMmio : kHostMem, host_mc_);
    if (st && mapped_level != nullptr) {
      for (int l = 0; l <= arch::kLastLevel; ++l)
        if (arch::level_size(G, l) == size) *mapped_level = l;
    }
    return st;
  }

  // ---- host <-> hypervisor ------------------------------------------------------------------

  /// Host owned -> shared-owned; hypervisor none -> shared-borrowed (mapped RW at EL2).
  /// EPERM: not memory, or a page not owned by the host (or already shared); EINVAL: range
  /// mixes memory and MMIO, or n == 0; ENOMEM.
  [[nodiscard]] Status host_share_hyp(u64 pa, u64 n) {
    const Guard locks = lock_host_hyp();
    return host_share_hyp_locked(pa, n);
  }

  /// The reverse of host_share_hyp. EBUSY if the hypervisor has pinned a page; EPERM if a page
  /// is not shared between exactly the host and the hypervisor.
  [[nodiscard]] Status host_unshare_hyp(u64 pa, u64 n) {
    const Guard locks = lock_host_hyp();
    u64 size = 0;
    if (Status st = check_memory(pa, n, &size); !st) return st;
    if (Status st = check_hyp_shared(pa, size, Pins::none_held); !st) return st;
    if (Status st = check_hyp_no_split(pa, size); !st) return st;
    if (Status st = fill_host_hyp(pa, size); !st) return st;
    // The hypervisor's mapping goes first: it is the step an unforeseen failure would most
    // likely hit (a stage-1 block cannot be split), and failing there leaves the page shared
    // as before rather than the host's again while the hypervisor still maps it.
    const Status st = commit2(hyp_.unmap(hyp_va(pa), size, hyp_mc_), [&] { return host_map_home(pa, size); });
    if (st) host_rebuild_blocks(pa, size);
    return st;
  }

  /// The hypervisor pins pages the host shares with it (they cannot be unshared while pinned).
  /// EPERM unless shared host->hypervisor; EBUSY at the pin limit.
  [[nodiscard]] Status hyp_pin_shared(u64 pa, u64 n) {
    const Guard locks = lock_host_hyp();
    u64 size = 0;
    if (Status st = check_memory(pa, n, &size); !st) return st;
    if (Status st = check_hyp_shared(pa, size, Pins::below_limit); !st) return st;
    PageMeta* const pages = meta_run(pa);
    for (u64 i = 0; i < n; ++i) pinned_pages_ += pages[i].hyp_pins++ == 0;
    return {};
  }
  /// EPERM unless shared and pinned.
  [[nodiscard]] Status hyp_unpin_shared(u64 pa, u64 n) {
    const Guard locks = lock_host_hyp();
    u64 size = 0;
    if (Status st = check_memory(pa, n, &size); !st) return st;
    if (Status st = check_hyp_shared(pa, size, Pins::held); !st) return st;
    PageMeta* const pages = meta_run(pa);
    for (u64 i = 0; i < n; ++i) pinned_pages_ -= --pages[i].hyp_pins == 0;
    return {};
  }

  /// Host owned -> none (annotated with the hypervisor's id); hypervisor none -> owned.
  [[nodiscard]] Status host_donate_hyp(u64 pa, u64 n) {
    const Guard locks = lock_host_hyp();
    u64 size = 0;
    if (Status st = check_memory(pa, n, &size); !st) return st;
    if (Status st = check_host(pa, size, HostNeed::owned); !st) return st;
    if (Status st = check_hyp_none(pa, size); !st) return st;
    if (Status st = fill_host_hyp(pa, size); !st) return st;
    return commit2(host_.set_owner(pa, size, kHypId, sw_owned(), host_mc_),
                   [&] { return hyp_.map(hyp_va(pa), size, pa, hyp_prot(sw_owned()), hyp_mc_); });
  }

  /// Hypervisor owned -> none; host annotated-by-hypervisor -> owned (mapped again lazily).
  /// EBUSY if a page holds a table or waits in a memcache to become one; EINVAL if the range
  /// cuts an EL2 block mapped at set-up (a stage-1 block is never split).
  [[nodiscard]] Status hyp_donate_host(u64 pa, u64 n) {
    const Guard locks = lock_host_hyp();
    u64 size = 0;
    if (Status st = check_memory(pa, n, &size); !st) return st;
    if (Status st = check_host_annotation(pa, size, annotation_owned_by(kHypId)); !st) return st;
    if (Status st = check_hyp_state(pa, size, PageState::owned); !st) return st;
    // The carve-out is the hypervisor's for good: its code and data may be mapped at other EL2
    // addresses too (hyp_map_private), which giving a page back would not unmap.
    if (overlaps_carveout(pa, size)) return fail(Error::eperm);
    // A page the platform may hand out for a table stays the hypervisor's: the host must never
    // own a page that translates for anyone, and a free pool page can become one at any time.
    for (u64 x = pa; x < pa + size; x += kPage)
      if (plat_->in_page_pool(x)) return fail(Error::ebusy);
    if (Status st = check_hyp_no_split(pa, size); !st) return st;
    if (Status st = fill_host_hyp(pa, size); !st) return st;
    const Status st = commit2(hyp_.unmap(hyp_va(pa), size, hyp_mc_), [&] { return host_.unmap(pa, size, host_mc_); });
    if (st) host_rebuild_blocks(pa, size);
    return st;
  }

  // ---- host <-> secure world (FF-A) ---------------------------------------------------------

  /// Host owned -> shared-owned, recorded as shared with the secure world (only the host's
  /// side is tracked). Such a page cannot also be shared with the hypervisor or a guest.
  [[nodiscard]] Status host_share_ffa(u64 pa, u64 n) {
    const Guard host_lock = lock_host();
    u64 size = 0;
    if (Status st = check_memory(pa, n, &size); !st) return st;
    if (Status st = check_host(pa, size, HostNeed::owned); !st) return st;
    if (Status st = fill(host_mc_, host_.max_pages_needed(pa, size)); !st) return st;
    if (Status st = host_.map(pa, size, pa, host_prot(sw_shared_owned()), host_mc_); !st) return st;
    PageMeta* const pages = meta_run(pa);
    for (u64 i = 0; i < n; ++i) pages[i].flags |= kMetaFfa;
    return {};
  }
  [[nodiscard]] Status host_unshare_ffa(u64 pa, u64 n) {
    const Guard host_lock = lock_host();
    u64 size = 0;
    if (Status st = check_memory(pa, n, &size); !st) return st;
    if (Status st = check_host(pa, size, HostNeed::shared_owned); !st) return st;
    PageMeta* const pages = meta_run(pa);
    for (u64 i = 0; i < n; ++i)
      if ((pages[i].flags & kMetaFfa) == 0) return fail(Error::eperm);
    if (Status st = fill(host_mc_, host_.max_pages_needed(pa, size)); !st) return st;
    if (Status st = host_map_home(pa, size); !st) return st;
    for (u64 i = 0; i < n; ++i) pages[i].flags &= static_cast<u8>(~kMetaFfa);
    host_rebuild_blocks(pa, size);
    return {};
  }


  // ---- guests ----------------------------------------------------------------------------

  /// Creates guest `id` (kFirstGuestId..kMaxGuestId) with an empty stage-2 table on VMID
  /// `vmid`. EINVAL for an id out of range, for VMID 0 (the host's), for a VMID wider than the
  /// VMID field the host's configuration uses (8 or 16 bits), and for a VMID another guest
  /// still holds (alive, or torn down and not yet reclaimed: its TLB entries are tagged with
  /// it); EEXIST if the id is in use; EBUSY if all kMaxGuests slots are; ENOMEM from the
  /// platform.
  [[nodiscard]] Status create_guest(ComponentId id, u16 vmid) {
    if (id < kFirstGuestId || id > kMaxGuestId) return fail(Error::einval);
    // Two tables on one VMID share TLB entries: a guest on the host's VMID, or on one a
    // truncated VMID field folds onto another, would translate through the other's entries.
    if (vmid == kHostVmid || (host_cfg_.vmid_bits < 16 && (vmid >> host_cfg_.vmid_bits) != 0))
      return fail(Error::einval);
    const Guard host_lock = lock_host();
    if (find_guest(id) != nullptr) return fail(Error::eexist);
    for (const Guest& g : guests_)
      if (g.used && g.table.vmid() == vmid) return fail(Error::einval);
    Guest* slot = nullptr;
    for (Guest& g : guests_)
      if (!g.used) {
        slot = &g;
        break;
      }
    if (slot == nullptr) return fail(Error::ebusy);
    const GuestGuard guest_lock = lock_guest(slot);
    Result<S2> t = S2::create_stage2(*plat_, host_cfg_, vmid, pgtable::TableOptions{{}, cpu_.dic});
    if (!t) return fail(t.error());
    slot->table = static_cast<S2&&>(*t);
    slot->alive = true;
    // `used` last, with release: a guest-only operation finds the slot without the host lock
    // (find_guest) and must see it whole once it sees it used.
    __atomic_store_n(&slot->id, id, __ATOMIC_RELAXED);
    __atomic_store_n(&slot->used, true, __ATOMIC_RELEASE);
    return {};
  }

  /// Fills guest `id`'s memcache to at least `pages` pages from the platform, under the
  /// guest's lock (whoever runs the guest does this before a transition into it, as pKVM's
  /// vCPU memcache is filled by the host; filling `guest(id)->mc` directly is for one thread
  /// only). EINVAL: no such guest; EPERM: torn down; ENOMEM from the platform (what was
  /// taken before stays in the memcache).
  [[nodiscard]] Status topup_guest_memcache(ComponentId id, u32 pages) {
    Guest* const slot = find_guest(id);
    const GuestGuard guest_lock = lock_guest(slot);
    if (slot == nullptr || !holds(*slot, id)) return fail(Error::einval);
    if (!slot->alive) return fail(Error::eperm);
    return fill(slot->mc, pages);
  }

  /// The guest with `id`, or nullptr. Like every accessor below, it reads without locks:
  /// for a caller that knows no transition runs (tests, reports at a quiescent point).
  [[nodiscard]] Guest* guest(ComponentId id) { return find_guest(id); }
  [[nodiscard]] const Guest* guest(ComponentId id) const { return find_guest(id); }
  /// Every guest slot (a slot is in use when `used`; `id` names its guest).
  [[nodiscard]] std::span<const Guest> guests() const { return guests_; }

  /// Host owned, or shared-owned with guests only -> shared-owned (the share counted); guest
  /// none -> shared-borrowed with `perm`. The same page may be shared with several guests.
  /// EPERM: not memory, a page shared with the hypervisor or the secure world or not the host's,
  /// a guest address already in use (or poisoned), a dead guest; EINVAL: bad permissions, an
  /// unknown guest; EBUSY: a share count at its maximum; ENOMEM: the guest's memcache is short.
  [[nodiscard]] Status host_share_guest(u64 pa, u64 n, ComponentId id, u64 ipa, pgtable::Perm perm) {
    const Guard host_lock = lock_host();
    const GuestGuard guest_lock = lock_guest(find_guest(id));
    Guest* g = nullptr;
    u64 size = 0;
    if (Status st = check_guest_target(pa, n, id, ipa, perm, &g, &size); !st) return st;
    if (Status st = scan(host_, pa, size, [this](u64 e, u64 a, u64 b) -> Status {
          if (e == 0 || (arch::DescValid::get(e) && state_of(e) == PageState::owned)) return {};
          if (!arch::DescValid::get(e) || state_of(e) != PageState::shared_owned) return fail(Error::eperm);
          for (u64 x = a; x < b; x += kPage) {
            const PageMeta& m = meta(x);
            if (m.guest_shares == 0 || (m.flags & kMetaFfa) != 0) return fail(Error::eperm);
            if (m.guest_shares == kMaxGuestShares) return fail(Error::ebusy);
          }
          return {};
        });
        !st)
      return st;
    if (Status st = check_guest_memcache(*g, ipa, size); !st) return st;
    if (Status st = fill(host_mc_, host_.max_pages_needed(pa, size)); !st) return st;
    if (Status st = host_.map(pa, size, pa, host_prot(sw_shared_owned()), host_mc_); !st) return st;
    if (Status st = g->table.map(ipa, size, pa, Prot{perm, arch::MemType::normal_wb, sw_shared_borrowed()}, g->mc);
        !st)
      return st;
    PageMeta* const pages = meta_run(pa);
    for (u64 i = 0; i < n; ++i) ++pages[i].guest_shares;
    return {};
  }

  /// Guest shared-borrowed -> none; the host's share count drops, and at zero the page is the
  /// host's alone again. ENOENT if a guest address is not mapped; EPERM if it is not a page the
  /// host shares with the guest.
  [[nodiscard]] Status host_unshare_guest(ComponentId id, u64 ipa, u64 n) {
    const Guard host_lock = lock_host();
    const GuestGuard guest_lock = lock_guest(find_guest(id));
    Guest* g = nullptr;
    u64 size = 0;
    if (Status st = live_guest_range(id, ipa, n, &g, &size); !st) return st;
    if (Status st = scan(g->table, ipa, size, [this](u64 e, u64, u64) -> Status {
          if (!arch::DescValid::get(e)) return fail(e == 0 ? Error::enoent : Error::eperm);
          if (state_of(e) != PageState::shared_borrowed) return fail(Error::eperm);
          return {};
        });
        !st)
      return st;
    for (u64 off = 0; off < size; off += kPage) {
      const u64 pa = guest_pa(*g, ipa + off);
      if (!is_memory(pa) || meta(pa).guest_shares == 0 || host_state(pa) != PageState::shared_owned)
        return fail(Error::eperm);
    }
    if (Status st = fill(host_mc_, host_pages_for_guest_range(*g, ipa, size)); !st) return st;
    if (Status st = check_guest_memcache(*g, ipa, size); !st) return st;
    // Nothing can fail from here: the host's side first (while the guest's mappings still tell
    // which pages), then the guest's.
    for (u64 off = 0; off < size; off += kPage) {
      const u64 pa = guest_pa(*g, ipa + off);
      PageMeta& m = meta(pa);
      if (--m.guest_shares == 0) {
        if (Status st = host_.map(pa, kPage, pa, host_prot(sw_owned()), host_mc_); !st) return st;
        host_rebuild_blocks(pa, kPage);
      }
    }
    return g->table.unmap(ipa, size, g->mc);
  }

  /// Host owned -> none (annotated with the guest's id); guest none -> owned (RWX).
  [[nodiscard]] Status host_donate_guest(u64 pa, u64 n, ComponentId id, u64 ipa) {
    const Guard host_lock = lock_host();
    const GuestGuard guest_lock = lock_guest(find_guest(id));
    Guest* g = nullptr;
    u64 size = 0;
    if (Status st = check_guest_target(pa, n, id, ipa, pgtable::kPermRWX, &g, &size); !st) return st;
    if (Status st = check_host(pa, size, HostNeed::owned); !st) return st;
    if (Status st = check_guest_memcache(*g, ipa, size); !st) return st;
    if (Status st = fill(host_mc_, host_.max_pages_needed(pa, size)); !st) return st;
    if (Status st = host_.set_owner(pa, size, id, sw_owned(), host_mc_); !st) return st;
    if (Status st = g->table.map(ipa, size, pa, Prot{pgtable::kPermRWX, arch::MemType::normal_wb, sw_owned()}, g->mc);
        !st)
      return st;
    PageMeta* const pages = meta_run(pa);
    for (u64 i = 0; i < n; ++i) {
      PageMeta& m = pages[i];
      m.guest = id;
      m.guest_ipa = ipa + i * kPage;
    }
    return {};
  }

  /// Guest owned -> shared-owned; host none (annotated with the guest) -> shared-borrowed
  /// (mapped RWX). EHWPOISON for a poisoned guest address; EPERM for any other wrong state.
  [[nodiscard]] Status guest_share_host(ComponentId id, u64 ipa, u64 n) {
    const Guard host_lock = lock_host();
    const GuestGuard guest_lock = lock_guest(find_guest(id));
    Guest* g = nullptr;
    u64 size = 0;
    if (Status st = live_guest_range(id, ipa, n, &g, &size); !st) return st;
    if (Status st = check_guest_owned(*g, ipa, size, PageState::owned); !st) return st;
    for (u64 off = 0; off < size; off += kPage) {
      const u64 pa = guest_pa(*g, ipa + off);
      if (host_annotation_owner(pa) != id || host_state(pa) != PageState::none) return fail(Error::eperm);
    }
    if (Status st = check_guest_memcache(*g, ipa, size); !st) return st;
    if (Status st = fill(host_mc_, host_pages_for_guest_range(*g, ipa, size)); !st) return st;
    for (u64 off = 0; off < size; off += kPage) {
      const u64 pa = guest_pa(*g, ipa + off);
      if (Status st = host_.map(pa, kPage, pa, host_prot(sw_shared_borrowed()), host_mc_); !st) return st;
      if (Status st = set_guest_state(*g, ipa + off, pa, sw_shared_owned()); !st) return st;
    }
    return {};
  }

  /// The reverse of guest_share_host.
  [[nodiscard]] Status guest_unshare_host(ComponentId id, u64 ipa, u64 n) {
    const Guard host_lock = lock_host();
    const GuestGuard guest_lock = lock_guest(find_guest(id));
    Guest* g = nullptr;
    u64 size = 0;
    if (Status st = live_guest_range(id, ipa, n, &g, &size); !st) return st;
    if (Status st = check_guest_owned(*g, ipa, size, PageState::shared_owned); !st) return st;
    for (u64 off = 0; off < size; off += kPage)
      if (host_state(guest_pa(*g, ipa + off)) != PageState::shared_borrowed) return fail(Error::eperm);
    if (Status st = check_guest_memcache(*g, ipa, size); !st) return st;
    if (Status st = fill(host_mc_, host_pages_for_guest_range(*g, ipa, size)); !st) return st;
    for (u64 off = 0; off < size; off += kPage) {
      const u64 pa = guest_pa(*g, ipa + off);
      if (Status st = host_.set_owner(pa, kPage, id, sw_owned(), host_mc_); !st) return st;
      if (Status st = set_guest_state(*g, ipa + off, pa, sw_owned()); !st) return st;
    }
    return {};
  }

  /// Host owned -> lent (its entry annotated with the borrower and state 11: the host loses
  /// access but keeps ownership); guest none -> borrowed (mapped with `perm`, state 11).
  [[nodiscard]] Status host_lend_guest(u64 pa, u64 n, ComponentId id, u64 ipa, pgtable::Perm perm) {
    const Guard host_lock = lock_host();
    const GuestGuard guest_lock = lock_guest(find_guest(id));
    Guest* g = nullptr;
    u64 size = 0;
    if (Status st = check_guest_target(pa, n, id, ipa, perm, &g, &size); !st) return st;
    if (Status st = check_host(pa, size, HostNeed::owned); !st) return st;
    if (Status st = check_guest_memcache(*g, ipa, size); !st) return st;
    if (Status st = fill(host_mc_, host_.max_pages_needed(pa, size)); !st) return st;
    if (Status st = host_.set_owner(pa, size, id, sw_lent(), host_mc_); !st) return st;
    if (Status st = g->table.map(ipa, size, pa, Prot{perm, arch::MemType::normal_wb, sw_borrowed()}, g->mc); !st)
      return st;
    PageMeta* const pages = meta_run(pa);
    for (u64 i = 0; i < n; ++i) {
      PageMeta& m = pages[i];
      m.guest = id;
      m.guest_ipa = ipa + i * kPage;
      m.flags &= static_cast<u8>(~kMetaRelinquished);
    }
    return {};
  }

  /// The guest gives up pages lent to it: its mappings go, the host's annotation stays, so
  /// neither can reach the page until the host reclaims it.
  [[nodiscard]] Status guest_relinquish(ComponentId id, u64 ipa, u64 n) {
    const Guard host_lock = lock_host();
    const GuestGuard guest_lock = lock_guest(find_guest(id));
    Guest* g = nullptr;
    u64 size = 0;
    if (Status st = live_guest_range(id, ipa, n, &g, &size); !st) return st;
    if (Status st = check_guest_owned(*g, ipa, size, PageState::borrowed); !st) return st;
    if (Status st = check_guest_memcache(*g, ipa, size); !st) return st;
    // Note the pages before their mappings go (the mappings say which they are).
    for (u64 off = 0; off < size; off += kPage) meta(guest_pa(*g, ipa + off)).flags |= kMetaRelinquished;
    return g->table.unmap(ipa, size, g->mc);
  }

  /// The host takes back pages it lent once the borrower relinquished them. EBUSY if a page
  /// has not been relinquished; EPERM if it is not lent.
  [[nodiscard]] Status host_reclaim_lent(u64 pa, u64 n) {
    const Guard host_lock = lock_host();
    u64 size = 0;
    if (Status st = check_memory(pa, n, &size); !st) return st;
    if (Status st = scan(host_, pa, size, [](u64 e, u64, u64) -> Status {
          return state_of(e) == PageState::lent ? Status{} : fail(Error::eperm);
        });
        !st)
      return st;
    PageMeta* const pages = meta_run(pa);
    for (u64 i = 0; i < n; ++i)
      if ((pages[i].flags & kMetaRelinquished) == 0) return fail(Error::ebusy);
    if (Status st = fill(host_mc_, host_.max_pages_needed(pa, size)); !st) return st;
    if (Status st = host_.unmap(pa, size, host_mc_); !st) return st;
    for (u64 i = 0; i < n; ++i) pages[i] = PageMeta{};
    host_rebuild_blocks(pa, size);
    return {};
  }

  /// Tears a guest down: it runs no more, and what it borrowed is relinquished. Its own pages
  /// and what was shared with it stay until reclaim_guest() / reclaim_guest_page(). The
  /// caller promises that no CPU runs the guest from this call on (no vCPU of it loaded, its
  /// VTTBR_EL2 nowhere): every TLB entry of its VMID is invalidated once here (TLBI
  /// VMALLS12E1IS, Table::retire), and the reclaims that follow issue no TLBI per page.
  [[nodiscard]] Status teardown_guest(ComponentId id) {
    const Guard host_lock = lock_host();
    const GuestGuard guest_lock = lock_guest(find_guest(id));
    Guest* g = find_guest(id);
    if (g == nullptr) return fail(Error::einval);
    if (!g->alive) return fail(Error::eperm);
    // From here the guest runs nowhere (the caller's promise: none of its vCPUs is loaded on
    // any CPU, and none will be). One VMID-wide invalidation retires its table: no TLB holds
    // or can fetch its translations any more, so every later change to it (the relinquishes
    // below, the reclaims after) skips its own TLBIs (Table::retire). Cannot fail: a live
    // guest's table has its root.
    if (Status st = g->table.retire(); !st) return st;
    g->alive = false;
    // Relinquish what it borrowed, a batch of leaves at a time (a table cannot change while
    // it is walked). Borrowed leaves were mapped whole by host_lend_guest, so unmapping one
    // whole needs no table page.
    while (true) {
      constexpr unsigned kBatch = 32;
      u64 at[kBatch], len[kBatch];
      unsigned found = 0;
      Status st = scan(g->table, 0, u64{1} << g->table.ia_bits(), [&](u64 e, u64 a, u64 b) -> Status {
        if (found == kBatch || !arch::DescValid::get(e) || state_of(e) != PageState::borrowed) return {};
        at[found] = a;
        len[found++] = b - a;
        return {};
      });
      if (!st) return st;
      if (found == 0) return {};
      for (unsigned i = 0; i < found; ++i) {
        for (u64 x = at[i]; x < at[i] + len[i]; x += kPage) meta(guest_pa(*g, x)).flags |= kMetaRelinquished;
        if (Status s2 = g->table.unmap(at[i], len[i], g->mc); !s2) return s2;
      }
    }
  }

  /// After teardown: gives back every page the guest's stage-2 still maps, one page at a time
  /// through the same steps as reclaim_guest_page() (its own pages scrubbed and the host's;
  /// pages shared with it unshared, their count dropped), then releases the guest: its
  /// memcache, its table's root and its VMID (create_guest may reuse both once this returns).
  /// Borrowed pages were relinquished at teardown and stay lent until the host reclaims them
  /// (host_reclaim_lent); poisoned addresses have nothing to give back and go with the table.
  /// Before the first page changes hands, every TLB entry of the guest's VMID is invalidated.
  /// All-or-nothing: every page the whole reclaim can take is filled first. Errors: EINVAL for
  /// no such guest; EPERM for a live guest; EOPNOTSUPP, with nothing changed, if a page needs
  /// scrubbing and the platform's fixmap maps nothing (a page is never given to the host
  /// unscrubbed); ENOMEM from the platform, with nothing changed.
  ///
  /// It holds the tables for the whole guest, so its length grows with the guest's memory: a
  /// host that must reschedule, or that needs a few pages back first, calls
  /// reclaim_guest_page() for them (any number of times, any order), then reclaim_guest() for
  /// the rest and the release (docs/ownership.md, "Reclaiming a guest page by page").
  [[nodiscard]] Status reclaim_guest(ComponentId id) {
    const Guard host_lock = lock_host();
    const GuestGuard guest_lock = lock_guest(find_guest(id));
    Guest* g = find_guest(id);
    if (g == nullptr) return fail(Error::einval);
    if (g->alive) return fail(Error::eperm);
    // One read-only pass over what the guest still maps: the first page that needs a scrub
    // (to try the fixmap on), and the guest-table pages the page-by-page unmaps below take:
    // each block leaf is split on its first page, one new table per level below it, and each
    // table made that way stays until its last page goes (tables are freed only when empty,
    // and nothing is mapped again), so the count is every table the block's range can hold.
    u64 scrub_ipa = ~u64{0}, guest_bound = 0;
    const u64 ia_end = u64{1} << g->table.ia_bits();
    if (Status st = scan(g->table, 0, ia_end, [&](u64 e, u64 a, u64 b) -> Status {
          if (!arch::DescValid::get(e)) return {};
          const PageState s = state_of(e);
          if (scrub_ipa == ~u64{0} && (s == PageState::owned || s == PageState::shared_owned)) scrub_ipa = a;
          guest_bound += tables_under_block(b - a);
          return {};
        });
        !st)
      return st;
    // The fixmap is tried on the first such page before anything changes: a platform without
    // one fails here, cleanly. (One whose fixmap maps some pages of memory and not others
    // breaks its contract; the loop below then stops before the page it cannot scrub, every
    // page before it reclaimed whole, and a retry carries on.)
    if (scrub_ipa != ~u64{0}) {
      if (plat_->fixmap_map(guest_pa(*g, scrub_ipa)) == nullptr) return fail(Error::eopnotsupp);
      plat_->fixmap_unmap();
    }
    // All the table pages the page-by-page changes below can take, at the host (a bound over
    // every region of memory: each entry above the last level gets at most one new table, for
    // the same reason as the guest's) and at the guest, filled before the first change, so
    // nothing fails half-way. Both draw from the host's memcache (reclaim_page).
    u64 bound = guest_bound;
    for (const Region& r : machine_.memory)
      bound += host_.max_pages_needed(r.first_page(kPage), r.pages(kPage) * kPage);
    if (Status st = fill(host_mc_, bound > 0xffff'ffffu ? 0xffff'ffffu : static_cast<u32>(bound)); !st) return st;
    // The guest's table still maps its own pages and what was shared with it, but no TLB holds
    // any of it: teardown_guest retired the table (one VMID-wide invalidation; the guest runs
    // no more, so nothing refills them), so neither the page-by-page unmaps below nor the final
    // destroy() need an invalidation of their own.
    // The valid leaves a batch at a time (a table cannot change while it is walked), from
    // where the last batch ended: poisoned and empty entries are skipped, and what is given
    // back is gone from the table, so each leaf is met once.
    for (u64 from = 0; from < ia_end;) {
      constexpr unsigned kBatch = 32;
      u64 at[kBatch], end[kBatch];
      unsigned found = 0;
      if (Status st = scan(g->table, from, ia_end - from, [&](u64 e, u64 a, u64 b) -> Status {
            if (found == kBatch || !arch::DescValid::get(e)) return {};
            at[found] = a;
            end[found++] = b;
            return {};
          });
          !st)
        return st;
      if (found == 0) break;
      for (unsigned i = 0; i < found; ++i)
        for (u64 x = at[i]; x < end[i]; x += kPage)
          if (Status st = reclaim_page(*g, x); !st) return st;
      from = end[found - 1];
    }
    g->mc.drain(*plat_);
    g->table.destroy();
    __atomic_store_n(&g->used, false, __ATOMIC_RELEASE);
    __atomic_store_n(&g->id, ComponentId{0}, __ATOMIC_RELAXED);
    g->alive = false;
    return {};
  }

  /// After teardown: gives back the one page the guest maps at `ipa`, as Linux's
  /// __pkvm_host_reclaim_page_guest does, so a host can reclaim a dead guest a page per call
  /// (rescheduling in between, the pages it needs first) instead of all at once in
  /// reclaim_guest(). What happens to the page depends on its state at the guest:
  ///  - owned (donated to it) or shared-owned (its own, shared back to the host): scrubbed
  ///    (zeroed through the fixmap; cleaned to the point of coherency without FWB) and the
  ///    host's again (mapped lazily by its next fault);
  ///  - shared-borrowed (shared with it by the host): the share ends, the page's count of guest
  ///    shares drops, and at zero the page is the host's alone again; not scrubbed (the host
  ///    owned it throughout).
  /// In every case the guest's entry is removed first, and its TLB entries invalidated by IPA
  /// (DSB ISHST; TLBI IPAS2E1IS; DSB ISH; TLBI VMALLE1IS; DSB ISH), before the page is scrubbed
  /// or the host's entry changes. A page inside a block of the guest's stage-2 (a donated or
  /// shared range mapped whole) is reclaimed alone: the block is split, one new table per level
  /// below it (break-before-make), the rest of it kept and reclaimed by later calls. The table
  /// pages that takes come from the host's memcache, filled from the platform here (the guest
  /// runs no more, so nobody fills its own). A table left empty is freed at once; the root and
  /// the VMID stay until reclaim_guest() releases them, so the guest exists (torn down) until
  /// then, even with nothing left to reclaim.
  ///
  /// Errors, in this order (all-or-nothing: on error nothing changed):
  ///  - EINVAL: no such guest;
  ///  - EPERM: the guest is live (tear it down first);
  ///  - EINVAL: `ipa` not page-aligned or past the guest's input-address size (one page: any
  ///    address that is not a page of the guest's IPA space is a bad address, hence not ERANGE);
  ///  - EHWPOISON: `ipa` is poisoned (its page was taken by host_force_reclaim and is the
  ///    host's already); the poisoned entry is left as it is, and goes with the table;
  ///  - ENOENT: nothing mapped at `ipa`: never mapped, already reclaimed, or a page lent to the
  ///    guest (teardown_guest relinquished it; the host takes it back with host_reclaim_lent);
  ///  - ENOMEM: the platform cannot fill the host's memcache for a split;
  ///  - EOPNOTSUPP: the page needs a scrub and the platform's fixmap cannot map it.
  [[nodiscard]] Status reclaim_guest_page(ComponentId id, u64 ipa) {
    const Guard host_lock = lock_host();
    const GuestGuard guest_lock = lock_guest(find_guest(id));
    Guest* g = find_guest(id);
    if (g == nullptr) return fail(Error::einval);
    if (g->alive) return fail(Error::eperm);
    if ((ipa & (kPage - 1)) != 0 || ipa >= (u64{1} << g->table.ia_bits())) return fail(Error::einval);
    return reclaim_page(*g, ipa);
  }

  /// A forced reclaim, keyed by physical address: takes one page from a live guest that owns
  /// it. The page is scrubbed and given to the host; the guest's address keeps a poisoned
  /// annotation, so its later access faults, its share of that address is EHWPOISON, and a
  /// later share or donation to it is EPERM, until the guest is torn down. EPERM if the page is
  /// not owned by a live guest; EOPNOTSUPP, with nothing changed, if the platform's fixmap
  /// cannot map the page (it is never given to the host unscrubbed).
  [[nodiscard]] Status host_force_reclaim(u64 pa) {
    u64 size = 0;
    if (Status st = check_memory(pa, 1, &size); !st) return st;
    const Guard host_lock = lock_host();
    PageMeta& m = meta(pa);
    Guest* g = find_guest(m.guest);
    const GuestGuard guest_lock = lock_guest(g);
    if (g == nullptr || !g->alive || host_annotation_owner(pa) != m.guest || host_state(pa) != PageState::none)
      return fail(Error::eperm);
    if (g->mc.size() < g->table.max_pages_needed(m.guest_ipa, kPage)) return fail(Error::enomem);
    if (Status st = fill(host_mc_, host_.max_pages_needed(pa, kPage)); !st) return st;
    // The fixmap is taken before anything changes (no fixmap: nothing to undo), and the page
    // zeroed only once the guest has lost it, so nothing it writes survives.
    void* const p = plat_->fixmap_map(pa);
    if (p == nullptr) return fail(Error::eopnotsupp);
    if (Status st = g->table.annotate(m.guest_ipa, kPage, arch::InvalidDesc(annotation_poisoned()), g->mc); !st) {
      plat_->fixmap_unmap();
      return st;
    }
    zero_mapped(p, pa);
    if (Status st = host_.unmap(pa, kPage, host_mc_); !st) return st;
    m = PageMeta{};
    host_rebuild_blocks(pa, kPage);
    return {};
  }


  // ---- permissions of pages shared with a guest (through the engine; software bits kept) ----
  //
  // The guest's own stage-2 fault operations: guest_relax_perms, guest_mkyoung and
  // guest_test_clear_young take the guest lock's shared side, so the guest's CPUs fault at
  // once; each changes one entry's permissions or access flag by compare-and-swap
  // (pgtable::Walk::shared) and never a table. guest_wrprotect may split a block (a table
  // page from the guest's memcache), so it keeps the exclusive side. The page-state check
  // reads the same atomically loaded entry the change is made from; the state bits change
  // only under the exclusive side, so the check holds until the shared side is dropped.

  /// Adds permissions to the guest's mapping of a page the host shares with it. EPERM unless
  /// the page at `ipa` is shared-borrowed by the guest (or for a torn-down guest), EHWPOISON
  /// for a poisoned address; errors of Table::relax_perms; EAGAIN if another of the guest's
  /// CPUs (or the MMU's access-flag update) changed the entry at the same time: the guest
  /// takes the fault again (the permissions already there are kept, so a retry adds the rest).
  /// The same rules for the three below. Shared side of the guest lock.
  [[nodiscard]] Status guest_relax_perms(ComponentId id, u64 ipa, pgtable::Perm perm) {
    Guest* const slot = find_guest(id);
    const SharedGuestGuard guest_lock = lock_guest_shared(slot);
    if (slot == nullptr || !holds(*slot, id)) return fail(Error::einval);
    Guest* g = nullptr;
    if (Status st = live_guest(id, &g); !st) return st;
    return g->table.template relax_perms<pgtable::Walk::shared>(ipa, Prot{perm, arch::MemType::normal_wb, 0},
                                                                pgtable::TlbPolicy::invalidate, SharedBorrowed{});
  }
  /// Removes write permission from pages the host shares with the guest. Exclusive side (it
  /// may split a block).
  [[nodiscard]] Status guest_wrprotect(ComponentId id, u64 ipa, u64 n) {
    Guest* const slot = find_guest(id);
    const GuestGuard guest_lock = lock_guest(slot);
    if (slot == nullptr || !holds(*slot, id)) return fail(Error::einval);
    Guest* g = nullptr;
    u64 size = 0;
    if (Status st = live_guest_range(id, ipa, n, &g, &size); !st) return st;
    if (Status st = check_guest_owned(*g, ipa, size, PageState::shared_borrowed); !st) return st;
    return g->table.wrprotect(ipa, size, g->mc);
  }
  /// Whether the guest accessed pages the host shares with it; with `clear`, marks them old.
  /// Shared side (a concurrent change of an entry is retried inside: never EAGAIN).
  [[nodiscard]] Result<bool> guest_test_clear_young(ComponentId id, u64 ipa, u64 n, bool clear) {
    Guest* const slot = find_guest(id);
    const SharedGuestGuard guest_lock = lock_guest_shared(slot);
    if (slot == nullptr || !holds(*slot, id)) return fail(Error::einval);
    Guest* g = nullptr;
    u64 size = 0;
    if (Status st = live_guest_range(id, ipa, n, &g, &size); !st) return fail(st.error());
    return g->table.template test_and_clear_young<pgtable::Walk::shared>(ipa, size, clear,
                                                                         pgtable::TlbPolicy::invalidate,
                                                                         SharedBorrowed{});
  }
  /// Sets the access flag of the guest's mapping of a page the host shares with it (the
  /// access-flag fault of a stage 2 without VTCR_EL2.HA). Shared side.
  [[nodiscard]] Status guest_mkyoung(ComponentId id, u64 ipa) {
    Guest* const slot = find_guest(id);
    const SharedGuestGuard guest_lock = lock_guest_shared(slot);
    if (slot == nullptr || !holds(*slot, id)) return fail(Error::einval);
    Guest* g = nullptr;
    if (Status st = live_guest(id, &g); !st) return st;
    return g->table.template mkyoung<pgtable::Walk::shared>(ipa, SharedBorrowed{});
  }

  /// The state of the page a guest maps at `ipa`.
  [[nodiscard]] PageState guest_state(ComponentId id, u64 ipa) const {
    const Guest* g = guest(id);
    if (g == nullptr) return PageState::none;
    const Result<pgtable::Leaf> l = g->table.lookup(ipa);
    if (!l || l->entry == 0) return PageState::none;
    return state_of(l->entry);
  }


  // ---- invariants ------------------------------------------------------------------------

  /// The first broken invariant found: what, at which physical page, and at which component.
  struct Violation {
    const char* what = nullptr;
    u64 pa = 0;
    ComponentId who = 0;
  };

  /// Walks every table and checks the global invariants. `scratch` needs one u32 per page of
  /// memory (memory_pages()). Returns false and fills `*out` at the first violation:
  ///  - every page of every table, and every page a memcache keeps for one, lies outside
  ///    memory or is annotated as the hypervisor's in the host's table;
  ///  - every memory page has exactly one owner, and the host's table annotates every page the
  ///    host neither owns nor borrows, and every page it lent, with the right id and state;
  ///  - shared-owned on one side matches shared-borrowed on the other (the hypervisor, guests
  ///    as many as counted, or the secure world as recorded), and pins only on pages shared
  ///    with the hypervisor;
  ///  - a lent page is invalid at its owner and mapped by at most its borrower (by none once
  ///    relinquished);
  ///  - the hypervisor maps nothing it neither owns nor borrows, anywhere in its VA range (its
  ///    carve-out and MMIO at any address, memory only at PA + hyp_va_offset); no guest maps a
  ///    page that is not its own, shared with it or lent to it.
  [[nodiscard]] bool check_invariants(std::span<u32> scratch, Violation* out) const {
    const AllLocks locks(*this);
    if (scratch.size() < meta_.size()) return bad(out, "scratch smaller than the page array", 0, 0);
    // 0. Every table page (and every page a memcache keeps for one) is the hypervisor's.
    {
      u64 at = 0;
      ComponentId whose = 0;
      if (!each_table_page([&](u64 pa, ComponentId who) {
            if (table_page_out_of_host_reach(pa)) return true;
            at = pa;
            whose = who;
            return false;
          }))
        return bad(out, "a table page lies in memory the hypervisor does not own", at, whose);
    }
    // 1. Count, per page, the guest mappings that borrow it shared (sw 10), and check each
    //    guest leaf against the host's view.
    for (u32& c : scratch) c = 0;
    for (const Guest& g : guests_) {
      if (!g.used) continue;
      bool ok = true;
      Violation v{};
      (void)scan(g.table, 0, u64{1} << g.table.ia_bits(), [&](u64 e, u64 a, u64 b) -> Status {
        if (!arch::DescValid::get(e)) return {};
        for (u64 x = a; x < b && ok; x += kPage) {
          const u64 pa = guest_pa(g, x);
          if (!is_memory(pa)) { ok = false; v = {"a guest maps something that is not memory", pa, g.id}; break; }
          const PageState hs = host_state(pa);
          switch (state_of(e)) {
            case PageState::owned:
              if (!(hs == PageState::none && host_annotation_owner(pa) == g.id)) v = {"guest-owned page not annotated with its guest at the host", pa, g.id};
              break;
            case PageState::shared_owned:
              if (hs != PageState::shared_borrowed || meta(pa).guest != g.id) v = {"guest shared-owned page not shared-borrowed by the host", pa, g.id};
              break;
            case PageState::shared_borrowed:
              if (hs != PageState::shared_owned || meta(pa).guest_shares == 0) v = {"guest shared-borrowed page not shared-owned by the host", pa, g.id};
              ++scratch[meta_index(pa)];
              break;
            case PageState::borrowed:
              if (hs != PageState::lent || host_annotation_owner(pa) != g.id) v = {"borrowed page not lent to this guest", pa, g.id};
              else if ((meta(pa).flags & kMetaRelinquished) != 0) v = {"relinquished page still mapped by its borrower", pa, g.id};
              break;
            default: break;
          }
          if (v.what != nullptr) ok = false;
        }
        return ok ? Status{} : fail(Error::einval);
      });
      if (!ok) return bad(out, v.what, v.pa, v.who);
    }
    // 2. Every page of memory, from the host's side.
    u64 pinned = 0;
    for (const Region& r : machine_.memory) {
      for (u64 pa = r.first_page(kPage); pa < r.end_page(kPage); pa += kPage) {
        const PageMeta& m = meta(pa);
        const PageState hs = host_state(pa);
        const PageState ys = hyp_state(pa);
        const u32 guest_shares = scratch[meta_index(pa)];
        if (guest_shares != m.guest_shares) return bad(out, "guest share count does not match the guests' tables", pa, kHostId);
        if (m.hyp_pins != 0 && !(hs == PageState::shared_owned && ys == PageState::shared_borrowed))
          return bad(out, "pinned page not shared with the hypervisor", pa, kHypId);
        pinned += m.hyp_pins != 0;
        // The carve-out never leaves the hypervisor (its pages may be mapped at any EL2 address,
        // which step 3 allows only while they are its own).
        if (in_carveout(pa) && !(hs == PageState::none && host_annotation_owner(pa) == kHypId))
          return bad(out, "carve-out page not the hypervisor's at the host", pa, kHostId);
        switch (hs) {
          case PageState::owned:
            if (ys != PageState::none) return bad(out, "host-owned page mapped by the hypervisor", pa, kHypId);
            if (m.guest_shares != 0 || (m.flags & kMetaFfa) != 0) return bad(out, "owned page recorded as shared", pa, kHostId);
            break;
          case PageState::shared_owned: {
            const bool hyp = ys == PageState::shared_borrowed;
            const bool ffa = (m.flags & kMetaFfa) != 0;
            const bool guests = m.guest_shares != 0;
            if (int{hyp} + int{ffa} + int{guests} != 1) return bad(out, "shared-owned page not shared with exactly one kind of borrower", pa, kHostId);
            break;
          }
          case PageState::shared_borrowed: {
            const Guest* g = guest(m.guest);
            if (g == nullptr || guest_state(g->id, m.guest_ipa) != PageState::shared_owned)
              return bad(out, "host shared-borrowed page not shared-owned by its guest", pa, m.guest);
            break;
          }
          case PageState::lent:
            if (meta(pa).guest != host_annotation_owner(pa)) return bad(out, "lent page's borrower not recorded", pa, kHostId);
            break;
          case PageState::none: {
            const ComponentId owner = host_annotation_owner(pa);
            if (owner == kHypId) {
              if (ys != PageState::owned && !in_carveout(pa)) return bad(out, "hypervisor-owned page not mapped by the hypervisor", pa, kHypId);
            } else if (owner >= kFirstGuestId) {
              const Guest* g = guest(owner);
              if (g == nullptr) return bad(out, "page annotated with a guest that does not exist", pa, owner);
              if (m.guest != owner) return bad(out, "guest-owned page not recorded in the page array", pa, owner);
            } else {
              return bad(out, "host annotation with no owner", pa, kHostId);
            }
            if (ys != PageState::none && owner != kHypId) return bad(out, "the hypervisor maps a page it neither owns nor borrows", pa, kHypId);
            break;
          }
          default: return bad(out, "host entry in an impossible state", pa, kHostId);
        }
        if (ys == PageState::shared_borrowed && hs != PageState::shared_owned) return bad(out, "hypervisor borrows a page the host has not shared", pa, kHypId);
      }
    }
    if (pinned != pinned_pages_) return bad(out, "count of pinned pages does not match the page array", 0, kHypId);
    // 3. Every valid leaf of the hypervisor's table, over its whole VA range (step 2 only looks
    //    at the EL2 addresses of memory): a mapping anywhere else must be its own (carve-out,
    //    its MMIO), and memory is mapped only at its EL2 address, where step 2 checked its state.
    struct V {
      static constexpr unsigned visits() { return pgtable::kVisitLeaf | pgtable::kVisitLeafRun; }
      const MemProtect* self;
      Violation v{};
      Status check(u64 va, u64 end, u64 pa) {
        if (const char* what = self->stray_hyp_leaf(va, end - va, pa); what != nullptr) {
          v = {what, pa, kHypId};
          return fail(Error::einval);
        }
        return {};
      }
      Status leaf(pgtable::VisitCtx& x) {
        if (!arch::DescValid::get(x.old)) return {};
        return check(x.addr, x.end, self->hyp_.oa_format().decode(x.old, arch::level_shift(G, x.level)) + (x.addr - x.base));
      }
      Status leaf_run(u64* table, u64 idx, u64 n, u64 addr, u64) {
        for (u64 i = 0; i < n; ++i, addr += kPage) {
          const u64 e = table[idx + i];
          if (!arch::DescValid::get(e)) continue;
          if (Status st = check(addr, addr + kPage, self->hyp_.oa_format().decode(e, arch::level_shift(G, arch::kLastLevel))); !st) return st;
        }
        return {};
      }
    } hv{this};
    if (!hyp_.walk(0, u64{1} << hyp_.ia_bits(), hv)) return bad(out, hv.v.what, hv.v.pa, hv.v.who);
    return true;
  }

  /// Runs the read-only walker visitor `v` (walker.hpp) over the whole host stage 2 under the
  /// host lock: a report's count of leaves while other CPUs fault. `v` must not change the
  /// table or call back into this MemProtect (the lock is not recursive).
  template <typename V>
  [[nodiscard]] Status walk_host_table(V& v) const {
    const Guard host_lock = lock_host();
    return host_.walk(0, u64{1} << host_.ia_bits(), v);
  }

  // ---- accessors --------------------------------------------------------------------------
  [[nodiscard]] const S2& host_table() const { return host_; }
  [[nodiscard]] const S1& hyp_table() const { return hyp_; }
  /// The CPU features init() was given.
  [[nodiscard]] const arch::CpuFeatures& cpu() const { return cpu_; }
  [[nodiscard]] const arch::Stage2Config& host_config() const { return host_cfg_; }
  [[nodiscard]] const arch::Stage1Config& hyp_config() const { return hyp_cfg_; }
  [[nodiscard]] const MachineDesc& machine() const { return machine_; }
  [[nodiscard]] u64 hyp_va(u64 pa) const { return pa + machine_.hyp_va_offset; }
  [[nodiscard]] pgtable::Memcache& host_memcache() { return host_mc_; }
  [[nodiscard]] pgtable::Memcache& hyp_memcache() { return hyp_mc_; }

  /// The page's metadata (pa must be memory).
  [[nodiscard]] const PageMeta& page_meta(u64 pa) const { return meta_[meta_index(pa)]; }

  /// The state of the page at `pa` at the host.
  [[nodiscard]] PageState host_state(u64 pa) const {
    const Result<pgtable::Leaf> l = host_.lookup(pa);
    if (!l) return PageState::none;
    if (l->entry == 0) return is_memory(pa) || is_host_mmio(pa) ? PageState::owned : PageState::none;
    return state_of(l->entry);
  }
  /// The state of the page at `pa` at the hypervisor (at its VA).
  [[nodiscard]] PageState hyp_state(u64 pa) const {
    const Result<pgtable::Leaf> l = hyp_.lookup(hyp_va(pa));
    if (!l || l->entry == 0) return PageState::none;
    return state_of(l->entry);
  }
  /// The owner recorded in the host's table for `pa` (kHostId for host-owned pages).
  [[nodiscard]] ComponentId host_annotation_owner(u64 pa) const {
    const Result<pgtable::Leaf> l = host_.lookup(pa);
    if (!l || arch::DescValid::get(l->entry)) return kHostId;
    return arch::InvalidDesc(l->entry).owner();
  }

  // ---- region and state helpers (also used by the guest transitions) -----------------------
 protected:
  // ---- locks (docs/concurrency.md: which transition takes which, in the order of locking.hpp)
  // The host's lock, the hypervisor's, or both in one acquisition: a transition that needs
  // both takes lock_host_hyp(), never lock_host() and then lock_hyp() (HostHypLocks' rule).
  using Guard = HostHypGuard<P>;
  [[nodiscard]] Guard lock_host() const { return Guard(*plat_, host_hyp_locks_, HostHyp::host); }
  [[nodiscard]] Guard lock_hyp() const { return Guard(*plat_, host_hyp_locks_, HostHyp::hyp); }
  [[nodiscard]] Guard lock_host_hyp() const { return Guard(*plat_, host_hyp_locks_, HostHyp::both); }
  using GuestGuard = RankedGuard<P, GuestLock>;
  using SharedGuestGuard = SharedRankedGuard<P, GuestLock>;
  // The lock of guest slot `g` (none for nullptr: the transition then fails on the missing
  // guest without touching any guest table).
  [[nodiscard]] GuestGuard lock_guest(const Guest* g) const {
    if (g == nullptr) return GuestGuard(*plat_, nullptr, 0);
    return GuestGuard(*plat_, &g->lock, guest_lock_rank(static_cast<unsigned>(g - guests_)));
  }
  // Its shared side, for the guest's own fault operations.
  [[nodiscard]] SharedGuestGuard lock_guest_shared(const Guest* g) const {
    if (g == nullptr) return SharedGuestGuard(*plat_, nullptr, 0);
    return SharedGuestGuard(*plat_, &g->lock, guest_lock_rank(static_cast<unsigned>(g - guests_)));
  }
  // Every lock, in the global order (host, hypervisor, guest slots by index), for
  // check_invariants; released in the reverse order.
  class AllLocks {
   public:
    // host_hyp_ is taken before the body takes the guests' and released after the destructor's
    // body has dropped them: the global order both ways.
    explicit AllLocks(const MemProtect& mp) : mp_(mp), host_hyp_(mp.lock_host_hyp()) {
      for (unsigned i = 0; i < kMaxGuests; ++i) take(&mp_.guests_[i].lock, guest_lock_rank(i));
    }
    ~AllLocks() {
      for (unsigned i = kMaxGuests; i-- > 0;) drop(&mp_.guests_[i].lock, guest_lock_rank(i));
    }
    AllLocks(const AllLocks&) = delete;
    AllLocks& operator=(const AllLocks&) = delete;

   private:
    template <typename L>
    void take(L* l, unsigned rank) {
      if constexpr (LockOrderHooks<P>) mp_.plat_->lock_order_acquire(rank);
      l->lock();
    }
    template <typename L>
    void drop(L* l, unsigned rank) {
      l->unlock();
      if constexpr (LockOrderHooks<P>) mp_.plat_->lock_order_release(rank);
    }
    const MemProtect& mp_;
    const Guard host_hyp_;
  };

  // host_share_hyp's work, under the host's and the hypervisor's locks (setup_share_hyp too).
  [[nodiscard]] Status host_share_hyp_locked(u64 pa, u64 n) {
    u64 size = 0;
    if (Status st = check_memory(pa, n, &size); !st) return st;
    if (Status st = check_host(pa, size, HostNeed::owned); !st) return st;
    if (Status st = check_hyp_none(pa, size); !st) return st;
    if (Status st = fill_host_hyp(pa, size); !st) return st;
    return commit2(host_.map(pa, size, pa, host_prot(sw_shared_owned()), host_mc_),
                   [&] { return hyp_.map(hyp_va(pa), size, pa, hyp_prot(sw_shared_borrowed()), hyp_mc_); });
  }

  enum class Kind { memory, mmio, none, mixed };
  enum class HostNeed { owned, shared_owned };

  static bool host_force_page(void*, u64, u64, const Prot& prot, bool annotation) {
    if (annotation) return false;  // block-level annotations are fine
    return !(prot == kHostMem || prot == kHostMmio);
  }
  // Blocks at EL2 only for set-up mappings (hyp_map_blocks); everything a transition maps is
  // mapped page by page, so any part of it can be unshared or given back later.
  static bool hyp_force_page(void* ctx, u64, u64, const Prot&, bool) {
    return !static_cast<const MemProtect*>(ctx)->hyp_blocks_;
  }
  // A set-up mapping at EL2 (the carve-out, the hypervisor's MMIO, its private ranges), in the
  // largest blocks that fit. Draws from the hypervisor's memcache, filled by the caller.
  [[nodiscard]] Status hyp_map_blocks(u64 va, u64 size, u64 pa, const Prot& prot) {
    hyp_blocks_ = true;
    const Status st = hyp_.map(va, size, pa, prot, hyp_mc_);
    hyp_blocks_ = false;
    return st;
  }
  // Unmapping [hyp_va(pa), +size) at EL2 must not cut a block (the engine refuses to split a
  // stage-1 block, EINVAL): transitions map pages, but set-up mappings (the carve-out) may be
  // blocks. Checked before anything changes.
  [[nodiscard]] Status check_hyp_no_split(u64 pa, u64 size) const {
    const u64 va = hyp_va(pa);
    if (size == kPage) {
      const Result<pgtable::Leaf> l = hyp_.lookup(va);
      if (!l) return fail(l.error());
      return l->size == kPage ? Status{} : fail(Error::einval);
    }
    struct V {
      static constexpr unsigned visits() { return pgtable::kVisitLeaf | pgtable::kVisitLeafRun; }
      Status leaf(pgtable::VisitCtx& x) {
        return x.addr == x.base && x.end == x.base + arch::level_size(G, x.level) ? Status{} : fail(Error::einval);
      }
      Status leaf_run(u64*, u64, u64, u64, u64) { return {}; }  // last-level entries: whole pages
    } v;
    return hyp_.walk(va, va + size, v);
  }
  static constexpr Prot host_prot(u8 sw) { return Prot{pgtable::kPermRWX, arch::MemType::normal_wb, sw}; }
  static constexpr Prot hyp_prot(u8 sw) { return Prot{pgtable::kPermRW, arch::MemType::normal_wb, sw}; }

  [[nodiscard]] Status fill(pgtable::Memcache& mc, u32 pages) { return mc.topup(*plat_, pages); }
  [[nodiscard]] Status fill_host_hyp(u64 pa, u64 size) {
    if (Status st = fill(host_mc_, host_.max_pages_needed(pa, size)); !st) return st;
    return fill(hyp_mc_, hyp_.max_pages_needed(hyp_va(pa), size));
  }

  // The second step of a two-table commit. The checks made both infallible; should the second
  // still fail (a bug), the first is reported through the same error and nothing hides it.
  template <typename F>
  [[nodiscard]] static Status commit2(Status first, F&& second) {
    if (!first) return first;
    return second();
  }

  // Whether `pa` is in a page of memory (a page a region only partly covers counts).
  [[nodiscard]] bool is_memory(u64 pa) const { return find_meta_index(pa) != kNotMemory; }
  [[nodiscard]] bool is_host_mmio(u64 pa) const {
    for (const MmioRegion& m : machine_.mmio)
      if (!m.hyp && m.region().contains(pa)) return true;
    return false;
  }
  [[nodiscard]] bool find_region(u64 pa, Region* out, bool* mmio) const {
    for (const Region& r : machine_.memory)
      if (r.contains(pa)) {
        *out = r;
        *mmio = false;
        return true;
      }
    for (const MmioRegion& m : machine_.mmio)
      if (m.region().contains(pa)) {
        *out = m.region();
        *mmio = true;
        return !m.hyp;  // the hypervisor's MMIO is not the host's to fault in
      }
    return false;
  }
  [[nodiscard]] Kind range_kind(u64 pa, u64 size) const {
    for (const Region& r : machine_.memory) {
      if (r.contains(pa, size)) return Kind::memory;
      if (pa < r.end() && r.base < pa + size) return Kind::mixed;
    }
    bool any_mmio = false;
    for (const MmioRegion& m : machine_.mmio)
      if (pa < m.base + m.size && m.base < pa + size) any_mmio = true;
    return any_mmio ? Kind::mmio : Kind::none;
  }

  // [pa, pa + n pages) must be memory, in one region. EINVAL for n == 0, an unaligned
  // address, or a range mixing memory and anything else; EPERM for MMIO or nothing.
  [[nodiscard]] Status check_memory(u64 pa, u64 n, u64* size) const {
    if (n == 0 || (pa & (kPage - 1)) != 0 || n > (~u64{0} / kPage) || pa + n * kPage < pa)
      return fail(Error::einval);
    *size = n * kPage;
    switch (range_kind(pa, *size)) {
      case Kind::memory: return {};
      case Kind::mixed: return fail(Error::einval);
      default: return fail(Error::eperm);
    }
  }



  // Where a table page may lie: in memory the host's table annotates as the hypervisor's (its
  // carve-out, or pages donated to it), or outside every memory region. Any other page of
  // memory is one the host may own and fault in, and a table the host can write undoes every
  // isolation promise (pKVM's tables come from the hypervisor's own pool). The platform
  // chooses where table pages come from; the invariant checker holds it to this, and
  // hyp_donate_host refuses to give such a page back (EBUSY).
  [[nodiscard]] bool table_page_out_of_host_reach(u64 pa) const {
    return !is_memory(pa) || (host_annotation_owner(pa) == kHypId && host_state(pa) == PageState::none);
  }
  // Calls f(pa, who) for every page of every table (roots included) and every page a memcache
  // holds for one, `who` the table's component; stops and returns false when f does.
  template <typename F>
  [[nodiscard]] bool each_table_page(F&& f) const {
    const auto table = [&](const auto& t, ComponentId who) {
      for (unsigned i = 0; i < t.root_pages(); ++i)
        if (!f(t.root_pa() + i * kPage, who)) return false;
      struct V {
        static constexpr unsigned visits() { return pgtable::kVisitTablePre; }
        std::remove_reference_t<F>* f;
        ComponentId who;
        Status table_pre(pgtable::VisitCtx& x) {
          return (*f)(arch::TableDesc(x.old).next_table(G, *oa), who) ? Status{} : fail(Error::eperm);
        }
        const arch::OaFormat* oa;  // the table's address format
      } v{&f, who, &t.oa_format()};
      return t.walk(0, u64{1} << t.ia_bits(), v).has_value();
    };
    const auto cache = [&](const pgtable::Memcache& mc, ComponentId who) {
      bool ok = true;
      mc.for_each(*plat_, [&](u64 pa) { ok = ok && f(pa, who); });
      return ok;
    };
    if (!table(host_, kHostId) || !cache(host_mc_, kHostId)) return false;
    if (!table(hyp_, kHypId) || !cache(hyp_mc_, kHypId)) return false;
    for (const Guest& g : guests_)
      if (g.used && (!table(g.table, g.id) || !cache(g.mc, g.id))) return false;
    return true;
  }

  // Why an EL2 leaf mapping [va, +len) to [pa, +len) is stray, or nullptr if it is not. The
  // hypervisor may map its carve-out and its MMIO anywhere (its code, data, pools, fixmap);
  // memory only at PA + hyp_va_offset, where the page's state says whether it may.
  [[nodiscard]] const char* stray_hyp_leaf(u64 va, u64 len, u64 pa) const {
    if (hyp_covered(pa, len, false)) return nullptr;
    if (va != hyp_va(pa)) return "the hypervisor maps something not its own away from its EL2 address";
    if (!hyp_covered(pa, len, true)) return "the hypervisor maps something that is neither memory nor its own";
    return nullptr;
  }
  // Whether every byte of [pa, +len) is in the carve-out, the hypervisor's MMIO or (with
  // `memory`) a page of memory.
  [[nodiscard]] bool hyp_covered(u64 pa, u64 len, bool memory) const {
    const u64 end = pa + len;
    while (pa < end) {
      u64 next = pa;
      const Region c = machine_.hyp_carveout;
      if (c.size != 0 && c.contains(pa)) next = c.end();
      for (const MmioRegion& m : machine_.mmio)
        if (m.hyp && m.region().contains(pa)) next = m.base + m.size;
      if (memory)
        for (const Region& r : machine_.memory)
          if (r.touches_page(pa, kPage)) next = r.end_page(kPage);
      if (next == pa) return false;
      pa = next;
    }
    return true;
  }

  static bool bad(Violation* out, const char* what, u64 pa, ComponentId who) {
    if (out != nullptr) *out = Violation{what, pa, who};
    return false;
  }
  [[nodiscard]] bool in_carveout(u64 pa) const { return machine_.hyp_carveout.contains(pa); }
  [[nodiscard]] bool overlaps_carveout(u64 pa, u64 size) const {
    const Region& c = machine_.hyp_carveout;
    return c.size != 0 && pa < c.base + c.size && c.base < pa + size;
  }

  // The slot of guest `id`, or nullptr. Slots change only under the host lock and their own
  // guest lock; `used` and `id` are read atomically because the guest-only operations look a
  // slot up holding neither, then lock it and check it still `holds` the guest.
  [[nodiscard]] Guest* find_guest(ComponentId id) const {
    if (id < kFirstGuestId) return nullptr;
    for (const Guest& g : guests_)
      if (__atomic_load_n(&g.used, __ATOMIC_ACQUIRE) && __atomic_load_n(&g.id, __ATOMIC_RELAXED) == id)
        return const_cast<Guest*>(&g);
    return nullptr;
  }
  // Whether `g` holds guest `id` (called with g's lock held, when nothing can change it).
  [[nodiscard]] static bool holds(const Guest& g, ComponentId id) { return g.used && g.id == id; }

  // The live guest `id` and the size of its [ipa, +n pages). EINVAL for no such guest or a bad
  // range (ERANGE past its input size), EPERM for a guest that was torn down.
  [[nodiscard]] Status live_guest_range(ComponentId id, u64 ipa, u64 n, Guest** out, u64* size) {
    Guest* g = nullptr;
    if (Status st = live_guest(id, &g); !st) return st;
    if (Status st = check_ipa(*g, ipa, n, size); !st) return st;
    *out = g;
    return {};
  }
  // The guest `id` if it is live: EINVAL for no such guest, EPERM for one that was torn down
  // (every transition and permission change of a guest needs it live; after teardown only
  // reclaim_guest_page and reclaim_guest touch its table).
  [[nodiscard]] Status live_guest(ComponentId id, Guest** out) {
    Guest* g = find_guest(id);
    if (g == nullptr) return fail(Error::einval);
    if (!g->alive) return fail(Error::eperm);
    *out = g;
    return {};
  }
  // The guest's memcache holds the table pages mapping [ipa, +size) can take (ENOMEM if not).
  // Checked after the state checks, so a request that is refused says why (EPERM) whatever
  // the memcache holds.
  [[nodiscard]] static Status check_guest_memcache(const Guest& g, u64 ipa, u64 size) {
    return g.mc.size() < g.table.max_pages_needed(ipa, size) ? fail(Error::enomem) : Status{};
  }

  // Checks shared by the transitions into a guest: memory range, live guest, permissions,
  // the guest's addresses empty (a poisoned one is EPERM). The caller checks the host's side,
  // then the guest's memcache (check_guest_memcache).
  [[nodiscard]] Status check_guest_target(u64 pa, u64 n, ComponentId id, u64 ipa, pgtable::Perm perm, Guest** out,
                                          u64* size) {
    Guest* g = nullptr;
    if (Status st = live_guest(id, &g); !st) return st;
    if ((perm & ~pgtable::kPermRWX) != 0 || perm == pgtable::kPermNone) return fail(Error::einval);
    if (Status st = check_memory(pa, n, size); !st) return st;
    u64 ipa_size = 0;
    if (Status st = check_ipa(*g, ipa, n, &ipa_size); !st) return st;
    if (Status st = scan(g->table, ipa, *size, [](u64 e, u64, u64) -> Status {
          return e == 0 ? Status{} : fail(Error::eperm);
        });
        !st)
      return st;
    *out = g;
    return {};
  }
  [[nodiscard]] Status check_ipa(const Guest& g, u64 ipa, u64 n, u64* size) const {
    if (n == 0 || (ipa & (kPage - 1)) != 0 || n > (u64{1} << g.table.ia_bits()) / kPage) return fail(Error::einval);
    *size = n * kPage;
    if (ipa + *size > (u64{1} << g.table.ia_bits()) || ipa + *size < ipa) return fail(Error::erange);
    return {};
  }
  // Every page of the guest's [ipa, +size) is valid in state `s` (poisoned: EHWPOISON).
  // check_guest_owned(..., PageState::shared_borrowed) for one entry: the engine's check of
  // the leaf a shared fault operation found (pgtable::AcceptLeaf's place).
  struct SharedBorrowed {
    [[nodiscard]] Status operator()(u64 e) const {
      if (is_poisoned(e)) return fail(Error::ehwpoison);
      if (!arch::DescValid::get(e) || state_of(e) != PageState::shared_borrowed) return fail(Error::eperm);
      return {};
    }
  };
  [[nodiscard]] Status check_guest_owned(const Guest& g, u64 ipa, u64 size, PageState s) const {
    return scan(g.table, ipa, size, [s](u64 e, u64, u64) -> Status {
      if (is_poisoned(e)) return fail(Error::ehwpoison);
      if (!arch::DescValid::get(e) || state_of(e) != s) return fail(Error::eperm);
      return {};
    });
  }
  // The physical page a guest maps at `ipa` (valid leaf assumed).
  [[nodiscard]] u64 guest_pa(const Guest& g, u64 ipa) const {
    const Result<pgtable::Leaf> l = g.table.lookup(ipa);
    if (!l || !arch::DescValid::get(l->entry)) return ~u64{0};
    return g.table.output_address(*l) + (ipa - l->base);
  }
  // An upper bound of the host table pages that page-by-page changes to the host pages behind
  // the guest's [ipa, +size) can take: the engine's bound for each contiguous piece.
  [[nodiscard]] u32 host_pages_for_guest_range(const Guest& g, u64 ipa, u64 size) const {
    u64 pages = 0;
    (void)scan(g.table, ipa, size, [&](u64 e, u64 a, u64 b) -> Status {
      if (arch::DescValid::get(e)) pages += host_.max_pages_needed(guest_pa(g, a), b - a);
      return {};
    });
    return pages > 0xffff'ffffu ? 0xffff'ffffu : static_cast<u32>(pages);
  }

  // Changes the state bits of the guest's page at `ipa` keeping its permissions.
  [[nodiscard]] Status set_guest_state(Guest& g, u64 ipa, u64 pa, u8 sw) {
    const Result<pgtable::Leaf> l = g.table.lookup(ipa);
    if (!l) return fail(l.error());
    Prot p = pgtable::Stage2::decode(l->entry, g.table.fwb());
    p.sw = sw;
    return g.table.map(ipa, kPage, pa, p, g.mc);
  }
  // The number of tables reclaiming every page of a block of `size` one page at a time makes:
  // one per entry of each level from the block's own down to the one above the last, that is
  // every table the block's range can hold (0 for a page).
  [[nodiscard]] static u64 tables_under_block(u64 size) {
    u64 n = 0;
    for (int level = arch::kLastLevel - 1; level >= 0 && arch::level_size(G, level) <= size; --level)
      n += size / arch::level_size(G, level);
    return n;
  }

  // Gives back the page a torn-down guest maps at `ipa` (reclaim_guest_page(), whose errors
  // after the guest's and the address's these are). Checks everything first (the guest's
  // entry, the host's entry and the page array agree on the state; the memcache; the fixmap),
  // then commits through engine calls that cannot fail once they passed.
  // The lookups keep where each entry lives (PageRef), and the unmaps below clear those
  // entries through it (Table::unmap_page) instead of walking both tables again.
  [[nodiscard]] Status reclaim_page(Guest& g, u64 ipa) {
    const Result<pgtable::PageRef> gref = g.table.lookup_page(ipa);
    if (!gref) return fail(gref.error());
    const pgtable::Leaf* const gl = &gref->leaf;
    if (is_poisoned(gl->entry)) return fail(Error::ehwpoison);
    if (!arch::DescValid::get(gl->entry)) return fail(Error::enoent);
    const PageState gs = state_of(gl->entry);
    const u64 pa = g.table.output_address(*gl) + (ipa - gl->base);
    // The host's side must be what the guest's state says (the invariants promise it; a
    // mismatch is refused rather than acted on).
    PageMeta* const mp = memory_meta(pa);
    if (mp == nullptr) return fail(Error::eperm);
    const Result<pgtable::PageRef> href = host_.lookup_page(pa);
    if (!href) return fail(href.error());
    const pgtable::Leaf* const hl = &href->leaf;
    PageMeta& m = *mp;
    bool scrub = false, host_changes = true;
    switch (gs) {
      case PageState::owned:  // donated: the host's entry names the guest as owner
        if (!is_owned_by(hl->entry, g.id) || m.guest != g.id) return fail(Error::eperm);
        scrub = true;
        break;
      case PageState::shared_owned:  // the guest's, shared back: the host borrows it
        if (!arch::DescValid::get(hl->entry) || state_of(hl->entry) != PageState::shared_borrowed ||
            m.guest != g.id || m.guest_ipa != ipa)
          return fail(Error::eperm);
        scrub = true;
        break;
      case PageState::shared_borrowed:  // the host's, shared with guests: counted
        if (!arch::DescValid::get(hl->entry) || state_of(hl->entry) != PageState::shared_owned ||
            m.guest_shares == 0 || (m.flags & kMetaFfa) != 0)
          return fail(Error::eperm);
        host_changes = m.guest_shares == 1;
        break;
      default:  // borrowed: teardown relinquished every borrowed page, so none is left here
        return fail(Error::eperm);
    }
    // Table pages: splitting the guest's block (one new table per level below it), and the
    // host's (a block annotation of a donated range; the host maps shared pages page by page).
    const u32 need = static_cast<u32>(arch::kLastLevel - gl->level) +
                     (host_changes ? static_cast<u32>(arch::kLastLevel - hl->level) : 0u);
    if (need != 0) {
      if (Status st = fill(host_mc_, need); !st) return st;
    }
    // The fixmap is taken before anything changes (no fixmap: nothing to undo), and the page
    // zeroed only once the guest's entry and its TLB entries are gone.
    void* const p = scrub ? plat_->fixmap_map(pa) : nullptr;
    if (scrub && p == nullptr) return fail(Error::eopnotsupp);
    // The guest's entry first: the engine invalidates its TLB entries by IPA and waits for the
    // invalidation (DSB ISH) before it returns, so no CPU reaches the page through the guest's
    // VMID once it is scrubbed or the host's. A table that empties is freed.
    if (Status st = g.table.unmap_page(*gref, host_mc_); !st) {
      if (scrub) plat_->fixmap_unmap();
      return st;
    }
    if (scrub) {
      zero_mapped(p, pa);
      if (Status st = host_.unmap_page(*href, host_mc_); !st) return st;
      m.guest = 0;
      m.guest_ipa = 0;
      host_rebuild_blocks(pa, kPage);
      return {};
    }
    if (host_changes) {
      if (Status st = host_.map(pa, kPage, pa, host_prot(sw_owned()), host_mc_); !st) return st;
    }
    --m.guest_shares;
    if (host_changes) host_rebuild_blocks(pa, kPage);
    return {};
  }

  // ---- host blocks rebuilt ------------------------------------------------------------------

  // Maps [pa, +size) of memory, every page of which is coming home to the host, back owned
  // RWX (the default state). With the rebuild on and more than a page, through the engine's
  // `replace`: a block-aligned part the range covers whole is mapped as a block at once,
  // break-before-make over the table it replaces (the table freed), instead of every page
  // written owned and the same block rebuilt over them afterwards (a GiB unshared: 262,144
  // entry writes and a counting pass saved). Every entry in the range maps its own address as
  // memory, so `replace` changes no translation, only the level; a block lies inside the range
  // and so inside one memory region, where host_handle_fault would map it too. The edges and
  // the levels above are host_rebuild_blocks()' (called next). Errors as Table::map; the
  // table unchanged on error.
  [[nodiscard]] Status host_map_home(u64 pa, u64 size) {
    pgtable::MapOptions opts;
    opts.replace = rebuild_blocks_ && size > kPage;
    return host_.map(pa, size, pa, host_prot(sw_owned()), host_mc_, opts);
  }

  // Whether the host's stage-2 may hold a block at `level` over [b, +level size) of `region`:
  // the level holds blocks, and the block lies inside the region (so it maps no MMIO, nothing
  // outside memory, and the edge of a region that is not block-aligned stays in smaller
  // leaves). host_handle_fault maps the largest block this allows; the rebuild builds no other.
  [[nodiscard]] static bool block_fits_region(const Region& region, u64 b, int level) {
    return arch::leaf_allowed(G, level) && region.contains(b, arch::level_size(G, level));
  }

  // After a transition gave [pa, +size) back to the host (or ended a sharing of it): every
  // block-sized, block-aligned range it touched whose entries are all default again is mapped
  // by one block once more, first at the level above the last (2 MiB with 4K), then, as long
  // as that succeeds, at each level above while blocks are allowed there (1 GiB). Eager: a host
  // that maps a range page by page never faults on it again, so nothing later would notice.
  // Precondition: every page of [pa, +size) is default now (each caller has just made it so:
  // mapped owned RWX, or emptied). So a block the range covers whole needs no scan, and the
  // largest such block is rebuilt at once (a whole GiB unshared: one break-before-make, not 512).
  // It returns nothing and never fails the transition: whatever is not as expected (no table
  // there, a page in another state, an entry it does not recognise) means "leave it".
  // The cheap exit (host_neighbour_not_default()) inline, in the transition; the rebuild not.
  [[gnu::always_inline]] void host_rebuild_blocks(u64 pa, u64 size) {
    if (!rebuild_blocks_ || size == 0) return;
    if (size == kPage && host_neighbour_not_default(pa)) return;
    host_rebuild_blocks_scan(pa, size);
  }
  [[gnu::noinline]] void host_rebuild_blocks_scan(u64 pa, u64 size) {
    constexpr int kLevel = arch::kLastLevel - 1;
    Region region{};
    bool mmio = false;
    if (!find_region(pa, &region, &mmio) || mmio) return;
    const u64 end = pa + size;
    for (u64 b = pa & ~(arch::level_size(G, kLevel) - 1); b < end;) {
      int lvl = kLevel;
      for (int l = host_.start_level(); l < kLevel; ++l) {
        const u64 s = arch::level_size(G, l);
        if ((b & (s - 1)) == 0 && b >= pa && b + s <= end && block_fits_region(region, b, l)) {
          lvl = l;
          break;
        }
      }
      const u64 s = arch::level_size(G, lvl);
      const bool covered = b >= pa && b + s <= end;
      if (host_rebuild_one(region, b, lvl, b < pa ? pa : b, covered)) {
        for (int level = lvl - 1; level >= host_.start_level(); --level) {
          const u64 up = b & ~(arch::level_size(G, level) - 1);
          if (!host_rebuild_one(region, up, level, b, false)) break;
        }
      }
      b += s;
    }
  }

  // host_rebuild_blocks()' cheap exit for one page: whether an entry next to pa's in its
  // last-level table (the one the transition has just changed, so the engine's remembered slot
  // answers without a walk) is surely_not_default(), the first test of default_child(). Then
  // that table is not all default, its 2 MiB is not rebuilt, and neither is anything above it
  // (each level is tried only once the one below became a block), so the rebuild has nothing to
  // do: the answer table_all_default() would give after the region lookup and its hint's
  // bookkeeping. Pages coming home one call each in address order (a reclaim, an unshare page
  // by page) meet a neighbour still away almost every time. False, and the full rebuild
  // decides, otherwise.
  [[nodiscard]] bool host_neighbour_not_default(u64 pa) const {
    u64 t = 0;
    if (!host_.last_level_table(pa, &t)) return false;
    constexpr unsigned n = arch::entries_per_table(G);
    const u64* const e = plat_->phys_to_virt(t);
    const unsigned i = arch::level_index(G, arch::kLastLevel, pa);
    return (i + 1 < n && surely_not_default(e[i + 1])) || (i > 0 && surely_not_default(e[i - 1]));
  }

  // The entry at `level` covering [base, +level size) of the host's stage-2, if it is a table
  // whose entries are all default (children_default), becomes one block of host memory
  // (kHostMem, state owned) mapping the same addresses. The engine's map with `replace` does
  // it through break-before-make, as the Arm ARM requires when a table entry is replaced by a
  // block (D8.16.1, "Using break-before-make when updating translation table entries": the TLB
  // may hold the old pages and walk-cache entries of the table, and a block next to them could
  // give a TLB conflict abort): the entry is written invalid, DSB ISHST, the table's span
  // invalidated (TLBI RIPAS2E1IS by range with FEAT_TLBIRANGE, else TLBI VMALLS12E1IS: the
  // table held leaves of a lower level and walk-cache entries, so no single TTL hint is right),
  // DSB ISH, TLBI VMALLE1IS, DSB ISH; then the table pages under it are freed to the platform's
  // pool (the host's tables come from it), and the block written. It takes no page, so it
  // cannot fail for memory; on any error the engine changed nothing. A host access to the range
  // during the break faults; host_handle_fault, serialised with transitions, then finds the
  // block (EAGAIN) and the access is retried.
  // `covered`: the transition made every page of the range default (no scan; the entry must
  // still be a table: an empty one stays empty, to be faulted in).
  bool host_rebuild_one(const Region& region, u64 base, int level, u64 hint, bool covered) {
    if (!block_fits_region(region, base, level)) return false;
    if (covered) {
      const Result<pgtable::Leaf> l = host_.lookup(base);
      // Already the block (host_map_home mapped it): nothing to do, and the level above may
      // now be rebuilt. Anything above `level`, or an empty entry there: leave it.
      if (l && l->level == level) return arch::DescValid::get(l->entry);
      if (!l || l->level < level) return false;
    } else if (!host_children_default(base, level, hint)) {
      return false;
    }
    pgtable::MapOptions opts;
    opts.replace = true;
    return host_.map(base, arch::level_size(G, level), base, kHostMem, host_mc_, opts).has_value();
  }

  // Whether the host's entry at `level` for `base` is a table whose every entry is default:
  // empty (the host's, not faulted in), or a valid leaf of the next level mapping its own
  // address with exactly the attributes of host memory in state owned (kHostMem decoded
  // exactly; all of them with identical attribute bits, so the block keeps what they had).
  // A table below, an annotation, a shared page or anything else: false. The walk stops at
  // the entry, and table_all_default() reads the table under it.
  [[nodiscard]] bool host_children_default(u64 base, int level, u64 hint) {
    // A last-level table: the engine's remembered slot finds it without a walk (the transition
    // that called this has just changed an entry of it).
    if (level == arch::kLastLevel - 1) {
      u64 t = 0;
      return host_.last_level_table(base, &t) && table_all_default(t, arch::kLastLevel, base, hint);
    }
    struct V {
      static constexpr unsigned visits() { return pgtable::kVisitLeaf | pgtable::kVisitTablePre; }
      MemProtect* self;
      int level;
      u64 hint;
      bool all_default = false;
      Status leaf(pgtable::VisitCtx&) { return fail(Error::eperm); }  // a leaf at or above `level`
      Status table_pre(pgtable::VisitCtx& x) {
        if (x.level < level) return {};  // on the way down
        x.descend = false;
        all_default = self->table_all_default(arch::TableDesc(x.old).next_table(G, self->host_.oa_format()), level + 1, x.base, hint);
        return {};
      }
    } v{this, level, hint};
    return host_.walk(base, base + arch::level_size(G, level), v).has_value() && v.all_default;
  }

  // The part of default_child()'s rule that needs neither the level nor the address, a few bit
  // tests: entry `e` is an annotation (not 0, not valid), or valid in a state other than owned
  // (so not kHostMem, whose state is owned). True only where default_child() is false, at any
  // level; false says nothing (a table, another address or other attributes are the full
  // check's). One predicate, so host_neighbour_not_default(), which uses it alone on the hot
  // path, can never call a default entry "not default" and skip a rebuild that is due.
  [[nodiscard]] static constexpr bool surely_not_default(u64 e) {
    e &= ~arch::S2Contiguous::kMask;  // a contiguous run's hint says nothing of the state
    return e != 0 && (!arch::DescValid::get(e) || state_of(e) != PageState::owned);
  }

  // Whether entry `e` of a table of `level` covering `addr` is default (host_children_default).
  [[nodiscard]] bool default_child(u64 e, int level, u64 addr) const {
    if (surely_not_default(e)) return false;
    e &= ~arch::S2Contiguous::kMask;  // a contiguous run's hint says nothing of the state
    if (e == 0) return true;
    const arch::DescKind k = arch::classify(e, G, level);
    if (k != (level == arch::kLastLevel ? arch::DescKind::page : arch::DescKind::block)) return false;
    if (host_.oa_format().decode(e, arch::level_shift(G, level)) != addr) return false;
    bool exact = false;
    return pgtable::Stage2::decode(e, host_.fwb(), &exact) == kHostMem && exact;
  }

  // Where the rebuild keeps its hints for the block-sized range at `base` (memory, the block
  // inside one region): the spare word of PageMeta number (the range's first page's index) /
  // (entries per table), not of the range's first page itself. The blocks of a region are
  // disjoint runs of that many pages, so no two share a word, and the words of all blocks are
  // packed at the start of the array (4 GiB of memory: 2,048 of them, 48 KiB) where they stay
  // in the cache; in the range's first page, 24 bytes of a 24 MiB array, almost every look was
  // a cache miss (host_fragmentation, perf: a third of the rebuild's checks).
  [[nodiscard]] u32& rebuild_hints(u64 base) { return meta_[meta_index(base) / arch::entries_per_table(G)].rebuild_hint; }

  // The scan of host_children_default(): the table at `table_pa` of `level`, covering from
  // `base` (memory: block_fits_region held). First the entry the last scan of this table
  // stopped at (rebuild_hints(base)): while a range comes home a
  // page at a time, it is usually still not default, and one read answers. Otherwise every
  // entry, one compare each, from the one covering `hint` (the page or block the transition
  // changed) on, wrapping, to the first that is not default, which becomes the hint. Entry i
  // is default if it is 0 or equals ref + i * (its size), ref being what the first valid entry
  // found (checked by default_child) implies for entry 0: so every valid entry maps its own
  // address with the same attribute bits.
  [[nodiscard]] bool table_all_default(u64 table_pa, int level, u64 base, u64 hint) {
    const u64* const t = plat_->phys_to_virt(table_pa);
    constexpr u64 n = arch::entries_per_table(G);
    const u64 step = arch::level_size(G, level);
    if (level != arch::kLastLevel && !arch::leaf_allowed(G, level)) return false;
    u32& hints = rebuild_hints(base);
    const unsigned shift = level == arch::kLastLevel ? 0 : 16;
    const u64 w = (hints >> shift) & 0xffffu;
    if (w < n && !default_child(t[w], level, base + w * step)) return false;
    const u64 h = hint > base ? ((hint - base) / step) % n : 0;
    u64 ref = 0;
    bool have_ref = false;
    for (u64 k = 0, i = h; k < n; ++k, i = i + 1 == n ? 0 : i + 1) {
      // The Contiguous bit is the engine's (a run's hint), not part of the page's state.
      const u64 e = t[i] & ~arch::S2Contiguous::kMask;
      if (e == 0 || (have_ref && e == ref + i * step)) continue;
      if (have_ref || !default_child(e, level, base + i * step)) {
        hints = (hints & ~(u32{0xffff} << shift)) | static_cast<u32>(i << shift);
        return false;
      }
      ref = e - i * step;
      have_ref = true;
    }
    return true;
  }

  // Zeroes a page through the hypervisor's private mapping slot, and without FWB cleans it to
  // the point of coherency so no stale line survives for the next owner. EOPNOTSUPP, nothing
  // written, if the fixmap cannot map it: the caller must not give the page away then.
  [[nodiscard]] Status scrub(u64 pa) {
    void* const p = plat_->fixmap_map(pa);
    if (p == nullptr) return fail(Error::eopnotsupp);
    zero_mapped(p, pa);
    return {};
  }
  // The rest of scrub() once the fixmap maps `pa` at `p`; releases the fixmap.
  void zero_mapped(void* p, u64 pa) {
    __builtin_memset(p, 0, kPage);
    if (!cpu_.fwb) plat_->cache_op(arch::CacheOp::dc_civac, pa, kPage);
    plat_->fixmap_unmap();
  }

  // The one lookup of a page in the page array: its index, the regions' pages counted in order
  // (a page a region only partly covers counts), or kNotMemory if `pa` is in no page of
  // memory. No array has that many entries, so the sentinel is never an index.
  static constexpr u64 kNotMemory = ~u64{0};
  [[nodiscard]] u64 find_meta_index(u64 pa) const {
    u64 idx = 0;
    for (const Region& r : machine_.memory) {
      if (r.touches_page(pa, kPage)) return idx + (pa - r.first_page(kPage)) / kPage;
      idx += r.pages(kPage);
    }
    return kNotMemory;
  }
  // For a page the caller knows is memory; entry 0 otherwise (an index the array always has).
  [[nodiscard]] u64 meta_index(u64 pa) const {
    const u64 i = find_meta_index(pa);
    return i == kNotMemory ? 0 : i;
  }
  [[nodiscard]] PageMeta& meta(u64 pa) { return meta_[meta_index(pa)]; }
  // is_memory() and meta() in one pass over the regions: the page's entry, or nullptr if `pa`
  // is in no page of memory.
  [[nodiscard]] PageMeta* memory_meta(u64 pa) {
    const u64 i = find_meta_index(pa);
    return i == kNotMemory ? nullptr : &meta_[i];
  }
  // The page array from `pa` on; a range that check_memory() accepted lies in one region, so
  // its pages' entries are consecutive.
  [[nodiscard]] PageMeta* meta_run(u64 pa) { return &meta_[meta_index(pa)]; }
  [[nodiscard]] const PageMeta* meta_run(u64 pa) const { return &meta_[meta_index(pa)]; }
  [[nodiscard]] const PageMeta& meta(u64 pa) const { return meta_[meta_index(pa)]; }

  // Visits the host's entries over [addr, addr+size) (each leaf or invalid entry once, with the
  // part of the range it covers); stops at the first error `f` returns.
  template <typename Table, typename F>
  [[nodiscard]] static Status scan(const Table& t, u64 addr, u64 size, F&& f) {
    if (size == kPage) {  // one page (hypercalls often are): the engine's lookup answers fast
      const Result<pgtable::Leaf> l = t.lookup(addr);
      if (!l) return fail(l.error());
      return f(l->entry, addr, addr + kPage);
    }
    struct V {
      static constexpr unsigned visits() { return pgtable::kVisitLeaf | pgtable::kVisitLeafRun; }
      F* f;
      Status leaf(pgtable::VisitCtx& x) { return (*f)(x.old, x.addr, x.end); }
      // Last-level tables a run at a time: no per-entry context to build.
      Status leaf_run(u64* table, u64 idx, u64 n, u64 addr, u64) {
        for (u64 i = 0; i < n; ++i, addr += kPage)
          if (Status st = (*f)(table[idx + i], addr, addr + kPage); !st) return st;
        return {};
      }
    } v{&f};
    return t.walk(addr, addr + size, v);
  }

  // Every page of [pa, +size) in the host's table is in the state `need` (owned: a valid
  // sw-00 leaf or the empty entry; shared_owned: a valid sw-01 leaf). EPERM otherwise.
  [[nodiscard]] Status check_host(u64 pa, u64 size, HostNeed need) const {
    return scan(host_, pa, size, [need](u64 e, u64, u64) -> Status {
      if (need == HostNeed::owned) {
        if (e == 0 || (arch::DescValid::get(e) && state_of(e) == PageState::owned)) return {};
      } else if (arch::DescValid::get(e) && state_of(e) == PageState::shared_owned) {
        return {};
      }
      return fail(Error::eperm);
    });
  }
  [[nodiscard]] Status check_host_annotation(u64 pa, u64 size, u64 annotation) const {
    return scan(host_, pa, size, [annotation](u64 e, u64, u64) -> Status {
      return e == annotation ? Status{} : fail(Error::eperm);
    });
  }
  [[nodiscard]] Status check_hyp_none(u64 pa, u64 size) const {
    return scan(hyp_, hyp_va(pa), size, [](u64 e, u64, u64) -> Status { return e == 0 ? Status{} : fail(Error::eperm); });
  }
  [[nodiscard]] Status check_hyp_state(u64 pa, u64 size, PageState s) const {
    return scan(hyp_, hyp_va(pa), size, [s](u64 e, u64, u64) -> Status {
      return arch::DescValid::get(e) && state_of(e) == s ? Status{} : fail(Error::eperm);
    });
  }
  // What the pin counts of a host->hypervisor share must be for an operation.
  enum class Pins {
    none_held,    // unshare: EBUSY if any page is pinned
    below_limit,  // pin: EBUSY if any page is at kMaxPins
    held,         // unpin: EPERM if any page is not pinned
  };
  // Shared between exactly the host and the hypervisor: host shared-owned (not with the secure
  // world or guests), hypervisor shared-borrowed; and the pin counts as `pins` needs them. The
  // page array is read once (a GiB of it is 6 MiB). A sharing error (EPERM) wins over EBUSY.
  // An unshare while no page at all is pinned skips the array: with the host shared-owned and
  // the hypervisor shared-borrowed, the invariants (checked by check_invariants) already rule
  // out a secure-world or guest share of the page, so only the pins were left to read.
  [[nodiscard]] Status check_hyp_shared(u64 pa, u64 size, Pins pins) const {
    if (Status st = check_host(pa, size, HostNeed::shared_owned); !st) return st;
    if (Status st = check_hyp_state(pa, size, PageState::shared_borrowed); !st) return st;
    if (pins == Pins::none_held && pinned_pages_ == 0) return {};
    const PageMeta* const pages = meta_run(pa);
    bool busy = false;
    for (u64 i = 0; i < size / kPage; ++i) {
      const PageMeta& m = pages[i];
      if ((m.flags & kMetaFfa) != 0 || m.guest_shares != 0) return fail(Error::eperm);
      switch (pins) {
        case Pins::none_held: busy |= m.hyp_pins != 0; break;
        case Pins::below_limit: busy |= m.hyp_pins == kMaxPins; break;
        case Pins::held:
          if (m.hyp_pins == 0) return fail(Error::eperm);
          break;
      }
    }
    return busy ? fail(Error::ebusy) : Status{};
  }

  P* plat_ = nullptr;
  MachineDesc machine_{};
  std::span<PageMeta> meta_{};
  arch::CpuFeatures cpu_{};
  S2 host_{};
  S1 hyp_{};
  arch::Stage2Config host_cfg_{};
  arch::Stage1Config hyp_cfg_{};
  pgtable::Memcache host_mc_{};
  pgtable::Memcache hyp_mc_{};
  bool hyp_blocks_ = false;  ///< hyp_map_blocks() is mapping: EL2 blocks allowed
  bool rebuild_blocks_ = true;  ///< host_rebuild_blocks() runs (set_host_block_rebuild)
  Guest guests_[kMaxGuests]{};
  bool finalized_ = false;
  u64 pinned_pages_ = 0;
  // The host's stage 2 (host_, host_mc_, the page array meta_, pinned_pages_) and the
  // hypervisor's stage 1 (hyp_, hyp_mc_, the fixmap); each guest's is in its slot.
  // Their locks: host_hyp_locks_' host lock and hypervisor lock (pinned_pages_, the pages
  // whose hyp_pins is not 0, check_hyp_shared's shortcut, under both).
  mutable HostHypLocks<Lock> host_hyp_locks_{};
};

}  // namespace ptguard::ownership
