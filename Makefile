# Trellis: the two commands a newcomer needs are `make demo` and `make test`.
GO        ?= go
BIN       := $(CURDIR)/bin
BINARIES  := trellis trellis-proxy trellis-controller trellis-demo-app trellis-init trellis-cni
GOFLAGS_BUILD := -tags grpcnotrace -trimpath -ldflags "-s -w -X github.com/trellis-mesh/trellis/internal/version.Version=$(shell git describe --tags --always --dirty 2>/dev/null || echo dev)"

.PHONY: all build demo test test-short conformance conformance-update lint vet staticcheck gen gen-proto gen-k8s gen-check bench fuzz clean

all: build

## build: static binaries in ./bin
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/ $(addprefix ./cmd/,$(BINARIES))

## demo: a whole mesh on this machine (Ctrl-C to stop)
demo: build
	$(BIN)/trellis demo

## test: every check CI runs: generated code, vet, staticcheck, unit, integration and demo tests under -race
test: gen-check vet staticcheck cluster-test
	$(GO) test -race -count=1 -timeout 25m ./...

test-short:
	$(GO) test -race -short -count=1 ./...

## conformance: HTTP/2 conformance (h2spec, pinned in go.mod) of the proxies' listeners against the recorded baseline (also part of make test)
conformance:
	$(GO) test -count=1 -v -run 'TestConformanceH2spec' ./test/e2e/

## conformance-update: record the h2spec cases that pass now as the baseline (after a change that makes more pass)
conformance-update:
	TRELLIS_H2SPEC_UPDATE=1 $(GO) test -count=1 -v -run 'TestConformanceH2spec' ./test/e2e/

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) tool staticcheck ./...

lint: vet staticcheck
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$'))" || { gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$'); echo 'gofmt needed'; exit 1; }

## gen: regenerate every generated file: the Go code of every .proto (needs protoc: apt-get install protobuf-compiler libprotobuf-dev) and the policy.trellis.io and workload.trellis.io APIs (gen-k8s)
PROTOS := $(shell find api demoapp -name '*.proto' 2>/dev/null)
gen: gen-proto gen-k8s

gen-proto:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
	PATH=$(BIN):$$PATH protoc -I . \
	  --go_out=. --go_opt=module=github.com/trellis-mesh/trellis \
	  --go-grpc_out=. --go-grpc_opt=module=github.com/trellis-mesh/trellis \
	  $(PROTOS)

## gen-k8s: from the types in api/GROUP/v1alpha1 (policy.trellis.io, workload.trellis.io): deepcopy, the typed clientset, listers and informers (k8s.io/code-generator) and the CRDs in charts/trellis/crds (controller-gen); tools pinned in go.mod
K8S_GROUPS  := policy workload
K8S_GEN_DIRS := $(foreach g,$(K8S_GROUPS),api/$(g)/v1alpha1 api/$(g)/client)
CRD_DIR     := charts/trellis/crds
gen-k8s:
	rm -f $(CRD_DIR)/*.trellis.io_*.yaml
	@set -e; for g in $(K8S_GROUPS); do \
	  api=api/$$g/v1alpha1; client=api/$$g/client; pkg=github.com/trellis-mesh/trellis/$$client; header=api/$$g/header.go.txt; \
	  echo "gen-k8s: $$api"; \
	  rm -rf $$client/clientset $$client/listers $$client/informers $$api/zz_generated.deepcopy.go; \
	  $(GO) tool deepcopy-gen --go-header-file $$header --output-file zz_generated.deepcopy.go ./$$api; \
	  $(GO) tool client-gen --go-header-file $$header --clientset-name versioned --input-base "" \
	    --input github.com/trellis-mesh/trellis/$$api --output-dir $$client/clientset --output-pkg $$pkg/clientset; \
	  $(GO) tool lister-gen --go-header-file $$header --output-dir $$client/listers --output-pkg $$pkg/listers ./$$api; \
	  $(GO) tool informer-gen --go-header-file $$header --versioned-clientset-package $$pkg/clientset/versioned \
	    --listers-package $$pkg/listers --output-dir $$client/informers --output-pkg $$pkg/informers ./$$api; \
	  $(GO) tool controller-gen crd:crdVersions=v1 paths=./$$api/... output:crd:dir=$(CRD_DIR); \
	done

## gen-check: fail if the generated code differs from what make gen generates (made in a copy of
## the tree, so that builds running beside it never read half-written packages)
gen-check:
	@MAKE="$(MAKE)" api/gen-check.sh $(K8S_GEN_DIRS) $(CRD_DIR)

## bench: the proxy benchmark (see bench/README.md)
bench: build
	$(GO) run ./bench/meshbench

## fuzz: run every fuzz target for a short while
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list 'Fuzz.*' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf $(BIN)

# The real single-node Kubernetes harness: cluster-up, cluster-down, cluster-status, images, cluster-smoke.
include test/cluster/cluster.mk
include test/k8se2e/e2e.mk
