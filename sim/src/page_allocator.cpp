// The table-page allocator of the simulator (see page_allocator.hpp).
#include "ptguard/sim/page_allocator.hpp"

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace ptguard::sim {

namespace {

std::string hex(u64 v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

const char* check_reason(Error e) {
  switch (e) {
    case Error::einval:
      return "page size must be 4, 16 or 64 KiB and the pool a non-empty multiple of it";
    case Error::erange: return "the pool is not entirely backed by simulated memory";
    case Error::e2big: return "the pool has too many pages";
    default: return "bad pool";
  }
}

}  // namespace

const char* name(ViolationKind k) {
  switch (k) {
    case ViolationKind::double_free: return "double_free";
    case ViolationKind::never_allocated: return "never_allocated";
    case ViolationKind::not_block_head: return "not_block_head";
    case ViolationKind::wrong_order: return "wrong_order";
    case ViolationKind::outside_pool: return "outside_pool";
    case ViolationKind::misaligned: return "misaligned";
    case ViolationKind::refcount_free_page: return "refcount_free_page";
    case ViolationKind::refcount_underflow: return "refcount_underflow";
    case ViolationKind::refcount_overflow: return "refcount_overflow";
    case ViolationKind::write_to_free_page: return "write_to_free_page";
    case ViolationKind::bad_pointer: return "bad_pointer";
    case ViolationKind::unbacked: return "unbacked";
    case ViolationKind::fixmap_busy: return "fixmap_busy";
    case ViolationKind::fixmap_not_mapped: return "fixmap_not_mapped";
    case ViolationKind::bad_argument: return "bad_argument";
    case ViolationKind::lock_order: return "lock_order";
  }
  return "?";
}

std::string to_string(const Violation& v) {
  return std::string(name(v.kind)) + " at " + hex(v.pa) + ": " + v.what;
}

void PrintTo(const Violation& v, std::ostream* os) { *os << to_string(v); }

Status PageAllocator::check(const PhysMem& mem, u64 base, u64 size, u64 page_size) {
  if (page_size != 4096 && page_size != 16384 && page_size != 65536) return fail(Error::einval);
  if (size == 0 || base % page_size != 0 || size % page_size != 0) return fail(Error::einval);
  if (base + size < base) return fail(Error::einval);
  if (size / page_size >= kNil) return fail(Error::e2big);
  if (!mem.backed(base, size)) return fail(Error::erange);
  return {};
}

PageAllocator::PageAllocator(PhysMem& mem, u64 base, u64 size, u64 page_size)
    : mem_(&mem), base_(base), page_size_(page_size), npages_(0) {
  if (const Status s = check(mem, base, size, page_size); !s) {
    throw std::invalid_argument(std::string("PageAllocator(") + hex(base) + ", " + hex(size) +
                                ", " + hex(page_size) + "): " + check_reason(s.error()));
  }
  npages_ = static_cast<u32>(size / page_size);
  pages_.resize(npages_);
  // Hand pages out in ascending order at first: push from the top down.
  for (u32 i = npages_; i-- > 0;) list_push(i);
}

void PageAllocator::list_push(u32 i) {
  Page& p = pages_[i];
  p.prev = kNil;
  p.next = free_head_;
  if (free_head_ != kNil) pages_[free_head_].prev = i;
  free_head_ = i;
}

void PageAllocator::list_remove(u32 i) {
  Page& p = pages_[i];
  if (p.prev != kNil) pages_[p.prev].next = p.next; else free_head_ = p.next;
  if (p.next != kNil) pages_[p.next].prev = p.prev;
  p.prev = p.next = kNil;
}

void PageAllocator::report(ViolationKind kind, u64 pa, std::string what) {
  violations_.push_back(Violation{kind, pa, std::move(what)});
  if (abort_on_violation_) {
    std::fprintf(stderr, "ptguard sim: %s\n", to_string(violations_.back()).c_str());
    std::abort();
  }
}

bool PageAllocator::injection_says_fail() {
  bool fail_now = false;
  if (fail_nth_ != 0 && --fail_nth_ == 0) fail_now = true;
  if (fail_after_) {
    if (*fail_after_ == 0) fail_now = true;
    else --*fail_after_;
  }
  return fail_now;
}

void PageAllocator::fail_nth(u64 k) { fail_nth_ = k; }
void PageAllocator::fail_after(u64 k) { fail_after_ = k; }
void PageAllocator::clear_fault_injection() {
  fail_nth_ = 0;
  fail_after_.reset();
}

std::optional<u32> PageAllocator::find_run(unsigned order) {
  const u32 n = 1u << order;
  if (free_page_count() < n) return std::nullopt;
  // Candidates are the indices whose physical address is aligned to the block size.
  const u64 block = page_size_ << order;
  const u64 first_aligned = (block - base_ % block) % block;  // bytes from base to alignment
  const u64 start = first_aligned / page_size_;
  if (start + n > npages_) return std::nullopt;
  const u64 ncand = (npages_ - start) / n;  // candidates: start + k * n, k < ncand
  u64 k0 = scan_hint_ >= start ? (scan_hint_ - start) / n : 0;
  if (k0 >= ncand) k0 = 0;
  for (u64 step = 0; step < ncand;) {
    const u64 k = (k0 + step) % ncand;
    const u32 i = static_cast<u32>(start + k * n);
    u32 j = 0;
    while (j < n && is_free(i + j)) ++j;
    if (j == n) {
      scan_hint_ = i;
      return i;
    }
    ++step;
  }
  return std::nullopt;
}

void PageAllocator::take(u32 first, unsigned order) {
  const u32 n = 1u << order;
  for (u32 j = 0; j < n; ++j) {
    Page& p = pages_[first + j];
    list_remove(first + j);
    p.state = j == 0 ? State::head : State::tail;
    p.order = static_cast<u8>(order);
    p.head = first;
    p.count = 1;
  }
  const u64 pa = base_ + u64{first} * page_size_;
  const bool zeroed = mem_->zero(pa, page_size_ << order);
  (void)zeroed;  // the pool is backed (checked at construction)
  stats_.pages_allocated += n;
  stats_.outstanding += n;
  if (stats_.outstanding > stats_.peak_outstanding) stats_.peak_outstanding = stats_.outstanding;
}

void PageAllocator::release(u32 first, unsigned order) {
  const u32 n = 1u << order;
  const u64 pa = base_ + u64{first} * page_size_;
  const u64 bytes = page_size_ << order;
  if (poison_on_free_) {
    if (poison_page_.empty()) poison_page_.assign(page_size_ / 8, kFreePoison);
    // Page by page through PhysMem: a block may straddle two adjacent regions.
    for (u64 off = 0; off < bytes; off += page_size_) {
      const bool done = mem_->write(pa + off, poison_page_.data(), page_size_);
      (void)done;  // the pool is backed (checked at construction)
    }
  }
  // Push from the top down so the block's first page is handed out first again.
  for (u32 j = n; j-- > 0;) {
    Page& p = pages_[first + j];
    p.state = State::free;
    p.count = 0;
    p.order = 0;
    p.head = 0;
    list_push(first + j);
  }
  stats_.pages_freed += n;
  stats_.outstanding -= n;
}

Result<u64> PageAllocator::alloc(unsigned order) {
  ++stats_.alloc_calls;
  if (order > kMaxOrder) {
    ++stats_.failed_allocs;
    report(ViolationKind::bad_argument, 0,
           "alloc of order " + std::to_string(order) + " (at most " + std::to_string(kMaxOrder) + ")");
    return fail(Error::einval);
  }
  if (injection_says_fail()) {
    ++stats_.failed_allocs;
    ++stats_.injected_failures;
    return fail(Error::enomem);
  }
  std::optional<u32> first;
  if (order == 0) {
    if (free_head_ != kNil) first = free_head_;
  } else {
    first = find_run(order);
  }
  if (!first) {
    ++stats_.failed_allocs;
    return fail(Error::enomem);
  }
  take(*first, order);
  return base_ + u64{*first} * page_size_;
}

Result<u32> PageAllocator::page_index(u64 pa, const char* op) {
  if (!in_pool(pa)) {
    report(ViolationKind::outside_pool, pa,
           std::string(op) + " of " + hex(pa) + ", outside the pool [" + hex(base_) + ", " +
               hex(base_ + pool_size()) + ")");
    return fail(Error::einval);
  }
  return static_cast<u32>((pa - base_) / page_size_);
}

Status PageAllocator::free(u64 pa, unsigned order) {
  const std::string what = "free of order-" + std::to_string(order) + " block at " + hex(pa);
  if (order > kMaxOrder) {
    report(ViolationKind::bad_argument, pa, what + ": order above " + std::to_string(kMaxOrder));
    return fail(Error::einval);
  }
  const Result<u32> idx = page_index(pa, "free");
  if (!idx) return fail(idx.error());
  if ((pa - base_) % page_size_ != 0) {
    report(ViolationKind::misaligned, pa, what + ": not page-aligned");
    return fail(Error::einval);
  }
  const Page& p = pages_[*idx];
  switch (p.state) {
    case State::never:
      report(ViolationKind::never_allocated, pa, what + ": never allocated");
      return fail(Error::enoent);
    case State::free:
      report(ViolationKind::double_free, pa, what + ": already free");
      return fail(Error::enoent);
    case State::tail:
      report(ViolationKind::not_block_head, pa,
             what + ": inside the order-" + std::to_string(p.order) + " block at " +
                 hex(base_ + u64{p.head} * page_size_));
      return fail(Error::einval);
    case State::head: break;
  }
  if (p.order != order) {
    report(ViolationKind::wrong_order, pa,
           what + ": it was allocated with order " + std::to_string(p.order));
    return fail(Error::einval);
  }
  // The counts are the table engine's bookkeeping of a table's entries, not references to the
  // page: the engine frees a whole discarded subtree at once, whatever its counts say.
  release(*idx, order);
  return {};
}

Status PageAllocator::get(u64 pa) {
  const Result<u32> idx = page_index(pa, "get");
  if (!idx) return fail(idx.error());
  Page& p = pages_[*idx];
  if (is_free(*idx)) {
    report(ViolationKind::refcount_free_page, pa, "get of " + hex(pa) + ", a free page");
    return fail(Error::enoent);
  }
  if (p.count == kMaxRefcount) {
    report(ViolationKind::refcount_overflow, pa, "get of " + hex(pa) + ": count saturated");
    return fail(Error::ebusy);
  }
  ++p.count;
  return {};
}

Result<u32> PageAllocator::put(u64 pa) {
  const Result<u32> idx = page_index(pa, "put");
  if (!idx) return fail(idx.error());
  Page& p = pages_[*idx];
  if (is_free(*idx)) {
    report(ViolationKind::refcount_free_page, pa, "put of " + hex(pa) + ", a free page");
    return fail(Error::enoent);
  }
  if (p.count == 0) {
    report(ViolationKind::refcount_underflow, pa,
           "put of " + hex(pa) + ": count already 0 (its block is still live)");
    return fail(Error::enoent);
  }
  if (--p.count != 0) return p.count;
  const u32 head = p.head;
  const unsigned order = p.order;
  const u32 n = 1u << order;
  for (u32 j = 0; j < n; ++j) {
    if (pages_[head + j].count != 0) return 0u;  // the block lives on
  }
  release(head, order);
  return 0u;
}

u32 PageAllocator::count(u64 pa) const {
  if (!in_pool(pa)) return 0;
  return pages_[(pa - base_) / page_size_].count;
}

bool PageAllocator::allocated(u64 pa) const {
  return in_pool(pa) && !is_free(static_cast<u32>((pa - base_) / page_size_));
}

std::optional<unsigned> PageAllocator::block_order(u64 pa) const {
  if (!in_pool(pa) || (pa - base_) % page_size_ != 0) return std::nullopt;
  const Page& p = pages_[(pa - base_) / page_size_];
  if (p.state != State::head) return std::nullopt;
  return p.order;
}

std::optional<PageAllocator::Block> PageAllocator::block_containing(u64 pa) const {
  if (!allocated(pa)) return std::nullopt;
  const Page& p = pages_[(pa - base_) / page_size_];
  return Block{base_ + u64{p.head} * page_size_, p.order};
}

void PageAllocator::reset_stats() {
  const u64 out = stats_.outstanding;
  stats_ = AllocStats{};
  stats_.outstanding = out;
  stats_.peak_outstanding = out;
}

}  // namespace ptguard::sim
