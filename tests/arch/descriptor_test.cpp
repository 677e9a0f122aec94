// Descriptors: each named field reads and writes exactly its own bits, annotations round-trip
// and never clobber each other, and encodings match values computed by hand from the Arm ARM.
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include "ptguard/arch/descriptor.hpp"
#include "ptguard/arch/memattr.hpp"

using namespace ptguard;
using namespace ptguard::arch;

namespace {

// Setting one field changes only that field's bits: for every setter, the xor of the before
// and after values lies inside the field's mask.
template <typename Desc, typename Setter>
void expect_confined(u64 raw, Setter set, u64 mask) {
  const u64 after = set(Desc(raw)).raw();
  EXPECT_EQ((after ^ raw) & ~mask, 0u) << std::hex << raw << " -> " << after;
}

RC_GTEST_PROP(S1Leaf, SettersTouchOnlyTheirField, (u64 raw, u8 v)) {
  expect_confined<S1Leaf>(raw, [&](S1Leaf d) { return d.with_attr_index(v & 7); }, S1AttrIndx::kMask);
  expect_confined<S1Leaf>(raw, [&](S1Leaf d) { return d.with_ap(v & 1 ? S1ApEl2::ro : S1ApEl2::rw); }, S1Ap::kMask);
  expect_confined<S1Leaf>(raw, [&](S1Leaf d) { return d.with_sh(static_cast<Shareability>(v & 3)); }, S1Sh::kMask);
  expect_confined<S1Leaf>(raw, [&](S1Leaf d) { return d.with_af(v & 1); }, S1Af::kMask);
  expect_confined<S1Leaf>(raw, [&](S1Leaf d) { return d.with_xn(v & 1); }, S1Xn::kMask);
  expect_confined<S1Leaf>(raw, [&](S1Leaf d) { return d.with_contiguous(v & 1); }, S1Contiguous::kMask);
  expect_confined<S1Leaf>(raw, [&](S1Leaf d) { return d.with_dbm(v & 1); }, S1Dbm::kMask);
  expect_confined<S1Leaf>(raw, [&](S1Leaf d) { return d.with_sw(v & 0xf); }, DescSw::kMask);
  const S1Leaf d = S1Leaf(raw).with_attr_index(v & 7).with_sw(v >> 4);
  RC_ASSERT(d.attr_index() == (v & 7));
  RC_ASSERT(d.sw() == (v >> 4));
}

RC_GTEST_PROP(S2Leaf, SettersTouchOnlyTheirField, (u64 raw, u8 v)) {
  expect_confined<S2Leaf>(raw, [&](S2Leaf d) { return d.with_memattr(v & 0xf); }, S2MemAttr::kMask);
  expect_confined<S2Leaf>(raw, [&](S2Leaf d) { return d.with_read(v & 1); }, S2ApRead::kMask);
  expect_confined<S2Leaf>(raw, [&](S2Leaf d) { return d.with_write(v & 1); }, S2ApWrite::kMask);
  expect_confined<S2Leaf>(raw, [&](S2Leaf d) { return d.with_sh(static_cast<Shareability>(v & 3)); }, S2Sh::kMask);
  expect_confined<S2Leaf>(raw, [&](S2Leaf d) { return d.with_af(v & 1); }, S2Af::kMask);
  expect_confined<S2Leaf>(raw, [&](S2Leaf d) { return d.with_xn(static_cast<S2XnKind>(v & 3)); }, S2Xn::kMask);
  expect_confined<S2Leaf>(raw, [&](S2Leaf d) { return d.with_sw(v & 0xf); }, DescSw::kMask);
  const S2Leaf d = S2Leaf(raw).with_memattr(v & 0xf).with_read(v & 0x10).with_write(v & 0x20);
  RC_ASSERT(d.memattr() == (v & 0xf));
  RC_ASSERT(d.readable() == ((v & 0x10) != 0));
  RC_ASSERT(d.writable() == ((v & 0x20) != 0));
}

// The seed's rule: an owner annotation never clobbers the software bits, and vice versa; and
// the whole annotation round-trips exactly.
RC_GTEST_PROP(InvalidDesc, AnnotationRoundTripsAndNeverClobbers, (u32 owner, u8 sw, bool locked, bool poisoned)) {
  const u8 sw4 = sw & 0xf;
  const InvalidDesc a = InvalidDesc::annotation(owner, sw4).with_locked(locked).with_poisoned(poisoned);
  RC_ASSERT(!DescValid::get(a.raw()));
  RC_ASSERT(a.owner() == owner);
  RC_ASSERT(a.sw() == sw4);
  RC_ASSERT(a.is_locked() == locked);
  RC_ASSERT(a.is_poisoned() == poisoned);
  RC_ASSERT(a.reserved_bits() == 0u);
  // Changing the owner keeps the software bits and the markers, and the reverse.
  const InvalidDesc b = a.with_owner(owner ^ 0x8001'0001u);
  RC_ASSERT(b.sw() == sw4);
  RC_ASSERT(b.is_locked() == locked);
  RC_ASSERT(b.is_poisoned() == poisoned);
  const InvalidDesc c = a.with_sw(static_cast<u8>(~sw4 & 0xf));
  RC_ASSERT(c.owner() == owner);
  RC_ASSERT(InvalidDesc(a.raw()).raw() == a.raw());
}

TEST(InvalidDesc, OwnerFieldIsAtLeastSixteenBitsAndLeavesLinuxsLowBitsAlone) {
  EXPECT_GE(kMaxOwnerId, 0xffffu);
  // Owner ids beyond the field's width are not representable: the top is cut.
  EXPECT_EQ(InvalidDesc::annotation(0xffff'ffffu, 0).owner(), 0xffff'ffffu);
  // The empty entry is zero and carries owner 0 (the table's owner).
  EXPECT_TRUE(InvalidDesc::empty().is_empty());
  EXPECT_EQ(InvalidDesc::empty().owner(), 0u);
  // Locked carries no owner and no state.
  EXPECT_TRUE(InvalidDesc::locked().is_locked());
  EXPECT_EQ(InvalidDesc::locked().owner(), 0u);
  EXPECT_EQ(InvalidDesc::locked().raw(), u64{1} << 10);
  // Unknown bits are reported.
  EXPECT_EQ(InvalidDesc((u64{1} << 60) | (u64{1} << 3)).reserved_bits(), (u64{1} << 60) | (u64{1} << 3));
}

TEST(Classify, EveryTypeAtEveryLevelAndGranule) {
  for (Granule g : kAllGranules) {
    for (int level = 0; level <= kLastLevel; ++level) {
      EXPECT_EQ(classify(0, g, level), DescKind::invalid);
      EXPECT_EQ(classify(0b10, g, level), DescKind::invalid);
      EXPECT_EQ(classify(0xffff'ffff'ffff'fffe, g, level), DescKind::invalid);
      EXPECT_EQ(classify(0b11, g, level), level == kLastLevel ? DescKind::page : DescKind::table);
      EXPECT_EQ(classify(0b01, g, level),
                block_allowed(g, level) ? DescKind::block : DescKind::reserved);
    }
  }
}

TEST(Descriptor, OutputAddressKeepsOnlyTheLevelsBits) {
  // A 2 MiB block keeps [47:21]; a 1 GiB block [47:30]; a 4K page [47:12].
  const u64 pa = 0x0000'ffff'ffff'ffffull;
  EXPECT_EQ(S2Leaf::make(Granule::k4K, 2, pa).output_address(Granule::k4K, 2), 0x0000'ffff'ffe0'0000ull);
  EXPECT_EQ(S2Leaf::make(Granule::k4K, 1, pa).output_address(Granule::k4K, 1), 0x0000'ffff'c000'0000ull);
  EXPECT_EQ(S1Leaf::make(Granule::k4K, 3, pa).output_address(Granule::k4K, 3), 0x0000'ffff'ffff'f000ull);
  EXPECT_EQ(S1Leaf::make(Granule::k64K, 2, pa).output_address(Granule::k64K, 2), 0x0000'ffff'e000'0000ull);
  EXPECT_EQ(S2Leaf::make(Granule::k16K, 3, pa).output_address(Granule::k16K, 3), 0x0000'ffff'ffff'c000ull);
  // Bits above 47 never reach the address field.
  EXPECT_EQ(S2Leaf::make(Granule::k4K, 3, ~u64{0}).raw() & bit_range(63, 48), 0u);
  // Table descriptors hold [47:page_shift].
  EXPECT_EQ(TableDesc::make(Granule::k16K, pa).next_table(Granule::k16K), 0x0000'ffff'ffff'c000ull);
  EXPECT_EQ(TableDesc::make(Granule::k4K, 0x4000'1000).raw(), 0x4000'1003ull);
}

TEST(Descriptor, HandComputedStage1Encodings) {
  // EL2 code page: RO (AP 0b11), executable, normal WB, inner-shareable, AF.
  const u64 code = S1Leaf::page<Granule::k4K>(0x4008'0000)
                       .with_attr_index(attr_index(MemType::normal_wb))
                       .with_ap(S1ApEl2::ro)
                       .with_sh(Shareability::inner)
                       .with_af(true)
                       .raw();
  EXPECT_EQ(code, 0x4008'07c3ull);
  // UART: device nGnRE (AttrIndx 2 -> bits 4:2 = 0b010), RW, XN, AF, non-shareable.
  const u64 uart = S1Leaf::page<Granule::k4K>(0x0900'0000)
                       .with_attr_index(attr_index(MemType::device_ngnre))
                       .with_ap(S1ApEl2::rw)
                       .with_af(true)
                       .with_xn(true)
                       .raw();
  EXPECT_EQ(uart, 0x0040'0000'0900'044bull);
  EXPECT_EQ(mair_attr(kMairEl2, attr_index(MemType::device_ngnre)), kMairDeviceNgnre);
  EXPECT_EQ(mair_attr(kMairEl2, attr_index(MemType::normal_nc)), kMairNormalNc);
}

// Stage-2 XN[1:0] with FEAT_XNX (Arm ARM D8.4.2): 00 both, 01 EL0 only, 10 neither, 11 EL1 only;
// read from a descriptor's bits 54:53.
TEST(Descriptor, Stage2ExecuteNeverPerExceptionLevel) {
  struct Row {
    S2XnKind kind;
    u64 bits;  // XN[1:0]
    bool el1, el0;
  };
  const Row rows[] = {{S2XnKind::exec, 0b00, true, true},
                      {S2XnKind::pxn, 0b01, false, true},
                      {S2XnKind::xn, 0b10, false, false},
                      {S2XnKind::uxn, 0b11, true, false}};
  for (const Row& r : rows) {
    const S2Leaf d = S2Leaf::page<Granule::k4K>(0x4000'0000).with_xn(r.kind);
    EXPECT_EQ(S2Xn::get(d.raw()), r.bits);
    EXPECT_EQ((d.raw() >> 53) & 3, r.bits) << "bits 54:53";
    EXPECT_EQ(d.xn(), r.kind);
    EXPECT_EQ(s2_exec_el1(S2Xn::get(d.raw())), r.el1) << r.bits;
    EXPECT_EQ(s2_exec_el0(S2Xn::get(d.raw())), r.el0) << r.bits;
  }
}

TEST(MemAttr, Stage2EncodingsDecodeToTheirTypeWithAndWithoutFwb) {
  const MemType types[] = {MemType::normal_wb, MemType::normal_nc, MemType::device_ngnre,
                           MemType::device_ngnrne};
  for (bool fwb : {false, true}) {
    for (MemType t : types) {
      MemType back{};
      ASSERT_TRUE(to_mem_type(decode_s2_memattr(s2_memattr(t, fwb), fwb), &back));
      EXPECT_EQ(back, t) << "fwb " << fwb;
    }
  }
  // FWB: bit 5 (MemAttr[3]) is RES0; 0b0111 means "use stage 1"; 0b0100 is reserved.
  EXPECT_TRUE(decode_s2_memattr(0b1110, true).reserved);
  EXPECT_TRUE(decode_s2_memattr(0b0111, true).from_stage1);
  EXPECT_TRUE(decode_s2_memattr(0b0100, true).reserved);
  // Without FWB: Normal with inner 00 is reserved; outer WB inner NC is a valid mix.
  EXPECT_TRUE(decode_s2_memattr(0b1100, false).reserved);
  const MemAttrs mix = decode_s2_memattr(0b1101, false);
  EXPECT_FALSE(mix.reserved);
  EXPECT_EQ(mix.outer, Cacheability::write_back);
  EXPECT_EQ(mix.inner, Cacheability::non_cacheable);
}

TEST(MemAttr, MairBytesDecode) {
  for (MemType t : {MemType::normal_wb, MemType::normal_nc, MemType::device_ngnre, MemType::device_ngnrne}) {
    MemType back{};
    ASSERT_TRUE(to_mem_type(decode_mair_attr(mair_attr(kMairEl2, attr_index(t))), &back));
    EXPECT_EQ(back, t);
  }
  EXPECT_TRUE(decode_mair_attr(0x05).reserved);  // Device with xx != 00
  EXPECT_TRUE(decode_mair_attr(0x40).reserved);  // Normal outer NC, inner 0000
  EXPECT_EQ(decode_mair_attr(0xbb).inner, Cacheability::write_through);
}

}  // namespace

// 52-bit addresses take descriptor bits of valid entries: FEAT_LPA2 (DS = 1) bits [49:48] and
// [9:8] (OA[51:50], in place of SH), FEAT_LPA with 64K bits [15:12] (OA[51:48]). ptguard's
// software bits (58:55) must stay clear of them. Annotations live in invalid entries, whose
// bits [63:1] the MMU ignores whatever the address size (D8.3.1), so their layout is not
// affected; the owner field (47:16) is an id, not an address.
TEST(Descriptor, FiftyTwoBitAddressBitsLeaveTheSoftwareBitsAlone) {
  const u64 lpa2 = bit_range(49, 48) | bit_range(9, 8);
  const u64 lpa = bit_range(15, 12);
  EXPECT_EQ(DescSw::kMask & (lpa2 | lpa), 0u);
  EXPECT_EQ(DescSw::kMask, bit_range(58, 55));
}
