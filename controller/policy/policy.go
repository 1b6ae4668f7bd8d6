// Package policy serves Policy.WatchInbound in local mode. The store file
// has no authorization policy yet, so every port gets the default policy.
package policy

import (
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/controller/store"
	"github.com/trellis-mesh/trellis/internal/identity"
)

// DefaultPolicyName names the policy served when nothing more specific is
// configured.
const DefaultPolicyName = "default"

// Service implements apiv1.PolicyServer.
type Service struct {
	apiv1.UnimplementedPolicyServer

	Store   *store.Store
	Metrics *metrics.Metrics
	Log     *slog.Logger
	// Done, when closed, ends every stream with Unavailable.
	Done <-chan struct{}
}

// Default returns the default inbound policy: every caller is allowed,
// whether it proves a mesh identity ("*") or comes without mesh TLS
// (unauthenticated). It is the same "all-unauthenticated" default as
// Linkerd's, so meshing a workload never breaks its callers.
func Default(protocol apiv1.ProtocolHint_Protocol) *apiv1.ServerPolicy {
	return &apiv1.ServerPolicy{
		Name:     DefaultPolicyName,
		Protocol: protocol,
		Authorizations: []*apiv1.Authorization{{
			Name:            "all-unauthenticated",
			Unauthenticated: true,
			Identities:      []string{"*"},
		}},
	}
}

// protocolFor finds the protocol of a workload's port: the protocol of the
// service port whose endpoint targets it (targetPort, or the service port
// when no targetPort is set). UNKNOWN (detect) when nothing matches.
func protocolFor(cfg *store.Config, workload string, port uint32) apiv1.ProtocolHint_Protocol {
	id, err := identity.Parse(workload)
	if err != nil {
		return apiv1.ProtocolHint_UNKNOWN
	}
	for _, w := range cfg.WorkloadsWithIdentity(id) {
		for _, e := range w.Endpoints {
			tp := e.TargetPort
			if tp == 0 {
				tp = e.Port
			}
			if tp == port {
				switch e.Service.Ports[e.Port] {
				case store.ProtocolHTTP:
					return apiv1.ProtocolHint_HTTP1
				case store.ProtocolH2C:
					return apiv1.ProtocolHint_HTTP2
				case store.ProtocolGRPC:
					return apiv1.ProtocolHint_GRPC
				case store.ProtocolOpaque:
					return apiv1.ProtocolHint_OPAQUE
				}
				return apiv1.ProtocolHint_UNKNOWN
			}
		}
	}
	return apiv1.ProtocolHint_UNKNOWN
}

// WatchInbound sends the policy of a workload port at once, and again when
// a store change alters it.
func (s *Service) WatchInbound(req *apiv1.InboundPolicyRequest, stream apiv1.Policy_WatchInboundServer) error {
	if req.GetPort() > 65535 {
		return status.Errorf(codes.InvalidArgument, "port %d is outside 0-65535", req.GetPort())
	}
	ctx := stream.Context()
	s.Metrics.PolicyStreams.Inc()
	defer s.Metrics.PolicyStreams.Dec()
	var last *apiv1.ServerPolicy
	for {
		cfg, changed := s.Store.Current()
		p := Default(protocolFor(cfg, req.GetWorkload(), req.GetPort()))
		if last == nil || !proto.Equal(last, p) {
			if err := stream.Send(p); err != nil {
				return err
			}
			last = p
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.Done:
			return status.Error(codes.Unavailable, "controller shutting down")
		case <-changed:
		}
	}
}
