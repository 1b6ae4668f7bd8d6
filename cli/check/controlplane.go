package check

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/internal/k8slabels"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// Expiry thresholds (the same as `trellis identity verify`).
const (
	IssuerWarnBefore = pki.IssuerWarnBefore // 7 days
	AnchorWarnBefore = pki.AnchorWarnBefore // 30 days
)

// NamespaceCheck: the control plane's namespace exists. Fatal: the rest of
// the control-plane checks all live in it.
var NamespaceCheck = Check{
	Group: "control plane", Name: "control plane namespace exists", Anchor: "control-plane-namespace", Fatal: true,
	Run: func(ctx context.Context, e *Env) Outcome {
		_, err := e.Kube.CoreV1().Namespaces().Get(ctx, e.ns(), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return fail("install Trellis: trellis install --crds | kubectl apply --server-side -f - && trellis install | kubectl apply --server-side -f -",
				"namespace %s does not exist", e.ns())
		}
		if err != nil {
			return fail("check that you may get namespaces", "get namespace %s: %v", e.ns(), err)
		}
		return ok("namespace %s", e.ns())
	},
}

func getController(ctx context.Context, e *Env) (*appsv1.Deployment, error) {
	return e.Kube.AppsV1().Deployments(e.ns()).Get(ctx, ControllerName, metav1.GetOptions{})
}

// DeploymentCheck: the controller Deployment is Available with every
// replica updated and ready.
var DeploymentCheck = Check{
	Group: "control plane", Name: "controller deployment is available", Anchor: "controller-deployment",
	Run: func(ctx context.Context, e *Env) Outcome {
		const hint = "kubectl -n trellis-system describe deployment trellis-controller; look at its pods' events and logs"
		d, err := getController(ctx, e)
		if err != nil {
			return fail(hint, "get deployment %s/%s: %v", e.ns(), ControllerName, err)
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		available := false
		var reason string
		for _, c := range d.Status.Conditions {
			if c.Type == appsv1.DeploymentAvailable {
				available = c.Status == corev1.ConditionTrue
				reason = c.Message
			}
		}
		if !available {
			if reason == "" {
				reason = "no Available condition yet"
			}
			return fail(hint, "not available: %s (%d/%d replicas ready)", reason, d.Status.ReadyReplicas, want)
		}
		if d.Status.ReadyReplicas < want || d.Status.UpdatedReplicas < want {
			return fail(hint, "%d/%d replicas ready, %d updated", d.Status.ReadyReplicas, want, d.Status.UpdatedReplicas)
		}
		return ok("%d/%d replicas ready (image %s)", d.Status.ReadyReplicas, want, controllerImage(d))
	},
}

// PodsCheck: every pod of the controller Deployment is running and ready.
var PodsCheck = Check{
	Group: "control plane", Name: "controller pods are ready", Anchor: "controller-pods",
	Run: func(ctx context.Context, e *Env) Outcome {
		const hint = "kubectl -n trellis-system get pods; kubectl -n trellis-system logs deploy/trellis-controller"
		d, err := getController(ctx, e)
		if err != nil {
			return fail(hint, "get deployment %s/%s: %v", e.ns(), ControllerName, err)
		}
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil {
			return fail(hint, "deployment selector: %v", err)
		}
		pods, err := e.Kube.CoreV1().Pods(e.ns()).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
		if err != nil {
			return fail(hint, "list pods: %v", err)
		}
		if len(pods.Items) == 0 {
			return fail(hint, "no pods match %s", sel)
		}
		var bad []string
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.DeletionTimestamp != nil {
				continue // terminating during a rollout
			}
			if why := podNotReady(p); why != "" {
				bad = append(bad, p.Name+" ("+why+")")
			}
		}
		if len(bad) > 0 {
			return fail(hint, "not ready: %s", strings.Join(bad, ", "))
		}
		return ok("%d pods ready", len(pods.Items))
	},
}

// podNotReady says why a pod is not ready, or "" when it is.
func podNotReady(p *corev1.Pod) string {
	if pulls := pullProblems(p); len(pulls) > 0 {
		return strings.Join(pulls, "; ")
	}
	if p.Status.Phase != corev1.PodRunning {
		return "phase " + string(p.Status.Phase)
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			if c.Status == corev1.ConditionTrue {
				return ""
			}
			if c.Reason != "" {
				return c.Reason
			}
			return "not ready"
		}
	}
	return "no Ready condition"
}

func controllerImage(d *appsv1.Deployment) string {
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == ControllerName || len(d.Spec.Template.Spec.Containers) == 1 {
			return c.Image
		}
	}
	return ""
}

// ImageTag returns the tag of an image reference ("" when it has none):
// registry:5000/trellis/controller:v1.2@sha256:... gives v1.2.
func ImageTag(image string) string {
	image, _, _ = strings.Cut(image, "@")
	slash := strings.LastIndex(image, "/")
	colon := strings.LastIndex(image, ":")
	if colon <= slash {
		return ""
	}
	return image[colon+1:]
}

func webhookService() string { return ControllerName }

// serviceDNSName is what the webhook's serving certificate must name: the
// API server calls <service>.<namespace>.svc.
func serviceDNSName(ns string) string { return ControllerName + "." + ns + ".svc" }

// CNICheck: with CNI redirection (trellis install --cni) the installer
// DaemonSet is ready and up to date on every node it should run on: a pod
// created on a node without the plugin fails its trellis-validate init
// container and never starts. Without --cni it has nothing to check.
var CNICheck = Check{
	Group: "control plane", Name: "CNI plugin is installed on every node", Anchor: "cni-installer",
	Run: func(ctx context.Context, e *Env) Outcome {
		const hint = "kubectl -n trellis-cni describe daemonset trellis-cni; kubectl -n trellis-cni logs daemonset/trellis-cni"
		wantCNI := false
		if d, err := getController(ctx, e); err == nil {
			for _, c := range d.Spec.Template.Spec.Containers {
				for _, env := range c.Env {
					if env.Name == "TRELLIS_PROXY_REDIRECT" && env.Value == "cni" {
						wantCNI = true
					}
				}
			}
		}
		ds, err := e.Kube.AppsV1().DaemonSets(CNINamespace).Get(ctx, CNIDaemonSet, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			if wantCNI {
				return fail("re-apply the control plane with the same flags: trellis install --cni | kubectl apply --server-side -f -",
					"the injector uses CNI redirection but daemonset %s/%s does not exist: injected pods cannot start", CNINamespace, CNIDaemonSet)
			}
			return ok("not installed: pods redirect with the trellis-init container")
		}
		if err != nil {
			return fail(hint, "get daemonset %s/%s: %v", CNINamespace, CNIDaemonSet, err)
		}
		st := ds.Status
		if st.DesiredNumberScheduled == 0 {
			return fail(hint, "daemonset %s/%s runs on no node (check its tolerations and node selector)", CNINamespace, CNIDaemonSet)
		}
		if st.NumberReady < st.DesiredNumberScheduled || st.UpdatedNumberScheduled < st.DesiredNumberScheduled {
			return fail(hint, "%d/%d nodes ready, %d updated: pods created on the other nodes fail trellis-validate",
				st.NumberReady, st.DesiredNumberScheduled, st.UpdatedNumberScheduled)
		}
		if !wantCNI {
			return warn("re-apply the control plane with --cni, or remove the installer with trellis uninstall and install again without it",
				"daemonset %s/%s is ready on %d nodes but the injector does not use CNI redirection", CNINamespace, CNIDaemonSet, st.NumberReady)
		}
		return ok("ready on %d/%d nodes", st.NumberReady, st.DesiredNumberScheduled)
	},
}

// WebhookConfigCheck: the MutatingWebhookConfiguration exists, points at
// the controller's Service and carries a CA bundle.
var WebhookConfigCheck = Check{
	Group: "webhook", Name: "injector webhook is configured", Anchor: "webhook-config",
	Run: func(ctx context.Context, e *Env) Outcome {
		_, cas, err := webhookCABundle(ctx, e)
		if err != nil {
			return fail("re-apply the control plane: trellis install | kubectl apply --server-side -f -", "%v", err)
		}
		return ok("%s points at service %s/%s with %d CA certificates", WebhookConfig, e.ns(), webhookService(), len(cas))
	},
}

// webhookCABundle returns the CA bundle of the injector's webhook after
// checking that the configuration calls the controller's Service.
func webhookCABundle(ctx context.Context, e *Env) (string, []*x509.Certificate, error) {
	mwc, err := e.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, WebhookConfig, metav1.GetOptions{})
	if err != nil {
		return "", nil, fmt.Errorf("get mutatingwebhookconfiguration %s: %w", WebhookConfig, err)
	}
	if len(mwc.Webhooks) == 0 {
		return "", nil, fmt.Errorf("mutatingwebhookconfiguration %s has no webhooks", WebhookConfig)
	}
	var first string
	var firstCAs []*x509.Certificate
	for _, w := range mwc.Webhooks {
		s := w.ClientConfig.Service
		if s == nil || s.Namespace != e.ns() || s.Name != webhookService() {
			return "", nil, fmt.Errorf("webhook %s does not call service %s/%s", w.Name, e.ns(), webhookService())
		}
		if len(w.ClientConfig.CABundle) == 0 {
			return "", nil, fmt.Errorf("webhook %s has an empty caBundle", w.Name)
		}
		cas, err := pki.ParseCertsPEM(w.ClientConfig.CABundle)
		if err != nil {
			return "", nil, fmt.Errorf("webhook %s caBundle: %w", w.Name, err)
		}
		if len(cas) == 0 {
			return "", nil, fmt.Errorf("webhook %s caBundle holds no certificate", w.Name)
		}
		if firstCAs == nil {
			first, firstCAs = w.Name, cas
		}
	}
	return first, firstCAs, nil
}

// WebhookEndpointsCheck: the Service the API server calls has a ready
// endpoint; without one every pod creation waits for the webhook timeout
// (and, failing closed, fails).
var WebhookEndpointsCheck = Check{
	Group: "webhook", Name: "injector service has ready endpoints", Anchor: "webhook-endpoints",
	Run: func(ctx context.Context, e *Env) Outcome {
		const hint = "the controller pods are not ready: kubectl -n trellis-system get pods,endpointslices"
		if _, err := e.Kube.CoreV1().Services(e.ns()).Get(ctx, webhookService(), metav1.GetOptions{}); err != nil {
			return fail("re-apply the control plane: trellis install | kubectl apply --server-side -f -", "get service %s/%s: %v", e.ns(), webhookService(), err)
		}
		eps, err := e.Kube.DiscoveryV1().EndpointSlices(e.ns()).List(ctx, metav1.ListOptions{
			LabelSelector: discoveryv1.LabelServiceName + "=" + webhookService(),
		})
		if err != nil {
			return fail(hint, "list endpointslices: %v", err)
		}
		ready, total := 0, 0
		for _, s := range eps.Items {
			for _, ep := range s.Endpoints {
				total++
				if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
					ready++
				}
			}
		}
		if ready == 0 {
			return fail(hint, "service %s/%s has no ready endpoints (%d not ready)", e.ns(), webhookService(), total)
		}
		return ok("%d ready endpoints", ready)
	},
}

// WebhookCertCheck verifies the webhook's serving certificate against the
// configuration's caBundle, as the API server will. The certificate is read
// from the kubernetes.io/tls Secret mounted in the controller's pods (not
// the issuer's): no port-forward, no connection to the pod, and the same
// bytes the controller serves. Only tls.crt is looked at.
var WebhookCertCheck = Check{
	Group: "webhook", Name: "caBundle verifies the webhook's serving certificate", Anchor: "webhook-certificate",
	Run: func(ctx context.Context, e *Env) Outcome {
		const hint = "re-run trellis install to issue a new webhook certificate and caBundle together"
		_, cas, err := webhookCABundle(ctx, e)
		if err != nil {
			return fail(hint, "%v", err)
		}
		d, err := getController(ctx, e)
		if err != nil {
			return fail(hint, "get deployment %s/%s: %v", e.ns(), ControllerName, err)
		}
		var secretName string
		var chain []*x509.Certificate
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Secret == nil || v.Secret.SecretName == IssuerSecret {
				continue
			}
			s, err := e.Kube.CoreV1().Secrets(e.ns()).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
			if err != nil {
				return fail(hint, "get secret %s/%s: %v", e.ns(), v.Secret.SecretName, err)
			}
			if s.Type != corev1.SecretTypeTLS {
				continue
			}
			certs, err := pki.ParseCertsPEM(s.Data[corev1.TLSCertKey])
			if err != nil || len(certs) == 0 {
				return fail(hint, "secret %s/%s tls.crt: no certificate (%v)", e.ns(), s.Name, err)
			}
			secretName, chain = s.Name, certs
			break
		}
		if chain == nil {
			return warn("see docs/check.md#webhook-certificate",
				"no kubernetes.io/tls Secret (other than %s) mounted in %s: cannot read the serving certificate", IssuerSecret, ControllerName)
		}
		msg, err := verifyServing(chain, cas, serviceDNSName(e.ns()), e.now())
		if err != nil {
			return fail(hint, "secret %s: %v", secretName, err)
		}
		left := chain[0].NotAfter.Sub(e.now())
		if left < IssuerWarnBefore {
			return warn("re-run trellis install (or trellis upgrade) to renew the webhook certificate",
				"secret %s: %s, but it expires in %s", secretName, msg, days(left))
		}
		return ok("secret %s: %s", secretName, msg)
	},
}

func verifyServing(chain, cas []*x509.Certificate, dnsName string, now time.Time) (string, error) {
	roots := x509.NewCertPool()
	for _, c := range cas {
		roots.AddCert(c)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		DNSName: dnsName, Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return "", fmt.Errorf("serving certificate %q does not verify for %s against the caBundle: %w", chain[0].Subject.CommonName, dnsName, err)
	}
	return fmt.Sprintf("valid for %s until %s", dnsName, chain[0].NotAfter.UTC().Format(time.RFC3339)), nil
}

// WebhookCallCheck is the end-to-end proof: a dry-run pod asking for
// injection in the probe namespace. The API server calls the webhook over
// TLS verified with the caBundle, so a proxy in the answer means the
// configuration, the Service, the endpoints, the certificate and the
// injector all work. Nothing is stored.
var WebhookCallCheck = Check{
	Group: "webhook", Name: "API server can call the injector", Anchor: "webhook-call",
	Run: func(ctx context.Context, e *Env) Outcome {
		const hint = "see the API server's reason above; kubectl -n trellis-system logs deploy/trellis-controller"
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "trellis-check-inject-", Annotations: map[string]string{k8slabels.AnnotationInject: "enabled"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "trellis-check-probe"}}},
		}
		deadline := time.Now().Add(e.WebhookSettle) // wall clock: e.now is for certificate validity
		for attempt := 1; ; attempt++ {
			got, err := e.Kube.CoreV1().Pods(e.probeNS()).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if apierrors.IsForbidden(err) && !strings.Contains(err.Error(), "admission webhook") {
				return warn("run trellis check with rights to create pods in "+e.probeNS()+", or ignore: the other webhook checks passed",
					"cannot create a dry-run pod in %s: %v", e.probeNS(), err)
			}
			injected := err == nil && got.Labels[k8slabels.LabelProxied] == "true" && hasProxy(&got.Spec)
			if injected {
				if attempt > 1 {
					return ok("a dry-run pod in %s was injected (attempt %d: the webhook was unreachable for a moment)", e.probeNS(), attempt)
				}
				return ok("a dry-run pod in %s was injected", e.probeNS())
			}
			if !time.Now().Before(deadline) || !sleepCtx(ctx, 250*time.Millisecond) {
				if err != nil {
					return fail(hint, "dry-run pod in %s: %v", e.probeNS(), err)
				}
				return fail("the API server could not call the webhook (failurePolicy Ignore hides why): check the caBundle and kubectl -n trellis-system logs deploy/trellis-controller",
					"a dry-run pod annotated %s=enabled in %s came back without the proxy (%d attempts)", k8slabels.AnnotationInject, e.probeNS(), attempt)
			}
		}
	},
}

// sleepCtx waits d or until ctx ends; false when ctx ended.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func hasProxy(spec *corev1.PodSpec) bool {
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		if c.Name == k8slabels.ProxyContainerName {
			return true
		}
	}
	return false
}

func days(d time.Duration) string {
	if d < 48*time.Hour {
		return d.Round(time.Minute).String()
	}
	return fmt.Sprintf("%.1f days", d.Hours()/24)
}

// readAnchors returns what proxies trust: the ConfigMap's bundle.
func readAnchors(ctx context.Context, e *Env) ([]*x509.Certificate, error) {
	cm, err := e.Kube.CoreV1().ConfigMaps(e.ns()).Get(ctx, AnchorsConfigMap, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get configmap %s/%s: %w", e.ns(), AnchorsConfigMap, err)
	}
	data, found := cm.Data[AnchorsKey]
	if !found {
		return nil, fmt.Errorf("configmap %s/%s has no key %s", e.ns(), AnchorsConfigMap, AnchorsKey)
	}
	certs, err := pki.ParseCertsPEM([]byte(data))
	if err != nil {
		return nil, fmt.Errorf("configmap %s/%s %s: %w", e.ns(), AnchorsConfigMap, AnchorsKey, err)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("configmap %s/%s %s holds no certificate", e.ns(), AnchorsConfigMap, AnchorsKey)
	}
	return certs, nil
}

// AnchorsCheck: the bundle proxies trust parses, holds CA certificates,
// and its anchors are valid for more than AnchorWarnBefore.
var AnchorsCheck = Check{
	Group: "identity", Name: "trust anchors are valid", Anchor: "trust-anchors",
	Run: func(ctx context.Context, e *Env) Outcome {
		anchors, err := readAnchors(ctx, e)
		if err != nil {
			return fail("restore the trust anchors: trellis identity bundle, then kubectl apply --server-side the ConfigMap", "%v", err)
		}
		now := e.now()
		var expired, soon []string
		valid := 0
		earliest := time.Duration(1<<63 - 1)
		for _, a := range anchors {
			name := fmt.Sprintf("%q", a.Subject.CommonName)
			if !a.IsCA {
				return fail("put only CA certificates in the bundle", "anchor %s is not a CA certificate", name)
			}
			left := a.NotAfter.Sub(now)
			switch {
			case left <= 0:
				expired = append(expired, fmt.Sprintf("%s expired at %s", name, a.NotAfter.UTC().Format(time.RFC3339)))
				continue
			case now.Before(a.NotBefore):
				expired = append(expired, fmt.Sprintf("%s not valid before %s", name, a.NotBefore.UTC().Format(time.RFC3339)))
				continue
			case left < AnchorWarnBefore:
				soon = append(soon, fmt.Sprintf("%s expires in %s", name, days(left)))
			}
			valid++
			earliest = min(earliest, left)
		}
		const rotate = "rotate the anchor now: trellis identity rotate (docs/identity.md)"
		if valid == 0 {
			return fail(rotate, "no valid anchor in %s: %s", AnchorsConfigMap, strings.Join(expired, "; "))
		}
		if len(soon) > 0 {
			return warn(rotate, "%s", strings.Join(soon, "; "))
		}
		if len(expired) > 0 {
			return warn("remove expired anchors from the bundle: trellis identity bundle remove", "%s", strings.Join(expired, "; "))
		}
		return ok("%d anchors, the first expires in %s", valid, days(earliest))
	},
}

// IssuerCheck: the issuer in the Secret is a CA, valid now, chains to both
// the bundle proxies trust and the controller hands out (the ConfigMap) and
// the Secret's own ca.crt (the CA that signed it; an external CA such as
// cert-manager writes only that one), and is valid for more than
// IssuerWarnBefore.
var IssuerCheck = Check{
	Group: "identity", Name: "issuer is valid and chains to the anchors", Anchor: "issuer",
	Run: func(ctx context.Context, e *Env) Outcome {
		const replace = "write a new issuer into the Secret: trellis identity create-issuer (docs/identity.md)"
		s, chain, err := readIssuer(ctx, e)
		if err != nil {
			return fail(replace, "%v", err)
		}
		ca, err := pki.ParseCertsPEM(s.Data["ca.crt"])
		if err != nil || len(ca) == 0 {
			return fail(replace, "secret %s ca.crt: no certificate (%v)", IssuerSecret, err)
		}
		anchors, err := readAnchors(ctx, e)
		if err != nil {
			return fail("restore the trust anchors ConfigMap (docs/identity.md)", "%v", err)
		}
		issuer, now := chain[0], e.now()
		name := fmt.Sprintf("%q", issuer.Subject.CommonName)
		if !issuer.BasicConstraintsValid || !issuer.IsCA {
			return fail(replace, "issuer %s is not a CA certificate", name)
		}
		if now.After(issuer.NotAfter) {
			return fail(replace, "issuer %s EXPIRED at %s (%s ago): proxies cannot renew their certificates",
				name, issuer.NotAfter.UTC().Format(time.RFC3339), days(now.Sub(issuer.NotAfter)))
		}
		if now.Before(issuer.NotBefore) {
			return fail(replace+", or fix the clock", "issuer %s is not valid before %s", name, issuer.NotBefore.UTC().Format(time.RFC3339))
		}
		if err := chains(chain, anchors, now); err != nil {
			return fail("the issuer must be signed by an anchor proxies trust: see trellis identity verify",
				"issuer %s does not chain to %s: %v", name, AnchorsConfigMap, err)
		}
		if err := chains(chain, ca, now); err != nil {
			return fail("the issuer must be signed by an anchor of its own ca.crt: see trellis identity verify",
				"issuer %s does not chain to the Secret's ca.crt: %v", name, err)
		}
		left := issuer.NotAfter.Sub(now)
		if left < IssuerWarnBefore {
			return warn(replace, "issuer %s expires in %s (at %s)", name, days(left), issuer.NotAfter.UTC().Format(time.RFC3339))
		}
		return ok("issuer %s expires in %s", name, days(left))
	},
}

// readIssuer reads the issuer Secret and its certificate chain (tls.crt);
// only the certificates are read, tls.key stays untouched.
func readIssuer(ctx context.Context, e *Env) (*corev1.Secret, []*x509.Certificate, error) {
	s, err := e.Kube.CoreV1().Secrets(e.ns()).Get(ctx, IssuerSecret, metav1.GetOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("get secret %s/%s: %w", e.ns(), IssuerSecret, err)
	}
	chain, err := pki.ParseCertsPEM(s.Data[corev1.TLSCertKey])
	if err != nil || len(chain) == 0 {
		return nil, nil, fmt.Errorf("secret %s tls.crt: no certificate (%v)", IssuerSecret, err)
	}
	return s, chain, nil
}

func chains(chain, anchors []*x509.Certificate, now time.Time) error {
	roots := x509.NewCertPool()
	for _, a := range anchors {
		roots.AddCert(a)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

// ControlPlaneChecks are the control-plane part of `trellis check`.
func ControlPlaneChecks() []Check {
	return []Check{
		NamespaceCheck, DeploymentCheck, PodsCheck, CNICheck,
		WebhookConfigCheck, WebhookEndpointsCheck, WebhookCertCheck, WebhookCallCheck,
		AnchorsCheck, IssuerCheck, TapAPICheck,
	}
}
