package model

import "testing"

func TestKindOf(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"deploy", "deployments", true},
		{"Deployment", "deployments", true},
		{"po", "pods", true},
		{"svc", "services", true},
		{"ns", "namespaces", true},
		{"wl", "workloads", true},
		{"sts", "statefulsets", true},
		{"ingress", "", false},
		{"", "", false},
	} {
		got, ok := KindOf(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("KindOf(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
