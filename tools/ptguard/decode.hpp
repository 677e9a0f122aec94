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
  int level = 3;
  arch::Granule granule = arch::Granule::k4K;
  bool fwb = true;                 ///< stage 2: HCR_EL2.FWB
  u64 mair = 0;                    ///< stage 1: MAIR_EL2 (0 means the library's kMairEl2)
};

[[nodiscard]] Decoded decode_descriptor(u64 raw, const DecodeContext& ctx);

/// "4K", "16K", "64K".
[[nodiscard]] const char* granule_name(arch::Granule g);
[[nodiscard]] const char* kind_name(arch::DescKind k);
[[nodiscard]] std::string describe(const arch::MemAttrs& a);

}  // namespace ptguard::tools
