# End-to-end suites on the real single-node Kubernetes of test/cluster (needs root).
# Included from the top-level Makefile AFTER test/cluster/cluster.mk:
#   include test/k8se2e/e2e.mk
# make e2e                  every suite
# make e2e SUITE=install    one suite (make e2e-list names them); SUITE="a b" several
# E2E_SKIP="a b"            every suite but these
# TRELLIS_CLUSTER=b         on cluster b (.ci/run runs a share of the suites there)
# E2E_PREBUILT=1            do not build: use bin/ and bin/images as they are (a second
#                           make e2e beside a running one must not rewrite its binaries)
# E2E_KEEP_CLUSTER=1        leave the cluster up afterwards (default: make cluster-down)
# TRELLIS_E2E_OUTAGE=30s    shorten the controlplane-down (default 2m) and policy-cp-down (default 60s) outages
# See test/k8se2e/README.md.
E2E_SUITES := install inject cni job rollout controlplane-down ha-failover ha-leader
E2E_SUITES += identity-issuer identity-external identity-anchor identity-external-anchor identity-check
E2E_SUITES += security
E2E_SUITES += external-workload
E2E_SUITES += upgrade
E2E_SUITES += reinstall
E2E_SUITES += policy-deny policy-route policy-audit policy-live policy-suggest policy-cp-down
E2E_SUITES += demo-k8s
E2E_SUITES += tap
E2E_SUITES += viz
E2E_SUITES += diagnostics
E2E_SUITES += dashboard
E2E_SUITES += tracing
E2E_SUITES += traffic-split retries-budget circuit-break slow-start rate-limit
# The Gateway API conformance suite's mesh profiles, its own Go module
# (test/conformance): run last in make e2e, after ./test/k8se2e's suites,
# reusing the shared install they leave (E2E_KEEP_INSTALL=1 for them).
E2E_SUITES += gateway-conformance
E2E_OPTIONAL_SUITES :=
E2E_TEST_install           := TestInstall
E2E_TEST_inject            := TestInject
E2E_TEST_cni               := TestCNI
E2E_TEST_job               := TestJob
E2E_TEST_rollout           := TestRollout
E2E_TEST_controlplane-down := TestControlPlaneDown
E2E_TEST_ha-failover       := TestHAFailover
E2E_TEST_ha-leader         := TestHALeader
E2E_TEST_identity-issuer   := TestIdentityIssuer
E2E_TEST_identity-external := TestIdentityExternal
E2E_TEST_identity-anchor   := TestIdentityAnchor
E2E_TEST_identity-external-anchor := TestIdentityExternalAnchor
E2E_TEST_identity-check    := TestIdentityCheck
E2E_TEST_security          := TestSecurity
E2E_TEST_external-workload := TestExternalWorkload
E2E_TEST_upgrade           := TestUpgrade
# The version the upgrade suite starts from: the last release (or landed
# commit) before this one; bump it when a release is cut. 018f46e, not
# the landed ff589f7: that version's proxies could fail a request while a
# pod's app shut down during a rolling restart (docs/install.md,
# "Upgrades and version skew").
E2E_UPGRADE_FROM ?= 018f46e
E2E_TEST_reinstall         := TestReinstall
E2E_TEST_policy-deny       := TestPolicyDeny
E2E_TEST_policy-route      := TestPolicyRoute
E2E_TEST_policy-audit      := TestPolicyAudit
E2E_TEST_policy-live       := TestPolicyLive
E2E_TEST_policy-suggest    := TestPolicySuggest
E2E_TEST_policy-cp-down    := TestPolicyCPDown
E2E_TEST_demo-k8s          := TestDemoK8s
E2E_TEST_tap               := TestTap
E2E_TEST_viz               := TestViz
E2E_TEST_diagnostics       := TestDiagnostics
E2E_TEST_dashboard         := TestDashboard
E2E_TEST_tracing           := TestTracing
E2E_TEST_traffic-split     := TestTrafficSplit
E2E_TEST_retries-budget    := TestRetriesBudget
E2E_TEST_circuit-break     := TestCircuitBreak
E2E_TEST_slow-start        := TestSlowStart
E2E_TEST_rate-limit        := TestRateLimit|TestRateLimitOutbound
E2E_TEST_gateway-conformance := TestGatewayConformanceMesh
# The suites of ./test/k8se2e, and the conformance run (test/conformance) if selected.
E2E_SELECTED     = $(filter-out $(E2E_SKIP),$(or $(SUITE),$(E2E_SUITES)))
E2E_K8S_SUITES   = $(filter-out gateway-conformance,$(E2E_SELECTED))
E2E_CONFORMANCE  = $(filter gateway-conformance,$(E2E_SELECTED))
E2E_RUN     = ^($(subst $(eval) ,|,$(strip $(foreach s,$(E2E_K8S_SUITES),$(E2E_TEST_$(s))))))$$
E2E_CONFORMANCE_REPORT ?= $(BIN)/conformance/trellis-mesh-report.yaml
E2E_TIMEOUT ?= 75m
E2E_KEEP_CLUSTER ?=

$(foreach s,$(SUITE) $(E2E_SKIP),$(if $(E2E_TEST_$(s)),,$(error unknown suite $(s) (SUITE or E2E_SKIP); one of: $(E2E_SUITES) $(E2E_OPTIONAL_SUITES))))

.PHONY: e2e e2e-list e2e-mc

# Prometheus and Jaeger's images are built once, in cluster a's cache:
# on b, the suites that need them are not run (.ci/run keeps them on a).
E2E_EXTRAS_DIR = $(if $(filter a,$(TRELLIS_CLUSTER)),$(TRELLIS_CLUSTER_DIR),/var/tmp/trellis-cluster)

## e2e: build, images, cluster up, the Kubernetes suites (SUITE=name for one), cluster down
e2e: $(if $(filter a,$(TRELLIS_CLUSTER)),cluster-extras-bg) $(if $(E2E_PREBUILT),,images)
	@$(CLUSTER) up
	@rc=0; export KUBECONFIG=$(TRELLIS_CLUSTER_DIR)/run/admin.kubeconfig TRELLIS_E2E_K8S=1 TRELLIS_BIN=$(BIN); \
	  if [ -n "$(E2E_K8S_SUITES)" ]; then \
	  E2E_KEEP_INSTALL=$(if $(E2E_CONFORMANCE),1,$(E2E_KEEP_INSTALL)) TRELLIS_E2E_EXTRAS=$(E2E_EXTRAS_DIR)/extras.status TRELLIS_E2E_UPGRADE_FROM=$(E2E_UPGRADE_FROM) \
	  $(GO) test -count=1 -v -timeout $(E2E_TIMEOUT) -run '$(E2E_RUN)' ./test/k8se2e || rc=$$?; fi; \
	  if [ -n "$(E2E_CONFORMANCE)" ]; then \
	  ( $(CLUSTER) conformance-images ) && \
	  ( cd test/conformance && E2E_KEEP_INSTALL=$(E2E_KEEP_INSTALL) TRELLIS_CONFORMANCE_REPORT=$(E2E_CONFORMANCE_REPORT) GOWORK=off \
	    $(GO) test -count=1 -v -timeout $(E2E_TIMEOUT) -run '^$(E2E_TEST_gateway-conformance)$$' . ) || rc=1; fi; \
	  if [ -z "$(E2E_KEEP_CLUSTER)" ]; then $(CLUSTER) down || rc=1; fi; exit $$rc

# The multicluster suites: on cluster a and cluster b beside it
# (test/cluster/README.md, "Two clusters"), with b's kubeconfig in
# TRELLIS_E2E_PEER_KUBECONFIG. Not part of make e2e, which has cluster a
# alone; .ci/run runs both.
E2E_MC_SUITES := mc-trust mc-flat mc-gateway mc-policy mc-failover mc-cp-down
E2E_TEST_mc-trust := TestMulticlusterTrust
E2E_TEST_mc-flat  := TestMulticlusterFlat
E2E_TEST_mc-gateway := TestMulticlusterGateway
E2E_TEST_mc-policy := TestMulticlusterPolicy
E2E_TEST_mc-failover := TestMulticlusterFailover
# mc-cp-down: each controller down 60 s (TRELLIS_E2E_MC_OUTAGE) under load: about 3.5 min.
E2E_MC_OPTIONAL_SUITES :=
E2E_TEST_mc-cp-down := TestMulticlusterCPDown
E2E_MC_RUN = ^($(subst $(eval) ,|,$(strip $(foreach s,$(or $(MC_SUITE),$(E2E_MC_SUITES)),$(E2E_TEST_$(s))))))$$

## e2e-mc: images, clusters a and b up, the multicluster suites (MC_SUITE=name for one), both down
e2e-mc: images
	@$(CLUSTER) up
	@# b already up (E2E_KEEP_CLUSTER): its containerd lacks this build's images.
	@if $(CLUSTER_B) status >/dev/null 2>&1; then $(CLUSTER_B) images >/dev/null; else $(CLUSTER_B) up; fi
	@rc=0; KUBECONFIG=$(TRELLIS_CLUSTER_DIR)/run/admin.kubeconfig TRELLIS_E2E_PEER_KUBECONFIG=$(TRELLIS_CLUSTER_B_DIR)/run/admin.kubeconfig \
	  TRELLIS_E2E_K8S=1 TRELLIS_BIN=$(BIN) $(GO) test -count=1 -v -timeout 20m -run '$(E2E_MC_RUN)' ./test/k8se2e || rc=$$?; \
	  if [ -z "$(E2E_KEEP_CLUSTER)" ]; then $(CLUSTER_B) down || rc=1; $(CLUSTER) down || rc=1; fi; exit $$rc

## e2e-list: the suite names
e2e-list:
	@echo $(E2E_SUITES) $(E2E_OPTIONAL_SUITES)
	@echo multicluster, make e2e-mc MC_SUITE=name: $(E2E_MC_SUITES) $(E2E_MC_OPTIONAL_SUITES)
