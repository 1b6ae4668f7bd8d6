// Package meshconfig holds the types of the local-mode store file
// (docs/local-mode.md): the one definition that controller/store reads and
// validates, and that `trellis demo` and the test harness write.
// sigs.k8s.io/yaml goes through encoding/json, so the json tags are the
// YAML keys. Validation is controller/store's job, not this package's.
package meshconfig

import (
	"encoding/json"
	"fmt"

	"sigs.k8s.io/yaml"
)

// File is the store file as written by the user.
type File struct {
	TrustDomain         string     `json:"trustDomain,omitempty"`
	ClusterDomain       string     `json:"clusterDomain,omitempty"`
	CertificateLifetime string     `json:"certificateLifetime,omitempty"`
	Services            []Service  `json:"services,omitempty"`
	Workloads           []Workload `json:"workloads,omitempty"`
	// Policies are policy objects in the shape `kubectl apply` takes
	// (docs/policy.md): policy.trellis.io/v1alpha1 Servers,
	// AuthorizationPolicies and RateLimits (on a Server: inbound; on a
	// Service: each client proxy's own limit), and
	// gateway.networking.k8s.io/v1 HTTPRoutes whose parent is a Server.
	Policies []Object `json:"policies,omitempty"`
	// Routes are outbound mesh routes in the shape `kubectl apply` takes
	// (docs/traffic.md): gateway.networking.k8s.io/v1 HTTPRoutes and
	// GRPCRoutes whose parent is a Service of the file, and
	// ReferenceGrants.
	Routes []Object `json:"routes,omitempty"`
}

// Object is one Kubernetes-shaped object of the store file. Spec is kept
// raw: controller/store decodes it, strictly, into the API type of Kind.
type Object struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   ObjectMeta      `json:"metadata"`
	Spec       json.RawMessage `json:"spec"`
}

// ObjectMeta is the part of Kubernetes' metadata the store uses; labels
// and annotations are accepted (so a cluster's YAML pastes in) and ignored.
type ObjectMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Service is a named set of ports; workloads back it through endpoints.
type Service struct {
	Name      string        `json:"name"`
	Namespace string        `json:"namespace"`
	Ports     []ServicePort `json:"ports"`
}

// ServicePort is one port of a service.
type ServicePort struct {
	Port     int    `json:"port"`
	Protocol string `json:"protocol,omitempty"`
}

// Workload is one proxied process.
type Workload struct {
	Name           string `json:"name"`
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
	Token          string `json:"token"`
	ProxyAddr      string `json:"proxyAddr"`
	// AdminAddr is the proxy's admin listener (ip:port), optional: where
	// `trellis authz` and `trellis policy suggest --config` read its
	// metrics. The controller does not use it.
	AdminAddr string `json:"adminAddr,omitempty"`
	// TapAddr is the proxy's tap listener (ip:port, --tap-addr), optional:
	// where local mode's tap (trellis tap, the dashboard) reaches it, as
	// the controller's identity.
	TapAddr string            `json:"tapAddr,omitempty"`
	Zone    string            `json:"zone,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	// Endpoints is written even when empty (as [] or null, both meaning
	// none), so a reader sees at a glance that the workload backs nothing.
	Endpoints []Endpoint `json:"endpoints"`
}

// Endpoint makes a workload back one port of a service of its namespace.
type Endpoint struct {
	Service    string `json:"service"`
	Port       int    `json:"port"`
	TargetPort int    `json:"targetPort,omitempty"`
	// Weight is a pointer so an explicit 0 (refused) differs from absent
	// (the default, 1).
	Weight *int `json:"weight,omitempty"`
}

// Marshal renders f as YAML.
func (f File) Marshal() ([]byte, error) {
	b, err := yaml.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("marshal store file: %w", err)
	}
	return b, nil
}
