#!/usr/bin/env bash
# Builds ptguard's hypervisor image for booting Linux as the host: the freestanding layers
# (arch/, pgtable/, ownership/), hyp/include and hyp/src cross-compiled with the freestanding
# flags (tests/freestanding/toolchain.sh), linked at the carve-out's base (layout.h, link.ld)
# with nothing but memset/memcpy/memmove/memcmp and libgcc.
#   build.sh SOURCE_DIR OUT_ELF [extra compile flags...]
set -euo pipefail
src=$1
out=$2
shift 2
dir=$(dirname "$out")
mkdir -p "$dir"
. "$src/tests/freestanding/toolchain.sh"
require_cxx "hypervisor image"
flags=("${freestanding_flags[@]}" "$@")
includes=(-I "$src/arch/include" -I "$src/pgtable/include" -I "$src/ownership/include" -I "$src/hyp/include"
          -I "$src/hyp/src")
base=$(basename "$out" .elf)
"$cxx" "${flags[@]}" "${includes[@]}" -c "$src/hyp/src/main.cpp" -o "$dir/$base.main.o"
"$cxx" "${flags[@]}" -c "$src/tests/freestanding/mem.cpp" -o "$dir/$base.mem.o"
"$cxx" -c "$src/hyp/src/boot.S" -o "$dir/$base.boot.o"
"$cxx" -c "$src/hyp/src/el2_common.S" -o "$dir/$base.el2_common.o"
"$cxx" -E -P -x c -I "$src/hyp/src" "$src/hyp/src/link.ld" -o "$dir/$base.ld"
"$cxx" -nostdlib -static -no-pie -Wl,--build-id=none -T "$dir/$base.ld" \
  -o "$out.tmp" "$dir/$base.boot.o" "$dir/$base.el2_common.o" "$dir/$base.main.o" "$dir/$base.mem.o" -lgcc
no_static_constructors "$out.tmp" "hypervisor image"
mv "$out.tmp" "$out"
echo "hypervisor image: $out"
