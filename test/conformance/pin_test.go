package conformance

import "testing"

// TestGatewayAPIPin: the suite runs against the Gateway API release the
// product pins (its CRDs and its conformance tests), so this module's
// sigs.k8s.io/gateway-api and .../conformance must both be the product's
// version; bump them together.
func TestGatewayAPIPin(t *testing.T) {
	product, err := goList(t.Context(), repoRoot(), "{{.Version}}", "sigs.k8s.io/gateway-api")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"sigs.k8s.io/gateway-api", "sigs.k8s.io/gateway-api/conformance"} {
		got, err := goList(t.Context(), ".", "{{.Version}}", m)
		if err != nil {
			t.Fatal(err)
		}
		if got != product {
			t.Errorf("%s is %s here, the product pins sigs.k8s.io/gateway-api %s", m, got, product)
		}
	}
}
