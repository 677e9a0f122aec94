// `ptguard dump`: a component's translation table as ranges, merged the way Linux's ptdump
// merges them: consecutive entries at the same level with the same attributes (and, for valid
// entries, contiguous output addresses) make one line.
#pragma once

#include <string>
#include <vector>

#include "world.hpp"

namespace ptguard::tools {

struct DumpRow {
  u64 start = 0, end = 0;  ///< input addresses (IPA, or VA for the hypervisor), end exclusive
  int level = 0;
  bool valid = false;
  bool block = false;      ///< valid: a block (else a page)
  u64 oa = 0;              ///< valid: the output address of start
  std::string perms;       ///< valid: "rwx", "r--", ...
  std::string memtype;     ///< valid: "Normal-WB", "Device-nGnRE", ...
  std::string sh;          ///< valid: "ISH", "OSH", "NSH"
  bool af = false;
  bool contiguous = false;
  std::string state;       ///< page state: owned, shared-owned, ..., lent, poisoned, none
  std::string annotation;  ///< invalid entries: "owner hyp", "borrower guest:3", "locked"; else ""
  u64 entries = 0;         ///< descriptors merged into this row
  [[nodiscard]] u64 size() const { return end - start; }
};

struct TableDump {
  ComponentId component = 0;
  int stage = 2;
  arch::Granule granule = World::kGranule;
  u64 root = 0;
  unsigned root_pages = 1;
  int start_level = 0;
  unsigned ia_bits = 0;
  /// The output-address size the descriptors can hold: 48, or 52 (the table's OaFormat: with 4K
  /// FEAT_LPA2's DS = 1, whose leaves have no SH field: their shareability is SH0's).
  unsigned oa_bits = 48;
  u16 vmid = 0;
  bool alive = true;  ///< guests: false once torn down
  std::vector<DumpRow> rows;
};

/// "Normal-WB", "Normal-iWB-oNC", "Device-nGnRE", "reserved", ...
[[nodiscard]] std::string memory_name(const arch::MemAttrs& a);
/// "NSH", "OSH", "ISH" (SH = 0b01, reserved: "SH=01").
[[nodiscard]] const char* shareability_name(u64 sh);

/// The dump of `id`'s table; empty entries (nothing mapped, no annotation) are left out unless
/// `empty`. EINVAL if there is no such component (or its table is gone).
[[nodiscard]] Result<TableDump> dump_table(const World& w, ComponentId id, bool empty = false);
/// One line per range, under a header naming the table.
[[nodiscard]] std::string dump_text(const TableDump& d);
/// The stable JSON document (docs/cli.md).
[[nodiscard]] std::string dump_json(const TableDump& d);

}  // namespace ptguard::tools
