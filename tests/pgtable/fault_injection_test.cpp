// Fault injection and under-filled memcaches.
//
// The engine draws table pages only from the memcache it is given, and counts the pages an
// operation needs before it writes anything; allocations happen in Memcache::topup and in
// create_*. So:
//   - EveryAllocationFails*: a long operation sequence, run once per k with the k-th
//     allocation failing (PageAllocator::fail_nth, once): the root allocation (create gives
//     ENOMEM, nothing leaks) or a topup in the middle, after which the operation runs with a
//     short memcache: it must either succeed as the model says or fail with ENOMEM leaving the
//     table byte for byte as it was and the memcache untouched; retried after a full topup it
//     must then do what the model says. Every step checks the table against the model,
//     structure, accounting (no leak) and the event log (World::step).
//   - PoolExhausted*: the same with every allocation after the k-th failing (fail_after).
//   - Underfilled* (RapidCheck): twin tables in lockstep; twin B runs each random operation
//     with a generous memcache and uses c pages; twin A gets c - 1 pages (ENOMEM, unchanged)
//     and then exactly c (success, memcache left empty). For maps c must equal
//     pages_needed_for_map().
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include "invariants.hpp"

namespace ptguard::pgtest {
namespace {

using arch::Granule;
using pgtable::Memcache;
using sim::SimPlatform;

struct XorShift final : Rng {
  explicit XorShift(u64 seed) : s(seed | 1) {}
  u64 s;
  u64 below(u64 n) override {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return n <= 1 ? 0 : s % n;
  }
};

template <Granule G>
unsigned ia_for() {
  // Concatenated roots for 4K and 16K; one root page for 64K (16 of them, 8192 entries each,
  // make every check slow; the model tests cover that shape).
  return G == Granule::k64K ? 42 : 40;
}

std::string trace_of(const std::vector<std::string>& trace) {
  std::string out;
  const std::size_t from = trace.size() > 12 ? trace.size() - 12 : 0;
  for (std::size_t i = from; i < trace.size(); ++i) out += "  " + trace[i] + "\n";
  return out;
}

template <Granule G>
std::vector<Op> sequence(const Geometry& geo, u64 seed, std::size_t n) {
  XorShift r(seed);
  const Space sp = make_space(geo, 2, /*cheap=*/true);
  std::vector<Op> ops;
  for (std::size_t i = 0; i < n; ++i) ops.push_back(gen_op(r, sp));
  return ops;
}

enum class Inject { once, from_then_on };

/// Runs `ops` on `w`, each with its own memcache filled to what the operation may need (the
/// fill may fail). Returns false (with a failure recorded) at the first error.
template <typename W>
bool run_sequence(W& w, const std::vector<Op>& ops, const std::string& what) {
  for (const Op& op : ops) {
    std::vector<std::string> errors;
    Memcache mc;
    const Status filled = mc.topup(*w.plat, w.pages_for(op));
    bool applied = w.step(op, mc, errors, /*enomem_ok=*/true);
    if (!applied && errors.empty()) {
      if (filled) errors.push_back("ENOMEM with a memcache filled to pages_for() = " + std::to_string(w.pages_for(op)));
      // Retry once the allocator gives pages again (for fail_after, it never does).
      if (mc.topup(*w.plat, w.pages_for(op))) w.step(op, mc, errors);
    }
    mc.drain(*w.plat);
    if (!errors.empty()) {
      ADD_FAILURE() << what << "\n" << trace_of(w.trace) << join(errors);
      return false;
    }
  }
  return true;
}

/// Unmaps everything: only the root remains; destroy() returns it; nothing leaked.
template <typename W>
bool teardown(W& w, const std::string& what) {
  std::vector<std::string> errors;
  Op all;
  all.kind = OpKind::unmap;
  all.size = u64{1} << w.geo.ia_bits;
  Memcache none;
  w.step(all, none, errors);
  const Reach r = reachable(*w.plat, w.geo);
  if (r.pages.size() != w.geo.root_pages) errors.push_back(std::to_string(r.pages.size()) + " table pages remain");
  w.t->destroy();
  if (w.plat->allocator().stats().outstanding != 0)
    errors.push_back(std::to_string(w.plat->allocator().stats().outstanding) + " pages leaked after destroy()");
  if (!errors.empty()) {
    ADD_FAILURE() << what << " (teardown)\n" << join(errors);
    return false;
  }
  return true;
}

template <Granule G>
void every_allocation_fails(Inject mode) {
  using T = pgtable::Stage2Table<G, SimPlatform>;
  const unsigned ia = ia_for<G>();
  std::vector<Op> ops;
  u64 total = 0;
  {
    World<T> w(ia, /*fwb=*/false);
    ASSERT_TRUE(w.t.has_value());
    ops = sequence<G>(w.geo, 0x5eed + static_cast<u64>(G), 36);
    ASSERT_TRUE(run_sequence(w, ops, "dry run"));
    total = w.plat->allocator().stats().alloc_calls;
    ASSERT_TRUE(teardown(w, "dry run"));
  }
  ASSERT_GT(total, 20u) << "the sequence should allocate a fair number of pages";
  for (u64 k = 1; k <= total + 1; ++k) {
    const std::string what = "k = " + std::to_string(k) + " of " + std::to_string(total);
    World<T> w(ia, false, {}, 7, [k, mode](SimPlatform& p) {
      if (mode == Inject::once) {
        p.allocator().fail_nth(k);
      } else {
        p.allocator().fail_after(k - 1);
      }
    });
    if (k == 1) {
      // The root allocation itself.
      ASSERT_FALSE(w.create_status);
      EXPECT_EQ(w.create_status.error(), Error::enomem);
      EXPECT_EQ(w.plat->allocator().stats().outstanding, 0u);
      EXPECT_TRUE(w.plat->violations().empty());
      continue;
    }
    ASSERT_TRUE(w.create_status) << what;
    if (!run_sequence(w, ops, what)) return;
    if (k <= total) {
      EXPECT_GE(w.plat->allocator().stats().injected_failures, 1u) << what;
    }
    w.plat->allocator().clear_fault_injection();
    if (!teardown(w, what)) return;
  }
}

TEST(PgtableFaultInjection, EveryAllocationFailsOnce4K) { every_allocation_fails<Granule::k4K>(Inject::once); }
TEST(PgtableFaultInjection, EveryAllocationFailsOnce16K) { every_allocation_fails<Granule::k16K>(Inject::once); }
TEST(PgtableFaultInjection, EveryAllocationFailsOnce64K) { every_allocation_fails<Granule::k64K>(Inject::once); }
TEST(PgtableFaultInjection, PoolExhausted4K) { every_allocation_fails<Granule::k4K>(Inject::from_then_on); }
TEST(PgtableFaultInjection, PoolExhausted16K) { every_allocation_fails<Granule::k16K>(Inject::from_then_on); }
TEST(PgtableFaultInjection, PoolExhausted64K) { every_allocation_fails<Granule::k64K>(Inject::from_then_on); }

// ---------------------------------------------------------------------------------------------
// Under-filled memcaches.
// ---------------------------------------------------------------------------------------------

struct RcRng final : Rng {
  u64 below(u64 n) override { return n <= 1 ? 0 : *rc::gen::resize(100, rc::gen::inRange<u64>(0, n)); }
};

template <Granule G>
void underfilled_property(bool contiguous = false) {
  using T = pgtable::Stage2Table<G, SimPlatform>;
  const unsigned ia = ia_for<G>();
  const bool fwb = *rc::gen::arbitrary<bool>();
  pgtable::TableOptions opt;
  opt.contiguous = contiguous;
  World<T> a(ia, fwb, opt);
  World<T> b(ia, fwb, opt);
  RC_ASSERT(a.t.has_value() && b.t.has_value());
  const Space sp = make_space(a.geo, *rc::gen::inRange(0, 3));
  const auto n = *rc::gen::resize(100, rc::gen::inRange<std::size_t>(1, 21));
  const auto ops = *rc::gen::container<std::vector<Op>>(n, rc::gen::exec([sp] {
    RcRng r;
    return gen_op(r, sp);
  }));
  for (const Op& op : ops) {
    std::vector<std::string> errors;
    const u32 predicted = a.pages_for(op);
    Memcache mb;
    RC_ASSERT(mb.topup(*b.plat, b.pages_for(op)));
    const u32 before = mb.size();
    b.step(op, mb, errors);
    const u32 used = before - mb.size();
    mb.drain(*b.plat);
    Memcache ma;
    if (used > 0) {
      RC_ASSERT(ma.topup(*a.plat, used - 1));
      if (a.step(op, ma, errors, /*enomem_ok=*/true)) {
        errors.push_back(to_string(op) + " succeeded with " + std::to_string(used - 1) +
                         " pages, its twin used " + std::to_string(used));
      }
      if (op.kind == OpKind::map && predicted != used)
        errors.push_back("pages_needed_for_map said " + std::to_string(predicted) + ", the map used " +
                         std::to_string(used));
      RC_ASSERT(ma.topup(*a.plat, used));
    }
    a.step(op, ma, errors);
    if (!ma.empty()) errors.push_back(std::to_string(ma.size()) + " pages left of exactly " + std::to_string(used));
    ma.drain(*a.plat);
    if (reachable(*a.plat, a.geo).pages.size() != reachable(*b.plat, b.geo).pages.size())
      errors.push_back("twins differ in table pages");
    if (!errors.empty()) RC_FAIL(trace_of(a.trace) + join(errors));
  }
}

RC_GTEST_PROP(PgtableFaultInjection, Underfilled4K, ()) { underfilled_property<Granule::k4K>(); }
RC_GTEST_PROP(PgtableFaultInjection, Underfilled16K, ()) { underfilled_property<Granule::k16K>(); }
RC_GTEST_PROP(PgtableFaultInjection, Underfilled64K, ()) { underfilled_property<Granule::k64K>(); }
// With contiguous runs: an ENOMEM still leaves the table as it was (no run broken before the
// refusal), and the page counts are the same.
RC_GTEST_PROP(PgtableFaultInjection, UnderfilledContiguous4K, ()) { underfilled_property<Granule::k4K>(true); }
RC_GTEST_PROP(PgtableFaultInjection, UnderfilledContiguous16K, ()) { underfilled_property<Granule::k16K>(true); }
RC_GTEST_PROP(PgtableFaultInjection, UnderfilledContiguous64K, ()) { underfilled_property<Granule::k64K>(true); }

}  // namespace
}  // namespace ptguard::pgtest
