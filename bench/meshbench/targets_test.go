package main

import (
	"math"
	"testing"
)

func TestCheckTargets(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	proxies := func(client, server float64, peak int64) []procCost {
		return []procCost{
			{Name: "client-proxy", Proxy: true, CPUMicrosReq: client, IdleRSS: 9 << 20, PeakRSS: peak},
			{Name: "server-proxy", Proxy: true, CPUMicrosReq: server, IdleRSS: 12 << 20, PeakRSS: peak},
		}
	}
	nginx := []procCost{{Name: "nginx1", CPUMicrosReq: 90}, {Name: "nginx2", CPUMicrosReq: 110}}
	scs := []scenarioReport{
		{
			scenario: scenario{Name: "http-4000", Kind: kindHTTP, Rate: 4000},
			Paths: []pathReport{
				{Path: pathMesh, Completed: 10, Procs: proxies(105, 150, 15<<20)},
				{Path: pathNginx, Completed: 10, Procs: nginx},
			},
			Added:    map[string]latency{pathMesh: {P99: 3000}, pathNginx: {P99: 1000}},
			RatioP50: f(1.2), RatioP90: f(1.5),
		},
		{
			scenario: scenario{Name: "idle-10", Kind: kindIdle},
			Paths: []pathReport{
				{Path: pathMesh, Completed: 10, Held: 10, Procs: []procCost{{Name: "client-proxy", Proxy: true, HeldDelta: 10 << 10}}},
				{Path: pathNginx, Completed: 10, Held: 10, Procs: []procCost{{Name: "nginx1-idle", HeldDelta: 20 << 10}}},
			},
		},
	}
	want := map[string]struct {
		measured float64
		met      bool
	}{
		"CPU per request, client-proxy / an nginx hop":         {1.05, true},
		"CPU per request, server-proxy / an nginx hop":         {1.5, false},
		"added p50, mesh / nginx chain":                        {1.2, true},
		"added p90, mesh / nginx chain":                        {1.5, false},
		"added p99, mesh / nginx chain":                        {3, false},
		"RSS peak, client-proxy":                               {15, false},
		"RSS peak, server-proxy":                               {15, false},
		"RSS idle, client-proxy":                               {9, true},
		"RSS idle, server-proxy":                               {12, false},
		"RSS per idle app connection, client-proxy / nginx #1": {0.5, true},
	}
	got := checkTargets(scs)
	if len(got) != len(want) {
		t.Errorf("%d targets, want %d: %+v", len(got), len(want), got)
	}
	for _, tr := range got {
		w, ok := want[tr.Target]
		if !ok {
			t.Errorf("unexpected target %q", tr.Target)
			continue
		}
		if math.Abs(tr.Measured-w.measured) > 1e-9 || tr.Met != w.met {
			t.Errorf("%s: measured %v met %v, want %v %v", tr.Target, tr.Measured, tr.Met, w.measured, w.met)
		}
	}
	miss := newTarget("x", "s", 1.65, 1.1, "x")
	if v := miss.verdict(); v != "missed by 50 %" {
		t.Errorf("verdict of 1.65 against 1.1 = %q, want missed by 50 %%", v)
	}
}
