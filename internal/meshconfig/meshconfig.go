// Package meshconfig holds the types of the local-mode store file
// (docs/local-mode.md): the one definition that controller/store reads and
// validates, and that `trellis demo` and the test harness write.
// sigs.k8s.io/yaml goes through encoding/json, so the json tags are the
// YAML keys. Validation is controller/store's job, not this package's.
package meshconfig

import (
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
	Name           string            `json:"name"`
	Namespace      string            `json:"namespace"`
	ServiceAccount string            `json:"serviceAccount"`
	Token          string            `json:"token"`
	ProxyAddr      string            `json:"proxyAddr"`
	Zone           string            `json:"zone,omitempty"`
	Labels         map[string]string `json:"labels,omitempty"`
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
