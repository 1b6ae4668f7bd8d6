package conformance

import (
	"regexp"
	"slices"
	"testing"

	"sigs.k8s.io/gateway-api/conformance"
)

// echoImages are the images the harness builds for this suite
// (test/cluster/k8s/cmd/cluster/conformance.go, echoImage): a suite bump
// that renames them fails here, not as pods stuck pulling.
var echoImages = []string{"registry.k8s.io/gateway-api/echo-advanced:v1.5.1"}

func TestEchoImageName(t *testing.T) {
	b, err := conformance.Manifests.ReadFile("mesh/manifests.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range regexp.MustCompile(`(?m)^\s*image:\s*(\S+)`).FindAllSubmatch(b, -1) {
		if img := string(m[1]); !slices.Contains(got, img) {
			got = append(got, img)
		}
	}
	if !slices.Equal(got, echoImages) {
		t.Errorf("the mesh manifests use %v; the harness builds %v", got, echoImages)
	}
}
