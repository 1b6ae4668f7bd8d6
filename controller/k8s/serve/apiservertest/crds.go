package apiservertest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"
)

// GatewayCRDs reads the standard channel CRDs of the pinned Gateway API
// module for resources ("httproutes", "grpcroutes", "referencegrants").
func GatewayCRDs(ctx context.Context, t testing.TB, resources ...string) [][]byte {
	t.Helper()
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		t.Fatalf("locate the Gateway API module: %v", err)
	}
	var docs [][]byte
	for _, r := range resources {
		data, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "config/crd/standard/gateway.networking.k8s.io_"+r+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, data)
	}
	return docs
}

// ApplyCRDs applies CRDs (server-side, as fieldManager) and waits until
// each is established.
func ApplyCRDs(ctx context.Context, t testing.TB, dc dynamic.Interface, fieldManager string, docs ...[]byte) {
	t.Helper()
	gvr := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	for _, data := range docs {
		var u unstructured.Unstructured
		if err := yaml.Unmarshal(data, &u.Object); err != nil {
			t.Fatal(err)
		}
		body, _ := u.MarshalJSON()
		force := true
		if _, err := dc.Resource(gvr).Patch(ctx, u.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{FieldManager: fieldManager, Force: &force}); err != nil {
			t.Fatalf("apply %s: %v", u.GetName(), err)
		}
		for {
			got, err := dc.Resource(gvr).Get(ctx, u.GetName(), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if established(got) {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("CRD %s not established", u.GetName())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func established(u *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, _ := c.(map[string]any); m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}
