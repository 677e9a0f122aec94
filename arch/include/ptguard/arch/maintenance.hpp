// The vocabulary of TLB maintenance, barriers and cache maintenance (DDI 0487K.a: D8.14 "TLB
// maintenance", C6.2 instruction descriptions of TLBI, DSB, ISB, DC and IC; B2.3 for the
// ordering rules). The engine names what it needs with these; the platform carries it out (real
// instructions at EL2, an event log in the simulator).
#pragma once

#include "ptguard/arch/bits.hpp"

namespace ptguard::arch {

/// TLB invalidations the library issues. All are broadcast to the Inner Shareable domain.
enum class Tlbi : u8 {
  ipas2e1is,     ///< TLBI IPAS2E1IS: stage-2 entries for one IPA, current VMID (level hint)
  ripas2e1is,    ///< TLBI RIPAS2E1IS: stage-2 entries for an IPA range (FEAT_TLBIRANGE)
  vmalle1is,     ///< TLBI VMALLE1IS: all stage-1 (and combined) entries of the current VMID
  vmalls12e1is,  ///< TLBI VMALLS12E1IS: stage-1 and stage-2 entries of the current VMID
  vae2is,        ///< TLBI VAE2IS: EL2 entries for one VA (level hint)
  vale2is,       ///< TLBI VALE2IS: EL2 last-level entries for one VA (level hint)
  alle2is,       ///< TLBI ALLE2IS: all EL2 entries
};

/// A level hint of "unknown" (TTL = 0): used when a table entry is removed, because the TLB
/// may hold entries from any level below it (Linux fixes 36e008323926, f62d4c3eb687).
inline constexpr int kTlbiLevelUnknown = -1;

/// Barriers.
enum class Barrier : u8 {
  dsb_ishst,  ///< DSB ISHST: order descriptor writes before the TLBI that follows
  dsb_ish,    ///< DSB ISH: wait for TLBIs (and all memory accesses) to complete
  dsb_sy,
  isb,        ///< ISB: the PE sees the new translations from the next instruction
  dmb_ishst,  ///< DMB ISHST: order earlier stores before later stores, Inner Shareable (C6.2
              ///< DMB; B2.3): the entries of a fresh table before the descriptor that links it
};

/// Cache maintenance by address range.
enum class CacheOp : u8 {
  dc_civac,  ///< DC CIVAC: clean and invalidate data cache to the point of coherency
  dc_cvac,   ///< DC CVAC: clean data cache to the point of coherency (table writes when
             ///< walks are non-cacheable)
  ic_ivau,   ///< IC IVAU: invalidate instruction cache to the point of unification
};

[[nodiscard]] constexpr const char* name(Tlbi op) {
  switch (op) {
    case Tlbi::ipas2e1is: return "TLBI IPAS2E1IS";
    case Tlbi::ripas2e1is: return "TLBI RIPAS2E1IS";
    case Tlbi::vmalle1is: return "TLBI VMALLE1IS";
    case Tlbi::vmalls12e1is: return "TLBI VMALLS12E1IS";
    case Tlbi::vae2is: return "TLBI VAE2IS";
    case Tlbi::vale2is: return "TLBI VALE2IS";
    case Tlbi::alle2is: return "TLBI ALLE2IS";
  }
  return "TLBI ?";
}

[[nodiscard]] constexpr const char* name(Barrier b) {
  switch (b) {
    case Barrier::dsb_ishst: return "DSB ISHST";
    case Barrier::dsb_ish: return "DSB ISH";
    case Barrier::dsb_sy: return "DSB SY";
    case Barrier::isb: return "ISB";
    case Barrier::dmb_ishst: return "DMB ISHST";
  }
  return "?";
}

[[nodiscard]] constexpr const char* name(CacheOp c) {
  switch (c) {
    case CacheOp::dc_civac: return "DC CIVAC";
    case CacheOp::dc_cvac: return "DC CVAC";
    case CacheOp::ic_ivau: return "IC IVAU";
  }
  return "?";
}

}  // namespace ptguard::arch
