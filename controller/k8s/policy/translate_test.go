package policy

import (
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

func TestTranslate(t *testing.T) {
	objs := loadFixture(t, "testdata/policy.yaml")
	allowAll := `name: "default" authorizations: {name: "all-unauthenticated" unauthenticated: true identities: "*"}`
	for _, tc := range []struct {
		name, ns, pod string
		port          uint32
		want          string // prototext of the ServerPolicy
	}{
		{"named port, oldest Server, policies by name, exceptions cut", "shop", "web-1", 8080,
			`protocol: HTTP1 name: "server/web-http"
			 authorizations: {name: "a-web-lb" unauthenticated: true networks: "10.128.0.0/10"}
			 authorizations: {name: "web-from-mesh" identities: "spiffe://cluster.local/ns/shop/sa/gateway" namespaces: "ops"}`},
		{"Server without policies allows nobody", "shop", "web-1", 9090, `name: "server/web-admin"`},
		{"port no Server selects: default", "shop", "web-1", 8081, allowAll},
		{"matchExpressions and named port, oldest RateLimit", "shop", "books-1", 7000,
			`protocol: GRPC name: "server/backend" limits: {requests_per_second: 100 max_concurrency: 10}`},
		{"Servers of another namespace do not apply", "other", "other-1", 8080, allowAll},
		{"no pods: default", "shop", "", 8080, allowAll},
	} {
		t.Run(tc.name, func(t *testing.T) {
			all, o := split(objs, tc.ns)
			var pods []*corev1.Pod
			for _, p := range all {
				if p.Name == tc.pod {
					pods = append(pods, p)
				}
			}
			want := &apiv1.ServerPolicy{}
			if err := prototext.Unmarshal([]byte(tc.want), want); err != nil {
				t.Fatal(err)
			}
			if got := Translate(pods, tc.port, o); !proto.Equal(got, want) {
				t.Errorf("got  %v\nwant %v", got, want)
			}
		})
	}
}

func TestAccept(t *testing.T) {
	objs := loadFixture(t, "testdata/policy.yaml")
	_, o := split(objs, "shop")
	got := map[string]Accepted{}
	for _, ap := range o.Authz {
		got["authz/"+ap.Name] = AcceptAuthorizationPolicy(ap, o.Servers)
	}
	for _, rl := range o.RateLimits {
		got["ratelimit/"+rl.Name] = AcceptRateLimit(rl, o.Servers, o.RateLimits)
	}
	want := map[string]Accepted{
		"authz/web-from-mesh": accepted,
		"authz/a-web-lb":      accepted,
		"authz/to-nowhere": {Reason: policyv1.ReasonTargetNotFound,
			Message: `targetRef names Server "missing", which does not exist in namespace shop`},
		"ratelimit/backend-limit": accepted,
		"ratelimit/backend-limit-2": {Reason: policyv1.ReasonConflict,
			Message: `Server "backend" is already limited by the older RateLimit "backend-limit"`},
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: got %+v, want %+v", k, got[k], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d results, want %d", len(got), len(want))
	}
}

func TestSubtract(t *testing.T) {
	for _, tc := range []struct {
		cidr    string
		except  []policyv1.ExceptCIDR
		want    []string
		wantErr bool
	}{
		{"10.0.0.0/8", nil, []string{"10.0.0.0/8"}, false},
		{"10.1.2.3/8", nil, []string{"10.0.0.0/8"}, false}, // host bits masked
		{"10.0.0.0/8", []policyv1.ExceptCIDR{"10.0.0.0/8"}, nil, false},
		{"10.0.0.0/8", []policyv1.ExceptCIDR{"0.0.0.0/0"}, nil, false},
		{"10.0.0.0/8", []policyv1.ExceptCIDR{"11.0.0.0/8", "fd00::/8"}, []string{"10.0.0.0/8"}, false},
		{"10.0.0.0/30", []policyv1.ExceptCIDR{"10.0.0.1/32"}, []string{"10.0.0.0/32", "10.0.0.2/31"}, false},
		{"fd00::/126", []policyv1.ExceptCIDR{"fd00::3/128"}, []string{"fd00::/127", "fd00::2/128"}, false},
		{"10.0.0.0/8", []policyv1.ExceptCIDR{"10.0.0.0/33"}, nil, true},
		// Exceptions far apart each split a /0 into ~127 prefixes: over the cap.
		{"::/0", []policyv1.ExceptCIDR{"::1/128", "8000::1/128", "4000::1/128", "2000::1/128", "1000::1/128", "800::1/128", "400::1/128", "200::1/128", "100::1/128"}, nil, true},
	} {
		got, err := subtract(policyv1.Network{CIDR: tc.cidr, Except: tc.except})
		if (err != nil) != tc.wantErr || !equalStrings(got, tc.want) {
			t.Errorf("%s - %v: got %v, %v; want %v (error %v)", tc.cidr, tc.except, got, err, tc.want, tc.wantErr)
		}
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func intOrName(s string) intstr.IntOrString { return intstr.FromString(s) }
