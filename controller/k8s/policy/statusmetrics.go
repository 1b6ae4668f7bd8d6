package policy

import policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"

// kindOf names a policy object's kind for the status write metric.
func kindOf(obj any) string {
	switch obj.(type) {
	case *policyv1.Server:
		return kindServer
	case *policyv1.AuthorizationPolicy:
		return kindAuthz
	case *policyv1.RateLimit:
		return kindRateLimit
	}
	return "unknown"
}
