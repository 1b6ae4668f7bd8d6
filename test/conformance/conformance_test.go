// Package conformance runs the Gateway API conformance suite's mesh
// profiles (GAMMA: MESH-HTTP, MESH-GRPC) against Trellis on the harness's
// cluster: `make e2e SUITE=gateway-conformance` (test/k8se2e/README.md).
// It is its own module so that the suite's dependencies
// (controller-runtime, testify, ...) stay out of the product's go.mod.
package conformance

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/gateway-api/conformance"
	confv1 "sigs.k8s.io/gateway-api/conformance/apis/v1"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/features"
)

// claimedFeatures are the features Trellis claims beyond the profiles'
// core ones (Mesh, HTTPRoute, GRPCRoute): issue 13's route rules, the
// HTTPRoute features that mesh tests also need (response header
// modifiers, redirect codes, a parentRef's port), consumer routes and
// named rules: every mesh feature of the pinned suite.
var claimedFeatures = []features.FeatureName{
	features.SupportHTTPRouteResponseHeaderModification,
	features.SupportHTTPRoute303RedirectStatusCode,
	features.SupportHTTPRoute307RedirectStatusCode,
	features.SupportHTTPRoute308RedirectStatusCode,
	features.SupportHTTPRouteParentRefPort,
	features.SupportMeshClusterIPMatching,
	features.SupportMeshHTTPRouteRewritePath,
	features.SupportMeshHTTPRouteSchemeRedirect,
	features.SupportMeshHTTPRouteRedirectPort,
	features.SupportMeshHTTPRouteRedirectPath,
	features.SupportMeshHTTPRouteBackendRequestHeaderModification,
	features.SupportMeshHTTPRouteQueryParamMatching,
	features.SupportMeshHTTPRouteNamedRouteRule,
	features.SupportMeshConsumerRoute,
}

// meshNamespaces are the namespaces the suite's mesh manifests create.
var meshNamespaces = []string{suite.MeshNamespace, suite.MeshConsumerNamespace}

// TestGatewayConformanceMesh is the suite "gateway-conformance". The
// echo-advanced image the manifests name is built from Istio's echo
// sources and imported by `cluster conformance-images` (make e2e does it).
// TRELLIS_CONFORMANCE_TEST=<ShortName> runs one test only;
// TRELLIS_CONFORMANCE_SKIP=<ShortName>,... skips tests (a known failure,
// listed with its reason where it is set).
func TestGatewayConformanceMesh(t *testing.T) {
	if os.Getenv("TRELLIS_E2E_K8S") != "1" {
		t.Skip("needs the harness's cluster: make e2e SUITE=gateway-conformance")
	}
	start := time.Now()
	k := findKube(t)
	k.routeCRDs(t)
	k.sharedInstall(t)
	for _, ns := range meshNamespaces {
		if _, err := k.run(t.Context(), nil, "get", "namespace", ns); err == nil {
			t.Logf("namespace %s left by a previous run: deleting it", ns)
			k.mustRun(t, nil, "delete", "namespace", ns, "--wait=true", "--timeout=3m")
		}
	}
	report := envOr("TRELLIS_CONFORMANCE_REPORT", filepath.Join(repoRoot(), "bin", "conformance", "trellis-mesh-report.yaml"))
	if err := os.MkdirAll(filepath.Dir(report), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Remove(report)
	res := &results{}
	t.Cleanup(func() { res.summary(t, report, time.Since(start)) })
	conformance.RunConformanceWithOptions(t, options(t, k.tag, report, res))
}

// options are the suite's defaults (its flags: -gateway-class and the
// like still work) with Trellis's claims, the injection annotation on the
// suite's namespaces and the report's path.
func options(t *testing.T, tag, report string, res *results) suite.ConformanceOptions {
	opts := conformance.DefaultOptions(t)
	opts.ConformanceProfiles = []suite.ConformanceProfileName{
		suite.MeshHTTPConformanceProfileName, suite.MeshGRPCConformanceProfileName,
	}
	opts.SupportedFeatures = append([]features.FeatureName{features.SupportMesh}, claimedFeatures...)
	opts.NamespaceAnnotations = map[string]string{"trellis.io/inject": "enabled"}
	opts.CleanupBaseResources = true
	opts.ReportOutputPath = report
	opts.RunTest = os.Getenv("TRELLIS_CONFORMANCE_TEST")
	if skip := os.Getenv("TRELLIS_CONFORMANCE_SKIP"); skip != "" {
		opts.SkipTests = strings.Split(skip, ",")
	}
	opts.Implementation = confv1.Implementation{
		Organization: "trellis-mesh",
		Project:      "trellis",
		URL:          "https://github.com/trellis-mesh/trellis",
		Version:      tag,
		Contact:      []string{"https://github.com/trellis-mesh/trellis/issues"},
	}
	opts.Hook = res.record
	return opts
}

// results collects each test's outcome as the suite's Hook sees it (in
// the test's cleanup, once its pass or fail is known).
type results struct {
	mu                        sync.Mutex
	passed, failed, unclaimed []string
	other                     int // tests of the Gateway profiles, not run
}

func (r *results) record(t *testing.T, test suite.ConformanceTest, s *suite.ConformanceTestSuite) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case !slices.Contains(test.Features, features.SupportMesh):
		r.other++
	case t.Failed():
		r.failed = append(r.failed, test.ShortName)
	case t.Skipped() || !s.SupportedFeatures.HasAll(test.Features...):
		r.unclaimed = append(r.unclaimed, test.ShortName+" ("+missing(s, test)+")")
	default:
		r.passed = append(r.passed, test.ShortName)
	}
}

// missing names the features a skipped test needs that are not claimed.
func missing(s *suite.ConformanceTestSuite, test suite.ConformanceTest) string {
	var out []string
	for _, f := range test.Features {
		if !s.SupportedFeatures.Has(f) {
			out = append(out, string(f))
		}
	}
	if len(out) == 0 {
		return "skipped: TRELLIS_CONFORMANCE_SKIP or TRELLIS_CONFORMANCE_TEST"
	}
	return "not claimed: " + strings.Join(out, ", ")
}

// summary logs the counts and each test's outcome, and where the report is.
func (r *results) summary(t *testing.T, report string, took time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "gateway-conformance (mesh profiles): %d passed, %d failed, %d skipped of the mesh tests in %s (%d tests of the Gateway profiles not run)\n",
		len(r.passed), len(r.failed), len(r.unclaimed), took.Round(time.Second), r.other)
	for _, group := range []struct {
		name  string
		tests []string
	}{{"PASS", r.passed}, {"FAIL", r.failed}, {"SKIP", r.unclaimed}} {
		slices.Sort(group.tests)
		for _, n := range group.tests {
			fmt.Fprintf(&b, "  %s %s\n", group.name, n)
		}
	}
	if _, err := os.Stat(report); err == nil {
		fmt.Fprintf(&b, "conformance report: %s\n", report)
	} else {
		fmt.Fprintf(&b, "no conformance report written (%v)\n", err)
	}
	t.Log("\n" + b.String())
}
