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

// TestInstallMulticlusterGateway: --multicluster-gateway renders the
// gateway (and a --set after it still wins).
func TestInstallMulticlusterGateway(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
		not  []string
	}{
		{nil, nil, []string{"name: trellis-gateway"}},
		{[]string{"--multicluster-gateway"}, []string{"name: trellis-gateway", "type: LoadBalancer", "TRELLIS_PROXY_GATEWAY_ADDR"}, nil},
		{[]string{"--multicluster-gateway", "--set", "multicluster.gateway.serviceType=NodePort,multicluster.gateway.nodePort=30418"},
			[]string{"type: NodePort", "nodePort: 30418"}, []string{"type: LoadBalancer"}},
	} {
		out, err := run(t, newInstall(time.Now, &kubeFlags{}, offline), tc.args...)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range tc.want {
			if !strings.Contains(out, s) {
				t.Errorf("%v: %q not in the manifest", tc.args, s)
			}
		}
		for _, s := range tc.not {
			if strings.Contains(out, s) {
				t.Errorf("%v: %q in the manifest", tc.args, s)
			}
		}
	}
}
