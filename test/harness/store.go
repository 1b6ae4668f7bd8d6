package harness

import (
	"crypto/rand"
	"encoding/hex"
	"maps"

	"github.com/trellis-mesh/trellis/internal/meshconfig"
)

// Store is the local-mode store file (docs/local-mode.md), with the
// helpers tests need to edit and rewrite it.
type Store meshconfig.File

// The parts of the store file.
type (
	Service     = meshconfig.Service
	ServicePort = meshconfig.ServicePort
	Workload    = meshconfig.Workload
	Endpoint    = meshconfig.Endpoint
)

// Marshal renders the store as YAML.
func (s Store) Marshal() ([]byte, error) { return meshconfig.File(s).Marshal() }

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
		for j, e := range w.Endpoints {
			if e.Weight != nil {
				w.Endpoints[j].Weight = new(*e.Weight)
			}
		}
		w.Labels = maps.Clone(w.Labels)
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
