package e2e

import (
	"net/http"
	"testing"
	"time"
)

// hybridGroup is the post-quantum hybrid key exchange Go's TLS negotiates
// by default (tls.X25519MLKEM768.String()).
const hybridGroup = "X25519MLKEM768"

// TestPostQuantumKeyExchange proves (issue 12, part 5) that mesh mTLS
// between two real proxies, and each proxy's TLS to the real controller,
// negotiate the hybrid X25519MLKEM768 key exchange: every completed
// handshake the proxies count in trellis_tls_handshakes_total (labelled
// from tls.ConnectionState.CurveID) is in that group, in each direction.
func TestPostQuantumKeyExchange(t *testing.T) {
	b := newBasicMesh(t)
	c := meshClient(b.client.OutboundAddr, 10*time.Second)
	defer c.CloseIdleConnections()
	resp, _, err := get(t.Context(), c, "/")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET / through the mesh: %v %v", resp, err)
	}
	for _, tc := range []struct {
		who  string
		dirs []string
	}{
		{"server", []string{"inbound", "control_plane"}},
		{"client", []string{"outbound", "control_plane"}},
	} {
		px := b.server
		if tc.who == "client" {
			px = b.client
		}
		for _, dir := range tc.dirs {
			ms := metricAtLeast(t, px, "trellis_tls_handshakes_total", map[string]string{"direction": dir, "group": hybridGroup}, 1, 10*time.Second)
			t.Logf("%s proxy, %s: %g handshakes with %s", tc.who, dir, ms.Value("trellis_tls_handshakes_total", map[string]string{"direction": dir, "group": hybridGroup}), hybridGroup)
		}
		ms := metricAtLeast(t, px, "trellis_tls_handshakes_total", nil, 1, time.Second)
		all, _ := ms.Sum("trellis_tls_handshakes_total", nil)
		hybrid, _ := ms.Sum("trellis_tls_handshakes_total", map[string]string{"group": hybridGroup})
		if all != hybrid {
			t.Errorf("%s proxy: %g of %g handshakes in another group than %s:\n%s", tc.who, all-hybrid, all, hybridGroup, ms.Series("trellis_tls_handshakes_total"))
		}
		if fails := ms.Value("trellis_tls_handshake_errors_total", nil); fails != 0 {
			t.Errorf("%s proxy: %g failed handshakes:\n%s", tc.who, fails, ms.Series("trellis_tls_handshake_errors_total"))
		}
	}
}
