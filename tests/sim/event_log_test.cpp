// EventLog: recording, the one-line text format, counting, filtering, marks and replay.
#include "ptguard/sim/event_log.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sstream>

namespace ptguard::sim {
namespace {

using arch::Barrier;
using arch::CacheOp;
using arch::Tlbi;
using arch::TlbiRange;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

TEST(EventFormat, OneLinePerKind) {
  EXPECT_EQ(to_string(Event::write(0x40001008, 0, 0x40000743)),
            "write 0x40001008: 0x0 -> 0x40000743");
  EXPECT_EQ(to_string(Event::alloc(0x40002000, 0, 0x1000)), "alloc 0x40002000 order=0 size=0x1000");
  EXPECT_EQ(to_string(Event::alloc_fail(2, Error::enomem)), "alloc order=2 failed: ENOMEM");
  EXPECT_EQ(to_string(Event::free(0x40010000, 4, 0x10000, true, 1)),
            "free 0x40010000 order=4 size=0x10000");
  EXPECT_EQ(to_string(Event::tlbi(Tlbi::ipas2e1is, 1, 0x200000, 3)),
            "TLBI IPAS2E1IS vmid=1 addr=0x200000 level=3");
  EXPECT_EQ(to_string(Event::tlbi(Tlbi::ipas2e1is, 7, 0x40000000, arch::kTlbiLevelUnknown)),
            "TLBI IPAS2E1IS vmid=7 addr=0x40000000 level=?");
  EXPECT_EQ(to_string(Event::tlbi(Tlbi::vmalls12e1is, 1, 0, 0)), "TLBI VMALLS12E1IS vmid=1");
  EXPECT_EQ(to_string(Event::tlbi(Tlbi::vmalle1is, 2, 0, 0)), "TLBI VMALLE1IS vmid=2");
  EXPECT_EQ(to_string(Event::tlbi(Tlbi::vae2is, 0, 0xffff000000200000, 2)),
            "TLBI VAE2IS addr=0xffff000000200000 level=2");
  EXPECT_EQ(to_string(Event::tlbi(Tlbi::vale2is, 0, 0x1000, 3)), "TLBI VALE2IS addr=0x1000 level=3");
  EXPECT_EQ(to_string(Event::tlbi_range(Tlbi::ripas2e1is, 3, TlbiRange{0x200000, 1, 7, 3}, 0x1000)),
            "TLBI RIPAS2E1IS vmid=3 addr=0x200000 size=0x200000 scale=1 num=7 level=3");
  EXPECT_EQ(to_string(Event::tlbi_range(Tlbi::rvae2is, 0, TlbiRange{0x10000, 0, 0, -1}, 0x10000)),
            "TLBI RVAE2IS addr=0x10000 size=0x20000 scale=0 num=0 level=?");
  EXPECT_EQ(to_string(Event::tlbi_range(Tlbi::rvale2is, 0, TlbiRange{0, 3, 31, 3}, 0x1000)),
            "TLBI RVALE2IS addr=0x0 size=0x200000000 scale=3 num=31 level=3");
  EXPECT_EQ(to_string(Event::tlbi(Tlbi::alle2is, 0, 0, 0)), "TLBI ALLE2IS");
  EXPECT_EQ(to_string(Event::barrier(Barrier::dsb_ish)), "DSB ISH");
  EXPECT_EQ(to_string(Event::barrier(Barrier::dsb_ishst)), "DSB ISHST");
  EXPECT_EQ(to_string(Event::barrier(Barrier::isb)), "ISB");
  EXPECT_EQ(to_string(Event::barrier(Barrier::dmb_ishst)), "DMB ISHST");
  EXPECT_EQ(to_string(Event::cache(CacheOp::dc_civac, 0x40003000, 0x1000)),
            "DC CIVAC 0x40003000 size=0x1000");
  EXPECT_EQ(to_string(Event::cache(CacheOp::ic_ivau, 0x80000000, 0x40)),
            "IC IVAU 0x80000000 size=0x40");
  EXPECT_EQ(to_string(Event::fixmap_map(0x80000000)), "fixmap map 0x80000000");
  EXPECT_EQ(to_string(Event::fixmap_unmap()), "fixmap unmap");
  EXPECT_EQ(to_string(Event::get_page(0x40002000, 2)), "get 0x40002000 count=2");
  EXPECT_EQ(to_string(Event::put_page(0x40002000, 1)), "put 0x40002000 count=1");
  std::ostringstream os;
  os << Event::barrier(Barrier::dsb_sy);
  EXPECT_EQ(os.str(), "DSB SY");
}

TEST(EventFormat, KindNames) {
  EXPECT_STREQ(name(EventKind::write), "write");
  EXPECT_STREQ(name(EventKind::fixmap_unmap), "fixmap_unmap");
}

EventLog bbm_log() {
  EventLog log;
  log.record(Event::write(0x40001008, 0x40200741, 0));
  log.record(Event::barrier(Barrier::dsb_ishst));
  log.record(Event::tlbi(Tlbi::ipas2e1is, 1, 0x200000, 3));
  log.record(Event::barrier(Barrier::dsb_ish));
  log.record(Event::barrier(Barrier::isb));
  log.record(Event::write(0x40001008, 0, 0x40400741));
  return log;
}

TEST(EventLog, FormatIsOneLinePerEvent) {
  const EventLog log = bbm_log();
  EXPECT_EQ(log.format(),
            "write 0x40001008: 0x40200741 -> 0x0\n"
            "DSB ISHST\n"
            "TLBI IPAS2E1IS vmid=1 addr=0x200000 level=3\n"
            "DSB ISH\n"
            "ISB\n"
            "write 0x40001008: 0x0 -> 0x40400741\n");
  EXPECT_EQ(EventView().format(), "");
}

TEST(EventLog, CountFilterFind) {
  const EventLog log = bbm_log();
  EXPECT_EQ(log.size(), 6u);
  EXPECT_EQ(log.count(EventKind::write), 2u);
  EXPECT_EQ(log.count(EventKind::barrier), 3u);
  EXPECT_EQ(log.count(EventKind::cache), 0u);
  EXPECT_EQ(log.count(Tlbi::ipas2e1is), 1u);
  EXPECT_EQ(log.count(Tlbi::vmalls12e1is), 0u);
  EXPECT_EQ(log.count(Barrier::dsb_ish), 1u);
  EXPECT_EQ(log.count(Barrier::isb), 1u);
  EXPECT_EQ(log.count(CacheOp::dc_cvac), 0u);
  const EventView all = log.all();
  EXPECT_EQ(all.count_if([](const Event& e) { return e.kind == EventKind::write && e.value == 0; }),
            1u);
  EXPECT_THAT(all.writes_to(0x40001008),
              ElementsAre(Event::write(0x40001008, 0x40200741, 0),
                          Event::write(0x40001008, 0, 0x40400741)));
  EXPECT_THAT(all.writes_to(0x40001010), IsEmpty());
  const std::vector<Event> tl = all.filter(EventKind::tlbi);
  ASSERT_EQ(tl.size(), 1u);
  EXPECT_EQ(tl[0].vmid, 1);
  EXPECT_EQ(tl[0].addr, 0x200000u);
  EXPECT_EQ(tl[0].level, 3);
  EXPECT_EQ(EventView(tl).count(Tlbi::ipas2e1is), 1u);
  // Break-before-make, the way a test would check it: invalid, then TLBI, then DSB ISH, then
  // the new entry.
  const auto is_write = [](const Event& e) { return e.kind == EventKind::write; };
  const auto brk = all.find(is_write);
  ASSERT_TRUE(brk);
  const auto inv = all.find([](const Event& e) { return e.kind == EventKind::tlbi; }, *brk);
  ASSERT_TRUE(inv);
  const auto dsb = all.find(
      [](const Event& e) { return e.kind == EventKind::barrier && e.barrier_op == Barrier::dsb_ish; },
      *inv);
  ASSERT_TRUE(dsb);
  const auto make = all.find(is_write, *brk + 1);
  ASSERT_TRUE(make);
  EXPECT_LT(*dsb, *make);
  EXPECT_EQ(*make, 5u);
  EXPECT_EQ(all.find(is_write, 6), std::nullopt);
}

TEST(EventLog, MarksViewOneOperation) {
  EventLog log = bbm_log();
  const EventLog::Mark m = log.mark();
  log.record(Event::cache(CacheOp::dc_cvac, 0x40001000, 64));
  log.record(Event::barrier(Barrier::dsb_ish));
  const EventView v = log.since(m);
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[0].kind, EventKind::cache);
  EXPECT_EQ(v.count(Barrier::dsb_ish), 1u);
  log.record(Event::barrier(Barrier::isb));  // later events are not in the view
  EXPECT_EQ(v.size(), 2u);
  EXPECT_EQ(log.since(m).size(), 3u);
  EXPECT_TRUE(log.since(log.mark()).empty());
  log.clear();
  EXPECT_EQ(v.size(), 0u);  // cleared: the view is empty, not dangling
  EXPECT_EQ(log.size(), 0u);
}

TEST(EventLog, RecordingCanBeTurnedOff) {
  EventLog log;
  EXPECT_TRUE(log.recording());
  log.set_recording(false);
  log.record(Event::barrier(Barrier::isb));
  EXPECT_EQ(log.size(), 0u);
  log.set_recording(true);
  {
    EventLog::Pause pause(log);
    EXPECT_FALSE(log.recording());
    log.record(Event::barrier(Barrier::isb));
  }
  EXPECT_TRUE(log.recording());
  log.record(Event::barrier(Barrier::isb));
  EXPECT_EQ(log.size(), 1u);
}

TEST(EventLog, ReplayAppliesWritesZeroingAndPoison) {
  EventLog log;
  log.record(Event::alloc(0x1000, 0, 0x1000));
  log.record(Event::write(0x1008, 0, 0x1111));
  log.record(Event::tlbi(Tlbi::alle2is, 0, 0, 0));
  log.record(Event::write(0x1008, 0x1111, 0x2222));
  log.record(Event::alloc(0x2000, 0, 0x1000));
  log.record(Event::write(0x2010, 0, 0x3333));
  log.record(Event::free(0x2000, 0, 0x1000, true, 0xfeed));
  PhysMem m;
  ASSERT_TRUE(m.add_region(0x1000, 0x2000));
  ASSERT_TRUE(m.write64(0x1ff8, 0xd1d1));  // zeroed by the alloc event
  EXPECT_EQ(log.replay(m), 6u);
  u64 v = 0;
  ASSERT_TRUE(m.read64(0x1008, &v));
  EXPECT_EQ(v, 0x2222u);
  ASSERT_TRUE(m.read64(0x1ff8, &v));
  EXPECT_EQ(v, 0u);
  ASSERT_TRUE(m.read64(0x2010, &v));
  EXPECT_EQ(v, 0xfeedu);
  ASSERT_TRUE(m.read64(0x2ff8, &v));
  EXPECT_EQ(v, 0xfeedu);
}

TEST(EventLog, ReplayErrors) {
  PhysMem m;
  ASSERT_TRUE(m.add_region(0x1000, 0x1000));
  EventLog log;
  log.record(Event::write(0x1000, 0, 5));
  log.record(Event::write(0x1000, 6, 7));  // old value does not match
  EXPECT_EQ(log.replay(m), 2u);            // unchecked: applied
  ASSERT_TRUE(m.write64(0x1000, 0));
  EXPECT_EQ(log.replay(m, true), fail(Error::einval));
  u64 v = 0;
  ASSERT_TRUE(m.read64(0x1000, &v));
  EXPECT_EQ(v, 5u);  // the first write was applied, the second refused
  EventLog far;
  far.record(Event::write(0x9000, 0, 1));
  EXPECT_EQ(far.replay(m), fail(Error::erange));
  EventLog odd;
  odd.record(Event::write(0x1004, 0, 1));
  EXPECT_EQ(odd.replay(m), fail(Error::einval));
}

}  // namespace
}  // namespace ptguard::sim
