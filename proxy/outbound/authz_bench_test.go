package outbound_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/authz/authztest"
	"github.com/trellis-mesh/trellis/proxy/inboundpolicy"
	"github.com/trellis-mesh/trellis/proxy/internal/grpctest"
	"github.com/trellis-mesh/trellis/proxy/policy"
)

func benchServerPolicy(n int) *apiv1.ServerPolicy {
	return authztest.ServerPolicy(n, clientID.String(), "127.0.0.0/8", "127.255.0.0/16")
}

// enforcingPair is a pair whose inbound enforces sp (nil: no policy, the
// all-unauthenticated default as before enforcement), and its Authorizer.
func enforcingPair(b *testing.B, sp *apiv1.ServerPolicy) (*pair, policy.Authorizer, uint16) {
	ln := listen(b)
	srv := &http.Server{Handler: benchApp()}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Close() })
	port := ln.Addr().(*net.TCPAddr).AddrPort().Port()
	if sp == nil {
		def, err := policy.NewDefaultIn(policy.AllUnauthenticated, serverID.TrustDomain)
		if err != nil {
			b.Fatal(err)
		}
		return newPair(b, pairOpts{appListener: ln}), def, port
	}
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
	return newPair(b, pairOpts{appListener: ln, authorizer: enf}), enf, port
}

// stageCPU is the CPU of one Authorize call of the inbound's Authorizer
// for the benchmark's request, measured alone.
func stageCPU(b *testing.B, az policy.Authorizer, port uint16) time.Duration {
	c := policy.Caller{Identity: clientID.String(), TLS: true, ClientIP: netip.MustParseAddr("127.0.0.1"), Port: port}
	r := httptest.NewRequest(http.MethodGet, "/books/1", nil)
	const n = 200000
	runtime.GC()
	start := cpuTime()
	for range n {
		if err := az.Authorize(context.Background(), c, r); err != nil {
			b.Fatal(err)
		}
	}
	return (cpuTime() - start) / n
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
	return burstTo(b, p.client, url("/books/1"), n)
}

// burstTo is burst with client to target.
func burstTo(b *testing.B, client *http.Client, target string, n int) time.Duration {
	var wg sync.WaitGroup
	per := n / 8
	runtime.GC() // no collection owed by the previous burst
	start := cpuTime()
	for range 8 {
		wg.Go(func() {
			for range per {
				resp, err := client.Get(target)
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
	stages := make([]time.Duration, len(configs))
	for i, c := range configs {
		var az policy.Authorizer
		var port uint16
		pairs[i], az, port = enforcingPair(b, c.sp)
		burst(b, pairs[i], 800) // warm: connections, the policy's first answer
		stages[i] = stageCPU(b, az, port)
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
		// The stage's own cost over the old Default's, against the
		// round trip without policy: precise where the round trip's
		// run-to-run noise (a few %) is not.
		added := 100 * float64(stages[i]-stages[0]) / float64(base)
		b.Logf("policies %-4s  round trip cpu/request %7.1f µs  ratio %.3f (%+.1f %%)  authz stage %5.0f ns  stage adds %.2f %%", c.name,
			float64(m.Nanoseconds())/1e3, float64(m)/float64(base), 100*(float64(m)/float64(base)-1), float64(stages[i].Nanoseconds()), added)
		if c.name == "100" {
			b.ReportMetric(added, "stage-added-%-at-100")
		}
	}
}
