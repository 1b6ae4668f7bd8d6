package check

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	authv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

// Kubernetes versions Trellis cares about.
var (
	// MinKubernetes is the oldest version Trellis installs on.
	MinKubernetes = KubeVersion{1, 26}
	// NativeSidecarKubernetes is where native sidecars (init containers
	// with restartPolicy Always) are on by default (beta in 1.29, GA 1.33).
	NativeSidecarKubernetes = KubeVersion{1, 29}
)

// Clock skew thresholds: certificates are short-lived, so a node whose
// clock is off sees fresh certificates as not yet valid.
const (
	SkewWarn = 5 * time.Second
	SkewFail = time.Minute
)

// KubeVersion is a Kubernetes major.minor.
type KubeVersion struct{ Major, Minor int }

func (v KubeVersion) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// Less reports whether v is older than w.
func (v KubeVersion) Less(w KubeVersion) bool {
	return v.Major < w.Major || v.Major == w.Major && v.Minor < w.Minor
}

var gitVersionRE = regexp.MustCompile(`^v?(\d+)\.(\d+)`)

// ParseKubeVersion reads a server version: the gitVersion ("v1.29.3-gke.1")
// when it parses, else major and minor ("1", "29+").
func ParseKubeVersion(gitVersion, major, minor string) (KubeVersion, error) {
	if m := gitVersionRE.FindStringSubmatch(gitVersion); m != nil {
		a, err1 := strconv.Atoi(m[1])
		b, err2 := strconv.Atoi(m[2])
		if err1 == nil && err2 == nil {
			return KubeVersion{a, b}, nil
		}
	}
	a, err := strconv.Atoi(strings.TrimRight(major, "+"))
	if err != nil {
		return KubeVersion{}, fmt.Errorf("unparseable server version %q (major %q)", gitVersion, major)
	}
	b, err := strconv.Atoi(strings.TrimRight(minor, "+"))
	if err != nil {
		return KubeVersion{}, fmt.Errorf("unparseable server version %q (minor %q)", gitVersion, minor)
	}
	if a < 0 || b < 0 {
		return KubeVersion{}, fmt.Errorf("negative server version %q (%q, %q)", gitVersion, major, minor)
	}
	return KubeVersion{a, b}, nil
}

func serverVersion(e *Env) (KubeVersion, string, error) {
	info, err := e.Kube.Discovery().ServerVersion()
	if err != nil {
		return KubeVersion{}, "", fmt.Errorf("get server version: %w", err)
	}
	v, err := ParseKubeVersion(info.GitVersion, info.Major, info.Minor)
	return v, info.GitVersion, err
}

// APICheck is the first check of every run: without an API server nothing
// else can be answered.
var APICheck = Check{
	Group: "kubernetes", Name: "can reach the Kubernetes API", Anchor: "kubernetes-api", Fatal: true,
	Run: func(ctx context.Context, e *Env) Outcome {
		_, git, err := serverVersion(e)
		if err != nil {
			return fail("check --kubeconfig/--context and that the API server is up: kubectl version", "%v", err)
		}
		return ok("API server %s", git)
	},
}

// VersionCheck fails below MinKubernetes and warns below the version with
// native sidecars.
var VersionCheck = Check{
	Group: "kubernetes", Name: "Kubernetes version is supported", Anchor: "kubernetes-version",
	Run: func(ctx context.Context, e *Env) Outcome {
		v, git, err := serverVersion(e)
		if err != nil {
			return fail("check that the API server reports a standard version: kubectl version", "%v", err)
		}
		switch {
		case v.Less(MinKubernetes):
			return fail(fmt.Sprintf("upgrade the cluster to Kubernetes %s or later", MinKubernetes),
				"Kubernetes %s is older than %s, the oldest Trellis supports", git, MinKubernetes)
		case v.Less(NativeSidecarKubernetes):
			return warn("inject the classic sidecar: annotate namespaces or pods config.trellis.io/sidecar-mode=classic",
				"Kubernetes %s is supported, but native sidecars need %s", git, NativeSidecarKubernetes)
		}
		return ok("Kubernetes %s (>= %s)", git, NativeSidecarKubernetes)
	},
}

// NativeSidecarCheck tells whether the API server keeps restartPolicy
// Always on an init container: it creates a dry-run pod (nothing is
// stored) and looks at what comes back. A server without the feature
// drops the field. When the probe is not allowed, the version decides.
var NativeSidecarCheck = Check{
	Group: "kubernetes", Name: "native sidecars are supported", Anchor: "native-sidecars",
	Run: func(ctx context.Context, e *Env) Outcome {
		const hint = "use classic sidecars: annotate namespaces or pods config.trellis.io/sidecar-mode=classic"
		v, git, err := serverVersion(e)
		if err != nil {
			return fail("check that the API server reports a standard version: kubectl version", "%v", err)
		}
		if v.Less(KubeVersion{1, 28}) {
			return warn(hint, "Kubernetes %s has no native sidecars (1.28 alpha, 1.29 on by default)", git)
		}
		kept, perr := probeNativeSidecar(ctx, e)
		switch {
		case perr == nil && kept:
			return ok("the API server keeps restartPolicy: Always on init containers (Kubernetes %s)", git)
		case perr == nil:
			return warn(hint+", or enable the SidecarContainers feature gate",
				"the API server dropped restartPolicy: Always from an init container: the SidecarContainers feature is off (Kubernetes %s)", git)
		case v.Less(NativeSidecarKubernetes):
			return warn(hint+", or enable the SidecarContainers feature gate",
				"Kubernetes %s: native sidecars are alpha and off by default (dry-run probe: %v)", git, perr)
		}
		return ok("Kubernetes %s has native sidecars on by default (dry-run probe not possible: %v)", git, shortErr(perr))
	},
}

func probeNativeSidecar(ctx context.Context, e *Env) (bool, error) {
	always := corev1.ContainerRestartPolicyAlways
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "trellis-check-sidecar-",
			// Keep the injector away: the probe is about the API server.
			Annotations: map[string]string{k8slabels.AnnotationInject: "disabled"},
		},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "sidecar", Image: "trellis-check-probe", RestartPolicy: &always}},
			Containers:     []corev1.Container{{Name: "app", Image: "trellis-check-probe"}},
		},
	}
	got, err := e.Kube.CoreV1().Pods(e.probeNS()).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		return false, fmt.Errorf("dry-run pod in %s: %w", e.probeNS(), err)
	}
	if len(got.Spec.InitContainers) == 0 {
		return false, fmt.Errorf("dry-run pod came back without its init container")
	}
	rp := got.Spec.InitContainers[0].RestartPolicy
	return rp != nil && *rp == corev1.ContainerRestartPolicyAlways, nil
}

func shortErr(err error) string {
	if apierrors.IsForbidden(err) {
		return "forbidden"
	}
	return err.Error()
}

// Permission is one thing `trellis install` must be allowed to do.
type Permission struct {
	Verb, Group, Resource string
	Namespaced            bool // in the control plane's namespace
}

func (p Permission) String() string {
	r := p.Resource
	if p.Group != "" {
		r += "." + p.Group
	}
	if p.Namespaced {
		return fmt.Sprintf("%s %s in %s", p.Verb, r, k8slabels.ControlPlaneNamespace)
	}
	return p.Verb + " " + r
}

// InstallPermissions are the kinds `trellis install` creates.
var InstallPermissions = []Permission{
	{"create", "", "namespaces", false},
	{"create", "apiextensions.k8s.io", "customresourcedefinitions", false},
	{"create", "rbac.authorization.k8s.io", "clusterroles", false},
	{"create", "rbac.authorization.k8s.io", "clusterrolebindings", false},
	{"create", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", false},
	{"create", "apps", "deployments", true},
	{"create", "", "services", true},
	{"create", "", "serviceaccounts", true},
	{"create", "", "secrets", true},
	{"create", "", "configmaps", true},
	{"create", "rbac.authorization.k8s.io", "roles", true},
	{"create", "rbac.authorization.k8s.io", "rolebindings", true},
	{"create", "policy", "poddisruptionbudgets", true},
}

// PermissionsCheck asks the API server, one SelfSubjectAccessReview per
// kind, whether the current user may create what install creates.
var PermissionsCheck = Check{
	Group: "kubernetes", Name: "can create what trellis install creates", Anchor: "permissions",
	Run: func(ctx context.Context, e *Env) Outcome {
		var missing, errs []string
		for _, p := range InstallPermissions {
			ra := &authv1.ResourceAttributes{Verb: p.Verb, Group: p.Group, Resource: p.Resource}
			if p.Namespaced {
				ra.Namespace = e.ns()
			}
			r, err := e.Kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
				&authv1.SelfSubjectAccessReview{Spec: authv1.SelfSubjectAccessReviewSpec{ResourceAttributes: ra}}, metav1.CreateOptions{})
			switch {
			case err != nil:
				errs = append(errs, fmt.Sprintf("%s: %v", p, err))
			case !r.Status.Allowed:
				missing = append(missing, p.String())
			}
		}
		if len(errs) > 0 {
			return fail("check that the API server serves authorization.k8s.io/v1", "cannot review access: %s", strings.Join(errs, "; "))
		}
		if len(missing) > 0 {
			return fail("install as a cluster administrator, or ask one for these rights",
				"not allowed to %s", strings.Join(missing, ", "))
		}
		return ok("allowed to create all %d kinds", len(InstallPermissions))
	},
}

// ClockSkewCheck compares the Date header of an API server response with
// the local clock. The header has one-second resolution, so the server's
// time is somewhere in [date, date+1s) and the skew counts only what lies
// outside the interval the request took.
var ClockSkewCheck = Check{
	Group: "kubernetes", Name: "clock is in sync with the API server", Anchor: "clock-skew",
	Run: func(ctx context.Context, e *Env) Outcome {
		if e.APIDate == nil {
			return Outcome{Status: Skip, Message: "no way to read the API server's Date header"}
		}
		before := e.now()
		date, err := e.APIDate(ctx)
		after := e.now()
		if err != nil {
			return fail("check that the API server is reachable", "%v", err)
		}
		skew := ClockSkew(date, before, after)
		const hint = "synchronize clocks with NTP (chrony, systemd-timesyncd) on this machine and the nodes"
		switch abs := max(skew, -skew); {
		case abs > SkewFail:
			return fail(hint, "local clock differs from the API server's by %s (limit %s)", skew.Round(time.Second), SkewFail)
		case abs > SkewWarn:
			return warn(hint, "local clock differs from the API server's by %s (warning above %s)", skew.Round(time.Second), SkewWarn)
		}
		return ok("skew %s (within %s)", skew.Round(time.Millisecond), SkewWarn)
	},
}

// ClockSkew is how far the server's clock (whose Date header read date) is
// ahead (positive) or behind (negative) the local one, given the local
// times the request was sent and its answer received.
func ClockSkew(date, before, after time.Time) time.Duration {
	switch {
	case date.After(after):
		return date.Sub(after)
	case date.Add(time.Second).Before(before):
		return date.Add(time.Second).Sub(before)
	}
	return 0
}

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// isTrellisCRD reports whether a CRD (named plural.group) is in a Trellis
// API group such as policy.trellis.io.
func isTrellisCRD(name string) bool {
	_, group, found := strings.Cut(name, ".")
	return found && (group == "trellis.io" || strings.HasSuffix(group, ".trellis.io"))
}

// CRDCheck fails when a Trellis API group is already served by CRDs that
// Trellis did not install: install would overwrite someone else's schema.
var CRDCheck = Check{
	Group: "kubernetes", Name: "no conflicting Trellis CRDs", Anchor: "conflicting-crds",
	Run: func(ctx context.Context, e *Env) Outcome {
		if e.Meta == nil {
			return Outcome{Status: Skip, Message: "no metadata client"}
		}
		list, err := e.Meta.Resource(crdResource).List(ctx, metav1.ListOptions{})
		if err != nil {
			return fail("check that you may list customresourcedefinitions", "list CRDs: %v", err)
		}
		var ours, theirs []string
		for _, c := range list.Items {
			if !isTrellisCRD(c.Name) {
				continue
			}
			if c.Labels[ManagedByLabel] == ManagedByValue {
				ours = append(ours, c.Name)
			} else {
				owner := c.Labels[ManagedByLabel]
				if owner == "" {
					owner = "no managed-by label"
				}
				theirs = append(theirs, fmt.Sprintf("%s (%s)", c.Name, owner))
			}
		}
		slices.Sort(theirs)
		if len(theirs) > 0 {
			return fail("remove them (kubectl delete crd NAME) after checking who uses them, or install into another cluster",
				"CRDs of a Trellis API group not installed by Trellis: %s", strings.Join(theirs, ", "))
		}
		if len(ours) > 0 {
			return ok("%d Trellis CRDs from an earlier install", len(ours))
		}
		return ok("no Trellis CRDs present")
	},
}

// ExistingInstallCheck looks at the control plane's namespace: absent is
// ready to install, managed by Trellis means installed already (upgrade
// instead), present otherwise is someone else's namespace.
var ExistingInstallCheck = Check{
	Group: "kubernetes", Name: "no existing installation", Anchor: "existing-install",
	Run: func(ctx context.Context, e *Env) Outcome {
		ns, err := e.Kube.CoreV1().Namespaces().Get(ctx, e.ns(), metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return ok("namespace %s does not exist", e.ns())
		case err != nil:
			return fail("check that you may get namespaces", "get namespace %s: %v", e.ns(), err)
		case ns.Labels[ManagedByLabel] == ManagedByValue:
			return warn("Trellis is installed: use trellis upgrade, or trellis uninstall first",
				"namespace %s exists and is managed by Trellis", e.ns())
		}
		return fail(fmt.Sprintf("delete or rename namespace %s, it is not Trellis's", e.ns()),
			"namespace %s exists without label %s=%s", e.ns(), ManagedByLabel, ManagedByValue)
	},
}

// PreChecks are `trellis check --pre`.
func PreChecks() []Check {
	return []Check{APICheck, VersionCheck, NativeSidecarCheck, PermissionsCheck, ClockSkewCheck, CRDCheck, ExistingInstallCheck}
}
