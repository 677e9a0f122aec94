#include "ownership_map.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "ptguard/pgtable/walker.hpp"

namespace ptguard::tools {

using namespace ptguard::ownership;

bool MapRow::same_as(const MapRow& o) const {
  return memory == o.memory && region == o.region && owner == o.owner && host == o.host && hyp == o.hyp &&
         ffa == o.ffa && guests == o.guests && pins == o.pins && shares == o.shares;
}

namespace {

struct Seg {
  u64 base, end, entry;
};

// Collects the leaves (valid or not) of [addr, end) of a table.
struct LeafCollector {
  static constexpr unsigned visits() { return pgtable::kVisitLeaf; }
  std::vector<Seg>* out;
  bool valid_only;
  u64 delta;  // subtracted from input addresses
  Status leaf(pgtable::VisitCtx& x) {
    if (valid_only && !arch::DescValid::get(x.old)) return {};
    if (!out->empty() && out->back().end == x.addr - delta && out->back().entry == x.old &&
        !arch::DescValid::get(x.old)) {
      out->back().end = x.end - delta;
      return {};
    }
    out->push_back(Seg{x.addr - delta, x.end - delta, x.old});
    return {};
  }
};

// A guest's valid leaves as physical ranges, sorted by physical address.
struct GuestSeg {
  u64 pa, end;
  PageState state;
};

// Walks a sorted segment list alongside an increasing address.
template <typename S, typename Begin, typename End>
const S* cursor_at(const std::vector<S>& v, std::size_t& i, u64 a, Begin b, End e) {
  while (i < v.size() && e(v[i]) <= a) ++i;
  if (i < v.size() && b(v[i]) <= a) return &v[i];
  return nullptr;
}

}  // namespace

OwnershipMap build_map(const World& w) {
  OwnershipMap m;
  const World::MP& mp = w.mp();
  constexpr u64 kPage = World::kPage;
  m.guests = w.guests();
  std::vector<std::vector<GuestSeg>> gsegs(m.guests.size());
  for (std::size_t i = 0; i < m.guests.size(); ++i) {
    const World::MP::Guest* g = mp.guest(m.guests[i]);
    m.guest_alive.push_back(g != nullptr && g->alive);
    if (g == nullptr || !g->table.valid()) continue;
    std::vector<Seg> segs;
    LeafCollector c{&segs, true, 0};
    if (Status st = g->table.walk(0, u64{1} << g->table.ia_bits(), c); !st)
      m.problems.push_back(fmt::format("{}'s table: walk failed: {}", component_name(m.guests[i]), name(st.error())));
    for (const Seg& s : segs) {
      const Result<pgtable::Leaf> l = g->table.lookup(s.base);
      if (!l) continue;
      const u64 oa = g->table.output_address(*l);  // in the table's address format (48- or 52-bit)
      const u64 pa = oa + (s.base - l->base);
      gsegs[i].push_back(GuestSeg{pa, pa + (s.end - s.base), state_of(s.entry)});
    }
    std::sort(gsegs[i].begin(), gsegs[i].end(), [](const GuestSeg& a, const GuestSeg& b) { return a.pa < b.pa; });
  }

  struct Area {
    u64 base, size;
    bool memory;
    std::string name;
  };
  std::vector<Area> areas;
  for (const Region& r : w.spec().memory) areas.push_back({r.base, r.size, true, "ram"});
  for (const MmioSpec& s : w.spec().mmio) areas.push_back({s.base, s.size, false, s.name.empty() ? "mmio" : s.name});
  std::sort(areas.begin(), areas.end(), [](const Area& a, const Area& b) { return a.base < b.base; });

  for (const Area& area : areas) {
    std::vector<Seg> host, hyp;
    LeafCollector hc{&host, false, 0};
    if (Status st = walk_clipped(mp.host_table(), area.base, area.size, hc); !st)
      m.problems.push_back(fmt::format("host's table: walk of {:#x}+{:#x} failed: {}", area.base, area.size,
                                       name(st.error())));
    // The hypervisor's VAs of the area (PA + offset modulo 2^64: a 52-bit machine's RAM above the
    // 48-bit VA has a "negative" offset): the part beyond its VA space, or wrapping, it cannot
    // map, and reads as unmapped.
    const u64 off = w.spec().hyp_va_offset;
    LeafCollector yc{&hyp, false, off};
    const u64 va = area.base + off;
    if (va + area.size >= va) {
      if (Status st = walk_clipped(mp.hyp_table(), va, area.size, yc); !st)
        m.problems.push_back(fmt::format("hyp's table: walk of {:#x}+{:#x} failed: {}", va, area.size,
                                         name(st.error())));
    }
    std::size_t hi = 0, yi = 0;
    std::vector<std::size_t> gi(m.guests.size(), 0);
    MapRow cur;
    bool have = false;
    for (u64 pa = area.base; pa < area.base + area.size; pa += kPage) {
      MapRow r;
      r.base = pa;
      r.size = kPage;
      r.memory = area.memory;
      r.region = area.name;
      const auto sb = [](const Seg& s) { return s.base; };
      const auto se = [](const Seg& s) { return s.end; };
      const Seg* h = cursor_at(host, hi, pa, sb, se);
      const u64 he = h != nullptr ? h->entry : 0;
      ComponentId annot = kHostId;
      if (he == 0) {
        const bool mine = area.memory || (w.mmio_at(pa) != nullptr && !w.mmio_at(pa)->hyp);
        r.host = mine ? PageState::owned : PageState::none;
      } else {
        r.host = state_of(he);
        if (!arch::DescValid::get(he)) annot = arch::InvalidDesc(he).owner();
      }
      const Seg* y = cursor_at(hyp, yi, pa, sb, se);
      r.hyp = (y == nullptr || y->entry == 0) ? PageState::none : state_of(y->entry);
      if (area.memory) {
        const PageMeta& pm = mp.page_meta(pa);
        r.ffa = (pm.flags & kMetaFfa) != 0;
        r.pins = pm.hyp_pins;
        r.shares = pm.guest_shares;
        if (r.host == PageState::shared_borrowed) annot = pm.guest;
      }
      r.owner = (r.host == PageState::none || r.host == PageState::shared_borrowed) ? annot : kHostId;
      r.guests.resize(m.guests.size(), PageState::none);
      for (std::size_t i = 0; i < m.guests.size(); ++i) {
        const GuestSeg* g = cursor_at(
            gsegs[i], gi[i], pa, [](const GuestSeg& s) { return s.pa; }, [](const GuestSeg& s) { return s.end; });
        if (g != nullptr) r.guests[i] = g->state;
      }
      m.any_ffa = m.any_ffa || r.ffa;
      if (have && cur.same_as(r)) {
        cur.size += kPage;
      } else {
        if (have) m.rows.push_back(std::move(cur));
        cur = std::move(r);
        have = true;
      }
    }
    if (have) m.rows.push_back(std::move(cur));
  }
  return m;
}

OwnershipMap clip_map(const OwnershipMap& m, u64 base, u64 size) {
  OwnershipMap out = m;
  out.rows.clear();
  const u64 end = base + size;
  for (const MapRow& r : m.rows) {
    if (r.end() <= base || r.base >= end) continue;
    MapRow c = r;
    c.base = std::max(r.base, base);
    c.size = std::min(r.end(), end) - c.base;
    out.rows.push_back(std::move(c));
  }
  return out;
}

std::string size_name(u64 b) {
  constexpr u64 K = 1024, M = K * K, G = M * K, T = G * K;
  if (b != 0 && b % T == 0) return fmt::format("{}T", b / T);
  if (b != 0 && b % G == 0) return fmt::format("{}G", b / G);
  if (b != 0 && b % M == 0) return fmt::format("{}M", b / M);
  if (b != 0 && b % K == 0) return fmt::format("{}K", b / K);
  return fmt::format("{:#x}", b);
}

namespace {
const char* short_state(PageState s) { return s == PageState::none ? "-" : name(s); }
}  // namespace

std::string map_text(const OwnershipMap& m) {
  std::string out;
  // Addresses as wide as the highest one needs, at least 9 hex digits (a 52-bit machine's: 13).
  unsigned digits = 9;
  for (const MapRow& r : m.rows)
    while (digits < 16 && (r.end() >> (4 * digits)) != 0) ++digits;
  const unsigned aw = digits + 2;
  std::string hdr = fmt::format("{:<{}} {:>8}  {:<6} {:<9} {:<16} {:<16}", "range", 2 * aw + 1, "size", "region",
                                "owner", "host", "hyp");
  if (m.any_ffa) hdr += fmt::format(" {:<16}", "secure");
  for (std::size_t i = 0; i < m.guests.size(); ++i) {
    std::string n = component_name(m.guests[i]);
    if (!m.guest_alive[i]) n += "(dead)";
    hdr += fmt::format(" {:<16}", n);
  }
  hdr += " counts";
  out += hdr + "\n";
  for (const MapRow& r : m.rows) {
    std::string line = fmt::format("{:#0{}x}-{:#0{}x} {:>8}  {:<6} {:<9} {:<16} {:<16}", r.base, aw, r.end(), aw,
                                   size_name(r.size), r.region, component_name(r.owner), short_state(r.host),
                                   short_state(r.hyp));
    if (m.any_ffa) line += fmt::format(" {:<16}", r.ffa ? "shared-borrowed" : "-");
    for (PageState g : r.guests) line += fmt::format(" {:<16}", short_state(g));
    std::string counts;
    if (r.pins != 0) counts += fmt::format(" pins={}", r.pins);
    if (r.shares != 0) counts += fmt::format(" shares={}", r.shares);
    line += counts;
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  for (const std::string& p : m.problems) out += "warning: " + p + "\n";
  return out;
}

namespace {

std::string owner_colour(ComponentId id) {
  static const char* const kGuestColours[] = {"#59a14f", "#f28e2b", "#b07aa1", "#edc948",
                                              "#9c755f", "#ff9da7", "#76b7b2", "#8cd17d"};
  if (id == kHostId) return "#4e79a7";
  if (id == kHypId) return "#e15759";
  return kGuestColours[(id - kFirstGuestId) % 8];
}

std::string xml_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

// One cell: the page state at a component, in the owner's colour.
std::string cell(double x, double y, double w, double h, PageState s, const std::string& colour,
                 const std::string& tip) {
  std::string o;
  const std::string t = fmt::format("<title>{}</title>", xml_escape(tip));
  switch (s) {
    case PageState::owned:
      o = fmt::format(R"~(<rect x="{:.2f}" y="{}" width="{:.2f}" height="{}" fill="{}">{}</rect>)~", x, y, w, h, colour, t);
      break;
    case PageState::shared_owned:
      o = fmt::format(R"~(<rect x="{:.2f}" y="{}" width="{:.2f}" height="{}" fill="{}">{}</rect>)~", x, y, w, h, colour, t);
      o += fmt::format(R"~(<rect x="{:.2f}" y="{}" width="{:.2f}" height="{}" fill="url(#hatch)"/>)~", x, y, w, h);
      break;
    case PageState::shared_borrowed:
      o = fmt::format(R"~(<rect x="{:.2f}" y="{}" width="{:.2f}" height="{}" fill="{}" fill-opacity="0.4">{}</rect>)~", x,
                      y, w, h, colour, t);
      o += fmt::format(R"~(<rect x="{:.2f}" y="{}" width="{:.2f}" height="{}" fill="url(#hatch-dark)"/>)~", x, y, w, h);
      break;
    case PageState::borrowed:
      o = fmt::format(R"~(<rect x="{:.2f}" y="{}" width="{:.2f}" height="{}" fill="{}" fill-opacity="0.4">{}</rect>)~", x,
                      y, w, h, colour, t);
      o += fmt::format(R"~(<rect x="{:.2f}" y="{}" width="{:.2f}" height="{}" fill="url(#dots)"/>)~", x, y, w, h);
      break;
    case PageState::lent:
      o = fmt::format(
          R"~(<rect x="{:.2f}" y="{}" width="{:.2f}" height="{}" fill="white" stroke="{}" stroke-width="2" stroke-dasharray="4 2">{}</rect>)~",
          x + 1, y + 1, std::max(w - 2, 0.5), h - 2, colour, t);
      break;
    case PageState::poisoned:
      o = fmt::format(R"~(<rect x="{:.2f}" y="{}" width="{:.2f}" height="{}" fill="black">{}</rect>)~", x, y, w, h, t);
      break;
    case PageState::none: break;
  }
  return o;
}

}  // namespace

std::string map_svg(const OwnershipMap& m, const std::string& title) {
  // The axis is not linear: every range gets a width that grows with the logarithm of its
  // size, so a 4K page next to 4G of RAM stays visible. Where addresses jump (between MMIO
  // and RAM, say) the bands break: a white gap and a break mark on the axis.
  constexpr double kLeft = 110, kTrack = 1100, kBand = 34, kGap = 8, kTop = 50, kBreak = 12, kStrip = 16;
  std::vector<double> weight;
  std::vector<bool> breaks_before;
  double total = 0;
  std::size_t nbreaks = 0;
  for (std::size_t i = 0; i < m.rows.size(); ++i) {
    const MapRow& r = m.rows[i];
    const double wgt = 2.0 + std::log2(static_cast<double>(std::max<u64>(r.size, World::kPage) / World::kPage));
    weight.push_back(wgt);
    total += wgt;
    const bool br = i > 0 && m.rows[i - 1].end() != r.base;
    breaks_before.push_back(br);
    nbreaks += br ? 1 : 0;
  }
  const double track = kTrack - static_cast<double>(nbreaks) * kBreak;
  struct Band {
    std::string name;
    int kind;  // 0 host, 1 hyp, 2 secure, 3 guest
    std::size_t guest = 0;
  };
  std::vector<Band> bands{{"host", 0}, {"hyp", 1}};
  if (m.any_ffa) bands.push_back({"secure world", 2});
  for (std::size_t i = 0; i < m.guests.size(); ++i)
    bands.push_back({component_name(m.guests[i]) + (m.guest_alive[i] ? "" : " (dead)"), 3, i});
  const double bands_h = static_cast<double>(bands.size()) * (kBand + kGap);
  const double strip_y = kTop + bands_h;               // the region strip (ram, gic, uart)
  const double axis_y = strip_y + kStrip + 4;
  const double legend_y = axis_y + 110;
  const double height = legend_y + 110;
  const double width = kLeft + kTrack + 90;

  std::string o;
  o += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  o += fmt::format(
      R"~(<svg xmlns="http://www.w3.org/2000/svg" width="{:.0f}" height="{:.0f}" viewBox="0 0 {:.0f} {:.0f}" font-family="sans-serif" font-size="12">)~",
      width, height, width, height);
  o += "\n<defs>\n"
       R"~(<pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="2" height="6" fill="white" fill-opacity="0.7"/></pattern>)~"
       "\n"
       R"~(<pattern id="hatch-dark" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(-45)"><rect width="1.5" height="6" fill="black" fill-opacity="0.45"/></pattern>)~"
       "\n"
       R"~(<pattern id="dots" width="5" height="5" patternUnits="userSpaceOnUse"><circle cx="2.5" cy="2.5" r="1.2" fill="black" fill-opacity="0.6"/></pattern>)~"
       "\n</defs>\n";
  o += R"~(<rect width="100%" height="100%" fill="white"/>)~";
  o += "\n";
  o += fmt::format(R"~(<text x="{}" y="24" font-size="16" font-weight="bold">{}</text>)~", kLeft, xml_escape(title));
  o += "\n";
  for (std::size_t b = 0; b < bands.size(); ++b) {
    const double y = kTop + static_cast<double>(b) * (kBand + kGap);
    o += fmt::format(R"~(<text x="{}" y="{:.1f}" text-anchor="end">{}</text>)~", kLeft - 8, y + kBand / 2 + 4,
                     xml_escape(bands[b].name));
    o += "\n";
  }
  o += fmt::format(R"~(<text x="{}" y="{:.1f}" text-anchor="end" font-size="10" fill="#555">region</text>)~", kLeft - 8,
                   strip_y + kStrip / 2 + 4);
  o += "\n";
  // Each range: a light background per band, the cells, a region strip, a tick and a label.
  double x = kLeft, last_label = -100;
  std::size_t region_start = 0;
  double region_x = kLeft;
  const auto close_region = [&](std::size_t end_row, double end_x) {
    if (end_row <= region_start) return;
    const MapRow& r0 = m.rows[region_start];
    const double w = end_x - region_x;
    o += fmt::format(R"~(<rect x="{:.2f}" y="{}" width="{:.2f}" height="{}" fill="{}"><title>{}</title></rect>)~",
                     region_x, strip_y, std::max(w, 0.5), kStrip, r0.memory ? "#d9d9d9" : "#cbbfe0",
                     xml_escape(fmt::format("{} {:#x}-{:#x}", r0.region, r0.base, m.rows[end_row - 1].end())));
    const double text_w = 7.0 * static_cast<double>(r0.region.size());
    if (w >= text_w + 4)
      o += fmt::format(R"~(<text x="{:.2f}" y="{}" font-size="11" text-anchor="middle">{}</text>)~",
                       region_x + w / 2, strip_y + kStrip - 4, xml_escape(r0.region));
    o += "\n";
  };
  for (std::size_t i = 0; i < m.rows.size(); ++i) {
    const MapRow& r = m.rows[i];
    if (breaks_before[i] || (i > 0 && m.rows[i - 1].region != r.region)) {
      close_region(i, x);
      if (breaks_before[i]) {
        // A break mark on the axis: two slanted strokes in the gap.
        o += fmt::format(
            R"~(<path d="M{:.2f} {} l4 -8 M{:.2f} {} l4 -8" stroke="#555" stroke-width="1.2" fill="none"/>)~", x + 2,
            axis_y + 4, x + 6, axis_y + 4);
        o += "\n";
        x += kBreak;
      }
      region_start = i;
      region_x = x;
    }
    const double w = track * weight[i] / total;
    for (std::size_t b = 0; b < bands.size(); ++b) {
      const double y = kTop + static_cast<double>(b) * (kBand + kGap);
      o += fmt::format(R"~(<rect x="{:.2f}" y="{}" width="{:.2f}" height="{}" fill="#f2f2f2"/>)~", x, y, w, kBand);
      PageState s = PageState::none;
      switch (bands[b].kind) {
        case 0: s = r.host; break;
        case 1: s = r.hyp; break;
        case 2: s = r.ffa ? PageState::shared_borrowed : PageState::none; break;
        default: s = r.guests[bands[b].guest]; break;
      }
      if (s == PageState::none) {
        // The host's table names another owner here (an annotated invalid entry): a bar in the
        // owner's colour along the bottom of the host's band.
        if (bands[b].kind == 0 && r.owner != kHostId) {
          o += fmt::format(
              R"~(<rect x="{:.2f}" y="{}" width="{:.2f}" height="6" fill="{}"><title>{}</title></rect>)~", x,
              y + kBand - 6, w, owner_colour(r.owner),
              xml_escape(fmt::format("{:#x}-{:#x} ({}, {}): host none, annotated: owner {}", r.base, r.end(),
                                     size_name(r.size), r.region, component_name(r.owner))));
        }
        continue;
      }
      std::string tip = fmt::format("{:#x}-{:#x} ({}, {}): {} {}, owner {}", r.base, r.end(), size_name(r.size),
                                    r.region, bands[b].name, name(s), component_name(r.owner));
      if (r.pins != 0) tip += fmt::format(", pins {}", r.pins);
      if (r.shares != 0) tip += fmt::format(", guest shares {}", r.shares);
      o += cell(x, y, w, kBand, s, owner_colour(r.owner), tip);
      // A page the hypervisor pinned: a black pin head on its hyp cell.
      if (bands[b].kind == 1 && r.pins != 0)
        o += fmt::format(R"~(<circle cx="{:.2f}" cy="{}" r="3.5" fill="black"><title>pinned ({})</title></circle>)~",
                         x + w / 2, y + 6, r.pins);
    }
    o += "\n";
    // Range boundaries: a tick on the axis, and the address where there is room.
    o += fmt::format(R"~(<line x1="{:.2f}" y1="{}" x2="{:.2f}" y2="{}" stroke="#888" stroke-width="0.5"/>)~", x,
                     kTop - 4, x, axis_y + 4);
    if (x - last_label >= 13) {
      o += fmt::format(
          R"~(<text x="{:.2f}" y="{}" font-size="10" transform="rotate(60 {:.2f} {})">{:#x}</text>)~", x, axis_y + 10,
          x, axis_y + 10, r.base);
      last_label = x;
    }
    o += "\n";
    x += w;
    // The end of a range before a break gets its own tick (and label, if there is room).
    if (i + 1 < m.rows.size() && breaks_before[i + 1]) {
      o += fmt::format(R"~(<line x1="{:.2f}" y1="{}" x2="{:.2f}" y2="{}" stroke="#888" stroke-width="0.5"/>)~", x,
                       kTop - 4, x, axis_y + 4);
    }
  }
  close_region(m.rows.size(), x);
  if (!m.rows.empty()) {
    o += fmt::format(R"~(<line x1="{:.2f}" y1="{}" x2="{:.2f}" y2="{}" stroke="#888" stroke-width="0.5"/>)~", x,
                     kTop - 4, x, axis_y + 4);
    o += fmt::format(R"~(<text x="{:.2f}" y="{}" font-size="10" transform="rotate(60 {:.2f} {})">{:#x}</text>)~",
                     x, axis_y + 10, x, axis_y + 10, m.rows.back().end());
  }
  o += fmt::format(
      R"~(<text x="{}" y="{}" font-size="10" fill="#555">axis: physical address; each range's width grows with the logarithm of its size; a gap marks a jump in addresses</text>)~",
      kLeft, legend_y - 16);
  o += "\n";
  // Legend: owners, then states.
  std::vector<ComponentId> owners{kHostId, kHypId};
  for (ComponentId g : m.guests) owners.push_back(g);
  double lx = kLeft;
  o += fmt::format(R"~(<text x="{}" y="{}" font-weight="bold">owner</text>)~", lx - 60, legend_y + 12);
  for (ComponentId id : owners) {
    o += fmt::format(R"~(<rect x="{}" y="{}" width="14" height="14" fill="{}"/><text x="{}" y="{}">{}</text>)~", lx,
                     legend_y, owner_colour(id), lx + 18, legend_y + 12, component_name(id));
    lx += 90;
  }
  o += "\n";
  const PageState states[] = {PageState::owned, PageState::shared_owned, PageState::shared_borrowed, PageState::lent,
                              PageState::borrowed};
  lx = kLeft;
  const double sy = legend_y + 30;
  o += fmt::format(R"~(<text x="{}" y="{}" font-weight="bold">state</text>)~", lx - 60, sy + 14);
  for (PageState s : states) {
    o += cell(lx, sy, 30, 18, s, owner_colour(kHostId), name(s));
    o += fmt::format(R"~(<text x="{}" y="{}">{}</text>)~", lx + 36, sy + 14, name(s));
    lx += 150;
  }
  o += fmt::format(R"~(<circle cx="{}" cy="{}" r="3.5" fill="black"/><text x="{}" y="{}">pinned by hyp</text>)~", lx + 8,
                   sy + 9, lx + 18, sy + 14);
  const double ay = sy + 30;
  o += fmt::format(R"~(<rect x="{}" y="{}" width="30" height="6" fill="{}"/><text x="{}" y="{}">annotated: the host's table names the owner (colour)</text>)~",
                   kLeft, ay + 6, owner_colour(kHypId), kLeft + 36, ay + 12);
  o += "\n</svg>\n";
  return o;
}

}  // namespace ptguard::tools
