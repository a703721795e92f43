# pagefleet: `make demo` runs a real export; `make test` runs every test.
CARGO ?= cargo

.PHONY: demo test chaos up build lint clean

demo: up build
	deploy/demo.sh

test: up build
	$(CARGO) test --workspace --no-fail-fast

# Kills workers and the scheduler and restarts RabbitMQ, Postgres and Redis
# under a 2,000-page export, once per seed; prints a report per seed.
# It restarts the machine's shared services: run it alone.
SEEDS ?= 1,2,3
chaos: up build
	$(CARGO) run -q -p pagefleet-tests --bin pagefleet-chaos -- --seeds $(SEEDS)

up:
	deploy/services.sh

build:
	$(CARGO) build --workspace --bins

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	rm -rf out
