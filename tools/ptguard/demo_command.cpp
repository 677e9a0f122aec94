// ptguard demo: what `make demo` runs. A simulated machine (4 GiB of RAM at 0x4000_0000, an
// interrupt controller and a UART as MMIO, a 64 MiB hypervisor carve-out) boots its host,
// shares with the hypervisor and the secure world, runs two guests, tries illegal transitions,
// tears a guest down, and ends with the ownership map as a table and as an SVG picture. It is a
// scenario (docs/scenarios.md) run by the same engine as `ptguard run`.
#include <fmt/format.h>

#include <fstream>
#include <iostream>

#include "commands.hpp"
#include "ownership_map.hpp"
#include "scenario.hpp"

namespace ptguard::tools {

namespace {

constexpr const char* kDemo = R"(
ram      0x4000_0000 4G
mmio     0x0800_0000 64K gic
mmio     0x0900_0000 4K  uart hyp        # the hypervisor's console
carveout 0x4000_0000 64M                 # the hypervisor's memory; its table pages come from here
boot

echo == The host boots: each first touch faults at stage 2 and maps the largest block that fits
access host read  0x4800_0000               expect ok level 2   # a 2M block: the 1G around it holds the carve-out
access host write 0x8000_1000               expect ok level 1   # a whole 1G block
access host write 0x0800_0000               expect ok           # the interrupt controller, as Device memory
access host read  0x0900_0000               expect fault translation   # the UART is the hypervisor's: refused
access host read  0x4000_0000               expect fault translation   # so is the carve-out

echo == The host shares pages with the hypervisor, which pins one
host-share-hyp   0x8100_0000 4 pages        expect ok
hyp-pin-shared   0x8100_0000                expect ok
access hyp write 0x8100_0000                expect ok
host-unshare-hyp 0x8100_0000 4 pages        expect EBUSY        # pinned: refused
hyp-unpin-shared 0x8100_0000                expect ok
host-unshare-hyp 0x8100_2000 2 pages        expect ok
host-donate-hyp  0x8200_0000 2M             expect ok           # the hypervisor's for good
access host read 0x8200_0000                expect fault translation
host-share-ffa   0x8300_0000                expect ok           # and a page for the secure world

echo == Two guests: one gets memory of its own, the other a shared buffer
create-guest guest:2
create-guest guest:3
host-donate-guest 0x9000_0000 16M to guest:2 at 0x0       expect ok
guest-share-host  guest:2 at 0x1000                       expect ok   # the guest shares a page back
access host read  0x9000_1000                             expect ok
access host read  0x9000_2000                             expect fault translation
host-share-guest  0xa000_0000 64K to guest:3 at 0x8000_0000 rw expect ok
host-share-guest  0xa000_0000 64K to guest:2 at 0x4000_0000 r  expect ok   # the same buffer, read-only
access guest:3 write 0x8000_0000                          expect ok pa 0xa000_0000
access guest:2 write 0x4000_0000                          expect fault permission level 3
host-lend-guest   0xb000_0000 2 pages to guest:3 at 0x9000_0000 rw expect ok
access host read  0xb000_0000                             expect fault translation   # lent: not the host's to touch
page 0xa000_0000 64K host=shared-owned guest:2=shared-borrowed guest:3=shared-borrowed shares=2

echo == Illegal transitions are refused and change nothing
host-share-hyp    0x9000_0000                              expect EPERM   # guest:2's page
host-donate-guest 0x0800_0000 to guest:3 at 0x1_0000_0000  expect EPERM   # MMIO is not memory
host-share-hyp    0x4000_0000                              expect EPERM   # the carve-out
host-share-hyp    0x1_3fff_f000 2 pages                    expect EINVAL  # runs off the end of RAM
host-reclaim-lent 0xb000_0000                              expect EBUSY   # not relinquished yet
guest-share-host  guest:3 at 0x8000_0000                   expect EPERM   # not the guest's to share
reclaim-guest     guest:3                                  expect EPERM   # still running

echo == guest:2 loses a page to a forced reclaim, then is torn down and reclaimed
host-force-reclaim 0x9000_2000                expect ok
page guest:2 0x2000 poisoned
guest-share-host   guest:2 at 0x2000          expect EHWPOISON
teardown-guest     guest:2                    expect ok
reclaim-guest      guest:2                    expect ok   # its pages scrubbed and the host's again

echo == guest:3 gives one lent page back; the host takes it; the hypervisor pins its page again
guest-relinquish   guest:3 at 0x9000_1000     expect ok
host-reclaim-lent  0xb000_1000                expect ok
hyp-pin-shared     0x8100_0000                expect ok
invariants
)";

}  // namespace

int run_demo(const std::string& svg_path, bool trace) {
  fmt::print("ptguard demo: page ownership on a simulated Armv8-A machine\n");
  fmt::print("(each line: the operation, its result, what changed; this is a scenario file, see docs/scenarios.md)\n");
  Scenario s;
  if (!s.parse(kDemo, "demo", std::cerr)) return 2;
  ScenarioOptions opts;
  opts.line_numbers = false;
  opts.trace = trace;
  opts.summary = false;
  const ScenarioResult r = s.run(opts, std::cout, std::cerr);
  if (s.world() == nullptr) return 2;
  const OwnershipMap m = build_map(*s.world());
  fmt::print("\n== The ownership map ({} ranges)\n{}", m.rows.size(), map_text(m));
  std::ofstream f(svg_path);
  f << map_svg(m, "ptguard demo: who owns what, and who maps it");
  f.close();
  if (!f) {
    fmt::print(stderr, "ptguard demo: cannot write '{}'\n", svg_path);
    return 2;
  }
  fmt::print("\n{} operations, {} checks, {} failed. The ownership map as a picture: {}\n", r.statements,
             r.expectations, r.failures, svg_path);
  return r.exit_code;
}

void add_demo_command(CLI::App& app) {
  auto svg = std::make_shared<std::string>("ptguard-ownership-map.svg");
  auto trace = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("demo", "Show page ownership at work on a simulated machine");
  cmd->footer("Example:\n  ptguard demo --svg /tmp/map.svg\nExit: 0 every step did what it expected, 1 one did not.");
  cmd->add_option("--svg", *svg, "where to write the ownership map picture")->capture_default_str();
  cmd->add_flag("--trace", *trace, "print the event log of every step");
  cmd->callback([svg, trace] { set_exit_code(run_demo(*svg, *trace)); });
}

}  // namespace ptguard::tools
