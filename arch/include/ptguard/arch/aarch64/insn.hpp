// The AArch64 instructions a hypervisor needs to drive the MMU, as inline functions: system
// register access, TLB invalidation, barriers, data- and instruction-cache maintenance.
//
// References are to the Arm ARM, DDI 0487K.a:
//   C5.2 / C6.2  MRS, MSR, TLBI, DSB, ISB, DC, IC
//   D8.14        TLB maintenance: "TLB maintenance instructions" and the operand layout of the
//                by-address forms (address bits [55:12] or IPA[47:12] in Xt[43:0]/[35:0], TTL
//                level hint in Xt[47:44] with FEAT_TTL)
//   D7.5         cache maintenance by VA to the point of coherency (DC CIVAC, DC CVAC) and
//                unification (IC IVAU); CTR_EL0 gives the line sizes
//
// Freestanding, header only; compiled only for AArch64. A hypervisor that already has such
// wrappers need not use these: El2Platform (pgtable/el2_platform.hpp) is the only user in
// the library.
#pragma once

#if !defined(__aarch64__)
#error "ptguard/arch/aarch64/insn.hpp is for AArch64 builds only"
#endif

#include "ptguard/arch/bits.hpp"
#include "ptguard/arch/granule.hpp"

namespace ptguard::arch::aarch64 {

/// Reads a system register by name: `PTGUARD_MRS("esr_el2")`.
#define PTGUARD_MRS(reg)                                 \
  ([] {                                                  \
    ::ptguard::u64 v_;                                   \
    asm volatile("mrs %0, " reg : "=r"(v_)::"memory");   \
    return v_;                                           \
  }())
/// Writes a system register by name: `PTGUARD_MSR("vttbr_el2", v)`. No ISB: the caller adds
/// one where the architecture asks for context synchronization.
#define PTGUARD_MSR(reg, value) \
  asm volatile("msr " reg ", %0" ::"r"(static_cast<::ptguard::u64>(value)) : "memory")

// ---- barriers (C6.2 DMB, DSB, ISB) ---------------------------------------------------------
/// DMB ISHST: stores before it are observed before stores after it by every observer in the
/// Inner Shareable domain (table walkers included, B2.3); it waits for nothing to complete.
inline void dmb_ishst() { asm volatile("dmb ishst" ::: "memory"); }
inline void dsb_ishst() { asm volatile("dsb ishst" ::: "memory"); }
inline void dsb_ish() { asm volatile("dsb ish" ::: "memory"); }
inline void dsb_sy() { asm volatile("dsb sy" ::: "memory"); }
inline void isb() { asm volatile("isb" ::: "memory"); }

// ---- TLB maintenance (D8.14, C5.5 TLBI) ---------------------------------------------------

/// The TTL level hint of a by-address TLBI (D8.14.4 "TLB maintenance instructions ... TTL"):
/// TTL[3:2] the granule (0b01 4K, 0b10 16K, 0b11 64K), TTL[1:0] the level of the leaf. 0 means
/// "no hint" and is what a level that cannot hold a leaf, an unknown level, or a CPU without
/// FEAT_TTL (where Xt[47:44] is RES0) must use.
[[nodiscard]] constexpr u64 tlbi_ttl(Granule g, int level, bool have_ttl) {
  if (!have_ttl || level < 0 || level > kLastLevel || !leaf_allowed(g, level)) return 0;
  const u64 tg = g == Granule::k4K ? 0b01 : g == Granule::k16K ? 0b10 : 0b11;
  return (tg << 2 | static_cast<u64>(level)) << 44;
}
/// Xt for TLBI IPAS2E1IS: IPA[47:12] in Xt[35:0] (whatever the granule), TTL in Xt[47:44];
/// with a 52-bit IPA (FEAT_LPA/FEAT_LPA2) IPA[51:48] in Xt[39:36], RES0 otherwise (and zero for
/// any IPA below 2^48, so one encoding serves both).
[[nodiscard]] constexpr u64 tlbi_ipa_operand(u64 ipa, u64 ttl) {
  return ((ipa >> 12) & bit_range(39, 0)) | ttl;
}
/// Xt for TLBI VAE2IS / VALE2IS: VA[55:12] in Xt[43:0], TTL in Xt[47:44] (ASID unused at EL2).
[[nodiscard]] constexpr u64 tlbi_va_operand(u64 va, u64 ttl) {
  return ((va >> 12) & bit_range(43, 0)) | ttl;
}
static_assert(tlbi_ttl(Granule::k4K, 3, true) == u64{0b0111} << 44);
static_assert(tlbi_ttl(Granule::k16K, 1, true) == 0);  // no 16K level-1 leaf without LPA2
static_assert(tlbi_ipa_operand(0x4200'0000, 0) == 0x42000);
static_assert(tlbi_ipa_operand(0x000a'0000'4200'0000ull, 0) == 0xa0'0004'2000ull);  // IPA[51:48] = 0xa in Xt[39:36]

/// Stage-2 entries of the current VMID (VTTBR_EL2.VMID) for one IPA, Inner Shareable.
inline void tlbi_ipas2e1is(u64 xt) { asm volatile("tlbi ipas2e1is, %0" ::"r"(xt) : "memory"); }
/// Stage-1 and combined entries of the current VMID, Inner Shareable.
inline void tlbi_vmalle1is() { asm volatile("tlbi vmalle1is" ::: "memory"); }
/// Stage-1 and stage-2 entries of the current VMID, Inner Shareable.
inline void tlbi_vmalls12e1is() { asm volatile("tlbi vmalls12e1is" ::: "memory"); }
/// EL2 entries for one VA (any level / last level only), Inner Shareable.
inline void tlbi_vae2is(u64 xt) { asm volatile("tlbi vae2is, %0" ::"r"(xt) : "memory"); }
inline void tlbi_vale2is(u64 xt) { asm volatile("tlbi vale2is, %0" ::"r"(xt) : "memory"); }
/// The range forms (FEAT_TLBIRANGE; operand: arch::tlbi_range_operand, maintenance.hpp). Written
/// as SYS instructions with their encodings (C5.5: op1, CRn, CRm, op2), so that an assembler
/// without `.arch armv8.4-a` accepts them: RIPAS2E1IS is SYS #4, C8, C0, #2 (stage-2 entries of
/// the current VMID for an IPA range, Inner Shareable), RVAE2IS SYS #4, C8, C2, #1 (EL2 entries
/// of any level for a VA range), RVALE2IS SYS #4, C8, C2, #5 (last-level EL2 entries only).
/// Only on a CPU with ID_AA64ISAR0_EL1.TLB == 0b0010: elsewhere they are UNDEFINED.
inline void tlbi_ripas2e1is(u64 xt) { asm volatile("sys #4, c8, c0, #2, %0" ::"r"(xt) : "memory"); }
inline void tlbi_rvae2is(u64 xt) { asm volatile("sys #4, c8, c2, #1, %0" ::"r"(xt) : "memory"); }
inline void tlbi_rvale2is(u64 xt) { asm volatile("sys #4, c8, c2, #5, %0" ::"r"(xt) : "memory"); }
/// Every EL2 entry, Inner Shareable / this PE only.
inline void tlbi_alle2is() { asm volatile("tlbi alle2is" ::: "memory"); }
inline void tlbi_alle2() { asm volatile("tlbi alle2" ::: "memory"); }
/// Every EL1&0 entry of every VMID (stage 1 and stage 2), Inner Shareable: for a hypervisor
/// that starts over with new stage-2 tables on VMIDs it used before.
inline void tlbi_alle1is() { asm volatile("tlbi alle1is" ::: "memory"); }

// ---- cache maintenance (D7.5, C5.3 DC and IC) ----------------------------------------------

/// CTR_EL0.DminLine / IminLine (bits [19:16] / [3:0]): log2 of the smallest line in words.
[[nodiscard]] inline u64 dcache_line_bytes() { return u64{4} << ((PTGUARD_MRS("ctr_el0") >> 16) & 0xf); }
[[nodiscard]] inline u64 icache_line_bytes() { return u64{4} << (PTGUARD_MRS("ctr_el0") & 0xf); }

/// DC CIVAC / DC CVAC over [va, va + size) by lines, then DSB ISH.
inline void dc_civac_range(u64 va, u64 size) {
  const u64 line = dcache_line_bytes();
  for (u64 a = va & ~(line - 1); a < va + size; a += line) asm volatile("dc civac, %0" ::"r"(a) : "memory");
  dsb_ish();
}
inline void dc_cvac_range(u64 va, u64 size) {
  const u64 line = dcache_line_bytes();
  for (u64 a = va & ~(line - 1); a < va + size; a += line) asm volatile("dc cvac, %0" ::"r"(a) : "memory");
  dsb_ish();
}
/// IC IVAU over [va, va + size) by lines, then DSB ISH and ISB.
inline void ic_ivau_range(u64 va, u64 size) {
  const u64 line = icache_line_bytes();
  for (u64 a = va & ~(line - 1); a < va + size; a += line) asm volatile("ic ivau, %0" ::"r"(a) : "memory");
  dsb_ish();
  isb();
}
/// IC IALLUIS / IC IALLU: the whole instruction cache to the point of unification (Inner
/// Shareable / this PE), then DSB ISH and ISB.
inline void ic_ialluis() {
  asm volatile("ic ialluis" ::: "memory");
  dsb_ish();
  isb();
}
inline void ic_iallu() {
  asm volatile("ic iallu" ::: "memory");
  dsb_ish();
  isb();
}

}  // namespace ptguard::arch::aarch64
