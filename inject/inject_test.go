package inject

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

func testPod(ann map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop", Annotations: ann},
		Spec: corev1.PodSpec{
			ServiceAccountName: "web",
			InitContainers:     []corev1.Container{{Name: "migrate", Image: "migrate:1"}},
			Containers:         []corev1.Container{{Name: "app", Image: "web:1"}},
			Volumes:            []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}
}

func names(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func envOf(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			v = "field:" + e.ValueFrom.FieldRef.FieldPath
		}
		m[e.Name] = v
	}
	return m
}

func findContainer(pod *corev1.Pod, name string) (corev1.Container, bool) {
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			if c.Name == name {
				return c, true
			}
		}
	}
	return corev1.Container{}, false
}

func TestMutateDecision(t *testing.T) {
	en := map[string]string{k8slabels.AnnotationInject: k8slabels.InjectEnabled}
	dis := map[string]string{k8slabels.AnnotationInject: k8slabels.InjectDisabled}
	tests := []struct {
		name     string
		ns       string
		podAnn   map[string]string
		nsAnn    map[string]string
		host     bool
		want     bool
		reason   string // substring
		wantWarn bool
	}{
		{name: "no annotation", ns: "shop", reason: "no trellis.io/inject"},
		{name: "namespace enabled", ns: "shop", nsAnn: en, want: true},
		{name: "pod enabled", ns: "shop", podAnn: en, want: true},
		{name: "pod disabled wins over namespace", ns: "shop", podAnn: dis, nsAnn: en, reason: "disabled on the pod"},
		{name: "pod enabled wins over namespace", ns: "shop", podAnn: en, nsAnn: dis, want: true},
		{name: "namespace disabled", ns: "shop", nsAnn: dis, reason: "disabled on the namespace"},
		{name: "kube-system skipped", ns: "kube-system", podAnn: en, nsAnn: en, reason: "never injected"},
		{name: "trellis-system skipped", ns: "trellis-system", podAnn: en, reason: "never injected"},
		{name: "host network skipped with warning", ns: "shop", podAnn: en, host: true, reason: "host-network", wantWarn: true},
		{name: "host network not asking: no warning", ns: "shop", host: true, reason: "no trellis.io/inject"},
	}
	inj := New(Config{Version: "v9"})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := testPod(tt.podAnn)
			pod.Spec.HostNetwork = tt.host
			before := pod.DeepCopy()
			res, err := inj.Mutate(pod, tt.ns, tt.nsAnn)
			if err != nil {
				t.Fatalf("Mutate: %v", err)
			}
			if !reflect.DeepEqual(pod, before) {
				t.Error("Mutate modified its input")
			}
			if res.Injected != tt.want {
				t.Fatalf("Injected = %v (%s), want %v", res.Injected, res.Reason, tt.want)
			}
			if !strings.Contains(res.Reason, tt.reason) {
				t.Errorf("Reason = %q, want it to contain %q", res.Reason, tt.reason)
			}
			if (len(res.Warnings) > 0) != tt.wantWarn {
				t.Errorf("Warnings = %q", res.Warnings)
			}
			_, has := findContainer(res.Pod, k8slabels.ProxyContainerName)
			if has != tt.want {
				t.Errorf("proxy container present = %v, want %v", has, tt.want)
			}
			if !tt.want && !reflect.DeepEqual(res.Pod, before) {
				t.Error("pod changed although not injected")
			}
			// Wants, used by trellis check, decides the same way.
			if want, _, err := Wants(pod, tt.ns, tt.nsAnn); err != nil || want != tt.want {
				t.Errorf("Wants = %v, %v; Mutate injected %v", want, err, tt.want)
			}
		})
	}
}

func TestMutateIdempotent(t *testing.T) {
	inj := New(Config{})
	for _, mode := range []string{k8slabels.SidecarNative, k8slabels.SidecarClassic} {
		for _, redirect := range []string{k8slabels.RedirectInit, k8slabels.RedirectCNI} {
			pod := testPod(map[string]string{k8slabels.AnnotationInject: k8slabels.InjectEnabled, k8slabels.AnnotationSidecarMode: mode, k8slabels.AnnotationRedirect: redirect})
			first, err := inj.Mutate(pod, "shop", nil)
			if err != nil || !first.Injected {
				t.Fatalf("%s/%s first: %v %v", mode, redirect, first.Injected, err)
			}
			second, err := inj.Mutate(first.Pod, "shop", nil)
			if err != nil {
				t.Fatal(err)
			}
			if second.Injected || second.Reason != "already injected" {
				t.Errorf("%s/%s second: injected=%v reason=%q", mode, redirect, second.Injected, second.Reason)
			}
			if !reflect.DeepEqual(second.Pod, first.Pod) {
				t.Errorf("%s/%s: second injection changed the pod", mode, redirect)
			}
		}
	}
}

func TestMutateNative(t *testing.T) {
	inj := New(Config{Version: "v1.2.3"})
	res, err := inj.Mutate(testPod(map[string]string{k8slabels.AnnotationInject: k8slabels.InjectEnabled}), "shop", nil)
	if err != nil || !res.Injected {
		t.Fatalf("Mutate: %v %v", res.Injected, err)
	}
	pod := res.Pod
	if got, want := names(pod.Spec.InitContainers), []string{"trellis-init", "trellis-proxy", "migrate"}; !reflect.DeepEqual(got, want) {
		t.Errorf("init containers %v, want %v", got, want)
	}
	if got, want := names(pod.Spec.Containers), []string{"app"}; !reflect.DeepEqual(got, want) {
		t.Errorf("containers %v, want %v", got, want)
	}
	proxy := pod.Spec.InitContainers[1]
	if proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Error("native proxy lacks restartPolicy Always")
	}
	if proxy.StartupProbe == nil || proxy.StartupProbe.HTTPGet == nil || proxy.StartupProbe.HTTPGet.Path != "/ready" || proxy.StartupProbe.HTTPGet.Port.IntValue() != 4191 {
		t.Errorf("startup probe %+v", proxy.StartupProbe)
	}
	if proxy.ReadinessProbe == nil || proxy.ReadinessProbe.HTTPGet.Path != "/ready" || proxy.LivenessProbe == nil || proxy.LivenessProbe.HTTPGet.Path != "/live" {
		t.Error("readiness or liveness probe wrong")
	}
	if proxy.Image != "trellis/proxy:v1.2.3" || pod.Spec.InitContainers[0].Image != "trellis/init:v1.2.3" {
		t.Errorf("images %q %q", proxy.Image, pod.Spec.InitContainers[0].Image)
	}
	sc := proxy.SecurityContext
	if *sc.RunAsUser != 2102 || !*sc.RunAsNonRoot || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation || len(sc.Capabilities.Add) != 0 {
		t.Errorf("proxy security context %+v", sc)
	}
	env := envOf(proxy)
	wantEnv := map[string]string{
		"TRELLIS_POD_NAMESPACE":             "field:metadata.namespace",
		"TRELLIS_POD_SA":                    "field:spec.serviceAccountName",
		"TRELLIS_POD_NAME":                  "field:metadata.name",
		"TRELLIS_PROXY_MODE":                "transparent",
		"TRELLIS_PROXY_OUTBOUND_ADDR":       "127.0.0.1:4140",
		"TRELLIS_PROXY_INBOUND_ADDR":        "0.0.0.0:4143",
		"TRELLIS_PROXY_ADMIN_ADDR":          "0.0.0.0:4191",
		"TRELLIS_PROXY_TAP_ADDR":            "0.0.0.0:4190",
		"TRELLIS_PROXY_CONTROLLER_ADDR":     "trellis-controller.trellis-system.svc.cluster.local:8086",
		"TRELLIS_PROXY_CONTROLLER_IDENTITY": "spiffe://cluster.local/ns/trellis-system/sa/trellis-controller",
		"TRELLIS_PROXY_IDENTITY":            "spiffe://cluster.local/ns/$(TRELLIS_POD_NAMESPACE)/sa/$(TRELLIS_POD_SA)",
		"TRELLIS_PROXY_TOKEN_FILE":          "/var/run/secrets/trellis.io/token/token",
		"TRELLIS_PROXY_TRUST_ANCHORS":       "/var/run/trellis/anchors/ca-bundle.crt",
		"TRELLIS_PROXY_TRUST_ANCHORS_CACHE": "/var/run/trellis/state/trust-anchors.pem",
		"TRELLIS_PROXY_WORKLOAD":            "$(TRELLIS_POD_NAME)",
		"TRELLIS_PROXY_POD_NAME":            "$(TRELLIS_POD_NAME)",
		"TRELLIS_PROXY_APP_IP":              "field:status.podIP",
	}
	if !reflect.DeepEqual(env, wantEnv) {
		t.Errorf("proxy env\n got %v\nwant %v", env, wantEnv)
	}
	ports := map[string]int32{}
	for _, p := range proxy.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if want := map[string]int32{"trellis-proxy": 4143, "trellis-admin": 4191, "trellis-tap": 4190}; !reflect.DeepEqual(ports, want) {
		t.Errorf("proxy ports %v, want %v", ports, want)
	}
	// $(VAR) only expands variables defined earlier.
	pos := map[string]int{}
	for i, e := range proxy.Env {
		pos[e.Name] = i
	}
	if pos["TRELLIS_PROXY_IDENTITY"] < pos["TRELLIS_POD_SA"] || pos["TRELLIS_PROXY_WORKLOAD"] < pos["TRELLIS_POD_NAME"] || pos["TRELLIS_PROXY_POD_NAME"] < pos["TRELLIS_POD_NAME"] {
		t.Error("dependent env vars come before their sources")
	}
	res1 := proxy.Resources
	if res1.Requests.Cpu().String() != "10m" || res1.Requests.Memory().String() != "20Mi" || res1.Limits.Memory().String() != "64Mi" {
		t.Errorf("default resources %v", res1)
	}
	if _, ok := res1.Limits[corev1.ResourceCPU]; ok {
		t.Error("default CPU limit set")
	}

	initC := pod.Spec.InitContainers[0]
	wantArgs := []string{"--proxy-uid", "2102", "--inbound-port", "4143", "--outbound-port", "4140", "--skip-inbound-ports", "4143,4190,4191"}
	if !reflect.DeepEqual(initC.Args, wantArgs) {
		t.Errorf("init args %q, want %q", initC.Args, wantArgs)
	}
	isc := initC.SecurityContext
	if !reflect.DeepEqual(isc.Capabilities.Add, []corev1.Capability{"NET_ADMIN", "NET_RAW"}) || *isc.RunAsUser != 0 || *isc.RunAsNonRoot || *isc.Privileged {
		t.Errorf("init security context %+v", isc)
	}

	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = v
	}
	tok := vols[TokenVolumeName].Projected
	if tok == nil || tok.Sources[0].ServiceAccountToken.Audience != "identity.trellis.io" || *tok.Sources[0].ServiceAccountToken.ExpirationSeconds != 3600 {
		t.Errorf("token volume %+v", vols[TokenVolumeName])
	}
	if cm := vols[AnchorsVolumeName].ConfigMap; cm == nil || cm.Name != "trellis-trust-anchors" || cm.Items[0].Key != "ca-bundle.crt" {
		t.Errorf("anchors volume %+v", vols[AnchorsVolumeName])
	}
	if _, ok := vols["data"]; !ok || vols[XtablesVolumeName].EmptyDir == nil {
		t.Errorf("volumes %v", vols)
	}
	if pod.Annotations[k8slabels.AnnotationProxyVersion] != "v1.2.3" || pod.Labels[k8slabels.LabelProxied] != "true" {
		t.Errorf("metadata %v %v", pod.Annotations, pod.Labels)
	}
	if want := serviceAccountOf(pod); pod.Labels[k8slabels.LabelServiceAccount] != want || want == "" {
		t.Errorf("service account label %q, want %q", pod.Labels[k8slabels.LabelServiceAccount], want)
	}
	if pod.Spec.AutomountServiceAccountToken != nil {
		t.Error("automountServiceAccountToken touched")
	}
}

func TestMutateClassicAndCNI(t *testing.T) {
	inj := New(Config{})
	classic, err := inj.Mutate(testPod(map[string]string{k8slabels.AnnotationInject: k8slabels.InjectEnabled, k8slabels.AnnotationSidecarMode: k8slabels.SidecarClassic}), "shop", nil)
	if err != nil || !classic.Injected {
		t.Fatal(err)
	}
	if got := names(classic.Pod.Spec.Containers); !reflect.DeepEqual(got, []string{"trellis-proxy", "app"}) {
		t.Errorf("classic containers %v", got)
	}
	if got := names(classic.Pod.Spec.InitContainers); !reflect.DeepEqual(got, []string{"trellis-init", "migrate"}) {
		t.Errorf("classic init containers %v", got)
	}
	if classic.Pod.Spec.Containers[0].RestartPolicy != nil {
		t.Error("classic proxy has a container restartPolicy")
	}
	if len(classic.Warnings) == 0 {
		t.Error("no warning about init containers in classic mode")
	}

	// CNI mode from the namespace: no trellis-init, the settings the
	// plugin needs recorded on the pod.
	nsAnn := map[string]string{k8slabels.AnnotationInject: k8slabels.InjectEnabled, k8slabels.AnnotationRedirect: k8slabels.RedirectCNI, k8slabels.AnnotationSkipOutboundPorts: "5432, 3306"}
	cni, err := inj.Mutate(testPod(nil), "shop", nsAnn)
	if err != nil || !cni.Injected {
		t.Fatal(err)
	}
	if got := names(cni.Pod.Spec.InitContainers); !reflect.DeepEqual(got, []string{"trellis-validate", "trellis-proxy", "migrate"}) {
		t.Errorf("cni init containers %v", got)
	}
	// The check before the proxy: no capability, not root, not the
	// proxy's uid, probing the same rule set the plugin programs.
	v := cni.Pod.Spec.InitContainers[0]
	sc := v.SecurityContext
	if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser == ProxyUID || *sc.RunAsUser == 0 || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
		sc.Capabilities == nil || len(sc.Capabilities.Add) != 0 || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || v.RestartPolicy != nil {
		t.Errorf("trellis-validate security context %+v", sc)
	}
	wantArgs := []string{"--check", "--check-method", "probe", "--proxy-uid", "2102", "--inbound-port", "4143", "--outbound-port", "4140",
		"--skip-inbound-ports", "4143,4190,4191", "--skip-outbound-ports", "3306,5432"}
	if !reflect.DeepEqual(v.Args, wantArgs) || v.Image != "trellis/init:"+inj.Config().Version {
		t.Errorf("trellis-validate %s %q\nwant args %q", v.Image, v.Args, wantArgs)
	}
	for _, c := range append(append([]corev1.Container{}, cni.Pod.Spec.InitContainers...), cni.Pod.Spec.Containers...) {
		if c.SecurityContext != nil && c.SecurityContext.Capabilities != nil && len(c.SecurityContext.Capabilities.Add) > 0 {
			t.Errorf("cni mode: %s adds capabilities %v", c.Name, c.SecurityContext.Capabilities.Add)
		}
	}
	again, err := inj.Mutate(cni.Pod, "shop", nsAnn)
	if err != nil || again.Injected {
		t.Errorf("re-injecting a CNI-mode pod: injected=%v err=%v", again.Injected, err)
	}
	for _, v := range cni.Pod.Spec.Volumes {
		if v.Name == XtablesVolumeName {
			t.Error("cni mode has the xtables volume")
		}
	}
	if a := cni.Pod.Annotations; a[k8slabels.AnnotationRedirect] != "cni" || a[k8slabels.AnnotationSkipOutboundPorts] != "3306,5432" {
		t.Errorf("cni annotations %v", a)
	}
}

func TestMutateOptions(t *testing.T) {
	inj := New(Config{TrustAnchorsPEM: "-----BEGIN CERTIFICATE-----\n"})
	nsAnn := map[string]string{
		k8slabels.AnnotationInject:           k8slabels.InjectEnabled,
		k8slabels.AnnotationProxyMemLimit:    "32Mi", // overridden by the pod
		k8slabels.AnnotationSkipInboundPorts: "9000",
	}
	podAnn := map[string]string{
		k8slabels.AnnotationProxyCPURequest:   "100m",
		k8slabels.AnnotationProxyCPULimit:     "1",
		k8slabels.AnnotationProxyMemRequest:   "50Mi",
		k8slabels.AnnotationProxyMemLimit:     "128Mi",
		k8slabels.AnnotationSkipInboundPorts:  "8081,22, 8081",
		k8slabels.AnnotationSkipOutboundPorts: "443",
		k8slabels.AnnotationOpaquePorts:       "5432,6379",
	}
	nsAnn[k8slabels.AnnotationDefaultInboundPolicy] = k8slabels.PolicyAllAuthenticated
	res, err := inj.Mutate(testPod(podAnn), "shop", nsAnn)
	if err != nil || !res.Injected {
		t.Fatal(err)
	}
	proxy, _ := findContainer(res.Pod, k8slabels.ProxyContainerName)
	r := proxy.Resources
	if r.Requests.Cpu().Cmp(resource.MustParse("100m")) != 0 || r.Limits.Cpu().Cmp(resource.MustParse("1")) != 0 ||
		r.Requests.Memory().Cmp(resource.MustParse("50Mi")) != 0 || r.Limits.Memory().Cmp(resource.MustParse("128Mi")) != 0 {
		t.Errorf("resources %v", r)
	}
	if got := envOf(proxy)["TRELLIS_PROXY_DEFAULT_INBOUND_POLICY"]; got != k8slabels.PolicyAllAuthenticated {
		t.Errorf("default inbound policy env %q (from the namespace)", got)
	}
	if got := envOf(proxy)["TRELLIS_PROXY_OPAQUE_PORTS"]; got != "5432,6379" {
		t.Errorf("opaque ports env %q", got)
	}
	initC, _ := findContainer(res.Pod, k8slabels.InitContainerName)
	want := []string{"--proxy-uid", "2102", "--inbound-port", "4143", "--outbound-port", "4140",
		"--skip-inbound-ports", "22,4143,4190,4191,8081", "--skip-outbound-ports", "443"}
	if !reflect.DeepEqual(initC.Args, want) {
		t.Errorf("init args %q\nwant %q", initC.Args, want)
	}
	if res.Pod.Annotations[k8slabels.AnnotationTrustAnchors] != "-----BEGIN CERTIFICATE-----\n" {
		t.Error("trust anchors annotation missing")
	}
	for _, v := range res.Pod.Spec.Volumes {
		if v.Name == AnchorsVolumeName && (v.DownwardAPI == nil || v.DownwardAPI.Items[0].FieldRef.FieldPath != "metadata.annotations['trellis.io/trust-anchors']") {
			t.Errorf("anchors volume %+v", v)
		}
	}
}

func TestMutateDenied(t *testing.T) {
	tests := []struct {
		name   string
		podAnn map[string]string
		nsAnn  map[string]string
		want   []string // substrings of the error
	}{
		{"bad inject value", map[string]string{k8slabels.AnnotationInject: "yes"}, nil, []string{"trellis.io/inject", `"enabled" or "disabled"`}},
		{"bad inject value on namespace", nil, map[string]string{k8slabels.AnnotationInject: "true"}, []string{"on the namespace"}},
		{"unknown sidecar mode", map[string]string{k8slabels.AnnotationSidecarMode: "sidecar"}, nil, []string{k8slabels.AnnotationSidecarMode, `"native" or "classic"`}},
		{"unknown redirect", map[string]string{k8slabels.AnnotationRedirect: "ebpf"}, nil, []string{k8slabels.AnnotationRedirect}},
		{"bad port", map[string]string{k8slabels.AnnotationSkipInboundPorts: "80,http"}, nil, []string{k8slabels.AnnotationSkipInboundPorts, `"http" is not a port`}},
		{"port out of range", map[string]string{k8slabels.AnnotationOpaquePorts: "70000"}, nil, []string{k8slabels.AnnotationOpaquePorts}},
		{"empty port entry", map[string]string{k8slabels.AnnotationSkipOutboundPorts: "80,,81"}, nil, []string{"empty entry"}},
		{"bad quantity", map[string]string{k8slabels.AnnotationProxyMemLimit: "lots"}, nil, []string{k8slabels.AnnotationProxyMemLimit, "not a quantity"}},
		{"negative quantity", map[string]string{k8slabels.AnnotationProxyCPURequest: "-1"}, nil, []string{"negative"}},
		{"zero limit", map[string]string{k8slabels.AnnotationProxyMemLimit: "0"}, nil, []string{"greater than zero"}},
		{"request above limit", map[string]string{k8slabels.AnnotationProxyMemRequest: "100Mi"}, nil, []string{"memory request 100Mi exceeds its limit 64Mi"}},
		{"bad namespace setting", nil, map[string]string{k8slabels.AnnotationSidecarMode: "x"}, []string{k8slabels.AnnotationSidecarMode}},
		{"bad default inbound policy", map[string]string{k8slabels.AnnotationDefaultInboundPolicy: "yes"}, nil, []string{k8slabels.AnnotationDefaultInboundPolicy, "deny, audit, all-authenticated, cluster-authenticated, all-unauthenticated"}},
		{"bad trace collector", map[string]string{k8slabels.AnnotationTraceCollector: "jaeger"}, nil, []string{k8slabels.AnnotationTraceCollector, "host:port"}},
		{"bad trace sample ratio", map[string]string{k8slabels.AnnotationTraceSampleRatio: "2"}, nil, []string{k8slabels.AnnotationTraceSampleRatio, "from 0 to 1"}},
		{"all errors at once", map[string]string{k8slabels.AnnotationSidecarMode: "x", k8slabels.AnnotationOpaquePorts: "0"}, nil, []string{k8slabels.AnnotationSidecarMode, k8slabels.AnnotationOpaquePorts}},
	}
	inj := New(Config{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ann := map[string]string{}
			nsAnn := map[string]string{}
			if _, ok := tt.nsAnn[k8slabels.AnnotationInject]; !ok {
				ann[k8slabels.AnnotationInject] = k8slabels.InjectEnabled
			}
			for k, v := range tt.podAnn {
				ann[k] = v
			}
			for k, v := range tt.nsAnn {
				nsAnn[k] = v
			}
			res, err := inj.Mutate(testPod(ann), "shop", nsAnn)
			if err == nil {
				t.Fatalf("no error; injected=%v", res.Injected)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}

	// Malformed settings do not matter for pods that are not injected.
	res, err := inj.Mutate(testPod(map[string]string{k8slabels.AnnotationSidecarMode: "x"}), "shop", nil)
	if err != nil || res.Injected {
		t.Errorf("not opted in: %v %v", res.Injected, err)
	}
	// A volume name of ours already taken.
	for _, name := range []string{TokenVolumeName, AnchorsVolumeName, XtablesVolumeName, StateVolumeName} {
		pod := testPod(map[string]string{k8slabels.AnnotationInject: k8slabels.InjectEnabled})
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: name})
		if _, err := inj.Mutate(pod, "shop", nil); err == nil || !strings.Contains(err.Error(), `"`+name+`"`) {
			t.Errorf("volume conflict on %s: %v", name, err)
		}
	}
}

// TestMutateProxyState: in every mode the proxy gets its state volume (an
// in-memory emptyDir, which outlives container restarts) mounted
// read-write into it alone, and keeps the trust bundle it learns there
// (TRELLIS_PROXY_TRUST_ANCHORS_CACHE), so a proxy restarted after an
// anchor rotation still trusts the controller.
func TestMutateProxyState(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ann  map[string]string
	}{
		{name: "native, init redirection", ann: map[string]string{}},
		{name: "classic sidecar", ann: map[string]string{k8slabels.AnnotationSidecarMode: k8slabels.SidecarClassic}},
		{name: "cni redirection", ann: map[string]string{k8slabels.AnnotationRedirect: k8slabels.RedirectCNI}},
		{name: "classic and cni", ann: map[string]string{k8slabels.AnnotationSidecarMode: k8slabels.SidecarClassic, k8slabels.AnnotationRedirect: k8slabels.RedirectCNI}},
		{name: "anchors from the annotation", cfg: Config{TrustAnchorsPEM: "-----BEGIN CERTIFICATE-----\n"}, ann: map[string]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ann := map[string]string{k8slabels.AnnotationInject: k8slabels.InjectEnabled}
			for k, v := range tt.ann {
				ann[k] = v
			}
			pod := testPod(ann)
			// The app has a writable emptyDir of its own: it must not
			// see the proxy's.
			pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
			res, err := New(tt.cfg).Mutate(pod, "shop", nil)
			if err != nil || !res.Injected {
				t.Fatalf("injected=%v err=%v", res.Injected, err)
			}
			var state []corev1.Volume
			for _, v := range res.Pod.Spec.Volumes {
				if v.Name == StateVolumeName {
					state = append(state, v)
				}
			}
			if len(state) != 1 {
				t.Fatalf("%d %s volumes, want 1", len(state), StateVolumeName)
			}
			ed := state[0].EmptyDir
			if ed == nil || ed.Medium != corev1.StorageMediumMemory || ed.SizeLimit == nil || ed.SizeLimit.Cmp(resource.MustParse("1Mi")) != 0 {
				t.Errorf("state volume %+v, want an in-memory emptyDir of 1Mi", state[0].VolumeSource)
			}
			for _, c := range append(append([]corev1.Container{}, res.Pod.Spec.InitContainers...), res.Pod.Spec.Containers...) {
				var mounts []corev1.VolumeMount
				for _, m := range c.VolumeMounts {
					if m.Name == StateVolumeName {
						mounts = append(mounts, m)
					}
				}
				if c.Name != k8slabels.ProxyContainerName {
					if len(mounts) > 0 {
						t.Errorf("container %s mounts the proxy's state volume", c.Name)
					}
					if _, ok := envOf(c)["TRELLIS_PROXY_TRUST_ANCHORS_CACHE"]; ok {
						t.Errorf("container %s has the proxy's cache variable", c.Name)
					}
					continue
				}
				if len(mounts) != 1 || mounts[0].ReadOnly || mounts[0].MountPath != "/var/run/trellis/state" {
					t.Errorf("proxy state mounts %+v, want one read-write mount at /var/run/trellis/state", mounts)
				}
				// The only writable path of a read-only root filesystem.
				if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
					t.Error("proxy root filesystem is not read-only")
				}
				cache := envOf(c)["TRELLIS_PROXY_TRUST_ANCHORS_CACHE"]
				if len(mounts) == 1 && !strings.HasPrefix(cache, mounts[0].MountPath+"/") {
					t.Errorf("TRELLIS_PROXY_TRUST_ANCHORS_CACHE=%q is not on the state volume (%s)", cache, mounts[0].MountPath)
				}
			}
			// Injecting the result again leaves it alone (no second volume).
			again, err := New(tt.cfg).Mutate(res.Pod, "shop", nil)
			if err != nil || again.Injected || !reflect.DeepEqual(again.Pod, res.Pod) {
				t.Errorf("second injection: injected=%v err=%v changed=%v", again.Injected, err, !reflect.DeepEqual(again.Pod, res.Pod))
			}
		})
	}
}

// TestMutateInstallDefaults: the install-time settings (the chart's
// proxy.resources, proxy.logLevel and cni.enabled) are the defaults of
// every injected pod, and the pod's annotations still win.
func TestMutateInstallDefaults(t *testing.T) {
	q := resource.MustParse
	install := Config{
		DefaultRedirect: k8slabels.RedirectCNI,
		ProxyLogLevel:   "debug",
		ProxyResources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: q("50m"), corev1.ResourceMemory: q("32Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: q("2"), corev1.ResourceMemory: q("256Mi")},
		},
	}
	tests := []struct {
		name         string
		cfg          Config
		podAnn       map[string]string
		wantInits    []string
		wantRes      map[string]string // requests.cpu, requests.memory, limits.cpu, limits.memory ("" = unset)
		wantLogLevel string
	}{
		{
			name: "built-in defaults", cfg: Config{},
			wantInits: []string{"trellis-init", "trellis-proxy", "migrate"},
			wantRes:   map[string]string{"requests.cpu": "10m", "requests.memory": "20Mi", "limits.cpu": "", "limits.memory": "64Mi"},
		},
		{
			name: "install settings", cfg: install,
			wantInits:    []string{"trellis-validate", "trellis-proxy", "migrate"},
			wantRes:      map[string]string{"requests.cpu": "50m", "requests.memory": "32Mi", "limits.cpu": "2", "limits.memory": "256Mi"},
			wantLogLevel: "debug",
		},
		{
			name: "only some install settings", cfg: Config{ProxyResources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: q("100Mi")}}},
			wantInits: []string{"trellis-init", "trellis-proxy", "migrate"},
			wantRes:   map[string]string{"requests.cpu": "10m", "requests.memory": "20Mi", "limits.cpu": "", "limits.memory": "100Mi"},
		},
		{
			name: "pod annotations win", cfg: install,
			podAnn:       map[string]string{k8slabels.AnnotationRedirect: k8slabels.RedirectInit, k8slabels.AnnotationProxyCPURequest: "5m", k8slabels.AnnotationProxyMemLimit: "48Mi"},
			wantInits:    []string{"trellis-init", "trellis-proxy", "migrate"},
			wantRes:      map[string]string{"requests.cpu": "5m", "requests.memory": "32Mi", "limits.cpu": "2", "limits.memory": "48Mi"},
			wantLogLevel: "debug",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ann := map[string]string{k8slabels.AnnotationInject: k8slabels.InjectEnabled}
			for k, v := range tt.podAnn {
				ann[k] = v
			}
			res, err := New(tt.cfg).Mutate(testPod(ann), "shop", nil)
			if err != nil || !res.Injected {
				t.Fatalf("injected=%v err=%v", res.Injected, err)
			}
			if got := names(res.Pod.Spec.InitContainers); !reflect.DeepEqual(got, tt.wantInits) {
				t.Errorf("init containers %v, want %v", got, tt.wantInits)
			}
			proxy, _ := findContainer(res.Pod, k8slabels.ProxyContainerName)
			got := map[string]string{}
			for _, l := range []struct {
				prefix string
				list   corev1.ResourceList
			}{{"requests.", proxy.Resources.Requests}, {"limits.", proxy.Resources.Limits}} {
				for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
					v := ""
					if x, ok := l.list[name]; ok {
						v = x.String()
					}
					got[l.prefix+string(name)] = v
				}
			}
			if !reflect.DeepEqual(got, tt.wantRes) {
				t.Errorf("proxy resources %v, want %v", got, tt.wantRes)
			}
			lvl, ok := envOf(proxy)["TRELLIS_PROXY_LOG_LEVEL"]
			if lvl != tt.wantLogLevel || ok != (tt.wantLogLevel != "") {
				t.Errorf("TRELLIS_PROXY_LOG_LEVEL %q (set %v), want %q", lvl, ok, tt.wantLogLevel)
			}
		})
	}
	// The Injector never shares its defaults' maps with a pod.
	inj := New(install)
	a, _ := inj.Mutate(testPod(map[string]string{k8slabels.AnnotationInject: k8slabels.InjectEnabled, k8slabels.AnnotationProxyMemLimit: "40Mi"}), "shop", nil)
	b, _ := inj.Mutate(testPod(map[string]string{k8slabels.AnnotationInject: k8slabels.InjectEnabled}), "shop", nil)
	pa, _ := findContainer(a.Pod, k8slabels.ProxyContainerName)
	pb, _ := findContainer(b.Pod, k8slabels.ProxyContainerName)
	if pa.Resources.Limits.Memory().String() != "40Mi" || pb.Resources.Limits.Memory().String() != "256Mi" {
		t.Errorf("pods share resource lists: %v / %v", pa.Resources.Limits, pb.Resources.Limits)
	}
}

func TestConfigValidate(t *testing.T) {
	q := resource.MustParse
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "zero value", cfg: Config{}},
		{name: "cni and settings", cfg: Config{DefaultRedirect: k8slabels.RedirectCNI, ProxyLogLevel: "warn",
			ProxyResources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: q("1")}, Limits: corev1.ResourceList{corev1.ResourceCPU: q("1")}}}},
		{name: "bad redirect", cfg: Config{DefaultRedirect: "ebpf"}, wantErr: `default redirect "ebpf"`},
		{name: "bad log level", cfg: Config{ProxyLogLevel: "trace"}, wantErr: `proxy log level "trace"`},
		{name: "accepted trust domains", cfg: Config{TrustDomain: "cluster-a.local", AcceptTrustDomains: []string{"cluster-b.local", "cluster-c.local"}}},
		{name: "accepting the local trust domain", cfg: Config{AcceptTrustDomains: []string{"cluster.local"}}, wantErr: `accepted trust domain "cluster.local" is the local one`},
		{name: "bad accepted trust domain", cfg: Config{AcceptTrustDomains: []string{"spiffe://b.example"}}, wantErr: `accepted trust domain "spiffe://b.example"`},
		{name: "zero limit", cfg: Config{ProxyResources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: q("0")}}}, wantErr: "greater than zero"},
		{name: "negative request", cfg: Config{ProxyResources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: q("-1")}}}, wantErr: "negative"},
		{name: "request above the built-in limit", cfg: Config{ProxyResources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: q("1Gi")}}}, wantErr: "memory request 1Gi exceeds its limit 64Mi"},
		{name: "other resource", cfg: Config{ProxyResources: corev1.ResourceRequirements{Requests: corev1.ResourceList{"nvidia.com/gpu": q("1")}}}, wantErr: "only cpu and memory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error with %q", err, tt.wantErr)
			}
		})
	}
}

// The app's tcpSocket probes on redirected ports become HTTP probes of the
// proxy's /tcp-probe/PORT (the proxy would otherwise accept the kubelet's
// connection itself); other probes are left alone.
func TestMutateTCPProbes(t *testing.T) {
	tcp := func(port intstr.IntOrString, host string) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: port, Host: host}}, PeriodSeconds: 2, TimeoutSeconds: 3}
	}
	httpGet := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}}
	for _, tc := range []struct {
		name      string
		ann       map[string]string
		probe     *corev1.Probe
		wantPath  string // "" : the probe is left as it was
		wantPorts string
	}{
		{name: "port number", probe: tcp(intstr.FromInt32(8080), ""), wantPath: "/tcp-probe/8080", wantPorts: "8080"},
		{name: "port name", probe: tcp(intstr.FromString("grpc"), ""), wantPath: "/tcp-probe/9090", wantPorts: "9090"},
		{name: "unknown port name", probe: tcp(intstr.FromString("nope"), "")},
		{name: "another host", probe: tcp(intstr.FromInt32(8080), "db.example")},
		{name: "port not redirected", ann: map[string]string{k8slabels.AnnotationSkipInboundPorts: "8080"}, probe: tcp(intstr.FromInt32(8080), "")},
		{name: "HTTP probe", probe: httpGet},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ann := map[string]string{k8slabels.AnnotationInject: k8slabels.InjectEnabled}
			for k, v := range tc.ann {
				ann[k] = v
			}
			pod := testPod(ann)
			pod.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "grpc", ContainerPort: 9090}}
			pod.Spec.Containers[0].ReadinessProbe = tc.probe.DeepCopy()
			pod.Spec.Containers[0].LivenessProbe = tc.probe.DeepCopy()
			res, err := New(Config{Version: "v1"}).Mutate(pod, "shop", nil)
			if err != nil || !res.Injected {
				t.Fatalf("Mutate: %v %v", res.Injected, err)
			}
			app, _ := findContainer(res.Pod, "app")
			proxy, _ := findContainer(res.Pod, k8slabels.ProxyContainerName)
			for _, got := range []*corev1.Probe{app.ReadinessProbe, app.LivenessProbe} {
				if tc.wantPath == "" {
					if !reflect.DeepEqual(got, tc.probe) {
						t.Errorf("probe changed: %+v, want %+v", got, tc.probe)
					}
					continue
				}
				if got.TCPSocket != nil || got.HTTPGet == nil || got.HTTPGet.Path != tc.wantPath || got.HTTPGet.Port.IntValue() != AdminPort {
					t.Errorf("probe %+v, want GET %s on %d", got.ProbeHandler, tc.wantPath, AdminPort)
				}
				if got.PeriodSeconds != 2 || got.TimeoutSeconds != 3 {
					t.Errorf("probe timing changed: %+v", got)
				}
			}
			if got := envOf(proxy)["TRELLIS_PROXY_TCP_PROBE_PORTS"]; got != tc.wantPorts {
				t.Errorf("TRELLIS_PROXY_TCP_PROBE_PORTS %q, want %q", got, tc.wantPorts)
			}
		})
	}
}

// TestMutateAcceptTrustDomains: the install's accepted trust domains reach
// every proxy, and nothing is added without them.
func TestMutateAcceptTrustDomains(t *testing.T) {
	for _, tt := range []struct {
		accept []string
		want   string // "" unset
	}{
		{nil, ""},
		{[]string{"cluster-b.local"}, "cluster-b.local"},
		{[]string{"cluster-b.local", "cluster-c.local"}, "cluster-b.local,cluster-c.local"},
	} {
		res, err := New(Config{TrustDomain: "cluster-a.local", AcceptTrustDomains: tt.accept}).
			Mutate(testPod(map[string]string{k8slabels.AnnotationInject: k8slabels.InjectEnabled}), "shop", nil)
		if err != nil || !res.Injected {
			t.Fatalf("%v: injected=%v err=%v", tt.accept, res.Injected, err)
		}
		proxy, _ := findContainer(res.Pod, k8slabels.ProxyContainerName)
		got, set := envOf(proxy)["TRELLIS_PROXY_ACCEPT_TRUST_DOMAINS"]
		if got != tt.want || set != (tt.want != "") {
			t.Errorf("%v: TRELLIS_PROXY_ACCEPT_TRUST_DOMAINS %q (set %v), want %q", tt.accept, got, set, tt.want)
		}
		if id := envOf(proxy)["TRELLIS_PROXY_IDENTITY"]; !strings.HasPrefix(id, "spiffe://cluster-a.local/") {
			t.Errorf("%v: identity %q, want the local trust domain", tt.accept, id)
		}
	}
}
