//lint:file-ignore SA1019 the deprecated peer_identity match is still honoured: tested here

package tap

import (
	"bytes"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/tapreq"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

const (
	self   = "spiffe://cluster.local/ns/demo/sa/web"
	peerID = "spiffe://cluster.local/ns/demo/sa/books"
)

// testHub is a hub whose clock the test moves.
func testHub(t testing.TB) (*Hub, *Metrics, *time.Time) {
	t.Helper()
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	h := NewHub(self, m)
	now := time.Date(2026, 12, 3, 14, 0, 0, 0, time.UTC)
	h.now = func() time.Time { return now }
	return h, m, &now
}

func subscribe(t *testing.T, h *Hub, req *apiv1.ObserveRequest, queue int) *Sub {
	t.Helper()
	s, err := h.Subscribe(req, queue)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Unsubscribe(s) })
	return s
}

// app is what the chain after the tap stage does in these tests: it
// labels the exchange as the route and upstream stages would (outbound)
// and answers like an app.
type app struct {
	status   int
	header   http.Header
	body     string
	trailer  http.Header
	err      error
	readBody bool
	// broken: the response's source fails after the body (Wrote's error).
	broken error
}

func (a app) Serve(x *pipeline.Exchange) error {
	x.Authority = "books.demo:80"
	x.Dest = pipeline.Dest{Dst: "books.demo:80"}
	x.Endpoint = "10.0.0.7:4143"
	x.Key = metrics.Key{Direction: metrics.Outbound, DstService: "books.demo:80", PeerIdentity: peerID, TLS: true}
	if a.readBody {
		_, _ = io.Copy(io.Discard, x.R.Body)
	}
	if a.err != nil {
		return a.err
	}
	for k, v := range a.header {
		x.W.Header()[k] = v
	}
	x.W.WriteHeader(a.status)
	_, _ = io.WriteString(x.W, a.body)
	for k, v := range a.trailer {
		x.W.Header()[http.TrailerPrefix+k] = v
	}
	if a.broken != nil {
		x.Wrote(a.status, "", a.broken)
	}
	return nil
}

// serve runs one request through the outbound tap stage in front of a.
func serve(h *Hub, dir string, r *http.Request, a app) (*httptest.ResponseRecorder, error) {
	w := httptest.NewRecorder()
	x := &pipeline.Exchange{W: w, R: r}
	err := h.Layer(dir)(a).Serve(x)
	return w, err
}

func get(path string) *http.Request {
	return httptest.NewRequest(http.MethodGet, "http://books.demo:80"+path, nil)
}

// queued returns every event queued to s.
func queued(s *Sub) []*apiv1.TapEvent {
	var out []*apiv1.TapEvent
	for {
		select {
		case ev := <-s.Events():
			out = append(out, ev)
		default:
			return out
		}
	}
}

func TestMatches(t *testing.T) {
	req := Request{Direction: metrics.Outbound, Method: "GET", Authority: "books.demo:80", Path: "/books/1",
		SourceIdentity: self, DestinationIdentity: peerID}
	tests := []struct {
		name  string
		match *apiv1.TapMatch
		want  bool
	}{
		{"empty matches all", &apiv1.TapMatch{}, true},
		{"direction", &apiv1.TapMatch{Direction: "outbound"}, true},
		{"other direction", &apiv1.TapMatch{Direction: "inbound"}, false},
		{"method", &apiv1.TapMatch{Method: "GET"}, true},
		{"other method", &apiv1.TapMatch{Method: "POST"}, false},
		{"path prefix", &apiv1.TapMatch{PathPrefix: "/books"}, true},
		{"other path", &apiv1.TapMatch{PathPrefix: "/authors"}, false},
		{"authority exact", &apiv1.TapMatch{Authority: "books.demo:80"}, true},
		{"authority is not a prefix", &apiv1.TapMatch{Authority: "books.demo"}, false},
		{"from", &apiv1.TapMatch{FromIdentity: self}, true},
		{"from is not to", &apiv1.TapMatch{FromIdentity: peerID}, false},
		{"to", &apiv1.TapMatch{ToIdentity: peerID}, true},
		{"to is not from", &apiv1.TapMatch{ToIdentity: self}, false},
		{"peerID either side", &apiv1.TapMatch{PeerIdentity: self}, true},
		{"peerID neither side", &apiv1.TapMatch{PeerIdentity: "spiffe://cluster.local/ns/x/sa/y"}, false},
		{"all of them", &apiv1.TapMatch{Direction: "outbound", Method: "GET", PathPrefix: "/b", Authority: "books.demo:80", FromIdentity: self, ToIdentity: peerID}, true},
		{"all but one", &apiv1.TapMatch{Direction: "outbound", Method: "GET", PathPrefix: "/b", Authority: "books.demo:80", FromIdentity: self, ToIdentity: self}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := newSub(&apiv1.ObserveRequest{Match: tt.match}, 1, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if got := s.matches(&req); got != tt.want {
				t.Errorf("matches = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestDirectionsAgree: the shared check accepts exactly the directions
// the proxy labels its chains with.
func TestDirectionsAgree(t *testing.T) {
	if tapreq.Inbound != metrics.Inbound || tapreq.Outbound != metrics.Outbound {
		t.Errorf("tapreq directions %q, %q; the proxy's %q, %q", tapreq.Inbound, tapreq.Outbound, metrics.Inbound, metrics.Outbound)
	}
}

func TestSubscribeLimits(t *testing.T) {
	tests := []struct {
		name              string
		req               *apiv1.ObserveRequest
		wantErr           bool
		wantRPS, wantBody int
	}{
		{"defaults", &apiv1.ObserveRequest{}, false, DefaultMaxRPS, 0},
		{"nil", nil, false, DefaultMaxRPS, 0},
		{"rps kept", &apiv1.ObserveRequest{MaxRps: 7}, false, 7, 0},
		{"rps capped", &apiv1.ObserveRequest{MaxRps: 1 << 30}, false, MaxMaxRPS, 0},
		{"body kept", &apiv1.ObserveRequest{BodyBytes: 10}, false, DefaultMaxRPS, 10},
		{"body capped", &apiv1.ObserveRequest{BodyBytes: 1 << 31}, false, DefaultMaxRPS, MaxBodyBytes},
		{"sample NaN", &apiv1.ObserveRequest{Sample: math.NaN()}, true, 0, 0},
		{"sample negative", &apiv1.ObserveRequest{Sample: -0.1}, true, 0, 0},
		{"sample above 1", &apiv1.ObserveRequest{Sample: 1.5}, true, 0, 0},
		{"bad direction", &apiv1.ObserveRequest{Match: &apiv1.TapMatch{Direction: "sideways"}}, true, 0, 0},
		{"huge match", &apiv1.ObserveRequest{Match: &apiv1.TapMatch{PathPrefix: strings.Repeat("/", tapreq.MaxMatchLen+1)}}, true, 0, 0},
		{"longest match", &apiv1.ObserveRequest{Match: &apiv1.TapMatch{PathPrefix: strings.Repeat("/", tapreq.MaxMatchLen)}}, false, DefaultMaxRPS, 0},
		{"a direction", &apiv1.ObserveRequest{Match: &apiv1.TapMatch{Direction: metrics.Inbound}}, false, DefaultMaxRPS, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _, _ := testHub(t)
			s, err := h.Subscribe(tt.req, 0)
			if tt.wantErr {
				if err == nil {
					t.Fatal("accepted")
				}
				if h.Open() != 0 {
					t.Error("a refused tap is open")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.MaxRPS() != tt.wantRPS || s.BodyBytes() != tt.wantBody {
				t.Errorf("max_rps %d body %d, want %d %d", s.MaxRPS(), s.BodyBytes(), tt.wantRPS, tt.wantBody)
			}
			if h.Open() != 1 {
				t.Errorf("open = %d", h.Open())
			}
			h.Unsubscribe(s)
			if h.Open() != 0 {
				t.Errorf("open after unsubscribe = %d", h.Open())
			}
		})
	}
}

func TestEventsOfARequest(t *testing.T) {
	h, m, _ := testHub(t)
	s := subscribe(t, h, &apiv1.ObserveRequest{}, 0)
	a := app{status: 200, header: http.Header{"Content-Type": {"application/grpc"}, "Trailer": {"Grpc-Status"}},
		body: "0123456789", trailer: http.Header{"Grpc-Status": {"5"}}, readBody: true}
	r := httptest.NewRequest(http.MethodPost, "http://books.demo:80/books.Books/Get?secret=q", strings.NewReader("abc"))
	w, err := serve(h, metrics.Outbound, r, a)
	if err != nil {
		t.Fatal(err)
	}
	if w.Body.String() != "0123456789" || w.Code != 200 {
		t.Fatalf("the response changed: %d %q", w.Code, w.Body.String())
	}
	evs := queued(s)
	if len(evs) != 3 {
		t.Fatalf("%d events, want 3: %v", len(evs), evs)
	}
	for _, ev := range evs {
		if ev.Direction != "outbound" || ev.SourceIdentity != self || ev.DestinationIdentity != peerID || !ev.Tls ||
			ev.Destination != "10.0.0.7:4143" || ev.Route != "books.demo:80" || ev.Id != evs[0].Id || ev.Time == nil {
			t.Errorf("common fields %v", ev)
		}
	}
	ri, rs, re := evs[0].GetRequestInit(), evs[1].GetResponseInit(), evs[2].GetResponseEnd()
	if ri == nil || rs == nil || re == nil {
		t.Fatalf("events out of order: %v", evs)
	}
	if ri.Method != "POST" || ri.Authority != "books.demo:80" || ri.Path != "/books.Books/Get" || ri.Scheme != "http" || ri.HeaderNames != nil {
		t.Errorf("request_init %v (the query is never sent)", ri)
	}
	if rs.HttpStatus != 200 || rs.HeaderNames != nil {
		t.Errorf("response_init %v", rs)
	}
	if re.GrpcStatus != 5 || re.ResponseBytes != 10 || re.RequestBytes != 3 || re.Error != "" || re.RequestBody != nil || re.ResponseBody != nil {
		t.Errorf("response_end %v", re)
	}
	if got := testutil.ToFloat64(m.Sent); got != 3 {
		t.Errorf("sent = %v", got)
	}
}

func TestErrorAnswers(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantStatus uint32
		wantErr    string
		wantEvents int
	}{
		{"proxy answer", proxyerr.New(http.StatusServiceUnavailable, metrics.ReasonNoEndpoints, "none"), 503, metrics.ReasonNoEndpoints, 3},
		{"client gone", pipeline.ErrCancelled, 0, "cancelled", 2},
		{"broken mid-body", nil, 200, "reset", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _, _ := testHub(t)
			s := subscribe(t, h, &apiv1.ObserveRequest{}, 0)
			a := app{err: tt.err, status: 200}
			if tt.err == nil {
				a.broken = io.ErrUnexpectedEOF
			}
			if _, err := serve(h, metrics.Outbound, get("/"), a); err != tt.err {
				t.Fatalf("the stage changed the error: %v", err)
			}
			evs := queued(s)
			if len(evs) != tt.wantEvents {
				t.Fatalf("%d events, want %d: %v", len(evs), tt.wantEvents, evs)
			}
			if tt.wantStatus != 0 && evs[1].GetResponseInit().GetHttpStatus() != tt.wantStatus {
				t.Errorf("status %v", evs[1])
			}
			if re := evs[len(evs)-1].GetResponseEnd(); re == nil || re.Error != tt.wantErr || re.GrpcStatus != -1 {
				t.Errorf("response_end %v", evs[len(evs)-1])
			}
		})
	}
}

func TestHeaderNamesNeverValues(t *testing.T) {
	const secret = "s3cr3t-value"
	for _, names := range []bool{false, true} {
		h, _, _ := testHub(t)
		s := subscribe(t, h, &apiv1.ObserveRequest{HeaderNames: names, BodyBytes: 64}, 0)
		r := get("/")
		r.Header.Set("Authorization", "Bearer "+secret)
		r.Header.Set("Proxy-Authorization", "Basic "+secret)
		r.Header.Set("Cookie", "session="+secret)
		r.Header.Set("X-Custom", secret)
		r.Header.Set("Trellis-Orig-Proto", "HTTP/1.1")
		a := app{status: 200, header: http.Header{"Set-Cookie": {"id=" + secret}, "Content-Type": {"text/plain"}}, body: "ok"}
		if _, err := serve(h, metrics.Outbound, r, a); err != nil {
			t.Fatal(err)
		}
		evs := queued(s)
		var raw []byte
		for _, ev := range evs {
			b, err := proto.Marshal(ev)
			if err != nil {
				t.Fatal(err)
			}
			raw = append(raw, b...)
		}
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("header_names=%v: a header value is in the events", names)
		}
		ri, rs := evs[0].GetRequestInit(), evs[1].GetResponseInit()
		if !names {
			if ri.HeaderNames != nil || rs.HeaderNames != nil {
				t.Errorf("names sent unasked: %v %v", ri.HeaderNames, rs.HeaderNames)
			}
			continue
		}
		if got := strings.Join(ri.HeaderNames, ","); got != "authorization,cookie,proxy-authorization,x-custom" {
			t.Errorf("request header names %q (mesh fields left out)", got)
		}
		if got := strings.Join(rs.HeaderNames, ","); got != "content-type,set-cookie" {
			t.Errorf("response header names %q", got)
		}
	}
}

func TestBodies(t *testing.T) {
	tests := []struct {
		name                    string
		bodyBytes               uint32
		reqBody, respBody       string
		wantReq, wantResp       string
		wantReqCut, wantRespCut bool
	}{
		{"not asked", 0, "hello", "world", "", "", false, false},
		{"fits", 16, "hello", "world", "hello", "world", false, false},
		{"exact", 5, "hello", "world", "hello", "world", false, false},
		{"cut", 3, "hello", "world!", "hel", "wor", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _, _ := testHub(t)
			s := subscribe(t, h, &apiv1.ObserveRequest{BodyBytes: tt.bodyBytes}, 0)
			r := httptest.NewRequest(http.MethodPost, "http://books.demo:80/", strings.NewReader(tt.reqBody))
			w, err := serve(h, metrics.Outbound, r, app{status: 200, body: tt.respBody, readBody: true})
			if err != nil {
				t.Fatal(err)
			}
			if w.Body.String() != tt.respBody {
				t.Fatalf("forwarded %q, want %q", w.Body.String(), tt.respBody)
			}
			evs := queued(s)
			re := evs[len(evs)-1].GetResponseEnd()
			if string(re.RequestBody) != tt.wantReq || string(re.ResponseBody) != tt.wantResp ||
				re.RequestBodyTruncated != tt.wantReqCut || re.ResponseBodyTruncated != tt.wantRespCut {
				t.Errorf("bodies %q (cut %v) %q (cut %v)", re.RequestBody, re.RequestBodyTruncated, re.ResponseBody, re.ResponseBodyTruncated)
			}
			if re.RequestBytes != uint64(len(tt.reqBody)) || re.ResponseBytes != uint64(len(tt.respBody)) {
				t.Errorf("bytes %d %d", re.RequestBytes, re.ResponseBytes)
			}
		})
	}
}

// TestBodiesPerTap: two taps with different limits each get their own.
func TestBodiesPerTap(t *testing.T) {
	h, _, _ := testHub(t)
	small := subscribe(t, h, &apiv1.ObserveRequest{BodyBytes: 2}, 0)
	none := subscribe(t, h, &apiv1.ObserveRequest{}, 0)
	if _, err := serve(h, metrics.Outbound, get("/"), app{status: 200, body: "abcdef"}); err != nil {
		t.Fatal(err)
	}
	if re := queued(small)[2].GetResponseEnd(); string(re.ResponseBody) != "ab" || !re.ResponseBodyTruncated {
		t.Errorf("small tap %v", re)
	}
	if re := queued(none)[2].GetResponseEnd(); re.ResponseBody != nil {
		t.Errorf("a tap without body_bytes got %q", re.ResponseBody)
	}
}

// held is what a tapped request's exchange holds of body copies, seen
// from the rest of the chain: the tap stage's request body and response
// writer.
func held(x *pipeline.Exchange) (req, resp []byte) {
	if b, ok := x.R.Body.(*teeBody); ok {
		b.mu.Lock()
		req = b.buf
		b.mu.Unlock()
	}
	if w, ok := x.W.(*recorder); ok {
		resp = w.buf
	}
	return req, resp
}

// TestBodyCopiesOnlyForChosenTaps: while a body-capturing tap is open,
// a request it may match is copied until the taps are chosen (the
// response's head); one that no body-capturing tap reports then holds no
// copy, copies no more, and gives its bytes back to the hub's budget.
func TestBodyCopiesOnlyForChosenTaps(t *testing.T) {
	tests := []struct {
		name string
		subs []*apiv1.ObserveRequest
		// rnd is the sampling draw (1: never sampled at 0.5).
		rnd                  float64
		wantReq, wantResp    string // held after the head, once all is written
		wantEvents           []int  // events per tap
		wantBodies           []string
		wantHeldBeforeDecide int
	}{
		{"filter matches", []*apiv1.ObserveRequest{
			{BodyBytes: 64, Match: &apiv1.TapMatch{ToIdentity: peerID}},
		}, 0, "hello world", "answer", []int{3}, []string{"hello world|answer"}, 5},
		{"filter does not match", []*apiv1.ObserveRequest{
			{BodyBytes: 64, Match: &apiv1.TapMatch{ToIdentity: self}},
		}, 0, "", "", []int{0}, nil, 5},
		{"not sampled", []*apiv1.ObserveRequest{
			{BodyBytes: 64, Sample: 0.5},
		}, 1, "", "", []int{0}, nil, 5},
		{"chosen tap asks no body", []*apiv1.ObserveRequest{
			{BodyBytes: 64, Match: &apiv1.TapMatch{ToIdentity: self}},
			{Match: &apiv1.TapMatch{ToIdentity: peerID}},
		}, 0, "", "", []int{0, 3}, []string{"", "|"}, 5},
		{"chosen tap asks fewer bytes", []*apiv1.ObserveRequest{
			{BodyBytes: 64, Match: &apiv1.TapMatch{ToIdentity: self}},
			{BodyBytes: 3, Match: &apiv1.TapMatch{ToIdentity: peerID}},
		}, 0, "hel", "ans", []int{0, 3}, []string{"", "hel|ans"}, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _, _ := testHub(t)
			var subs []*Sub
			for _, req := range tt.subs {
				s := subscribe(t, h, req, 0)
				s.rnd = func() float64 { return tt.rnd }
				subs = append(subs, s)
			}
			var gotReq, gotResp []byte
			var heldBefore, heldAfter int64
			r := httptest.NewRequest(http.MethodPost, "http://books.demo:80/books", strings.NewReader("hello world"))
			end := pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
				x.Authority, x.Dest, x.Endpoint = "books.demo:80", pipeline.Dest{Dst: "books.demo:80"}, "10.0.0.7:4143"
				x.Key = metrics.Key{Direction: metrics.Outbound, DstService: "books.demo:80", PeerIdentity: peerID, TLS: true}
				// Half the body before the head (taps not chosen yet),
				// the rest after, then the response body.
				if _, err := io.ReadFull(x.R.Body, make([]byte, 5)); err != nil {
					return err
				}
				heldBefore = h.bodyHeld.Load()
				x.W.WriteHeader(http.StatusOK)
				if _, err := io.Copy(io.Discard, x.R.Body); err != nil {
					return err
				}
				_, _ = io.WriteString(x.W, "answer")
				gotReq, gotResp = held(x)
				heldAfter = h.bodyHeld.Load()
				return nil
			})
			w := httptest.NewRecorder()
			if err := h.Layer(metrics.Outbound)(end).Serve(&pipeline.Exchange{W: w, R: r}); err != nil {
				t.Fatal(err)
			}
			if w.Body.String() != "answer" {
				t.Fatalf("forwarded %q", w.Body.String())
			}
			if heldBefore != int64(tt.wantHeldBeforeDecide) {
				t.Errorf("before the taps were chosen the hub held %d body bytes, want %d", heldBefore, tt.wantHeldBeforeDecide)
			}
			if string(gotReq) != tt.wantReq || string(gotResp) != tt.wantResp {
				t.Errorf("the exchange held request %q and response %q, want %q and %q", gotReq, gotResp, tt.wantReq, tt.wantResp)
			}
			if tt.wantReq == "" && gotReq != nil || tt.wantResp == "" && gotResp != nil {
				t.Errorf("empty copies still allocated: request cap %d, response cap %d", cap(gotReq), cap(gotResp))
			}
			if want := int64(len(tt.wantReq) + len(tt.wantResp)); heldAfter != want {
				t.Errorf("the hub's budget counts %d bytes held, want %d", heldAfter, want)
			}
			if n := h.bodyHeld.Load(); n != 0 {
				t.Errorf("%d body bytes still counted once the request ended", n)
			}
			for i, s := range subs {
				evs := queued(s)
				if len(evs) != tt.wantEvents[i] {
					t.Fatalf("tap %d: %d events, want %d", i, len(evs), tt.wantEvents[i])
				}
				if len(evs) == 0 {
					continue
				}
				re := evs[len(evs)-1].GetResponseEnd()
				if got := string(re.RequestBody) + "|" + string(re.ResponseBody); tt.wantBodies[i] != "" && got != tt.wantBodies[i] {
					t.Errorf("tap %d: bodies %q, want %q", i, got, tt.wantBodies[i])
				}
				if re.RequestBytes != 11 || re.ResponseBytes != 6 {
					t.Errorf("tap %d: bytes %d %d, want 11 6", i, re.RequestBytes, re.ResponseBytes)
				}
			}
		})
	}
}

// TestBodyBudget: the body bytes all tapped requests in flight hold are
// bounded by the hub's budget; what does not fit is cut and said so, and
// a finished request gives its bytes back.
func TestBodyBudget(t *testing.T) {
	h, _, _ := testHub(t)
	h.bodyBudget = 6
	s := subscribe(t, h, &apiv1.ObserveRequest{BodyBytes: 64, MaxRps: 1000}, 0)
	post := func(body string) *http.Request {
		return httptest.NewRequest(http.MethodPost, "http://books.demo:80/", strings.NewReader(body))
	}
	var inner *apiv1.TapEvent_ResponseEnd
	// The outer request holds 4 bytes of the budget while the inner one
	// is served.
	outer := pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
		if _, err := io.Copy(io.Discard, x.R.Body); err != nil {
			return err
		}
		if _, err := serve(h, metrics.Outbound, post("hello"), app{status: 200, body: "world", readBody: true}); err != nil {
			return err
		}
		evs := queued(s)
		inner = evs[len(evs)-1].GetResponseEnd()
		x.W.WriteHeader(http.StatusOK)
		return nil
	})
	if err := h.Layer(metrics.Outbound)(outer).Serve(&pipeline.Exchange{W: httptest.NewRecorder(), R: post("abcd")}); err != nil {
		t.Fatal(err)
	}
	if string(inner.RequestBody) != "he" || !inner.RequestBodyTruncated || len(inner.ResponseBody) != 0 || !inner.ResponseBodyTruncated {
		t.Errorf("with 2 bytes of budget left: request %q (cut %v), response %q (cut %v)",
			inner.RequestBody, inner.RequestBodyTruncated, inner.ResponseBody, inner.ResponseBodyTruncated)
	}
	if n := h.bodyHeld.Load(); n != 0 {
		t.Fatalf("%d bytes still counted", n)
	}
	// All of it is back: a request alone gets the whole budget.
	if _, err := serve(h, metrics.Outbound, post("hello"), app{status: 200, body: "world", readBody: true}); err != nil {
		t.Fatal(err)
	}
	evs := queued(s)
	if re := evs[len(evs)-1].GetResponseEnd(); string(re.RequestBody) != "hello" || re.RequestBodyTruncated ||
		string(re.ResponseBody) != "w" || !re.ResponseBodyTruncated {
		t.Errorf("alone with a budget of 6: request %q (cut %v), response %q (cut %v)",
			re.RequestBody, re.RequestBodyTruncated, re.ResponseBody, re.ResponseBodyTruncated)
	}
}

// TestEventFieldsBounded: an event copies at most maxFieldLen bytes of
// each string the request chose, in its own memory (a queued event must
// not keep a 1 MiB path alive).
func TestEventFieldsBounded(t *testing.T) {
	long := "/" + strings.Repeat("p", 1<<20)
	host := strings.Repeat("h", 100<<10)
	tests := []struct {
		name               string
		dir                string
		method, path, host string
		authority          string // x.Authority (outbound, set by the route stage)
	}{
		{"inbound path and host", metrics.Inbound, "GET", long, host, ""},
		{"inbound method", metrics.Inbound, strings.Repeat("M", 100<<10), "/", "books.demo:80", ""},
		{"outbound authority", metrics.Outbound, "GET", "/", "books.demo:80", host},
		{"short ones unchanged", metrics.Inbound, "GET", "/books/1", "books.demo:80", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _, _ := testHub(t)
			s := subscribe(t, h, &apiv1.ObserveRequest{}, 0)
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Method, r.URL.Path, r.Host = tt.method, tt.path, tt.host
			x := &pipeline.Exchange{W: httptest.NewRecorder(), R: r, Authority: tt.authority}
			end := pipeline.HandlerFunc(func(x *pipeline.Exchange) error { x.W.WriteHeader(http.StatusOK); return nil })
			if err := h.Layer(tt.dir)(end).Serve(x); err != nil {
				t.Fatal(err)
			}
			evs := queued(s)
			if len(evs) != 3 {
				t.Fatalf("%d events", len(evs))
			}
			ri := evs[0].GetRequestInit()
			wantAuth := tt.host
			if tt.authority != "" {
				wantAuth = tt.authority
			}
			for _, f := range []struct{ name, got, sent string }{
				{"method", ri.Method, tt.method}, {"path", ri.Path, tt.path}, {"authority", ri.Authority, wantAuth},
			} {
				want := f.sent[:min(len(f.sent), maxFieldLen)]
				if f.got != want {
					t.Errorf("%s: %d bytes, want the first %d of the request's", f.name, len(f.got), len(want))
				}
				if len(f.sent) > maxFieldLen && unsafe.StringData(f.got) == unsafe.StringData(f.sent) {
					t.Errorf("%s: the event points into the request's %d-byte string", f.name, len(f.sent))
				}
			}
		})
	}
}

func TestRateLimit(t *testing.T) {
	h, m, now := testHub(t)
	s := subscribe(t, h, &apiv1.ObserveRequest{MaxRps: 5}, 1000)
	run := func(n int) {
		for range n {
			if _, err := serve(h, metrics.Outbound, get("/"), app{status: 204}); err != nil {
				t.Fatal(err)
			}
		}
	}
	run(20)
	if got := len(queued(s)) / 3; got != 5 {
		t.Errorf("reported %d requests in one instant, want the burst of 5", got)
	}
	if got := testutil.ToFloat64(m.Dropped.WithLabelValues(DropRate)); got != 15 {
		t.Errorf("dropped{rate} = %v, want 15", got)
	}
	*now = now.Add(400 * time.Millisecond)
	run(20)
	if got := len(queued(s)) / 3; got != 2 {
		t.Errorf("reported %d requests 400ms later at 5/s, want 2", got)
	}
}

func TestSlowClientDropsNeverBlocks(t *testing.T) {
	h, m, _ := testHub(t)
	s := subscribe(t, h, &apiv1.ObserveRequest{MaxRps: 1000}, 4)
	for range 10 {
		w, err := serve(h, metrics.Outbound, get("/"), app{status: 200, body: "x"})
		if err != nil || w.Code != 200 {
			t.Fatal(w.Code, err)
		}
	}
	if got := len(queued(s)); got != 4 {
		t.Errorf("queued %d events, want the queue's 4", got)
	}
	if got := testutil.ToFloat64(m.Dropped.WithLabelValues(DropQueue)); got != 26 {
		t.Errorf("dropped{queue} = %v, want 26", got)
	}
}

func TestSampling(t *testing.T) {
	h, _, _ := testHub(t)
	s := subscribe(t, h, &apiv1.ObserveRequest{Sample: 0.5, MaxRps: 1000}, 1000)
	draws := []float64{0.1, 0.9, 0.49, 0.5, 0.0, 0.99}
	i := 0
	s.rnd = func() float64 { v := draws[i%len(draws)]; i++; return v }
	for range len(draws) {
		if _, err := serve(h, metrics.Outbound, get("/"), app{status: 200}); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(queued(s)) / 3; got != 3 {
		t.Errorf("sampled %d of %v at 0.5, want 3", got, draws)
	}
}

func TestLimit(t *testing.T) {
	h, _, _ := testHub(t)
	s := subscribe(t, h, &apiv1.ObserveRequest{Limit: 2}, 0)
	for i := range 3 {
		select {
		case <-s.Finished():
			if i < 2 {
				t.Fatalf("finished after %d requests", i)
			}
		default:
			if i == 2 {
				t.Fatal("not finished after 2 requests")
			}
		}
		if _, err := serve(h, metrics.Outbound, get("/"), app{status: 200}); err != nil {
			t.Fatal(err)
		}
	}
	<-s.Finished()
	if got := len(queued(s)); got != 6 {
		t.Errorf("%d events for a limit of 2 requests, want 6", got)
	}
}

func TestFilterAtStartAndEnd(t *testing.T) {
	h, _, _ := testHub(t)
	in := subscribe(t, h, &apiv1.ObserveRequest{Match: &apiv1.TapMatch{Direction: "inbound"}}, 0)
	to := subscribe(t, h, &apiv1.ObserveRequest{Match: &apiv1.TapMatch{ToIdentity: peerID}}, 0)
	other := subscribe(t, h, &apiv1.ObserveRequest{Match: &apiv1.TapMatch{ToIdentity: self}}, 0)
	if _, err := serve(h, metrics.Outbound, get("/"), app{status: 200}); err != nil {
		t.Fatal(err)
	}
	if n := len(queued(in)); n != 0 {
		t.Errorf("inbound tap got %d outbound events", n)
	}
	if n := len(queued(to)); n != 3 {
		t.Errorf("to-identity tap (known only once the endpoint is picked) got %d events", n)
	}
	if n := len(queued(other)); n != 0 {
		t.Errorf("other identity tap got %d events", n)
	}
}

func TestNoTapNoWrapping(t *testing.T) {
	h, _, _ := testHub(t)
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "http://books.demo:80/", strings.NewReader("x"))
	body := r.Body
	x := &pipeline.Exchange{W: w, R: r}
	err := h.Layer(metrics.Inbound)(pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
		if x.W != http.ResponseWriter(w) || x.R.Body != body {
			t.Error("the request was wrapped with no tap open")
		}
		return nil
	})).Serve(x)
	if err != nil {
		t.Fatal(err)
	}
	// A tap on another path: the request is not wrapped either, and the
	// exchange is left as it was once the stage returns.
	subscribe(t, h, &apiv1.ObserveRequest{Match: &apiv1.TapMatch{PathPrefix: "/other"}}, 0)
	if err := h.Layer(metrics.Inbound)(pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
		if x.W != http.ResponseWriter(w) {
			t.Error("wrapped for a tap that cannot match")
		}
		return nil
	})).Serve(x); err != nil {
		t.Fatal(err)
	}
}

func TestParseGRPCStatus(t *testing.T) {
	tests := map[string]int32{"0": 0, "5": 5, "16": 16, "": -1, "-1": -1, "+1": -1, "x": -1, "99999999999": -1, "2147483647": 2147483647}
	for in, want := range tests {
		if got := ParseGRPCStatus(in); got != want {
			t.Errorf("ParseGRPCStatus(%q) = %d, want %d", in, got, want)
		}
	}
}
