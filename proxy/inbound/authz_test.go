package inbound

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-mesh/trellis/internal/ratelog"
	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/policy"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// denyPath is an Authorizer that refuses one path to everyone.
type denyPath string

func (d denyPath) Authorize(_ context.Context, _ policy.Caller, r *http.Request) error {
	if r != nil && r.URL.Path == string(d) {
		return &policy.Denial{Reason: "denied_by_policy", Msg: "path refused by policy"}
	}
	return nil
}

// TestAuthzStage: the target guard first (only the app's ports), then the
// Authorizer; a refusal is a 403 naming its reason, counted as refused.
func TestAuthzStage(t *testing.T) {
	own := func() []uint16 { return []uint16{4140, 4143, 4191} }
	forbidden := &refusal{reason: metrics.ReasonForbiddenPort, msg: "target port 4191 refused"}
	tests := []struct {
		name       string
		policy     string
		authorizer policy.Authorizer
		conn       pipeline.Conn
		path       string
		targetPort string // trellis-target-port from a mesh peer
		wantAddr   string // next stage reached with this target
		wantStatus int
		wantReason string
	}{
		{name: "plain caller, all-unauthenticated", conn: pipeline.Conn{Target: "127.0.0.1:8080"}, wantAddr: "127.0.0.1:8080"},
		{name: "plain caller, all-authenticated", policy: PolicyAllAuthenticated, conn: pipeline.Conn{Target: "127.0.0.1:8080"}, wantStatus: 403, wantReason: metrics.ReasonUnauthenticated},
		{name: "plain caller to one of our ports", conn: pipeline.Conn{TargetErr: forbidden}, wantStatus: 403, wantReason: metrics.ReasonForbiddenPort},
		{name: "policy before target: all-authenticated and our port", policy: PolicyAllAuthenticated, conn: pipeline.Conn{TargetErr: forbidden}, wantStatus: 403, wantReason: metrics.ReasonUnauthenticated},
		{name: "mesh peer, all-authenticated", policy: PolicyAllAuthenticated, conn: pipeline.Conn{Peer: "spiffe://td/ns/a/sa/b", TLS: true, Target: "127.0.0.1:8080"}, wantAddr: "127.0.0.1:8080"},
		{name: "mesh peer names an app port", conn: pipeline.Conn{Peer: "spiffe://td/ns/a/sa/b", TLS: true, Target: "127.0.0.1:8080"}, targetPort: "9000", wantAddr: "127.0.0.1:9000"},
		{name: "mesh peer names the admin port", conn: pipeline.Conn{Peer: "spiffe://td/ns/a/sa/b", TLS: true, Target: "127.0.0.1:8080"}, targetPort: "4191", wantStatus: 403, wantReason: metrics.ReasonForbiddenPort},
		{name: "mesh peer names no port, original destination refused", conn: pipeline.Conn{Peer: "spiffe://td/ns/a/sa/b", TLS: true, TargetErr: forbidden}, wantStatus: 403, wantReason: metrics.ReasonForbiddenPort},
		{name: "mesh peer, malformed port", conn: pipeline.Conn{Peer: "spiffe://td/ns/a/sa/b", TLS: true}, targetPort: "80x", wantStatus: 400, wantReason: metrics.ReasonBadRequest},
		{name: "Authorizer refuses a mesh peer", authorizer: denyPath("/admin"), conn: pipeline.Conn{Peer: "spiffe://td/ns/a/sa/b", TLS: true, Target: "127.0.0.1:8080"}, path: "/admin", wantStatus: 403, wantReason: "denied_by_policy"},
		{name: "Authorizer lets another path through", authorizer: denyPath("/admin"), conn: pipeline.Conn{Peer: "spiffe://td/ns/a/sa/b", TLS: true, Target: "127.0.0.1:8080"}, path: "/", wantAddr: "127.0.0.1:8080"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := metrics.New(prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			cfg := Config{AppAddr: "127.0.0.1:8080", AppPorts: []uint16{9000}, OwnPorts: own, DefaultPolicy: tt.policy}
			targets, err := newAppTargets(cfg)
			if err != nil {
				t.Fatal(err)
			}
			p := &Proxy{cfg: cfg, m: m, targets: targets, authorizer: tt.authorizer, refuseLog: ratelog.New(nil, 0)}
			path := tt.path
			if path == "" {
				path = "/"
			}
			r := httptest.NewRequest(http.MethodGet, path, nil)
			if tt.targetPort != "" {
				r.Header.Set(forward.HeaderTargetPort, tt.targetPort)
			}
			x := &pipeline.Exchange{R: r, Conn: tt.conn}
			var reached string
			err = p.authz(pipeline.HandlerFunc(func(x *pipeline.Exchange) error { reached = x.AppAddr; return nil })).Serve(x)
			if tt.wantStatus == 0 {
				if err != nil || reached != tt.wantAddr {
					t.Fatalf("err %v, reached the app stage with %q; want %q", err, reached, tt.wantAddr)
				}
				return
			}
			var e *proxyerr.Error
			if !errors.As(err, &e) || e.Status != tt.wantStatus || e.Reason != tt.wantReason {
				t.Fatalf("err %v, want %d %s", err, tt.wantStatus, tt.wantReason)
			}
			if reached != "" {
				t.Fatal("app stage reached after a refusal")
			}
		})
	}
}
