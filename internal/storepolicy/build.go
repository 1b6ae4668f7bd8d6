// Package storepolicy is the local store file's inbound policy: its
// objects (Servers, AuthorizationPolicies, HTTPRoutes in the CRD shape)
// decoded and validated (Build), and the Policy API's answer for a
// workload's port computed from them (Resolve). controller/store and
// controller/local serve it; `trellis policy explain` computes the same
// answer. It is the local side's adapter until internal/policymodel (the
// one translation of the objects, issue 12) replaces Resolve's body.
package storepolicy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/authz"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/meshconfig"
)

// API versions and kinds the store file's policies may have.
const (
	PolicyAPIVersion  = "policy.trellis.io/v1alpha1"
	GatewayAPIVersion = "gateway.networking.k8s.io/v1"
	KindServer        = "Server"
	KindAuthzPolicy   = "AuthorizationPolicy"
	KindHTTPRoute     = "HTTPRoute"
	// MaxPolicies bounds the objects of one file.
	MaxPolicies = 10_000
)

// Policies are the validated policy objects of a store file, in file
// order (the order decides between two Servers of one port, as age does
// on Kubernetes). They are the same Go types the controller reads from the
// API server, so one translation (internal/policymodel) serves both.
type Policies struct {
	Servers               []*policyv1.Server
	AuthorizationPolicies []*policyv1.AuthorizationPolicy
	HTTPRoutes            []*gwv1.HTTPRoute
	// Access is each Server's accessPolicy, keyed "namespace/name" (absent:
	// deny). Kept beside the Server until its Go type has the field.
	Access map[string]apiv1.AccessPolicy
}

// serverSpec is a Server's spec with accessPolicy. When the API type
// gains the field, the outer one still wins (encoding/json prefers the
// shallower field), so this keeps decoding the same YAML.
type serverSpec struct {
	policyv1.ServerSpec `json:",inline"`
	AccessPolicy        string `json:"accessPolicy,omitempty"`
}

// Len is the number of objects.
func (p Policies) Len() int {
	return len(p.Servers) + len(p.AuthorizationPolicies) + len(p.HTTPRoutes)
}

type kindKey struct{ kind, ns, name string }

// Build decodes and validates the policies of a file. An error
// names the object (index, kind, namespace/name) and the field.
func Build(objs []meshconfig.Object) (Policies, error) {
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
		if err := p.add(o); err != nil {
			return p, fmt.Errorf("%s.%w", where, err)
		}
	}
	if err := p.checkRefs(); err != nil {
		return p, err
	}
	return p, nil
}

func checkMeta(o meshconfig.Object) error {
	want := map[string]string{KindServer: PolicyAPIVersion, KindAuthzPolicy: PolicyAPIVersion, KindHTTPRoute: GatewayAPIVersion}
	v, ok := want[o.Kind]
	if !ok {
		return fmt.Errorf("kind: %q is not one of Server, AuthorizationPolicy, HTTPRoute", o.Kind)
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
// CRD schema would check on a cluster.
func (p *Policies) add(o meshconfig.Object) error {
	meta := func(m interface {
		SetName(string)
		SetNamespace(string)
	}) {
		m.SetName(o.Metadata.Name)
		m.SetNamespace(o.Metadata.Namespace)
	}
	switch o.Kind {
	case KindServer:
		s := &policyv1.Server{}
		meta(s)
		var spec serverSpec
		if err := decodeSpec(o.Spec, &spec); err != nil {
			return err
		}
		s.Spec = spec.ServerSpec
		if errs := checkServer(s, true); len(errs) > 0 {
			return errors.Join(errs...)
		}
		access := apiv1.AccessPolicy_DENY
		if spec.AccessPolicy != "" {
			a, err := authz.ParseAccess(spec.AccessPolicy)
			if err != nil {
				return fmt.Errorf("spec.accessPolicy: %w", err)
			}
			access = a
		}
		if p.Access == nil {
			p.Access = map[string]apiv1.AccessPolicy{}
		}
		p.Access[s.Namespace+"/"+s.Name] = access
		p.Servers = append(p.Servers, s)
	case KindAuthzPolicy:
		a := &policyv1.AuthorizationPolicy{}
		meta(a)
		if err := decodeSpec(o.Spec, &a.Spec); err != nil {
			return err
		}
		// serviceAccounts is read raw so this check holds whether or not
		// the API type has the field yet (decodeSpec refuses it if not).
		var sas struct {
			ServiceAccounts []json.RawMessage `json:"serviceAccounts"`
		}
		_ = json.Unmarshal(o.Spec, &sas)
		if errs := checkAuthz(a, len(sas.ServiceAccounts) > 0); len(errs) > 0 {
			return errors.Join(errs...)
		}
		p.AuthorizationPolicies = append(p.AuthorizationPolicies, a)
	case KindHTTPRoute:
		r := &gwv1.HTTPRoute{}
		meta(r)
		if err := decodeSpec(o.Spec, &r.Spec); err != nil {
			return err
		}
		p.HTTPRoutes = append(p.HTTPRoutes, r)
	}
	return nil
}

// decodeSpec decodes JSON strictly: an unknown field is a typo to report,
// not something to ignore (a dropped "identities" would deny silently).
func decodeSpec(raw json.RawMessage, into any) error {
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
func checkAuthz(a *policyv1.AuthorizationPolicy, serviceAccounts bool) []error {
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
	if len(sp.Identities) == 0 && !serviceAccounts && len(sp.Namespaces) == 0 && len(sp.Networks) == 0 && !sp.Unauthenticated {
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
// outright, naming the culprit, so nothing is silently denied).
func (p Policies) checkRefs() error {
	servers := map[kindKey]bool{}
	for _, s := range p.Servers {
		servers[kindKey{KindServer, s.Namespace, s.Name}] = true
	}
	for _, r := range p.HTTPRoutes {
		servers[kindKey{KindHTTPRoute, r.Namespace, r.Name}] = true
	}
	for _, a := range p.AuthorizationPolicies {
		if err := checkTarget(a); err != nil {
			return fmt.Errorf("AuthorizationPolicy %s/%s: %w", a.Namespace, a.Name, err)
		}
		kind := a.Spec.TargetRef.Kind
		if kind == "Namespace" {
			continue
		}
		if !servers[kindKey{kind, a.Namespace, a.Spec.TargetRef.Name}] {
			return fmt.Errorf("AuthorizationPolicy %s/%s: spec.targetRef: no %s %q in namespace %s of the store file", a.Namespace, a.Name, kind, a.Spec.TargetRef.Name, a.Namespace)
		}
	}
	for _, r := range p.HTTPRoutes {
		for i, ref := range r.Spec.ParentRefs {
			if kindOf(ref.Kind) != KindServer || !servers[kindKey{KindServer, r.Namespace, string(ref.Name)}] {
				return fmt.Errorf("HTTPRoute %s/%s: spec.parentRefs[%d]: in local mode a parent is a Server of the file (kind: Server), not %s %q", r.Namespace, r.Name, i, kindOf(ref.Kind), ref.Name)
			}
		}
	}
	return nil
}

// checkTarget checks the kind of a's target and that a Namespace target
// is a's own namespace; whether the target exists is the caller's check.
func checkTarget(a *policyv1.AuthorizationPolicy) error {
	switch kind := a.Spec.TargetRef.Kind; kind {
	case KindServer, KindHTTPRoute:
	case "Namespace":
		if a.Spec.TargetRef.Name != a.Namespace {
			return fmt.Errorf("spec.targetRef: a policy can target only its own namespace (%s), not %s", a.Namespace, a.Spec.TargetRef.Name)
		}
	default:
		return fmt.Errorf("spec.targetRef.kind: %q is not one of Server, HTTPRoute, Namespace", kind)
	}
	return nil
}

func kindOf(k *gwv1.Kind) string {
	if k == nil {
		return "Gateway"
	}
	return string(*k)
}
