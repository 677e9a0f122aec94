// Memory protection between the host, the hypervisor, the secure world and guests: every
// ownership transition, each all-or-nothing, over the table engine. Freestanding.
//
// Tables: the host's stage-2 is an identity map of what the host may access, filled lazily by
// host_handle_fault(); pages the host neither owns nor borrows, and pages it lent, are invalid
// entries annotated with the owner's (or borrower's) id (state.hpp). The hypervisor's stage-1
// EL2 table maps its private memory and what is shared with or donated to it, at
// VA = PA + hyp_va_offset. Each guest has its own stage-2 table.
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
// one entry at level 1). When a block-sized range returns to the default state it is NOT merged
// back into a block: the pages stay mapped page by page until the range is unmapped.
#pragma once

#include <span>

#include "ptguard/arch/error.hpp"
#include "ptguard/arch/regs.hpp"
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

  /// The default protections of host memory and host MMIO (blocks allowed only for these).
  static constexpr Prot kHostMem{pgtable::kPermRWX, arch::MemType::normal_wb, 0};
  static constexpr Prot kHostMmio{pgtable::kPermRW, arch::MemType::device_ngnre, 0};
  /// How the hypervisor maps what is shared with or donated to it.
  static constexpr Prot kHypData{pgtable::kPermRW, arch::MemType::normal_wb, 0};

  static constexpr u16 kMaxPins = 0xffff;
  static constexpr u32 kMaxGuestShares = 0xffff'ffffu;

  struct Guest {
    ComponentId id = 0;
    bool used = false;
    bool alive = false;  ///< false once torn down (its pages wait to be reclaimed)
    S2 table;
    /// Pages the guest's table draws from, filled by whoever runs the guest (the host in
    /// pKVM). A transition into the guest that would need more is ENOMEM.
    pgtable::Memcache mc;
  };

  MemProtect() = default;
  MemProtect(const MemProtect&) = delete;
  MemProtect& operator=(const MemProtect&) = delete;

  /// Sets up the host's stage-2 (identity map of the CPU's physical-address space, VMID 0,
  /// empty: filled by faults), the hypervisor's stage-1 (48-bit VA), the hypervisor's carve-out
  /// (owned by it, annotated in the host's table, mapped at EL2) and the MMIO regions given to
  /// the hypervisor. `meta` is the per-page array, one entry per page of memory
  /// (memory_pages()). Errors: EINVAL for a description that is not sorted and disjoint, a
  /// carve-out outside memory, or a short `meta`; ENOMEM from the platform.
  [[nodiscard]] Status init(P& plat, const MachineDesc& machine, std::span<PageMeta> meta,
                            const arch::CpuFeatures& cpu) {
    plat_ = &plat;
    machine_ = machine;
    meta_ = meta;
    cpu_ = cpu;
    u64 prev_end = 0;
    for (const Region& r : machine.memory) {
      if (r.size == 0 || ((r.base | r.size) & (kPage - 1)) != 0 || r.base < prev_end) return fail(Error::einval);
      prev_end = r.base + r.size;
      for (const MmioRegion& m : machine.mmio)
        if (m.base < r.end() && r.base < m.base + m.size) return fail(Error::einval);
    }
    if (meta.size() < memory_pages(machine, kPage)) return fail(Error::einval);
    for (PageMeta& m : meta) m = PageMeta{};
    const unsigned ia = cpu.pa_bits > arch::kMaxOaBits ? arch::kMaxOaBits : cpu.pa_bits;
    const Result<arch::Stage2Config> hcfg = arch::make_stage2_config(G, ia, cpu);
    if (!hcfg) return fail(hcfg.error());
    pgtable::TableOptions hopt;
    hopt.force_page = pgtable::ForcePagePolicy{&host_force_page, nullptr};
    hopt.dic = cpu.dic;
    Result<S2> host = S2::create_stage2(plat, *hcfg, 0, hopt);
    if (!host) return fail(host.error());
    host_ = static_cast<S2&&>(*host);
    host_cfg_ = *hcfg;
    const Result<arch::Stage1Config> ycfg = arch::make_stage1_config(G, arch::kMaxIaBits, cpu);
    if (!ycfg) return fail(ycfg.error());
    Result<S1> hyp = S1::create_stage1(plat, *ycfg);
    if (!hyp) return fail(hyp.error());
    hyp_ = static_cast<S1&&>(*hyp);
    hyp_cfg_ = *ycfg;
    // The carve-out: the hypervisor's from the start.
    const Region c = machine.hyp_carveout;
    if (c.size != 0) {
      if (range_kind(c.base, c.size) != Kind::memory) return fail(Error::einval);
      if (Status st = fill(host_mc_, host_.max_pages_needed(c.base, c.size)); !st) return st;
      if (Status st = fill(hyp_mc_, hyp_.max_pages_needed(hyp_va(c.base), c.size)); !st) return st;
      if (Status st = host_.set_owner(c.base, c.size, kHypId, sw_owned(), host_mc_); !st) return st;
      if (Status st = hyp_.map(hyp_va(c.base), c.size, c.base, kHypData, hyp_mc_); !st) return st;
    }
    for (const MmioRegion& m : machine.mmio) {
      if (!m.hyp) continue;
      if (Status st = fill(host_mc_, host_.max_pages_needed(m.base, m.size)); !st) return st;
      if (Status st = fill(hyp_mc_, hyp_.max_pages_needed(hyp_va(m.base), m.size)); !st) return st;
      if (Status st = host_.set_owner(m.base, m.size, kHypId, sw_owned(), host_mc_); !st) return st;
      if (Status st = hyp_.map(hyp_va(m.base), m.size, m.base, Prot{pgtable::kPermRW, arch::MemType::device_ngnre, 0},
                               hyp_mc_);
          !st)
        return st;
    }
    finalized_ = false;
    return {};
  }

  // ---- set-up ----------------------------------------------------------------------------

  /// During set-up only: maps the hypervisor's own code, data or any private range at EL2.
  /// After finalize(): EPERM (what the hypervisor maps then changes only by transitions).
  [[nodiscard]] Status hyp_map_private(u64 va, u64 size, u64 pa, const Prot& prot) {
    if (finalized_) return fail(Error::eperm);
    if (Status st = fill(hyp_mc_, hyp_.max_pages_needed(va, size)); !st) return st;
    return hyp_.map(va, size, pa, prot, hyp_mc_);
  }

  /// During set-up only: declares [pa, pa + n pages) shared from the start (host shared-owned,
  /// hypervisor shared-borrowed), as Linux marks the host's sections the hypervisor reads.
  [[nodiscard]] Status setup_share_hyp(u64 pa, u64 n) {
    if (finalized_) return fail(Error::eperm);
    return host_share_hyp(pa, n);
  }

  /// Ends set-up: protected mode is on.
  void finalize() { finalized_ = true; }
  [[nodiscard]] bool finalized() const { return finalized_; }

  // ---- the host's stage-2 faults ------------------------------------------------------------

  /// The host touched `addr` and its stage-2 faulted. EINVAL if the address is in no declared
  /// region; EAGAIN if a valid leaf is already there (another CPU mapped it first); EPERM if the
  /// entry is annotated (another component owns the page, or the host lent it). Otherwise maps
  /// the largest block that contains `addr`, lies inside its memory or MMIO region and covers
  /// no annotation (memory RWX, MMIO RW device); at a region edge that is not block-aligned the
  /// largest block that fits, and where an edge is not even page-aligned, the faulting page.
  [[nodiscard]] Status host_handle_fault(u64 addr) {
    Region region{};
    bool mmio = false;
    if (!find_region(addr, &region, &mmio)) return fail(Error::einval);
    const Result<pgtable::Leaf> leaf = host_.lookup(addr);
    if (!leaf) return fail(leaf.error());
    if (arch::DescValid::get(leaf->entry)) return fail(Error::eagain);
    if (leaf->entry != 0) return fail(Error::eperm);
    // The empty entry covers [leaf->base, +leaf->size) with nothing below it: any block inside
    // it covers no annotation. Take the largest that also lies inside the region.
    u64 base = addr & ~(kPage - 1), size = kPage;
    for (int level = leaf->level; level <= arch::kLastLevel; ++level) {
      if (!arch::leaf_allowed(G, level)) continue;
      const u64 s = arch::level_size(G, level);
      const u64 b = addr & ~(s - 1);
      if (region.contains(b, s)) {
        base = b;
        size = s;
        break;
      }
    }
    if (Status st = fill(host_mc_, host_.max_pages_needed(base, size)); !st) return st;
    return host_.map(base, size, base, mmio ? kHostMmio : kHostMem, host_mc_);
  }

  // ---- host <-> hypervisor ------------------------------------------------------------------

  /// Host owned -> shared-owned; hypervisor none -> shared-borrowed (mapped RW at EL2).
  /// EPERM: not memory, or a page not owned by the host (or already shared); EINVAL: range
  /// mixes memory and MMIO, or n == 0; ENOMEM.
  [[nodiscard]] Status host_share_hyp(u64 pa, u64 n) {
    u64 size = 0;
    if (Status st = check_memory(pa, n, &size); !st) return st;
    if (Status st = check_host(pa, size, HostNeed::owned); !st) return st;
    if (Status st = check_hyp_none(pa, size); !st) return st;
    if (Status st = fill_host_hyp(pa, size); !st) return st;
    return commit2(host_.map(pa, size, pa, host_prot(sw_shared_owned()), host_mc_),
                   [&] { return hyp_.map(hyp_va(pa), size, pa, hyp_prot(sw_shared_borrowed()), hyp_mc_); });
  }

  /// The reverse of host_share_hyp. EBUSY if the hypervisor has pinned a page; EPERM if a page
  /// is not shared between exactly the host and the hypervisor.
  [[nodiscard]] Status host_unshare_hyp(u64 pa, u64 n) {
    u64 size = 0;
    if (Status st = check_memory(pa, n, &size); !st) return st;
    if (Status st = check_hyp_shared(pa, size); !st) return st;
    for (u64 i = 0; i < n; ++i)
      if (meta(pa + i * kPage).hyp_pins != 0) return fail(Error::ebusy);
    if (Status st = fill_host_hyp(pa, size); !st) return st;
    return commit2(host_.map(pa, size, pa, host_prot(sw_owned()), host_mc_),
                   [&] { return hyp_.unmap(hyp_va(pa), size, hyp_mc_); });
  }

  /// The hypervisor pins pages the host shares with it (they cannot be unshared while pinned).
  /// EPERM unless shared host->hypervisor; EBUSY at the pin limit.
  [[nodiscard]] Status hyp_pin_shared(u64 pa, u64 n) {
    u64 size = 0;
    if (Status st = check_memory(pa, n, &size); !st) return st;
    if (Status st = check_hyp_shared(pa, size); !st) return st;
    for (u64 i = 0; i < n; ++i)
      if (meta(pa + i * kPage).hyp_pins == kMaxPins) return fail(Error::ebusy);
    for (u64 i = 0; i < n; ++i) ++meta(pa + i * kPage).hyp_pins;
    return {};
  }
  /// EPERM unless shared and pinned.
  [[nodiscard]] Status hyp_unpin_shared(u64 pa, u64 n) {
    u64 size = 0;
    if (Status st = check_memory(pa, n, &size); !st) return st;
    if (Status st = check_hyp_shared(pa, size); !st) return st;
    for (u64 i = 0; i < n; ++i)
      if (meta(pa + i * kPage).hyp_pins == 0) return fail(Error::eperm);
    for (u64 i = 0; i < n; ++i) --meta(pa + i * kPage).hyp_pins;
    return {};
  }

  /// Host owned -> none (annotated with the hypervisor's id); hypervisor none -> owned.
  [[nodiscard]] Status host_donate_hyp(u64 pa, u64 n) {
    u64 size = 0;
    if (Status st = check_memory(pa, n, &size); !st) return st;
    if (Status st = check_host(pa, size, HostNeed::owned); !st) return st;
    if (Status st = check_hyp_none(pa, size); !st) return st;
    if (Status st = fill_host_hyp(pa, size); !st) return st;
    return commit2(host_.set_owner(pa, size, kHypId, sw_owned(), host_mc_),
                   [&] { return hyp_.map(hyp_va(pa), size, pa, hyp_prot(sw_owned()), hyp_mc_); });
  }

  /// Hypervisor owned -> none; host annotated-by-hypervisor -> owned (mapped again lazily).
  [[nodiscard]] Status hyp_donate_host(u64 pa, u64 n) {
    u64 size = 0;
    if (Status st = check_memory(pa, n, &size); !st) return st;
    if (Status st = check_host_annotation(pa, size, annotation_owned_by(kHypId)); !st) return st;
    if (Status st = check_hyp_state(pa, size, PageState::owned); !st) return st;
    if (Status st = fill_host_hyp(pa, size); !st) return st;
    return commit2(hyp_.unmap(hyp_va(pa), size, hyp_mc_), [&] { return host_.unmap(pa, size, host_mc_); });
  }

  // ---- host <-> secure world (FF-A) ---------------------------------------------------------

  /// Host owned -> shared-owned, recorded as shared with the secure world (only the host's
  /// side is tracked). Such a page cannot also be shared with the hypervisor or a guest.
  [[nodiscard]] Status host_share_ffa(u64 pa, u64 n) {
    u64 size = 0;
    if (Status st = check_memory(pa, n, &size); !st) return st;
    if (Status st = check_host(pa, size, HostNeed::owned); !st) return st;
    if (Status st = fill(host_mc_, host_.max_pages_needed(pa, size)); !st) return st;
    if (Status st = host_.map(pa, size, pa, host_prot(sw_shared_owned()), host_mc_); !st) return st;
    for (u64 i = 0; i < n; ++i) meta(pa + i * kPage).flags |= kMetaFfa;
    return {};
  }
  [[nodiscard]] Status host_unshare_ffa(u64 pa, u64 n) {
    u64 size = 0;
    if (Status st = check_memory(pa, n, &size); !st) return st;
    if (Status st = check_host(pa, size, HostNeed::shared_owned); !st) return st;
    for (u64 i = 0; i < n; ++i)
      if ((meta(pa + i * kPage).flags & kMetaFfa) == 0) return fail(Error::eperm);
    if (Status st = fill(host_mc_, host_.max_pages_needed(pa, size)); !st) return st;
    if (Status st = host_.map(pa, size, pa, host_prot(sw_owned()), host_mc_); !st) return st;
    for (u64 i = 0; i < n; ++i) meta(pa + i * kPage).flags &= static_cast<u8>(~kMetaFfa);
    return {};
  }

  // ---- accessors --------------------------------------------------------------------------
  [[nodiscard]] const S2& host_table() const { return host_; }
  [[nodiscard]] const S1& hyp_table() const { return hyp_; }
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
  enum class Kind { memory, mmio, none, mixed };
  enum class HostNeed { owned, shared_owned };

  static bool host_force_page(void*, u64, u64, const Prot& prot, bool annotation) {
    if (annotation) return false;  // block-level annotations are fine
    return !(prot == kHostMem || prot == kHostMmio);
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

  [[nodiscard]] bool is_memory(u64 pa) const {
    for (const Region& r : machine_.memory)
      if (r.contains(pa)) return true;
    return false;
  }
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

  [[nodiscard]] u64 meta_index(u64 pa) const {
    u64 idx = 0;
    for (const Region& r : machine_.memory) {
      if (r.contains(pa)) return idx + (pa - r.base) / kPage;
      idx += r.size / kPage;
    }
    return 0;
  }
  [[nodiscard]] PageMeta& meta(u64 pa) { return meta_[meta_index(pa)]; }

  // Visits the host's entries over [addr, addr+size) (each leaf or invalid entry once, with the
  // part of the range it covers); stops at the first error `f` returns.
  template <typename Table, typename F>
  [[nodiscard]] static Status scan(const Table& t, u64 addr, u64 size, F&& f) {
    struct V {
      static constexpr unsigned visits() { return pgtable::kVisitLeaf; }
      F* f;
      Status leaf(pgtable::VisitCtx& x) { return (*f)(x.old, x.addr, x.end); }
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
  // Shared between exactly the host and the hypervisor: host shared-owned (not with the secure
  // world or guests), hypervisor shared-borrowed.
  [[nodiscard]] Status check_hyp_shared(u64 pa, u64 size) const {
    if (Status st = check_host(pa, size, HostNeed::shared_owned); !st) return st;
    if (Status st = check_hyp_state(pa, size, PageState::shared_borrowed); !st) return st;
    for (u64 off = 0; off < size; off += kPage) {
      const PageMeta& m = meta_[meta_index(pa + off)];
      if ((m.flags & kMetaFfa) != 0 || m.guest_shares != 0) return fail(Error::eperm);
    }
    return {};
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
  bool finalized_ = false;
};

}  // namespace ptguard::ownership
