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
	wmu       sync.Mutex
	writes    []time.Duration // latency of each slice write call
}

func newChurner(c kubernetes.Interface, t *tracker, services, endpoints int, want []int) *churner {
	ch := &churner{client: c, t: t, endpoints: endpoints, mu: make([]sync.Mutex, services), ips: make([][]string, services), want: want}
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
// delay the next one's start), Services taken round robin.
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
		svc := int(ch.n.Add(1)-1) % len(ch.ips)
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

func (ch *churner) write(ctx context.Context, svc int) error {
	ch.mu[svc].Lock()
	defer ch.mu[svc].Unlock()
	ips := append([]string(nil), ch.ips[svc]...)
	j := int(ch.next.Load()) % ch.endpoints
	addr := ipFromIndex(ch.next.Add(1))
	ips[j] = addr
	c := &change{addr: addr, svc: svc, want: ch.want[svc], start: time.Now()}
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
	return nil
}
