// Package storepolicy is the local store file's inbound policy: its
// objects (Servers, AuthorizationPolicies, RateLimits, HTTPRoutes,
// GRPCRoutes in the CRD shape) decoded and validated (Build), and the Policy API's answer for
// a workload's port (Policies.Answer), which internal/policymodel computes:
// the one translation of the objects, also the Kubernetes controller's.
// controller/store and controller/local serve it; `trellis policy explain`
// computes the same answer.
package storepolicy

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/meshconfig"
	"github.com/trellis-mesh/trellis/internal/policymodel"
)

// PolicyAPIVersion is the apiVersion of the store file's Trellis policies.
var PolicyAPIVersion = policyv1.SchemeGroupVersion.String()

// API versions and kinds the store file's policies may have.
const (
	GatewayAPIVersion = "gateway.networking.k8s.io/v1"
	KindServer        = "Server"
	KindAuthzPolicy   = "AuthorizationPolicy"
	KindHTTPRoute     = "HTTPRoute"
	KindGRPCRoute     = "GRPCRoute"
	// KindRateLimit: a Server's inbound limit or a Service's outbound one.
	KindRateLimit = "RateLimit"
	// MaxPolicies bounds the objects of one file.
	MaxPolicies = 10_000
)

// Policies are the validated policy objects of a store file, in file
// order. They are the same Go types the controller reads from the API
// server, so one translation (internal/policymodel) serves both. Build
// gives each object a creation time from its place in the file, so the
// first of two Servers of one port wins, as the oldest does on Kubernetes.
type Policies struct {
	Servers               []*policyv1.Server
	AuthorizationPolicies []*policyv1.AuthorizationPolicy
	HTTPRoutes            []*gwv1.HTTPRoute
	GRPCRoutes            []*gwv1.GRPCRoute
	RateLimits            []*policyv1.RateLimit
}

// Len is the number of objects.
func (p Policies) Len() int {
	return len(p.Servers) + len(p.AuthorizationPolicies) + len(p.HTTPRoutes) + len(p.GRPCRoutes) + len(p.RateLimits)
}

type kindKey struct{ kind, ns, name string }

// Build decodes and validates the policies of a file. An error
// names the object (index, kind, namespace/name) and the field.
// RateLimits on Services are not checked against the file's services
// (BuildIn does).
func Build(objs []meshconfig.Object) (Policies, error) { return BuildIn(objs, "", nil) }

// BuildIn is Build for a store file whose trust domain turns RateLimit
// overrides' serviceAccounts into identities, and whose services
// (hasService) a RateLimit on a Service must name (nil: not checked).
func BuildIn(objs []meshconfig.Object, trustDomain string, hasService func(ns, name string) bool) (Policies, error) {
	var p Policies
	if len(objs) > MaxPolicies {
		return p, fmt.Errorf("policies: %d objects, more than the %d allowed", len(objs), MaxPolicies)
	}
	seen := map[kindKey]bool{}
	for i, o := range objs {
		where := fmt.Sprintf("policies[%d]", i)
		if err := checkMeta(o); err != nil {
			return p, fmt.Errorf("%s: %w", where, err)
		}
		where = fmt.Sprintf("policies[%d] (%s %s/%s)", i, o.Kind, o.Metadata.Namespace, o.Metadata.Name)
		k := kindKey{o.Kind, o.Metadata.Namespace, o.Metadata.Name}
		if seen[k] {
			return p, fmt.Errorf("%s: duplicate %s", where, o.Kind)
		}
		seen[k] = true
		if err := p.add(o, metav1.NewTime(time.Unix(int64(i), 0).UTC()), cmp.Or(trustDomain, "cluster.local")); err != nil {
			return p, fmt.Errorf("%s.%w", where, err)
		}
	}
	known, err := p.checkRefs()
	if err != nil {
		return p, err
	}
	if err := p.checkRateLimitRefs(known, hasService); err != nil {
		return p, err
	}
	return p, nil
}

func checkMeta(o meshconfig.Object) error {
	want := map[string]string{KindServer: PolicyAPIVersion, KindAuthzPolicy: PolicyAPIVersion, KindRateLimit: PolicyAPIVersion,
		KindHTTPRoute: GatewayAPIVersion, KindGRPCRoute: GatewayAPIVersion}
	v, ok := want[o.Kind]
	if !ok {
		return fmt.Errorf("kind: %q is not one of Server, AuthorizationPolicy, RateLimit, HTTPRoute, GRPCRoute", o.Kind)
	}
	if o.APIVersion != v {
		return fmt.Errorf("apiVersion: %q, want %s for a %s", o.APIVersion, v, o.Kind)
	}
	if errs := validation.IsDNS1123Subdomain(o.Metadata.Name); len(errs) > 0 {
		return fmt.Errorf("metadata.name: %q: %s", o.Metadata.Name, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Label(o.Metadata.Namespace); len(errs) > 0 {
		return fmt.Errorf("metadata.namespace: %q: %s", o.Metadata.Namespace, strings.Join(errs, "; "))
	}
	if len(bytes.TrimSpace(o.Spec)) == 0 || bytes.Equal(bytes.TrimSpace(o.Spec), []byte("null")) {
		return errors.New("spec: required")
	}
	return nil
}

// add decodes o's spec strictly into its API type and checks what the
// CRD schema would check on a cluster. created orders the object (see
// Policies).
func (p *Policies) add(o meshconfig.Object, created metav1.Time, trustDomain string) error {
	meta := metav1.ObjectMeta{Name: o.Metadata.Name, Namespace: o.Metadata.Namespace, CreationTimestamp: created}
	switch o.Kind {
	case KindServer:
		s := &policyv1.Server{ObjectMeta: meta}
		if err := DecodeSpec(o.Spec, &s.Spec); err != nil {
			return err
		}
		if errs := checkServer(s, true); len(errs) > 0 {
			return errors.Join(errs...)
		}
		p.Servers = append(p.Servers, s)
	case KindAuthzPolicy:
		a := &policyv1.AuthorizationPolicy{ObjectMeta: meta}
		if err := DecodeSpec(o.Spec, &a.Spec); err != nil {
			return err
		}
		if errs := checkAuthz(a); len(errs) > 0 {
			return errors.Join(errs...)
		}
		p.AuthorizationPolicies = append(p.AuthorizationPolicies, a)
	case KindRateLimit:
		rl := &policyv1.RateLimit{ObjectMeta: meta}
		if err := DecodeSpec(o.Spec, &rl.Spec); err != nil {
			return err
		}
		if errs := checkRateLimit(rl, trustDomain); len(errs) > 0 {
			return errors.Join(errs...)
		}
		p.RateLimits = append(p.RateLimits, rl)
	case KindHTTPRoute:
		r := &gwv1.HTTPRoute{ObjectMeta: meta}
		if err := DecodeSpec(o.Spec, &r.Spec); err != nil {
			return err
		}
		p.HTTPRoutes = append(p.HTTPRoutes, r)
	case KindGRPCRoute:
		r := &gwv1.GRPCRoute{ObjectMeta: meta}
		if err := DecodeSpec(o.Spec, &r.Spec); err != nil {
			return err
		}
		p.GRPCRoutes = append(p.GRPCRoutes, r)
	}
	return nil
}

// DecodeSpec decodes a spec strictly: an unknown field is a typo to report,
// not something to ignore (a dropped "identities" would deny silently).
func DecodeSpec(raw json.RawMessage, into any) error {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	if err := d.Decode(into); err != nil {
		return fmt.Errorf("spec: %w", err)
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return errors.New("spec: trailing data")
	}
	return nil
}

// checkServer returns every problem of s. local: the store file's rule
// that a port is a number (its workloads have no named container ports).
func checkServer(s *policyv1.Server, local bool) []error {
	var errs []error
	port := s.Spec.Port
	switch {
	case port.Type == 0 && (port.IntVal < 1 || port.IntVal > 65535):
		errs = append(errs, fmt.Errorf("spec.port: %d is not a port 1-65535", port.IntVal))
	case port.Type != 0 && local:
		errs = append(errs, fmt.Errorf("spec.port: %q: local mode needs a number 1-65535 (its workloads have no named container ports)", port.String()))
	case port.Type != 0:
		if msgs := validation.IsValidPortName(port.StrVal); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("spec.port: %q is neither a number 1-65535 nor a container port name: %s", port.StrVal, strings.Join(msgs, "; ")))
		}
	}
	switch s.Spec.Protocol {
	case "", policyv1.ProtocolUnknown, policyv1.ProtocolHTTP1, policyv1.ProtocolHTTP2, policyv1.ProtocolGRPC, policyv1.ProtocolOpaque, policyv1.ProtocolTLS:
	default:
		errs = append(errs, fmt.Errorf("spec.protocol: %q is not one of unknown, HTTP/1, HTTP/2, gRPC, opaque, TLS", s.Spec.Protocol))
	}
	if _, ok := policymodel.Access(s.Spec.AccessPolicy); !ok && s.Spec.AccessPolicy != "" {
		errs = append(errs, fmt.Errorf("spec.accessPolicy: %q is not one of %s", s.Spec.AccessPolicy, strings.Join(policymodel.AccessValues(), ", ")))
	}
	for i, e := range s.Spec.PodSelector.MatchExpressions {
		switch e.Operator {
		case "In", "NotIn":
			if len(e.Values) == 0 {
				errs = append(errs, fmt.Errorf("spec.podSelector.matchExpressions[%d]: operator %s needs values", i, e.Operator))
			}
		case "Exists", "DoesNotExist":
			if len(e.Values) > 0 {
				errs = append(errs, fmt.Errorf("spec.podSelector.matchExpressions[%d]: operator %s takes no values", i, e.Operator))
			}
		default:
			errs = append(errs, fmt.Errorf("spec.podSelector.matchExpressions[%d].operator: %q is not one of In, NotIn, Exists, DoesNotExist", i, e.Operator))
		}
	}
	return errs
}

// checkAuthz returns every problem of a.
func checkAuthz(a *policyv1.AuthorizationPolicy) []error {
	var errs []error
	sp := a.Spec
	if sp.TargetRef.Name == "" {
		errs = append(errs, errors.New("spec.targetRef.name: required"))
	}
	for i, id := range sp.Identities {
		if id == "*" {
			continue
		}
		if _, err := identity.Parse(string(id)); err != nil {
			errs = append(errs, fmt.Errorf("spec.identities[%d]: %q: %w (or \"*\" for any mesh identity)", i, id, err))
		}
	}
	for i, ns := range sp.Namespaces {
		if ns == "*" {
			continue
		}
		if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("spec.namespaces[%d]: %q: %s", i, ns, strings.Join(msgs, "; ")))
		}
	}
	for i, n := range sp.Networks {
		if err := checkNetwork(n); err != nil {
			errs = append(errs, fmt.Errorf("spec.networks[%d]: %w", i, err))
		}
	}
	for i, sa := range sp.ServiceAccounts {
		ns := cmp.Or(sa.Namespace, a.Namespace)
		// Any valid trust domain: the file's is checked on its own.
		if err := (identity.ID{TrustDomain: identity.DefaultTrustDomain, Namespace: ns, ServiceAccount: sa.Name}).Validate(); err != nil {
			errs = append(errs, fmt.Errorf("spec.serviceAccounts[%d]: %s/%s: %w", i, ns, sa.Name, err))
		}
	}
	if len(sp.Identities) == 0 && len(sp.ServiceAccounts) == 0 && len(sp.Namespaces) == 0 && len(sp.Networks) == 0 && !sp.Unauthenticated {
		errs = append(errs, errors.New("spec: the policy allows nobody: set identities, serviceAccounts, namespaces, networks or unauthenticated: true"))
	}
	return errs
}

func checkNetwork(n policyv1.Network) error {
	pfx, err := netip.ParsePrefix(n.CIDR)
	if err != nil {
		return fmt.Errorf("cidr: %q is not a CIDR such as 10.0.0.0/8: %w", n.CIDR, err)
	}
	for j, e := range n.Except {
		ex, err := netip.ParsePrefix(string(e))
		if err != nil {
			return fmt.Errorf("except[%d]: %q is not a CIDR: %w", j, e, err)
		}
		if !pfx.Overlaps(ex) {
			return fmt.Errorf("except[%d]: %s is not inside %s", j, ex, pfx)
		}
	}
	return nil
}

// checkRefs checks that every AuthorizationPolicy targets an object of the
// file (on a cluster that is status TargetNotFound; a file can be refused
// outright, naming the culprit, so nothing is silently denied), and that
// every route's parent is a Server of the file. It fills in the groups a
// file may leave out (a reference in local mode can only name these), as
// policymodel matches references exactly.
func (p Policies) checkRefs() (map[kindKey]bool, error) {
	known := map[kindKey]bool{}
	for _, s := range p.Servers {
		known[kindKey{KindServer, s.Namespace, s.Name}] = true
	}
	for _, r := range p.HTTPRoutes {
		known[kindKey{KindHTTPRoute, r.Namespace, r.Name}] = true
	}
	for _, r := range p.GRPCRoutes {
		known[kindKey{KindGRPCRoute, r.Namespace, r.Name}] = true
	}
	for _, a := range p.AuthorizationPolicies {
		if err := checkTarget(a, known); err != nil {
			return nil, fmt.Errorf("AuthorizationPolicy %s/%s: spec.targetRef: %w", a.Namespace, a.Name, err)
		}
	}
	for _, r := range p.HTTPRoutes {
		if err := checkParents(r.Spec.ParentRefs, r.Namespace, known); err != nil {
			return nil, fmt.Errorf("HTTPRoute %s/%s: %w", r.Namespace, r.Name, err)
		}
	}
	for _, r := range p.GRPCRoutes {
		if err := checkParents(r.Spec.ParentRefs, r.Namespace, known); err != nil {
			return nil, fmt.Errorf("GRPCRoute %s/%s: %w", r.Namespace, r.Name, err)
		}
	}
	return known, nil
}

// checkTarget checks an AuthorizationPolicy's targetRef against the
// file's objects and sets the group its kind implies.
func checkTarget(a *policyv1.AuthorizationPolicy, known map[kindKey]bool) error {
	ref := &a.Spec.TargetRef
	switch ref.Kind {
	case policyv1.KindNamespace:
		if ref.Name != a.Namespace {
			return fmt.Errorf("a policy can target only its own namespace (%s), not %s", a.Namespace, ref.Name)
		}
		ref.Group = ""
		return nil
	case KindServer:
		ref.Group = policyv1.GroupName
	case KindHTTPRoute, KindGRPCRoute:
		ref.Group = policyv1.GatewayGroup
	default:
		return fmt.Errorf("kind: %q is not one of Server, HTTPRoute, GRPCRoute, Namespace", ref.Kind)
	}
	if !known[kindKey{ref.Kind, a.Namespace, ref.Name}] {
		return fmt.Errorf("no %s %q in namespace %s of the store file", ref.Kind, ref.Name, a.Namespace)
	}
	return nil
}

// checkParents checks a route's parentRefs and sets their group.
func checkParents(refs []gwv1.ParentReference, ns string, known map[kindKey]bool) error {
	for i := range refs {
		ref := &refs[i]
		if kindOf(ref.Kind) != KindServer || !known[kindKey{KindServer, ns, string(ref.Name)}] ||
			(ref.Namespace != nil && string(*ref.Namespace) != ns) {
			return fmt.Errorf("spec.parentRefs[%d]: in local mode a parent is a Server of the file (kind: Server) in the route's namespace, not %s %q", i, kindOf(ref.Kind), ref.Name)
		}
		g := gwv1.Group(policyv1.GroupName)
		ref.Group = &g
	}
	return nil
}

// checkTargetKind checks the kind of a's target and that a Namespace
// target is a's own namespace, for files checked without the objects the
// target names (policy validate); checkTarget also requires the target.
func checkTargetKind(a *policyv1.AuthorizationPolicy) error {
	switch kind := a.Spec.TargetRef.Kind; kind {
	case KindServer, KindHTTPRoute, KindGRPCRoute:
	case policyv1.KindNamespace:
		if a.Spec.TargetRef.Name != a.Namespace {
			return fmt.Errorf("spec.targetRef: a policy can target only its own namespace (%s), not %s", a.Namespace, a.Spec.TargetRef.Name)
		}
	default:
		return fmt.Errorf("spec.targetRef.kind: %q is not one of Server, HTTPRoute, GRPCRoute, Namespace", kind)
	}
	return nil
}

func kindOf(k *gwv1.Kind) string {
	if k == nil {
		return "Gateway"
	}
	return string(*k)
}
