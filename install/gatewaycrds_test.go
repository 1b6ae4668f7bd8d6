package install

import (
	"context"
	"errors"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func installedCRD(name, version, channel string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetName(name)
	if version != "" {
		u.SetAnnotations(map[string]string{annBundleVersion: version, annChannel: channel})
	}
	return u
}

// Only absent CRDs are installed; an installed one is kept whatever its
// version or channel, and the note says why.
func TestGatewayCRDs(t *testing.T) {
	cluster := map[string]*unstructured.Unstructured{
		"httproutes.gateway.networking.k8s.io": installedCRD("httproutes.gateway.networking.k8s.io", "v1.2.0", "standard"),
		"grpcroutes.gateway.networking.k8s.io": installedCRD("grpcroutes.gateway.networking.k8s.io", "v1.7.0", "experimental"),
	}
	lookup := func(_ context.Context, name string) (*unstructured.Unstructured, error) { return cluster[name], nil }
	objs, notes, err := GatewayCRDs(context.Background(), "standard", lookup)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || objs[0].Name != "referencegrants.gateway.networking.k8s.io" {
		t.Fatalf("installs %v, want only the absent ReferenceGrant CRD", objs)
	}
	if _, ok := objs[0].Content["metadata"].(map[string]any)["labels"]; ok {
		t.Error("a Gateway API CRD carries labels: uninstall would delete it")
	}
	joined := strings.Join(notes, "\n")
	for _, want := range []string{"httproutes.gateway.networking.k8s.io is v1.2.0, older", "grpcroutes.gateway.networking.k8s.io is installed from the experimental channel"} {
		if !strings.Contains(joined, want) {
			t.Errorf("notes %q lack %q", joined, want)
		}
	}
	// Experimental asked, experimental newer installed: kept, said.
	cluster["grpcroutes.gateway.networking.k8s.io"] = installedCRD("grpcroutes.gateway.networking.k8s.io", "v1.7.0", "experimental")
	_, notes, _ = GatewayCRDs(context.Background(), "experimental", lookup)
	if !strings.Contains(strings.Join(notes, "\n"), "grpcroutes.gateway.networking.k8s.io is installed (v1.7.0, experimental channel): kept") {
		t.Errorf("notes %v", notes)
	}
	// A lookup that fails is an error, never "absent".
	if _, _, err := GatewayCRDs(context.Background(), "standard", func(context.Context, string) (*unstructured.Unstructured, error) {
		return nil, errors.New("forbidden")
	}); err == nil {
		t.Error("a failed lookup installs anyway")
	}
}
