package install

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/internal/pki"
)

// testMaterial is generated once per test binary: key generation is the
// slow part of rendering.
func testMaterial(t testing.TB) (Identity, WebhookTLS) {
	t.Helper()
	now := time.Now()
	id, err := GenerateIdentity("cluster.local", DefaultAnchorValidity, DefaultIssuerValidity, now)
	if err != nil {
		t.Fatal(err)
	}
	wh, err := GenerateWebhookTLS(Namespace, DefaultWebhookValidity, now)
	if err != nil {
		t.Fatal(err)
	}
	return id, wh
}

// typed decodes every object strictly into its k8s.io/api type: an
// unknown or misspelt field, or a wrong type, is an error.
func typed(t *testing.T, o Object) any {
	t.Helper()
	var into any
	switch o.Kind.Kind {
	case "Namespace":
		into = &corev1.Namespace{}
	case "ServiceAccount":
		into = &corev1.ServiceAccount{}
	case "Secret":
		into = &corev1.Secret{}
	case "ConfigMap":
		into = &corev1.ConfigMap{}
	case "Service":
		into = &corev1.Service{}
	case "Deployment":
		into = &appsv1.Deployment{}
	case "DaemonSet":
		into = &appsv1.DaemonSet{}
	case "PodDisruptionBudget":
		into = &policyv1.PodDisruptionBudget{}
	case "ClusterRole":
		into = &rbacv1.ClusterRole{}
	case "ClusterRoleBinding":
		into = &rbacv1.ClusterRoleBinding{}
	case "Role":
		into = &rbacv1.Role{}
	case "RoleBinding":
		into = &rbacv1.RoleBinding{}
	case "MutatingWebhookConfiguration":
		into = &admissionv1.MutatingWebhookConfiguration{}
	case "ValidatingAdmissionPolicy":
		into = &admissionv1.ValidatingAdmissionPolicy{}
	case "ValidatingAdmissionPolicyBinding":
		into = &admissionv1.ValidatingAdmissionPolicyBinding{}
	case "APIService":
		into = &apiService{}
	default:
		t.Fatalf("%s: no typed check for kind %s", o.Ref(), o.Kind.Kind)
	}
	if err := yaml.UnmarshalStrict(o.YAML, into); err != nil {
		t.Fatalf("%s (%s) does not decode strictly into its API type: %v", o.Ref(), o.Source, err)
	}
	return into
}

func find[T any](t *testing.T, m *Manifest, kind, name string) T {
	t.Helper()
	for _, o := range m.Objects {
		if o.Kind.Kind == kind && o.Name == name {
			v, ok := typed(t, o).(T)
			if !ok {
				t.Fatalf("%s: wrong type", o.Ref())
			}
			return v
		}
	}
	var zero T
	t.Fatalf("no %s %s rendered", kind, name)
	return zero
}

func TestRenderProfiles(t *testing.T) {
	id, wh := testMaterial(t)
	tests := []struct {
		name          string
		ha            bool
		set           []string
		wantObjects   int
		wantReplicas  int32
		wantPDB       bool
		wantFailure   admissionv1.FailurePolicyType
		wantImage     string
		wantProxyEnv  map[string]string
		wantLogArg    string
		wantAntiAff   string // "", preferred, required
		wantNamespace bool
		wantCNI       bool
	}{
		{
			name: "default", wantObjects: 18, wantReplicas: 1, wantFailure: admissionv1.Ignore,
			wantImage:    "trellis/controller:v1.2.3",
			wantProxyEnv: map[string]string{"TRELLIS_PROXY_IMAGE": "trellis/proxy:v1.2.3", "TRELLIS_INIT_IMAGE": "trellis/init:v1.2.3", "TRELLIS_PROXY_MEMORY_LIMIT": "64Mi", "TRELLIS_PROXY_CPU_LIMIT": ""},
			wantLogArg:   "--log-level=info", wantNamespace: true,
		},
		{
			name: "ha", ha: true, wantObjects: 19, wantReplicas: 3, wantPDB: true, wantFailure: admissionv1.Fail,
			wantImage: "trellis/controller:v1.2.3", wantLogArg: "--log-level=info", wantAntiAff: "preferred", wantNamespace: true,
		},
		{
			name: "set",
			set: []string{"image.registry=registry.example.com/mesh,image.tag=v9", "controller.logLevel=debug",
				"proxy.resources.limits.memory=1Gi", "proxy.resources.requests.cpu=50m", "installNamespace=false"},
			wantObjects: 17, wantReplicas: 1, wantFailure: admissionv1.Ignore,
			wantImage:    "registry.example.com/mesh/controller:v9",
			wantProxyEnv: map[string]string{"TRELLIS_PROXY_IMAGE": "registry.example.com/mesh/proxy:v9", "TRELLIS_PROXY_MEMORY_LIMIT": "1Gi", "TRELLIS_PROXY_CPU_REQUEST": "50m"},
			wantLogArg:   "--log-level=debug",
		},
		{
			name: "cni", set: []string{"cni.enabled=true", "cni.binDir=/usr/lib/cni"},
			wantObjects: 20, wantReplicas: 1, wantFailure: admissionv1.Ignore,
			wantImage:    "trellis/controller:v1.2.3",
			wantProxyEnv: map[string]string{"TRELLIS_PROXY_REDIRECT": "cni"},
			wantLogArg:   "--log-level=info", wantNamespace: true, wantCNI: true,
		},
		{
			name: "ha cni", ha: true, set: []string{"cni.enabled=true"},
			wantObjects: 21, wantReplicas: 3, wantPDB: true, wantFailure: admissionv1.Fail,
			wantImage: "trellis/controller:v1.2.3", wantLogArg: "--log-level=info", wantAntiAff: "preferred", wantNamespace: true, wantCNI: true,
		},
		{
			name: "ha with required anti-affinity and set replicas", ha: true,
			set:         []string{"controller.podAntiAffinity=required", "controller.replicas=5"},
			wantObjects: 19, wantReplicas: 5, wantPDB: true, wantFailure: admissionv1.Fail,
			wantImage: "trellis/controller:v1.2.3", wantLogArg: "--log-level=info", wantAntiAff: "required", wantNamespace: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Render(Options{HA: tc.ha, Set: tc.set, Version: "v1.2.3", Identity: id, Webhook: wh})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s profile: %d objects (+3 CRDs)", tc.name, len(m.Objects))
			if len(m.Objects) != tc.wantObjects {
				t.Errorf("%d objects, want %d", len(m.Objects), tc.wantObjects)
			}
			for _, o := range m.Objects {
				typed(t, o)
				checkLabels(t, o)
			}
			d := find[*appsv1.Deployment](t, m, "Deployment", "trellis-controller")
			if got := *d.Spec.Replicas; got != tc.wantReplicas {
				t.Errorf("replicas %d, want %d", got, tc.wantReplicas)
			}
			checkPodSecurity(t, d)
			c := d.Spec.Template.Spec.Containers[0]
			if c.Image != tc.wantImage {
				t.Errorf("image %q, want %q", c.Image, tc.wantImage)
			}
			if !contains(c.Args, tc.wantLogArg) {
				t.Errorf("args %v lack %s", c.Args, tc.wantLogArg)
			}
			env := map[string]string{}
			for _, e := range c.Env {
				env[e.Name] = e.Value
			}
			for k, v := range tc.wantProxyEnv {
				if env[k] != v {
					t.Errorf("env %s=%q, want %q", k, env[k], v)
				}
			}
			aff := d.Spec.Template.Spec.Affinity
			switch tc.wantAntiAff {
			case "":
				if aff != nil {
					t.Errorf("affinity %+v, want none", aff)
				}
			case "preferred":
				if aff == nil || len(aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 ||
					aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.TopologyKey != corev1.LabelHostname {
					t.Errorf("affinity %+v, want preferred anti-affinity on hostname", aff)
				}
			case "required":
				if aff == nil || len(aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 1 ||
					aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution[0].TopologyKey != corev1.LabelHostname {
					t.Errorf("affinity %+v, want required anti-affinity on hostname", aff)
				}
			}
			hasPDB := false
			for _, o := range m.Objects {
				if o.Kind.Kind == "PodDisruptionBudget" {
					hasPDB = true
					pdb := typed(t, o).(*policyv1.PodDisruptionBudget)
					if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 2 {
						t.Errorf("PDB minAvailable %v, want 2", pdb.Spec.MinAvailable)
					}
				}
			}
			if hasPDB != tc.wantPDB {
				t.Errorf("PDB rendered %v, want %v", hasPDB, tc.wantPDB)
			}
			hasNS := false
			for _, o := range m.Objects {
				hasNS = hasNS || o.Kind.Kind == "Namespace"
			}
			if hasNS != tc.wantNamespace {
				t.Errorf("Namespace rendered %v, want %v", hasNS, tc.wantNamespace)
			}
			mwc := find[*admissionv1.MutatingWebhookConfiguration](t, m, "MutatingWebhookConfiguration", WebhookConfigName)
			checkWebhook(t, mwc, wh, tc.wantFailure)
			hasDS := false
			for _, o := range m.Objects {
				if o.Kind.Kind == "DaemonSet" {
					hasDS = true
					checkCNIDaemonSet(t, typed(t, o).(*appsv1.DaemonSet), "trellis/cni:v1.2.3")
				}
			}
			if hasDS != tc.wantCNI {
				t.Errorf("CNI DaemonSet rendered %v, want %v", hasDS, tc.wantCNI)
			}
			if _, redirect := env["TRELLIS_PROXY_REDIRECT"]; redirect != tc.wantCNI {
				t.Errorf("controller env TRELLIS_PROXY_REDIRECT set %v, want %v", redirect, tc.wantCNI)
			}
			if tc.wantCNI {
				if !contains(mwc.Webhooks[0].NamespaceSelector.MatchExpressions[0].Values, CNINamespace) {
					t.Errorf("webhook namespaceSelector does not exclude %s", CNINamespace)
				}
				ns := find[*corev1.Namespace](t, m, "Namespace", CNINamespace)
				if ns.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
					t.Errorf("namespace %s labels %v", CNINamespace, ns.Labels)
				}
			}
			sec := find[*corev1.Secret](t, m, "Secret", IssuerSecretName)
			if string(sec.Data["tls.crt"]) != string(id.IssuerCertPEM) || string(sec.Data["tls.key"]) != string(id.IssuerKeyPEM) ||
				string(sec.Data["ca.crt"]) != string(id.TrustAnchorsPEM) || sec.Type != corev1.SecretTypeTLS {
				t.Error("issuer Secret does not hold the identity material in kubernetes.io/tls shape")
			}
			cm := find[*corev1.ConfigMap](t, m, "ConfigMap", TrustAnchorsName)
			if cm.Data[TrustAnchorsKey] != string(id.TrustAnchorsPEM) {
				t.Error("trust anchors ConfigMap does not hold the anchors")
			}
			// Stable output: same input, same bytes.
			again, err := Render(Options{HA: tc.ha, Set: tc.set, Version: "v1.2.3", Identity: id, Webhook: wh})
			if err != nil {
				t.Fatal(err)
			}
			if string(again.YAML()) != string(m.YAML()) {
				t.Error("two renders of the same input differ")
			}
			// And the printed stream parses back to the same objects.
			back, err := ParseDocuments(m.YAML(), "output")
			if err != nil || len(back) != len(m.Objects) {
				t.Fatalf("output parses to %d objects (%v), want %d", len(back), err, len(m.Objects))
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func checkLabels(t *testing.T, o Object) {
	t.Helper()
	meta := o.Content["metadata"].(map[string]any)
	labels, _ := meta["labels"].(map[string]any)
	for k, v := range labels {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			t.Errorf("%s label key %q: %v", o.Ref(), k, errs)
		}
		if errs := validation.IsValidLabelValue(fmt.Sprint(v)); len(errs) > 0 {
			t.Errorf("%s label %s=%v: %v", o.Ref(), k, v, errs)
		}
	}
	if errs := validation.IsDNS1123Subdomain(o.Name); len(errs) > 0 {
		t.Errorf("%s name: %v", o.Ref(), errs)
	}
}

func checkPodSecurity(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	ps := d.Spec.Template.Spec
	if ps.SecurityContext == nil || ps.SecurityContext.RunAsNonRoot == nil || !*ps.SecurityContext.RunAsNonRoot ||
		ps.SecurityContext.SeccompProfile == nil || ps.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("pod must run as non-root with the RuntimeDefault seccomp profile")
	}
	if ps.ServiceAccountName != "trellis-controller" {
		t.Errorf("service account %q", ps.ServiceAccountName)
	}
	for _, c := range ps.Containers {
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil ||
			*sc.AllowPrivilegeEscalation || sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" ||
			len(sc.Capabilities.Add) != 0 {
			t.Errorf("container %s: want read-only root, no privilege escalation, all capabilities dropped", c.Name)
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("container %s: want cpu and memory requests and a memory limit", c.Name)
		}
		for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
			if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.String() != "admin" {
				t.Errorf("container %s: want HTTP probes on the admin port", c.Name)
			}
		}
		admin := false
		for _, p := range c.Ports {
			admin = admin || (p.Name == "admin" && p.ContainerPort == 9996)
		}
		if !admin {
			t.Errorf("container %s: no admin port 9996", c.Name)
		}
		mounted := false
		for _, vm := range c.VolumeMounts {
			mounted = mounted || (vm.MountPath == "/var/run/trellis/issuer" && vm.ReadOnly)
		}
		if !mounted || !contains(c.Args, "--issuer-dir=/var/run/trellis/issuer") {
			t.Errorf("container %s: issuer Secret not mounted read-only at --issuer-dir", c.Name)
		}
		anchors := false
		for _, vm := range c.VolumeMounts {
			anchors = anchors || (vm.MountPath == "/var/run/trellis/anchors" && vm.ReadOnly && vm.Name == "trust-anchors")
		}
		if !anchors || !contains(c.Args, "--trust-anchors-file=/var/run/trellis/anchors/ca-bundle.crt") {
			t.Errorf("container %s: trellis-trust-anchors ConfigMap not mounted read-only at --trust-anchors-file", c.Name)
		}
	}
}

// checkCNIDaemonSet pins the installer's privileges: root without any
// capability, not privileged, a read-only root, no API token, exactly the
// two CNI host directories, probes, resources, on every node.
func checkCNIDaemonSet(t *testing.T, ds *appsv1.DaemonSet, image string) {
	t.Helper()
	ps := ds.Spec.Template.Spec
	if ds.Namespace != CNINamespace {
		t.Errorf("DaemonSet in %q, want %q", ds.Namespace, CNINamespace)
	}
	if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken || ps.HostNetwork || ps.HostPID || ps.HostIPC {
		t.Error("installer pod: want no API token and no host namespaces")
	}
	if len(ps.Tolerations) != 1 || ps.Tolerations[0].Operator != corev1.TolerationOpExists || ps.Tolerations[0].Key != "" {
		t.Errorf("tolerations %+v: want to tolerate every taint", ps.Tolerations)
	}
	hostPaths := map[string]string{}
	for _, v := range ps.Volumes {
		if v.HostPath == nil {
			t.Errorf("volume %s is not a hostPath", v.Name)
			continue
		}
		hostPaths[v.Name] = v.HostPath.Path
	}
	if len(hostPaths) != 2 || hostPaths["cni-conf"] != "/etc/cni/net.d" || (hostPaths["cni-bin"] != "/opt/cni/bin" && hostPaths["cni-bin"] != "/usr/lib/cni") {
		t.Errorf("host paths %v: want exactly the CNI bin and conf dirs", hostPaths)
	}
	if len(ps.Containers) != 1 || len(ps.InitContainers) != 0 {
		t.Fatalf("want one container")
	}
	c := ps.Containers[0]
	if c.Image != image {
		t.Errorf("image %q, want %q", c.Image, image)
	}
	sc := c.SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.Capabilities == nil || len(sc.Capabilities.Add) != 0 ||
		len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
		t.Errorf("installer security context %+v: want unprivileged, read-only root, all capabilities dropped", sc)
	}
	if !contains(c.Args, "--watch") || !contains(c.Args, "--cleanup-on-exit") {
		t.Errorf("installer args %v: want --watch and --cleanup-on-exit", c.Args)
	}
	for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
		if p == nil || p.Exec == nil || len(p.Exec.Command) < 2 || p.Exec.Command[1] != "status" {
			t.Errorf("installer probe %+v: want exec trellis-cni status", p)
		}
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Error("installer: want cpu and memory requests and a memory limit")
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	for _, a := range c.Args {
		for name, flag := range map[string]string{"cni-bin": "--cni-bin-dir=", "cni-conf": "--cni-conf-dir="} {
			if strings.HasPrefix(a, flag) && strings.TrimPrefix(a, flag) != mounts[name] {
				t.Errorf("%s%s is not where %s is mounted (%s)", flag, strings.TrimPrefix(a, flag), name, mounts[name])
			}
		}
	}
}

func checkWebhook(t *testing.T, mwc *admissionv1.MutatingWebhookConfiguration, wh WebhookTLS, want admissionv1.FailurePolicyType) {
	t.Helper()
	if len(mwc.Webhooks) != 1 {
		t.Fatalf("%d webhooks, want 1", len(mwc.Webhooks))
	}
	w := mwc.Webhooks[0]
	if w.FailurePolicy == nil || *w.FailurePolicy != want {
		t.Errorf("failurePolicy %v, want %s", w.FailurePolicy, want)
	}
	if string(w.ClientConfig.CABundle) != string(wh.CAPEM) {
		t.Error("caBundle is not the webhook CA")
	}
	s := w.ClientConfig.Service
	if s == nil || s.Name != ServiceName || s.Namespace != Namespace || s.Path == nil || *s.Path != "/inject" {
		t.Errorf("webhook service %+v", s)
	}
	sel := w.NamespaceSelector
	if sel == nil || len(sel.MatchExpressions) != 1 || !contains(sel.MatchExpressions[0].Values, "kube-system") ||
		!contains(sel.MatchExpressions[0].Values, Namespace) || sel.MatchExpressions[0].Operator != "NotIn" {
		t.Errorf("namespaceSelector %+v must exclude kube-system and %s", sel, Namespace)
	}
	if w.SideEffects == nil || *w.SideEffects != admissionv1.SideEffectClassNone {
		t.Error("sideEffects must be None")
	}
	// The serving certificate verifies against the caBundle for the
	// Service name the API server dials.
	if err := CheckWebhookTLS(wh, Namespace, time.Now()); err != nil {
		t.Error(err)
	}
}

// TestRBACLeastPrivilege pins the controller's permissions: exactly these
// verbs on these resources; cluster-wide writes only of status
// subresources and of EndpointSlices (those of Services that select
// ExternalWorkloads).
func TestRBACLeastPrivilege(t *testing.T) {
	id, wh := testMaterial(t)
	m, err := Render(Options{Version: "dev", Identity: id, Webhook: wh})
	if err != nil {
		t.Fatal(err)
	}
	flatten := func(rules []rbacv1.PolicyRule) []string { return flattenRules(t, rules) }
	var want []string
	for _, gr := range []string{"/services", "/pods", "/nodes", "/namespaces", "discovery.k8s.io/endpointslices",
		"policy.trellis.io/servers", "policy.trellis.io/authorizationpolicies", "policy.trellis.io/ratelimits",
		"gateway.networking.k8s.io/httproutes", "gateway.networking.k8s.io/grpcroutes", "gateway.networking.k8s.io/referencegrants",
		"workload.trellis.io/externalworkloads"} {
		for _, v := range []string{"get", "list", "watch"} {
			want = append(want, gr+":"+v)
		}
	}
	// Status writes: the subresource only, so the controller can never change a policy's spec.
	want = append(want, "policy.trellis.io/servers/status:update", "policy.trellis.io/authorizationpolicies/status:update", "policy.trellis.io/ratelimits/status:update")
	want = append(want, "gateway.networking.k8s.io/httproutes/status:update", "gateway.networking.k8s.io/grpcroutes/status:update")
	want = append(want, "workload.trellis.io/externalworkloads/status:update", "workload.trellis.io/externalworkloads/status:patch")
	// The slices of Services that select ExternalWorkloads.
	want = append(want, "discovery.k8s.io/endpointslices:create", "discovery.k8s.io/endpointslices:update", "discovery.k8s.io/endpointslices:delete")
	want = append(want, "authentication.k8s.io/tokenreviews:create", "/events:create", "/events:patch", "events.k8s.io/events:create", "events.k8s.io/events:patch")
	// The tap API: workloads to pods, and the tapping user's rights.
	want = append(want, "apps/deployments:get", "apps/deployments:list", "apps/replicasets:get", "apps/replicasets:list",
		"apps/statefulsets:get", "apps/statefulsets:list", "apps/daemonsets:get", "apps/daemonsets:list", "batch/jobs:get",
		"authorization.k8s.io/subjectaccessreviews:create")
	cr := find[*rbacv1.ClusterRole](t, m, "ClusterRole", "trellis-controller")
	if got := flatten(cr.Rules); !sameSet(got, want) {
		t.Errorf("ClusterRole grants\n  %v\nwant\n  %v", got, want)
	}
	role := find[*rbacv1.Role](t, m, "Role", "trellis-controller")
	if role.Namespace != Namespace {
		t.Errorf("Role in %q", role.Namespace)
	}
	// secrets:delete spends an external workload's bootstrap token.
	wantRole := []string{"/secrets:get", "/secrets:list", "/secrets:watch", "/configmaps:get", "/configmaps:list", "/configmaps:watch",
		"/secrets:delete", "coordination.k8s.io/leases:get", "coordination.k8s.io/leases:list", "coordination.k8s.io/leases:watch",
		"coordination.k8s.io/leases:create", "coordination.k8s.io/leases:update"}
	if got := flatten(role.Rules); !sameSet(got, wantRole) {
		t.Errorf("Role grants\n  %v\nwant\n  %v", got, wantRole)
	}
	for _, kind := range []string{"ClusterRoleBinding", "RoleBinding"} {
		for _, o := range m.Objects {
			if o.Kind.Kind != kind {
				continue
			}
			var subjects []rbacv1.Subject
			var ref rbacv1.RoleRef
			switch b := typed(t, o).(type) {
			case *rbacv1.ClusterRoleBinding:
				subjects, ref = b.Subjects, b.RoleRef
			case *rbacv1.RoleBinding:
				subjects, ref = b.Subjects, b.RoleRef
			}
			if len(subjects) != 1 || subjects[0].Kind != "ServiceAccount" || subjects[0].Name != "trellis-controller" || subjects[0].Namespace != Namespace {
				t.Errorf("%s binds %+v", o.Ref(), subjects)
			}
			// The one exception: reading the front proxy's settings
			// (kube-system's extension-apiserver-authentication ConfigMap)
			// through the Role Kubernetes ships for extension API servers.
			if o.Name == "trellis-controller-auth-reader" && o.Namespace == "kube-system" && ref.Kind == "Role" && ref.Name == "extension-apiserver-authentication-reader" {
				continue
			}
			if ref.Name != "trellis-controller" || (kind == "RoleBinding") != (ref.Kind == "Role") {
				t.Errorf("%s refers to %+v", o.Ref(), ref)
			}
		}
	}
}

// flattenRules lists every group/resource:verb a rule set grants, so two
// sets compare whatever their grouping into rules.
func flattenRules(t *testing.T, rules []rbacv1.PolicyRule) []string {
	t.Helper()
	var out []string
	for _, r := range rules {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("unexpected rule %+v", r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					out = append(out, g+"/"+res+":"+v)
				}
			}
		}
	}
	return out
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, x := range a {
		seen[x]++
	}
	for _, x := range b {
		seen[x]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}

func TestRenderErrors(t *testing.T) {
	id, wh := testMaterial(t)
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"unknown key", Options{Set: []string{"controller.replica=2"}}, "no such value"},
		{"map key", Options{Set: []string{"controller.resources=x"}}, "not a single value"},
		{"bad int", Options{Set: []string{"controller.replicas=three"}}, "want an integer"},
		{"bad bool", Options{Set: []string{"installNamespace=maybe"}}, "want true or false"},
		{"identity via set", Options{Set: []string{"identity.trustAnchorsPEM=x"}}, "--identity-*"},
		{"webhook tls via set", Options{Set: []string{"webhook.tls.keyPEM=x"}}, "--identity-*"},
		{"no equals", Options{Set: []string{"image.tag"}}, "want key=value"},
		{"bad failure policy", Options{Set: []string{"webhook.failurePolicy=Sometimes"}}, "want Ignore or Fail"},
		{"bad log level", Options{Set: []string{"proxy.logLevel=loud"}}, "proxy.logLevel"},
		{"bad anti-affinity", Options{Set: []string{"controller.podAntiAffinity=always"}}, "podAntiAffinity"},
		{"relative cni dir", Options{Set: []string{"cni.enabled=true,cni.confDir=etc/cni"}}, `cni.confDir "etc/cni": want an absolute host path`},
		{"empty cni dir", Options{Set: []string{"cni.enabled=true,cni.binDir="}}, "cni.binDir"},
		{"bad trust domain", Options{Set: []string{"identity.trustDomain=Not_A_Domain"}}, "trust domain"},
		{"bad accepted trust domain", Options{AcceptTrustDomains: []string{"cluster-b.local", "Not_A_Domain"}}, `identity.acceptTrustDomains "Not_A_Domain"`},
		{"accepting the local trust domain", Options{AcceptTrustDomains: []string{"cluster.local"}}, "that is identity.trustDomain"},
		{"bad gateway service type", Options{Set: []string{"multicluster.gateway.enabled=true,multicluster.gateway.serviceType=ClusterIP"}}, "want LoadBalancer or NodePort"},
		{"no identity", Options{Webhook: wh}, "identity.trustAnchorsPEM is required"},
		{"no webhook", Options{Identity: id}, "webhook.tls.crtPEM is required"},
		{"no issuer key", Options{Identity: Identity{TrustAnchorsPEM: id.TrustAnchorsPEM, IssuerCertPEM: id.IssuerCertPEM}, Webhook: wh}, "identity.issuer.tls.keyPEM is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.opts.Identity.TrustAnchorsPEM == nil && tc.name != "no identity" {
				tc.opts.Identity = id
			}
			if tc.opts.Webhook.CAPEM == nil && tc.name != "no webhook" {
				tc.opts.Webhook = wh
			}
			_, err := Render(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestAcceptTrustDomainsRendered: --identity-accept-trust-domains (and
// the chart value) reach the controller's flags, and nothing is rendered
// without them.
func TestAcceptTrustDomainsRendered(t *testing.T) {
	id, wh := testMaterial(t)
	for _, tc := range []struct {
		opts Options
		want string // the controller's flag; "" none
	}{
		{Options{}, ""},
		{Options{AcceptTrustDomains: []string{"cluster-b.local", "cluster-c.local"}}, "--accept-trust-domains=cluster-b.local,cluster-c.local"},
		{Options{Set: []string{"identity.acceptTrustDomains=cluster-b.local"}}, "--accept-trust-domains=cluster-b.local"},
	} {
		tc.opts.Version, tc.opts.Identity, tc.opts.Webhook = "dev", id, wh
		m, err := Render(tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, o := range m.Objects {
			if o.Kind.Kind == "Deployment" && o.Name == "trellis-controller" {
				for _, l := range strings.Split(string(o.YAML), "\n") {
					if strings.Contains(l, "--accept-trust-domains") {
						got = append(got, strings.Trim(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "-")), `"`))
					}
				}
			}
		}
		if want := []string{tc.want}; (tc.want == "" && len(got) != 0) || (tc.want != "" && !slices.Equal(got, want)) {
			t.Errorf("%+v: controller flags %q, want %q", tc.opts.AcceptTrustDomains, got, tc.want)
		}
	}
}

func TestExternalIssuerOmitsSecret(t *testing.T) {
	id, wh := testMaterial(t)
	m, err := Render(Options{Version: "dev", Identity: Identity{TrustAnchorsPEM: id.TrustAnchorsPEM}, Webhook: wh})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range m.Objects {
		if o.Kind.Kind == "Secret" && o.Name == IssuerSecretName {
			t.Fatal("an external issuer's Secret was rendered")
		}
	}
	if len(m.Objects) != 17 {
		t.Errorf("%d objects, want 17", len(m.Objects))
	}
	// The Deployment still mounts the (external) Secret.
	d := find[*appsv1.Deployment](t, m, "Deployment", "trellis-controller")
	found := false
	for _, v := range d.Spec.Template.Spec.Volumes {
		found = found || (v.Secret != nil && v.Secret.SecretName == IssuerSecretName)
	}
	if !found {
		t.Error("Deployment does not mount the issuer Secret")
	}
	// The bundle comes from the ConfigMap: ca.crt of an external Secret
	// holds only the CA of its issuer.
	found = false
	for _, v := range d.Spec.Template.Spec.Volumes {
		found = found || (v.ConfigMap != nil && v.ConfigMap.Name == "trellis-trust-anchors")
	}
	if !found {
		t.Error("Deployment does not mount the trellis-trust-anchors ConfigMap")
	}
}

func TestCheckIdentity(t *testing.T) {
	now := time.Now()
	id, _ := testMaterial(t)
	other, _ := testMaterial(t)
	if _, err := CheckIdentity(id, now); err != nil {
		t.Fatalf("generated identity: %v", err)
	}
	tests := []struct {
		name    string
		id      Identity
		wantErr string
	}{
		{"issuer from another anchor", Identity{TrustAnchorsPEM: other.TrustAnchorsPEM, IssuerCertPEM: id.IssuerCertPEM, IssuerKeyPEM: id.IssuerKeyPEM}, "does not chain"},
		{"key of another issuer", Identity{TrustAnchorsPEM: id.TrustAnchorsPEM, IssuerCertPEM: id.IssuerCertPEM, IssuerKeyPEM: other.IssuerKeyPEM}, "does not match"},
		{"garbage anchors", Identity{TrustAnchorsPEM: []byte("nope"), IssuerCertPEM: id.IssuerCertPEM, IssuerKeyPEM: id.IssuerKeyPEM}, "trust anchors"},
		{"key without cert", Identity{TrustAnchorsPEM: id.TrustAnchorsPEM, IssuerKeyPEM: id.IssuerKeyPEM}, "without its certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CheckIdentity(tc.id, now)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
		})
	}
	// An expired issuer is refused.
	old, err := GenerateIdentity("cluster.local", 48*time.Hour, time.Hour, now.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CheckIdentity(old, now); err == nil || !strings.Contains(err.Error(), "EXPIRED") {
		t.Fatalf("expired issuer: %v", err)
	}
}

func TestCheckWebhookTLS(t *testing.T) {
	now := time.Now()
	wh, err := GenerateWebhookTLS(Namespace, 365*24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckWebhookTLS(wh, Namespace, now); err != nil {
		t.Fatalf("fresh certificate: %v", err)
	}
	if err := CheckWebhookTLS(wh, "elsewhere", now); err == nil {
		t.Error("certificate accepted for another namespace's Service")
	}
	short, err := GenerateWebhookTLS(Namespace, 10*24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckWebhookTLS(short, Namespace, now); err == nil {
		t.Error("certificate expiring in 10 days kept")
	}
	other, err := GenerateWebhookTLS(Namespace, 365*24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckWebhookTLS(WebhookTLS{CAPEM: other.CAPEM, CertPEM: wh.CertPEM, KeyPEM: wh.KeyPEM}, Namespace, now); err == nil {
		t.Error("certificate accepted under another CA")
	}
	if err := CheckWebhookTLS(WebhookTLS{CAPEM: wh.CAPEM, CertPEM: wh.CertPEM, KeyPEM: other.KeyPEM}, Namespace, now); err == nil {
		t.Error("certificate accepted with another key")
	}
	certs, _ := pki.ParseCertsPEM(wh.CertPEM)
	if !contains(certs[0].DNSNames, "trellis-controller.trellis-system.svc") {
		t.Errorf("DNS names %v", certs[0].DNSNames)
	}
}

// TestLeaderElectionFlag: an HA install elects the status writer (--ha);
// a single replica does not need to.
func TestLeaderElectionFlag(t *testing.T) {
	id, wh := testMaterial(t)
	for _, ha := range []bool{false, true} {
		m, err := Render(Options{HA: ha, Version: "dev", Identity: id, Webhook: wh})
		if err != nil {
			t.Fatal(err)
		}
		d := find[*appsv1.Deployment](t, m, "Deployment", "trellis-controller")
		if got := slices.Contains(d.Spec.Template.Spec.Containers[0].Args, "--ha"); got != ha {
			t.Errorf("HA %v: --ha in args is %v", ha, got)
		}
	}
}
