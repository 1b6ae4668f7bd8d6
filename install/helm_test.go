package install

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// helmVersion is the Helm the chart is tested with.
const helmVersion = "v3.19.0"

// helmBinary returns a helm to run, per TRELLIS_HELM: a path to a helm
// binary, or "go-install" to build helmVersion from the Go module proxy
// into a temporary GOBIN (about 20 s with a warm module cache, 2.5 min
// cold, hence opt-in).
func helmBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: not running helm")
	}
	v := os.Getenv("TRELLIS_HELM")
	switch v {
	case "":
		t.Skip("set TRELLIS_HELM=go-install (builds helm " + helmVersion + " from the Go module proxy) or TRELLIS_HELM=/path/to/helm to compare helm template with trellis install")
	case "go-install":
		bin := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "install", "helm.sh/helm/v3/cmd/helm@"+helmVersion)
		cmd.Env = append(os.Environ(), "GOBIN="+bin, "GOFLAGS=-mod=mod")
		cmd.Dir = bin // outside this module, so its go.mod is not consulted
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go install helm: %v\n%s", err, out)
		}
		return filepath.Join(bin, "helm")
	}
	return v
}

// TestHelmTemplateMatchesInstall renders the chart with `helm template`
// and with Render from the same values and material, and requires the
// same objects, field for field (CRDs included).
func TestHelmTemplateMatchesInstall(t *testing.T) {
	helm := helmBinary(t)
	id, wh := testMaterial(t)
	dir := t.TempDir()
	material, err := yaml.Marshal(map[string]any(MaterialValues(id, wh)))
	if err != nil {
		t.Fatal(err)
	}
	materialFile := filepath.Join(dir, "material.yaml")
	if err := os.WriteFile(materialFile, material, 0o600); err != nil {
		t.Fatal(err)
	}
	external := MaterialValues(Identity{TrustAnchorsPEM: id.TrustAnchorsPEM}, wh)
	extData, _ := yaml.Marshal(map[string]any(external))
	externalFile := filepath.Join(dir, "external.yaml")
	if err := os.WriteFile(externalFile, extData, 0o600); err != nil {
		t.Fatal(err)
	}
	chartDir := filepath.Join("..", "charts", "trellis")
	tests := []struct {
		name     string
		ha       bool
		set      []string
		external bool
	}{
		{name: "default"},
		{name: "ha", ha: true},
		{name: "set", set: []string{"image.registry=registry.example.com/mesh", "image.tag=v9", "controller.logLevel=debug", "proxy.resources.limits.memory=1Gi", "controller.replicas=2"}},
		{name: "cni", set: []string{"cni.enabled=true", "cni.binDir=/usr/lib/cni", "cni.confDir=/var/tmp/trellis-cluster/run/cni/net.d", "proxy.resources.limits.cpu=2"}},
		{name: "ha required external issuer", ha: true, set: []string{"controller.podAntiAffinity=required", "installNamespace=false"}, external: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// --kube-version: a helm built by go install defaults to v1.20.
			args := []string{"template", "trellis", chartDir, "--namespace", Namespace, "--include-crds", "--kube-version", "1.36.3"}
			if tc.ha {
				args = append(args, "-f", filepath.Join(chartDir, "values-ha.yaml"))
			}
			if tc.external {
				args = append(args, "-f", externalFile)
			} else {
				args = append(args, "-f", materialFile)
			}
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var stdout, stderr bytes.Buffer
			cmd := exec.CommandContext(ctx, helm, args...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
			}
			fromHelm, err := ParseDocuments(stdout.Bytes(), "helm template")
			if err != nil {
				t.Fatal(err)
			}
			opts := Options{HA: tc.ha, Set: tc.set, Version: "dev", Identity: id, Webhook: wh}
			if tc.external {
				opts.Identity = Identity{TrustAnchorsPEM: id.TrustAnchorsPEM}
			}
			ours, err := Render(opts)
			if err != nil {
				t.Fatal(err)
			}
			crds, err := RenderCRDs()
			if err != nil {
				t.Fatal(err)
			}
			mine := append(append([]Object{}, crds.Objects...), ours.Objects...)
			compareObjects(t, fromHelm, mine)
			t.Logf("%s: helm template and trellis install agree on %d objects", tc.name, len(mine))
		})
	}
}

func compareObjects(t *testing.T, helm, ours []Object) {
	t.Helper()
	index := func(objs []Object) map[string]Object {
		m := map[string]Object{}
		for _, o := range objs {
			if _, dup := m[o.Ref()]; dup {
				t.Errorf("%s twice", o.Ref())
			}
			m[o.Ref()] = o
		}
		return m
	}
	h, o := index(helm), index(ours)
	for ref, ho := range h {
		oo, ok := o[ref]
		if !ok {
			t.Errorf("helm renders %s, trellis install does not", ref)
			continue
		}
		if !reflect.DeepEqual(ho.Content, oo.Content) {
			hy, _ := yaml.Marshal(ho.Content)
			oy, _ := yaml.Marshal(oo.Content)
			t.Errorf("%s differs:\nhelm:\n%s\ntrellis:\n%s", ref, hy, oy)
		}
	}
	for ref := range o {
		if _, ok := h[ref]; !ok {
			t.Errorf("trellis install renders %s, helm does not", ref)
		}
	}
}
