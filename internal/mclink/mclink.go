// Package mclink is the contract of a multicluster link: the Secret in the
// linking cluster that holds read-only credentials for a peer cluster, the
// label that exports a Service from the peer, and the names, labels and
// annotations of the mirror Services and EndpointSlices the controller
// writes. `trellis multicluster link` writes the Secret; the controller's
// mirror (controller/k8s/mirror) reads it and writes the mirrors; the
// destination source reads a mirror slice's identity. Defined here once so
// a writer and a reader cannot drift (docs/multicluster.md lists them).
package mclink

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/trellis-mesh/trellis/internal/identity"
)

// The link Secret.
const (
	// SecretType marks a link Secret; the controller reads only Secrets
	// of this type in its own namespace.
	SecretType corev1.SecretType = "trellis.io/multicluster-link"
	// SecretPrefix starts a link Secret's name: trellis-link-<cluster>.
	SecretPrefix = "trellis-link-"
	// Keys of the Secret's data.
	KeyKubeconfig    = "kubeconfig"
	KeyCluster       = "cluster"
	KeyTrustDomain   = "trustDomain"
	KeyClusterDomain = "clusterDomain"
	KeyMode          = "mode"
	KeyGateway       = "gateway"
)

// Labels and annotations.
const (
	// LabelExport ("true") on a Service in the peer exports it.
	LabelExport = "trellis.io/export"
	// LabelLink names the link (the peer cluster) on a link Secret and on
	// every mirror Service and EndpointSlice.
	LabelLink = "trellis.io/link"
	// LabelMirrorOf on a mirror Service is the peer Service's name.
	LabelMirrorOf = "trellis.io/mirror-of"
	// ManagedBy is the endpointslice.kubernetes.io/managed-by value of
	// mirror slices, so the EndpointSlice controller leaves them alone.
	ManagedBy = "mirror.trellis.io"
	// AnnotationRemoteIdentity on a mirror EndpointSlice is the mesh
	// identity every endpoint of the slice must prove.
	AnnotationRemoteIdentity = "trellis.io/remote-identity"
	// AnnotationRemoteService on a mirror Service names the peer Service
	// (name.ns.svc.<cluster domain> of the peer).
	AnnotationRemoteService = "trellis.io/remote-service"
	// LabelViaGateway ("true") on a mirror EndpointSlice: its endpoint is
	// the peer's gateway, which routes on the TLS server name
	// <port>.<remote service> (proxy/gateway).
	LabelViaGateway = "trellis.io/via-gateway"
)

// Link health metrics of the controller's mirror (controller/k8s/mirror),
// which `trellis check --multicluster` reads: one spelling for both.
const (
	MetricLastSync          = "trellis_multicluster_link_last_sync_timestamp_seconds"
	MetricMirroredServices  = "trellis_multicluster_mirrored_services"
	MetricMirroredEndpoints = "trellis_multicluster_mirrored_endpoints"
	MetricSyncErrors        = "trellis_multicluster_link_sync_errors_total"
	MetricWatchErrors       = "trellis_multicluster_link_watch_errors_total"
	MetricConflicts         = "trellis_multicluster_mirror_conflicts_total"
	MetricUnmeshedEndpoints = "trellis_multicluster_unmeshed_endpoints"
)

// Modes of a link.
const (
	// ModeFlat: pod networks are routable between the clusters; mirror
	// endpoints are the peer's pod IPs.
	ModeFlat = "flat"
	// ModeGateway: only the peer's gateway is reachable; mirror endpoints
	// are its address, and the client's mesh TLS passes through it.
	ModeGateway = "gateway"
)

// Link is what a link Secret holds.
type Link struct {
	// Cluster names the peer; it is the mirror suffix (books-<cluster>).
	Cluster string
	// TrustDomain of the peer's identities.
	TrustDomain string
	// ClusterDomain is the peer's DNS suffix of services.
	ClusterDomain string
	Mode          string
	// Gateway is the peer gateway's ip:port (ModeGateway only).
	Gateway string
	// Kubeconfig reaches the peer's API server with the read-only
	// credentials `trellis multicluster allow` made there.
	Kubeconfig []byte
}

// maxCluster keeps mirror names short enough for most services: a Service
// name is a DNS label (63) and the mirror adds "-<cluster>".
const maxCluster = 20

// Validate reports the first problem of l, naming the field.
func (l Link) Validate() error {
	if errs := validation.IsDNS1123Label(l.Cluster); len(errs) > 0 || len(l.Cluster) > maxCluster {
		return fmt.Errorf("cluster name %q: want a DNS label of at most %d characters", l.Cluster, maxCluster)
	}
	if err := identity.ValidateTrustDomain(l.TrustDomain); err != nil {
		return fmt.Errorf("trust domain %q: %w", l.TrustDomain, err)
	}
	if errs := validation.IsDNS1123Subdomain(l.ClusterDomain); len(errs) > 0 {
		return fmt.Errorf("cluster domain %q: %s", l.ClusterDomain, strings.Join(errs, "; "))
	}
	switch l.Mode {
	case ModeFlat:
		if l.Gateway != "" {
			return fmt.Errorf("gateway %q in mode %q: a gateway is for mode %q", l.Gateway, l.Mode, ModeGateway)
		}
	case ModeGateway:
		if ap, err := netip.ParseAddrPort(l.Gateway); err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
			return fmt.Errorf("gateway %q: want the peer gateway's ip:port", l.Gateway)
		}
	default:
		return fmt.Errorf("mode %q: want %q or %q", l.Mode, ModeFlat, ModeGateway)
	}
	if len(l.Kubeconfig) == 0 {
		return errors.New("no kubeconfig")
	}
	return nil
}

// checkKubeconfig accepts only what `trellis multicluster link` writes:
// inline CA data and a bearer token. A kubeconfig can also name a command
// to run for credentials (exec, auth-provider) or files to read; from a
// Secret, either would let whoever writes it run code in, or read files
// of, the controller.
func checkKubeconfig(b []byte) error {
	cfg, err := clientcmd.Load(b)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	for name, u := range cfg.AuthInfos {
		if u.Exec != nil || u.AuthProvider != nil || u.TokenFile != "" || u.ClientCertificate != "" || u.ClientKey != "" {
			return fmt.Errorf("kubeconfig user %q: only an inline token or client certificate is allowed (no exec, auth-provider or files)", name)
		}
	}
	for name, c := range cfg.Clusters {
		if c.CertificateAuthority != "" || c.InsecureSkipTLSVerify || c.ProxyURL != "" {
			return fmt.Errorf("kubeconfig cluster %q: only inline CA data is allowed (no CA file, no insecure-skip-tls-verify, no proxy)", name)
		}
	}
	return nil
}

// SecretName is the name of the link Secret for cluster.
func SecretName(cluster string) string { return SecretPrefix + cluster }

// Secret renders l as the link Secret in namespace ns.
func (l Link) Secret(ns string) *corev1.Secret {
	sec := &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      SecretName(l.Cluster),
			Namespace: ns,
			Labels:    map[string]string{LabelLink: l.Cluster, "app.kubernetes.io/part-of": "trellis"},
		},
		Type: SecretType,
		Data: map[string][]byte{
			KeyKubeconfig:    l.Kubeconfig,
			KeyCluster:       []byte(l.Cluster),
			KeyTrustDomain:   []byte(l.TrustDomain),
			KeyClusterDomain: []byte(l.ClusterDomain),
			KeyMode:          []byte(l.Mode),
		},
	}
	if l.Gateway != "" {
		sec.Data[KeyGateway] = []byte(l.Gateway)
	}
	return sec
}

// FromSecret reads and validates a link Secret.
func FromSecret(s *corev1.Secret) (Link, error) {
	if s.Type != SecretType {
		return Link{}, fmt.Errorf("secret %s/%s: type %q, want %q", s.Namespace, s.Name, s.Type, SecretType)
	}
	l := Link{
		Cluster:       string(s.Data[KeyCluster]),
		TrustDomain:   string(s.Data[KeyTrustDomain]),
		ClusterDomain: string(s.Data[KeyClusterDomain]),
		Mode:          string(s.Data[KeyMode]),
		Gateway:       string(s.Data[KeyGateway]),
		Kubeconfig:    s.Data[KeyKubeconfig],
	}
	if err := l.Validate(); err != nil {
		return Link{}, fmt.Errorf("secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	if err := checkKubeconfig(l.Kubeconfig); err != nil {
		return Link{}, fmt.Errorf("secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	if s.Name != SecretName(l.Cluster) {
		return Link{}, fmt.Errorf("secret %s/%s: names cluster %q, want the name %s", s.Namespace, s.Name, l.Cluster, SecretName(l.Cluster))
	}
	return l, nil
}

// MirrorName is the name of the mirror of Service svc from cluster.
func MirrorName(svc, cluster string) (string, error) {
	n := svc + "-" + cluster
	if errs := validation.IsDNS1035Label(n); len(errs) > 0 {
		return "", fmt.Errorf("mirror of service %q from cluster %q: name %q: %s", svc, cluster, n, strings.Join(errs, "; "))
	}
	return n, nil
}

// Exported reports whether a peer Service is exported.
func Exported(svc *corev1.Service) bool { return svc.Labels[LabelExport] == "true" }

// RemoteIdentity is the identity a mirror slice names, if it is a mirror
// slice (managed by ManagedBy) with a valid one.
func RemoteIdentity(managedBy string, annotations map[string]string) (identity.ID, bool) {
	if managedBy != ManagedBy {
		return identity.ID{}, false
	}
	id, err := identity.Parse(annotations[AnnotationRemoteIdentity])
	if err != nil {
		return identity.ID{}, false
	}
	return id, true
}

// GatewayServerName is the TLS server name a client sends through the
// peer's gateway to reach port of the peer service remote
// (name.ns.svc.<domain>, the mirror's AnnotationRemoteService):
// <port>.<name>.<ns>.svc.<domain>, as proxy/gateway parses it. False when
// remote is not such a name.
func GatewayServerName(port uint32, remote string) (string, bool) {
	parts := strings.Split(remote, ".")
	if port == 0 || port > 65535 || len(parts) < 4 || parts[2] != "svc" || len(validation.IsDNS1123Subdomain(remote)) > 0 {
		return "", false
	}
	return strconv.FormatUint(uint64(port), 10) + "." + remote, true
}
