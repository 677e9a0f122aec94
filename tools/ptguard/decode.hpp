// Decoding a raw descriptor into named fields, as the Arm ARM names them (used by
// `ptguard decode`, the demo and, later, the dumps).
#pragma once

#include <string>
#include <vector>

#include "ptguard/arch/descriptor.hpp"
#include "ptguard/arch/memattr.hpp"

namespace ptguard::tools {

struct DecodedField {
  std::string name;     ///< the architecture's name: "AttrIndx", "S2AP", "owner id"
  std::string bits;     ///< "4:2"
  u64 value;            ///< the field's value, shifted down
  std::string meaning;  ///< "Normal WB (MAIR index 0)", "read-write"
};

struct Decoded {
  arch::DescKind kind;
  std::string summary;                ///< one line: "stage-2 page, level 3, OA 0x40000000"
  std::vector<DecodedField> fields;
  std::vector<std::string> problems;  ///< invalid combinations and reserved encodings
};

struct DecodeContext {
  int stage = 2;  ///< 1: stage-1 EL2; 2: stage-2
  int level = 3;                   ///< -1 to 3; -1 only with the 4K granule and oa_bits 52
  arch::Granule granule = arch::Granule::k4K;
  /// 48, or 52: the descriptor holds a 52-bit address (4K/16K: FEAT_LPA2 with TCR_EL2/VTCR_EL2.DS
  /// = 1, OA[51:50] in bits [9:8] and no SH field; 64K: FEAT_LPA, OA[51:48] in bits [15:12]).
  unsigned oa_bits = 48;
  bool fwb = true;                 ///< stage 2: HCR_EL2.FWB
  u64 mair = 0;                    ///< stage 1: MAIR_EL2 (0 means the library's kMairEl2)
};

/// Names every field of `raw` as the MMU reads it under `ctx`. ctx must be valid (see
/// check_context); the result's problems list what the architecture forbids or reserves.
[[nodiscard]] Decoded decode_descriptor(u64 raw, const DecodeContext& ctx);

/// Empty if `ctx` describes a walk that exists; otherwise why not ("level -1 needs ...").
[[nodiscard]] std::string check_context(const DecodeContext& ctx);

/// Whether `level` may hold a block as the architecture defines it (D8.3.1 "Block descriptor"):
/// the 48-bit rule of arch::block_allowed(), plus with 52-bit addresses the 4K level-0 (512 GiB),
/// 16K level-1 (64 GiB) and 64K level-1 (4 TiB) blocks. Level -1 holds tables only. (ptguard
/// itself never writes the 52-bit-only blocks, but a decoder must read what hardware reads.)
[[nodiscard]] bool block_allowed_at(arch::Granule g, int level, unsigned oa_bits);

/// "4K", "16K", "64K".
[[nodiscard]] const char* granule_name(arch::Granule g);
[[nodiscard]] const char* kind_name(arch::DescKind k);
[[nodiscard]] std::string describe(const arch::MemAttrs& a);

}  // namespace ptguard::tools
