package destination

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/authority"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/controller/notify"
)

// bigSource answers every authority with n endpoints whose weight is the
// current version: each change re-sends every endpoint, so a client that
// does not read fills its HTTP/2 window within one update.
type bigSource struct {
	topics *notify.Topics
	n      int

	mu      sync.Mutex
	version uint32
}

func (s *bigSource) set(v uint32) {
	s.mu.Lock()
	s.version = v
	s.mu.Unlock()
	s.topics.Notify("all")
}

func (s *bigSource) Resolve(authority.Authority, string) (Resolution, <-chan struct{}, func()) {
	ch, release := s.topics.Acquire("all")
	s.mu.Lock()
	v := s.version
	s.mu.Unlock()
	e := Endpoints{Exists: true, Addrs: map[string]*apiv1.WeightedAddr{}, Labels: map[string]string{"service": "big"}}
	for i := range s.n {
		ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 8080)
		e.Addrs[ap.String()] = &apiv1.WeightedAddr{
			Addr:         &apiv1.TcpAddress{Ip: ap.Addr().String(), Port: 8080},
			Weight:       v + 1,
			MetricLabels: map[string]string{"pod": fmt.Sprintf("big-%06d-with-a-long-name-to-fill-the-window", i)},
		}
	}
	return Resolution{Endpoints: e}, ch, release
}

// A client that opens a stream and never reads it holds up neither the
// updates of the other streams on the same connection nor the controller:
// over real gRPC, the stalled stream's sends block on its own flow-control
// window only, and it ends when its client leaves.
func TestStalledStreamBlocksNoOne(t *testing.T) {
	src := &bigSource{topics: notify.NewTopics(), n: 2000}
	m := metrics.New()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	sentVersion := &versions{m: map[string]uint32{}}
	srv := grpc.NewServer(grpc.StreamInterceptor(sentVersion.intercept))
	apiv1.RegisterDestinationServer(srv, &Service{Source: src, Metrics: m, Log: slog.New(slog.DiscardHandler), Done: done})
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()
	// A fixed 64 KiB window (no BDP growth): about half of one update.
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := apiv1.NewDestinationClient(conn)

	stalledCtx, leave := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), "who", "stalled"))
	if _, err := client.Get(stalledCtx, &apiv1.GetDestination{Path: "big.ns.svc.cluster.local:80"}); err != nil {
		t.Fatal(err)
	}
	readerCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reader, err := client.Get(readerCtx, &apiv1.GetDestination{Path: "big.ns.svc.cluster.local:80"})
	if err != nil {
		t.Fatal(err)
	}
	const last = 20
	start := time.Now()
	go func() {
		for v := uint32(1); v <= last; v++ {
			src.set(v)
			time.Sleep(10 * time.Millisecond)
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		u, err := reader.Recv()
		if err != nil {
			t.Fatalf("reading stream: %v", err)
		}
		if a := u.GetAdd(); a != nil && len(a.Addrs) > 0 && a.Addrs[0].Weight == last+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the reading stream never got the last update while another stream stalled")
		}
	}
	t.Logf("the reading stream got update %d of %d endpoints in %v beside a stalled stream", last, src.n, time.Since(start))
	if got := gauge(t, m.DestinationStreams); got != 2 {
		t.Fatalf("%v open streams, want 2 (the stalled one still open)", got)
	}
	// The stalled stream is really stuck: the newest version its sends
	// completed is older than the last (an unbounded buffer would have
	// taken them all).
	if v := sentVersion.get("stalled"); v >= last+1 {
		t.Fatalf("the stalled stream sent version %d: it was not stalled", v-1)
	} else {
		t.Logf("the stalled stream's sends stopped at version %d of %d", int(v)-1, last)
	}
	leave()
	for gauge(t, m.DestinationStreams) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the stalled stream did not end when its client left")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func gauge(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var out dto.Metric
	if err := g.Write(&out); err != nil {
		t.Fatal(err)
	}
	return out.GetGauge().GetValue()
}

// versions records, per stream (its "who" metadata), the newest version
// whose Send has returned.
type versions struct {
	mu sync.Mutex
	m  map[string]uint32
}

func (v *versions) get(who string) uint32 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.m[who]
}

func (v *versions) intercept(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	md, _ := metadata.FromIncomingContext(ss.Context())
	who := ""
	if w := md.Get("who"); len(w) > 0 {
		who = w[0]
	}
	return h(srv, &recordingStream{ServerStream: ss, v: v, who: who})
}

type recordingStream struct {
	grpc.ServerStream
	v   *versions
	who string
}

func (r *recordingStream) SendMsg(m any) error {
	err := r.ServerStream.SendMsg(m)
	if u, ok := m.(*apiv1.Update); ok && err == nil && len(u.GetAdd().GetAddrs()) > 0 {
		r.v.mu.Lock()
		r.v.m[r.who] = max(r.v.m[r.who], u.GetAdd().GetAddrs()[0].GetWeight())
		r.v.mu.Unlock()
	}
	return err
}
