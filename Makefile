# pagefleet: `make demo` runs a real export; `make test` runs every test.
CARGO ?= cargo

.PHONY: demo test chaos bench fuzz up build lint clean peers browser

demo: up build
	deploy/demo.sh

test: up build peers browser
	$(CARGO) test --workspace --no-fail-fast

# Real sources some tests export from (json-server), where Node is installed.
peers:
	@if command -v npm >/dev/null; then \
		npm ci --prefix tests/peers/json-server --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the json-server peer test will be skipped"; fi

# Headless Chromium and its WebDriver for the console's browser test
# (tests/tests/console.rs), from Debian's packages where they can be
# installed; without them that test says it skipped.
browser:
	@if command -v chromedriver >/dev/null && command -v chromium >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null \
		  || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; }; } \
		|| echo "chromium could not be installed: the console's browser test will be skipped"; \
	else echo "chromium and chromium-driver are missing: the console's browser test will be skipped"; fi

# Kills workers (and stops some with SIGTERM) and the scheduler and restarts
# RabbitMQ, Postgres and Redis under a 2,000-page export, once per seed;
# prints a report per seed.
# It restarts the machine's shared services: run it alone.
SEEDS ?= 1,2,3
chaos: up build
	$(CARGO) run -q -p pagefleet-tests --bin pagefleet-chaos -- --seeds $(SEEDS)

# Rate-limit use against the mock source (R = 50 and 200/s; 1, 4, 8 workers;
# shared limiter vs a naive baseline), the other walks, a chain against a
# slow source, the adaptive rate against a source that states its limit only
# by refusing, one page of 400,000 small records (memory), an unthrottled export of 1,000,000 rows (BENCH_SCALE=10m for
# 10,000,000), an outage, and the limiter alone; BENCH_ONLY=chain,adaptive
# runs only those parts. Measured on a release build: a debug build measures
# the compiler, not us.
bench: up
	$(CARGO) build --release --workspace --bins
	$${CARGO_TARGET_DIR:-target}/release/pagefleet-bench

# Every parser of outside input (spec, pagination, Retry-After and rate-limit
# headers, flattener, CSV writer and checker) under generated input for
# FUZZ_SECONDS per target; prints executions and crashes, exits 1 on a crash.
# An optimized build with overflow checks on (profile `fuzz`). FUZZ_SEED
# repeats a run; FUZZ_TARGETS runs only those named.
FUZZ_SECONDS ?= 20
FUZZ_TARGETS ?=
fuzz:
	$(CARGO) run --profile fuzz -q -p pagefleet-fuzz -- --seconds $(FUZZ_SECONDS) $(FUZZ_TARGETS)

up:
	deploy/services.sh

build:
	$(CARGO) build --workspace --bins

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	rm -rf out
