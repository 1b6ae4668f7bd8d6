package meshh2

import (
	"bytes"
	"io"
	"net/http"
	"testing"
)

var benchResp = []byte(`{"id":1,"title":"The Left Hand of Darkness","author":"Ursula K. Le Guin"}`)

func benchHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(benchResp)
	})
}

// BenchmarkRoundTrip is one small request and response at a time over
// real TLS on loopback, client and server in process: the allocations and
// CPU of both ends of the mesh hop. The xnet pair is the reference
// (compare with benchstat or by ratio; nothing is asserted).
func BenchmarkRoundTrip(b *testing.B) {
	for _, kind := range []string{"lean", "xnet"} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			b.Run(kind+"/"+method, func(b *testing.B) {
				tt := newTestTLS(b)
				s := startServer(b, kind, tt, benchHandler())
				c := dialClient(b, kind, tt, s.addr)
				benchRoundTrips(b, c, method)
			})
		}
	}
}

func benchRoundTrips(b *testing.B, c client, method string) {
	body := []byte(`{"title":"Dune"}`)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		var rb io.Reader
		if method == http.MethodPost {
			rb = bytes.NewReader(body)
		}
		req, err := http.NewRequest(method, "https://mesh.test/books/1", rb)
		if err != nil {
			b.Fatal(err)
		}
		res, err := c.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		_ = res.Body.Close()
		if res.StatusCode != http.StatusOK {
			b.Fatalf("status %d", res.StatusCode)
		}
	}
}
