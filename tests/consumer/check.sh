#!/usr/bin/env bash
# Installs ptguard into a scratch prefix and builds a consumer against it with
# find_package(ptguard); then builds the same consumer with add_subdirectory.
#   check.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1
out=$2
rm -rf "$out"
mkdir -p "$out"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)

cmake -S "$src" -B "$out/ptguard" "${gen[@]}" -DPTGUARD_BUILD_TESTS=OFF -DPTGUARD_BUILD_TOOLS=OFF \
      -DCMAKE_INSTALL_PREFIX="$out/prefix" >/dev/null
cmake --build "$out/ptguard" >/dev/null
cmake --install "$out/ptguard" >/dev/null

cmake -S "$src/tests/consumer/project" -B "$out/package" "${gen[@]}" -DPTGUARD_MODE=package \
      -DCMAKE_PREFIX_PATH="$out/prefix" >/dev/null
cmake --build "$out/package" >/dev/null
"$out/package/consumer"

cmake -S "$src/tests/consumer/project" -B "$out/subdirectory" "${gen[@]}" -DPTGUARD_MODE=subdirectory \
      -DPTGUARD_SOURCE_DIR="$src" >/dev/null
cmake --build "$out/subdirectory" >/dev/null
"$out/subdirectory/consumer"
echo "cmake consumer: find_package and add_subdirectory both build and run"
