// Simulated physical memory (see phys_mem.hpp).
//
// Every region is one anonymous private mapping with MAP_NORESERVE: the kernel hands out zero
// pages and commits memory only when a page is first written, so declaring gigabytes of RAM is
// free. Regions never move once declared, so host pointers stay valid for the PhysMem's life.
#include "ptguard/sim/phys_mem.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>

namespace ptguard::sim {

namespace {

constexpr u64 kRegionAlign = 4096;

// [pa, pa + size) lies inside [base, base + len); size may be 0 (then pa must be inside).
[[nodiscard]] bool contains(u64 base, u64 len, u64 pa, u64 size) {
  if (pa < base) return false;
  const u64 off = pa - base;
  if (off >= len) return false;
  return size <= len - off;
}

}  // namespace

PhysMem::~PhysMem() {
  for (const Backing& b : regions_) {
    ::munmap(b.host, static_cast<std::size_t>(b.size));
  }
}

Status PhysMem::add_region(u64 base, u64 size) {
  if (size == 0 || base % kRegionAlign != 0 || size % kRegionAlign != 0) return fail(Error::einval);
  if (base + size < base) return fail(Error::einval);  // wraps (base + size == 2^64 also wraps)
  const u64 end = base + size;
  for (const Backing& b : regions_) {
    if (base < b.base + b.size && b.base < end) return fail(Error::eexist);
  }
  if (size > static_cast<u64>(SIZE_MAX)) return fail(Error::enomem);
  void* host = ::mmap(nullptr, static_cast<std::size_t>(size), PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (host == MAP_FAILED) return fail(Error::enomem);
  const Backing nb{base, size, static_cast<std::byte*>(host)};
  const auto pos = std::lower_bound(regions_.begin(), regions_.end(), base,
                                    [](const Backing& b, u64 v) { return b.base < v; });
  regions_.insert(pos, nb);
  last_hit_ = 0;
  return {};
}

const PhysMem::Backing* PhysMem::find(u64 pa, u64 size) const {
  if (regions_.empty()) return nullptr;
  if (last_hit_ < regions_.size()) {
    const Backing& b = regions_[last_hit_];
    if (contains(b.base, b.size, pa, size)) return &b;
  }
  // The region with the greatest base <= pa is the only candidate (regions do not overlap).
  const auto it = std::upper_bound(regions_.begin(), regions_.end(), pa,
                                   [](u64 v, const Backing& b) { return v < b.base; });
  if (it == regions_.begin()) return nullptr;
  const auto cand = std::prev(it);
  if (!contains(cand->base, cand->size, pa, size)) return nullptr;
  last_hit_ = static_cast<std::size_t>(cand - regions_.begin());
  return &*cand;
}

// Calls fn(host, offset_in_range, length) for each piece of [pa, pa + size) in turn, pieces
// being the parts that fall in consecutive, adjacent regions; does nothing and returns false
// unless every byte is backed.
template <typename Fn>
bool PhysMem::for_each_piece(u64 pa, u64 size, Fn&& fn) const {
  if (size == 0) return true;
  if (pa + size < pa) return false;  // runs past 2^64, where nothing is backed
  const Backing* first = find(pa, size);
  if (first) {  // the common case: one region holds it all
    fn(first->host + (pa - first->base), u64{0}, size);
    return true;
  }
  // Check coverage across adjacent regions first, then act.
  const Backing* b = find(pa, 0);
  if (!b) return false;
  std::size_t i = static_cast<std::size_t>(b - regions_.data());
  u64 cur = pa;
  u64 left = size;
  while (true) {
    const Backing& r = regions_[i];
    const u64 avail = r.base + r.size - cur;
    if (avail >= left) break;
    left -= avail;
    cur += avail;
    if (++i == regions_.size() || regions_[i].base != cur) return false;
  }
  i = static_cast<std::size_t>(b - regions_.data());
  cur = pa;
  left = size;
  while (left != 0) {
    const Backing& r = regions_[i++];
    const u64 n = std::min(left, r.base + r.size - cur);
    fn(r.host + (cur - r.base), cur - pa, n);
    cur += n;
    left -= n;
  }
  return true;
}

bool PhysMem::backed(u64 pa, u64 size) const {
  return for_each_piece(pa, size, [](std::byte*, u64, u64) {});
}

std::byte* PhysMem::ptr(u64 pa) {
  const Backing* b = find(pa, 0);
  return b ? b->host + (pa - b->base) : nullptr;
}

const std::byte* PhysMem::ptr(u64 pa) const {
  const Backing* b = find(pa, 0);
  return b ? b->host + (pa - b->base) : nullptr;
}

bool PhysMem::read64(u64 pa, u64* out) const {
  if (pa % 8 != 0) return false;
  const Backing* b = find(pa, 8);
  if (!b) return false;
  std::memcpy(out, b->host + (pa - b->base), 8);  // the host is little-endian, like the target
  return true;
}

bool PhysMem::write64(u64 pa, u64 value) {
  if (pa % 8 != 0) return false;
  const Backing* b = find(pa, 8);
  if (!b) return false;
  std::memcpy(b->host + (pa - b->base), &value, 8);
  return true;
}

// A range may run across adjacent regions (they are separate host mappings).
bool PhysMem::read(u64 pa, void* dst, u64 size) const {
  auto* out = static_cast<std::byte*>(dst);
  return for_each_piece(pa, size, [out](std::byte* host, u64 off, u64 n) {
    std::memcpy(out + off, host, static_cast<std::size_t>(n));
  });
}

bool PhysMem::write(u64 pa, const void* src, u64 size) {
  const auto* in = static_cast<const std::byte*>(src);
  return for_each_piece(pa, size, [in](std::byte* host, u64 off, u64 n) {
    std::memcpy(host, in + off, static_cast<std::size_t>(n));
  });
}

bool PhysMem::zero(u64 pa, u64 size) {
  return for_each_piece(pa, size, [](std::byte* host, u64, u64 n) {
    std::memset(host, 0, static_cast<std::size_t>(n));
  });
}

std::vector<PhysMem::Region> PhysMem::regions() const {
  std::vector<Region> out;
  out.reserve(regions_.size());
  for (const Backing& b : regions_) out.push_back(Region{b.base, b.size});
  return out;
}

}  // namespace ptguard::sim
