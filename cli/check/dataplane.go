package check

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/semver"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/inject"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

// scrapeWorkers bounds concurrent scrapes through the API server.
const scrapeWorkers = 8

// meshedPods lists the running (or starting) pods carrying the proxied
// label; finished pods (Jobs) have no proxy to check.
func meshedPods(ctx context.Context, e *Env) ([]corev1.Pod, error) {
	list, err := e.Kube.CoreV1().Pods(e.ProxyNamespace).List(ctx, metav1.ListOptions{LabelSelector: k8slabels.LabelProxied + "=true"})
	if err != nil {
		return nil, fmt.Errorf("list pods with %s=true: %w", k8slabels.LabelProxied, err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || p.DeletionTimestamp != nil {
			continue
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b corev1.Pod) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return out, nil
}

func where(e *Env) string {
	if e.ProxyNamespace == "" {
		return "any namespace"
	}
	return "namespace " + e.ProxyNamespace
}

// proxyStatus finds the proxy's status: an init container when it runs as
// a native sidecar, a container in classic mode.
func proxyStatus(p *corev1.Pod) (corev1.ContainerStatus, bool) {
	for _, s := range slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses) {
		if s.Name == k8slabels.ProxyContainerName {
			return s, true
		}
	}
	return corev1.ContainerStatus{}, false
}

// listOf names at most a few items and counts the rest.
func listOf(items []string) string {
	const show = 5
	if len(items) <= show {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:show], ", "), len(items)-show)
}

// MeshedPodsCheck: there are meshed pods to look at. Fatal for the data
// plane checks that follow only in the sense that they would say nothing.
var MeshedPodsCheck = Check{
	Group: "data plane", Name: "meshed pods found", Anchor: "meshed-pods",
	Run: func(ctx context.Context, e *Env) Outcome {
		pods, err := meshedPods(ctx, e)
		if err != nil {
			return fail("check that you may list pods", "%v", err)
		}
		if len(pods) == 0 {
			return warn("annotate a namespace trellis.io/inject=enabled and restart its workloads (kubectl rollout restart)",
				"no running pod with %s=true in %s", k8slabels.LabelProxied, where(e))
		}
		return ok("%d meshed pods in %s", len(pods), where(e))
	},
}

// mirrorPodAnnotation marks the API copy of a static pod, which admission
// webhooks never mutate.
const mirrorPodAnnotation = "kubernetes.io/config.mirror"

// UnmeshedPodsCheck: no running pod that the injector would give a proxy
// runs without one: created before its namespace was annotated, or while
// the webhook was unreachable with failurePolicy Ignore. The decision is
// the injector's own (inject.Wants), so the two cannot disagree.
var UnmeshedPodsCheck = Check{
	Group: "data plane", Name: "no unmeshed pods where injection is enabled", Anchor: "unmeshed-pods",
	Run: func(ctx context.Context, e *Env) Outcome {
		const hint = "restart their workloads so the injector adds the proxy (kubectl rollout restart deployment/NAME -n NS), or delete the pods"
		pods, err := e.Kube.CoreV1().Pods(e.ProxyNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return fail("check that you may list pods", "list pods: %v", err)
		}
		nsAnn := map[string]map[string]string{}
		if e.ProxyNamespace != "" {
			// A namespace that does not exist has no pods to judge.
			ns, err := e.Kube.CoreV1().Namespaces().Get(ctx, e.ProxyNamespace, metav1.GetOptions{})
			switch {
			case err == nil:
				nsAnn[ns.Name] = ns.Annotations
			case !apierrors.IsNotFound(err):
				return fail("check that you may get namespaces", "get namespace %s: %v", e.ProxyNamespace, err)
			}
		} else {
			list, err := e.Kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
			if err != nil {
				return fail("check that you may list namespaces", "list namespaces: %v", err)
			}
			for _, ns := range list.Items {
				nsAnn[ns.Name] = ns.Annotations
			}
		}
		var bad []string
		checked := 0
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || p.DeletionTimestamp != nil ||
				p.Labels[k8slabels.LabelProxied] == "true" || p.Annotations[mirrorPodAnnotation] != "" {
				continue
			}
			checked++
			want, _, err := inject.Wants(p, p.Namespace, nsAnn[p.Namespace])
			switch {
			case err != nil:
				bad = append(bad, fmt.Sprintf("%s/%s (%v)", p.Namespace, p.Name, err))
			case want:
				bad = append(bad, p.Namespace+"/"+p.Name)
			}
		}
		slices.Sort(bad)
		if len(bad) > 0 {
			return fail(hint, "%d pods where %s is enabled run without a proxy: %s", len(bad), k8slabels.AnnotationInject, listOf(bad))
		}
		return ok("every pod where %s is enabled is meshed (%d unmeshed pods in %s, none asking for injection)", k8slabels.AnnotationInject, checked, where(e))
	},
}

// ProxyReadyCheck: every meshed pod's proxy container is ready.
var ProxyReadyCheck = Check{
	Group: "data plane", Name: "proxies are ready", Anchor: "proxy-ready",
	Run: func(ctx context.Context, e *Env) Outcome {
		pods, err := meshedPods(ctx, e)
		if err != nil {
			return fail("check that you may list pods", "%v", err)
		}
		var bad []string
		for i := range pods {
			p := &pods[i]
			s, found := proxyStatus(p)
			switch {
			case !found:
				bad = append(bad, p.Namespace+"/"+p.Name+" (no "+k8slabels.ProxyContainerName+" container status)")
			case !s.Ready:
				why := "not ready"
				if s.State.Waiting != nil {
					why = s.State.Waiting.Reason
				} else if s.State.Terminated != nil {
					why = "terminated: " + s.State.Terminated.Reason
				}
				bad = append(bad, fmt.Sprintf("%s/%s (%s, %d restarts)", p.Namespace, p.Name, why, s.RestartCount))
			}
		}
		if len(bad) > 0 {
			return fail("kubectl logs -n NS POD -c trellis-proxy shows why",
				"%d of %d proxies not ready: %s", len(bad), len(pods), listOf(bad))
		}
		return ok("%d proxies ready", len(pods))
	},
}

// expectedProxyVersion is the controller's image tag, or this binary's
// version when the controller cannot be read.
func expectedProxyVersion(ctx context.Context, e *Env) (string, string) {
	if d, err := getController(ctx, e); err == nil {
		if tag := ImageTag(controllerImage(d)); tag != "" {
			return tag, "the control plane"
		}
	}
	return e.CLIVersion, "this trellis binary"
}

// ProxyVersionCheck: every meshed pod was injected with the control
// plane's version (annotation trellis.io/proxy-version). Proxies of the
// previous version are the supported skew while an upgrade rolls out (the
// control plane N serves proxies N-1): a warning until they are restarted.
// Anything else fails (docs/install.md, "Upgrades and version skew").
var ProxyVersionCheck = Check{
	Group: "data plane", Name: "proxies are on the control plane's version", Anchor: "proxy-version",
	Run: func(ctx context.Context, e *Env) Outcome {
		pods, err := meshedPods(ctx, e)
		if err != nil {
			return fail("check that you may list pods", "%v", err)
		}
		want, from := expectedProxyVersion(ctx, e)
		if want == "" {
			return Outcome{Status: Skip, Message: "no control-plane version to compare with"}
		}
		var behind, bad []string
		for _, p := range pods {
			v := p.Annotations[k8slabels.AnnotationProxyVersion]
			if v == want {
				continue
			}
			name := fmt.Sprintf("%s/%s (%s)", p.Namespace, p.Name, v)
			if why := unsupportedSkew(v, want); why != "" {
				bad = append(bad, fmt.Sprintf("%s/%s (%s)", p.Namespace, p.Name, why))
			} else {
				behind = append(behind, name)
			}
		}
		const restart = "restart these workloads to re-inject them: kubectl -n NS rollout restart deploy/NAME"
		switch {
		case len(bad) > 0:
			return fail(restart, "%d of %d pods on an unsupported version (control plane %s, version of %s): %s",
				len(bad), len(pods), want, from, listOf(bad))
		case len(behind) > 0:
			return warn(restart+" (until then the control plane serves them: one version of skew is supported)",
				"%d of %d pods not yet on %s (version of %s): %s", len(behind), len(pods), want, from, listOf(behind))
		}
		return ok("%d pods on %s", len(pods), want)
	},
}

// unsupportedSkew says why a proxy of version proxy may not run beside a
// control plane of version ctrl, or "" when it may: the same version or
// one release behind (release tags vX.Y.Z: the previous minor, or an
// older patch of the same minor). Builds from a commit (git describe
// names) cannot be ordered and count as one behind.
func unsupportedSkew(proxy, ctrl string) string {
	switch {
	case proxy == "":
		return "no " + k8slabels.AnnotationProxyVersion + ": not injected by Trellis"
	case !semver.IsValid(proxy) || !semver.IsValid(ctrl):
		return ""
	case semver.Major(proxy) != semver.Major(ctrl):
		return proxy + ": another major version"
	case semver.Compare(proxy, ctrl) > 0:
		return proxy + ": newer than the control plane; upgrade the control plane first"
	}
	pm, cm := minor(proxy), minor(ctrl)
	if cm-pm > 1 {
		return proxy + ": more than one minor version behind"
	}
	return ""
}

// minor is the Y of a valid vX.Y.Z.
func minor(v string) int {
	mm := strings.TrimPrefix(semver.MajorMinor(v), semver.Major(v)+".")
	n, _ := strconv.Atoi(mm)
	return n
}

// ProxyCertCheck scrapes every ready proxy's /metrics (through the API
// server's pod proxy) and fails for any without a valid certificate.
var ProxyCertCheck = Check{
	Group: "data plane", Name: "proxies hold a valid certificate", Anchor: "proxy-certificate", Timeout: 2 * time.Minute,
	Run: func(ctx context.Context, e *Env) Outcome {
		ready, skip := scrapeReady(ctx, e)
		if skip != nil {
			return *skip
		}
		now := e.now()
		problems := make([]string, len(ready))
		for i, sc := range ready {
			problems[i] = certProblem(sc, now)
		}
		var bad []string
		for i, p := range problems {
			if p != "" {
				bad = append(bad, podRef(ready[i].pod)+" ("+p+")")
			}
		}
		if len(bad) > 0 {
			return fail("the proxy cannot get a certificate from the controller: kubectl logs -n NS POD -c trellis-proxy; trellis check (identity)",
				"%d of %d proxies: %s", len(bad), len(ready), listOf(bad))
		}
		return ok("%d proxies hold a valid certificate", len(ready))
	},
}

// certProblem returns why pod's proxy has no valid certificate, or "".
func certProblem(sc scraped, now time.Time) string {
	if sc.err != nil {
		return "scrape: " + sc.err.Error()
	}
	im, err := ParseIdentityMetrics(sc.body)
	if err != nil {
		return err.Error()
	}
	switch {
	case !im.HasValid:
		return "no " + CertValidMetric + " metric"
	case im.Valid != 1:
		return CertValidMetric + " is 0: no valid certificate"
	case !im.HasExpiry:
		return "no " + CertExpiryMetric + " metric"
	}
	exp := time.Unix(int64(im.Expiry), 0)
	if !exp.After(now) {
		return "certificate expired at " + exp.UTC().Format(time.RFC3339)
	}
	return ""
}

// DataPlaneChecks are the data-plane part of `trellis check` and all of
// `trellis check --proxy`.
func DataPlaneChecks() []Check {
	return []Check{MeshedPodsCheck, NamespaceInjectCheck, PodAnnotationsCheck, UnmeshedPodsCheck, MeshedImagesCheck, ProxyReadyCheck, ProxyVersionCheck,
		ProxyCertCheck, ProxyTrustCheck, ProxyIssuerCheck, ProxyControlPlaneCheck, ProxyEjectionsCheck}
}

// PostChecks are `trellis check`: the API, the clock, the control plane,
// the data plane and the optional viz Prometheus.
func PostChecks() []Check {
	return slices.Concat([]Check{APICheck, ClockSkewCheck}, ControlPlaneChecks(), DataPlaneChecks(), []Check{VizCheck})
}

// ProxyChecks are `trellis check --proxy`.
func ProxyChecks() []Check {
	return slices.Concat([]Check{APICheck}, DataPlaneChecks())
}
