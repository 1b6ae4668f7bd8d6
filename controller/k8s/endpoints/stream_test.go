package endpoints

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/destination"
	"github.com/trellis-mesh/trellis/controller/metrics"
)

// serve runs the Destination service over src on a loopback gRPC server
// (plain text: this tests the stream logic; mTLS is tested in local mode).
func serve(t *testing.T, src destination.Source) apiv1.DestinationClient {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	srv := grpc.NewServer()
	apiv1.RegisterDestinationServer(srv, &destination.Service{Source: src, Metrics: metrics.New(), Log: slog.New(slog.DiscardHandler), Done: done})
	go func() { _ = srv.Serve(ln) }()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); close(done); srv.Stop() })
	return apiv1.NewDestinationClient(conn)
}

type updates struct {
	ch   chan *apiv1.Update
	errc chan error
}

func get(t *testing.T, c apiv1.DestinationClient, path string) updates {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := c.Get(ctx, &apiv1.GetDestination{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	u := updates{ch: make(chan *apiv1.Update, 64), errc: make(chan error, 1)}
	go func() {
		for {
			m, err := s.Recv()
			if err != nil {
				u.errc <- err
				return
			}
			u.ch <- m
		}
	}()
	return u
}

func (u updates) next(t *testing.T) string {
	t.Helper()
	select {
	case m := <-u.ch:
		return describe(m)
	case err := <-u.errc:
		t.Fatalf("stream ended: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no update")
	}
	return ""
}

func describe(u *apiv1.Update) string {
	out := ""
	switch x := u.GetUpdate().(type) {
	case *apiv1.Update_Add:
		out = "add"
		for _, a := range x.Add.GetAddrs() {
			out += " " + a.GetAddr().GetIp()
		}
	case *apiv1.Update_Remove:
		out = "remove"
		for _, a := range x.Remove.GetAddrs() {
			out += " " + a.GetIp()
		}
	case *apiv1.Update_NoEndpoints:
		out = "none"
		if x.NoEndpoints.GetExists() {
			out += "(exists)"
		}
	}
	return out
}

// TestStreamContract follows one service through the stream: a first
// message at once, updates pushed when its EndpointSlice changes, Remove
// before NoEndpoints when it empties, and Add again when it refills.
func TestStreamContract(t *testing.T) {
	f := start(t, loadFixture(t, "testdata/cluster.yaml")...)
	c := serve(t, f.src)
	ctx := context.Background()
	slices := f.client.DiscoveryV1().EndpointSlices("demo")

	s := get(t, c, "books.demo.svc.cluster.local:80")
	if got := s.next(t); got != "add 10.244.0.11 10.244.0.12" {
		t.Fatalf("first message %q", got)
	}
	if got := get(t, c, "nothere.demo:80").next(t); got != "none" {
		t.Fatalf("unknown service: %q", got)
	}

	sl, err := slices.Get(ctx, "books-abc", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sl.Endpoints[2].Conditions.Ready = ptr(true) // books-3 ready
	if sl, err = slices.Update(ctx, sl, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := s.next(t); got != "add 10.244.0.13" {
		t.Fatalf("after books-3 turned ready: %q", got)
	}

	for i := range sl.Endpoints {
		sl.Endpoints[i].Conditions.Ready = ptr(false)
	}
	if sl, err = slices.Update(ctx, sl, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := s.next(t); got != "remove 10.244.0.11 10.244.0.12 10.244.0.13" {
		t.Fatalf("after all turned unready: %q", got)
	}
	if got := s.next(t); got != "none(exists)" {
		t.Fatalf("after the remove: %q", got)
	}

	sl.Endpoints[0].Conditions.Ready = ptr(true)
	if _, err = slices.Update(ctx, sl, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := s.next(t); got != "add 10.244.0.11" {
		t.Fatalf("after books-1 came back: %q", got)
	}
}
