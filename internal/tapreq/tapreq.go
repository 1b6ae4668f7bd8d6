// Package tapreq holds the limits of a tap's ObserveRequest
// (api/v1/tap.proto) in one place: each proxy refuses a request past them
// (proxy/tap), and the controller checks the same before it fans a tap
// out (controller/tapfan), so the user gets a 400 saying why rather than
// a 200 stream every proxy silently refused.
package tapreq

import (
	"fmt"
	"math"

	"google.golang.org/protobuf/proto"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

const (
	// MaxMessageSize bounds an ObserveRequest on the wire (the proxy's
	// gRPC receive limit): a request is small, anything large is not one.
	MaxMessageSize = 16 << 10
	// MaxMatchLen bounds each match string: longer ones match nothing a
	// request can carry and only cost comparisons.
	MaxMatchLen = 4096
	// MaxBodyBytes is the most body bytes a tap captures (the proxies cap
	// body_bytes to it; the controller refuses more).
	MaxBodyBytes = 65536
)

// Directions a match may name ("" is both).
const (
	Inbound  = "inbound"
	Outbound = "outbound"
)

// Check refuses a request a proxy would refuse: larger than
// MaxMessageSize, a sample outside [0, 1], a direction other than
// inbound, outbound or empty, or a match field longer than MaxMatchLen.
func Check(req *apiv1.ObserveRequest) error {
	if n := proto.Size(req); n > MaxMessageSize {
		return fmt.Errorf("the request is %d bytes encoded, at most %d", n, MaxMessageSize)
	}
	if s := req.GetSample(); math.IsNaN(s) || s < 0 || s > 1 {
		return fmt.Errorf("sample must be in [0, 1], got %v", s)
	}
	m := req.GetMatch()
	switch m.GetDirection() {
	case "", Inbound, Outbound:
	default:
		return fmt.Errorf("match.direction must be %s, %s or empty, got %q", Inbound, Outbound, m.GetDirection())
	}
	for _, f := range []struct{ name, v string }{
		{"authority", m.GetAuthority()}, {"pathPrefix", m.GetPathPrefix()}, {"method", m.GetMethod()},
		{"peerIdentity", m.GetPeerIdentity()}, {"fromIdentity", m.GetFromIdentity()}, {"toIdentity", m.GetToIdentity()},
	} {
		if len(f.v) > MaxMatchLen {
			return fmt.Errorf("match.%s is %d bytes, at most %d", f.name, len(f.v), MaxMatchLen)
		}
	}
	return nil
}
