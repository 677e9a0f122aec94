// The reference MMU: what the hardware does with a set of translation tables.
//
// Given the table memory, the control registers and an input address, it translates one read,
// write or instruction fetch the way the Arm architecture's translation rules say (Arm ARM DDI
// 0487, chapter D8 "The AArch64 Virtual Memory System Architecture", and the translation
// pseudocode AArch64.S1Translate / AArch64.S2Translate), and returns the output address and
// attributes, or the fault with its kind and lookup level.
//
// It is the oracle the tests ask: it is written from the architecture's rules, level by level,
// and shares no code with the table engine (pgtable/) nor any rule with arch/: the granule
// geometry, the levels that may hold blocks, descriptor classification, the TG0, PS and SL0
// encodings, the start levels, the descriptor and register field positions and the MAIR and
// stage-2 MemAttr decoding are all written again in ref_mmu.cpp from the Arm ARM, so that a
// mistake in arch/ (which the engine uses) cannot hide from the tests. From arch/ it takes only
// plain result types: DescKind, Shareability and MemAttrs.
//
// Regimes: stage 1 of the EL2 translation regime without VHE (HCR_EL2.E2H = 0: TTBR0_EL2 only,
// one privilege level), and stage 2 of the EL1&0 regime (VTTBR_EL2, VTCR_EL2), each on its
// own. What is not modelled is listed in docs/reference-mmu.md.
//
// Hosted only (sim/): it allocates (the walk record).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "ptguard/arch/descriptor.hpp"
#include "ptguard/arch/memattr.hpp"
#include "ptguard/arch/regs.hpp"
#include "ptguard/sim/phys_mem.hpp"

namespace ptguard::sim {

/// The kind of access being translated.
enum class Access : u8 { read, write, exec };

/// The MMU fault kinds of one translation stage (D8.15.1 "MMU fault types"), less the ones this
/// model cannot produce (alignment, TLB conflict, GPC).
enum class FaultKind : u8 {
  none,
  translation,     ///< D8.15.1.1
  access_flag,     ///< D8.15.1.4
  permission,      ///< D8.15.1.5
  address_size,    ///< D8.15.1.2 (RCVSBH): an address above the configured OA size
  external_abort,  ///< D8.15.1.3: synchronous External abort on a table walk (unbacked table)
};

/// "translation", "access flag", "permission", "address size", "external abort" ("none").
[[nodiscard]] const char* name(FaultKind k);
/// "read", "write", "exec".
[[nodiscard]] const char* name(Access a);

/// One descriptor fetched during the walk, in order.
struct WalkStep {
  int level;
  u64 table_pa;  ///< base of the table (for a concatenated root: of the whole root)
  u64 desc_pa;   ///< address of the descriptor
  u64 desc;      ///< its value
  arch::DescKind kind;
};

/// The outcome of one translation.
struct Translation {
  FaultKind fault = FaultKind::none;
  /// The lookup level of the fault (D8.15.4.2; level 0 for faults found before the walk), or
  /// of the leaf on success.
  int level = 0;
  u64 input_address = 0;
  u64 output_address = 0;  ///< valid when ok()
  u64 descriptor = 0;      ///< the leaf descriptor (also on access-flag and permission faults)
  u64 block_size = 0;      ///< bytes mapped by the leaf: page or block size
  /// Effective permissions for this access's Exception level (stage 1: after APTable, XNTable
  /// and WXN; stage 2: S2AP, and XN for the EL given). Filled when the leaf was reached.
  bool readable = false;
  bool writable = false;
  bool executable = false;
  /// Memory attributes the leaf selects: stage 1 from MAIR_EL2[AttrIndx], stage 2 from
  /// MemAttr as HCR_EL2.FWB says. As written in the tables (the K1.2.11 Device-fetch rule is
  /// reported through `unpredictable`, not folded in here).
  arch::MemAttrs attrs{};
  arch::Shareability sh = arch::Shareability::non;
  u8 sw = 0;                ///< software bits 58:55 of the leaf
  bool contiguous = false;  ///< contiguous hint (bit 52)
  /// The leaf has the contiguous hint and its aligned run breaks the rules of Arm ARM D8.6.1
  /// "The Contiguous bit" (an entry invalid, a table, without the hint, with other attributes
  /// or permissions, or output addresses not consecutive from an aligned start): a
  /// misprogrammed run. The translation is then CONSTRAINED UNPREDICTABLE (any entry of the run
  /// may be used, or a TLB conflict abort), so `unpredictable` is set and `note` says which
  /// rule broke; the fields above are the leaf's own reading.
  bool contiguous_misprogrammed = false;
  /// TCR/VTCR.HA set and the leaf's AF is 0: the hardware would set AF in memory (the
  /// reference MMU does not write it). Only on success: with a permission fault the update is
  /// CONSTRAINED UNPREDICTABLE (Unpredictable_AFUPDATE) and this stays false.
  bool af_set_by_hw = false;
  /// The outcome rests on an IMPLEMENTATION DEFINED or CONSTRAINED UNPREDICTABLE choice;
  /// `note` says which and what the model chose. Tests should not rely on such results.
  bool unpredictable = false;
  /// The first reason recorded: why the translation faulted, or the first IMPLEMENTATION
  /// DEFINED / CONSTRAINED UNPREDICTABLE choice made (static text; empty if none). A later
  /// reason never replaces an earlier one: when a choice comes first (a T0SZ taken as the
  /// nearest limit, say) the fault that follows may be a consequence of it, so the choice is
  /// what to read first. Every reason is kept in `notes`.
  std::string_view note;
  /// Every reason recorded, in the order they arose (notes.front() == note when not empty).
  std::vector<std::string_view> notes;
  std::vector<WalkStep> walk;

  [[nodiscard]] bool ok() const { return fault == FaultKind::none; }
};

/// "ok pa 0x... level 3 (r w x) ..." or "fault permission level 3: <note>"; with several
/// reasons, all of them, first first, separated by "; ".
[[nodiscard]] std::string to_string(const Translation& t);

/// Stage 1, EL2 regime without VHE: the register values the walk depends on.
struct Stage1Regs {
  u64 tcr;           ///< TCR_EL2 (E2H = 0 layout)
  u64 mair;          ///< MAIR_EL2
  u64 ttbr0;         ///< TTBR0_EL2
  bool wxn = false;  ///< SCTLR_EL2.WXN
};

/// Stage 2 of the EL1&0 regime.
struct Stage2Regs {
  u64 vtcr;          ///< VTCR_EL2
  u64 vttbr;         ///< VTTBR_EL2 (the VMID bits are ignored)
  bool fwb;          ///< HCR_EL2.FWB: changes what MemAttr means
  bool xnx = false;  ///< FEAT_XNX implemented: XN[0] (bit 53) splits EL1 and EL0 execution
};

/// The CPU's implementation choices the architecture leaves open. The defaults are documented
/// in docs/reference-mmu.md; results that depend on one are marked `unpredictable`.
struct ImplChoices {
  /// AArch64.PAMax(): the implemented PA size (ID_AA64MMFR0_EL1.PARange), at most 52. 52 with
  /// the 64KB granule is FEAT_LPA: descriptor bits [15:12] are then OA[51:48].
  unsigned pa_bits = 48;
  /// FEAT_LPA2 implemented: TCR_EL2.DS / VTCR_EL2.DS (bit 32) give the 4KB and 16KB granules
  /// 52-bit addresses (OA[51:50] in descriptor bits [9:8], level -1 with 4KB). Without it DS
  /// is RES0 and read as 0.
  bool lpa2 = false;
  /// TxSZ below the minimum (16, or 12 with 52-bit inputs) or above the maximum (39) is
  /// IMPLEMENTATION DEFINED: a level 0 Translation fault (true), or treated as the nearest
  /// limit (false).
  bool txsz_out_of_range_faults = true;
  /// An instruction fetch from Device memory that is not execute-never is CONSTRAINED
  /// UNPREDICTABLE (K1.2.11): a Permission fault (true), or a fetch treated as Normal
  /// Non-cacheable (false).
  bool device_fetch_faults = false;
};

/// The implementation choices of a CPU with features `cpu`: its PA size (at most 52) and
/// FEAT_LPA2 where it has it for the 4K or 16K granule at either stage; the rest defaults.
[[nodiscard]] inline ImplChoices impl_choices_of(const arch::CpuFeatures& cpu) {
  ImplChoices c;
  c.pa_bits = cpu.pa_bits > 52 ? 52 : cpu.pa_bits;
  for (const arch::Granule g : {arch::Granule::k4K, arch::Granule::k16K})
    c.lpa2 = c.lpa2 || cpu.supports_52bit(g, 1) || cpu.supports_52bit(g, 2);
  return c;
}

/// Translates `va` for `access` through the stage-1 EL2 tables in `mem`.
[[nodiscard]] Translation translate_stage1_el2(const PhysMem& mem, const Stage1Regs& regs, u64 va,
                                               Access access, const ImplChoices& impl = {});

/// Translates `ipa` for `access` through the stage-2 tables in `mem`. `el0`: the access is
/// made from EL0 (only instruction fetches care, through XN with FEAT_XNX).
[[nodiscard]] Translation translate_stage2(const PhysMem& mem, const Stage2Regs& regs, u64 ipa,
                                           Access access, bool el0 = false,
                                           const ImplChoices& impl = {});

}  // namespace ptguard::sim
