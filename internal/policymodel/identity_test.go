package policymodel

import (
	"os"
	"regexp"
	"strings"
	"testing"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
	"github.com/trellis-mesh/trellis/internal/identity"
)

var identityRE = regexp.MustCompile(policyv1.IdentityPattern)

// crdAccepts is the CRD's CEL rule for one identities entry, in Go (CEL's
// matches is RE2, as Go's regexp).
func crdAccepts(s string) bool {
	if s == "*" {
		return true
	}
	if len(s) > 400 || !identityRE.MatchString(s) {
		return false
	}
	return strings.Index(s[len("spiffe://"):], "/") <= 253
}

// The CRD must accept exactly the SPIFFE IDs the proxy accepts: one it
// refused froze a port's policy while the status said Accepted.
func TestIdentityPatternAgreesWithParse(t *testing.T) {
	long := strings.Repeat("a", 63)
	for _, s := range []string{
		"spiffe://cluster.local/ns/shop/sa/web", "spiffe://a/ns/b/sa/c", "spiffe://x-1.y/ns/n-1/sa/s-2",
		"spiffe://" + long + "." + long + "." + long + "." + strings.Repeat("a", 61) + "/ns/" + long + "/sa/" + long,
		"spiffe://" + long + "." + long + "." + long + "." + strings.Repeat("a", 62) + "/ns/a/sa/b", // domain 254
		"spiffe://cluster.local/ns/Shop/sa/web", "spiffe://cluster.local/ns/shop/sa/web/x", "spiffe://cluster.local/ns/shop",
		"spiffe://cluster.local/ns/-a/sa/b", "spiffe://cluster.local/ns/a-/sa/b", "spiffe://cluster..local/ns/a/sa/b",
		"spiffe://cluster.local/ns/a/sa/" + long + "a", "spiffe://cluster.local/ns/a.b/sa/c", "spiffe://cluster.local/x/a/sa/c",
		"spiffe://cluster.local/ns/a/sa/b\n", "SPIFFE://cluster.local/ns/a/sa/b", "spiffe:///ns/a/sa/b", "",
	} {
		_, err := identity.Parse(s)
		if got := crdAccepts(s); got != (err == nil) {
			t.Errorf("%q: CRD accepts %v, proxy's parse error %v", s, got, err)
		}
	}
}

// The generated CRD carries the same pattern (make gen writes it from the
// marker, which repeats IdentityPattern).
func TestCRDCarriesIdentityPattern(t *testing.T) {
	data, err := os.ReadFile("../../charts/trellis/crds/policy.trellis.io_authorizationpolicies.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "self.matches('"+policyv1.IdentityPattern+"')") {
		t.Errorf("the CRD's identities rule does not use policyv1.IdentityPattern %s", policyv1.IdentityPattern)
	}
}

func FuzzIdentityPattern(f *testing.F) {
	for _, s := range []string{"spiffe://cluster.local/ns/shop/sa/web", "spiffe://a.b-c/ns/x/sa/y", "*", "spiffe://A/ns/b/sa/c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if s == "*" {
			return
		}
		_, err := identity.Parse(s)
		if got := crdAccepts(s); got != (err == nil) {
			t.Errorf("%q: CRD accepts %v, proxy's parse error %v", s, got, err)
		}
	})
}
