package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
)

// tracker matches endpoint additions seen on streams with the slice writes
// that caused them. Every churned endpoint gets an address never used
// before, so an Add of that address on a stream is that write arriving.
type tracker struct {
	mu          sync.Mutex
	pending     map[string]*change // by the new address
	done        []*change
	lat         []time.Duration // one per (change, interested stream)
	ready       atomic.Int64    // streams that received their first answer
	policyReady atomic.Int64
	hotMsgs     atomic.Int64 // messages on the tracked streams of Service 0
	coalesced   int          // (change, stream) pairs superseded before they were sent
	streamIDs   atomic.Int64
}

type change struct {
	addr     string
	svc      int
	slot     int       // the endpoint it replaced
	start    time.Time // just before the slice write
	seenBy   map[int64]bool
	want     int // streams interested in svc
	got      int
	last     time.Duration // the slowest interested stream
	complete bool
}

func newTracker() *tracker { return &tracker{pending: map[string]*change{}} }

// expect registers a write before it is made, so a fast stream cannot see
// the address first.
func (t *tracker) expect(c *change) {
	t.mu.Lock()
	t.pending[c.addr] = c
	t.mu.Unlock()
}

// drop forgets a write that failed.
func (t *tracker) drop(addr string) {
	t.mu.Lock()
	delete(t.pending, addr)
	t.mu.Unlock()
}

// seen records that stream received addr at now. The streams are level
// triggered: when a later write to the same endpoint reaches a stream
// first, the earlier one is superseded there (coalesced into one diff) and
// counts as arrived with it, since the stream is then at least as new.
func (t *tracker) seen(stream int64, addr string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.pending[addr]
	if c == nil {
		return
	}
	for _, old := range t.pending {
		if old != c && old.svc == c.svc && old.slot == c.slot && old.start.Before(c.start) && !old.seenBy[stream] {
			t.coalesced++
			t.arrive(old, stream, now)
		}
	}
	t.arrive(c, stream, now)
}

func (t *tracker) arrive(c *change, stream int64, now time.Time) {
	if c.seenBy[stream] {
		return
	}
	c.seenBy[stream] = true
	d := now.Sub(c.start)
	t.lat = append(t.lat, d)
	c.got++
	c.last = max(c.last, d)
	if c.got == c.want {
		c.complete = true
		delete(t.pending, c.addr)
		t.done = append(t.done, c)
	}
}

// take returns the per-stream latencies, the per-change (slowest stream)
// latencies of complete changes and the number of changes still
// incomplete, and starts over: the next phase is measured on its own.
func (t *tracker) take() (perStream, perChange []time.Duration, incomplete, coalesced int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	perStream, coalesced = t.lat, t.coalesced
	t.coalesced = 0
	for _, c := range t.done {
		perChange = append(perChange, c.last)
	}
	incomplete = len(t.pending)
	t.lat, t.done, t.pending = nil, nil, map[string]*change{}
	return perStream, perChange, incomplete, coalesced
}

func (t *tracker) pendingCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending)
}

// proxy is one simulated trellis-proxy: one mTLS connection to the
// controller carrying its Destination.Get streams and one
// Policy.WatchInbound, as the real proxy holds them.
type proxy struct {
	conn *grpc.ClientConn
}

// dialProxy connects as workload id. stalled proxies get the smallest
// HTTP/2 windows gRPC allows, so their unread streams fill up soonest.
func dialProxy(c *controller, id identity.ID, stalled bool) (*proxy, error) {
	cfg, err := c.clientTLS(id)
	if err != nil {
		return nil, err
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}
	if stalled {
		opts = append(opts, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	}
	conn, err := grpc.NewClient(c.grpcAddr, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial controller: %w", err)
	}
	return &proxy{conn: conn}, nil
}

// watch opens Destination.Get for service svc and reads it until ctx ends,
// reporting every added address to t.
func (p *proxy) watch(ctx context.Context, t *tracker, caller identity.ID, svc int, errs chan<- error) error {
	st, err := apiv1.NewDestinationClient(p.conn).Get(ctx, &apiv1.GetDestination{Path: authority(svc), CallerIdentity: caller.String()})
	if err != nil {
		return fmt.Errorf("Destination.Get %s: %w", authority(svc), err)
	}
	stream := t.streamIDs.Add(1)
	go func() {
		first := true
		for {
			u, err := st.Recv()
			if err != nil {
				if ctx.Err() == nil && !errors.Is(err, io.EOF) {
					errs <- fmt.Errorf("stream %s: %w", authority(svc), err)
				}
				return
			}
			now := time.Now()
			if svc == 0 {
				t.hotMsgs.Add(1)
			}
			if first {
				first = false
				t.ready.Add(1)
			}
			for _, a := range u.GetAdd().GetAddrs() {
				if ip := a.GetAddr().GetIp(); ip != "" {
					t.seen(stream, ip, now)
				}
			}
		}
	}()
	return nil
}

// watchPolicy holds Policy.WatchInbound open and drains it.
func (p *proxy) watchPolicy(ctx context.Context, t *tracker, caller identity.ID) error {
	st, err := apiv1.NewPolicyClient(p.conn).WatchInbound(ctx, &apiv1.InboundPolicyRequest{Workload: caller.String(), Port: svcPort})
	if err != nil {
		return fmt.Errorf("Policy.WatchInbound: %w", err)
	}
	go func() {
		first := true
		for {
			if _, err := st.Recv(); err != nil {
				return
			}
			if first {
				first = false
				t.policyReady.Add(1)
			}
		}
	}()
	return nil
}

// stall opens a Destination.Get on every service (and a policy watch) and
// never reads them: each stream's window fills with the answers and the
// updates it does not take, and the controller's sends to it block.
func (p *proxy) stall(ctx context.Context, caller identity.ID, services int) ([]grpc.ClientStream, error) {
	var held []grpc.ClientStream
	for i := range services {
		st, err := apiv1.NewDestinationClient(p.conn).Get(ctx, &apiv1.GetDestination{Path: authority(i), CallerIdentity: caller.String()})
		if err != nil {
			return nil, fmt.Errorf("stalled Destination.Get: %w", err)
		}
		held = append(held, st)
	}
	st, err := apiv1.NewPolicyClient(p.conn).WatchInbound(ctx, &apiv1.InboundPolicyRequest{Workload: caller.String(), Port: svcPort})
	if err != nil {
		return nil, fmt.Errorf("stalled Policy.WatchInbound: %w", err)
	}
	return append(held, st), nil
}

// drained is what a stalled client found buffered once it read again.
type drained struct {
	streams, msgs int
	bytes         int
	maxStream     int // bytes on its fullest stream
	hotMsgs       int // messages on its Service 0 stream
	hotBytes      int
	hotWrites     int64 // writes to Service 0 while it did not read
	hotReader     int64 // messages a reading stream on Service 0 got meanwhile
}

// drain reads the held Destination streams until each has been quiet for
// quiet, and counts what they had buffered (and what the controller could
// send once they read). The last held stream is the policy watch.
func drain(held []grpc.ClientStream, quiet time.Duration) drained {
	out := drained{streams: len(held)}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, st := range held[:len(held)-1] {
		wg.Go(func() {
			got, stop := make(chan int), make(chan struct{})
			defer close(stop)
			go func() {
				for {
					var u apiv1.Update
					if err := st.RecvMsg(&u); err != nil {
						close(got)
						return
					}
					select {
					case got <- proto.Size(&u):
					case <-stop:
						return // the connection's close ends RecvMsg's wait
					}
				}
			}()
			n, b := 0, 0
		loop:
			for {
				select {
				case sz, ok := <-got:
					if !ok {
						break loop
					}
					n, b = n+1, b+sz
				case <-time.After(quiet):
					break loop
				}
			}
			mu.Lock()
			out.msgs, out.bytes, out.maxStream = out.msgs+n, out.bytes+b, max(out.maxStream, b)
			if i == 0 {
				out.hotMsgs, out.hotBytes = n, b
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}
