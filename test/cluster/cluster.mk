# A real single-node Kubernetes for Trellis's end-to-end tests (needs root).
# Included from the top-level Makefile:  include test/cluster/cluster.mk
# See test/cluster/README.md.
GO                  ?= go
BIN                 ?= $(CURDIR)/bin
# TRELLIS_CLUSTER=b: a second cluster beside the first, in namespaces of
# its own (test/cluster/README.md, "Two clusters"); it shares a's build
# cache. a is the default and the one make e2e uses.
TRELLIS_CLUSTER     ?= a
ifeq ($(TRELLIS_CLUSTER),a)
TRELLIS_CLUSTER_DIR ?= /var/tmp/trellis-cluster
else
TRELLIS_CLUSTER_DIR ?= /var/tmp/trellis-cluster-$(TRELLIS_CLUSTER)
TRELLIS_CLUSTER_CACHE ?= /var/tmp/trellis-cluster/cache
export TRELLIS_CLUSTER_CACHE
endif
# Images are <registry>/<name>:<tag> as in charts/trellis/values.yaml; the
# tag is the version `make build` stamps, which `trellis install` uses.
TRELLIS_IMAGE_REPO  ?= trellis
TRELLIS_IMAGE_TAG   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
export TRELLIS_CLUSTER TRELLIS_CLUSTER_DIR TRELLIS_IMAGE_REPO TRELLIS_IMAGE_TAG
CLUSTER_MOD  := $(CURDIR)/test/cluster/k8s
CLUSTER_TOOL := $(TRELLIS_CLUSTER_DIR)/cache/cluster-harness
# Cluster b beside cluster a, from targets that run as a (make e2e-mc).
TRELLIS_CLUSTER_B_DIR ?= /var/tmp/trellis-cluster-b
# The harness is rebuilt on every call (seconds with a warm build cache) so
# it is never stale; it builds and caches Kubernetes itself.
CLUSTER = cd $(CLUSTER_MOD) && CGO_ENABLED=0 $(GO) build -o $(CLUSTER_TOOL) ./cmd/cluster && $(CLUSTER_TOOL) -bin $(BIN)
CLUSTER_B = cd $(CLUSTER_MOD) && CGO_ENABLED=0 $(GO) build -o $(CLUSTER_TOOL) ./cmd/cluster && \
  TRELLIS_CLUSTER=b TRELLIS_CLUSTER_DIR=$(TRELLIS_CLUSTER_B_DIR) TRELLIS_CLUSTER_CACHE=$(TRELLIS_CLUSTER_DIR)/cache $(CLUSTER_TOOL) -bin $(BIN)

.PHONY: cluster-up cluster-down cluster-status cluster-build cluster-smoke cluster-smoke-pair cluster-test images cluster-extras cluster-extras-bg

## cluster-up: start the cluster (idempotent); prints the kubeconfig path
cluster-up:
	@$(CLUSTER) up

## cluster-down: stop it and remove everything it made on the host
cluster-down:
	@$(CLUSTER) down

## cluster-status: is it up? (non-zero exit if not)
cluster-status:
	@$(CLUSTER) status

## cluster-build: only build and cache Kubernetes, CoreDNS and the helper images
cluster-build:
	@$(CLUSTER) build

## images: reproducible image tarballs in bin/images (imported into the cluster if it is up)
images: build
	@$(CLUSTER) images

## cluster-extras: build Prometheus and Jaeger's images (cached; 10-20 min cold) and import them once the cluster is up
cluster-extras:
	@$(CLUSTER) extras

# cluster-extras-bg: the same in the background (make e2e starts it first);
# its own copy of the harness so that it never runs the binary the next
# $(CLUSTER) rebuilds. Log: $(TRELLIS_CLUSTER_DIR)/extras.log; outcome:
# $(TRELLIS_CLUSTER_DIR)/extras.status.
# A run already going on (.ci/run starts one early) is left to finish.
cluster-extras-bg:
	@if [ -f $(TRELLIS_CLUSTER_DIR)/extras.pid ] && kill -0 "$$(cat $(TRELLIS_CLUSTER_DIR)/extras.pid)" 2>/dev/null; then \
	  echo "cluster: the extra images are already being built (log: $(TRELLIS_CLUSTER_DIR)/extras.log)"; else \
	  mkdir -p $(TRELLIS_CLUSTER_DIR)/cache && rm -f $(TRELLIS_CLUSTER_DIR)/extras.status && \
	  cd $(CLUSTER_MOD) && CGO_ENABLED=0 $(GO) build -o $(CLUSTER_TOOL)-extras ./cmd/cluster && \
	  { nohup $(CLUSTER_TOOL)-extras -bin $(BIN) extras >$(TRELLIS_CLUSTER_DIR)/extras.log 2>&1 </dev/null & } && \
	  echo "cluster: building the extra images in the background (log: $(TRELLIS_CLUSTER_DIR)/extras.log)"; fi

## cluster-smoke: up, a 2-replica demo Deployment + Service answered from the host and from a pod, down
cluster-smoke: images
	@$(CLUSTER) up
	@$(CLUSTER) smoke; rc=$$?; $(CLUSTER) down || rc=1; exit $$rc

## cluster-smoke-pair: clusters a and b side by side (both down first), pods of each calling the other's, both down, the machine as it was
cluster-smoke-pair: images
	@$(CLUSTER) smoke-pair

## cluster-test: vet and unit tests of the cluster module (no cluster needed)
cluster-test:
	cd $(CLUSTER_MOD) && $(GO) vet ./cmd/cluster ./cmd/pause ./cmd/smokeget ./internal/... && $(GO) test -race -count=1 ./cmd/cluster ./internal/...
