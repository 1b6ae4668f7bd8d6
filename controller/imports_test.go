// Package controller_test holds checks of the control plane's package
// boundaries (docs/architecture.md): the services do not know which mode
// they run in, and the Kubernetes mode does not depend on the local
// store.
package controller_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/trellis-mesh/trellis/"

func TestImportBoundaries(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list dependencies:", err)
	}
	for _, tc := range []struct {
		pkgs      []string // patterns, relative to the module root
		forbidden []string // import path prefixes none of their dependencies may have
	}{
		{[]string{"./controller/k8s/...", "./controller/kube"}, []string{module + "controller/store", module + "controller/local"}},
		{[]string{"./controller/destination", "./controller/policy", "./controller/identity", "./controller/notify", "./controller/authority"},
			[]string{module + "controller/store", module + "controller/local", module + "controller/k8s", "k8s.io/"}},
		{[]string{"./controller/store", "./controller/local"}, []string{module + "controller/k8s", "k8s.io/client-go"}},
		// The injector is shared by the controller's webhook and `trellis
		// inject`: neither side's packages.
		{[]string{"./inject", "./cli/..."}, []string{module + "controller/", module + "proxy/"}},
		// The observability views sit under the CLI: api and internal only.
		{[]string{"./viz/..."}, []string{module + "controller/", module + "proxy/", module + "cli/"}},
	} {
		t.Run(strings.Join(tc.pkgs, ","), func(t *testing.T) {
			cmd := exec.Command(gobin, append([]string{"list", "-deps"}, tc.pkgs...)...)
			cmd.Dir = ".."
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("go list: %v", err)
			}
			deps := strings.Fields(string(out))
			if len(deps) < len(tc.pkgs) {
				t.Fatalf("go list listed %d packages for %v", len(deps), tc.pkgs)
			}
			for _, d := range deps {
				for _, f := range tc.forbidden {
					if strings.HasPrefix(d, f) {
						t.Errorf("%v depends on %s (forbidden: %s)", tc.pkgs, d, f)
					}
				}
			}
		})
	}
}
