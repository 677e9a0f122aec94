# ptguard's entry points. Each installs the Debian packages it needs (scripts/install-deps.sh),
# then configures with CMake + Ninja and builds.
#   make demo    build the ptguard command and run its demo
#   make test    every test twice (optimised; ASan+UBSan), the concurrency tests a third time
#                under ThreadSanitizer, the freestanding link check, the CMake package check and
#                the QEMU tests (the EL2 image, and Linux booted by ptguard's hypervisor)
#   make bench   the benchmarks; the run is written to build/bench.json; fails if a row is over
#                its target (PTGUARD_BENCH_NO_FAIL=1 to report only)
#   make clean

BUILD      ?= build
CMAKE_GEN  := -G Ninja
SAN_ENV    := ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:abort_on_error=1 \
              UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

.PHONY: all demo test test-release test-sanitize test-tsan bench clean deps-%

all: test

deps-%:
	@scripts/install-deps.sh $*

demo: deps-demo
	cmake -S . -B $(BUILD)/demo $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Release -DPTGUARD_BUILD_TESTS=OFF >/dev/null
	cmake --build $(BUILD)/demo --target ptguard-cli
	$(BUILD)/demo/tools/ptguard demo

test: deps-test deps-linux-host test-release test-sanitize test-tsan

test-release:
	cmake -S . -B $(BUILD)/release $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Release -DPTGUARD_WERROR=ON >/dev/null
	cmake --build $(BUILD)/release
	ctest --test-dir $(BUILD)/release --output-on-failure

# The sanitizer build runs the same tests under ASan and UBSan; any report aborts the test.
# -O1 -g1 (the optimisation ASan's own documentation suggests, line tables only) compiles in half
# the time of -O2 -g, which was half of make test; reports still name file and line.
test-sanitize:
	cmake -S . -B $(BUILD)/sanitize $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	      -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
	      -DPTGUARD_WERROR=ON -DPTGUARD_SANITIZE=ON >/dev/null
	cmake --build $(BUILD)/sanitize
	$(SAN_ENV) ctest --test-dir $(BUILD)/sanitize --output-on-failure -LE once

# ThreadSanitizer over the tests that run threads (tests/concurrency/), only: a whole third
# build would cost more than CI's time allows for what it adds.
test-tsan:
	cmake -S . -B $(BUILD)/tsan $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPTGUARD_WERROR=ON \
	      -DPTGUARD_TSAN=ON -DPTGUARD_BUILD_TOOLS=OFF >/dev/null
	cmake --build $(BUILD)/tsan --target ptguard_concurrency_tests
	TSAN_OPTIONS=halt_on_error=1 ctest --test-dir $(BUILD)/tsan --output-on-failure -R '^concurrency$$'

bench: deps-bench
	cmake -S . -B $(BUILD)/bench $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Release -DPTGUARD_BUILD_TESTS=OFF \
	      -DPTGUARD_BUILD_TOOLS=OFF -DPTGUARD_BUILD_BENCH=ON >/dev/null
	cmake --build $(BUILD)/bench
	$(BUILD)/bench/bench/ptguard_bench --benchmark_repetitions=5 \
	      --benchmark_out=$(BUILD)/bench.json --benchmark_out_format=json

clean:
	rm -rf $(BUILD)
