// The simulator's event log (see event_log.hpp).
#include "ptguard/sim/event_log.hpp"

#include <algorithm>
#include <cstdio>

namespace ptguard::sim {

namespace {

std::string hex(u64 v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

const char* name(EventKind k) {
  switch (k) {
    case EventKind::write: return "write";
    case EventKind::alloc: return "alloc";
    case EventKind::alloc_fail: return "alloc_fail";
    case EventKind::free: return "free";
    case EventKind::tlbi: return "tlbi";
    case EventKind::barrier: return "barrier";
    case EventKind::cache: return "cache";
    case EventKind::fixmap_map: return "fixmap_map";
    case EventKind::fixmap_unmap: return "fixmap_unmap";
    case EventKind::get_page: return "get_page";
    case EventKind::put_page: return "put_page";
  }
  return "?";
}

Event Event::write(u64 pa, u64 old_value, u64 new_value) {
  Event e;
  e.kind = EventKind::write;
  e.pa = pa;
  e.old_value = old_value;
  e.value = new_value;
  return e;
}

Event Event::alloc(u64 pa, unsigned order, u64 size) {
  Event e;
  e.kind = EventKind::alloc;
  e.pa = pa;
  e.order = order;
  e.size = size;
  return e;
}

Event Event::alloc_fail(unsigned order, Error err) {
  Event e;
  e.kind = EventKind::alloc_fail;
  e.order = order;
  e.error = err;
  return e;
}

Event Event::free(u64 pa, unsigned order, u64 size, bool poisoned, u64 poison) {
  Event e;
  e.kind = EventKind::free;
  e.pa = pa;
  e.order = order;
  e.size = size;
  e.poisoned = poisoned;
  e.value = poisoned ? poison : 0;
  return e;
}

Event Event::tlbi(arch::Tlbi op, u16 vmid, u64 addr, int level) {
  Event e;
  e.kind = EventKind::tlbi;
  e.tlbi_op = op;
  e.vmid = vmid;
  e.addr = addr;
  e.level = level;
  return e;
}

Event Event::tlbi_range(arch::Tlbi op, u16 vmid, const arch::TlbiRange& r, u64 page_size) {
  Event e = tlbi(op, vmid, r.addr, r.level);
  e.size = r.pages() * page_size;
  e.tlbi_scale = r.scale;
  e.tlbi_num = r.num;
  return e;
}

Event Event::barrier(arch::Barrier b) {
  Event e;
  e.kind = EventKind::barrier;
  e.barrier_op = b;
  return e;
}

Event Event::cache(arch::CacheOp op, u64 pa, u64 size) {
  Event e;
  e.kind = EventKind::cache;
  e.cache_op = op;
  e.pa = pa;
  e.size = size;
  return e;
}

Event Event::fixmap_map(u64 pa) {
  Event e;
  e.kind = EventKind::fixmap_map;
  e.pa = pa;
  return e;
}

Event Event::fixmap_unmap() {
  Event e;
  e.kind = EventKind::fixmap_unmap;
  return e;
}

Event Event::get_page(u64 pa, u32 count_after) {
  Event e;
  e.kind = EventKind::get_page;
  e.pa = pa;
  e.value = count_after;
  return e;
}

Event Event::put_page(u64 pa, u32 count_after) {
  Event e;
  e.kind = EventKind::put_page;
  e.pa = pa;
  e.value = count_after;
  return e;
}

bool tlbi_has_addr(arch::Tlbi op) {
  switch (op) {
    case arch::Tlbi::ipas2e1is:
    case arch::Tlbi::ripas2e1is:
    case arch::Tlbi::vae2is:
    case arch::Tlbi::vale2is:
    case arch::Tlbi::rvae2is:
    case arch::Tlbi::rvale2is: return true;
    case arch::Tlbi::vmalle1is:
    case arch::Tlbi::vmalls12e1is:
    case arch::Tlbi::alle2is: return false;
  }
  return false;
}

u64 tlbi_first(const Event& e) { return tlbi_has_addr(e.tlbi_op) ? e.addr : 0; }

u64 tlbi_last(const Event& e) {
  if (!tlbi_has_addr(e.tlbi_op)) return ~u64{0};
  if (arch::is_range(e.tlbi_op)) return e.size == 0 ? e.addr : e.addr + (e.size - 1);
  return e.addr;
}

bool tlbi_has_vmid(arch::Tlbi op) {
  switch (op) {
    case arch::Tlbi::ipas2e1is:
    case arch::Tlbi::ripas2e1is:
    case arch::Tlbi::vmalle1is:
    case arch::Tlbi::vmalls12e1is: return true;
    case arch::Tlbi::vae2is:
    case arch::Tlbi::vale2is:
    case arch::Tlbi::alle2is:
    case arch::Tlbi::rvae2is:
    case arch::Tlbi::rvale2is: return false;
  }
  return false;
}

std::string to_string(const Event& e) {
  switch (e.kind) {
    case EventKind::write:
      return "write " + hex(e.pa) + ": " + hex(e.old_value) + " -> " + hex(e.value);
    case EventKind::alloc:
      return "alloc " + hex(e.pa) + " order=" + std::to_string(e.order) + " size=" + hex(e.size);
    case EventKind::alloc_fail:
      return "alloc order=" + std::to_string(e.order) + " failed: " + name(e.error);
    case EventKind::free:
      return "free " + hex(e.pa) + " order=" + std::to_string(e.order) + " size=" + hex(e.size);
    case EventKind::tlbi: {
      std::string s = arch::name(e.tlbi_op);
      if (tlbi_has_vmid(e.tlbi_op)) s += " vmid=" + std::to_string(e.vmid);
      if (tlbi_has_addr(e.tlbi_op)) {
        s += " addr=" + hex(e.addr);
        if (arch::is_range(e.tlbi_op)) {
          s += " size=" + hex(e.size) + " scale=" + std::to_string(e.tlbi_scale) +
               " num=" + std::to_string(e.tlbi_num);
        }
        s += " level=";
        s += e.level == arch::kTlbiLevelUnknown ? std::string("?") : std::to_string(e.level);
      }
      return s;
    }
    case EventKind::barrier: return arch::name(e.barrier_op);
    case EventKind::cache:
      return std::string(arch::name(e.cache_op)) + " " + hex(e.pa) + " size=" + hex(e.size);
    case EventKind::fixmap_map: return "fixmap map " + hex(e.pa);
    case EventKind::fixmap_unmap: return "fixmap unmap";
    case EventKind::get_page: return "get " + hex(e.pa) + " count=" + std::to_string(e.value);
    case EventKind::put_page: return "put " + hex(e.pa) + " count=" + std::to_string(e.value);
  }
  return "?";
}

std::ostream& operator<<(std::ostream& os, const Event& e) { return os << to_string(e); }

void PrintTo(const Event& e, std::ostream* os) { *os << to_string(e); }

std::size_t EventView::size() const {
  if (events_ == nullptr) return 0;
  const std::size_t hi = std::min(last_, events_->size());
  return hi > first_ ? hi - first_ : 0;
}

std::size_t EventView::count(EventKind k) const {
  return count_if([k](const Event& e) { return e.kind == k; });
}

std::size_t EventView::count(arch::Tlbi op) const {
  return count_if([op](const Event& e) { return e.kind == EventKind::tlbi && e.tlbi_op == op; });
}

std::size_t EventView::count(arch::Barrier b) const {
  return count_if([b](const Event& e) { return e.kind == EventKind::barrier && e.barrier_op == b; });
}

std::size_t EventView::count(arch::CacheOp op) const {
  return count_if([op](const Event& e) { return e.kind == EventKind::cache && e.cache_op == op; });
}

std::vector<Event> EventView::filter(EventKind k) const {
  return filter([k](const Event& e) { return e.kind == k; });
}

std::vector<Event> EventView::writes_to(u64 pa) const {
  return filter([pa](const Event& e) { return e.kind == EventKind::write && e.pa == pa; });
}

std::string EventView::format() const {
  std::string out;
  for (const Event& e : *this) {
    out += to_string(e);
    out += '\n';
  }
  return out;
}

Result<std::size_t> EventView::replay(PhysMem& mem, bool check_old) const {
  std::size_t applied = 0;
  for (const Event& e : *this) {
    switch (e.kind) {
      case EventKind::write: {
        if (!mem.backed(e.pa, 8)) return fail(Error::erange);
        if (check_old) {
          u64 cur = 0;
          if (!mem.read64(e.pa, &cur)) return fail(Error::einval);  // unaligned
          if (cur != e.old_value) return fail(Error::einval);
        }
        if (!mem.write64(e.pa, e.value)) return fail(Error::einval);  // unaligned
        ++applied;
        break;
      }
      case EventKind::alloc:
        if (!mem.zero(e.pa, e.size)) return fail(Error::erange);
        ++applied;
        break;
      case EventKind::free:
        if (e.poisoned) {
          if (!mem.backed(e.pa, e.size)) return fail(Error::erange);
          for (u64 off = 0; off < e.size; off += 8) {
            if (!mem.write64(e.pa + off, e.value)) return fail(Error::einval);  // unaligned
          }
        }
        ++applied;
        break;
      default: break;  // no effect on memory
    }
  }
  return applied;
}

}  // namespace ptguard::sim
