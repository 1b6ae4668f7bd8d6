package tapfan

import (
	"strings"
	"testing"
)

// TestReadObserveRequest: what every proxy would refuse is refused here,
// so the tap APIs answer 400 instead of a stream no proxy serves.
func TestReadObserveRequest(t *testing.T) {
	long := strings.Repeat("a", 4096)
	for _, tc := range []struct {
		name, body string
		err        string
	}{
		{"empty", "", ""},
		{"defaults", "{}", ""},
		{"usual", `{"limit":3,"maxRps":10,"sample":0.5,"bodyBytes":1024,"match":{"pathPrefix":"/books","direction":"inbound"}}`, ""},
		{"longest match field", `{"match":{"pathPrefix":"` + long + `"}}`, ""},
		{"not JSON", "limit=3", "syntax"},
		{"unknown field", `{"limt":3}`, "unknown field"},
		{"body cap", `{"bodyBytes":65537}`, "bodyBytes 65537"},
		{"sample", `{"sample":2}`, "sample"},
		{"bad direction", `{"match":{"direction":"sideways"}}`, "match.direction"},
		{"match field too long", `{"match":{"authority":"` + long + `a"}}`, "match.authority"},
		{"encoded past the proxies' size", `{"match":{"authority":"` + long + `","pathPrefix":"` + long + `","method":"` + long + `","fromIdentity":"` + long + `","toIdentity":"` + long + `"}}`, "bytes encoded"},
		{"body past 64 KiB", `{"match":{"pathPrefix":"` + strings.Repeat(`\u0061`, 11000) + `"}}`, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := ReadObserveRequest(strings.NewReader(tc.body))
			if tc.err == "" {
				if err != nil || req == nil {
					t.Fatalf("ReadObserveRequest = %v, %v", req, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("ReadObserveRequest = %v, %v; want an error with %q", req, err, tc.err)
			}
		})
	}
}
