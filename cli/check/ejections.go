package check

import (
	"context"
	"time"
)

// ProxyEjectionsCheck lists the endpoints each ready proxy's circuit
// breaker holds out of its balancer (trellis_endpoint_ejected): a warning,
// since the mesh works around them, but each names a replica that fails.
var ProxyEjectionsCheck = Check{
	Group: "data plane", Name: "no endpoint ejected by a circuit breaker", Anchor: "proxy-ejections", Timeout: 2 * time.Minute,
	Run: func(ctx context.Context, e *Env) Outcome {
		proxies, skip := scrapeReady(ctx, e)
		if skip != nil {
			return *skip
		}
		var held []string
		for _, s := range proxies {
			ps, problem := stateOf(s)
			if problem != "" {
				continue // the control-plane check names unreadable proxies
			}
			for _, ej := range ps.Ejected {
				held = append(held, podRef(s.pod)+": "+ej)
			}
		}
		if len(held) > 0 {
			return warn("these endpoints answered with failures (5xx, gRPC UNAVAILABLE or INTERNAL, timeouts, refused connections): see their pods' logs; each is probed back with live traffic as its backoff ends (docs/traffic.md#circuit-breaking)",
				"%d endpoints held out by circuit breakers (proxy: service endpoint): %s", len(held), listOf(held))
		}
		return ok("%d proxies eject no endpoint", len(proxies))
	},
}
