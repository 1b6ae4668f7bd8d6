package check

import (
	"context"
	"net"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// GatewayName is the multicluster gateway's Deployment and Service
// (charts/trellis/templates/gateway.yaml).
const GatewayName = "trellis-gateway"

// GatewayData is the multicluster-gateway check's Result.Data.
type GatewayData struct {
	Replicas      int32  `json:"replicas"`
	ReadyReplicas int32  `json:"readyReplicas"`
	ServiceType   string `json:"serviceType"`
	// Address is what to give `trellis multicluster link
	// --gateway-address`: the load balancer's ip:port; for a NodePort,
	// "<node address>:<node port>"; "" while a load balancer has none.
	Address string `json:"address,omitempty"`
}

// GatewayCheck: this cluster's multicluster gateway (when installed) has
// its replicas ready and an address linked clusters can reach. A cluster
// without a gateway gets no result.
var GatewayCheck = Check{
	Group: "multicluster", Name: "this cluster's multicluster gateway is ready", Anchor: "multicluster-gateway",
	Run: func(ctx context.Context, e *Env) Outcome {
		d, err := e.Kube.AppsV1().Deployments(e.ns()).Get(ctx, GatewayName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return absent()
		}
		if err != nil {
			return fail("check that trellis check may get deployments in "+e.ns(), "%v", err)
		}
		svc, err := e.Kube.CoreV1().Services(e.ns()).Get(ctx, GatewayName, metav1.GetOptions{})
		if err != nil {
			return fail("trellis install --multicluster-gateway again: the gateway's Service is part of it ("+multiclusterDoc+")", "service %s: %v", GatewayName, err)
		}
		return gatewayOutcome(e.ns(), d, svc)
	},
}

func gatewayOutcome(ns string, d *appsv1.Deployment, svc *corev1.Service) Outcome {
	data := GatewayData{ReadyReplicas: d.Status.ReadyReplicas, Replicas: 1, ServiceType: string(svc.Spec.Type)}
	if d.Spec.Replicas != nil {
		data.Replicas = *d.Spec.Replicas
	}
	var where string
	if len(svc.Spec.Ports) > 0 {
		p := svc.Spec.Ports[0]
		switch svc.Spec.Type {
		case corev1.ServiceTypeLoadBalancer:
			for _, in := range svc.Status.LoadBalancer.Ingress {
				host := in.IP
				if host == "" {
					host = in.Hostname
				}
				if host != "" {
					data.Address = net.JoinHostPort(host, strconv.Itoa(int(p.Port)))
					break
				}
			}
			where = "address " + data.Address
		case corev1.ServiceTypeNodePort:
			data.Address = "<node address>:" + strconv.Itoa(int(p.NodePort))
			where = "node port " + strconv.Itoa(int(p.NodePort)) + " (link with a node's address: --gateway-address <node address>:" + strconv.Itoa(int(p.NodePort)) + ")"
		default:
			where = "service type " + string(svc.Spec.Type)
		}
	}
	var o Outcome
	switch {
	case data.ReadyReplicas == 0:
		o = fail("kubectl -n "+ns+" describe deployment "+GatewayName+" (and its pods' logs)",
			"0 of %d gateway replicas ready: linked clusters reach none of this cluster's exported services", data.Replicas)
	case svc.Spec.Type == corev1.ServiceTypeLoadBalancer && data.Address == "":
		o = warn("the load balancer has no address yet (kubectl -n "+ns+" get service "+GatewayName+"); without one, use multicluster.gateway.serviceType=NodePort ("+multiclusterDoc+")",
			"%d of %d gateway replicas ready, but its load balancer has no address", data.ReadyReplicas, data.Replicas)
	case svc.Spec.Type != corev1.ServiceTypeLoadBalancer && svc.Spec.Type != corev1.ServiceTypeNodePort:
		o = warn("linked clusters cannot reach a "+string(svc.Spec.Type)+" Service: set multicluster.gateway.serviceType to LoadBalancer or NodePort ("+multiclusterDoc+")",
			"%d of %d gateway replicas ready; %s", data.ReadyReplicas, data.Replicas, where)
	case data.ReadyReplicas < data.Replicas:
		o = warn("kubectl -n "+ns+" describe deployment "+GatewayName,
			"%d of %d gateway replicas ready; %s", data.ReadyReplicas, data.Replicas, where)
	default:
		o = ok("%d of %d gateway replicas ready; %s", data.ReadyReplicas, data.Replicas, where)
	}
	o.Data = data
	return o
}
