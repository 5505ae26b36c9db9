# tillpipe — see README.md. Every binary and server is built from the module
# versions pinned in go.mod; nothing is downloaded at run time.
GO      ?= go
BIN     := bin
FUZZTIME ?= 30s

.PHONY: all build servers test test-deps fuzz bench bench-fleet bench-go run clean

all: build

## build: the tillpipe binaries (and bin/bench, the harness) plus nats-server, victoria-metrics and vmagent into bin/
build: servers
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o $(BIN)/ ./cmd/... ./bench

servers: $(BIN)/nats-server $(BIN)/victoria-metrics $(BIN)/vmagent

$(BIN)/nats-server: go.mod go.sum
	$(GO) build -o $@ github.com/nats-io/nats-server/v2

$(BIN)/victoria-metrics: go.mod go.sum
	$(GO) build -o $@ github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics

$(BIN)/vmagent: go.mod go.sum
	$(GO) build -o $@ github.com/VictoriaMetrics/VictoriaMetrics/app/vmagent

## test-deps: Debian's prometheus for the Prometheus-as-backend test (installed when root; the test skips without it)
test-deps:
	@command -v prometheus >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's prometheus for the backend test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "prometheus is not installed and this is not root: the Prometheus-backend test will skip"; fi; }

## test: vet and every test (real NATS, real VictoriaMetrics, real disks) under the race detector
test: build test-deps
	$(GO) vet ./...
	TILLPIPE_BIN_DIR=$(CURDIR)/$(BIN) $(GO) test -race -timeout 25m ./...
	@# allocation pins skip under -race (sync.Pool drops items there): run them plain
	$(GO) test -run 'Alloc' ./internal/...

## fuzz: each fuzz target for FUZZTIME (default 30s)
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$target"; \
	    $(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

## bench: the fleet harness (steady and outage at this machine's size, then the sizing table) and the Go benchmarks
bench: bench-fleet bench-go

## bench-fleet: bin/bench (go run ./bench), reports in bench/results and the sizing table in bench/README.md
bench-fleet: build
	$(BIN)/bench -scenario steady -bin-dir $(BIN) -build=false
	$(BIN)/bench -scenario outage -bin-dir $(BIN) -build=false
	$(BIN)/bench -scenario sizing -bin-dir $(BIN) -build=false

## bench-go: every package's Go benchmarks (samples/s, bytes/sample, CPU per sample)
bench-go: build
	TILLPIPE_BIN_DIR=$(CURDIR)/$(BIN) $(GO) test -run '^$$' -bench . -benchmem ./...

## run: the whole pipeline on loopback until Ctrl-C (NATS, VictoriaMetrics, an ingester, relays, a simulated fleet, a real collector)
run: build
	$(BIN)/bench -scenario run -bin-dir $(BIN) -build=false

clean:
	rm -rf $(BIN)
