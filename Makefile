# vhostd: see README.md.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
FUZZTIME ?= 60s

.PHONY: all build deps demo test unit fdcheck e2e fuzz fuzz-long lint bench insn matrix clean install

all: build

deps:
	@bash .ci/deps

build:
	$(GO) build -o bin/ ./daemon/cmd/vhostd ./daemon/cmd/vhostctl

# Installs vhostd as a systemd service (README.md, "Installing as a
# service"): the binaries to $(PREFIX)/bin, the unit (its ExecStart pointed
# at $(PREFIX)/bin/vhostd) to $(SYSTEMDUNITDIR) (systemd reads
# /usr/local/lib/systemd/system and /usr/lib/systemd/system), and the
# example config to $(SYSCONFDIR)/vhostd/vhostd.toml.example; an existing
# vhostd.toml is never touched. All under $(DESTDIR) for packaging.
PREFIX ?= /usr/local
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc

install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(SYSCONFDIR)/vhostd
	install -m 0755 bin/vhostd bin/vhostctl $(DESTDIR)$(PREFIX)/bin/
	sed 's|^ExecStart=/usr/local/bin/|ExecStart=$(PREFIX)/bin/|' daemon/systemd/vhostd.service > $(DESTDIR)$(SYSTEMDUNITDIR)/vhostd.service.tmp
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/vhostd.service.tmp
	mv $(DESTDIR)$(SYSTEMDUNITDIR)/vhostd.service.tmp $(DESTDIR)$(SYSTEMDUNITDIR)/vhostd.service
	install -m 0644 daemon/systemd/vhostd.toml $(DESTDIR)$(SYSCONFDIR)/vhostd/vhostd.toml.example
	@if [ -z "$(DESTDIR)" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@if [ ! -e $(DESTDIR)$(SYSCONFDIR)/vhostd/vhostd.toml ]; then \
		echo "Next: cp $(SYSCONFDIR)/vhostd/vhostd.toml.example $(SYSCONFDIR)/vhostd/vhostd.toml, edit it, then systemctl enable --now vhostd"; fi

# The main job: two QEMU guests ping each other through vhostd.
demo: deps build
	$(GO) run ./test/demo

# Everything CI runs: lint, unit and end-to-end tests with the race
# detector, the fd double-close check, a one-minute run of each fuzz
# target, then the end-to-end tests.
test: deps lint unit fdcheck fuzz e2e

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
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v -e /test/e2e -e /test/hostile -e /test/libvirt -e /test/matrix)
	$(GO) test -count=1 ./virtqueue/... ./vhost/... ./switch/...

e2e: build
	@mkdir -p build
	$(GO) test -race -count=1 -v -timeout 30m ./test/e2e/ ./test/hostile/ ./test/libvirt/ ./test/matrix/ 2>&1 | tee build/e2e.log | grep -E '^(=== RUN|--- |\s+\S+_test.go|ok|FAIL|PASS|panic)'; exit $${PIPESTATUS[0]}

# The unit tests of the packages that handle fds, under strace: none may
# close an fd that is not open (a double close; .ci/fd-double-close).
fdcheck:
	bash .ci/fd-double-close

# Each fuzz target for FUZZTIME; fuzz-long gives each two hours.
fuzz:
	bash .ci/fuzz-one FuzzChain ./virtqueue $(FUZZTIME)
	bash .ci/fuzz-one FuzzMessages ./vhost $(FUZZTIME)
	bash .ci/fuzz-one FuzzValidate ./switch/offload $(FUZZTIME)
	bash .ci/fuzz-one FuzzForward ./switch $(FUZZTIME)

fuzz-long:
	$(MAKE) fuzz FUZZTIME=2h

# Go micro-benchmarks (-benchmem: allocations per packet), then the
# side-by-side benchmark of test/bench: vhostd, DPDK's vhost backend and
# OVS-DPDK on one traffic generator (docs/bench.md), without and with
# hugepages (it reserves and mounts them, and gives them back), with each
# backend's cycles per frame and bootstrap intervals of the ratios.
# Outputs in build/bench/.
# Arguments for it: make bench BENCH_ARGS="--quick" (or --reps, --window, ...).
BENCH_ARGS ?=
bench: build
	@bash .ci/bench-deps
	$(GO) test -run '^$$' -bench . -benchmem ./switch/ ./virtqueue/ ./switch/dpdk/ ./switch/uplink/ ./switch/offload/
	@mkdir -p build/bench
	bash .ci/insn-per-frame --out build/bench/insn.txt
	$(GO) build -o build/bench/vhostd-bench ./test/bench
	$(GO) build -o build/bench/tsogen ./test/bench/tsogen
	build/bench/vhostd-bench $(BENCH_ARGS)

# Instructions per forwarded frame of the VM-to-VM data path, split and
# packed rings, 64 and 1518 bytes, counted with valgrind's callgrind
# (docs/bench.md, "Instructions per frame"): a table with each case's top
# functions. make bench writes it to build/bench/insn.txt.
insn:
	bash .ci/insn-per-frame

# The feature matrix (docs/matrix.md): vhostd against DPDK's virtio_user
# and QEMU guests once per feature combination; the table goes to stdout
# and build/matrix/ (matrix.md, matrix.csv, traces of failing rows).
# make e2e runs a reduced form (test/matrix TestMatrixReduced).
# Arguments: make matrix MATRIX_ARGS="--only baseline,no-mq --frontends testpmd".
MATRIX_ARGS ?=
matrix:
	$(GO) run ./test/matrix/cmd/vhostd-matrix --out build/matrix $(MATRIX_ARGS)

clean:
	rm -rf bin build
