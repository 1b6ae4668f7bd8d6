package main

import (
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/install"
)

// TestInstallArgsAccepted renders `trellis install` (default and HA) and
// parses the controller container's command line with this binary's real
// flag set: an argument the binary does not know would crash-loop the
// controller in every cluster. The directories the flags name must be
// mounted in the container.
func TestInstallArgsAccepted(t *testing.T) {
	now := time.Now()
	id, err := install.GenerateIdentity("cluster.local", install.DefaultAnchorValidity, install.DefaultIssuerValidity, now)
	if err != nil {
		t.Fatal(err)
	}
	wh, err := install.GenerateWebhookTLS(install.Namespace, install.DefaultWebhookValidity, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, ha := range []bool{false, true} {
		m, err := install.Render(install.Options{HA: ha, Version: "dev", Identity: id, Webhook: wh})
		if err != nil {
			t.Fatal(err)
		}
		var dep *appsv1.Deployment
		for _, o := range m.Objects {
			if o.Kind.Kind == "Deployment" && o.Name == "trellis-controller" {
				dep = &appsv1.Deployment{}
				if err := yaml.UnmarshalStrict(o.YAML, dep); err != nil {
					t.Fatalf("%s: %v", o.Ref(), err)
				}
			}
		}
		if dep == nil {
			t.Fatalf("ha=%v: no Deployment trellis-controller in the install", ha)
		}
		var checked int
		for _, ct := range dep.Spec.Template.Spec.Containers {
			args := append(append([]string(nil), ct.Command...), ct.Args...)
			if len(args) > 0 && strings.HasPrefix(args[0], "/") { // the binary itself
				args = args[1:]
			}
			if len(args) == 0 || args[0] != "kubernetes" {
				continue
			}
			checked++
			root := newRootCmd()
			sub, rest, err := root.Find(args)
			if err != nil || sub.Name() != "kubernetes" {
				t.Fatalf("ha=%v: %q does not name the kubernetes command: %v", ha, args, err)
			}
			if err := sub.ParseFlags(rest); err != nil {
				t.Fatalf("ha=%v: container %s args %q: %v", ha, ct.Name, args, err)
			}
			if err := sub.ValidateArgs(sub.Flags().Args()); err != nil {
				t.Fatalf("ha=%v: container %s: positional arguments %q: %v", ha, ct.Name, sub.Flags().Args(), err)
			}
			if err := sub.ValidateRequiredFlags(); err != nil {
				t.Fatalf("ha=%v: container %s: %v", ha, ct.Name, err)
			}
			mounted := map[string]bool{}
			for _, vm := range ct.VolumeMounts {
				mounted[vm.MountPath] = true
			}
			for _, flag := range []string{"issuer-dir", "webhook-tls-dir"} {
				dir := sub.Flags().Lookup(flag).Value.String()
				if sub.Flags().Lookup("webhook-addr").Value.String() == "" && flag == "webhook-tls-dir" {
					continue
				}
				if !mounted[dir] {
					t.Errorf("ha=%v: --%s=%s is not a volume mount of container %s (mounts %v)", ha, flag, dir, ct.Name, mounted)
				}
			}
		}
		if checked != 1 {
			t.Fatalf("ha=%v: %d containers run `kubernetes`, want 1", ha, checked)
		}
	}
}
