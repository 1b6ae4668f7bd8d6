package endpoints

import (
	"net/netip"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	workloadv1 "github.com/trellis-mesh/trellis/api/workload/v1alpha1"
	"github.com/trellis-mesh/trellis/controller/authority"
	"github.com/trellis-mesh/trellis/controller/destination"
	"github.com/trellis-mesh/trellis/controller/k8s/external"
	"github.com/trellis-mesh/trellis/controller/k8s/informers"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
	"github.com/trellis-mesh/trellis/internal/mclink"
)

// Resolve implements destination.Source. The topic is acquired before the
// cache is read: informers update their store before calling handlers, so
// any change after the read closes the returned channel. The answer is
// shared by every stream asking the same question (see answers): callers
// must not modify it.
func (s *Source) Resolve(a authority.Authority, callerNamespace string) (destination.Resolution, <-chan struct{}, func()) {
	if a.Host == "" {
		ip := a.IP.Unmap().String()
		return s.answers.get(s.n, ipKey(ip), "", a.Port, func() destination.Resolution { return s.resolveIP(ip, a.Port) })
	}
	hostname, name, ns, ok := s.splitHost(a.Host, callerNamespace)
	if !ok {
		// A name that can never resolve here (a bare name from an unknown
		// namespace, or another cluster domain): only a broad change wakes
		// it.
		ch, release := s.n.Acquire("")
		return unknown(), ch, release
	}
	return s.answers.get(s.n, svcKey(ns, name), hostname, a.Port, func() destination.Resolution {
		return s.resolveService(s.cache.Service(ns, name), hostname, a.Port)
	})
}

func unknown() destination.Resolution {
	return destination.Resolution{Endpoints: destination.Endpoints{Addrs: map[string]*apiv1.WeightedAddr{}, Labels: map[string]string{}}}
}

// splitHost accepts name (in the caller's namespace), name.ns, name.ns.svc,
// name.ns.svc.<cluster domain>, and a headless service's pod form
// host.name.ns.svc.<cluster domain>.
func (s *Source) splitHost(host, callerNamespace string) (hostname, name, ns string, ok bool) {
	parts := strings.Split(host, ".")
	switch {
	case len(parts) == 1:
		if callerNamespace == "" {
			return "", "", "", false
		}
		return "", parts[0], callerNamespace, true
	case len(parts) == 2:
		return "", parts[0], parts[1], true
	case len(parts) == 3 && parts[2] == "svc":
		return "", parts[0], parts[1], true
	case len(parts) > 3 && parts[2] == "svc" && strings.Join(parts[3:], ".") == s.clusterDomain:
		return "", parts[0], parts[1], true
	case len(parts) > 4 && parts[3] == "svc" && strings.Join(parts[4:], ".") == s.clusterDomain:
		return parts[0], parts[1], parts[2], true
	}
	return "", "", "", false
}

// servicePort finds the TCP port of a Service with a given number.
func servicePort(svc *corev1.Service, port uint32) (corev1.ServicePort, bool) {
	for _, p := range svc.Spec.Ports {
		if uint32(p.Port) == port && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) {
			return p, true
		}
	}
	return corev1.ServicePort{}, false
}

// resolveService computes a service port's endpoints: ready, not
// terminating endpoints of its EndpointSlices, each at podIP:targetPort.
// hostname, when set, keeps only the endpoint with that hostname (a
// headless service's pod DNS name).
func (s *Source) resolveService(svc *corev1.Service, hostname string, port uint32) destination.Resolution {
	r := unknown()
	if svc == nil || svc.Spec.Type == corev1.ServiceTypeExternalName {
		// ExternalName is DNS only: the proxy forwards as addressed.
		return r
	}
	sp, ok := servicePort(svc, port)
	if !ok {
		return r
	}
	r.Service = svc.Name + "." + svc.Namespace + ".svc." + s.clusterDomain + ":" + strconv.FormatUint(uint64(port), 10)
	r.Exported = mclink.Exported(svc) && svc.Labels[mclink.LabelLink] == ""
	e := &r.Endpoints
	e.Exists = true
	e.Labels["service"] = svc.Name
	e.Labels["namespace"] = svc.Namespace
	e.Balancer = balancerConfig(svc)
	svcOpaque, _ := ParsePortSet(svc.Annotations[k8slabels.AnnotationOpaquePorts])
	for _, sl := range s.cache.SlicesOf(svc.Namespace, svc.Name) {
		if sl.AddressType != discoveryv1.AddressTypeIPv4 && sl.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		target, appProtocol, ok := slicePort(sl, sp.Name)
		if !ok {
			continue
		}
		hint := protocolHint(appProtocol)
		if svcOpaque.Contains(port) {
			hint = apiv1.ProtocolHint_OPAQUE
		}
		for i := range sl.Endpoints {
			ep := &sl.Endpoints[i]
			if !serving(ep) || len(ep.Addresses) == 0 {
				continue
			}
			if hostname != "" && (ep.Hostname == nil || *ep.Hostname != hostname) {
				continue
			}
			ip, ok := informers.IPKey(ep.Addresses[0])
			if !ok {
				continue
			}
			if wa, ok := s.sliceEndpoint(svc, sl, ep, ip, target, port, hint); ok {
				e.Addrs[addrKey(ip, target)] = wa
			}
		}
	}
	return r
}

// sliceEndpoint answers one serving endpoint of a service's slice at
// ip:target, or false when it must be left out.
func (s *Source) sliceEndpoint(svc *corev1.Service, sl *discoveryv1.EndpointSlice, ep *discoveryv1.Endpoint, ip string, target, port uint32, hint apiv1.ProtocolHint_Protocol) (*apiv1.WeightedAddr, bool) {
	zone := ""
	if ep.Zone != nil {
		zone = *ep.Zone
	}
	if sl.Labels[discoveryv1.LabelManagedBy] == external.ManagedBy {
		return s.externalAddr(sl, ep, ip, target, zone, hint)
	}
	var pod *corev1.Pod
	if ref := ep.TargetRef; ref != nil && ref.Kind == "Pod" {
		ns := ref.Namespace
		if ns == "" {
			ns = sl.Namespace
		}
		if pod = s.cache.Pod(ns, ref.Name); pod == nil {
			// The pod informer has not caught up: leave the endpoint
			// out rather than risk sending a meshed pod plain text.
			return nil, false
		}
	}
	if podOpaque(pod, target) {
		hint = apiv1.ProtocolHint_OPAQUE
	}
	nodeName := ""
	if ep.NodeName != nil {
		nodeName = *ep.NodeName
	}
	wa := s.weightedAddr(ip, target, pod, nodeName, zone, hint)
	if pod == nil && sl.Labels[discoveryv1.LabelManagedBy] == mclink.ManagedBy {
		return mirrorIdentity(svc, sl, wa, port)
	}
	return wa, true
}

// mirrorIdentity: an endpoint of a mirror of another cluster's service
// proves the identity the mirror controller read there, and without a
// valid one gets nothing (never plain text between clusters). Only on a
// mirror Service: a mirror slice naming another Service is not the mirror
// controller's.
func mirrorIdentity(svc *corev1.Service, sl *discoveryv1.EndpointSlice, wa *apiv1.WeightedAddr, port uint32) (*apiv1.WeightedAddr, bool) {
	id, ok := mclink.RemoteIdentity(sl.Labels[discoveryv1.LabelManagedBy], sl.Annotations)
	if !ok || svc.Labels[mclink.LabelLink] == "" {
		return nil, false
	}
	wa.TlsIdentity = &apiv1.TlsIdentity{SpiffeId: id.String(), ServerName: id.ServerName()}
	if sl.Labels[mclink.LabelViaGateway] == "true" {
		// The peer's gateway routes on the server name.
		sn, ok := mclink.GatewayServerName(port, svc.Annotations[mclink.AnnotationRemoteService])
		if !ok {
			return nil, false
		}
		wa.TlsIdentity.ServerName = sn
	}
	return wa, true
}

// externalAddr: an endpoint of the external workloads controller's slice
// is its ExternalWorkload (in the slice's namespace), answered with the
// workload's identity only when the address is the workload's own and the
// workload is certified; otherwise it is left out: never plain text to a
// workload that should have a proxy, never an identity for an address the
// workload does not list.
func (s *Source) externalAddr(sl *discoveryv1.EndpointSlice, ep *discoveryv1.Endpoint, ip string, target uint32, zone string, hint apiv1.ProtocolHint_Protocol) (*apiv1.WeightedAddr, bool) {
	ref := ep.TargetRef
	if !external.IsTarget(ref) || ref.Namespace != "" && ref.Namespace != sl.Namespace {
		return nil, false
	}
	ew := s.cache.ExternalWorkload(sl.Namespace, ref.Name)
	if ew == nil || !external.Owns(ew, ip) {
		return nil, false
	}
	return s.workloadAddr(ew, ip, target, zone, hint)
}

// workloadAddr is an ExternalWorkload at ip:port with its identity, or
// false unless it is certified.
func (s *Source) workloadAddr(ew *workloadv1.ExternalWorkload, ip string, port uint32, zone string, hint apiv1.ProtocolHint_Protocol) (*apiv1.WeightedAddr, bool) {
	id, err := identity.New(s.trustDomain, ew.Namespace, ew.Spec.ServiceAccount)
	if err != nil || !external.Certified(ew) || ew.DeletionTimestamp != nil {
		return nil, false
	}
	wa := s.weightedAddr(ip, port, nil, "", zone, hint)
	wa.MetricLabels = map[string]string{"externalworkload": ew.Name, "namespace": ew.Namespace, "serviceaccount": ew.Spec.ServiceAccount}
	wa.TlsIdentity = &apiv1.TlsIdentity{SpiffeId: id.String(), ServerName: id.ServerName()}
	return wa, true
}

// resolveExternalIP answers for an address no pod has: a certified
// ExternalWorkload's, with its identity. A workload that is not certified
// (anyone who may create one can name any address) changes nothing: the
// address stays unknown. Two certified claims give no endpoint.
func (s *Source) resolveExternalIP(ip string, port uint32) destination.Resolution {
	r := unknown()
	var certified []*workloadv1.ExternalWorkload
	for _, ew := range s.cache.ExternalWorkloadsByIP(ip) {
		if external.Certified(ew) && ew.DeletionTimestamp == nil {
			certified = append(certified, ew)
		}
	}
	if len(certified) == 0 {
		return r
	}
	r.Endpoints.Exists = true
	if len(certified) > 1 {
		return r
	}
	r.Endpoints.Labels["namespace"] = certified[0].Namespace
	if wa, ok := s.workloadAddr(certified[0], ip, port, "", s.hintFromServices(ip, port)); ok {
		r.Endpoints.Addrs[addrKey(ip, port)] = wa
	}
	return r
}

// serving: ready (nil means ready, per the API) and not terminating.
func serving(ep *discoveryv1.Endpoint) bool {
	c := ep.Conditions
	return (c.Ready == nil || *c.Ready) && (c.Terminating == nil || !*c.Terminating)
}

// slicePort finds the slice port backing the service port named name.
func slicePort(sl *discoveryv1.EndpointSlice, name string) (port uint32, appProtocol string, ok bool) {
	for _, p := range sl.Ports {
		pn := ""
		if p.Name != nil {
			pn = *p.Name
		}
		if pn != name || p.Port == nil || *p.Port <= 0 || *p.Port > 65535 {
			continue
		}
		if p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
			continue
		}
		if p.AppProtocol != nil {
			appProtocol = *p.AppProtocol
		}
		return uint32(*p.Port), appProtocol, true
	}
	return 0, "", false
}

func addrKey(ip string, port uint32) string {
	return netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(port)).String()
}

// balancerConfig is the Service's balancer annotations, passed to the
// client proxies verbatim (they parse them); nil without any.
func balancerConfig(svc *corev1.Service) *apiv1.BalancerConfig {
	fa, ss := svc.Annotations[k8slabels.AnnotationFailureAccrual], svc.Annotations[k8slabels.AnnotationSlowStart]
	if fa == "" && ss == "" {
		return nil
	}
	return &apiv1.BalancerConfig{FailureAccrual: clip(fa), SlowStart: clip(ss)}
}

// clip bounds an annotation sent to every client proxy: one longer than
// any valid value stays too long, so the proxies refuse it.
func clip(s string) string { return s[:min(len(s), maxBalancerAnnotation)] }

const maxBalancerAnnotation = 257

// resolveIP answers for ip:port: a Service's cluster IP, else a pod, else
// an ExternalWorkload.
func (s *Source) resolveIP(ip string, port uint32) destination.Resolution {
	if svcs := s.cache.ServicesByClusterIP(ip); len(svcs) > 0 {
		// Two services share a cluster IP only for an instant around a
		// delete and re-create; pick the newest.
		sort.Slice(svcs, func(i, j int) bool {
			return svcs[j].CreationTimestamp.Before(&svcs[i].CreationTimestamp)
		})
		return s.resolveService(svcs[0], "", port)
	}
	pod := pickPod(s.cache.PodsByIP(ip))
	if pod == nil {
		return s.resolveExternalIP(ip, port)
	}
	r := unknown()
	e := &r.Endpoints
	e.Exists = true
	e.Labels["namespace"] = pod.Namespace
	hint := apiv1.ProtocolHint_UNKNOWN
	if podOpaque(pod, port) {
		hint = apiv1.ProtocolHint_OPAQUE
	} else {
		hint = s.hintFromServices(ip, port)
	}
	e.Addrs[addrKey(ip, port)] = s.weightedAddr(ip, port, pod, pod.Spec.NodeName, "", hint)
	return r
}

// hintFromServices finds a protocol hint for a pod's port from the
// services it backs: the slice port's appProtocol, or the service's
// opaque-ports annotation naming the service port.
func (s *Source) hintFromServices(ip string, port uint32) apiv1.ProtocolHint_Protocol {
	for _, sl := range s.cache.SlicesWithIP(ip) {
		for _, p := range sl.Ports {
			if p.Port == nil || uint32(*p.Port) != port {
				continue
			}
			if svc := s.cache.Service(sl.Namespace, sl.Labels[discoveryv1.LabelServiceName]); svc != nil {
				opaque, _ := ParsePortSet(svc.Annotations[k8slabels.AnnotationOpaquePorts])
				for _, sp := range svc.Spec.Ports {
					if (p.Name == nil && sp.Name == "" || p.Name != nil && *p.Name == sp.Name) && opaque.Contains(uint32(sp.Port)) {
						return apiv1.ProtocolHint_OPAQUE
					}
				}
			}
			if p.AppProtocol != nil {
				if h := protocolHint(*p.AppProtocol); h != apiv1.ProtocolHint_UNKNOWN {
					return h
				}
			}
		}
	}
	return apiv1.ProtocolHint_UNKNOWN
}

// pickPod chooses among pods sharing an IP: one not being deleted, then
// the newest.
func pickPod(pods []*corev1.Pod) *corev1.Pod {
	var best *corev1.Pod
	for _, p := range pods {
		switch {
		case best == nil:
			best = p
		case (best.DeletionTimestamp != nil) != (p.DeletionTimestamp != nil):
			if p.DeletionTimestamp == nil {
				best = p
			}
		case best.CreationTimestamp.Before(&p.CreationTimestamp):
			best = p
		}
	}
	return best
}

func podOpaque(pod *corev1.Pod, port uint32) bool {
	if pod == nil {
		return false
	}
	v, ok := pod.Annotations[k8slabels.AnnotationOpaquePorts]
	if !ok {
		return false
	}
	ps, _ := ParsePortSet(v)
	return ps.Contains(port)
}

// protocolHint maps a Service port's appProtocol to a hint. Unknown values
// (including https and TLS, which the proxy detects) mean detect.
func protocolHint(appProtocol string) apiv1.ProtocolHint_Protocol {
	switch strings.ToLower(appProtocol) {
	case "http", "http1", "kubernetes.io/http":
		return apiv1.ProtocolHint_HTTP1
	case "kubernetes.io/h2c", "h2c", "http2":
		return apiv1.ProtocolHint_HTTP2
	case "grpc":
		return apiv1.ProtocolHint_GRPC
	case "opaque", "tcp", k8slabels.AppProtocolOpaque:
		return apiv1.ProtocolHint_OPAQUE
	}
	return apiv1.ProtocolHint_UNKNOWN
}

// skipsInbound: the pod's redirection leaves port alone (the injector's
// skip-inbound-ports annotation, as trellis-init and the CNI plugin read
// it). An unreadable list counts as skipping: the proxy may not be there.
func skipsInbound(pod *corev1.Pod, port uint32) bool {
	v, ok := pod.Annotations[k8slabels.AnnotationSkipInboundPorts]
	if !ok {
		return false
	}
	ps, err := ParsePortSet(v)
	return err != nil || ps.Contains(port)
}

// isMeshed: the injector's annotation or a proxy container.
func isMeshed(pod *corev1.Pod) bool {
	if _, ok := pod.Annotations[k8slabels.AnnotationProxyVersion]; ok {
		return true
	}
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			if c.Name == k8slabels.ProxyContainerName {
				return true
			}
		}
	}
	return false
}

func (s *Source) weightedAddr(ip string, port uint32, pod *corev1.Pod, nodeName, zone string, hint apiv1.ProtocolHint_Protocol) *apiv1.WeightedAddr {
	wa := &apiv1.WeightedAddr{
		Addr:         &apiv1.TcpAddress{Ip: ip, Port: port},
		Weight:       1,
		MetricLabels: map[string]string{},
		ProtocolHint: &apiv1.ProtocolHint{Protocol: hint},
	}
	if pod != nil {
		if nodeName == "" {
			nodeName = pod.Spec.NodeName
		}
		sa := pod.Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		wa.MetricLabels["pod"] = pod.Name
		wa.MetricLabels["namespace"] = pod.Namespace
		wa.MetricLabels["serviceaccount"] = sa
		ownerLabels(pod, wa.MetricLabels)
		if isMeshed(pod) && !skipsInbound(pod, port) {
			// A port the pod's redirection skips reaches the app itself,
			// which does not speak mesh TLS: it is called in plain text
			// like an unmeshed pod (and never offered to a multicluster
			// gateway, which would pass a stranger's bytes straight to
			// the app). A service account name that is not a DNS label cannot be a
			// mesh identity; such a pod's proxy cannot get a certificate
			// either, so it is reached in plain text.
			if id, err := identity.New(s.trustDomain, pod.Namespace, sa); err == nil {
				wa.TlsIdentity = &apiv1.TlsIdentity{SpiffeId: id.String(), ServerName: id.ServerName()}
			}
		}
	}
	if nodeName != "" {
		if n := s.cache.Node(nodeName); n != nil && n.Labels[ZoneLabel] != "" {
			zone = n.Labels[ZoneLabel]
		}
	}
	wa.Zone = zone
	return wa
}

// ownerLabels names the pod's controller: "deployment" for a ReplicaSet
// made by one (the pod-template-hash suffix removed), else the owner's
// kind in lower case.
func ownerLabels(pod *corev1.Pod, labels map[string]string) {
	for _, o := range pod.OwnerReferences {
		if o.Controller == nil || !*o.Controller {
			continue
		}
		kind := strings.ToLower(o.Kind)
		labels[kind] = o.Name
		if h := pod.Labels["pod-template-hash"]; kind == "replicaset" && h != "" && strings.HasSuffix(o.Name, "-"+h) {
			labels["deployment"] = strings.TrimSuffix(o.Name, "-"+h)
		}
		return
	}
}
