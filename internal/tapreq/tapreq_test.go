package tapreq

import (
	"math"
	"strings"
	"testing"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

func TestCheck(t *testing.T) {
	long := strings.Repeat("a", MaxMatchLen)
	for _, tc := range []struct {
		name string
		req  *apiv1.ObserveRequest
		err  string
	}{
		{"nil", nil, ""},
		{"defaults", &apiv1.ObserveRequest{}, ""},
		{"everything allowed", &apiv1.ObserveRequest{Sample: 1, BodyBytes: MaxBodyBytes, Match: &apiv1.TapMatch{Direction: Outbound, PathPrefix: long}}, ""},
		{"inbound", &apiv1.ObserveRequest{Match: &apiv1.TapMatch{Direction: Inbound}}, ""},
		{"bad direction", &apiv1.ObserveRequest{Match: &apiv1.TapMatch{Direction: "Inbound"}}, "match.direction"},
		{"sample NaN", &apiv1.ObserveRequest{Sample: math.NaN()}, "sample"},
		{"sample negative", &apiv1.ObserveRequest{Sample: -0.5}, "sample"},
		{"sample above 1", &apiv1.ObserveRequest{Sample: 1.01}, "sample"},
		{"authority too long", &apiv1.ObserveRequest{Match: &apiv1.TapMatch{Authority: long + "a"}}, "match.authority"},
		{"path too long", &apiv1.ObserveRequest{Match: &apiv1.TapMatch{PathPrefix: long + "a"}}, "match.pathPrefix"},
		{"method too long", &apiv1.ObserveRequest{Match: &apiv1.TapMatch{Method: long + "a"}}, "match.method"},
		//lint:ignore SA1019 deprecated, still sent by old clients: bounded too.
		{"peer too long", &apiv1.ObserveRequest{Match: &apiv1.TapMatch{PeerIdentity: long + "a"}}, "match.peerIdentity"},
		{"from too long", &apiv1.ObserveRequest{Match: &apiv1.TapMatch{FromIdentity: long + "a"}}, "match.fromIdentity"},
		{"to too long", &apiv1.ObserveRequest{Match: &apiv1.TapMatch{ToIdentity: long + "a"}}, "match.toIdentity"},
		// Each field allowed, together past the proxies' message size.
		//lint:ignore SA1019 deprecated, still sent by old clients: bounded too.
		{"too large", &apiv1.ObserveRequest{Match: &apiv1.TapMatch{Authority: long, PathPrefix: long, Method: long, PeerIdentity: long, FromIdentity: long}}, "bytes encoded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(tc.req)
			if (tc.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Check = %v; want an error with %q", err, tc.err)
			}
		})
	}
}
