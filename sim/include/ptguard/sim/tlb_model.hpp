// A model of the TLB: the translations (and walk-cache entries) a PE may still hold after
// the tables changed, and what each TLB invalidation removes from it.
//
// The reference MMU walks memory afresh on every call; real hardware caches. This model is a
// plain set of cached entries, each tagged with its regime (stage 2 of one VMID, or stage 1
// EL2) and the input range it covers: a leaf (the translation of one page or block, Arm ARM
// D8.14 "Translation Lookaside Buffers") or a walk-cache entry (one table descriptor of a walk,
// D8.14.2 "TLB caching of intermediate levels"). A test fills it by translating through the
// reference MMU (fill()), lets the engine change the tables, applies the TLBI events the
// engine issued (apply()), and asks which cached entries the tables no longer agree with
// (stale()): any is a translation a real TLB could still use.
//
// What each TLBI removes (D8.14, C5.5):
//   IPAS2E1IS addr, TTL   stage-2 leaves of the VMID whose range holds addr (of the hinted level
//                         if there is a hint) and walk-cache entries whose range holds addr
//   RIPAS2E1IS range      the same for every entry overlapping [addr, addr + size)
//   VMALLS12E1IS          every stage-2 entry of the VMID
//   VMALLE1IS             stage-1 EL1&0 entries only: nothing modelled here
//   VAE2IS / RVAE2IS      EL2 leaves and walk-cache entries at the address / overlapping the range
//   VALE2IS / RVALE2IS    EL2 leaves only ("last level"); walk-cache entries stay
//   ALLE2IS               every EL2 entry
// A level hint that does not match an entry's level leaves that entry cached (the
// architecture lets the hardware skip it), so a wrong hint shows as a stale entry; and with a
// hint, walk-cache entries stay (the hint names the level of the leaves), so a removed table's
// span must be invalidated without one.
//
// Hosted only (sim/).
#pragma once

#include <string>
#include <vector>

#include "ptguard/arch/granule.hpp"
#include "ptguard/sim/event_log.hpp"
#include "ptguard/sim/ref_mmu.hpp"

namespace ptguard::sim {

class TlbModel {
 public:
  /// One cached entry.
  struct Entry {
    int stage;      ///< 1 (EL2) or 2
    u16 vmid;       ///< stage 2 only
    bool leaf;      ///< a translation; false: a walk-cache entry (a table descriptor)
    int level;      ///< the level of the descriptor
    u64 ia;         ///< first input address it covers
    u64 size;       ///< bytes it covers
    u64 desc;       ///< the descriptor as it was read

    friend bool operator==(const Entry&, const Entry&) = default;
  };

  /// Caches what `t` (a translation with granule `g`) used: its leaf (if the translation succeeded) and every table descriptor
  /// of its walk. `stage` 1 (EL2) or 2 with `vmid`. A failed translation caches nothing (a
  /// translation fault is never held in a TLB); its table descriptors are cached.
  void fill(int stage, u16 vmid, arch::Granule g, const Translation& t);

  /// Removes what TLBI event `e` invalidates (other events are ignored). Stage-2 events act on
  /// e.vmid.
  void apply(const Event& e);
  /// apply() for every TLBI of `ev`, in order.
  void apply(const EventView& ev);

  /// The cached entries the tables no longer agree with: for a leaf, the reference MMU's walk
  /// of its first address now faults or gives another descriptor (ignoring the software bits
  /// 58:55, which the MMU does not use); for a walk-cache entry, the walk no longer reads that
  /// table descriptor at that level. Stage-2 entries of other VMIDs than regs' are not checked.
  /// `impl`: the reference MMU's CPU (FEAT_LPA2 and a 52-bit PA for DS = 1 tables).
  [[nodiscard]] std::vector<Entry> stale(const PhysMem& mem, const Stage2Regs& regs, u16 vmid,
                                         const ImplChoices& impl = {}) const;
  [[nodiscard]] std::vector<Entry> stale(const PhysMem& mem, const Stage1Regs& regs,
                                         const ImplChoices& impl = {}) const;

  [[nodiscard]] const std::vector<Entry>& entries() const { return entries_; }
  [[nodiscard]] std::size_t size() const { return entries_.size(); }
  void clear() { entries_.clear(); }

 private:
  template <typename Pred>
  void erase_if(Pred pred);

  std::vector<Entry> entries_;
};

/// "stage 2 vmid 1 leaf level 3 [0x200000, +0x1000) desc 0x..." (one line).
[[nodiscard]] std::string to_string(const TlbModel::Entry& e);

}  // namespace ptguard::sim
