// The reference MMU (see ref_mmu.hpp): one translation stage, walked level by level from the
// Arm ARM's rules. References are to DDI 0487 (chapter D8 and the register descriptions in
// D24), to the translation pseudocode by function name, and to rule identifiers (Rxxxxx).
//
// The fault checking sequence (D8.15.4, "MMU fault-checking sequence") and the priority of the
// faults of one stage (D8.15.5, rule RXCHFJ, "MMU fault prioritization from a single address
// translation stage") give the order of the checks below, highest priority first:
//   1. Translation fault, level 0: the input address is out of range, or (stage 2) SL0 is
//      reserved or inconsistent with T0SZ (RVZZSZ; AArch64.S2InvalidSL/S2InconsistentSL).
//   2. Address size fault, level 0: the TTBR holds an address above the OA size (RBFHQH).
//   3. For each lookup level in turn: synchronous External abort on the descriptor fetch;
//      then Translation fault on the descriptor; then Address size fault on the address the
//      descriptor holds (next table, or output address).
//   4. Access flag fault, at the leaf's level (D8.15.1.4, RLFGXS).
//   5. Permission fault, at the leaf's level even when a hierarchical control removed the
//      permission (D8.15.1.5, RCSRQR).
// So the order is per level, not "all address size faults before all translation faults".
#include "ptguard/sim/ref_mmu.hpp"

#include <algorithm>
#include <cstdio>

#include "ptguard/arch/regs.hpp"

namespace ptguard::sim {

namespace {

using arch::bit_range;
using arch::DescKind;
using arch::Granule;

// TCR_EL2 fields (E2H = 0 layout, TCR_EL2 register description in D24.2) that regs.hpp does
// not declare because the table builders never set them.
using TcrEl2Hpd = arch::Bit<24>;   // FEAT_HPDS: hierarchical permissions disabled
using TcrEl2Tbid = arch::Bit<29>;  // FEAT_PAuth: TBI applies to data accesses only

// TxSZ limits without FEAT_LVA/FEAT_LPA2 (minimum 16: 48-bit input) and without FEAT_TTST
// (maximum 39: 25-bit input); AArch64.S1MinTxSZ/S2MinTxSZ and AArch64.MaxTxSZ.
constexpr unsigned kMinTxsz = 16;
constexpr unsigned kMaxTxsz = 39;

// Descriptor address fields are bits [47:x] without FEAT_LPA/LPA2 (D8.3.1.1 and D8.3.1.2).
constexpr unsigned kAddrTop = 47;

void fault(Translation& t, FaultKind k, int level, std::string_view why) {
  t.fault = k;
  t.level = level;
  t.note = why;
}

void choice(Translation& t, std::string_view what) {
  t.unpredictable = true;
  t.note = what;
}

// What both stages need to start the walk, from TCR_EL2 or VTCR_EL2.
struct WalkParams {
  Granule g = Granule::k4K;
  unsigned ia_bits = 0;
  int start_level = 0;
  unsigned oa_bits = 0;
  u64 root = 0;
  bool ha = false;
};

// TG0 (D24.2 TCR_EL2.TG0 / VTCR_EL2.TG0): 0b00 4KB, 0b01 64KB, 0b10 16KB. 0b11 is reserved
// and the architecture lets the implementation pick any implemented granule in its place; the
// oracle cannot know which, so it refuses to translate.
bool decode_granule(u64 tcr, Translation& t, Granule* g) {
  if (arch::granule_from_tg0(arch::TcrTg0::get(tcr), g)) return true;
  fault(t, FaultKind::translation, 0,
        "TG0 is reserved (0b11): the granule used is IMPLEMENTATION DEFINED");
  t.unpredictable = true;
  return false;
}

// T0SZ out of [16, 39]: AArch64.S1TxSZFaults/S2TxSZFaults make it IMPLEMENTATION DEFINED
// ("Fault on TxSZ value below minimum" / "... above maximum") whether the translation takes a
// level 0 Translation fault or uses the nearest limit (AArch64.S1Translate, S2Translate).
bool decode_txsz(u64 tcr, const ImplChoices& impl, Translation& t, unsigned* ia_bits) {
  unsigned txsz = static_cast<unsigned>(arch::TcrT0sz::get(tcr));
  if (txsz < kMinTxsz || txsz > kMaxTxsz) {
    if (impl.txsz_out_of_range_faults) {
      fault(t, FaultKind::translation, 0,
            "T0SZ outside 16..39 (IMPLEMENTATION DEFINED: this CPU faults)");
      t.unpredictable = true;
      return false;
    }
    txsz = std::clamp(txsz, kMinTxsz, kMaxTxsz);
    choice(t, "T0SZ outside 16..39 (IMPLEMENTATION DEFINED: treated as the nearest limit)");
  }
  *ia_bits = 64 - txsz;
  return true;
}

// The output address size, AArch64.PhysicalAddressSize(): the PS encoding, but never more
// than the implemented PA size (AArch64.PAMax), nor 48 bits without FEAT_LPA/LPA2 (PS = 0b110
// "52 bits" is therefore 48 here). PS = 0b111 is reserved: the size is IMPLEMENTATION DEFINED;
// the model uses the implemented PA size.
unsigned decode_oa_bits(u64 tcr, const ImplChoices& impl, Translation& t) {
  const unsigned pamax = std::clamp(impl.pa_bits, 32u, arch::kMaxOaBits);
  unsigned ps = arch::pa_bits_from_range(arch::TcrPs::get(tcr));
  if (ps == 0) {
    choice(t, "PS is reserved (0b111): OA size IMPLEMENTATION DEFINED, taken as PAMax");
    ps = pamax;
  }
  return std::min({ps, pamax, arch::kMaxOaBits});
}

// The root table address from a TTBR (TTBR0_EL2.BADDR or VTTBR_EL2.BADDR, bits [47:1]; bit 0
// is CnP). First the address size check on the register (D8.15.1.2 RCVSBH, reported at level
// 0 by RBFHQH; AArch64.S1Walk/S2Walk check baseregister<47:outputsize>). Then alignment: the
// base is aligned to the size of the initial table, which for a concatenated stage-2 root is
// the size of all the concatenated tables (AArch64.S1TTBaseAddress/S2TTBaseAddress:
// tsize = iasize - (levels * stride + granulebits) + 3, then Align(base, 2^tsize)). The bits
// below that are RES0; if set, K1.2.5 "Translation table base address alignment" allows them
// to be treated as zero (what the pseudocode's Align() does, and what the model does) or to
// corrupt the walk address, so the result is marked unpredictable.
bool decode_root(u64 ttbr, const WalkParams& p, Translation& t, u64* root) {
  const u64 baddr = ttbr & arch::TtbrBaddr::kMask;
  if ((baddr >> p.oa_bits) != 0) {
    fault(t, FaultKind::address_size, 0, "TTBR base address above the OA size (PS)");
    return false;
  }
  const unsigned tsize = p.ia_bits - arch::level_shift(p.g, p.start_level) + 3;
  const u64 align_mask = (u64{1} << tsize) - 1;
  if ((baddr & align_mask) != 0)
    choice(t, "TTBR base not aligned to the initial table (K1.2.5): low bits treated as 0");
  *root = baddr & ~align_mask;
  return true;
}

// What the walk found at the leaf.
struct Leaf {
  int level = 0;
  u64 desc = 0;
  u64 oa = 0;                // output address of the block or page (bits [47:level_shift])
  bool ap_table_ro = false;  // stage 1: some APTable[1] on the way was 1
  bool xn_table = false;     // stage 1: some XNTable on the way was 1
};

// The walk proper, one lookup level at a time (D8.2 "Translation tables and the translation
// process"; D8.15.4 steps 4 to 7). Returns false with `t` holding the fault.
bool walk(const PhysMem& mem, const WalkParams& p, u64 ia, bool stage1_hierarchical, Translation& t,
          Leaf* leaf) {
  const Granule g = p.g;
  const unsigned page_shift = arch::page_shift(g);
  u64 table = p.root;
  bool ap_table_ro = false;
  bool xn_table = false;
  for (int level = p.start_level; level <= arch::kLastLevel; ++level) {
    // The descriptor index: the IA bits this level resolves. At the initial level they run up
    // to the top of the input address, so a concatenated stage-2 root (D8.2, "Concatenated
    // translation tables for the initial stage 2 lookup") is indexed as one large table.
    const unsigned shift = arch::level_shift(g, level);
    const unsigned top = level == p.start_level ? p.ia_bits : shift + arch::bits_per_level(g);
    const u64 index = (ia & bit_range(top - 1, shift)) >> shift;
    const u64 desc_pa = table + index * 8;

    u64 desc = 0;
    if (!mem.read64(desc_pa, &desc)) {
      // A walk that reads memory nothing backs: a synchronous External abort on the table
      // walk, reported at this lookup level (D8.15.1.3).
      fault(t, FaultKind::external_abort, level, "table walk read unbacked memory");
      return false;
    }
    const DescKind kind = arch::classify(desc, g, level);
    t.walk.push_back(WalkStep{level, table, desc_pa, desc, kind});

    if (kind == DescKind::invalid) {
      // RDYNYQ: bit[0] = 0 is an invalid descriptor; Translation fault at this level.
      fault(t, FaultKind::translation, level, "invalid descriptor (bit 0 = 0)");
      return false;
    }
    if (kind == DescKind::reserved) {
      // RKRMJZ: bit[1] = 0 at a level that cannot hold a Block descriptor (level 0 with any
      // granule, level 1 with 16KB/64KB, without FEAT_LPA/LPA2; and level 3, where 0b01 is
      // reserved: D8.3.1) is a reserved encoding: Translation fault.
      fault(t, FaultKind::translation, level,
            level == arch::kLastLevel ? "bits[1:0] = 0b01 at level 3 (reserved)"
                                      : "block descriptor at a level that cannot hold one");
      return false;
    }
    // RWDZFC: with 64KB granules and no 52-bit PA, descriptor bits[15:12] (OA[51:48] under
    // FEAT_LPA) nonzero may or may not give an Address size fault (IMPLEMENTATION DEFINED;
    // not faulting is deprecated). The model faults.
    if (g == Granule::k64K && (desc & bit_range(15, 12)) != 0) {
      fault(t, FaultKind::address_size, level,
            "64KB descriptor bits[15:12] nonzero (IMPLEMENTATION DEFINED, RWDZFC)");
      t.unpredictable = true;
      return false;
    }

    if (kind == DescKind::table) {
      // D8.3.1.1: the next-level table address is bits [47:granule shift].
      const u64 next = desc & bit_range(kAddrTop, page_shift);
      if ((next >> p.oa_bits) != 0) {
        // RCVSBH / RBFHQH: a table address above the OA size, at this level.
        fault(t, FaultKind::address_size, level, "next-level table address above the OA size");
        return false;
      }
      if (stage1_hierarchical) {
        // D8.4.1.2 (RYTXKB, Table D8-64; IPCLHM: APTable[0] is RES0 with one Exception level):
        // APTable[1] = 1 removes write permission at all later levels. RLQFP: XNTable = 1
        // makes XN 1 at all later levels. Both accumulate down the walk.
        ap_table_ro = ap_table_ro || (arch::TableAp::get(desc) & 0b10) != 0;
        xn_table = xn_table || arch::TableXn::get(desc) != 0;
      }
      table = next;
      continue;
    }

    // A block or page (D8.3.1.2): output address bits [47:level_shift]. Lower bits of a block
    // descriptor's address field are RES0 and ignored here.
    const u64 oa = desc & bit_range(kAddrTop, shift);
    if ((oa >> p.oa_bits) != 0) {
      fault(t, FaultKind::address_size, level, "output address above the OA size");
      return false;
    }
    *leaf = Leaf{level, desc, oa, ap_table_ro, xn_table};
    return true;
  }
  return false;  // unreachable: level 3 never holds a table
}

// Fields of the result that come from the leaf, filled before the access flag and permission
// checks so that those faults still show what the leaf said.
void fill_leaf(Translation& t, const WalkParams& p, const Leaf& leaf, u64 ia) {
  t.level = leaf.level;
  t.descriptor = leaf.desc;
  t.block_size = arch::level_size(p.g, leaf.level);
  t.output_address = leaf.oa | (ia & (t.block_size - 1));
  t.sw = static_cast<u8>(arch::DescSw::get(leaf.desc));
  // D8.6.2: SH[1:0] at bits [9:8] of both stage-1 and stage-2 leaves.
  t.sh = static_cast<arch::Shareability>(arch::S1Sh::get(leaf.desc));
  t.contiguous = arch::S1Contiguous::get(leaf.desc) != 0;  // bit 52 at both stages
}

// Access flag (D8.5, D8.15.1.4): AF = 0 with hardware AF management off is an Access flag
// fault at the leaf's level (D8.15.4 step 9). With TCR/VTCR.HA = 1 (FEAT_HAFDBS) the hardware
// sets AF instead (step 10) and there is no fault. Returns false on a fault.
bool check_access_flag(Translation& t, const WalkParams& p, bool af) {
  if (af) return true;
  if (!p.ha) {
    fault(t, FaultKind::access_flag, t.level, "access flag is 0 and hardware AF update is off");
    return false;
  }
  return true;
}

// K1.2.11: an instruction fetch from Device memory that is not execute-never is CONSTRAINED
// UNPREDICTABLE: a Permission fault, or a fetch as if from Normal Non-cacheable memory (the
// pseudocode: ConstrainUnpredictable(Unpredictable_INSTRDEVICE) in S1/S2CheckPermissions, and
// NormalNCMemAttr() in S1Translate/S2Translate). Returns false on a fault.
bool check_device_fetch(Translation& t, const ImplChoices& impl, Access access) {
  if (access != Access::exec || !t.attrs.device || t.attrs.from_stage1) return true;
  if (impl.device_fetch_faults) {
    fault(t, FaultKind::permission, t.level,
          "instruction fetch from Device memory (CONSTRAINED UNPREDICTABLE: this CPU faults)");
    t.unpredictable = true;
    return false;
  }
  choice(t, "instruction fetch from Device memory (CONSTRAINED UNPREDICTABLE: as Normal NC)");
  return true;
}

bool permitted(const Translation& t, Access access) {
  switch (access) {
    case Access::read: return t.readable;
    case Access::write: return t.writable;
    case Access::exec: return t.executable;
  }
  return false;
}

std::string_view denied_note(Access access) {
  switch (access) {
    case Access::read: return "read not permitted";
    case Access::write: return "write not permitted";
    case Access::exec: return "execution not permitted";
  }
  return "";
}

}  // namespace

const char* name(FaultKind k) {
  switch (k) {
    case FaultKind::none: return "none";
    case FaultKind::translation: return "translation";
    case FaultKind::access_flag: return "access flag";
    case FaultKind::permission: return "permission";
    case FaultKind::address_size: return "address size";
    case FaultKind::external_abort: return "external abort";
  }
  return "?";
}

const char* name(Access a) {
  switch (a) {
    case Access::read: return "read";
    case Access::write: return "write";
    case Access::exec: return "exec";
  }
  return "?";
}

std::string to_string(const Translation& t) {
  char buf[256];
  if (t.ok()) {
    std::snprintf(buf, sizeof buf, "ok pa 0x%llx level %d size 0x%llx %c%c%c sw 0x%x%s%s",
                  static_cast<unsigned long long>(t.output_address), t.level,
                  static_cast<unsigned long long>(t.block_size), t.readable ? 'r' : '-',
                  t.writable ? 'w' : '-', t.executable ? 'x' : '-', static_cast<unsigned>(t.sw),
                  t.af_set_by_hw ? " af-set-by-hw" : "", t.unpredictable ? " (unpredictable)" : "");
  } else {
    std::snprintf(buf, sizeof buf, "fault %s level %d", name(t.fault), t.level);
  }
  std::string s = buf;
  if (!t.note.empty()) {
    s += ": ";
    s += t.note;
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Stage 1, EL2 regime, HCR_EL2.E2H = 0 (one VA range, one privilege level).
// ---------------------------------------------------------------------------------------------
Translation translate_stage1_el2(const PhysMem& mem, const Stage1Regs& regs, u64 va, Access access,
                                 const ImplChoices& impl) {
  Translation t;
  t.input_address = va;
  WalkParams p;
  if (!decode_granule(regs.tcr, t, &p.g)) return t;
  if (!decode_txsz(regs.tcr, impl, t, &p.ia_bits)) return t;

  // The VA range (RVZZSZ; AArch64.VAIsOutOfRange): with one VA range, any 1 bit between the
  // top of the address and the configured size is a level 0 Translation fault. TCR_EL2.TBI
  // puts the top at bit 55 (the top byte is ignored), except for instruction fetches when
  // TCR_EL2.TBID is 1 (AArch64.AddrTop).
  const bool tbi = arch::TcrTbi::get(regs.tcr) != 0 &&
                   !(access == Access::exec && TcrEl2Tbid::get(regs.tcr) != 0);
  const unsigned addr_top = tbi ? 55 : 63;
  if ((va & bit_range(addr_top, p.ia_bits)) != 0) {
    fault(t, FaultKind::translation, 0, "VA above the configured input size (T0SZ)");
    return t;
  }

  // D8.2.6 "The initial lookup level": at stage 1 it follows from the input size alone, the
  // level whose table resolves the top bits (AArch64.S1StartLevel:
  // 4 - ceil((iasize - granulebits) / stride)).
  p.start_level = arch::stage1_start_level(p.g, p.ia_bits);
  p.oa_bits = decode_oa_bits(regs.tcr, impl, t);
  p.ha = arch::TcrHa::get(regs.tcr) != 0;
  if (!decode_root(regs.ttbr0, p, t, &p.root)) return t;

  // TCR_EL2.HPD (FEAT_HPDS): hierarchical permissions disabled, APTable and XNTable are
  // IGNORED and treated as 0 (D8.4.1.2, IPKGJC and INYWHQ).
  const bool hierarchical = TcrEl2Hpd::get(regs.tcr) == 0;
  Leaf leaf;
  if (!walk(mem, p, va, hierarchical, t, &leaf)) return t;
  fill_leaf(t, p, leaf, va);

  // Stage 1 Direct permissions for a regime with one Exception level (D8.4.1.2.1 RCBNKR, Table
  // D8-62; RMGGZM: AP[1] is RES1 and plays no part; AArch64.S1DirectBasePermissions):
  // PrivRead always; PrivWrite unless AP[2] = 1 or an APTable[1] above was 1.
  // Execution (D8.4.1.2.3 RTRZVM, RLQFP): PrivExecute unless XN (bit 54) or an XNTable above.
  // PXN (bit 53) is RES0 in this regime. WXN (RSYMMB, IFQVWM, Table D8-66): with
  // SCTLR_EL2.WXN = 1 a region that is (effectively) writable is not executable.
  t.readable = true;
  t.writable = (arch::S1Ap::get(leaf.desc) & 0b10) == 0 && !leaf.ap_table_ro;
  t.executable = arch::S1Xn::get(leaf.desc) == 0 && !leaf.xn_table;
  if (regs.wxn && t.writable) t.executable = false;

  // MAIR_EL2 attribute byte chosen by AttrIndx (D8.6.1; MAIR_EL2 in D24.2).
  t.attrs = arch::decode_mair_attr(
      arch::mair_attr(regs.mair, static_cast<unsigned>(arch::S1AttrIndx::get(leaf.desc))));
  if (t.attrs.reserved) choice(t, "MAIR attribute byte is a reserved/UNPREDICTABLE encoding");

  if (!check_access_flag(t, p, arch::S1Af::get(leaf.desc) != 0)) return t;
  if (!permitted(t, access)) {
    fault(t, FaultKind::permission, leaf.level, denied_note(access));
    return t;
  }
  if (!check_device_fetch(t, impl, access)) return t;
  // AArch64.SettingAccessFlagPermitted: with no fault the hardware sets AF.
  t.af_set_by_hw = p.ha && arch::S1Af::get(leaf.desc) == 0;
  return t;
}

// ---------------------------------------------------------------------------------------------
// Stage 2 (VTTBR_EL2, VTCR_EL2).
// ---------------------------------------------------------------------------------------------
namespace {

// The initial lookup level from VTCR_EL2.SL0 (VTCR_EL2 in D24.2; AArch64.S2StartLevel) and
// whether the architecture accepts it (AArch64.S2InvalidSL), without FEAT_LPA2/FEAT_TTST:
//   4KB:  SL0 0b00 level 2, 0b01 level 1, 0b10 level 0 (reserved if PAMax < 44), 0b11 level 3
//         only with FEAT_TTST (reserved here).
//   16KB: 0b00 level 3, 0b01 level 2, 0b10 level 1 (reserved if PAMax < 42), 0b11 level 0 only
//         with VTCR_EL2.DS (FEAT_LPA2; reserved here).
//   64KB: 0b00 level 3, 0b01 level 2, 0b10 level 1 (reserved if PAMax < 44), 0b11 reserved.
// Returns -1 for a reserved value.
int s2_start_level(Granule g, u64 sl0, unsigned pamax) {
  switch (g) {
    case Granule::k4K:
      if (sl0 == 0b11) return -1;
      if (sl0 == 0b10 && pamax < 44) return -1;
      return 2 - static_cast<int>(sl0);
    case Granule::k16K:
      if (sl0 == 0b11) return -1;
      if (sl0 == 0b10 && pamax < 42) return -1;
      return 3 - static_cast<int>(sl0);
    case Granule::k64K:
      if (sl0 == 0b11) return -1;
      if (sl0 == 0b10 && pamax < 44) return -1;
      return 3 - static_cast<int>(sl0);
  }
  return -1;
}

// AArch64.S2InconsistentSL: the input size must need the start level (more bits than the
// levels below resolve: at least levels * stride + granulebits + 1), and the start level must
// resolve the rest with at most 16 concatenated tables (at most stride + 4 bits, D8.2
// "Concatenated translation tables for the initial stage 2 lookup").
bool s2_sl_consistent(Granule g, int start_level, unsigned ia_bits) {
  const unsigned stride = arch::bits_per_level(g);
  const unsigned levels = static_cast<unsigned>(arch::kLastLevel - start_level);
  const unsigned min_ia = levels * stride + arch::page_shift(g) + 1;
  const unsigned max_ia = min_ia + (stride - 1) + 4;
  return ia_bits >= min_ia && ia_bits <= max_ia;
}

}  // namespace

Translation translate_stage2(const PhysMem& mem, const Stage2Regs& regs, u64 ipa, Access access,
                             bool el0, const ImplChoices& impl) {
  Translation t;
  t.input_address = ipa;
  WalkParams p;
  if (!decode_granule(regs.vtcr, t, &p.g)) return t;
  if (!decode_txsz(regs.vtcr, impl, t, &p.ia_bits)) return t;

  // RXCHFJ item 2: an SL0 that is reserved, or inconsistent with T0SZ, is a stage 2 level 0
  // Translation fault (AArch64.S2Translate).
  const unsigned pamax = std::clamp(impl.pa_bits, 32u, arch::kMaxOaBits);
  p.start_level = s2_start_level(p.g, arch::VtcrSl0::get(regs.vtcr), pamax);
  if (p.start_level < 0) {
    fault(t, FaultKind::translation, 0, "VTCR_EL2.SL0 is a reserved value");
    return t;
  }
  if (!s2_sl_consistent(p.g, p.start_level, p.ia_bits)) {
    fault(t, FaultKind::translation, 0, "VTCR_EL2.SL0 inconsistent with T0SZ");
    return t;
  }
  // AArch64.IPAIsOutOfRange: an IPA with a 1 bit at or above the input size is a level 0
  // Translation fault (RVZZSZ), not a fault at the start level.
  if ((ipa & bit_range(63, p.ia_bits)) != 0) {
    fault(t, FaultKind::translation, 0, "IPA above the configured input size (T0SZ)");
    return t;
  }

  p.oa_bits = decode_oa_bits(regs.vtcr, impl, t);
  p.ha = arch::TcrHa::get(regs.vtcr) != 0;
  if (!decode_root(regs.vttbr, p, t, &p.root)) return t;

  // Stage 2 table descriptors carry no hierarchical attributes (ISRRJF: those bits are RES0).
  Leaf leaf;
  if (!walk(mem, p, ipa, false, t, &leaf)) return t;
  fill_leaf(t, p, leaf, ipa);

  // Stage 2 Direct permissions (D8.4.2.1; AArch64.S2DirectBasePermissions).
  // Data (Table D8-76): S2AP[0] (bit 6) read, S2AP[1] (bit 7) write, the same for EL1 and EL0.
  t.readable = arch::S2ApRead::get(leaf.desc) != 0;
  t.writable = arch::S2ApWrite::get(leaf.desc) != 0;
  // Execution (Tables D8-77 and D8-78): decided by XN alone; S2AP plays no part, so a page
  // with no read permission can still be executable. Without FEAT_XNX bit 53 is RES0 and XN
  // (bit 54) forbids execution at EL1 and EL0. With FEAT_XNX, XN[1:0] = bits [54:53]:
  //   00 EL1 and EL0 may execute; 01 EL0 only; 10 neither; 11 EL1 only.
  const bool xn1 = arch::Bit<54>::get(leaf.desc) != 0;
  const bool xn0 = regs.xnx && arch::Bit<53>::get(leaf.desc) != 0;
  const bool priv_x = xn1 ? xn0 : !xn0;  // 00 -> yes, 01 -> no, 10 -> no, 11 -> yes
  const bool unpriv_x = !xn1;            // 00 -> yes, 01 -> yes, 10 -> no, 11 -> no
  t.executable = el0 ? unpriv_x : priv_x;

  // MemAttr[3:0] (bits [5:2]); its meaning depends on HCR_EL2.FWB (D8.6.5).
  t.attrs = arch::decode_s2_memattr(static_cast<u8>(arch::S2MemAttr::get(leaf.desc)), regs.fwb);
  if (t.attrs.reserved) choice(t, "stage-2 MemAttr is a reserved encoding");

  if (!check_access_flag(t, p, arch::S2Af::get(leaf.desc) != 0)) return t;
  if (!permitted(t, access)) {
    fault(t, FaultKind::permission, leaf.level, denied_note(access));
    return t;
  }
  if (!check_device_fetch(t, impl, access)) return t;
  t.af_set_by_hw = p.ha && arch::S2Af::get(leaf.desc) == 0;
  return t;
}

}  // namespace ptguard::sim
