package mirror

import (
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/controller/k8s/epslice"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
	"github.com/trellis-mesh/trellis/internal/mclink"
)

// desiredService is the mirror in this cluster of the peer's Service
// remote: the same ports (the mirror has no selector; its endpoints are
// the mirror slices), a cluster IP of its own.
func desiredService(l mclink.Link, remote *corev1.Service, name string) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: remote.Namespace,
			Labels: map[string]string{
				mclink.LabelLink:               l.Cluster,
				mclink.LabelMirrorOf:           remote.Name,
				"app.kubernetes.io/managed-by": "trellis",
			},
			Annotations: map[string]string{
				mclink.AnnotationRemoteService: remote.Name + "." + remote.Namespace + ".svc." + l.ClusterDomain,
			},
		},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP},
	}
	// Settings the client proxies read from the Service travel with it.
	for _, a := range []string{k8slabels.AnnotationOpaquePorts, k8slabels.AnnotationFailureAccrual, k8slabels.AnnotationSlowStart} {
		if v, ok := remote.Annotations[a]; ok {
			s.Annotations[a] = v
		}
	}
	for _, p := range remote.Spec.Ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			continue
		}
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{
			Name: p.Name, Protocol: corev1.ProtocolTCP, Port: p.Port, AppProtocol: p.AppProtocol,
		})
	}
	return s
}

// serviceDiffers: what the mirror controls differs between have and want
// (the cluster IP and other API-assigned fields are left alone).
func serviceDiffers(have, want *corev1.Service) bool {
	return !maps.Equal(have.Labels, want.Labels) || !maps.Equal(have.Annotations, want.Annotations) ||
		have.Spec.Type != want.Spec.Type || len(have.Spec.Selector) != 0 ||
		!equality.Semantic.DeepEqual(servicePorts(have.Spec.Ports), servicePorts(want.Spec.Ports))
}

// servicePorts drops the API-defaulted TargetPort for the comparison.
func servicePorts(ps []corev1.ServicePort) []corev1.ServicePort {
	out := make([]corev1.ServicePort, len(ps))
	for i, p := range ps {
		p.TargetPort = corev1.ServicePort{}.TargetPort
		p.NodePort = 0
		out[i] = p
	}
	return out
}

// podLookup finds a peer pod by namespace and name.
type podLookup func(ns, name string) *corev1.Pod

// desiredSlices are the mirror slices of the peer's slices of a service:
// its serving endpoints on meshed pods, grouped by the identity they must
// prove (one slice per identity and port set, so the identity can be a
// slice annotation). Endpoints that are not meshed pods are left out, and
// counted in skipped: traffic between clusters is mesh mTLS or nothing.
func desiredSlices(l mclink.Link, mirror string, remote []*discoveryv1.EndpointSlice, pod podLookup) (out []*discoveryv1.EndpointSlice, skipped int) {
	groups := map[string]*discoveryv1.EndpointSlice{}
	for _, sl := range remote {
		if sl.AddressType != discoveryv1.AddressTypeIPv4 && sl.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		for _, ep := range sl.Endpoints {
			if !serving(ep) || len(ep.Addresses) == 0 {
				continue
			}
			id, ok := endpointIdentity(l, sl.Namespace, ep, pod)
			if !ok {
				skipped++
				continue
			}
			key := id.String() + "|" + string(sl.AddressType) + "|" + epslice.PortsKey(sl.Ports)
			g := groups[key]
			if g == nil {
				g = mirrorSlice(l, sl.Namespace, mirror, id, sl.AddressType, sl.Ports, key)
				groups[key] = g
			}
			g.Endpoints = append(g.Endpoints, discoveryv1.Endpoint{
				Addresses:  []string{ep.Addresses[0]},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr(true), Serving: ptr(true), Terminating: ptr(false)},
				Zone:       ep.Zone,
			})
		}
	}
	for _, k := range slices.Sorted(maps.Keys(groups)) {
		g := groups[k]
		sort.Slice(g.Endpoints, func(i, j int) bool { return g.Endpoints[i].Addresses[0] < g.Endpoints[j].Addresses[0] })
		out = append(out, g)
	}
	return out, skipped
}

// viaGateway turns the flat slices of a service into gateway mode: for
// each identity that has a serving endpoint, one slice whose only
// endpoint is the peer's gateway, every service port at the gateway's
// port (the gateway routes on the server name, which names the port).
// None when the peer has no serving meshed endpoint: then the mirror is
// empty and routes fail over, as in flat mode.
func viaGateway(l mclink.Link, flat []*discoveryv1.EndpointSlice, ports []corev1.ServicePort) []*discoveryv1.EndpointSlice {
	gw, err := netip.ParseAddrPort(l.Gateway)
	if err != nil {
		return nil // Validate refused it already
	}
	at := discoveryv1.AddressTypeIPv4
	if gw.Addr().Is6() && !gw.Addr().Is4In6() {
		at = discoveryv1.AddressTypeIPv6
	}
	var eps []discoveryv1.EndpointPort
	for _, p := range ports {
		eps = append(eps, discoveryv1.EndpointPort{Name: ptr(p.Name), Port: ptr(int32(gw.Port())), Protocol: ptr(corev1.ProtocolTCP), AppProtocol: p.AppProtocol})
	}
	byID := map[string]*discoveryv1.EndpointSlice{}
	for _, sl := range flat {
		id := sl.Annotations[mclink.AnnotationRemoteIdentity]
		if byID[id] != nil || len(sl.Endpoints) == 0 {
			continue
		}
		g := sl.DeepCopy()
		g.Name = sl.Labels[discoveryv1.LabelServiceName] + "-gw-" + sl.Name[strings.LastIndex(sl.Name, "-")+1:]
		g.Labels[mclink.LabelViaGateway] = "true"
		g.AddressType, g.Ports = at, eps
		g.Endpoints = []discoveryv1.Endpoint{{
			Addresses:  []string{gw.Addr().Unmap().String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(true), Serving: ptr(true), Terminating: ptr(false)},
		}}
		byID[id] = g
	}
	var out []*discoveryv1.EndpointSlice
	for _, k := range slices.Sorted(maps.Keys(byID)) {
		out = append(out, byID[k])
	}
	return out
}

func mirrorSlice(l mclink.Link, ns, mirror string, id identity.ID, at discoveryv1.AddressType, ports []discoveryv1.EndpointPort, key string) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:      epslice.Name(mirror, key),
			Namespace: ns,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: mirror,
				discoveryv1.LabelManagedBy:   mclink.ManagedBy,
				mclink.LabelLink:             l.Cluster,
			},
			Annotations: map[string]string{mclink.AnnotationRemoteIdentity: id.String()},
		},
		AddressType: at,
		Ports:       slices.Clone(ports),
	}
}

// endpointIdentity: the mesh identity of a peer endpoint, from its pod's
// ServiceAccount in the link's trust domain; false unless the endpoint is
// a meshed pod.
func endpointIdentity(l mclink.Link, sliceNS string, ep discoveryv1.Endpoint, pod podLookup) (identity.ID, bool) {
	ref := ep.TargetRef
	if ref == nil || ref.Kind != "Pod" {
		return identity.ID{}, false
	}
	ns := ref.Namespace
	if ns == "" {
		ns = sliceNS
	}
	p := pod(ns, ref.Name)
	// The address must be the pod's own: the peer writes its slices, and
	// a slice pointing a meshed pod's identity at any other address would
	// send this cluster's clients there.
	if p == nil || !meshed(p) || !slices.ContainsFunc(p.Status.PodIPs, func(ip corev1.PodIP) bool { return ip.IP == ep.Addresses[0] }) {
		return identity.ID{}, false
	}
	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	id, err := identity.New(l.TrustDomain, p.Namespace, sa)
	return id, err == nil
}

// meshed: the injector's label (the peer's pods are watched by it) and
// annotation.
func meshed(p *corev1.Pod) bool {
	_, ok := p.Annotations[k8slabels.AnnotationProxyVersion]
	return ok && p.Labels[k8slabels.LabelProxied] == "true"
}

// serving: ready (nil means ready, per the API) and not terminating.
func serving(ep discoveryv1.Endpoint) bool {
	c := ep.Conditions
	return (c.Ready == nil || *c.Ready) && (c.Terminating == nil || !*c.Terminating)
}

func ptr[T any](v T) *T { return &v }
