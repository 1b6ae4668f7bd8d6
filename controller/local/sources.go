package local

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strconv"
	"time"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/authority"
	"github.com/trellis-mesh/trellis/controller/destination"
	identitysvc "github.com/trellis-mesh/trellis/controller/identity"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/controller/policy"
	"github.com/trellis-mesh/trellis/controller/store"
	"github.com/trellis-mesh/trellis/internal/identity"
)

// The local store is one more implementation of the services' interfaces,
// as the Kubernetes informers are in controller/k8s. Every change of the
// store file wakes every stream (Store.Current's channel), which resolves
// again and usually finds nothing to send: the file is small and edited
// by hand.
var (
	_ destination.Source        = destinationSource{}
	_ policy.Source             = policySource{}
	_ identitysvc.Authenticator = tokenAuth{}
)

// destinationSource answers Destination streams from the store file.
type destinationSource struct{ st *store.Store }

// Resolve implements destination.Source.
func (s destinationSource) Resolve(a authority.Authority, callerNamespace string) (destination.Resolution, <-chan struct{}, func()) {
	cfg, changed := s.st.Current()
	t := cfg.Resolve(a, callerNamespace)
	r := destination.Resolution{Endpoints: endpointsOf(t)}
	if t.Service != nil {
		r.Service = cfg.FQDN(t.Service) + ":" + strconv.FormatUint(uint64(t.Port), 10)
	}
	return r, changed, func() {}
}

// endpointsOf returns the endpoints of what an authority names.
func endpointsOf(t store.Target) destination.Endpoints {
	e := destination.Endpoints{Exists: t.Exists(), Addrs: map[string]*apiv1.WeightedAddr{}, Labels: map[string]string{}}
	switch {
	case t.Service != nil:
		e.Labels["service"] = t.Service.Name
		e.Labels["namespace"] = t.Service.Namespace
		hint := protocolHint(t.Service.Ports[t.Port])
		for _, b := range t.Service.Backends[t.Port] {
			wa := weightedAddr(b.Workload, b.Weight, hint, b.TargetPort)
			e.Addrs[b.Workload.ProxyAddr.String()] = wa
		}
	case t.Workload != nil:
		e.Labels["namespace"] = t.Workload.Namespace
		wa := weightedAddr(t.Workload, 1, apiv1.ProtocolHint_UNKNOWN, 0)
		e.Addrs[t.Workload.ProxyAddr.String()] = wa
	}
	return e
}

func weightedAddr(w *store.WorkloadInfo, weight uint32, hint apiv1.ProtocolHint_Protocol, targetPort uint32) *apiv1.WeightedAddr {
	labels := map[string]string{"workload": w.Name, "namespace": w.Namespace}
	for k, v := range w.Labels {
		labels[k] = v
	}
	return &apiv1.WeightedAddr{
		Addr:         &apiv1.TcpAddress{Ip: w.ProxyAddr.Addr().String(), Port: uint32(w.ProxyAddr.Port())},
		Weight:       weight,
		MetricLabels: labels,
		TlsIdentity:  &apiv1.TlsIdentity{SpiffeId: w.Identity.String(), ServerName: w.Identity.ServerName()},
		ProtocolHint: &apiv1.ProtocolHint{Protocol: hint},
		Zone:         w.Zone,
		TargetPort:   targetPort,
	}
}

// protocolHint maps a store protocol to the API's.
func protocolHint(p string) apiv1.ProtocolHint_Protocol {
	switch p {
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
				return protocolHint(e.Service.Ports[e.Port])
			}
		}
	}
	return apiv1.ProtocolHint_UNKNOWN
}

// tokenAuth authenticates Certify callers with the tokens the store file
// gives its workloads.
type tokenAuth struct{ st *store.Store }

// Authenticate implements identitysvc.Authenticator: the caller is the
// store workload with identity id whose token is token.
func (a tokenAuth) Authenticate(_ context.Context, req identitysvc.Request) (identitysvc.Caller, error) {
	token, id := req.Token, req.ID
	cfg, _ := a.st.Current()
	if len(token) == 0 {
		return identitysvc.Caller{}, &identitysvc.AuthError{Reason: metrics.ReasonBadToken,
			Err: errors.New("no token: the request must carry the workload's token from the store file")}
	}
	candidates := cfg.WorkloadsWithIdentity(id)
	if len(candidates) == 0 {
		return identitysvc.Caller{}, &identitysvc.AuthError{Reason: metrics.ReasonUnknownIdentity,
			Err: fmt.Errorf("no workload in the store file runs as it (trust domain %s)", cfg.TrustDomain)}
	}
	// Hash both sides so the comparison takes the same time whatever the
	// lengths, and compare against every candidate so timing does not tell
	// which workload matched.
	got := sha256.Sum256(token)
	var workload *store.WorkloadInfo
	for _, w := range candidates {
		want := sha256.Sum256([]byte(w.Token))
		if subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
			workload = w
		}
	}
	if workload == nil {
		return identitysvc.Caller{}, &identitysvc.AuthError{Reason: metrics.ReasonBadToken,
			Err: errors.New("the token is not the one of any workload with this identity")}
	}
	return identitysvc.Caller{Name: workload.Name + "." + workload.Namespace}, nil
}

// lifetime is the store file's certificate lifetime, read per Certify so
// an edit applies to the next certificate.
func lifetime(st *store.Store) func() time.Duration {
	return func() time.Duration {
		cfg, _ := st.Current()
		return cfg.CertificateLifetime
	}
}
