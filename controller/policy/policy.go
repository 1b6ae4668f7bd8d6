// Package policy serves Policy.WatchInbound: the inbound policy of a
// workload's port, computed by a Source (the local store in
// controller/local, the policy.trellis.io objects in controller/k8s/policy
// or serve.DefaultPolicy in Kubernetes mode; the service knows none) and
// sent again whenever it changes.
package policy

import (
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/controller/notify"
	"github.com/trellis-mesh/trellis/internal/identity"
)

// DefaultPolicyName names the policy served when nothing more specific is
// configured.
const DefaultPolicyName = "default"

// Service implements apiv1.PolicyServer.
type Service struct {
	apiv1.UnimplementedPolicyServer

	// Source computes policies (required).
	Source  Source
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

// Source computes inbound policies.
type Source interface {
	// Resolve returns the policy of port on the workload with SPIFFE ID
	// workload, a channel closed when it may have changed (nil: never) and
	// a release func called once the caller stops waiting on it; as
	// notify.ResolveFunc, the channel is taken before the state is read.
	Resolve(workload string, port uint32) (p *apiv1.ServerPolicy, changed <-chan struct{}, release func())
}

// WatchInbound sends the policy of a workload port at once, and again when
// it changes.
func (s *Service) WatchInbound(req *apiv1.InboundPolicyRequest, stream apiv1.Policy_WatchInboundServer) error {
	if req.GetPort() > 65535 {
		return status.Errorf(codes.InvalidArgument, "port %d is outside 0-65535", req.GetPort())
	}
	// The proxy sends its own SPIFFE ID; anything else names no workload.
	if _, err := identity.Parse(req.GetWorkload()); err != nil {
		return status.Errorf(codes.InvalidArgument, "workload: %v", err)
	}
	s.Metrics.PolicyStreams.Inc()
	defer s.Metrics.PolicyStreams.Dec()
	resolve := func() (*apiv1.ServerPolicy, <-chan struct{}, func()) {
		return s.Source.Resolve(req.GetWorkload(), req.GetPort())
	}
	return notify.Watch(stream.Context(), s.Done, resolve, SendChanged(stream))
}

// SendChanged sends a policy when it differs from the one the client has.
func SendChanged(stream apiv1.Policy_WatchInboundServer) notify.SendFunc[*apiv1.ServerPolicy] {
	return notify.SendChanged(func(a, b *apiv1.ServerPolicy) bool { return proto.Equal(a, b) }, stream.Send)
}
