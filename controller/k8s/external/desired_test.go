package external

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	workloadv1 "github.com/trellis-mesh/trellis/api/workload/v1alpha1"
)

// ew is an ExternalWorkload of namespace shop labelled app=legacy:
// certified or not, at ips, serving ports ("name=port").
func ew(name string, certified bool, ips []string, ports ...string) *workloadv1.ExternalWorkload {
	w := &workloadv1.ExternalWorkload{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", UID: types.UID("uid-" + name), Labels: map[string]string{"app": "legacy"}},
		Spec:       workloadv1.ExternalWorkloadSpec{ServiceAccount: "legacy"},
	}
	for _, ip := range ips {
		w.Spec.Addresses = append(w.Spec.Addresses, workloadv1.WorkloadAddress{IP: ip})
	}
	for _, p := range ports {
		n, v, _ := strings.Cut(p, "=")
		var port int32
		fmt.Sscan(v, &port)
		w.Spec.Ports = append(w.Spec.Ports, workloadv1.WorkloadPort{Name: n, Port: port})
	}
	if certified {
		w.Status.Conditions = []metav1.Condition{{Type: workloadv1.ConditionCertified, Status: metav1.ConditionTrue, Reason: workloadv1.ReasonCertified}}
	} else {
		w.Status.Conditions = []metav1.Condition{{Type: workloadv1.ConditionCertified, Status: metav1.ConditionFalse, Reason: workloadv1.ReasonAwaitingBootstrap}}
	}
	return w
}

func svc(mutate func(*corev1.Service), ports ...corev1.ServicePort) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "legacy", Namespace: "shop", UID: "svc-uid"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "legacy"}, Ports: ports},
	}
	if mutate != nil {
		mutate(s)
	}
	return s
}

func named(name string, port int32, target string) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, TargetPort: intstr.FromString(target)}
}

func numbered(name string, port, target int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, TargetPort: intstr.FromInt32(target)}
}

// describe renders slices as "IPv4 http:8080 | 10.0.0.1 a ready, 10.0.0.2 b -; ...".
func describe(sls []*discoveryv1.EndpointSlice) string {
	var out []string
	for _, sl := range sls {
		var ps, eps []string
		for _, p := range sl.Ports {
			ps = append(ps, fmt.Sprintf("%s:%d", *p.Name, *p.Port))
		}
		for _, ep := range sl.Endpoints {
			c := ep.Conditions
			state := "-"
			switch {
			case *c.Terminating:
				state = fmt.Sprintf("terminating(serving=%v)", *c.Serving)
			case *c.Ready && *c.Serving:
				state = "ready"
			}
			eps = append(eps, ep.Addresses[0]+" "+ep.TargetRef.Name+" "+state)
		}
		out = append(out, fmt.Sprintf("%s %s | %s", sl.AddressType, strings.Join(ps, ","), strings.Join(eps, ", ")))
	}
	return strings.Join(out, "; ")
}

func TestDesired(t *testing.T) {
	http := named("http", 80, "http")
	deleting := ew("d", true, []string{"10.0.0.4"}, "http=8080")
	deleting.DeletionTimestamp = &metav1.Time{}
	other := ew("o", true, []string{"10.0.0.9"}, "http=8080")
	other.Labels = map[string]string{"app": "other"}
	elsewhere := ew("x", true, []string{"10.0.0.8"}, "http=8080")
	elsewhere.Namespace = "other"
	tests := []struct {
		name string
		svc  *corev1.Service
		ews  []*workloadv1.ExternalWorkload
		want string
	}{
		{"no selector: none", svc(func(s *corev1.Service) { s.Spec.Selector = nil }, http),
			[]*workloadv1.ExternalWorkload{ew("a", true, []string{"10.0.0.1"}, "http=8080")}, ""},
		{"ExternalName: none", svc(func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeExternalName }, http),
			[]*workloadv1.ExternalWorkload{ew("a", true, []string{"10.0.0.1"}, "http=8080")}, ""},
		{"nothing selected: none", svc(nil, http), []*workloadv1.ExternalWorkload{other, elsewhere}, ""},
		{"ready once certified; sorted by address", svc(nil, http),
			[]*workloadv1.ExternalWorkload{ew("b", false, []string{"10.0.0.2"}, "http=8080"), ew("a", true, []string{"10.0.0.1"}, "http=8080"), other, elsewhere},
			"IPv4 http:8080 | 10.0.0.1 a ready, 10.0.0.2 b -"},
		{"a slice per family", svc(nil, http),
			[]*workloadv1.ExternalWorkload{ew("a", true, []string{"10.0.0.1", "fd00::1"}, "http=8080")},
			"IPv4 http:8080 | 10.0.0.1 a ready; IPv6 http:8080 | fd00::1 a ready"},
		{"addresses in canonical form; a bad one skipped", svc(nil, http),
			[]*workloadv1.ExternalWorkload{ew("a", true, []string{"::ffff:10.0.0.1", "FD00:0::1", "fe80::1%eth0"}, "http=8080")},
			"IPv4 http:8080 | 10.0.0.1 a ready; IPv6 http:8080 | fd00::1 a ready"},
		{"a name resolved to different numbers: different slices", svc(nil, http),
			[]*workloadv1.ExternalWorkload{ew("a", true, []string{"10.0.0.1"}, "http=8080"), ew("b", true, []string{"10.0.0.2"}, "http=9090")},
			"IPv4 http:8080 | 10.0.0.1 a ready; IPv4 http:9090 | 10.0.0.2 b ready"},
		{"a name the workload lacks: left out", svc(nil, http),
			[]*workloadv1.ExternalWorkload{ew("a", true, []string{"10.0.0.1"}, "web=8080")}, ""},
		{"a number applies without spec.ports", svc(nil, numbered("http", 80, 8080)),
			[]*workloadv1.ExternalWorkload{ew("a", true, []string{"10.0.0.1"})}, "IPv4 http:8080 | 10.0.0.1 a ready"},
		{"no targetPort: the port itself", svc(nil, corev1.ServicePort{Name: "http", Port: 80}),
			[]*workloadv1.ExternalWorkload{ew("a", true, []string{"10.0.0.1"})}, "IPv4 http:80 | 10.0.0.1 a ready"},
		{"two ports, one named the workload lacks: a slice without it", svc(nil, http, numbered("admin", 81, 9901)),
			[]*workloadv1.ExternalWorkload{ew("a", true, []string{"10.0.0.1"}, "http=8080"), ew("b", true, []string{"10.0.0.2"})},
			"IPv4 admin:9901 | 10.0.0.2 b ready; IPv4 http:8080,admin:9901 | 10.0.0.1 a ready"},
		{"UDP ports are not an ExternalWorkload's", svc(nil, corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}),
			[]*workloadv1.ExternalWorkload{ew("a", true, []string{"10.0.0.1"})}, ""},
		{"TCP and UDP: the TCP port", svc(nil, corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}, corev1.ServicePort{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP}),
			[]*workloadv1.ExternalWorkload{ew("a", true, []string{"10.0.0.1"})}, "IPv4 dns-tcp:53 | 10.0.0.1 a ready"},
		{"headless without ports: the addresses", svc(func(s *corev1.Service) { s.Spec.ClusterIP = corev1.ClusterIPNone }),
			[]*workloadv1.ExternalWorkload{ew("a", true, []string{"10.0.0.1"})}, "IPv4  | 10.0.0.1 a ready"},
		{"being deleted: terminating, not ready", svc(nil, http), []*workloadv1.ExternalWorkload{deleting},
			"IPv4 http:8080 | 10.0.0.4 d terminating(serving=true)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := describe(Desired(tt.svc, tt.ews)); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

// TestDesiredSlice: what every slice carries besides its endpoints.
func TestDesiredSlice(t *testing.T) {
	s := svc(nil, corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), AppProtocol: new("http")})
	sls := Desired(s, []*workloadv1.ExternalWorkload{ew("a", true, []string{"10.0.0.1"}, "http=8080")})
	if len(sls) != 1 {
		t.Fatalf("%d slices", len(sls))
	}
	sl := sls[0]
	if sl.Namespace != "shop" || !strings.HasPrefix(sl.Name, "legacy-ew-") || len(sl.Labels) != 2 ||
		sl.Labels[discoveryv1.LabelServiceName] != "legacy" || sl.Labels[discoveryv1.LabelManagedBy] != ManagedBy {
		t.Errorf("metadata %s/%s labels %v", sl.Namespace, sl.Name, sl.Labels)
	}
	if o := sl.OwnerReferences; len(o) != 1 || o[0].Kind != "Service" || o[0].APIVersion != "v1" || o[0].Name != "legacy" || o[0].UID != "svc-uid" ||
		o[0].Controller == nil || !*o[0].Controller || o[0].BlockOwnerDeletion != nil {
		t.Errorf("owner %+v", o)
	}
	if p := sl.Ports[0]; *p.Protocol != corev1.ProtocolTCP || p.AppProtocol == nil || *p.AppProtocol != "http" {
		t.Errorf("port %+v", p)
	}
	ref := sl.Endpoints[0].TargetRef
	if !IsTarget(ref) || ref.Namespace != "shop" || ref.Name != "a" || ref.UID != "uid-a" {
		t.Errorf("targetRef %+v", ref)
	}
	// The same input names the same slice: updates, not replacements.
	if again := Desired(s, []*workloadv1.ExternalWorkload{ew("a", false, []string{"10.0.0.1"}, "http=8080")}); again[0].Name != sl.Name {
		t.Errorf("name %s, then %s", sl.Name, again[0].Name)
	}
}

// TestDesiredBounded: at most MaxEndpointsPerSlice a slice, each with its
// own name.
func TestDesiredBounded(t *testing.T) {
	var ews []*workloadv1.ExternalWorkload
	for i := range 250 {
		ews = append(ews, ew(fmt.Sprintf("w%03d", i), true, []string{fmt.Sprintf("10.0.%d.%d", i/200, i%200+1)}, "http=8080"))
	}
	sls := Desired(svc(nil, named("http", 80, "http")), ews)
	names := map[string]bool{}
	var sizes []int
	for _, sl := range sls {
		names[sl.Name] = true
		sizes = append(sizes, len(sl.Endpoints))
	}
	if fmt.Sprint(sizes) != "[100 100 50]" || len(names) != 3 {
		t.Errorf("sizes %v, %d names", sizes, len(names))
	}
}

func TestIsTarget(t *testing.T) {
	for _, tc := range []struct {
		ref  *corev1.ObjectReference
		want bool
	}{
		{nil, false},
		{&corev1.ObjectReference{Kind: "Pod", Name: "a"}, false},
		{&corev1.ObjectReference{Kind: TargetKind, APIVersion: "workload.trellis.io/v1alpha1"}, true},
		{&corev1.ObjectReference{Kind: TargetKind, APIVersion: "workload.linkerd.io/v1beta1"}, false},
		{&corev1.ObjectReference{Kind: TargetKind}, false},
	} {
		if got := IsTarget(tc.ref); got != tc.want {
			t.Errorf("IsTarget(%+v) = %v", tc.ref, got)
		}
	}
}
