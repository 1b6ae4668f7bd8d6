package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestAuthzLastSeen: every decision sets when its server, route and client
// were last seen (what `trellis policy suggest --since` filters on), per
// decision, and a client past the bound is reported as (other).
func TestAuthzLastSeen(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := NewAuthz(reg)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_800_000_000, 0)
	clock := t0
	a.now = func() time.Time { return clock }
	web := AuthzLabels{Server: "shop/books", Authz: "from-web", ClientID: "spiffe://cluster.local/ns/shop/sa/web", TLS: true}
	a.Allow(web)
	clock = t0.Add(90 * time.Second)
	a.Allow(web)
	a.Deny(AuthzLabels{Server: "shop/books", ClientID: "spiffe://cluster.local/ns/shop/sa/x", TLS: true, Reason: "unauthorized"})
	a.Audit(AuthzLabels{Server: "shop/books", Route: "admin"})

	want := `
# HELP trellis_inbound_authz_last_seen_timestamp_seconds When the proxy last made this decision (allow, deny, audit) for this server, route and client, in Unix seconds.
# TYPE trellis_inbound_authz_last_seen_timestamp_seconds gauge
trellis_inbound_authz_last_seen_timestamp_seconds{client_id="",decision="audit",route="admin",server="shop/books",tls="false"} 1.80000009e+09
trellis_inbound_authz_last_seen_timestamp_seconds{client_id="spiffe://cluster.local/ns/shop/sa/web",decision="allow",route="",server="shop/books",tls="true"} 1.80000009e+09
trellis_inbound_authz_last_seen_timestamp_seconds{client_id="spiffe://cluster.local/ns/shop/sa/x",decision="deny",route="",server="shop/books",tls="true"} 1.80000009e+09
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "trellis_inbound_authz_last_seen_timestamp_seconds"); err != nil {
		t.Error(err)
	}
	if got := testutil.ToFloat64(a.allow.WithLabelValues("shop/books", "", "from-web", web.ClientID, "true")); got != 2 {
		t.Errorf("allow counter %v, want 2", got)
	}

	// Past the bound, a client is (other), and so is its last-seen series.
	for i := 0; i < MaxAuthzClients+3; i++ {
		a.Allow(AuthzLabels{Server: "s", ClientID: "spiffe://x/ns/n/sa/c" + strings.Repeat("a", i%7) + string(rune('a'+i%26)) + time.Duration(i).String()})
	}
	if got := testutil.ToFloat64(a.lastSeen.WithLabelValues("allow", "s", "", OtherClient, "false")); got != float64(clock.Unix()) {
		t.Errorf("last seen of (other): %v, want %d", got, clock.Unix())
	}
	if n := testutil.CollectAndCount(a.lastSeen); n > MaxAuthzClients+4 {
		t.Errorf("%d last-seen series: the client bound does not hold", n)
	}
}
