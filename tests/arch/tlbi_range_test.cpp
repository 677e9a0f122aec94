// Range TLBI operands (FEAT_TLBIRANGE, Arm ARM C5.5 / D8.14) and the splitting of a range
// into encodable pieces, each checked against a straightforward model.
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <vector>

#include "ptguard/arch/maintenance.hpp"
#include "ptguard/arch/regs.hpp"

using namespace ptguard;
using namespace ptguard::arch;

namespace {

// The model: the operand spelled out bit by bit from the architecture's field table.
u64 model_operand(Granule g, u64 addr, unsigned scale, unsigned num, int level) {
  const unsigned shift = g == Granule::k4K ? 12 : g == Granule::k16K ? 14 : 16;
  const u64 tg = g == Granule::k4K ? 1 : g == Granule::k16K ? 2 : 3;
  u64 ttl = 0;
  if (level == 3 || level == 2) ttl = static_cast<u64>(level);
  if (level == 1 && g != Granule::k16K) ttl = 1;  // 16K has no level-1 leaf without LPA2
  u64 xt = 0;
  for (unsigned b = 0; b < 37; ++b) xt |= ((addr >> (shift + b)) & 1) << b;
  xt |= ttl << 37;
  xt |= static_cast<u64>(num) << 39;
  xt |= static_cast<u64>(scale) << 44;
  xt |= tg << 46;
  return xt;
}

// The model of a split: pieces written out from the page count's base-32 digits (NUM + 1 at
// SCALE s is the digit of 2^(5s+1), the top one allowed to be 32), plus one page when odd.
struct ModelPiece {
  bool range;
  unsigned scale;
  unsigned num;
};
std::vector<ModelPiece> model_split(u64 pages) {
  std::vector<ModelPiece> out;
  while (pages >= (u64{32} << 16)) {
    out.push_back({true, 3, 31});
    pages -= u64{32} << 16;
  }
  for (int s = 3; s >= 0; --s) {
    const unsigned shift = 5u * static_cast<unsigned>(s) + 1u;
    const u64 digit = pages >> shift;  // below 32 except possibly at s = 3 (handled above)
    if (digit != 0) out.push_back({true, static_cast<unsigned>(s), static_cast<unsigned>(digit - 1)});
    pages -= digit << shift;
  }
  if (pages == 1) out.push_back({false, 0, 0});
  return out;
}

std::vector<TlbiRangePiece> split(u64 pages) {
  std::vector<TlbiRangePiece> out;
  while (pages > 0) {
    const TlbiRangePiece p = tlbi_range_piece(pages);
    out.push_back(p);
    pages -= p.pages();
  }
  return out;
}

const Granule kGranules[] = {Granule::k4K, Granule::k16K, Granule::k64K};

RC_GTEST_PROP(TlbiRange, OperandRoundTripsAndMatchesTheModel, ()) {
  const Granule g = kGranules[*rc::gen::inRange(0, 3)];
  const unsigned shift = page_shift(g);
  const u64 page_number = *rc::gen::inRange<u64>(0, u64{1} << 37);
  const u64 addr = page_number << shift;
  const auto scale = *rc::gen::inRange<unsigned>(0, 4);
  const auto num = *rc::gen::inRange<unsigned>(0, 32);
  const int level = *rc::gen::inRange(-1, 4);
  const TlbiRange r{addr, static_cast<u8>(scale), static_cast<u8>(num), static_cast<i8>(level)};
  const u64 xt = tlbi_range_operand(g, r);
  RC_ASSERT(xt == model_operand(g, addr, scale, num, level));

  const TlbiRangeDecoded d = decode_tlbi_range(xt);
  RC_ASSERT(d.valid);
  RC_ASSERT(d.granule == g);
  RC_ASSERT(d.range.addr == addr);
  RC_ASSERT(d.range.scale == scale);
  RC_ASSERT(d.range.num == num);
  // TTL keeps levels 1..3 (16K level 1 reserved without LPA2); anything else is "any level".
  const bool hinted = level >= 1 && !(level == 1 && g == Granule::k16K);
  RC_ASSERT(d.range.level == (hinted ? level : kTlbiLevelUnknown));
  RC_ASSERT(d.range.pages() == (u64{num} + 1) << (5 * scale + 1));
}

TEST(TlbiRange, ReservedGranuleDecodesAsInvalid) {
  EXPECT_FALSE(decode_tlbi_range(0).valid);
  EXPECT_TRUE(decode_tlbi_range(TlbiRTg::make(0b01)).valid);
}

RC_GTEST_PROP(TlbiRange, SplitCoversTheRangeExactlyAsTheModel, ()) {
  // Counts up to 3 maximum pieces and a bit, weighted towards the edges of each SCALE.
  const u64 pages = *rc::gen::oneOf(rc::gen::inRange<u64>(1, 3 * kTlbiRangeMaxPages + 100),
                                    rc::gen::map(rc::gen::inRange(1, 22), [](int n) { return u64{1} << n; }),
                                    rc::gen::map(rc::gen::inRange(1, 22), [](int n) { return (u64{1} << n) - 1; }),
                                    rc::gen::map(rc::gen::inRange(1, 22), [](int n) { return (u64{1} << n) + 1; }));
  const std::vector<TlbiRangePiece> got = split(pages);
  const std::vector<ModelPiece> want = model_split(pages);
  RC_ASSERT(got.size() == want.size());
  RC_ASSERT(got.size() == tlbi_range_instructions(pages));
  u64 covered = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    RC_ASSERT(got[i].range == want[i].range);
    if (got[i].range) {
      RC_ASSERT(got[i].scale == want[i].scale);
      RC_ASSERT(got[i].num == want[i].num);
      RC_ASSERT(got[i].scale <= 3u);
      RC_ASSERT(got[i].num <= 31u);
    } else {
      RC_ASSERT(i + 1 == got.size());  // the single page is the last piece
    }
    covered += got[i].pages();
  }
  RC_ASSERT(covered == pages);
  if (pages <= kTlbiRangeMaxPages) RC_ASSERT(got.size() <= 5u);  // one piece per SCALE and one page
}

TEST(TlbiRange, Edges) {
  // One page: no range encodes it (the smallest is two pages): a TLBI by address.
  EXPECT_FALSE(tlbi_range_piece(1).range);
  EXPECT_EQ(tlbi_range_instructions(1), 1u);
  // Two pages: SCALE 0, NUM 0.
  EXPECT_TRUE(tlbi_range_piece(2).range);
  EXPECT_EQ(tlbi_range_piece(2).scale, 0);
  EXPECT_EQ(tlbi_range_piece(2).num, 0);
  // Every power of two from 2 to 2^21 pages is one instruction.
  for (unsigned n = 1; n <= 21; ++n) {
    const u64 pages = u64{1} << n;
    EXPECT_EQ(tlbi_range_instructions(pages), 1u) << n;
    EXPECT_EQ(tlbi_range_piece(pages).pages(), pages) << n;
  }
  // The maximum span: NUM 31 at SCALE 3, 2^21 pages (8 GiB of 4K pages).
  EXPECT_EQ(kTlbiRangeMaxPages, u64{1} << 21);
  EXPECT_EQ(tlbi_range_piece(kTlbiRangeMaxPages).scale, 3);
  EXPECT_EQ(tlbi_range_piece(kTlbiRangeMaxPages).num, 31);
  EXPECT_EQ(tlbi_range_piece(kTlbiRangeMaxPages + 1).pages(), kTlbiRangeMaxPages);
  EXPECT_EQ(tlbi_range_instructions(kTlbiRangeMaxPages + 1), 2u);
  // Just below: 31 units at each SCALE and one page.
  EXPECT_EQ(tlbi_range_instructions(kTlbiRangeMaxPages - 1), 5u);
  // 2 MiB of 4K pages: SCALE 1, NUM 7.
  EXPECT_EQ(tlbi_range_piece(512).scale, 1);
  EXPECT_EQ(tlbi_range_piece(512).num, 7);
  // A 1 GiB 4K table span (2^18 pages) is one piece: SCALE 3, NUM 3.
  EXPECT_EQ(tlbi_range_piece(u64{1} << 18).scale, 3);
  EXPECT_EQ(tlbi_range_piece(u64{1} << 18).num, 3);
}

TEST(TlbiRange, OperandEdges) {
  // The highest BaseADDR: every page-number bit set, and nothing above bit 36 leaks into TTL.
  const u64 top = ((u64{1} << 37) - 1) << 12;
  const u64 xt = tlbi_range_operand(Granule::k4K, TlbiRange{top, 3, 31, 3});
  EXPECT_EQ(TlbiRBaseAddr::get(xt), (u64{1} << 37) - 1);
  EXPECT_EQ(TlbiRTtl::get(xt), 3u);
  EXPECT_EQ(TlbiRNum::get(xt), 31u);
  EXPECT_EQ(TlbiRScale::get(xt), 3u);
  EXPECT_EQ(TlbiRTg::get(xt), 1u);
  EXPECT_EQ(xt >> 48, 0u);  // ASID/VMID field unused
  // 64K: BaseADDR counts 64K pages.
  EXPECT_EQ(TlbiRBaseAddr::get(tlbi_range_operand(Granule::k64K, TlbiRange{0x3'0000, 0, 0, -1})), 3u);
  EXPECT_EQ(TlbiRTg::get(tlbi_range_operand(Granule::k64K, TlbiRange{0, 0, 0, -1})), 3u);
  EXPECT_EQ(TlbiRTg::get(tlbi_range_operand(Granule::k16K, TlbiRange{0, 0, 0, -1})), 2u);
  // Level 0 has no TTL encoding.
  EXPECT_EQ(TlbiRTtl::get(tlbi_range_operand(Granule::k4K, TlbiRange{0, 0, 0, 0})), 0u);
}

// ---- DS = 1 (FEAT_LPA2): BaseADDR = IA[52:16], 64 KiB units, whatever the granule ----------

// The model: with DS = 1 and 4K/16K the 37 BaseADDR bits are IA[52:16]; 64K is unchanged.
u64 model_operand_ds(Granule g, u64 addr, unsigned scale, unsigned num, int level) {
  if (g == Granule::k64K) return model_operand(g, addr, scale, num, level);
  u64 xt = model_operand(g, 0, scale, num, level);
  for (unsigned b = 0; b < 37; ++b) xt |= ((addr >> (16 + b)) & 1) << b;
  return xt;
}

RC_GTEST_PROP(TlbiRangeDs, OperandRoundTripsAndMatchesTheModel, ()) {
  const Granule g = kGranules[*rc::gen::inRange(0, 3)];
  // Any 64 KiB-aligned address below 2^52, weighted towards the top (IA[51:48] != 0).
  const u64 unit = *rc::gen::oneOf(rc::gen::inRange<u64>(0, u64{1} << 36),
                                   rc::gen::inRange<u64>(u64{1} << 32, u64{1} << 36),
                                   rc::gen::element<u64>(0, 1, (u64{1} << 36) - 1, u64{1} << 35));
  const u64 addr = unit << 16;
  const auto scale = *rc::gen::inRange<unsigned>(0, 4);
  const auto num = *rc::gen::inRange<unsigned>(0, 32);
  const int level = *rc::gen::inRange(-1, 4);
  const TlbiRange r{addr, static_cast<u8>(scale), static_cast<u8>(num), static_cast<i8>(level), true};
  const u64 xt = tlbi_range_operand(g, r);
  RC_ASSERT(xt == model_operand_ds(g, addr, scale, num, level));
  RC_ASSERT(TlbiRBaseAddr::get(xt) == addr >> 16);  // 64K: its page number; 4K/16K: IA[52:16]

  const TlbiRangeDecoded d = decode_tlbi_range(xt, true);
  RC_ASSERT(d.valid);
  RC_ASSERT(d.granule == g);
  RC_ASSERT(d.range.addr == addr);
  RC_ASSERT(d.range.ds);
  RC_ASSERT(d.range.scale == scale);
  RC_ASSERT(d.range.num == num);
  const bool hinted = level >= 1 && !(level == 1 && g == Granule::k16K);
  RC_ASSERT(d.range.level == (hinted ? level : kTlbiLevelUnknown));
  // The size still counts pages of the granule.
  RC_ASSERT(d.range.pages() == (u64{num} + 1) << (5 * scale + 1));
  // Read by a regime with the other DS, a 4K/16K operand names another address (unless 0).
  if (g != Granule::k64K && addr != 0) RC_ASSERT(decode_tlbi_range(xt, false).range.addr != addr);
  if (g == Granule::k64K) RC_ASSERT(decode_tlbi_range(xt, false).range.addr == addr);
}

TEST(TlbiRangeDs, OperandEdges) {
  // The top of the 52-bit space: IA[51:16] all ones; bit 52 would be BaseADDR[36].
  const u64 top = (u64{1} << 52) - (u64{1} << 16);
  for (const Granule g : {Granule::k4K, Granule::k16K}) {
    const u64 xt = tlbi_range_operand(g, TlbiRange{top, 3, 31, 3, true});
    EXPECT_EQ(TlbiRBaseAddr::get(xt), (u64{1} << 36) - 1);
    EXPECT_EQ(TlbiRTtl::get(xt), 3u);
    EXPECT_EQ(TlbiRNum::get(xt), 31u);
    EXPECT_EQ(TlbiRScale::get(xt), 3u);
    EXPECT_EQ(TlbiRTg::get(xt), tlbi_range_tg(g));
    EXPECT_EQ(xt >> 48, 0u);
    EXPECT_EQ(decode_tlbi_range(xt, true).range.addr, top);
  }
  // 2^48 (IA[48] set): BaseADDR 2^32 with DS, 2^36 without (the top bit 4K can reach).
  EXPECT_EQ(TlbiRBaseAddr::get(tlbi_range_operand(Granule::k4K, TlbiRange{u64{1} << 48, 0, 0, -1, true})), u64{1} << 32);
  EXPECT_EQ(TlbiRBaseAddr::get(tlbi_range_operand(Granule::k4K, TlbiRange{u64{1} << 48, 0, 0, -1, false})),
            u64{1} << 36);
  // The same IPA, 0x4001'0000, with and without DS: 0x4001 vs 0x4'0010 (4K) / 0x1'0004 (16K).
  EXPECT_EQ(TlbiRBaseAddr::get(tlbi_range_operand(Granule::k4K, TlbiRange{0x4001'0000, 0, 0, -1, true})), 0x4001u);
  EXPECT_EQ(TlbiRBaseAddr::get(tlbi_range_operand(Granule::k4K, TlbiRange{0x4001'0000, 0, 0, -1, false})), 0x4'0010u);
  EXPECT_EQ(TlbiRBaseAddr::get(tlbi_range_operand(Granule::k16K, TlbiRange{0x4001'0000, 0, 0, -1, false})), 0x1'0004u);
  // 64K: DS changes nothing.
  EXPECT_EQ(tlbi_range_operand(Granule::k64K, TlbiRange{0x5'0000, 1, 2, 3, true}),
            tlbi_range_operand(Granule::k64K, TlbiRange{0x5'0000, 1, 2, 3, false}));
  EXPECT_EQ(tlbi_range_base_shift(Granule::k4K, true), 16u);
  EXPECT_EQ(tlbi_range_base_shift(Granule::k16K, false), 14u);
}

// The model of a DS split from any start: one page at a time up to the first 64 KiB boundary,
// then the split of the rest (model_split), each range piece starting at a 64 KiB boundary.
struct PlacedPiece {
  u64 addr;
  ModelPiece piece;
};
std::vector<PlacedPiece> model_split_ds(Granule g, u64 addr, u64 pages) {
  std::vector<PlacedPiece> out;
  const u64 pg = page_size(g);
  while (pages > 0 && g != Granule::k64K && addr % 0x10000 != 0) {
    out.push_back({addr, {false, 0, 0}});
    addr += pg;
    --pages;
  }
  for (const ModelPiece& p : model_split(pages)) {
    out.push_back({addr, p});
    addr += (p.range ? (u64{p.num} + 1) << (5 * p.scale + 1) : 1) * pg;
  }
  return out;
}

RC_GTEST_PROP(TlbiRangeDs, SplitFromAnyStartMatchesTheModel, ()) {
  const Granule g = kGranules[*rc::gen::inRange(0, 3)];
  const u64 pg = page_size(g);
  // A start anywhere below 2^52 (page aligned), with the low 64 KiB offset chosen on purpose.
  const u64 hi = *rc::gen::inRange<u64>(0, (u64{1} << 52) >> 16) << 16;
  const u64 start = hi + *rc::gen::inRange<u64>(0, 0x10000 / pg) * pg;
  const u64 pages = *rc::gen::oneOf(rc::gen::inRange<u64>(1, 2 * kTlbiRangeMaxPages + 100),
                                    rc::gen::inRange<u64>(1, 40),
                                    rc::gen::map(rc::gen::inRange(1, 22), [](int n) { return u64{1} << n; }),
                                    rc::gen::map(rc::gen::inRange(1, 22), [](int n) { return (u64{1} << n) + 1; }));
  const std::vector<PlacedPiece> want = model_split_ds(g, start, pages);
  std::vector<PlacedPiece> got;
  u64 a = start;
  for (u64 left = pages; left > 0;) {
    const TlbiRangePiece p = tlbi_range_piece_at(g, true, a, left);
    got.push_back({a, {p.range, p.scale, p.num}});
    // Every range piece starts where its operand can say it starts.
    if (p.range) {
      const TlbiRange r{a, p.scale, p.num, 3, true};
      RC_ASSERT(decode_tlbi_range(tlbi_range_operand(g, r), true).range.addr == a);
    }
    a += p.pages() * pg;
    left -= p.pages();
  }
  RC_ASSERT(a == start + pages * pg);
  RC_ASSERT(got.size() == want.size());
  RC_ASSERT(got.size() == tlbi_range_instructions(g, true, start, pages));
  for (std::size_t i = 0; i < got.size(); ++i) {
    RC_ASSERT(got[i].addr == want[i].addr);
    RC_ASSERT(got[i].piece.range == want[i].piece.range);
    RC_ASSERT(got[i].piece.scale == want[i].piece.scale);
    RC_ASSERT(got[i].piece.num == want[i].piece.num);
    if (got[i].piece.range && g != Granule::k64K) RC_ASSERT(got[i].addr % 0x10000 == 0);
  }
  // Without DS the split ignores the start.
  RC_ASSERT(tlbi_range_instructions(g, false, start, pages) == tlbi_range_instructions(pages));
}

TEST(TlbiRangeDs, SplitEdges) {
  const u64 k64 = 0x10000;
  // One page: by address, aligned or not.
  EXPECT_EQ(tlbi_range_instructions(Granule::k4K, true, 0x1'0000'0000, 1), 1u);
  EXPECT_EQ(tlbi_range_instructions(Granule::k4K, true, 0x1'0000'1000, 1), 1u);
  // A 64 KiB-aligned start costs nothing extra: 2^n pages are one instruction.
  for (unsigned n = 1; n <= 21; ++n)
    EXPECT_EQ(tlbi_range_instructions(Granule::k4K, true, u64{0xa} << 48, u64{1} << n), 1u) << n;
  // The last 4K page before a boundary: 1 by address, then the rest aligned.
  EXPECT_EQ(tlbi_range_instructions(Granule::k4K, true, k64 - 0x1000, 3), 1u + 1u);
  // The first page after a boundary: 15 by address (4K), 3 (16K), then a range.
  EXPECT_EQ(tlbi_range_instructions(Granule::k4K, true, k64 + 0x1000, 15 + 16), 15u + 1u);
  EXPECT_EQ(tlbi_range_instructions(Granule::k16K, true, k64 + 0x4000, 3 + 4), 3u + 1u);
  // A range that ends before the boundary is all by address.
  EXPECT_EQ(tlbi_range_instructions(Granule::k4K, true, 0x3000, 5), 5u);
  // The maximum span from an unaligned start: the head, one maximal piece, the remainder.
  const u64 a = (u64{1} << 51) + 0x2000;
  EXPECT_EQ(tlbi_range_instructions(Granule::k4K, true, a, 14 + kTlbiRangeMaxPages), 14u + 1u);
  EXPECT_EQ(tlbi_range_piece_at(Granule::k4K, true, a + 14 * 0x1000, kTlbiRangeMaxPages).pages(), kTlbiRangeMaxPages);
  // 64K: no head, ever.
  EXPECT_EQ(tlbi_range_instructions(Granule::k64K, true, 0x3'0000, 2), 1u);
}

TEST(TlbiRangeDs, ConfigurationsWithDsUseRangeTlbis) {
  const CpuFeatures cpu = CpuFeatures::modern_52bit();
  for (const Granule g : {Granule::k4K, Granule::k16K}) {
    const auto s2 = make_stage2_config(g, g == Granule::k4K ? 52 : 51, cpu);
    ASSERT_TRUE(s2);
    EXPECT_TRUE(s2->oa.ds());
    EXPECT_TRUE(s2->tlbi_range);
    const auto s1 = make_stage1_config(g, 48, cpu, WalkOptions{.pa_52bit = true});
    ASSERT_TRUE(s1);
    EXPECT_TRUE(s1->oa.ds());
    EXPECT_TRUE(s1->tlbi_range);
  }
  const auto s64 = make_stage2_config(Granule::k64K, 52, cpu);
  ASSERT_TRUE(s64);
  EXPECT_FALSE(s64->oa.ds()) << "64K: FEAT_LPA, no DS";
  CpuFeatures old = cpu;
  old.tlbi_range = false;
  EXPECT_FALSE(make_stage2_config(Granule::k4K, 52, old)->tlbi_range);
}

TEST(CpuFeatures, TlbiRangeFromIsar0) {
  EXPECT_FALSE(CpuFeatures::from_id_regs(0, 0, 0, 0).tlbi_range);
  EXPECT_FALSE(CpuFeatures::from_id_regs(0, 0, 0, 0, u64{0b0001} << 56).tlbi_range);  // outer shareable only
  EXPECT_TRUE(CpuFeatures::from_id_regs(0, 0, 0, 0, u64{0b0010} << 56).tlbi_range);
  EXPECT_FALSE(CpuFeatures::from_id_regs(0, 0, 0, 0, ~(u64{0xf} << 56)).tlbi_range);  // only bits 59:56
  EXPECT_TRUE(CpuFeatures::modern().tlbi_range);
  EXPECT_TRUE(make_stage2_config(Granule::k4K, 40, CpuFeatures::modern())->tlbi_range);
  CpuFeatures old = CpuFeatures::modern();
  old.tlbi_range = false;
  EXPECT_FALSE(make_stage1_config(Granule::k4K, 48, old)->tlbi_range);
}

}  // namespace
