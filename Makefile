# ptguard's entry points. Each installs the Debian packages it needs (scripts/install-deps.sh),
# then configures with CMake + Ninja and builds.
#   make demo    build the ptguard command and run its demo
#   make test    every test twice (optimised; ASan+UBSan), the freestanding link check and the
#                CMake package check
#   make bench   the benchmarks; the run is written to build/bench.json; fails if a row is over
#                its target (PTGUARD_BENCH_NO_FAIL=1 to report only)
#   make clean

BUILD      ?= build
CMAKE_GEN  := -G Ninja
SAN_ENV    := ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:abort_on_error=1 \
              UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

.PHONY: all demo test test-release test-sanitize bench clean deps-%

all: test

deps-%:
	@scripts/install-deps.sh $*

demo: deps-demo
	cmake -S . -B $(BUILD)/demo $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Release -DPTGUARD_BUILD_TESTS=OFF >/dev/null
	cmake --build $(BUILD)/demo --target ptguard-cli
	$(BUILD)/demo/tools/ptguard demo

test: deps-test deps-linux-host test-release test-sanitize

test-release:
	cmake -S . -B $(BUILD)/release $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Release -DPTGUARD_WERROR=ON >/dev/null
	cmake --build $(BUILD)/release
	ctest --test-dir $(BUILD)/release --output-on-failure

# The sanitizer build runs the same tests under ASan and UBSan; any report aborts the test.
test-sanitize:
	cmake -S . -B $(BUILD)/sanitize $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	      -DPTGUARD_WERROR=ON -DPTGUARD_SANITIZE=ON >/dev/null
	cmake --build $(BUILD)/sanitize
	$(SAN_ENV) ctest --test-dir $(BUILD)/sanitize --output-on-failure -LE once

bench: deps-bench
	cmake -S . -B $(BUILD)/bench $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Release -DPTGUARD_BUILD_TESTS=OFF \
	      -DPTGUARD_BUILD_TOOLS=OFF -DPTGUARD_BUILD_BENCH=ON >/dev/null
	cmake --build $(BUILD)/bench
	$(BUILD)/bench/bench/ptguard_bench --benchmark_repetitions=5 \
	      --benchmark_out=$(BUILD)/bench.json --benchmark_out_format=json

clean:
	rm -rf $(BUILD)
