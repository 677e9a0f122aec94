// The freestanding link check's program: it calls into every freestanding layer with values
// the compiler cannot see, so that what the layers need at link time is really linked.
#include "ptguard/arch/descriptor.hpp"
#include "ptguard/arch/error.hpp"
#include "ptguard/arch/granule.hpp"
#include "ptguard/arch/maintenance.hpp"
#include "ptguard/arch/memattr.hpp"
#include "ptguard/arch/regs.hpp"

using namespace ptguard;
using namespace ptguard::arch;

namespace {
volatile u64 g_input = 0x4000'0000;
volatile unsigned g_bits = 40;
volatile u64 g_sink;

void exercise_arch() {
  const u64 pa = g_input;
  const Granule g = kAllGranules[pa % 3];
  const Result<Stage2Config> s2 = make_stage2_config(g, g_bits, CpuFeatures{});
  g_sink = s2.has_value() ? s2->vtcr : static_cast<u64>(code(s2.error()));
  const Result<Stage1Config> s1 = make_stage1_config(g, g_bits, CpuFeatures{}, kMairEl2);
  g_sink = s1 ? s1->tcr : 0;
  const S2Leaf leaf = S2Leaf::make(g, kLastLevel, pa)
                          .with_memattr(s2_memattr(MemType::normal_wb, true))
                          .with_read(true)
                          .with_write(true)
                          .with_sh(Shareability::inner)
                          .with_af(true);
  g_sink = static_cast<u64>(classify(leaf.raw(), g, kLastLevel));
  g_sink = decode_s2_memattr(leaf.memattr(), true).device;
  const InvalidDesc inv = InvalidDesc::annotation(static_cast<OwnerId>(pa), 3);
  g_sink = inv.owner() + inv.sw();
  g_sink = reinterpret_cast<u64>(name(static_cast<Error>(pa & 0x7f)));
  g_sink = make_vttbr(pa, 7);
}
}  // namespace

extern "C" [[noreturn]] void _start() {
  exercise_arch();
  for (;;) {
  }
}
