package proxy

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/discovery"
	"github.com/trellis-mesh/trellis/proxy/internal/grpctest"
)

// selfDest answers for the proxy's own address with its node's zone, and
// for a service with endpoints in two zones.
type selfDest struct {
	apiv1.UnimplementedDestinationServer
}

func (selfDest) Get(req *apiv1.GetDestination, stream grpc.ServerStreamingServer[apiv1.Update]) error {
	set := &apiv1.AddSet{}
	switch req.GetPath() {
	case "10.1.0.7:4143":
		set.Addrs = []*apiv1.WeightedAddr{{Addr: &apiv1.TcpAddress{Ip: "10.1.0.7", Port: 4143}, Zone: "zone-b"}}
	default:
		for i, z := range []string{"zone-a", "zone-b", "zone-a", "zone-b"} {
			set.Addrs = append(set.Addrs, &apiv1.WeightedAddr{Addr: &apiv1.TcpAddress{Ip: "10.2.0.1", Port: uint32(8080 + i)}, Zone: z})
		}
	}
	if err := stream.Send(&apiv1.Update{Update: &apiv1.Update_Add{Add: set}}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

func TestLearnZone(t *testing.T) {
	addr, _ := grpctest.Serve(t, "127.0.0.1:0", func(gs *grpc.Server) { apiv1.RegisterDestinationServer(gs, selfDest{}) })
	r := discovery.NewResolver(apiv1.NewDestinationClient(grpctest.Dial(t, addr)), discovery.Options{})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	svc, err := r.Resolve(ctx, "books.demo:80")
	if err != nil {
		t.Fatal(err)
	}
	learnZone(ctx, r, "10.1.0.7:"+inboundPort("0.0.0.0:4143"), slog.New(slog.DiscardHandler))
	cross := 0
	for range 50 {
		p, err := svc.Balancer().Pick(nil)
		if err != nil {
			t.Fatal(err)
		}
		p.Done(time.Millisecond, false)
		if p.Endpoint.Zone != "zone-b" {
			cross++
		}
	}
	// One pick explores the other zone.
	if cross > 1 {
		t.Fatalf("%d of 50 picks left zone-b (learnt)", cross)
	}
}

func TestZoneSelf(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"transparent: the pod IP and the inbound port", Config{AppIP: "10.1.0.7", InboundAddr: "0.0.0.0:4143"}, "10.1.0.7:4143"},
		{"transparent, IPv6 pod", Config{AppIP: "fd00::7", InboundAddr: "[::]:4143"}, "[fd00::7]:4143"},
		{"explicit: the inbound listener's address (local mode's proxyAddr)", Config{InboundAddr: "127.0.0.1:33041"}, "127.0.0.1:33041"},
		{"explicit, all interfaces: nothing to ask", Config{InboundAddr: "0.0.0.0:4143"}, ""},
		{"explicit, port chosen by the kernel: nothing to ask", Config{InboundAddr: "127.0.0.1:0"}, ""},
		{"explicit, a host name: nothing to ask", Config{InboundAddr: "localhost:4143"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := zoneSelf(tc.cfg); got != tc.want {
				t.Fatalf("zoneSelf = %q, want %q", got, tc.want)
			}
		})
	}
}
