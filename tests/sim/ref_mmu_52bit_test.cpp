// The reference MMU with 52-bit addresses (sim/ref_mmu.hpp), on tables written by hand with
// literal bit values, as in ref_mmu_test.cpp: FEAT_LPA2 (TCR_EL2.DS / VTCR_EL2.DS = 1, the 4KB
// and 16KB granules: OA[51:50] in descriptor bits [9:8], shareability from SH0, the level -1
// initial lookup with 4KB, level-0 blocks with 4KB and level-1 blocks with 16KB) and FEAT_LPA
// (the 64KB granule with a 52-bit PAMax: OA[51:48] in bits [15:12], level-1 blocks), and the
// TTBR's BADDR[51:48] in bits [5:2]. Arm ARM DDI 0487, D8.3.1 ("52-bit output addresses"),
// D8.2 (the level -1 lookup), and the TCR_EL2, VTCR_EL2 and VTTBR_EL2 descriptions in D24.2.
#include <gtest/gtest.h>

#include "ptguard/sim/ref_mmu.hpp"

namespace ptguard::sim {
namespace {

// Descriptor bits (D8.3.1).
constexpr u64 kTable = 0b11, kPage = 0b11, kBlock = 0b01;
constexpr u64 kAf = u64{1} << 10;
constexpr u64 kS2Rw = u64{0b11} << 6;        // S2AP read and write
constexpr u64 kS2NormalWb = u64{0b1111} << 2;  // MemAttr: Normal, outer and inner Write-Back
// VTCR_EL2 / TCR_EL2 fields (D24.2).
constexpr u64 kDs = u64{1} << 32;
constexpr u64 kSl2 = u64{1} << 33;
constexpr u64 kPs52 = u64{0b110} << 16, kPs48 = u64{0b101} << 16;
constexpr u64 kSh0Inner = u64{0b11} << 12;
constexpr u64 kTg4K = u64{0b00} << 14, kTg16K = u64{0b10} << 14, kTg64K = u64{0b01} << 14;
constexpr u64 kRes1 = u64{1} << 31;
constexpr u64 sl0(u64 v) { return v << 6; }
constexpr u64 t0sz(unsigned ia_bits) { return 64 - ia_bits; }

// An address held in a descriptor with DS = 1: bits [49:lo] in place, [51:50] in bits [9:8].
constexpr u64 ds_addr(u64 a) { return (a & 0x0003'ffff'ffff'f000ull) | ((a >> 50) & 0b11) << 8; }
// With FEAT_LPA and 64KB: bits [47:16] in place, [51:48] in bits [15:12].
constexpr u64 lpa_addr(u64 a) { return (a & 0x0000'ffff'ffff'0000ull) | ((a >> 48) & 0xf) << 12; }
// VTTBR_EL2 / TTBR0_EL2 with a 52-bit base: BADDR[47:6] in place, BADDR[51:48] in bits [5:2].
constexpr u64 ttbr52(u64 base) { return (base & 0x0000'ffff'ffff'ffc0ull) | ((base >> 48) & 0xf) << 2; }

// Table memory: some at 1 GiB, some above 2^50 (so table addresses need bits [51:50]).
constexpr u64 kLow = 0x4000'0000;
constexpr u64 kHigh = 0x000c'0000'0000'0000ull;  // bits 51:50 = 0b11
constexpr u64 kSize = 4ull << 20;

struct Mem {
  PhysMem mem;
  u64 next_low = kLow, next_high = kHigh;
  Mem() {
    EXPECT_TRUE(mem.add_region(kLow, kSize).has_value());
    EXPECT_TRUE(mem.add_region(kHigh, kSize).has_value());
  }
  u64 alloc(bool high, u64 bytes) {
    u64& n = high ? next_high : next_low;
    n = (n + bytes - 1) & ~(bytes - 1);
    const u64 pa = n;
    n += bytes;
    return pa;
  }
  void put(u64 table, u64 index, u64 desc) { EXPECT_TRUE(mem.write64(table + 8 * index, desc)); }
};

ImplChoices lpa2_cpu() {
  ImplChoices c;
  c.pa_bits = 52;
  c.lpa2 = true;
  return c;
}

// 4KB, 52-bit IPA (T0SZ 12), DS = 1, SL2 = 1 / SL0 = 0: the walk starts at level -1, whose
// table holds 16 entries (IPA[51:48]). The root and the level-0 table lie above 2^50, so the
// VTTBR's bits [5:2] and the table descriptor's bits [9:8] carry their top address bits.
struct FourKLpa2 {
  explicit FourKLpa2(bool high_tables = true) : high(high_tables) { build(); }
  bool high;
  Mem m;
  u64 root = m.alloc(high, 128);
  u64 l0 = m.alloc(high, 4096);
  u64 l1 = m.alloc(false, 4096), l2 = m.alloc(false, 4096), l3 = m.alloc(false, 4096);
  static constexpr u64 kIpa = 0x000a'bcde'f012'3000ull;
  static constexpr u64 kOa = 0x000b'1234'5678'9000ull;  // OA[51:50] = 0b10: bits [9:8] = 0b10
  u64 vtcr = t0sz(52) | sl0(0) | kSl2 | kDs | kTg4K | kPs52 | kSh0Inner | kRes1;

  void build() {
    auto idx = [](int level) { return (kIpa >> (12 + 9 * (3 - level))) & 0x1ff; };
    m.put(root, (kIpa >> 48) & 0xf, ds_addr(l0) | kTable);
    m.put(l0, idx(0), ds_addr(l1) | kTable);
    m.put(l1, idx(1), ds_addr(l2) | kTable);
    m.put(l2, idx(2), ds_addr(l3) | kTable);
    m.put(l3, idx(3), ds_addr(kOa) | kPage | kAf | kS2Rw | kS2NormalWb);
  }
  [[nodiscard]] Translation go(u64 ipa, const ImplChoices& cpu = lpa2_cpu()) const {
    return translate_stage2(m.mem, Stage2Regs{vtcr, ttbr52(root), true}, ipa, Access::write, false, cpu);
  }
};

TEST(RefMmu52, FourKLpa2WalksFromLevelMinusOneToA52BitPage) {
  const FourKLpa2 f;
  EXPECT_EQ(ttbr52(f.root), 0x30u) << "BADDR[51:48] = 0xc in bits [5:2], the rest zero";
  const Translation t = f.go(FourKLpa2::kIpa + 0x123);
  ASSERT_TRUE(t.ok()) << to_string(t);
  EXPECT_EQ(t.output_address, FourKLpa2::kOa + 0x123);
  EXPECT_EQ(t.level, 3);
  ASSERT_EQ(t.walk.size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(t.walk[static_cast<unsigned>(i)].level, i - 1);
  EXPECT_EQ(t.walk[0].table_pa, f.root);
  EXPECT_EQ(t.walk[1].table_pa, f.l0) << "the level-0 table's address bits [51:50] came from bits [9:8]";
  // Bits [9:8] of the page are OA[51:50] (0b10, which as SH would be Outer Shareable): the
  // shareability is VTCR_EL2.SH0's.
  EXPECT_EQ(t.sh, arch::Shareability::inner);
  EXPECT_TRUE(t.writable);
}

TEST(RefMmu52, FourKLpa2HasLevelZeroBlocksAndNoLevelMinusOneBlocks) {
  FourKLpa2 f;
  // A 512 GiB block at level 0 for IPA 0x0001_0000_0000_0000 (level -1 entry 1).
  constexpr u64 kIpa = 0x0001'0000'0000'0000ull, kOa = 0x000e'0000'0000'0000ull;
  const u64 l0b = f.m.alloc(false, 4096);
  f.m.put(f.root, 1, ds_addr(l0b) | kTable);
  f.m.put(l0b, 0, ds_addr(kOa) | kBlock | kAf | kS2Rw | kS2NormalWb);
  Translation t = f.go(kIpa + 0x12'3456'7000ull);
  ASSERT_TRUE(t.ok()) << to_string(t);
  EXPECT_EQ(t.level, 0);
  EXPECT_EQ(t.block_size, u64{1} << 39);
  EXPECT_EQ(t.output_address, kOa + 0x12'3456'7000ull);
  // A block descriptor at level -1 is reserved: Translation fault at level -1.
  f.m.put(f.root, 2, ds_addr(kOa) | kBlock | kAf | kS2Rw);
  t = f.go(0x0002'0000'0000'0000ull);
  EXPECT_EQ(t.fault, FaultKind::translation);
  EXPECT_EQ(t.level, -1);
}

TEST(RefMmu52, WithoutFeatLpa2DsIsRes0AndT0sz12IsOutOfRange) {
  const FourKLpa2 f;
  ImplChoices cpu;
  cpu.pa_bits = 52;  // FEAT_LPA's PA size, but no FEAT_LPA2: DS reads as 0
  const Translation t = f.go(FourKLpa2::kIpa, cpu);
  EXPECT_EQ(t.fault, FaultKind::translation);
  EXPECT_EQ(t.level, 0);
}

TEST(RefMmu52, Sl2WithAnotherSl0IsReserved) {
  FourKLpa2 f;
  f.vtcr = (f.vtcr & ~sl0(0b11)) | sl0(0b01);
  const Translation t = f.go(FourKLpa2::kIpa);
  EXPECT_EQ(t.fault, FaultKind::translation);
  EXPECT_EQ(t.level, 0);
  EXPECT_EQ(t.note, "VTCR_EL2.SL0 is a reserved value");
}

TEST(RefMmu52, A52BitOutputAddressNeedsPs52AndPaMax52) {
  // Tables below 2^48, the page above: with PS = 48 bits the page's address is too large, an
  // Address size fault at its level (RCVSBH).
  FourKLpa2 f(false);
  ASSERT_TRUE(f.go(FourKLpa2::kIpa).ok());
  f.vtcr = (f.vtcr & ~(u64{0b111} << 16)) | kPs48;
  Translation t = f.go(FourKLpa2::kIpa);
  EXPECT_EQ(t.fault, FaultKind::address_size);
  EXPECT_EQ(t.level, 3);
  // PS = 52 on a CPU whose PAMax is 48: the same.
  ImplChoices cpu = lpa2_cpu();
  cpu.pa_bits = 48;
  t = FourKLpa2(false).go(FourKLpa2::kIpa, cpu);
  EXPECT_EQ(t.fault, FaultKind::address_size);
  EXPECT_EQ(t.level, 3);
}

// 16KB with DS = 1: a 52-bit IPA starts at level 0 (SL0 = 0b11), whose table resolves
// IPA[51:47] (32 entries); level-1 blocks (64 GiB) exist only with DS.
TEST(RefMmu52, SixteenKLpa2StartsAtLevelZeroAndHasLevelOneBlocks) {
  Mem m;
  const u64 root = m.alloc(false, 32 * 8);
  const u64 l1 = m.alloc(true, 16384);
  constexpr u64 kIpa = 0x000f'8000'0000'0000ull;  // IPA[51:47] = 31
  constexpr u64 kOa = 0x0009'0000'0000'0000ull;   // 64 GiB aligned, OA[51:50] = 0b10
  m.put(root, 31, ds_addr(l1) | kTable);
  m.put(l1, 0, ds_addr(kOa) | kBlock | kAf | kS2Rw | kS2NormalWb);
  const u64 vtcr = t0sz(52) | sl0(0b11) | kDs | kTg16K | kPs52 | kSh0Inner | kRes1;
  Translation t = translate_stage2(m.mem, Stage2Regs{vtcr, ttbr52(root), true}, kIpa + 0x5678'9000ull,
                                   Access::read, false, lpa2_cpu());
  ASSERT_TRUE(t.ok()) << to_string(t);
  EXPECT_EQ(t.level, 1);
  EXPECT_EQ(t.block_size, u64{1} << 36);
  EXPECT_EQ(t.output_address, kOa + 0x5678'9000ull);
  EXPECT_EQ(t.walk.front().level, 0);
  // The same descriptor with DS = 0 (a 48-bit IPA, SL0 = 0b10: level 1): a level-1 block is
  // reserved with 16KB, a Translation fault at level 1.
  Mem m2;
  const u64 r2 = m2.alloc(false, 16384);
  m2.put(r2, 0, (kOa & 0x0000'ffff'ffff'ffffull) | kBlock | kAf | kS2Rw);
  const u64 vtcr48 = t0sz(47) | sl0(0b10) | kTg16K | kPs48 | kRes1;
  t = translate_stage2(m2.mem, Stage2Regs{vtcr48, r2, true}, 0x1234'5000ull, Access::read, false, lpa2_cpu());
  EXPECT_EQ(t.fault, FaultKind::translation);
  EXPECT_EQ(t.level, 1);
}

// 64KB with FEAT_LPA (PAMax 52): OA[51:48] in bits [15:12] of tables and leaves, a 52-bit IPA
// from level 1 (SL0 = 0b10, IPA[51:42]), level-1 blocks of 4 TiB.
TEST(RefMmu52, SixtyFourKLpaPutsOa51To48InBits15To12) {
  Mem m;
  const u64 root = m.alloc(false, 65536);
  const u64 l2 = m.alloc(true, 65536);
  constexpr u64 kIpa = 0x000f'fc00'0000'0000ull;  // IPA[51:42] = 1023
  constexpr u64 kOa = 0x000d'0000'2000'0000ull;   // 512 MiB aligned
  m.put(root, 1023, lpa_addr(l2) | kTable);
  m.put(l2, 0, lpa_addr(kOa) | kBlock | kAf | kS2Rw | kS2NormalWb);
  m.put(root, 5, lpa_addr(0x0003'0000'0000'0000ull) | kBlock | kAf | kS2Rw | kS2NormalWb);
  const u64 vtcr = t0sz(52) | sl0(0b10) | kTg64K | kPs52 | kRes1;
  ImplChoices cpu;
  cpu.pa_bits = 52;
  const Stage2Regs regs{vtcr, ttbr52(root), true};
  Translation t = translate_stage2(m.mem, regs, kIpa + 0x0123'4567ull, Access::read, false, cpu);
  ASSERT_TRUE(t.ok()) << to_string(t);
  EXPECT_EQ(t.level, 2);
  EXPECT_EQ(t.output_address, kOa + 0x0123'4567ull);
  EXPECT_EQ(t.walk[1].table_pa, l2);
  t = translate_stage2(m.mem, regs, (u64{5} << 42) + 0x10'0000'0000ull, Access::read, false, cpu);
  ASSERT_TRUE(t.ok()) << to_string(t);
  EXPECT_EQ(t.level, 1);
  EXPECT_EQ(t.block_size, u64{1} << 42);
  EXPECT_EQ(t.output_address, 0x0003'0010'0000'0000ull);
  // Without FEAT_LPA (PAMax 48) a 52-bit IPA is out of range (T0SZ below 16).
  cpu.pa_bits = 48;
  t = translate_stage2(m.mem, regs, kIpa, Access::read, false, cpu);
  EXPECT_EQ(t.fault, FaultKind::translation);
  EXPECT_EQ(t.level, 0);
}

// Stage 1 at EL2 with TCR_EL2.DS = 1: a 52-bit VA starts at level -1 as well.
TEST(RefMmu52, Stage1FourKLpa2WalksFromLevelMinusOne) {
  Mem m;
  const u64 root = m.alloc(false, 128);
  const u64 t0 = m.alloc(false, 4096), t1 = m.alloc(false, 4096), t2 = m.alloc(false, 4096),
            t3 = m.alloc(false, 4096);
  constexpr u64 kVa = 0x000f'f000'0020'1000ull, kPa = 0x0004'0000'0000'3000ull;
  auto idx = [](int level) { return (kVa >> (12 + 9 * (3 - level))) & 0x1ff; };
  m.put(root, 0xf, ds_addr(t0) | kTable);
  m.put(t0, idx(0), ds_addr(t1) | kTable);
  m.put(t1, idx(1), ds_addr(t2) | kTable);
  m.put(t2, idx(2), ds_addr(t3) | kTable);
  m.put(t3, idx(3), ds_addr(kPa) | kPage | kAf | (u64{1} << 6));  // AttrIndx 0, AP[1] RES1
  const u64 tcr = t0sz(52) | kTg4K | kPs52 | kSh0Inner | kDs | (u64{1} << 23) | kRes1;
  const Stage1Regs regs{tcr, 0xff, root, false};
  const Translation t = translate_stage1_el2(m.mem, regs, kVa + 0x42, Access::read, lpa2_cpu());
  ASSERT_TRUE(t.ok()) << to_string(t);
  EXPECT_EQ(t.output_address, kPa + 0x42);
  EXPECT_EQ(t.walk.front().level, -1);
  EXPECT_EQ(t.sh, arch::Shareability::inner);
}

}  // namespace
}  // namespace ptguard::sim
