package harness

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"sigs.k8s.io/yaml"
)

// Store is the local-mode store file (docs/local-mode.md).
type Store struct {
	TrustDomain         string     `json:"trustDomain,omitempty"`
	CertificateLifetime string     `json:"certificateLifetime,omitempty"`
	Services            []Service  `json:"services"`
	Workloads           []Workload `json:"workloads"`
}

// Service is a service of the store file.
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

// Workload is a workload of the store file.
type Workload struct {
	Name           string            `json:"name"`
	Namespace      string            `json:"namespace"`
	ServiceAccount string            `json:"serviceAccount"`
	Token          string            `json:"token"`
	ProxyAddr      string            `json:"proxyAddr"`
	Zone           string            `json:"zone,omitempty"`
	Labels         map[string]string `json:"labels,omitempty"`
	Endpoints      []Endpoint        `json:"endpoints,omitempty"`
}

// Endpoint places a workload behind a service port.
type Endpoint struct {
	Service    string `json:"service"`
	Port       int    `json:"port"`
	TargetPort int    `json:"targetPort"`
	Weight     int    `json:"weight,omitempty"`
}

// Marshal renders the store as YAML.
func (s Store) Marshal() ([]byte, error) {
	b, err := yaml.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("marshal store: %w", err)
	}
	return b, nil
}

// Clone returns a deep copy, so a test can edit a store it already wrote.
func (s Store) Clone() Store {
	out := s
	out.Services = make([]Service, len(s.Services))
	for i, svc := range s.Services {
		svc.Ports = append([]ServicePort(nil), svc.Ports...)
		out.Services[i] = svc
	}
	out.Workloads = make([]Workload, len(s.Workloads))
	for i, w := range s.Workloads {
		w.Endpoints = append([]Endpoint(nil), w.Endpoints...)
		if w.Labels != nil {
			l := make(map[string]string, len(w.Labels))
			for k, v := range w.Labels {
				l[k] = v
			}
			w.Labels = l
		}
		out.Workloads[i] = w
	}
	return out
}

// Workload returns a pointer to the named workload, or nil.
func (s *Store) Workload(name string) *Workload {
	for i := range s.Workloads {
		if s.Workloads[i].Name == name {
			return &s.Workloads[i]
		}
	}
	return nil
}

// NewToken returns 32 random hex digits.
func NewToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}
