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

## gen: regenerate every generated file: the Go code of every .proto (needs protoc: apt-get install protobuf-compiler libprotobuf-dev) and the policy.trellis.io API's (gen-k8s)
PROTOS := $(shell find api demoapp -name '*.proto' 2>/dev/null)
gen: gen-proto gen-k8s

gen-proto:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
	PATH=$(BIN):$$PATH protoc -I . \
	  --go_out=. --go_opt=module=github.com/trellis-mesh/trellis \
	  --go-grpc_out=. --go-grpc_opt=module=github.com/trellis-mesh/trellis \
	  $(PROTOS)

## gen-k8s: from the types in api/policy/v1alpha1: deepcopy, the typed clientset, listers and informers (k8s.io/code-generator) and the CRDs in charts/trellis/crds (controller-gen); tools pinned in go.mod
K8S_API     := api/policy/v1alpha1
K8S_CLIENT  := api/policy/client
K8S_PKG     := github.com/trellis-mesh/trellis/$(K8S_CLIENT)
K8S_HEADER  := api/policy/header.go.txt
CRD_DIR     := charts/trellis/crds
gen-k8s:
	rm -rf $(addprefix $(K8S_CLIENT)/,clientset listers informers) $(K8S_API)/zz_generated.deepcopy.go $(CRD_DIR)/policy.trellis.io_*.yaml
	$(GO) tool deepcopy-gen --go-header-file $(K8S_HEADER) --output-file zz_generated.deepcopy.go ./$(K8S_API)
	$(GO) tool client-gen --go-header-file $(K8S_HEADER) --clientset-name versioned --input-base "" \
	  --input github.com/trellis-mesh/trellis/$(K8S_API) --output-dir $(K8S_CLIENT)/clientset --output-pkg $(K8S_PKG)/clientset
	$(GO) tool lister-gen --go-header-file $(K8S_HEADER) --output-dir $(K8S_CLIENT)/listers --output-pkg $(K8S_PKG)/listers ./$(K8S_API)
	$(GO) tool informer-gen --go-header-file $(K8S_HEADER) --versioned-clientset-package $(K8S_PKG)/clientset/versioned \
	  --listers-package $(K8S_PKG)/listers --output-dir $(K8S_CLIENT)/informers --output-pkg $(K8S_PKG)/informers ./$(K8S_API)
	$(GO) tool controller-gen crd:crdVersions=v1 paths=./$(K8S_API)/... output:crd:dir=$(CRD_DIR)

## gen-check: fail if the generated code differs from what make gen generates (made in a copy of
## the tree, so that builds running beside it never read half-written packages)
gen-check:
	@MAKE="$(MAKE)" api/gen-check.sh $(K8S_API) $(K8S_CLIENT) $(CRD_DIR)

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
