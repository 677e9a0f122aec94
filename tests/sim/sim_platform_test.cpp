// SimPlatform: the Platform concept carried out on simulated memory, every call logged, every
// misuse reported.
#include "ptguard/sim/sim_platform.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <optional>
#include <thread>
#include <map>
#include <stdexcept>
#include <vector>

namespace ptguard::sim {
namespace {

using arch::Barrier;
using arch::CacheOp;
using arch::Tlbi;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

static_assert(Platform<SimPlatform>);

constexpr u64 kRam = 0x4000'0000;
constexpr u64 kRamSize = 64 << 20;
constexpr u64 kPool = kRam + (32 << 20);
constexpr u64 kPoolSize = 4 << 20;
constexpr u64 k4K = 4096;

std::vector<ViolationKind> kinds(const SimPlatform& p) {
  std::vector<ViolationKind> out;
  for (const Violation& v : p.violations()) out.push_back(v.kind);
  return out;
}

class SimPlatformTest : public ::testing::Test {
 protected:
  PhysMem mem;
  bool backed_ = mem.add_region(kRam, kRamSize).has_value();  // before the platform is built
  SimPlatform p{mem, kPool, kPoolSize, k4K};
};

TEST(SimPlatformCreate, RefusesBadPools) {
  PhysMem mem;
  ASSERT_TRUE(mem.add_region(kRam, 1 << 20));
  EXPECT_EQ(SimPlatform::create(mem, kRam, 2 << 20, k4K).error(), Error::erange);
  EXPECT_EQ(SimPlatform::create(mem, kRam, 1 << 20, 12345).error(), Error::einval);
  EXPECT_THROW(SimPlatform(mem, kRam + 1, 1 << 16, k4K), std::invalid_argument);
  Result<SimPlatform> ok = SimPlatform::create(mem, kRam, 1 << 20, 16384);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->page_size(), 16384u);
  EXPECT_EQ(ok->alloc_pages(0), kRam);
}

TEST_F(SimPlatformTest, AllocAndFreeAreLogged) {
  const u64 a = *p.alloc_pages(0);
  const u64 b = *p.alloc_pages(1);
  EXPECT_EQ(a, kPool);
  EXPECT_EQ(b % (2 * k4K), 0u);
  p.allocator().fail_nth(1);
  EXPECT_EQ(p.alloc_pages(0), fail(Error::enomem));
  p.free_pages(b, 1);
  p.free_pages(b, 1);  // double free: reported, not logged
  EXPECT_EQ(p.log().format(),
            "alloc 0x42000000 order=0 size=0x1000\n"
            "alloc 0x42002000 order=1 size=0x2000\n"
            "alloc order=0 failed: ENOMEM\n"
            "free 0x42002000 order=1 size=0x2000\n");
  EXPECT_THAT(kinds(p), ElementsAre(ViolationKind::double_free));
}

TEST_F(SimPlatformTest, WriteDescStoresAndLogsOldAndNew) {
  const u64 table = *p.alloc_pages(0);
  u64* t = p.phys_to_virt(table);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(p.virt_to_phys(t + 1), table + 8);
  const EventLog::Mark m = p.log().mark();
  p.write_desc(t + 1, 0x40000743);
  p.write_desc(t + 1, 0);
  u64 v = 1;
  ASSERT_TRUE(mem.read64(table + 8, &v));
  EXPECT_EQ(v, 0u);
  EXPECT_EQ(t[1], 0u);
  EXPECT_THAT(p.log().since(m), ElementsAre(Event::write(table + 8, 0, 0x40000743),
                                            Event::write(table + 8, 0x40000743, 0)));
  EXPECT_THAT(p.violations(), IsEmpty());
}

TEST_F(SimPlatformTest, WritesOutsideThePoolAreAllowedAndLogged) {
  u64* d = p.phys_to_virt(kRam + 0x10);  // a table the user placed by hand
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(p.virt_to_phys(d), kRam + 0x10);
  p.write_desc(d, 0x3);
  EXPECT_EQ(p.log().format(), "write 0x40000010: 0x0 -> 0x3\n");
  EXPECT_THAT(p.violations(), IsEmpty());
}

TEST_F(SimPlatformTest, ReverseLookupSeesRegionsAddedLater) {
  ASSERT_TRUE(mem.add_region(0x8000'0000, 1 << 20));
  u64* d = p.phys_to_virt(0x8000'0ff8);
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(p.virt_to_phys(d), 0x8000'0ff8u);
  p.write_desc(d, 42);
  u64 v = 0;
  ASSERT_TRUE(mem.read64(0x8000'0ff8, &v));
  EXPECT_EQ(v, 42u);
}

TEST_F(SimPlatformTest, BadAddressesAreReported) {
  u64 host_word = 5;
  EXPECT_EQ(p.virt_to_phys(&host_word), SimPlatform::kBadPa);
  p.write_desc(&host_word, 6);  // refused
  EXPECT_EQ(host_word, 5u);
  EXPECT_EQ(p.phys_to_virt(0x1000), nullptr);
  EXPECT_EQ(p.phys_to_virt(kPool + 4), nullptr);
  u64* t = p.phys_to_virt(*p.alloc_pages(0));
  p.write_desc(reinterpret_cast<u64*>(reinterpret_cast<char*>(t) + 4), 1);  // refused
  EXPECT_EQ(t[0], 0u);
  EXPECT_EQ(t[1], 0u);
  EXPECT_THAT(kinds(p), ElementsAre(ViolationKind::bad_pointer, ViolationKind::bad_pointer,
                                    ViolationKind::unbacked, ViolationKind::misaligned,
                                    ViolationKind::misaligned));
  EXPECT_EQ(p.log().count(EventKind::write), 0u);
}

TEST_F(SimPlatformTest, WriteIntoAFreeTablePageIsReported) {
  const u64 table = *p.alloc_pages(0);
  u64* t = p.phys_to_virt(table);
  p.free_pages(table, 0);
  p.write_desc(t + 3, 0x1);  // use after free: done, logged and reported
  EXPECT_EQ(t[3], 1u);
  EXPECT_EQ(p.log().count(EventKind::write), 1u);
  ASSERT_EQ(p.violations().size(), 1u);
  EXPECT_EQ(p.violations()[0].kind, ViolationKind::write_to_free_page);
  EXPECT_EQ(p.violations()[0].pa, table + 24);
  EXPECT_EQ(t[4], PageAllocator::kFreePoison);
}

TEST_F(SimPlatformTest, MaintenanceIsLoggedWithItsArguments) {
  p.barrier(Barrier::dsb_ishst);
  p.tlbi(Tlbi::ipas2e1is, 1, 0x200000, 3);
  p.tlbi(Tlbi::vmalls12e1is, 1, 0, arch::kTlbiLevelUnknown);
  p.barrier(Barrier::dsb_ish);
  p.barrier(Barrier::isb);
  p.cache_op(CacheOp::dc_cvac, kPool, 64);
  p.cache_op(CacheOp::ic_ivau, kRam, k4K);
  EXPECT_EQ(p.log().format(),
            "DSB ISHST\n"
            "TLBI IPAS2E1IS vmid=1 addr=0x200000 level=3\n"
            "TLBI VMALLS12E1IS vmid=1\n"
            "DSB ISH\n"
            "ISB\n"
            "DC CVAC 0x42000000 size=0x40\n"
            "IC IVAU 0x40000000 size=0x1000\n");
  EXPECT_EQ(p.log().count(EventKind::tlbi), 2u);
  EXPECT_THAT(p.violations(), IsEmpty());
  p.tlbi(Tlbi::vae2is, 0, 0x1000, 4);
  p.cache_op(CacheOp::dc_civac, 0x1000, 64);
  EXPECT_THAT(kinds(p), ElementsAre(ViolationKind::bad_argument, ViolationKind::unbacked));
  EXPECT_EQ(p.log().size(), 9u);  // logged all the same
}

TEST_F(SimPlatformTest, FixmapHasOneSlot) {
  ASSERT_TRUE(mem.write64(kRam + 0x2008, 0x77));
  auto* page = static_cast<u64*>(p.fixmap_map(kRam + 0x2000));
  ASSERT_NE(page, nullptr);
  EXPECT_EQ(page[1], 0x77u);
  page[2] = 0x99;  // writes through the fixmap reach simulated memory
  u64 v = 0;
  ASSERT_TRUE(mem.read64(kRam + 0x2010, &v));
  EXPECT_EQ(v, 0x99u);
  EXPECT_EQ(p.fixmap_pa(), kRam + 0x2000);
  EXPECT_EQ(p.fixmap_map(kRam + 0x3000), nullptr);  // nested: refused
  p.fixmap_unmap();
  EXPECT_EQ(p.fixmap_pa(), std::nullopt);
  p.fixmap_unmap();  // nothing mapped
  EXPECT_EQ(p.fixmap_map(0x1000), nullptr);  // unbacked
  EXPECT_EQ(p.fixmap_map(kRam + 0x3010), static_cast<void*>(mem.ptr(kRam + 0x3010)));
  p.fixmap_unmap();
  EXPECT_EQ(p.log().format(),
            "fixmap map 0x40002000\n"
            "fixmap unmap\n"
            "fixmap map 0x40003010\n"
            "fixmap unmap\n");
  EXPECT_THAT(kinds(p), ElementsAre(ViolationKind::fixmap_busy, ViolationKind::fixmap_not_mapped,
                                    ViolationKind::unbacked));
}

// The slot belongs to one thread from fixmap_map to fixmap_unmap: another thread's fixmap_map
// waits for the unmap (no fixmap_busy, no second page in the slot while the first is in use),
// and only the holder may unmap.
TEST_F(SimPlatformTest, FixmapWaitsForAnotherThreadsUse) {
  ASSERT_NE(p.fixmap_map(kRam + 0x2000), nullptr);
  std::atomic<bool> mapped{false};
  std::optional<u64> seen_by_other;
  std::thread other([&] {
    p.fixmap_unmap();  // not its slot: refused, reported
    void* q = p.fixmap_map(kRam + 0x3000);
    seen_by_other = p.fixmap_pa();
    mapped = q != nullptr;
    p.fixmap_unmap();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(mapped.load());  // still waiting: this thread holds the slot
  EXPECT_EQ(p.fixmap_pa(), kRam + 0x2000);
  p.fixmap_unmap();
  other.join();
  EXPECT_TRUE(mapped.load());
  EXPECT_EQ(seen_by_other, kRam + 0x3000);
  EXPECT_EQ(p.fixmap_pa(), std::nullopt);
  EXPECT_THAT(kinds(p), ElementsAre(ViolationKind::fixmap_not_mapped));
}

TEST_F(SimPlatformTest, RefcountsAndTheFreeTheyCause) {
  const u64 t = *p.alloc_pages(0);
  EXPECT_EQ(p.page_count(t), 1u);
  p.get_page(t);
  p.get_page(t + 8);
  EXPECT_EQ(p.page_count(t), 3u);
  EXPECT_EQ(p.put_page(t), 2u);
  p.set_log_refcounts(true);
  EXPECT_EQ(p.put_page(t), 1u);
  EXPECT_EQ(p.put_page(t), 0u);
  EXPECT_FALSE(p.allocator().allocated(t));
  EXPECT_EQ(p.put_page(t), 0u);  // a free page: reported
  EXPECT_EQ(p.log().since(1).format(),
            "put 0x42000000 count=1\n"
            "put 0x42000000 count=0\n"
            "free 0x42000000 order=0 size=0x1000\n");
  EXPECT_THAT(kinds(p), ElementsAre(ViolationKind::refcount_free_page));
  // A concatenated root (at the pool start again: page 0 is free) is freed when the last of
  // its pages is put, and logged as one block.
  p.set_log_refcounts(false);
  const u64 root = *p.alloc_pages(2);
  const EventLog::Mark m = p.log().mark();
  for (u64 i = 0; i < 4; ++i) EXPECT_EQ(p.put_page(root + i * k4K), 0u);
  EXPECT_EQ(p.log().since(m).format(), "free 0x42000000 order=2 size=0x4000\n");
}

TEST_F(SimPlatformTest, RecordingOffForBenchmarks) {
  p.log().set_recording(false);
  u64* t = p.phys_to_virt(*p.alloc_pages(0));
  p.write_desc(t, 3);
  p.barrier(Barrier::isb);
  EXPECT_EQ(t[0], 3u);
  EXPECT_EQ(p.log().size(), 0u);
}

// Random platform use (allocations, frees, writes into live tables, puts): replaying the log
// onto a fresh memory with the same regions reproduces the pool byte for byte, with or without
// checking old values; and the log's writes agree with a model of the live descriptors.
RC_GTEST_PROP(SimPlatformProp, ReplayReproducesThePool, ()) {
  constexpr u64 kSmallPool = 32 * k4K;
  PhysMem mem;
  RC_ASSERT(mem.add_region(kRam, kSmallPool).has_value());
  SimPlatform p(mem, kRam, kSmallPool, k4K);
  std::map<u64, unsigned> live;
  const auto nops = *rc::gen::inRange(1, 120);
  for (int i = 0; i < nops; ++i) {
    const int op = *rc::gen::inRange(0, 5);
    if (op == 0 || live.empty()) {
      const auto order = static_cast<unsigned>(*rc::gen::inRange(0, 3));
      if (const Result<u64> r = p.alloc_pages(order)) live[*r] = order;
      continue;
    }
    auto it = live.begin();
    std::advance(it, *rc::gen::inRange<std::size_t>(0, live.size()));
    const auto [pa, order] = *it;
    if (op == 1) {
      p.free_pages(pa, order);
      live.erase(it);
    } else if (op == 2 && order == 0) {
      EXPECT_EQ(p.put_page(pa), 0u);
      live.erase(it);
    } else {
      const u64 entries = (k4K << order) / 8;
      const u64 idx = *rc::gen::inRange<u64>(0, entries);
      u64* ptep = p.phys_to_virt(pa) + idx;
      const u64 old = *ptep;
      const u64 value = *rc::gen::arbitrary<u64>();
      p.write_desc(ptep, value);
      const Event& last = p.log().events().back();
      RC_ASSERT(last == Event::write(pa + idx * 8, old, value));
    }
  }
  RC_ASSERT(p.violations().empty());
  for (const bool check_old : {false, true}) {
    PhysMem copy;
    RC_ASSERT(copy.add_region(kRam, kSmallPool).has_value());
    RC_ASSERT(p.log().replay(copy, check_old).has_value());
    RC_ASSERT(std::memcmp(copy.ptr(kRam), mem.ptr(kRam), kSmallPool) == 0);
  }
}

}  // namespace
}  // namespace ptguard::sim

namespace ptguard::sim {
namespace {

TEST(SimPlatformRangeTlbi, LoggedWithTheRangeAndMisuseReported) {
  PhysMem mem;
  ASSERT_TRUE(mem.add_region(kRam, kRamSize));
  SimPlatform p{mem, kPool, kPoolSize, k4K};
  p.tlbi_range(Tlbi::ripas2e1is, 5, arch::TlbiRange{0x20'0000, 1, 7, 3});
  ASSERT_EQ(p.log().size(), 1u);
  const Event& e = p.log().events()[0];
  EXPECT_EQ(e.kind, EventKind::tlbi);
  EXPECT_EQ(e.tlbi_op, Tlbi::ripas2e1is);
  EXPECT_EQ(e.vmid, 5);
  EXPECT_EQ(e.addr, 0x20'0000u);
  EXPECT_EQ(e.size, 512 * k4K);
  EXPECT_EQ(e.level, 3);
  EXPECT_EQ(tlbi_first(e), 0x20'0000u);
  EXPECT_EQ(tlbi_last(e), 0x40'0000u - 1);
  EXPECT_THAT(p.violations(), IsEmpty());

  p.tlbi_range(Tlbi::ipas2e1is, 5, arch::TlbiRange{0x20'0000, 0, 0, 3});  // not a range form
  p.tlbi_range(Tlbi::ripas2e1is, 5, arch::TlbiRange{0x20'0800, 0, 0, 3});  // not page aligned
  p.tlbi_range(Tlbi::ripas2e1is, 5, arch::TlbiRange{0x20'0000, 4, 0, 3});  // SCALE 4
  p.tlbi_range(Tlbi::ripas2e1is, 5, arch::TlbiRange{0x20'0000, 0, 32, 3});  // NUM 32
  p.tlbi_range(Tlbi::rvale2is, 0, arch::TlbiRange{0x20'0000, 0, 0, 0});  // level 0: no TTL
  p.tlbi(Tlbi::ripas2e1is, 5, 0x20'0000, 3);  // a range form without its size
  EXPECT_EQ(p.violations().size(), 6u);
  for (const Violation& v : p.violations()) EXPECT_EQ(v.kind, ViolationKind::bad_argument);
  EXPECT_EQ(p.log().size(), 7u);  // logged all the same
}

// With DS = 1 (FEAT_LPA2) a range operand's BaseADDR counts 64 KiB units: the platform encodes
// the range as El2Platform does and decodes it with the DS of the regime it targets
// (set_regime_ds), logging what the hardware would invalidate.
TEST(SimPlatform, RangeTlbiIsDecodedWithTheRegimesDs) {
  PhysMem mem;
  ASSERT_TRUE(mem.add_region(kRam, kRamSize));
  SimPlatform p{mem, kPool, kPoolSize, k4K};
  const u64 hi = 0x000a'0000'4001'0000ull;  // above 2^48, 64 KiB aligned
  // Not set: read with the DS the range was built for.
  p.tlbi_range(Tlbi::ripas2e1is, 5, arch::TlbiRange{hi, 1, 7, 3, true});
  EXPECT_EQ(p.log().events().back().addr, hi);
  EXPECT_THAT(p.violations(), IsEmpty());
  p.set_regime_ds(2, true);
  p.tlbi_range(Tlbi::ripas2e1is, 5, arch::TlbiRange{hi, 1, 7, 3, true});
  EXPECT_EQ(p.log().events().back().addr, hi);
  EXPECT_EQ(p.log().events().back().size, 512 * k4K);
  EXPECT_THAT(p.violations(), IsEmpty());
  // Built without DS for a DS = 1 regime: BaseADDR = IA >> 12 read as IA >> 16 (and above 2^49
  // the page number does not even fit the 37 bits).
  p.tlbi_range(Tlbi::ripas2e1is, 5, arch::TlbiRange{0x4001'0000, 1, 7, 3, false});
  EXPECT_EQ(p.log().events().back().addr, u64{0x4'0010} << 16);
  EXPECT_EQ(p.violations().size(), 1u);
  // DS = 1 and a start off a 64 KiB boundary: the hardware's range starts at the boundary below.
  p.tlbi_range(Tlbi::ripas2e1is, 5, arch::TlbiRange{hi + 0x3000, 0, 0, 3, true});
  EXPECT_EQ(p.log().events().back().addr, hi);
  EXPECT_EQ(p.violations().size(), 2u);
  // Stage 1 has its own DS: unset, then 0.
  p.tlbi_range(Tlbi::rvale2is, 0, arch::TlbiRange{0x4001'0000, 0, 0, 3, false});
  EXPECT_EQ(p.log().events().back().addr, 0x4001'0000u);
  p.set_regime_ds(1, false);
  p.tlbi_range(Tlbi::rvale2is, 0, arch::TlbiRange{0x4001'0000, 0, 0, 3, true});
  EXPECT_EQ(p.violations().size(), 3u);
  for (const Violation& v : p.violations()) EXPECT_EQ(v.kind, ViolationKind::bad_argument);
}

}  // namespace
}  // namespace ptguard::sim
