#!/usr/bin/env bash
# The Linux-host test: Debian's unmodified arm64 kernel booted at EL1 by ptguard's hypervisor
# (hyp/) under QEMU, with 4 CPUs and 2 GiB, running the checks of tests/hyp/linux_host/init.
#
#   linux_host.sh build SOURCE_DIR OUT_DIR
#       the hypervisor (and its unprotected-canary build), the initramfs and the device tree
#   linux_host.sh run SOURCE_DIR OUT_DIR protected|unprotected|baseline
#       protected    the real thing: every check must pass
#       unprotected  the same with the canary page left out of the protected carve-out: the
#                    carve-out check must see the canary (the check can fail)
#       baseline     the same kernel and initramfs booted directly at EL1, no hypervisor, no
#                    stage 2: the boot time to compare with
#   linux_host.sh cmd SOURCE_DIR OUT_DIR   prints the QEMU command of a protected run
#   linux_host.sh boot SOURCE_DIR OUT_DIR  builds what is missing and boots it on this terminal
#
# Guest software comes from scripts/install-deps.sh linux-host (under build/linux-host/).
set -euo pipefail
mode=$1
src=$(cd "$2" && pwd)
out=$3
mkdir -p "$out"
out=$(cd "$out" && pwd)
guest=${PTGUARD_LINUX_HOST_DIR:-$src/build/linux-host}
layout=$src/hyp/src/layout.h
val() { awk -v k="$1" '$1 == "#define" && $2 == k { print $3 }' "$layout"; }
carve_base=$(val HYP_CARVEOUT_BASE)
carve_size=$(val HYP_CARVEOUT_SIZE)
kernel_pa=$(val HOST_KERNEL_PA)
dtb_pa=$(val HOST_DTB_PA)
initrd_pa=$(val HOST_INITRD_PA)
canary=$(printf '0x%x' $((carve_base + carve_size - 4096)))
# its=off: a GICv3 ITS (and the redistributors' LPI tables, which QEMU offers only with one)
# writes memory at addresses the host programs, behind the stage 2; with no SMMU to police it the
# hypervisor withholds such devices (hyp/machine_fdt.hpp), so the board is built without one.
machine="virt,virtualization=on,gic-version=3,its=off"
# -cpu max with pointer authentication's IMPLEMENTATION DEFINED algorithm: the architected
# QARMA5 is what TCG spends most of a boot emulating (every kernel function signs its return
# address); the CPU's features are otherwise max's.
cpu="max,pauth-impdef=on"
qemu_common=(-cpu "$cpu" -smp 4 -m 2G -nographic -nic none -no-reboot)

fetch() {
  if [ ! -f "$guest/Image" ] || [ ! -x "$guest/busybox" ]; then
    "$src/scripts/install-deps.sh" linux-host
  fi
}

build() {
  fetch
  "$src/hyp/src/build.sh" "$src" "$out/hyp.elf"
  "$src/hyp/src/build.sh" "$src" "$out/hyp-unprotected.elf" -DPTGUARD_HYP_UNPROTECT_CANARY

  # The initramfs: busybox, /init, a 1 MiB-less-header random seed and the MD5 of the 256 MiB
  # file /init builds from it (computed here, outside the guest).
  local root=$out/initramfs.d
  rm -rf "$root"
  mkdir -p "$root"/{bin,dev,proc,sys,mnt,tmp}
  cp "$guest/busybox" "$root/bin/busybox"
  cp "$src/tests/hyp/linux_host/init" "$root/init"
  chmod +x "$root/init"
  head -c $((1048576 - 15)) /dev/urandom > "$root/seed"
  for i in $(seq 0 255); do printf 'chunk %08d\n' "$i"; cat "$root/seed"; done | md5sum | cut -d' ' -f1 > "$root/expected.md5"
  (cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) > "$out/initramfs.cpio.gz"

  # The device tree: QEMU's own for this machine, plus /chosen (command line, initramfs) and
  # the carve-out as /reserved-memory no-map, so that Linux never uses it as RAM.
  qemu-system-aarch64 -M "$machine,dumpdtb=$out/qemu.dtb" "${qemu_common[@]}" >/dev/null 2>&1
  local size end
  size=$(stat -c %s "$out/initramfs.cpio.gz")
  end=$((initrd_pa + size))
  dtc -q -I dtb -O dts "$out/qemu.dtb" > "$out/host.dts"
  cat >> "$out/host.dts" <<EOF

/ {
	/* fw_cfg can DMA anywhere: the hypervisor withholds it, so the host is not told of it. */
	/delete-node/ fw-cfg@9020000;
	chosen {
		bootargs = "console=ttyAMA0 quiet ptguard_mode=full ptguard_canary=$canary";
		linux,initrd-start = <0x0 $(printf '0x%x' "$initrd_pa")>;
		linux,initrd-end = <0x0 $(printf '0x%x' "$end")>;
	};
	reserved-memory {
		#address-cells = <2>;
		#size-cells = <2>;
		ranges;
		ptguard@$(printf '%x' "$carve_base") {
			reg = <0x0 $(printf '0x%x' "$carve_base") 0x0 $(printf '0x%x' "$carve_size")>;
			no-map;
		};
	};
};
EOF
  dtc -q -I dts -O dtb -o "$out/host.dtb" "$out/host.dts"
  # The negative run needs only the carve-out probe: the same tree with ptguard_mode=probe.
  sed 's/ptguard_mode=full/ptguard_mode=probe/' "$out/host.dts" > "$out/host-probe.dts"
  dtc -q -I dts -O dtb -o "$out/host-probe.dtb" "$out/host-probe.dts"
  echo "linux host: built $out/{hyp.elf,hyp-unprotected.elf,initramfs.cpio.gz,host.dtb}"
}

# The hypervisor's report goes to its own file through semihosting (not to the console the
# host writes); each of its lines carries the key the hypervisor printed on the UART before the
# host ran, which the host cannot know (docs/linux-host.md).
qemu_hyp_cmd() {
  local image=$1 dtb=${2:-$out/host.dtb} hyplog=${3:-$out/hyp.log}
  echo qemu-system-aarch64 -M "$machine" "${qemu_common[@]}" \
    -chardev "file,id=hyplog,path=$hyplog" -semihosting-config enable=on,target=native,chardev=hyplog \
    -device "loader,file=$guest/Image,addr=$kernel_pa,force-raw=on" \
    -device "loader,file=$dtb,addr=$dtb_pa,force-raw=on" \
    -device "loader,file=$out/initramfs.cpio.gz,addr=$initrd_pa,force-raw=on" \
    -device "loader,file=$image,cpu-num=0"
}

fails=0
check() {  # check DESCRIPTION CONDITION...
  local what=$1
  shift
  if "$@"; then
    echo "linux host: ok: $what"
  else
    echo "linux host: FAILED: $what"
    fails=$((fails + 1))
  fi
}
field() {  # field LOG PREFIX KEY: the KEY=VALUE on the first line starting with PREFIX
  { grep -a -m1 "^$2" "$1" || true; } | tr ' ' '\n' | awk -F= -v k="$3" '$1 == k { sub(/^[^=]*=/, ""); print; exit }'
}

run() {
  local kind=$1
  fetch
  local log=$out/$kind.log
  local start end rc=0
  rm -f "$out/$kind.hyp.log"
  start=$(date +%s.%N)
  case "$kind" in
    protected) timeout 150 $(qemu_hyp_cmd "$out/hyp.elf" "$out/host.dtb" "$out/$kind.hyp.log") > "$log" 2>&1 || rc=$? ;;
    unprotected)
      timeout 150 $(qemu_hyp_cmd "$out/hyp-unprotected.elf" "$out/host-probe.dtb" "$out/$kind.hyp.log") > "$log" 2>&1 || rc=$? ;;
    baseline)
      timeout 150 qemu-system-aarch64 -M virt,gic-version=3 "${qemu_common[@]}" -kernel "$guest/Image" \
        -initrd "$out/initramfs.cpio.gz" -append "console=ttyAMA0 quiet ptguard_mode=baseline" > "$log" 2>&1 || rc=$? ;;
    *) echo "unknown run $kind" >&2; exit 2 ;;
  esac
  end=$(date +%s.%N)
  local wall
  wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  tr -d '\r' < "$log" > "$log.txt"
  log=$log.txt
  # The report: the hypervisor's semihosting lines that carry the key it printed on the UART
  # before the host started (the first ptguard-hyp line with a key, before any PTG line).
  local key rep=$out/$kind.report.txt
  key=$(awk '/^PTG /{exit} /^ptguard-hyp: report key /{print $4; exit}' "$log")
  : > "$rep"
  if [ -n "$key" ] && [ -f "$out/$kind.hyp.log" ]; then
    tr -d '\r' < "$out/$kind.hyp.log" | { grep -a -F "[$key] " || true; } | sed "s/^\[$key\] //" > "$rep"
  fi
  grep -a -E '^(PTG|ptguard-hyp)' "$log" || true
  cat "$rep"
  echo "linux host: $kind run: QEMU exit status $rc after $wall s (log: $log)"

  check "QEMU exited by itself, with status 0, within 120 s" \
    test "$rc" = 0 -a "$(awk -v w="$wall" 'BEGIN { print (w < 120) }')" = 1
  check "Linux reached the marker with CPUs 0-3 online" test "$(field "$log" 'PTG marker' online)" = 0-3
  echo "linux host: $kind: boot to the marker: $(field "$log" 'PTG marker' uptime) s of kernel uptime, $wall s of QEMU wall time"
  if [ "$kind" = baseline ]; then
    finish
    return
  fi

  if [ "$kind" = protected ]; then
    check "256 MiB written and read back in tmpfs with the right MD5" grep -a -q '^PTG memory bytes=268435456 .* ok ' "$log"
  fi
  local rrc wrc value
  rrc=$(field "$log" 'PTG carveout-read' rc)
  wrc=$(field "$log" 'PTG carveout-write' rc)
  value=$(grep -a -m1 '^PTG carveout-read' "$log" | sed -n 's/.*value=\[\(.*\)\]$/\1/p')
  check "the device tree reserves the carve-out (/proc/device-tree/reserved-memory)" \
    grep -a -q "^PTG reserved-memory .*ptguard@$(printf '%x' "$carve_base")" "$log"
  if [ "$kind" = unprotected ]; then
    # The negative run: with the canary page unprotected the host reads the hypervisor's word.
    check "(unprotected build) devmem reads the canary: the carve-out check can fail" \
      test "$rrc" = 0 -a "$(printf '%d' "${value:-0}" 2>/dev/null)" = "$(printf '%d' 0x5054475541524421)"
    finish
    return
  fi

  check "reading the carve-out through /dev/mem dies of SIGBUS (status 135)" test "$rrc" = 135
  check "the value read is never printed" test -z "$value"
  check "the canary's value appears nowhere in the host's output" \
    bash -c "! grep -a -v '^ptguard-hyp' '$log' | grep -a -qi -e 5054475541524421"
  check "the host could not forge the report: no report line on the console" \
    bash -c "! grep -a -q '^ptguard-hyp: report at' '$log'"
  check "writing the carve-out through /dev/mem dies of SIGBUS (status 135)" test "$wrc" = 135
  local sea
  sea=$(grep -a -m1 '^PTG kernel-log-external-aborts' "$log" | awk '{print $3}')
  check "the kernel logged the external aborts ($sea lines)" test "${sea:-0}" -ge 1
  check "exactly one report, keyed, from the hypervisor (key ${key:-none})" \
    test "$(grep -a -c '^ptguard-hyp: report at SYSTEM_OFF' "$rep")" = 1
  check "the hypervisor read its canary back unchanged" grep -a -q '^ptguard-hyp: canary 0x5054475541524421 intact' "$rep"
  check "the hypervisor's invariants hold at SYSTEM_OFF" grep -a -q '^ptguard-hyp: invariants hold' "$rep"
  check "fw_cfg and any ITS withheld from the host, not in its stage 2" \
    bash -c "! grep -a -q '^ptguard-hyp: mmio 0x9020000' '$log'"

  local cpu f
  for cpu in 0 1 2 3; do
    f=$(grep -a -m1 "^ptguard-hyp: cpu $cpu " "$rep" | awk '{print $5}')
    check "CPU $cpu took at least one host stage-2 fault (took ${f:-none})" test "${f:-0}" -ge 1
  done
  local faults blocks pages unhandled aborts psci used_kb touched
  local total
  total=$(grep -a -m1 '^ptguard-hyp: total ' "$rep")
  faults=$(echo "$total" | awk '{print $4}')
  blocks=$(echo "$total" | awk '{print $6}')
  pages=$(echo "$total" | awk '{print $8}')
  aborts=$(echo "$total" | awk '{print $12}')
  unhandled=$(echo "$total" | awk '{print $14}')
  psci=$(echo "$total" | awk '{print $16}')
  used_kb=$(field "$log" 'PTG meminfo' used_kb)
  touched=$((${used_kb:-0} / 4))
  echo "linux host: stage-2 faults $faults (blocks $blocks, pages $pages), pages the host uses at the end $touched, aborts injected $aborts, PSCI calls $psci"
  check "no fault left unhandled" test "${unhandled:-1}" = 0
  check "blocks for the bulk of RAM: faults ($faults) far below the pages touched ($touched)" \
    test "${faults:-999999}" -lt $((touched / 20))
  check "fewer than 2,000 host stage-2 faults" test "${faults:-999999}" -lt 2000
  check "the aborts injected cover the two /dev/mem accesses" test "${aborts:-0}" -ge 2
  check "the secondary CPUs came up through the PSCI relay" test "${psci:-0}" -ge 3
  finish
}

finish() {
  if [ "$fails" -ne 0 ]; then
    echo "linux host: $fails check(s) failed; the last lines of the console:"
    tail -40 "$out/$kind.log.txt" 2>/dev/null || true
    exit 1
  fi
  echo "linux host: all checks passed"
}

case "$mode" in
  build) build ;;
  run) run "$4" ;;
  cmd) fetch; qemu_hyp_cmd "$out/hyp.elf" ;;
  boot)
    [ -f "$out/hyp.elf" ] && [ -f "$out/host.dtb" ] || build
    exec $(qemu_hyp_cmd "$out/hyp.elf") ;;
  *) echo "usage: $0 build|run|cmd|boot SOURCE_DIR OUT_DIR [protected|unprotected|baseline]" >&2; exit 2 ;;
esac
