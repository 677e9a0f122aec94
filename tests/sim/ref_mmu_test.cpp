// Tests of the reference MMU (sim/ref_mmu.hpp) on tables written by hand, descriptor by
// descriptor, with literal bit values: nothing here uses arch's descriptor builders or the
// table engine, so the expectations are an independent reading of the Arm ARM (DDI 0487 D8).
// Beyond its result types, the one use of arch/ is RefMmuArchConfigs at the end: arch's
// builders are the thing under test there, read by the oracle and checked against the test's
// own reading.
#include "ptguard/sim/ref_mmu.hpp"

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <array>
#include <string>

#include "ptguard/arch/regs.hpp"

namespace ptguard::sim {
namespace {

// ---------------------------------------------------------------------------------------------
// Granules, spelled out independently of arch/granule.hpp.
// ---------------------------------------------------------------------------------------------
struct Geo {
  const char* name;
  u64 tg0;          // TCR/VTCR.TG0 encoding
  unsigned shift;   // log2 granule
  unsigned stride;  // bits per level
};
constexpr Geo k4K{"4K", 0b00, 12, 9};
constexpr Geo k16K{"16K", 0b10, 14, 11};
constexpr Geo k64K{"64K", 0b01, 16, 13};

unsigned lshift(const Geo& g, int level) {
  return g.shift + static_cast<unsigned>(3 - level) * g.stride;
}
u64 lsize(const Geo& g, int level) { return u64{1} << lshift(g, level); }
u64 page(const Geo& g) { return u64{1} << g.shift; }

// ---------------------------------------------------------------------------------------------
// Descriptor bits, as the Arm ARM numbers them (D8.3.1).
// ---------------------------------------------------------------------------------------------
constexpr u64 kTable = 0b11;  // table (levels 0-2) or page (level 3)
constexpr u64 kPage = 0b11;
constexpr u64 kBlock = 0b01;
constexpr u64 kAf = u64{1} << 10;
constexpr u64 kShInner = u64{0b11} << 8;
constexpr u64 kXn = u64{1} << 54;  // stage 1 XN; stage 2 XN[1]
constexpr u64 kContig = u64{1} << 52;
constexpr u64 kS1Ap1 = u64{1} << 6;      // AP[1], RES1 at EL2
constexpr u64 kS1Ro = u64{1} << 7;       // AP[2]
constexpr u64 kApTable1 = u64{1} << 62;  // APTable[1]
constexpr u64 kXnTable = u64{1} << 60;
constexpr u64 kS2R = u64{1} << 6;  // S2AP[0]
constexpr u64 kS2W = u64{1} << 7;  // S2AP[1]
constexpr u64 attr_index(u64 n) { return n << 2; }
constexpr u64 memattr(u64 n) { return n << 2; }
constexpr u64 sw_bits(u64 n) { return n << 55; }

// Registers, field by field (TCR_EL2 / VTCR_EL2 register descriptions).
constexpr u64 kPs48 = 0b101;
constexpr u64 kPs32 = 0b000;
constexpr u64 kPs40 = 0b010;
u64 tcr(const Geo& g, unsigned ia_bits, u64 ps = kPs48) {
  return u64{64 - ia_bits} | g.tg0 << 14 | ps << 16 | u64{1} << 23 | u64{1} << 31;
}
constexpr u64 kTcrHa = u64{1} << 21;
constexpr u64 kTcrTbi = u64{1} << 20;
constexpr u64 kTcrHpd = u64{1} << 24;
constexpr u64 kTcrTbid = u64{1} << 29;
u64 vtcr(const Geo& g, unsigned ia_bits, u64 sl0, u64 ps = kPs48) {
  return u64{64 - ia_bits} | sl0 << 6 | g.tg0 << 14 | ps << 16 | u64{1} << 31;
}
// MAIR_EL2: Attr0 Normal WB, Attr1 Normal NC, Attr2 Device-nGnRE, Attr3 Device-nGnRnE,
// Attr4 Normal WT (outer and inner 0b1011... = 0xbb), Attr5 Device-GRE (0x0c),
// Attr6 inner WB / outer NC (0x4f), Attr7 Device-nGRE (0x08).
constexpr u64 kMair = 0x08'4f'0c'bb'00'04'44'ffull;

// ---------------------------------------------------------------------------------------------
// Table memory: RAM at 1 GiB, table pages handed out in order, each naturally aligned.
// ---------------------------------------------------------------------------------------------
constexpr u64 kRam = 0x4000'0000;
constexpr u64 kRamSize = 256ull << 20;

class Tables {
 public:
  explicit Tables(const Geo& g) : g_(g) {
    EXPECT_TRUE(mem_.add_region(kRam, kRamSize).has_value());
  }
  PhysMem& mem() { return mem_; }
  // A zeroed table of `bytes` (a page, or a concatenated root), aligned to its size.
  u64 alloc(u64 bytes = 0) {
    if (bytes < page(g_)) bytes = page(g_);
    next_ = (next_ + bytes - 1) & ~(bytes - 1);
    const u64 pa = next_;
    next_ += bytes;
    EXPECT_LE(next_, kRam + kRamSize);
    return pa;
  }
  void put(u64 table, u64 index, u64 desc) { EXPECT_TRUE(mem_.write64(table + 8 * index, desc)); }
  u64 get(u64 pa) {
    u64 v = 0;
    EXPECT_TRUE(mem_.read64(pa, &v));
    return v;
  }

  // Builds the chain of tables for `ia` from a root (of `root_bytes`, covering `ia_bits`) at
  // `start` down to `leaf_level`, writing `leaf` there. Tables already linked are reused.
  // Returns the table holding the leaf.
  u64 chain(u64 root, unsigned ia_bits, int start, int leaf_level, u64 ia, u64 leaf) {
    u64 table = root;
    for (int level = start; level < leaf_level; ++level) {
      const u64 idx = index(ia_bits, start, level, ia);
      u64 desc = get(table + 8 * idx);
      if ((desc & 0b11) != kTable) {
        desc = alloc() | kTable;
        put(table, idx, desc);
      }
      table = desc & ~(page(g_) - 1) & ((u64{1} << 48) - 1);
    }
    put(table, index(ia_bits, start, leaf_level, ia), leaf);
    return table;
  }
  u64 index(unsigned ia_bits, int start, int level, u64 ia) const {
    const unsigned top = level == start ? ia_bits : lshift(g_, level) + g_.stride;
    return (ia >> lshift(g_, level)) & ((u64{1} << (top - lshift(g_, level))) - 1);
  }

 private:
  Geo g_;
  PhysMem mem_;
  u64 next_ = kRam;
};

std::string geo_name(const ::testing::TestParamInfo<Geo>& info) { return info.param.name; }

// Levels that may hold a leaf without FEAT_LPA/LPA2 (D8.3.1): 4K blocks at levels 1 (1 GiB) and
// 2 (2 MiB), 16K and 64K blocks at level 2 (32 MiB, 512 MiB); pages at level 3.
std::vector<int> leaf_levels(const Geo& g) {
  if (g.shift == 12) return {1, 2, 3};
  return {2, 3};
}
u64 leaf_type(int level) { return level == 3 ? kPage : kBlock; }
// An input address near the top of a range of `ia_bits`, inside a leaf at `level`, that selects
// a nonzero index at every level it walks through.
u64 top_ia(const Geo& g, unsigned ia_bits, int level) {
  const u64 bsize = lsize(g, level);
  return (((u64{1} << ia_bits) - 1) & ~(bsize - 1)) | (bsize / 2 + 0x48);
}
// An output address aligned to every block size (at most 1 GiB) and below 2^40.
constexpr u64 kLeafPa = u64{0x5a} << 32;

// Stage 1 start levels and the largest VA size that starts there (D8.2, initial lookup level).
struct S1Shape {
  int start;
  unsigned ia_bits;
};
std::vector<S1Shape> s1_shapes(const Geo& g) {
  if (g.shift == 12) return {{0, 48}, {1, 39}, {2, 30}, {2, 25}};
  if (g.shift == 14) return {{0, 48}, {1, 47}, {2, 36}, {3, 25}};
  return {{1, 48}, {2, 42}, {3, 29}};
}

// =============================================================================================
// Stage 1, EL2.
// =============================================================================================
class RefMmuS1 : public ::testing::TestWithParam<Geo> {};
INSTANTIATE_TEST_SUITE_P(Granules, RefMmuS1, ::testing::Values(k4K, k16K, k64K), geo_name);

TEST_P(RefMmuS1, PageAtEveryStartLevel) {
  const Geo g = GetParam();
  for (const S1Shape s : s1_shapes(g)) {
    SCOPED_TRACE(::testing::Message() << "start " << s.start << " ia " << s.ia_bits);
    Tables tt(g);
    const u64 root = tt.alloc();
    // A VA using the top bit of the range and a nonzero index at every level.
    const u64 va = (u64{1} << (s.ia_bits - 1)) | (u64{5} << g.shift) | 0x123;
    const u64 pa = 0x8'7654'0000ull & ~(page(g) - 1);
    const u64 leaf_table =
        tt.chain(root, s.ia_bits, s.start, 3, va,
                 pa | kPage | kAf | kS1Ap1 | kShInner | attr_index(0) | sw_bits(0b1010));
    const Translation t =
        translate_stage1_el2(tt.mem(), {tcr(g, s.ia_bits), kMair, root}, va, Access::read);
    ASSERT_TRUE(t.ok()) << to_string(t);
    EXPECT_EQ(t.output_address, pa | (va & (page(g) - 1)));
    EXPECT_EQ(t.level, 3);
    EXPECT_EQ(t.block_size, page(g));
    EXPECT_EQ(t.sw, 0b1010);
    EXPECT_EQ(t.sh, arch::Shareability::inner);
    EXPECT_TRUE(t.readable && t.writable && t.executable);
    EXPECT_FALSE(t.unpredictable);
    ASSERT_EQ(t.walk.size(), static_cast<size_t>(4 - s.start));
    EXPECT_EQ(t.walk.front().table_pa, root);
    EXPECT_EQ(t.walk.front().level, s.start);
    EXPECT_EQ(t.walk.back().table_pa, leaf_table);
    EXPECT_EQ(t.walk.back().kind, arch::DescKind::page);
    EXPECT_EQ(t.walk.back().desc_pa,
              leaf_table + 8 * ((va >> g.shift) & ((u64{1} << g.stride) - 1)));
    // A neighbouring page is not mapped: translation fault at level 3.
    const Translation miss = translate_stage1_el2(tt.mem(), {tcr(g, s.ia_bits), kMair, root},
                                                  va + page(g), Access::read);
    EXPECT_EQ(miss.fault, FaultKind::translation);
    EXPECT_EQ(miss.level, 3);
  }
}

TEST_P(RefMmuS1, BlocksAllowedOnlyWhereTheArchitectureSays) {
  const Geo g = GetParam();
  const unsigned ia = 48;
  const int start = g.shift == 16 ? 1 : 0;
  for (int level = start; level <= 3; ++level) {
    SCOPED_TRACE(::testing::Message() << "level " << level);
    Tables tt(g);
    const u64 root = tt.alloc();
    const u64 bsize = lsize(g, level);
    const u64 base = (u64{0x3} << 40) & ~(bsize - 1);  // 3 TiB, aligned for every block size
    const u64 va = (u64{0x5a} << 40 & ((u64{1} << ia) - 1) & ~(bsize - 1)) | (bsize / 2 + 0x40);
    tt.chain(root, ia, start, level, va, base | kBlock | kAf);
    const Translation t =
        translate_stage1_el2(tt.mem(), {tcr(g, ia), kMair, root}, va, Access::read);
    // D8.3.1: 4K blocks at levels 1 and 2, 16K and 64K at level 2 (no LPA/LPA2); 0b01 at
    // level 3 is reserved.
    const bool allowed =
        (g.shift == 12 && (level == 1 || level == 2)) || (g.shift != 12 && level == 2);
    if (allowed) {
      ASSERT_TRUE(t.ok()) << to_string(t);
      EXPECT_EQ(t.level, level);
      EXPECT_EQ(t.block_size, bsize);
      EXPECT_EQ(t.output_address, base + (va & (bsize - 1)));
      EXPECT_EQ(t.walk.back().kind, arch::DescKind::block);
    } else {
      EXPECT_EQ(t.fault, FaultKind::translation) << to_string(t);
      EXPECT_EQ(t.level, level);
      EXPECT_EQ(t.walk.back().kind, arch::DescKind::reserved);
    }
  }
}

TEST_P(RefMmuS1, TranslationFaultAtEachLevel) {
  const Geo g = GetParam();
  for (const S1Shape s : s1_shapes(g)) {
    for (int hole = s.start; hole <= 3; ++hole) {
      SCOPED_TRACE(::testing::Message()
                   << "start " << s.start << " ia " << s.ia_bits << " hole " << hole);
      Tables tt(g);
      const u64 root = tt.alloc();
      const u64 va = 0x1234'5678'9000ull & ((u64{1} << s.ia_bits) - 1) & ~(page(g) - 1);
      tt.chain(root, s.ia_bits, s.start, 3, va, 0x9000'0000 | kPage | kAf);
      const Translation good =
          translate_stage1_el2(tt.mem(), {tcr(g, s.ia_bits), kMair, root}, va, Access::read);
      ASSERT_TRUE(good.ok()) << to_string(good);
      // Knock out the descriptor at `hole` (leaving an annotation-like invalid value: bit 0
      // clear).
      const WalkStep step = good.walk[static_cast<size_t>(hole - s.start)];
      EXPECT_TRUE(tt.mem().write64(step.desc_pa, step.desc & ~u64{1}));
      const Translation t =
          translate_stage1_el2(tt.mem(), {tcr(g, s.ia_bits), kMair, root}, va, Access::read);
      EXPECT_EQ(t.fault, FaultKind::translation);
      EXPECT_EQ(t.level, hole);
      EXPECT_EQ(t.walk.size(), static_cast<size_t>(hole - s.start + 1));
    }
  }
}

TEST_P(RefMmuS1, ExternalAbortOnUnbackedTableAtEachLevel) {
  const Geo g = GetParam();
  for (const S1Shape s : s1_shapes(g)) {
    SCOPED_TRACE(::testing::Message() << "start " << s.start << " ia " << s.ia_bits);
    const u64 va = 0x10'0000'0000ull & ((u64{1} << s.ia_bits) - 1);
    // The root itself unbacked: abort at the start level.
    {
      Tables tt(g);
      const Translation t = translate_stage1_el2(
          tt.mem(), {tcr(g, s.ia_bits), kMair, 0x1000'0000}, va, Access::read);
      EXPECT_EQ(t.fault, FaultKind::external_abort);
      EXPECT_EQ(t.level, s.start);
      EXPECT_TRUE(t.walk.empty());
    }
    for (int level = s.start; level < 3; ++level) {
      Tables tt(g);
      const u64 root = tt.alloc();
      tt.chain(root, s.ia_bits, s.start, level, va, 0x2000'0000 | kTable);  // unbacked
      const Translation t =
          translate_stage1_el2(tt.mem(), {tcr(g, s.ia_bits), kMair, root}, va, Access::read);
      EXPECT_EQ(t.fault, FaultKind::external_abort);
      EXPECT_EQ(t.level, level + 1);
    }
  }
}

TEST_P(RefMmuS1, AddressSizeFaults) {
  const Geo g = GetParam();
  for (const S1Shape s : s1_shapes(g)) {
    SCOPED_TRACE(::testing::Message() << "start " << s.start << " ia " << s.ia_bits);
    const u64 va = 0x7'0000'0000ull & ((u64{1} << s.ia_bits) - 1);
    // PS = 32 bits: every table sits below 4 GiB.
    // Next-table address above the OA size, at each table level.
    for (int level = s.start; level < 3; ++level) {
      Tables tt(g);
      const u64 root = tt.alloc();
      tt.chain(root, s.ia_bits, s.start, level, va, (u64{1} << 32) | kTable);
      const Translation t = translate_stage1_el2(tt.mem(), {tcr(g, s.ia_bits, kPs32), kMair, root},
                                                 va, Access::read);
      EXPECT_EQ(t.fault, FaultKind::address_size) << to_string(t);
      EXPECT_EQ(t.level, level);
    }
    // Output address of a page above the OA size (blocks: LeafFaultsAtEveryLeafLevel).
    {
      Tables tt(g);
      const u64 root = tt.alloc();
      tt.chain(root, s.ia_bits, s.start, 3, va, (u64{1} << 35) | kPage | kAf);
      Translation t = translate_stage1_el2(tt.mem(), {tcr(g, s.ia_bits, kPs32), kMair, root}, va,
                                           Access::read);
      EXPECT_EQ(t.fault, FaultKind::address_size);
      EXPECT_EQ(t.level, 3);
      // The same tables with PS = 40 bits translate.
      t = translate_stage1_el2(tt.mem(), {tcr(g, s.ia_bits, kPs40), kMair, root}, va,
                               Access::read);
      EXPECT_TRUE(t.ok()) << to_string(t);
      // PS larger than the implemented PA size: the PA size wins
      // (AArch64.PhysicalAddressSize).
      ImplChoices small;
      small.pa_bits = 32;
      t = translate_stage1_el2(tt.mem(), {tcr(g, s.ia_bits, kPs40), kMair, root}, va,
                               Access::read, small);
      EXPECT_EQ(t.fault, FaultKind::address_size);
    }
    // TTBR above the OA size: level 0 whatever the start level (RBFHQH).
    {
      Tables tt(g);
      const Translation t = translate_stage1_el2(
          tt.mem(), {tcr(g, s.ia_bits, kPs32), kMair, u64{1} << 33}, va, Access::read);
      EXPECT_EQ(t.fault, FaultKind::address_size);
      EXPECT_EQ(t.level, 0);
      EXPECT_TRUE(t.walk.empty());
    }
  }
}

TEST_P(RefMmuS1, OutOfRangeVaIsALevel0TranslationFault) {
  const Geo g = GetParam();
  for (const S1Shape s : s1_shapes(g)) {
    Tables tt(g);
    const u64 root = tt.alloc();
    const u64 va = (u64{1} << s.ia_bits) - page(g);  // the last page of the range
    tt.chain(root, s.ia_bits, s.start, 3, va, 0x5000'0000 | kPage | kAf);
    const Stage1Regs regs{tcr(g, s.ia_bits), kMair, root};
    EXPECT_TRUE(translate_stage1_el2(tt.mem(), regs, va, Access::read).ok());
    for (unsigned bit : {s.ia_bits, 48u, 55u, 56u, 63u}) {
      const Translation t = translate_stage1_el2(tt.mem(), regs, va | u64{1} << bit, Access::read);
      EXPECT_EQ(t.fault, FaultKind::translation) << "bit " << bit;
      EXPECT_EQ(t.level, 0);
      EXPECT_TRUE(t.walk.empty());
    }
    // TBI: the top byte is ignored (for data, and for fetches unless TBID).
    const Stage1Regs tbi{regs.tcr | kTcrTbi, kMair, root};
    EXPECT_TRUE(translate_stage1_el2(tt.mem(), tbi, va | u64{0xab} << 56, Access::read).ok());
    EXPECT_TRUE(translate_stage1_el2(tt.mem(), tbi, va | u64{0xab} << 56, Access::exec).ok());
    EXPECT_EQ(translate_stage1_el2(tt.mem(), tbi, va | u64{1} << 55, Access::read).fault,
              FaultKind::translation);
    const Stage1Regs tbid{regs.tcr | kTcrTbi | kTcrTbid, kMair, root};
    EXPECT_TRUE(translate_stage1_el2(tt.mem(), tbid, va | u64{0xab} << 56, Access::read).ok());
    EXPECT_EQ(translate_stage1_el2(tt.mem(), tbid, va | u64{0xab} << 56, Access::exec).fault,
              FaultKind::translation);
  }
}

TEST_P(RefMmuS1, T0szOutOfRangeIsImplementationDefined) {
  const Geo g = GetParam();
  Tables tt(g);
  const u64 root = tt.alloc();
  const u64 base = tcr(g, 48) & ~u64{0x3f};
  for (u64 t0sz : {u64{15}, u64{0}, u64{40}, u64{63}}) {
    const Translation t =
        translate_stage1_el2(tt.mem(), {base | t0sz, kMair, root}, 0, Access::read);
    EXPECT_EQ(t.fault, FaultKind::translation) << t0sz;
    EXPECT_EQ(t.level, 0);
    EXPECT_TRUE(t.unpredictable);
  }
  // The other permitted choice: use the nearest limit. T0SZ = 10 acts as 16 (48-bit VA).
  const S1Shape s = s1_shapes(g).front();
  const u64 va = 0xfff0'0000'0000ull & ~(page(g) - 1);
  tt.chain(root, s.ia_bits, s.start, 3, va, 0x6000'0000 | kPage | kAf);
  ImplChoices clamp;
  clamp.txsz_out_of_range_faults = false;
  const Translation t =
      translate_stage1_el2(tt.mem(), {base | 10, kMair, root}, va, Access::read, clamp);
  EXPECT_TRUE(t.ok()) << to_string(t);
  EXPECT_TRUE(t.unpredictable);
  EXPECT_EQ(t.output_address, 0x6000'0000u);
}

TEST_P(RefMmuS1, ReservedGranuleEncodingIsRefused) {
  const Geo g = GetParam();
  Tables tt(g);
  const u64 t = tcr(g, 48) | u64{0b11} << 14;
  const Translation r = translate_stage1_el2(tt.mem(), {t, kMair, tt.alloc()}, 0, Access::read);
  EXPECT_EQ(r.fault, FaultKind::translation);
  EXPECT_TRUE(r.unpredictable);
}

TEST_P(RefMmuS1, AccessFlagAndHardwareUpdate) {
  const Geo g = GetParam();
  const S1Shape s = s1_shapes(g).front();
  Tables tt(g);
  const u64 root = tt.alloc();
  const u64 va = 0x40'0000'0000ull & ((u64{1} << s.ia_bits) - 1);
  const u64 leaf = 0x7000'0000 | kPage | kS1Ro;  // AF = 0, read-only
  const u64 lt = tt.chain(root, s.ia_bits, s.start, 3, va, leaf);
  Stage1Regs regs{tcr(g, s.ia_bits), kMair, root};
  Translation t = translate_stage1_el2(tt.mem(), regs, va, Access::read);
  EXPECT_EQ(t.fault, FaultKind::access_flag);
  EXPECT_EQ(t.level, 3);
  EXPECT_EQ(t.descriptor, leaf);
  // The access flag fault outranks the permission fault (RXCHFJ items 34 and 36).
  t = translate_stage1_el2(tt.mem(), regs, va, Access::write);
  EXPECT_EQ(t.fault, FaultKind::access_flag);
  // HA = 1: no fault; the hardware would set AF; memory is untouched.
  regs.tcr |= kTcrHa;
  t = translate_stage1_el2(tt.mem(), regs, va, Access::read);
  ASSERT_TRUE(t.ok()) << to_string(t);
  EXPECT_TRUE(t.af_set_by_hw);
  EXPECT_EQ(tt.get(lt + 8 * tt.index(s.ia_bits, s.start, 3, va)), leaf);
  // HA = 1 and a permission fault: the permission fault, and no AF update reported.
  t = translate_stage1_el2(tt.mem(), regs, va, Access::write);
  EXPECT_EQ(t.fault, FaultKind::permission);
  EXPECT_FALSE(t.af_set_by_hw);
  // AF = 1: nothing for the hardware to do.
  tt.chain(root, s.ia_bits, s.start, 3, va, leaf | kAf);
  t = translate_stage1_el2(tt.mem(), regs, va, Access::read);
  ASSERT_TRUE(t.ok());
  EXPECT_FALSE(t.af_set_by_hw);
  // A block with AF = 0 faults at the block's level.
  Tables tb(g);
  const u64 root2 = tb.alloc();
  tb.chain(root2, s.ia_bits, s.start, 2, va, 0x8000'0000ull << 4 | kBlock);
  t = translate_stage1_el2(tb.mem(), {tcr(g, s.ia_bits), kMair, root2}, va, Access::read);
  EXPECT_EQ(t.fault, FaultKind::access_flag);
  EXPECT_EQ(t.level, 2);
}

// Table D8-66 (one Exception level), with effective XN and AP[2] after XNTable and APTable.
struct S1PermRow {
  bool xn, ro, wxn;
  bool r, w, x;
};
constexpr S1PermRow kTableD866[] = {
    {false, false, false, true, true, true}, {false, false, true, true, true, false},
    {false, true, false, true, false, true}, {false, true, true, true, false, true},
    {true, false, false, true, true, false}, {true, false, true, true, true, false},
    {true, true, false, true, false, false}, {true, true, true, true, false, false},
};

TEST_P(RefMmuS1, PermissionMatrix) {
  const Geo g = GetParam();
  const S1Shape s = s1_shapes(g).front();
  const u64 va = 0x33'0000'0000ull & ((u64{1} << s.ia_bits) - 1);
  for (int bits = 0; bits < 64; ++bits) {
    const bool ro = bits & 1, xn = bits & 2, ap_table = bits & 4, xn_table = bits & 8,
               wxn = bits & 16, hpd = bits & 32;
    SCOPED_TRACE(::testing::Message()
                 << "ro " << ro << " xn " << xn << " aptable " << ap_table << " xntable "
                 << xn_table << " wxn " << wxn << " hpd " << hpd);
    Tables tt(g);
    const u64 root = tt.alloc();
    tt.chain(root, s.ia_bits, s.start, 3, va,
             0x1234'0000ull << 4 | kPage | kAf | kS1Ap1 | (ro ? kS1Ro : 0) | (xn ? kXn : 0));
    // Put the hierarchical bits in the root's table descriptor.
    const u64 idx = tt.index(s.ia_bits, s.start, s.start, va);
    const u64 td = tt.get(root + 8 * idx);
    tt.put(root, idx, td | (ap_table ? kApTable1 : 0) | (xn_table ? kXnTable : 0));
    const Stage1Regs regs{tcr(g, s.ia_bits) | (hpd ? kTcrHpd : 0), kMair, root, wxn};
    const bool eff_xn = xn || (xn_table && !hpd);
    const bool eff_ro = ro || (ap_table && !hpd);
    const S1PermRow* row = nullptr;
    for (const S1PermRow& r : kTableD866)
      if (r.xn == eff_xn && r.ro == eff_ro && r.wxn == wxn) row = &r;
    ASSERT_NE(row, nullptr);
    const std::array<std::pair<Access, bool>, 3> cases{
        {{Access::read, row->r}, {Access::write, row->w}, {Access::exec, row->x}}};
    for (const auto& [access, allowed] : cases) {
      const Translation t = translate_stage1_el2(tt.mem(), regs, va, access);
      EXPECT_EQ(t.readable, row->r);
      EXPECT_EQ(t.writable, row->w);
      EXPECT_EQ(t.executable, row->x);
      if (allowed) {
        EXPECT_TRUE(t.ok()) << name(access) << ": " << to_string(t);
      } else {
        EXPECT_EQ(t.fault, FaultKind::permission) << name(access);
        EXPECT_EQ(t.level, 3);  // the leaf's level, even for APTable/XNTable (RCSRQR)
      }
    }
  }
}

TEST_P(RefMmuS1, MairDecoding) {
  const Geo g = GetParam();
  const S1Shape s = s1_shapes(g).front();
  Tables tt(g);
  const u64 root = tt.alloc();
  using arch::Cacheability;
  using arch::DeviceKind;
  struct Want {
    bool device;
    DeviceKind kind;
    Cacheability inner, outer;
  };
  const Want want[8] = {
      {false, DeviceKind::ngnrne, Cacheability::write_back, Cacheability::write_back},  // 0xff
      {false, DeviceKind::ngnrne, Cacheability::non_cacheable,
       Cacheability::non_cacheable},                                                         // 0x44
      {true, DeviceKind::ngnre, Cacheability::non_cacheable, Cacheability::non_cacheable},   // 0x04
      {true, DeviceKind::ngnrne, Cacheability::non_cacheable, Cacheability::non_cacheable},  // 0x00
      {false, DeviceKind::ngnrne, Cacheability::write_through,
       Cacheability::write_through},                                                       // 0xbb
      {true, DeviceKind::gre, Cacheability::non_cacheable, Cacheability::non_cacheable},   // 0x0c
      {false, DeviceKind::ngnrne, Cacheability::write_back, Cacheability::non_cacheable},  // 0x4f
      {true, DeviceKind::ngre, Cacheability::non_cacheable, Cacheability::non_cacheable},  // 0x08
  };
  for (u64 i = 0; i < 8; ++i) {
    const u64 va = (i + 1) << g.shift;
    tt.chain(root, s.ia_bits, s.start, 3, va, (0x100 + i) << g.shift | kPage | kAf | attr_index(i));
    const Translation t =
        translate_stage1_el2(tt.mem(), {tcr(g, s.ia_bits), kMair, root}, va, Access::read);
    ASSERT_TRUE(t.ok()) << i;
    EXPECT_EQ(t.attrs.device, want[i].device) << i;
    if (want[i].device) {
      EXPECT_EQ(t.attrs.device_kind, want[i].kind) << i;
    } else {
      EXPECT_EQ(t.attrs.inner, want[i].inner) << i;
      EXPECT_EQ(t.attrs.outer, want[i].outer) << i;
    }
    EXPECT_FALSE(t.attrs.reserved) << i;
  }
}

TEST_P(RefMmuS1, InstructionFetchFromDeviceIsConstrainedUnpredictable) {
  const Geo g = GetParam();
  const S1Shape s = s1_shapes(g).front();
  Tables tt(g);
  const u64 root = tt.alloc();
  const u64 va = u64{3} << g.shift;
  tt.chain(root, s.ia_bits, s.start, 3, va, 0x0900'0000ull << 4 | kPage | kAf | attr_index(2));
  const Stage1Regs regs{tcr(g, s.ia_bits), kMair, root};
  Translation t = translate_stage1_el2(tt.mem(), regs, va, Access::exec);
  EXPECT_TRUE(t.ok());
  EXPECT_TRUE(t.unpredictable);
  EXPECT_TRUE(t.attrs.device);
  EXPECT_FALSE(translate_stage1_el2(tt.mem(), regs, va, Access::read).unpredictable);
  ImplChoices faults;
  faults.device_fetch_faults = true;
  t = translate_stage1_el2(tt.mem(), regs, va, Access::exec, faults);
  EXPECT_EQ(t.fault, FaultKind::permission);
  EXPECT_EQ(t.level, 3);
}

TEST_P(RefMmuS1, MisalignedTtbrLowBitsTreatedAsZero) {
  const Geo g = GetParam();
  const S1Shape s = s1_shapes(g).front();
  Tables tt(g);
  const u64 root = tt.alloc();
  const u64 va = u64{7} << g.shift;
  tt.chain(root, s.ia_bits, s.start, 3, va, 0x4444'0000ull << 4 | kPage | kAf);
  // Bit 0 is CnP, not an address bit: no effect at all.
  Translation t =
      translate_stage1_el2(tt.mem(), {tcr(g, s.ia_bits), kMair, root | 1}, va, Access::read);
  EXPECT_TRUE(t.ok());
  EXPECT_FALSE(t.unpredictable);
  // Bits below the table size (RES0): treated as 0, and flagged (K1.2.5).
  t = translate_stage1_el2(tt.mem(), {tcr(g, s.ia_bits), kMair, root | 0x8}, va, Access::read);
  EXPECT_TRUE(t.ok());
  EXPECT_TRUE(t.unpredictable);
  EXPECT_EQ(t.walk.front().table_pa, root);
}

// Access flag, permission and address size faults on a leaf at every level that can hold one
// (4K: blocks at levels 1 and 2; 16K, 64K: blocks at level 2; pages at level 3), for every
// start level that reaches it. Each fault is reported at the leaf's level (D8.15.1.2,
// D8.15.1.4, D8.15.1.5).
TEST_P(RefMmuS1, LeafFaultsAtEveryLeafLevel) {
  const Geo g = GetParam();
  int covered = 0;
  for (const S1Shape s : s1_shapes(g)) {
    for (const int level : leaf_levels(g)) {
      if (level < s.start) continue;
      ++covered;
      SCOPED_TRACE(::testing::Message()
                   << "start " << s.start << " ia " << s.ia_bits << " leaf level " << level);
      const u64 va = top_ia(g, s.ia_bits, level);
      const u64 off = va & (lsize(g, level) - 1);
      const size_t steps = static_cast<size_t>(level - s.start + 1);
      // Builds fresh tables holding `leaf` and translates `va` through them.
      auto at = [&](u64 leaf, u64 tcr_value, Access a, u64 root_table_bits = 0) {
        Tables tt(g);
        const u64 root = tt.alloc();
        tt.chain(root, s.ia_bits, s.start, level, va, leaf);
        if (root_table_bits != 0) {
          const u64 idx = tt.index(s.ia_bits, s.start, s.start, va);
          tt.put(root, idx, tt.get(root + 8 * idx) | root_table_bits);
        }
        return translate_stage1_el2(tt.mem(), {tcr_value, kMair, root}, va, a);
      };
      const u64 type = leaf_type(level);
      const u64 t48 = tcr(g, s.ia_bits);
      // Access flag: AF = 0 faults for every access, at the leaf's level.
      const u64 no_af = kLeafPa | type | kS1Ap1 | kShInner;
      for (const Access a : {Access::read, Access::write, Access::exec}) {
        const Translation t = at(no_af, t48, a);
        EXPECT_EQ(t.fault, FaultKind::access_flag) << name(a) << " " << to_string(t);
        EXPECT_EQ(t.level, level);
        EXPECT_EQ(t.descriptor, no_af);
        EXPECT_EQ(t.walk.size(), steps);
      }
      Translation t = at(no_af, t48 | kTcrHa, Access::write);  // HA: the hardware sets AF
      ASSERT_TRUE(t.ok()) << to_string(t);
      EXPECT_TRUE(t.af_set_by_hw);
      EXPECT_EQ(t.level, level);
      EXPECT_EQ(t.block_size, lsize(g, level));
      EXPECT_EQ(t.output_address, kLeafPa + off);
      // Permission: read-only and execute-never leaf.
      const u64 ro_xn = kLeafPa | type | kAf | kS1Ap1 | kS1Ro | kXn;
      t = at(ro_xn, t48, Access::read);
      ASSERT_TRUE(t.ok()) << to_string(t);
      EXPECT_EQ(t.output_address, kLeafPa + off);
      for (const Access a : {Access::write, Access::exec}) {
        t = at(ro_xn, t48, a);
        EXPECT_EQ(t.fault, FaultKind::permission) << name(a) << " " << to_string(t);
        EXPECT_EQ(t.level, level);
        EXPECT_EQ(t.descriptor, ro_xn);
      }
      // Permission from the hierarchy: APTable[1] and XNTable in the root's table descriptor
      // remove write and execute from the leaf below; the fault is still at the leaf's level
      // (RCSRQR).
      const u64 rwx = kLeafPa | type | kAf | kS1Ap1;
      if (level > s.start) {
        EXPECT_TRUE(at(rwx, t48, Access::read, kApTable1 | kXnTable).ok());
        for (const Access a : {Access::write, Access::exec}) {
          t = at(rwx, t48, a, kApTable1 | kXnTable);
          EXPECT_EQ(t.fault, FaultKind::permission) << name(a) << " " << to_string(t);
          EXPECT_EQ(t.level, level);
        }
      }
      // Address size: an output address at 2^40 with PS = 40 bits, at the leaf's level; it
      // outranks the access flag fault. The same leaf below 2^40 translates.
      const u64 t40 = tcr(g, s.ia_bits, kPs40);
      const u64 high = (u64{1} << 40) | type | kS1Ap1;
      for (const u64 leaf : {high | kAf, high}) {
        t = at(leaf, t40, Access::read);
        EXPECT_EQ(t.fault, FaultKind::address_size) << to_string(t);
        EXPECT_EQ(t.level, level);
        EXPECT_EQ(t.walk.size(), steps);
      }
      EXPECT_TRUE(at(rwx, t40, Access::write).ok());
    }
  }
  // Every leaf level was reached from some start level.
  EXPECT_GE(covered, g.shift == 12 ? 8 : 5);
}

// Bits that are RES0 in the EL2 regime (one Exception level, no ASIDs) change nothing: PXN
// (bit 53) and nG (bit 11) of a leaf (D8.3.1.2; PXN: D8.4.1.2.3), PXNTable (bit 59) and
// APTable[0] (bit 61) of a table descriptor (D8.3.1.1, IPCLHM). Their neighbours XN (bit 54),
// XNTable (bit 60) and APTable[1] (bit 62) do act, as a control.
TEST_P(RefMmuS1, Res0BitsAtEl2HaveNoEffect) {
  const Geo g = GetParam();
  constexpr u64 kPxn = u64{1} << 53, kNg = u64{1} << 11;
  constexpr u64 kPxnTable = u64{1} << 59, kApTable0 = u64{1} << 61;
  struct Variant {
    const char* what;
    u64 leaf_bits, table_bits;
    bool w, x;
  };
  const Variant variants[] = {
      {"none", 0, 0, true, true},
      {"PXN", kPxn, 0, true, true},
      {"nG", kNg, 0, true, true},
      {"PXNTable", 0, kPxnTable, true, true},
      {"APTable[0]", 0, kApTable0, true, true},
      {"all four", kPxn | kNg, kPxnTable | kApTable0, true, true},
      {"control XN", kXn, 0, true, false},
      {"control XNTable", 0, kXnTable, true, false},
      {"control APTable[1]", 0, kApTable1, false, true},
  };
  for (const S1Shape s : s1_shapes(g)) {
    for (const int level : leaf_levels(g)) {
      if (level < s.start) continue;
      const u64 va = top_ia(g, s.ia_bits, level);
      for (const Variant& v : variants) {
        if (v.table_bits != 0 && level == s.start) continue;  // no table above the leaf
        SCOPED_TRACE(::testing::Message() << "start " << s.start << " ia " << s.ia_bits
                                          << " leaf level " << level << " " << v.what);
        Tables tt(g);
        const u64 root = tt.alloc();
        tt.chain(root, s.ia_bits, s.start, level, va,
                 kLeafPa | leaf_type(level) | kAf | kS1Ap1 | kShInner | v.leaf_bits);
        const Stage1Regs regs{tcr(g, s.ia_bits), kMair, root};
        // Set the table bits in every table descriptor on the way.
        const Translation plain = translate_stage1_el2(tt.mem(), regs, va, Access::read);
        ASSERT_TRUE(plain.ok()) << to_string(plain);
        ASSERT_EQ(plain.walk.size(), static_cast<size_t>(level - s.start + 1));
        for (const WalkStep& step : plain.walk) {
          if (step.level < level) {
            EXPECT_TRUE(tt.mem().write64(step.desc_pa, step.desc | v.table_bits));
          }
        }
        const std::array<std::pair<Access, bool>, 3> cases{
            {{Access::read, true}, {Access::write, v.w}, {Access::exec, v.x}}};
        for (const auto& [access, allowed] : cases) {
          const Translation t = translate_stage1_el2(tt.mem(), regs, va, access);
          EXPECT_TRUE(t.readable);
          EXPECT_EQ(t.writable, v.w);
          EXPECT_EQ(t.executable, v.x);
          EXPECT_EQ(t.level, level);
          if (allowed) {
            ASSERT_TRUE(t.ok()) << name(access) << " " << to_string(t);
            EXPECT_EQ(t.output_address, kLeafPa + (va & (lsize(g, level) - 1)));
            EXPECT_FALSE(t.unpredictable);
          } else {
            EXPECT_EQ(t.fault, FaultKind::permission) << name(access);
          }
        }
      }
    }
  }
}

TEST(RefMmuS1Encodings, LiteralDescriptorsAndStrings) {
  // A 4K, 39-bit VA space (start level 1), hand-assembled: L1 table -> L2 table -> L3 page,
  // plus a 2 MiB block, all values literal.
  Tables tt(k4K);
  const u64 l1 = tt.alloc(), l2 = tt.alloc(), l3 = tt.alloc();
  tt.put(l1, 1, l2 | 0x3);                  // VA[38:30] = 1
  tt.put(l2, 2, l3 | 0x3);                  // VA[29:21] = 2
  tt.put(l3, 3, 0x0040'0000'8765'4743ull);  // XN, AF, SH inner, AP RW, page 0x8765_4000
  tt.put(l2, 4, 0x0000'0000'8060'0741ull);  // 2 MiB block at 0x8060_0000 (bits 20:12 RES0)
  const u64 t39 = 25 | u64{0b101} << 16 | u64{1} << 23 | u64{1} << 31;
  Translation t = translate_stage1_el2(tt.mem(), {t39, kMair, l1}, 0x4040'3abcull, Access::read);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t.output_address, 0x8765'4abcull);
  EXPECT_EQ(to_string(t), "ok pa 0x87654abc level 3 size 0x1000 rw- sw 0x0");
  t = translate_stage1_el2(tt.mem(), {t39, kMair, l1}, 0x4040'3abcull, Access::exec);
  EXPECT_EQ(to_string(t), "fault permission level 3: execution not permitted");
  t = translate_stage1_el2(tt.mem(), {t39, kMair, l1}, 0x4089'2345ull, Access::write);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t.output_address, 0x8069'2345ull);
  EXPECT_EQ(t.block_size, 0x20'0000u);
  EXPECT_STREQ(name(FaultKind::access_flag), "access flag");
  EXPECT_STREQ(name(FaultKind::address_size), "address size");
  EXPECT_STREQ(name(FaultKind::external_abort), "external abort");
  EXPECT_STREQ(name(FaultKind::translation), "translation");
}

// Property: any offset inside a hand-built 2 MiB block translates to block base + offset, and
// any address outside it (in a range the tables leave empty) faults.
RC_GTEST_PROP(RefMmuS1Property, BlockOffsetsTranslateToBasePlusOffset, ()) {
  const u64 block_index = *rc::gen::inRange<u64>(0, 512);
  const u64 base_index = *rc::gen::inRange<u64>(0, 1u << 14);  // OA below 32 GiB
  const u64 offset = *rc::gen::inRange<u64>(0, u64{1} << 21);
  Tables tt(k4K);
  const u64 l1 = tt.alloc(), l2 = tt.alloc();
  tt.put(l1, 0, l2 | 0x3);
  tt.put(l2, block_index, base_index << 21 | 0x441);  // block, AF, RW
  const u64 t39 = 25 | u64{0b101} << 16 | u64{1} << 23 | u64{1} << 31;
  const u64 va = block_index << 21 | offset;
  const Translation t = translate_stage1_el2(tt.mem(), {t39, kMair, l1}, va, Access::write);
  RC_ASSERT(t.ok());
  RC_ASSERT(t.output_address == (base_index << 21) + offset);
  RC_ASSERT(t.level == 2);
  const u64 other = *rc::gen::suchThat(rc::gen::inRange<u64>(0, u64{1} << 39),
                                       [&](u64 v) { return (v >> 21) != block_index; });
  const Translation miss = translate_stage1_el2(tt.mem(), {t39, kMair, l1}, other, Access::read);
  RC_ASSERT(miss.fault == FaultKind::translation);
  RC_ASSERT(miss.level == ((other >> 30) == 0 ? 2 : 1));
}

// =============================================================================================
// Stage 2.
// =============================================================================================
struct S2Shape {
  int start;
  unsigned ia_bits;
  u64 sl0;
  unsigned tables;  // concatenated root tables
};
// Valid shapes per granule (AArch64.S2InconsistentSL: ia in [levels*stride + shift + 1,
// that + stride - 1 + 4]), covering every start level, 1, 2 and 16 concatenated tables.
std::vector<S2Shape> s2_shapes(const Geo& g) {
  if (g.shift == 12)
    return {{0, 48, 0b10, 1}, {0, 40, 0b10, 1},  {1, 39, 0b01, 1},
            {1, 40, 0b01, 2}, {1, 43, 0b01, 16}, {2, 30, 0b00, 1},
            {2, 31, 0b00, 2}, {2, 34, 0b00, 16}, {2, 25, 0b00, 1}};
  if (g.shift == 14)
    return {{1, 47, 0b10, 1},  {1, 48, 0b10, 2}, {2, 36, 0b01, 1}, {2, 37, 0b01, 2},
            {2, 40, 0b01, 16}, {3, 25, 0b00, 1}, {3, 26, 0b00, 2}, {3, 29, 0b00, 16}};
  return {{1, 48, 0b10, 1}, {2, 42, 0b01, 1}, {2, 43, 0b01, 2},  {2, 46, 0b01, 16},
          {3, 29, 0b00, 1}, {3, 30, 0b00, 2}, {3, 33, 0b00, 16}, {3, 25, 0b00, 1}};
}

class RefMmuS2 : public ::testing::TestWithParam<Geo> {};
INSTANTIATE_TEST_SUITE_P(Granules, RefMmuS2, ::testing::Values(k4K, k16K, k64K), geo_name);

TEST_P(RefMmuS2, EveryStartLevelAndConcatenation) {
  const Geo g = GetParam();
  for (const S2Shape s : s2_shapes(g)) {
    SCOPED_TRACE(::testing::Message()
                 << "start " << s.start << " ia " << s.ia_bits << " tables " << s.tables);
    Tables tt(g);
    const u64 root = tt.alloc(page(g) * s.tables);
    // The top of the IPA space: its descriptor lives in the last concatenated table.
    const u64 ipa = ((u64{1} << s.ia_bits) - 1) & ~(page(g) - 1);
    const u64 pa = 0x2'0000'0000ull;
    tt.chain(root, s.ia_bits, s.start, 3, ipa, pa | kPage | kAf | kS2R | kS2W | memattr(0b1111));
    const Stage2Regs regs{vtcr(g, s.ia_bits, s.sl0), root | u64{0x42} << 48, false};
    const Translation t = translate_stage2(tt.mem(), regs, ipa | 0x10, Access::write);
    ASSERT_TRUE(t.ok()) << to_string(t);
    EXPECT_EQ(t.output_address, pa | 0x10);
    EXPECT_EQ(t.level, 3);
    EXPECT_EQ(t.walk.front().level, s.start);
    EXPECT_EQ(t.walk.front().table_pa, root);
    // The root descriptor for the top IPA is the last of the whole concatenated root.
    EXPECT_EQ(t.walk.front().desc_pa,
              root + 8 * ((u64{1} << (s.ia_bits - lshift(g, s.start))) - 1));
    ASSERT_EQ(t.walk.size(), static_cast<size_t>(4 - s.start));
    // IPA 0 is unmapped: translation fault at the start level (empty root descriptor), or at
    // level 3 for a level-3 start.
    const Translation miss = translate_stage2(tt.mem(), regs, 0, Access::read);
    EXPECT_EQ(miss.fault, FaultKind::translation);
    EXPECT_EQ(miss.level, s.start);
    // One past the IPA size: a level 0 translation fault, not one at the start level.
    const Translation out = translate_stage2(tt.mem(), regs, u64{1} << s.ia_bits, Access::read);
    EXPECT_EQ(out.fault, FaultKind::translation);
    EXPECT_EQ(out.level, 0);
    EXPECT_TRUE(out.walk.empty());
  }
}

TEST_P(RefMmuS2, InconsistentOrReservedSl0FaultsAtLevel0) {
  const Geo g = GetParam();
  Tables tt(g);
  const u64 root = tt.alloc(page(g) * 16);
  struct Bad {
    unsigned ia;
    u64 sl0;
    unsigned pa_bits;
  };
  std::vector<Bad> bad;
  if (g.shift == 12)
    bad = {{44, 0b01, 48},   // level 1 would need 32 concatenated tables
           {39, 0b10, 48},   // level 0 for 39 bits: level 0 resolves nothing
           {35, 0b00, 48},   // level 2 would need 32 tables
           {40, 0b11, 48},   // SL0 = 0b11: level 3 only with FEAT_TTST
           {40, 0b10, 40},   // SL0 = 0b10 (level 0) reserved with PAMax < 44
           {30, 0b01, 48}};  // level 1 for 30 bits: too small
  else if (g.shift == 14)
    bad = {{41, 0b01, 48}, {36, 0b10, 48}, {30, 0b00, 48}, {48, 0b11, 48}, {42, 0b10, 40}};
  else
    bad = {{47, 0b01, 48}, {42, 0b10, 48}, {34, 0b00, 48}, {48, 0b11, 48}, {44, 0b10, 42}};
  for (const Bad b : bad) {
    ImplChoices impl;
    impl.pa_bits = b.pa_bits;
    const Translation t = translate_stage2(tt.mem(), {vtcr(g, b.ia, b.sl0), root, false}, 0,
                                           Access::read, false, impl);
    EXPECT_EQ(t.fault, FaultKind::translation)
        << "ia " << b.ia << " sl0 " << b.sl0 << " pa " << b.pa_bits;
    EXPECT_EQ(t.level, 0);
    EXPECT_TRUE(t.walk.empty());
  }
  // The good neighbour of the first bad case walks (and faults on the empty root instead).
  const S2Shape s = s2_shapes(g).front();
  const Translation ok =
      translate_stage2(tt.mem(), {vtcr(g, s.ia_bits, s.sl0), root, false}, 0, Access::read);
  EXPECT_EQ(ok.level, s.start);
  EXPECT_EQ(ok.walk.size(), 1u);
}

TEST_P(RefMmuS2, ConcatenatedRootAlignment) {
  const Geo g = GetParam();
  const std::vector<S2Shape> shapes = s2_shapes(g);
  for (const S2Shape s : shapes) {
    if (s.tables == 1) continue;
    SCOPED_TRACE(::testing::Message() << "tables " << s.tables);
    Tables tt(g);
    const u64 root = tt.alloc(page(g) * s.tables);
    const u64 ipa = u64{1} << (s.ia_bits - 1);  // first IPA of the second half
    tt.chain(root, s.ia_bits, s.start, 3, ipa, 0x5555'0000ull << 4 | kPage | kAf | kS2R);
    // VTTBR pointing one table into the root: BADDR bits below the root's size are RES0 and
    // treated as zero (K1.2.5; AArch64.S2TTBaseAddress aligns to the whole root).
    const Translation t = translate_stage2(
        tt.mem(), {vtcr(g, s.ia_bits, s.sl0), root + page(g), false}, ipa, Access::read);
    ASSERT_TRUE(t.ok()) << to_string(t);
    EXPECT_TRUE(t.unpredictable);
    EXPECT_EQ(t.walk.front().table_pa, root);
    EXPECT_EQ(t.output_address, 0x5555'0000ull << 4);
  }
}

// Tables D8-76 (S2AP), D8-77 and D8-78 (XN without and with FEAT_XNX).
TEST_P(RefMmuS2, PermissionMatrix) {
  const Geo g = GetParam();
  const S2Shape s = s2_shapes(g).front();
  for (u64 s2ap = 0; s2ap < 4; ++s2ap) {
    for (u64 xn = 0; xn < 4; ++xn) {
      Tables tt(g);
      const u64 root = tt.alloc(page(g) * s.tables);
      const u64 ipa = u64{0x42} << g.shift;
      tt.chain(root, s.ia_bits, s.start, 3, ipa,
               0x77'0000ull << g.shift | kPage | kAf | s2ap << 6 | xn << 53 | memattr(0b1111));
      for (bool xnx : {false, true}) {
        for (bool el0 : {false, true}) {
          SCOPED_TRACE(::testing::Message()
                       << "s2ap " << s2ap << " xn " << xn << " xnx " << xnx << " el0 " << el0);
          const bool r = s2ap & 1, w = s2ap & 2;
          bool x;
          if (!xnx) {
            x = (xn & 0b10) == 0;  // D8-77: bit 54 alone; bit 53 RES0 (ignored)
          } else {
            // D8-78: 00 both, 01 EL0 only, 10 neither, 11 EL1 only.
            constexpr bool kEl1[4] = {true, false, false, true};
            constexpr bool kEl0[4] = {true, true, false, false};
            x = el0 ? kEl0[xn] : kEl1[xn];
          }
          const Stage2Regs regs{vtcr(g, s.ia_bits, s.sl0), root, false, xnx};
          const std::array<std::pair<Access, bool>, 3> cases{
              {{Access::read, r}, {Access::write, w}, {Access::exec, x}}};
          for (const auto& [access, allowed] : cases) {
            const Translation t = translate_stage2(tt.mem(), regs, ipa, access, el0);
            EXPECT_EQ(t.readable, r);
            EXPECT_EQ(t.writable, w);
            EXPECT_EQ(t.executable, x);
            if (allowed) {
              EXPECT_TRUE(t.ok()) << name(access) << " " << to_string(t);
            } else {
              EXPECT_EQ(t.fault, FaultKind::permission) << name(access);
              EXPECT_EQ(t.level, 3);
            }
          }
        }
      }
    }
  }
}

TEST_P(RefMmuS2, MemAttrWithAndWithoutFwb) {
  const Geo g = GetParam();
  const S2Shape s = s2_shapes(g).front();
  using arch::Cacheability;
  using arch::DeviceKind;
  struct Case {
    u64 memattr;
    bool fwb;
    bool device;
    DeviceKind kind;
    Cacheability outer, inner;
    bool from_stage1, reserved;
  };
  const Case cases[] = {
      // FWB = 0 (D8.6.5): [3:2] outer, [1:0] inner; outer 00 = Device, [1:0] its kind.
      {0b0000, false, true, DeviceKind::ngnrne, Cacheability::non_cacheable,
       Cacheability::non_cacheable, false, false},
      {0b0001, false, true, DeviceKind::ngnre, Cacheability::non_cacheable,
       Cacheability::non_cacheable, false, false},
      {0b0011, false, true, DeviceKind::gre, Cacheability::non_cacheable,
       Cacheability::non_cacheable, false, false},
      {0b0101, false, false, DeviceKind::ngnrne, Cacheability::non_cacheable,
       Cacheability::non_cacheable, false, false},
      {0b1010, false, false, DeviceKind::ngnrne, Cacheability::write_through,
       Cacheability::write_through, false, false},
      {0b1111, false, false, DeviceKind::ngnrne, Cacheability::write_back, Cacheability::write_back,
       false, false},
      {0b1101, false, false, DeviceKind::ngnrne, Cacheability::write_back,
       Cacheability::non_cacheable, false, false},
      {0b0100, false, false, DeviceKind::ngnrne, Cacheability::non_cacheable,
       Cacheability::non_cacheable, false, true},
      // FWB = 1: [2] = 0 Device ([1:0] kind); 101 NC, 110 WB, 111 stage-1 attributes; [3] RES0.
      {0b0000, true, true, DeviceKind::ngnrne, Cacheability::non_cacheable,
       Cacheability::non_cacheable, false, false},
      {0b0001, true, true, DeviceKind::ngnre, Cacheability::non_cacheable,
       Cacheability::non_cacheable, false, false},
      {0b0101, true, false, DeviceKind::ngnrne, Cacheability::non_cacheable,
       Cacheability::non_cacheable, false, false},
      {0b0110, true, false, DeviceKind::ngnrne, Cacheability::write_back, Cacheability::write_back,
       false, false},
      {0b0111, true, false, DeviceKind::ngnrne, Cacheability::non_cacheable,
       Cacheability::non_cacheable, true, false},
      {0b0100, true, false, DeviceKind::ngnrne, Cacheability::non_cacheable,
       Cacheability::non_cacheable, false, true},
      // 0b1111 means Normal WB without FWB, but is reserved (bit 3 set) with FWB.
      {0b1111, true, false, DeviceKind::ngnrne, Cacheability::non_cacheable,
       Cacheability::non_cacheable, true, true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << "memattr " << c.memattr << " fwb " << c.fwb);
    Tables tt(g);
    const u64 root = tt.alloc(page(g) * s.tables);
    const u64 ipa = u64{9} << g.shift;
    tt.chain(root, s.ia_bits, s.start, 3, ipa,
             0x123ull << 32 | kPage | kAf | kS2R | memattr(c.memattr));
    const Translation t =
        translate_stage2(tt.mem(), {vtcr(g, s.ia_bits, s.sl0), root, c.fwb}, ipa, Access::read);
    ASSERT_TRUE(t.ok()) << to_string(t);
    EXPECT_EQ(t.attrs.device, c.device);
    EXPECT_EQ(t.attrs.reserved, c.reserved);
    EXPECT_EQ(t.unpredictable, c.reserved);
    if (c.reserved) continue;
    EXPECT_EQ(t.attrs.from_stage1, c.from_stage1);
    if (c.device) {
      EXPECT_EQ(t.attrs.device_kind, c.kind);
    } else if (!c.from_stage1) {
      EXPECT_EQ(t.attrs.outer, c.outer);
      EXPECT_EQ(t.attrs.inner, c.inner);
    }
  }
}

TEST_P(RefMmuS2, FaultsOfEveryKind) {
  const Geo g = GetParam();
  for (const S2Shape s : s2_shapes(g)) {
    SCOPED_TRACE(::testing::Message()
                 << "start " << s.start << " ia " << s.ia_bits << " tables " << s.tables);
    const u64 ipa = (u64{1} << (s.ia_bits - 1)) | (u64{3} << g.shift);
    const u64 root_bytes = page(g) * s.tables;
    auto regs = [&](u64 root, u64 ps = kPs48) {
      return Stage2Regs{vtcr(g, s.ia_bits, s.sl0, ps), root, true};
    };
    // Translation fault at each level, external abort at each level below the root.
    for (int level = s.start; level <= 3; ++level) {
      Tables tt(g);
      const u64 root = tt.alloc(root_bytes);
      if (level > s.start)
        tt.chain(root, s.ia_bits, s.start, level - 1, ipa, tt.alloc() | kTable);
      Translation t = translate_stage2(tt.mem(), regs(root), ipa, Access::read);
      EXPECT_EQ(t.fault, FaultKind::translation);
      EXPECT_EQ(t.level, level);
      if (level > s.start) {
        tt.chain(root, s.ia_bits, s.start, level - 1, ipa, 0x3000'0000 | kTable);  // unbacked
        t = translate_stage2(tt.mem(), regs(root), ipa, Access::read);
        EXPECT_EQ(t.fault, FaultKind::external_abort);
        EXPECT_EQ(t.level, level);
      }
    }
    // Address size: VTTBR, a table address at each table level, an output address (PS = 40
    // bits).
    Tables tt(g);
    Translation t = translate_stage2(tt.mem(), regs(u64{1} << 41, kPs40), ipa, Access::read);
    EXPECT_EQ(t.fault, FaultKind::address_size);
    EXPECT_EQ(t.level, 0);
    EXPECT_TRUE(t.walk.empty());
    for (int level = s.start; level < 3; ++level) {
      Tables ta(g);
      const u64 root = ta.alloc(root_bytes);
      ta.chain(root, s.ia_bits, s.start, level, ipa, u64{1} << 40 | kTable);
      t = translate_stage2(ta.mem(), regs(root, kPs40), ipa, Access::read);
      EXPECT_EQ(t.fault, FaultKind::address_size);
      EXPECT_EQ(t.level, level);
    }
    const u64 root = tt.alloc(root_bytes);
    tt.chain(root, s.ia_bits, s.start, 3, ipa, u64{0xff} << 40 | kPage | kAf | kS2R);
    t = translate_stage2(tt.mem(), regs(root, kPs40), ipa, Access::read);
    EXPECT_EQ(t.fault, FaultKind::address_size);
    EXPECT_EQ(t.level, 3);
    // Address size (level 3) outranks access flag: clear AF, still address size.
    tt.chain(root, s.ia_bits, s.start, 3, ipa, u64{0xff} << 40 | kPage | kS2R);
    EXPECT_EQ(translate_stage2(tt.mem(), regs(root, kPs40), ipa, Access::read).fault,
              FaultKind::address_size);
    // In range: access flag fault; with HA none, and AF reported as set by hardware.
    tt.chain(root, s.ia_bits, s.start, 3, ipa, u64{0xff} << 32 | kPage | kS2R);
    t = translate_stage2(tt.mem(), regs(root, kPs40), ipa, Access::write);
    EXPECT_EQ(t.fault, FaultKind::access_flag);
    EXPECT_EQ(t.level, 3);
    Stage2Regs ha = regs(root, kPs40);
    ha.vtcr |= kTcrHa;
    t = translate_stage2(tt.mem(), ha, ipa, Access::read);
    ASSERT_TRUE(t.ok()) << to_string(t);
    EXPECT_TRUE(t.af_set_by_hw);
    t = translate_stage2(tt.mem(), ha, ipa, Access::write);
    EXPECT_EQ(t.fault, FaultKind::permission);
    EXPECT_FALSE(t.af_set_by_hw);
  }
}

TEST_P(RefMmuS2, BlocksAtEachAllowedLevel) {
  const Geo g = GetParam();
  for (const S2Shape s : s2_shapes(g)) {
    for (int level = s.start; level <= 3; ++level) {
      SCOPED_TRACE(::testing::Message()
                   << "start " << s.start << " ia " << s.ia_bits << " level " << level);
      Tables tt(g);
      const u64 root = tt.alloc(page(g) * s.tables);
      const u64 bsize = lsize(g, level);
      const u64 ipa = (((u64{1} << s.ia_bits) - 1) & ~(bsize - 1)) | (bsize - 8);
      const u64 base = (u64{1} << 42) & ~(bsize - 1);
      tt.chain(root, s.ia_bits, s.start, level, ipa, base | kBlock | kAf | kS2R);
      const Translation t =
          translate_stage2(tt.mem(), {vtcr(g, s.ia_bits, s.sl0), root, false}, ipa, Access::read);
      const bool allowed =
          (g.shift == 12 && (level == 1 || level == 2)) || (g.shift != 12 && level == 2);
      if (allowed) {
        ASSERT_TRUE(t.ok()) << to_string(t);
        EXPECT_EQ(t.output_address, base + bsize - 8);
        EXPECT_EQ(t.block_size, bsize);
      } else {
        EXPECT_EQ(t.fault, FaultKind::translation);
        EXPECT_EQ(t.level, level);
      }
    }
  }
}

TEST_P(RefMmuS2, SoftwareBitsContiguousAndDeviceFetch) {
  const Geo g = GetParam();
  const S2Shape s = s2_shapes(g).front();
  Tables tt(g);
  const u64 root = tt.alloc(page(g) * s.tables);
  const u64 ipa = u64{5} << g.shift;
  tt.chain(
      root, s.ia_bits, s.start, 3, ipa,
      0x0a00'0000ull | kPage | kAf | kS2R | sw_bits(0b0110) | kContig | memattr(0b0001) | kShInner);
  const Stage2Regs regs{vtcr(g, s.ia_bits, s.sl0), root, false};
  Translation t = translate_stage2(tt.mem(), regs, ipa, Access::read);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t.sw, 0b0110);
  EXPECT_TRUE(t.contiguous);
  // A lone entry with the hint is a run whose other entries are invalid: misprogrammed.
  EXPECT_TRUE(t.contiguous_misprogrammed);
  EXPECT_EQ(t.sh, arch::Shareability::inner);
  EXPECT_TRUE(t.attrs.device);
  // A fetch from Device memory that XN allows: CONSTRAINED UNPREDICTABLE.
  t = translate_stage2(tt.mem(), regs, ipa, Access::exec);
  EXPECT_TRUE(t.ok());
  EXPECT_TRUE(t.unpredictable);
  ImplChoices faults;
  faults.device_fetch_faults = true;
  EXPECT_EQ(translate_stage2(tt.mem(), regs, ipa, Access::exec, false, faults).fault,
            FaultKind::permission);
}

// The Contiguous bit (Arm ARM D8.6.1): the run length per granule and level, written here
// from the architecture's table: 4K 16 at levels 1-3; 16K 32 at level 2, 128 at level 3; 64K 32
// at levels 2 and 3.
unsigned contig_run(const Geo& g, int level) {
  if (g.shift == 12) return 16;
  if (g.shift == 14) return level == 2 ? 32 : 128;
  return 32;
}

// A well-formed run translates normally; each way of breaking one of the run's rules (an
// entry invalid, a table, without the hint, with other permissions or attributes, output
// addresses out of order, the run's output not aligned) is reported, read through an entry
// other than the broken one; software bits may differ.
TEST_P(RefMmuS2, ContiguousRunsAreCheckedWholeAtEveryLevel) {
  const Geo g = GetParam();
  const S2Shape s = s2_shapes(g).front();
  enum class Break { none, invalid, table, no_hint, perms, memattr, order, misaligned, sw };
  for (int level : leaf_levels(g)) {
    const unsigned n = contig_run(g, level);
    const u64 size = lsize(g, level);
    const u64 run = size * n;
    const u64 ipa = run * 3;
    const u64 oa = run * 5;
    for (Break b : {Break::none, Break::invalid, Break::table, Break::no_hint, Break::perms, Break::memattr,
                    Break::order, Break::misaligned, Break::sw}) {
      if (b == Break::table && level == 3) continue;  // no table descriptor at level 3
      SCOPED_TRACE(::testing::Message() << "level " << level << " break " << static_cast<int>(b));
      Tables tt(g);
      const u64 root = tt.alloc(page(g) * s.tables);
      const u64 attrs = leaf_type(level) | kAf | kS2R | memattr(0b1111) | kShInner | kContig;
      const u64 first = tt.chain(root, s.ia_bits, s.start, level, ipa, oa | attrs);
      const u64 idx0 = tt.index(s.ia_bits, s.start, level, ipa);
      ASSERT_EQ(idx0 % n, 0u);
      const u64 shift_oa = b == Break::misaligned ? size : 0;
      for (unsigned j = 0; j < n; ++j) tt.put(first, idx0 + j, (oa + shift_oa + j * size) | attrs);
      const unsigned k = n - 1;  // the entry broken; entry 0 is read
      const u64 good = (oa + shift_oa + k * size) | attrs;
      switch (b) {
        case Break::none:
        case Break::misaligned: break;
        case Break::invalid: tt.put(first, idx0 + k, 0); break;
        case Break::table: tt.put(first, idx0 + k, tt.alloc() | kTable); break;
        case Break::no_hint: tt.put(first, idx0 + k, good & ~kContig); break;
        case Break::perms: tt.put(first, idx0 + k, good | kS2W); break;
        case Break::memattr: tt.put(first, idx0 + k, (good & ~memattr(0b1111)) | memattr(0b0101)); break;
        case Break::order: tt.put(first, idx0 + k, good + size); break;
        case Break::sw: tt.put(first, idx0 + k, good | sw_bits(0b1001)); break;
      }
      const Translation t =
          translate_stage2(tt.mem(), {vtcr(g, s.ia_bits, s.sl0), root, false}, ipa + 0x18, Access::read);
      ASSERT_TRUE(t.ok()) << to_string(t);
      EXPECT_TRUE(t.contiguous);
      EXPECT_EQ(t.output_address, oa + shift_oa + 0x18);
      const bool bad = b != Break::none && b != Break::sw;
      EXPECT_EQ(t.contiguous_misprogrammed, bad) << to_string(t);
      EXPECT_EQ(t.unpredictable, bad) << to_string(t);
      if (bad) {
        EXPECT_NE(to_string(t).find("contiguous run misprogrammed"), std::string::npos);
      }
      // The same entries without the hint anywhere: nothing to check, nothing reported.
      if (b == Break::none) {
        for (unsigned j = 0; j < n; ++j) tt.put(first, idx0 + j, ((oa + j * size) | attrs) & ~kContig);
        tt.put(first, idx0 + k, 0);
        const Translation u =
            translate_stage2(tt.mem(), {vtcr(g, s.ia_bits, s.sl0), root, false}, ipa, Access::read);
        EXPECT_FALSE(u.contiguous_misprogrammed);
        EXPECT_FALSE(u.unpredictable);
      }
    }
  }
}

// Stage 1 reads the hint the same way (one case: a run at the last level with one entry
// lacking it).
TEST_P(RefMmuS1, ContiguousRunIsCheckedAtStage1) {
  const Geo g = GetParam();
  const S1Shape s = s1_shapes(g).front();
  const unsigned n = contig_run(g, 3);
  Tables tt(g);
  const u64 root = tt.alloc();
  const u64 va = page(g) * n * 7;
  const u64 oa = page(g) * n * 9;
  const u64 attrs = kPage | kAf | kS1Ap1 | attr_index(0) | kShInner | kContig;
  const u64 table = tt.chain(root, s.ia_bits, s.start, 3, va, oa | attrs);
  const u64 idx0 = tt.index(s.ia_bits, s.start, 3, va);
  for (unsigned j = 0; j < n; ++j) tt.put(table, idx0 + j, (oa + j * page(g)) | attrs);
  Translation t = translate_stage1_el2(tt.mem(), {tcr(g, s.ia_bits), kMair, root}, va, Access::read);
  ASSERT_TRUE(t.ok());
  EXPECT_FALSE(t.contiguous_misprogrammed) << to_string(t);
  tt.put(table, idx0 + 1, ((oa + page(g)) | attrs) & ~kContig);
  t = translate_stage1_el2(tt.mem(), {tcr(g, s.ia_bits), kMair, root}, va, Access::read);
  EXPECT_TRUE(t.contiguous_misprogrammed) << to_string(t);
}

// Access flag, permission and address size faults on a stage-2 leaf at every level that can
// hold one, for every start level and concatenation that reaches it; each at the leaf's level.
TEST_P(RefMmuS2, LeafFaultsAtEveryLeafLevel) {
  const Geo g = GetParam();
  int covered = 0;
  for (const S2Shape s : s2_shapes(g)) {
    for (const int level : leaf_levels(g)) {
      if (level < s.start) continue;
      ++covered;
      SCOPED_TRACE(::testing::Message() << "start " << s.start << " ia " << s.ia_bits
                                        << " tables " << s.tables << " leaf level " << level);
      const u64 ipa = top_ia(g, s.ia_bits, level);
      const u64 off = ipa & (lsize(g, level) - 1);
      const size_t steps = static_cast<size_t>(level - s.start + 1);
      auto at = [&](u64 leaf, u64 vtcr_value, Access a) {
        Tables tt(g);
        const u64 root = tt.alloc(page(g) * s.tables);
        tt.chain(root, s.ia_bits, s.start, level, ipa, leaf);
        return translate_stage2(tt.mem(), {vtcr_value, root, false}, ipa, a);
      };
      const u64 type = leaf_type(level);
      const u64 v48 = vtcr(g, s.ia_bits, s.sl0);
      // Access flag.
      const u64 no_af = kLeafPa | type | kS2R | kS2W | memattr(0b1111);
      for (const Access a : {Access::read, Access::write, Access::exec}) {
        const Translation t = at(no_af, v48, a);
        EXPECT_EQ(t.fault, FaultKind::access_flag) << name(a) << " " << to_string(t);
        EXPECT_EQ(t.level, level);
        EXPECT_EQ(t.descriptor, no_af);
        EXPECT_EQ(t.walk.size(), steps);
      }
      Translation t = at(no_af, v48 | kTcrHa, Access::write);
      ASSERT_TRUE(t.ok()) << to_string(t);
      EXPECT_TRUE(t.af_set_by_hw);
      EXPECT_EQ(t.level, level);
      EXPECT_EQ(t.block_size, lsize(g, level));
      EXPECT_EQ(t.output_address, kLeafPa + off);
      // Permission: read-only execute-never, then write-only.
      const u64 ro_xn = kLeafPa | type | kAf | kS2R | kXn | memattr(0b1111);
      t = at(ro_xn, v48, Access::read);
      ASSERT_TRUE(t.ok()) << to_string(t);
      EXPECT_EQ(t.output_address, kLeafPa + off);
      for (const Access a : {Access::write, Access::exec}) {
        t = at(ro_xn, v48, a);
        EXPECT_EQ(t.fault, FaultKind::permission) << name(a) << " " << to_string(t);
        EXPECT_EQ(t.level, level);
        EXPECT_EQ(t.descriptor, ro_xn);
      }
      const u64 wo = kLeafPa | type | kAf | kS2W | memattr(0b1111);
      EXPECT_TRUE(at(wo, v48, Access::write).ok());
      t = at(wo, v48, Access::read);
      EXPECT_EQ(t.fault, FaultKind::permission) << to_string(t);
      EXPECT_EQ(t.level, level);
      // Address size: output address 2^40 with PS = 40 bits, outranking the access flag.
      const u64 v40 = vtcr(g, s.ia_bits, s.sl0, kPs40);
      const u64 high = (u64{1} << 40) | type | kS2R;
      for (const u64 leaf : {high | kAf, high}) {
        t = at(leaf, v40, Access::read);
        EXPECT_EQ(t.fault, FaultKind::address_size) << to_string(t);
        EXPECT_EQ(t.level, level);
        EXPECT_EQ(t.walk.size(), steps);
      }
      EXPECT_TRUE(at(kLeafPa | type | kAf | kS2R, v40, Access::read).ok());
    }
  }
  EXPECT_GE(covered, g.shift == 12 ? 10 : 8);
}

TEST(RefMmuS2Encodings, FourKTwoConcatenatedTablesLiteral) {
  // 4K, 40-bit IPA, SL0 = 1 (level 1, two concatenated tables): VTCR_EL2 = 0x8005'3558
  // without VS/HA (T0SZ 24, SL0 01, IRGN/ORGN WBWA, SH inner, PS 48 bits, RES1 bit 31).
  Tables tt(k4K);
  const u64 root = tt.alloc(0x2000), l2 = tt.alloc(), l3 = tt.alloc();
  tt.put(root, 512 + 3, l2 | 0x3);  // IPA[39:30] = 0x203 (second table, entry 3)
  tt.put(l2, 0, l3 | 0x3);
  tt.put(l3, 1, 0x0000'0001'2345'f4c3ull);    // page 0x1_2345_f000, AF, S2AP RW (0xc0), MemAttr 0
  tt.put(root, 7, 0x0000'0000'c000'07fdull);  // 1 GiB block at 0xc000_0000, MemAttr 0b1111, RW
  const Stage2Regs regs{0x8005'3558ull, root | 0x0001'0000'0000'0000ull, false};
  Translation t = translate_stage2(tt.mem(), regs, 0x80'c000'1234ull, Access::write);
  ASSERT_TRUE(t.ok()) << to_string(t);
  EXPECT_EQ(t.output_address, 0x1'2345'f234ull);
  EXPECT_TRUE(t.attrs.device);
  t = translate_stage2(tt.mem(), regs, 0x1'c123'4567ull, Access::read);
  ASSERT_TRUE(t.ok()) << to_string(t);
  EXPECT_EQ(t.output_address, 0xc123'4567ull);
  EXPECT_EQ(t.level, 1);
  EXPECT_EQ(t.attrs.inner, arch::Cacheability::write_back);
  EXPECT_EQ(to_string(translate_stage2(tt.mem(), regs, 0x100'0000'0000ull, Access::read)),
            "fault translation level 0: IPA above the configured input size (T0SZ)");
}

// Property: inside a hand-built stage-2 block of any granule, every page-aligned offset
// translates to block base + offset, with the block's permissions.
RC_GTEST_PROP(RefMmuS2Property, BlockOffsetsTranslateToBasePlusOffset, ()) {
  const int gi = *rc::gen::inRange(0, 3);
  const Geo g = gi == 0 ? k4K : gi == 1 ? k16K : k64K;
  const u64 sl0 = gi == 0 ? 0b00 : 0b01;  // level 2
  // Level 2 blocks exist for every granule; use the shape starting at level 2 with 1 table.
  const unsigned ia = g.shift == 12 ? 30 : g.shift == 14 ? 36 : 42;
  Tables tt(g);
  const u64 root = tt.alloc();
  const u64 bsize = lsize(g, 2);
  const u64 nblocks = u64{1} << (ia - lshift(g, 2));
  const u64 bi = *rc::gen::inRange<u64>(0, nblocks);
  const u64 base = *rc::gen::inRange<u64>(0, u64{1} << (40 - lshift(g, 2))) << lshift(g, 2);
  tt.put(root, bi, base | kBlock | kAf | kS2R);
  const u64 pages = bsize >> g.shift;
  const u64 off = *rc::gen::inRange<u64>(0, pages) << g.shift;
  const Translation t =
      translate_stage2(tt.mem(), {vtcr(g, ia, sl0), root, true}, bi * bsize + off, Access::read);
  RC_ASSERT(t.ok());
  RC_ASSERT(t.output_address == base + off);
  RC_ASSERT(t.block_size == bsize);
  RC_ASSERT(!t.writable);
  RC_ASSERT(
      translate_stage2(tt.mem(), {vtcr(g, ia, sl0), root, true}, bi * bsize + off, Access::write)
          .fault == FaultKind::permission);
}


// =============================================================================================
// End to end: arch/'s register builders, read by the oracle's own decoding. The expected shape
// (start level, concatenated tables) is the test's own reading of the Arm ARM, not arch's.
// =============================================================================================
arch::Granule arch_granule(const Geo& g) {
  return g.shift == 12 ? arch::Granule::k4K : g.shift == 14 ? arch::Granule::k16K
                                                            : arch::Granule::k64K;
}

class RefMmuArchConfigs : public ::testing::TestWithParam<Geo> {};
INSTANTIATE_TEST_SUITE_P(Granules, RefMmuArchConfigs, ::testing::Values(k4K, k16K, k64K),
                         geo_name);

TEST_P(RefMmuArchConfigs, Stage2ConfigWalksAtBothEndsOfEveryIpaSize) {
  const Geo g = GetParam();
  for (unsigned ia = 25; ia <= 48; ++ia) {
    SCOPED_TRACE(::testing::Message() << "ia " << ia);
    const auto cfg = arch::make_stage2_config(arch_granule(g), ia, arch::CpuFeatures::modern());
    ASSERT_TRUE(cfg.has_value());
    const u64 v = cfg->vtcr;
    // VTCR_EL2 fields, as the register description places them.
    EXPECT_EQ(v & 0x3f, 64 - ia);             // T0SZ
    EXPECT_EQ((v >> 14) & 0b11, g.tg0);       // TG0
    EXPECT_EQ((v >> 16) & 0b111, kPs48);      // PS: 48 bits
    const u64 sl0 = (v >> 6) & 0b11;
    const int start = (g.shift == 12 ? 2 : 3) - static_cast<int>(sl0);
    const unsigned span = lshift(g, start) + g.stride;  // IA bits one root table resolves
    const u64 tables = ia > span ? u64{1} << (ia - span) : 1;
    ASSERT_LE(tables, 16u);
    EXPECT_EQ(cfg->geometry.start_level, start);
    EXPECT_EQ(cfg->geometry.root_tables, tables);
    Tables tt(g);
    const u64 root = tt.alloc(page(g) * tables);
    const u64 lo = 0x48, hi = (u64{1} << ia) - page(g) + 0x80;
    const u64 pa_lo = 0x12'3450'0000ull, pa_hi = 0xffff'ffff'0000ull;  // top of 48-bit PA
    // The low leaf has AF = 0: with HA (modern CPUs) the hardware sets it.
    tt.chain(root, ia, start, 3, lo, pa_lo | kPage | kS2R | kS2W | memattr(0b0110));
    tt.chain(root, ia, start, 3, hi, pa_hi | kPage | kAf | kS2R | memattr(0b0110));
    const Stage2Regs regs{v, root | u64{7} << 48, cfg->fwb};
    Translation t = translate_stage2(tt.mem(), regs, lo, Access::write);
    ASSERT_TRUE(t.ok()) << to_string(t);
    EXPECT_EQ(t.output_address, pa_lo | lo);
    EXPECT_TRUE(t.af_set_by_hw);
    EXPECT_EQ(t.walk.front().level, start);
    EXPECT_EQ(t.walk.size(), static_cast<size_t>(4 - start));
    EXPECT_EQ(t.attrs.inner, arch::Cacheability::write_back);  // FWB MemAttr 0b110
    t = translate_stage2(tt.mem(), regs, hi, Access::read);
    ASSERT_TRUE(t.ok()) << to_string(t);
    EXPECT_EQ(t.output_address, pa_hi | 0x80);
    EXPECT_FALSE(t.af_set_by_hw);
    EXPECT_EQ(t.walk.front().desc_pa, root + 8 * ((u64{1} << (ia - lshift(g, start))) - 1));
    t = translate_stage2(tt.mem(), regs, u64{1} << ia, Access::read);
    EXPECT_EQ(t.fault, FaultKind::translation) << to_string(t);
    EXPECT_EQ(t.level, 0);
    EXPECT_TRUE(t.walk.empty());
  }
}

TEST_P(RefMmuArchConfigs, Stage1ConfigWalksAtBothEndsOfEveryVaSize) {
  const Geo g = GetParam();
  for (unsigned ia = 25; ia <= 48; ++ia) {
    SCOPED_TRACE(::testing::Message() << "ia " << ia);
    const auto cfg = arch::make_stage1_config(arch_granule(g), ia, arch::CpuFeatures::modern());
    ASSERT_TRUE(cfg.has_value());
    const u64 tc = cfg->tcr;
    EXPECT_EQ(tc & 0x3f, 64 - ia);
    EXPECT_EQ((tc >> 14) & 0b11, g.tg0);
    EXPECT_EQ((tc >> 16) & 0b111, kPs48);
    // D8.2.6: the level whose table holds the top bit: 4 - ceil((ia - shift) / stride).
    const int start = 4 - static_cast<int>((ia - g.shift + g.stride - 1) / g.stride);
    EXPECT_EQ(cfg->start_level, start);
    Tables tt(g);
    const u64 root = tt.alloc();
    const u64 lo = 0x48, hi = (u64{1} << ia) - page(g) + 0x80;
    const u64 pa_lo = 0x12'3450'0000ull, pa_hi = 0xffff'ffff'0000ull;
    // cfg->mair: Attr0 Normal WB, Attr2 Device-nGnRE (memattr.hpp's slots, read here by the
    // oracle's own MAIR decoding).
    tt.chain(root, ia, start, 3, lo, pa_lo | kPage | kS1Ap1 | attr_index(0));  // AF = 0
    tt.chain(root, ia, start, 3, hi, pa_hi | kPage | kAf | kS1Ap1 | kXn | attr_index(2));
    const Stage1Regs regs{tc, cfg->mair, root};
    Translation t = translate_stage1_el2(tt.mem(), regs, lo, Access::write);
    ASSERT_TRUE(t.ok()) << to_string(t);
    EXPECT_EQ(t.output_address, pa_lo | lo);
    EXPECT_TRUE(t.af_set_by_hw);
    EXPECT_EQ(t.walk.front().level, start);
    EXPECT_EQ(t.walk.size(), static_cast<size_t>(4 - start));
    EXPECT_FALSE(t.attrs.device);
    EXPECT_EQ(t.attrs.inner, arch::Cacheability::write_back);
    EXPECT_EQ(t.attrs.outer, arch::Cacheability::write_back);
    t = translate_stage1_el2(tt.mem(), regs, hi, Access::read);
    ASSERT_TRUE(t.ok()) << to_string(t);
    EXPECT_EQ(t.output_address, pa_hi | 0x80);
    EXPECT_TRUE(t.attrs.device);
    EXPECT_EQ(t.attrs.device_kind, arch::DeviceKind::ngnre);
    EXPECT_FALSE(t.unpredictable);
    t = translate_stage1_el2(tt.mem(), regs, u64{1} << ia, Access::read);
    EXPECT_EQ(t.fault, FaultKind::translation) << to_string(t);
    EXPECT_EQ(t.level, 0);
    EXPECT_TRUE(t.walk.empty());
  }
}

// The conservative CpuFeatures{} (40-bit PA, no HA): PS says 40 bits and AF = 0 faults.
TEST_P(RefMmuArchConfigs, ConservativeCpuGivesFortyBitPsAndNoHardwareAf) {
  const Geo g = GetParam();
  for (unsigned ia = 25; ia <= 40; ++ia) {
    SCOPED_TRACE(::testing::Message() << "ia " << ia);
    const auto s2 = arch::make_stage2_config(arch_granule(g), ia, arch::CpuFeatures{});
    const auto s1 = arch::make_stage1_config(arch_granule(g), ia, arch::CpuFeatures{});
    ASSERT_TRUE(s2.has_value() && s1.has_value());
    const u64 va = 0x40;
    // Stage 2.
    {
      const int start = (g.shift == 12 ? 2 : 3) - static_cast<int>((s2->vtcr >> 6) & 0b11);
      Tables tt(g);
      const u64 root = tt.alloc(page(g) * 16);
      tt.chain(root, ia, start, 3, va, (u64{1} << 40) | kPage | kAf | kS2R);
      const Stage2Regs regs{s2->vtcr, root, s2->fwb};
      EXPECT_EQ(translate_stage2(tt.mem(), regs, va, Access::read).fault, FaultKind::address_size);
      tt.chain(root, ia, start, 3, va, (u64{1} << 39) | kPage | kS2R);
      EXPECT_EQ(translate_stage2(tt.mem(), regs, va, Access::read).fault, FaultKind::access_flag);
      tt.chain(root, ia, start, 3, va, (u64{1} << 39) | kPage | kAf | kS2R | memattr(0b1111));
      const Translation t = translate_stage2(tt.mem(), regs, va, Access::read);
      ASSERT_TRUE(t.ok()) << to_string(t);
      EXPECT_EQ(t.attrs.inner, arch::Cacheability::write_back);  // no FWB: MemAttr 0b1111
    }
    // Stage 1.
    {
      const int start = 4 - static_cast<int>((ia - g.shift + g.stride - 1) / g.stride);
      Tables tt(g);
      const u64 root = tt.alloc();
      tt.chain(root, ia, start, 3, va, (u64{1} << 40) | kPage | kAf | kS1Ap1);
      const Stage1Regs regs{s1->tcr, s1->mair, root};
      EXPECT_EQ(translate_stage1_el2(tt.mem(), regs, va, Access::read).fault,
                FaultKind::address_size);
      tt.chain(root, ia, start, 3, va, (u64{1} << 39) | kPage | kS1Ap1);
      EXPECT_EQ(translate_stage1_el2(tt.mem(), regs, va, Access::read).fault,
                FaultKind::access_flag);
    }
  }
}

// =============================================================================================
// Notes: the first reason stays first; every reason is kept.
// =============================================================================================
TEST(RefMmuNotes, FirstReasonIsKeptAndEveryReasonListed) {
  // 4K, 39-bit VA (start level 1): L1 -> L2 -> L3 read-only page.
  Tables tt(k4K);
  const u64 l1 = tt.alloc(), l2 = tt.alloc(), l3 = tt.alloc();
  tt.put(l1, 1, l2 | 0x3);
  tt.put(l2, 2, l3 | 0x3);
  tt.put(l3, 3, 0x0000'0000'8765'46c3ull);  // AF, SH inner, AP[2:1] = 0b11 (read-only)
  const u64 t39 = 25 | u64{0b101} << 16 | u64{1} << 23 | u64{1} << 31;
  // One reason: the fault's.
  Translation t = translate_stage1_el2(tt.mem(), {t39, kMair, l1}, 0x4040'3000ull, Access::write);
  EXPECT_EQ(t.fault, FaultKind::permission);
  EXPECT_EQ(t.note, "write not permitted");
  EXPECT_EQ(t.notes.size(), 1u);
  // A choice (misaligned TTBR, K1.2.5), then a fault: the choice stays first.
  t = translate_stage1_el2(tt.mem(), {t39, kMair, l1 | 0x10}, 0x4040'3000ull, Access::write);
  EXPECT_EQ(t.fault, FaultKind::permission);
  EXPECT_TRUE(t.unpredictable);
  EXPECT_EQ(t.note, "TTBR base not aligned to the initial table (K1.2.5): low bits treated as 0");
  ASSERT_EQ(t.notes.size(), 2u);
  EXPECT_EQ(t.notes[0], t.note);
  EXPECT_EQ(t.notes[1], "write not permitted");
  EXPECT_EQ(to_string(t),
            "fault permission level 3: TTBR base not aligned to the initial table (K1.2.5): low "
            "bits treated as 0; write not permitted");
  // Two choices: PS = 0b111 (reserved without FEAT_D128), then the misaligned TTBR.
  t = translate_stage1_el2(tt.mem(), {t39 | u64{0b111} << 16, kMair, l1 | 0x10}, 0x4040'3000ull,
                           Access::read);
  ASSERT_TRUE(t.ok()) << to_string(t);
  EXPECT_TRUE(t.unpredictable);
  EXPECT_EQ(t.note, "PS is reserved (0b111): OA size IMPLEMENTATION DEFINED, taken as PAMax");
  EXPECT_EQ(t.notes.size(), 2u);
  // Stage 2: T0SZ below 16 taken as 16 (a choice), then a level 0 fault for an IPA above 48
  // bits that it leads to.
  ImplChoices clamp;
  clamp.txsz_out_of_range_faults = false;
  const u64 vtcr_t0sz_8 = 8 | u64{0b10} << 6 | u64{0b101} << 16 | u64{1} << 31;
  t = translate_stage2(tt.mem(), {vtcr_t0sz_8, l1, false}, u64{1} << 50, Access::read, false,
                       clamp);
  EXPECT_EQ(t.fault, FaultKind::translation);
  EXPECT_EQ(t.level, 0);
  EXPECT_EQ(t.note, "T0SZ outside 16..39 (IMPLEMENTATION DEFINED: treated as the nearest limit)");
  ASSERT_EQ(t.notes.size(), 2u);
  EXPECT_EQ(t.notes[1], "IPA above the configured input size (T0SZ)");
}

}  // namespace
}  // namespace ptguard::sim
