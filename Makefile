# rcache: `make run` starts redis-server with the module; `make test` runs every test.
PORT ?= 6379
MODULE := target/release/librcache.so

.PHONY: all deps build run test unit integration python bench-smoke bench bench-quick memcheck clean

all: build

deps:
	@scripts/deps.sh

build: deps
	cargo build --release

run: build
	redis-server redis.conf --port $(PORT)

# Unit tests (pure core, no server), integration tests (real redis-server processes),
# the Python clients' tests, and a benchmark smoke run so the benchmarks cannot rot.
test: build
	RCACHE_MODULE=$(abspath $(MODULE)) cargo test --release
	RCACHE_MODULE=$(abspath $(MODULE)) bench/run.sh smoke
	RCACHE_MODULE=$(abspath $(MODULE)) clients/python/run-tests.sh

bench: build
	RCACHE_MODULE=$(abspath $(MODULE)) bench/run.sh full

bench-quick: build
	RCACHE_MODULE=$(abspath $(MODULE)) bench/run.sh quick

memcheck: build
	RCACHE_MODULE=$(abspath $(MODULE)) scripts/memcheck.sh

clean:
	cargo clean
