// Package inject adds the Trellis proxy to pods: the pure mutation of a
// pod (Injector.Mutate), the RFC 6902 JSON patch between two objects
// (Diff), and the admission webhook that serves both to the API server
// (NewHandler). The controller serves the webhook and `trellis inject`
// applies the same mutation offline, so it lives beside both (not under
// controller/ or cli/, which never import each other's packages).
//
// The names, ports and environment it writes are the ones in
// notes/k8s-contract.md and docs/injection.md; the annotations and labels
// are internal/k8slabels. Change them there first.
package inject

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
	"github.com/trellis-mesh/trellis/internal/version"
)

// The annotations, labels and container names the injector writes and
// reads are the pod contract of internal/k8slabels.

// Names of what the injector adds to a pod.
const (
	TokenVolumeName   = "trellis-token"
	AnchorsVolumeName = "trellis-trust-anchors"
	// XtablesVolumeName is an emptyDir on /run for iptables' lock file,
	// so trellis-init can keep a read-only root filesystem.
	XtablesVolumeName = "trellis-xtables-lock"
	// StateVolumeName is the proxy's only writable path (its root
	// filesystem is read-only): an in-memory emptyDir, mounted into the
	// proxy alone, holding the trust bundle learned from the controller.
	// An emptyDir outlives container restarts, so a proxy restarted after
	// an anchor rotation starts from that bundle rather than from the
	// pod's bootstrap anchors, which only hold the old anchor.
	StateVolumeName = "trellis-proxy-state"

	TokenAudience   = "identity.trellis.io"
	TokenMountPath  = "/var/run/secrets/trellis.io/token"
	TokenPath       = TokenMountPath + "/token"
	TokenExpiration = int64(3600)

	AnchorsConfigMap = "trellis-trust-anchors"
	AnchorsKey       = "ca-bundle.crt"
	AnchorsMountPath = "/var/run/trellis/anchors"
	AnchorsPath      = AnchorsMountPath + "/" + AnchorsKey

	StateMountPath = "/var/run/trellis/state"
	// AnchorsCachePath is the proxy's --trust-anchors-cache.
	AnchorsCachePath = StateMountPath + "/trust-anchors.pem"

	ProxyUID = int64(2102)
	// ValidateUID runs trellis-validate: any uid but the proxy's, whose
	// traffic is never redirected.
	ValidateUID  = int64(2103)
	InboundPort  = 4143
	OutboundPort = 4140
	AdminPort    = 4191
	// TapPort is the proxy's Tap.Observe listener (container port
	// trellis-tap): only the controller's identity may call it.
	TapPort = 4190
)

// Namespaces never injected, whatever their annotations say.
const (
	KubeSystemNamespace = "kube-system"
)

// Config is what the injector needs to know about the installation. The
// zero value is the default install of notes/k8s-contract.md.
type Config struct {
	// Version goes into the trellis.io/proxy-version annotation and the
	// default image tags. Default: internal/version.Version.
	Version string
	// ProxyImage and InitImage default to trellis/proxy:<Version> and
	// trellis/init:<Version>.
	ProxyImage, InitImage string
	// ImagePullPolicy of the added containers. Default IfNotPresent.
	ImagePullPolicy corev1.PullPolicy
	// TrustDomain of workload identities. Default cluster.local.
	TrustDomain string
	// AcceptTrustDomains, when set, are passed to every proxy
	// (TRELLIS_PROXY_ACCEPT_TRUST_DOMAINS): the trust domains besides
	// TrustDomain whose mesh peers it accepts.
	AcceptTrustDomains []string
	// ClusterDomain, when not cluster.local, is passed to every proxy
	// (routing names through a multicluster gateway end in it).
	ClusterDomain string
	// ControllerAddr is the controller's gRPC address. Default
	// trellis-controller.trellis-system.svc.cluster.local:8086.
	ControllerAddr string
	// ControllerIdentity is the identity the controller must prove.
	// Default spiffe://<TrustDomain>/ns/trellis-system/sa/trellis-controller.
	ControllerIdentity string
	// TrustAnchorsPEM, when set, is written into the pod's
	// trellis.io/trust-anchors annotation and the trellis-trust-anchors
	// volume becomes a downward-API file of it. A ConfigMap volume (the
	// default) can only name a ConfigMap in the pod's own namespace, so
	// without this the trellis-trust-anchors ConfigMap must exist in
	// every injected namespace.
	TrustAnchorsPEM string

	// DefaultRedirect is the redirection of pods that do not annotate
	// config.trellis.io/redirect: k8slabels.RedirectInit (the default) or
	// k8slabels.RedirectCNI, when the trellis-cni plugin is installed on every node
	// (`trellis install --cni`), so that no injected pod needs NET_ADMIN.
	DefaultRedirect string
	// ProxyResources are the install-time proxy requests and limits
	// (the chart's proxy.resources): each resource set here replaces the
	// built-in default, and a pod's config.trellis.io/proxy-* annotations
	// replace it in turn.
	ProxyResources corev1.ResourceRequirements
	// ProxyLogLevel, when set, is the proxy's TRELLIS_PROXY_LOG_LEVEL
	// (debug, info, warn or error).
	ProxyLogLevel string
	// DefaultInboundPolicy is the cluster's default inbound policy
	// (`trellis install --default-inbound-policy`, one of
	// k8slabels.DefaultInboundPolicies; "" the proxy's own default), which
	// the namespace's and the pod's config.trellis.io/default-inbound-policy
	// override.
	DefaultInboundPolicy string
	// TraceCollector and TraceSampleRatio are the cluster's tracing
	// defaults (`trellis install --trace-collector`, chart
	// proxy.tracing.*; "" none), which the namespace's and the pod's
	// config.trellis.io/trace-* annotations override.
	TraceCollector, TraceSampleRatio string

	// NamespaceAnnotations looks up a namespace's annotations for the
	// webhook (nil: pods' own annotations only). An error fails the
	// admission request rather than guessing.
	NamespaceAnnotations func(ctx context.Context, namespace string) (map[string]string, error)
	// Registerer gets trellis_injector_requests_total (nil: not exported).
	Registerer prometheus.Registerer
	// Logger for admission decisions (nil: slog.Default()).
	Logger *slog.Logger
}

// Validate reports install-time settings the injector cannot use, so a
// bad value fails the controller at start rather than every pod.
func (c Config) Validate() error {
	var errs []error
	switch c.DefaultRedirect {
	case "", k8slabels.RedirectInit, k8slabels.RedirectCNI:
	default:
		errs = append(errs, fmt.Errorf("default redirect %q: want %q or %q", c.DefaultRedirect, k8slabels.RedirectInit, k8slabels.RedirectCNI))
	}
	if c.DefaultInboundPolicy != "" && !k8slabels.ValidDefaultInboundPolicy(c.DefaultInboundPolicy) {
		errs = append(errs, fmt.Errorf("default inbound policy %q: want one of %s", c.DefaultInboundPolicy, strings.Join(k8slabels.DefaultInboundPolicies(), ", ")))
	}
	if c.TraceCollector != "" {
		if err := k8slabels.CheckTraceCollector(c.TraceCollector); err != nil {
			errs = append(errs, fmt.Errorf("trace collector %q: %w", c.TraceCollector, err))
		}
	}
	for _, td := range c.AcceptTrustDomains {
		if err := identity.CheckAccepted(td, cmp.Or(c.TrustDomain, identity.DefaultTrustDomain)); err != nil {
			errs = append(errs, err)
		}
	}
	if c.TraceSampleRatio != "" {
		if _, err := k8slabels.ParseTraceSampleRatio(c.TraceSampleRatio); err != nil {
			errs = append(errs, fmt.Errorf("trace sample ratio %q: %w", c.TraceSampleRatio, err))
		}
	}
	switch c.ProxyLogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("proxy log level %q: want debug, info, warn or error", c.ProxyLogLevel))
	}
	for _, l := range []corev1.ResourceList{c.ProxyResources.Requests, c.ProxyResources.Limits} {
		for name, q := range l {
			if name != corev1.ResourceCPU && name != corev1.ResourceMemory {
				errs = append(errs, fmt.Errorf("proxy resource %q: only cpu and memory are set", name))
			}
			if q.Sign() < 0 {
				errs = append(errs, fmt.Errorf("proxy %s %s must not be negative", name, q.String()))
			}
		}
	}
	for name, lim := range c.ProxyResources.Limits {
		if lim.Sign() == 0 {
			errs = append(errs, fmt.Errorf("proxy %s limit must be greater than zero", name))
		}
	}
	if len(errs) == 0 {
		def := c.withDefaults().defaultOptions()
		for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, okR := def.Resources.Requests[name]
			lim, okL := def.Resources.Limits[name]
			if okR && okL && req.Cmp(lim) > 0 {
				errs = append(errs, fmt.Errorf("proxy %s request %s exceeds its limit %s", name, req.String(), lim.String()))
			}
		}
	}
	return errors.Join(errs...)
}

// defaultOptions are the options of a pod without config.trellis.io
// annotations: the built-in defaults, overridden by the install's.
func (c Config) defaultOptions() Options {
	o := builtinOptions()
	if c.DefaultRedirect != "" {
		o.Redirect = c.DefaultRedirect
	}
	if c.DefaultInboundPolicy != "" {
		o.DefaultInboundPolicy = c.DefaultInboundPolicy
	}
	o.TraceCollector, o.TraceSampleRatio = c.TraceCollector, c.TraceSampleRatio
	for name, q := range c.ProxyResources.Requests {
		o.Resources.Requests[name] = q.DeepCopy()
	}
	for name, q := range c.ProxyResources.Limits {
		o.Resources.Limits[name] = q.DeepCopy()
	}
	return o
}

func (c Config) withDefaults() Config {
	if c.Version == "" {
		c.Version = version.Version
	}
	if c.ProxyImage == "" {
		c.ProxyImage = "trellis/proxy:" + c.Version
	}
	if c.InitImage == "" {
		c.InitImage = "trellis/init:" + c.Version
	}
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = corev1.PullIfNotPresent
	}
	if c.TrustDomain == "" {
		c.TrustDomain = "cluster.local"
	}
	if c.ControllerAddr == "" {
		c.ControllerAddr = "trellis-controller." + k8slabels.ControlPlaneNamespace + ".svc.cluster.local:8086"
	}
	if c.ControllerIdentity == "" {
		c.ControllerIdentity = "spiffe://" + c.TrustDomain + "/ns/" + k8slabels.ControlPlaneNamespace + "/sa/trellis-controller"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}
