#!/usr/bin/env bash
# Builds the EL2 mini-hypervisor image: the freestanding layers (arch/, pgtable/, ownership/)
# and tests/el2/image/ cross-compiled for aarch64 with the freestanding flags, linked at
# 0x4008_0000 (link.ld) with nothing but memset/memcpy/memmove/memcmp (tests/freestanding/
# mem.cpp) and libgcc.
#   build.sh SOURCE_DIR BUILD_DIR    -> BUILD_DIR/el2.elf
set -euo pipefail
src=$1
out=$2
mkdir -p "$out"
. "$src/tests/freestanding/toolchain.sh"
require_cxx "el2 image"
flags=("${freestanding_flags[@]}")
includes=(-I "$src/arch/include" -I "$src/pgtable/include" -I "$src/ownership/include" -I "$src/hyp/include")
"$cxx" "${flags[@]}" "${includes[@]}" -c "$src/tests/el2/image/main.cpp" -o "$out/main.o"
"$cxx" "${flags[@]}" -c "$src/tests/freestanding/mem.cpp" -o "$out/mem.o"
"$cxx" -c "$src/tests/el2/image/boot.S" -o "$out/boot.o"
"$cxx" -c "$src/hyp/src/el2_common.S" -o "$out/el2_common.o"
"$cxx" -nostdlib -static -no-pie -Wl,--build-id=none -T "$src/tests/el2/image/link.ld" \
  -o "$out/el2.elf.tmp" "$out/boot.o" "$out/el2_common.o" "$out/main.o" "$out/mem.o" -lgcc
no_static_constructors "$out/el2.elf.tmp" "el2 image"
mv "$out/el2.elf.tmp" "$out/el2.elf"
echo "el2 image: $out/el2.elf"
