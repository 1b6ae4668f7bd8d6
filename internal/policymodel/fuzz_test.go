package policymodel

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
)

// checkAnswer is what every answer must be, whatever the objects: within
// MaxAnswerBytes, and nothing in it the proxy's check refuses (which would
// freeze the port on its previous answer).
func checkAnswer(t *testing.T, p *apiv1.ServerPolicy) {
	t.Helper()
	if n := proto.Size(p); n > MaxAnswerBytes {
		t.Fatalf("answer is %d bytes, over %d", n, MaxAnswerBytes)
	}
	authz := p.GetAuthorizations()
	for _, r := range p.GetRoutes() {
		authz = append(authz, r.GetAuthorizations()...)
	}
	for _, a := range authz {
		for _, id := range a.GetIdentities() {
			if _, err := identity.Parse(id); id != "*" && err != nil {
				t.Fatalf("authorization %s: identity the proxy refuses: %v", a.GetName(), err)
			}
		}
		for _, n := range a.GetNets() {
			for _, c := range append([]string{n.GetCidr()}, n.GetExcept()...) {
				if _, err := netip.ParsePrefix(c); err != nil {
					t.Fatalf("authorization %s: network the proxy refuses: %v", a.GetName(), err)
				}
			}
		}
		if !a.GetUnauthenticated() && len(a.GetIdentities())+len(a.GetNamespaces()) == 0 {
			t.Fatalf("authorization %s allows nobody", a.GetName())
		}
	}
}

// checkLimits: every override names clients by identities the proxy
// parses.
func checkLimits(t *testing.T, l *apiv1.Limits) {
	for _, o := range l.GetOverrides() {
		for _, id := range o.GetIdentities() {
			if _, err := identity.Parse(id); err != nil {
				t.Fatalf("override identity the proxy cannot parse: %v", err)
			}
		}
	}
}

func FuzzTranslate(f *testing.F) {
	seed, err := os.ReadFile("testdata/policy.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed, uint16(8080))
	f.Add(seed, uint16(7000))
	f.Add(seed, uint16(9090))
	f.Add([]byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: n}\n"), uint16(80))
	f.Fuzz(func(t *testing.T, data []byte, port uint16) {
		set, err := Decode(data)
		if err != nil {
			return
		}
		for _, pod := range set.Pods {
			objs := set.InNamespace(pod.Namespace)
			for _, pods := range [][]*corev1.Pod{{pod}, set.PodsInNamespace(pod.Namespace)} {
				p := Translate(Input{Pods: pods, Port: uint32(port), TrustDomain: "cluster.local", Objects: objs})
				checkAnswer(t, p)
				checkLimits(t, p.GetLimits())
			}
			for _, s := range objs.Servers {
				AcceptServer(s, objs.Servers, set.Pods)
			}
			for _, ap := range objs.Authz {
				AcceptAuthorizationPolicy(ap, objs, "cluster.local")
			}
			for _, rl := range objs.RateLimits {
				AcceptRateLimit(rl, objs.Servers, objs.RateLimits, "cluster.local", nil)
			}
		}
	})
}

// A Server gathering hundreds of policies, each as large as the CRD lets
// it be, still gets an answer the proxy can receive: the last policies by
// name are left out (fail closed), the first kept.
func TestAnswerBounded(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", Labels: map[string]string{"a": "b"}}}
	srv := &policyv1.Server{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "ns"},
		Spec: policyv1.ServerSpec{Port: intstr.FromInt32(80)}}
	in := Input{Pods: []*corev1.Pod{pod}, Port: 80, TrustDomain: "cluster.local"}
	in.Servers = []*policyv1.Server{srv}
	for i := range 200 {
		ap := &policyv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ap-%03d", i), Namespace: "ns"},
			Spec: policyv1.AuthorizationPolicySpec{TargetRef: policyv1.PolicyTargetRef{Kind: "Server", Name: "s"}}}
		for j := range 64 {
			ap.Spec.Identities = append(ap.Spec.Identities, policyv1.Identity(fmt.Sprintf("spiffe://%s/ns/%s/sa/sa-%d", strings.Repeat("d", 63), strings.Repeat("n", 60), j)))
		}
		for j := range 16 {
			n := policyv1.Network{CIDR: fmt.Sprintf("fd00:%x::/32", j)}
			for k := range 16 {
				n.Except = append(n.Except, policyv1.ExceptCIDR(fmt.Sprintf("fd00:%x:%x::/48", j, k)))
			}
			ap.Spec.Networks = append(ap.Spec.Networks, n)
		}
		in.Authz = append(in.Authz, ap)
	}
	p := Translate(in)
	checkAnswer(t, p)
	n := len(p.GetAuthorizations())
	if n == 0 || n == 200 {
		t.Fatalf("%d of 200 authorizations kept, want some but not all", n)
	}
	for i, a := range p.GetAuthorizations() {
		if want := fmt.Sprintf("ap-%03d", i); a.GetName() != want {
			t.Fatalf("authorization %d is %s, want %s (the first by name are kept)", i, a.GetName(), want)
		}
	}
	t.Logf("kept %d of 200 authorizations, %d bytes", n, proto.Size(p))
}
