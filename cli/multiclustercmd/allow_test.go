package multiclustercmd

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// run executes cmd with args and returns its stdout and stderr.
func run(t *testing.T, cmd *cobra.Command, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err = cmd.Execute()
	return out.String(), errOut.String(), err
}

// allowed are the objects of allow's YAML, decoded strictly.
type allowed struct {
	sa      corev1.ServiceAccount
	role    rbacv1.ClusterRole
	binding rbacv1.ClusterRoleBinding
	secret  corev1.Secret
}

func decodeAllow(t *testing.T, out string) allowed {
	t.Helper()
	docs := strings.Split(out, "\n---\n")
	if len(docs) != 4 {
		t.Fatalf("%d documents, want 4:\n%s", len(docs), out)
	}
	var a allowed
	for i, into := range []any{&a.sa, &a.role, &a.binding, &a.secret} {
		if err := yaml.UnmarshalStrict([]byte(docs[i]), into); err != nil {
			t.Fatalf("document %d: %v\n%s", i, err, docs[i])
		}
	}
	return a
}

// grants lists group/resource:verb of rules.
func grants(rules []rbacv1.PolicyRule) []string {
	var out []string
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					out = append(out, g+"/"+res+":"+v)
				}
			}
		}
		if len(r.ResourceNames)+len(r.NonResourceURLs) > 0 {
			out = append(out, "unexpected names or URLs")
		}
	}
	slices.Sort(out)
	return out
}

func TestAllow(t *testing.T) {
	// Least privilege: reads of what the mirror copies, nothing else.
	want := []string{
		"/pods:get", "/pods:list", "/pods:watch",
		"/services:get", "/services:list", "/services:watch",
		"discovery.k8s.io/endpointslices:get", "discovery.k8s.io/endpointslices:list", "discovery.k8s.io/endpointslices:watch",
	}
	slices.Sort(want)
	tests := []struct {
		name, linked, ns string
		args             []string
	}{
		{"default namespace", "east", "trellis-system", nil},
		{"own namespace", "a", "mesh", []string{"-n", "mesh"}},
		{"longest name", "abcdefghij0123456789", "trellis-system", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := run(t, New(), append([]string{"allow", "--linked-cluster-name", tc.linked}, tc.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			a := decodeAllow(t, out)
			name := "trellis-link-" + tc.linked
			if a.sa.Kind != "ServiceAccount" || a.sa.Name != name || a.sa.Namespace != tc.ns {
				t.Errorf("ServiceAccount %s %s/%s", a.sa.Kind, a.sa.Namespace, a.sa.Name)
			}
			if got := grants(a.role.Rules); !slices.Equal(got, want) {
				t.Errorf("ClusterRole %s grants\n  %v\nwant\n  %v", a.role.Name, got, want)
			}
			if a.role.Kind != "ClusterRole" || a.role.Name != "trellis-multicluster-reader" || a.role.AggregationRule != nil {
				t.Errorf("ClusterRole %s %q, aggregation %v", a.role.Kind, a.role.Name, a.role.AggregationRule)
			}
			b := a.binding
			if b.Name != name || b.RoleRef != (rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "trellis-multicluster-reader"}) ||
				len(b.Subjects) != 1 || b.Subjects[0] != (rbacv1.Subject{Kind: "ServiceAccount", Name: name, Namespace: tc.ns}) {
				t.Errorf("ClusterRoleBinding %+v", b)
			}
			s := a.secret
			if s.Name != name+"-token" || s.Namespace != tc.ns || s.Type != corev1.SecretTypeServiceAccountToken ||
				s.Annotations[corev1.ServiceAccountNameKey] != name || len(s.Data) != 0 {
				t.Errorf("Secret %+v", s)
			}
			for _, m := range []map[string]string{a.sa.Labels, a.binding.Labels, a.secret.Labels} {
				if m["app.kubernetes.io/part-of"] != "trellis" || m["trellis.io/link"] != tc.linked {
					t.Errorf("labels %v", m)
				}
			}
		})
	}
}

func TestAllowJSON(t *testing.T) {
	out, _, err := run(t, New(), "allow", "--linked-cluster-name", "b", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		APIVersion, Kind string
		Items            []struct{ Kind, APIVersion string }
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, i := range list.Items {
		kinds = append(kinds, i.Kind)
	}
	if list.APIVersion != "v1" || list.Kind != "List" || !slices.Equal(kinds, []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Secret"}) {
		t.Errorf("%s %s of %v", list.APIVersion, list.Kind, kinds)
	}
}

func TestAllowRefusesBadNames(t *testing.T) {
	for _, tc := range []struct{ name, args, want string }{
		{"upper case", "--linked-cluster-name=East", "--linked-cluster-name"},
		{"too long", "--linked-cluster-name=abcdefghij0123456789x", "at most 20"},
		{"dot", "--linked-cluster-name=a.b", "DNS label"},
		{"empty", "--linked-cluster-name=", "--linked-cluster-name"},
		{"format", "-o=text", "-o"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"allow", tc.args}
			if !strings.HasPrefix(tc.args, "--linked") {
				args = append(args, "--linked-cluster-name=a")
			}
			out, _, err := run(t, New(), args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v: %v, want an error naming %q", args, err, tc.want)
			}
			if out != "" {
				t.Errorf("printed %q", out)
			}
		})
	}
}
