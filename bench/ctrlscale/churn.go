package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// churner rewrites EndpointSlices as a rolling restart does: each write
// replaces one endpoint's address of one Service with a new one.
type churner struct {
	client    kubernetes.Interface
	t         *tracker
	endpoints int
	mu        []sync.Mutex // per service: its writes never race
	ips       [][]string   // per service: the current addresses
	next      atomic.Uint32
	n         atomic.Int64 // writes made
	failed    atomic.Int64
	want      []int // tracked streams per service
	hotEvery  int   // every hotEvery-th write goes to Service 0; 0: none
	hotWrites atomic.Int64
	wmu       sync.Mutex
	writes    []time.Duration // latency of each slice write call
}

func newChurner(c kubernetes.Interface, t *tracker, services, endpoints, hotEvery int, want []int) *churner {
	ch := &churner{client: c, t: t, endpoints: endpoints, hotEvery: hotEvery, mu: make([]sync.Mutex, services), ips: make([][]string, services), want: want}
	for i := range services {
		ch.ips[i] = make([]string, endpoints)
		for j := range endpoints {
			ch.ips[i][j] = ipFromIndex(uint32(i*endpoints + j + 1))
		}
	}
	ch.next.Store(uint32(services*endpoints + 1))
	return ch
}

// run writes at rate per second for d, open loop (a slow write does not
// delay the next one's start). Every hotEvery-th write goes to Service 0,
// a large deployment in a rolling restart whose streams get many updates;
// the others take the Services round robin.
func (ch *churner) run(ctx context.Context, log *slog.Logger, rate float64, d time.Duration) {
	start := time.Now()
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for k := 0; ; k++ {
		at := start.Add(time.Duration(float64(k) / rate * float64(time.Second)))
		if at.Sub(start) >= d {
			break
		}
		select {
		case <-time.After(time.Until(at)):
		case <-ctx.Done():
			wg.Wait()
			return
		}
		sem <- struct{}{}
		svc := ch.pick(int(ch.n.Add(1) - 1))
		wg.Go(func() {
			defer func() { <-sem }()
			if err := ch.write(ctx, svc); err != nil {
				ch.failed.Add(1)
				log.Warn("endpointslice write failed", "err", err)
			}
		})
	}
	wg.Wait()
}

func (ch *churner) pick(k int) int {
	if ch.hotEvery > 0 && k%ch.hotEvery == 0 {
		return 0
	}
	return k % len(ch.ips)
}

func (ch *churner) write(ctx context.Context, svc int) error {
	ch.mu[svc].Lock()
	defer ch.mu[svc].Unlock()
	ips := append([]string(nil), ch.ips[svc]...)
	j := int(ch.next.Load()) % ch.endpoints
	addr := ipFromIndex(ch.next.Add(1))
	ips[j] = addr
	c := &change{addr: addr, svc: svc, slot: j, want: ch.want[svc], seenBy: map[int64]bool{}, start: time.Now()}
	if c.want > 0 {
		ch.t.expect(c)
	}
	_, err := ch.client.DiscoveryV1().EndpointSlices(namespace).Update(ctx, slice(svc, ips), metav1.UpdateOptions{})
	took := time.Since(c.start)
	if err != nil {
		ch.t.drop(addr)
		return fmt.Errorf("update %s: %w", sliceName(svc), err)
	}
	ch.wmu.Lock()
	ch.writes = append(ch.writes, took)
	ch.wmu.Unlock()
	ch.ips[svc] = ips
	if svc == 0 {
		ch.hotWrites.Add(1)
	}
	return nil
}
