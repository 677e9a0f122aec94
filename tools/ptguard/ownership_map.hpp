// The ownership map of a simulated machine: its memory and MMIO, page ranges merged by
// identical (owner, state at every component, counts), as a compact text table and as SVG.
#pragma once

#include <fmt/format.h>

#include <string>
#include <vector>

#include "world.hpp"

namespace ptguard::tools {

struct MapRow {
  u64 base = 0;
  u64 size = 0;
  bool memory = false;
  std::string region;  ///< "ram" or the MMIO region's name
  ComponentId owner = 0;
  PageState host = PageState::none;
  PageState hyp = PageState::none;
  bool ffa = false;                 ///< shared with the secure world
  std::vector<PageState> guests;    ///< one per OwnershipMap::guests
  u32 pins = 0;
  u32 shares = 0;
  [[nodiscard]] u64 end() const { return base + size; }
  /// Same owner, states and counts (the rows merge).
  [[nodiscard]] bool same_as(const MapRow& o) const;
};

struct OwnershipMap {
  std::vector<ComponentId> guests;
  std::vector<bool> guest_alive;
  std::vector<MapRow> rows;
  bool any_ffa = false;
  /// Table walks that failed (the map is incomplete where they say); map_text prints them.
  std::vector<std::string> problems;
};

/// Walks the part of [addr, addr + size) that table `t` translates, [0, 1 << ia_bits()) (an
/// address beyond it has no entry: nothing is mapped there), with visitor `v`. The walk's error,
/// if any, is returned; a range wholly beyond the table visits nothing.
template <typename T, typename V>
[[nodiscard]] Status walk_clipped(const T& t, u64 addr, u64 size, V& v) {
  const u64 limit = u64{1} << t.ia_bits();
  if (addr >= limit || size == 0) return {};
  const u64 end = addr + size < addr || addr + size > limit ? limit : addr + size;
  return t.walk(addr, end, v);
}

/// Walks every table once (page by page over memory for the per-page counts).
[[nodiscard]] OwnershipMap build_map(const World& w);
/// Rows restricted to [base, base + size) (cut at the edges).
[[nodiscard]] OwnershipMap clip_map(const OwnershipMap& m, u64 base, u64 size);

/// "4K", "2M", "1G", or bytes in hex when not a whole number of K.
[[nodiscard]] std::string size_name(u64 bytes);

/// The compact table: one line per merged range.
[[nodiscard]] std::string map_text(const OwnershipMap& m);
/// A standalone SVG picture: one band per component, colour by owner, fill by state, a legend.
[[nodiscard]] std::string map_svg(const OwnershipMap& m, const std::string& title);

}  // namespace ptguard::tools
