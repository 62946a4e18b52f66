# Nexus build, test and lint entry points. `make help` lists them.

GO          ?= go
BIN         := bin/nexus
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT      ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS     := -s -w -X nexus.dev/nexus/internal/buildinfo.Version=$(VERSION) -X nexus.dev/nexus/internal/buildinfo.Commit=$(COMMIT)
STATICCHECK_VERSION := v0.8.2
TOOLS       := $(CURDIR)/bin/tools
# Packages whose tests are cheap enough to run under the race detector.
RACE_PKGS   ?= ./...
TEST_TIMEOUT ?= 20m

.PHONY: all build deps test lint bench generate bpf bpf-deps soak conformance clean help

all: build

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

build: ## static bin/nexus and bin/nexus-runtime (the lean OCI runtime program, also embedded in nexus), each carrying the nexus-init program (the container init stage)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o runtime/initbin/nexus-init.bin ./cmd/nexus-init
	sha256sum runtime/initbin/nexus-init.bin | cut -c1-64 | tr -d '\n' > runtime/initbin/nexus-init.sha256
	CGO_ENABLED=0 $(GO) build -trimpath -tags embedinit -ldflags '$(LDFLAGS)' -o runtime/initbin/nexus-runtime.bin ./cmd/nexus-runtime
	CGO_ENABLED=0 $(GO) build -trimpath -tags embedinit,embedruntime -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/nexus
	rm -f bin/nexus-runtime
	cp runtime/initbin/nexus-runtime.bin bin/nexus-runtime

deps: ## install the Debian packages the tests need, when missing (as root; scripts/deps)
	@scripts/deps

test: deps build ## every test, including those that need root (run as root; installs missing packages first)
	NEXUS_BIN=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(RACE_PKGS)

$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

lint: $(TOOLS)/staticcheck ## gofmt, go vet, staticcheck and go mod tidy -diff
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(TOOLS)/staticcheck ./...
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; }

bench: build ## Go micro-benchmarks (whole-system comparisons live in bench/)
	NEXUS_BIN=$(CURDIR)/$(BIN) $(GO) test -run '^$$' -bench . -benchmem ./...

# The eBPF programs include <linux/bpf.h>, whose <asm/types.h> Debian keeps
# in the multiarch include directory.
BPF2GO_CFLAGS ?= -I/usr/include/$(shell gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
export BPF2GO_CFLAGS

generate: bpf-deps ## regenerate generated sources (the seccomp syscall table from golang.org/x/sys, the eBPF objects)
	$(GO) generate ./...

bpf: bpf-deps ## regenerate the eBPF objects and Go bindings in ebpf/ from ebpf/bpf/*.c (bpf2go; committed, so building needs no clang)
	$(GO) generate ./ebpf/

bpf-deps: ## install clang, llvm and libbpf-dev (Debian) when missing, for make bpf
	@scripts/deps clang llvm libbpf-dev

soak: deps build ## every test at soak size (NEXUS_SOAK=1: e.g. 50,000 ops per fault scenario, 20 raft failovers)
	NEXUS_BIN=$(CURDIR)/$(BIN) NEXUS_SOAK=1 $(GO) test -count=1 -timeout 2h ./...

conformance: build ## the OCI runtime spec's conformance suite (opencontainers/runtime-tools) against nexus, runc and crun (root; see docs/conformance.md)
	bench/conformance

clean:
	rm -rf bin
