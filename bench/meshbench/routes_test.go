package main

import (
	"io"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/controller/store"
	"github.com/trellis-mesh/trellis/internal/routemodel"
)

// TestRoutesStoreFile runs each config's store file through the local
// store's own loader (the one the controller uses): the file must be
// accepted with n routes, and the request's path must be taken by the
// middle route alone, which carries the marker and, for the retry config
// only, the retry annotations. A generator that breaks any of this would
// measure something else than it says.
func TestRoutesStoreFile(t *testing.T) {
	o, err := parseRoutesFlags([]string{"-routes", "0,1,10,100,37"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	base := storeFile(8080, 9090, "127.0.0.1:7001", "server-token-0123456789", "127.0.0.1:7002", "client-token-0123456789")
	configs := routeConfigs(o)
	if len(configs) != 6 || configs[len(configs)-1].name != "1 route + retry" {
		t.Fatalf("configs: %+v", configs)
	}
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := store.Parse([]byte(base + routesYAML(c, o.routeHeaderMarker)))
			if err != nil {
				t.Fatal(err)
			}
			if got := len(cfg.Routes.Routes); got != c.n {
				t.Fatalf("%d routes in the store, want %d", got, c.n)
			}
			var taking []routemodel.Route
			for _, r := range cfg.Routes.Routes {
				if takes(r, c.requestPath()) {
					taking = append(taking, r)
				}
			}
			if c.n == 0 {
				return
			}
			if len(taking) != 1 {
				t.Fatalf("%d routes take %s, want 1", len(taking), c.requestPath())
			}
			r := taking[0]
			_, hasRetry := r.Meta.Annotations[routemodel.AnnotationRetryLimit]
			if hasRetry != c.retry {
				t.Errorf("route %s: retry annotation %v, want %v", r.Meta.Name, hasRetry, c.retry)
			}
			var marked bool
			for _, f := range r.Rules[0].Filters {
				if f.ResponseHeaderModifier != nil && len(f.ResponseHeaderModifier.Set) == 1 &&
					string(f.ResponseHeaderModifier.Set[0].Name) == o.routeHeaderMarker && f.ResponseHeaderModifier.Set[0].Value == c.marker {
					marked = true
				}
			}
			if !marked {
				t.Errorf("route %s does not set %s: %s", r.Meta.Name, o.routeHeaderMarker, c.marker)
			}
		})
	}
}

// takes reports whether a route's prefix matches take a GET of path with
// no headers (its header and regex routes take none of the bench's
// requests: no x-user header, no /re path).
func takes(r routemodel.Route, path string) bool {
	for _, rule := range r.Rules {
		for _, m := range rule.Matches {
			if len(m.Headers) > 0 || m.PathRegex != "" || m.PathPrefix == "" || (m.Method != "" && m.Method != "GET") {
				continue
			}
			if path == m.PathPrefix || strings.HasPrefix(path, strings.TrimSuffix(m.PathPrefix, "/")+"/") {
				return true
			}
		}
	}
	return false
}

func TestRoutesFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr bool
	}{
		{nil, false},
		{[]string{"-routes", "0,10,10,100", "-retry=false"}, false},
		{[]string{"-routes", "x"}, true},
		{[]string{"-routes", "-1"}, true},
		{[]string{"-routes", "1001"}, true},
		{[]string{"-rounds", "0"}, true},
		{[]string{"-duration", "0s"}, true},
		{[]string{"extra"}, true},
	} {
		o, err := parseRoutesFlags(tc.args, io.Discard)
		if (err != nil) != tc.wantErr {
			t.Errorf("%q: err %v, want error %v", tc.args, err, tc.wantErr)
		}
		if err == nil && len(o.counts) == 0 {
			t.Errorf("%q: no counts", tc.args)
		}
	}
}

func TestRoutesVerdict(t *testing.T) {
	for _, tc := range []struct {
		row  routesRow
		want string
	}{
		{routesRow{clientRatio: 1.01, lo: 0.98, hi: 1.04}, "met"},
		{routesRow{clientRatio: 1.10, lo: 1.06, hi: 1.20}, "missed by 5.0 points"},
		{routesRow{clientRatio: 1.03, lo: 0.90, hi: 1.20}, "undecided"},
		{routesRow{clientRatio: 1.06, lo: 1.00, hi: 1.07}, "undecided"},
	} {
		if got := routesVerdict(tc.row, 5); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%+v: %q, want %q", tc.row, got, tc.want)
		}
	}
}
