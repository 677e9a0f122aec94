// Injecting a synchronous external abort into the host, as the architecture would deliver one
// to EL1: what the hypervisor does when the host touches memory it does not own.
//
// The host's access trapped to EL2 as a stage-2 Data or Instruction Abort. To the host this
// must look like the memory system refused the access: a Synchronous External Abort taken to
// EL1 (pKVM's host_inject_abort does the same). The hypervisor performs the exception entry
// that the hardware would have performed (Arm ARM DDI 0487K.a, D1.3.2 "Exception entry" and
// D1.3.1 "Exception vectors"):
//   ELR_EL1  <- the faulting instruction (ELR_EL2)
//   SPSR_EL1 <- the interrupted PSTATE (SPSR_EL2)
//   FAR_EL1  <- the faulting virtual address (FAR_EL2)
//   ESR_EL1  <- the syndrome, EC for an abort taken to EL1, FSC "synchronous external abort"
//   PSTATE   <- EL1h with D, A, I, F masked; PAN set if SCTLR_EL1.SPAN is 0 (D1.3.2, FEAT_PAN);
//               SSBS from SCTLR_EL1.DSSBS (FEAT_SSBS); TCO set (FEAT_MTE); SS, IL, BTYPE clear;
//               DIT kept (from an AArch32 SPSR, where it is bit 21); UAO cleared
// Not modelled (features this hypervisor does not expose to the host): FEAT_NMI's ALLINT and
// FEAT_GCS's EXLOCK. An abort on the host's stage-1 walk (S1PTW) is reported as a plain SEA
// (0x10), not as "SEA on a table walk, level n": the stage-1 level is not known at EL2.
//   PC       <- VBAR_EL1 + the vector for where the exception came from
// Freestanding and pure, so the hosted tests check every case.
#pragma once

#include "ptguard/arch/bits.hpp"

namespace ptguard::hyp {

// ESR_ELx (D24.2 ESR_EL2, ESR_EL1): EC [31:26], IL [25], ISS [24:0].
using EsrEc = arch::Field<31, 26>;
using EsrIl = arch::Bit<25>;
using EsrIss = arch::Field<24, 0>;
// Data/Instruction Abort ISS fields kept or cleared (D24.2 "ISS encoding for an exception from
// a Data Abort"): ISV [24], the instruction syndrome [23:14], FnV [10], EA [9], CM [8],
// S1PTW [7], WnR [6], DFSC/IFSC [5:0].
using IssFnv = arch::Bit<10>;
using IssCm = arch::Bit<8>;
using IssWnr = arch::Bit<6>;
using IssFsc = arch::Field<5, 0>;

inline constexpr u64 kEcIabtLow = 0x20, kEcIabtCur = 0x21;
inline constexpr u64 kEcDabtLow = 0x24, kEcDabtCur = 0x25;
/// DFSC/IFSC 0b010000: Synchronous External abort, not on a translation table walk.
inline constexpr u64 kFscSea = 0x10;

// SPSR / PSTATE fields (D1.3.5 "SPSR_ELx"; C5.2 "PSTATE"): M[4:0] (M[4] = 1: AArch32),
// F I A D [9:6], BTYPE [11:10], SSBS [12], IL [20], SS [21], PAN [22], UAO [23], DIT [24],
// TCO [25].
using SpsrM = arch::Field<4, 0>;
inline constexpr u64 kSpsrDaif = u64{0xf} << 6;
inline constexpr u64 kSpsrSsbs = u64{1} << 12;
inline constexpr u64 kSpsrPan = u64{1} << 22;
inline constexpr u64 kSpsrDit = u64{1} << 24;
inline constexpr u64 kSpsrDitA32 = u64{1} << 21;  ///< DIT in an SPSR taken from AArch32
inline constexpr u64 kSpsrBtype = u64{3} << 10;
inline constexpr u64 kSpsrSs = u64{1} << 21;       ///< software step (AArch64 SPSR)
inline constexpr u64 kSpsrTco = u64{1} << 25;
inline constexpr u64 kModeEl0t = 0b00000, kModeEl1t = 0b00100, kModeEl1h = 0b00101;

// SCTLR_EL1 (D24.2): SPAN [23] (0: PSTATE.PAN is set on exception entry to EL1), DSSBS [44]
// (the PSTATE.SSBS value on exception entry).
using SctlrSpan = arch::Bit<23>;
using SctlrDssbs = arch::Bit<44>;

// Vector offsets from VBAR_EL1 (D1.3.1 Table D1-7): synchronous exceptions.
inline constexpr u64 kVecCurrentSp0 = 0x000, kVecCurrentSpx = 0x200;
inline constexpr u64 kVecLowerA64 = 0x400, kVecLowerA32 = 0x600;

/// The CPU features exception entry depends on.
struct InjectFeatures {
  bool pan = true;   ///< FEAT_PAN (ID_AA64MMFR1_EL1.PAN != 0)
  bool ssbs = true;  ///< FEAT_SSBS (ID_AA64PFR1_EL1.SSBS != 0)
  bool mte = false;  ///< FEAT_MTE (ID_AA64PFR1_EL1.MTE >= 1): PSTATE.TCO exists
};

/// The registers of the injected exception.
struct InjectedAbort {
  u64 esr_el1 = 0;
  u64 far_el1 = 0;
  u64 elr_el1 = 0;
  u64 spsr_el1 = 0;
  u64 elr_el2 = 0;   ///< where ERET resumes: VBAR_EL1 + vector offset
  u64 spsr_el2 = 0;  ///< the PSTATE ERET installs: the handler's, at EL1h
};

/// Whether a stage-2 abort (EC 0x20 or 0x24 in ESR_EL2) can be injected into EL1: it must come
/// from EL1 or EL0 of the host (a stage-2 abort taken to EL2 always does).
[[nodiscard]] constexpr bool is_lower_abort(u64 esr_el2) {
  const u64 ec = EsrEc::get(esr_el2);
  return ec == kEcIabtLow || ec == kEcDabtLow;
}

/// The vector offset from VBAR_EL1 for a synchronous exception taken to EL1 from the mode in
/// SPSR.M (D1.3.1 Table D1-7).
[[nodiscard]] constexpr u64 el1_sync_vector(u64 spsr) {
  const u64 mode = SpsrM::get(spsr);
  if (mode & 0x10) return kVecLowerA32;
  return mode == kModeEl0t ? kVecLowerA64 : mode == kModeEl1t ? kVecCurrentSp0 : kVecCurrentSpx;
}

/// The PSTATE of an exception handler entered at EL1 (D1.3.2), from the interrupted PSTATE.
[[nodiscard]] constexpr u64 el1_handler_pstate(u64 spsr, u64 sctlr_el1, InjectFeatures f) {
  const bool aarch32 = (SpsrM::get(spsr) & 0x10) != 0;
  u64 ps = SpsrM::make(kModeEl1h) | kSpsrDaif;
  if (f.pan) ps |= (SctlrSpan::get(sctlr_el1) == 0 ? kSpsrPan : (spsr & kSpsrPan));
  if (f.ssbs && SctlrDssbs::get(sctlr_el1)) ps |= kSpsrSsbs;
  if (f.mte) ps |= kSpsrTco;
  // DIT is unchanged by exception entry (an AArch32 SPSR keeps it in bit 21).
  if (aarch32 ? (spsr & kSpsrDitA32) : (spsr & kSpsrDit)) ps |= kSpsrDit;
  return ps;
}

/// SPSR_EL2 after the hypervisor completes a trapped instruction for the host (a trapped SMC):
/// BTYPE cleared, as for any instruction that completes (C5.2 PSTATE.BTYPE), and SS cleared so
/// that a software step the host was taking ends on the next instruction (D2.12).
[[nodiscard]] constexpr u64 spsr_after_skip(u64 spsr) { return spsr & ~(kSpsrBtype | kSpsrSs); }

/// The Undefined Instruction exception EL1 would have taken for an instruction that trapped to
/// EL2 but which the hypervisor does not emulate (ESR_EL1.EC 0x00 "unknown reason", IL set,
/// ISS 0): what a hostile host gets instead of stopping the machine.
[[nodiscard]] constexpr InjectedAbort make_undef(u64 esr_el2, u64 elr_el2, u64 spsr_el2, u64 sctlr_el1,
                                                 u64 vbar_el1, InjectFeatures f) {
  InjectedAbort a;
  a.esr_el1 = esr_el2 & EsrIl::kMask;
  a.far_el1 = 0;
  a.elr_el1 = elr_el2;
  a.spsr_el1 = spsr_el2;
  a.elr_el2 = vbar_el1 + el1_sync_vector(spsr_el2);
  a.spsr_el2 = el1_handler_pstate(spsr_el2, sctlr_el1, f);
  return a;
}

/// The synchronous external abort EL1 would have taken for the access described by the
/// stage-2 abort in ESR_EL2 / FAR_EL2 / ELR_EL2 / SPSR_EL2.
[[nodiscard]] constexpr InjectedAbort make_sea(u64 esr_el2, u64 far_el2, u64 elr_el2, u64 spsr_el2,
                                               u64 sctlr_el1, u64 vbar_el1, InjectFeatures f) {
  const u64 mode = SpsrM::get(spsr_el2);
  const bool from_el0 = (mode & 0x10) != 0 || mode == kModeEl0t;
  const bool data = EsrEc::get(esr_el2) == kEcDabtLow;

  // EC: "from a lower EL" only if the access came from EL0; from EL1 it is the current EL.
  const u64 ec = data ? (from_el0 ? kEcDabtLow : kEcDabtCur) : (from_el0 ? kEcIabtLow : kEcIabtCur);
  // ISS: an external abort with a valid FAR. Keep WnR and CM for data (what the access was);
  // drop the instruction syndrome (ISV and [23:14]: it served EL2's emulation, and an external
  // abort needs none), S1PTW (a stage-2 notion meaningless to EL1), EA and FnV.
  u64 iss = IssFsc::make(kFscSea);
  if (data) iss |= esr_el2 & (IssWnr::kMask | IssCm::kMask);
  InjectedAbort a;
  // IL is 1 for every abort whose syndrome is not an instruction syndrome (ISV = 0, D24.2).
  a.esr_el1 = EsrEc::make(ec) | EsrIl::kMask | iss;
  a.far_el1 = far_el2;
  a.elr_el1 = elr_el2;
  a.spsr_el1 = spsr_el2;

  a.elr_el2 = vbar_el1 + el1_sync_vector(spsr_el2);
  a.spsr_el2 = el1_handler_pstate(spsr_el2, sctlr_el1, f);
  return a;
}

}  // namespace ptguard::hyp
