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
	}{{nil, false}, {[]string{"--multicluster", "--cluster-name", "east"}, true}} {
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
		{[]string{"--multicluster-gateway", "--cluster-name", "east"}, []string{"name: trellis-gateway", "type: LoadBalancer", "TRELLIS_PROXY_GATEWAY_ADDR"}, nil},
		{[]string{"--multicluster-gateway", "--set", "identity.trustDomain=east.example", "--set", "multicluster.gateway.serviceType=NodePort,multicluster.gateway.nodePort=30418"},
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

// TestClusterName: --cluster-name makes the trust domain NAME.local; a
// multicluster install must name its trust domain one way or the other;
// bad names and two names are refused with what to do.
func TestClusterName(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantTD  string // the controller's --trust-domain
		wantErr string
	}{
		{[]string{"--cluster-name", "east"}, "east.local", ""},
		{[]string{"--multicluster", "--cluster-name", "west-2"}, "west-2.local", ""},
		{[]string{"--multicluster", "--set", "identity.trustDomain=cluster.local"}, "cluster.local", ""},
		{[]string{"--multicluster-gateway", "--set", "controller.logLevel=debug,identity.trustDomain=b.example"}, "b.example", ""},
		{nil, "cluster.local", ""},
		{[]string{"--multicluster"}, "", "--cluster-name NAME"},
		{[]string{"--multicluster-gateway"}, "", "trust domain of its own"},
		{[]string{"--cluster-name", "East"}, "", `--cluster-name "East": want a DNS label`},
		{[]string{"--cluster-name", "a.b"}, "", "want a DNS label"},
		{[]string{"--cluster-name", "east", "--set", "identity.trustDomain=x.local"}, "", "both name the trust domain"},
	} {
		out, err := run(t, newInstall(time.Now, &kubeFlags{}, offline), tc.args...)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%v: err %v, want one saying %q", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tc.args, err)
			continue
		}
		if !strings.Contains(out, `"--trust-domain=`+tc.wantTD+`"`) {
			t.Errorf("%v: the controller's trust domain is not %s", tc.args, tc.wantTD)
		}
	}
}
