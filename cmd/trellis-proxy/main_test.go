package main

import (
	"flag"
	"io"
	"testing"
)

// TestExplicitlySet: a flag counts as given on the command line or in its
// environment variable, and only then (an external workload's default
// inbound policy depends on it).
func TestExplicitlySet(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want bool
	}{
		{"default", nil, nil, false},
		{"flag", []string{"--default-inbound-policy", "all-unauthenticated"}, nil, true},
		{"environment", nil, map[string]string{"TRELLIS_PROXY_DEFAULT_INBOUND_POLICY": "audit"}, true},
		{"another flag", []string{"--other", "x"}, map[string]string{"TRELLIS_PROXY_OTHER": "y"}, false},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.String("default-inbound-policy", "all-unauthenticated", "")
		fs.String("other", "", "")
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
		if got := explicitlySet(fs, "default-inbound-policy", lookup); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
