package e2e

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/test/harness"
)

// TestMetricsMatchTraffic sends a known number of successful and failing
// requests and checks both proxies counted exactly those.
func TestMetricsMatchTraffic(t *testing.T) {
	const n, m = 37, 5
	b := newBasicMesh(t)
	c := meshClient(b.client.OutboundAddr, 10*time.Second)
	defer c.CloseIdleConnections()
	for i := range n + m {
		path, want := "/", 200
		if i%8 == 7 { // i = 7, 15, 23, 31, 39: the failures among the successes
			path, want = "/status/500", 500
		}
		resp, _, err := get(t.Context(), c, path)
		if err != nil || resp.StatusCode != want {
			t.Fatalf("request %d %s: %v %v, want %d", i, path, resp, err, want)
		}
	}
	// Some opaque traffic too, for the TCP metrics of the opaque path.
	conn, br := connectTCP(t, b.client.OutboundAddr, tcpAuthority)
	if _, err := io.WriteString(conn, "tcp bytes"); err != nil {
		t.Fatal(err)
	}
	_ = conn.(*net.TCPConn).CloseWrite()
	if got, err := io.ReadAll(br); err != nil || string(got) != "tcp bytes" {
		t.Fatalf("opaque echo: %q %v", got, err)
	}
	conn.Close()

	for _, side := range []struct {
		px  *harness.Proxy
		dir string
	}{{b.client, "outbound"}, {b.server, "inbound"}} {
		t.Run(side.dir, func(t *testing.T) {
			httpLabels := map[string]string{"direction": side.dir, "dst_service": echoAuthority}
			with := func(kv ...string) map[string]string {
				out := map[string]string{}
				for k, v := range httpLabels {
					out[k] = v
				}
				for i := 0; i+1 < len(kv); i += 2 {
					out[kv[i]] = kv[i+1]
				}
				return out
			}
			// Responses are counted when their stream ends, which may be a
			// moment after the client read the last byte.
			ms := metricAtLeast(t, side.px, "trellis_responses_total", httpLabels, n+m, 5*time.Second)
			checks := []struct {
				name   string
				labels map[string]string
				want   float64
			}{
				{"trellis_requests_total", httpLabels, n + m},
				{"trellis_responses_total", httpLabels, n + m},
				{"trellis_responses_total", with("status_code", "200", "classification", "success"), n},
				{"trellis_responses_total", with("status_code", "500", "classification", "failure"), m},
				{"trellis_responses_total", with("grpc_status", ""), n + m},
				{"trellis_response_latency_seconds", httpLabels, n + m},
			}
			for _, ch := range checks {
				if v := ms.Value(ch.name, ch.labels); v != ch.want {
					t.Errorf("%s%v = %g, want %g\nseries:\n%s", ch.name, ch.labels, v, ch.want, ms.Series(ch.name))
				}
			}
			if v := ms.Value("trellis_request_errors_total", map[string]string{"direction": side.dir}); v != 0 {
				t.Errorf("trellis_request_errors_total = %g, want 0\n%s", v, ms.Series("trellis_request_errors_total"))
			}
			tcp := map[string]string{"direction": side.dir}
			ms = metricAtLeast(t, side.px, "trellis_tcp_close_total", map[string]string{"direction": side.dir, "dst_service": tcpAuthority}, 1, 5*time.Second)
			for _, name := range []string{"trellis_tcp_open_total", "trellis_tcp_read_bytes_total", "trellis_tcp_write_bytes_total"} {
				if v := ms.Value(name, tcp); v <= 0 {
					t.Errorf("%s{direction=%s} = %g, want > 0\n%s", name, side.dir, v, ms.Series(name))
				}
			}
			if v := ms.Value("trellis_tcp_read_bytes_total", map[string]string{"direction": side.dir, "dst_service": tcpAuthority}); v < float64(len("tcp bytes")) {
				t.Errorf("opaque stream read bytes = %g, want >= %d\n%s", v, len("tcp bytes"), ms.Series("trellis_tcp_read_bytes_total"))
			}
		})
	}
}
