package tap

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"

	"google.golang.org/protobuf/proto"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
)

// FuzzEvents: whatever bytes a request and its response carry (method,
// authority, path, header names and values, grpc-status), the tap's
// events marshal (one invalid string would break the whole stream), and
// no header value is ever in them.
func FuzzEvents(f *testing.F) {
	f.Add("GET", "books.demo:80", "/books/1", "X-Name", "value", "application/grpc", "5")
	f.Add("P\xffST", "h\xc3", "/\xff\xfe", "Cookie", "\x00secret", "application/grpc+proto", "-1")
	f.Fuzz(func(t *testing.T, method, host, path, name, value, ctype, grpc string) {
		h, _, _ := testHub(t)
		s := subscribe(t, h, &apiv1.ObserveRequest{HeaderNames: true, BodyBytes: 16}, 64)
		const secret = "\x01VALUE-MARK\x02"
		r := &http.Request{Method: method, Host: host, URL: &url.URL{Path: path}, Header: http.Header{name: {secret + value}}}
		a := app{status: 200, header: http.Header{"Content-Type": {ctype}, name: {secret + value}}, body: "body",
			trailer: http.Header{"Grpc-Status": {grpc}}}
		w := httptest.NewRecorder()
		if err := h.Layer(metrics.Inbound)(a).Serve(&pipeline.Exchange{W: w, R: r}); err != nil {
			t.Fatal(err)
		}
		for _, ev := range queued(s) {
			b, err := proto.Marshal(ev)
			if err != nil {
				t.Fatalf("event does not marshal: %v", err)
			}
			if bytes.Contains(b, []byte(secret)) {
				t.Fatal("a header value is in an event")
			}
			if re := ev.GetResponseEnd(); re != nil && re.GrpcStatus < -1 {
				t.Fatalf("grpc_status %d", re.GrpcStatus)
			}
		}
	})
}

// FuzzObserveRequest: any ObserveRequest a client sends is refused or
// served within the proxy's limits.
func FuzzObserveRequest(f *testing.F) {
	for _, req := range []*apiv1.ObserveRequest{
		{}, {MaxRps: 1 << 31, BodyBytes: 1 << 31, Sample: 0.5, Limit: 3},
		{Match: &apiv1.TapMatch{Direction: "inbound", PathPrefix: "/x"}},
	} {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req apiv1.ObserveRequest
		if proto.Unmarshal(data, &req) != nil {
			return
		}
		h, _, _ := testHub(t)
		s, err := h.Subscribe(&req, 1)
		if err != nil {
			return
		}
		defer h.Unsubscribe(s)
		if s.MaxRPS() < 1 || s.MaxRPS() > MaxMaxRPS || s.BodyBytes() < 0 || s.BodyBytes() > MaxBodyBytes || !(s.sample > 0 && s.sample <= 1) {
			t.Fatalf("limits out of range: rps %d body %d sample %v", s.MaxRPS(), s.BodyBytes(), s.sample)
		}
	})
}

// FuzzParseGRPCStatus: -1 or the code the value spells.
func FuzzParseGRPCStatus(f *testing.F) {
	for _, s := range []string{"0", "16", "", "-3", "+3", "2147483648", "0x1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		n := ParseGRPCStatus(v)
		if n == -1 {
			return
		}
		if n < 0 {
			t.Fatalf("%q -> %d", v, n)
		}
		if back, err := strconv.ParseInt(v, 10, 32); err != nil || int32(back) != n {
			t.Fatalf("%q -> %d, not its value", v, n)
		}
	})
}
