package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"testing"
	"time"
)

// TestTinyRun runs the whole benchmark at a tiny scale so that a change
// breaking it (the controller's flags, the API, the stream contract) is
// noticed; it checks that every write reached every interested stream,
// not how fast.
func TestTinyRun(t *testing.T) {
	bin := os.Getenv("TRELLIS_K8S_BIN")
	if bin == "" {
		t.Skip("TRELLIS_K8S_BIN is not set: export TRELLIS_K8S_BIN=$(ls -t /var/tmp/trellis-cluster/cache/k8s-*/k8s-all | head -1)")
	}
	cfg := config{K8sBin: bin, Services: 20, Endpoints: 5, Proxies: 10, Authorities: 2, Rate: 20,
		Duration: 3 * time.Second, Settle: 20 * time.Second, Workers: 8, HotEvery: 2, Certify: true}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	res, err := run(ctx, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res.print(&out, cfg)
	t.Logf("took %s:\n%s", time.Since(start).Round(time.Millisecond), out.String())
	if len(res.phases) != 2 {
		t.Fatalf("%d phases, want 2", len(res.phases))
	}
	for _, p := range res.phases {
		if p.failed > 0 || len(p.writes) == 0 {
			t.Errorf("%s: %d writes, %d failed", p.name, len(p.writes), p.failed)
		}
		if len(p.perStream) == 0 || p.incomplete > 0 {
			t.Errorf("%s: %d updates arrived, %d writes did not reach every interested stream", p.name, len(p.perStream), p.incomplete)
		}
	}
	if res.storm.n != cfg.Proxies || res.storm.failed > 0 || len(res.storm.lat) != cfg.Proxies {
		t.Errorf("certify storm: %d proxies, %d failed, %d certificates", res.storm.n, res.storm.failed, len(res.storm.lat))
	}
	if res.storm.tokenReviews < float64(cfg.Proxies) {
		t.Errorf("certify storm: the API server served %v TokenReviews for %d certificates", res.storm.tokenReviews, cfg.Proxies)
	}
	if res.stalled.streams != cfg.Services+1 {
		t.Errorf("stalled client held %d streams, want %d", res.stalled.streams, cfg.Services+1)
	}
}

func TestQuantile(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		var out []time.Duration
		for _, v := range n {
			out = append(out, time.Duration(v)*time.Millisecond)
		}
		return out
	}
	for _, tc := range []struct {
		in   []time.Duration
		q    float64
		want time.Duration
	}{
		{nil, .99, 0},
		{ms(5), .5, 5 * time.Millisecond},
		{ms(4, 1, 3, 2), .5, 2 * time.Millisecond},
		{ms(4, 1, 3, 2), 1, 4 * time.Millisecond},
		{ms(10, 1, 2, 3, 4, 5, 6, 7, 8, 9), .99, 10 * time.Millisecond},
		{ms(10, 1, 2, 3, 4, 5, 6, 7, 8, 9), .9, 9 * time.Millisecond},
	} {
		if got := quantile(tc.in, tc.q); got != tc.want {
			t.Errorf("quantile(%v, %v) = %v, want %v", tc.in, tc.q, got, tc.want)
		}
	}
}

func TestIPFromIndex(t *testing.T) {
	seen := map[string]bool{}
	for _, n := range []uint32{1, 255, 256, 65535, 65536, 1 << 23} {
		ip := ipFromIndex(n)
		if seen[ip] {
			t.Errorf("ipFromIndex(%d) = %s twice", n, ip)
		}
		seen[ip] = true
	}
	if got := ipFromIndex(258); got != "10.0.1.2" {
		t.Errorf("ipFromIndex(258) = %s, want 10.0.1.2", got)
	}
}
