// Package k8slabels is the contract between Trellis and the pods it
// meshes: the trellis.io/* and config.trellis.io/* annotations and labels,
// their values, and the names of what the injector adds to a pod. The
// injector writes them; the CNI plugin, the controller's endpoints and
// `trellis check` / `trellis identity rotate` read them. Defined here once
// so a reader and a writer cannot drift (docs/injection.md lists them for
// users).
package k8slabels

import (
	"errors"
	"net"
	"slices"
	"strconv"
)

// What the injector writes on a meshed pod.
const (
	// AnnotationProxyVersion carries the injected proxy's version; its
	// presence means the pod is meshed.
	AnnotationProxyVersion = "trellis.io/proxy-version"
	// LabelProxied ("true") selects meshed pods (trellis check, identity
	// rotation).
	LabelProxied = "trellis.io/proxied"
	// LabelServiceAccount is the pod's service account (the name part of
	// its identity), so a Prometheus can put the identity on the proxy's
	// series (kubernetes_sd has no meta label for it; trellis viz install).
	LabelServiceAccount = "trellis.io/service-account"
	// AnnotationTrustAnchors holds the bootstrap trust bundle, read by the
	// proxy through a downward-API file.
	AnnotationTrustAnchors = "trellis.io/trust-anchors"
)

// AnnotationInject on a namespace or a pod asks for (InjectEnabled) or
// refuses (InjectDisabled) injection.
const (
	AnnotationInject = "trellis.io/inject"
	InjectEnabled    = "enabled"
	InjectDisabled   = "disabled"
)

// Balancer settings on a Service, passed verbatim to the client proxies
// (Destination's AddSet.balancer), which parse them (docs/traffic.md).
const (
	BalancerPrefix           = "balancer.trellis.io/"
	AnnotationFailureAccrual = BalancerPrefix + "failure-accrual"
	AnnotationSlowStart      = BalancerPrefix + "slow-start"
)

// ConfigPrefix starts every per-pod setting of the injected proxy.
const ConfigPrefix = "config.trellis.io/"

// Per-pod settings (ConfigPrefix), and their values.
const (
	AnnotationSidecarMode       = ConfigPrefix + "sidecar-mode"
	AnnotationRedirect          = ConfigPrefix + "redirect"
	AnnotationProxyCPURequest   = ConfigPrefix + "proxy-cpu-request"
	AnnotationProxyCPULimit     = ConfigPrefix + "proxy-cpu-limit"
	AnnotationProxyMemRequest   = ConfigPrefix + "proxy-memory-request"
	AnnotationProxyMemLimit     = ConfigPrefix + "proxy-memory-limit"
	AnnotationSkipInboundPorts  = ConfigPrefix + "skip-inbound-ports"
	AnnotationSkipOutboundPorts = ConfigPrefix + "skip-outbound-ports"
	// AnnotationOpaquePorts lists ports never to detect: on a Service,
	// its service ports; on a Pod, its container ports. "3306,8000-8100".
	AnnotationOpaquePorts = ConfigPrefix + "opaque-ports"
	// AnnotationDefaultInboundPolicy sets the proxy's
	// --default-inbound-policy.
	AnnotationDefaultInboundPolicy = ConfigPrefix + "default-inbound-policy"

	SidecarNative  = "native"
	SidecarClassic = "classic"

	RedirectInit = "init"
	RedirectCNI  = "cni"

	// Values of AnnotationDefaultInboundPolicy (the proxy's
	// --default-inbound-policy, `trellis install --default-inbound-policy`):
	// what applies to a port no Server selects.
	PolicyAllUnauthenticated   = "all-unauthenticated"
	PolicyAllAuthenticated     = "all-authenticated"
	PolicyClusterAuthenticated = "cluster-authenticated"
	PolicyAudit                = "audit"
	PolicyDeny                 = "deny"
)

// DefaultInboundPolicies are the values of AnnotationDefaultInboundPolicy,
// in the order messages list them.
func DefaultInboundPolicies() []string {
	return []string{PolicyDeny, PolicyAudit, PolicyAllAuthenticated, PolicyClusterAuthenticated, PolicyAllUnauthenticated}
}

// ValidDefaultInboundPolicy reports whether v is one of
// DefaultInboundPolicies.
func ValidDefaultInboundPolicy(v string) bool { return slices.Contains(DefaultInboundPolicies(), v) }

// AppProtocolOpaque, as a Service port's appProtocol, marks the port
// opaque (never detected).
const AppProtocolOpaque = "trellis.io/opaque"

// Names of what the injector adds to a pod, and where the control plane
// runs.
const (
	// ProxyContainerName is the proxy container (a native sidecar init
	// container, or a classic sidecar); its presence means the pod is
	// meshed.
	ProxyContainerName = "trellis-proxy"
	InitContainerName  = "trellis-init"
	// ValidateContainerName is the unprivileged check, in CNI mode, that
	// redirection is in place before the proxy and the app start.
	ValidateContainerName = "trellis-validate"
	// ControlPlaneNamespace is where the controller runs; never meshed.
	ControlPlaneNamespace = "trellis-system"
)

// Tracing (docs/observability.md, "Tracing"): the proxy's
// --trace-collector (host:port of an OTLP/gRPC collector) and
// --trace-sample-ratio (0 to 1), per pod or namespace; `trellis install
// --trace-collector` sets the cluster's default.
const (
	AnnotationTraceCollector   = ConfigPrefix + "trace-collector"
	AnnotationTraceSampleRatio = ConfigPrefix + "trace-sample-ratio"
)

// CheckTraceCollector reports why v is not a collector address (host:port).
func CheckTraceCollector(v string) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return errors.New("must be host:port")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 || host == "" {
		return errors.New("must be host:port, with a port 1-65535")
	}
	return nil
}

// ParseTraceSampleRatio parses a sample ratio: a number from 0 to 1.
func ParseTraceSampleRatio(v string) (float64, error) {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || !(f >= 0 && f <= 1) {
		return 0, errors.New("must be a number from 0 to 1")
	}
	return f, nil
}
