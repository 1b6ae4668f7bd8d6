package check

import (
	"math"
	"slices"

	dto "github.com/prometheus/client_model/go"
)

// Proxy metrics the mesh-health checks read (docs/identity.md,
// docs/metrics.md).
const (
	TrustBundleMetric   = "trellis_identity_trust_bundle_info"
	CertIssuerMetric    = "trellis_identity_cert_issuer_info"
	ConnectedMetric     = "trellis_control_plane_connected"
	WatchesMetric       = "trellis_control_plane_watches"
	LastUpdateMetric    = "trellis_control_plane_last_update_timestamp_seconds"
	EjectedMetric       = "trellis_endpoint_ejected"
	identityServiceName = "identity"
)

// ServiceState is one control-plane service as a proxy sees it.
type ServiceState struct {
	Connected  bool
	Watches    float64 // keys watched (streams); -1: no such series
	LastUpdate float64 // Unix seconds of the last message; 0: never or unknown
}

// ProxyState is what a proxy's /metrics says about its trust and its
// control-plane connections.
type ProxyState struct {
	BundleFP        string // "" when the proxy exports no bundle
	IssuerFP        string // "" without a valid certificate
	IssuerAnchorFP  string // the bundle anchor its chain verifies to; "" none
	HasIssuer       bool
	ControlServices map[string]ServiceState
	// Ejected lists "dst_service endpoint" for each endpoint the proxy's
	// circuit breaker holds out (trellis_endpoint_ejected 1), sorted.
	Ejected []string
}

// ParseProxyState reads the trust and control-plane series of one proxy's
// Prometheus text. The body is the proxy's: bounded and parsed, never
// trusted.
func ParseProxyState(data []byte) (ProxyState, error) {
	ps := ProxyState{ControlServices: map[string]ServiceState{}}
	fams, err := parseFamilies(data)
	if err != nil {
		return ps, err
	}
	for _, m := range fams[TrustBundleMetric].GetMetric() {
		if v, ok := value(m); ok && v == 1 {
			ps.BundleFP = label(m, "fingerprint")
		}
	}
	for _, m := range fams[CertIssuerMetric].GetMetric() {
		if v, ok := value(m); ok && v == 1 {
			ps.HasIssuer, ps.IssuerFP, ps.IssuerAnchorFP = true, label(m, "fingerprint"), label(m, "anchor_fingerprint")
		}
	}
	for _, m := range fams[ConnectedMetric].GetMetric() {
		v, ok := value(m)
		if !ok {
			continue
		}
		ps.ControlServices[label(m, "service")] = ServiceState{Connected: v == 1, Watches: -1}
	}
	for name, set := range map[string]func(*ServiceState, float64){
		WatchesMetric:    func(s *ServiceState, v float64) { s.Watches = v },
		LastUpdateMetric: func(s *ServiceState, v float64) { s.LastUpdate = v },
	} {
		for _, m := range fams[name].GetMetric() {
			st, found := ps.ControlServices[label(m, "service")]
			if v, ok := value(m); ok && found {
				set(&st, v)
				ps.ControlServices[label(m, "service")] = st
			}
		}
	}
	for _, m := range fams[EjectedMetric].GetMetric() {
		if v, ok := value(m); ok && v == 1 {
			ps.Ejected = append(ps.Ejected, label(m, "dst_service")+" "+label(m, "endpoint"))
		}
	}
	slices.Sort(ps.Ejected)
	return ps, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func value(m *dto.Metric) (float64, bool) {
	var v float64
	switch {
	case m.GetGauge() != nil:
		v = m.GetGauge().GetValue()
	case m.GetUntyped() != nil:
		v = m.GetUntyped().GetValue()
	case m.GetCounter() != nil:
		v = m.GetCounter().GetValue()
	default:
		return 0, false
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false
	}
	return v, true
}
