#!/usr/bin/env bash
# Freestanding check: compile the freestanding layers (arch/, pgtable/, ownership/) for aarch64
# exactly as they are built for EL2, and link them -nostdlib -static into a program that
# exercises them, with nothing provided but memset, memcpy, memmove, memcmp (mem.cpp) and
# libgcc. A compile alone would miss symbols that only the link asks for (std::expected::value()
# pulling in abort, a static guard, a libstdc++ helper).
#   check.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1
out=$2
mkdir -p "$out"
. "$src/tests/freestanding/toolchain.sh"
require_cxx "freestanding check"

flags=("${freestanding_flags[@]}")
includes=()
sources=("$src/tests/freestanding/main.cpp" "$src/tests/freestanding/mem.cpp")
for layer in arch pgtable ownership; do
  [ -d "$src/$layer/include" ] && includes+=(-I "$src/$layer/include")
  [ -d "$src/$layer/src" ] && sources+=($(find "$src/$layer/src" -name '*.cpp' | sort))
done

objs=()
for s in "${sources[@]}"; do
  o="$out/$(echo "${s#$src/}" | tr / _).o"
  "$cxx" "${flags[@]}" "${includes[@]}" -c "$s" -o "$o"
  objs+=("$o")
done
"$cxx" -nostdlib -static -no-pie -Wl,-e,_start -o "$out/freestanding.elf" "${objs[@]}" -lgcc

no_static_constructors "$out/freestanding.elf" "freestanding check"

# The link above fails on any undefined symbol; list what the image holds for the log.
n=$(aarch64-linux-gnu-nm "$out/freestanding.elf" | wc -l)
echo "freestanding check: linked ${#sources[@]} sources into $out/freestanding.elf ($n symbols)"
