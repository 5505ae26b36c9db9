# tillpipe — see README.md. Every binary and server is built from the module
# versions pinned in go.mod; nothing is downloaded at run time.
GO      ?= go
BIN     := bin
FUZZTIME ?= 30s

.PHONY: all build servers test test-deps fuzz bench run clean

all: build

## build: the tillpipe binaries plus nats-server, victoria-metrics and vmagent into bin/
build: servers
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o $(BIN)/ ./cmd/...

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

## bench: Go benchmarks of every package
bench: build
	TILLPIPE_BIN_DIR=$(CURDIR)/$(BIN) $(GO) test -run '^$$' -bench . -benchmem ./...

## run: the whole pipeline on loopback
run: build
	@echo "make run: not yet — the pipeline lands with the whole-pipeline issue"

clean:
	rm -rf $(BIN)
