package check

import (
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/internal/pki"
)

// proxyBody is a proxy's /metrics: a valid certificate, its bundle, its
// issuer and its control-plane services (service -> connected, watches,
// last update).
func proxyBody(bundleFP, issuerFP, anchorFP string, services map[string][3]float64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# TYPE %s gauge\n%s 1\n# TYPE %s gauge\n%s %d\n", CertValidMetric, CertValidMetric, CertExpiryMetric, CertExpiryMetric, t0.Add(20*time.Hour).Unix())
	fmt.Fprintf(&b, "# TYPE %s gauge\n%s{fingerprint=%q} 1\n", TrustBundleMetric, TrustBundleMetric, bundleFP)
	if issuerFP != "" {
		fmt.Fprintf(&b, "# TYPE %s gauge\n%s{fingerprint=%q,anchor_fingerprint=%q} 1\n", CertIssuerMetric, CertIssuerMetric, issuerFP, anchorFP)
	}
	for _, m := range []string{ConnectedMetric, WatchesMetric, LastUpdateMetric} {
		fmt.Fprintf(&b, "# TYPE %s gauge\n", m)
	}
	for svc, v := range services {
		fmt.Fprintf(&b, "%s{service=%q} %g\n%s{service=%q} %g\n%s{service=%q} %g\n",
			ConnectedMetric, svc, v[0], WatchesMetric, svc, v[1], LastUpdateMetric, svc, v[2])
	}
	return b.String()
}

// TestMeshHealthChecks breaks, one way per case, what the proxies say of
// their trust and their control-plane connections, and the workloads'
// annotations and images.
func TestMeshHealthChecks(t *testing.T) {
	type setup struct {
		p    pkiSet
		in   *installed
		c    *cluster
		t    *testing.T
		fps  [3]string // bundle, issuer, anchor of the healthy install
		svcs map[string][3]float64
		web2 string // web-2's body when set
	}
	connected := func() map[string][3]float64 {
		return map[string][3]float64{
			"identity":    {1, 0, 0},
			"destination": {1, 2, float64(t0.Add(-time.Minute).Unix())},
			"policy":      {1, 1, float64(t0.Add(-time.Minute).Unix())},
		}
	}
	tests := []struct {
		name   string
		check  Check
		break_ func(s *setup)
		want   Status
		substr string
	}{
		{name: "trust ok", check: ProxyTrustCheck, want: OK, substr: "2 proxies trust bundle"},
		{name: "trust: anchors replaced under running proxies", check: ProxyTrustCheck, break_: func(s *setup) {
			other := newPKI(s.t, year, year)
			s.in.anchorsCM.Data[AnchorsKey] = string(pemOf(other.anchor))
		}, want: Fail, substr: "2 of 2 proxies do not trust the bundle of trellis-trust-anchors"},
		{name: "trust: one proxy on an old bundle", check: ProxyTrustCheck, break_: func(s *setup) {
			s.web2 = proxyBody("00aa11bb22cc33dd", s.fps[1], s.fps[2], s.svcs)
		}, want: Fail, substr: "shop/web-2 (trusts bundle 00aa11bb22cc)"},
		{name: "trust: no bundle metric", check: ProxyTrustCheck, break_: func(s *setup) {
			s.web2 = fmt.Sprintf("%s 1\n", CertValidMetric)
		}, want: Fail, substr: "shop/web-2 (no trellis_identity_trust_bundle_info)"},

		{name: "issuer ok", check: ProxyIssuerCheck, want: OK, substr: "2 proxies hold certificates of issuer"},
		{name: "issuer: a previous issuer of the same anchor", check: ProxyIssuerCheck, break_: func(s *setup) {
			s.web2 = proxyBody(s.fps[0], "77ee77ee77ee77ee", s.fps[2], s.svcs)
		}, want: Warn, substr: "shop/web-2 (issuer 77ee77ee77ee)"},
		{name: "issuer: anchor and issuer replaced at once (the re-install outage)", check: ProxyIssuerCheck, break_: func(s *setup) {
			other := newPKI(s.t, year, year)
			s.in.issuerSec.Data[corev1.TLSCertKey] = pemOf(other.issuer)
			s.in.anchorsCM.Data[AnchorsKey] = string(pemOf(other.anchor))
		}, want: Fail, substr: "2 of 2 proxies hold a certificate not from the current issuer"},
		{name: "issuer: chains to no current anchor", check: ProxyIssuerCheck, break_: func(s *setup) {
			s.web2 = proxyBody(s.fps[0], "77ee77ee77ee77ee", "", s.svcs)
		}, want: Fail, substr: "shop/web-2 (issuer 77ee77ee77ee, chaining to no anchor"},

		{name: "control plane ok", check: ProxyControlPlaneCheck, want: OK, substr: "2 proxies connected"},
		{name: "control plane: idle proxy without streams is fine", check: ProxyControlPlaneCheck, break_: func(s *setup) {
			s.web2 = proxyBody(s.fps[0], s.fps[1], s.fps[2], map[string][3]float64{"identity": {1, 0, 0}, "destination": {0, 0, 0}})
		}, want: OK, substr: "2 proxies connected"},
		{name: "control plane: destination down since", check: ProxyControlPlaneCheck, break_: func(s *setup) {
			svcs := connected()
			svcs["destination"] = [3]float64{0, 3, float64(t0.Add(-250 * time.Second).Unix())}
			s.web2 = proxyBody(s.fps[0], s.fps[1], s.fps[2], svcs)
		}, want: Fail, substr: "shop/web-2 (destination disconnected, last message 4m10s ago, at 2026-03-01T11:55:50Z)"},
		{name: "control plane: identity and policy down", check: ProxyControlPlaneCheck, break_: func(s *setup) {
			svcs := connected()
			svcs["identity"] = [3]float64{0, 0, 0}
			svcs["policy"] = [3]float64{0, 1, 0}
			s.web2 = proxyBody(s.fps[0], s.fps[1], s.fps[2], svcs)
		}, want: Fail, substr: "identity disconnected, Certify failing; policy disconnected, no message ever"},

		{name: "ejections none", check: ProxyEjectionsCheck, want: OK, substr: "2 proxies eject no endpoint"},
		{name: "ejections listed", check: ProxyEjectionsCheck, break_: func(s *setup) {
			s.web2 = proxyBody(s.fps[0], s.fps[1], s.fps[2], s.svcs) + "# TYPE " + EjectedMetric + " gauge\n" +
				EjectedMetric + `{dst_service="books.shop:80",endpoint="10.0.0.9:8080"} 1` + "\n" +
				EjectedMetric + `{dst_service="authors.shop:80",endpoint="10.0.0.7:8080"} 1` + "\n"
		}, want: Warn, substr: "2 endpoints held out by circuit breakers (proxy: service endpoint): shop/web-2: authors.shop:80 10.0.0.7:8080, shop/web-2: books.shop:80 10.0.0.9:8080"},

		{name: "namespace inject ok", check: NamespaceInjectCheck, break_: func(s *setup) {
			s.in.extra = append(s.in.extra, injectNS(appNS, "enabled"), injectNS("legacy", "disabled"))
		}, want: OK, substr: "2 namespaces annotated, all valid"},
		{name: "namespace inject yes", check: NamespaceInjectCheck, break_: func(s *setup) {
			s.in.extra = append(s.in.extra, injectNS(appNS, "yes"), injectNS("legacy", "disabled"), injectNS("other", "true"))
		}, want: Fail, substr: `2 namespaces have an invalid value, and every pod created there is refused: other (trellis.io/inject="true"), shop (trellis.io/inject="yes")`},

		{name: "annotations ok", check: PodAnnotationsCheck, break_: func(s *setup) {
			s.in.meshed[0].Annotations["config.trellis.io/redirect"] = "cni"
		}, want: OK, substr: "1 objects with Trellis annotations"},
		{name: "annotations: every bad one in one message", check: PodAnnotationsCheck, break_: func(s *setup) {
			s.in.meshed[0].Annotations["config.trellis.io/redirect"] = "iptables"
			s.in.meshed[0].Annotations["config.trellis.io/proxy-cpu-limit"] = "lots"
			s.in.meshed[0].Annotations["trellis.io/inject"] = "yes"
			s.in.extra = append(s.in.extra, &appsv1.Deployment{
				ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "api"},
				Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{
					Annotations: map[string]string{"config.trellis.io/sidecar-mode": "sidecar", "config.trellis.io/opaque-ports": "99999"}}}},
			})
		}, want: Fail, substr: `2 objects have invalid Trellis annotations: deployment shop/api: annotation config.trellis.io/sidecar-mode="sidecar": must be "native" or "classic", annotation config.trellis.io/opaque-ports="99999"`},

		{name: "images ok", check: MeshedImagesCheck, want: OK, substr: "no meshed pod waits on an image"},
		{name: "images: proxy image cannot be pulled", check: MeshedImagesCheck, break_: func(s *setup) {
			p := s.in.meshed[1]
			p.Status.Phase = corev1.PodPending
			p.Spec.InitContainers = []corev1.Container{{Name: "trellis-proxy", Image: "trellis/proxy:dev"}}
			p.Status.InitContainerStatuses[0].Ready = false
			p.Status.InitContainerStatuses[0].State.Waiting = &corev1.ContainerStateWaiting{Reason: "ErrImagePull",
				Message: "failed to pull and unpack image \"docker.io/trellis/proxy:dev\": not found\nmore"}
		}, want: Fail, substr: `shop/web-2: container trellis-proxy: image trellis/proxy:dev: ErrImagePull (failed to pull and unpack image "docker.io/trellis/proxy:dev": not found)`},
		{name: "controller pod: the image and the reason, not just phase Pending", check: PodsCheck, break_: func(s *setup) {
			p := s.in.ctrlPod
			p.Status.Phase = corev1.PodPending
			p.Spec.Containers = []corev1.Container{{Name: ControllerName, Image: "trellis/controller:dev"}}
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: ControllerName, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "Back-off pulling image"}}}}
		}, want: Fail, substr: "container trellis-controller: image trellis/controller:dev: ImagePullBackOff (Back-off pulling image)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPKI(t, 10*year, year)
			s := &setup{p: p, in: newInstalled(p), c: healthyCluster(), t: t, svcs: connected()}
			s.fps = [3]string{pki.Fingerprint(mustCerts(t, pemOf(p.anchor))), pki.CertFingerprint(p.issuer), pki.CertFingerprint(p.anchor)}
			healthy := proxyBody(s.fps[0], s.fps[1], s.fps[2], s.svcs)
			s.c.metrics = map[string]string{appNS + "/web-1": healthy, appNS + "/web-2": healthy}
			if tt.break_ != nil {
				tt.break_(s)
			}
			if s.web2 != "" {
				s.c.metrics[appNS+"/web-2"] = s.web2
			}
			r := runOneCheck(t, s.c.env(t, s.in.objects()...), tt.check)
			assertResult(t, r, tt.want, tt.substr)
			if r.ID != tt.check.Anchor || r.Category != tt.check.Group {
				t.Errorf("id %q category %q, want %q %q", r.ID, r.Category, tt.check.Anchor, tt.check.Group)
			}
		})
	}
}

func mustCerts(t *testing.T, data []byte) []*x509.Certificate {
	t.Helper()
	cs, err := pki.ParseCertsPEM(data)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// TestCheckIDsUnique: the id of -o json names one check.
func TestCheckIDsUnique(t *testing.T) {
	seen := map[string]string{}
	for _, c := range slices.Concat(PreChecks(), PostChecks()) {
		if prev, dup := seen[c.Anchor]; dup && prev != c.Name {
			t.Errorf("id %q names %q and %q", c.Anchor, prev, c.Name)
		}
		seen[c.Anchor] = c.Name
	}
}

// FuzzParseProxyState: a proxy's metrics are hostile input.
func FuzzParseProxyState(f *testing.F) {
	f.Add([]byte(proxyBody("aa", "bb", "cc", map[string][3]float64{"identity": {1, 0, 0}, "destination": {0, 2, 5}})))
	f.Add([]byte("trellis_control_plane_watches{service=\"x\"} NaN\n"))
	f.Add([]byte("# TYPE trellis_identity_cert_issuer_info counter\ntrellis_identity_cert_issuer_info 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ps, err := ParseProxyState(data)
		if err == nil && ps.ControlServices == nil {
			t.Fatal("nil services map without an error")
		}
		_ = disconnected(ps, t0)
	})
}
