// The hypervisor's decisions about the host, pinned bit by bit: the PSCI relay (hyp/psci.hpp),
// the injected synchronous external abort (hyp/inject.hpp) and the EL2 register values that
// run Linux at EL1 (hyp/host_regs.hpp).
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include "ptguard/hyp/host_regs.hpp"
#include "ptguard/hyp/inject.hpp"
#include "ptguard/hyp/psci.hpp"

namespace ptguard::hyp {
namespace {

using psci::Action;

TEST(PsciRelay, EachPsciCallOnItsConduit) {
  EXPECT_EQ(psci::classify(psci::kVersion, true, true), Action::forward);
  EXPECT_EQ(psci::classify(psci::kCpuOff, true, true), Action::forward);
  EXPECT_EQ(psci::classify(psci::kAffinityInfo64, true, true), Action::forward);
  EXPECT_EQ(psci::classify(psci::kMigrateInfoType, true, true), Action::forward);
  EXPECT_EQ(psci::classify(psci::kCpuOn64, true, true), Action::cpu_on);
  EXPECT_EQ(psci::classify(psci::kCpuOn32, true, true), Action::cpu_on);
  EXPECT_EQ(psci::classify(psci::kCpuSuspend64, true, true), Action::cpu_suspend);
  EXPECT_EQ(psci::classify(psci::kSystemOff, true, true), Action::system_off);
  EXPECT_EQ(psci::classify(psci::kSystemReset, true, true), Action::system_reset);
  EXPECT_EQ(psci::classify(psci::kFeatures, true, true), Action::features);
  // On the other conduit a PSCI ID is just an unknown call.
  EXPECT_EQ(psci::classify(psci::kCpuOn64, false, true), Action::not_supported);
  EXPECT_EQ(psci::classify(psci::kCpuOn64, true, false), Action::not_supported);
}

TEST(PsciRelay, CallsThatCouldResumeTheHostBehindTheHypervisorAreRefused) {
  // SYSTEM_SUSPEND (resumes at a host address), CPU_FREEZE, CPU_DEFAULT_SUSPEND, MEM_PROTECT,
  // SYSTEM_RESET2, and SMCCC's own calls: none reaches the firmware.
  for (u64 fid : {0xC400'000Eull, 0x8400'000Bull, 0xC400'000Cull, 0x8400'0013ull, 0xC400'0012ull,
                  0x8000'0000ull, 0x8000'0001ull, 0xC600'0000ull})
    EXPECT_EQ(psci::classify(fid, true, true), Action::not_supported) << std::hex << fid;
  EXPECT_EQ(psci::features(0xC400'000E), psci::FeaturesAnswer::not_supported);
  EXPECT_EQ(psci::features(psci::kCpuOn64), psci::FeaturesAnswer::ask_firmware);
  EXPECT_EQ(psci::features(psci::kCpuSuspend64), psci::FeaturesAnswer::ask_firmware);
  EXPECT_EQ(psci::features(0x8000'0000), psci::FeaturesAnswer::not_supported);  // SMCCC_VERSION
}

RC_GTEST_PROP(PsciRelay, JunkAboveBit31IsNeverACall, (u32 fid, u32 high)) {
  RC_PRE(high != 0u);
  const u64 x0 = (u64{high} << 32) | fid;
  RC_ASSERT(psci::classify(x0, true, true) == Action::not_supported);
}

RC_GTEST_PROP(PsciRelay, FeaturesAgreesWithClassify, (u32 fid)) {
  const bool relayed = psci::classify(fid, true, true) != Action::not_supported;
  RC_ASSERT((psci::features(fid) == psci::FeaturesAnswer::ask_firmware) == relayed);
}

TEST(PsciRelay, Smc32ArgumentsAreTheLow32Bits) {
  EXPECT_EQ(psci::arg(psci::kCpuOn32, 0xdead'0000'0000'0102ull), 0x102u);
  EXPECT_EQ(psci::arg(psci::kCpuOn64, 0xdead'0000'0000'0102ull), 0xdead'0000'0000'0102ull);
  EXPECT_TRUE(psci::is_32bit_call(psci::kFeatures));
  EXPECT_FALSE(psci::is_32bit_call(psci::kAffinityInfo64));
}

// ---- the injected abort -----------------------------------------------------------------------
constexpr u64 kVbar = 0xffff'8000'1001'0000ull;
constexpr u64 kFar = 0x0000'ffff'a000'0010ull, kElr = 0x0000'aaaa'0000'1234ull;
// A stage-2 data abort on a write: EC 0x24, IL, ISV with an SRT, WnR, S1PTW clear, translation
// fault level 3.
constexpr u64 kEsrWrite = (u64{0x24} << 26) | (u64{1} << 25) | (u64{1} << 24) | (u64{5} << 16) | (u64{1} << 6) | 0x07;

TEST(InjectSea, FromEl0) {
  const u64 spsr = 0x8000'0000;  // EL0t, N set
  const InjectedAbort a = make_sea(kEsrWrite, kFar, kElr, spsr, kHostSctlrEl1Reset, kVbar, {});
  EXPECT_EQ(a.esr_el1, 0x9200'0050u);  // EC 0x24 kept, IL, WnR, FSC 0x10; ISV and SRT gone
  EXPECT_EQ(a.far_el1, kFar);
  EXPECT_EQ(a.elr_el1, kElr);
  EXPECT_EQ(a.spsr_el1, spsr);
  EXPECT_EQ(a.elr_el2, kVbar + 0x400);
  // EL1h, DAIF; SPAN is set in the reset SCTLR_EL1, so PAN keeps the interrupted value (0).
  EXPECT_EQ(a.spsr_el2, 0x3c5u);
}

TEST(InjectSea, FromEl1hBecomesACurrentElAbort) {
  const u64 spsr = 0x6000'03c5 | kSpsrPan;
  const u64 esr_read = kEsrWrite & ~(u64{1} << 6);
  const InjectedAbort a = make_sea(esr_read, kFar, kElr, spsr, 0, kVbar, {});
  EXPECT_EQ(EsrEc::get(a.esr_el1), 0x25u);
  EXPECT_EQ(IssFsc::get(a.esr_el1), 0x10u);
  EXPECT_EQ(IssWnr::get(a.esr_el1), 0u);
  EXPECT_EQ(a.elr_el2, kVbar + 0x200);
  EXPECT_EQ(a.spsr_el2 & kSpsrPan, kSpsrPan);  // SCTLR_EL1.SPAN == 0: PAN set on entry
}

TEST(InjectSea, FromEl1tAndFromAArch32El0) {
  EXPECT_EQ(make_sea(kEsrWrite, kFar, kElr, 0x3c4, 0, kVbar, {}).elr_el2, kVbar + 0x000);
  // An AArch32 EL0 source keeps DIT, which its SPSR holds in bit 21.
  EXPECT_EQ(make_sea(kEsrWrite, kFar, kElr, 0x10 | kSpsrDitA32, 0, kVbar, {}).spsr_el2 & kSpsrDit, kSpsrDit);
  const InjectedAbort a32 = make_sea(kEsrWrite, kFar, kElr, 0x10, 0, kVbar, {});
  EXPECT_EQ(a32.elr_el2, kVbar + 0x600);
  EXPECT_EQ(EsrEc::get(a32.esr_el1), 0x24u);
}

TEST(InjectSea, InstructionAbortAndTheStage2OnlyBitsDropped) {
  // A stage-2 fault on the stage-1 walk of an instruction fetch from EL1 (S1PTW set).
  const u64 esr = (u64{0x20} << 26) | (u64{1} << 25) | (u64{1} << 7) | 0x06;
  const InjectedAbort a = make_sea(esr, kFar, kElr, 0x3c5, 0, kVbar, {});
  EXPECT_EQ(a.esr_el1, (u64{0x21} << 26) | (u64{1} << 25) | 0x10);
}

TEST(InjectSea, FeatureBitsOfTheNewPstate) {
  const u64 dssbs = u64{1} << 44;
  InjectFeatures f{true, true, true};
  const InjectedAbort a = make_sea(kEsrWrite, kFar, kElr, kSpsrDit | 0x3c5, dssbs | (u64{1} << 23), kVbar, f);
  EXPECT_EQ(a.spsr_el2, 0x3c5 | kSpsrSsbs | kSpsrTco | kSpsrDit);
  f = InjectFeatures{false, false, false};
  const InjectedAbort b = make_sea(kEsrWrite, kFar, kElr, 0x3c5, dssbs, kVbar, f);
  EXPECT_EQ(b.spsr_el2, 0x3c5u);  // no PAN without FEAT_PAN, no SSBS without FEAT_SSBS
}

RC_GTEST_PROP(InjectSea, AlwaysEl1hMaskedAndAnExternalAbort, (u64 esr_iss, u64 spsr, u64 sctlr, bool data)) {
  const u64 esr = (u64{data ? 0x24u : 0x20u} << 26) | (esr_iss & 0x3ff'ffff);
  const InjectedAbort a = make_sea(esr, kFar, kElr, spsr, sctlr, kVbar, {});
  RC_ASSERT(SpsrM::get(a.spsr_el2) == kModeEl1h);
  RC_ASSERT((a.spsr_el2 & kSpsrDaif) == kSpsrDaif);
  RC_ASSERT(IssFsc::get(a.esr_el1) == kFscSea);
  RC_ASSERT((a.esr_el1 & ((u64{1} << 24) | (u64{1} << 7) | (u64{1} << 9) | (u64{1} << 10))) == 0u);
  const u64 off = a.elr_el2 - kVbar;
  RC_ASSERT(off == 0x000 || off == 0x200 || off == 0x400 || off == 0x600);
}

TEST(InjectSea, IlIsSetEvenWhenTheTrapSaidA16BitInstruction) {
  const u64 esr16 = kEsrWrite & ~(u64{1} << 25);  // IL 0 with ISV 1: a T32 16-bit access
  EXPECT_EQ(EsrIl::get(make_sea(esr16, kFar, kElr, 0, 0, kVbar, {}).esr_el1), 1u);
}

TEST(SkipSmc, ClearsBtypeAndSoftwareStep) {
  EXPECT_EQ(spsr_after_skip(0x3c5 | kSpsrBtype | kSpsrSs | kSpsrPan), 0x3c5 | kSpsrPan);
}

TEST(InjectUndef, UnknownReasonAtTheSameVectorAsAnAbortWouldUse) {
  const u64 esr = (u64{0x18} << 26) | (u64{1} << 25) | 0x12345;  // a trapped MSR, say
  const InjectedAbort a = make_undef(esr, kElr, 0x3c5, 0, kVbar, {});
  EXPECT_EQ(a.esr_el1, u64{1} << 25);  // EC 0, IL, ISS 0
  EXPECT_EQ(a.elr_el1, kElr);
  EXPECT_EQ(a.elr_el2, kVbar + 0x200);
  EXPECT_EQ(a.spsr_el2, 0x3c5 | kSpsrPan);
  EXPECT_EQ(make_undef(esr, kElr, 0, 0, kVbar, {}).elr_el2, kVbar + 0x400);
}

// ---- EL2 register values ------------------------------------------------------------------------
TEST(HostRegs, HcrEl2) {
  HostCpu cpu;
  EXPECT_EQ(host_hcr_el2(cpu, false), kHcrVm | kHcrRw | kHcrTsc | kHcrApi | kHcrApk);
  EXPECT_EQ(host_hcr_el2(cpu, true) & kHcrFwb, kHcrFwb);
  cpu.pfr1 = u64{2} << 8;  // MTE2
  EXPECT_EQ(host_hcr_el2(cpu, false) & kHcrAta, kHcrAta);
  // Never routed to EL2: IMO (4), FMO (3), AMO (5); never VHE or TGE; WFI/WFE not trapped.
  for (unsigned bit : {3u, 4u, 5u, 13u, 14u, 27u, 34u})
    EXPECT_EQ(host_hcr_el2(cpu, true) & (u64{1} << bit), 0u) << bit;
}

TEST(HostRegs, CptrEl2TrapsNothingItHas) {
  HostCpu none;
  EXPECT_EQ(host_cptr_el2(none), 0x33ffu);  // RES1 bits, TZ and TSM RES1 without SVE/SME
  HostCpu both;
  both.pfr0 = u64{1} << 32;  // SVE
  both.pfr1 = u64{1} << 24;  // SME
  EXPECT_EQ(host_cptr_el2(both), 0x22ffu);
  EXPECT_EQ(host_cptr_el2(both) & (u64{1} << 10), 0u);  // TFP
}

TEST(HostRegs, MdcrEl2GivesEl1EveryCounter) {
  HostCpu cpu;
  cpu.dfr0 = u64{1} << 8;   // PMUv3
  cpu.pmcr = u64{6} << 11;  // N = 6
  EXPECT_EQ(host_mdcr_el2(cpu), 6u);
  cpu.dfr0 |= (u64{1} << 32) | (u64{1} << 44);  // SPE, TRBE
  EXPECT_EQ(host_mdcr_el2(cpu), 6u | (u64{3} << 12) | (u64{3} << 24));
  cpu.dfr0 = u64{0xf} << 8;  // IMPLEMENTATION DEFINED PMU: HPMN left 0
  EXPECT_EQ(host_mdcr_el2(cpu) & 0x1f, 0u);
  cpu.dfr0 = u64{6} << 8;  // PMUv3p5: the counters do not count at EL2 (HPMD, HCCD)
  EXPECT_EQ(host_mdcr_el2(cpu), 6u | (u64{1} << 17) | (u64{1} << 23));
  cpu.dfr0 = u64{4} << 8;  // PMUv3p1: HPMD only
  EXPECT_EQ(host_mdcr_el2(cpu), 6u | (u64{1} << 17));
}

TEST(HostRegs, FineGrainedTrapsLetTheHostUseSme) {
  HostCpu cpu;
  EXPECT_EQ(host_hfgxtr_el2(cpu), 0u);
  cpu.pfr1 = u64{1} << 24;
  EXPECT_EQ(host_hfgxtr_el2(cpu), (u64{1} << 54) | (u64{1} << 55));
}

TEST(HostRegs, SctlrEl1ResetHasTheMmuAndCachesOff) {
  EXPECT_EQ(kHostSctlrEl1Reset & ((u64{1} << 0) | (u64{1} << 2) | (u64{1} << 12)), 0u);
  EXPECT_EQ(kHostSctlrEl1Reset, 0x30d0'0800u);
}

}  // namespace
}  // namespace ptguard::hyp
