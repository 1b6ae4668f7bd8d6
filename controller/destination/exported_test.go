package destination

import (
	"context"
	"strings"
	"sync"
	"testing"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/authority"
	"github.com/trellis-mesh/trellis/controller/notify"
)

// exportSource answers one service with a meshed and a plain endpoint,
// exported or not as set.
type exportSource struct {
	topics   *notify.Topics
	mu       sync.Mutex
	exported bool
}

func (s *exportSource) set(exported bool) {
	s.mu.Lock()
	s.exported = exported
	s.mu.Unlock()
	s.topics.Notify("all")
}

func (s *exportSource) Resolve(authority.Authority, string) (Resolution, <-chan struct{}, func()) {
	ch, release := s.topics.Acquire("all")
	s.mu.Lock()
	defer s.mu.Unlock()
	e := Endpoints{Exists: true, Labels: map[string]string{"service": "books"}, Addrs: map[string]*apiv1.WeightedAddr{
		"10.0.0.1:8080": {Addr: &apiv1.TcpAddress{Ip: "10.0.0.1", Port: 8080}, Weight: 1,
			TlsIdentity: &apiv1.TlsIdentity{SpiffeId: "spiffe://b.local/ns/demo/sa/books", ServerName: "books.demo.serviceaccount.identity.b.local"}},
		"10.0.0.2:8080": {Addr: &apiv1.TcpAddress{Ip: "10.0.0.2", Port: 8080}, Weight: 1},
	}}
	return Resolution{Endpoints: e, Service: "books.demo.svc.cluster.local:80", Exported: s.exported}, ch, release
}

// A gateway's stream (exported_only) over real gRPC: nothing while the
// service is not exported, its meshed endpoint only once it is, nothing
// again when the export is taken back; an ordinary stream sees both
// endpoints throughout.
func TestExportedOnly(t *testing.T) {
	src := &exportSource{topics: notify.NewTopics()}
	client := destinationClient(t, &Service{Source: src})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gw, err := client.Get(ctx, &apiv1.GetDestination{Path: "books.demo.svc.cluster.local:80", ExportedOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := client.Get(ctx, &apiv1.GetDestination{Path: "books.demo.svc.cluster.local:80"})
	if err != nil {
		t.Fatal(err)
	}
	next := func(st apiv1.Destination_GetClient) string {
		t.Helper()
		u, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(kinds([]*apiv1.Update{u}))
	}
	if got := next(gw); got != "none(unknown)" {
		t.Fatalf("gateway, not exported: %s, want none(unknown)", got)
	}
	if got := next(plain); got != "add:10.0.0.1:10.0.0.2" && got != "add:10.0.0.2:10.0.0.1" {
		t.Fatalf("ordinary stream: %s, want both endpoints", got)
	}
	src.set(true)
	if got := next(gw); got != "add:10.0.0.1" {
		t.Fatalf("gateway, exported: %s, want the meshed endpoint only", got)
	}
	src.set(false)
	for _, want := range []string{"remove:10.0.0.1", "none(unknown)"} {
		if got := next(gw); got != want {
			t.Fatalf("gateway, export taken back: %s, want %s", got, want)
		}
	}
}
