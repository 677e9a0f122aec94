// A simulated machine with the ownership layer running on it: the memory and MMIO regions, the
// table pool, the hypervisor's carve-out, MemProtect over a SimPlatform, and what the tool asks
// of it: accesses through the reference MMU (a host access lets the host's fault handler run
// first, as hardware + pKVM would), the state of a page at every component, guest memcaches.
// Used by `ptguard run`, `ptguard demo` and the tool's tests.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ptguard/ownership/mem_protect.hpp"
#include "ptguard/sim/ref_mmu.hpp"
#include "ptguard/sim/sim_platform.hpp"

namespace ptguard::tools {

using ownership::ComponentId;
using ownership::PageState;

struct MmioSpec {
  u64 base = 0;
  u64 size = 0;
  std::string name;
  bool hyp = false;  ///< given to the hypervisor
};

/// What a scenario's machine lines (or the defaults) describe.
struct MachineSpec {
  std::vector<ownership::Region> memory;  ///< sorted by the world
  std::vector<MmioSpec> mmio;
  ownership::Region carveout{0, 0};
  ownership::Region pool{0, 0};  ///< table pages; size 0: the carve-out
  u64 hyp_va_offset = u64{1} << 47;
  /// The CPU: CpuFeatures::modern() (48-bit PA) unless a `cpu` line says otherwise; with a
  /// 52-bit PA and FEAT_LPA2 (modern_52bit()) the tables use 52-bit addresses
  /// (docs/ownership.md, "52-bit addresses").
  arch::CpuFeatures cpu = arch::CpuFeatures::modern();

  /// 1 GiB of RAM at 0x4000_0000 (its first 64 MiB the hypervisor's carve-out, which holds the
  /// table pool), an interrupt controller at 0x0800_0000 (the host's) and a UART at 0x0900_0000
  /// (the hypervisor's).
  static MachineSpec small();
  /// As small() with 4 GiB of RAM (the demo's machine).
  static MachineSpec large();
};

/// The state of one page at every component, and its counts.
struct PageView {
  bool memory = false;
  bool mmio = false;
  ComponentId owner = 0;  ///< who owns it (host for a page it lent)
  PageState host = PageState::none;
  PageState hyp = PageState::none;
  bool ffa = false;
  u32 pins = 0;
  u32 shares = 0;
  ComponentId guest = 0;  ///< the guest recorded as owning or borrowing it (0: none)
};

/// "host", "hyp", "guest:N".
[[nodiscard]] std::string component_name(ComponentId id);

class World {
 public:
  static constexpr arch::Granule kGranule = arch::Granule::k4K;
  static constexpr u64 kPage = arch::page_size(kGranule);
  using MP = ownership::MemProtect<kGranule, sim::SimPlatform, 64>;

  /// Builds the machine and runs MemProtect::init (not finalize). On failure returns the error
  /// and a message in *why.
  [[nodiscard]] static std::unique_ptr<World> create(const MachineSpec& spec, std::string* why);

  [[nodiscard]] MP& mp() { return *mp_; }
  [[nodiscard]] const MP& mp() const { return *mp_; }
  [[nodiscard]] sim::SimPlatform& plat() { return *plat_; }
  [[nodiscard]] const sim::PhysMem& mem() const { return mem_; }
  [[nodiscard]] const MachineSpec& spec() const { return spec_; }
  /// The reference MMU's implementation choices for the machine's CPU (its PA size, FEAT_LPA2).
  [[nodiscard]] sim::ImplChoices impl() const { return sim::impl_choices_of(spec_.cpu); }

  [[nodiscard]] bool is_memory(u64 pa) const;
  /// The MMIO region holding pa, or nullptr.
  [[nodiscard]] const MmioSpec* mmio_at(u64 pa) const;

  // ---- guests: their memcaches ------------------------------------------------------------
  /// Before a transition into guest `id` over [ipa, ipa + size): tops its memcache up to the
  /// worst case, unless the scenario set the memcache by hand (set_guest_memcache).
  void prepare_guest(ComponentId id, u64 ipa, u64 size);
  /// Sets the guest's memcache to exactly `pages` and stops automatic top-ups; nullopt: back to
  /// automatic. EINVAL for an unknown guest; ENOMEM.
  [[nodiscard]] Status set_guest_memcache(ComponentId id, std::optional<u32> pages);
  /// create_guest / reclaim_guest through the world, which keeps the list of guests.
  [[nodiscard]] Status create_guest(ComponentId id, u16 vmid);
  [[nodiscard]] Status reclaim_guest(ComponentId id);

  // ---- accesses through the reference MMU ---------------------------------------------------
  struct Access {
    sim::Translation t;
    /// For a host access: the fault handler ran (the MMU faulted with a translation fault)
    /// and returned this.
    std::optional<Status> fault_in;
  };
  /// A host access to `pa`; with fault_in, a translation fault first lets host_handle_fault
  /// run and the access is retried.
  [[nodiscard]] Access host_access(u64 pa, sim::Access a, bool fault_in);
  /// A hypervisor access to its virtual address `va`.
  [[nodiscard]] Access hyp_access(u64 va, sim::Access a) const;
  /// A guest access to `ipa`; EINVAL for an unknown guest (t unset).
  [[nodiscard]] Result<Access> guest_access(ComponentId id, u64 ipa, sim::Access a) const;

  // ---- looking at pages ---------------------------------------------------------------------
  [[nodiscard]] PageView view(u64 pa) const;
  /// The physical page guest `id` maps at `ipa` (a valid leaf), if any.
  [[nodiscard]] std::optional<u64> guest_pa(ComponentId id, u64 ipa) const;
  /// Guests that exist (alive or torn down), in id order.
  [[nodiscard]] std::vector<ComponentId> guests() const;

  /// The invariant checker; an empty string when every invariant holds.
  [[nodiscard]] std::string check_invariants() const;

 private:
  World() = default;
  MachineSpec spec_;
  sim::PhysMem mem_;
  std::unique_ptr<sim::SimPlatform> plat_;
  std::vector<ownership::Region> regions_;
  std::vector<ownership::MmioRegion> mmio_;
  std::vector<ownership::PageMeta> meta_;
  std::unique_ptr<MP> mp_;
  std::map<ComponentId, u32> manual_memcache_;
  std::vector<ComponentId> guests_;
  mutable std::vector<u32> scratch_;
};

}  // namespace ptguard::tools
