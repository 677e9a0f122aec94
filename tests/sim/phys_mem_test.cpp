// PhysMem: declared regions, precise errors, zero fill, lookups and multi-region copies.
#include "ptguard/sim/phys_mem.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <fstream>
#include <map>
#include <vector>

namespace ptguard::sim {
namespace {

using ::testing::ElementsAre;

constexpr u64 kGiB = u64{1} << 30;
constexpr u64 kMiB = u64{1} << 20;

using Span = std::pair<u64, u64>;
std::vector<Span> spans(const PhysMem& m) {
  std::vector<Span> out;
  for (const PhysMem::Region& r : m.regions()) out.emplace_back(r.base, r.size);
  return out;
}

TEST(PhysMem, AddRegionRejectsBadArguments) {
  PhysMem m;
  EXPECT_EQ(m.add_region(0x1000, 0), fail(Error::einval));
  EXPECT_EQ(m.add_region(0x1800, 0x1000), fail(Error::einval));
  EXPECT_EQ(m.add_region(0x1000, 0x1800), fail(Error::einval));
  EXPECT_EQ(m.add_region(~u64{0} - 0xfff, 0x1000), fail(Error::einval));  // ends at 2^64
  EXPECT_EQ(m.add_region(~u64{0} - 0xfff, 0x2000), fail(Error::einval));  // wraps
  EXPECT_TRUE(m.regions().empty());
}

TEST(PhysMem, AddRegionRejectsOverlapButAllowsAdjacent) {
  PhysMem m;
  ASSERT_TRUE(m.add_region(0x10000, 0x10000));
  EXPECT_EQ(m.add_region(0x10000, 0x10000), fail(Error::eexist));  // same
  EXPECT_EQ(m.add_region(0xf000, 0x2000), fail(Error::eexist));    // overlaps the start
  EXPECT_EQ(m.add_region(0x1f000, 0x2000), fail(Error::eexist));   // overlaps the end
  EXPECT_EQ(m.add_region(0x12000, 0x1000), fail(Error::eexist));   // inside
  EXPECT_EQ(m.add_region(0x0, 0x100000), fail(Error::eexist));     // contains
  EXPECT_TRUE(m.add_region(0x20000, 0x1000));                      // adjacent above
  EXPECT_TRUE(m.add_region(0xf000, 0x1000));                       // adjacent below
  EXPECT_TRUE(m.add_region(0x0, 0x1000));
  EXPECT_THAT(spans(m), ElementsAre(Span{0x0, 0x1000}, Span{0xf000, 0x1000},
                                    Span{0x10000, 0x10000}, Span{0x20000, 0x1000}));
}

u64 resident_bytes() {
  std::ifstream f("/proc/self/statm");
  u64 size = 0;
  u64 resident = 0;
  f >> size >> resident;
  return resident * 4096;
}

TEST(PhysMem, LargeRegionsCostNothingUntilTouched) {
  PhysMem m;
  const u64 before = resident_bytes();
  ASSERT_TRUE(m.add_region(0x8000'0000, 4 * kGiB));
  ASSERT_TRUE(m.add_region(0x10'0000'0000, 64 * kGiB));
  EXPECT_TRUE(m.write64(0x8000'0000 + 4 * kGiB - 8, 0x1234));
  EXPECT_TRUE(m.write64(0x10'0000'0000 + 64 * kGiB - 8, 0x5678));
  u64 v = 0;
  EXPECT_TRUE(m.read64(0x8000'0000 + 4 * kGiB - 8, &v));
  EXPECT_EQ(v, 0x1234u);
  EXPECT_LT(resident_bytes() - before, 64 * kMiB);
}

TEST(PhysMem, MemoryStartsZeroed) {
  PhysMem m;
  ASSERT_TRUE(m.add_region(0x4000'0000, 2 * kMiB));
  std::vector<std::byte> buf(2 * kMiB, std::byte{0xff});
  ASSERT_TRUE(m.read(0x4000'0000, buf.data(), buf.size()));
  for (std::byte b : buf) ASSERT_EQ(b, std::byte{0});
}

TEST(PhysMem, Read64Write64) {
  PhysMem m;
  ASSERT_TRUE(m.add_region(0x1000, 0x1000));
  u64 v = 7;
  EXPECT_TRUE(m.write64(0x1008, 0x0123'4567'89ab'cdefull));
  EXPECT_TRUE(m.read64(0x1008, &v));
  EXPECT_EQ(v, 0x0123'4567'89ab'cdefull);
  // Little-endian byte order, as on the target.
  EXPECT_EQ(*m.ptr(0x1008), std::byte{0xef});
  EXPECT_EQ(*m.ptr(0x100f), std::byte{0x01});
  EXPECT_TRUE(m.write64(0x1ff8, 1));   // the last word
  EXPECT_FALSE(m.write64(0x2000, 1));  // just past the end
  EXPECT_FALSE(m.write64(0xff8, 1));   // just before the start
  EXPECT_FALSE(m.write64(0x1004, 1));  // unaligned
  EXPECT_FALSE(m.read64(0x1004, &v));
  EXPECT_FALSE(m.read64(0x2000, &v));
  EXPECT_TRUE(m.read64(0x1000, &v));
  EXPECT_EQ(v, 0u);  // the unaligned write wrote nothing
}

TEST(PhysMem, PtrAndBacked) {
  PhysMem m;
  ASSERT_TRUE(m.add_region(0x10000, 0x4000));
  ASSERT_TRUE(m.add_region(0x40000, 0x1000));
  EXPECT_EQ(m.ptr(0xffff), nullptr);
  EXPECT_EQ(m.ptr(0x14000), nullptr);
  ASSERT_NE(m.ptr(0x10000), nullptr);
  EXPECT_EQ(m.ptr(0x13fff), m.ptr(0x10000) + 0x3fff);  // one host allocation per region
  const PhysMem& cm = m;
  EXPECT_EQ(cm.ptr(0x40010), m.ptr(0x40000) + 0x10);
  EXPECT_TRUE(m.backed(0x10000, 0x4000));
  EXPECT_FALSE(m.backed(0x10000, 0x4001));
  EXPECT_TRUE(m.backed(0x13fff));
  EXPECT_FALSE(m.backed(0x14000));
  EXPECT_TRUE(m.backed(0x12345, 0));         // an empty range is backed
  EXPECT_FALSE(m.backed(~u64{0} - 3, 8));    // wraps
  EXPECT_FALSE(m.backed(0x13000, 0x2e000));  // runs over the gap into the second region
}

TEST(PhysMem, CopiesRunAcrossAdjacentRegionsButNotGaps) {
  PhysMem m;
  ASSERT_TRUE(m.add_region(0x10000, 0x1000));
  ASSERT_TRUE(m.add_region(0x11000, 0x1000));  // adjacent: separate host mappings
  ASSERT_TRUE(m.add_region(0x13000, 0x1000));  // after a gap
  EXPECT_TRUE(m.backed(0x10ff0, 0x20));
  std::vector<u8> in(0x20);
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<u8>(i + 1);
  ASSERT_TRUE(m.write(0x10ff0, in.data(), in.size()));
  std::vector<u8> out(0x20);
  ASSERT_TRUE(m.read(0x10ff0, out.data(), out.size()));
  EXPECT_EQ(in, out);
  EXPECT_EQ(static_cast<u8>(*m.ptr(0x11000)), 0x11);
  ASSERT_TRUE(m.zero(0x10ff8, 0x10));
  ASSERT_TRUE(m.read(0x10ff0, out.data(), out.size()));
  EXPECT_EQ(out[7], 8);
  EXPECT_EQ(out[8], 0);
  EXPECT_EQ(out[0x17], 0);
  EXPECT_EQ(out[0x18], 0x19);
  // Across the gap: refused, and nothing written, not even the backed part.
  EXPECT_FALSE(m.write(0x11ff0, in.data(), 0x20));
  EXPECT_EQ(*m.ptr(0x11ff0), std::byte{0});
  EXPECT_FALSE(m.read(0x11ff0, out.data(), 0x20));
  EXPECT_FALSE(m.zero(0x10000, 0x4000));
  EXPECT_EQ(static_cast<u8>(*m.ptr(0x10ff0)), 1);
  EXPECT_TRUE(m.read(0x99999, out.data(), 0));  // empty copies always succeed
}

// Many regions looked up in random order (the last-hit cache must never return a stale region)
// against a byte-map model.
RC_GTEST_PROP(PhysMemProp, MatchesByteModel, ()) {
  PhysMem m;
  const auto nregions = *rc::gen::inRange(1, 8);
  std::vector<PhysMem::Region> regions;
  u64 next = 0x1000 * static_cast<u64>(*rc::gen::inRange(0, 16));
  for (int i = 0; i < nregions; ++i) {
    const u64 size = 0x1000 * static_cast<u64>(*rc::gen::inRange(1, 4));
    RC_ASSERT(m.add_region(next, size).has_value());
    regions.push_back({next, size});
    next += size + 0x1000 * static_cast<u64>(*rc::gen::inRange(0, 3));  // gap or adjacent
  }
  std::map<u64, u8> model;  // bytes written; others read as 0 if backed
  auto is_backed = [&](u64 pa) {
    for (const auto& r : regions) {
      if (pa >= r.base && pa < r.base + r.size) return true;
    }
    return false;
  };
  const u64 limit = next + 0x2000;
  const auto nops = *rc::gen::inRange(1, 60);
  for (int i = 0; i < nops; ++i) {
    const u64 pa = *rc::gen::inRange<u64>(0, limit);
    const u64 len = *rc::gen::inRange<u64>(1, 24);
    bool all = true;
    for (u64 j = 0; j < len; ++j) all = all && is_backed(pa + j);
    RC_ASSERT(m.backed(pa, len) == all);
    if (*rc::gen::arbitrary<bool>()) {
      std::vector<u8> data(len);
      for (auto& b : data) b = *rc::gen::arbitrary<u8>();
      RC_ASSERT(m.write(pa, data.data(), len) == all);
      if (all) {
        for (u64 j = 0; j < len; ++j) model[pa + j] = data[j];
      }
    } else {
      std::vector<u8> data(len, 0xee);
      RC_ASSERT(m.read(pa, data.data(), len) == all);
      if (all) {
        for (u64 j = 0; j < len; ++j) {
          const auto it = model.find(pa + j);
          RC_ASSERT(data[j] == (it == model.end() ? 0 : it->second));
        }
      }
    }
    RC_ASSERT((m.ptr(pa) != nullptr) == is_backed(pa));
  }
}

}  // namespace
}  // namespace ptguard::sim
