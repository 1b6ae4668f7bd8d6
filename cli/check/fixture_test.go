package check

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	admv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes/fake"
	metafake "k8s.io/client-go/metadata/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/trellis-mesh/trellis/internal/k8slabels"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// t0 is the fixed "now" of the fixtures.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const (
	ctrlVersion = "v1.2.3"
	webhookTLS  = "trellis-webhook-tls"
	appNS       = "shop"
)

// pkiSet is the certificates of a healthy installation; tests replace some.
type pkiSet struct {
	anchor, issuer     *x509.Certificate
	webhookCA, serving *x509.Certificate
}

func newPKI(t *testing.T, anchorLife, issuerLife time.Duration) pkiSet {
	t.Helper()
	anchor, anchorKey, err := pki.NewRoot("trellis-anchor", anchorLife, t0)
	if err != nil {
		t.Fatal(err)
	}
	is, err := pki.NewIssuer(anchor, anchorKey, "trellis-issuer", issuerLife, t0)
	if err != nil {
		t.Fatal(err)
	}
	wca, wkey, err := pki.NewRoot("trellis-webhook-ca", 365*24*time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	return pkiSet{anchor: anchor, issuer: is.Cert, webhookCA: wca, serving: servingCert(t, wca, wkey, "trellis-controller.trellis-system.svc")}
}

func servingCert(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, dns string) *x509.Certificate {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: dns}, DNSNames: []string{dns},
		NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(300 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pemOf(cs ...*x509.Certificate) []byte { return pki.EncodeCertsPEM(cs...) }

func managed() map[string]string { return map[string]string{ManagedByLabel: ManagedByValue} }

func readyPod(ns, name string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
}

func meshedPod(name string) *corev1.Pod {
	p := readyPod(appNS, name, map[string]string{k8slabels.LabelProxied: "true", "app": "web"})
	p.Annotations = map[string]string{k8slabels.AnnotationProxyVersion: ctrlVersion}
	p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: k8slabels.ProxyContainerName, Ready: true}}
	return p
}

// installed is a healthy installation; fields are the objects so tests can
// break one before building the clientset.
type installed struct {
	ns         *corev1.Namespace
	deploy     *appsv1.Deployment
	ctrlPod    *corev1.Pod
	svc        *corev1.Service
	eps        *discoveryv1.EndpointSlice
	mwc        *admv1.MutatingWebhookConfiguration
	webhookSec *corev1.Secret
	issuerSec  *corev1.Secret
	anchorsCM  *corev1.ConfigMap
	meshed     []*corev1.Pod
	// cni is the installer DaemonSet of --cni (nil: not installed).
	cni *appsv1.DaemonSet
	// extra objects a test adds (namespaces, unmeshed pods).
	extra []runtime.Object
}

// withCNI installs the CNI DaemonSet (ready on ready of desired nodes)
// and points the injector at CNI redirection.
func (in *installed) withCNI(ready, desired int32) {
	in.cni = &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: CNINamespace, Name: CNIDaemonSet},
		Status:     appsv1.DaemonSetStatus{DesiredNumberScheduled: desired, NumberReady: ready, UpdatedNumberScheduled: desired},
	}
	c := &in.deploy.Spec.Template.Spec.Containers[0]
	c.Env = append(c.Env, corev1.EnvVar{Name: "TRELLIS_PROXY_REDIRECT", Value: "cni"})
}

func newInstalled(p pkiSet) *installed {
	one := int32(1)
	yes := true
	sel := map[string]string{"app": ControllerName}
	return &installed{
		ns: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: k8slabels.ControlPlaneNamespace, Labels: managed()}},
		deploy: &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: k8slabels.ControlPlaneNamespace, Name: ControllerName},
			Spec: appsv1.DeploymentSpec{
				Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: sel},
				Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: ControllerName, Image: "ghcr.io/trellis-mesh/controller:" + ctrlVersion}},
					Volumes: []corev1.Volume{
						{Name: "issuer", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: IssuerSecret}}},
						{Name: "webhook", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: webhookTLS}}},
					},
				}},
			},
			Status: appsv1.DeploymentStatus{ReadyReplicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1,
				Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue}}},
		},
		ctrlPod: readyPod(k8slabels.ControlPlaneNamespace, "trellis-controller-7d9f-abcde", sel),
		svc:     &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: k8slabels.ControlPlaneNamespace, Name: ControllerName}},
		eps: &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: k8slabels.ControlPlaneNamespace, Name: ControllerName + "-x1",
				Labels: map[string]string{discoveryv1.LabelServiceName: ControllerName}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.0.7"}, Conditions: discoveryv1.EndpointConditions{Ready: &yes}}},
		},
		mwc: &admv1.MutatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: WebhookConfig},
			Webhooks: []admv1.MutatingWebhook{{Name: "inject.trellis.io", ClientConfig: admv1.WebhookClientConfig{
				Service:  &admv1.ServiceReference{Namespace: k8slabels.ControlPlaneNamespace, Name: ControllerName},
				CABundle: pemOf(p.webhookCA),
			}}},
		},
		webhookSec: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: k8slabels.ControlPlaneNamespace, Name: webhookTLS},
			Type: corev1.SecretTypeTLS, Data: map[string][]byte{corev1.TLSCertKey: pemOf(p.serving), corev1.TLSPrivateKeyKey: []byte("not read")}},
		issuerSec: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: k8slabels.ControlPlaneNamespace, Name: IssuerSecret},
			Type: corev1.SecretTypeTLS, Data: map[string][]byte{corev1.TLSCertKey: pemOf(p.issuer), "ca.crt": pemOf(p.anchor), corev1.TLSPrivateKeyKey: []byte("not read")}},
		anchorsCM: &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: k8slabels.ControlPlaneNamespace, Name: AnchorsConfigMap},
			Data: map[string]string{AnchorsKey: string(pemOf(p.anchor))}},
		meshed: []*corev1.Pod{meshedPod("web-1"), meshedPod("web-2")},
	}
}

func (in *installed) objects() []runtime.Object {
	objs := []runtime.Object{in.ns, in.deploy, in.ctrlPod, in.svc, in.eps, in.mwc, in.webhookSec, in.issuerSec, in.anchorsCM, in.cni}
	for _, p := range in.meshed {
		objs = append(objs, p)
	}
	objs = append(objs, in.extra...)
	var out []runtime.Object
	for _, o := range objs {
		if o != nil && !isNilPtr(o) {
			out = append(out, o)
		}
	}
	return out
}

func isNilPtr(o runtime.Object) bool {
	switch v := o.(type) {
	case *corev1.Namespace:
		return v == nil
	case *appsv1.Deployment:
		return v == nil
	case *appsv1.DaemonSet:
		return v == nil
	case *corev1.Pod:
		return v == nil
	case *corev1.Service:
		return v == nil
	case *discoveryv1.EndpointSlice:
		return v == nil
	case *admv1.MutatingWebhookConfiguration:
		return v == nil
	case *corev1.Secret:
		return v == nil
	case *corev1.ConfigMap:
		return v == nil
	}
	return false
}

// cluster is how the fake API server behaves beyond stored objects.
type cluster struct {
	gitVersion string
	deny       map[string]bool // SSAR: resources not allowed
	// dropSidecar makes dry-run pods lose restartPolicy Always (feature off).
	dropSidecar bool
	// injector says how dry-run pods asking for injection come back:
	// "inject", "ignore" (failurePolicy Ignore hiding a failure) or an error.
	injector string
	// ignoredFirst dry-run injection requests come back uninjected before
	// the injector answers (a webhook briefly unreachable).
	ignoredFirst int
	crds         []*metav1.PartialObjectMetadata
	metrics      map[string]string // "ns/pod" -> /metrics body
	date         time.Time         // the API server's Date; zero = t0
}

func healthyCluster() *cluster {
	valid := fmt.Sprintf("# TYPE %s gauge\n%s 1\n# TYPE %s gauge\n%s %d\n",
		CertValidMetric, CertValidMetric, CertExpiryMetric, CertExpiryMetric, t0.Add(20*time.Hour).Unix())
	return &cluster{
		gitVersion: "v1.36.3",
		injector:   "inject",
		metrics:    map[string]string{appNS + "/web-1": valid, appNS + "/web-2": valid},
	}
}

var crdGVK = schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"}

func crd(name string, labels map[string]string) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: crdGVK.GroupVersion().String(), Kind: crdGVK.Kind},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
	}
}

func (c *cluster) env(t *testing.T, objs ...runtime.Object) *Env {
	t.Helper()
	cs := fake.NewClientset(objs...)
	parts := strings.SplitN(strings.TrimPrefix(c.gitVersion, "v"), ".", 3)
	cs.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &version.Info{
		GitVersion: c.gitVersion, Major: parts[0], Minor: parts[1],
	}
	cs.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authv1.SelfSubjectAccessReview).DeepCopy()
		r.Status.Allowed = !c.deny[r.Spec.ResourceAttributes.Resource]
		return true, r, nil
	})
	cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ca := a.(k8stesting.CreateActionImpl)
		if !slicesContain(ca.GetCreateOptions().DryRun, metav1.DryRunAll) {
			t.Errorf("a check created a pod without dry-run")
			return true, nil, fmt.Errorf("not dry-run")
		}
		p := ca.GetObject().(*corev1.Pod).DeepCopy()
		p.Name = p.GenerateName + "x7k2p"
		if c.dropSidecar {
			for i := range p.Spec.InitContainers {
				p.Spec.InitContainers[i].RestartPolicy = nil
			}
		}
		if p.Annotations[k8slabels.AnnotationInject] == "enabled" {
			injector := c.injector
			if c.ignoredFirst > 0 {
				c.ignoredFirst--
				injector = "ignore"
			}
			switch injector {
			case "inject":
				always := corev1.ContainerRestartPolicyAlways
				p.Labels = map[string]string{k8slabels.LabelProxied: "true"}
				p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: k8slabels.ProxyContainerName, RestartPolicy: &always})
			case "ignore":
			default:
				return true, nil, fmt.Errorf("%s", c.injector)
			}
		}
		return true, p, nil
	})
	scheme := metafake.NewTestScheme()
	metav1.AddMetaToScheme(scheme)
	scheme.AddKnownTypeWithName(crdGVK, &metav1.PartialObjectMetadata{})
	scheme.AddKnownTypeWithName(crdGVK.GroupVersion().WithKind(crdGVK.Kind+"List"), &metav1.PartialObjectMetadataList{})
	var metaObjs []runtime.Object
	for _, o := range c.crds {
		metaObjs = append(metaObjs, o)
	}
	date := c.date
	if date.IsZero() {
		date = t0
	}
	return &Env{
		Kube:       cs,
		Meta:       metafake.NewSimpleMetadataClient(scheme, metaObjs...),
		APIDate:    func(context.Context) (time.Time, error) { return date, nil },
		Scrape:     c.scrape,
		Now:        func() time.Time { return t0 },
		CLIVersion: "dev",
	}
}

func (c *cluster) scrape(_ context.Context, ns, pod string, port int, path string) ([]byte, error) {
	if port != ProxyAdminPort || path != "metrics" {
		return nil, fmt.Errorf("unexpected scrape of port %d path %q", port, path)
	}
	body, found := c.metrics[ns+"/"+pod]
	if !found {
		return nil, fmt.Errorf("the server could not find the requested resource (get pods %s:%d)", pod, port)
	}
	return []byte(body), nil
}

func slicesContain(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// runOneCheck runs c alone and returns its result.
func runOneCheck(t *testing.T, e *Env, c Check) Result {
	t.Helper()
	rs := Run(context.Background(), e, []Check{c})
	if len(rs) != 1 {
		t.Fatalf("Run returned %d results", len(rs))
	}
	return rs[0]
}

func newRootForTest() (*x509.Certificate, *ecdsa.PrivateKey, error) {
	return pki.NewRoot("other-webhook-ca", year, t0)
}

// newRootAt makes an anchor that was created at from.
func newRootAt(from time.Time, life time.Duration) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	return pki.NewRoot("trellis-anchor", life, from)
}

func issuerAt(t *testing.T, anchor *x509.Certificate, key *ecdsa.PrivateKey, from time.Time, life time.Duration) *x509.Certificate {
	t.Helper()
	is, err := pki.NewIssuer(anchor, key, "trellis-issuer", life, from)
	if err != nil {
		t.Fatal(err)
	}
	return is.Cert
}
