// A pre-filled cache of zeroed table pages that an operation draws from.
//
// A caller fills it (topup) while failing is still harmless, and hands it to an operation; the
// engine counts, before it writes anything, how many pages the operation will take, and fails
// with ENOMEM up front if the cache holds fewer. So an operation that has passed its checks can
// never fail for lack of memory (Linux had to learn this: a host->guest share that ran out of
// pages after changing state was fatal at EL2).
//
// The cache needs no storage of its own: free pages are linked through their first word, as
// Linux's hyp memcache does. A page leaves the cache fully zeroed.
#pragma once

#include "ptguard/arch/error.hpp"
#include "ptguard/pgtable/platform.hpp"

namespace ptguard::pgtable {

class Memcache {
 public:
  Memcache() = default;
  Memcache(const Memcache&) = delete;
  Memcache& operator=(const Memcache&) = delete;

  /// Pages held.
  [[nodiscard]] u32 size() const { return count_; }
  [[nodiscard]] bool empty() const { return count_ == 0; }

  /// Allocates pages from the platform until the cache holds at least `min_pages`.
  /// Errors: ENOMEM if the platform runs out (the pages already taken stay in the cache).
  template <Platform P>
  [[nodiscard]] Status topup(P& plat, u32 min_pages) {
    while (count_ < min_pages) {
      const Result<u64> pa = plat.alloc_pages(0);
      if (!pa) return fail(pa.error());
      push(plat, *pa);
    }
    return {};
  }

  /// Adds a page (zeroed except possibly its first word, which the cache uses as its link).
  template <Platform P>
  void push(P& plat, u64 pa) {
    *plat.phys_to_virt(pa) = head_;
    head_ = pa;
    ++count_;
  }

  /// Takes a zeroed page. Errors: ENOMEM if empty.
  template <Platform P>
  [[nodiscard]] Result<u64> pop(P& plat) {
    if (count_ == 0) return fail(Error::enomem);
    const u64 pa = head_;
    u64* first = plat.phys_to_virt(pa);
    head_ = *first;
    *first = 0;
    --count_;
    return pa;
  }

  /// Calls f(pa) for every page held, without taking any (an owner checking where its
  /// table pages lie must see these too: each becomes a table page on the next operation).
  template <Platform P, typename F>
  void for_each(P& plat, F&& f) const {
    u64 pa = head_;
    for (u32 i = 0; i < count_; ++i) {
      f(pa);
      pa = *plat.phys_to_virt(pa);
    }
  }

  /// Returns every page to the platform.
  template <Platform P>
  void drain(P& plat) {
    while (count_ > 0) {
      const Result<u64> pa = pop(plat);
      plat.free_pages(*pa, 0);
    }
  }

 private:
  u64 head_ = 0;
  u32 count_ = 0;
};

}  // namespace ptguard::pgtable
