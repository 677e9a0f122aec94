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
cxx=${PTGUARD_AARCH64_CXX:-aarch64-linux-gnu-g++}
if ! command -v "$cxx" >/dev/null; then
  echo "el2 image: $cxx not found (scripts/install-deps.sh test installs it)" >&2
  exit 1
fi
flags=(-std=c++23 -O2 -Wall -Wextra -Werror -ffreestanding -fno-exceptions -fno-rtti
       -fno-threadsafe-statics -mgeneral-regs-only -mstrict-align -mno-outline-atomics
       -fno-asynchronous-unwind-tables -fno-stack-protector -fno-pie)
includes=(-I "$src/arch/include" -I "$src/pgtable/include" -I "$src/ownership/include")
"$cxx" "${flags[@]}" "${includes[@]}" -c "$src/tests/el2/image/main.cpp" -o "$out/main.o"
"$cxx" "${flags[@]}" -c "$src/tests/freestanding/mem.cpp" -o "$out/mem.o"
"$cxx" -c "$src/tests/el2/image/boot.S" -o "$out/boot.o"
"$cxx" -nostdlib -static -no-pie -Wl,--build-id=none -T "$src/tests/el2/image/link.ld" \
  -o "$out/el2.elf.tmp" "$out/boot.o" "$out/main.o" "$out/mem.o" -lgcc
# Nothing runs static constructors at EL2: the image must not need any.
if aarch64-linux-gnu-objdump -h "$out/el2.elf.tmp" | grep -qE '\.(init_array|ctors)'; then
  echo "el2 image: static constructors (.init_array/.ctors) in the image" >&2
  exit 1
fi
mv "$out/el2.elf.tmp" "$out/el2.elf"
echo "el2 image: $out/el2.elf"
