package routemodel

import (
	corev1 "k8s.io/api/core/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Static is a Lookup over lists of objects (local mode, tests). Grants
// nil means ReferenceGrants are not known: no cross-namespace backend.
type Static struct {
	Services []*corev1.Service
	Grants   []*gwv1.ReferenceGrant
}

// Service implements Lookup.
func (s Static) Service(ns, name string) *corev1.Service {
	for _, svc := range s.Services {
		if svc.Namespace == ns && svc.Name == name {
			return svc
		}
	}
	return nil
}

// Granted implements Lookup.
func (s Static) Granted(kind, fromNS, toNS, toName string) bool {
	return GrantAllows(s.Grants, kind, fromNS, toNS, toName)
}

// GrantAllows reports whether any of grants (of any namespace: those of
// toNS count) lets routes of kind in fromNS refer to Service toName.
func GrantAllows(grants []*gwv1.ReferenceGrant, kind, fromNS, toNS, toName string) bool {
	for _, g := range grants {
		if g.Namespace != toNS {
			continue
		}
		from, to := false, false
		for _, f := range g.Spec.From {
			from = from || (f.Group == gwv1.GroupName && string(f.Kind) == kind && string(f.Namespace) == fromNS)
		}
		for _, t := range g.Spec.To {
			to = to || ((t.Group == "" || t.Group == "core") && t.Kind == "Service" && (t.Name == nil || string(*t.Name) == toName))
		}
		if from && to {
			return true
		}
	}
	return false
}
