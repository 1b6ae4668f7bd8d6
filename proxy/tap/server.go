package tap

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
	"github.com/trellis-mesh/trellis/internal/tapreq"
	"github.com/trellis-mesh/trellis/proxy/meshtls"
)

// MaxStreams bounds the taps one proxy serves at once.
const MaxStreams = 16

// Reasons of trellis_tap_refused_total.
const (
	RefusedHandshake  = "handshake"
	RefusedIdentity   = "identity"
	RefusedTooMany    = "too_many"
	RefusedBadRequest = "bad_request"
)

// ServerConfig is what the tap server needs.
type ServerConfig struct {
	Hub   *Hub
	Store *meshtls.Store
	// Controller is the only identity allowed to tap.
	Controller identity.ID
	Metrics    *Metrics
	Logger     *slog.Logger
}

// NewServer returns the gRPC server of Tap.Observe over mesh mTLS with the
// proxy's workload certificate (rotations included: the store serves the
// current one), refusing at the handshake any client that does not prove
// cfg.Controller.
func NewServer(cfg ServerConfig) *grpc.Server {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	creds := refusalCounting{TransportCredentials: credentials.NewTLS(ServerTLS(cfg.Store, cfg.Controller)), m: cfg.Metrics}
	srv := grpc.NewServer(
		grpc.Creds(creds),
		grpc.ConnectionTimeout(10*time.Second),
		// An ObserveRequest is small; anything large is not one.
		grpc.MaxRecvMsgSize(tapreq.MaxMessageSize),
		grpc.MaxConcurrentStreams(MaxStreams+1),
	)
	apiv1.RegisterTapServer(srv, &service{
		hub: cfg.Hub, ctrl: cfg.Controller, m: cfg.Metrics, log: log,
		slots: make(chan struct{}, MaxStreams),
	})
	return srv
}

// ServerTLS is the tap listener's TLS: the mesh server config (the client
// certificate is required and verified against the current anchors) whose
// client must moreover be exactly ctrl.
func ServerTLS(store *meshtls.Store, ctrl identity.ID) *tls.Config {
	cfg := store.ServerConfig([]string{"h2"})
	verify := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := verify(cs); err != nil {
			return err
		}
		id, err := identity.FromCertificate(cs.PeerCertificates[0])
		if err != nil {
			return err
		}
		if ctrl.IsZero() || id != ctrl {
			return fmt.Errorf("%w: tap client %s is not the controller %s", pki.ErrWrongIdentity, id, ctrl)
		}
		return nil
	}
	return cfg
}

// refusalCounting counts the handshakes the tap listener refuses.
type refusalCounting struct {
	credentials.TransportCredentials
	m *Metrics
}

func (r refusalCounting) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	c, info, err := r.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		r.m.Refused.WithLabelValues(RefusedHandshake).Inc()
	}
	return c, info, err
}

func (r refusalCounting) Clone() credentials.TransportCredentials {
	return refusalCounting{TransportCredentials: r.TransportCredentials.Clone(), m: r.m}
}

type service struct {
	apiv1.UnimplementedTapServer
	hub   *Hub
	ctrl  identity.ID
	m     *Metrics
	log   *slog.Logger
	slots chan struct{}
}

// Observe streams the events of one tap until the client goes, the limit
// is reached, or the proxy stops.
func (s *service) Observe(req *apiv1.ObserveRequest, stream apiv1.Tap_ObserveServer) error {
	ctx := stream.Context()
	if err := s.authorize(ctx); err != nil {
		return err
	}
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		s.m.Refused.WithLabelValues(RefusedTooMany).Inc()
		return status.Errorf(codes.ResourceExhausted, "tap: this proxy already serves %d taps, its maximum; close one and retry", MaxStreams)
	}
	sub, err := s.hub.Subscribe(req, 0)
	if err != nil {
		s.m.Refused.WithLabelValues(RefusedBadRequest).Inc()
		return status.Error(codes.InvalidArgument, err.Error())
	}
	defer s.hub.Unsubscribe(sub)
	s.m.Open.Inc()
	defer s.m.Open.Dec()
	s.log.Info("tap opened", "max_rps", sub.MaxRPS(), "body_bytes", sub.BodyBytes(), "limit", req.GetLimit())
	defer s.log.Info("tap closed")
	// Events go out in batches: sent back to back, they leave in one
	// write (gRPC flushes when its queue empties), not a write and a
	// wake-up each.
	tick := time.NewTicker(BatchInterval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			if err := drain(sub, stream); err != nil {
				return err
			}
		case <-sub.Finished():
			return drain(sub, stream)
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// BatchInterval is how long events wait in a tap's queue at most: at
// max_rps 1000 (3,000 events a second) the queue holds several times
// what accumulates meanwhile.
const BatchInterval = 20 * time.Millisecond

// drain sends what is queued.
func drain(sub *Sub, stream apiv1.Tap_ObserveServer) error {
	for {
		select {
		case ev := <-sub.Events():
			if err := stream.Send(ev); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

// authorize checks again, on the call, what the handshake verified: the
// client is the controller.
func (s *service) authorize(ctx context.Context) error {
	p, ok := peer.FromContext(ctx)
	if ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
			id, err := identity.FromCertificate(ti.State.PeerCertificates[0])
			if err == nil && !s.ctrl.IsZero() && id == s.ctrl {
				return nil
			}
		}
	}
	s.m.Refused.WithLabelValues(RefusedIdentity).Inc()
	return status.Error(codes.PermissionDenied, "tap: only the controller's identity may tap this proxy")
}
