package mirror

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
)

type sent struct {
	host, path, body, header string
}

func TestLayer(t *testing.T) {
	mirrors := []*apiv1.Mirror{{Authority: "all.ns:80"}, {Authority: "half.ns:80", Millionths: 500_000}}
	for _, tt := range []struct {
		name      string
		rand      uint64
		body      string
		chunked   bool
		expect    bool
		maxBody   int64
		want      []string // authorities copied to
		wantSkips int
	}{
		{name: "empty body, both", rand: 1, want: []string{"all.ns:80", "half.ns:80"}},
		{name: "share missed", rand: 500_000, body: "abc", want: []string{"all.ns:80"}},
		{name: "body held", rand: 1, body: "abc", want: []string{"all.ns:80", "half.ns:80"}},
		{name: "body too large", rand: 1, body: "abcdef", maxBody: 5, wantSkips: 2},
		{name: "streamed body", rand: 1, body: "abc", chunked: true, wantSkips: 2},
		{name: "expect 100-continue", rand: 1, body: "abc", expect: true, wantSkips: 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var got []sent
			var wg sync.WaitGroup
			wg.Add(len(tt.want))
			reg := prometheus.NewRegistry()
			rm, _ := metrics.NewRoutes(reg)
			s := New(Config{Metrics: rm, MaxBody: tt.maxBody, Rand: func() uint64 { return tt.rand },
				Send: func(r *http.Request) bool {
					defer wg.Done()
					b, _ := io.ReadAll(r.Body)
					mu.Lock()
					got = append(got, sent{host: r.Host, path: r.URL.Path, body: string(b), header: r.Header.Get("X-A")})
					mu.Unlock()
					return r.Host == "all.ns:80"
				}})
			r := httptest.NewRequest("POST", "/p", strings.NewReader(tt.body))
			if tt.chunked {
				r.ContentLength = -1
			}
			if tt.expect {
				r.Header.Set("Expect", "100-continue")
			}
			r.Header.Set("X-A", "1")
			x := &pipeline.Exchange{R: r, Ctx: r.Context(), Route: &apiv1.Route{Name: "ns/r", Mirrors: mirrors}}
			var callerBody string
			err := s.Layer(pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
				b, _ := io.ReadAll(x.R.Body)
				callerBody = string(b)
				x.R.Header.Set("X-A", "changed by a later stage")
				return nil
			})).Serve(x)
			if err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			if callerBody != tt.body {
				t.Errorf("the request's body after the stage: %q, want %q", callerBody, tt.body)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("copies %+v, want to %v", got, tt.want)
			}
			for _, c := range got {
				if c.body != tt.body || c.path != "/p" || c.header != "1" {
					t.Errorf("copy %+v", c)
				}
			}
			s.wait(t)
			if n := count(t, reg, metrics.MirrorSkipped); n != float64(tt.wantSkips) {
				t.Errorf("%v skipped, want %d", n, tt.wantSkips)
			}
		})
	}
}

// TestBound: copies beyond MaxInFlight are dropped and counted, and the
// request goes on regardless.
func TestBound(t *testing.T) {
	release := make(chan struct{})
	reg := prometheus.NewRegistry()
	rm, _ := metrics.NewRoutes(reg)
	s := New(Config{Metrics: rm, MaxInFlight: 2, Send: func(*http.Request) bool { <-release; return false }})
	route := &apiv1.Route{Name: "ns/r", Mirrors: []*apiv1.Mirror{{Authority: "m:80"}}}
	next := pipeline.HandlerFunc(func(*pipeline.Exchange) error { return nil })
	for range 5 {
		r := httptest.NewRequest("GET", "/", nil)
		if err := s.Layer(next).Serve(&pipeline.Exchange{R: r, Ctx: context.Background(), Route: route}); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(t, reg, metrics.MirrorDropped); n != 3 {
		t.Errorf("%v dropped, want 3", n)
	}
	close(release)
	s.wait(t)
	if n := count(t, reg, metrics.MirrorFailed); n != 2 {
		t.Errorf("%v failed, want 2", n)
	}
}

// wait takes every slot: no copy is in flight any more.
func (s *Stage) wait(t *testing.T) {
	t.Helper()
	for range cap(s.slots) {
		s.slots <- struct{}{}
	}
	for range cap(s.slots) {
		<-s.slots
	}
}

func count(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if mf.GetName() != "trellis_mirror_requests_total" {
				continue
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
