// PageAllocator: alignment, zeroing, poisoning, counters, misuse detection, reference counts
// and fault injection, by example and by random sequences against a model.
#include "ptguard/sim/page_allocator.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <map>
#include <set>
#include <stdexcept>
#include <vector>

namespace ptguard::sim {
namespace {

using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr u64 k4K = 4096;
constexpr u64 kRam = 0x4000'0000;

std::vector<ViolationKind> kinds(const PageAllocator& a) {
  std::vector<ViolationKind> out;
  for (const Violation& v : a.violations()) out.push_back(v.kind);
  return out;
}

bool all_bytes(const PhysMem& m, u64 pa, u64 size, u8 value) {
  const std::byte* p = m.ptr(pa);
  for (u64 i = 0; i < size; ++i) {
    if (p[i] != std::byte{value}) return false;
  }
  return true;
}

struct Pool {
  explicit Pool(u64 base = kRam, u64 size = 64 * k4K, u64 page = k4K) {
    if (!mem.add_region(kRam, 16 << 20)) throw std::runtime_error("add_region");
    alloc.emplace(mem, base, size, page);
  }
  PhysMem mem;
  std::optional<PageAllocator> alloc;
};

TEST(PageAllocator, CheckRejectsBadPools) {
  PhysMem m;
  ASSERT_TRUE(m.add_region(kRam, 1 << 20));
  EXPECT_TRUE(PageAllocator::check(m, kRam, 1 << 20, k4K));
  EXPECT_TRUE(PageAllocator::check(m, kRam, 1 << 20, 16384));
  EXPECT_TRUE(PageAllocator::check(m, kRam, 1 << 20, 65536));
  EXPECT_EQ(PageAllocator::check(m, kRam, 1 << 20, 8192), fail(Error::einval));
  EXPECT_EQ(PageAllocator::check(m, kRam, 0, k4K), fail(Error::einval));
  EXPECT_EQ(PageAllocator::check(m, kRam + k4K, 1 << 16, 65536), fail(Error::einval));
  EXPECT_EQ(PageAllocator::check(m, kRam, 0x1800, k4K), fail(Error::einval));
  EXPECT_EQ(PageAllocator::check(m, kRam, 2 << 20, k4K), fail(Error::erange));
  EXPECT_EQ(PageAllocator::check(m, 0, k4K, k4K), fail(Error::erange));
  EXPECT_THROW(PageAllocator(m, kRam, 2 << 20, k4K), std::invalid_argument);
  try {
    PageAllocator a(m, kRam, 0x1800, k4K);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("page size"));
  }
}

TEST(PageAllocator, HandsOutAscendingPagesThenReusesTheLastFreed) {
  Pool p;
  PageAllocator& a = *p.alloc;
  EXPECT_EQ(a.pool_pages(), 64u);
  EXPECT_EQ(a.alloc(0), kRam);
  EXPECT_EQ(a.alloc(0), kRam + k4K);
  EXPECT_EQ(a.alloc(0), kRam + 2 * k4K);
  ASSERT_TRUE(a.free(kRam + k4K, 0));
  EXPECT_EQ(a.alloc(0), kRam + k4K);
  EXPECT_THAT(a.violations(), IsEmpty());
}

TEST(PageAllocator, ZeroesOnAllocPoisonsOnFree) {
  Pool p;
  PageAllocator& a = *p.alloc;
  const u64 pa = *a.alloc(0);
  EXPECT_TRUE(all_bytes(p.mem, pa, k4K, 0));
  ASSERT_TRUE(p.mem.write64(pa + 8, 0x1234));
  ASSERT_TRUE(a.free(pa, 0));
  u64 v = 0;
  for (u64 off = 0; off < k4K; off += 8) {
    ASSERT_TRUE(p.mem.read64(pa + off, &v));
    ASSERT_EQ(v, PageAllocator::kFreePoison) << off;
  }
  EXPECT_EQ(a.alloc(0), pa);  // the same page again, zeroed again
  EXPECT_TRUE(all_bytes(p.mem, pa, k4K, 0));
  // Without poisoning the contents stay as they were.
  a.set_poison_on_free(false);
  ASSERT_TRUE(p.mem.write64(pa + 16, 0x77));
  ASSERT_TRUE(a.free(pa, 0));
  ASSERT_TRUE(p.mem.read64(pa + 16, &v));
  EXPECT_EQ(v, 0x77u);
  // Memory dirtied while free is zeroed when handed out (order 2 here).
  ASSERT_TRUE(p.mem.write64(kRam + 4 * k4K + 8, 0x99));
  const u64 blk = *a.alloc(2);
  EXPECT_TRUE(all_bytes(p.mem, blk, 4 * k4K, 0));
}

TEST(PageAllocator, BlocksAreNaturallyAlignedInPhysicalAddress) {
  // A pool that starts one page past a 64 KiB boundary: an order-4 block must skip to the next
  // 64 KiB boundary, not to the pool's 16th page.
  Pool p(kRam + k4K, 63 * k4K);
  PageAllocator& a = *p.alloc;
  for (unsigned order = 0; order <= 4; ++order) {
    const Result<u64> r = a.alloc(order);
    ASSERT_TRUE(r) << order;
    EXPECT_EQ(*r % (k4K << order), 0u) << order;
    EXPECT_EQ(a.block_order(*r), order);
  }
  EXPECT_THAT(a.violations(), IsEmpty());
}

TEST(PageAllocator, LargeGranules) {
  for (const u64 page : {u64{16384}, u64{65536}}) {
    PhysMem m;
    ASSERT_TRUE(m.add_region(kRam, 64 * page));
    PageAllocator a(m, kRam + page, 63 * page, page);
    EXPECT_EQ(a.page_size(), page);
    const u64 pa = *a.alloc(0);
    EXPECT_EQ(pa, kRam + page);
    const u64 root = *a.alloc(4);
    EXPECT_EQ(root % (16 * page), 0u);
    EXPECT_EQ(root, kRam + 16 * page);
    EXPECT_TRUE(all_bytes(m, root, 16 * page, 0));
    EXPECT_EQ(a.stats().outstanding, 17u);
  }
}

TEST(PageAllocator, ExhaustionAndCounters) {
  Pool p(kRam, 8 * k4K);
  PageAllocator& a = *p.alloc;
  EXPECT_EQ(a.alloc(4), fail(Error::enomem));  // 16 pages never fit in 8
  std::vector<u64> got;
  for (int i = 0; i < 8; ++i) got.push_back(*a.alloc(0));
  EXPECT_EQ(a.alloc(0), fail(Error::enomem));
  EXPECT_EQ(a.free_page_count(), 0u);
  for (u64 pa : got) ASSERT_TRUE(a.free(pa, 0));
  EXPECT_EQ(a.alloc(3), kRam);
  EXPECT_EQ(a.alloc(0), fail(Error::enomem));
  const AllocStats& s = a.stats();
  EXPECT_EQ(s.alloc_calls, 12u);
  EXPECT_EQ(s.failed_allocs, 3u);
  EXPECT_EQ(s.injected_failures, 0u);
  EXPECT_EQ(s.pages_allocated, 16u);
  EXPECT_EQ(s.pages_freed, 8u);
  EXPECT_EQ(s.outstanding, 8u);
  EXPECT_EQ(s.peak_outstanding, 8u);
  a.reset_stats();
  EXPECT_EQ(a.stats().alloc_calls, 0u);
  EXPECT_EQ(a.stats().outstanding, 8u);
  EXPECT_EQ(a.stats().peak_outstanding, 8u);
}

TEST(PageAllocator, OrderFiveIsRefused) {
  Pool p;
  EXPECT_EQ(p.alloc->alloc(5), fail(Error::einval));
  EXPECT_THAT(kinds(*p.alloc), ElementsAre(ViolationKind::bad_argument));
  EXPECT_EQ(p.alloc->stats().outstanding, 0u);
}

TEST(PageAllocator, BadFreesAreRefusedAndReportedPrecisely) {
  Pool p;
  PageAllocator& a = *p.alloc;
  const u64 one = *a.alloc(0);
  const u64 blk = *a.alloc(2);
  const u64 never = kRam + 40 * k4K;
  EXPECT_EQ(a.free(never, 0), fail(Error::enoent));
  EXPECT_EQ(a.free(blk + k4K, 0), fail(Error::einval));
  EXPECT_EQ(a.free(blk, 1), fail(Error::einval));
  EXPECT_EQ(a.free(one + 8, 0), fail(Error::einval));
  EXPECT_EQ(a.free(kRam - k4K, 0), fail(Error::einval));
  EXPECT_EQ(a.free(one, 7), fail(Error::einval));
  EXPECT_EQ(a.stats().outstanding, 5u);  // nothing was freed
  ASSERT_TRUE(a.free(one, 0));
  EXPECT_EQ(a.free(one, 0), fail(Error::enoent));
  EXPECT_THAT(kinds(a), ElementsAre(ViolationKind::never_allocated, ViolationKind::not_block_head,
                                    ViolationKind::wrong_order, ViolationKind::misaligned,
                                    ViolationKind::outside_pool, ViolationKind::bad_argument,
                                    ViolationKind::double_free));
  EXPECT_EQ(a.violations()[1].pa, blk + k4K);
  EXPECT_THAT(a.violations()[1].what, HasSubstr("inside the order-2 block at 0x40004000"));
  EXPECT_THAT(a.violations()[2].what, HasSubstr("allocated with order 2"));
  EXPECT_EQ(to_string(a.violations()[6]),
            "double_free at 0x40000000: free of order-0 block at 0x40000000: already free");
  a.clear_violations();
  EXPECT_THAT(a.violations(), IsEmpty());
}

TEST(PageAllocator, FreeingACountedBlockFreesItWithoutComplaint) {
  Pool p;
  PageAllocator& a = *p.alloc;
  const u64 pa = *a.alloc(1);
  ASSERT_TRUE(a.get(pa + k4K));
  EXPECT_TRUE(a.free(pa, 1));
  EXPECT_THAT(a.violations(), IsEmpty());
  EXPECT_FALSE(a.allocated(pa));
  EXPECT_EQ(a.count(pa + k4K), 0u);
}

TEST(PageAllocator, ReferenceCounts) {
  Pool p;
  PageAllocator& a = *p.alloc;
  const u64 pa = *a.alloc(0);
  EXPECT_EQ(a.count(pa), 1u);
  ASSERT_TRUE(a.get(pa + 0x18));  // any address in the page
  ASSERT_TRUE(a.get(pa));
  EXPECT_EQ(a.count(pa + 0xff8), 3u);
  EXPECT_EQ(a.put(pa), 2u);
  EXPECT_EQ(a.put(pa), 1u);
  EXPECT_TRUE(a.allocated(pa));
  EXPECT_EQ(a.put(pa), 0u);
  EXPECT_FALSE(a.allocated(pa));
  EXPECT_EQ(a.stats().pages_freed, 1u);
  EXPECT_EQ(a.put(pa), fail(Error::enoent));
  EXPECT_EQ(a.get(pa), fail(Error::enoent));
  EXPECT_EQ(a.get(kRam + 100 * k4K), fail(Error::einval));
  EXPECT_EQ(a.count(kRam + 100 * k4K), 0u);
  EXPECT_THAT(kinds(a), ElementsAre(ViolationKind::refcount_free_page,
                                    ViolationKind::refcount_free_page,
                                    ViolationKind::outside_pool));
}

TEST(PageAllocator, BlockIsFreedWhenItsLastPageIsPut) {
  Pool p;
  PageAllocator& a = *p.alloc;
  const u64 blk = *a.alloc(2);
  for (u64 i = 0; i < 4; ++i) EXPECT_EQ(a.count(blk + i * k4K), 1u);
  EXPECT_EQ(a.put(blk + 2 * k4K), 0u);
  EXPECT_TRUE(a.allocated(blk));
  EXPECT_EQ(a.put(blk + 2 * k4K), fail(Error::enoent));  // already at 0
  EXPECT_EQ(a.put(blk), 0u);
  EXPECT_EQ(a.put(blk + 3 * k4K), 0u);
  EXPECT_EQ(a.stats().outstanding, 4u);
  EXPECT_EQ(a.put(blk + k4K), 0u);
  EXPECT_EQ(a.stats().outstanding, 0u);
  EXPECT_FALSE(a.allocated(blk + k4K));
  EXPECT_EQ(a.block_containing(blk), std::nullopt);
  EXPECT_THAT(kinds(a), ElementsAre(ViolationKind::refcount_underflow));
}

TEST(PageAllocator, BlockContaining) {
  Pool p;
  PageAllocator& a = *p.alloc;
  (void)*a.alloc(0);
  const u64 blk = *a.alloc(3);
  EXPECT_EQ(a.block_containing(blk + 5 * k4K + 0x10), (PageAllocator::Block{blk, 3}));
  EXPECT_EQ(a.block_order(blk), 3u);
  EXPECT_EQ(a.block_order(blk + k4K), std::nullopt);
}

TEST(PageAllocator, FailNth) {
  Pool p;
  PageAllocator& a = *p.alloc;
  a.fail_nth(3);
  EXPECT_TRUE(a.alloc(0));
  EXPECT_TRUE(a.alloc(1));
  EXPECT_EQ(a.alloc(0), fail(Error::enomem));
  EXPECT_TRUE(a.alloc(0));  // once only
  EXPECT_TRUE(a.alloc(0));
  EXPECT_EQ(a.stats().injected_failures, 1u);
  EXPECT_EQ(a.stats().failed_allocs, 1u);
  a.fail_nth(1);
  a.fail_nth(0);  // cancelled
  EXPECT_TRUE(a.alloc(0));
}

TEST(PageAllocator, FailAfter) {
  Pool p;
  PageAllocator& a = *p.alloc;
  a.fail_after(2);
  EXPECT_TRUE(a.alloc(0));
  EXPECT_TRUE(a.alloc(0));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(a.alloc(0), fail(Error::enomem));
  a.clear_fault_injection();
  EXPECT_TRUE(a.alloc(0));
  a.fail_after(0);
  EXPECT_EQ(a.alloc(0), fail(Error::enomem));
  EXPECT_EQ(a.stats().injected_failures, 6u);
  EXPECT_EQ(a.stats().outstanding, 3u);
}

TEST(PageAllocatorDeathTest, AbortOnViolation) {
  Pool p;
  p.alloc->set_abort_on_violation(true);
  EXPECT_DEATH((void)p.alloc->free(kRam, 0), "never_allocated at 0x40000000");
}

TEST(PageAllocator, ManyPagesQuickly) {
  PhysMem m;
  ASSERT_TRUE(m.add_region(kRam, 256 << 20));
  PageAllocator a(m, kRam, 256 << 20, k4K);  // 65536 pages
  a.set_poison_on_free(false);
  std::vector<u64> got;
  got.reserve(a.pool_pages());
  for (u64 i = 0; i < a.pool_pages(); ++i) got.push_back(*a.alloc(0));
  EXPECT_EQ(a.alloc(0), fail(Error::enomem));
  for (u64 pa : got) ASSERT_TRUE(a.free(pa, 0));
  EXPECT_EQ(std::set<u64>(got.begin(), got.end()).size(), got.size());
  EXPECT_EQ(a.stats().peak_outstanding, 65536u);
}

// --- properties ---------------------------------------------------------------------------

// Random alloc/free/get/put sequences against a model: no page handed out twice, natural
// alignment, zeroed blocks, counts that add up, and no violations for valid use.
RC_GTEST_PROP(PageAllocatorProp, RandomUseMatchesModel, ()) {
  PhysMem m;
  const u64 page = *rc::gen::element(u64{4096}, u64{16384}, u64{65536});
  const u64 npages = *rc::gen::inRange<u64>(1, 72);
  const u64 skew = *rc::gen::inRange<u64>(0, 16);  // pool base misaligned to larger blocks
  RC_ASSERT(m.add_region(kRam, (npages + 16) * page).has_value());
  PageAllocator a(m, kRam + skew * page, npages * page, page);
  std::map<u64, unsigned> live;            // block pa -> order
  std::map<u64, u32> counts;               // page pa -> count
  u64 outstanding = 0;
  u64 peak = 0;
  auto free_model = [&](u64 pa, unsigned order) {
    for (u64 j = 0; j < (u64{1} << order); ++j) counts.erase(pa + j * page);
    live.erase(pa);
    outstanding -= u64{1} << order;
  };
  const auto nops = *rc::gen::inRange(1, 150);
  for (int step = 0; step < nops; ++step) {
    const int op = *rc::gen::inRange(0, 4);
    if (op == 0 || live.empty()) {
      const auto order = static_cast<unsigned>(*rc::gen::inRange(0, 5));
      const Result<u64> r = a.alloc(order);
      if (!r) {
        RC_ASSERT(r.error() == Error::enomem);
        continue;
      }
      const u64 pa = *r;
      const u64 bytes = page << order;
      RC_ASSERT(pa % bytes == 0);
      RC_ASSERT(pa >= a.pool_base() && pa + bytes <= a.pool_base() + a.pool_size());
      for (const auto& [lpa, lorder] : live) {
        RC_ASSERT(pa + bytes <= lpa || lpa + (page << lorder) <= pa);  // disjoint
      }
      RC_ASSERT(all_bytes(m, pa, bytes, 0));
      // Dirty it so that the next user of these pages must see them zeroed again.
      RC_ASSERT(m.write64(pa + bytes - 8, 0xabcd));
      live[pa] = order;
      for (u64 j = 0; j < (u64{1} << order); ++j) counts[pa + j * page] = 1;
      outstanding += u64{1} << order;
      peak = std::max(peak, outstanding);
    } else {
      auto it = live.begin();
      std::advance(it, *rc::gen::inRange<std::size_t>(0, live.size()));
      const u64 pa = it->first;
      const unsigned order = it->second;
      const u64 target = pa + page * *rc::gen::inRange<u64>(0, u64{1} << order);
      if (op == 1) {
        bool referenced = false;
        for (u64 j = 0; j < (u64{1} << order); ++j) referenced |= counts[pa + j * page] > 1;
        if (referenced) continue;  // keep this sequence violation-free
        RC_ASSERT(a.free(pa, order).has_value());
        free_model(pa, order);
      } else if (op == 2) {
        RC_ASSERT(a.get(target).has_value());
        ++counts[target];
      } else if (counts[target] > 0) {
        const Result<u32> c = a.put(target);
        RC_ASSERT(c.has_value());
        RC_ASSERT(*c == --counts[target]);
        bool all_zero = true;
        for (u64 j = 0; j < (u64{1} << order); ++j) all_zero &= counts[pa + j * page] == 0;
        if (all_zero) free_model(pa, order);
        RC_ASSERT(a.allocated(target) == !all_zero);
      }
    }
    for (const auto& [cpa, c] : counts) RC_ASSERT(a.count(cpa) == c);
    const AllocStats& s = a.stats();
    RC_ASSERT(s.outstanding == outstanding);
    RC_ASSERT(s.pages_allocated - s.pages_freed == outstanding);
    RC_ASSERT(s.peak_outstanding == peak);
    RC_ASSERT(a.free_page_count() == npages - outstanding);
  }
  RC_ASSERT(a.violations().empty());
}

// For a sequence of n allocations and every k in 1..n, fail_nth(k) fails exactly the k-th;
// fail_after(k) fails exactly those after the k-th.
RC_GTEST_PROP(PageAllocatorProp, FaultInjectionHitsExactlyTheKth, ()) {
  const auto orders = *rc::gen::container<std::vector<unsigned>>(
      *rc::gen::inRange<std::size_t>(1, 20), rc::gen::inRange(0u, 3u));
  for (std::size_t k = 1; k <= orders.size() + 1; ++k) {
    for (const bool after : {false, true}) {
      PhysMem m;
      RC_ASSERT(m.add_region(kRam, 512 * k4K).has_value());
      PageAllocator a(m, kRam, 512 * k4K, k4K);  // room for every allocation
      if (after) a.fail_after(k - 1); else a.fail_nth(k);
      for (std::size_t i = 1; i <= orders.size(); ++i) {
        const Result<u64> r = a.alloc(orders[i - 1]);
        const bool should_fail = after ? i >= k : i == k;
        RC_ASSERT(r.has_value() == !should_fail);
        if (!r) RC_ASSERT(r.error() == Error::enomem);
      }
      const u64 expected = after ? orders.size() - (k - 1) : (k <= orders.size() ? 1 : 0);
      RC_ASSERT(a.stats().injected_failures == expected);
    }
  }
}

// Misuse never changes the allocator's state, whatever the address.
RC_GTEST_PROP(PageAllocatorProp, BadFreesChangeNothing, ()) {
  PhysMem m;
  RC_ASSERT(m.add_region(kRam, 64 * k4K).has_value());
  PageAllocator a(m, kRam, 32 * k4K, k4K);
  std::vector<std::pair<u64, unsigned>> blocks;
  for (int i = 0; i < 6; ++i) {
    const auto order = static_cast<unsigned>(*rc::gen::inRange(0, 3));
    blocks.emplace_back(*a.alloc(order), order);
  }
  const u64 pa = kRam - k4K + 8 * *rc::gen::inRange<u64>(0, 40 * k4K / 8);
  const auto order = static_cast<unsigned>(*rc::gen::inRange(0, 6));
  bool valid = false;
  for (const auto& [bpa, bo] : blocks) valid |= bpa == pa && bo == order;
  RC_PRE(!valid);
  const AllocStats before = a.stats();
  RC_ASSERT(!a.free(pa, order).has_value());
  RC_ASSERT(a.violations().size() == 1u);
  RC_ASSERT(a.stats().outstanding == before.outstanding);
  for (const auto& [bpa, bo] : blocks) RC_ASSERT(a.block_order(bpa) == bo);
}

}  // namespace
}  // namespace ptguard::sim
