package main

import (
	"strings"
	"testing"
)

func TestOurs(t *testing.T) {
	cases := map[string]bool{
		"KUBE-SERVICES": true, "KUBE-SVC-ABC": true, "CNI-HOSTPORT-DNAT": true,
		"OUTPUT": false, "TRELLIS_OUTPUT": false, "DOCKER": false, "kube-proxy": false, "": false,
	}
	for chain, want := range cases {
		if got := ours(chain); got != want {
			t.Errorf("ours(%q) = %v, want %v", chain, got, want)
		}
	}
}

func TestNftHasRules(t *testing.T) {
	empty := "table ip nat {\n\tchain PREROUTING {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t}\n}\n"
	withRule := "table ip nat {\n\tchain OUTPUT {\n\t\ttype nat hook output priority -100; policy accept;\n\t\tmeta l4proto tcp redirect to :4140\n\t}\n}\n"
	if nftHasRules(empty) {
		t.Error("empty table reported as having rules")
	}
	if !nftHasRules(withRule) {
		t.Error("rule not seen")
	}
}

func TestUnescapeMount(t *testing.T) {
	cases := map[string]string{
		`/var/tmp/a\040b`: "/var/tmp/a b",
		`/plain`:          "/plain",
		`/tab\011x`:       "/tab\tx",
		`/bad\09`:         `/bad\09`,
		`/end\`:           `/end\`,
	}
	for in, want := range cases {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzUnescapeMount(f *testing.F) {
	for _, s := range []string{`/a\040b`, `\`, `\0`, `\777`, `/x/y`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := unescapeMount(s)
		if len(got) > len(s) {
			t.Fatalf("unescaping grew %q to %q", s, got)
		}
		if !strings.Contains(s, `\`) && got != s {
			t.Fatalf("changed %q without escapes", s)
		}
	})
}

func FuzzNftHasRules(f *testing.F) {
	f.Add("table ip nat {\n}\n")
	f.Add("table ip nat {\n\tchain X {\n\t\tcounter\n\t}\n}\n")
	f.Fuzz(func(t *testing.T, s string) {
		_ = nftHasRules(s) // must not panic or hang
	})
}

func TestNormalizeRef(t *testing.T) {
	cases := map[string]string{
		"trellis/proxy:dev":                     "docker.io/trellis/proxy:dev",
		"busybox:1":                             "docker.io/library/busybox:1",
		"ghcr.io/trellis-mesh/trellis-proxy:v1": "ghcr.io/trellis-mesh/trellis-proxy:v1",
		"localhost/x:1":                         "localhost/x:1",
		"registry:5000/x:1":                     "registry:5000/x:1",
	}
	for in, want := range cases {
		if got := normalizeRef(in); got != want {
			t.Errorf("normalizeRef(%q) = %q, want %q", in, got, want)
		}
	}
}
