package outbound_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/inboundpolicy"
	"github.com/trellis-mesh/trellis/proxy/internal/grpctest"
	"github.com/trellis-mesh/trellis/proxy/policy"
)

// benchServerPolicy is a Server with n authorizations (one client identity
// each, in a network with an exception; the caller is allowed by the
// last) and n routes besides the one the request matches, access deny.
func benchServerPolicy(n int) *apiv1.ServerPolicy {
	sp := &apiv1.ServerPolicy{Name: "server/books", Source: "server", Access: apiv1.AccessPolicy_DENY}
	for i := range n {
		id := fmt.Sprintf("spiffe://cluster.local/ns/ns%d/sa/client", i)
		if i == n-1 {
			id = clientID.String()
		}
		sp.Authorizations = append(sp.Authorizations, &apiv1.Authorization{Name: fmt.Sprint("a", i), Identities: []string{id},
			Nets: []*apiv1.Network{{Cidr: "127.0.0.0/8", Except: []string{"127.255.0.0/16"}}}})
		sp.Routes = append(sp.Routes, &apiv1.InboundRoute{Name: fmt.Sprint("r", i),
			Matches: []*apiv1.RouteMatch{{PathPrefix: fmt.Sprintf("/r%d", i), Method: "GET"}}})
	}
	sp.Routes = append(sp.Routes, &apiv1.InboundRoute{Name: "books", Matches: []*apiv1.RouteMatch{{PathPrefix: "/books"}}})
	return sp
}

// enforcingPair is a pair whose inbound enforces sp (nil: no policy, the
// all-unauthenticated default as before enforcement).
func enforcingPair(b *testing.B, sp *apiv1.ServerPolicy) *pair {
	ln := listen(b)
	srv := &http.Server{Handler: benchApp()}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Close() })
	if sp == nil {
		return newPair(b, pairOpts{transport: "lean", appListener: ln})
	}
	port := ln.Addr().(*net.TCPAddr).AddrPort().Port()
	ps := newPolicyServer()
	ps.set(port, sp)
	addr, _ := grpctest.Serve(b, "127.0.0.1:0", func(gs *grpc.Server) { apiv1.RegisterPolicyServer(gs, ps) })
	w, err := inboundpolicy.New(apiv1.NewPolicyClient(grpctest.Dial(b, addr)), inboundpolicy.Options{
		Workload: serverID.String(), Ports: []uint16{port}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(w.Close)
	enf, err := policy.NewEnforcer(policy.EnforcerConfig{Source: w, TrustDomain: serverID.TrustDomain})
	if err != nil {
		b.Fatal(err)
	}
	return newPair(b, pairOpts{transport: "lean", appListener: ln, authorizer: enf})
}

// cpuTime is this process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// burst sends n requests over 8 workers and returns the CPU per request
// of the whole process (client, both proxies, app).
func burst(b *testing.B, p *pair, n int) time.Duration {
	var wg sync.WaitGroup
	per := n / 8
	runtime.GC() // no collection owed by the previous burst
	start := cpuTime()
	for range 8 {
		wg.Go(func() {
			for range per {
				resp, err := p.client.Get(url("/books/1"))
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
	}
	wg.Wait()
	return (cpuTime() - start) / time.Duration(per*8)
}

// BenchmarkAuthzCost: the CPU per request of a mesh round trip (client,
// outbound, mTLS, inbound, app, all in this process) with no policy and
// with 1, 10 and 100 authorizations and routes on the server; the rounds
// interleave the configurations so that a neighbour's load favours none,
// and the medians are printed as ratios against no policy. Run with
// -benchtime 1x (b.N is not used: the rounds are fixed).
func BenchmarkAuthzCost(b *testing.B) {
	configs := []struct {
		name string
		sp   *apiv1.ServerPolicy
	}{{"none", nil}, {"1", benchServerPolicy(1)}, {"10", benchServerPolicy(10)}, {"100", benchServerPolicy(100)}}
	pairs := make([]*pair, len(configs))
	for i, c := range configs {
		pairs[i] = enforcingPair(b, c.sp)
		burst(b, pairs[i], 800) // warm: connections, the policy's first answer
	}
	const rounds, perRound = 7, 4000
	cpu := make([][]time.Duration, len(configs))
	for range rounds {
		for i := range configs {
			cpu[i] = append(cpu[i], burst(b, pairs[i], perRound))
		}
	}
	med := func(d []time.Duration) time.Duration { s := slices.Clone(d); slices.Sort(s); return s[len(s)/2] }
	base := med(cpu[0])
	for i, c := range configs {
		m := med(cpu[i])
		b.Logf("policies %-4s  cpu/request %7.1f µs  ratio %.3f  added %+.1f %%", c.name,
			float64(m.Nanoseconds())/1e3, float64(m)/float64(base), 100*(float64(m)/float64(base)-1))
		if c.name == "100" {
			b.ReportMetric(100*(float64(m)/float64(base)-1), "added-%-at-100")
		}
	}
}
