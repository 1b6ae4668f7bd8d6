package install

import (
	"bytes"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
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
