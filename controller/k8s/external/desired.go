package external

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"

	workloadv1 "github.com/trellis-mesh/trellis/api/workload/v1alpha1"
	"github.com/trellis-mesh/trellis/controller/k8s/epslice"
	"github.com/trellis-mesh/trellis/controller/k8s/informers"
)

// What the slices of this package carry, and the destination source
// (controller/k8s/endpoints) reads.
const (
	// ManagedBy is the endpointslice.kubernetes.io/managed-by value of
	// the slices this package writes; the EndpointSlice controller and
	// every other manager leave them alone, and they leave theirs.
	ManagedBy = "external-workloads.trellis.io"
	// TargetKind is the targetRef kind of an ExternalWorkload's endpoint.
	TargetKind = "ExternalWorkload"
	// MaxEndpointsPerSlice bounds a slice, as the EndpointSlice
	// controller's default (--max-endpoints-per-slice): a workload's
	// change rewrites one slice of at most 100 endpoints.
	MaxEndpointsPerSlice = 100
)

// Certified reports whether the workload's proxy holds a certificate (the
// identity service's Certified condition): only then is it ready.
func Certified(ew *workloadv1.ExternalWorkload) bool {
	return meta.IsStatusConditionTrue(ew.Status.Conditions, workloadv1.ConditionCertified)
}

// Owns reports whether ip (an informers.IPKey) is one of the workload's
// addresses.
func Owns(ew *workloadv1.ExternalWorkload, ip string) bool {
	return slices.ContainsFunc(ew.Spec.Addresses, func(a workloadv1.WorkloadAddress) bool {
		k, ok := informers.IPKey(a.IP)
		return ok && k == ip
	})
}

// IsTarget reports whether ref names an ExternalWorkload of this API
// group (another mesh's kind of the same name is not one).
func IsTarget(ref *corev1.ObjectReference) bool {
	if ref == nil || ref.Kind != TargetKind {
		return false
	}
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	return err == nil && gv.Group == workloadv1.GroupName
}

// Desired is the set of slices svc should have for ews (the
// ExternalWorkloads of its namespace; those its selector does not match
// are skipped): one slice per address family and resolved port list, at
// most MaxEndpointsPerSlice endpoints each, sorted by address, owned by
// the Service. None for a Service without a selector or of type
// ExternalName.
func Desired(svc *corev1.Service, ews []*workloadv1.ExternalWorkload) []*discoveryv1.EndpointSlice {
	if len(svc.Spec.Selector) == 0 || svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	tcp := tcpPorts(svc)
	if len(tcp) == 0 && len(svc.Spec.Ports) > 0 {
		return nil // only other protocols: an ExternalWorkload serves TCP
	}
	groups := map[string]*discoveryv1.EndpointSlice{}
	for _, ew := range ews {
		if ew.Namespace != svc.Namespace || !sel.Matches(labels.Set(ew.Labels)) {
			continue
		}
		ports := resolvePorts(tcp, ew.Spec.Ports)
		if len(ports) == 0 && len(tcp) > 0 {
			continue // it serves none of the Service's ports
		}
		for _, a := range ew.Spec.Addresses {
			ip, at, ok := address(a.IP)
			if !ok {
				continue
			}
			key := string(at) + "|" + epslice.PortsKey(ports)
			g := groups[key]
			if g == nil {
				g = &discoveryv1.EndpointSlice{AddressType: at, Ports: ports}
				groups[key] = g
			}
			g.Endpoints = append(g.Endpoints, endpoint(ew, ip))
		}
	}
	var out []*discoveryv1.EndpointSlice
	for _, key := range slices.Sorted(maps.Keys(groups)) {
		out = append(out, chunks(svc, key, groups[key])...)
	}
	return out
}

// chunks cuts a group into slices of at most MaxEndpointsPerSlice,
// named from the group's key and the chunk's index.
func chunks(svc *corev1.Service, key string, g *discoveryv1.EndpointSlice) []*discoveryv1.EndpointSlice {
	slices.SortFunc(g.Endpoints, func(a, b discoveryv1.Endpoint) int {
		return cmp.Or(cmp.Compare(a.Addresses[0], b.Addresses[0]), cmp.Compare(a.TargetRef.Name, b.TargetRef.Name))
	})
	var out []*discoveryv1.EndpointSlice
	for i := 0; i < len(g.Endpoints); i += MaxEndpointsPerSlice {
		name := key
		if i > 0 {
			name += "#" + strconv.Itoa(i/MaxEndpointsPerSlice)
		}
		out = append(out, &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{
				Name:      epslice.Name(svc.Name+"-ew", name),
				Namespace: svc.Namespace,
				Labels:    map[string]string{discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: ManagedBy},
				// Deleting the Service deletes its slices (the garbage
				// collector); no blockOwnerDeletion, which would need
				// the right to update the Service's finalizers.
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID, Controller: new(true)}},
			},
			AddressType: g.AddressType,
			Ports:       g.Ports,
			Endpoints:   g.Endpoints[i:min(i+MaxEndpointsPerSlice, len(g.Endpoints))],
		})
	}
	return out
}

// endpoint is a workload's address: ready and serving once certified,
// terminating while the workload is being deleted.
func endpoint(ew *workloadv1.ExternalWorkload, ip string) discoveryv1.Endpoint {
	certified, deleting := Certified(ew), ew.DeletionTimestamp != nil
	return discoveryv1.Endpoint{
		Addresses:  []string{ip},
		Conditions: discoveryv1.EndpointConditions{Ready: new(certified && !deleting), Serving: new(certified), Terminating: new(deleting)},
		TargetRef: &corev1.ObjectReference{
			APIVersion: workloadv1.SchemeGroupVersion.String(), Kind: TargetKind,
			Namespace: ew.Namespace, Name: ew.Name, UID: ew.UID,
		},
	}
}

// address is an address in its canonical form and its slice's family.
func address(s string) (string, discoveryv1.AddressType, bool) {
	ip, err := netip.ParseAddr(s)
	if err != nil || ip.Zone() != "" {
		return "", "", false
	}
	if ip = ip.Unmap(); ip.Is4() {
		return ip.String(), discoveryv1.AddressTypeIPv4, true
	}
	return ip.String(), discoveryv1.AddressTypeIPv6, true
}

func tcpPorts(svc *corev1.Service) []corev1.ServicePort {
	var out []corev1.ServicePort
	for _, p := range svc.Spec.Ports {
		if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
			out = append(out, p)
		}
	}
	return out
}

// resolvePorts are the Service's ports as a workload serves them: a named
// targetPort is the workload's port of that name (a port it does not name
// is left out), a numeric one applies as it is, none is the port itself.
func resolvePorts(svcPorts []corev1.ServicePort, ewPorts []workloadv1.WorkloadPort) []discoveryv1.EndpointPort {
	var out []discoveryv1.EndpointPort
	for _, sp := range svcPorts {
		n := sp.Port
		switch tp := sp.TargetPort; {
		case tp.Type == intstr.String:
			i := slices.IndexFunc(ewPorts, func(p workloadv1.WorkloadPort) bool { return p.Name == tp.StrVal })
			if i < 0 {
				continue
			}
			n = ewPorts[i].Port
		case tp.IntVal != 0:
			n = tp.IntVal
		}
		out = append(out, discoveryv1.EndpointPort{
			Name: new(sp.Name), Port: new(n), Protocol: new(corev1.ProtocolTCP), AppProtocol: clonePtr(sp.AppProtocol),
		})
	}
	return out
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	return new(*p)
}
