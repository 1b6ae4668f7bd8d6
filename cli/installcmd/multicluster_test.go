package installcmd

import (
	"strings"
	"testing"
	"time"
)

// TestInstallMulticluster: --multicluster reaches the controller's args
// and its ClusterRole; without it neither is there.
func TestInstallMulticluster(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{{nil, false}, {[]string{"--multicluster"}, true}} {
		out, err := run(t, newInstall(time.Now, &kubeFlags{}, offline), tc.args...)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"- --multicluster\n", "verbs: [create, update, patch, delete]"} {
			if got := strings.Contains(out, s); got != tc.want {
				t.Errorf("%v: %q in the manifest: %v, want %v", tc.args, s, got, tc.want)
			}
		}
	}
}
