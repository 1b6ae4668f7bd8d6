package install

import (
	"bytes"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// TestMulticlusterRender: multicluster.enabled adds the controller's
// --multicluster and the rights to write mirror Services and
// EndpointSlices, and nothing else; off, it renders exactly the default.
func TestMulticlusterRender(t *testing.T) {
	id, wh := testMaterial(t)
	render := func(set ...string) *Manifest {
		t.Helper()
		m, err := Render(Options{Version: "dev", Identity: id, Webhook: wh, Set: set})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	base := render()
	// The mirror writes; reading them is already granted, and the link
	// Secrets are read through the namespaced Role's existing secrets rule.
	writes := []string{
		"/services:create", "/services:update", "/services:patch", "/services:delete",
		"discovery.k8s.io/endpointslices:create", "discovery.k8s.io/endpointslices:update",
		"discovery.k8s.io/endpointslices:patch", "discovery.k8s.io/endpointslices:delete",
	}
	baseRules := flattenRules(t, find[*rbacv1.ClusterRole](t, base, "ClusterRole", "trellis-controller").Rules)
	baseRole := flattenRules(t, find[*rbacv1.Role](t, base, "Role", "trellis-controller").Rules)
	if !slices.Contains(baseRole, "/secrets:list") || !slices.Contains(baseRole, "/secrets:watch") {
		t.Fatalf("the Role no longer reads Secrets (%v): the link Secrets need it", baseRole)
	}
	tests := []struct {
		name      string
		set       []string
		wantArg   bool
		wantRules []string
	}{
		{"default", nil, false, baseRules},
		{"off", []string{"multicluster.enabled=false"}, false, baseRules},
		{"on", []string{"multicluster.enabled=true"}, true, append(slices.Clone(baseRules), writes...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := render(tc.set...)
			cr := find[*rbacv1.ClusterRole](t, m, "ClusterRole", "trellis-controller")
			if got := flattenRules(t, cr.Rules); !sameSet(got, tc.wantRules) {
				t.Errorf("ClusterRole grants\n  %v\nwant\n  %v", got, tc.wantRules)
			}
			role := find[*rbacv1.Role](t, m, "Role", "trellis-controller")
			if got := flattenRules(t, role.Rules); !sameSet(got, baseRole) {
				t.Errorf("Role grants\n  %v\nwant, as without multicluster,\n  %v", got, baseRole)
			}
			d := find[*appsv1.Deployment](t, m, "Deployment", "trellis-controller")
			if got := slices.Contains(d.Spec.Template.Spec.Containers[0].Args, "--multicluster"); got != tc.wantArg {
				t.Errorf("--multicluster in the controller's args: %v, want %v", got, tc.wantArg)
			}
			// Every other object is the default's, byte for byte; off,
			// the whole manifest is.
			if !tc.wantArg && !bytes.Equal(m.YAML(), base.YAML()) {
				t.Error("multicluster off renders differently from the default")
			}
			if len(m.Objects) != len(base.Objects) {
				t.Fatalf("%d objects, want %d", len(m.Objects), len(base.Objects))
			}
			for i, o := range m.Objects {
				if o.Ref() == "ClusterRole trellis-controller" || o.Ref() == "Deployment "+Namespace+"/trellis-controller" {
					continue
				}
				if !bytes.Equal(o.YAML, base.Objects[i].YAML) {
					t.Errorf("%s differs from the default", o.Ref())
				}
			}
		})
	}
}

// TestGatewayRender: multicluster.gateway.enabled adds the gateway's
// ServiceAccount (no token mounted, bound to no role), Deployment and
// Service, and nothing else; the proxy there is a gateway (its address),
// with an identity of its own and valid resources.
func TestGatewayRender(t *testing.T) {
	id, wh := testMaterial(t)
	base, err := Render(Options{Version: "dev", Identity: id, Webhook: wh})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Render(Options{Version: "dev", Identity: id, Webhook: wh, Set: []string{
		"multicluster.gateway.enabled=true", "multicluster.gateway.serviceType=NodePort", "multicluster.gateway.nodePort=30418",
		"identity.trustDomain=cluster-b.local",
	}})
	if err != nil {
		t.Fatal(err)
	}
	added := map[string]bool{}
	for _, o := range m.Objects {
		added[o.Ref()] = true
	}
	for _, o := range base.Objects {
		delete(added, o.Ref())
	}
	want := map[string]bool{"ServiceAccount " + Namespace + "/trellis-gateway": true,
		"Deployment " + Namespace + "/trellis-gateway": true, "Service " + Namespace + "/trellis-gateway": true}
	if len(added) != len(want) {
		t.Errorf("gateway on added %v, want %v", added, want)
	}
	for ref := range want {
		if !added[ref] {
			t.Errorf("%s not rendered", ref)
		}
	}
	for _, o := range m.Objects {
		if o.Kind.Kind != "ClusterRoleBinding" && o.Kind.Kind != "RoleBinding" {
			continue
		}
		var subjects []rbacv1.Subject
		switch b := typed(t, o).(type) {
		case *rbacv1.ClusterRoleBinding:
			subjects = b.Subjects
		case *rbacv1.RoleBinding:
			subjects = b.Subjects
		}
		for _, s := range subjects {
			if s.Name == "trellis-gateway" {
				t.Errorf("%s grants the gateway's ServiceAccount a role", o.Ref())
			}
		}
	}
	d := find[*appsv1.Deployment](t, m, "Deployment", "trellis-gateway")
	pod := d.Spec.Template.Spec
	if pod.ServiceAccountName != "trellis-gateway" || pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("gateway pod: service account %q, automount %v; want trellis-gateway without the API token", pod.ServiceAccountName, pod.AutomountServiceAccountToken)
	}
	env := map[string]string{}
	for _, e := range pod.Containers[0].Env {
		env[e.Name] = e.Value
	}
	if env["TRELLIS_PROXY_GATEWAY_ADDR"] != "0.0.0.0:4180" || env["TRELLIS_PROXY_IDENTITY"] != "spiffe://cluster-b.local/ns/"+Namespace+"/sa/trellis-gateway" ||
		env["TRELLIS_PROXY_INBOUND_ADDR"] != "127.0.0.1:4143" {
		t.Errorf("gateway env %v", env)
	}
	res := pod.Containers[0].Resources
	for name, q := range map[string]resource.Quantity{"requests.cpu": res.Requests[corev1.ResourceCPU], "requests.memory": res.Requests[corev1.ResourceMemory]} {
		if q.IsZero() {
			t.Errorf("gateway %s unset", name)
		}
	}
	if _, ok := res.Limits[corev1.ResourceCPU]; ok {
		t.Errorf("gateway cpu limit %v, want none (proxy.resources.limits.cpu is empty)", res.Limits[corev1.ResourceCPU])
	}
	svc := find[*corev1.Service](t, m, "Service", "trellis-gateway")
	if svc.Spec.Type != corev1.ServiceTypeNodePort || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].NodePort != 30418 || svc.Spec.Ports[0].Port != 4180 {
		t.Errorf("gateway Service %+v", svc.Spec)
	}
}
