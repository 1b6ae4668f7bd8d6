package main

import (
	"math"
	"testing"
)

func TestCheckTargets(t *testing.T) {
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
			Added: map[string]latency{pathMesh: {P50: 120, P90: 300, P99: 3000}, pathNginx: {P50: 100, P90: 200, P99: 1000}},
		},
		{
			scenario: scenario{Name: "grpc-1000", Kind: kindGRPC, Rate: 1000},
			Paths: []pathReport{
				{Path: pathMesh, Completed: 10, Procs: proxies(100, 100, 1)},
				{Path: pathNginx, Completed: 10, Procs: nginx},
			},
			Added: map[string]latency{pathMesh: {P50: 50, P90: -10}, pathNginx: {P50: -5, P90: 100}},
		},
		{
			scenario: scenario{Name: "idle-10", Kind: kindIdle},
			Paths: []pathReport{
				{Path: pathMesh, Completed: 10, Held: 10, Procs: []procCost{{Name: "client-proxy", Proxy: true, HeldDelta: 10 << 10}}},
				{Path: pathNginx, Completed: 10, Held: 10, Procs: []procCost{{Name: "nginx1-idle", HeldDelta: 20 << 10}}},
			},
		},
	}
	type key struct{ target, scenario string }
	want := map[key]struct {
		measured  float64
		met       bool
		unchecked bool
	}{
		{"CPU per request, client-proxy / an nginx hop", "http-4000"}:       {1.05, true, false},
		{"CPU per request, server-proxy / an nginx hop", "http-4000"}:       {1.5, false, false},
		{"added p50, mesh / nginx chain", "http-4000"}:                      {1.2, true, false},
		{"added p90, mesh / nginx chain", "http-4000"}:                      {1.5, false, false},
		{"added p99, mesh / nginx chain", "http-4000"}:                      {3, false, false},
		{"RSS peak, client-proxy", "http-4000"}:                             {15, false, false},
		{"RSS peak, server-proxy", "http-4000"}:                             {15, false, false},
		{"RSS idle, client-proxy", "start-up"}:                              {9, true, false},
		{"RSS idle, server-proxy", "start-up"}:                              {12, false, false},
		{"CPU per request, client-proxy / an nginx hop", "grpc-1000"}:       {1, true, false},
		{"CPU per request, server-proxy / an nginx hop", "grpc-1000"}:       {1, true, false},
		{"added p50, mesh / nginx chain", "grpc-1000"}:                      {0, false, true}, // nginx added nothing
		{"added p90, mesh / nginx chain", "grpc-1000"}:                      {0, false, true}, // mesh "faster" than direct
		{"RSS per idle app connection, client-proxy / nginx #1", "idle-10"}: {0.5, true, false},
	}
	got := checkTargets(scs)
	if len(got) != len(want) {
		t.Errorf("%d targets, want %d: %+v", len(got), len(want), got)
	}
	for _, tr := range got {
		w, ok := want[key{tr.Target, tr.Scenario}]
		if !ok {
			t.Errorf("unexpected target %q in %s", tr.Target, tr.Scenario)
			continue
		}
		if math.Abs(tr.Measured-w.measured) > 1e-9 || tr.Met != w.met || (tr.Unchecked != "") != w.unchecked {
			t.Errorf("%s, %s: measured %v met %v unchecked %q; want %v %v unchecked %v", tr.Target, tr.Scenario, tr.Measured, tr.Met, tr.Unchecked, w.measured, w.met, w.unchecked)
		}
	}
	miss := newTarget("x", "s", 1.65, 1.1, "x")
	if v := miss.verdict(); v != "missed by 50 %" {
		t.Errorf("verdict of 1.65 against 1.1 = %q, want missed by 50 %%", v)
	}
}
