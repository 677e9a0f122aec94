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

namespace ptguard::sim {

namespace {

using arch::DescKind;

// ---------------------------------------------------------------------------------------------
// The oracle's own reading of the architecture.
//
// Nothing below calls into arch/: the geometry, the descriptor classification, the register
// encodings and the memory-attribute decoding are written here again from the Arm ARM, so that
// a mistake in arch/ (which the table engine uses) shows up as a disagreement in the tests
// instead of being shared by the engine and its oracle. From arch/ only the result types are
// used (DescKind, Shareability, MemAttrs and its enums: plain data, no rules).
// ---------------------------------------------------------------------------------------------

// Bits [hi:lo] of a 64-bit value as a mask (hi may be 63; empty when lo > hi).
constexpr u64 mask(unsigned hi, unsigned lo) {
  if (lo > hi) return 0;
  const u64 upper = hi >= 63 ? ~u64{0} : (u64{1} << (hi + 1)) - 1;
  return upper & ~((u64{1} << lo) - 1);
}
// Field [hi:lo] of `v`, shifted down.
constexpr u64 field(u64 v, unsigned hi, unsigned lo) { return (v & mask(hi, lo)) >> lo; }
constexpr bool bit(u64 v, unsigned n) { return ((v >> n) & 1) != 0; }

// TCR_EL2 (E2H = 0 layout) and VTCR_EL2 fields (D24.2, register descriptions of TCR_EL2 and
// VTCR_EL2; the TTBR0/VTTBR walk fields sit at the same positions in both).
constexpr unsigned kTcrT0szHi = 5, kTcrT0szLo = 0;  // T0SZ: input size is 64 - T0SZ
constexpr unsigned kVtcrSl0Hi = 7, kVtcrSl0Lo = 6;  // SL0 (VTCR_EL2 only)
constexpr unsigned kTcrTg0Hi = 15, kTcrTg0Lo = 14;  // TG0: the granule
constexpr unsigned kTcrPsHi = 18, kTcrPsLo = 16;    // PS: output (physical) address size
constexpr unsigned kTcrTbi = 20;                    // TBI (TCR_EL2 only): top byte ignored
constexpr unsigned kTcrHa = 21;                     // HA (FEAT_HAFDBS): hardware AF update
constexpr unsigned kTcrHpd = 24;                    // HPD (FEAT_HPDS, TCR_EL2 only)
constexpr unsigned kTcrTbid = 29;                   // TBID (FEAT_PAuth, TCR_EL2 only)
// TTBR0_EL2.BADDR / VTTBR_EL2.BADDR are bits [47:1] (bit 0 is CnP; VTTBR [63:48] the VMID).
// With a 52-bit output address (FEAT_LPA's 64KB granule, or FEAT_LPA2 with DS = 1), BADDR[51:48]
// is held in bits [5:2] instead, and the table is aligned to at least 64 bytes
// (AArch64.S1TTBaseAddress / S2TTBaseAddress).
constexpr unsigned kTtbrBaddrHi = 47, kTtbrBaddrLo = 1;
constexpr unsigned kTtbrBaddr52Hi = 5, kTtbrBaddr52Lo = 2;
// TCR_EL2 (E2H = 0) and VTCR_EL2 bit 32, DS (FEAT_LPA2): 52-bit addresses with the 4KB and 16KB
// granules (RES0 without FEAT_LPA2, and ignored with 64KB). VTCR_EL2 bit 33, SL2: with DS = 1
// and 4KB, SL2 = 1 and SL0 = 0b00 select the level -1 initial lookup (RES0 otherwise).
constexpr unsigned kTcrDs = 32;
constexpr unsigned kVtcrSl2 = 33;
constexpr unsigned kTcrSh0Hi = 13, kTcrSh0Lo = 12;  // SH0: also the leaves' shareability with DS

// Descriptor fields (D8.3.1 "VMSAv8-64 descriptor formats"; D8.3.1.1 table descriptors,
// D8.3.1.2 block and page descriptors).
constexpr unsigned kDescValid = 0;  // bit 0: valid
constexpr unsigned kDescType = 1;   // bit 1: 1 table/page, 0 block
// Address fields are bits [47:x] without FEAT_LPA/LPA2 (D8.3.1.1 and D8.3.1.2). With DS = 1
// (FEAT_LPA2, 4KB and 16KB) they run to bit 49 and bits [9:8] hold address bits [51:50] (so the
// descriptor has no SH field: D8.3.1, "52-bit output addresses"); with FEAT_LPA and 64KB, bits
// [15:12] hold address bits [51:48].
constexpr unsigned kAddrTop = 47;
constexpr unsigned kAddrTopDs = 49;
constexpr unsigned kDsOaHi = 9, kDsOaLo = 8;     // OA[51:50] with DS = 1
constexpr unsigned kLpaOaHi = 15, kLpaOaLo = 12;  // OA[51:48] with FEAT_LPA, 64KB
// Stage-1 table descriptor, hierarchical attributes (D8.3.1.1; D8.4.1.2 for their meaning).
constexpr unsigned kTableXn = 60;                        // XNTable (UXNTable with two ranges)
constexpr unsigned kTableApHi = 62, kTableApLo = 61;     // APTable[1:0]
// Bit 59 PXNTable and bit 61 APTable[0] are RES0 in a regime with one Exception level
// (IPCLHM); bit 63 NSTable only matters for Secure accesses. None is read here.
// Block and page descriptors, both stages (D8.3.1.2).
constexpr unsigned kLeafShHi = 9, kLeafShLo = 8;  // SH[1:0] (D8.6.2)
constexpr unsigned kLeafAf = 10;                  // AF (D8.5)
constexpr unsigned kLeafContig = 52;              // Contiguous hint
constexpr unsigned kLeafSwHi = 58, kLeafSwLo = 55;  // software use
// Stage 1 (EL2 regime): AttrIndx[2:0], AP[2:1], XN. nG (bit 11) and PXN (bit 53) are RES0
// with one Exception level and no ASIDs, and are not read.
constexpr unsigned kS1AttrIndxHi = 4, kS1AttrIndxLo = 2;
constexpr unsigned kS1Ap2 = 7;  // AP[2]: read-only (AP[1], bit 6, is RES1 at EL2: RMGGZM)
constexpr unsigned kS1Xn = 54;
// Stage 2: MemAttr[3:0], S2AP[1:0], XN[1:0] (D8.4.2, D8.6.5).
constexpr unsigned kS2MemAttrHi = 5, kS2MemAttrLo = 2;
constexpr unsigned kS2ApRead = 6;   // S2AP[0]
constexpr unsigned kS2ApWrite = 7;  // S2AP[1]
constexpr unsigned kS2Xn1 = 54;     // XN[1]
constexpr unsigned kS2Xn0 = 53;     // XN[0]: FEAT_XNX only, else RES0

// The lookup levels: 0 to 3, and -1 with FEAT_LPA2's 4KB granule and a 52-bit input (a
// level -1 table holds table descriptors only); level 3 holds pages.
constexpr int kLastLevel = 3;
// What s2_start_level() returns for a reserved SL0/SL2 (not a level: -1 is one).
constexpr int kReservedLevel = -100;
// The largest output address size without FEAT_LPA/LPA2, and with them.
constexpr unsigned kMaxOa48 = 48;
constexpr unsigned kMaxOa = 52;

// TxSZ limits: minimum 16 (48-bit input) without FEAT_LPA2 (DS = 1) or, at stage 2 with 64KB,
// FEAT_LPA (then 12: 52-bit input; stage 1 with 64KB would need FEAT_LVA, not modelled);
// maximum 39 (25-bit input) without FEAT_TTST. AArch64.S1MinTxSZ/S2MinTxSZ, AArch64.MaxTxSZ.
constexpr unsigned kMinTxsz = 16;
constexpr unsigned kMinTxsz52 = 12;
constexpr unsigned kMaxTxsz = 39;

// Granule geometry (D8.2 "Translation tables and the translation process": the 4KB, 16KB and
// 64KB translation granules). A granule of 2^gbits bytes holds 2^(gbits-3) descriptors of 8
// bytes, so each lookup level resolves gbits - 3 bits; the last level resolves the bits just
// above the page offset.
struct Geometry {
  unsigned gbits = 12;  // log2 of the granule: 12, 14 or 16
  bool ds = false;      // FEAT_LPA2 and TCR/VTCR.DS = 1 with 4KB or 16KB: 52-bit addresses
  bool lpa64 = false;   // FEAT_LPA (PAMax 52) with 64KB: OA[51:48] in bits [15:12]

  [[nodiscard]] unsigned stride() const { return gbits - 3; }
  // The lowest IA bit a descriptor at `level` resolves: log2 of a block or page there.
  [[nodiscard]] unsigned shift(int level) const {
    return gbits + static_cast<unsigned>(kLastLevel - level) * stride();
  }
  // Block descriptors (D8.3.1, "Properties of the block descriptor"; AArch64.BlockDescSupported):
  // with 4KB, levels 1 (1GB) and 2 (2MB), and level 0 (512GB) with DS = 1; with 16KB, level 2
  // (32MB), and level 1 (64GB) with DS = 1; with 64KB, level 2 (512MB), and level 1 (4TB)
  // with a 52-bit PAMax (FEAT_LPA). Level 3 holds pages, never blocks; level -1 tables only.
  [[nodiscard]] bool block_allowed(int level) const {
    if (level == 2) return true;
    switch (gbits) {
      case 12: return level == 1 || (ds && level == 0);
      case 14: return ds && level == 1;
      default: return lpa64 && level == 1;
    }
  }
  // The address a table, block or page descriptor holds, from bit `lo` up (D8.3.1.1, D8.3.1.2):
  // bits [47:lo], or [49:lo] with OA[51:50] from bits [9:8] under DS, or with OA[51:48] from
  // bits [15:12] under FEAT_LPA with 64KB. Lower bits of a block's address field are RES0 and
  // not read.
  [[nodiscard]] u64 address(u64 desc, unsigned lo) const {
    if (ds) return (desc & mask(kAddrTopDs, lo)) | (field(desc, kDsOaHi, kDsOaLo) << 50);
    u64 a = desc & mask(kAddrTop, lo);
    if (lpa64) a |= field(desc, kLpaOaHi, kLpaOaLo) << 48;
    return a;
  }
  // What a descriptor is at `level` (D8.3.1): bit[0] = 0 invalid (RDYNYQ); bits[1:0] = 0b11 a
  // table at levels 0-2 and a page at level 3; 0b01 a block where one is allowed, otherwise
  // reserved (RKRMJZ: including 0b01 at level 3).
  [[nodiscard]] DescKind classify(u64 desc, int level) const {
    if (!bit(desc, kDescValid)) return DescKind::invalid;
    if (bit(desc, kDescType)) return level == kLastLevel ? DescKind::page : DescKind::table;
    return block_allowed(level) ? DescKind::block : DescKind::reserved;
  }
};

// TG0 (D24.2 TCR_EL2.TG0 / VTCR_EL2.TG0): 0b00 4KB, 0b01 64KB, 0b10 16KB, 0b11 reserved.
// Note the order: the encoding is not monotonic in the granule size.
bool tg0_granule_bits(u64 tg0, unsigned* gbits) {
  switch (tg0) {
    case 0b00: *gbits = 12; return true;
    case 0b01: *gbits = 16; return true;
    case 0b10: *gbits = 14; return true;
    default: return false;
  }
}

// PS (TCR_EL2.PS / VTCR_EL2.PS, the ID_AA64MMFR0_EL1.PARange encoding): 0b000 32 bits,
// 0b001 36, 0b010 40, 0b011 42, 0b100 44, 0b101 48, 0b110 52 (FEAT_LPA). 0b111 is reserved
// without FEAT_D128, which is not modelled: returns 0.
unsigned ps_bits(u64 ps) {
  switch (ps) {
    case 0b000: return 32;
    case 0b001: return 36;
    case 0b010: return 40;
    case 0b011: return 42;
    case 0b100: return 44;
    case 0b101: return 48;
    case 0b110: return 52;
    default: return 0;
  }
}

// The initial lookup level of a stage-1 walk (D8.2.6 "The initial lookup level";
// AArch64.S1StartLevel): the level whose table resolves the top IA bit, that is
// 4 - ceil((iasize - granulebits) / stride) levels counted up from level 3.
int s1_start_level(const Geometry& geo, unsigned ia_bits) {
  const unsigned resolved = ia_bits - geo.gbits;  // ia_bits >= 25 > gbits
  const unsigned levels = (resolved + geo.stride() - 1) / geo.stride();
  return kLastLevel + 1 - static_cast<int>(levels);
}

// Cacheability of one MAIR nibble (oooo or iiii, not 0b0000; MAIR_EL2.Attr<n> in D24.2):
// 0b00RW (RW != 00) Write-Through Transient; 0b0100 Non-cacheable; 0b01RW (RW != 00)
// Write-Back Transient; 0b10RW Write-Through Non-transient; 0b11RW Write-Back Non-transient.
arch::Cacheability mair_nibble(u64 n) {
  using arch::Cacheability;
  if (n == 0b0100) return Cacheability::non_cacheable;
  switch (n >> 2) {
    case 0b00: return Cacheability::write_through;
    case 0b01: return Cacheability::write_back;
    case 0b10: return Cacheability::write_through;
    default: return Cacheability::write_back;
  }
}

// MAIR_EL2.Attr<n> (D24.2 MAIR_EL2; D8.6.1): 0b0000dd00 Device (dd: 00 nGnRnE, 01 nGnRE,
// 10 nGRE, 11 GRE); 0b0000dd01 Device with XS = 0 under FEAT_XS, else UNPREDICTABLE;
// 0b0000dd1x UNPREDICTABLE; 0booooiiii (both nonzero) Normal; 0bxxxx0000 (xxxx != 0)
// UNPREDICTABLE unless FEAT_XS (0x40, 0xa0) or FEAT_MTE2 (0xf0). FEAT_XS and FEAT_MTE2 are not
// modelled, so those are reported as reserved.
arch::MemAttrs decode_mair(u64 mair, unsigned attr_index) {
  const u64 attr = field(mair, 8 * attr_index + 7, 8 * attr_index);
  const u64 outer = attr >> 4, inner = attr & 0xf;
  arch::MemAttrs a;
  if (outer == 0) {
    a.device = true;
    a.device_kind = static_cast<arch::DeviceKind>(inner >> 2);
    a.reserved = (inner & 0b11) != 0;
    return a;
  }
  if (inner == 0) {
    a.reserved = true;
    return a;
  }
  a.outer = mair_nibble(outer);
  a.inner = mair_nibble(inner);
  return a;
}

// Stage-2 MemAttr[3:0] (D8.6.5).
// HCR_EL2.FWB = 0 ("... when FEAT_S2FWB is disabled"): MemAttr[3:2] 00 Device, with
// MemAttr[1:0] the Device type (00 nGnRnE, 01 nGnRE, 10 nGRE, 11 GRE); otherwise Normal with
// [3:2] the outer and [1:0] the inner cacheability, each 01 Non-cacheable, 10 Write-Through,
// 11 Write-Back; inner 00 with outer != 00 is reserved (UNPREDICTABLE).
// HCR_EL2.FWB = 1 ("... when FEAT_S2FWB is enabled"): MemAttr[3] is RES0 (reported as
// reserved, the rest still decoded); MemAttr[2] = 0: Device, [1:0] the type as above;
// MemAttr[2] = 1: [1:0] 01 Normal Non-cacheable, 10 Normal Write-Back (forced), 11 the
// stage-1 attributes unchanged, 00 reserved (FEAT_MTE_PERM NoTagAccess is not modelled).
arch::MemAttrs decode_s2_memattr(u64 memattr, bool fwb) {
  using arch::Cacheability;
  auto cache = [](u64 two) {
    return two == 0b11   ? Cacheability::write_back
           : two == 0b10 ? Cacheability::write_through
                         : Cacheability::non_cacheable;
  };
  arch::MemAttrs a;
  if (fwb) {
    a.reserved = bit(memattr, 3);
    if (!bit(memattr, 2)) {
      a.device = true;
      a.device_kind = static_cast<arch::DeviceKind>(memattr & 0b11);
      return a;
    }
    switch (memattr & 0b11) {
      case 0b01: a.outer = a.inner = Cacheability::non_cacheable; break;
      case 0b10: a.outer = a.inner = Cacheability::write_back; break;
      case 0b11: a.from_stage1 = true; break;
      default: a.reserved = true; break;
    }
    return a;
  }
  const u64 outer = memattr >> 2, inner = memattr & 0b11;
  if (outer == 0) {
    a.device = true;
    a.device_kind = static_cast<arch::DeviceKind>(inner);
    return a;
  }
  a.reserved = inner == 0;
  a.outer = cache(outer);
  a.inner = cache(inner);
  return a;
}

// Records why the translation faulted. A note already there (an earlier reason, such as an
// IMPLEMENTATION DEFINED choice the fault follows from) stays first: see add_note().
void add_note(Translation& t, std::string_view why) {
  if (t.note.empty()) t.note = why;
  t.notes.push_back(why);
}

void fault(Translation& t, FaultKind k, int level, std::string_view why) {
  t.fault = k;
  t.level = level;
  add_note(t, why);
}

void choice(Translation& t, std::string_view what) {
  t.unpredictable = true;
  add_note(t, what);
}

// What both stages need to start the walk, from TCR_EL2 or VTCR_EL2.
struct WalkParams {
  Geometry geo;
  unsigned ia_bits = 0;
  int start_level = 0;
  unsigned oa_bits = 0;
  u64 root = 0;
  bool ha = false;
  u64 sh0 = 0;  // TCR/VTCR.SH0: the leaves' shareability when DS = 1
};

// The effective DS and FEAT_LPA flags of the geometry (Geometry::ds, lpa64) and SH0, once the
// granule is known. DS is RES0 without FEAT_LPA2 (ImplChoices::lpa2) and has no effect with
// 64KB; FEAT_LPA is taken to be implemented when PAMax is 52.
void decode_52bit(u64 tcr, const ImplChoices& impl, WalkParams* p) {
  p->geo.ds = impl.lpa2 && bit(tcr, kTcrDs) && p->geo.gbits != 16;
  p->geo.lpa64 = p->geo.gbits == 16 && impl.pa_bits >= 52;
  p->sh0 = field(tcr, kTcrSh0Hi, kTcrSh0Lo);
}

// TG0 (D24.2 TCR_EL2.TG0 / VTCR_EL2.TG0): 0b00 4KB, 0b01 64KB, 0b10 16KB. 0b11 is reserved
// and the architecture lets the implementation pick any implemented granule in its place; the
// oracle cannot know which, so it refuses to translate.
bool decode_granule(u64 tcr, Translation& t, Geometry* geo) {
  if (tg0_granule_bits(field(tcr, kTcrTg0Hi, kTcrTg0Lo), &geo->gbits)) return true;
  fault(t, FaultKind::translation, 0,
        "TG0 is reserved (0b11): the granule used is IMPLEMENTATION DEFINED");
  t.unpredictable = true;
  return false;
}

// T0SZ out of [min, 39] (min 16, or 12 with 52-bit inputs: kMinTxsz52):
// AArch64.S1TxSZFaults/S2TxSZFaults make it IMPLEMENTATION DEFINED ("Fault on TxSZ value below
// minimum" / "... above maximum") whether the translation takes a level 0 Translation fault or
// uses the nearest limit (AArch64.S1Translate, S2Translate).
bool decode_txsz(u64 tcr, const ImplChoices& impl, Translation& t, unsigned* ia_bits,
                 unsigned min_txsz = kMinTxsz) {
  unsigned txsz = static_cast<unsigned>(field(tcr, kTcrT0szHi, kTcrT0szLo));
  if (txsz < min_txsz || txsz > kMaxTxsz) {
    const bool wide = min_txsz == kMinTxsz52;
    if (impl.txsz_out_of_range_faults) {
      fault(t, FaultKind::translation, 0,
            wide ? "T0SZ outside 12..39 (IMPLEMENTATION DEFINED: this CPU faults)"
                 : "T0SZ outside 16..39 (IMPLEMENTATION DEFINED: this CPU faults)");
      t.unpredictable = true;
      return false;
    }
    txsz = std::clamp(txsz, min_txsz, kMaxTxsz);
    choice(t, wide ? "T0SZ outside 12..39 (IMPLEMENTATION DEFINED: treated as the nearest limit)"
                   : "T0SZ outside 16..39 (IMPLEMENTATION DEFINED: treated as the nearest limit)");
  }
  *ia_bits = 64 - txsz;
  return true;
}

// The output address size, AArch64.PhysicalAddressSize(): the PS encoding, but never more
// than the implemented PA size (AArch64.PAMax), nor 48 bits unless the tables can hold a
// 52-bit address: the 64KB granule with FEAT_LPA, or DS = 1 (PS = 0b110 "52 bits" with 4KB or
// 16KB and DS = 0 is 48). PS = 0b111 is reserved: the size is IMPLEMENTATION DEFINED; the model
// uses the implemented PA size.
unsigned decode_oa_bits(u64 tcr, const Geometry& geo, const ImplChoices& impl, Translation& t) {
  const unsigned pamax = std::clamp(impl.pa_bits, 32u, kMaxOa);
  unsigned ps = ps_bits(field(tcr, kTcrPsHi, kTcrPsLo));
  if (ps == 0) {
    choice(t, "PS is reserved (0b111): OA size IMPLEMENTATION DEFINED, taken as PAMax");
    ps = pamax;
  }
  const unsigned table_max = geo.ds || geo.lpa64 ? kMaxOa : kMaxOa48;
  return std::min({ps, pamax, table_max});
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
//
// With a 52-bit OA size, BADDR[51:48] comes from TTBR bits [5:2] and the base is aligned to at
// least 64 bytes (a level -1 root of two entries is still 64-byte aligned).
bool decode_root(u64 ttbr, const WalkParams& p, Translation& t, u64* root) {
  const bool baddr52 = p.oa_bits == 52;
  u64 baddr = ttbr & mask(kTtbrBaddrHi, baddr52 ? 6 : kTtbrBaddrLo);
  if (baddr52) baddr |= field(ttbr, kTtbrBaddr52Hi, kTtbrBaddr52Lo) << 48;
  if ((baddr >> p.oa_bits) != 0) {
    fault(t, FaultKind::address_size, 0, "TTBR base address above the OA size (PS)");
    return false;
  }
  unsigned tsize = p.ia_bits - p.geo.shift(p.start_level) + 3;
  if (baddr52) tsize = std::max(tsize, 6u);
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
  u64 oa = 0;                // output address of the block or page (Geometry::address)
  bool ap_table_ro = false;  // stage 1: some APTable[1] on the way was 1
  bool xn_table = false;     // stage 1: some XNTable on the way was 1
};

// The walk proper, one lookup level at a time (D8.2 "Translation tables and the translation
// process"; D8.15.4 steps 4 to 7). Returns false with `t` holding the fault.
bool walk(const PhysMem& mem, const WalkParams& p, u64 ia, bool stage1_hierarchical, Translation& t,
          Leaf* leaf) {
  const Geometry& geo = p.geo;
  u64 table = p.root;
  bool ap_table_ro = false;
  bool xn_table = false;
  for (int level = p.start_level; level <= kLastLevel; ++level) {
    // The descriptor index: the IA bits this level resolves. At the initial level they run up
    // to the top of the input address, so a concatenated stage-2 root (D8.2, "Concatenated
    // translation tables for the initial stage 2 lookup") is indexed as one large table.
    const unsigned shift = geo.shift(level);
    const unsigned top = level == p.start_level ? p.ia_bits : shift + geo.stride();
    const u64 index = field(ia, top - 1, shift);
    const u64 desc_pa = table + index * 8;

    u64 desc = 0;
    if (!mem.read64(desc_pa, &desc)) {
      // A walk that reads memory nothing backs: a synchronous External abort on the table
      // walk, reported at this lookup level (D8.15.1.3).
      fault(t, FaultKind::external_abort, level, "table walk read unbacked memory");
      return false;
    }
    const DescKind kind = geo.classify(desc, level);
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
            level == kLastLevel ? "bits[1:0] = 0b01 at level 3 (reserved)"
                                      : "block descriptor at a level that cannot hold one");
      return false;
    }
    // RWDZFC: with 64KB granules and no 52-bit PA, descriptor bits[15:12] (OA[51:48] under
    // FEAT_LPA) nonzero may or may not give an Address size fault (IMPLEMENTATION DEFINED;
    // not faulting is deprecated). The model faults. With FEAT_LPA they are address bits.
    if (geo.gbits == 16 && !geo.lpa64 && field(desc, kLpaOaHi, kLpaOaLo) != 0) {
      fault(t, FaultKind::address_size, level,
            "64KB descriptor bits[15:12] nonzero (IMPLEMENTATION DEFINED, RWDZFC)");
      t.unpredictable = true;
      return false;
    }

    if (kind == DescKind::table) {
      // D8.3.1.1: the next-level table address is bits [47:granule shift] (Geometry::address
      // for 52-bit addresses).
      const u64 next = geo.address(desc, geo.gbits);
      if ((next >> p.oa_bits) != 0) {
        // RCVSBH / RBFHQH: a table address above the OA size, at this level.
        fault(t, FaultKind::address_size, level, "next-level table address above the OA size");
        return false;
      }
      if (stage1_hierarchical) {
        // D8.4.1.2 (RYTXKB, Table D8-64; IPCLHM: APTable[0] is RES0 with one Exception level):
        // APTable[1] = 1 removes write permission at all later levels. RLQFP: XNTable = 1
        // makes XN 1 at all later levels. Both accumulate down the walk.
        ap_table_ro = ap_table_ro || (field(desc, kTableApHi, kTableApLo) & 0b10) != 0;
        xn_table = xn_table || bit(desc, kTableXn);
      }
      table = next;
      continue;
    }

    // A block or page (D8.3.1.2): output address bits [47:level_shift] (Geometry::address for
    // 52-bit addresses). Lower bits of a block descriptor's address field are RES0 and ignored.
    const u64 oa = geo.address(desc, shift);
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
  t.block_size = u64{1} << p.geo.shift(leaf.level);
  t.output_address = leaf.oa | (ia & (t.block_size - 1));
  t.sw = static_cast<u8>(field(leaf.desc, kLeafSwHi, kLeafSwLo));
  // D8.6.2: SH[1:0] at bits [9:8] of both stage-1 and stage-2 leaves; with DS = 1 those bits
  // are OA[51:50] and the shareability is TCR/VTCR.SH0's (D8.6.2, "Shareability when ... DS").
  t.sh = static_cast<arch::Shareability>(p.geo.ds ? p.sh0 : field(leaf.desc, kLeafShHi, kLeafShLo));
  t.contiguous = bit(leaf.desc, kLeafContig);  // bit 52 at both stages
}

// The Contiguous bit (D8.6.1 "The Contiguous bit"), the oracle's own copy of the run lengths:
// 4KB 16 entries at levels 1, 2 and 3; 16KB 32 at level 2 and 128 at level 3; 64KB 32 at
// levels 2 and 3. 0 where no run is defined here (the FEAT_LPA/LPA2 block levels).
unsigned contiguous_run(const Geometry& geo, int level) {
  switch (geo.gbits) {
    case 12: return level >= 1 && level <= kLastLevel ? 16 : 0;
    case 14: return level == 2 ? 32 : level == kLastLevel ? 128 : 0;
    default: return level == 2 || level == kLastLevel ? 32 : 0;
  }
}

// A leaf with the Contiguous bit: the naturally aligned run of entries around it (in the same
// table) must all be valid leaves of this level with the bit set, map consecutive output
// addresses from a start aligned to the run's size, and agree in every other bit that the
// translation uses (attributes, shareability, permissions, access flag). The software bits
// (58:55) are ignored by the hardware (D8.3.1) and may differ. Where the rules break, D8.6.1
// makes the outcome CONSTRAINED UNPREDICTABLE (the TLB may use any entry of the run, or raise
// a TLB conflict abort): the result is marked so, never silently given as if the run were
// well formed. Entries memory does not back count as broken too.
void check_contiguous(const PhysMem& mem, const WalkParams& p, const Leaf& leaf, Translation& t) {
  if (!bit(leaf.desc, kLeafContig) || t.walk.empty()) return;
  const unsigned n = contiguous_run(p.geo, leaf.level);
  if (n == 0) return;
  const unsigned shift = p.geo.shift(leaf.level);
  const u64 size = u64{1} << shift;
  const u64 first_pa = t.walk.back().desc_pa & ~(u64{n} * 8 - 1);
  // The bits that hold the output address (D8.3.1.2; with DS, bits [9:8] too; with FEAT_LPA
  // and 64KB, bits [15:12]) and the software bits are not compared across the run.
  u64 oa_bits = mask(p.geo.ds ? kAddrTopDs : kAddrTop, shift);
  if (p.geo.ds) oa_bits |= mask(kDsOaHi, kDsOaLo);
  if (p.geo.lpa64) oa_bits |= mask(kLpaOaHi, kLpaOaLo);
  const u64 ignore = oa_bits | mask(kLeafSwHi, kLeafSwLo);
  std::string_view why;
  u64 first_oa = 0;
  for (unsigned j = 0; j < n && why.empty(); ++j) {
    u64 d = 0;
    if (!mem.read64(first_pa + u64{j} * 8, &d)) {
      why = "contiguous run misprogrammed: an entry is in memory nothing backs";
      break;
    }
    const DescKind k = p.geo.classify(d, leaf.level);
    if (k == DescKind::invalid) {
      why = "contiguous run misprogrammed: an entry of the run is invalid";
    } else if (k != DescKind::block && k != DescKind::page) {
      why = "contiguous run misprogrammed: an entry of the run is not a leaf of this level";
    } else if (!bit(d, kLeafContig)) {
      why = "contiguous run misprogrammed: an entry of the run lacks the Contiguous bit";
    } else if (((d ^ leaf.desc) & ~ignore) != 0) {
      why = "contiguous run misprogrammed: entries differ in attributes or permissions";
    } else {
      const u64 oa = p.geo.address(d, shift);
      if (j == 0) {
        first_oa = oa;
        if ((oa & (u64{n} * size - 1)) != 0)
          why = "contiguous run misprogrammed: the run's output address is not aligned to its size";
      } else if (oa != first_oa + u64{j} * size) {
        why = "contiguous run misprogrammed: output addresses are not consecutive";
      }
    }
  }
  if (why.empty()) return;
  t.contiguous_misprogrammed = true;
  choice(t, why);
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
  // Every reason, in the order they arose; the first is t.note.
  const char* sep = ": ";
  for (const std::string_view n : t.notes) {
    s += sep;
    s += n;
    sep = "; ";
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
  if (!decode_granule(regs.tcr, t, &p.geo)) return t;
  decode_52bit(regs.tcr, impl, &p);
  if (!decode_txsz(regs.tcr, impl, t, &p.ia_bits, p.geo.ds ? kMinTxsz52 : kMinTxsz)) return t;

  // The VA range (RVZZSZ; AArch64.VAIsOutOfRange): with one VA range, any 1 bit between the
  // top of the address and the configured size is a level 0 Translation fault. TCR_EL2.TBI
  // puts the top at bit 55 (the top byte is ignored), except for instruction fetches when
  // TCR_EL2.TBID is 1 (AArch64.AddrTop).
  const bool tbi = bit(regs.tcr, kTcrTbi) && !(access == Access::exec && bit(regs.tcr, kTcrTbid));
  const unsigned addr_top = tbi ? 55 : 63;
  if ((va & mask(addr_top, p.ia_bits)) != 0) {
    fault(t, FaultKind::translation, 0, "VA above the configured input size (T0SZ)");
    return t;
  }

  // D8.2.6 "The initial lookup level": at stage 1 it follows from the input size alone, the
  // level whose table resolves the top bits (AArch64.S1StartLevel:
  // 4 - ceil((iasize - granulebits) / stride)).
  p.start_level = s1_start_level(p.geo, p.ia_bits);
  p.oa_bits = decode_oa_bits(regs.tcr, p.geo, impl, t);
  p.ha = bit(regs.tcr, kTcrHa);
  if (!decode_root(regs.ttbr0, p, t, &p.root)) return t;

  // TCR_EL2.HPD (FEAT_HPDS): hierarchical permissions disabled, APTable and XNTable are
  // IGNORED and treated as 0 (D8.4.1.2, IPKGJC and INYWHQ).
  const bool hierarchical = !bit(regs.tcr, kTcrHpd);
  Leaf leaf;
  if (!walk(mem, p, va, hierarchical, t, &leaf)) return t;
  fill_leaf(t, p, leaf, va);
  check_contiguous(mem, p, leaf, t);

  // Stage 1 Direct permissions for a regime with one Exception level (D8.4.1.2.1 RCBNKR, Table
  // D8-62; RMGGZM: AP[1] is RES1 and plays no part; AArch64.S1DirectBasePermissions):
  // PrivRead always; PrivWrite unless AP[2] = 1 or an APTable[1] above was 1.
  // Execution (D8.4.1.2.3 RTRZVM, RLQFP): PrivExecute unless XN (bit 54) or an XNTable above.
  // PXN (bit 53) is RES0 in this regime. WXN (RSYMMB, IFQVWM, Table D8-66): with
  // SCTLR_EL2.WXN = 1 a region that is (effectively) writable is not executable.
  t.readable = true;
  t.writable = !bit(leaf.desc, kS1Ap2) && !leaf.ap_table_ro;
  t.executable = !bit(leaf.desc, kS1Xn) && !leaf.xn_table;
  if (regs.wxn && t.writable) t.executable = false;

  // MAIR_EL2 attribute byte chosen by AttrIndx (D8.6.1; MAIR_EL2 in D24.2).
  t.attrs =
      decode_mair(regs.mair, static_cast<unsigned>(field(leaf.desc, kS1AttrIndxHi, kS1AttrIndxLo)));
  if (t.attrs.reserved) choice(t, "MAIR attribute byte is a reserved/UNPREDICTABLE encoding");

  if (!check_access_flag(t, p, bit(leaf.desc, kLeafAf))) return t;
  if (!permitted(t, access)) {
    fault(t, FaultKind::permission, leaf.level, denied_note(access));
    return t;
  }
  if (!check_device_fetch(t, impl, access)) return t;
  // AArch64.SettingAccessFlagPermitted: with no fault the hardware sets AF.
  t.af_set_by_hw = p.ha && !bit(leaf.desc, kLeafAf);
  return t;
}

// ---------------------------------------------------------------------------------------------
// Stage 2 (VTTBR_EL2, VTCR_EL2).
// ---------------------------------------------------------------------------------------------
namespace {

// The initial lookup level from VTCR_EL2.SL0 and SL2 (VTCR_EL2 in D24.2;
// AArch64.S2StartLevel) and whether the architecture accepts it (AArch64.S2InvalidSL), without
// FEAT_TTST:
//   4KB:  SL0 0b00 level 2, 0b01 level 1, 0b10 level 0 (reserved if PAMax < 44), 0b11 level 3
//         only with FEAT_TTST (reserved here); with DS = 1, SL2 = 1 and SL0 = 0b00 level -1
//         (SL2 = 1 with any other SL0 reserved; SL2 is RES0 with DS = 0).
//   16KB: 0b00 level 3, 0b01 level 2, 0b10 level 1 (reserved if PAMax < 42), 0b11 level 0 only
//         with DS = 1 (FEAT_LPA2), reserved otherwise.
//   64KB: 0b00 level 3, 0b01 level 2, 0b10 level 1 (reserved if PAMax < 44), 0b11 reserved.
// Returns kReservedLevel for a reserved value.
int s2_start_level(const Geometry& geo, u64 sl0, bool sl2, unsigned pamax) {
  switch (geo.gbits) {
    case 12:
      if (geo.ds && sl2) return sl0 == 0b00 ? -1 : kReservedLevel;
      if (sl0 == 0b11 || (sl0 == 0b10 && pamax < 44)) return kReservedLevel;
      return 2 - static_cast<int>(sl0);
    case 14:
      if (sl0 == 0b11) return geo.ds ? 0 : kReservedLevel;
      if (sl0 == 0b10 && pamax < 42) return kReservedLevel;
      return 3 - static_cast<int>(sl0);
    default:  // 64KB
      if (sl0 == 0b11 || (sl0 == 0b10 && pamax < 44)) return kReservedLevel;
      return 3 - static_cast<int>(sl0);
  }
}

// AArch64.S2InconsistentSL: the input size must need the start level (more bits than the
// levels below resolve: at least levels * stride + granulebits + 1), and the start level must
// resolve the rest with at most 16 concatenated tables (at most stride + 4 bits, D8.2
// "Concatenated translation tables for the initial stage 2 lookup").
bool s2_sl_consistent(const Geometry& geo, int start_level, unsigned ia_bits) {
  const unsigned stride = geo.stride();
  const unsigned levels = static_cast<unsigned>(kLastLevel - start_level);
  const unsigned min_ia = levels * stride + geo.gbits + 1;
  const unsigned max_ia = min_ia + (stride - 1) + 4;
  return ia_bits >= min_ia && ia_bits <= max_ia;
}

}  // namespace

Translation translate_stage2(const PhysMem& mem, const Stage2Regs& regs, u64 ipa, Access access,
                             bool el0, const ImplChoices& impl) {
  Translation t;
  t.input_address = ipa;
  WalkParams p;
  if (!decode_granule(regs.vtcr, t, &p.geo)) return t;
  decode_52bit(regs.vtcr, impl, &p);
  if (!decode_txsz(regs.vtcr, impl, t, &p.ia_bits, p.geo.ds || p.geo.lpa64 ? kMinTxsz52 : kMinTxsz)) return t;

  // RXCHFJ item 2: an SL0 that is reserved, or inconsistent with T0SZ, is a stage 2 level 0
  // Translation fault (AArch64.S2Translate).
  const unsigned pamax = std::clamp(impl.pa_bits, 32u, kMaxOa);
  p.start_level =
      s2_start_level(p.geo, field(regs.vtcr, kVtcrSl0Hi, kVtcrSl0Lo), bit(regs.vtcr, kVtcrSl2), pamax);
  if (p.start_level == kReservedLevel) {
    fault(t, FaultKind::translation, 0, "VTCR_EL2.SL0 is a reserved value");
    return t;
  }
  if (!s2_sl_consistent(p.geo, p.start_level, p.ia_bits)) {
    fault(t, FaultKind::translation, 0, "VTCR_EL2.SL0 inconsistent with T0SZ");
    return t;
  }
  // AArch64.IPAIsOutOfRange: an IPA with a 1 bit at or above the input size is a level 0
  // Translation fault (RVZZSZ), not a fault at the start level.
  if ((ipa & mask(63, p.ia_bits)) != 0) {
    fault(t, FaultKind::translation, 0, "IPA above the configured input size (T0SZ)");
    return t;
  }

  p.oa_bits = decode_oa_bits(regs.vtcr, p.geo, impl, t);
  p.ha = bit(regs.vtcr, kTcrHa);
  if (!decode_root(regs.vttbr, p, t, &p.root)) return t;

  // Stage 2 table descriptors carry no hierarchical attributes (ISRRJF: those bits are RES0).
  Leaf leaf;
  if (!walk(mem, p, ipa, false, t, &leaf)) return t;
  fill_leaf(t, p, leaf, ipa);
  check_contiguous(mem, p, leaf, t);

  // Stage 2 Direct permissions (D8.4.2.1; AArch64.S2DirectBasePermissions).
  // Data (Table D8-76): S2AP[0] (bit 6) read, S2AP[1] (bit 7) write, the same for EL1 and EL0.
  t.readable = bit(leaf.desc, kS2ApRead);
  t.writable = bit(leaf.desc, kS2ApWrite);
  // Execution (Tables D8-77 and D8-78): decided by XN alone; S2AP plays no part, so a page
  // with no read permission can still be executable. Without FEAT_XNX bit 53 is RES0 and XN
  // (bit 54) forbids execution at EL1 and EL0. With FEAT_XNX, XN[1:0] = bits [54:53]:
  //   00 EL1 and EL0 may execute; 01 EL0 only; 10 neither; 11 EL1 only.
  const bool xn1 = bit(leaf.desc, kS2Xn1);
  const bool xn0 = regs.xnx && bit(leaf.desc, kS2Xn0);
  const bool priv_x = xn1 ? xn0 : !xn0;  // 00 -> yes, 01 -> no, 10 -> no, 11 -> yes
  const bool unpriv_x = !xn1;            // 00 -> yes, 01 -> yes, 10 -> no, 11 -> no
  t.executable = el0 ? unpriv_x : priv_x;

  // MemAttr[3:0] (bits [5:2]); its meaning depends on HCR_EL2.FWB (D8.6.5).
  t.attrs = decode_s2_memattr(field(leaf.desc, kS2MemAttrHi, kS2MemAttrLo), regs.fwb);
  if (t.attrs.reserved) choice(t, "stage-2 MemAttr is a reserved encoding");

  if (!check_access_flag(t, p, bit(leaf.desc, kLeafAf))) return t;
  if (!permitted(t, access)) {
    fault(t, FaultKind::permission, leaf.level, denied_note(access));
    return t;
  }
  if (!check_device_fetch(t, impl, access)) return t;
  t.af_set_by_hw = p.ha && !bit(leaf.desc, kLeafAf);
  return t;
}

}  // namespace ptguard::sim
