package check

import (
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

const (
	day  = 24 * time.Hour
	year = 365 * day
)

// TestPreChecks makes every pre-installation check pass on a fresh cluster
// and then fail (or warn) for its own reason.
func TestPreChecks(t *testing.T) {
	tests := []struct {
		name   string
		check  Check
		setup  func(c *cluster) []runtime.Object
		want   Status
		substr string
	}{
		{"api ok", APICheck, nil, OK, "v1.36.3"},
		{"version ok", VersionCheck, nil, OK, "v1.36.3"},
		{"version too old", VersionCheck, func(c *cluster) []runtime.Object { c.gitVersion = "v1.24.9"; return nil }, Fail, "older than 1.26"},
		{"version without native sidecars", VersionCheck, func(c *cluster) []runtime.Object { c.gitVersion = "v1.28.2"; return nil }, Warn, "native sidecars need 1.29"},
		{"version vendor suffix", VersionCheck, func(c *cluster) []runtime.Object { c.gitVersion = "v1.30.1-gke.1"; return nil }, OK, "v1.30.1-gke.1"},
		{"native sidecars ok", NativeSidecarCheck, nil, OK, "keeps restartPolicy"},
		{"native sidecars old", NativeSidecarCheck, func(c *cluster) []runtime.Object { c.gitVersion = "v1.27.0"; return nil }, Warn, "no native sidecars"},
		{"native sidecars feature off", NativeSidecarCheck, func(c *cluster) []runtime.Object { c.gitVersion = "v1.30.0"; c.dropSidecar = true; return nil }, Warn, "SidecarContainers feature is off"},
		{"permissions ok", PermissionsCheck, nil, OK, "all 13 kinds"},
		{"permission missing", PermissionsCheck, func(c *cluster) []runtime.Object {
			c.deny = map[string]bool{"mutatingwebhookconfigurations": true, "secrets": true}
			return nil
		}, Fail, "create mutatingwebhookconfigurations.admissionregistration.k8s.io, create secrets in trellis-system"},
		{"clock ok", ClockSkewCheck, func(c *cluster) []runtime.Object { c.date = t0.Add(-400 * time.Millisecond); return nil }, OK, "skew 0s"},
		{"clock ahead warns", ClockSkewCheck, func(c *cluster) []runtime.Object { c.date = t0.Add(10 * time.Second); return nil }, Warn, "by 10s"},
		{"clock behind fails", ClockSkewCheck, func(c *cluster) []runtime.Object { c.date = t0.Add(-3 * time.Minute); return nil }, Fail, "by -2m59s"},
		{"crds none", CRDCheck, nil, OK, "no Trellis CRDs"},
		{"crds ours", CRDCheck, func(c *cluster) []runtime.Object {
			c.crds = append(c.crds, crd("servers.policy.trellis.io", managed()))
			return nil
		}, OK, "1 Trellis CRDs"},
		{"crds conflict", CRDCheck, func(c *cluster) []runtime.Object {
			c.crds = append(c.crds, crd("servers.policy.trellis.io", map[string]string{ManagedByLabel: "Helm"}),
				crd("widgets.example.com", nil))
			return nil
		}, Fail, "servers.policy.trellis.io (Helm)"},
		{"no existing install", ExistingInstallCheck, nil, OK, "does not exist"},
		{"existing install", ExistingInstallCheck, func(c *cluster) []runtime.Object {
			return []runtime.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: k8slabels.ControlPlaneNamespace, Labels: managed()}}}
		}, Warn, "managed by Trellis"},
		{"foreign namespace", ExistingInstallCheck, func(c *cluster) []runtime.Object {
			return []runtime.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: k8slabels.ControlPlaneNamespace}}}
		}, Fail, "without label"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := healthyCluster()
			var objs []runtime.Object
			if tt.setup != nil {
				objs = tt.setup(c)
			}
			r := runOneCheck(t, c.env(t, objs...), tt.check)
			assertResult(t, r, tt.want, tt.substr)
		})
	}
}

func assertResult(t *testing.T, r Result, want Status, substr string) {
	t.Helper()
	if r.Status != want || !strings.Contains(r.Message, substr) {
		t.Fatalf("%s: got %s %q, want %s containing %q", r.Name, r.Status, r.Message, want, substr)
	}
	if want == Warn || want == Fail {
		if r.Hint == "" || strings.Contains(r.Hint, "\n") {
			t.Errorf("%s: hint %q, want one non-empty line", r.Name, r.Hint)
		}
		if !strings.HasPrefix(r.Doc, DocBase+"#") || strings.HasSuffix(r.Doc, "#") {
			t.Errorf("%s: doc %q, want a link into check.md", r.Name, r.Doc)
		}
	}
}

// TestPostChecks breaks a healthy installation one way per case.
func TestPostChecks(t *testing.T) {
	type setup struct {
		pki  pkiSet
		in   *installed
		c    *cluster
		test *testing.T
		// settle is Env.WebhookSettle (default zero: one attempt).
		settle time.Duration
		// proxyNS is Env.ProxyNamespace (-n).
		proxyNS string
	}
	tests := []struct {
		name   string
		check  Check
		anchor time.Duration // anchor lifetime from t0 (default 10 years)
		issuer time.Duration // issuer lifetime from t0 (default 1 year)
		break_ func(s *setup)
		want   Status
		substr string
	}{
		{name: "namespace ok", check: NamespaceCheck, want: OK, substr: k8slabels.ControlPlaneNamespace},
		{name: "namespace missing", check: NamespaceCheck, break_: func(s *setup) { s.in.ns = nil }, want: Fail, substr: "does not exist"},

		{name: "deployment ok", check: DeploymentCheck, want: OK, substr: "1/1 replicas ready"},
		{name: "deployment unavailable", check: DeploymentCheck, break_: func(s *setup) {
			s.in.deploy.Status.ReadyReplicas = 0
			s.in.deploy.Status.Conditions = []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionFalse, Message: "Deployment does not have minimum availability."}}
		}, want: Fail, substr: "minimum availability"},
		{name: "deployment partly ready", check: DeploymentCheck, break_: func(s *setup) {
			three := int32(3)
			s.in.deploy.Spec.Replicas = &three
		}, want: Fail, substr: "1/3 replicas ready"},
		{name: "deployment missing", check: DeploymentCheck, break_: func(s *setup) { s.in.deploy = nil }, want: Fail, substr: "not found"},

		{name: "pods ok", check: PodsCheck, want: OK, substr: "1 pods ready"},
		{name: "pod crashlooping", check: PodsCheck, break_: func(s *setup) {
			s.in.ctrlPod.Status.Conditions[0] = corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "ContainersNotReady"}
		}, want: Fail, substr: "ContainersNotReady"},
		{name: "cni not installed", check: CNICheck, want: OK, substr: "not installed"},
		{name: "cni ready", check: CNICheck, break_: func(s *setup) { s.in.withCNI(3, 3) }, want: OK, substr: "ready on 3/3 nodes"},
		{name: "cni not ready everywhere", check: CNICheck, break_: func(s *setup) { s.in.withCNI(2, 3) }, want: Fail, substr: "2/3 nodes ready"},
		{name: "cni on no node", check: CNICheck, break_: func(s *setup) { s.in.withCNI(0, 0) }, want: Fail, substr: "runs on no node"},
		{name: "cni daemonset missing", check: CNICheck, break_: func(s *setup) { s.in.withCNI(1, 1); s.in.cni = nil }, want: Fail, substr: "does not exist"},
		{name: "cni installed but unused", check: CNICheck, break_: func(s *setup) {
			s.in.withCNI(1, 1)
			s.in.deploy.Spec.Template.Spec.Containers[0].Env = nil
		}, want: Warn, substr: "does not use CNI redirection"},
		{name: "no pods", check: PodsCheck, break_: func(s *setup) { s.in.ctrlPod = nil }, want: Fail, substr: "no pods match"},

		{name: "webhook config ok", check: WebhookConfigCheck, want: OK, substr: "1 CA certificates"},
		{name: "webhook config missing", check: WebhookConfigCheck, break_: func(s *setup) { s.in.mwc = nil }, want: Fail, substr: "not found"},
		{name: "webhook empty caBundle", check: WebhookConfigCheck, break_: func(s *setup) { s.in.mwc.Webhooks[0].ClientConfig.CABundle = nil }, want: Fail, substr: "empty caBundle"},
		{name: "webhook wrong service", check: WebhookConfigCheck, break_: func(s *setup) { s.in.mwc.Webhooks[0].ClientConfig.Service.Name = "other" }, want: Fail, substr: "does not call service"},

		{name: "endpoints ok", check: WebhookEndpointsCheck, want: OK, substr: "1 ready endpoints"},
		{name: "endpoints none ready", check: WebhookEndpointsCheck, break_: func(s *setup) {
			no := false
			s.in.eps.Endpoints[0].Conditions.Ready = &no
		}, want: Fail, substr: "no ready endpoints (1 not ready)"},
		{name: "endpoints missing", check: WebhookEndpointsCheck, break_: func(s *setup) { s.in.eps = nil }, want: Fail, substr: "no ready endpoints (0 not ready)"},

		{name: "webhook cert ok", check: WebhookCertCheck, want: OK, substr: "valid for trellis-controller.trellis-system.svc"},
		{name: "webhook cert other CA", check: WebhookCertCheck, break_: func(s *setup) {
			other := newPKI(s.test, year, year)
			s.in.mwc.Webhooks[0].ClientConfig.CABundle = pemOf(other.webhookCA)
		}, want: Fail, substr: "does not verify"},
		{name: "webhook cert wrong name", check: WebhookCertCheck, break_: func(s *setup) {
			ca, key, err := newRootForTest()
			if err != nil {
				s.test.Fatal(err)
			}
			s.in.mwc.Webhooks[0].ClientConfig.CABundle = pemOf(ca)
			s.in.webhookSec.Data[corev1.TLSCertKey] = pemOf(servingCert(s.test, ca, key, "trellis-controller.default.svc"))
		}, want: Fail, substr: "does not verify for trellis-controller.trellis-system.svc"},
		{name: "webhook cert secret not mounted", check: WebhookCertCheck, break_: func(s *setup) {
			s.in.deploy.Spec.Template.Spec.Volumes = s.in.deploy.Spec.Template.Spec.Volumes[:1]
		}, want: Warn, substr: "cannot read the serving certificate"},

		{name: "webhook call ok", check: WebhookCallCheck, want: OK, substr: "was injected"},
		{name: "webhook call settles", check: WebhookCallCheck, break_: func(s *setup) { s.c.ignoredFirst = 2; s.settle = 5 * time.Second }, want: OK, substr: "attempt 3"},
		{name: "webhook call ignored with settle", check: WebhookCallCheck, break_: func(s *setup) { s.c.injector = "ignore"; s.settle = 600 * time.Millisecond }, want: Fail, substr: "attempts)"},
		{name: "webhook call ignored", check: WebhookCallCheck, break_: func(s *setup) { s.c.injector = "ignore" }, want: Fail, substr: "came back without the proxy"},
		{name: "webhook call error", check: WebhookCallCheck, break_: func(s *setup) {
			s.c.injector = `Internal error occurred: failed calling webhook "inject.trellis.io": tls: failed to verify certificate: x509: certificate signed by unknown authority`
		}, want: Fail, substr: "unknown authority"},

		{name: "anchors ok", check: AnchorsCheck, want: OK, substr: "1 anchors"},
		{name: "anchor expiring in 10 days", check: AnchorsCheck, anchor: 10 * day, issuer: 5 * day, want: Warn, substr: `"trellis-anchor" expires in 10.0 days`},
		{name: "anchor expired", check: AnchorsCheck, break_: func(s *setup) {
			old, _, err := newRootAt(t0.Add(-2*year), year)
			if err != nil {
				s.test.Fatal(err)
			}
			s.in.anchorsCM.Data[AnchorsKey] = string(pemOf(old))
		}, want: Fail, substr: "no valid anchor"},
		{name: "anchors garbage", check: AnchorsCheck, break_: func(s *setup) { s.in.anchorsCM.Data[AnchorsKey] = "hello" }, want: Fail, substr: "no PEM certificates"},
		{name: "anchors configmap missing", check: AnchorsCheck, break_: func(s *setup) { s.in.anchorsCM = nil }, want: Fail, substr: "not found"},

		{name: "issuer ok", check: IssuerCheck, want: OK, substr: `"trellis-issuer" expires in 365.0 days`},
		{name: "issuer expiring in 3 days", check: IssuerCheck, issuer: 3 * day, want: Warn, substr: `"trellis-issuer" expires in 3.0 days`},
		{name: "issuer expired", check: IssuerCheck, break_: func(s *setup) {
			anchor, key, err := newRootAt(t0.Add(-2*year), 10*year)
			if err != nil {
				s.test.Fatal(err)
			}
			s.in.anchorsCM.Data[AnchorsKey] = string(pemOf(anchor))
			s.in.issuerSec.Data["ca.crt"] = pemOf(anchor)
			s.in.issuerSec.Data[corev1.TLSCertKey] = pemOf(issuerAt(s.test, anchor, key, t0.Add(-2*year), year))
		}, want: Fail, substr: "EXPIRED"},
		{name: "issuer not chaining to the configmap", check: IssuerCheck, break_: func(s *setup) {
			other := newPKI(s.test, year, year)
			s.in.anchorsCM.Data[AnchorsKey] = string(pemOf(other.anchor))
		}, want: Fail, substr: "does not chain to trellis-trust-anchors"},
		{name: "issuer not chaining to its ca.crt", check: IssuerCheck, break_: func(s *setup) {
			other := newPKI(s.test, year, year)
			s.in.issuerSec.Data["ca.crt"] = pemOf(other.anchor)
		}, want: Fail, substr: "does not chain to the Secret's ca.crt"},
		{name: "issuer is a leaf", check: IssuerCheck, break_: func(s *setup) {
			s.in.issuerSec.Data[corev1.TLSCertKey] = pemOf(s.pki.serving)
		}, want: Fail, substr: "not a CA"},

		{name: "meshed pods ok", check: MeshedPodsCheck, want: OK, substr: "2 meshed pods"},
		{name: "no meshed pods", check: MeshedPodsCheck, break_: func(s *setup) { s.in.meshed = nil }, want: Warn, substr: "no running pod"},

		{name: "unmeshed: none", check: UnmeshedPodsCheck, break_: func(s *setup) {
			s.in.extra = append(s.in.extra, injectNS(appNS, "enabled"), readyPod("default", "plain", nil))
		}, want: OK, substr: "2 unmeshed pods in any namespace, none asking"},
		{name: "unmeshed pod in an injected namespace", check: UnmeshedPodsCheck, break_: func(s *setup) {
			s.in.extra = append(s.in.extra, injectNS(appNS, "enabled"), readyPod(appNS, "legacy-1", nil))
		}, want: Fail, substr: "1 pods where trellis.io/inject is enabled run without a proxy: shop/legacy-1"},
		{name: "unmeshed pod asking for itself", check: UnmeshedPodsCheck, break_: func(s *setup) {
			p := readyPod("default", "asks", nil)
			p.Annotations = map[string]string{"trellis.io/inject": "enabled"}
			s.in.extra = append(s.in.extra, p)
		}, want: Fail, substr: "default/asks"},
		{name: "unmeshed pod with a malformed annotation", check: UnmeshedPodsCheck, break_: func(s *setup) {
			p := readyPod(appNS, "typo", nil)
			p.Annotations = map[string]string{"trellis.io/inject": "yes"}
			s.in.extra = append(s.in.extra, p)
		}, want: Fail, substr: `shop/typo (annotation trellis.io/inject="yes"`},
		{name: "unmeshed: opted out, host network, finished, mirror, control plane", check: UnmeshedPodsCheck, break_: func(s *setup) {
			out := readyPod(appNS, "opted-out", nil)
			out.Annotations = map[string]string{"trellis.io/inject": "disabled"}
			host := readyPod(appNS, "node-agent", nil)
			host.Spec.HostNetwork = true
			done := readyPod(appNS, "job-x", nil)
			done.Status.Phase = corev1.PodSucceeded
			mirror := readyPod(appNS, "static-x", nil)
			mirror.Annotations = map[string]string{mirrorPodAnnotation: "abc"}
			s.in.extra = append(s.in.extra, injectNS(appNS, "enabled"), injectNS(k8slabels.ControlPlaneNamespace+"-x", "disabled"), out, host, done, mirror)
		}, want: OK, substr: "3 unmeshed pods"},
		{name: "unmeshed: -n limits the namespace", check: UnmeshedPodsCheck, break_: func(s *setup) {
			s.in.extra = append(s.in.extra, injectNS(appNS, "enabled"), injectNS("other", "enabled"), readyPod("other", "legacy-2", nil))
			s.proxyNS = appNS
		}, want: OK, substr: "namespace shop"},

		{name: "proxies ready", check: ProxyReadyCheck, want: OK, substr: "2 proxies ready"},
		{name: "proxy not ready", check: ProxyReadyCheck, break_: func(s *setup) {
			st := &s.in.meshed[1].Status.InitContainerStatuses[0]
			st.Ready, st.RestartCount = false, 4
			st.State.Waiting = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}
		}, want: Fail, substr: "shop/web-2 (CrashLoopBackOff, 4 restarts)"},
		{name: "classic sidecar ready", check: ProxyReadyCheck, break_: func(s *setup) {
			p := s.in.meshed[0]
			p.Status.ContainerStatuses, p.Status.InitContainerStatuses = p.Status.InitContainerStatuses, nil
		}, want: OK, substr: "2 proxies ready"},
		{name: "finished job ignored", check: ProxyReadyCheck, break_: func(s *setup) {
			p := meshedPod("job-1")
			p.Status.Phase = corev1.PodSucceeded
			p.Status.InitContainerStatuses[0].Ready = false
			s.in.meshed = append(s.in.meshed, p)
		}, want: OK, substr: "2 proxies ready"},

		{name: "proxy version ok", check: ProxyVersionCheck, want: OK, substr: "2 pods on " + ctrlVersion},
		{name: "proxy one minor behind: supported skew", check: ProxyVersionCheck, break_: func(s *setup) {
			s.in.meshed[0].Annotations[k8slabels.AnnotationProxyVersion] = "v1.1.0"
		}, want: Warn, substr: "1 of 2 pods not yet on v1.2.3 (version of the control plane): shop/web-1 (v1.1.0)"},
		{name: "proxy older patch: supported skew", check: ProxyVersionCheck, break_: func(s *setup) {
			s.in.meshed[1].Annotations[k8slabels.AnnotationProxyVersion] = "v1.2.0"
		}, want: Warn, substr: "shop/web-2 (v1.2.0)"},
		{name: "proxy from a commit build: skew", check: ProxyVersionCheck, break_: func(s *setup) {
			s.in.meshed[0].Annotations[k8slabels.AnnotationProxyVersion] = "ff589f7"
		}, want: Warn, substr: "shop/web-1 (ff589f7)"},
		{name: "proxy two minors behind", check: ProxyVersionCheck, break_: func(s *setup) {
			s.in.meshed[0].Annotations[k8slabels.AnnotationProxyVersion] = "v1.0.4"
		}, want: Fail, substr: "shop/web-1 (v1.0.4: more than one minor version behind)"},
		{name: "proxy newer than the control plane", check: ProxyVersionCheck, break_: func(s *setup) {
			s.in.meshed[0].Annotations[k8slabels.AnnotationProxyVersion] = "v1.3.0"
		}, want: Fail, substr: "upgrade the control plane first"},
		{name: "proxy of another major", check: ProxyVersionCheck, break_: func(s *setup) {
			s.in.meshed[0].Annotations[k8slabels.AnnotationProxyVersion] = "v0.9.0"
		}, want: Fail, substr: "another major version"},
		{name: "proxy without a version annotation", check: ProxyVersionCheck, break_: func(s *setup) {
			delete(s.in.meshed[0].Annotations, k8slabels.AnnotationProxyVersion)
		}, want: Fail, substr: "not injected by Trellis"},
		{name: "proxy version without controller uses the CLI's", check: ProxyVersionCheck, break_: func(s *setup) { s.in.deploy = nil },
			want: Warn, substr: "version of this trellis binary"},

		{name: "proxy certs ok", check: ProxyCertCheck, want: OK, substr: "2 proxies hold a valid certificate"},
		{name: "proxy without certificate", check: ProxyCertCheck, break_: func(s *setup) {
			s.c.metrics[appNS+"/web-2"] = fmt.Sprintf("# TYPE %s gauge\n%s 0\n", CertValidMetric, CertValidMetric)
		}, want: Fail, substr: "shop/web-2 (trellis_identity_cert_valid is 0"},
		{name: "proxy cert expired", check: ProxyCertCheck, break_: func(s *setup) {
			s.c.metrics[appNS+"/web-1"] = fmt.Sprintf("%s 1\n%s %d\n", CertValidMetric, CertExpiryMetric, t0.Add(-time.Minute).Unix())
		}, want: Fail, substr: "shop/web-1 (certificate expired"},
		{name: "proxy metrics unreachable", check: ProxyCertCheck, break_: func(s *setup) { delete(s.c.metrics, appNS+"/web-1") }, want: Fail, substr: "shop/web-1 (scrape:"},
		{name: "proxy metrics garbage", check: ProxyCertCheck, break_: func(s *setup) { s.c.metrics[appNS+"/web-1"] = "{not prometheus" }, want: Fail, substr: "parse metrics"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			anchor, issuer := tt.anchor, tt.issuer
			if anchor == 0 {
				anchor = 10 * year
			}
			if issuer == 0 {
				issuer = year
			}
			p := newPKI(t, anchor, issuer)
			s := &setup{pki: p, in: newInstalled(p), c: healthyCluster(), test: t}
			if tt.break_ != nil {
				tt.break_(s)
			}
			e := s.c.env(t, s.in.objects()...)
			e.WebhookSettle, e.ProxyNamespace = s.settle, s.proxyNS
			r := runOneCheck(t, e, tt.check)
			assertResult(t, r, tt.want, tt.substr)
		})
	}
}

// injectNS is a namespace annotated trellis.io/inject=value.
func injectNS(name, value string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{"trellis.io/inject": value}}}
}
