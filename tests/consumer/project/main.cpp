#include <cstdio>

#include "ptguard/arch/regs.hpp"

int main() {
  const auto cfg = ptguard::arch::make_stage2_config(ptguard::arch::Granule::k4K, 40,
                                                     ptguard::arch::CpuFeatures{});
  if (!cfg || cfg->geometry.root_tables != 2) return 1;
  std::printf("VTCR_EL2 %#llx\n", static_cast<unsigned long long>(cfg->vtcr));
  return 0;
}
