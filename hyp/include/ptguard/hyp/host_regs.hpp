// The EL2 register values that let an unmodified Linux run at EL1 as the host, behind the
// hypervisor's stage 2. Each value is set on purpose: what is trapped is what the hypervisor
// must see (SMCs for the PSCI relay, stage-2 aborts), and nothing else, so the host runs at
// full speed with its own interrupts, timers, FP/SIMD/SVE, pointer authentication and PMU.
//
// Register layouts: Arm ARM DDI 0487K.a, D24.2 (HCR_EL2, CPTR_EL2 with HCR_EL2.E2H == 0,
// MDCR_EL2, CNTHCTL_EL2 with E2H == 0, SCTLR_EL1, ZCR_EL2, SMCR_EL2), D24.3 (PMCR_EL0), and the
// GIC architecture (IHI 0069H, 12.7 ICC_SRE_EL2). ID register fields: D24.2 ID_AA64PFR0_EL1,
// ID_AA64PFR1_EL1, ID_AA64DFR0_EL1. Freestanding and pure (values are computed from ID
// registers the caller reads), so the hosted tests pin every bit.
#pragma once

#include "ptguard/arch/bits.hpp"

namespace ptguard::hyp {

/// The ID register fields the values depend on.
struct HostCpu {
  u64 pfr0 = 0;  ///< ID_AA64PFR0_EL1
  u64 pfr1 = 0;  ///< ID_AA64PFR1_EL1
  u64 dfr0 = 0;  ///< ID_AA64DFR0_EL1
  u64 pmcr = 0;  ///< PMCR_EL0 (N [15:11]: the number of event counters); 0 without PMUv3
  u64 mmfr0 = 0; ///< ID_AA64MMFR0_EL1
  u64 mmfr1 = 0; ///< ID_AA64MMFR1_EL1

  /// FEAT_SVE: ID_AA64PFR0_EL1.SVE [35:32] != 0.
  [[nodiscard]] constexpr bool sve() const { return arch::Field<35, 32>::get(pfr0) != 0; }
  /// FEAT_SME: ID_AA64PFR1_EL1.SME [27:24] != 0.
  [[nodiscard]] constexpr bool sme() const { return arch::Field<27, 24>::get(pfr1) != 0; }
  /// FEAT_MTE2: ID_AA64PFR1_EL1.MTE [11:8] >= 2 (tags in memory, HCR_EL2.ATA meaningful).
  [[nodiscard]] constexpr bool mte2() const { return arch::Field<11, 8>::get(pfr1) >= 2; }
  /// FEAT_MTE: ID_AA64PFR1_EL1.MTE >= 1 (PSTATE.TCO exists).
  [[nodiscard]] constexpr bool mte() const { return arch::Field<11, 8>::get(pfr1) >= 1; }
  /// FEAT_FGT: ID_AA64MMFR0_EL1.FGT [59:56] != 0.
  [[nodiscard]] constexpr bool fgt() const { return arch::Field<59, 56>::get(mmfr0) != 0; }
  /// FEAT_HCX: ID_AA64MMFR1_EL1.HCX [43:40] != 0 (HCRX_EL2 exists).
  [[nodiscard]] constexpr bool hcx() const { return arch::Field<43, 40>::get(mmfr1) != 0; }
  /// FEAT_TRF: ID_AA64DFR0_EL1.TraceFilt [43:40] != 0 (TRFCR_EL2 exists).
  [[nodiscard]] constexpr bool trf() const { return arch::Field<43, 40>::get(dfr0) != 0; }
  /// The PMU version (ID_AA64DFR0_EL1.PMUVer): 1 PMUv3, 4 v3p1, 5 v3p4, 6 v3p5, ...
  [[nodiscard]] constexpr u64 pmu_version() const { return pmuv3() ? arch::Field<11, 8>::get(dfr0) : 0; }
  /// FEAT_SSBS: ID_AA64PFR1_EL1.SSBS [7:4] != 0.
  [[nodiscard]] constexpr bool ssbs() const { return arch::Field<7, 4>::get(pfr1) != 0; }
  /// GICv3 system register interface: ID_AA64PFR0_EL1.GIC [27:24] != 0.
  [[nodiscard]] constexpr bool gic_sysregs() const { return arch::Field<27, 24>::get(pfr0) != 0; }
  /// PMUv3: ID_AA64DFR0_EL1.PMUVer [11:8] neither 0 (none) nor 0xf (IMPLEMENTATION DEFINED).
  [[nodiscard]] constexpr bool pmuv3() const {
    const u64 v = arch::Field<11, 8>::get(dfr0);
    return v != 0 && v != 0xf;
  }
  /// FEAT_SPE: ID_AA64DFR0_EL1.PMSVer [35:32] != 0.
  [[nodiscard]] constexpr bool spe() const { return arch::Field<35, 32>::get(dfr0) != 0; }
  /// FEAT_TRBE: ID_AA64DFR0_EL1.TraceBuffer [47:44] != 0.
  [[nodiscard]] constexpr bool trbe() const { return arch::Field<47, 44>::get(dfr0) != 0; }
};

// HCR_EL2 bits.
inline constexpr u64 kHcrVm = u64{1} << 0;    ///< stage-2 translation for EL1&0 on
inline constexpr u64 kHcrTsc = u64{1} << 19;  ///< SMC at EL1 traps to EL2 (the PSCI relay)
inline constexpr u64 kHcrRw = u64{1} << 31;   ///< EL1 is AArch64
inline constexpr u64 kHcrApk = u64{1} << 40;  ///< pointer-auth key registers not trapped
inline constexpr u64 kHcrApi = u64{1} << 41;  ///< pointer-auth instructions not trapped
inline constexpr u64 kHcrFwb = u64{1} << 46;  ///< FEAT_S2FWB: stage 2 forces write-back
inline constexpr u64 kHcrAta = u64{1} << 56;  ///< MTE tag accesses at EL1/EL0 not trapped

/// HCR_EL2 for the host. Set: VM (stage 2 on), RW (AArch64 EL1), TSC (every SMC reaches the
/// relay, so no CPU starts without the hypervisor), API/APK (Linux signs return addresses with
/// pointer authentication; trapping each PAC instruction would be ruinous), ATA with MTE2,
/// FWB when the library's stage-2 attributes were encoded for it. Clear: IMO/FMO/AMO
/// (physical IRQs, FIQs and SErrors go straight to EL1: the host owns the interrupt
/// controller), TGE/E2H (non-VHE), TWI/TWE (WFI/WFE run natively), TVM/TRVM/TID* (the host's
/// own system registers are its business), HCD clear (HVC is enabled so the host's SMCCC probes
/// reach the hypervisor and get NOT_SUPPORTED instead of UNDEF).
[[nodiscard]] constexpr u64 host_hcr_el2(const HostCpu& cpu, bool fwb) {
  u64 v = kHcrVm | kHcrRw | kHcrTsc | kHcrApi | kHcrApk;
  if (fwb) v |= kHcrFwb;
  if (cpu.mte2()) v |= kHcrAta;
  return v;
}

/// CPTR_EL2 (E2H == 0 layout) for the host: nothing trapped. TFP [10] = 0 (FP/SIMD), TZ [8] = 0
/// when SVE exists, TSM [12] = 0 when SME exists, TTA [20] = 0 (trace registers), TAM [30] = 0
/// (activity monitors), TCPAC [31] = 0 (CPACR_EL1 writable). RES1: bits 13, 9 and 7:0, and
/// bits 8 and 12 when their feature is absent.
[[nodiscard]] constexpr u64 host_cptr_el2(const HostCpu& cpu) {
  u64 v = (u64{1} << 13) | (u64{1} << 9) | 0xff;
  if (!cpu.sve()) v |= u64{1} << 8;
  if (!cpu.sme()) v |= u64{1} << 12;
  return v;
}

/// MDCR_EL2 for the host: HPMN [4:0] = PMCR_EL0.N so EL1 sees every event counter; TPM,
/// TPMCR, TDE, TDA, TDOSA, TDRA clear (PMU and debug registers are the host's); E2PB [13:12]
/// = 0b11 with SPE and E2TB [25:24] = 0b11 with TRBE (the profiling and trace buffers belong
/// to EL1&0 and are not trapped); HPME clear (the hypervisor reserves no counter). HPMD [17]
/// (PMUv3p1) and HCCD [23] (PMUv3p5): the host's event counters and cycle counter do not count
/// at EL2, which would tell the host what the hypervisor does.
[[nodiscard]] constexpr u64 host_mdcr_el2(const HostCpu& cpu) {
  u64 v = cpu.pmuv3() ? arch::Field<15, 11>::get(cpu.pmcr) : 0;
  if (cpu.pmu_version() >= 4) v |= u64{1} << 17;
  if (cpu.pmu_version() >= 6) v |= u64{1} << 23;
  if (cpu.spe()) v |= u64{0b11} << 12;
  if (cpu.trbe()) v |= u64{0b11} << 24;
  return v;
}

/// HFGRTR_EL2 / HFGWTR_EL2 with FEAT_FGT (D24.2): 0 traps nothing except the "n" bits, which
/// trap when 0: nSMPRI_EL1 [54] and nTPIDR2_EL0 [55] must be 1 for the host to use SME's
/// registers (Linux's booting.rst asks for them when entered at EL1 with SME).
[[nodiscard]] constexpr u64 host_hfgxtr_el2(const HostCpu& cpu) {
  return cpu.sme() ? (u64{1} << 54) | (u64{1} << 55) : 0;
}

/// HCRX_EL2 with FEAT_HCX: MSCEn [11], the memory copy and set instructions (FEAT_MOPS) at
/// EL1/EL0 (RES0 without them). Nothing else enabled.
inline constexpr u64 kHostHcrxEl2 = u64{1} << 11;

/// CNTHCTL_EL2 (E2H == 0): EL1PCTEN [0] and EL1PCEN [1] let EL1 and EL0 read the physical
/// counter and use the physical timer (Linux's clocksource and, booted at EL1, its timer);
/// event streams off. CNTVOFF_EL2 is 0 so the virtual counter equals the physical one.
inline constexpr u64 kHostCnthctlEl2 = 0b11;
inline constexpr u64 kHostCntvoffEl2 = 0;

/// ICC_SRE_EL2: SRE [0] (EL2 uses the system-register CPU interface), DFB [1] and DIB [2]
/// (FIQ and IRQ bypass disabled), Enable [3] (EL1 may write ICC_SRE_EL1, which Linux does to
/// use the system registers; with Enable = 0 the write would trap to EL2).
inline constexpr u64 kHostIccSreEl2 = 0b1111;

/// SCTLR_EL1 as a freshly reset CPU has it, which the arm64 boot protocol expects on entry
/// (Documentation/arch/arm64/booting.rst: MMU off, data cache off): M, C, I clear; the bits
/// that are RES1 on Armv8.0 set: LSMAOE [29], nTLSMD [28], SPAN [23], EIS [22], TSCXT [20],
/// EOS [11].
inline constexpr u64 kHostSctlrEl1Reset = (u64{1} << 29) | (u64{1} << 28) | (u64{1} << 23) |
                                          (u64{1} << 22) | (u64{1} << 20) | (u64{1} << 11);

/// ZCR_EL2 / SMCR_EL2 LEN [3:0] = 0xf: EL2 does not cap the host's SVE or SME vector length
/// (the effective length is the minimum over the ELs' LEN fields). SMCR_EL2.FA64 and EZT0 stay
/// 0: streaming mode runs the SME subset of A64 only, and ZT0 (SME2) is not offered.
inline constexpr u64 kHostZcrEl2 = 0xf;
inline constexpr u64 kHostSmcrEl2 = 0xf;

/// HSTR_EL2 = 0: no AArch32 CP15 access from EL1/EL0 traps.
inline constexpr u64 kHostHstrEl2 = 0;

/// The PSTATE the host is entered with (SPSR_EL2 for the ERET): EL1h, D, A, I, F masked, as the
/// arm64 boot protocol requires for the primary CPU and PSCI for CPU_ON.
inline constexpr u64 kHostEntrySpsr = 0x3c5;

}  // namespace ptguard::hyp
