// The simulator's ordered record of everything the table code asked the machine to do:
// descriptor writes (with old and new values), table-page allocations and frees, TLB
// invalidations, barriers, cache maintenance and fixmap use (and, optionally, reference-count
// changes). Tests read it to check break-before-make order, count invalidations, look at the
// events of one operation (mark()/since()) and replay the writes onto another memory; the tool
// prints it one line per event (`ptguard run --trace`).
//
//   EventLog::Mark m = log.mark();
//   engine.map(...);
//   EventView ev = log.since(m);
//   EXPECT_EQ(ev.count(arch::Tlbi::ipas2e1is), 1u);
//   std::cout << ev.format();
#pragma once

#include <cstddef>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "ptguard/arch/error.hpp"
#include "ptguard/arch/maintenance.hpp"
#include "ptguard/sim/phys_mem.hpp"

namespace ptguard::sim {

enum class EventKind : u8 {
  write,         ///< write_desc: pa, old_value, value
  alloc,         ///< alloc_pages succeeded: pa, order, size (bytes); the block was zeroed
  alloc_fail,    ///< alloc_pages failed: order, error
  free,          ///< free_pages or a put to 0: pa, order, size; poisoned: filled with `value`
  tlbi,          ///< tlbi: tlbi_op, vmid, addr, level; a range form (arch::is_range) also
                 ///< size (bytes covered), tlbi_scale, tlbi_num: one instruction each
  barrier,       ///< barrier: barrier_op
  cache,         ///< cache_op: cache_op, pa, size
  fixmap_map,    ///< fixmap_map: pa
  fixmap_unmap,  ///< fixmap_unmap
  get_page,      ///< get_page (only when refcount logging is on): pa, value = count after
  put_page,      ///< put_page (likewise): pa, value = count after
};

[[nodiscard]] const char* name(EventKind k);

/// One event. A flat record: only the fields its kind lists (above) are meaningful; the
/// others are zero, so events compare with == field by field.
struct Event {
  EventKind kind = EventKind::write;
  u64 pa = 0;
  u64 old_value = 0;
  u64 value = 0;
  u64 size = 0;
  u64 addr = 0;
  u16 vmid = 0;
  int level = 0;
  unsigned order = 0;
  arch::Tlbi tlbi_op{};
  u8 tlbi_scale = 0;  ///< range TLBI: SCALE
  u8 tlbi_num = 0;    ///< range TLBI: NUM
  arch::Barrier barrier_op{};
  arch::CacheOp cache_op{};
  Error error{};
  bool poisoned = false;

  [[nodiscard]] static Event write(u64 pa, u64 old_value, u64 new_value);
  [[nodiscard]] static Event alloc(u64 pa, unsigned order, u64 size);
  [[nodiscard]] static Event alloc_fail(unsigned order, Error e);
  [[nodiscard]] static Event free(u64 pa, unsigned order, u64 size, bool poisoned, u64 poison);
  [[nodiscard]] static Event tlbi(arch::Tlbi op, u16 vmid, u64 addr, int level);
  /// A range TLBI `r` over pages of `page_size` bytes (size = r.pages() * page_size).
  [[nodiscard]] static Event tlbi_range(arch::Tlbi op, u16 vmid, const arch::TlbiRange& r, u64 page_size);
  [[nodiscard]] static Event barrier(arch::Barrier b);
  [[nodiscard]] static Event cache(arch::CacheOp op, u64 pa, u64 size);
  [[nodiscard]] static Event fixmap_map(u64 pa);
  [[nodiscard]] static Event fixmap_unmap();
  [[nodiscard]] static Event get_page(u64 pa, u32 count_after);
  [[nodiscard]] static Event put_page(u64 pa, u32 count_after);

  friend bool operator==(const Event&, const Event&) = default;
};

/// Whether a TLBI operation takes an address (and a level hint), and whether it acts on a VMID.
[[nodiscard]] bool tlbi_has_addr(arch::Tlbi op);
[[nodiscard]] bool tlbi_has_vmid(arch::Tlbi op);

/// The input-address range [first, last] a TLBI event names: one address for the by-address
/// forms, addr .. addr + size - 1 for the range forms; every address for the others.
[[nodiscard]] u64 tlbi_first(const Event& e);
[[nodiscard]] u64 tlbi_last(const Event& e);

/// One line, no newline:
///   write 0x40001008: 0x0 -> 0x40000743
///   alloc 0x40002000 order=0 size=0x1000        alloc order=2 failed: ENOMEM
///   free 0x40002000 order=0 size=0x1000
///   TLBI IPAS2E1IS vmid=1 addr=0x200000 level=3  (level=? for kTlbiLevelUnknown; only the
///   TLBI VMALLS12E1IS vmid=1                      fields the operation takes)
///   TLBI RIPAS2E1IS vmid=1 addr=0x200000 size=0x200000 scale=1 num=7 level=3
///   TLBI VAE2IS addr=0xffff000000200000 level=3
///   DSB ISH
///   DC CIVAC 0x40003000 size=0x1000
///   fixmap map 0x80000000                         fixmap unmap
///   get 0x40002000 count=2                        put 0x40002000 count=1
[[nodiscard]] std::string to_string(const Event& e);
std::ostream& operator<<(std::ostream& os, const Event& e);
/// For GoogleTest's printer.
void PrintTo(const Event& e, std::ostream* os);

/// A window [first, last) of a vector of events, by index: it stays valid (and fixed) while
/// more events are appended to the vector; clearing the vector empties it.
class EventView {
 public:
  using value_type = Event;
  using size_type = std::size_t;
  using difference_type = std::ptrdiff_t;
  using const_reference = const Event&;
  using reference = const Event&;
  using const_iterator = const Event*;
  using iterator = const Event*;

  EventView() = default;
  /// The whole vector (a filter() result, say).
  explicit EventView(const std::vector<Event>& events)
      : events_(&events), first_(0), last_(events.size()) {}
  EventView(const std::vector<Event>& events, std::size_t first, std::size_t last)
      : events_(&events), first_(first), last_(last) {}

  [[nodiscard]] std::size_t size() const;
  [[nodiscard]] bool empty() const { return size() == 0; }
  [[nodiscard]] const Event& operator[](std::size_t i) const { return (*events_)[first_ + i]; }
  [[nodiscard]] const Event* begin() const { return events_ ? events_->data() + first_ : nullptr; }
  [[nodiscard]] const Event* end() const { return begin() + size(); }

  [[nodiscard]] std::size_t count(EventKind k) const;
  [[nodiscard]] std::size_t count(arch::Tlbi op) const;
  [[nodiscard]] std::size_t count(arch::Barrier b) const;
  [[nodiscard]] std::size_t count(arch::CacheOp op) const;
  template <typename Pred>
  [[nodiscard]] std::size_t count_if(Pred pred) const {
    std::size_t n = 0;
    for (const Event& e : *this) n += pred(e) ? 1 : 0;
    return n;
  }

  /// The events `pred` accepts, in order (wrap in EventView to count or format them).
  template <typename Pred>
  [[nodiscard]] std::vector<Event> filter(Pred pred) const {
    std::vector<Event> out;
    for (const Event& e : *this) {
      if (pred(e)) out.push_back(e);
    }
    return out;
  }
  [[nodiscard]] std::vector<Event> filter(EventKind k) const;
  /// The descriptor writes to `pa`, in order.
  [[nodiscard]] std::vector<Event> writes_to(u64 pa) const;

  /// Index (within the view) of the first event at or after `from` that `pred` accepts.
  template <typename Pred>
  [[nodiscard]] std::optional<std::size_t> find(Pred pred, std::size_t from = 0) const {
    for (std::size_t i = from; i < size(); ++i) {
      if (pred((*this)[i])) return i;
    }
    return std::nullopt;
  }

  /// One line per event (to_string), each ending in '\n'.
  [[nodiscard]] std::string format() const;

  /// Re-applies, in order, what the events did to memory: the descriptor writes, the zeroing
  /// of allocated blocks and the poisoning of freed ones. Replaying a whole log onto a memory
  /// that was in the original's starting state reproduces the original's table pages (writes
  /// made through fixmap or phys_to_virt pointers directly are not events and are not
  /// replayed). With check_old, each write first checks that the target holds the write's
  /// old value. Returns the number of events that changed memory (writes, allocs, frees). Errors (stopping at the first failing
  /// event, the ones before it applied): ERANGE if a target is not backed in `mem`; EINVAL if
  /// check_old finds a different old value.
  [[nodiscard]] Result<std::size_t> replay(PhysMem& mem, bool check_old = false) const;

 private:
  const std::vector<Event>* events_ = nullptr;
  std::size_t first_ = 0;
  std::size_t last_ = 0;
};

class EventLog {
 public:
  using Mark = std::size_t;

  /// Appends an event, unless recording is off.
  void record(const Event& e) {
    if (recording_) events_.push_back(e);
  }
  [[nodiscard]] bool recording() const { return recording_; }
  /// Turns recording off (benchmarks) or back on. Events are not kept while off.
  void set_recording(bool on) { recording_ = on; }

  /// Turns recording off for its lifetime and restores the previous setting.
  class Pause {
   public:
    explicit Pause(EventLog& log) : log_(log), was_(log.recording()) { log.set_recording(false); }
    ~Pause() { log_.set_recording(was_); }
    Pause(const Pause&) = delete;
    Pause& operator=(const Pause&) = delete;

   private:
    EventLog& log_;
    bool was_;
  };

  [[nodiscard]] std::size_t size() const { return events_.size(); }
  [[nodiscard]] const std::vector<Event>& events() const { return events_; }
  [[nodiscard]] EventView all() const { return EventView(events_, 0, events_.size()); }
  /// The current end of the log; since(mark) views what is recorded after it.
  [[nodiscard]] Mark mark() const { return events_.size(); }
  /// Events recorded since `m` (up to now; later events are not in the view).
  [[nodiscard]] EventView since(Mark m) const { return EventView(events_, m, events_.size()); }
  /// Forgets every event (views and marks taken before become empty or stale).
  void clear() { events_.clear(); }
  void reserve(std::size_t n) { events_.reserve(n); }

  // Shorthands over all().
  [[nodiscard]] std::size_t count(EventKind k) const { return all().count(k); }
  [[nodiscard]] std::size_t count(arch::Tlbi op) const { return all().count(op); }
  [[nodiscard]] std::size_t count(arch::Barrier b) const { return all().count(b); }
  [[nodiscard]] std::size_t count(arch::CacheOp op) const { return all().count(op); }
  [[nodiscard]] std::string format() const { return all().format(); }
  [[nodiscard]] Result<std::size_t> replay(PhysMem& mem, bool check_old = false) const {
    return all().replay(mem, check_old);
  }

 private:
  std::vector<Event> events_;
  bool recording_ = true;
};

}  // namespace ptguard::sim
