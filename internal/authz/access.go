package authz

import (
	"fmt"
	"strings"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

// The values of a default inbound policy (--default-inbound-policy, the
// config.trellis.io/default-inbound-policy annotation, the install flag).
const (
	Deny                 = "deny"
	Audit                = "audit"
	AllAuthenticated     = "all-authenticated"
	ClusterAuthenticated = "cluster-authenticated"
	AllUnauthenticated   = "all-unauthenticated"
)

// Values lists the default policy values, in the order documented.
var values = []string{Deny, Audit, AllAuthenticated, ClusterAuthenticated, AllUnauthenticated}

// Values returns the allowed default policy values.
func Values() []string { return append([]string(nil), values...) }

// ParseAccess parses a default policy value; "" is AllUnauthenticated.
func ParseAccess(s string) (apiv1.AccessPolicy, error) {
	switch s {
	case "", AllUnauthenticated:
		return apiv1.AccessPolicy_ALL_UNAUTHENTICATED, nil
	case Deny:
		return apiv1.AccessPolicy_DENY, nil
	case Audit:
		return apiv1.AccessPolicy_AUDIT, nil
	case AllAuthenticated:
		return apiv1.AccessPolicy_ALL_AUTHENTICATED, nil
	case ClusterAuthenticated:
		return apiv1.AccessPolicy_CLUSTER_AUTHENTICATED, nil
	}
	return 0, fmt.Errorf("default inbound policy must be one of %s, got %q", strings.Join(values, ", "), s)
}

// AccessName is the value of an access policy as a user writes it;
// ACCESS_UNSPECIFIED is "".
func AccessName(a apiv1.AccessPolicy) string {
	switch a {
	case apiv1.AccessPolicy_DENY:
		return Deny
	case apiv1.AccessPolicy_AUDIT:
		return Audit
	case apiv1.AccessPolicy_ALL_AUTHENTICATED:
		return AllAuthenticated
	case apiv1.AccessPolicy_CLUSTER_AUTHENTICATED:
		return ClusterAuthenticated
	case apiv1.AccessPolicy_ALL_UNAUTHENTICATED:
		return AllUnauthenticated
	}
	return ""
}

// strictness orders access policies by what they let in without an
// authorization: deny lets nothing in, audit (like all-unauthenticated)
// lets everything in.
func strictness(a apiv1.AccessPolicy) int {
	switch a {
	case apiv1.AccessPolicy_DENY:
		return 4
	case apiv1.AccessPolicy_CLUSTER_AUTHENTICATED:
		return 3
	case apiv1.AccessPolicy_ALL_AUTHENTICATED:
		return 2
	case apiv1.AccessPolicy_AUDIT:
		return 1
	}
	return 0
}

// Stricter returns the stricter of two access policies (a on a tie).
func Stricter(a, b apiv1.AccessPolicy) apiv1.AccessPolicy {
	if strictness(b) > strictness(a) {
		return b
	}
	return a
}
