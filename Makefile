# pagefleet: `make demo` runs a real export; `make test` runs every test.
CARGO ?= cargo

.PHONY: demo test up build lint clean

demo: up build
	deploy/demo.sh

test: up build
	$(CARGO) test --workspace --no-fail-fast

up:
	deploy/services.sh

build:
	$(CARGO) build --workspace --bins

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	rm -rf out
