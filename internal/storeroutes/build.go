// Package storeroutes is the local store file's mesh routes: its
// `routes:` objects (gateway.networking.k8s.io/v1 HTTPRoutes and
// GRPCRoutes whose parents are Services of the file, and ReferenceGrants,
// in the CRD shape) decoded and validated (Build), for internal/routemodel
// to translate as it does the Kubernetes controller's.
package storeroutes

import (
	"errors"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/trellis-mesh/trellis/internal/meshconfig"
	"github.com/trellis-mesh/trellis/internal/routemodel"
	"github.com/trellis-mesh/trellis/internal/storepolicy"
)

// Kinds of the file's routes.
const (
	APIVersion         = storepolicy.GatewayAPIVersion
	KindReferenceGrant = "ReferenceGrant"
	MaxRoutes          = 10_000
	maxWeight          = 1_000_000
	serviceKind        = "Service"
)

// Routes are the validated routes of a store file, in file order (Build
// gives each a creation time from its place, so the first wins ties as
// the oldest does on Kubernetes).
type Routes struct {
	Routes []routemodel.Route
	Grants []*gwv1.ReferenceGrant
}

// ServiceExists reports whether the file has the Service ns/name with
// port (0: any port).
type ServiceExists func(ns, name string, port uint32) bool

// Build decodes and validates the routes of a file. An error names the
// object (index, kind, namespace/name) and the field.
func Build(objs []meshconfig.Object, exists ServiceExists) (Routes, error) {
	var out Routes
	if len(objs) > MaxRoutes {
		return out, fmt.Errorf("routes: %d objects, more than the %d allowed", len(objs), MaxRoutes)
	}
	seen := map[string]bool{}
	for i, o := range objs {
		where := fmt.Sprintf("routes[%d] (%s %s/%s)", i, o.Kind, o.Metadata.Namespace, o.Metadata.Name)
		if err := checkMeta(o); err != nil {
			return out, fmt.Errorf("%s: %w", where, err)
		}
		k := o.Kind + "/" + o.Metadata.Namespace + "/" + o.Metadata.Name
		if seen[k] {
			return out, fmt.Errorf("%s: duplicate %s", where, o.Kind)
		}
		seen[k] = true
		meta := metav1.ObjectMeta{Name: o.Metadata.Name, Namespace: o.Metadata.Namespace, Annotations: o.Metadata.Annotations,
			CreationTimestamp: metav1.NewTime(time.Unix(int64(i), 0).UTC()), Generation: 1}
		if err := out.add(o, meta, exists); err != nil {
			return out, fmt.Errorf("%s: %w", where, err)
		}
	}
	return out, nil
}

func checkMeta(o meshconfig.Object) error {
	switch o.Kind {
	case routemodel.KindHTTPRoute, routemodel.KindGRPCRoute, KindReferenceGrant:
	default:
		return fmt.Errorf("kind: %q is not one of HTTPRoute, GRPCRoute, ReferenceGrant", o.Kind)
	}
	if o.APIVersion != APIVersion {
		return fmt.Errorf("apiVersion: %q, want %s", o.APIVersion, APIVersion)
	}
	if errs := validation.IsDNS1123Subdomain(o.Metadata.Name); len(errs) > 0 {
		return fmt.Errorf("metadata.name: %q: %s", o.Metadata.Name, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Label(o.Metadata.Namespace); len(errs) > 0 {
		return fmt.Errorf("metadata.namespace: %q: %s", o.Metadata.Namespace, strings.Join(errs, "; "))
	}
	return nil
}

func (rs *Routes) add(o meshconfig.Object, meta metav1.ObjectMeta, exists ServiceExists) error {
	var r routemodel.Route
	switch o.Kind {
	case KindReferenceGrant:
		g := &gwv1.ReferenceGrant{ObjectMeta: meta}
		if err := storepolicy.DecodeSpec(o.Spec, &g.Spec); err != nil {
			return err
		}
		rs.Grants = append(rs.Grants, g)
		return nil
	case routemodel.KindHTTPRoute:
		hr := &gwv1.HTTPRoute{ObjectMeta: meta}
		if err := storepolicy.DecodeSpec(o.Spec, &hr.Spec); err != nil {
			return err
		}
		r = routemodel.FromHTTP(hr)
	default:
		gr := &gwv1.GRPCRoute{ObjectMeta: meta}
		if err := storepolicy.DecodeSpec(o.Spec, &gr.Spec); err != nil {
			return err
		}
		r = routemodel.FromGRPC(gr)
	}
	if err := check(&r, exists); err != nil {
		return err
	}
	rs.Routes = append(rs.Routes, r)
	return nil
}

// check refuses what a cluster would report in the route's status (the
// file has no status): a parent or backend that is not a Service of the
// file, what the translation cannot serve, a bad annotation.
func check(r *routemodel.Route, exists ServiceExists) error {
	if len(r.Parents) == 0 {
		return errors.New("spec.parentRefs: required (a Service of the file)")
	}
	for i, ref := range r.Parents {
		key := routemodel.ServiceParentKey(r.Meta.Namespace, ref)
		ns, name, _ := strings.Cut(key, "/")
		if key == "" || !exists(ns, name, uint32(routemodel.Deref(ref.Port, 0))) {
			return fmt.Errorf("spec.parentRefs[%d]: in local mode a parent is a Service of the file (kind: Service, the port one of its ports), not %q", i, ref.Name)
		}
	}
	if err := routemodel.Unsupported(r); err != nil {
		return err
	}
	// A cluster serves the route and says so in its status; a file has
	// none to say it, as with a backend that does not resolve.
	if err := routemodel.UnresolvedFilter(r); err != nil {
		return fmt.Errorf("%w in a cluster; in local mode it is refused", err)
	}
	for i, rule := range r.Rules {
		for j, b := range rule.Backends {
			if err := checkBackend(r, b.Ref, exists); err != nil {
				return fmt.Errorf("spec.rules[%d].backendRefs[%d]: %w", i, j, err)
			}
		}
	}
	if errs := routemodel.Annotations(r.Meta.Annotations).Errs; len(errs) > 0 {
		return fmt.Errorf("metadata.annotations: %w", errors.Join(errs...))
	}
	return nil
}

func checkBackend(r *routemodel.Route, b gwv1.BackendRef, exists ServiceExists) error {
	if k := routemodel.Deref(b.Kind, serviceKind); k != serviceKind || !(b.Group == nil || *b.Group == "" || *b.Group == "core") {
		return fmt.Errorf("kind: %q: a backend is a Service", k)
	}
	if b.Port == nil {
		return errors.New("port: required")
	}
	if w := routemodel.Deref(b.Weight, 1); w < 0 || w > maxWeight {
		return fmt.Errorf("weight: %d is not in [0, %d]", w, maxWeight)
	}
	ns := string(routemodel.Deref(b.Namespace, gwv1.Namespace(r.Meta.Namespace)))
	if !exists(ns, string(b.Name), uint32(*b.Port)) {
		return fmt.Errorf("no Service %s/%s with port %d in the file", ns, b.Name, *b.Port)
	}
	return nil
}
