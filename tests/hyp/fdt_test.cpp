// The device-tree reader (hyp/fdt.hpp) and the machine description built from it
// (hyp/machine_fdt.hpp), on blobs written here byte by byte in the DTB format (Devicetree
// Specification v0.4, chapter 5), and on QEMU's own virt device tree where the test can dump it.
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "ptguard/hyp/fdt.hpp"
#include "ptguard/hyp/machine_fdt.hpp"

namespace ptguard::hyp {
namespace {

// ---- a tiny DTB writer --------------------------------------------------------------------------
class Dtb {
 public:
  Dtb& begin(const std::string& name) {
    tok(1);
    for (char c : name) structure_.push_back(static_cast<u8>(c));
    structure_.push_back(0);
    pad();
    return *this;
  }
  Dtb& end() {
    tok(2);
    return *this;
  }
  Dtb& prop(const std::string& name, const std::vector<u8>& value) {
    tok(3);
    tok(static_cast<u32>(value.size()));
    tok(string_offset(name));
    structure_.insert(structure_.end(), value.begin(), value.end());
    pad();
    return *this;
  }
  Dtb& cells(const std::string& name, const std::vector<u32>& cs) {
    std::vector<u8> v;
    for (u32 c : cs) push32(v, c);
    return prop(name, v);
  }
  Dtb& str(const std::string& name, const std::string& s) {
    std::vector<u8> v(s.begin(), s.end());
    v.push_back(0);
    return prop(name, v);
  }
  Dtb& flag(const std::string& name) { return prop(name, {}); }
  Dtb& nop() {
    tok(4);
    return *this;
  }

  [[nodiscard]] std::vector<u8> blob() const {
    std::vector<u8> s = structure_;
    push32(s, 9);  // FDT_END
    const u32 off_rsv = 40, off_struct = off_rsv + 16, off_strings = off_struct + static_cast<u32>(s.size());
    const u32 total = off_strings + static_cast<u32>(strings_.size());
    std::vector<u8> b;
    for (u32 v : {0xd00dfeedu, total, off_struct, off_strings, off_rsv, 17u, 16u, 0u,
                  static_cast<u32>(strings_.size()), static_cast<u32>(s.size())})
      push32(b, v);
    b.resize(off_struct, 0);  // an empty memory reservation block (one zero entry)
    b.insert(b.end(), s.begin(), s.end());
    b.insert(b.end(), strings_.begin(), strings_.end());
    return b;
  }

 private:
  static void push32(std::vector<u8>& v, u32 x) {
    for (int i = 3; i >= 0; --i) v.push_back(static_cast<u8>(x >> (8 * i)));
  }
  void tok(u32 t) { push32(structure_, t); }
  void pad() {
    while (structure_.size() % 4) structure_.push_back(0);
  }
  u32 string_offset(const std::string& name) {
    const std::string hay(strings_.begin(), strings_.end());
    std::size_t at = 0;
    while ((at = hay.find(name, at)) != std::string::npos) {
      if (at + name.size() < hay.size() && hay[at + name.size()] == 0 && (at == 0 || hay[at - 1] == 0))
        return static_cast<u32>(at);
      ++at;
    }
    const u32 off = static_cast<u32>(strings_.size());
    strings_.insert(strings_.end(), name.begin(), name.end());
    strings_.push_back(0);
    return off;
  }
  std::vector<u8> structure_;
  std::vector<u8> strings_;
};

// A machine shaped like QEMU's virt board: memory, CPUs, PSCI, devices at the root and under a
// bus with a non-identity `ranges`, a disabled device, a PCI host bridge, reserved memory.
Dtb virt_like() {
  Dtb d;
  d.begin("").cells("#address-cells", {2}).cells("#size-cells", {2});
  d.begin("memory@40000000").str("device_type", "memory").cells("reg", {0, 0x4000'0000, 0, 0x8000'0000}).end();
  d.begin("reserved-memory").cells("#address-cells", {2}).cells("#size-cells", {2}).flag("ranges");
  d.begin("ptguard@be000000").cells("reg", {0, 0xbe00'0000, 0, 0x0200'0000}).flag("no-map").end();
  d.begin("shared@80000000").cells("reg", {0, 0x8000'0000, 0, 0x0010'0000}).end();  // not no-map
  d.end();
  d.begin("cpus").cells("#address-cells", {1}).cells("#size-cells", {0});
  for (u32 i = 0; i < 4; ++i) d.begin("cpu@" + std::to_string(i)).str("device_type", "cpu").cells("reg", {i}).end();
  d.begin("cpu-map").end();
  d.end();
  d.begin("psci").str("compatible", "arm,psci-1.0").str("method", "smc").end();
  d.begin("chosen").cells("reg", {0, 0x1234'0000, 0, 0x1000}).end();  // never MMIO
  d.begin("pl011@9000000").cells("reg", {0, 0x0900'0000, 0, 0x1000}).end();
  {
    // fw_cfg: a DMA-capable device, withheld. Its compatible is a string list.
    std::vector<u8> compat;
    for (const char* c : {"qemu,other", "qemu,fw-cfg-mmio"}) {
      compat.insert(compat.end(), c, c + std::strlen(c));
      compat.push_back(0);
    }
    d.begin("fw-cfg@9020000").prop("compatible", compat).cells("reg", {0, 0x0902'0000, 0, 0x18}).end();
  }
  d.begin("virtio_mmio@a000000").cells("reg", {0, 0x0a00'0000, 0, 0x200}).end();
  d.begin("virtio_mmio@a000200").cells("reg", {0, 0x0a00'0200, 0, 0x200}).end();
  d.begin("off@b000000").str("status", "disabled").cells("reg", {0, 0x0b00'0000, 0, 0x1000}).end();
  // A bus mapping its children's 0x0.. to 0x0c00_0000 (1 address cell, 1 size cell inside).
  d.begin("bus@c000000").cells("#address-cells", {1}).cells("#size-cells", {1});
  d.cells("ranges", {0x0, 0, 0x0c00'0000, 0x0100'0000});
  d.begin("dev@2000").cells("reg", {0x2000, 0x100}).end();
  d.end();
  // An interrupt controller with an identity-ranges child (QEMU's GICv3 and its ITS).
  d.begin("intc@8000000").cells("#address-cells", {2}).cells("#size-cells", {2}).flag("ranges");
  d.cells("reg", {0, 0x0800'0000, 0, 0x10000, 0, 0x080a'0000, 0, 0x00f6'0000});
  d.begin("its@8080000").str("compatible", "arm,gic-v3-its").cells("reg", {0, 0x0808'0000, 0, 0x20000}).end();
  d.end();
  d.begin("pcie@10000000").str("device_type", "pci").cells("#address-cells", {3}).cells("#size-cells", {2});
  d.cells("reg", {0x40, 0x1000'0000, 0, 0x1000'0000});
  d.cells("ranges", {0x0100'0000, 0, 0, 0, 0x3eff'0000, 0, 0x10000,                  // I/O
                     0x0200'0000, 0, 0x1000'0000, 0, 0x1000'0000, 0, 0x2eff'0000,  // MMIO32
                     0x0300'0000, 0x80, 0, 0x80, 0, 0x80, 0});                     // MMIO64
  d.end();
  d.end();
  return d;
}

TEST(Fdt, ReadsAVirtLikeMachine) {
  const std::vector<u8> b = virt_like().blob();
  const Result<Fdt> f = Fdt::open(b.data(), b.size());
  ASSERT_TRUE(f.has_value());
  HostMachine m;
  ASSERT_TRUE(describe_machine(*f, 4096, &m).has_value());
  ASSERT_EQ(m.n_memory, 1u);
  EXPECT_EQ(m.memory[0].base, 0x4000'0000u);
  EXPECT_EQ(m.memory[0].size, 0x8000'0000u);
  ASSERT_EQ(m.n_reserved_nomap, 1u);  // the region without no-map is not listed
  EXPECT_EQ(m.reserved_nomap[0].base, 0xbe00'0000u);
  EXPECT_TRUE(m.reserved_nomap_covers(0xbe00'0000, 0x0200'0000));
  EXPECT_FALSE(m.reserved_nomap_covers(0xbe00'0000, 0x0200'1000));
  ASSERT_EQ(m.n_cpus, 4u);
  EXPECT_EQ(m.cpu_index(0x8000'0002), 2);  // MPIDR with the RES1 bit 31: affinity compared
  EXPECT_EQ(m.cpu_index(0x100), -1);
  EXPECT_TRUE(m.psci_smc);
  EXPECT_FALSE(m.psci_hvc);

  std::vector<std::pair<u64, u64>> mmio;
  for (unsigned i = 0; i < m.n_mmio; ++i) mmio.emplace_back(m.mmio[i].base, m.mmio[i].size);
  const std::vector<std::pair<u64, u64>> want{
      {0x0800'0000, 0x10000},                       // GIC distributor
      {0x080a'0000, 0x00f6'1000},                   // redistributors + UART, touching: merged
      {0x0a00'0000, 0x1000},                        // two virtio transports in one page
      {0x0c00'2000, 0x1000},                        // translated through the bus's ranges
      {0x1000'0000, 0x2f00'0000},                   // PCI MMIO32 and I/O windows, touching
      {0x40'1000'0000, 0x1000'0000},                // ECAM
      {0x80'0000'0000, 0x80'0000'0000},             // PCI MMIO64 window
  };
  EXPECT_EQ(mmio, want);
  for (unsigned i = 0; i < m.n_mmio; ++i) EXPECT_FALSE(m.mmio[i].hyp);
  // The bus masters the host could aim at the carve-out are withheld, not MMIO.
  ASSERT_EQ(m.n_withheld, 2u);
  EXPECT_EQ(m.withheld[0].base, 0x0902'0000u);  // fw_cfg (document order)
  EXPECT_EQ(m.withheld[1].base, 0x0808'0000u);  // the ITS
}

TEST(Fdt, AWithheldDeviceSharingAPageWithHostMmioIsRefused) {
  Dtb d;
  d.begin("").cells("#address-cells", {2}).cells("#size-cells", {2});
  d.begin("memory@0").str("device_type", "memory").cells("reg", {0, 0, 0, 0x10000}).end();
  d.begin("uart@100000").cells("reg", {0, 0x10'0000, 0, 0x100}).end();
  d.begin("its@100800").str("compatible", "arm,gic-v3-its").cells("reg", {0, 0x10'0800, 0, 0x100}).end();
  d.end();
  const auto b = d.blob();
  HostMachine m;
  EXPECT_EQ(describe_machine(*Fdt::open(b.data(), b.size()), 4096, &m).error(), Error::einval);
}

TEST(Fdt, CellCountsPastTheSpecAreRefusedNotLoopedOver) {
  Dtb d;
  d.begin("").cells("#address-cells", {0x4000'0001}).cells("#size-cells", {0});
  d.begin("memory@0").str("device_type", "memory").cells("reg", {0, 0, 0, 0x10000}).end();
  d.end();
  const auto b = d.blob();
  HostMachine m;
  EXPECT_EQ(describe_machine(*Fdt::open(b.data(), b.size()), 4096, &m).error(), Error::einval);
}

TEST(Fdt, WalkVisitsParentsFirstWithDepths) {
  Dtb d;
  d.begin("").begin("a").nop().begin("b").end().end().begin("c").end().end();
  const std::vector<u8> b = d.blob();
  const Result<Fdt> f = Fdt::open(b.data(), b.size());
  ASSERT_TRUE(f.has_value());
  std::vector<std::pair<std::string, int>> seen;
  ASSERT_TRUE(f->walk([&](const FdtPath& p) { seen.emplace_back(p.node[p.depth - 1].name, p.depth - 1); }).has_value());
  const std::vector<std::pair<std::string, int>> want{{"", 0}, {"a", 1}, {"b", 2}, {"c", 1}};
  EXPECT_EQ(seen, want);
}

TEST(Fdt, HeaderErrors) {
  std::vector<u8> b = virt_like().blob();
  EXPECT_EQ(Fdt::open(b.data(), 39).error(), Error::einval);         // shorter than a header
  EXPECT_EQ(Fdt::open(b.data(), b.size() - 1).error(), Error::e2big);  // totalsize past the buffer
  std::vector<u8> bad = b;
  bad[0] ^= 1;  // magic
  EXPECT_EQ(Fdt::open(bad.data(), bad.size()).error(), Error::einval);
  bad = b;
  bad[23] = 15;  // version 15
  EXPECT_EQ(Fdt::open(bad.data(), bad.size()).error(), Error::einval);
  bad = b;
  bad[39] = 0xff;  // size_dt_struct past the blob
  bad[38] = 0xff;
  EXPECT_EQ(Fdt::open(bad.data(), bad.size()).error(), Error::einval);
}

TEST(Fdt, MachineErrors) {
  HostMachine m;
  {
    Dtb d;  // no memory
    d.begin("").cells("#address-cells", {2}).cells("#size-cells", {2}).end();
    const auto b = d.blob();
    EXPECT_EQ(describe_machine(*Fdt::open(b.data(), b.size()), 4096, &m).error(), Error::einval);
  }
  {
    Dtb d;  // MMIO inside memory
    d.begin("").cells("#address-cells", {2}).cells("#size-cells", {2});
    d.begin("memory@0").str("device_type", "memory").cells("reg", {0, 0, 0, 0x10000}).end();
    d.begin("dev@8000").cells("reg", {0, 0x8000, 0, 0x100}).end();
    d.end();
    const auto b = d.blob();
    EXPECT_EQ(describe_machine(*Fdt::open(b.data(), b.size()), 4096, &m).error(), Error::einval);
  }
  {
    Dtb d;  // more devices than HostMachine holds
    d.begin("").cells("#address-cells", {2}).cells("#size-cells", {2});
    d.begin("memory@0").str("device_type", "memory").cells("reg", {0, 0, 0, 0x10000}).end();
    for (u32 i = 0; i <= HostMachine::kMaxMmio; ++i)
      d.begin("dev@" + std::to_string(i)).cells("reg", {1, i * 0x10000, 0, 0x100}).end();
    d.end();
    const auto b = d.blob();
    EXPECT_EQ(describe_machine(*Fdt::open(b.data(), b.size()), 4096, &m).error(), Error::e2big);
  }
}

// Every truncation and every single-byte corruption of a valid blob is either read (a
// corruption inside a name or value) or refused; never a read past the buffer (ASan watches:
// the buffer is a heap copy of exactly the blob's size).
RC_GTEST_PROP(Fdt, CorruptBlobsAreRefusedOrReadWithinBounds, ()) {
  const std::vector<u8> good = virt_like().blob();
  std::vector<u8> b = good;
  const std::size_t at = *rc::gen::inRange<std::size_t>(0, b.size());
  b[at] = *rc::gen::arbitrary<u8>();
  const std::size_t len = *rc::gen::inRange<std::size_t>(b.size() / 2, b.size() + 1);
  std::vector<u8> copy(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(len));
  const Result<Fdt> f = Fdt::open(copy.data(), copy.size());
  if (!f) return;
  HostMachine m;
  (void)describe_machine(*f, 4096, &m);
  RC_ASSERT(m.n_mmio <= HostMachine::kMaxMmio);
}

// QEMU's own device tree for the board the Linux-host test uses, when QEMU is installed: the
// reader must find what the board has (RAM at 0x4000_0000, 4 CPUs, PSCI over SMC, the PL011).
TEST(Fdt, QemuVirtDeviceTree) {
  const std::string path = ::testing::TempDir() + "ptguard-virt.dtb";
  const std::string cmd = "qemu-system-aarch64 -M virt,virtualization=on,gic-version=3,dumpdtb=" + path +
                          " -cpu max -smp 4 -m 2G -nographic -nic none >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "qemu-system-aarch64 could not dump its device tree";
  std::ifstream in(path, std::ios::binary);
  const std::vector<u8> b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::remove(path.c_str());
  const Result<Fdt> f = Fdt::open(b.data(), b.size());
  ASSERT_TRUE(f.has_value());
  HostMachine m;
  ASSERT_TRUE(describe_machine(*f, 4096, &m).has_value());
  ASSERT_EQ(m.n_memory, 1u);
  EXPECT_EQ(m.memory[0].base, 0x4000'0000u);
  EXPECT_EQ(m.memory[0].size, u64{2} << 30);
  EXPECT_EQ(m.n_cpus, 4u);
  EXPECT_TRUE(m.psci_smc);
  bool uart = false;
  for (unsigned i = 0; i < m.n_mmio; ++i) uart |= m.mmio[i].region().contains(0x0900'0000, 0x1000);
  EXPECT_TRUE(uart);
}

}  // namespace
}  // namespace ptguard::hyp
