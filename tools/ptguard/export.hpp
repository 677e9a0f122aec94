// `ptguard export`: every translation table of the machine as raw images of the physical
// memory that holds its table pages, plus a JSON description (tables.json, docs/cli.md) with,
// for each component's table, the stage, granule, root, VMID and the control-register values a
// CPU would load, so that other tools and a real MMU can use them.
#pragma once

#include <string>
#include <vector>

#include "world.hpp"

namespace ptguard::tools {

struct TableImage {
  u64 base = 0;  ///< physical address of the first byte
  std::vector<std::byte> bytes;
  [[nodiscard]] std::string file_name() const;  ///< "tables-0x40000000.bin"
};

struct ExportedTable {
  ComponentId component = 0;
  int stage = 2;
  u64 root = 0;
  unsigned root_tables = 1;
  int start_level = 0;
  unsigned ia_bits = 0;
  /// 48, or 52: the descriptors' output-address format (FEAT_LPA2's DS = 1 with 4K: OA[51:50] in
  /// bits [9:8]); a reader must know it to read the images (the registers say it too: DS, PS).
  unsigned oa_bits = 48;
  u16 vmid = 0;
  bool alive = true;
  // stage 2: VTCR_EL2, VTTBR_EL2, HCR_EL2.FWB; stage 1: TCR_EL2, MAIR_EL2, TTBR0_EL2
  u64 tcr = 0, mair = 0, ttbr = 0;
  bool fwb = false;
  std::vector<u64> pages;  ///< every table page, sorted (the root's pages included)
};

struct Export {
  std::vector<ExportedTable> tables;  ///< host, hyp, then guests in id order
  std::vector<TableImage> images;     ///< contiguous runs of table pages, ascending
  /// Table walks that failed: the page lists of those tables are incomplete (a bug).
  std::vector<std::string> problems;
};

/// Collects every table page of every component and copies the memory that holds them.
[[nodiscard]] Export export_tables(const World& w);
/// The JSON description; `scenario` is recorded as given.
[[nodiscard]] std::string export_json(const Export& e, const std::string& scenario);

}  // namespace ptguard::tools
