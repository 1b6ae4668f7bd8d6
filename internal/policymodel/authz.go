package policymodel

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
)

// Authorization translates one AuthorizationPolicy. It refuses what the
// proxy would refuse (an identity internal/identity cannot parse, a CIDR
// netip cannot), since one bad entry in an answer makes the proxy keep
// its previous answer for the whole port. Networks keep their exceptions
// (nets): expanding them into CIDRs can multiply an answer's size by
// thousands.
func Authorization(ap *policyv1.AuthorizationPolicy, trustDomain string) (*apiv1.Authorization, error) {
	s := ap.Spec
	a := &apiv1.Authorization{Name: ap.Name, Unauthenticated: s.Unauthenticated}
	var errs []error
	for i, id := range s.Identities {
		if id != "*" {
			if _, err := identity.Parse(string(id)); err != nil {
				errs = append(errs, fmt.Errorf("identities[%d]: %w", i, err))
				continue
			}
		}
		a.Identities = appendNew(a.Identities, string(id))
	}
	for i, sa := range s.ServiceAccounts {
		ns := cmpOr(sa.Namespace, ap.Namespace)
		id := identity.ID{TrustDomain: trustDomain, Namespace: ns, ServiceAccount: sa.Name}
		if err := id.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("serviceAccounts[%d] %s/%s: %w", i, ns, sa.Name, err))
			continue
		}
		a.Identities = appendNew(a.Identities, id.String())
	}
	for i, ns := range s.Namespaces {
		switch {
		case ns == "*": // any namespace: any authenticated client
			a.Identities = appendNew(a.Identities, "*")
		case validNamespace(ns) != nil:
			errs = append(errs, fmt.Errorf("namespaces[%d] %q: %w", i, ns, validNamespace(ns)))
		default:
			a.Namespaces = appendNew(a.Namespaces, ns)
		}
	}
	for i, n := range s.Networks {
		net, err := network(n)
		if err != nil {
			errs = append(errs, fmt.Errorf("networks[%d]: %w", i, err))
			continue
		}
		a.Nets = append(a.Nets, net)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("AuthorizationPolicy %s/%s: %w", ap.Namespace, ap.Name, err)
	}
	// Networks alone: anyone from there, with or without mesh TLS (the
	// contract's "only requirement is networks sets unauthenticated").
	if len(s.Identities)+len(s.ServiceAccounts)+len(s.Namespaces) == 0 && len(a.Nets) > 0 {
		a.Unauthenticated = true
	}
	if !a.Unauthenticated && len(a.Identities)+len(a.Namespaces) == 0 {
		return nil, fmt.Errorf("AuthorizationPolicy %s/%s allows nobody: set identities, serviceAccounts, namespaces, networks or unauthenticated", ap.Namespace, ap.Name)
	}
	return a, nil
}

// validNamespace checks a namespace as the proxy checks an identity's.
func validNamespace(ns string) error {
	return identity.ID{TrustDomain: "x", Namespace: ns, ServiceAccount: "x"}.Validate()
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func appendNew(s []string, v string) []string {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

// network checks a CIDR and its exceptions and makes them canonical
// (masked). An exception outside the network excludes nothing; the
// evaluator (internal/authz) gets it as written.
func network(n policyv1.Network) (*apiv1.Network, error) {
	base, err := netip.ParsePrefix(n.CIDR)
	if err != nil {
		return nil, fmt.Errorf("cidr %q: %w", n.CIDR, err)
	}
	out := &apiv1.Network{Cidr: base.Masked().String()}
	for _, e := range n.Except {
		ex, err := netip.ParsePrefix(string(e))
		if err != nil {
			return nil, fmt.Errorf("except %q: %w", e, err)
		}
		out.Except = append(out.Except, ex.Masked().String())
	}
	return out, nil
}
