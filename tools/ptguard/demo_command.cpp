// ptguard demo: what `make demo` runs. Until the engine and the ownership layer land, it shows
// the architecture layer at work: the registers built for a CPU, and descriptors built with
// arch/ and decoded field by field.
#include <fmt/format.h>

#include "commands.hpp"
#include "decode.hpp"
#include "ptguard/arch/memattr.hpp"
#include "ptguard/arch/regs.hpp"
#include "ptguard/sim/phys_mem.hpp"
#include "ptguard/sim/ref_mmu.hpp"

namespace ptguard::tools {

namespace {

void show(const char* what, u64 raw, const DecodeContext& ctx) {
  const Decoded d = decode_descriptor(raw, ctx);
  fmt::print("\n{}\n  {:#018x}: {}\n", what, raw, d.summary);
  for (const DecodedField& f : d.fields)
    if (f.value != 0 || f.name == "output address") fmt::print("    {:<24} {:#x}  {}\n", f.name, f.value, f.meaning);
  for (const std::string& p : d.problems) fmt::print("    ! {}\n", p);
}

// A three-level stage-2 table written descriptor by descriptor into simulated memory, then
// asked of the reference MMU: what the hardware would do with each access.
void translate_by_hand() {
  using namespace arch;
  sim::PhysMem mem;
  if (!mem.add_region(0x4000'0000, u64{64} << 20)) return;
  const auto cfg = make_stage2_config(Granule::k4K, 32, CpuFeatures::modern());  // start level 2
  const u64 root = 0x4000'0000, l3 = 0x4000'4000;
  const auto leaf = [](u64 pa, bool write) {
    return S2Leaf::page<Granule::k4K>(pa)
        .with_memattr(s2_memattr(MemType::normal_wb, true))
        .with_read(true)
        .with_write(write)
        .with_sh(Shareability::inner)
        .with_af(true)
        .with_xn(S2XnKind::xn)
        .raw();
  };
  // IPA 0x0020_0000 is the first 2 MiB region (level-2 index 1) -> a level-3 table.
  bool ok = mem.write64(root + 8 * 1, TableDesc::make(Granule::k4K, l3).raw());
  ok = ok && mem.write64(l3 + 8 * 0, leaf(0x4100'0000, true));   // RW page
  ok = ok && mem.write64(l3 + 8 * 1, leaf(0x4100'1000, false));  // read-only page
  ok = ok && mem.write64(l3 + 8 * 2, InvalidDesc::annotation(2, 0).raw());  // owned by id 2
  if (!ok) return;
  const sim::Stage2Regs regs{cfg->vtcr, make_vttbr(root, 1), true, false};
  fmt::print("\nThe reference MMU on a stage-2 table written by hand (4K, 32-bit IPA, start level {}):\n",
             cfg->geometry.start_level);
  struct Probe {
    u64 ipa;
    sim::Access access;
  };
  const Probe probes[] = {{0x20'0010, sim::Access::write}, {0x20'1008, sim::Access::read},
                          {0x20'1008, sim::Access::write}, {0x20'2000, sim::Access::read},
                          {0x20'0000, sim::Access::exec},  {0x1'0000'0000, sim::Access::read}};
  for (const Probe& p : probes) {
    const sim::Translation t = sim::translate_stage2(mem, regs, p.ipa, p.access);
    fmt::print("  {:<5} IPA {:#012x}: {}\n", sim::name(p.access), p.ipa, sim::to_string(t));
  }
}

void run_demo() {
  using namespace arch;
  const CpuFeatures cpu = CpuFeatures::modern();  // 48-bit PA, 16-bit VMIDs, hardware AF, FWB
  fmt::print("ptguard demo: the architecture layer\n\n");
  fmt::print("Stage-2 roots for a 40-bit IPA space (Linux's rule: fewest levels, <= 16 concatenated tables):\n");
  for (Granule g : kAllGranules) {
    const auto cfg = make_stage2_config(g, 40, cpu);
    if (!cfg) continue;
    fmt::print("  {:>3} granule: start level {}, {:>2} root table(s) ({} KiB, aligned to its size), VTCR_EL2 {:#x}\n",
               granule_name(g), cfg->geometry.start_level, cfg->geometry.root_tables,
               cfg->geometry.root_bytes() / 1024, cfg->vtcr);
  }
  const auto s1 = make_stage1_config(Granule::k4K, 48, cpu);
  fmt::print("Stage-1 EL2, 48-bit VA, 4K: start level {}, TCR_EL2 {:#x}, MAIR_EL2 {:#x}\n", s1->start_level,
             s1->tcr, s1->mair);

  DecodeContext s2ctx;
  s2ctx.stage = 2;
  s2ctx.level = 3;
  show("A host stage-2 page shared with the hypervisor (software bit SW0 set):",
       S2Leaf::page<Granule::k4K>(0x4000'0000)
           .with_memattr(s2_memattr(MemType::normal_wb, true))
           .with_read(true)
           .with_write(true)
           .with_sh(Shareability::inner)
           .with_af(true)
           .with_sw(0b01)
           .raw(),
       s2ctx);
  s2ctx.level = 2;
  show("A 2 MiB stage-2 block of MMIO:",
       S2Leaf::block<Granule::k4K, 2>(0x0800'0000)
           .with_memattr(s2_memattr(MemType::device_ngnre, true))
           .with_read(true)
           .with_write(true)
           .with_af(true)
           .with_xn(S2XnKind::xn)
           .raw(),
       s2ctx);
  s2ctx.level = 3;
  show("An invalid host stage-2 entry annotated: owned by guest 7, state bits kept:",
       InvalidDesc::annotation(7, 0b11).raw(), s2ctx);
  DecodeContext s1ctx;
  s1ctx.stage = 1;
  s1ctx.level = 3;
  show("The hypervisor's stage-1 mapping of its UART:",
       S1Leaf::page<Granule::k4K>(0x0900'0000)
           .with_attr_index(attr_index(MemType::device_ngnre))
           .with_ap(S1ApEl2::rw)
           .with_af(true)
           .with_xn(true)
           .raw(),
       s1ctx);
  s2ctx.level = 0;
  show("What the MMU rejects: a block descriptor at level 0 of a 4K table:", 0x0000'0000'4000'07d9ull, s2ctx);
  translate_by_hand();
  fmt::print("\nTry: ptguard decode 0x0040000040000743 --stage 1 --level 3\n");
}

}  // namespace

void add_demo_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("demo", "Show ptguard at work on a simulated machine");
  cmd->callback([] { run_demo(); });
}

}  // namespace ptguard::tools
