package demo

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/trellis-mesh/trellis/internal/meshconfig"
)

// Split is a canary split of a demo service between its versions
// (--split books=v1:90,v2:10): each version gets its own Service
// (books-v1, books-v2), and an HTTPRoute on books sends each its weight.
type Split struct {
	Service string
	Weights []VersionWeight
}

// VersionWeight is one version's share of a Split.
type VersionWeight struct {
	Version string
	Weight  int32
}

// maxSplitWeight bounds a weight (the Gateway API's own bound).
const maxSplitWeight = 1_000_000

// ParseSplit parses --split SERVICE=VERSION:WEIGHT,VERSION:WEIGHT; every
// version must be one the demo runs for the service, once.
func ParseSplit(s string) (*Split, error) {
	name, list, ok := strings.Cut(s, "=")
	if !ok || list == "" {
		return nil, fmt.Errorf("--split %q: want SERVICE=VERSION:WEIGHT,..., e.g. books=v1:90,v2:10", s)
	}
	sp := &Split{Service: strings.TrimSpace(name)}
	versions := serviceVersions(sp.Service)
	if len(versions) < 2 {
		return nil, fmt.Errorf("--split %q: %q is not a demo service with versions (books has v1 and v2)", s, sp.Service)
	}
	total := 0
	for item := range strings.SplitSeq(list, ",") {
		v, w, ok := strings.Cut(strings.TrimSpace(item), ":")
		n, err := strconv.Atoi(w)
		if !ok || err != nil || n < 0 || n > maxSplitWeight {
			return nil, fmt.Errorf("--split %q: %q: want VERSION:WEIGHT with a weight 0-%d", s, item, maxSplitWeight)
		}
		if !slices.Contains(versions, v) || slices.ContainsFunc(sp.Weights, func(x VersionWeight) bool { return x.Version == v }) {
			return nil, fmt.Errorf("--split %q: version %q is not one of %s, or given twice", s, v, strings.Join(versions, ", "))
		}
		sp.Weights = append(sp.Weights, VersionWeight{Version: v, Weight: int32(n)})
		total += n
	}
	if total == 0 {
		return nil, fmt.Errorf("--split %q: every weight is 0", s)
	}
	return sp, nil
}

// serviceVersions are the versions of the workloads behind a service.
func serviceVersions(service string) []string {
	var out []string
	for _, w := range demoWorkloads {
		if w.Service == service && service != "" {
			out = append(out, w.Version)
		}
	}
	return out
}

// versionService is the Service of one version ("books-v1").
func versionService(service, version string) string { return service + "-" + version }

// addSplit adds to s the version Services, their endpoints and the route.
func (p Plan) addSplit(s *Store) {
	sp := p.Split
	parent := serviceByName(sp.Service)
	for _, vw := range sp.Weights {
		s.Services = append(s.Services, meshconfig.Service{Name: versionService(sp.Service, vw.Version), Namespace: Namespace,
			Ports: []meshconfig.ServicePort{{Port: parent.Port, Protocol: parent.Protocol}}})
	}
	for i, w := range p.Workloads {
		if w.Service == sp.Service && slices.ContainsFunc(sp.Weights, func(x VersionWeight) bool { return x.Version == w.Version }) {
			s.Workloads[i].Endpoints = append(s.Workloads[i].Endpoints, meshconfig.Endpoint{
				Service: versionService(sp.Service, w.Version), Port: parent.Port, TargetPort: w.AppPort, Weight: new(1)})
		}
	}
	s.Routes = append(s.Routes, splitRoute(sp, parent))
}

// splitRoute is the HTTPRoute of a split, in the CRD shape.
func splitRoute(sp *Split, parent Service) meshconfig.Object {
	type ref = map[string]any
	var backends []ref
	for _, vw := range sp.Weights {
		backends = append(backends, ref{"name": versionService(sp.Service, vw.Version), "port": parent.Port, "weight": vw.Weight})
	}
	spec, _ := json.Marshal(ref{ // a map of plain values: cannot fail
		"parentRefs": []ref{{"kind": "Service", "name": sp.Service, "port": parent.Port}},
		"rules":      []ref{{"backendRefs": backends}},
	})
	return meshconfig.Object{
		APIVersion: "gateway.networking.k8s.io/v1", Kind: "HTTPRoute",
		Metadata: meshconfig.ObjectMeta{Name: sp.Service + "-split", Namespace: Namespace},
		Spec:     spec,
	}
}
