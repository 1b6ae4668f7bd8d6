package serve

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/controller/policy"
)

// DefaultPolicy serves Policy.WatchInbound in Kubernetes mode until policy
// objects are read from the cluster: every port gets policy.Default with
// protocol detection, as in local mode, so meshing a workload never breaks
// its callers.
type DefaultPolicy struct {
	apiv1.UnimplementedPolicyServer
	Metrics *metrics.Metrics
	// Done, when closed, ends every stream with Unavailable.
	Done <-chan struct{}
}

// WatchInbound sends the default policy once and holds the stream open:
// nothing changes it.
func (p *DefaultPolicy) WatchInbound(req *apiv1.InboundPolicyRequest, stream apiv1.Policy_WatchInboundServer) error {
	if req.GetPort() > 65535 {
		return status.Errorf(codes.InvalidArgument, "port %d is outside 0-65535", req.GetPort())
	}
	p.Metrics.PolicyStreams.Inc()
	defer p.Metrics.PolicyStreams.Dec()
	if err := stream.Send(policy.Default(apiv1.ProtocolHint_UNKNOWN)); err != nil {
		return err
	}
	select {
	case <-stream.Context().Done():
		return stream.Context().Err()
	case <-p.Done:
		return status.Error(codes.Unavailable, "controller shutting down")
	}
}
