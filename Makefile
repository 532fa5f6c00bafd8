# vhostd: see README.md.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
FUZZTIME ?= 60s

.PHONY: all build deps demo test unit e2e fuzz fuzz-long lint bench clean

all: build

deps:
	@bash .ci/deps

build:
	$(GO) build -o bin/ ./daemon/cmd/vhostd ./daemon/cmd/vhostctl

# The main job: two QEMU guests ping each other through vhostd.
demo: deps build
	$(GO) run ./test/demo

# Everything CI runs: lint, unit and end-to-end tests with the race
# detector, a one-minute run of each fuzz target, then the end-to-end tests.
test: deps lint unit fuzz e2e

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@# The core builds without cgo (no DPDK); --uplink then says so.
	CGO_ENABLED=0 $(GO) build ./vhost/... ./virtqueue/... ./switch/... ./daemon/...
	CGO_ENABLED=0 $(GO) vet ./vhost/... ./virtqueue/... ./switch/... ./daemon/...

# The race detector swaps out virtqueue's amd64 assembly (release stores),
# so the data-path packages run a second time without it.
unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v -e /test/e2e -e /test/hostile)
	$(GO) test -count=1 ./virtqueue/... ./vhost/... ./switch/...

e2e: build
	@mkdir -p build
	$(GO) test -race -count=1 -v -timeout 30m ./test/e2e/ ./test/hostile/ 2>&1 | tee build/e2e.log | grep -E '^(=== RUN|--- |\s+\S+_test.go|ok|FAIL|PASS|panic)'; exit $${PIPESTATUS[0]}

# Each fuzz target for FUZZTIME; fuzz-long gives each two hours.
fuzz:
	bash .ci/fuzz-one FuzzChain ./virtqueue $(FUZZTIME)
	bash .ci/fuzz-one FuzzMessages ./vhost $(FUZZTIME)

fuzz-long:
	$(MAKE) fuzz FUZZTIME=2h

# Go micro-benchmarks (-benchmem: allocations per packet), then the
# side-by-side benchmark of test/bench: vhostd, DPDK's vhost backend and
# OVS-DPDK on one traffic generator (docs/bench.md). Outputs in build/bench/.
# Arguments for it: make bench BENCH_ARGS="--quick" (or --reps, --window, ...).
BENCH_ARGS ?=
bench: build
	@bash .ci/bench-deps
	$(GO) test -run '^$$' -bench . -benchmem ./switch/ ./virtqueue/ ./switch/dpdk/ ./switch/uplink/
	@mkdir -p build/bench
	$(GO) build -o build/bench/vhostd-bench ./test/bench
	build/bench/vhostd-bench $(BENCH_ARGS)

clean:
	rm -rf bin build
