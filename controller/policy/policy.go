// Package policy serves Policy.WatchInbound: the inbound policy of a
// workload's port, computed by a Source (the local store in
// controller/local, the policy.trellis.io objects in controller/k8s/policy
// or serve.DefaultPolicy in Kubernetes mode; the service knows none) and
// sent again whenever it changes.
package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/controller/notify"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/policymodel/answer"
)

// DefaultPolicyName names the policy served when nothing more specific is
// configured.
const DefaultPolicyName = answer.DefaultName

// DefaultMaxStreamsPerCaller bounds the streams one proxy (a caller
// identity's connection) holds open at once: a proxy holds one per inbound
// port it serves (at most 64 learned plus its configured ports), so 256 is
// far above a real one and far below what would exhaust the controller.
// It is per connection, not per identity: every replica of a Deployment
// shares its ServiceAccount's identity, and a large one has more than 256
// proxies (bench/ctrlscale's 1,000 proxies of one identity were refused).
const DefaultMaxStreamsPerCaller = 256

// Refusal reasons, the values of trellis_controller_policy_streams_refused_total's reason.
const (
	RefusedIdentity = "identity"
	RefusedLimit    = "limit"
	RefusedRequest  = "bad_request"
)

// podName is a DNS subdomain, what a pod's name is (this package must not
// depend on Kubernetes' own validation).
var podName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// Service implements apiv1.PolicyServer.
type Service struct {
	apiv1.UnimplementedPolicyServer

	// Source computes policies (required). When it is a PodSource, a
	// request naming its pod is answered for that pod.
	Source  Source
	Metrics *metrics.Metrics
	Log     *slog.Logger
	// Done, when closed, ends every stream with Unavailable.
	Done <-chan struct{}
	// MaxStreamsPerCaller bounds the open streams of one caller identity
	// on one connection (0: DefaultMaxStreamsPerCaller).
	MaxStreamsPerCaller int
	// Settle is how long a stream waits after a change before it answers
	// again, so that policy objects written together take effect
	// together (0: DefaultSettle; negative: no wait).
	Settle time.Duration

	mu   sync.Mutex
	open map[string]int // open streams by caller identity and connection
}

// Default returns the answer of a port nothing configures: the proxy's
// own configured default applies (answer.Default), with protocol
// detection unless protocol says otherwise.
func Default(protocol apiv1.ProtocolHint_Protocol) *apiv1.ServerPolicy {
	return answer.Default(protocol, nil)
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
// it changes. Only the workload itself may watch it: the caller's mTLS
// identity must be the request's workload, since a policy says who may
// reach a workload, which is not every workload's business.
func (s *Service) WatchInbound(req *apiv1.InboundPolicyRequest, stream apiv1.Policy_WatchInboundServer) error {
	if err := s.check(req); err != nil {
		return s.refuse(RefusedRequest, err)
	}
	caller, err := callerIdentity(stream.Context())
	if err != nil {
		return s.refuse(RefusedIdentity, status.Errorf(codes.PermissionDenied, "policy of %s: %v", req.GetWorkload(), err))
	}
	if caller != req.GetWorkload() {
		return s.refuse(RefusedIdentity, status.Errorf(codes.PermissionDenied,
			"caller %s may not watch the policy of %s: a proxy watches only its own workload's", caller, req.GetWorkload()))
	}
	conn := callerConn(stream.Context(), caller)
	if !s.acquire(conn) {
		return s.refuse(RefusedLimit, status.Errorf(codes.ResourceExhausted,
			"caller %s already holds %d policy streams on this connection, the most one proxy may", caller, s.limit()))
	}
	defer s.release(conn)
	s.Metrics.PolicyStreams.Inc()
	defer s.Metrics.PolicyStreams.Dec()
	resolve := func() (*apiv1.ServerPolicy, <-chan struct{}, func()) {
		return s.Source.Resolve(req.GetWorkload(), req.GetPort())
	}
	if ps, ok := s.Source.(PodSource); ok && req.GetPod() != "" {
		resolve = func() (*apiv1.ServerPolicy, <-chan struct{}, func()) {
			return ps.ResolvePod(req.GetWorkload(), req.GetPod(), req.GetPort())
		}
	}
	settle := s.Settle
	if settle == 0 {
		settle = DefaultSettle
	}
	return notify.WatchSettled(stream.Context(), s.Done, settle, resolve, SendChanged(stream))
}

// DefaultSettle: a Server and the AuthorizationPolicy allowing its callers,
// applied together, reach the controller through two informers a few
// milliseconds apart (more on a loaded API server); answering at once
// would deny those callers in between.
const DefaultSettle = 250 * time.Millisecond

// check refuses a request that names no workload port (InvalidArgument).
func (s *Service) check(req *apiv1.InboundPolicyRequest) error {
	if req.GetPort() > 65535 {
		return status.Errorf(codes.InvalidArgument, "port %d is outside 0-65535", req.GetPort())
	}
	// The proxy sends its own SPIFFE ID; anything else names no workload.
	if _, err := identity.Parse(req.GetWorkload()); err != nil {
		return status.Errorf(codes.InvalidArgument, "workload: %v", err)
	}
	if pod := req.GetPod(); pod != "" {
		if len(pod) > 253 || !podName.MatchString(pod) {
			return status.Errorf(codes.InvalidArgument, "pod %.64q is not a Kubernetes object name (DNS subdomain)", pod)
		}
	}
	return nil
}

func (s *Service) refuse(reason string, err error) error {
	if s.Metrics != nil && s.Metrics.PolicyStreamsRefused != nil {
		s.Metrics.PolicyStreamsRefused.WithLabelValues(reason).Inc()
	}
	if s.Log != nil {
		s.Log.Debug("policy stream refused", "reason", reason, "err", err)
	}
	return err
}

// callerIdentity is the SPIFFE ID of the caller's verified client
// certificate (the gRPC server's TLS config verified its chain).
func callerIdentity(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", errors.New("no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.PeerCertificates) == 0 {
		return "", errors.New("the caller presented no verified mesh certificate")
	}
	id, err := identity.FromCertificate(ti.State.PeerCertificates[0])
	if err != nil {
		return "", fmt.Errorf("caller certificate: %w", err)
	}
	return id.String(), nil
}

func (s *Service) limit() int {
	if s.MaxStreamsPerCaller > 0 {
		return s.MaxStreamsPerCaller
	}
	return DefaultMaxStreamsPerCaller
}

// callerConn keys a caller's streams by its connection (remote address):
// one proxy.
func callerConn(ctx context.Context, caller string) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return caller + " " + p.Addr.String()
	}
	return caller
}

// acquire counts a stream of caller, or reports false at the limit.
func (s *Service) acquire(caller string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open == nil {
		s.open = map[string]int{}
	}
	if s.open[caller] >= s.limit() {
		return false
	}
	s.open[caller]++
	return true
}

func (s *Service) release(caller string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open[caller]--; s.open[caller] <= 0 {
		delete(s.open, caller)
	}
}

// SendChanged sends a policy when it differs from the one the client has.
func SendChanged(stream apiv1.Policy_WatchInboundServer) notify.SendFunc[*apiv1.ServerPolicy] {
	return notify.SendChanged(func(a, b *apiv1.ServerPolicy) bool { return proto.Equal(a, b) }, stream.Send)
}

// PodSource is a Source that can answer for one pod of a workload, so a
// Server selecting pods by label applies to exactly the pods it selects.
type PodSource interface {
	Source
	// ResolvePod is Resolve for the pod named pod of the workload.
	ResolvePod(workload, pod string, port uint32) (p *apiv1.ServerPolicy, changed <-chan struct{}, release func())
}
