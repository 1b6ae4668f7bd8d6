package local

import "testing"

func TestParseLocalPath(t *testing.T) {
	for _, tc := range []struct {
		path, ns, name string
		ok             bool
	}{
		{tapPrefix + "tap", "", "", true},
		{tapPrefix + "namespaces/demo/tap", "demo", "", true},
		{tapPrefix + "namespaces/demo/workloads/web/tap", "demo", "web", true},
		{tapPrefix + "workloads/web/tap", "", "web", true},
		{tapPrefix + "namespaces//tap", "", "", false},
		{tapPrefix + "workloads//tap", "", "", false},
		{tapPrefix + "deployments/web/tap", "", "", false},
		{tapPrefix + "workloads/web/tap/x", "", "", false},
		{"/apis/other/v1/watch/tap", "", "", false},
	} {
		ns, name, ok := parseLocalPath(tc.path)
		if ns != tc.ns && tc.ok || name != tc.name && tc.ok || ok != tc.ok {
			t.Errorf("parseLocalPath(%q) = %q, %q, %v; want %q, %q, %v", tc.path, ns, name, ok, tc.ns, tc.name, tc.ok)
		}
	}
}
