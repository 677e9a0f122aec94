// VMSAv8-64 translation table descriptors as typed values.
//
// Section references are to the Arm Architecture Reference Manual for A-profile, DDI 0487K.a:
//   D8.3.1   VMSAv8-64 descriptor formats (invalid, table, block, page; bits [1:0])
//   D8.3.1.1 Table descriptor: next-level table address and, at stage 1, the hierarchical
//            attributes NSTable, APTable, XNTable, PXNTable
//   D8.3.1.2 Block and page descriptor formats: output address and the attribute fields
//   D8.4     Memory access control (AP, S2AP, XN), D8.5 Access flag, D8.6 Memory attributes
//
// Each descriptor kind is a small value type with named accessors; the engine, the reference
// MMU and the tool never write a shift or mask. Bits the software owns (58:55 of a block or
// page) are called software bits, "sw", never "ignored" bits.
//
// ## The invalid descriptor and its annotation (ptguard's own layout)
// An invalid descriptor (bit 0 = 0) is ignored by the MMU, so software may keep state in it.
// ptguard records who owns a page the table does not map. An all-zero invalid entry means
// "owned by the table's owner, not mapped"; anything else is an annotation:
//
// | bits  | field     | meaning                                                              |
// |-------|-----------|----------------------------------------------------------------------|
// | 0     | valid = 0 | the MMU faults on this entry (translation fault)                     |
// | 9:1   | RES0      | kept zero (Linux keeps an 8-bit owner at 9:2; we need wider ids)     |
// | 10    | locked    | break-before-make in progress: another walker must back off (EAGAIN) |
// | 11    | poisoned  | page taken back from a live guest; its contents are gone             |
// | 15:12 | RES0      |                                                                      |
// | 47:16 | owner id  | 32-bit id: the page's owner or, for a lent page, its borrower        |
// | 54:48 | RES0      |                                                                      |
// | 58:55 | sw        | SW0..SW3, the same software bits as in a valid leaf; they keep their |
// |       |           | meaning while the entry is invalid (a lent page's state, say)        |
// | 63:59 | RES0      | free for future annotation kinds                                     |
//
// No field overlaps another (checked below), so writing an owner never clobbers the software
// bits; Linux had exactly that bug (commit 8a0282c68121 moved the owner from 63:56 to 9:2).
//
// 52-bit addresses (OaFormat below) take descriptor bits [49:48] and [9:8] (FEAT_LPA2) or
// [15:12] (FEAT_LPA with 64K) of a valid descriptor. The MMU reads none of an invalid
// descriptor's bits, so the annotation layout needs no change; the software bits 58:55 are
// outside every address format in valid descriptors too (both checked below).
#pragma once

#include "ptguard/arch/bits.hpp"
#include "ptguard/arch/granule.hpp"

namespace ptguard::arch {

// ---------------------------------------------------------------------------------------------
// Fields common to every descriptor (D8.3.1).
// ---------------------------------------------------------------------------------------------

/// Bit 0: the descriptor is valid.
using DescValid = Bit<0>;
/// Bit 1: with bit 0 set, 1 = table (levels 0-2) or page (level 3); 0 = block (levels 0-2),
/// reserved at level 3 (treated as invalid, a translation fault).
using DescTypeBit = Bit<1>;
/// Bits 58:55 of a block or page descriptor: the software bits SW0..SW3, ignored by the MMU
/// (D8.3.1.2, "Software use"; Linux calls them KVM_PGTABLE_PROT_SW0..3).
using DescSw = Field<58, 55>;

/// The software bits as a set of four flags; their meaning belongs to whoever reserved them.
enum class SwBit : u8 { sw0 = 1u << 0, sw1 = 1u << 1, sw2 = 1u << 2, sw3 = 1u << 3 };

/// What a descriptor is at a given level and granule.
enum class DescKind : u8 {
  invalid,   ///< bit 0 clear: faults; may carry an annotation
  table,     ///< points to a next-level table
  block,     ///< leaf above the last level
  page,      ///< leaf at the last level
  reserved,  ///< valid but not allowed here (a block at a level that cannot hold one, or
             ///< bits[1:0] = 0b01 at level 3): the MMU reports a translation fault
};

/// Classifies a raw descriptor as the MMU would at `level` (D8.3.1).
[[nodiscard]] constexpr DescKind classify(u64 raw, Granule g, int level) {
  if (!DescValid::get(raw)) return DescKind::invalid;
  if (DescTypeBit::get(raw)) return level == kLastLevel ? DescKind::page : DescKind::table;
  return block_allowed(g, level) ? DescKind::block : DescKind::reserved;
}

/// Mask of the output address held by a leaf at `level` ([47:level_shift]); for a table
/// descriptor use table_address_mask().
[[nodiscard]] constexpr u64 leaf_address_mask(Granule g, int level) {
  return bit_range(kMaxOaBits - 1, level_shift(g, level));
}

/// Mask of the next-level table address in a table descriptor ([47:page_shift]).
[[nodiscard]] constexpr u64 table_address_mask(Granule g) {
  return bit_range(kMaxOaBits - 1, page_shift(g));
}

// ---------------------------------------------------------------------------------------------
// Output-address formats (D8.3.1, "52-bit output addresses"; D8.3.1.1 and D8.3.1.2).
// ---------------------------------------------------------------------------------------------

/// Where a table, block or page descriptor keeps its address: the address bits of `in_place`
/// sit at the same descriptor bits, and OA[top] bits are moved into `hi_field` (descriptor bit
/// b holds address bit b + hi_shift). Three formats exist:
///   kOa48       bits [47:x] in place, nothing moved (no FEAT_LPA/LPA2, or DS = 0)
///   kOa52Ds     4K and 16K with TCR/VTCR.DS = 1 (FEAT_LPA2): bits [49:x] in place, OA[51:50]
///               in bits [9:8]; a leaf then has no SH field (shareability is TCR/VTCR.SH0's)
///   kOa52Lpa64  64K with a 52-bit PA (FEAT_LPA): bits [47:x] in place, OA[51:48] in [15:12]
/// x is the level's shift for a leaf, the page shift for a table. encode() and decode() are
/// branch-free, and kOa48's are the plain mask, so one code path serves every table.
struct OaFormat {
  u64 in_place;       ///< descriptor bits that hold the address bits of the same number
  u64 hi_field;       ///< descriptor bits that hold the top address bits (0: none)
  unsigned hi_shift;  ///< address bit = descriptor bit + hi_shift, within hi_field

  /// The descriptor bits holding `pa`, aligned down to 2^lo_shift.
  [[nodiscard]] constexpr u64 encode(u64 pa, unsigned lo_shift) const {
    return (pa & in_place & ~((u64{1} << lo_shift) - 1)) | ((pa >> hi_shift) & hi_field);
  }
  /// The address held by descriptor `raw`, from bit lo_shift up.
  [[nodiscard]] constexpr u64 decode(u64 raw, unsigned lo_shift) const {
    return (raw & in_place & ~((u64{1} << lo_shift) - 1)) | ((raw & hi_field) << hi_shift);
  }
  /// Every descriptor bit that can hold an address bit at or above 2^lo_shift.
  [[nodiscard]] constexpr u64 descriptor_bits(unsigned lo_shift) const {
    return (in_place & ~((u64{1} << lo_shift) - 1)) | hi_field;
  }
  /// The largest output address + 1 the format can hold, as a bit count (48 or 52).
  [[nodiscard]] constexpr unsigned oa_bits() const { return hi_field == 0 ? 48u : 52u; }
  /// Whether bits [9:8] of a leaf are SH[1:0] (false with DS = 1: they are OA[51:50]).
  [[nodiscard]] constexpr bool leaf_has_sh() const { return (hi_field & bit_range(9, 8)) == 0; }
  /// Whether this is FEAT_LPA2's format, which TCR_EL2.DS / VTCR_EL2.DS = 1 selects (and which
  /// also makes range TLBIs count their base address in 64 KiB units: maintenance.hpp).
  [[nodiscard]] constexpr bool ds() const { return !leaf_has_sh(); }
  friend constexpr bool operator==(const OaFormat&, const OaFormat&) = default;
};

inline constexpr OaFormat kOa48{bit_range(47, 0), 0, 0};
inline constexpr OaFormat kOa52Ds{bit_range(49, 0), bit_range(9, 8), 42};
inline constexpr OaFormat kOa52Lpa64{bit_range(47, 0), bit_range(15, 12), 36};

/// The format of granule `g` with 52-bit output addresses (`pa52`: DS = 1 for 4K/16K, FEAT_LPA
/// with 64K) or without.
[[nodiscard]] constexpr OaFormat oa_format(Granule g, bool pa52) {
  if (!pa52) return kOa48;
  return g == Granule::k64K ? kOa52Lpa64 : kOa52Ds;
}

// Hand-computed encodings (D8.3.1): a 4K page at 0x000b_1234_5678_9000 with DS = 1 keeps
// [49:12] in place and puts OA[51:50] = 0b10 in bits [9:8]; a 64K page at 0x000f_0000_1234_0000
// with FEAT_LPA puts OA[51:48] = 0xf in bits [15:12].
static_assert(kOa52Ds.encode(0x000b'1234'5678'9000ull, 12) == 0x0003'1234'5678'9200ull);
static_assert(kOa52Ds.decode(0x0003'1234'5678'9200ull, 12) == 0x000b'1234'5678'9000ull);
static_assert(kOa52Lpa64.encode(0x000f'0000'1234'0000ull, 16) == 0x0000'0000'1234'f000ull);
static_assert(kOa52Lpa64.decode(0x0000'0000'1234'f000ull, 16) == 0x000f'0000'1234'0000ull);
static_assert(kOa48.encode(0x0000'8000'0000'1000ull, 12) == 0x0000'8000'0000'1000ull);
// Below 2^48 (4K/16K: 2^50) the 52-bit formats are the 48-bit one.
static_assert(kOa52Ds.encode(0x0000'8000'0020'0000ull, 21) == kOa48.encode(0x0000'8000'0020'0000ull, 21));
// The address bits never reach the type bits, the attributes a leaf keeps at [7:2] and [11:10],
// or the software bits.
static_assert((kOa52Ds.descriptor_bits(12) & (bit_range(7, 0) | bit_range(11, 10) | bit_range(63, 50))) == 0);
static_assert((kOa52Lpa64.descriptor_bits(16) & (bit_range(11, 0) | bit_range(63, 48))) == 0);

// ---------------------------------------------------------------------------------------------
// Table descriptor (D8.3.1.1).
// ---------------------------------------------------------------------------------------------

/// Stage-1 hierarchical attributes of a table descriptor (ignored at stage 2, where bits
/// 63:59 are RES0). In the EL2 regime (one privilege level) only APTable[1], XNTable and
/// NSTable apply; APTable[0] and PXNTable are RES0 (D8.4.3 "Hierarchical permissions").
using TablePxn = Bit<59>;      ///< PXNTable
using TableXn = Bit<60>;       ///< XNTable (UXNTable in two-range regimes)
using TableAp = Field<62, 61>; ///< APTable; bit 62 (APTable[1]) set: no writes below
using TableNs = Bit<63>;       ///< NSTable

class TableDesc {
 public:
  constexpr explicit TableDesc(u64 raw) : raw_(raw) {}
  /// A table descriptor pointing at the next-level table at `table_pa` (granule-aligned).
  [[nodiscard]] static constexpr TableDesc make(Granule g, u64 table_pa) {
    return TableDesc((table_pa & table_address_mask(g)) | DescValid::make(1) | DescTypeBit::make(1));
  }
  /// The same in address format `f` (a 52-bit table address: D8.3.1.1 with DS = 1 or FEAT_LPA).
  [[nodiscard]] static constexpr TableDesc make(Granule g, u64 table_pa, const OaFormat& f) {
    return TableDesc(f.encode(table_pa, page_shift(g)) | DescValid::make(1) | DescTypeBit::make(1));
  }
  [[nodiscard]] constexpr u64 raw() const { return raw_; }
  [[nodiscard]] constexpr u64 next_table(Granule g) const { return raw_ & table_address_mask(g); }
  /// The next-level table's address in address format `f`.
  [[nodiscard]] constexpr u64 next_table(Granule g, const OaFormat& f) const {
    return f.decode(raw_, page_shift(g));
  }
  [[nodiscard]] constexpr bool xn_table() const { return TableXn::get(raw_); }
  [[nodiscard]] constexpr bool pxn_table() const { return TablePxn::get(raw_); }
  /// APTable[1]: subsequent levels are read-only.
  [[nodiscard]] constexpr bool ap_table_ro() const { return (TableAp::get(raw_) & 0b10) != 0; }
  [[nodiscard]] constexpr u64 ap_table() const { return TableAp::get(raw_); }
  [[nodiscard]] constexpr bool ns_table() const { return TableNs::get(raw_); }

 private:
  u64 raw_;
};

// ---------------------------------------------------------------------------------------------
// Shareability (D8.6.2 "Shareable attributes"): SH[1:0] in block and page descriptors.
// ---------------------------------------------------------------------------------------------
enum class Shareability : u8 { non = 0b00, reserved = 0b01, outer = 0b10, inner = 0b11 };

// ---------------------------------------------------------------------------------------------
// Stage-1 block and page descriptors, EL2 regime (D8.3.1.2, D8.4.1).
// ---------------------------------------------------------------------------------------------
using S1AttrIndx = Field<4, 2>;  ///< index into MAIR_EL2
using S1Ns = Bit<5>;             ///< NS (ignored for Non-secure accesses)
using S1Ap = Field<7, 6>;        ///< AP[2:1]
using S1Sh = Field<9, 8>;        ///< SH[1:0]
using S1Af = Bit<10>;            ///< access flag
using S1Ng = Bit<11>;            ///< nG (RES0 in a regime without ASIDs)
using S1Gp = Bit<50>;            ///< GP, BTI guarded page
using S1Dbm = Bit<51>;           ///< DBM, dirty bit modifier
using S1Contiguous = Bit<52>;    ///< contiguous hint
using S1Pxn = Bit<53>;           ///< PXN (RES0 in the EL2 regime)
using S1Xn = Bit<54>;            ///< XN (UXN in two-range regimes)

/// AP[2:1] for a stage-1 regime with one Exception level: AP[1] is RES1 (D8.4.1.2.1, "For a
/// stage 1 translation that supports one Exception level, AP[1] is RES1"), AP[2] selects
/// read-only. So read access cannot be removed at EL2: every valid mapping is readable.
enum class S1ApEl2 : u8 { rw = 0b01, ro = 0b11 };

class S1Leaf {
 public:
  constexpr explicit S1Leaf(u64 raw) : raw_(raw) {}

  /// A valid leaf at `level` mapping `pa` (aligned to the level's size; low bits dropped),
  /// read-write (AP = 0b01: AP[1] is RES1 at EL2). A page at level 3, a block elsewhere. Call
  /// only where leaf_allowed(g, level).
  [[nodiscard]] static constexpr S1Leaf make(Granule g, int level, u64 pa) {
    u64 raw = (pa & leaf_address_mask(g, level)) | DescValid::make(1) |
              S1Ap::make(static_cast<u64>(S1ApEl2::rw));
    if (level == kLastLevel) raw |= DescTypeBit::make(1);
    return S1Leaf(raw);
  }
  /// make() in address format `f`. With DS = 1 bits [9:8] are OA[51:50], not SH: do not call
  /// with_sh() on such a leaf (shareability is TCR_EL2.SH0's).
  [[nodiscard]] static constexpr S1Leaf make(Granule g, int level, u64 pa, const OaFormat& f) {
    u64 raw = f.encode(pa, level_shift(g, level)) | DescValid::make(1) | S1Ap::make(static_cast<u64>(S1ApEl2::rw));
    if (level == kLastLevel) raw |= DescTypeBit::make(1);
    return S1Leaf(raw);
  }
  /// A block at a level known at compile time; a level that cannot hold one does not compile.
  template <Granule G, int Level>
    requires(block_allowed(G, Level))
  [[nodiscard]] static constexpr S1Leaf block(u64 pa) {
    return make(G, Level, pa);
  }
  template <Granule G>
  [[nodiscard]] static constexpr S1Leaf page(u64 pa) {
    return make(G, kLastLevel, pa);
  }

  [[nodiscard]] constexpr u64 raw() const { return raw_; }
  [[nodiscard]] constexpr u64 output_address(Granule g, int level) const {
    return raw_ & leaf_address_mask(g, level);
  }
  /// The output address in address format `f` (52-bit: D8.3.1.2 with DS = 1 or FEAT_LPA).
  [[nodiscard]] constexpr u64 output_address(Granule g, int level, const OaFormat& f) const {
    return f.decode(raw_, level_shift(g, level));
  }
  [[nodiscard]] constexpr u8 attr_index() const { return static_cast<u8>(S1AttrIndx::get(raw_)); }
  [[nodiscard]] constexpr u8 ap() const { return static_cast<u8>(S1Ap::get(raw_)); }
  /// AP[2] clear: writable.
  [[nodiscard]] constexpr bool writable() const { return (S1Ap::get(raw_) & 0b10) == 0; }
  [[nodiscard]] constexpr Shareability sh() const { return static_cast<Shareability>(S1Sh::get(raw_)); }
  [[nodiscard]] constexpr bool af() const { return S1Af::get(raw_); }
  [[nodiscard]] constexpr bool ng() const { return S1Ng::get(raw_); }
  [[nodiscard]] constexpr bool xn() const { return S1Xn::get(raw_); }
  [[nodiscard]] constexpr bool pxn() const { return S1Pxn::get(raw_); }
  [[nodiscard]] constexpr bool contiguous() const { return S1Contiguous::get(raw_); }
  [[nodiscard]] constexpr bool dbm() const { return S1Dbm::get(raw_); }
  [[nodiscard]] constexpr bool gp() const { return S1Gp::get(raw_); }
  [[nodiscard]] constexpr u8 sw() const { return static_cast<u8>(DescSw::get(raw_)); }

  [[nodiscard]] constexpr S1Leaf with_attr_index(u8 v) const { return S1Leaf(S1AttrIndx::put(raw_, v)); }
  [[nodiscard]] constexpr S1Leaf with_ap(S1ApEl2 v) const { return S1Leaf(S1Ap::put(raw_, static_cast<u64>(v))); }
  [[nodiscard]] constexpr S1Leaf with_sh(Shareability v) const { return S1Leaf(S1Sh::put(raw_, static_cast<u64>(v))); }
  [[nodiscard]] constexpr S1Leaf with_af(bool v) const { return S1Leaf(S1Af::put(raw_, v)); }
  [[nodiscard]] constexpr S1Leaf with_xn(bool v) const { return S1Leaf(S1Xn::put(raw_, v)); }
  [[nodiscard]] constexpr S1Leaf with_contiguous(bool v) const { return S1Leaf(S1Contiguous::put(raw_, v)); }
  [[nodiscard]] constexpr S1Leaf with_dbm(bool v) const { return S1Leaf(S1Dbm::put(raw_, v)); }
  [[nodiscard]] constexpr S1Leaf with_sw(u8 v) const { return S1Leaf(DescSw::put(raw_, v)); }

 private:
  u64 raw_;
};

// ---------------------------------------------------------------------------------------------
// Stage-2 block and page descriptors (D8.3.1.2, D8.4.2 stage 2 permissions, D8.6.5 stage 2
// memory attributes).
// ---------------------------------------------------------------------------------------------
using S2MemAttr = Field<5, 2>;    ///< MemAttr[3:0]; meaning depends on HCR_EL2.FWB (memattr.hpp)
using S2Ap = Field<7, 6>;         ///< S2AP[1:0]: bit 6 read, bit 7 write
using S2ApRead = Bit<6>;
using S2ApWrite = Bit<7>;
using S2Sh = Field<9, 8>;         ///< SH[1:0]
using S2Af = Bit<10>;             ///< access flag
using S2Dbm = Bit<51>;            ///< DBM
using S2Contiguous = Bit<52>;     ///< contiguous hint
using S2Xn = Field<54, 53>;       ///< XN[1:0]; without FEAT_XNX bit 53 is RES0, bit 54 is XN

/// Stage-2 execute-never, XN[1:0] (D8.4.2, "Stage 2 execute-never"; the 0b01 and 0b11
/// encodings need FEAT_XNX).
enum class S2XnKind : u8 {
  exec = 0b00,     ///< executable at EL1 and EL0
  pxn = 0b01,      ///< not executable at EL1, executable at EL0 (FEAT_XNX)
  xn = 0b10,       ///< executable at neither
  uxn = 0b11,      ///< executable at EL1, not at EL0 (FEAT_XNX)
};

/// Whether stage 2 lets EL1 execute from a leaf with XN[1:0] = `xn` (FEAT_XNX; D8.4.2):
/// 0b00 and 0b11, that is XN[1] == XN[0].
[[nodiscard]] constexpr bool s2_exec_el1(u64 xn) { return ((xn >> 1) & 1) == (xn & 1); }
/// Whether stage 2 lets EL0 execute from it: 0b00 and 0b01, that is XN[1] (bit 54) clear. This
/// is also the meaning of XN without FEAT_XNX (bit 53 RES0, bit 54 forbids EL1 and EL0 alike).
[[nodiscard]] constexpr bool s2_exec_el0(u64 xn) { return ((xn >> 1) & 1) == 0; }
static_assert(s2_exec_el1(0b00) && !s2_exec_el1(0b01) && !s2_exec_el1(0b10) && s2_exec_el1(0b11));
static_assert(s2_exec_el0(0b00) && s2_exec_el0(0b01) && !s2_exec_el0(0b10) && !s2_exec_el0(0b11));

class S2Leaf {
 public:
  constexpr explicit S2Leaf(u64 raw) : raw_(raw) {}

  /// A valid leaf at `level` mapping `pa`. A page at level 3, a block elsewhere. Call only
  /// where leaf_allowed(g, level).
  [[nodiscard]] static constexpr S2Leaf make(Granule g, int level, u64 pa) {
    u64 raw = (pa & leaf_address_mask(g, level)) | DescValid::make(1);
    if (level == kLastLevel) raw |= DescTypeBit::make(1);
    return S2Leaf(raw);
  }
  /// make() in address format `f`. With DS = 1 bits [9:8] are OA[51:50], not SH: do not call
  /// with_sh() on such a leaf (shareability is VTCR_EL2.SH0's).
  [[nodiscard]] static constexpr S2Leaf make(Granule g, int level, u64 pa, const OaFormat& f) {
    u64 raw = f.encode(pa, level_shift(g, level)) | DescValid::make(1);
    if (level == kLastLevel) raw |= DescTypeBit::make(1);
    return S2Leaf(raw);
  }
  /// A block at a level known at compile time; a level that cannot hold one does not compile.
  template <Granule G, int Level>
    requires(block_allowed(G, Level))
  [[nodiscard]] static constexpr S2Leaf block(u64 pa) {
    return make(G, Level, pa);
  }
  template <Granule G>
  [[nodiscard]] static constexpr S2Leaf page(u64 pa) {
    return make(G, kLastLevel, pa);
  }

  [[nodiscard]] constexpr u64 raw() const { return raw_; }
  [[nodiscard]] constexpr u64 output_address(Granule g, int level) const {
    return raw_ & leaf_address_mask(g, level);
  }
  /// The output address in address format `f` (52-bit: D8.3.1.2 with DS = 1 or FEAT_LPA).
  [[nodiscard]] constexpr u64 output_address(Granule g, int level, const OaFormat& f) const {
    return f.decode(raw_, level_shift(g, level));
  }
  [[nodiscard]] constexpr u8 memattr() const { return static_cast<u8>(S2MemAttr::get(raw_)); }
  [[nodiscard]] constexpr bool readable() const { return S2ApRead::get(raw_); }
  [[nodiscard]] constexpr bool writable() const { return S2ApWrite::get(raw_); }
  [[nodiscard]] constexpr Shareability sh() const { return static_cast<Shareability>(S2Sh::get(raw_)); }
  [[nodiscard]] constexpr bool af() const { return S2Af::get(raw_); }
  [[nodiscard]] constexpr S2XnKind xn() const { return static_cast<S2XnKind>(S2Xn::get(raw_)); }
  [[nodiscard]] constexpr bool contiguous() const { return S2Contiguous::get(raw_); }
  [[nodiscard]] constexpr bool dbm() const { return S2Dbm::get(raw_); }
  [[nodiscard]] constexpr u8 sw() const { return static_cast<u8>(DescSw::get(raw_)); }

  [[nodiscard]] constexpr S2Leaf with_memattr(u8 v) const { return S2Leaf(S2MemAttr::put(raw_, v)); }
  [[nodiscard]] constexpr S2Leaf with_read(bool v) const { return S2Leaf(S2ApRead::put(raw_, v)); }
  [[nodiscard]] constexpr S2Leaf with_write(bool v) const { return S2Leaf(S2ApWrite::put(raw_, v)); }
  [[nodiscard]] constexpr S2Leaf with_sh(Shareability v) const { return S2Leaf(S2Sh::put(raw_, static_cast<u64>(v))); }
  [[nodiscard]] constexpr S2Leaf with_af(bool v) const { return S2Leaf(S2Af::put(raw_, v)); }
  [[nodiscard]] constexpr S2Leaf with_xn(S2XnKind v) const { return S2Leaf(S2Xn::put(raw_, static_cast<u64>(v))); }
  [[nodiscard]] constexpr S2Leaf with_contiguous(bool v) const { return S2Leaf(S2Contiguous::put(raw_, v)); }
  [[nodiscard]] constexpr S2Leaf with_dbm(bool v) const { return S2Leaf(S2Dbm::put(raw_, v)); }
  [[nodiscard]] constexpr S2Leaf with_sw(u8 v) const { return S2Leaf(DescSw::put(raw_, v)); }

 private:
  u64 raw_;
};

// ---------------------------------------------------------------------------------------------
// Invalid descriptors and annotations (ptguard's layout; see the table at the top).
// ---------------------------------------------------------------------------------------------
using InvLocked = Bit<10>;
using InvPoisoned = Bit<11>;
using InvOwner = Field<47, 16>;

/// The owner-id type and its limit, fixed by the width of InvOwner. Owner id 0 is special:
/// an annotation naming 0 with no software bits is the empty entry, which means "owned by the
/// table's owner". The ownership layer therefore gives id 0 to the host, whose stage-2 is the
/// one table that records other owners (pKVM does the same).
using OwnerId = u32;
inline constexpr u64 kMaxOwnerId = InvOwner::kMax;

class InvalidDesc {
 public:
  constexpr explicit InvalidDesc(u64 raw) : raw_(raw) {}
  /// The empty entry: nothing mapped, owned by the table's owner, no state.
  [[nodiscard]] static constexpr InvalidDesc empty() { return InvalidDesc(0); }
  /// An annotation naming `owner` with software bits `sw`. `owner` must fit kMaxOwnerId.
  [[nodiscard]] static constexpr InvalidDesc annotation(OwnerId owner, u8 sw) {
    return InvalidDesc(InvOwner::make(owner) | DescSw::make(sw));
  }
  /// The "locked" marker written during break-before-make (no owner, no state).
  [[nodiscard]] static constexpr InvalidDesc locked() { return InvalidDesc(InvLocked::make(1)); }

  [[nodiscard]] constexpr u64 raw() const { return raw_; }
  [[nodiscard]] constexpr bool is_empty() const { return raw_ == 0; }
  [[nodiscard]] constexpr OwnerId owner() const { return static_cast<OwnerId>(InvOwner::get(raw_)); }
  [[nodiscard]] constexpr u8 sw() const { return static_cast<u8>(DescSw::get(raw_)); }
  [[nodiscard]] constexpr bool is_locked() const { return InvLocked::get(raw_); }
  [[nodiscard]] constexpr bool is_poisoned() const { return InvPoisoned::get(raw_); }
  /// Bits that are neither valid, nor a defined field: a well-formed annotation has none.
  [[nodiscard]] constexpr u64 reserved_bits() const { return raw_ & ~kDefinedMask; }

  [[nodiscard]] constexpr InvalidDesc with_owner(OwnerId v) const { return InvalidDesc(InvOwner::put(raw_, v)); }
  [[nodiscard]] constexpr InvalidDesc with_sw(u8 v) const { return InvalidDesc(DescSw::put(raw_, v)); }
  [[nodiscard]] constexpr InvalidDesc with_locked(bool v) const { return InvalidDesc(InvLocked::put(raw_, v)); }
  [[nodiscard]] constexpr InvalidDesc with_poisoned(bool v) const { return InvalidDesc(InvPoisoned::put(raw_, v)); }

  static constexpr u64 kDefinedMask =
      InvLocked::kMask | InvPoisoned::kMask | InvOwner::kMask | DescSw::kMask;

 private:
  u64 raw_;
};

// The annotation fields are disjoint and never touch the valid bit: an owner id never
// clobbers software bits, the locked bit or the poison marker.
static_assert((InvOwner::kMask & DescSw::kMask) == 0);
static_assert((InvOwner::kMask & (InvLocked::kMask | InvPoisoned::kMask)) == 0);
static_assert((DescSw::kMask & (InvLocked::kMask | InvPoisoned::kMask)) == 0);
static_assert((InvalidDesc::kDefinedMask & DescValid::kMask) == 0);
static_assert(InvOwner::kWidth >= 16, "owner ids must be at least 16 bits wide");
// The software bits keep clear of every address format, so a valid leaf's SW0..SW3 survive a
// 52-bit output address (and an annotation's survive its becoming a leaf's).
static_assert((DescSw::kMask & (kOa52Ds.descriptor_bits(12) | kOa52Lpa64.descriptor_bits(16))) == 0);
static_assert(InvalidDesc::annotation(0xffff'ffff, 0xf).owner() == 0xffff'ffff);
static_assert(InvalidDesc::annotation(0xffff'ffff, 0xf).sw() == 0xf);

// Known encodings, checked against hand-computed values.
// A stage-1 EL2 4K page at 0x4000_0000: valid|page, AttrIndx 0, AP = RW (0b01), SH inner,
// AF, XN -> 0x0040'0000'4000'0743.
static_assert(S1Leaf::page<Granule::k4K>(0x4000'0000)
                  .with_ap(S1ApEl2::rw)
                  .with_sh(Shareability::inner)
                  .with_af(true)
                  .with_xn(true)
                  .raw() == 0x0040'0000'4000'0743ull);
// A 2 MiB stage-1 block has bits [1:0] = 0b01.
static_assert(S1Leaf::block<Granule::k4K, 2>(0x20'0000).raw() == 0x20'0041ull);
static_assert(classify(0x20'0001, Granule::k4K, 2) == DescKind::block);
static_assert(classify(0x20'0001, Granule::k4K, 0) == DescKind::reserved);
static_assert(classify(0x20'0001, Granule::k4K, 3) == DescKind::reserved);
static_assert(classify(0x20'0003, Granule::k4K, 3) == DescKind::page);
static_assert(classify(0x20'0003, Granule::k4K, 2) == DescKind::table);
static_assert(classify(0x20'0001, Granule::k64K, 1) == DescKind::reserved);

}  // namespace ptguard::arch
