package dashboard

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/viz/model"
	"github.com/trellis-mesh/trellis/viz/scrape"
)

// exposition is a proxy's /metrics as the proxy writes it (the names and
// labels of docs/metrics.md).
const exposition = `# TYPE trellis_identity_cert_expiry_timestamp_seconds gauge
trellis_identity_cert_expiry_timestamp_seconds 1.7964e+09
# TYPE trellis_inbound_authz_allow_total counter
trellis_inbound_authz_allow_total{authz="web-to-books",client_id="spiffe://cluster.local/ns/demo/sa/web",route="",server="books",tls="true"} 120
trellis_inbound_authz_allow_total{authz="x",client_id="",route="",server="books",tls="false"} 0
# TYPE trellis_inbound_authz_deny_total counter
trellis_inbound_authz_deny_total{client_id="spiffe://cluster.local/ns/demo/sa/intruder",reason="unauthorized",route="r1",server="books",tls="true"} 7
`

func TestScraped(t *testing.T) {
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(exposition)) }))
	defer proxy.Close()
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "no", http.StatusServiceUnavailable) }))
	defer broken.Close()
	books := model.Resource{Kind: "workloads", Name: "books"}
	s := &Scraped{Targets: []scrape.Target{
		{Resource: books, Identity: "spiffe://cluster.local/ns/demo/sa/books", MetricsURL: proxy.URL},
		{Resource: model.Resource{Kind: "workloads", Name: "web"}, Identity: "spiffe://cluster.local/ns/demo/sa/web", MetricsURL: broken.URL},
	}}
	ids, err := s.Identities(context.Background(), "")
	if err != nil || len(ids) != 2 {
		t.Fatalf("identities %+v, %v: want both, one unknown", ids, err)
	}
	if !ids[0].NotAfter.Equal(time.Unix(1796400000, 0)) || !ids[1].NotAfter.IsZero() {
		t.Errorf("expiries %v, %v", ids[0].NotAfter, ids[1].NotAfter)
	}
	ds, err := s.Decisions(context.Background(), "", time.Minute)
	if err != nil || len(ds) != 2 {
		t.Fatalf("decisions %+v, %v: want the 2 non-zero series", ds, err)
	}
	want := map[string]Decision{
		"allow": {Resource: books, Decision: "allow", Server: "books", Authz: "web-to-books", ClientID: "spiffe://cluster.local/ns/demo/sa/web", TLS: true, Count: 120},
		"deny":  {Resource: books, Decision: "deny", Server: "books", Route: "r1", Reason: "unauthorized", ClientID: "spiffe://cluster.local/ns/demo/sa/intruder", TLS: true, Count: 7},
	}
	for _, d := range ds {
		if d != want[d.Decision] {
			t.Errorf("decision %+v, want %+v", d, want[d.Decision])
		}
	}
	s.Targets = s.Targets[1:]
	if _, err := s.Identities(context.Background(), ""); err == nil {
		t.Error("every proxy unreadable: want an error")
	}
}
