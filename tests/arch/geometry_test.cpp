// Granule geometry, start levels and stage-2 roots, checked against the architecture's rules
// stated independently here (a table resolves page_shift - 3 bits; up to 16 concatenated
// roots; at least two levels where the IPA size allows).
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include "ptguard/arch/granule.hpp"
#include "ptguard/arch/regs.hpp"

using namespace ptguard;
using namespace ptguard::arch;

namespace {

struct GranuleFacts {
  Granule g;
  unsigned shift;
  unsigned entries;
  std::vector<std::pair<int, u64>> blocks;  // level -> block size
};

const GranuleFacts kFacts[] = {
    {Granule::k4K, 12, 512, {{1, u64{1} << 30}, {2, u64{1} << 21}}},
    {Granule::k16K, 14, 2048, {{2, u64{1} << 25}}},
    {Granule::k64K, 16, 8192, {{2, u64{1} << 29}}},
};

class GranuleTest : public ::testing::TestWithParam<GranuleFacts> {};

TEST_P(GranuleTest, SizesAndBlockLevelsMatchTheArchitecture) {
  const GranuleFacts& f = GetParam();
  EXPECT_EQ(page_shift(f.g), f.shift);
  EXPECT_EQ(page_size(f.g), u64{1} << f.shift);
  EXPECT_EQ(entries_per_table(f.g), f.entries);
  EXPECT_EQ(level_size(f.g, kLastLevel), page_size(f.g));
  for (int level = 0; level <= kLastLevel; ++level) {
    bool expect_block = false;
    for (auto [l, size] : f.blocks) {
      if (l == level) {
        expect_block = true;
        EXPECT_EQ(level_size(f.g, level), size) << "level " << level;
      }
    }
    EXPECT_EQ(block_allowed(f.g, level), expect_block) << "level " << level;
    EXPECT_EQ(leaf_allowed(f.g, level), expect_block || level == kLastLevel);
  }
}

TEST_P(GranuleTest, LevelIndexPicksTheBitsEachLevelResolves) {
  const GranuleFacts& f = GetParam();
  const unsigned bpl = f.shift - 3;
  for (int level = 0; level <= kLastLevel; ++level) {
    const unsigned lo = f.shift + static_cast<unsigned>(kLastLevel - level) * bpl;
    if (lo >= 64) continue;
    const u64 ia = u64{5} << lo;  // index 5 at this level, zero elsewhere
    EXPECT_EQ(level_index(f.g, level, ia), 5u);
    EXPECT_EQ(level_index(f.g, level, ia - 1), 4u);  // all lower bits set, index 4 here
  }
}

TEST_P(GranuleTest, Stage1StartLevelResolvesExactlyTheInputBits) {
  const GranuleFacts& f = GetParam();
  for (unsigned ia = kMinIaBits; ia <= kMaxIaBits; ++ia) {
    const int start = stage1_start_level(f.g, ia);
    ASSERT_GE(start, 0) << ia;
    ASSERT_LE(start, kLastLevel) << ia;
    // The start level's table covers the address space, and the next level down does not.
    const unsigned top = level_shift(f.g, start) + bits_per_level(f.g);
    EXPECT_GE(top, ia) << "ia " << ia;
    EXPECT_LT(level_shift(f.g, start), ia) << "ia " << ia;
  }
}

TEST_P(GranuleTest, Stage2RootIsTheFewestLevelsWithAtMostSixteenTables) {
  const GranuleFacts& f = GetParam();
  for (unsigned ia = kMinIaBits; ia <= kMaxIaBits; ++ia) {
    const Stage2Geometry geo = stage2_geometry(f.g, ia);
    ASSERT_GE(geo.root_tables, 1u);
    ASSERT_LE(geo.root_tables, kMaxConcatenatedTables);
    EXPECT_EQ(geo.root_tables & (geo.root_tables - 1), 0u) << "power of two";
    EXPECT_EQ(u64{1} << geo.root_order(), geo.root_tables);
    // The root covers the IPA space exactly: tables x entries x level size == 2^ia, or one
    // partial table.
    const unsigned span = level_shift(f.g, geo.start_level) + bits_per_level(f.g);
    if (geo.root_tables > 1) {
      EXPECT_EQ(span + geo.root_order(), ia);
    } else {
      EXPECT_GE(span, ia);
    }
    EXPECT_LT(level_shift(f.g, geo.start_level), ia) << "the start level resolves bits";
    // Two levels at least, unless the space fits in one last-level table.
    const int levels = kLastLevel + 1 - geo.start_level;
    if (ia > level_shift(f.g, 2)) {
      EXPECT_GE(levels, 2) << "ia " << ia;
    } else {
      EXPECT_EQ(geo.start_level, kLastLevel);
    }
    // Fewest levels: starting one level lower would need more than 16 tables (or fewer
    // than two levels).
    if (geo.start_level < kLastLevel && levels > 2) {
      const unsigned lower_span = level_shift(f.g, geo.start_level + 1) + bits_per_level(f.g);
      EXPECT_GT(ia, lower_span + 4) << "ia " << ia << " could start lower";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllGranules, GranuleTest, ::testing::ValuesIn(kFacts),
                         [](const auto& p) {
                           return std::string(p.param.g == Granule::k4K    ? "4K"
                                              : p.param.g == Granule::k16K ? "16K"
                                                                              : "64K");
                         });

// Concrete roots that Linux's rule gives (kvm_pgd_pages), pinned.
TEST(Stage2Geometry, KnownRoots) {
  struct Case {
    Granule g;
    unsigned ia;
    int start;
    unsigned tables;
  };
  const Case cases[] = {
      {Granule::k4K, 32, 2, 4},  {Granule::k4K, 36, 1, 1},   {Granule::k4K, 39, 1, 1},
      {Granule::k4K, 40, 1, 2},  {Granule::k4K, 42, 1, 8},   {Granule::k4K, 43, 1, 16},
      {Granule::k4K, 44, 0, 1},  {Granule::k4K, 48, 0, 1},   {Granule::k4K, 34, 2, 16},
      {Granule::k16K, 36, 2, 1}, {Granule::k16K, 40, 2, 16}, {Granule::k16K, 42, 1, 1},
      {Granule::k64K, 42, 2, 1}, {Granule::k64K, 44, 2, 4},  {Granule::k64K, 48, 1, 1},
  };
  for (const Case& c : cases) {
    const Stage2Geometry geo = stage2_geometry(c.g, c.ia);
    EXPECT_EQ(geo.start_level, c.start) << "ia " << c.ia;
    EXPECT_EQ(geo.root_tables, c.tables) << "ia " << c.ia;
  }
}

}  // namespace
