package check

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

func gatewayObjects(replicas, ready int32, svcType corev1.ServiceType, lbIP string) []runtime.Object {
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: GatewayName, Namespace: k8slabels.ControlPlaneNamespace},
		Spec:       appsv1.DeploymentSpec{Replicas: &replicas},
		Status:     appsv1.DeploymentStatus{ReadyReplicas: ready},
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: GatewayName, Namespace: k8slabels.ControlPlaneNamespace},
		Spec:       corev1.ServiceSpec{Type: svcType, Ports: []corev1.ServicePort{{Name: "gateway", Port: 4180, NodePort: 30418}}},
	}
	if lbIP != "" {
		svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: lbIP}}
	}
	return []runtime.Object{d, svc}
}

func TestGatewayCheck(t *testing.T) {
	for _, tc := range []struct {
		name    string
		objs    []runtime.Object
		want    Status // "": no result
		msg     string
		address string
	}{
		{name: "no gateway"},
		{name: "load balancer with an address", objs: gatewayObjects(2, 2, corev1.ServiceTypeLoadBalancer, "203.0.113.10"),
			want: OK, msg: "2 of 2 gateway replicas ready; address 203.0.113.10:4180", address: "203.0.113.10:4180"},
		{name: "node port", objs: gatewayObjects(1, 1, corev1.ServiceTypeNodePort, ""),
			want: OK, msg: "node port 30418", address: "<node address>:30418"},
		{name: "load balancer pending", objs: gatewayObjects(1, 1, corev1.ServiceTypeLoadBalancer, ""),
			want: Warn, msg: "its load balancer has no address"},
		{name: "some replicas down", objs: gatewayObjects(3, 1, corev1.ServiceTypeNodePort, ""),
			want: Warn, msg: "1 of 3 gateway replicas ready"},
		{name: "none ready", objs: gatewayObjects(1, 0, corev1.ServiceTypeLoadBalancer, "203.0.113.10"),
			want: Fail, msg: "0 of 1 gateway replicas ready"},
		{name: "cluster IP", objs: gatewayObjects(1, 1, corev1.ServiceTypeClusterIP, ""),
			want: Warn, msg: "service type ClusterIP"},
		{name: "Service missing", objs: gatewayObjects(1, 1, corev1.ServiceTypeNodePort, "")[:1],
			want: Fail, msg: "service trellis-gateway"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := healthyCluster().env(t, tc.objs...)
			r := judgeOne(t, e, GatewayCheck, tc.want, tc.msg)
			if r == nil {
				return
			}
			if tc.address != "" {
				if d, ok := r.Data.(GatewayData); !ok || d.Address != tc.address {
					t.Errorf("data %+v, want address %q", r.Data, tc.address)
				}
			}
		})
	}
}
